"""serve() and Conn around the handshake: request and response, process_request, and
compression parameters with prepared messages, on every async adapter.

wsproto_sync's twins of these tests are in tests/sync/test_handshake_api.py.
"""

from __future__ import annotations

import logging
import socket
from typing import Any

import anyio
import pytest
from async_helpers import STEP, echo, net_stream, read_to_eof, serving, url_of

pytestmark = pytest.mark.anyio

TICK = '{"symbol": "ACME", "price": 12.5}' * 50


async def raw_request(server: Any, data: bytes) -> bytes:
    """Send ``data`` to ``server`` and read until it closes the connection."""
    host, port = server.address[:2]
    async with await anyio.connect_tcp(host, port) as stream:
        await stream.send(data)
        return await read_to_eof(stream)


# -- conn.request and conn.response ------------------------------------------------------------


async def test_a_handler_sees_the_request_and_the_response(ws):
    seen: list[Any] = []

    async def handler(conn: Any) -> None:
        seen.append((conn.request, conn.response))
        await conn.write_message(ws.MessageType.TEXT, conn.request.target)
        with pytest.raises(ws.CloseError):
            await conn.read_message()

    async with serving(ws, handler, upgrader=ws.Upgrader(subprotocols=["chat"])) as server:
        dialer = ws.Dialer(subprotocols=["chat"], handshake_timeout=STEP)
        conn, response = await dialer.dial(url_of(server, path="/room?id=7"), [("X-Token", "t")])
        async with conn:
            assert await conn.read_message() == (ws.MessageType.TEXT, "/room?id=7")
            assert conn.response is response  # what dial() returned
            assert isinstance(response, ws.HandshakeResponse)
            with pytest.raises(ws.LocalProtocolError, match="only a server connection"):
                conn.request  # noqa: B018 - the property raises
            await conn.close_gracefully(timeout=STEP)
    [(request, sent)] = seen
    assert isinstance(request, ws.HandshakeRequest)
    assert request.headers["x-token"] == "t"
    assert request.subprotocols == ("chat",)
    assert sent.subprotocol == "chat" == response.subprotocol
    assert sent.status_code == 101


# -- process_request ---------------------------------------------------------------------------


def bearer(ws: Any, kind: str) -> Any:
    """A process_request hook, plain or async, that wants ``Authorization: Bearer good``."""

    def check(request: Any) -> Any:
        if request.target == "/public":
            return None
        if request.headers.get("authorization") != "Bearer good":
            return ws.Rejection(401, [("WWW-Authenticate", 'Bearer realm="chat"')])
        return ws.Acceptance([("Set-Cookie", "session=s1; HttpOnly")])

    async def async_check(request: Any) -> Any:
        await anyio.sleep(0.01)
        return check(request)

    return check if kind == "sync" else async_check


@pytest.mark.parametrize("kind", ["sync", "async"])
async def test_process_request_refuses_with_its_status_and_headers(ws, kind):
    async with serving(ws, echo, process_request=bearer(ws, kind)) as server:
        with pytest.raises(ws.HandshakeError) as info:
            await ws.Dialer(handshake_timeout=STEP).dial(url_of(server))
        refusal = info.value.response
        assert refusal.status_code == 401
        assert refusal.headers["www-authenticate"] == 'Bearer realm="chat"'
        assert refusal.body == b"401 Unauthorized: the server refused the request\n"
        conn, _ = await ws.Dialer(handshake_timeout=STEP).dial(url_of(server, path="/public"))
        async with conn:  # the server carries on
            await conn.write_message(ws.MessageType.TEXT, "open to all")
            assert await conn.read_message() == (ws.MessageType.TEXT, "open to all")


@pytest.mark.parametrize("kind", ["sync", "async"])
async def test_process_request_accepts_with_more_response_headers(ws, kind):
    async with serving(ws, echo, process_request=bearer(ws, kind)) as server:
        dialer = ws.Dialer(handshake_timeout=STEP)
        conn, response = await dialer.dial(url_of(server), [("Authorization", "Bearer good")])
        async with conn:
            assert response.headers["set-cookie"] == "session=s1; HttpOnly"
            await conn.write_message(ws.MessageType.BINARY, b"in")
            assert await conn.read_message() == (ws.MessageType.BINARY, b"in")


async def test_process_request_runs_after_the_origin_check(ws):
    calls: list[str] = []

    def record(request: Any) -> None:
        calls.append(request.target)

    async with serving(ws, echo, process_request=record) as server:
        with pytest.raises(ws.HandshakeError) as info:
            await ws.Dialer(handshake_timeout=STEP).dial(
                url_of(server), [("Origin", "https://evil.example")]
            )
        assert info.value.status_code == 403
    assert calls == []


def raises(request: Any) -> Any:
    raise ZeroDivisionError("hook bug")


async def async_raises(request: Any) -> Any:
    await anyio.sleep(0)
    raise ZeroDivisionError("hook bug")


@pytest.mark.parametrize(
    "broken",
    [
        pytest.param(raises, id="raises"),
        pytest.param(async_raises, id="async-raises"),
        pytest.param(lambda request: "yes", id="bad-type"),
    ],
)
async def test_a_failing_process_request_gives_500_and_is_logged(ws, broken, caplog):
    with caplog.at_level(logging.ERROR, logger=f"{ws.__name__}.server"):
        async with serving(ws, echo, process_request=broken) as server:
            for _ in range(2):  # the server carries on after a failure
                with pytest.raises(ws.HandshakeError) as info:
                    await ws.Dialer(handshake_timeout=STEP).dial(url_of(server))
                assert info.value.status_code == 500
                assert info.value.response.body == (
                    b"500 Internal Server Error: the server could not answer the request\n"
                )
    failures = [r for r in caplog.records if "request hook failed" in r.getMessage()]
    assert len(failures) == 2
    assert all(record.exc_info for record in failures)


async def test_a_bad_rejection_gives_500(ws):
    async with serving(ws, echo, process_request=lambda request: ws.Rejection(101)) as server:
        with pytest.raises(ws.HandshakeError) as info:
            await ws.Dialer(handshake_timeout=STEP).dial(url_of(server))
        assert info.value.status_code == 500


async def test_a_failing_http_handler_gives_500(ws, caplog):
    def broken(request: Any) -> Any:
        raise RuntimeError("http handler bug")

    with caplog.at_level(logging.ERROR, logger=f"{ws.__name__}.server"):
        async with serving(ws, echo, http_handler=broken) as server:
            response = await raw_request(server, b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n")
    assert response.startswith(b"HTTP/1.1 500 Internal Server Error\r\n")
    assert any("request hook failed" in r.getMessage() for r in caplog.records)


async def test_upgrade_takes_process_request_too(ws):
    """Upgrading a connection of your own: the hook refuses, upgrade() raises."""
    server_end, client_end = socket.socketpair()
    refused: list[BaseException] = []

    async def upgrade() -> None:
        try:
            await ws.Upgrader(handshake_timeout=STEP).upgrade(
                net_stream(ws, server_end), process_request=lambda request: ws.Rejection(429)
            )
        except ws.HandshakeError as exc:
            refused.append(exc)

    async def net_dial(address: Any) -> Any:
        return net_stream(ws, client_end)

    try:
        async with anyio.create_task_group() as tg:
            tg.start_soon(upgrade)
            with pytest.raises(ws.HandshakeError) as info:
                await ws.Dialer(net_dial=net_dial, handshake_timeout=STEP).dial("ws://x/")
        assert info.value.status_code == 429
        assert [exc.status_code for exc in refused] == [429]
    finally:
        server_end.close()
        client_end.close()


# -- compression parameters and prepared messages ----------------------------------------------


async def broadcast_once(ws: Any, upgrader: Any, dialers: list[Any], message: Any) -> list[Any]:
    """Serve ``dialers``' connections and send ``message`` to each once; return the clients."""
    server_conns: list[Any] = []
    arrived = anyio.Event()

    async def handler(conn: Any) -> None:
        server_conns.append(conn)
        if len(server_conns) == len(dialers):
            arrived.set()
        async for _ in conn:  # reading answers the Close
            pass

    async with serving(ws, handler, upgrader=upgrader) as server:
        clients = [(await dialer.dial(url_of(server)))[0] for dialer in dialers]
        with anyio.fail_after(STEP):
            await arrived.wait()
        for conn in server_conns:  # their handlers only read: one writer each
            await conn.write_prepared_message(message)
        for client in clients:
            async with client:
                assert await client.read_message() == (
                    message.message_type,
                    message.data.decode(),
                )
                await client.close_gracefully(timeout=STEP)
    return clients


async def test_without_context_takeover_a_prepared_message_is_compressed_once(ws):
    upgrader = ws.Upgrader(
        enable_compression=ws.ServerPerMessageDeflate(server_no_context_takeover=True)
    )
    deflate = ws.Dialer(enable_compression=True, handshake_timeout=STEP)
    plain = ws.Dialer(handshake_timeout=STEP)
    message = ws.PreparedMessage(ws.MessageType.TEXT, TICK)
    clients = await broadcast_once(ws, upgrader, [deflate, deflate, deflate, plain], message)
    assert message.encodings == 2  # one compressed for the three, one plain for the last
    assert [len(client.response.extensions) for client in clients] == [1, 1, 1, 0]
    params = dict(clients[0].response.extensions[0].params)
    assert "server_no_context_takeover" in params  # RFC 7692 §7.1.1.1


async def test_with_context_takeover_each_connection_compresses_the_message_itself(ws):
    deflate = ws.Dialer(enable_compression=True, handshake_timeout=STEP)
    message = ws.PreparedMessage(ws.MessageType.TEXT, TICK)
    upgrader = ws.Upgrader(enable_compression=True)
    await broadcast_once(ws, upgrader, [deflate, deflate], message)
    assert message.encodings == 0  # no shared encoding: each compressor saw it itself


async def test_the_dialer_asks_for_parameters_and_the_server_grants_them(ws):
    """RFC 7692 §7: the client's offer is answered, and both sides use the answer."""
    offer = ws.ClientPerMessageDeflate(server_no_context_takeover=True, server_max_window_bits=10)
    upgrader = ws.Upgrader(enable_compression=ws.ServerPerMessageDeflate(client_max_window_bits=12))
    seen: list[Any] = []

    async def handler(conn: Any) -> None:
        seen.append(conn.protocol.extensions[0])
        await echo(conn)

    async with serving(ws, handler, upgrader=upgrader) as server:
        dialer = ws.Dialer(enable_compression=offer, handshake_timeout=STEP)
        conn, response = await dialer.dial(url_of(server))
        async with conn:
            [answer] = response.extensions
            assert dict(answer.params) == {
                "server_no_context_takeover": None,
                "server_max_window_bits": "10",
                "client_max_window_bits": "12",
            }
            ours = conn.protocol.extensions[0]
            assert (ours.local_max_window_bits, ours.remote_max_window_bits) == (12, 10)
            assert ours.remote_no_context_takeover
            await conn.write_message(ws.MessageType.TEXT, TICK)
            assert await conn.read_message() == (ws.MessageType.TEXT, TICK)
    [theirs] = seen
    assert theirs.local_no_context_takeover
    assert (theirs.local_max_window_bits, theirs.remote_max_window_bits) == (10, 12)


async def test_the_other_sides_factory_is_refused(ws):
    with pytest.raises(TypeError, match="enable_compression"):
        ws.Upgrader(enable_compression=ws.ClientPerMessageDeflate())
    with pytest.raises(TypeError, match="enable_compression"):
        ws.Dialer(enable_compression=ws.ServerPerMessageDeflate())
