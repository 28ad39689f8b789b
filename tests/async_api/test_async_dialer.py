"""Dialer: handshakes, refusals, bad URLs, IPv6, TLS, cookies, proxies and net_dial."""

from __future__ import annotations

import http.cookiejar
import socket
import ssl
from typing import Any

import anyio
import pytest
from async_helpers import (
    STEP,
    TunnelProxy,
    accept_handshake,
    echo,
    echo_server,
    free_port,
    net_stream,
    raw_listener,
    read_head,
    serving,
    url_of,
)

pytestmark = pytest.mark.anyio

HANDSHAKE_TIMEOUT = 0.3


async def talk(ws: Any, conn: Any, text: str = "hello") -> None:
    async with conn:
        await conn.write_message(ws.MessageType.TEXT, text)
        assert await conn.read_message() == (ws.MessageType.TEXT, text)
        await conn.close_gracefully(timeout=STEP)


# -- the happy path and its options ------------------------------------------------------------


@pytest.mark.parametrize(
    ("server_protocols", "client_protocols", "expected"),
    [
        pytest.param(["b", "a"], ["a", "b"], "b", id="server-preference"),
        pytest.param(["a", "b"], ["b", "a"], "a", id="server-preference-reversed"),
        pytest.param(["c", "b"], ["a", "b"], "b", id="only-common"),
        pytest.param(["x"], ["a"], None, id="none-common"),
        pytest.param([], ["a"], None, id="server-none"),
        pytest.param(["a"], [], None, id="client-none"),
    ],
)
async def test_subprotocol_negotiation(ws, server_protocols, client_protocols, expected):
    seen: list[str | None] = []

    async def handler(conn: Any) -> None:
        seen.append(conn.subprotocol)

    upgrader = ws.Upgrader(subprotocols=server_protocols)
    async with serving(ws, handler, upgrader=upgrader) as server:
        dialer = ws.Dialer(subprotocols=client_protocols, handshake_timeout=STEP)
        conn, response = await dialer.dial(url_of(server))
        async with conn:
            assert response.subprotocol == expected
            assert conn.subprotocol == expected
            with pytest.raises(ws.CloseError):  # the handler returned: the server closed
                await conn.read_message()
    assert seen == [expected]


async def test_the_request_carries_the_path_query_and_headers(ws):
    async with raw_listener() as (port, accept):
        peers = []

        async def serve_one() -> None:
            peers.append(await accept_handshake(await accept()))

        async with anyio.create_task_group() as tg:
            tg.start_soon(serve_one)
            conn, response = await ws.Dialer(handshake_timeout=STEP).dial(
                f"ws://127.0.0.1:{port}/chat?room=1", [("X-Token", "t0k3n")]
            )
        async with conn:
            assert response.status_code == 101
            [peer] = peers
            line, headers = peer.request
            assert line == "GET /chat?room=1 HTTP/1.1"
            assert headers["host"] == f"127.0.0.1:{port}"
            assert headers["x-token"] == "t0k3n"
            await peer.aclose()


async def test_module_dial_uses_the_default_dialer(ws):
    assert isinstance(ws.default_dialer, ws.Dialer)
    assert ws.default_dialer.handshake_timeout == 45.0
    async with echo_server(ws) as server:
        conn, response = await ws.dial(url_of(server))
        assert response.status_code == 101
        await talk(ws, conn, "default")


async def test_dialer_max_message_size(ws):
    async def handler(conn: Any) -> None:
        await conn.write_message(ws.MessageType.BINARY, b"y" * 50)
        await conn.write_message(ws.MessageType.BINARY, b"y" * 51)
        with pytest.raises(ws.CloseError) as info:
            await conn.read_message()
        codes.append(info.value.code)

    codes: list[int] = []
    async with serving(ws, handler) as server:
        conn, _ = await ws.Dialer(max_message_size=50).dial(url_of(server))
        async with conn:
            assert await conn.read_message() == (ws.MessageType.BINARY, b"y" * 50)
            with pytest.raises(ws.ReadLimitError):
                await conn.read_message()
        await server.shutdown()
    assert codes == [ws.CloseCode.MESSAGE_TOO_BIG]


# -- failures ----------------------------------------------------------------------------------


async def test_a_silent_server_times_out(ws):
    async with raw_listener() as (port, accept):
        heads: list[bytes] = []

        async def silent() -> None:
            async with await accept() as stream:
                heads.append((await read_head(stream))[0])
                await anyio.sleep(STEP)  # never answers

        async with anyio.create_task_group() as tg:
            tg.start_soon(silent)
            start = anyio.current_time()
            with pytest.raises(TimeoutError):
                await ws.Dialer(handshake_timeout=HANDSHAKE_TIMEOUT).dial(f"ws://127.0.0.1:{port}/")
            elapsed = anyio.current_time() - start
            tg.cancel_scope.cancel()
    assert HANDSHAKE_TIMEOUT - 0.05 <= elapsed < HANDSHAKE_TIMEOUT + 1.0
    assert heads[0].startswith(b"GET / HTTP/1.1\r\n")


async def test_a_refusal_is_a_handshake_error_with_the_response(ws):
    async with raw_listener() as (port, accept):

        async def refuse() -> None:
            async with await accept() as stream:
                await read_head(stream)
                await stream.send(
                    b"HTTP/1.1 401 Unauthorized\r\nWWW-Authenticate: Bearer\r\n"
                    b"Content-Length: 13\r\nConnection: close\r\n\r\nlog in first\n"
                )

        async with anyio.create_task_group() as tg:
            tg.start_soon(refuse)
            with pytest.raises(ws.HandshakeError) as info:
                await ws.Dialer(handshake_timeout=STEP).dial(f"ws://127.0.0.1:{port}/")
    error = info.value
    assert error.status_code == 401
    assert error.headers["www-authenticate"] == "Bearer"
    assert error.response is not None
    assert error.response.status_code == 401
    assert error.response.body == b"log in first\n"


async def test_a_server_closing_before_answering_is_a_handshake_error(ws):
    async with raw_listener() as (port, accept):

        async def hang_up() -> None:
            async with await accept() as stream:
                await read_head(stream)

        async with anyio.create_task_group() as tg:
            tg.start_soon(hang_up)
            with pytest.raises(ws.HandshakeError) as info:
                await ws.Dialer(handshake_timeout=STEP).dial(f"ws://127.0.0.1:{port}/")
    assert info.value.response is None


@pytest.mark.parametrize(
    "url",
    ["ftp://127.0.0.1/", "ws://", "ws://127.0.0.1:1/#fragment", "ws://127.0.0.1:notaport/", ""],
)
async def test_a_bad_url_is_a_value_error(ws, url):
    calls: list[Any] = []

    async def net_dial(address: tuple[str, int]) -> socket.socket:
        calls.append(address)
        raise AssertionError("no connection may be made")

    with pytest.raises(ValueError):  # noqa: PT011 - the message varies by case
        await ws.Dialer(net_dial=net_dial).dial(url)
    assert calls == []


async def test_connection_refused_is_connection_refused_error(ws):
    # What wsproto_sync raises too: the socket's error, not a runtime's summary.
    with pytest.raises(ConnectionRefusedError):
        await ws.Dialer(handshake_timeout=STEP).dial(f"ws://127.0.0.1:{free_port()}/")


async def test_connection_refused_by_every_address_of_a_name(ws):
    # localhost may resolve to ::1 and 127.0.0.1: each attempt is refused.
    with pytest.raises(ConnectionRefusedError):
        await ws.Dialer(handshake_timeout=STEP, proxy=None).dial(f"ws://localhost:{free_port()}/")


async def test_ipv6_literal_url(ws):
    try:
        with socket.socket(socket.AF_INET6) as probe:
            probe.bind(("::1", 0))
    except OSError:
        pytest.skip("this machine has no IPv6 loopback")
    async with serving(ws, echo, "::1") as server:
        port = server.address[1]
        conn, _ = await ws.Dialer(handshake_timeout=STEP).dial(f"ws://[::1]:{port}/")
        assert conn.remote_addr[0] == "::1"
        await talk(ws, conn, "v6")


class RecordingNetDial:
    """A ``net_dial`` of ``ws`` that records its addresses and opens plain sockets.

    As a context manager it closes them all at the end, in case the Dialer
    under test failed to: a leaked socket would fail a later test.
    """

    def __init__(self, ws: Any) -> None:
        self.ws = ws
        self.calls: list[tuple[str, int]] = []
        self.sockets: list[socket.socket] = []

    async def __call__(self, address: tuple[str, int]) -> Any:
        self.calls.append(address)
        sock = await anyio.to_thread.run_sync(socket.create_connection, address)
        self.sockets.append(sock)
        return net_stream(self.ws, sock)  # a socket, or a trio stream on trio

    def __enter__(self) -> RecordingNetDial:
        return self

    def __exit__(self, *exc_info: object) -> None:
        for sock in self.sockets:
            sock.close()


async def test_net_dial_is_used(ws):
    with RecordingNetDial(ws) as net_dial:
        async with echo_server(ws) as server:
            port = server.address[1]
            dialer = ws.Dialer(net_dial=net_dial, handshake_timeout=STEP)
            await talk(ws, (await dialer.dial(f"ws://127.0.0.1:{port}/path"))[0], "via net_dial")
    assert net_dial.calls == [("127.0.0.1", port)]


# -- TLS ---------------------------------------------------------------------------------------


async def test_wss_sends_sni_and_checks_the_certificate_name(ws, server_ssl, client_ssl):
    async with echo_server(ws, ssl_context=server_ssl) as server:
        port = server.address[1]
        dialer = ws.Dialer(ssl_context=client_ssl, handshake_timeout=STEP)
        await talk(ws, (await dialer.dial(f"wss://localhost:{port}/"))[0], "secret")
        assert server_ssl.sni_names == ["localhost"]
        # The certificate is for localhost, not for 127.0.0.1.
        with pytest.raises(ssl.SSLCertVerificationError):
            await dialer.dial(f"wss://127.0.0.1:{port}/")


# -- cookies -----------------------------------------------------------------------------------


async def test_cookie_jar_round_trip(ws):
    jar = http.cookiejar.CookieJar()
    dialer = ws.Dialer(cookie_jar=jar, handshake_timeout=STEP)
    async with raw_listener() as (port, accept):
        requests = []

        async def serve_one(*response_headers: str) -> None:
            peer = await accept_handshake(await accept(), response_headers)
            requests.append(peer.request[1])
            await peer.aclose()

        url = f"ws://127.0.0.1:{port}/app"
        for set_cookies in (("Set-Cookie: session=abc123; Path=/", "Set-Cookie: theme=dark"), ()):
            async with anyio.create_task_group() as tg:
                tg.start_soon(serve_one, *set_cookies)
                conn, _ = await dialer.dial(url)
            await conn.close()
    assert "cookie" not in requests[0]  # the jar was empty
    assert {cookie.name: cookie.value for cookie in jar} == {"session": "abc123", "theme": "dark"}
    [cookie] = requests[1].get_all("cookie")
    assert sorted(cookie.split("; ")) == ["session=abc123", "theme=dark"]


async def test_cookies_of_a_refusal_are_stored(ws):
    jar = http.cookiejar.CookieJar()
    async with raw_listener() as (port, accept):

        async def refuse() -> None:
            async with await accept() as stream:
                await read_head(stream)
                await stream.send(
                    b"HTTP/1.1 401 Unauthorized\r\nSet-Cookie: tried=1; Path=/\r\n"
                    b"Content-Length: 0\r\nConnection: close\r\n\r\n"
                )

        async with anyio.create_task_group() as tg:
            tg.start_soon(refuse)
            with pytest.raises(ws.HandshakeError):
                await ws.Dialer(cookie_jar=jar, handshake_timeout=STEP).dial(
                    f"ws://127.0.0.1:{port}/"
                )
    assert {cookie.name: cookie.value for cookie in jar} == {"tried": "1"}


# -- proxies -----------------------------------------------------------------------------------


async def test_ws_through_a_connect_proxy(ws):
    async with echo_server(ws) as server, TunnelProxy() as proxy:
        port = server.address[1]
        dialer = ws.Dialer(proxy=proxy.url, handshake_timeout=STEP)
        # Only the proxy "resolves" this name: a direct connection could not.
        conn, _ = await dialer.dial(f"ws://ws.example.test:{port}/chat")
        assert conn.remote_addr[1] == proxy.port  # the TCP connection is the proxy's
        await talk(ws, conn, "through the tunnel")
    [(line, headers)] = proxy.requests
    assert line == f"CONNECT ws.example.test:{port} HTTP/1.1"
    assert headers["host"] == f"ws.example.test:{port}"
    assert "proxy-authorization" not in headers


async def test_proxy_credentials_and_407(ws):
    async with echo_server(ws) as server, TunnelProxy(credentials=("user", "pw")) as proxy:
        port = server.address[1]
        refused = ws.Dialer(proxy=f"http://user:wrong@127.0.0.1:{proxy.port}")
        with pytest.raises(ws.HandshakeError) as info:
            await refused.dial(f"ws://ws.example.test:{port}/")
        assert info.value.status_code == 407
        assert info.value.response.headers["proxy-authenticate"] == 'Basic realm="tests"'
        assert info.value.response.body == b"who are you?\n"
        assert "wrong" not in str(info.value)
        dialer = ws.Dialer(proxy=f"http://user:pw@127.0.0.1:{proxy.port}")
        await talk(ws, (await dialer.dial(f"ws://ws.example.test:{port}/"))[0])
    assert proxy.tunnels == 1


async def test_wss_through_a_proxy_uses_the_targets_name(ws, server_ssl, client_ssl):
    async with echo_server(ws, ssl_context=server_ssl) as server, TunnelProxy() as proxy:
        port = server.address[1]
        dialer = ws.Dialer(proxy=proxy.url, ssl_context=client_ssl, handshake_timeout=STEP)
        await talk(ws, (await dialer.dial(f"wss://ws.example.test:{port}/"))[0])
    assert server_ssl.sni_names == ["ws.example.test"]
    assert proxy.tunnels == 1


async def test_the_environment_proxy_is_used_by_default(ws, monkeypatch):
    async with echo_server(ws) as server, TunnelProxy() as proxy:
        monkeypatch.setenv("http_proxy", proxy.url)
        port = server.address[1]
        dialer = ws.Dialer(handshake_timeout=STEP)
        await talk(ws, (await dialer.dial(f"ws://ws.example.test:{port}/"))[0])
        # proxy=None connects directly, whatever the environment says.
        direct = ws.Dialer(proxy=None, handshake_timeout=STEP)
        await talk(ws, (await direct.dial(f"ws://127.0.0.1:{port}/"))[0])
    assert proxy.tunnels == 1


async def test_net_dial_connects_to_the_proxy(ws):
    with RecordingNetDial(ws) as net_dial:
        async with echo_server(ws) as server, TunnelProxy() as proxy:
            port, proxy_port = server.address[1], proxy.port
            dialer = ws.Dialer(proxy=proxy.url, net_dial=net_dial, handshake_timeout=STEP)
            await talk(ws, (await dialer.dial(f"ws://ws.example.test:{port}/"))[0])
    assert net_dial.calls == [("127.0.0.1", proxy_port)]
    assert proxy.tunnels == 1


async def test_an_unreachable_proxy_is_an_os_error(ws):
    dialer = ws.Dialer(proxy=f"http://127.0.0.1:{free_port()}", handshake_timeout=STEP)
    with pytest.raises(OSError):  # noqa: PT011 - which OSError depends on the runtime
        await dialer.dial("ws://ws.example.test/")
