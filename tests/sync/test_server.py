"""serve(): the threaded server, its error handling and its graceful shutdown."""

from __future__ import annotations

import errno
import logging
import queue
import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from typing import Any

import pytest

from wsproto_sync import (
    CloseCode,
    CloseError,
    Conn,
    Dialer,
    HandshakeError,
    HandshakeRequest,
    HTTPRequest,
    MessageType,
    ReadLimitError,
    Server,
    Upgrader,
    WebSocketError,
    serve,
)

DIALER = Dialer(handshake_timeout=5)


def echo(conn: Conn) -> None:
    while True:
        conn.write_message(*conn.read_message())


@contextmanager
def running(server: Server) -> Iterator[Server]:
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server
    finally:
        server.shutdown(timeout=2)
        thread.join(5)
        assert not thread.is_alive()


def url(server: Server) -> str:
    host, port = server.address[:2]
    return f"ws://{host}:{port}/"


def dial(server: Server) -> Conn:
    conn, _ = DIALER.dial(url(server))
    conn.set_read_deadline(time.monotonic() + 5)
    return conn


def test_echo_and_graceful_shutdown() -> None:
    server = serve(echo)
    codes: list[int] = []

    def read_until_closed(client: Conn) -> None:
        # A client reads all the time, so it answers the server's Close.
        try:
            while True:
                client.read_message()
        except CloseError as exc:
            codes.append(exc.code)

    with running(server):
        clients = [dial(server) for _ in range(3)]
        for index, client in enumerate(clients):
            client.write_message(MessageType.TEXT, f"hello {index}")
            assert client.read_message() == (MessageType.TEXT, f"hello {index}")
        readers = [threading.Thread(target=read_until_closed, args=(c,)) for c in clients]
        for reader in readers:
            reader.start()
        started = time.monotonic()
    # Shutdown sent each open connection a Close with 1001, and the handlers
    # ended as soon as the clients answered: well before the 2 s timeout.
    assert time.monotonic() - started < 1.5
    for reader in readers:
        reader.join(5)
    assert codes == [CloseCode.GOING_AWAY] * 3
    for client in clients:
        client.close()


def test_plain_http_gets_426_and_the_server_carries_on() -> None:
    server = serve(echo)
    with running(server):
        with socket.create_connection(server.address[:2], timeout=5) as raw:
            raw.sendall(b"GET / HTTP/1.1\r\nHost: example\r\n\r\n")
            response = b""
            while chunk := raw.recv(4096):
                response += chunk
        assert response.startswith(b"HTTP/1.1 426 Upgrade Required\r\n")
        client = dial(server)
        client.write_message(MessageType.BINARY, b"still here")
        assert client.read_message() == (MessageType.BINARY, b"still here")
        client.close()


def http_get(server: Server, target: str) -> bytes:
    with socket.create_connection(server.address[:2], timeout=5) as raw:
        raw.sendall(f"GET {target} HTTP/1.1\r\nHost: example\r\n\r\n".encode())
        response = b""
        while chunk := raw.recv(4096):
            response += chunk
    return response


def test_http_handler_answers_plain_requests_on_the_same_port() -> None:
    seen: list[tuple[str, str]] = []

    def health(request: HTTPRequest) -> tuple[int, list[tuple[str, str]], bytes | None]:
        seen.append((request.method, request.target))
        if request.target == "/health":
            return 200, [("Content-Type", "text/plain")], b"ok\n"
        return 404, [], None  # rendered by the Upgrader's error hook

    server = serve(echo, http_handler=health)
    with running(server):
        response = http_get(server, "/health")
        assert response.startswith(b"HTTP/1.1 200 OK\r\n")
        assert response.endswith(b"\r\n\r\nok\n")
        assert http_get(server, "/nope").endswith(
            b"404 Not Found: the server refused the request\n"
        )
        client = dial(server)  # WebSocket requests still get through
        client.write_message(MessageType.TEXT, "ws")
        assert client.read_message() == (MessageType.TEXT, "ws")
        client.close()
    assert seen == [("GET", "/health"), ("GET", "/nope")]


def test_a_failing_http_handler_is_logged_and_the_server_carries_on(
    caplog: pytest.LogCaptureFixture,
) -> None:
    def broken(request: HTTPRequest) -> tuple[int, list[tuple[str, str]], bytes]:
        raise RuntimeError("http handler bug")

    server = serve(echo, http_handler=broken)
    with caplog.at_level(logging.ERROR, logger="wsproto_sync.server"), running(server):
        assert http_get(server, "/health").startswith(b"HTTP/1.1 500 Internal Server Error\r\n")
        client = dial(server)
        client.write_message(MessageType.TEXT, "ws")
        assert client.read_message() == (MessageType.TEXT, "ws")
        client.close()
    assert any("request hook failed" in record.getMessage() for record in caplog.records)


def test_a_failing_handler_is_logged_and_the_server_carries_on(
    caplog: pytest.LogCaptureFixture,
) -> None:
    def broken(conn: Conn) -> None:
        conn.read_message()
        raise RuntimeError("handler bug")

    server = serve(broken)
    with caplog.at_level(logging.ERROR, logger="wsproto_sync.server"), running(server):
        for _ in range(2):
            client = dial(server)
            client.write_message(MessageType.TEXT, "boom")
            with pytest.raises(CloseError) as info:
                client.read_message()
            assert info.value.code == CloseCode.ABNORMAL_CLOSURE  # the server closed the socket
            client.close()
    failures = [record for record in caplog.records if "handler failed" in record.getMessage()]
    assert len(failures) == 2


def test_a_handler_that_ignores_the_close_is_cut_off_after_the_timeout() -> None:
    release = threading.Event()

    def stubborn(conn: Conn) -> None:
        release.wait(10)  # never reads, so never sees the Close

    server = serve(stubborn, shutdown_timeout=0.5)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    client = dial(server)
    started = time.monotonic()
    server.shutdown()
    elapsed = time.monotonic() - started
    release.set()
    thread.join(5)
    assert not thread.is_alive()
    assert 0.4 < elapsed < 3
    with pytest.raises(CloseError) as info:
        client.read_message()
    assert info.value.code == CloseCode.GOING_AWAY  # the Close went out before the cut
    client.close()


def test_handshake_options_come_from_the_upgrader() -> None:
    server = serve(echo, upgrader=Upgrader(subprotocols=["v2", "v1"]))
    with running(server):
        conn, _ = Dialer(subprotocols=["v1", "v2"]).dial(url(server))
        assert conn.subprotocol == "v2"
        conn.close()


def test_context_manager_shuts_down() -> None:
    with serve(echo, shutdown_timeout=0.5) as server:
        address = server.address[:2]
        thread = threading.Thread(target=server.serve_forever, daemon=True)
        thread.start()
        client = dial(server)
    thread.join(5)
    assert not thread.is_alive()
    with pytest.raises(CloseError):
        client.read_message()
    client.close()
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection(address, timeout=1).close()


def test_a_silent_client_times_out_and_the_server_carries_on(
    caplog: pytest.LogCaptureFixture,
) -> None:
    server = serve(echo, upgrader=Upgrader(handshake_timeout=0.2))
    with caplog.at_level(logging.INFO, logger="wsproto_sync.server"), running(server):
        with socket.create_connection(server.address[:2], timeout=5) as silent:
            assert silent.recv(1) == b""  # the server gave up and closed it
        client = dial(server)
        client.write_message(MessageType.TEXT, "after")
        assert client.read_message() == (MessageType.TEXT, "after")
        client.close()
    assert any("handshake failed" in record.getMessage() for record in caplog.records)


def read_all(conn: Conn) -> None:
    """Read until the connection ends."""
    while True:
        conn.read_message()


def test_a_read_error_inside_a_streamed_echo_is_not_replaced() -> None:
    """The error that failed the connection leaves the writer's block, not CloseSentError."""
    errors: queue.Queue[BaseException] = queue.Queue()

    def echo_streamed(conn: Conn) -> None:
        try:
            message_type, reader = conn.next_reader()
            with conn.next_writer(message_type) as writer:
                while chunk := reader.read(65536):
                    writer.write(chunk)
        except Exception as exc:
            errors.put(exc)
            raise

    server = serve(echo_streamed, upgrader=Upgrader(max_message_size=1000))
    with running(server):
        client, _ = Dialer(write_buffer_size=500, handshake_timeout=5).dial(url(server))
        client.set_read_deadline(time.monotonic() + 5)
        with client:
            # The server may be gone before the last frame.
            with suppress(WebSocketError, OSError), client.next_writer(MessageType.BINARY) as w:
                w.write(bytes(5000))
            with pytest.raises((CloseError, OSError)):
                read_all(client)
        error = errors.get(timeout=5)
    assert type(error) is ReadLimitError


def test_a_port_in_use_is_the_os_error() -> None:
    """Failing to listen raises the socket's OSError, as the async adapters' serve() does."""
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        with pytest.raises(OSError) as info:  # noqa: PT011 - the errno is checked below
            serve(echo, "127.0.0.1", port)
    assert info.value.errno == errno.EADDRINUSE


def test_the_hooks_and_the_log_see_the_clients_address(caplog: pytest.LogCaptureFixture) -> None:
    """http_handler, process_request and the error hook all get ``request.remote_addr``."""
    seen: list[tuple[str, Any]] = []

    def health(request: HTTPRequest) -> tuple[int, list[tuple[str, str]], bytes | None]:
        seen.append(("http_handler", request.remote_addr))
        return 404, [], None  # rendered by the error hook

    def render(status: int, reason: str, request: HTTPRequest | None) -> tuple[Any, bytes]:
        seen.append((f"error {status}", None if request is None else request.remote_addr))
        return [], b"refused\n"

    def process_request(request: HandshakeRequest) -> None:
        seen.append(("process_request", request.remote_addr))

    handled: queue.Queue[tuple[Any, Any]] = queue.Queue()

    def handler(conn: Conn) -> None:
        handled.put((conn.request.remote_addr, conn.remote_addr))

    upgrader = Upgrader(error=render)
    server = serve(handler, upgrader=upgrader, http_handler=health, process_request=process_request)
    caplog.set_level(logging.INFO, logger="wsproto_sync.server")
    with running(server):
        with socket.create_connection(server.address[:2], timeout=5) as raw:
            plain = raw.getsockname()
            raw.sendall(b"GET /nope HTTP/1.1\r\nHost: example\r\n\r\n")
            while raw.recv(4096):
                pass
        with pytest.raises(HandshakeError):
            DIALER.dial(url(server), [("Origin", "http://evil.example")])
        client = dial(server)
        assert handled.get(timeout=5) == (client.local_addr, client.local_addr)
        client.close()
    assert seen[:2] == [("http_handler", plain), ("error 404", plain)]
    refused, (hook, address) = seen[2], seen[3]
    assert refused[0] == "error 403"
    assert refused[1][0] == "127.0.0.1"  # the refused client's own address
    assert (hook, address) == ("process_request", client.local_addr)
    refusals = [r.getMessage() for r in caplog.records if "refused a handshake" in r.getMessage()]
    assert refusals[0].startswith(f"refused a handshake from {plain!r}: ")
    assert refusals[1].startswith(f"refused a handshake from {refused[1]!r}: ")
