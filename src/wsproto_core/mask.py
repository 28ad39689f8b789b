"""Masking of frame payloads (RFC 6455 §5.3).

Masking is a XOR with a 4-byte key repeated over the payload. Doing it a byte
at a time in Python would cost about 100 ns a byte; converting the whole
payload to one integer and XOR-ing it with the repeated key keeps every step
in C, for roughly memory speed on large payloads.
"""

from __future__ import annotations

__all__ = ["apply_mask"]


def apply_mask(data: bytes | bytearray | memoryview, key: bytes, offset: int = 0) -> bytes:
    """Mask or unmask ``data`` with the 4-byte ``key`` (the operation is its own inverse).

    Args:
        data: the payload, or a piece of it.
        key: the masking key from the frame header.
        offset: how many payload bytes came before ``data`` in the same frame,
            so a payload can be unmasked piece by piece as it arrives.
    """
    size = len(data)
    if not size:
        return b""
    if offset & 3:
        shift = offset & 3
        key = key[shift:] + key[:shift]
    # "octet i of the transformed data is the XOR of octet i of the original
    # data with octet at index i modulo 4 of the masking key" -- RFC 6455 §5.3.
    # Little-endian keeps byte i of the payload at bit 8*i of the integer.
    repeated = (key * ((size + 3) >> 2))[:size]
    return (int.from_bytes(data, "little") ^ int.from_bytes(repeated, "little")).to_bytes(
        size, "little"
    )
