# The compiled twins of wsproto_core.mask's pure functions, and the fast path
# of frames.read_header (see _speedups.c); the signatures are theirs, so
# either can stand for the other.

from types import NotImplementedType

def apply_mask(data: bytes | bytearray | memoryview, key: bytes, offset: int = 0) -> bytes: ...
def mask_frame(
    header: bytes | bytearray | memoryview, payload: bytes | bytearray | memoryview, key: bytes
) -> bytes: ...
def read_header(
    buf: bytes | bytearray | memoryview, pos: int
) -> tuple[bool, int, int, int, bytes | None, int] | NotImplementedType | None: ...
