"""Behaviour of wsproto_sync.Upgrader and Dialer over real loopback TCP (and TLS).

Servers run in daemon threads that accept one connection with a timeout,
and every read has a deadline, so a broken handshake fails a test instead
of hanging the run. The last part talks to the ``websockets`` package.
"""

from __future__ import annotations

import socket
import ssl
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from sync_helpers import TIMEOUT, Background
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import connect as ws_connect
from websockets.sync.server import serve as ws_serve

from wsproto_core import CloseCode, CloseError, MessageType, ReadLimitError
from wsproto_sync import (
    Conn,
    Dialer,
    HandshakeError,
    Upgrader,
    default_dialer,
    dial,
    format_close_message,
)

HANDSHAKE_TIMEOUT = 0.3
BIG = 16 * 1024 * 1024


# -- helpers ----------------------------------------------------------------------


@pytest.fixture
def listener() -> Iterator[socket.socket]:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))
    sock.listen(8)
    sock.settimeout(TIMEOUT)
    yield sock
    sock.close()


def url_of(sock: socket.socket, scheme: str = "ws", host: str = "127.0.0.1") -> str:
    return f"{scheme}://{host}:{sock.getsockname()[1]}/"


def guard(conn: Conn) -> Conn:
    conn.set_read_deadline(time.monotonic() + TIMEOUT)
    conn.set_write_deadline(time.monotonic() + TIMEOUT)
    return conn


def echo(conn: Conn) -> list[BaseException]:
    """Echo messages until a read fails; return that error."""
    guard(conn)
    try:
        while True:
            conn.write_message(*conn.read_message())
    except Exception as exc:
        return [exc]
    finally:
        conn.close()


def serve_one(
    listener: socket.socket,
    upgrader: Upgrader,
    handler: Callable[[Conn], Any] = echo,
    response_headers: Any = (),
) -> Background:
    """Accept one connection, upgrade it and run ``handler`` on it."""

    def run() -> Any:
        sock, _ = listener.accept()
        conn = upgrader.upgrade(sock, response_headers)
        try:
            return handler(conn)
        finally:
            conn.close()

    return Background(run)


def accept_raw(listener: socket.socket, handler: Callable[[socket.socket], Any]) -> Background:
    """Accept one connection and hand the plain socket to ``handler``."""

    def run() -> Any:
        sock, _ = listener.accept()
        with sock:
            sock.settimeout(TIMEOUT)
            return handler(sock)

    return Background(run)


def read_head(sock: socket.socket) -> bytes:
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(4096)
        if not chunk:
            break
        data += chunk
    return data


def read_to_eof(sock: socket.socket) -> bytes:
    data = b""
    while chunk := sock.recv(4096):
        data += chunk
    return data


def raw_connect(listener: socket.socket) -> socket.socket:
    sock = socket.create_connection(listener.getsockname(), timeout=TIMEOUT)
    sock.settimeout(TIMEOUT)
    return sock


def handshake_request(port: int) -> bytes:
    return (
        f"GET / HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nUpgrade: websocket\r\n"
        "Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
        "Sec-WebSocket-Version: 13\r\n\r\n"
    ).encode()


# -- Upgrader + Dialer: the happy paths ----------------------------------------------


def test_echo_text_and_binary(listener):
    server = serve_one(listener, Upgrader())
    conn, response = Dialer(handshake_timeout=TIMEOUT).dial(url_of(listener))
    with guard(conn):
        assert response.status_code == 101
        conn.write_message(MessageType.TEXT, "héllo ☃")
        assert conn.read_message() == (MessageType.TEXT, "héllo ☃")
        conn.write_message(MessageType.BINARY, bytes(range(256)))
        assert conn.read_message() == (MessageType.BINARY, bytes(range(256)))
        conn.close_gracefully(CloseCode.NORMAL_CLOSURE, timeout=TIMEOUT)
    [error] = server.result()
    assert isinstance(error, CloseError)
    assert error.code == CloseCode.NORMAL_CLOSURE


@pytest.mark.parametrize(
    ("server_protocols", "client_protocols", "expected"),
    [
        pytest.param(["b", "a"], ["a", "b"], "b", id="server-preference"),
        pytest.param(["a", "b"], ["b", "a"], "a", id="server-preference-reversed"),
        pytest.param(["c", "b"], ["a", "b"], "b", id="only-common"),
        pytest.param(["x"], ["a"], None, id="none-common"),
        pytest.param([], ["a"], None, id="server-none"),
    ],
)
def test_subprotocol_negotiation(listener, server_protocols, client_protocols, expected):
    server = serve_one(listener, Upgrader(subprotocols=server_protocols), lambda c: c.subprotocol)
    conn, response = Dialer(subprotocols=client_protocols).dial(url_of(listener))
    with conn:
        assert response.subprotocol == expected
        assert conn.subprotocol == expected
        assert server.result() == expected


def test_response_headers_reach_the_client(listener):
    server = serve_one(
        listener, Upgrader(), lambda c: None, response_headers=[("Set-Cookie", "sid=42; Secure")]
    )
    conn, response = Dialer().dial(url_of(listener))
    with conn:
        assert response.headers["set-cookie"] == "sid=42; Secure"
        server.result()


def test_compression_negotiated_when_both_enable_it(listener):
    def handler(conn: Conn) -> Any:
        names = [type(ext).__name__ for ext in conn.protocol.extensions]
        return names, echo(conn)

    server = serve_one(listener, Upgrader(enable_compression=True), handler)
    conn, response = Dialer(enable_compression=True).dial(url_of(listener))
    with guard(conn):
        assert conn.protocol.extensions
        assert [offer.name for offer in response.extensions] == ["permessage-deflate"]
        payload = "compress me " * 5000
        conn.write_message(MessageType.TEXT, payload)
        assert conn.read_message() == (MessageType.TEXT, payload)
        conn.write_message(MessageType.BINARY, b"\x00" * 100_000)
        assert conn.read_message() == (MessageType.BINARY, b"\x00" * 100_000)
        conn.close_gracefully(timeout=TIMEOUT)
    names, _ = server.result()
    assert names


@pytest.mark.parametrize(("server_on", "client_on"), [(True, False), (False, True)])
def test_compression_needs_both_sides(listener, server_on, client_on):
    server = serve_one(
        listener,
        Upgrader(enable_compression=server_on),
        lambda c: c.protocol.extensions,
    )
    conn, response = Dialer(enable_compression=client_on).dial(url_of(listener))
    with conn:
        assert conn.protocol.extensions == ()
        assert response.extensions == ()
        assert server.result() == ()


def test_upgrader_max_message_size_limits_the_server(listener):
    def handler(conn: Conn) -> Any:
        guard(conn)
        first = conn.read_message()
        try:
            conn.read_message()
        except Exception as exc:
            return first, exc
        return first, None

    server = serve_one(listener, Upgrader(max_message_size=100), handler)
    conn, _ = Dialer(max_message_size=None).dial(url_of(listener))
    with guard(conn):
        conn.write_message(MessageType.BINARY, b"x" * 100)
        conn.write_message(MessageType.BINARY, b"x" * 101)
        with pytest.raises(CloseError) as info:
            conn.read_message()
        assert info.value.code == CloseCode.MESSAGE_TOO_BIG
    first, error = server.result()
    assert first == (MessageType.BINARY, b"x" * 100)
    assert isinstance(error, ReadLimitError)


def test_dialer_max_message_size_limits_the_client(listener):
    def handler(conn: Conn) -> Any:
        guard(conn)
        conn.write_message(MessageType.BINARY, b"y" * 50)
        conn.write_message(MessageType.BINARY, b"y" * 51)
        try:
            conn.read_message()
        except CloseError as exc:
            return exc.code
        return None

    server = serve_one(listener, Upgrader(max_message_size=None), handler)
    conn, _ = Dialer(max_message_size=50).dial(url_of(listener))
    with guard(conn):
        assert conn.read_message() == (MessageType.BINARY, b"y" * 50)
        with pytest.raises(ReadLimitError):
            conn.read_message()
    assert server.result() == CloseCode.MESSAGE_TOO_BIG


# -- Upgrader errors ----------------------------------------------------------------


def test_foreign_origin_is_refused_with_403(listener):
    server = serve_one(listener, Upgrader())
    with pytest.raises(HandshakeError) as info:
        Dialer().dial(url_of(listener), headers=[("Origin", "http://evil.example")])
    assert info.value.status_code == 403
    assert info.value.response is not None
    assert info.value.response.status_code == 403
    assert info.value.response.body
    error = server.error()
    assert isinstance(error, HandshakeError)
    assert error.status_code == 403


def test_same_origin_is_accepted(listener):
    server = serve_one(listener, Upgrader(), lambda c: "ok")
    port = listener.getsockname()[1]
    conn, _ = Dialer().dial(url_of(listener), headers=[("Origin", f"http://127.0.0.1:{port}")])
    conn.close()
    assert server.result() == "ok"


def test_check_origin_none_accepts_any_origin(listener):
    server = serve_one(listener, Upgrader(check_origin=None), lambda c: "ok")
    conn, _ = Dialer().dial(url_of(listener), headers=[("Origin", "http://evil.example")])
    conn.close()
    assert server.result() == "ok"


def test_custom_check_origin_sees_the_request(listener):
    seen = []

    def check(request: Any) -> bool:
        seen.append(request.origin)
        return False

    server = serve_one(listener, Upgrader(check_origin=check))
    with pytest.raises(HandshakeError) as info:
        Dialer().dial(url_of(listener), headers=[("Origin", "http://a.example")])
    assert info.value.status_code == 403
    assert isinstance(server.error(), HandshakeError)
    assert seen == ["http://a.example"]


def test_plain_http_request_gets_426_and_the_socket_closes(listener):
    server = serve_one(listener, Upgrader())
    with raw_connect(listener) as sock:
        sock.sendall(b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
        response = read_to_eof(sock)  # ends: the upgrader closed the socket
    assert response.startswith(b"HTTP/1.1 426 ")
    assert b"upgrade: websocket" in response.lower()
    error = server.error()
    assert isinstance(error, HandshakeError)
    assert error.status_code == 426


def test_malformed_request_gets_400(listener):
    server = serve_one(listener, Upgrader())
    with raw_connect(listener) as sock:
        sock.sendall(b"this is not HTTP at all\r\n\r\n")
        response = read_to_eof(sock)
    assert response.startswith(b"HTTP/1.1 400 ")
    error = server.error()
    assert isinstance(error, HandshakeError)
    assert error.status_code == 400


def test_bad_websocket_version_is_refused(listener):
    server = serve_one(listener, Upgrader())
    port = listener.getsockname()[1]
    with raw_connect(listener) as sock:
        sock.sendall(handshake_request(port).replace(b"Version: 13", b"Version: 8"))
        response = read_to_eof(sock)
    assert response.startswith(b"HTTP/1.1 4")
    error = server.error()
    assert isinstance(error, HandshakeError)
    assert error.status_code is not None
    assert 400 <= error.status_code < 500


def test_silent_client_times_out_and_is_disconnected(listener):
    server = serve_one(listener, Upgrader(handshake_timeout=HANDSHAKE_TIMEOUT))
    with raw_connect(listener) as sock:
        start = time.monotonic()
        assert sock.recv(4096) == b""  # EOF: the upgrader closed the socket
        elapsed = time.monotonic() - start
    assert isinstance(server.error(), TimeoutError)
    assert HANDSHAKE_TIMEOUT - 0.05 <= elapsed < HANDSHAKE_TIMEOUT + 2.0


def test_trickled_handshake_times_out(listener):
    server = serve_one(listener, Upgrader(handshake_timeout=HANDSHAKE_TIMEOUT))
    request = handshake_request(listener.getsockname()[1])
    start = time.monotonic()
    with raw_connect(listener) as sock:
        try:
            for byte in request:  # 0.02 s x ~170 bytes, far beyond the timeout
                sock.sendall(bytes([byte]))
                time.sleep(0.02)
                if server.done_at is not None:
                    break
        except OSError:
            pass
    assert isinstance(server.error(), TimeoutError)
    assert server.done_at is not None
    assert server.done_at - start < HANDSHAKE_TIMEOUT + 1.0


def test_handshake_split_in_pieces_within_timeout_succeeds(listener):
    server = serve_one(listener, Upgrader(handshake_timeout=TIMEOUT), lambda c: c.subprotocol)
    request = handshake_request(listener.getsockname()[1])
    with raw_connect(listener) as sock:
        for i in range(0, len(request), 7):
            sock.sendall(request[i : i + 7])
        assert read_head(sock).startswith(b"HTTP/1.1 101 ")
    assert server.result() is None


# -- Dialer errors ------------------------------------------------------------------


def test_connection_refused():
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    with pytest.raises(ConnectionRefusedError):
        Dialer(handshake_timeout=TIMEOUT).dial(f"ws://127.0.0.1:{port}/")


@pytest.mark.parametrize(
    "url",
    ["ftp://127.0.0.1/", "ws://", "ws://127.0.0.1:1/#fragment", "ws://127.0.0.1:notaport/", ""],
)
def test_bad_url_raises_value_error(url):
    calls = []
    dialer = Dialer(net_dial=lambda *args: calls.append(args))  # type: ignore[arg-type,return-value]
    with pytest.raises(ValueError):  # noqa: PT011 - the message varies by case
        dialer.dial(url)
    assert calls == []  # nothing was connected


def test_redirect_is_a_handshake_error_with_the_response(listener):
    def redirect(sock: socket.socket) -> bytes:
        request = read_head(sock)
        sock.sendall(
            b"HTTP/1.1 302 Found\r\nLocation: ws://elsewhere.example/\r\n"
            b"Content-Length: 5\r\n\r\nmoved"
        )
        read_to_eof(sock)  # returns once the dialer has closed its socket
        return request

    server = accept_raw(listener, redirect)
    with pytest.raises(HandshakeError) as info:
        Dialer(handshake_timeout=TIMEOUT).dial(url_of(listener) + "chat")
    assert info.value.status_code == 302
    assert info.value.response is not None
    assert info.value.response.headers["location"] == "ws://elsewhere.example/"
    assert info.value.response.body == b"moved"
    assert server.result().startswith(b"GET /chat HTTP/1.1\r\n")


def test_invalid_101_response_is_a_handshake_error(listener):
    def bad_accept(sock: socket.socket) -> None:
        read_head(sock)
        sock.sendall(
            b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n"
            b"Connection: Upgrade\r\nSec-WebSocket-Accept: wrong\r\n\r\n"
        )
        read_to_eof(sock)

    server = accept_raw(listener, bad_accept)
    with pytest.raises(HandshakeError) as info:
        Dialer(handshake_timeout=TIMEOUT).dial(url_of(listener))
    assert info.value.response is None
    server.result()  # the dialer closed its socket, or this would time out


def test_server_that_never_answers_times_out(listener):
    release = threading.Event()

    def silent(sock: socket.socket) -> bytes:
        request = read_head(sock)
        release.wait(TIMEOUT)
        return request

    server = accept_raw(listener, silent)
    start = time.monotonic()
    try:
        with pytest.raises(TimeoutError):
            Dialer(handshake_timeout=HANDSHAKE_TIMEOUT).dial(url_of(listener))
        elapsed = time.monotonic() - start
    finally:
        release.set()
    assert HANDSHAKE_TIMEOUT - 0.05 <= elapsed < HANDSHAKE_TIMEOUT + 1.0
    assert server.result().startswith(b"GET / HTTP/1.1")


def test_net_dial_is_used(listener):
    calls = []

    def net_dial(address: tuple[str, int], timeout: float | None) -> socket.socket:
        calls.append((address, timeout))
        return socket.create_connection(address, timeout=timeout)

    server = serve_one(listener, Upgrader())
    port = listener.getsockname()[1]
    conn, _ = Dialer(net_dial=net_dial, handshake_timeout=TIMEOUT).dial(
        f"ws://127.0.0.1:{port}/path"
    )
    with guard(conn):
        conn.write_message(MessageType.TEXT, "via net_dial")
        assert conn.read_message() == (MessageType.TEXT, "via net_dial")
        conn.close_gracefully(timeout=TIMEOUT)
    server.result()
    [(address, timeout)] = calls
    assert address == ("127.0.0.1", port)
    assert timeout is not None
    assert 0 < timeout <= TIMEOUT


def test_ipv6_literal_url():
    if not socket.has_ipv6:
        pytest.skip("no IPv6 support")
    try:
        listener6 = socket.socket(socket.AF_INET6, socket.SOCK_STREAM)
        listener6.bind(("::1", 0))
    except OSError:
        pytest.skip("cannot bind ::1")
    with listener6:
        listener6.listen(1)
        listener6.settimeout(TIMEOUT)
        server = serve_one(listener6, Upgrader())
        port = listener6.getsockname()[1]
        conn, _ = Dialer(handshake_timeout=TIMEOUT).dial(f"ws://[::1]:{port}/")
        with guard(conn):
            assert conn.remote_addr[0] == "::1"
            conn.write_message(MessageType.TEXT, "v6")
            assert conn.read_message() == (MessageType.TEXT, "v6")
            conn.close_gracefully(timeout=TIMEOUT)
        server.result()


def test_module_dial_uses_the_default_dialer(listener):
    assert isinstance(default_dialer, Dialer)
    assert default_dialer.handshake_timeout == 45.0
    server = serve_one(listener, Upgrader())
    conn, response = dial(url_of(listener))
    with guard(conn):
        assert response.status_code == 101
        conn.write_message(MessageType.BINARY, b"default")
        assert conn.read_message() == (MessageType.BINARY, b"default")
        conn.close_gracefully(timeout=TIMEOUT)
    server.result()


# -- TLS ----------------------------------------------------------------------------


def test_wss_echo_with_sni(listener, certificate):
    cert, key = certificate
    server_context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server_context.load_cert_chain(cert, key)
    names = []
    server_context.sni_callback = lambda sslobj, name, ctx: names.append(name)

    def run() -> Any:
        sock, _ = listener.accept()
        sock.settimeout(TIMEOUT)
        tls = server_context.wrap_socket(sock, server_side=True)
        conn = Upgrader().upgrade(tls)
        return echo(conn)

    server = Background(run)
    client_context = ssl.create_default_context(cafile=str(cert))
    port = listener.getsockname()[1]
    conn, _ = Dialer(ssl_context=client_context, handshake_timeout=TIMEOUT).dial(
        f"wss://localhost:{port}/"
    )
    with guard(conn):
        assert isinstance(conn.net_conn(), ssl.SSLSocket)
        conn.write_message(MessageType.TEXT, "secret")
        assert conn.read_message() == (MessageType.TEXT, "secret")
        conn.write_message(MessageType.BINARY, b"z" * 200_000)
        assert conn.read_message() == (MessageType.BINARY, b"z" * 200_000)
        conn.close_gracefully(timeout=TIMEOUT)
    [error] = server.result()
    assert isinstance(error, CloseError)
    assert names == ["localhost"]


def test_wss_with_untrusted_certificate_fails(listener, certificate):
    cert, key = certificate
    server_context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server_context.load_cert_chain(cert, key)

    def run() -> None:
        sock, _ = listener.accept()
        sock.settimeout(TIMEOUT)
        with sock, pytest.raises(ssl.SSLError):
            server_context.wrap_socket(sock, server_side=True)

    server = Background(run)
    port = listener.getsockname()[1]
    with pytest.raises(ssl.SSLCertVerificationError):
        Dialer(handshake_timeout=TIMEOUT).dial(f"wss://localhost:{port}/")
    server.result()


# -- interoperability with the websockets package -------------------------------------


@pytest.fixture
def ws_server() -> Iterator[Callable[..., str]]:
    """Start websockets' sync server in a thread: ``start(handler, **options)`` -> URL."""
    servers = []

    def start(handler: Callable[[Any], None], **options: Any) -> str:
        options.setdefault("ping_interval", None)
        options.setdefault("compression", None)
        server = ws_serve(handler, "127.0.0.1", 0, **options)
        thread = threading.Thread(target=server.serve_forever, daemon=True)
        thread.start()
        servers.append((server, thread))
        return f"ws://127.0.0.1:{server.socket.getsockname()[1]}/"

    yield start
    for server, thread in servers:
        server.shutdown()
        thread.join(TIMEOUT)
        assert not thread.is_alive()


def ws_echo(ws: Any) -> None:
    try:
        for message in ws:
            ws.send(message)
    except ConnectionClosed:
        pass


def ws_client(url: str, **options: Any) -> Any:
    options.setdefault("ping_interval", None)
    options.setdefault("compression", None)
    options.setdefault("open_timeout", TIMEOUT)
    options.setdefault("close_timeout", TIMEOUT)
    return ws_connect(url, **options)


@pytest.mark.parametrize("data", ["héllo ☃", b"\x00\xffbinary"], ids=["text", "binary"])
def test_websockets_client_against_upgrader(listener, data):
    server = serve_one(listener, Upgrader())
    with ws_client(url_of(listener)) as ws:
        ws.send(data)
        assert ws.recv(timeout=TIMEOUT) == data
    [error] = server.result()
    assert isinstance(error, CloseError)
    assert error.code == CloseCode.NORMAL_CLOSURE


@pytest.mark.parametrize("data", ["héllo ☃", b"\x00\xffbinary"], ids=["text", "binary"])
def test_dialer_against_websockets_server(ws_server, data):
    url = ws_server(ws_echo)
    conn, _ = Dialer(handshake_timeout=TIMEOUT).dial(url)
    with guard(conn):
        kind = MessageType.TEXT if isinstance(data, str) else MessageType.BINARY
        conn.write_message(kind, data)
        assert conn.read_message() == (kind, data)
        conn.close_gracefully(timeout=TIMEOUT)


def test_large_message_to_and_from_websockets_client(listener):
    server = serve_one(listener, Upgrader(max_message_size=None))
    payload = bytes(range(256)) * (BIG // 256)
    with ws_client(url_of(listener), max_size=None) as ws:
        ws.send(payload)
        assert ws.recv(timeout=TIMEOUT) == payload
    server.result()


def test_large_message_to_and_from_websockets_server(ws_server):
    url = ws_server(ws_echo, max_size=None)
    payload = "ab☃" * (BIG // 5)
    conn, _ = Dialer(max_message_size=None).dial(url)
    with guard(conn):
        conn.write_message(MessageType.TEXT, payload)
        assert conn.read_message() == (MessageType.TEXT, payload)
        conn.close_gracefully(timeout=TIMEOUT)


def test_fragmented_message_to_websockets_server(ws_server):
    received = []

    def handler(ws: Any) -> None:
        fragments = list(ws.recv_streaming())
        received.append(fragments)
        ws.send(b"".join(fragments))

    url = ws_server(handler)
    conn, _ = Dialer(write_buffer_size=1000).dial(url)
    payload = bytes(range(256)) * 20  # 5120 bytes: 6 frames of 1000 at most
    with guard(conn):
        with conn.next_writer(MessageType.BINARY) as writer:
            writer.write(payload)
        assert conn.read_message() == (MessageType.BINARY, payload)
    [fragments] = received
    assert len(fragments) >= 2
    assert b"".join(fragments) == payload


def test_fragmented_message_from_websockets_client(listener):
    def handler(conn: Conn) -> Any:
        guard(conn)
        kind, reader = conn.next_reader()
        chunks = []
        while chunk := reader.read(65536):
            chunks.append(chunk)
        conn.write_message(MessageType.TEXT, b"".join(chunks).decode())
        return kind, chunks

    server = serve_one(listener, Upgrader(), handler)
    parts = ["frag-one ", "frag-two ", "frag-three ☃"]
    with ws_client(url_of(listener)) as ws:
        ws.send(iter(parts))
        assert ws.recv(timeout=TIMEOUT) == "".join(parts)
    kind, chunks = server.result()
    assert kind == MessageType.TEXT
    assert len(chunks) >= 2
    assert b"".join(chunks) == "".join(parts).encode()


def test_websockets_ping_gets_our_pong(listener):
    server = serve_one(listener, Upgrader())
    with ws_client(url_of(listener)) as ws:
        pong = ws.ping(b"are you there")
        assert pong.wait(TIMEOUT)
    server.result()


def test_our_ping_gets_websockets_pong(ws_server):
    url = ws_server(ws_echo)
    conn, _ = Dialer().dial(url)
    pongs = []
    with guard(conn):
        conn.set_pong_handler(pongs.append)
        conn.write_control(MessageType.PING, b"ping-1", time.monotonic() + TIMEOUT)
        conn.write_message(MessageType.TEXT, "after the ping")
        assert conn.read_message() == (MessageType.TEXT, "after the ping")
        conn.close_gracefully(timeout=TIMEOUT)
    assert pongs == [b"ping-1"]


def test_websockets_client_close_code_reaches_upgrader(listener):
    server = serve_one(listener, Upgrader())
    with ws_client(url_of(listener)) as ws:
        ws.close(4001, "bye")
    [error] = server.result()
    assert isinstance(error, CloseError)
    assert (error.code, error.text) == (4001, "bye")


def test_upgrader_close_code_reaches_websockets_client(listener):
    server = serve_one(listener, Upgrader(), lambda c: c.close_gracefully(4001, "bye", TIMEOUT))
    with ws_client(url_of(listener)) as ws, pytest.raises(ConnectionClosed) as info:
        ws.recv(timeout=TIMEOUT)
    assert info.value.rcvd is not None
    assert (info.value.rcvd.code, info.value.rcvd.reason) == (4001, "bye")
    server.result()


def test_dialer_close_code_reaches_websockets_server(ws_server):
    closes = []

    def handler(ws: Any) -> None:
        try:
            ws.recv()
        except ConnectionClosed as exc:
            closes.append((exc.rcvd.code, exc.rcvd.reason) if exc.rcvd else None)

    url = ws_server(handler)
    conn, _ = Dialer().dial(url)
    with guard(conn):
        conn.write_control(
            MessageType.CLOSE, format_close_message(4001, "bye"), time.monotonic() + TIMEOUT
        )
        with pytest.raises(CloseError) as info:
            conn.read_message()
        assert info.value.code == 4001  # the echo of our Close
    deadline = time.monotonic() + TIMEOUT
    while not closes and time.monotonic() < deadline:
        time.sleep(0.01)
    assert closes == [(4001, "bye")]


def test_websockets_server_close_code_reaches_dialer(ws_server):
    url = ws_server(lambda ws: ws.close(4001, "bye"))
    conn, _ = Dialer().dial(url)
    with guard(conn), pytest.raises(CloseError) as info:
        conn.read_message()
    assert (info.value.code, info.value.text) == (4001, "bye")


def test_deflate_with_websockets_client(listener):
    def handler(conn: Conn) -> Any:
        return bool(conn.protocol.extensions), echo(conn)

    server = serve_one(listener, Upgrader(enable_compression=True), handler)
    payload = "compressible " * 10_000
    with ws_client(url_of(listener), compression="deflate") as ws:
        assert [ext.name for ext in ws.protocol.extensions] == ["permessage-deflate"]
        for _ in range(3):  # context takeover: later messages use the window
            ws.send(payload)
            assert ws.recv(timeout=TIMEOUT) == payload
        ws.send(b"\x01" * 50_000)
        assert ws.recv(timeout=TIMEOUT) == b"\x01" * 50_000
    negotiated, [error] = server.result()
    assert negotiated
    assert isinstance(error, CloseError)
    assert error.code == CloseCode.NORMAL_CLOSURE


def test_deflate_with_websockets_server(ws_server):
    negotiated = []

    def handler(ws: Any) -> None:
        negotiated.append([ext.name for ext in ws.protocol.extensions])
        ws_echo(ws)

    url = ws_server(handler, compression="deflate")
    conn, response = Dialer(enable_compression=True).dial(url)
    payload = "compressible " * 10_000
    with guard(conn):
        assert conn.protocol.extensions
        assert [offer.name for offer in response.extensions] == ["permessage-deflate"]
        for _ in range(3):
            conn.write_message(MessageType.TEXT, payload)
            assert conn.read_message() == (MessageType.TEXT, payload)
        with conn.next_writer(MessageType.BINARY) as writer:  # compressed and fragmented
            writer.write(b"\x02" * 30_000)
        assert conn.read_message() == (MessageType.BINARY, b"\x02" * 30_000)
        conn.close_gracefully(timeout=TIMEOUT)
    assert negotiated == [["permessage-deflate"]]


# -- edge cases: EOF during the handshake, no timeout, a deadline spent connecting ------


def test_server_closing_before_answering_is_a_handshake_error(listener):
    server = accept_raw(listener, read_head)  # reads the request, then closes
    with pytest.raises(HandshakeError):
        Dialer(handshake_timeout=TIMEOUT).dial(url_of(listener))
    assert server.result().startswith(b"GET / HTTP/1.1")


def test_client_closing_before_the_request_ends_is_a_handshake_error(listener):
    server = serve_one(listener, Upgrader())
    with raw_connect(listener) as sock:
        sock.sendall(handshake_request(listener.getsockname()[1])[:40])
        sock.shutdown(socket.SHUT_WR)
        read_to_eof(sock)
    assert isinstance(server.error(), HandshakeError)


def test_no_handshake_timeout_on_either_side(listener):
    server = serve_one(listener, Upgrader(handshake_timeout=None))
    conn, _ = Dialer(handshake_timeout=None).dial(url_of(listener))
    with guard(conn):
        conn.write_message(MessageType.TEXT, "no deadline")
        assert conn.read_message() == (MessageType.TEXT, "no deadline")
        conn.close_gracefully(timeout=TIMEOUT)
    server.result()


def test_wss_without_handshake_timeout(listener, certificate):
    cert, key = certificate
    server_context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server_context.load_cert_chain(cert, key)

    def run() -> Any:
        sock, _ = listener.accept()
        sock.settimeout(TIMEOUT)
        return echo(Upgrader().upgrade(server_context.wrap_socket(sock, server_side=True)))

    server = Background(run)
    client_context = ssl.create_default_context(cafile=str(cert))
    port = listener.getsockname()[1]
    conn, _ = Dialer(ssl_context=client_context, handshake_timeout=None).dial(
        f"wss://localhost:{port}/"
    )
    with guard(conn):
        conn.write_message(MessageType.TEXT, "tls, no deadline")
        assert conn.read_message() == (MessageType.TEXT, "tls, no deadline")
        conn.close_gracefully(timeout=TIMEOUT)
    server.result()


def test_deadline_spent_connecting_leaves_no_time_for_tls(listener):
    opened = []

    def slow_net_dial(address: tuple[str, int], timeout: float | None) -> socket.socket:
        sock = socket.create_connection(address, timeout=timeout)
        opened.append(sock)
        time.sleep(HANDSHAKE_TIMEOUT + 0.1)
        return sock

    server = accept_raw(listener, read_to_eof)  # ends when the dialer closes its socket
    port = listener.getsockname()[1]
    dialer = Dialer(net_dial=slow_net_dial, handshake_timeout=HANDSHAKE_TIMEOUT)
    with pytest.raises(TimeoutError):
        dialer.dial(f"wss://localhost:{port}/")
    assert server.result() == b""  # no TLS ClientHello was sent
    [sock] = opened
    assert sock.fileno() == -1  # the dialer closed it
