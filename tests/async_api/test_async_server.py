"""serve(): echo, graceful shutdown, plain HTTP, refused handshakes, Unix sockets and TLS."""

from __future__ import annotations

import errno
import functools
import inspect
import json
import logging
import socket
import ssl
import sys
from contextlib import suppress
from typing import Any

import anyio
import pytest
from anyio.abc import SocketAttribute
from async_helpers import (
    STEP,
    RawPeer,
    echo,
    echo_server,
    handshake_request,
    read_head,
    read_to_eof,
    serving,
    url_of,
)

from wsproto_core import Opcode

pytestmark = pytest.mark.anyio


async def raw_request(server: Any, data: bytes) -> bytes:
    """Send ``data`` to ``server`` and read until it closes the connection."""
    host, port = server.address[:2]
    async with await anyio.connect_tcp(host, port) as stream:
        await stream.send(data)
        return await read_to_eof(stream)


async def read_until_closed(conn: Any, codes: list[int], times: list[float] | None = None) -> None:
    """Read (so the Close gets answered) until the connection ends; record the code and time."""
    try:
        while True:
            await conn.read_message()
    except Exception as exc:
        codes.append(getattr(exc, "code", -1))
        if times is not None:
            times.append(anyio.current_time())


# -- serving and shutting down -----------------------------------------------------------------


async def test_echo_and_graceful_shutdown(ws):
    codes: list[int] = []
    async with serving(ws, echo, shutdown_timeout=2.0) as server:
        host, port = server.address[:2]
        clients = []
        try:
            async with anyio.create_task_group() as tg:
                for index in range(3):
                    client, _ = await ws.Dialer(handshake_timeout=STEP).dial(url_of(server))
                    clients.append(client)
                    await client.write_message(ws.MessageType.TEXT, f"hello {index}")
                    assert await client.read_message() == (ws.MessageType.TEXT, f"hello {index}")
                    tg.start_soon(read_until_closed, client, codes)
                started = anyio.current_time()
                await server.shutdown()
                # Each open connection got a Close with 1001, and the handlers ended
                # as soon as the clients answered it: well before the 2 s timeout.
                assert anyio.current_time() - started < 1.0
        finally:
            for client in clients:
                await client.close()
    assert codes == [ws.CloseCode.GOING_AWAY] * 3
    with pytest.raises(OSError, match="connection attempts failed"):
        await anyio.connect_tcp(host, port)  # the listening socket is closed


async def test_a_handler_that_ignores_the_close_is_cancelled_after_the_timeout(ws):
    cancelled = anyio.Event()

    async def stubborn(conn: Any) -> None:
        try:
            await anyio.sleep(30)  # never reads, so never sees the Close
        except anyio.get_cancelled_exc_class():
            cancelled.set()
            raise

    async with serving(ws, stubborn, shutdown_timeout=0.3) as server:
        client, _ = await ws.Dialer(handshake_timeout=STEP).dial(url_of(server))
        async with client:
            started = anyio.current_time()
            await server.shutdown()
            assert 0.25 < anyio.current_time() - started < 2
            assert cancelled.is_set()
            with pytest.raises(ws.CloseError) as info:
                await client.read_message()
            assert info.value.code == ws.CloseCode.GOING_AWAY  # the Close went out before the cut


async def test_a_stuck_connection_does_not_delay_the_close_of_the_others(ws):
    """One client never reads, so its handler waits to write: the others still get 1001 at once."""

    async def handler(conn: Any) -> None:
        if conn.protocol.handshake_request.target == "/stuck":
            while True:
                await conn.write_message(ws.MessageType.BINARY, bytes(1024 * 1024))
        await echo(conn)

    codes: list[int] = []
    times: list[float] = []
    async with serving(ws, handler, shutdown_timeout=1.0) as server:
        host, port = server.address[:2]
        async with await anyio.connect_tcp(host, port) as stuck:
            await stuck.send(handshake_request(f"{host}:{port}", path="/stuck"))
            await anyio.sleep(0.3)  # the stuck handler now waits for its peer to read
            dialer = ws.Dialer(handshake_timeout=STEP)
            clients = [(await dialer.dial(url_of(server)))[0] for _ in range(4)]
            try:
                async with anyio.create_task_group() as tg:
                    for client in clients:
                        tg.start_soon(read_until_closed, client, codes, times)
                    await anyio.sleep(0.05)
                    started = anyio.current_time()
                    await server.shutdown()
                    elapsed = anyio.current_time() - started
            finally:
                for client in clients:
                    await client.close()
    assert codes == [ws.CloseCode.GOING_AWAY] * 4
    assert max(times) - started < 0.5  # at once, not after the stuck one's timeout
    assert 0.9 < elapsed < 2.5  # the stuck handler was given the timeout, then cancelled


async def test_a_failing_handler_is_logged_and_the_server_carries_on(ws, caplog):
    async def broken(conn: Any) -> None:
        await conn.read_message()
        raise RuntimeError("handler bug")

    with caplog.at_level(logging.ERROR, logger=f"{ws.__name__}.server"):
        async with serving(ws, broken) as server:
            for _ in range(2):
                client, _ = await ws.Dialer(handshake_timeout=STEP).dial(url_of(server))
                async with client:
                    await client.write_message(ws.MessageType.TEXT, "boom")
                    with pytest.raises(ws.CloseError) as info:
                        await client.read_message()
                    # The server dropped the connection, with no closing handshake.
                    assert info.value.code == ws.CloseCode.ABNORMAL_CLOSURE
    failures = [r for r in caplog.records if "handler failed" in r.getMessage()]
    assert len(failures) == 2
    assert all(r.exc_info and isinstance(r.exc_info[1], RuntimeError) for r in failures)


async def test_a_port_in_use_is_the_os_error(ws):
    """Failing to listen raises the socket's OSError, not a group (sync's serve() too)."""
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        if "task_status" in inspect.signature(ws.serve).parameters:
            # trio's serve() is for nursery.start, which raises what serve() raised.
            async with anyio.create_task_group() as tg:
                with pytest.raises(OSError) as info:  # noqa: PT011 - the errno is checked below
                    await tg.start(functools.partial(ws.serve, echo, "127.0.0.1", port))
        else:
            with pytest.raises(OSError) as info:  # noqa: PT011 - the errno is checked below
                await ws.serve(echo, "127.0.0.1", port)
    assert info.value.errno == errno.EADDRINUSE


async def test_handshake_options_come_from_the_upgrader(ws):
    upgrader = ws.Upgrader(subprotocols=["v2", "v1"])
    async with echo_server(ws, upgrader=upgrader) as server:
        conn, response = await ws.Dialer(subprotocols=["v1", "v2"]).dial(url_of(server))
        async with conn:
            assert conn.subprotocol == response.subprotocol == "v2"


# -- plain HTTP and refused handshakes ---------------------------------------------------------


async def test_plain_http_gets_426_and_the_server_carries_on(ws):
    async with echo_server(ws) as server:
        response = await raw_request(server, b"GET / HTTP/1.1\r\nHost: example\r\n\r\n")
        assert response.startswith(b"HTTP/1.1 426 Upgrade Required\r\n")
        assert b"upgrade: websocket" in response.lower()
        conn, _ = await ws.Dialer(handshake_timeout=STEP).dial(url_of(server))
        async with conn:
            await conn.write_message(ws.MessageType.BINARY, b"still here")
            assert await conn.read_message() == (ws.MessageType.BINARY, b"still here")


@pytest.mark.parametrize("kind", ["sync", "async"])
async def test_http_handler_answers_plain_http(ws, kind):
    seen: list[tuple[str, str]] = []

    def health(request: Any) -> Any:
        seen.append((request.method, request.target))
        return 200, [("Content-Type", "text/plain")], b"ok\n"

    async def async_health(request: Any) -> Any:
        await anyio.sleep(0.01)
        return health(request)

    handler = health if kind == "sync" else async_health
    async with echo_server(ws, http_handler=handler) as server:
        response = await raw_request(server, b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n")
        head, _, body = response.partition(b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 200 ")
        assert b"content-type: text/plain" in head.lower()
        assert body == b"ok\n"
        assert seen == [("GET", "/health")]
        conn, _ = await ws.Dialer(handshake_timeout=STEP).dial(url_of(server))  # still WebSocket
        async with conn:
            await conn.write_message(ws.MessageType.TEXT, "ws too")
            assert await conn.read_message() == (ws.MessageType.TEXT, "ws too")
        assert seen == [("GET", "/health")]  # handshakes don't go to the http_handler


async def test_foreign_origin_is_refused_with_403(ws):
    async with echo_server(ws) as server:
        with pytest.raises(ws.HandshakeError) as info:
            await ws.Dialer(handshake_timeout=STEP).dial(
                url_of(server), [("Origin", "http://evil.example")]
            )
        assert info.value.status_code == 403
        assert info.value.response is not None
        assert info.value.response.status_code == 403
        assert b"origin" in info.value.response.body.lower()
        host, port = server.address[:2]
        conn, _ = await ws.Dialer(handshake_timeout=STEP).dial(
            url_of(server), [("Origin", f"http://{host}:{port}")]
        )
        await conn.close()  # the same origin is welcome
        conn, _ = await ws.Dialer(handshake_timeout=STEP).dial(url_of(server))
        await conn.close()  # and so is a client without an Origin (not a browser)


async def test_check_origin_none_accepts_any_origin(ws):
    async with echo_server(ws, upgrader=ws.Upgrader(check_origin=None)) as server:
        conn, _ = await ws.Dialer(handshake_timeout=STEP).dial(
            url_of(server), [("Origin", "http://evil.example")]
        )
        await conn.close()


@pytest.mark.parametrize(
    ("request_bytes", "status"),
    [
        pytest.param(b"this is not HTTP at all\r\n\r\n", b"400", id="garbage"),
        pytest.param(
            handshake_request("x").replace(b"Version: 13", b"Version: 8"), b"426", id="version-8"
        ),
        pytest.param(
            handshake_request("x").replace(b"Sec-WebSocket-Key", b"X-Key"), b"400", id="no-key"
        ),
    ],
)
async def test_a_bad_handshake_gets_an_http_error(ws, request_bytes, status):
    async with echo_server(ws) as server:
        response = await raw_request(server, request_bytes)
        assert response.startswith(b"HTTP/1.1 " + status + b" ")


async def test_the_error_hook_renders_refusals(ws):
    calls: list[tuple[int, str]] = []

    def render(status: int, reason: str, request: Any) -> Any:
        calls.append((status, reason))
        body = json.dumps({"status": status, "error": reason}).encode()
        return [("Content-Type", "application/json")], body

    async with echo_server(ws, upgrader=ws.Upgrader(error=render)) as server:
        with pytest.raises(ws.HandshakeError) as info:
            await ws.Dialer(handshake_timeout=STEP).dial(
                url_of(server), [("Origin", "https://evil.example")]
            )
        response = info.value.response
        assert response.status_code == 403
        assert response.headers["content-type"] == "application/json"
        assert json.loads(response.body) == {"status": 403, "error": "origin not allowed"}
        plain = await raw_request(server, b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        head, _, body = plain.partition(b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 426 ")
        assert json.loads(body)["status"] == 426
    assert [status for status, _ in calls] == [403, 426]


async def test_the_hooks_and_the_log_see_the_clients_address(ws, caplog):
    """http_handler, process_request and the error hook all get ``request.remote_addr``."""
    seen: list[tuple[str, Any]] = []
    handled: list[tuple[Any, Any]] = []
    arrived = anyio.Event()

    async def health(request: Any) -> Any:
        seen.append(("http_handler", request.remote_addr))
        return 404, [], None  # rendered by the error hook

    def render(status: int, reason: str, request: Any) -> Any:
        seen.append((f"error {status}", None if request is None else request.remote_addr))
        return [], b"refused\n"

    async def process_request(request: Any) -> None:
        seen.append(("process_request", request.remote_addr))

    async def handler(conn: Any) -> None:
        handled.append((conn.request.remote_addr, conn.remote_addr))
        arrived.set()

    options = {"http_handler": health, "process_request": process_request}
    caplog.set_level(logging.INFO, logger=f"{ws.__name__}.server")
    async with serving(ws, handler, upgrader=ws.Upgrader(error=render), **options) as server:
        host, port = server.address[:2]
        async with await anyio.connect_tcp(host, port) as stream:
            plain = stream.extra(SocketAttribute.local_address)
            await stream.send(b"GET /nope HTTP/1.1\r\nHost: x\r\n\r\n")
            await read_to_eof(stream)
        with pytest.raises(ws.HandshakeError):
            await ws.Dialer(handshake_timeout=STEP).dial(
                url_of(server), [("Origin", "http://evil.example")]
            )
        conn, _ = await ws.Dialer(handshake_timeout=STEP).dial(url_of(server))
        async with conn:
            with anyio.fail_after(STEP):
                await arrived.wait()
    assert handled == [(conn.local_addr, conn.local_addr)]
    assert seen[:2] == [("http_handler", plain), ("error 404", plain)]
    refused, (hook, address) = seen[2], seen[3]
    assert refused[0] == "error 403"
    assert refused[1][0] == "127.0.0.1"  # the refused client's own address
    assert (hook, address) == ("process_request", conn.local_addr)
    refusals = [r.getMessage() for r in caplog.records if "refused a handshake" in r.getMessage()]
    assert refusals[0].startswith(f"refused a handshake from {plain!r}: ")
    assert refusals[1].startswith(f"refused a handshake from {refused[1]!r}: ")


async def test_a_silent_client_is_disconnected_after_the_handshake_timeout(ws, caplog):
    upgrader = ws.Upgrader(handshake_timeout=0.2)
    with caplog.at_level(logging.INFO, logger=f"{ws.__name__}.server"):
        async with echo_server(ws, upgrader=upgrader) as server:
            host, port = server.address[:2]
            async with await anyio.connect_tcp(host, port) as silent:
                start = anyio.current_time()
                assert await read_to_eof(silent) == b""  # closed without an answer
                assert 0.15 <= anyio.current_time() - start < 2
            conn, _ = await ws.Dialer(handshake_timeout=STEP).dial(url_of(server))
            async with conn:
                await conn.write_message(ws.MessageType.TEXT, "after")
                assert await conn.read_message() == (ws.MessageType.TEXT, "after")
    assert any("handshake failed" in record.getMessage() for record in caplog.records)


async def test_a_handshake_in_pieces_within_the_timeout_succeeds(ws):
    async with echo_server(ws, upgrader=ws.Upgrader(handshake_timeout=STEP)) as server:
        host, port = server.address[:2]
        request = handshake_request(f"{host}:{port}")
        async with await anyio.connect_tcp(host, port) as stream:
            for i in range(0, len(request), 7):
                await stream.send(request[i : i + 7])
                await anyio.sleep(0.001)
            head, _ = await read_head(stream)
            assert head.startswith(b"HTTP/1.1 101 ")


async def test_a_trickled_handshake_times_out(ws):
    async with echo_server(ws, upgrader=ws.Upgrader(handshake_timeout=0.3)) as server:
        host, port = server.address[:2]
        request = handshake_request(f"{host}:{port}")
        async with await anyio.connect_tcp(host, port) as stream:

            async def trickle() -> None:
                with suppress(anyio.BrokenResourceError, anyio.ClosedResourceError):
                    for byte in request:  # 0.05 s a byte: far beyond the timeout
                        await stream.send(bytes([byte]))
                        await anyio.sleep(0.05)

            async with anyio.create_task_group() as tg:
                tg.start_soon(trickle)
                start = anyio.current_time()
                assert await read_to_eof(stream) == b""  # closed without an answer
                assert 0.25 <= anyio.current_time() - start < 2
                tg.cancel_scope.cancel()


# -- other transports --------------------------------------------------------------------------


@pytest.mark.skipif(sys.platform == "win32", reason="no Unix sockets")
async def test_unix_socket(ws, tmp_path):
    path = str(tmp_path / "ws.sock")
    async with echo_server(ws, unix_path=path) as server:
        assert server.address == path
        async with await anyio.connect_unix(path) as stream:
            await stream.send(handshake_request("localhost"))
            head, rest = await read_head(stream)
            assert head.startswith(b"HTTP/1.1 101 ")
            peer = RawPeer(stream, client=True, buffer=rest)
            await peer.send(Opcode.TEXT, b"through a Unix socket")
            frame = await peer.frame()
            assert (frame.opcode, frame.payload) == (Opcode.TEXT, b"through a Unix socket")
        async with await anyio.connect_unix(path) as stream:  # and plain HTTP gets 426
            await stream.send(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
            assert (await read_to_eof(stream)).startswith(b"HTTP/1.1 426 ")


async def test_tls(ws, server_ssl, client_ssl):
    async with echo_server(ws, ssl_context=server_ssl) as server:
        port = server.address[1]
        dialer = ws.Dialer(ssl_context=client_ssl, handshake_timeout=STEP)
        conn, _ = await dialer.dial(f"wss://localhost:{port}/")
        async with conn:
            await conn.write_message(ws.MessageType.TEXT, "secret")
            assert await conn.read_message() == (ws.MessageType.TEXT, "secret")
            await conn.write_message(ws.MessageType.BINARY, b"z" * 200_000)
            assert await conn.read_message() == (ws.MessageType.BINARY, b"z" * 200_000)
            await conn.close_gracefully(timeout=STEP)
    assert server_ssl.sni_names == ["localhost"]


async def test_a_silent_tls_client_is_disconnected_after_the_handshake_timeout(ws, server_ssl):
    """The handshake timeout covers the TLS handshake too: no ClientHello, no connection."""
    upgrader = ws.Upgrader(handshake_timeout=0.2)
    async with echo_server(ws, upgrader=upgrader, ssl_context=server_ssl) as server:
        host, port = server.address[:2]
        async with await anyio.connect_tcp(host, port) as silent:
            start = anyio.current_time()
            assert await read_to_eof(silent) == b""
            assert 0.15 <= anyio.current_time() - start < 2


async def test_tls_with_an_untrusted_certificate_fails(ws, server_ssl):
    async with echo_server(ws, ssl_context=server_ssl) as server:
        port = server.address[1]
        with pytest.raises(ssl.SSLCertVerificationError):
            await ws.Dialer(handshake_timeout=STEP).dial(f"wss://localhost:{port}/")
