"""serve() and Conn around the handshake: request and response, process_request, TLS,
Unix sockets, and compression parameters with prepared messages.

The async adapters' twins of these tests are in tests/async_api/test_async_handshake_api.py.
"""

from __future__ import annotations

import logging
import socket
import ssl
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

from wsproto_sync import (
    Acceptance,
    ClientPerMessageDeflate,
    CloseError,
    Conn,
    Dialer,
    HandshakeError,
    HandshakeRequest,
    HandshakeResponse,
    LocalProtocolError,
    MessageType,
    PreparedMessage,
    Rejection,
    Server,
    ServerPerMessageDeflate,
    Upgrader,
    serve,
)

TIMEOUT = 5.0
DIALER = Dialer(handshake_timeout=TIMEOUT)


@contextmanager
def running(server: Server) -> Iterator[Server]:
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server
    finally:
        server.shutdown(timeout=2)
        thread.join(TIMEOUT)
        assert not thread.is_alive()


def url_of(server: Server, path: str = "/", scheme: str = "ws", host: str = "127.0.0.1") -> str:
    return f"{scheme}://{host}:{server.address[1]}{path}"


def echo(conn: Conn) -> None:
    for message in conn:
        conn.write_message(
            MessageType.TEXT if isinstance(message, str) else MessageType.BINARY, message
        )


def raw_response(server: Server, request: bytes) -> bytes:
    """Send ``request`` and read until the server closes the connection."""
    with socket.create_connection(server.address[:2], timeout=TIMEOUT) as raw:
        raw.sendall(request)
        response = b""
        while chunk := raw.recv(4096):
            response += chunk
    return response


# -- conn.request and conn.response -------------------------------------------------


def test_a_handler_sees_the_request_and_the_response() -> None:
    seen: list[tuple[HandshakeRequest, HandshakeResponse]] = []

    def handler(conn: Conn) -> None:
        seen.append((conn.request, conn.response))
        conn.write_message(MessageType.TEXT, conn.request.target)
        with pytest.raises(CloseError):
            conn.read_message()

    upgrader = Upgrader(subprotocols=["chat"])
    with running(serve(handler, upgrader=upgrader)) as server:
        dialer = Dialer(subprotocols=["chat"], handshake_timeout=TIMEOUT)
        conn, response = dialer.dial(url_of(server, "/room?id=7"), [("X-Token", "t")])
        with conn:
            assert conn.read_message() == (MessageType.TEXT, "/room?id=7")
            assert conn.response is response  # what dial() returned
            with pytest.raises(LocalProtocolError, match="only a server connection"):
                conn.request  # noqa: B018 - the property raises
            conn.close_gracefully(timeout=TIMEOUT)
    [(request, sent)] = seen
    assert request.headers["x-token"] == "t"
    assert request.subprotocols == ("chat",)
    assert sent.subprotocol == "chat" == response.subprotocol
    assert sent.status_code == 101


# -- process_request -----------------------------------------------------------------


def bearer(request: HandshakeRequest) -> Acceptance | Rejection | None:
    if request.target == "/public":
        return None
    if request.headers.get("authorization") != "Bearer good":
        return Rejection(401, [("WWW-Authenticate", 'Bearer realm="chat"')])
    return Acceptance([("Set-Cookie", "session=s1; HttpOnly")])


def test_process_request_refuses_with_its_status_and_headers() -> None:
    with running(serve(echo, process_request=bearer)) as server:
        with pytest.raises(HandshakeError) as info:
            DIALER.dial(url_of(server))
        refusal = info.value.response
        assert refusal is not None
        assert refusal.status_code == 401
        assert refusal.headers["www-authenticate"] == 'Bearer realm="chat"'
        assert refusal.body == b"401 Unauthorized: the server refused the request\n"
        # and the server carries on
        conn, _ = DIALER.dial(url_of(server, "/public"))
        conn.write_message(MessageType.TEXT, "open to all")
        assert conn.read_message() == (MessageType.TEXT, "open to all")
        conn.close()


def test_process_request_accepts_with_more_response_headers() -> None:
    with running(serve(echo, process_request=bearer)) as server:
        conn, response = DIALER.dial(url_of(server), [("Authorization", "Bearer good")])
        with conn:
            assert response.headers["set-cookie"] == "session=s1; HttpOnly"
            conn.write_message(MessageType.BINARY, b"in")
            assert conn.read_message() == (MessageType.BINARY, b"in")


def test_process_request_runs_after_the_origin_check() -> None:
    calls: list[str] = []

    def record(request: HandshakeRequest) -> None:
        calls.append(request.target)

    with running(serve(echo, process_request=record)) as server:
        with pytest.raises(HandshakeError) as info:
            DIALER.dial(url_of(server, "/x"), [("Origin", "https://evil.example")])
        assert info.value.status_code == 403
    assert calls == []


@pytest.mark.parametrize(
    "broken",
    [
        pytest.param(lambda request: 1 / 0, id="raises"),
        pytest.param(lambda request: Rejection(101), id="bad-status"),
        pytest.param(lambda request: "yes", id="bad-type"),
    ],
)
def test_a_failing_process_request_gives_500_and_is_logged(
    broken: Callable[[HandshakeRequest], Any], caplog: pytest.LogCaptureFixture
) -> None:
    server = serve(echo, process_request=broken)
    with caplog.at_level(logging.ERROR, logger="wsproto_sync.server"), running(server):
        for _ in range(2):  # the server carries on after a failure
            with pytest.raises(HandshakeError) as info:
                DIALER.dial(url_of(server))
            assert info.value.status_code == 500
            assert info.value.response is not None
            assert info.value.response.body == (
                b"500 Internal Server Error: the server could not answer the request\n"
            )
    failures = [r for r in caplog.records if "request hook failed" in r.getMessage()]
    assert len(failures) == 2  # one per handshake
    assert all(record.exc_info for record in failures)


def test_upgrade_takes_process_request_too() -> None:
    """Upgrading a socket of your own: the hook refuses, upgrade() raises, the socket closes."""
    with socket.create_server(("127.0.0.1", 0)) as listener:
        port = listener.getsockname()[1]
        outcome: list[BaseException] = []

        def accept_one() -> None:
            sock, _ = listener.accept()
            try:
                Upgrader().upgrade(sock, process_request=lambda request: Rejection(429))
            except HandshakeError as exc:
                outcome.append(exc)

        thread = threading.Thread(target=accept_one, daemon=True)
        thread.start()
        with pytest.raises(HandshakeError) as info:
            DIALER.dial(f"ws://127.0.0.1:{port}/")
        assert info.value.status_code == 429
        thread.join(TIMEOUT)
        [refused] = outcome
        assert isinstance(refused, HandshakeError)
        assert refused.status_code == 429


def test_a_failing_http_handler_gives_500() -> None:
    def broken(request: Any) -> Any:
        raise RuntimeError("http handler bug")

    with running(serve(echo, http_handler=broken)) as server:
        response = raw_response(server, b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n")
    assert response.startswith(b"HTTP/1.1 500 Internal Server Error\r\n")


# -- TLS and Unix sockets ------------------------------------------------------------


@pytest.fixture
def server_ssl(certificate: tuple[Path, Path]) -> ssl.SSLContext:
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(*certificate)
    return context


@pytest.fixture
def client_ssl(certificate: tuple[Path, Path]) -> ssl.SSLContext:
    return ssl.create_default_context(cafile=str(certificate[0]))


def test_serve_tls(server_ssl: ssl.SSLContext, client_ssl: ssl.SSLContext) -> None:
    with running(serve(echo, ssl_context=server_ssl)) as server:
        dialer = Dialer(ssl_context=client_ssl, handshake_timeout=TIMEOUT)
        conn, _ = dialer.dial(url_of(server, scheme="wss", host="localhost"))
        with conn:
            assert isinstance(conn.net_conn(), ssl.SSLSocket)
            conn.write_message(MessageType.TEXT, "secret")
            assert conn.read_message() == (MessageType.TEXT, "secret")
            conn.write_message(MessageType.BINARY, b"z" * 200_000)
            assert conn.read_message() == (MessageType.BINARY, b"z" * 200_000)
            conn.close_gracefully(timeout=TIMEOUT)


def test_serve_tls_refuses_plain_and_untrusted_clients_and_carries_on(
    server_ssl: ssl.SSLContext, client_ssl: ssl.SSLContext, caplog: pytest.LogCaptureFixture
) -> None:
    server = serve(echo, ssl_context=server_ssl)
    with caplog.at_level(logging.INFO, logger="wsproto_sync.server"), running(server):
        with pytest.raises((HandshakeError, OSError)):
            DIALER.dial(url_of(server))  # ws:// to a wss:// server
        with pytest.raises(ssl.SSLCertVerificationError):
            DIALER.dial(url_of(server, scheme="wss", host="localhost"))
        dialer = Dialer(ssl_context=client_ssl, handshake_timeout=TIMEOUT)
        conn, _ = dialer.dial(url_of(server, scheme="wss", host="localhost"))
        conn.close()
    assert any("handshake failed" in record.getMessage() for record in caplog.records)


def test_a_silent_tls_client_is_dropped_after_the_handshake_timeout(
    server_ssl: ssl.SSLContext,
) -> None:
    """The handshake timeout covers the TLS handshake: no ClientHello, no connection."""
    upgrader = Upgrader(handshake_timeout=0.2)
    server = serve(echo, upgrader=upgrader, ssl_context=server_ssl)
    with running(server), socket.create_connection(server.address[:2], timeout=TIMEOUT) as silent:
        started = time.monotonic()
        assert silent.recv(1) == b""
        assert 0.15 <= time.monotonic() - started < 2


def test_upgrade_refuses_ssl_context_with_an_http_server_handler() -> None:
    import http.server

    handler = object.__new__(http.server.BaseHTTPRequestHandler)
    with pytest.raises(ValueError, match="ssl_context is for a socket"):
        Upgrader().upgrade(handler, ssl_context=ssl.create_default_context())


@pytest.mark.skipif(sys.platform == "win32", reason="no Unix sockets")
def test_serve_on_a_unix_socket(tmp_path: Path) -> None:
    path = str(tmp_path / "ws.sock")
    (tmp_path / "ws.sock").write_bytes(b"")  # left by an earlier run: replaced

    def net_dial(address: tuple[str, int], timeout: float | None) -> socket.socket:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.settimeout(timeout)
        sock.connect(path)
        return sock

    with running(serve(echo, unix_path=path)) as server:
        assert server.address == path
        conn, _ = Dialer(net_dial=net_dial, handshake_timeout=TIMEOUT).dial("ws://localhost/")
        with conn:
            conn.write_message(MessageType.TEXT, "through a Unix socket")
            assert conn.read_message() == (MessageType.TEXT, "through a Unix socket")


# -- compression parameters and prepared messages ------------------------------------


def broadcast_once(
    upgrader: Upgrader, dialers: list[Dialer], message: PreparedMessage
) -> list[Conn]:
    """Serve ``dialers``' connections, send ``message`` to each once; return the clients."""
    ready = threading.Barrier(len(dialers) + 1, timeout=TIMEOUT)
    server_conns: list[Conn] = []

    def handler(conn: Conn) -> None:
        server_conns.append(conn)
        ready.wait()  # every client connected: broadcast
        ready.wait()  # broadcast done
        for _ in conn:
            pass

    server = serve(handler, upgrader=upgrader)
    with running(server):
        clients = [dialer.dial(url_of(server))[0] for dialer in dialers]
        ready.wait()
        for conn in server_conns:
            conn.write_prepared_message(message)
        ready.wait()
        for client in clients:
            assert client.read_message() == (message.message_type, message.data.decode())
            client.close_gracefully(timeout=TIMEOUT)
    return clients


TICK = '{"symbol": "ACME", "price": 12.5}' * 50


def test_without_context_takeover_a_prepared_message_is_compressed_once() -> None:
    upgrader = Upgrader(enable_compression=ServerPerMessageDeflate(server_no_context_takeover=True))
    deflate = Dialer(enable_compression=True, handshake_timeout=TIMEOUT)
    message = PreparedMessage(MessageType.TEXT, TICK)
    clients = broadcast_once(upgrader, [deflate, deflate, deflate, DIALER], message)
    assert message.encodings == 2  # one compressed for the three, one plain for the last
    assert [len(client.protocol.extensions) for client in clients] == [1, 1, 1, 0]
    params = dict(clients[0].response.extensions[0].params)
    assert "server_no_context_takeover" in params  # RFC 7692 §7.1.1.1


def test_with_context_takeover_each_connection_compresses_the_message_itself() -> None:
    deflate = Dialer(enable_compression=True, handshake_timeout=TIMEOUT)
    message = PreparedMessage(MessageType.TEXT, TICK)
    broadcast_once(Upgrader(enable_compression=True), [deflate, deflate], message)
    assert message.encodings == 0  # no shared encoding: each compressor saw it itself


def test_the_dialer_asks_for_parameters_and_the_server_grants_them() -> None:
    """RFC 7692 §7: the client's offer is answered, and both sides use the answer."""
    offer = ClientPerMessageDeflate(
        server_no_context_takeover=True, server_max_window_bits=10, client_max_window_bits=True
    )
    server_deflate = ServerPerMessageDeflate(client_max_window_bits=12)
    seen: list[Any] = []

    def handler(conn: Conn) -> None:
        seen.append(conn.protocol.extensions[0])
        echo(conn)

    with running(serve(handler, upgrader=Upgrader(enable_compression=server_deflate))) as server:
        dialer = Dialer(enable_compression=offer, handshake_timeout=TIMEOUT)
        conn, response = dialer.dial(url_of(server))
        with conn:
            [answer] = response.extensions
            assert dict(answer.params) == {
                "server_no_context_takeover": None,
                "server_max_window_bits": "10",
                "client_max_window_bits": "12",
            }
            ours = conn.protocol.extensions[0]
            assert (ours.local_max_window_bits, ours.remote_max_window_bits) == (12, 10)
            assert ours.remote_no_context_takeover
            conn.write_message(MessageType.TEXT, TICK)
            assert conn.read_message() == (MessageType.TEXT, TICK)
    [theirs] = seen
    assert theirs.local_no_context_takeover
    assert (theirs.local_max_window_bits, theirs.remote_max_window_bits) == (10, 12)
