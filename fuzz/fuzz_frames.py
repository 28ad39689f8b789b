"""Fuzz target: the frame codec, and the read side of an open connection.

The input is ``_harness.Layout``: bytes from a peer, then option bits and chunk
sizes at the end. Checked:

* ``read_message``, the receive loop's fast path, and its compiled twin
  agree, and take only a whole message that ``parse_frame`` reads the same.
* ``parse_header`` / ``parse_frame``, frame after frame from position 0: each
  gives a frame, ``None`` (incomplete) or ``RemoteProtocolError`` 1002, and
  the two agree. A frame re-serialized with its own masking key parses back
  to itself, and to the very same bytes when its length used the shortest
  encoding; its payload is the XOR of the wire bytes with the key.
* A ``Connection`` of each role, fed the bytes whole and in chunks, keeps the
  read contract (``_harness.FrameReader``), and both feeds give the same
  messages, control events, error and replies.

Option bits: 0 stream messages, 1 no auto-pong, 2 the ``x-flip`` extension
(which fails with 1011 on a message starting with 0xFF), 3-5 the read limit,
7 empty reads between chunks.
"""

from __future__ import annotations

import sys
from collections.abc import Callable

import atheris

with atheris.instrument_imports(include=["wsproto_core"]):
    from _harness import FlipExtension, FrameReader, Item, Layout, fixed_random, split_input
    from wsproto_core import (
        DEFAULT_MAX_MESSAGE_SIZE,
        CloseCode,
        Connection,
        RemoteProtocolError,
        Role,
        parse_frame,
    )
    from wsproto_core.frames import parse_header, read_message, read_message_fast

_LIMITS = (DEFAULT_MAX_MESSAGE_SIZE, None, 0, 1, 16, 125, 300, 65536)


def _shortest_header(length: int, masked: bool) -> int:
    extra = 0 if length < 126 else 2 if length < 0x10000 else 8
    return 2 + extra + (4 if masked else 0)


def check_message_reader(wire: bytes, pos: int) -> None:
    """``read_message`` (and its compiled twin) takes only what ``parse_frame`` reads the same."""
    for client in (False, True):
        got = read_message(wire, pos, client, None, None)
        if read_message_fast is not None:
            assert read_message_fast(wire, pos, client, None, None) == got, "twins disagree"
        if got is None:
            continue
        parsed = parse_frame(wire, pos)
        assert parsed is not None, got
        frame, masked, end = parsed
        assert masked is not client, (frame, got)
        assert frame.fin, (frame, got)
        assert not frame.rsv, (frame, got)
        assert end == got[1], (end, got)
        payload = frame.payload.decode() if frame.opcode == 1 else frame.payload
        assert got[0] == payload, (frame, got)


def check_codec(wire: bytes) -> None:
    """Parse ``wire`` frame after frame, checking each frame's round trip."""
    pos = 0
    while pos < len(wire):
        check_message_reader(wire, pos)
        code = _error_code(parse_header, wire, pos)
        if code is not None:
            assert code == _error_code(parse_frame, wire, pos) == CloseCode.PROTOCOL_ERROR, code
            return
        header = parse_header(wire, pos)
        parsed = parse_frame(wire, pos)
        if header is None:
            assert parsed is None, "parse_frame found a frame where parse_header found none"
            return
        end = pos + header.size + header.length
        if parsed is None:
            assert end > len(wire), "parse_frame returned None for a whole frame"
            return
        frame, masked, frame_end = parsed
        assert frame_end == end, (header, parsed)
        assert masked is (header.mask_key is not None), (header, parsed)
        assert (frame.opcode, frame.fin, frame.rsv) == (header.opcode, header.fin, header.rsv)
        # Any buffer type, same result.
        assert parse_frame(bytearray(wire), pos) == parsed
        assert parse_frame(memoryview(wire), pos) == parsed
        # RFC 6455 §5.3, byte by byte: an independent check of apply_mask.
        raw = wire[pos + header.size : end]
        key = header.mask_key or b"\0\0\0\0"
        assert frame.payload == bytes(b ^ key[i & 3] for i, b in enumerate(raw)), "unmasking"
        encoded = frame.serialize(header.mask_key)
        assert parse_frame(encoded) == (frame, masked, len(encoded)), "round trip"
        if header.size == _shortest_header(header.length, masked):
            assert encoded == wire[pos:end], "round trip changed the bytes"
        pos = end


def _error_code(parse: Callable[[bytes, int], object], wire: bytes, pos: int) -> int | None:
    try:
        parse(wire, pos)
    except RemoteProtocolError as exc:
        return exc.code
    return None


def read(role: Role, layout: Layout, chunks: list[bytes]) -> tuple[list[Item], list[Item]]:
    """Feed ``chunks`` to a fresh open connection; return what it read and queued."""
    options = layout.options
    extension = bool(options & 4)
    conn = Connection(
        role,
        extensions=[FlipExtension(fail_on_ff=True)] if extension else [],
        max_message_size=_LIMITS[(options >> 3) & 7],
        auto_pong=not options & 2,
        stream_messages=bool(options & 1),
        random_bytes=fixed_random,
    )
    reader = FrameReader(conn, internal_errors=extension)
    for chunk in chunks:
        reader.feed(chunk)
    sent = reader.finish()
    if extension:
        # A transformed message's size is checked after decoding, piece by
        # piece, and before its UTF-8: so when one piece is both too big and
        # bad UTF-8, the chunking decides between 1009 and 1007. Both are right.
        return _merge_codes(reader.items), _merge_codes(sent)
    return reader.items, sent


def _merge_codes(items: list[Item]) -> list[Item]:
    merged = (CloseCode.INVALID_FRAME_PAYLOAD_DATA, CloseCode.MESSAGE_TOO_BIG)
    return [
        (item[0], "1007 or 1009") if item[0] in ("error", "close") and item[1] in merged else item
        for item in items
    ]


def TestOneInput(data: bytes) -> None:
    layout = split_input(data)
    check_codec(layout.wire)
    for role in Role:
        whole = read(role, layout, [layout.wire])
        chunks = layout.chunks()
        if chunks != [layout.wire]:
            chunked = read(role, layout, chunks)
            assert chunked == whole, f"{role}: chunked {chunked!r:.500} != whole {whole!r:.500}"


def main() -> None:
    atheris.Setup(sys.argv, TestOneInput)
    atheris.Fuzz()


if __name__ == "__main__":
    main()
