"""permessage-deflate attacks (RFC 7692): corrupt data, misplaced RSV1, bombs.

The server's Upgrader has ``enable_compression=True``; the raw client
offers ``permessage-deflate`` in its handshake and compresses by hand
(hostile_helpers.deflate: raw DEFLATE, sync flush, tail removed, §7.2.1).
"""

from __future__ import annotations

import functools
import time
import zlib

import pytest
from hostile_helpers import (
    READ_LIMIT,
    MemoryMeter,
    MiB,
    RawClient,
    ServerHandle,
    assert_still_serves,
    deflate,
    raw_frame,
)

from wsproto_core import Opcode

PROTOCOL_ERROR = 1002
INVALID_PAYLOAD = 1007
TOO_BIG = 1009
RSV1, RSV2 = 0x40, 0x20

pytestmark = pytest.mark.upgrader(enable_compression=True)

BOMB_SIZE = 100 * 1000 * 1000  # bytes the bomb inflates to: 100 times the read limit


@functools.cache
def bomb() -> bytes:
    """100 MB of zeros, deflated to about 100 KB, as a permessage-deflate payload."""
    compressor = zlib.compressobj(9, zlib.DEFLATED, -15)
    block = bytes(MiB)
    full, rest = divmod(BOMB_SIZE, MiB)
    parts = [compressor.compress(block) for _ in range(full)]
    parts.append(compressor.compress(bytes(rest)))
    parts.append(compressor.flush(zlib.Z_SYNC_FLUSH))
    return b"".join(parts)[:-4]  # "Remove 4 octets (that are 0x00 0x00 0xff 0xff)" -- §7.2.1


def open_compressed(port: int, **kwargs: float) -> RawClient:
    """A raw client whose handshake negotiated permessage-deflate."""
    client = RawClient(port, **kwargs)  # type: ignore[arg-type]
    try:
        response = client.handshake([("Sec-WebSocket-Extensions", "permessage-deflate")])
        extensions = response.header("sec-websocket-extensions") or ""
        assert extensions.split(";")[0].strip() == "permessage-deflate", extensions
    except BaseException:
        client.close()
        raise
    return client


def test_compressed_message_is_echoed(server: ServerHandle) -> None:
    # The control: negotiation works and a compressed message round-trips,
    # whole and fragmented (RSV1 on the first fragment only, §6.1).
    text = "compress me " * 100
    with open_compressed(server.port) as client:
        payload = deflate(text.encode())
        client.send_frame(Opcode.TEXT, payload[:10], fin=False, rsv=RSV1)
        client.send_frame(Opcode.CONTINUATION, payload[10:])
        assert client.read_message() == (Opcode.TEXT, text.encode())
        client.close_handshake()


CORRUPT = {
    "invalid block type": b"\xff\xff\xff\xff",
    "stored block lengths disagree": b"\x00\x05\x00\x00\x00hello",
    "distance too far back": b"\x03\x02\x00",
}


@pytest.mark.parametrize("data", CORRUPT.values(), ids=CORRUPT.keys())
@pytest.mark.parametrize(
    ("opcode", "code"),
    [(Opcode.TEXT, INVALID_PAYLOAD), (Opcode.BINARY, PROTOCOL_ERROR)],
    ids=["text", "binary"],
)
def test_corrupt_compressed_data(
    server: ServerHandle, data: bytes, opcode: Opcode, code: int
) -> None:
    # RFC 7692 names no close code for data that does not inflate. The core
    # documents its choice (docs/compression.md, "Errors"): 1007 in a text
    # message, whose payload is then "not consistent with the type of the
    # message" (RFC 6455 §7.4.1), and 1002 in a binary one.
    with open_compressed(server.port) as client:
        client.send_frame(opcode, data, rsv=RSV1)
        client.expect_close(code)
    assert_still_serves(server.port)


def test_compressed_text_that_inflates_to_invalid_utf8(server: ServerHandle) -> None:
    # UTF-8 is checked after inflating (RFC 7692 §6.2, RFC 6455 §8.1).
    with open_compressed(server.port) as client:
        client.send_frame(Opcode.TEXT, deflate(b"valid, then \xff\xfe"), rsv=RSV1)
        client.expect_close(INVALID_PAYLOAD)
    assert_still_serves(server.port)


def test_invalid_utf8_in_a_compressed_fragment_fails_fast(server: ServerHandle) -> None:
    # The first fragment of a compressed text message inflates to invalid
    # UTF-8; the rest never comes. The core checks the text as it inflates
    # it, so the server answers 1007 at once (RFC 6455 §8.1).
    with open_compressed(server.port, timeout=2.0) as client:
        client.send_frame(Opcode.TEXT, deflate(b"valid, then \xff"), fin=False, rsv=RSV1)
        start = time.monotonic()
        client.expect_close(INVALID_PAYLOAD)
        assert time.monotonic() - start < 1.0
    assert_still_serves(server.port)


def test_corrupt_compressed_first_fragment_fails_fast(server: ServerHandle) -> None:
    # Likewise, data that does not inflate fails the connection as it
    # arrives, without waiting for the message's last fragment.
    with open_compressed(server.port, timeout=2.0) as client:
        client.send_frame(Opcode.TEXT, CORRUPT["invalid block type"], fin=False, rsv=RSV1)
        client.expect_close(INVALID_PAYLOAD)
    assert_still_serves(server.port)


MISPLACED_RSV = {
    # "An endpoint MUST NOT set the "Per-Message Compressed" bit of control
    # frames and non-first fragments of a data message. An endpoint
    # receiving such a frame MUST _Fail the WebSocket Connection_." -- RFC 7692 §6.1
    "RSV1 on a continuation": [
        (Opcode.TEXT, deflate(b"first"), False, RSV1),
        (Opcode.CONTINUATION, deflate(b"second"), True, RSV1),
    ],
    "RSV1 on a ping": [(Opcode.PING, b"ping", True, RSV1)],
    "RSV1 on a close": [(Opcode.CLOSE, b"\x03\xe8", True, RSV1)],
    # permessage-deflate claims RSV1 only; RSV2 still means nothing (RFC 6455 §5.2).
    "RSV2 with deflate negotiated": [(Opcode.TEXT, b"plain", True, RSV2)],
}


@pytest.mark.parametrize("frames", MISPLACED_RSV.values(), ids=MISPLACED_RSV.keys())
def test_misplaced_rsv_bits(server: ServerHandle, frames: list) -> None:
    with open_compressed(server.port) as client:
        for opcode, payload, fin, rsv in frames:
            client.send_frame(opcode, payload, fin=fin, rsv=rsv)
        client.expect_close(PROTOCOL_ERROR)
    assert_still_serves(server.port)


@pytest.mark.parametrize("opcode", [Opcode.BINARY, Opcode.TEXT], ids=["binary", "text"])
@pytest.mark.parametrize("finished", [True, False], ids=["whole", "never finished"])
def test_compression_bomb(server: ServerHandle, opcode: Opcode, finished: bool) -> None:
    # ~100 KB that inflate to 100 MB against a 1 MiB read limit: "a message
    # that is too big for it to process" (RFC 6455 §7.4.1), 1009. The core
    # inflates at most the room left under the limit, plus one byte
    # (docs/compression.md), so the server fails the connection quickly and
    # in bounded memory, whether or not the message ever ends.
    payload = bomb()
    assert len(payload) < BOMB_SIZE // 500
    with open_compressed(server.port) as client, MemoryMeter() as memory:
        start = time.monotonic()
        client.send_frame(opcode, payload, fin=finished, rsv=RSV1)
        client.expect_close(TOO_BIG)
        elapsed = time.monotonic() - start
    assert elapsed < 2.0, elapsed
    # Generous: the read limit, a decoded piece or two, zlib's window, and
    # the compressed frame; inflating it all would take 100 MB.
    assert memory.peak < 16 * MiB, memory.peak
    assert_still_serves(server.port)


@pytest.mark.parametrize(
    ("length", "code"), [(2**63 - 1, TOO_BIG), (2**63, PROTOCOL_ERROR)], ids=["2**63 - 1", "2**63"]
)
def test_compressed_frame_with_a_huge_length_claim(
    server: ServerHandle, length: int, code: int
) -> None:
    # A compressed frame's length says nothing of the message's size, so
    # the core checks the inflated size as it goes instead of the claim
    # (connection.py _check_header): a claim of 2**63 - 1 bytes followed by
    # the bomb fails with 1009 once the inflated data passes the limit. A
    # claim with the top bit set is a framing error all the same (§5.2).
    with open_compressed(server.port) as client, MemoryMeter() as memory:
        client.send(raw_frame(0x80 | RSV1 | Opcode.BINARY, bomb(), length=length))
        client.expect_close(code)
    assert memory.peak < 16 * MiB, memory.peak
    assert_still_serves(server.port)


def test_inflating_to_exactly_the_read_limit_passes(server: ServerHandle) -> None:
    # The bomb's control: a message that inflates to the read limit is fine.
    with open_compressed(server.port) as client:
        client.send_frame(Opcode.BINARY, deflate(bytes(READ_LIMIT)), rsv=RSV1)
        assert client.read_message() == (Opcode.BINARY, bytes(READ_LIMIT))
        client.close_handshake()


DECLINED_OFFERS = {
    # "A server MUST decline an extension negotiation offer for this
    # extension if any of the following conditions are met: [...] an
    # extension parameter not defined for use in an offer [...] an extension
    # parameter with an invalid value [...] multiple extension parameters
    # with the same name" -- RFC 7692 §7. Declined: the handshake succeeds
    # without the extension, and then RSV1 means nothing (RFC 6455 §5.2).
    "unknown parameter": "permessage-deflate; foo=1",
    "window bits 7": "permessage-deflate; server_max_window_bits=7",
    "window bits 16": "permessage-deflate; client_max_window_bits=16",
    "leading zero": "permessage-deflate; server_max_window_bits=08",
    "no value": "permessage-deflate; server_max_window_bits",
    "value on a flag": "permessage-deflate; server_no_context_takeover=1",
    "repeated parameter": (
        "permessage-deflate; server_no_context_takeover; server_no_context_takeover"
    ),
}


@pytest.mark.parametrize("offer", DECLINED_OFFERS.values(), ids=DECLINED_OFFERS.keys())
def test_invalid_offer_is_declined(server: ServerHandle, offer: str) -> None:
    with RawClient(server.port) as client:
        response = client.handshake([("Sec-WebSocket-Extensions", offer)])
        assert response.header("sec-websocket-extensions") is None
        client.echo("plain")
        client.send_frame(Opcode.TEXT, deflate(b"compressed anyway"), rsv=RSV1)
        client.expect_close(PROTOCOL_ERROR)
    assert_still_serves(server.port)
