"""What only wsproto_asyncio has: upgrades of asyncio sockets and streams, and its transport.

These tests run on asyncio alone (this module's ``anyio_backend``), and use
asyncio's own APIs where the shared suite uses anyio.
"""

from __future__ import annotations

import asyncio
import socket
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Any

import anyio
import pytest
from async_helpers import MASK, STEP, handshake_request, raw_server, read_to_eof, ws_pair

import wsproto_asyncio as ws
from wsproto_core import Opcode, serialize_frame

pytestmark = pytest.mark.anyio


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@asynccontextmanager
async def accepting(
    handle: Callable[[socket.socket], Awaitable[Any]],
) -> AsyncIterator[tuple[int, list[Any]]]:
    """Accept connections on 127.0.0.1 and pass each socket to ``handle`` in a task.

    Yields the port and the list of what the handlers returned or raised.
    """
    loop = asyncio.get_running_loop()
    results: list[Any] = []
    tasks: list[asyncio.Task[None]] = []
    with socket.create_server(("127.0.0.1", 0)) as listener:
        listener.setblocking(False)

        async def run(sock: socket.socket) -> None:
            try:
                results.append(await handle(sock))
            except Exception as exc:
                results.append(exc)

        async def accept_loop() -> None:
            while True:
                sock, _ = await loop.sock_accept(listener)
                tasks.append(loop.create_task(run(sock)))

        acceptor = loop.create_task(accept_loop())
        try:
            yield listener.getsockname()[1], results
            if tasks:
                await asyncio.wait(tasks, timeout=STEP)
        finally:
            acceptor.cancel()
            for task in tasks:
                task.cancel()
            await asyncio.gather(acceptor, *tasks, return_exceptions=True)


async def echo_then_report(conn: ws.Conn) -> Any:
    async with conn:
        try:
            while True:
                await conn.write_message(*await conn.read_message())
        except ws.CloseError as exc:
            return exc.code


# -- Upgrader.upgrade --------------------------------------------------------------------------


async def test_upgrade_an_accepted_socket(anyio_backend):
    upgrader = ws.Upgrader(handshake_timeout=STEP)

    async def handle(sock: socket.socket) -> Any:
        conn = await upgrader.upgrade(sock, [("Set-Cookie", "session=1")])
        assert isinstance(conn.net_conn(), asyncio.Transport)
        return await echo_then_report(conn)

    async with accepting(handle) as (port, results):
        conn, response = await ws.Dialer().dial(f"ws://127.0.0.1:{port}/")
        assert response.headers["set-cookie"] == "session=1"
        async with conn:
            await conn.write_message(ws.MessageType.TEXT, "accepted socket")
            assert await conn.read_message() == (ws.MessageType.TEXT, "accepted socket")
            await conn.close_gracefully(ws.CloseCode.GOING_AWAY, timeout=STEP)
    assert results == [ws.CloseCode.GOING_AWAY]


async def test_upgrade_an_accepted_socket_with_tls(anyio_backend, server_ssl, client_ssl):
    async def handle(sock: socket.socket) -> Any:
        return await echo_then_report(await ws.Upgrader().upgrade(sock, ssl_context=server_ssl))

    async with accepting(handle) as (port, results):
        conn, _ = await ws.Dialer(ssl_context=client_ssl).dial(f"wss://localhost:{port}/")
        async with conn:
            assert conn.net_conn().get_extra_info("ssl_object") is not None
            await conn.write_message(ws.MessageType.BINARY, b"tls" * 10_000)
            assert await conn.read_message() == (ws.MessageType.BINARY, b"tls" * 10_000)
            await conn.close_gracefully(timeout=STEP)
    assert results == [ws.CloseCode.NORMAL_CLOSURE]
    assert server_ssl.sni_names == ["localhost"]


async def test_upgrade_refuses_plain_http_with_426_and_closes(anyio_backend):
    async def handle(sock: socket.socket) -> Any:
        return await ws.Upgrader().upgrade(sock)

    async with (
        accepting(handle) as (port, results),
        await anyio.connect_tcp("127.0.0.1", port) as stream,
    ):
        await stream.send(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        response = await read_to_eof(stream)
    assert response.startswith(b"HTTP/1.1 426 ")
    [error] = results
    assert isinstance(error, ws.HandshakeError)
    assert error.status_code == 426


@pytest.mark.parametrize("tls", [False, True], ids=["tcp", "tls"])
async def test_upgrade_times_out_a_silent_client(anyio_backend, tls, request):
    closed: list[socket.socket] = []
    context = request.getfixturevalue("server_ssl") if tls else None

    async def handle(sock: socket.socket) -> Any:
        closed.append(sock)
        return await ws.Upgrader(handshake_timeout=0.2).upgrade(sock, ssl_context=context)

    async with (
        accepting(handle) as (port, results),
        await anyio.connect_tcp("127.0.0.1", port) as stream,
    ):
        start = anyio.current_time()
        assert await read_to_eof(stream) == b""
        assert 0.15 <= anyio.current_time() - start < 2
    [error] = results
    assert isinstance(error, TimeoutError)
    assert closed[0].fileno() == -1


async def test_upgrade_from_start_server_streams_keeps_early_bytes(anyio_backend):
    """A frame that came with the request, already in the StreamReader, is the first message."""
    results: list[Any] = []

    async def on_connect(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await asyncio.sleep(0.1)  # the request and the frame are now in the reader's buffer
        conn = await ws.Upgrader().upgrade((reader, writer), [("X-Upgraded-By", "streams")])
        async with conn:
            results.append(await conn.read_message())
            await conn.write_message(ws.MessageType.TEXT, "hello from streams")
            try:
                await conn.read_message()
            except ws.CloseError as exc:
                results.append(exc.code)

    server = await asyncio.start_server(on_connect, "127.0.0.1", 0)
    async with server:
        port = server.sockets[0].getsockname()[1]
        async with await anyio.connect_tcp("127.0.0.1", port) as stream:
            frame = serialize_frame(Opcode.TEXT, b"early", mask_key=MASK)
            await stream.send(handshake_request(f"127.0.0.1:{port}") + frame)
            response = b""
            while b"hello from streams" not in response:
                response += await stream.receive()
            assert response.startswith(b"HTTP/1.1 101 ")
            assert b"x-upgraded-by: streams" in response.lower()
            await stream.send(serialize_frame(Opcode.CLOSE, b"\x03\xe8", mask_key=MASK))
            await read_to_eof(stream)
        with anyio.fail_after(STEP):
            while len(results) < 2:
                await asyncio.sleep(0.01)
    assert results == [(ws.MessageType.TEXT, "early"), ws.CloseCode.NORMAL_CLOSURE]


async def test_upgrade_from_start_server_then_dial(anyio_backend):
    codes: list[Any] = []

    async def on_connect(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        codes.append(await echo_then_report(await ws.Upgrader().upgrade((reader, writer))))

    server = await asyncio.start_server(on_connect, "127.0.0.1", 0)
    async with server:
        port = server.sockets[0].getsockname()[1]
        conn, _ = await ws.Dialer().dial(f"ws://127.0.0.1:{port}/")
        async with conn:
            big = b"\x01" * 500_000
            await conn.write_message(ws.MessageType.BINARY, big)
            assert await conn.read_message() == (ws.MessageType.BINARY, big)
            await conn.close_gracefully(timeout=STEP)
        with anyio.fail_after(STEP):
            while not codes:
                await asyncio.sleep(0.01)
    assert codes == [ws.CloseCode.NORMAL_CLOSURE]


# -- the bridge works whether or not anyone reads ----------------------------------------------


async def test_pings_are_answered_and_keepalive_measured_while_nobody_reads(anyio_backend):
    upgrader = ws.Upgrader(keepalive_interval=0.1)
    async with ws_pair(ws, upgrader=upgrader) as (_, server):
        with anyio.fail_after(2):
            while server.latency is None:  # neither side reads
                await asyncio.sleep(0.02)
        assert 0 <= server.latency < 0.1


async def test_reading_pauses_while_unread_messages_pile_up(anyio_backend):
    # The bridge parses no further than the first unread message; what
    # follows waits unparsed, and past 256 KiB the transport stops reading.
    async with raw_server(ws, ws.Dialer()) as (client, peer):
        transport = client.net_conn()
        payload = bytes(10_000)
        for _ in range(40):
            await peer.send(Opcode.BINARY, payload)
        with anyio.fail_after(2):
            while transport.is_reading():
                await asyncio.sleep(0.01)
        assert client.protocol.buffered_input > 256 * 1024
        assert [await client.read_message() for _ in range(40)] == [
            (ws.MessageType.BINARY, payload)
        ] * 40
        assert transport.is_reading()  # resumed once the reader caught up


async def test_reading_pauses_while_the_queue_is_full(anyio_backend):
    # Control frames are handled ahead of the reader, up to max_queue events.
    dialer = ws.Dialer(max_queue=4)
    async with raw_server(ws, dialer) as (client, peer):
        transport = client.net_conn()
        pings: list[bytes] = []
        client.set_pong_handler(pings.append)
        for i in range(6):
            await peer.send(Opcode.PONG, b"%d" % i)
        with anyio.fail_after(2):
            while transport.is_reading():
                await asyncio.sleep(0.01)
        await peer.send(Opcode.TEXT, b"after")
        assert await client.read_message() == (ws.MessageType.TEXT, "after")
        assert pings == [b"%d" % i for i in range(6)]
        assert transport.is_reading()  # resumed once the reader caught up


# -- small writes made in one turn of the loop are coalesced ------------------------------------


def count_writes(conn: ws.Conn) -> list[int]:
    """The sizes of the transport's writes from now on."""
    transport = conn.net_conn()
    sizes: list[int] = []
    write = transport.write

    def counting(data: Any) -> None:
        sizes.append(len(data))
        write(data)

    transport.write = counting  # type: ignore[method-assign]
    return sizes


async def test_a_burst_of_small_writes_leaves_in_two_transport_writes(anyio_backend):
    async with raw_server(ws) as (client, peer):
        writes = count_writes(client)
        for i in range(100):
            await client.write_message(ws.MessageType.TEXT, f"message {i}")
        assert len(writes) == 1  # the first went at once; the burst behind it is held
        await asyncio.sleep(0)  # until the turn ends
        assert len(writes) == 2
        for i in range(100):
            assert (await peer.data_frame()).payload == f"message {i}".encode()


async def test_a_write_goes_out_while_the_writer_waits_for_something_else(anyio_backend):
    async with raw_server(ws) as (client, peer):
        writes = count_writes(client)
        await client.write_message(ws.MessageType.BINARY, b"no read follows")
        await asyncio.sleep(0.01)
        assert writes
        assert (await peer.data_frame()).payload == b"no read follows"


async def test_coalescing_holds_back_at_most_64_kib(anyio_backend):
    # A writer that never yields (its writes never wait) must not make the
    # core hold an unbounded amount: past 64 KiB the frames go at once.
    async with raw_server(ws) as (client, peer):
        writes = count_writes(client)
        payload = bytes(1000)
        frame_size = 2 + 2 + 4 + len(payload)  # header, 16-bit length, mask key
        for i in range(300):
            await client.write_message(ws.MessageType.BINARY, payload)
            held_back = (i + 1) * frame_size - sum(writes)
            assert 0 <= held_back <= 65536
        await asyncio.sleep(0)  # the rest goes at the end of the turn
        # ... joined: about 64 KiB to a write, not a write per frame.
        assert 4 <= len(writes) <= 8
        for _ in range(300):
            assert (await peer.data_frame()).payload == payload


async def test_close_sends_what_was_written_before_it(anyio_backend):
    async with raw_server(ws) as (client, peer):
        await client.write_message(ws.MessageType.TEXT, "last words")
        await client.close()
        assert (await peer.data_frame()).payload == b"last words"
        assert await peer.at_eof()


async def test_a_lone_write_goes_at_once(anyio_backend):
    async with raw_server(ws) as (client, peer):
        writes = count_writes(client)
        for i in range(3):
            await client.write_message(ws.MessageType.TEXT, f"request {i}")
            assert len(writes) == i + 1  # no turn of the loop later
            await peer.send(Opcode.TEXT, b"answer")
            assert await client.read_message() == (ws.MessageType.TEXT, "answer")
            assert (await peer.data_frame()).payload == f"request {i}".encode()


async def test_a_read_that_waits_sends_what_the_task_wrote_first(anyio_backend):
    async with raw_server(ws) as (client, peer):
        writes = count_writes(client)
        await client.write_message(ws.MessageType.TEXT, "question")
        await client.write_message(ws.MessageType.TEXT, "held")
        assert len(writes) == 1

        async def answer() -> None:
            assert (await peer.data_frame()).payload == b"question"
            assert (await peer.data_frame()).payload == b"held"
            await peer.send(Opcode.TEXT, b"answer")

        async with anyio.create_task_group() as tg:
            tg.start_soon(answer)
            assert await client.read_message() == (ws.MessageType.TEXT, "answer")
        assert len(writes) == 2


async def test_deadlines_are_loop_time(anyio_backend):
    async with ws_pair(ws) as (client, _):
        loop = asyncio.get_running_loop()
        client.set_read_deadline(loop.time() + 0.1)
        start = loop.time()
        with pytest.raises(TimeoutError):
            await client.read_message()
        assert 0.08 <= loop.time() - start < 1


async def test_asyncio_timeout_around_a_read(anyio_backend):
    async with ws_pair(ws) as (client, server):
        with pytest.raises(TimeoutError):
            async with asyncio.timeout(0.1):
                await client.read_message()
        await server.write_message(ws.MessageType.TEXT, "after asyncio.timeout")
        assert await client.read_message() == (ws.MessageType.TEXT, "after asyncio.timeout")


# -- serve(): asyncio's shape -------------------------------------------------------------------


async def read_until_closed(conn: ws.Conn, codes: list[int]) -> None:
    try:
        while True:
            await conn.read_message()
    except ws.CloseError as exc:
        codes.append(exc.code)


async def test_serve_forever_returns_after_shutdown_and_the_port_is_closed(anyio_backend):
    server = await ws.serve(echo_then_report, "127.0.0.1", 0, shutdown_timeout=0.5)
    host, port = server.address[:2]
    async with anyio.create_task_group() as tg:
        tg.start_soon(server.serve_forever)
        await anyio.sleep(0.05)
        await server.shutdown()
    with pytest.raises(OSError, match="connection attempts failed"):
        await anyio.connect_tcp(host, port)


async def test_the_context_manager_shuts_down(anyio_backend):
    codes: list[int] = []
    async with anyio.create_task_group() as tg:
        server = await ws.serve(echo_then_report, "127.0.0.1", 0, shutdown_timeout=0.5)
        async with server:
            host, port = server.address[:2]
            client, _ = await ws.Dialer(handshake_timeout=STEP).dial(f"ws://{host}:{port}/")
            tg.start_soon(read_until_closed, client, codes)
            await anyio.sleep(0.05)
            started = anyio.current_time()
        assert anyio.current_time() - started < 0.5  # the client answered the Close
    await client.close()
    assert codes == [ws.CloseCode.GOING_AWAY]
    with pytest.raises(OSError, match="connection attempts failed"):
        await anyio.connect_tcp(host, port)
