"""Cancellation and closing from another task, over memory streams on a MockClock.

wsproto_trio runs no background task: the reading task parses what it
reads. So a cancel can land in a read, in a write, or in a Pong or Close
echo the reading task sends; these tests put one at each of those points
(with :class:`Gate`, deterministically) and check what the connection is
left with: a cancelled read loses nothing, a write cancelled mid-frame
fails the connection cleanly, a write cancelled before it sent anything
leaves its frame queued whole.
"""

from __future__ import annotations

import pytest
import trio
import trio.testing
from trio_helpers import conn_pair

from wsproto_core import Opcode, serialize_frame
from wsproto_trio import CloseCode, CloseError, Conn, MessageType, format_close_message

pytestmark = pytest.mark.mock_clock

TEXT = MessageType.TEXT


# -- cancelled reads --------------------------------------------------------------------


async def test_cancelled_read_loses_nothing() -> None:
    async with conn_pair() as (client, server, _, _):
        with trio.move_on_after(1) as scope:
            await server.read_message()
        assert scope.cancelled_caught
        await client.write_message(TEXT, "after the cancel")
        assert await server.read_message() == (TEXT, "after the cancel")


async def test_cancelled_read_keeps_half_a_frame() -> None:
    async with conn_pair() as (_, server, client_gate, _):
        frame = serialize_frame(Opcode.TEXT, "héllo ☃".encode(), mask_key=b"\x01\x02\x03\x04")
        await client_gate.inner.send_all(frame[:5])  # a client's frame, cut by the network
        with trio.move_on_after(1) as scope:
            await server.read_message()
        assert scope.cancelled_caught
        await client_gate.inner.send_all(frame[5:])
        assert await server.read_message() == (TEXT, "héllo ☃")


async def test_cancelled_streamed_read_resumes_where_it_stopped() -> None:
    async with conn_pair() as (client, server, _, _):
        client.write_buffer_size = 4
        async with client.next_writer(MessageType.BINARY) as writer:
            await writer.write(b"012345")  # sends a frame of "0123", keeps "45"
            _, reader = await server.next_reader()
            assert await reader.read(2) == b"01"
            with trio.move_on_after(1) as scope:
                await reader.read(-1)  # has "23", waits for the rest
            assert scope.cancelled_caught
            await writer.write(b"6789")
        assert await reader.read(-1) == b"23456789"


@pytest.mark.parametrize("control", ["ping", "close"])
async def test_read_cancelled_as_a_control_frame_arrives(control: str) -> None:
    """The cancel lands just as the read gets a Ping or a Close: it is answered later.

    Nothing was taken from the core yet, so the next read sees the frame:
    the Ping is answered then, the Close is echoed and reported then.
    """
    async with conn_pair() as (client, server, _, server_gate):
        pongs: list[bytes] = []
        client.set_pong_handler(pongs.append)
        with trio.CancelScope() as scope:
            server_gate.on_data = scope.cancel  # the deadline passes as the bytes arrive
            if control == "ping":
                await client.write_control(MessageType.PING, b"are you there?")
            else:
                await client.write_control(MessageType.CLOSE, format_close_message(4000, "bye"))
            await server.read_message()
        assert scope.cancelled_caught
        server_gate.on_data = None
        if control == "ping":
            await client.write_message(TEXT, "after the ping")
            assert await server.read_message() == (TEXT, "after the ping")
            async with trio.open_nursery() as nursery:
                nursery.start_soon(server.write_message, TEXT, "reply")
                assert await client.read_message() == (TEXT, "reply")
            assert pongs == [b"are you there?"]
        else:
            with pytest.raises(CloseError) as info:
                await server.read_message()
            assert (info.value.code, info.value.text) == (4000, "bye")
            with pytest.raises(CloseError) as echo:
                await client.read_message()
            assert echo.value.code == 4000


async def test_close_taken_by_a_cancelled_read_is_still_reported() -> None:
    """A cancel that lands while the reading task echoes a Close does not lose the Close.

    The echo is stuck (the gate holds it back) when the read's deadline
    passes; the read still raises the peer's CloseError, once the echo has
    had its bounded time, and so does every later read.
    """
    async with conn_pair() as (client, server, _, server_gate):
        await client.write_control(MessageType.CLOSE, format_close_message(4000, "bye"))
        server_gate.send_limit = 0  # the echo will not go out
        start = trio.current_time()
        with trio.move_on_after(0.5), pytest.raises(CloseError) as info:
            await server.read_message()
        assert (info.value.code, info.value.text) == (4000, "bye")
        assert trio.current_time() - start == pytest.approx(1.0)  # the echo's bounded wait
        with pytest.raises(CloseError) as again:
            await server.read_message()
        assert again.value is info.value


# -- cancelled writes -------------------------------------------------------------------


async def test_write_cancelled_mid_frame_fails_the_connection() -> None:
    async with conn_pair() as (client, server, client_gate, _):
        client_gate.send_limit = 10  # the frame is cut after 10 bytes
        with trio.move_on_after(1) as scope:
            await client.write_message(MessageType.BINARY, bytes(1000))
        assert scope.cancelled_caught
        # Nothing can follow half a frame: the stream is closed...
        with pytest.raises(CloseError) as info:
            await client.read_message()
        assert info.value.code == CloseCode.ABNORMAL_CLOSURE
        with pytest.raises(ConnectionResetError) as failed:  # as wsproto_asyncio's writes
            await client.write_message(TEXT, "more")
        with pytest.raises(ConnectionResetError) as again:  # permanent
            await client.write_control(MessageType.PING)
        assert again.value is failed.value
        # ...and the peer sees half a frame, then the end of the stream.
        with pytest.raises(CloseError) as seen:
            await server.read_message()
        assert seen.value.code == CloseCode.ABNORMAL_CLOSURE


async def test_streamed_write_cancelled_mid_frame_fails_the_connection() -> None:
    async with conn_pair() as (client, server, client_gate, _):
        client.write_buffer_size = 100
        with trio.move_on_after(1) as scope:
            async with client.next_writer(MessageType.BINARY) as writer:
                await writer.write(bytes(150))  # the first frame goes out whole
                client_gate.send_limit = 10
                await writer.write(bytes(100))  # the second is cut
        assert scope.cancelled_caught
        with pytest.raises(CloseError) as info:
            await client.read_message()
        assert info.value.code == CloseCode.ABNORMAL_CLOSURE
        with pytest.raises(CloseError) as seen:
            await server.read_message()
        assert seen.value.code == CloseCode.ABNORMAL_CLOSURE


@pytest.mark.parametrize("how", ["cancelled-on-entry", "cancelled-waiting-for-the-lock"])
async def test_write_cancelled_before_sending_leaves_its_frame_queued(how: str) -> None:
    """What a write cancelled before it sent a byte does: its frame goes out later, whole.

    The core queued the frame when the write began, and can't take it back;
    it leaves with the next send (a write's, or the reading task's), so the
    connection stays usable and the message is neither cut nor lost, but
    arrives although the write raised ``Cancelled``.
    """
    async with conn_pair() as (client, server, client_gate, _):
        async with trio.open_nursery() as nursery:
            if how == "cancelled-on-entry":
                with trio.CancelScope() as scope:
                    scope.cancel()
                    await client.write_message(TEXT, "cancelled")
            else:
                client_gate.send_limit = 0  # another task's Ping holds the send lock, stuck
                nursery.start_soon(client.write_control, MessageType.PING, b"stuck")
                await client_gate.stalled.wait()
                with trio.move_on_after(1) as scope:
                    await client.write_message(TEXT, "cancelled")
                client_gate.open()
        assert scope.cancelled_caught
        await client.write_message(TEXT, "next")
        assert await server.read_message() == (TEXT, "cancelled")
        assert await server.read_message() == (TEXT, "next")


# -- closing from another task ----------------------------------------------------------


async def test_close_from_another_task_wakes_the_reader() -> None:
    async with conn_pair() as (client, server, _, _):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(_close_later, server, 1)  # once the reader waits
            with pytest.raises(CloseError) as info:
                await server.read_message()
        assert info.value.code == CloseCode.ABNORMAL_CLOSURE
        with pytest.raises(CloseError) as again:  # permanent
            await server.read_message()
        assert again.value.code == CloseCode.ABNORMAL_CLOSURE
        with pytest.raises(CloseError) as seen:  # no Close was sent: the peer sees 1006
            await client.read_message()
        assert seen.value.code == CloseCode.ABNORMAL_CLOSURE


async def _close_later(conn: Conn, delay: float) -> None:
    await trio.sleep(delay)
    await conn.aclose()


# -- checkpoints ------------------------------------------------------------------------


async def test_reads_and_writes_are_checkpoints_even_when_served_from_buffers() -> None:
    """Every trio async call is a checkpoint, also one that need not wait."""
    async with conn_pair() as (client, server, _, _):
        await client.write_message(TEXT, "one")
        await client.write_message(TEXT, "two")  # both arrive in one read
        with trio.testing.assert_checkpoints():
            assert await server.read_message() == (TEXT, "one")
        with trio.testing.assert_checkpoints():
            assert await server.read_message() == (TEXT, "two")  # from the core's buffer
        async with client.next_writer(MessageType.BINARY) as writer:
            with trio.testing.assert_checkpoints():
                await writer.write(b"0123")  # buffered, not sent
        _, reader = await server.next_reader()
        with trio.testing.assert_checkpoints():
            assert await reader.read(2) == b"01"
        with trio.testing.assert_checkpoints():
            assert await reader.read(2) == b"23"  # from the reader's buffer
