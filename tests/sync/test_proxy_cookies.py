"""Dialer through HTTP CONNECT proxies, and with a cookie jar, over loopback TCP.

``TunnelProxy`` is a tiny threaded CONNECT proxy written for these tests: it
records each CONNECT request, optionally demands Basic credentials, sends
every tunnel to 127.0.0.1 whatever host was asked for (so the tests can use
names that only the proxy "resolves"), and relays bytes both ways. Every
socket has a timeout, so a broken dialer fails a test instead of hanging it.
"""

from __future__ import annotations

import base64
import http.cookiejar
import socket
import ssl
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import suppress
from pathlib import Path
from typing import Any

import pytest
from sync_helpers import TIMEOUT, Background

from wsproto_core import HandshakeRequest, Headers, ServerConnection
from wsproto_sync import (
    Conn,
    Dialer,
    HandshakeError,
    MessageType,
    Upgrader,
    proxy_from_environment,
)

HANDSHAKE_TIMEOUT = 0.3
PROXY_VARIABLES = ["http_proxy", "https_proxy", "all_proxy", "no_proxy", "REQUEST_METHOD"]


@pytest.fixture(autouse=True)
def no_proxy_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """Keep the developer's own proxy settings out of these tests."""
    for name in PROXY_VARIABLES:
        monkeypatch.delenv(name, raising=False)
        monkeypatch.delenv(name.upper(), raising=False)


# -- the proxy ----------------------------------------------------------------------------


def read_head(sock: socket.socket) -> tuple[bytes, bytes]:
    """Read an HTTP head; return it and whatever followed it."""
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(4096)
        if not chunk:
            return data, b""
        data += chunk
    head, _, rest = data.partition(b"\r\n\r\n")
    return head, rest


def parse_head(head: bytes) -> tuple[str, Headers]:
    line, *fields = head.decode("latin-1").split("\r\n")
    return line, Headers([tuple(field.split(": ", 1)) for field in fields])  # type: ignore[misc]


def relay(source: socket.socket, target: socket.socket) -> None:
    """Copy ``source`` to ``target`` until EOF, then pass the EOF on."""
    with suppress(OSError):
        while data := source.recv(65536):
            target.sendall(data)
    with suppress(OSError):
        target.shutdown(socket.SHUT_WR)


class TunnelProxy:
    """A CONNECT proxy on 127.0.0.1 that tunnels every target to 127.0.0.1.

    Args:
        credentials: demand these with ``Proxy-Authorization: Basic``; 407 otherwise.
        coalesce: wait for the target's first bytes and send them in the same
            ``sendall`` as the 200 response, as a proxy may.
    """

    def __init__(
        self, credentials: tuple[str, str] | None = None, *, coalesce: bool = False
    ) -> None:
        self.credentials = credentials
        self.coalesce = coalesce
        self.requests: list[tuple[str, Headers]] = []
        self.tunnels = 0
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.listener.settimeout(0.05)
        self._stop = threading.Event()
        self._threads = [threading.Thread(target=self._accept, daemon=True)]
        self._threads[0].start()

    @property
    def port(self) -> int:
        return int(self.listener.getsockname()[1])

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def _accept(self) -> None:
        while not self._stop.is_set():
            try:
                sock, _ = self.listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            thread = threading.Thread(target=self._serve, args=(sock,), daemon=True)
            self._threads.append(thread)
            thread.start()

    def _serve(self, client: socket.socket) -> None:
        with client:
            client.settimeout(TIMEOUT)
            head, rest = read_head(client)
            if not head:
                return
            line, headers = parse_head(head)
            self.requests.append((line, headers))
            if self.credentials is not None:
                token = base64.b64encode(":".join(self.credentials).encode()).decode()
                if headers.get("proxy-authorization") != f"Basic {token}":
                    client.sendall(
                        b"HTTP/1.1 407 Proxy Authentication Required\r\n"
                        b'Proxy-Authenticate: Basic realm="tests"\r\n'
                        b"Content-Length: 13\r\nConnection: close\r\n\r\nwho are you?\n"
                    )
                    return
            method, authority, _ = line.split(" ")
            assert method == "CONNECT"
            port = int(authority.rsplit(":", 1)[1])
            with socket.create_connection(("127.0.0.1", port), timeout=TIMEOUT) as upstream:
                self.tunnels += 1
                reply = b"HTTP/1.1 200 Connection established\r\n\r\n"
                if self.coalesce:
                    reply += upstream.recv(65536)
                client.sendall(reply)
                if rest:
                    upstream.sendall(rest)
                back = threading.Thread(target=relay, args=(upstream, client), daemon=True)
                back.start()
                relay(client, upstream)
                back.join(TIMEOUT)

    def close(self) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(TIMEOUT)
            assert not thread.is_alive(), "the proxy did not finish in time"
        self.listener.close()


@pytest.fixture
def start_proxy() -> Iterator[Callable[..., TunnelProxy]]:
    proxies: list[TunnelProxy] = []

    def start(*args: Any, **kwargs: Any) -> TunnelProxy:
        proxies.append(TunnelProxy(*args, **kwargs))
        return proxies[-1]

    yield start
    for proxy in proxies:
        proxy.close()


# -- the WebSocket server ---------------------------------------------------------------


@pytest.fixture
def listener() -> Iterator[socket.socket]:
    sock = socket.create_server(("127.0.0.1", 0))
    sock.settimeout(TIMEOUT)
    yield sock
    sock.close()


def port_of(sock: socket.socket) -> int:
    return int(sock.getsockname()[1])


def guard(conn: Conn) -> Conn:
    conn.set_read_deadline(time.monotonic() + TIMEOUT)
    conn.set_write_deadline(time.monotonic() + TIMEOUT)
    return conn


def echo(conn: Conn) -> HandshakeRequest:
    """Echo messages until the client closes; return the handshake request."""
    guard(conn)
    with suppress(Exception):
        while True:
            conn.write_message(*conn.read_message())
    request = conn.protocol.handshake_request  # type: ignore[attr-defined]
    assert isinstance(request, HandshakeRequest)
    return request


def serve_one(
    listener: socket.socket,
    *,
    response_headers: Any = (),
    tls: ssl.SSLContext | None = None,
) -> Background:
    """Accept one connection, upgrade it (after TLS, if given) and echo."""

    def run() -> HandshakeRequest:
        sock, _ = listener.accept()
        sock.settimeout(TIMEOUT)
        if tls is not None:
            sock = tls.wrap_socket(sock, server_side=True)
        with Upgrader(handshake_timeout=TIMEOUT).upgrade(sock, response_headers) as conn:
            return echo(conn)

    return Background(run)


def talk(conn: Conn, text: str = "hello") -> None:
    with guard(conn):
        conn.write_message(MessageType.TEXT, text)
        assert conn.read_message() == (MessageType.TEXT, text)
        conn.close_gracefully(timeout=TIMEOUT)


def accept_raw(listener: socket.socket, handler: Callable[[socket.socket], Any]) -> Background:
    def run() -> Any:
        sock, _ = listener.accept()
        with sock:
            sock.settimeout(TIMEOUT)
            return handler(sock)

    return Background(run)


def tls_contexts(
    certificate: tuple[Path, Path],
) -> tuple[ssl.SSLContext, ssl.SSLContext, list[str]]:
    """Server and client contexts for ``localhost``; the list collects the SNI names seen."""
    cert, key = certificate
    server = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server.load_cert_chain(cert, key)
    names: list[str] = []
    server.sni_callback = lambda sslobj, name, ctx: names.append(name)  # type: ignore[assignment,func-returns-value]
    return server, ssl.create_default_context(cafile=str(cert)), names


# -- through a proxy --------------------------------------------------------------------------


def test_ws_through_the_proxy(listener, start_proxy):
    proxy = start_proxy()
    server = serve_one(listener)
    port = port_of(listener)
    conn, _ = Dialer(proxy=proxy.url, handshake_timeout=TIMEOUT).dial(f"ws://127.0.0.1:{port}/chat")
    assert conn.remote_addr[1] == proxy.port  # the TCP connection is the proxy's
    talk(conn, "through the tunnel")
    request = server.result()
    assert request.target == "/chat"
    assert request.host == f"127.0.0.1:{port}"
    assert "proxy-authorization" not in request.headers
    [(line, headers)] = proxy.requests
    assert line == f"CONNECT 127.0.0.1:{port} HTTP/1.1"
    assert headers["host"] == f"127.0.0.1:{port}"
    assert "proxy-authorization" not in headers
    assert proxy.tunnels == 1


def test_large_messages_both_ways_through_the_proxy(listener, start_proxy):
    proxy = start_proxy()
    server = serve_one(listener)
    conn, _ = Dialer(proxy=proxy.url, handshake_timeout=TIMEOUT).dial(
        f"ws://127.0.0.1:{port_of(listener)}/"
    )
    with guard(conn):
        conn.write_message(MessageType.BINARY, b"\x00\xff" * 200_000)
        assert conn.read_message() == (MessageType.BINARY, b"\x00\xff" * 200_000)
        conn.close_gracefully(timeout=TIMEOUT)
    server.result()


def test_wss_through_the_proxy_with_the_targets_sni(listener, start_proxy, certificate):
    server_tls, client_tls, names = tls_contexts(certificate)
    proxy = start_proxy()
    server = serve_one(listener, tls=server_tls)
    port = port_of(listener)
    dialer = Dialer(proxy=proxy.url, ssl_context=client_tls, handshake_timeout=TIMEOUT)
    conn, _ = dialer.dial(f"wss://localhost:{port}/secure")
    assert isinstance(conn.net_conn(), ssl.SSLSocket)
    talk(conn, "secret")
    assert server.result().target == "/secure"
    assert names == ["localhost"]  # TLS ran end to end with the target, not the proxy
    assert proxy.requests[0][0] == f"CONNECT localhost:{port} HTTP/1.1"


def test_credentials_reach_the_proxy_as_basic_auth(listener, start_proxy):
    proxy = start_proxy(credentials=("user", "p@ss:wörd"))
    server = serve_one(listener)
    url = f"http://user:p%40ss%3Aw%C3%B6rd@127.0.0.1:{proxy.port}"
    conn, _ = Dialer(proxy=url, handshake_timeout=TIMEOUT).dial(
        f"ws://127.0.0.1:{port_of(listener)}/"
    )
    talk(conn)
    assert "proxy-authorization" not in server.result().headers  # not passed to the target
    [(_, headers)] = proxy.requests
    expected = base64.b64encode("user:p@ss:wörd".encode()).decode()
    assert headers["proxy-authorization"] == f"Basic {expected}"


@pytest.mark.parametrize("userinfo", ["", "user:wrong@"])
def test_407_is_a_handshake_error_with_the_proxys_response(start_proxy, userinfo):
    proxy = start_proxy(credentials=("user", "right"))
    dialer = Dialer(proxy=f"http://{userinfo}127.0.0.1:{proxy.port}", handshake_timeout=TIMEOUT)
    with pytest.raises(HandshakeError) as info:
        dialer.dial("ws://target.example.test/")
    error = info.value
    assert error.status_code == 407
    assert error.headers is not None
    assert error.headers["proxy-authenticate"] == 'Basic realm="tests"'
    assert error.response is not None
    assert error.response.body == b"who are you?\n"
    assert "wrong" not in str(error)
    assert proxy.tunnels == 0


def test_bytes_from_the_target_right_after_the_tunnel_opens_are_kept(listener, start_proxy):
    # The target sends its status line as soon as it is connected, and the
    # proxy passes it on in the same write as its own 200: the dialer reads
    # both at once, and must hand the target's bytes to the handshake.
    def early_server(sock: socket.socket) -> str:
        status = b"HTTP/1.1 101 Switching Protocols\r\n"
        sock.sendall(status)
        core = ServerConnection()
        while (event := core.next_event()) is None:
            core.receive_data(sock.recv(65536))
        assert isinstance(event, HandshakeRequest)
        core.accept()
        response = core.data_to_send()
        assert response.startswith(status)
        sock.sendall(response[len(status) :])
        core.send_message(MessageType.TEXT, "first words")
        sock.sendall(core.data_to_send())
        return event.target

    proxy = start_proxy(coalesce=True)
    server = accept_raw(listener, early_server)
    conn, response = Dialer(proxy=proxy.url, handshake_timeout=TIMEOUT).dial(
        f"ws://127.0.0.1:{port_of(listener)}/early"
    )
    with conn, guard(conn):
        assert response.status_code == 101
        assert conn.read_message() == (MessageType.TEXT, "first words")
    assert server.result() == "/early"


def fake_proxy(listener: socket.socket, answer: bytes | None, wait: threading.Event) -> Background:
    """Read a CONNECT request, send ``answer`` (if any), then wait and close."""

    def run(sock: socket.socket) -> bytes:
        head, _ = read_head(sock)
        if answer is not None:
            sock.sendall(answer)
        wait.wait(TIMEOUT)
        return head

    return accept_raw(listener, run)


def test_wss_refuses_bytes_before_tls(listener):
    release = threading.Event()
    release.set()
    proxy = fake_proxy(listener, b"HTTP/1.1 200 OK\r\n\r\n\x15junk", release)
    dialer = Dialer(proxy=f"http://127.0.0.1:{port_of(listener)}", handshake_timeout=TIMEOUT)
    with pytest.raises(HandshakeError, match="before the TLS handshake"):
        dialer.dial("wss://target.example.test/")
    proxy.result()


def test_proxy_closing_before_answering(listener):
    release = threading.Event()
    release.set()  # close at once
    proxy = fake_proxy(listener, None, release)
    dialer = Dialer(proxy=f"http://127.0.0.1:{port_of(listener)}", handshake_timeout=TIMEOUT)
    start = time.monotonic()
    with pytest.raises(HandshakeError, match="closed the connection before answering CONNECT"):
        dialer.dial("ws://target.example.test:8080/")
    assert time.monotonic() - start < TIMEOUT
    assert proxy.result().startswith(b"CONNECT target.example.test:8080 HTTP/1.1\r\n")


def test_proxy_that_never_answers_times_out(listener):
    release = threading.Event()
    proxy = fake_proxy(listener, None, release)
    dialer = Dialer(
        proxy=f"http://127.0.0.1:{port_of(listener)}", handshake_timeout=HANDSHAKE_TIMEOUT
    )
    start = time.monotonic()
    try:
        with pytest.raises(
            TimeoutError, match=r"did not open a tunnel to target\.example\.test:80 "
        ):
            dialer.dial("ws://target.example.test/")
        elapsed = time.monotonic() - start
    finally:
        release.set()
    assert HANDSHAKE_TIMEOUT - 0.05 <= elapsed < HANDSHAKE_TIMEOUT + 1.0
    proxy.result()


def test_proxy_that_answers_too_slowly_for_tls_times_out(listener):
    # The tunnel opens just in time; TLS gets only what is left of the timeout.
    release = threading.Event()

    def slow(sock: socket.socket) -> None:
        read_head(sock)
        time.sleep(HANDSHAKE_TIMEOUT / 2)
        sock.sendall(b"HTTP/1.1 200 OK\r\n\r\n")
        release.wait(TIMEOUT)  # a target that never answers the ClientHello

    proxy = accept_raw(listener, slow)
    dialer = Dialer(
        proxy=f"http://127.0.0.1:{port_of(listener)}", handshake_timeout=HANDSHAKE_TIMEOUT
    )
    start = time.monotonic()
    try:
        with pytest.raises(TimeoutError):
            dialer.dial("wss://target.example.test/")
        elapsed = time.monotonic() - start
    finally:
        release.set()
    assert elapsed < HANDSHAKE_TIMEOUT + 1.0
    proxy.result()


def test_unreachable_proxy_is_an_os_error():
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = port_of(sock)
    with pytest.raises(ConnectionRefusedError):
        Dialer(proxy=f"http://127.0.0.1:{port}", handshake_timeout=TIMEOUT).dial("ws://x.test/")


def test_net_dial_connects_to_the_proxy(listener, start_proxy):
    proxy = start_proxy()
    calls = []

    def net_dial(address: tuple[str, int], timeout: float | None) -> socket.socket:
        calls.append(address)
        return socket.create_connection(address, timeout=timeout)

    server = serve_one(listener)
    dialer = Dialer(proxy=proxy.url, net_dial=net_dial, handshake_timeout=TIMEOUT)
    talk(dialer.dial(f"ws://127.0.0.1:{port_of(listener)}/")[0])
    server.result()
    assert calls == [("127.0.0.1", proxy.port)]


# -- choosing the proxy ---------------------------------------------------------------------


def test_a_proxy_function_sees_the_normalized_url(listener, start_proxy):
    proxy = start_proxy()
    seen = []

    def choose(url: str) -> str | None:
        seen.append(url)
        return proxy.url if "via-proxy" in url else None

    dialer = Dialer(proxy=choose, handshake_timeout=TIMEOUT)
    for path in ["/via-proxy", "/direct"]:
        server = serve_one(listener)
        talk(dialer.dial(f"ws://user:pw@127.0.0.1:{port_of(listener)}{path}")[0])
        server.result()
    port = port_of(listener)
    assert seen == [f"ws://127.0.0.1:{port}/via-proxy", f"ws://127.0.0.1:{port}/direct"]
    assert proxy.tunnels == 1


def test_invalid_proxy_urls_fail_before_connecting():
    with pytest.raises(ValueError, match="unsupported proxy scheme 'socks5'"):
        Dialer(proxy="socks5://127.0.0.1:1080")
    calls = []
    dialer = Dialer(
        proxy=lambda url: "https://proxy.test",
        net_dial=lambda *a: calls.append(a),  # type: ignore[arg-type,return-value]
    )
    with pytest.raises(ValueError, match="unsupported proxy scheme 'https'"):
        dialer.dial("ws://target.test/")
    assert calls == []


def test_default_dialer_options():
    assert Dialer().proxy is proxy_from_environment
    assert Dialer().cookie_jar is None


@pytest.mark.parametrize(
    ("env", "url", "expected"),
    [
        ({}, "ws://example.test/", None),
        ({"http_proxy": "http://p:1"}, "ws://example.test/", "http://p:1"),
        ({"http_proxy": "http://p:1"}, "wss://example.test/", None),
        ({"https_proxy": "http://s:2"}, "wss://example.test/", "http://s:2"),
        ({"https_proxy": "http://s:2"}, "ws://example.test/", None),
        ({"HTTP_PROXY": "http://upper:3"}, "ws://example.test/", "http://upper:3"),
        ({"HTTPS_PROXY": "upper:4"}, "wss://example.test/", "upper:4"),
        ({"all_proxy": "http://a:5"}, "wss://example.test/", "http://a:5"),
        ({"ALL_PROXY": "http://a:5", "http_proxy": "http://p:1"}, "ws://e.test/", "http://p:1"),
        ({"http_proxy": "http://p:1", "no_proxy": "example.test"}, "ws://example.test/", None),
        ({"http_proxy": "http://p:1", "no_proxy": "example.test"}, "ws://a.example.test/", None),
        (
            {"http_proxy": "http://p:1", "no_proxy": "example.test"},
            "ws://other.test/",
            "http://p:1",
        ),
        ({"http_proxy": "http://p:1", "NO_PROXY": "*"}, "ws://example.test:8080/", None),
        ({"http_proxy": "http://p:1", "no_proxy": "x, 10.0.0.1"}, "ws://10.0.0.1:9/", None),
        ({"http_proxy": "http://p:1", "no_proxy": "2001:db8::1"}, "ws://[2001:db8::1]:9/", None),
        ({"http_proxy": "http://p:1", "no_proxy": "::2"}, "ws://[2001:db8::1]:9/", "http://p:1"),
        # As in Go, loopback addresses and localhost never go through a proxy.
        ({"http_proxy": "http://p:1"}, "ws://127.0.0.1:9/", None),
        ({"http_proxy": "http://p:1"}, "ws://127.1.2.3/", None),
        ({"http_proxy": "http://p:1"}, "ws://[::1]:9/", None),
        ({"http_proxy": "http://p:1"}, "ws://LocalHost:9/", None),
        ({"http_proxy": "http://p:1"}, "ws://localhost.example.test/", "http://p:1"),
    ],
)
def test_proxy_from_environment(monkeypatch, env, url, expected):
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    assert proxy_from_environment(url) == expected


def test_environment_proxy_is_used_by_default(monkeypatch, listener, start_proxy):
    proxy = start_proxy()
    monkeypatch.setenv("http_proxy", proxy.url)
    server = serve_one(listener)
    # Only the proxy knows this name: a direct connection could not resolve it.
    conn, _ = Dialer(handshake_timeout=TIMEOUT).dial(f"ws://ws.example.test:{port_of(listener)}/")
    talk(conn)
    assert server.result().host == f"ws.example.test:{port_of(listener)}"
    assert proxy.tunnels == 1


def test_environment_https_proxy_for_wss(monkeypatch, listener, start_proxy, certificate):
    server_tls, client_tls, names = tls_contexts(certificate)
    proxy = start_proxy()
    monkeypatch.setenv("HTTPS_PROXY", f"127.0.0.1:{proxy.port}")  # no scheme: http assumed
    monkeypatch.setenv("http_proxy", "http://127.0.0.1:1")  # the wrong one for wss
    server = serve_one(listener, tls=server_tls)
    conn, _ = Dialer(ssl_context=client_tls, handshake_timeout=TIMEOUT).dial(
        f"wss://ws.example.test:{port_of(listener)}/"
    )
    talk(conn)
    server.result()
    assert proxy.tunnels == 1
    assert names == ["ws.example.test"]


def test_no_proxy_bypasses_the_environment_proxy(monkeypatch, listener, start_proxy):
    proxy = start_proxy()
    monkeypatch.setenv("http_proxy", proxy.url)
    monkeypatch.setenv("no_proxy", "localhost,127.0.0.1")
    server = serve_one(listener)
    talk(Dialer(handshake_timeout=TIMEOUT).dial(f"ws://127.0.0.1:{port_of(listener)}/")[0])
    server.result()
    assert proxy.requests == []


def test_proxy_none_ignores_the_environment(monkeypatch, listener, start_proxy):
    proxy = start_proxy()
    monkeypatch.setenv("http_proxy", proxy.url)
    server = serve_one(listener)
    talk(
        Dialer(proxy=None, handshake_timeout=TIMEOUT).dial(f"ws://127.0.0.1:{port_of(listener)}/")[
            0
        ]
    )
    server.result()
    assert proxy.requests == []


# -- cookies ---------------------------------------------------------------------------------


def cookie_names(jar: http.cookiejar.CookieJar) -> dict[str, str | None]:
    return {cookie.name: cookie.value for cookie in jar}


def test_cookies_from_the_101_are_stored_and_sent_next_time(listener):
    jar = http.cookiejar.CookieJar()
    dialer = Dialer(cookie_jar=jar, handshake_timeout=TIMEOUT)
    url = f"ws://127.0.0.1:{port_of(listener)}/app"
    set_cookies = [("Set-Cookie", "session=abc123; Path=/"), ("Set-Cookie", "theme=dark")]
    server = serve_one(listener, response_headers=set_cookies)
    talk(dialer.dial(url)[0])
    assert "cookie" not in server.result().headers  # the jar was empty
    assert cookie_names(jar) == {"session": "abc123", "theme": "dark"}

    server = serve_one(listener)
    talk(dialer.dial(url)[0])
    cookies = server.result().headers.get_all("cookie")
    assert len(cookies) == 1
    assert sorted(cookies[0].split("; ")) == ["session=abc123", "theme=dark"]


def test_secure_cookies_go_to_wss_only(listener, certificate):
    jar = http.cookiejar.CookieJar()
    server_tls, client_tls, _ = tls_contexts(certificate)
    dialer = Dialer(cookie_jar=jar, ssl_context=client_tls, handshake_timeout=TIMEOUT)
    port = port_of(listener)
    server = serve_one(
        listener,
        tls=server_tls,
        response_headers=[("Set-Cookie", "plain=1"), ("Set-Cookie", "private=2; Secure")],
    )
    talk(dialer.dial(f"wss://localhost:{port}/")[0])
    server.result()
    assert cookie_names(jar) == {"plain": "1", "private": "2"}

    server = serve_one(listener)
    talk(dialer.dial(f"ws://localhost:{port}/")[0])
    assert server.result().headers.get_all("cookie") == ["plain=1"]

    server = serve_one(listener, tls=server_tls)
    talk(dialer.dial(f"wss://localhost:{port}/")[0])
    [cookie] = server.result().headers.get_all("cookie")
    assert sorted(cookie.split("; ")) == ["plain=1", "private=2"]


def test_an_explicit_cookie_header_replaces_the_jars(listener):
    jar = http.cookiejar.CookieJar()
    dialer = Dialer(cookie_jar=jar, handshake_timeout=TIMEOUT)
    url = f"ws://127.0.0.1:{port_of(listener)}/"
    server = serve_one(listener, response_headers=[("Set-Cookie", "from=jar")])
    talk(dialer.dial(url)[0])
    server.result()
    server = serve_one(listener)
    talk(dialer.dial(url, {"Cookie": "mine=1"})[0])
    assert server.result().headers.get_all("cookie") == ["mine=1"]


def test_cookies_of_a_refusal_are_stored(listener):
    def refuse(sock: socket.socket) -> bytes:
        head, _ = read_head(sock)
        sock.sendall(
            b"HTTP/1.1 401 Unauthorized\r\nSet-Cookie: tried=1; Path=/\r\n"
            b"Content-Length: 0\r\nConnection: close\r\n\r\n"
        )
        return head

    jar = http.cookiejar.CookieJar()
    server = accept_raw(listener, refuse)
    with pytest.raises(HandshakeError) as info:
        Dialer(cookie_jar=jar, handshake_timeout=TIMEOUT).dial(
            f"ws://127.0.0.1:{port_of(listener)}/"
        )
    assert info.value.status_code == 401
    server.result()
    assert cookie_names(jar) == {"tried": "1"}


def test_cookie_jar_through_a_proxy(listener, start_proxy):
    proxy = start_proxy()
    jar = http.cookiejar.CookieJar()
    dialer = Dialer(proxy=proxy.url, cookie_jar=jar, handshake_timeout=TIMEOUT)
    url = f"ws://ws.example.test:{port_of(listener)}/"
    server = serve_one(listener, response_headers=[("Set-Cookie", "k=v")])
    talk(dialer.dial(url)[0])
    server.result()
    assert [cookie.domain for cookie in jar] == ["ws.example.test"]
    server = serve_one(listener)
    talk(dialer.dial(url)[0])
    assert server.result().headers.get_all("cookie") == ["k=v"]
    assert proxy.tunnels == 2
