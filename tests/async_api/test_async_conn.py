"""Conn's contract: one reader and one writer, control frames, handlers, errors, closing."""

from __future__ import annotations

import os
import socket
import struct
from contextlib import suppress
from typing import Any

import anyio
import pytest
from anyio.abc import SocketAttribute
from async_helpers import MASK, STEP, raw_client, raw_server, serving, url_of, ws_pair

from wsproto_core import Opcode, SharedBufferPool

pytestmark = pytest.mark.anyio

BIG = 16 * 1024 * 1024  # more than loopback TCP buffers hold


async def wait_blocked(event: anyio.Event | None = None, delay: float = 0.2) -> None:
    """Give a task time to block (there is no public way to see a waiting task)."""
    await anyio.sleep(delay)
    if event is not None:
        assert not event.is_set()


# -- one reader, one writer --------------------------------------------------------------------


async def test_a_second_reader_gets_concurrency_error(ws):
    async with ws_pair(ws) as (client, server):
        got: list[Any] = []
        done = anyio.Event()

        async def first_reader() -> None:
            got.append(await client.read_message())
            done.set()

        async with anyio.create_task_group() as tg:
            tg.start_soon(first_reader)
            await wait_blocked(done)  # blocked: the server sends nothing yet
            with pytest.raises(ws.ConcurrencyError):
                await client.read_message()
            with pytest.raises(ws.ConcurrencyError):
                await client.next_reader()
            with pytest.raises(ws.ConcurrencyError):
                await client.read_json()
            await server.write_message(ws.MessageType.TEXT, "for the first reader")
        assert got == [(ws.MessageType.TEXT, "for the first reader")]
        await server.write_message(ws.MessageType.TEXT, "and the next")
        assert await client.read_message() == (ws.MessageType.TEXT, "and the next")


async def test_two_tasks_reading_one_streamed_message(ws):
    async with ws_pair(ws) as (client, server):
        server.write_buffer_size = 10
        async with server.next_writer(ws.MessageType.BINARY) as writer:
            await writer.write(b"x" * 15)  # one frame goes out, the last one on close
            _, reader = await client.next_reader()
            assert await reader.read(10) == b"x" * 10
            rest: list[bytes] = []

            async def read_rest() -> None:
                rest.append(await reader.read())

            async with anyio.create_task_group() as tg:
                tg.start_soon(read_rest)
                await wait_blocked()  # waiting for the last frame
                with pytest.raises(ws.ConcurrencyError):
                    await reader.read(5)
                with pytest.raises(ws.ConcurrencyError):
                    await client.read_message()
                await writer.close()
        assert rest == [b"x" * 5]
        await server.write_message(ws.MessageType.TEXT, "next")
        assert await client.read_message() == (ws.MessageType.TEXT, "next")


async def test_one_writer_at_a_time(ws):
    async with ws_pair(ws) as (client, server):
        writer = client.next_writer(ws.MessageType.BINARY)
        await writer.write(b"x" * 10)
        with pytest.raises(ws.ConcurrencyError):
            client.next_writer(ws.MessageType.BINARY)
        with pytest.raises(ws.ConcurrencyError):
            await client.write_message(ws.MessageType.TEXT, "no")
        with pytest.raises(ws.ConcurrencyError):
            await client.write_json([])
        with pytest.raises(ws.ConcurrencyError):
            await client.write_prepared_message(ws.PreparedMessage(ws.MessageType.TEXT, "no"))
        await writer.close()
        await client.write_message(ws.MessageType.TEXT, "yes")  # the writer role was released
        assert await server.read_message() == (ws.MessageType.BINARY, b"x" * 10)
        assert await server.read_message() == (ws.MessageType.TEXT, "yes")


async def read_all(conn: Any) -> None:
    """Read until the connection ends."""
    while True:
        await conn.read_message()


class Boom(Exception):
    """An error of the program's own, raised inside a writer's block."""


class CountingPool(SharedBufferPool):
    """A shared pool that counts how many buffers are out."""

    def __init__(self) -> None:
        super().__init__()
        self.out = 0

    def get(self) -> bytearray | None:
        self.out += 1
        return super().get()

    def put(self, buffer: bytearray) -> None:
        self.out -= 1
        super().put(buffer)


async def test_an_error_inside_the_writer_block_propagates_and_the_message_ends(ws):
    async with ws_pair(ws) as (client, server):
        client.write_buffer_size = 4

        async def stream() -> None:
            async with client.next_writer(ws.MessageType.BINARY) as writer:
                await writer.write(b"012345")  # a frame of "0123" goes out, "45" waits
                raise Boom

        with pytest.raises(Boom):
            await stream()
        # What was written is sent, and the writer role is free again.
        assert await server.read_message() == (ws.MessageType.BINARY, b"012345")
        await client.write_message(ws.MessageType.TEXT, "next")
        assert await server.read_message() == (ws.MessageType.TEXT, "next")


async def test_a_read_error_inside_a_streamed_echo_is_not_replaced(ws):
    """The error that failed the connection leaves the writer's block, not CloseSentError."""
    errors: list[BaseException] = []
    done = anyio.Event()

    async def echo_streamed(conn: Any) -> None:
        try:
            message_type, reader = await conn.next_reader()
            async with conn.next_writer(message_type) as writer:
                async for chunk in reader:
                    await writer.write(chunk)
        except Exception as exc:
            errors.append(exc)
        finally:
            done.set()

    upgrader = ws.Upgrader(max_message_size=1000)
    async with serving(ws, echo_streamed, upgrader=upgrader) as server:
        dialer = ws.Dialer(write_buffer_size=500, handshake_timeout=STEP)
        client, _ = await dialer.dial(url_of(server))
        async with client:
            with suppress(ws.WebSocketError, OSError):  # the server may be gone already
                async with client.next_writer(ws.MessageType.BINARY) as writer:
                    await writer.write(bytes(5000))
            with pytest.raises((ws.CloseError, OSError)):
                await read_all(client)
            with anyio.fail_after(STEP):
                await done.wait()
    assert [type(error) for error in errors] == [ws.ReadLimitError]


async def test_the_writer_block_tries_no_write_on_a_closed_connection(ws):
    async with ws_pair(ws) as (client, _):
        pool = CountingPool()
        client.write_buffer_pool = pool
        writer = client.next_writer(ws.MessageType.BINARY)
        await writer.write(b"pending")
        await client.close()

        async def fail() -> None:
            async with writer:
                raise Boom

        with pytest.raises(Boom):
            await fail()
        assert pool.out == 0  # the buffer went back
        # The role is free: the closed connection answers, not ConcurrencyError.
        with pytest.raises((OSError, ws.CloseSentError)):
            await client.write_message(ws.MessageType.TEXT, "late")


async def test_a_second_writer_while_one_waits_for_the_peer(ws):
    async with raw_server(ws) as (client, peer):
        async with anyio.create_task_group() as tg:
            tg.start_soon(client.write_message, ws.MessageType.BINARY, bytes(BIG))
            await wait_blocked()  # the peer does not read: the first write waits
            with pytest.raises(ws.ConcurrencyError):
                await client.write_message(ws.MessageType.TEXT, "no")
            with pytest.raises(ws.ConcurrencyError):
                client.next_writer(ws.MessageType.TEXT)
            frame = await peer.frame()  # reading lets the first write finish
        assert (frame.opcode, len(frame.payload)) == (Opcode.BINARY, BIG)
        await client.write_message(ws.MessageType.TEXT, "now")
        assert (await peer.frame()).payload == b"now"


async def test_write_control_between_the_frames_of_a_streamed_message(ws):
    async with raw_server(ws, ws.Dialer(write_buffer_size=100)) as (client, peer):
        data = os.urandom(100 * 50)
        sent_pings: list[bytes] = []
        streaming = anyio.Event()

        async def stream() -> None:
            async with client.next_writer(ws.MessageType.BINARY) as writer:
                streaming.set()
                for i in range(0, len(data), 100):
                    await writer.write(data[i : i + 100])
                    await anyio.sleep(0)  # let the pinger in between frames

        async def ping() -> None:
            await streaming.wait()
            for i in range(20):
                payload = b"p%d" % i
                await client.write_control(ws.MessageType.PING, payload)
                sent_pings.append(payload)
                await anyio.sleep(0)

        async with anyio.create_task_group() as tg:
            tg.start_soon(stream)
            tg.start_soon(ping)
        frames = []
        while not frames or frames[-1].opcode == Opcode.PING or not frames[-1].fin:
            frames.append(await peer.frame())
        while len([f for f in frames if f.opcode == Opcode.PING]) < len(sent_pings):
            frames.append(await peer.frame())
    opcodes = [frame.opcode for frame in frames]
    data_frames = [frame for frame in frames if frame.opcode != Opcode.PING]
    assert b"".join(frame.payload for frame in data_frames) == data
    assert [frame.opcode for frame in data_frames] == [Opcode.BINARY] + [Opcode.CONTINUATION] * 49
    assert [f.payload for f in frames if f.opcode == Opcode.PING] == sent_pings
    first, last = (
        opcodes.index(Opcode.BINARY),
        len(opcodes) - 1 - opcodes[::-1].index(Opcode.CONTINUATION),
    )
    assert Opcode.PING in opcodes[first:last], "no Ping went out in the middle of the message"


async def test_write_control_while_streaming_a_large_message(ws):
    """Many Pings from another task while 2 MiB stream in 1 KiB frames: nothing is corrupted."""
    async with ws_pair(ws, dialer=ws.Dialer(write_buffer_size=1024)) as (client, server):
        server.set_read_limit(None)
        pings: list[bytes] = []
        server.set_ping_handler(pings.append)
        data = os.urandom(2 * 1024 * 1024)
        finished = anyio.Event()
        sent = 0

        async def stream() -> None:
            async with client.next_writer(ws.MessageType.BINARY) as writer:
                for i in range(0, len(data), 1000):
                    await writer.write(data[i : i + 1000])
                    if i % 50_000 == 0:
                        await anyio.sleep(0)
            finished.set()

        async def ping() -> None:
            nonlocal sent
            while not finished.is_set() and sent < 2000:
                await client.write_control(ws.MessageType.PING, b"p%d" % sent)
                sent += 1
                await anyio.sleep(0)

        async with anyio.create_task_group() as tg:
            tg.start_soon(stream)
            tg.start_soon(ping)
            assert await server.read_message() == (ws.MessageType.BINARY, data)
        await client.write_message(ws.MessageType.TEXT, "done")
        assert await server.read_message() == (ws.MessageType.TEXT, "done")
        assert sent > 0
        assert pings == [b"p%d" % i for i in range(sent)]


# -- control frames and handlers ---------------------------------------------------------------


async def test_default_ping_handler_answers_with_a_pong(ws):
    async with ws_pair(ws) as (client, server):
        pongs: list[bytes] = []
        client.set_pong_handler(pongs.append)
        await client.write_control(ws.MessageType.PING, b"hi")
        await client.write_message(ws.MessageType.TEXT, "x")
        assert await server.read_message() == (ws.MessageType.TEXT, "x")
        await server.write_message(ws.MessageType.TEXT, "y")
        assert await client.read_message() == (ws.MessageType.TEXT, "y")
        assert pongs == [b"hi"]


async def test_a_raw_peer_gets_the_pong_and_the_message(ws):
    async def handler(conn: Any) -> None:
        await conn.write_message(*await conn.read_message())

    async with raw_client(ws, handler) as (peer, _):
        await peer.send(Opcode.PING, b"ping payload")
        await peer.send(Opcode.TEXT, b"echo me")
        frame = await peer.frame()
        assert (frame.opcode, frame.payload) == (Opcode.PONG, b"ping payload")
        frame = await peer.frame()
        assert (frame.opcode, frame.payload) == (Opcode.TEXT, b"echo me")


async def test_custom_ping_handler_replaces_the_pong(ws):
    async with ws_pair(ws) as (client, server):
        pings: list[bytes] = []
        pongs: list[bytes] = []
        client.set_pong_handler(pongs.append)
        server.set_ping_handler(pings.append)
        assert server.ping_handler() == pings.append
        await client.write_control(ws.MessageType.PING, b"one")
        await client.write_message(ws.MessageType.TEXT, "x")
        assert await server.read_message() == (ws.MessageType.TEXT, "x")
        assert pings == [b"one"]
        await server.write_message(ws.MessageType.TEXT, "y")
        assert await client.read_message() == (ws.MessageType.TEXT, "y")
        assert pongs == []  # no automatic answer

        server.set_ping_handler(None)  # restores the default
        assert server.ping_handler() is None
        await client.write_control(ws.MessageType.PING, b"two")
        await client.write_message(ws.MessageType.TEXT, "x")
        assert await server.read_message() == (ws.MessageType.TEXT, "x")
        await server.write_message(ws.MessageType.TEXT, "y")
        assert await client.read_message() == (ws.MessageType.TEXT, "y")
        assert pings == [b"one"]
        assert pongs == [b"two"]


async def test_pongs_are_ignored_by_default(ws):
    async with ws_pair(ws) as (client, server):
        assert server.pong_handler() is None
        await client.write_control(ws.MessageType.PONG, b"unsolicited")
        await client.write_message(ws.MessageType.TEXT, "x")
        assert await server.read_message() == (ws.MessageType.TEXT, "x")


async def test_close_handler_sees_code_and_text(ws):
    async with ws_pair(ws) as (client, server):
        seen: list[tuple[int, str]] = []
        server.set_close_handler(lambda code, text: seen.append((code, text)))
        await client.write_control(ws.MessageType.CLOSE, ws.format_close_message(4000, "bye"))
        with pytest.raises(ws.CloseError) as info:
            await server.read_message()
        assert (info.value.code, info.value.text) == (4000, "bye")
        assert seen == [(4000, "bye")]
        with pytest.raises(ws.CloseError) as echo:  # the core echoed the Close
            await client.read_message()
        assert echo.value.code == 4000


async def test_handler_getters(ws):
    async with ws_pair(ws) as (client, _):
        assert (client.ping_handler(), client.pong_handler(), client.close_handler()) == (
            None,
            None,
            None,
        )

        def ping(payload: bytes) -> None:
            pass

        def pong(payload: bytes) -> None:
            pass

        def close(code: int, text: str) -> None:
            pass

        client.set_ping_handler(ping)
        client.set_pong_handler(pong)
        client.set_close_handler(close)
        assert client.ping_handler() is ping
        assert client.pong_handler() is pong
        assert client.close_handler() is close
        client.set_pong_handler(None)
        client.set_close_handler(None)
        assert client.pong_handler() is None
        assert client.close_handler() is None


async def test_an_exception_from_a_handler_propagates_and_reading_goes_on(ws):
    async def handler(conn: Any) -> None:
        def ping_handler(payload: bytes) -> None:
            raise ValueError(payload.decode())

        conn.set_ping_handler(ping_handler)
        with pytest.raises(ValueError, match="boom"):
            await conn.read_message()
        message_type, reader = await conn.next_reader()  # the message begun is whole
        assert message_type is ws.MessageType.BINARY
        results.append(await reader.read())
        results.append(await conn.read_message())

    results: list[Any] = []
    async with raw_client(ws, handler) as (peer, server):
        await peer.send(Opcode.BINARY, b"ab", fin=False)
        await peer.send(Opcode.PING, b"boom")
        await peer.send(Opcode.CONTINUATION, b"cd")
        await peer.send(Opcode.TEXT, b"next")
        await server.shutdown()
    assert results == [b"abcd", (ws.MessageType.TEXT, "next")]


async def test_write_control_refuses_data_types_and_long_payloads(ws):
    async with ws_pair(ws) as (client, server):
        with pytest.raises(ws.LocalProtocolError):
            await client.write_control(ws.MessageType.TEXT, b"x")
        with pytest.raises(ws.LocalProtocolError):
            await client.write_control(ws.MessageType.PING, b"x" * 126)
        await client.write_message(ws.MessageType.TEXT, "still open")
        assert await server.read_message() == (ws.MessageType.TEXT, "still open")


# -- errors are permanent ----------------------------------------------------------------------


async def test_close_error_is_permanent(ws):
    async with ws_pair(ws) as (client, server):
        await client.write_control(ws.MessageType.CLOSE, ws.format_close_message(1001, "going"))
        with pytest.raises(ws.CloseError) as first:
            await server.read_message()
        assert (first.value.code, first.value.text) == (ws.CloseCode.GOING_AWAY, "going")
        for read in (server.read_message, server.next_reader, server.read_json):
            with pytest.raises(ws.CloseError) as again:
                await read()
            assert again.value is first.value
        assert ws.is_close_error(first.value, ws.CloseCode.GOING_AWAY)
        assert not ws.is_unexpected_close_error(first.value, ws.CloseCode.GOING_AWAY)


async def test_close_without_a_code_is_1005(ws):
    async with ws_pair(ws) as (client, server):
        await client.write_control(ws.MessageType.CLOSE, b"")
        with pytest.raises(ws.CloseError) as info:
            await server.read_message()
        assert info.value.code == ws.CloseCode.NO_STATUS_RCVD


@pytest.mark.parametrize(
    ("frame", "code"),
    [
        pytest.param((Opcode.TEXT, b"hi", {"masked": False}), 1002, id="unmasked"),
        pytest.param((Opcode.TEXT, b"\xff\xfe", {}), 1007, id="bad-utf8"),
        pytest.param((Opcode.CONTINUATION, b"x", {}), 1002, id="stray-continuation"),
        pytest.param((Opcode.BINARY, b"x", {"rsv": 0x40}), 1002, id="rsv1-unnegotiated"),
        pytest.param((None, b"\x83\x80" + MASK, {}), 1002, id="reserved-opcode"),
    ],
)
async def test_a_protocol_error_fails_the_connection_permanently(ws, frame, code):
    errors: list[BaseException] = []

    async def handler(conn: Any) -> None:
        for _ in range(2):
            try:
                await conn.read_message()
            except ws.WebSocketError as exc:
                errors.append(exc)

    async with raw_client(ws, handler) as (peer, _):
        opcode, payload, options = frame
        if opcode is None:  # bytes the core's serializer refuses to make
            await peer.stream.send(payload)
        else:
            await peer.send(opcode, payload, **options)
        close_code, _ = await peer.close_frame()
        assert close_code == code
        assert await peer.at_eof()  # the server closed its end
    first, again = errors
    assert isinstance(first, ws.RemoteProtocolError)
    assert first.code == code
    assert again is first
    assert not ws.is_close_error(first, code)


async def test_eof_without_close_is_1006(ws):
    async with raw_server(ws) as (client, peer):
        await peer.send(Opcode.BINARY, b"partial", fin=False)
        await peer.stream.send_eof()
        with pytest.raises(ws.CloseError) as info:
            await client.read_message()
        error = info.value
        assert error.code == ws.CloseCode.ABNORMAL_CLOSURE
        assert ws.is_close_error(error, ws.CloseCode.ABNORMAL_CLOSURE)
        assert ws.is_unexpected_close_error(error, 1000, 1001)
        with pytest.raises(ws.CloseError) as again:
            await client.read_message()
        assert again.value is error


async def test_a_connection_reset_is_a_permanent_1006(ws):
    async with raw_server(ws) as (client, peer):
        sock = peer.stream.extra(SocketAttribute.raw_socket)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        await peer.aclose()  # with a zero linger: a TCP reset
        with pytest.raises(ws.CloseError) as first:
            await client.read_message()
        assert first.value.code == ws.CloseCode.ABNORMAL_CLOSURE
        with pytest.raises(ws.CloseError) as again:
            await client.read_message()
        assert again.value is first.value


async def test_writes_after_the_close_was_sent_raise_close_sent_error(ws):
    async with ws_pair(ws) as (client, server):
        await client.write_control(ws.MessageType.CLOSE, ws.format_close_message())
        with pytest.raises(ws.CloseSentError):
            await client.write_message(ws.MessageType.TEXT, "late")
        with pytest.raises(ws.CloseSentError):
            await client.write_json({})
        with pytest.raises(ws.CloseSentError):
            await client.write_control(ws.MessageType.PING, b"")
        with pytest.raises(ws.CloseSentError):
            await client.write_control(ws.MessageType.CLOSE, ws.format_close_message())
        with pytest.raises(ws.CloseSentError):
            async with client.next_writer(ws.MessageType.TEXT) as writer:
                await writer.write(b"late")
        with pytest.raises(ws.CloseSentError):  # the failed writer released the role
            await client.write_message(ws.MessageType.TEXT, "late")
        with pytest.raises(ws.CloseError) as info:
            await server.read_message()
        assert info.value.code == ws.CloseCode.NORMAL_CLOSURE
        with pytest.raises(ws.CloseSentError):  # the server echoed the Close
            await server.write_message(ws.MessageType.TEXT, "late")


# -- closing -----------------------------------------------------------------------------------


async def test_close_wakes_a_blocked_reader_with_1006(ws):
    async with ws_pair(ws) as (client, _):
        errors: list[BaseException] = []
        done = anyio.Event()

        async def read() -> None:
            try:
                await client.read_message()
            except Exception as exc:
                errors.append(exc)
            done.set()

        async with anyio.create_task_group() as tg:
            tg.start_soon(read)
            await wait_blocked(done)
            closed_at = anyio.current_time()
            await client.close()
            with anyio.fail_after(1.0):
                await done.wait()
            assert anyio.current_time() - closed_at < 1.0
        [error] = errors
        assert isinstance(error, ws.CloseError)
        assert error.code == ws.CloseCode.ABNORMAL_CLOSURE


async def test_close_is_idempotent_and_reads_and_writes_after_it_fail(ws):
    async with ws_pair(ws) as (client, server):
        await client.close()
        await client.close()
        with pytest.raises(ws.CloseError) as info:
            await client.read_message()
        assert info.value.code == ws.CloseCode.ABNORMAL_CLOSURE
        with pytest.raises((OSError, ws.WebSocketError)):
            await client.write_message(ws.MessageType.TEXT, "x")
        with pytest.raises(ws.CloseError) as seen:  # the server sees the TCP close
            await server.read_message()
        assert seen.value.code == ws.CloseCode.ABNORMAL_CLOSURE


async def test_close_as_an_async_context_manager(ws):
    async with ws_pair(ws) as (client, server):
        async with client as conn:
            assert conn is client
        with pytest.raises(ws.CloseError) as info:
            await server.read_message()
        assert info.value.code == ws.CloseCode.ABNORMAL_CLOSURE


async def test_close_gracefully(ws):
    async with ws_pair(ws) as (client, server):
        errors: list[BaseException] = []

        async def read() -> None:
            try:
                await server.read_message()
            except Exception as exc:
                errors.append(exc)

        async with anyio.create_task_group() as tg:
            tg.start_soon(read)
            start = anyio.current_time()
            await client.close_gracefully(reason="bye", timeout=3)
            assert anyio.current_time() - start < 1.0  # the echo came, not the timeout
        [error] = errors
        assert isinstance(error, ws.CloseError)
        assert (error.code, error.text) == (ws.CloseCode.NORMAL_CLOSURE, "bye")
        with pytest.raises(ws.CloseError) as info:
            await client.read_message()
        assert info.value.code == ws.CloseCode.NORMAL_CLOSURE


async def test_close_gracefully_while_another_task_reads(ws):
    """The usual shape: one task iterates, another ends the conversation."""
    async with ws_pair(ws) as (client, server):
        got: list[str | bytes] = []
        errors: list[BaseException] = []

        async def iterate() -> None:
            async for message in client:  # ends without error on the echo of 1000
                got.append(message)

        async def read() -> None:  # the peer reads too, so it echoes the Close
            try:
                await server.read_message()
            except Exception as exc:
                errors.append(exc)

        async with anyio.create_task_group() as tg:
            tg.start_soon(iterate)
            tg.start_soon(read)
            await server.write_message(ws.MessageType.TEXT, "before")
            await anyio.sleep(0.05)
            start = anyio.current_time()
            await client.close_gracefully(reason="done", timeout=3)
            assert anyio.current_time() - start < 1.0  # the echo came, not the timeout
        [error] = errors
        assert isinstance(error, ws.CloseError)
        assert (error.code, error.text) == (1000, "done")
        assert got == ["before"]


async def test_a_cancelled_close_still_closes(ws):
    async with raw_server(ws) as (client, _):
        errors: dict[str, BaseException] = {}
        ended = anyio.Event()

        async def run(name: str, call: Any, *args: Any) -> None:
            try:
                await call(*args)
            except Exception as exc:
                errors[name] = exc
            if len(errors) == 2:
                ended.set()

        async with anyio.create_task_group() as tg:
            tg.start_soon(run, "read", client.read_message)
            # The peer does not read: this write waits, with data yet to flush.
            tg.start_soon(run, "write", client.write_message, ws.MessageType.BINARY, bytes(BIG))
            await wait_blocked(ended)
            with anyio.CancelScope() as cancel:
                cancel.cancel()  # the cancel lands where close() waits (asyncio: for the flush)
                await client.close()
            assert cancel.cancelled_caught  # close() was cancelled: it must close anyway
            with anyio.fail_after(0.5):
                await ended.wait()
        assert isinstance(errors["read"], ws.CloseError)
        assert errors["read"].code == ws.CloseCode.ABNORMAL_CLOSURE
        assert isinstance(errors["write"], ConnectionResetError)


async def test_close_frees_a_blocked_writer(ws):
    async with raw_server(ws) as (client, _):
        errors: list[BaseException] = []

        async def write() -> None:
            try:
                await client.write_message(ws.MessageType.BINARY, bytes(BIG))
            except Exception as exc:
                errors.append(exc)

        async with anyio.create_task_group() as tg:
            tg.start_soon(write)
            await wait_blocked()
            with anyio.fail_after(2):  # the flush of what was written gives up after a second
                await client.close()
        [error] = errors
        assert isinstance(error, ConnectionResetError)


async def test_close_gracefully_discards_messages_meanwhile(ws):
    async with ws_pair(ws) as (client, server):
        await server.write_message(ws.MessageType.TEXT, "unread")
        async with anyio.create_task_group() as tg:
            tg.start_soon(client.close_gracefully, ws.CloseCode.GOING_AWAY, "", 3)
            with pytest.raises(ws.CloseError) as info:
                await server.read_message()
        assert info.value.code == ws.CloseCode.GOING_AWAY


async def test_close_gracefully_times_out_with_a_silent_peer(ws):
    async with raw_server(ws) as (client, peer):
        start = anyio.current_time()
        await client.close_gracefully(timeout=0.3)
        assert 0.25 <= anyio.current_time() - start < 2
        assert await peer.close_frame() == (1000, "")
        assert await peer.at_eof()


async def test_close_gracefully_after_the_peer_closed(ws):
    async with ws_pair(ws) as (client, server):
        await client.write_control(ws.MessageType.CLOSE, ws.format_close_message())
        with pytest.raises(ws.CloseError):
            await server.read_message()
        start = anyio.current_time()
        await server.close_gracefully(timeout=3)
        assert anyio.current_time() - start < 1


# -- accessors ---------------------------------------------------------------------------------


async def test_accessors(ws):
    upgrader = ws.Upgrader(subprotocols=["chat"])
    dialer = ws.Dialer(subprotocols=["chat"])
    async with ws_pair(ws, upgrader=upgrader, dialer=dialer) as (client, server):
        assert client.subprotocol == server.subprotocol == "chat"
        assert client.local_addr == server.remote_addr
        assert client.remote_addr == server.local_addr
        assert client.remote_addr[0] == "127.0.0.1"
        assert client.net_conn() is not None
        assert repr(client).startswith("<Conn client")
        assert repr(server).startswith("<Conn server")
        assert "OPEN" in repr(client)
        await client.write_control(ws.MessageType.CLOSE, ws.format_close_message())
        assert "OPEN" not in repr(client)


async def test_a_dialer_conn_talks_to_serve(ws):
    """The smallest program: serve an echo, dial it, talk, close gracefully."""

    async def handler(conn: Any) -> None:
        async for message in conn:
            kind = ws.MessageType.TEXT if isinstance(message, str) else ws.MessageType.BINARY
            await conn.write_message(kind, message)
        ended.set()

    ended = anyio.Event()
    async with serving(ws, handler) as server:
        conn, _ = await ws.dial(url_of(server))
        await conn.write_message(ws.MessageType.TEXT, "hello")
        assert await conn.read_message() == (ws.MessageType.TEXT, "hello")
        await conn.close_gracefully()
        with anyio.fail_after(2):
            await ended.wait()
