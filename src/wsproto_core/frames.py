"""The frame codec (RFC 6455 §5.2) and the Close frame payload (§5.5.1).

Frame *syntax* lives here: header layout, lengths, masking, and the rules
that hold for any frame on its own (reserved opcodes, control frame size and
fragmentation, the 64-bit length's top bit). Rules that depend on the
connection (who must mask, which RSV bits an extension claims, the order of
fragments, the read limit) are checked in ``connection.py``.

Parsing reads in place from a buffer and a position, consuming nothing when
the header is incomplete; serializing builds one ``bytes`` per frame.
"""

from __future__ import annotations

import struct
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from .constants import CloseCode, Opcode, is_valid_close_code
from .errors import LocalProtocolError, RemoteProtocolError
from .mask import apply_mask, compiled_module, mask_frame

__all__ = [
    "RSV1",
    "RSV2",
    "RSV3",
    "Frame",
    "FrameHeader",
    "format_close_message",
    "parse_close_payload",
    "parse_frame",
    "parse_header",
    "read_header",
    "read_message",
    "serialize_frame",
]

FIN = 0x80
RSV1 = 0x40  #: claimed by permessage-deflate (RFC 7692 §6)
RSV2 = 0x20
RSV3 = 0x10
_RSV = RSV1 | RSV2 | RSV3
_MASKED = 0x80
_MAX_CONTROL_PAYLOAD = 125  # RFC 6455 §5.5

_OPCODES = frozenset(Opcode)
_pack_short = struct.Struct("!BB").pack
_pack_medium = struct.Struct("!BBH").pack
_pack_long = struct.Struct("!BBQ").pack
_unpack_medium = struct.Struct("!H").unpack_from
_unpack_long = struct.Struct("!Q").unpack_from


@dataclass(frozen=True, slots=True)
class FrameHeader:
    """A parsed frame header.

    Attributes:
        fin: the FIN bit.
        rsv: the RSV bits, as they sit in the first byte (``RSV1 | RSV2 | RSV3``).
        opcode: the opcode.
        length: the payload length.
        mask_key: the 4-byte masking key, or ``None`` for an unmasked frame.
        size: the header's own length in bytes (2 to 14).
    """

    fin: bool
    rsv: int
    opcode: Opcode
    length: int
    mask_key: bytes | None
    size: int


def read_header(
    buf: bytes | bytearray | memoryview, pos: int = 0
) -> tuple[bool, int, int, int, bytes | None, int] | None:
    """Parse a frame header into a plain tuple, for hot loops; see :func:`parse_header`.

    Returns:
        ``(fin, rsv, opcode, length, mask_key, size)``, or ``None`` if incomplete.
    """
    available = len(buf) - pos
    if available < 2:
        return None
    first = buf[pos]
    second = buf[pos + 1]
    length = second & 0x7F
    size = 2
    if length == 126:
        if available < 4:
            return None
        (length,) = _unpack_medium(buf, pos + 2)
        size = 4
    elif length == 127:
        if available < 10:
            return None
        (length,) = _unpack_long(buf, pos + 2)
        size = 10
        # "the most significant bit MUST be 0" -- RFC 6455 §5.2
        if length >> 63:
            raise RemoteProtocolError(CloseCode.PROTOCOL_ERROR, "payload length over 2**63")
    mask_key = None
    if second & _MASKED:
        if available < size + 4:
            return None
        mask_key = bytes(buf[pos + size : pos + size + 4])
        size += 4
    opcode = first & 0x0F
    if opcode not in _OPCODES:
        # "If an unknown opcode is received, the receiving endpoint MUST _Fail
        # the WebSocket Connection_." -- RFC 6455 §5.2
        raise RemoteProtocolError(CloseCode.PROTOCOL_ERROR, f"reserved opcode {opcode:#x}")
    fin = first >= FIN
    if opcode >= 0x8:
        # "All control frames MUST have a payload length of 125 bytes or less
        # and MUST NOT be fragmented." -- RFC 6455 §5.5
        if length > _MAX_CONTROL_PAYLOAD:
            raise RemoteProtocolError(CloseCode.PROTOCOL_ERROR, "control frame too long")
        if not fin:
            raise RemoteProtocolError(CloseCode.PROTOCOL_ERROR, "fragmented control frame")
    return fin, first & _RSV, opcode, length, mask_key, size


read_header_fast: Callable[[bytes | bytearray, int], Any] = (
    getattr(compiled_module, "read_header", None) or read_header
)
""":func:`read_header` for the receive loop: the compiled twin when built.

It returns what :func:`read_header` returns, except that where that raises
it returns ``NotImplemented``: the caller then calls :func:`read_header` on
the same input to raise the RFC's error. So the rules stay in one place."""


_FAST_MESSAGE_BELOW = 65536  # read_message() takes payloads shorter than this


def read_message(
    buf: bytes | bytearray | memoryview,
    pos: int,
    client: bool,
    max_size: int | None,
    stream_below: int | None,
) -> tuple[str | bytes, int] | None:
    """Read a small unfragmented text or binary message whole, if one starts at ``buf[pos]``.

    The receive loop's fast path for the commonest frame. It takes only a
    frame that is complete in ``buf``, has FIN set and no RSV bits, is text
    or binary, is masked exactly when ``client`` is false (the peer is a
    client: RFC 6455 §5.1), and whose payload is under 64 KiB, at most
    ``max_size`` and under ``stream_below`` (``None``: no bound), and for
    text is valid UTF-8. For anything else it returns ``None`` and consumes
    nothing: the caller parses the frame as usual, which raises the RFC's
    error where one applies, so no rule lives only here.

    Returns:
        ``(data, end)``: ``str`` for text, ``bytes`` for binary, unmasked,
        and the position just after the frame.
    """
    if pos < 0:
        raise ValueError("read_message() needs a position >= 0")
    available = len(buf) - pos
    if available < 2:
        return None
    first = buf[pos]
    second = buf[pos + 1]
    if first not in (FIN | Opcode.TEXT, FIN | Opcode.BINARY) or bool(second & _MASKED) is client:
        return None
    length = second & 0x7F
    size = 2
    if length == 127:
        return None
    if length == 126:
        if available < 4:
            return None
        (length,) = _unpack_medium(buf, pos + 2)
        size = 4
    if not client:
        size += 4
    if (
        available - size < length
        or (max_size is not None and length > max_size)
        or (stream_below is not None and length >= stream_below)
        or length >= _FAST_MESSAGE_BELOW
    ):
        return None
    start = pos + size
    payload = bytes(buf[start : start + length])
    if not client:
        payload = apply_mask(payload, bytes(buf[start - 4 : start]))
    if first == FIN | Opcode.TEXT:
        try:
            return payload.decode("utf-8"), start + length
        except UnicodeDecodeError:
            return None
    return payload, start + length


read_message_fast: Callable[..., tuple[str | bytes, int] | None] | None = getattr(
    compiled_module, "read_message", None
)
""":func:`read_message`'s compiled twin when built, else ``None``: the receive
loop's own pure path is as fast as the pure function would be."""


def parse_header(buf: bytes | bytearray | memoryview, pos: int = 0) -> FrameHeader | None:
    """Parse the frame header that starts at ``buf[pos]``.

    Returns:
        The header, or ``None`` if ``buf`` does not hold all of it yet.

    Raises:
        RemoteProtocolError: 1002 for a reserved opcode, a fragmented or
            oversized control frame, or a 64-bit length with its top bit set.
    """
    header = read_header(buf, pos)
    if header is None:
        return None
    fin, rsv, opcode, length, mask_key, size = header
    return FrameHeader(fin, rsv, Opcode(opcode), length, mask_key, size)


def serialize_header(
    opcode: int, length: int, *, fin: bool = True, rsv: int = 0, mask_key: bytes | None = None
) -> bytes:
    """Build a frame header, using the shortest length encoding (RFC 6455 §5.2)."""
    first = opcode | rsv | (FIN if fin else 0)
    masked = _MASKED if mask_key is not None else 0
    if length < 126:
        header = _pack_short(first, masked | length)
    elif length < 0x10000:
        header = _pack_medium(first, masked | 126, length)
    else:
        header = _pack_long(first, masked | 127, length)
    return header if mask_key is None else header + mask_key


def serialize_frame(
    opcode: int,
    payload: bytes | bytearray | memoryview = b"",
    *,
    fin: bool = True,
    rsv: int = 0,
    mask_key: bytes | None = None,
) -> bytes:
    """Serialize one frame.

    Args:
        opcode: the frame's opcode.
        payload: the unmasked payload.
        fin: whether this is the last frame of its message.
        rsv: RSV bits to set (``RSV1``, ``RSV2``, ``RSV3``).
        mask_key: 4 random bytes to mask with (clients must), or ``None``.

    Raises:
        LocalProtocolError: a control frame over 125 bytes or not final, an
            unknown opcode, or a masking key that is not 4 bytes.
    """
    if opcode not in _OPCODES:
        raise LocalProtocolError(f"unknown opcode {opcode:#x}")
    length = len(payload)
    if opcode >= 0x8 and (length > _MAX_CONTROL_PAYLOAD or not fin):
        raise LocalProtocolError("control frames must be final and carry at most 125 bytes")
    if rsv & ~_RSV:
        raise LocalProtocolError(f"invalid RSV bits {rsv:#x}")
    if mask_key is not None and len(mask_key) != 4:
        raise LocalProtocolError("the masking key must be 4 bytes")
    header = serialize_header(opcode, length, fin=fin, rsv=rsv, mask_key=mask_key)
    if mask_key is not None:
        return mask_frame(header, payload, mask_key)
    return header + payload


@dataclass(frozen=True, slots=True)
class Frame:
    """A whole frame with its payload unmasked, for codec-level work and tests.

    Connections don't build these on their hot path; they are the unit of the
    public codec functions :func:`parse_frame` and :meth:`serialize`.
    """

    opcode: Opcode
    payload: bytes = b""
    fin: bool = True
    rsv: int = 0

    def serialize(self, mask_key: bytes | None = None) -> bytes:
        """Serialize, masked with ``mask_key`` if given. See :func:`serialize_frame`."""
        return serialize_frame(
            self.opcode, self.payload, fin=self.fin, rsv=self.rsv, mask_key=mask_key
        )


def parse_frame(
    buf: bytes | bytearray | memoryview, pos: int = 0
) -> tuple[Frame, bool, int] | None:
    """Parse one whole frame starting at ``buf[pos]``.

    Returns:
        ``(frame, masked, end)`` where ``end`` is the position after the frame,
        or ``None`` if the frame is incomplete.

    Raises:
        RemoteProtocolError: as :func:`parse_header`.
    """
    header = parse_header(buf, pos)
    if header is None:
        return None
    start = pos + header.size
    end = start + header.length
    if len(buf) < end:
        return None
    payload = bytes(buf[start:end])
    if header.mask_key is not None:
        payload = apply_mask(payload, header.mask_key)
    frame = Frame(header.opcode, payload, header.fin, header.rsv)
    return frame, header.mask_key is not None, end


def format_close_message(code: int = CloseCode.NORMAL_CLOSURE, reason: str = "") -> bytes:
    """Build a Close frame payload (gorilla: ``FormatCloseMessage``).

    Code 1005 (``NO_STATUS_RCVD``) means "no code" and gives an empty payload.

    Raises:
        LocalProtocolError: the code may not be sent, or the reason is longer
            than 123 bytes once encoded.
    """
    if code == CloseCode.NO_STATUS_RCVD:
        if reason:
            raise LocalProtocolError("a close reason needs a close code")
        return b""
    if not is_valid_close_code(code):
        raise LocalProtocolError(
            f"close code {code} may not be sent: use 1000-1003, 1007-1014 or 3000-4999"
        )
    encoded = reason.encode()
    if len(encoded) > _MAX_CONTROL_PAYLOAD - 2:
        raise LocalProtocolError("the close reason must be at most 123 bytes in UTF-8")
    return code.to_bytes(2, "big") + encoded


def parse_close_payload(payload: bytes) -> tuple[int, str]:
    """Read the code and reason of a received Close frame (RFC 6455 §5.5.1).

    Returns:
        ``(code, reason)``; ``(1005, "")`` for an empty payload.

    Raises:
        RemoteProtocolError: 1002 for a one-byte payload or a code that may not
            be sent; 1007 for a reason that is not UTF-8.
    """
    if not payload:
        return CloseCode.NO_STATUS_RCVD, ""
    if len(payload) == 1:
        raise RemoteProtocolError(CloseCode.PROTOCOL_ERROR, "close payload of one byte")
    code = int.from_bytes(payload[:2], "big")
    if not is_valid_close_code(code):
        raise RemoteProtocolError(CloseCode.PROTOCOL_ERROR, f"invalid close code {code}")
    try:
        reason = payload[2:].decode()
    except UnicodeDecodeError:
        raise RemoteProtocolError(
            CloseCode.INVALID_FRAME_PAYLOAD_DATA, "close reason is not UTF-8"
        ) from None
    return code, reason
