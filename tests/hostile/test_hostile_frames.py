"""Frames that break RFC 6455 §5, and the Close code each one earns (§7.4.1).

Each attack opens a WebSocket with a valid handshake, sends the bad bytes,
and expects the server to _Fail the WebSocket Connection_ (§7.1.7): a Close
frame with the code below, then the end of the TCP connection. Afterwards
a new client must be served normally.
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Callable

import pytest
from hostile_helpers import (
    READ_LIMIT,
    TIMEOUT,
    MemoryMeter,
    RawClient,
    ServerHandle,
    assert_still_serves,
    open_websocket,
    raw_frame,
    request_bytes,
)

from wsproto_core import Opcode, serialize_frame

PROTOCOL_ERROR = 1002
INVALID_PAYLOAD = 1007
TOO_BIG = 1009

FIN = 0x80
RSV1, RSV2, RSV3 = 0x40, 0x20, 0x10


def frame(opcode: int, payload: bytes = b"", *, fin: bool = True, rsv: int = 0) -> bytes:
    """A masked client frame of a legal shape, built by the core's codec."""
    return serialize_frame(opcode, payload, fin=fin, rsv=rsv, mask_key=b"\x37\xfa\x21\x3d")


def unmasked(opcode: int, payload: bytes = b"") -> bytes:
    return serialize_frame(opcode, payload)


def length_claim(length: int) -> bytes:
    """A binary frame header claiming ``length`` bytes in the 64-bit form; no payload follows."""
    return raw_frame(FIN | Opcode.BINARY, length=length)


def attack(server: ServerHandle, data: bytes, code: int) -> None:
    """Send ``data`` on a new WebSocket; expect a Close with ``code``, then the end of TCP."""
    with open_websocket(server.port) as client:
        client.send(data)
        client.expect_close(code)


FRAMING_ERRORS: dict[str, tuple[Callable[[], bytes], int]] = {
    # "The server MUST close the connection upon receiving a frame that is
    # not masked. [...] a server MAY send a Close frame with a status code of
    # 1002 (protocol error)" -- §5.1. The core does send 1002.
    "unmasked text": (lambda: unmasked(Opcode.TEXT, b"hello"), PROTOCOL_ERROR),
    "unmasked binary": (lambda: unmasked(Opcode.BINARY, b"\x00\x01"), PROTOCOL_ERROR),
    "unmasked ping": (lambda: unmasked(Opcode.PING, b"ping"), PROTOCOL_ERROR),
    "unmasked close": (lambda: unmasked(Opcode.CLOSE, b"\x03\xe8"), PROTOCOL_ERROR),
    # "If a nonzero value is received and none of the negotiated extensions
    # defines the meaning of such a nonzero value, the receiving endpoint
    # MUST _Fail the WebSocket Connection_." -- §5.2 (no extension here)
    "RSV1 on text": (lambda: frame(Opcode.TEXT, b"hi", rsv=RSV1), PROTOCOL_ERROR),
    "RSV2 on text": (lambda: frame(Opcode.TEXT, b"hi", rsv=RSV2), PROTOCOL_ERROR),
    "RSV3 on binary": (lambda: frame(Opcode.BINARY, b"hi", rsv=RSV3), PROTOCOL_ERROR),
    "all RSV on binary": (
        lambda: frame(Opcode.BINARY, b"hi", rsv=RSV1 | RSV2 | RSV3),
        PROTOCOL_ERROR,
    ),
    "RSV1 on ping": (lambda: frame(Opcode.PING, b"hi", rsv=RSV1), PROTOCOL_ERROR),
    "RSV2 on close": (lambda: frame(Opcode.CLOSE, b"\x03\xe8", rsv=RSV2), PROTOCOL_ERROR),
    # "If an unknown opcode is received, the receiving endpoint MUST _Fail
    # the WebSocket Connection_." -- §5.2
    **{
        f"reserved opcode {op:#x}": (
            lambda op=op: raw_frame(FIN | op, b"data"),  # type: ignore[misc]
            PROTOCOL_ERROR,
        )
        for op in (0x3, 0x4, 0x5, 0x6, 0x7, 0xB, 0xC, 0xD, 0xE, 0xF)
    },
    # "All control frames MUST have a payload length of 125 bytes or less
    # and MUST NOT be fragmented." -- §5.5
    "fragmented ping": (lambda: raw_frame(Opcode.PING, b"part"), PROTOCOL_ERROR),
    "fragmented pong": (lambda: raw_frame(Opcode.PONG, b"part"), PROTOCOL_ERROR),
    "fragmented close": (lambda: raw_frame(Opcode.CLOSE, b"\x03\xe8"), PROTOCOL_ERROR),
    "ping of 126 bytes": (lambda: raw_frame(FIN | Opcode.PING, b"p" * 126), PROTOCOL_ERROR),
    "pong of 126 bytes": (lambda: raw_frame(FIN | Opcode.PONG, b"p" * 126), PROTOCOL_ERROR),
    "close of 126 bytes": (
        lambda: raw_frame(FIN | Opcode.CLOSE, b"\x03\xe8" + b"r" * 124),
        PROTOCOL_ERROR,
    ),
    # The oversized control frame is refused from its header: the claimed
    # payload never arrives, and the server must not wait for it.
    "ping claiming 64 KiB": (
        lambda: raw_frame(FIN | Opcode.PING, length=65536),
        PROTOCOL_ERROR,
    ),
    "text over the read limit": (
        lambda: raw_frame(FIN | Opcode.TEXT, length=READ_LIMIT + 1),
        TOO_BIG,
    ),
    # Fragmentation (§5.4): "a fragmented message consists of a single frame
    # with the FIN bit clear and an opcode other than 0, followed by zero or
    # more frames with the FIN bit clear and the opcode set to 0, and
    # terminated by a single frame with the FIN bit set and an opcode of 0."
    "continuation without a message": (
        lambda: frame(Opcode.CONTINUATION, b"orphan"),
        PROTOCOL_ERROR,
    ),
    "text inside a fragmented binary": (
        lambda: frame(Opcode.BINARY, b"a", fin=False) + frame(Opcode.TEXT, b"b"),
        PROTOCOL_ERROR,
    ),
    "binary inside a fragmented text": (
        lambda: frame(Opcode.TEXT, b"a", fin=False) + frame(Opcode.BINARY, b"b", fin=False),
        PROTOCOL_ERROR,
    ),
    "RSV1 on a continuation": (
        lambda: frame(Opcode.TEXT, b"a", fin=False) + frame(Opcode.CONTINUATION, b"b", rsv=RSV1),
        PROTOCOL_ERROR,
    ),
}


@pytest.mark.parametrize(("build", "code"), FRAMING_ERRORS.values(), ids=FRAMING_ERRORS.keys())
def test_framing_error_fails_the_connection(
    server: ServerHandle, build: Callable[[], bytes], code: int
) -> None:
    attack(server, build(), code)
    assert_still_serves(server.port)


LENGTH_CLAIMS = {
    # "the most significant bit MUST be 0" -- §5.2, for the 64-bit length:
    # a claim of 2**63 bytes or more is a framing error (1002).
    "2**63": (2**63, PROTOCOL_ERROR),
    "2**64 - 1": (2**64 - 1, PROTOCOL_ERROR),
    # The largest legal claim is a message "too big for it to process"
    # (§7.4.1, 1009): the core compares the claim with the read limit.
    "2**63 - 1": (2**63 - 1, TOO_BIG),
    "read limit + 1": (READ_LIMIT + 1, TOO_BIG),
}


@pytest.mark.parametrize(("length", "code"), LENGTH_CLAIMS.values(), ids=LENGTH_CLAIMS.keys())
def test_huge_length_claim_is_refused_from_the_header(
    server: ServerHandle, length: int, code: int
) -> None:
    # The header alone decides (connection.py _check_header, frames.py
    # read_header): no payload follows, the server must not wait for one,
    # nor allocate for the claim: the peak stays far below the read limit
    # that a server reserving room for the payload would take (the two
    # 64 KiB read buffers, ours and the server's, make most of it).
    with open_websocket(server.port) as client, MemoryMeter() as memory:
        client.send(length_claim(length))
        client.expect_close(code)
    assert memory.peak < 512 * 1024, memory.peak
    assert_still_serves(server.port)


@pytest.mark.parametrize("size", [READ_LIMIT + 1, 8 * READ_LIMIT], ids=["1 MiB + 1", "8 MiB"])
def test_oversized_message_sent_in_full(server: ServerHandle, size: int) -> None:
    # Unlike the bare claims above, the client sends the whole payload, as
    # a real one would, while the server has already failed the connection.
    # Closing with that input unread would make TCP reset the connection,
    # and the reset may destroy the Close before the client reads it; so the
    # server must keep draining for a while (the adapters linger 1 s) and
    # the client must get its 1009.
    data = frame(Opcode.BINARY, bytes(size))
    with open_websocket(server.port) as client:
        sender = threading.Thread(target=_send_ignoring_errors, args=(client, data), daemon=True)
        sender.start()
        try:
            client.expect_close(TOO_BIG)
        finally:
            sender.join(TIMEOUT)
        assert not sender.is_alive()
    assert_still_serves(server.port)


def _send_ignoring_errors(client: RawClient, data: bytes) -> None:
    with contextlib.suppress(OSError):
        client.send(data)


def test_fragments_over_the_read_limit(server: ServerHandle) -> None:
    # Each fragment is small; together they pass the 1 MiB read limit by one
    # byte. The core counts the message, not the frame (§7.4.1, 1009).
    piece = b"x" * (READ_LIMIT // 4)
    data = b"".join(
        frame(Opcode.CONTINUATION if i else Opcode.BINARY, piece, fin=False) for i in range(4)
    )
    attack(server, data + frame(Opcode.CONTINUATION, b"!"), TOO_BIG)
    assert_still_serves(server.port)


def test_message_at_the_read_limit_passes(server: ServerHandle) -> None:
    # The other side of the limit: exactly 1 MiB, in fragments, is echoed.
    piece = b"y" * (READ_LIMIT // 4)
    with open_websocket(server.port) as client:
        for i in range(4):
            opcode = Opcode.CONTINUATION if i else Opcode.BINARY
            client.send_frame(opcode, piece, fin=i == 3)
        assert client.read_message() == (Opcode.BINARY, piece * 4)
        client.close_handshake()


def test_control_frames_between_fragments_are_served(server: ServerHandle) -> None:
    # "Control frames [...] MAY be injected in the middle of a fragmented
    # message." -- §5.4; the Pong comes at once, the message after its end.
    with open_websocket(server.port) as client:
        client.send_frame(Opcode.TEXT, b"frag", fin=False)
        client.send_frame(Opcode.PING, b"in the middle")
        pong = client.read_frame()
        assert (pong.opcode, pong.payload) == (Opcode.PONG, b"in the middle")
        client.send_frame(Opcode.CONTINUATION, b"mented")
        assert client.read_message() == (Opcode.TEXT, b"fragmented")
        client.close_handshake()


# -- invalid UTF-8 (§8.1: "When an endpoint is to interpret a byte stream as
# UTF-8 but finds that the byte stream is not, in fact, a valid UTF-8
# stream, that endpoint MUST _Fail the WebSocket Connection_."; 1007 per
# §7.4.1). The core checks text as it arrives and fails at the first byte
# that cannot start or continue a valid sequence (wsproto_core/utf8.py;
# Autobahn's "fail fast" cases 6.4.x), so the rest of the message is never
# needed: these attacks never send it.

UTF8_FIRST_FRAGMENT = {
    "invalid byte 0xff": b"hello \xff",
    "overlong '/'": b"hello \xc0\xaf",
    "code point over U+10FFFF": b"hello \xf4\x90",
    # CPython's decoder would wait for a third byte here; the core does not.
    "surrogate U+D800, two bytes of three": b"hello \xed\xa0",
    "continuation byte first": b"\x80hello",
}


@pytest.mark.parametrize("payload", UTF8_FIRST_FRAGMENT.values(), ids=UTF8_FIRST_FRAGMENT.keys())
def test_invalid_utf8_fails_fast_in_the_first_fragment(
    server: ServerHandle, payload: bytes
) -> None:
    with open_websocket(server.port, timeout=2.0) as client:
        client.send_frame(Opcode.TEXT, payload, fin=False)  # and never the rest
        start = time.monotonic()
        client.expect_close(INVALID_PAYLOAD)
        assert time.monotonic() - start < 1.0
    assert_still_serves(server.port)


UTF8_SPLIT = {
    # (first fragment, second fragment): each is fine alone, not together.
    "4-byte lead, then out of range": (b"ok \xf4", b"\x90\x80\x80 and more"),
    "3-byte lead, then surrogate": (b"ok \xed", b"\xa0\x80 and more"),
    "2-byte lead, then ASCII": (b"ok \xce", b"A and more"),
}


@pytest.mark.parametrize(("first", "second"), UTF8_SPLIT.values(), ids=UTF8_SPLIT.keys())
def test_invalid_utf8_split_across_fragments(
    server: ServerHandle, first: bytes, second: bytes
) -> None:
    with open_websocket(server.port, timeout=2.0) as client:
        client.send_frame(Opcode.TEXT, first, fin=False)
        client.send_frame(Opcode.CONTINUATION, second, fin=False)  # the message is not over
        start = time.monotonic()
        client.expect_close(INVALID_PAYLOAD)
        assert time.monotonic() - start < 1.0
    assert_still_serves(server.port)


@pytest.mark.parametrize(
    "payload",
    [b"\xff\xfe", b"caf\xc3", b"\xe2\x82"],
    ids=["invalid bytes", "ends inside a character", "only a truncated character"],
)
def test_invalid_utf8_in_a_whole_text_message(server: ServerHandle, payload: bytes) -> None:
    attack(server, frame(Opcode.TEXT, payload), INVALID_PAYLOAD)
    assert_still_serves(server.port)


def test_a_text_message_ending_inside_a_character_over_fragments(server: ServerHandle) -> None:
    # Every fragment is a valid prefix; the message ends inside a character.
    data = frame(Opcode.TEXT, b"caf", fin=False) + frame(Opcode.CONTINUATION, b"\xc3")
    attack(server, data, INVALID_PAYLOAD)
    assert_still_serves(server.port)


def test_valid_utf8_split_across_fragments_is_echoed(server: ServerHandle) -> None:
    # The negative tests' control: a character cut between fragments is fine.
    text = "κόσμε 𝄞".encode()
    with open_websocket(server.port) as client:
        for i, byte in enumerate(text):
            opcode = Opcode.CONTINUATION if i else Opcode.TEXT
            client.send_frame(opcode, bytes([byte]), fin=i == len(text) - 1)
        assert client.read_message() == (Opcode.TEXT, text)
        client.close_handshake()


def test_unmasked_frame_after_valid_traffic(server: ServerHandle) -> None:
    # The check holds for every frame, not only the first.
    with RawClient(server.port) as client:
        client.handshake()
        client.echo("first")
        client.send(unmasked(Opcode.TEXT, b"second"))
        client.expect_close(PROTOCOL_ERROR)
    assert_still_serves(server.port)


def test_frames_sent_with_the_request(server: ServerHandle) -> None:
    # A client may send frames right behind its request, before the 101
    # (nothing in §4 forbids it): they are the connection's first input.
    with RawClient(server.port) as client:
        early = frame(Opcode.TEXT, b"early") + frame(Opcode.TEXT, b"\xff")
        client.send(request_bytes(server.port) + early)
        assert client.read_http_response().status == 101
        assert client.read_message() == (Opcode.TEXT, b"early")
        client.expect_close(INVALID_PAYLOAD)  # the second one is checked too
    assert_still_serves(server.port)


def test_frames_trickled_byte_by_byte(server: ServerHandle) -> None:
    # Frame headers, masking keys and payloads cut anywhere are reassembled;
    # the Close too.
    text = "héllo wörld " * 20
    data = frame(Opcode.TEXT, text.encode()) + frame(Opcode.CLOSE, (1000).to_bytes(2, "big"))
    with open_websocket(server.port) as client:
        for i in range(len(data)):
            client.send(data[i : i + 1])
            if i % 16 == 0:
                time.sleep(0.001)  # let some bytes arrive alone
        assert client.read_message() == (Opcode.TEXT, text.encode())
        client.expect_close(1000)
    assert_still_serves(server.port)
