# The compiled twins of wsproto_core.mask's pure functions, the fast path of
# frames.read_header, frames.read_message's twin, and payload.PurePayloadBuffer's
# twin (see _speedups.c); the signatures are theirs, so either can stand for the other.

from types import NotImplementedType

def apply_mask(data: bytes | bytearray | memoryview, key: bytes, offset: int = 0) -> bytes: ...
def mask_frame(
    header: bytes | bytearray | memoryview, payload: bytes | bytearray | memoryview, key: bytes
) -> bytes: ...
def read_header(
    buf: bytes | bytearray | memoryview, pos: int
) -> tuple[bool, int, int, int, bytes | None, int] | NotImplementedType | None: ...
def read_message(
    buf: bytes | bytearray | memoryview,
    pos: int,
    client: bool,
    max_size: int | None,
    stream_below: int | None,
) -> tuple[str | bytes, int] | None: ...

class PayloadBuffer:
    """The compiled twin of wsproto_core.payload.PurePayloadBuffer."""

    def __init__(self, size: int) -> None: ...
    def view(self) -> memoryview: ...
    def put(
        self, at: int, data: bytes | bytearray | memoryview, key: bytes | None = None, /
    ) -> None: ...
    def mask(self, start: int, end: int, key: bytes, /) -> None: ...
    def finish(self) -> bytes: ...
