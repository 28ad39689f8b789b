"""Malformed, oversized, slow and cross-site opening handshakes (RFC 6455 §4.2).

Every refusal is an HTTP error response followed by the end of the TCP
connection, and the server then still serves a new client.
"""

from __future__ import annotations

import base64
import socket
import struct
import threading
import time
from contextlib import suppress

import pytest
from hostile_helpers import (
    MAX_HANDSHAKE,
    TIMEOUT,
    MemoryMeter,
    MiB,
    RawClient,
    ServerHandle,
    assert_still_serves,
    new_key,
    peer_closed,
    request_bytes,
)

# (request options, status, headers the response must carry)
BAD_REQUESTS = {
    # "A |Sec-WebSocket-Key| header field with a base64-encoded [...] value
    # that, when decoded, is 16 bytes in length." -- §4.2.1, item 5; a
    # request that breaks §4.2.1 gets "an HTTP response with an appropriate
    # error code (such as 400 Bad Request)" -- §4.2.1.
    "missing key": ({"key": None}, 400, {}),
    "key not base64": ({"key": "not a key!!"}, 400, {}),
    "key of 15 bytes": ({"key": base64.b64encode(b"x" * 15).decode()}, 400, {}),
    "two keys": ({"headers": [("Sec-WebSocket-Key", new_key())]}, 400, {}),
    # "If this version does not match a version understood by the server,
    # the server MUST abort the WebSocket handshake [...] and instead send
    # an appropriate HTTP error code (such as 426 Upgrade Required) and a
    # |Sec-WebSocket-Version| header field indicating the version(s) the
    # server is capable of understanding." -- §4.2.2, §4.4
    "version 8": (
        {"omit": ["sec-websocket-version"], "headers": [("Sec-WebSocket-Version", "8")]},
        426,
        {"sec-websocket-version": "13"},
    ),
    # No version at all is a malformed request (§4.2.1, item 6): the core
    # answers 400, with the version it speaks all the same.
    "no version": (
        {"omit": ["sec-websocket-version"]},
        400,
        {"sec-websocket-version": "13"},
    ),
    # "An HTTP/1.1 or higher GET request" -- §4.2.1, item 1. A handshake
    # with another method gets 405 with Allow (RFC 9110 §15.5.6: "MUST
    # generate an Allow header field").
    "POST": ({"method": "POST"}, 405, {"allow": "GET"}),
    "PUT": ({"method": "PUT"}, 405, {"allow": "GET"}),
    "HTTP/1.0": ({"version": "HTTP/1.0"}, 400, {}),
    # §4.2.1, items 2 and 4.
    "no Host": ({"omit": ["host"]}, 400, {}),
    "no Connection: Upgrade": (
        {"omit": ["connection"], "headers": [("Connection", "keep-alive")]},
        400,
        {},
    ),
    # A plain HTTP request on the WebSocket port: 426 Upgrade Required,
    # naming the protocol to upgrade to (RFC 9110 §15.5.22: "MUST send an
    # Upgrade header field"), and the version, as gorilla does.
    "plain GET": (
        {"omit": ["upgrade", "connection", "sec-websocket-version"], "key": None},
        426,
        {"upgrade": "websocket", "sec-websocket-version": "13"},
    ),
    # "|Sec-WebSocket-Extensions| [...] MUST conform to" the ABNF of §9.1.
    "malformed Sec-WebSocket-Extensions": (
        {"headers": [("Sec-WebSocket-Extensions", "permessage-deflate; =")]},
        400,
        {},
    ),
    # A browser page on another site: the default check_origin, same_origin,
    # refuses it with 403 (§4.2.2: "If the server does not wish to accept
    # this connection, it MUST return an appropriate HTTP error code (e.g.,
    # 403 Forbidden)"; §10.2 on Origin).
    "foreign Origin": ({"headers": [("Origin", "http://evil.example")]}, 403, {}),
    "Origin null": ({"headers": [("Origin", "null")]}, 403, {}),
    "foreign Origin, same host other port": (
        {"headers": [("Origin", "http://127.0.0.1:1")]},
        403,
        {},
    ),
}


@pytest.mark.parametrize(
    ("options", "status", "required"), BAD_REQUESTS.values(), ids=BAD_REQUESTS.keys()
)
def test_bad_request_is_refused(
    server: ServerHandle, options: dict, status: int, required: dict[str, str]
) -> None:
    with RawClient(server.port) as client:
        client.send(request_bytes(server.port, **options))
        response = client.read_http_response()
        assert response.status == status, (response.status, response.body)
        for name, value in required.items():
            assert response.header(name) == value, (name, response.headers)
        assert (response.header("connection") or "").lower() == "close"
        assert response.header("sec-websocket-accept") is None
        client.expect_eof()
    assert_still_serves(server.port)


def test_same_origin_is_accepted(server: ServerHandle) -> None:
    # The other side of the 403 above: an Origin that names this server passes.
    with RawClient(server.port) as client:
        client.handshake([("Origin", f"http://127.0.0.1:{server.port}")])
        client.echo()
        client.close_handshake()


@pytest.mark.parametrize("shape", ["many headers", "one huge header", "huge request target"])
def test_header_flood_is_refused_without_reading_it_all(server: ServerHandle, shape: str) -> None:
    # About 2 MiB of request head, 120 times max_handshake_size (16 KiB): the
    # server must answer 431 (RFC 6585 §5) or 400 once the limit is passed,
    # without waiting for, or buffering, the rest.
    size = 2 * MiB
    if shape == "many headers":
        line_count = size // 32
        flood = [(f"X-Flood-{i:08d}", "a" * 10) for i in range(line_count)]
    elif shape == "one huge header":
        flood = [("X-Flood", "a" * size)]
    else:
        flood = []
    head = request_bytes(server.port, headers=flood)
    if shape == "huge request target":
        head = head.replace(b"GET / ", b"GET /" + b"a" * size + b" ", 1)
    assert len(head) > 100 * MAX_HANDSHAKE
    with RawClient(server.port) as client:
        sent = 0

        def send_all() -> None:
            nonlocal sent
            # The server may close before taking it all: that's the point.
            with suppress(OSError), memoryview(head) as view:
                while sent < len(view):
                    sent += client.sock.send(view[sent : sent + 65536])

        sender = threading.Thread(target=send_all, daemon=True)
        with MemoryMeter() as memory:
            sender.start()
            response = client.read_http_response()
            # (414 URI Too Long, RFC 9110 §15.5.15, would do for the long target.)
            assert response.status in (400, 414, 431), (response.status, response.body)
            client.expect_eof()
            sender.join(TIMEOUT)
            assert not sender.is_alive()
    # What the server buffers is bounded by max_handshake_size and a read
    # or two (64 KiB each), not by what the client sends (~200 KiB measured).
    assert memory.peak < MiB, memory.peak
    assert_still_serves(server.port)


@pytest.mark.upgrader(handshake_timeout=0.5)
@pytest.mark.parametrize("pace", ["byte by byte", "silent"])
def test_slow_request_times_out(server: ServerHandle, pace: str) -> None:
    # A slowloris client: the request trickles in (or never starts), and the
    # Upgrader's handshake_timeout (gorilla's HandshakeTimeout) must close
    # the connection, so a slow client cannot hold a server's resources.
    request = request_bytes(server.port)
    with RawClient(server.port) as client:
        start = time.monotonic()
        sent = 0
        while True:
            elapsed = time.monotonic() - start
            assert elapsed < 3.0, "the server kept a slow request's connection open"
            if pace == "byte by byte":
                try:
                    sent += client.sock.send(request[sent : sent + 1])
                except (BrokenPipeError, ConnectionResetError):
                    break
            if peer_closed(client.sock, 0.05):
                break
        closed_after = time.monotonic() - start
        # 0.5 s of handshake_timeout, and a little for scheduling.
        assert 0.4 <= closed_after < 2.0, closed_after
        assert sent < len(request), "the whole request went out: not slow enough"
    assert_still_serves(server.port)


def test_request_with_a_body_is_refused(server: ServerHandle) -> None:
    # §4.2.1 defines a GET without a body; the core refuses one with a body (400).
    body = b"x" * 100
    head = request_bytes(server.port, headers=[("Content-Length", str(len(body)))])
    with RawClient(server.port) as client:
        client.send(head + body)
        response = client.read_http_response()
        assert response.status == 400
        client.expect_eof()
    assert_still_serves(server.port)


def test_garbage_instead_of_a_request(server: ServerHandle) -> None:
    # Not HTTP at all: "an appropriate error code (such as 400 Bad Request)".
    with RawClient(server.port) as client:
        client.send(b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03" + b"\x00" * 64 + b"\r\n\r\n")
        response = client.read_http_response()
        assert response.status == 400
        client.expect_eof()
    assert_still_serves(server.port)


def test_connection_reset_during_handshake(server: ServerHandle) -> None:
    # Half a request, then a reset: the server just drops it.
    sock = socket.create_connection(("127.0.0.1", server.port), timeout=TIMEOUT)
    with sock:
        sock.sendall(request_bytes(server.port)[:40])
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    assert_still_serves(server.port)


ODD_BUT_VALID = {
    # Token lists and case-insensitive tokens (§4.2.1: "|Connection| header
    # field that includes the token "Upgrade", treated as an ASCII
    # case-insensitive value"); Firefox sends "keep-alive, Upgrade".
    "Connection: keep-alive, Upgrade": [("Connection", "keep-alive, Upgrade")],
    "Upgrade: WebSocket": [("Upgrade", "WebSocket")],
    "Connection repeated": [("Connection", "keep-alive"), ("Connection", "upgrade")],
}


@pytest.mark.parametrize("headers", ODD_BUT_VALID.values(), ids=ODD_BUT_VALID.keys())
def test_odd_but_valid_handshake_is_accepted(
    server: ServerHandle, headers: list[tuple[str, str]]
) -> None:
    # The refusals' control: the server is strict, not fussy.
    names = {name.lower() for name, _ in headers}
    request = request_bytes(server.port, omit=names, headers=headers)
    with RawClient(server.port) as client:
        client.send(request)
        assert client.read_http_response().status == 101
        client.echo()
        client.close_handshake()


def test_absolute_request_target_is_accepted(server: ServerHandle) -> None:
    # "(or an absolute HTTP/HTTPS URI containing the /resource name/)" -- §4.2.1
    request = request_bytes(server.port).replace(
        b"GET / ", f"GET http://127.0.0.1:{server.port}/chat?x=1 ".encode(), 1
    )
    with RawClient(server.port) as client:
        client.send(request)
        assert client.read_http_response().status == 101
        client.echo()
        client.close_handshake()
