"""The Upgrader inside the standard library's http.server, its error hook and its pool.

``Upgrader.upgrade(handler)`` takes a connection over from a
``BaseHTTPRequestHandler`` (Go's ``Hijack``). The servers here are real
``ThreadingHTTPServer`` instances on loopback, stopped after each test.
"""

from __future__ import annotations

import http.server
import json
import socket
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from sync_helpers import TIMEOUT, Background

from wsproto_core import (
    ClientConnection,
    CloseCode,
    CloseError,
    HTTPRequest,
    Message,
    MessageType,
    Opcode,
    SharedBufferPool,
    format_close_message,
    serialize_frame,
)
from wsproto_sync import Conn, Dialer, HandshakeError, Upgrader

Route = Callable[[http.server.BaseHTTPRequestHandler], None]


class HTTPServer:
    """A ThreadingHTTPServer whose GET requests go to ``route(handler)``."""

    def __init__(self, route: Route) -> None:
        self.errors: list[BaseException] = []
        self.log: list[str] = []
        outer = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"  # keep-alive: the hijack must stop it

            def do_GET(self) -> None:
                try:
                    route(self)
                except BaseException as exc:
                    outer.errors.append(exc)

            def log_message(self, format: str, *args: Any) -> None:
                outer.log.append(format % args)

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.thread = threading.Thread(
            target=self.server.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True
        )
        self.thread.start()

    @property
    def port(self) -> int:
        return int(self.server.server_address[1])

    def url(self, path: str = "/ws") -> str:
        return f"ws://127.0.0.1:{self.port}{path}"

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(TIMEOUT)


@pytest.fixture
def http_server() -> Iterator[Callable[[Route], HTTPServer]]:
    servers: list[HTTPServer] = []

    def start(route: Route) -> HTTPServer:
        servers.append(HTTPServer(route))
        return servers[-1]

    yield start
    for server in servers:
        server.stop()


def guard(conn: Conn) -> Conn:
    conn.set_read_deadline(time.monotonic() + TIMEOUT)
    conn.set_write_deadline(time.monotonic() + TIMEOUT)
    return conn


def echo_route(upgrader: Upgrader, done: list[Any] | None = None) -> Route:
    """Upgrade GETs of /ws and echo until the client closes; 404 elsewhere."""

    def route(handler: http.server.BaseHTTPRequestHandler) -> None:
        if handler.path != "/ws":
            handler.send_error(404)
            return
        with guard(upgrader.upgrade(handler, [("Set-Cookie", "session=1")])) as conn:
            try:
                while True:
                    conn.write_message(*conn.read_message())
            except CloseError as exc:
                if done is not None:
                    done.append(exc.code)

    return route


def read_until_close(conn: Conn) -> int:
    """Read and drop messages until the connection closes; return the close code."""
    while True:
        try:
            conn.read_message()
        except CloseError as exc:
            return exc.code


def raw_request(port: int, data: bytes) -> bytes:
    """Send ``data`` and read until the server closes the connection."""
    with socket.create_connection(("127.0.0.1", port), timeout=TIMEOUT) as sock:
        sock.sendall(data)
        response = b""
        while chunk := sock.recv(65536):
            response += chunk
        return response


def ws_request(port: int, *extra: str, version: str = "13") -> bytes:
    lines = [
        "GET /ws HTTP/1.1",
        f"Host: 127.0.0.1:{port}",
        "Upgrade: websocket",
        "Connection: Upgrade",
        "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==",
        f"Sec-WebSocket-Version: {version}",
        *extra,
    ]
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


# -- taking a connection over from http.server ---------------------------------------


def test_dialer_talks_to_a_connection_taken_from_http_server(http_server):
    done: list[Any] = []
    server = http_server(echo_route(Upgrader(), done))
    conn, response = Dialer(handshake_timeout=TIMEOUT).dial(server.url())
    assert response.headers["set-cookie"] == "session=1"
    with guard(conn):
        for data in ["héllo", b"\x00\xff" * 5000]:
            kind = MessageType.TEXT if isinstance(data, str) else MessageType.BINARY
            conn.write_message(kind, data)
            assert conn.read_message() == (kind, data)
        conn.close_gracefully(CloseCode.GOING_AWAY, timeout=TIMEOUT)
    deadline = time.monotonic() + TIMEOUT
    while not done and time.monotonic() < deadline:
        time.sleep(0.01)
    assert done == [CloseCode.GOING_AWAY]
    assert server.errors == []
    assert any('"GET /ws HTTP/1.1" 101' in line for line in server.log)


def test_a_connection_taken_from_http_server_knows_the_clients_address(http_server):
    seen: list[tuple[Any, Any, Any]] = []
    upgrader = Upgrader()

    def route(handler: http.server.BaseHTTPRequestHandler) -> None:
        with upgrader.upgrade(handler) as conn:
            seen.append((handler.client_address, conn.request.remote_addr, conn.remote_addr))

    server = http_server(route)
    conn, _ = Dialer(handshake_timeout=TIMEOUT).dial(server.url())
    with guard(conn):
        assert read_until_close(conn) == CloseCode.ABNORMAL_CLOSURE  # the route returned
    assert seen == [(conn.local_addr, conn.local_addr, conn.local_addr)]


def test_other_paths_stay_plain_http(http_server):
    server = http_server(echo_route(Upgrader()))
    response = raw_request(
        server.port, b"GET /page HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
    )
    assert response.startswith(b"HTTP/1.1 404 ")


def test_bytes_read_past_the_request_by_http_server_are_not_lost(http_server):
    # A client should wait for the 101, but bytes sent early must not vanish
    # in http.server's read buffer: they are the first frame.
    server = http_server(echo_route(Upgrader()))
    client = ClientConnection(server.url())
    frame = serialize_frame(Opcode.TEXT, b"early", mask_key=b"abcd")
    request_and_frame = client.data_to_send() + frame
    with socket.create_connection(("127.0.0.1", server.port), timeout=TIMEOUT) as sock:
        sock.sendall(request_and_frame)
        events: list[Any] = []
        while not any(isinstance(event, Message) for event in events):
            data = sock.recv(65536)
            assert data, "the server closed the connection"
            client.receive_data(data)
            while (event := client.next_event()) is not None:
                events.append(event)
    assert Message(data="early") in events


def test_invalid_handshake_through_http_server_gets_the_cores_answer(http_server):
    server = http_server(echo_route(Upgrader()))
    response = raw_request(server.port, ws_request(server.port, version="8"))
    head, _, body = response.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 426 ")
    assert b"Sec-WebSocket-Version: 13" in head
    assert body == b"426 Upgrade Required: unsupported WebSocket version 8; use 13\n"
    [error] = server.errors
    assert isinstance(error, HandshakeError)
    assert error.status_code == 426
    assert any('"GET /ws HTTP/1.1" 426' in line for line in server.log)


def test_plain_get_of_the_websocket_path_gets_426(http_server):
    server = http_server(echo_route(Upgrader()))
    response = raw_request(server.port, b"GET /ws HTTP/1.1\r\nHost: x\r\n\r\n")
    assert response.startswith(b"HTTP/1.1 426 ")
    assert b"Upgrade: websocket" in response
    assert response.endswith(b"connect with a WebSocket client\n")


def test_foreign_origin_is_refused_through_http_server(http_server):
    server = http_server(echo_route(Upgrader()))
    response = raw_request(server.port, ws_request(server.port, "Origin: https://evil.example"))
    assert response.startswith(b"HTTP/1.1 403 ")


def test_handler_with_an_unbuffered_rfile(http_server):
    def route(handler: http.server.BaseHTTPRequestHandler) -> None:
        with guard(Upgrader().upgrade(handler)) as conn:
            conn.write_message(*conn.read_message())

    server = http_server(route)
    server.server.RequestHandlerClass.rbufsize = 0  # type: ignore[attr-defined]
    conn, _ = Dialer(handshake_timeout=TIMEOUT).dial(server.url())
    with guard(conn):
        conn.write_message(MessageType.TEXT, "unbuffered")
        assert conn.read_message() == (MessageType.TEXT, "unbuffered")


# -- the error hook ----------------------------------------------------------------------


def json_errors(calls: list[Any]) -> Any:
    def render(status: int, reason: str, request: HTTPRequest | None) -> Any:
        calls.append((status, reason, request))
        body = json.dumps({"status": status, "error": reason}).encode()
        return [("Content-Type", "application/json")], body

    return render


@pytest.fixture
def listener() -> Iterator[socket.socket]:
    with socket.create_server(("127.0.0.1", 0)) as sock:
        sock.settimeout(TIMEOUT)
        yield sock


def upgrade_one(listener: socket.socket, upgrader: Upgrader) -> Background:
    def run() -> Conn:
        sock, _ = listener.accept()
        return upgrader.upgrade(sock)

    return Background(run)


def test_error_hook_renders_a_refused_handshake(listener):
    calls: list[Any] = []
    server = upgrade_one(listener, Upgrader(error=json_errors(calls)))
    port = listener.getsockname()[1]
    response = raw_request(port, ws_request(port, "Origin: https://evil.example"))
    head, _, body = response.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 403 ")
    assert b"Content-Type: application/json" in head
    assert json.loads(body) == {"status": 403, "error": "origin not allowed"}
    error = server.error()
    assert isinstance(error, HandshakeError)
    [(_, _, request)] = calls
    assert request.headers["origin"] == "https://evil.example"


def test_error_hook_renders_the_426_of_a_plain_request(listener):
    calls: list[Any] = []
    server = upgrade_one(listener, Upgrader(error=json_errors(calls)))
    port = listener.getsockname()[1]
    response = raw_request(port, b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n")
    head, _, body = response.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 426 ")
    assert b"Upgrade: websocket" in head
    assert json.loads(body)["status"] == 426
    assert isinstance(server.error(), HandshakeError)
    assert calls[0][2].target == "/health"


def test_error_hook_that_fails_closes_the_socket_and_raises(listener):
    def broken(status: int, reason: str, request: HTTPRequest | None) -> Any:
        raise RuntimeError("template missing")

    server = upgrade_one(listener, Upgrader(error=broken))
    port = listener.getsockname()[1]
    assert raw_request(port, b"GARBAGE\r\n\r\n") == b""  # closed without an answer
    error = server.error()
    assert isinstance(error, RuntimeError)


# -- the write buffer pool -----------------------------------------------------------------


def test_upgrader_lends_writers_buffers_from_its_pool(listener):
    pool = SharedBufferPool()
    upgrader = Upgrader(write_buffer_size=512, write_buffer_pool=pool)

    def run() -> None:
        sock, _ = listener.accept()
        with guard(upgrader.upgrade(sock)) as conn:
            kind, data = conn.read_message()
            with conn.next_writer(kind) as writer:
                writer.write(data)
            conn.read_message()

    server = Background(run)
    conn, _ = Dialer(handshake_timeout=TIMEOUT).dial(f"ws://127.0.0.1:{listener.getsockname()[1]}/")
    with guard(conn):
        conn.write_message(MessageType.BINARY, b"z" * 2000)
        assert conn.read_message() == (MessageType.BINARY, b"z" * 2000)
        conn.close_gracefully(timeout=TIMEOUT)
    assert isinstance(server.error(), CloseError)
    assert [len(buffer) for buffer in pool._idle] == [512]


# -- options passed on to the connections ---------------------------------------------


def test_upgrader_and_dialer_pass_keepalive_on(listener):
    upgrader = Upgrader(keepalive_interval=0.05)

    def run() -> float | None:
        sock, _ = listener.accept()
        with guard(upgrader.upgrade(sock)) as conn:
            conn.write_message(*conn.read_message())
            read_until_close(conn)  # sees the client's Pongs until it closes
            return conn.latency

    server = Background(run)
    dialer = Dialer(handshake_timeout=TIMEOUT, keepalive_interval=0.05)
    conn, _ = dialer.dial(f"ws://127.0.0.1:{listener.getsockname()[1]}/")
    with guard(conn):
        conn.write_message(MessageType.TEXT, "hi")
        assert conn.read_message() == (MessageType.TEXT, "hi")
        # Pongs are seen, and sent, by reads: keep reading while time passes.
        reads = Background(lambda: read_until_close(conn))
        time.sleep(0.3)
        conn.write_control(MessageType.CLOSE, format_close_message(CloseCode.NORMAL_CLOSURE))
        reads.result()
        assert conn.latency is not None
    assert server.result() is not None
