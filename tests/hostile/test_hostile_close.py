"""Close frames with bad payloads (RFC 6455 §5.5.1, §7.4), and the good ones' echo."""

from __future__ import annotations

import pytest
from hostile_helpers import ServerHandle, assert_still_serves, open_websocket

from wsproto_core import Opcode, serialize_frame

PROTOCOL_ERROR = 1002
INVALID_PAYLOAD = 1007

# §7.4.1: 1004 is reserved, and 1005, 1006 and 1015 "MUST NOT be set as a
# status code in a Close control frame by an endpoint"; §7.4.2: codes below
# 1000 are unused, 1000-2999 are reserved for the RFC and its extensions
# (1016-2999 are unassigned), and only 3000-4999 belong to others. The RFC
# names no reaction to receiving one; the core fails the connection with
# 1002, as Autobahn's cases 7.9.x expect (wsproto_core.frames.parse_close_payload).
INVALID_CODES = [0, 999, 1004, 1005, 1006, 1015, 1016, 1100, 2000, 2999, 5000, 65535]


@pytest.mark.parametrize("code", INVALID_CODES)
def test_invalid_close_code(server: ServerHandle, code: int) -> None:
    with open_websocket(server.port) as client:
        client.send_frame(Opcode.CLOSE, code.to_bytes(2, "big") + b"reason")
        client.expect_close(PROTOCOL_ERROR)
    assert_still_serves(server.port)


def test_close_payload_of_one_byte(server: ServerHandle) -> None:
    # "If there is a body, the first two bytes of the body MUST be a 2-byte
    # unsigned integer" -- §5.5.1: one byte is no code at all.
    with open_websocket(server.port) as client:
        client.send_frame(Opcode.CLOSE, b"\x03")
        client.expect_close(PROTOCOL_ERROR)
    assert_still_serves(server.port)


@pytest.mark.parametrize(
    "reason", [b"\xff", b"bye \xc3", b"\xed\xa0\x80"], ids=["0xff", "truncated", "surrogate"]
)
def test_close_reason_not_utf8(server: ServerHandle, reason: bytes) -> None:
    # The reason "MAY contain UTF-8-encoded data" (§5.5.1); anything else is
    # data "not consistent with the type of the message" (§7.4.1, §8.1): 1007.
    with open_websocket(server.port) as client:
        client.send_frame(Opcode.CLOSE, (1000).to_bytes(2, "big") + reason)
        client.expect_close(INVALID_PAYLOAD)
    assert_still_serves(server.port)


@pytest.mark.parametrize("code", [1000, 1001, 1003, 1007, 1011, 1014, 3000, 4999])
def test_valid_close_code_is_echoed(server: ServerHandle, code: int) -> None:
    # The negative tests' control. "If an endpoint receives a Close frame and
    # did not previously send a Close frame, the endpoint MUST send a Close
    # frame in response. [...] it typically echos the status code it
    # received." -- §5.5.1; the core echoes the code, without the reason.
    with open_websocket(server.port) as client:
        client.send_frame(Opcode.CLOSE, code.to_bytes(2, "big") + "adiós".encode())
        client.expect_close(code)
    assert_still_serves(server.port)


def test_empty_close_is_answered_without_a_code(server: ServerHandle) -> None:
    # An empty Close has no code (the peer sees 1005, §7.1.5); its echo is empty too.
    with open_websocket(server.port) as client:
        client.send_frame(Opcode.CLOSE)
        frame = client.read_frame()
        assert (frame.opcode, frame.payload) == (Opcode.CLOSE, b"")
        client.expect_eof()
    assert_still_serves(server.port)


def test_data_after_close_is_ignored(server: ServerHandle) -> None:
    # "After sending a Close frame, the endpoint MUST NOT send any further
    # data"; what a peer sends after its own Close is discarded (§1.4, §5.5.1).
    # All in one write: the server may close as soon as it has the Close,
    # and a later write of ours would only meet a reset.
    close = serialize_frame(Opcode.CLOSE, (1000).to_bytes(2, "big"), mask_key=b"abcd")
    after = serialize_frame(Opcode.TEXT, b"after the close", mask_key=b"abcd")
    with open_websocket(server.port) as client:
        client.send(close + after + b"\xff" * 32)  # the last bytes are not even a frame
        client.expect_close(1000)
    assert_still_serves(server.port)
