# The compiled twins of wsproto_core.mask's pure functions (see _speedups.c);
# the signatures are theirs, so either can stand for the other.

def apply_mask(data: bytes | bytearray | memoryview, key: bytes, offset: int = 0) -> bytes: ...
def mask_frame(
    header: bytes | bytearray | memoryview, payload: bytes | bytearray | memoryview, key: bytes
) -> bytes: ...
