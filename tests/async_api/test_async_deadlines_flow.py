"""Deadlines, cancellation, flow control and keepalive, over real loopback connections.

Deadlines are times on ``anyio.current_time()``'s clock, the event loop's,
as ``set_read_deadline`` and ``set_write_deadline`` expect. A deadline set
on a Conn is gorilla's and permanent; a cancel scope (``anyio.fail_after``,
``move_on_after``) around one call gives up on that call only.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from contextlib import suppress
from dataclasses import dataclass
from typing import Any

import anyio
import anyio.abc
import pytest
from async_helpers import (
    MASK,
    cancel_may_cut_a_frame,
    echo_server,
    raw_client,
    raw_server,
    url_of,
    ws_pair,
)

from wsproto_core import Opcode, serialize_frame

pytestmark = pytest.mark.anyio

BIG = 16 * 1024 * 1024  # more than loopback TCP buffers hold
CHUNK = 64 * 1024
CAP = 64 * 1024 * 1024  # no flow-controlled stream gets near this far ahead of its reader


# -- read deadlines and cancelled reads --------------------------------------------------------


async def test_read_deadline_is_permanent(ws):
    async with ws_pair(ws) as (client, server):
        start = anyio.current_time()
        client.set_read_deadline(start + 0.2)
        with pytest.raises(TimeoutError) as first:
            await client.read_message()
        assert 0.15 <= anyio.current_time() - start < 2
        # Permanent, and immediate, even with the deadline lifted and a message waiting.
        client.set_read_deadline(None)
        await server.write_message(ws.MessageType.TEXT, "too late")
        await anyio.sleep(0.05)
        start = anyio.current_time()
        for read in (client.read_message, client.next_reader, client.read_json):
            with pytest.raises(TimeoutError) as again:
                await read()
            assert again.value is first.value
        assert anyio.current_time() - start < 0.5


async def test_read_deadline_in_the_past_fails_at_once(ws):
    async with ws_pair(ws) as (client, _):
        client.set_read_deadline(anyio.current_time() - 1)
        start = anyio.current_time()
        with pytest.raises(TimeoutError):
            await client.next_reader()
        assert anyio.current_time() - start < 0.5


async def test_read_deadline_does_not_stop_a_timely_message(ws):
    async with ws_pair(ws) as (client, server):
        client.set_read_deadline(anyio.current_time() + 2)

        async def send_later() -> None:
            await anyio.sleep(0.1)
            await server.write_message(ws.MessageType.TEXT, "in time")

        async with anyio.create_task_group() as tg:
            tg.start_soon(send_later)
            assert await client.read_message() == (ws.MessageType.TEXT, "in time")


@pytest.mark.parametrize("scope", ["move_on_after", "fail_after"])
async def test_a_cancelled_read_leaves_the_connection_usable(ws, scope):
    async with ws_pair(ws) as (client, server):
        if scope == "move_on_after":
            with anyio.move_on_after(0.1) as cancel:
                await client.read_message()
            assert cancel.cancelled_caught
        else:
            with pytest.raises(TimeoutError), anyio.fail_after(0.1):
                await client.read_message()
        await server.write_message(ws.MessageType.TEXT, "after the timeout")
        assert await client.read_message() == (ws.MessageType.TEXT, "after the timeout")
        with anyio.move_on_after(0.1):
            await client.next_reader()
        await server.write_message(ws.MessageType.BINARY, b"streamed")
        _, reader = await client.next_reader()
        assert await reader.read() == b"streamed"


async def test_a_read_cancelled_mid_message_loses_nothing(ws):
    """Half a message arrived when the read was cancelled: the next read gets all of it."""
    async with raw_server(ws) as (client, peer):
        # A message read with next_reader() turns streaming on for the next one.
        await peer.send(Opcode.TEXT, b"first")
        _, reader = await client.next_reader()
        assert await reader.read() == b"first"
        await peer.send(Opcode.BINARY, b"half ", fin=False)
        await anyio.sleep(0.05)  # let it be parsed, as the beginning of a streamed message
        with anyio.move_on_after(0.2) as cancel:
            await client.read_message()
        assert cancel.cancelled_caught
        await peer.send(Opcode.CONTINUATION, b"and half")
        assert await client.read_message() == (ws.MessageType.BINARY, b"half and half")
        await peer.send(Opcode.TEXT, b"one ", fin=False)
        await anyio.sleep(0.05)
        with anyio.move_on_after(0.2) as cancel:
            await client.read_message()
        assert cancel.cancelled_caught
        await peer.send(Opcode.CONTINUATION, b"two")
        _, reader = await client.next_reader()  # a reader may take over the message, too
        assert await reader.read() == b"one two"


async def test_a_cancelled_reader_read_loses_nothing(ws):
    async with raw_server(ws) as (client, peer):
        await peer.send(Opcode.BINARY, b"one ", fin=False)
        _, reader = await client.next_reader()
        await peer.send(Opcode.CONTINUATION, b"two ", fin=False)
        with anyio.move_on_after(0.2) as cancel:
            await reader.read()  # reads "one two " and waits for the end
        assert cancel.cancelled_caught
        await peer.send(Opcode.CONTINUATION, b"three")
        assert await reader.read() == b"one two three"


# -- write deadlines and cancelled writes ------------------------------------------------------


async def test_write_deadline_with_a_peer_that_never_reads(ws):
    async with raw_server(ws) as (client, peer):
        start = anyio.current_time()
        client.set_write_deadline(start + 0.3)
        with pytest.raises(TimeoutError) as first:
            await client.write_message(ws.MessageType.BINARY, bytes(BIG))
        assert 0.25 <= anyio.current_time() - start < 2
        # A frame may be cut in half: the connection is closed, and stays unusable.
        client.set_write_deadline(None)
        with pytest.raises(TimeoutError) as again:
            await client.write_message(ws.MessageType.TEXT, "x")
        assert again.value is first.value
        with pytest.raises(TimeoutError) as control:
            await client.write_control(ws.MessageType.PING, b"x")
        assert control.value is first.value
        with pytest.raises(ws.CloseError) as info:  # and readers learn it ended
            await client.read_message()
        assert info.value.code == ws.CloseCode.ABNORMAL_CLOSURE
        with anyio.fail_after(2):
            while True:  # the peer sees the end of the stream after what was sent
                try:
                    await peer.stream.receive(1024 * 1024)
                except (anyio.EndOfStream, anyio.BrokenResourceError):
                    break


async def test_write_control_deadline_on_a_full_connection(ws):
    async def write_big() -> None:
        # The deadline below closes the connection under this write.
        with suppress(ConnectionResetError):
            await client.write_message(ws.MessageType.BINARY, bytes(BIG))

    async with raw_server(ws) as (client, _), anyio.create_task_group() as tg:
        tg.start_soon(write_big)
        await anyio.sleep(0.2)  # the writer now waits: the peer never reads
        start = anyio.current_time()
        with pytest.raises(TimeoutError):
            await client.write_control(ws.MessageType.PING, b"x", start + 0.2)
        assert 0.15 <= anyio.current_time() - start < 2
        tg.cancel_scope.cancel()


async def write_after_the_cancel(
    ws: Any,
    client: Any,
    peer: Any,
    write: Callable[[], Awaitable[None]],
    done: Callable[[list[Any]], bool],
) -> list[Any] | None:
    """After a cancelled write, ``await write()`` while ``peer`` reads frames until ``done``.

    Returns the frames. Where a cancel may cut a frame (see
    ``cancel_may_cut_a_frame``), the write may fail instead: then this checks
    that the connection failed cleanly and for good, and returns ``None``.
    """
    frames: list[Any] = []
    ended = False  # the peer saw the end of the stream

    async def read_frames() -> None:
        nonlocal ended
        try:
            while not done(frames):
                frames.append(await peer.frame())
        except EOFError:
            ended = True

    async with anyio.create_task_group() as tg:
        tg.start_soon(read_frames)
        try:
            await write()
        except ConnectionResetError:
            if not cancel_may_cut_a_frame(ws):
                raise
            # The cancel landed inside a send: the stream is closed, and the
            # peer reads what went out, then the end of the stream.
            with pytest.raises(ConnectionResetError) as again:  # permanent
                await client.write_message(ws.MessageType.TEXT, "after the cancel")
            with pytest.raises(ConnectionResetError) as more:
                await client.write_message(ws.MessageType.TEXT, "after the cancel")
            assert more.value is again.value
            with pytest.raises(ws.CloseError) as info:
                await client.read_message()
            assert info.value.code == ws.CloseCode.ABNORMAL_CLOSURE
            return None
    assert not ended
    return frames


async def test_a_cancelled_write_leaves_the_connection_usable(ws):
    """Cancel a write that waits for the peer to read; no frame is cut in half.

    On trio, a cancel that lands inside the send may cut the frame: the
    connection then fails cleanly instead (``write_after_the_cancel`` checks it).
    """
    async with raw_server(ws) as (client, peer):
        with anyio.move_on_after(0.3) as cancel:
            await client.write_message(ws.MessageType.BINARY, bytes(BIG))
        assert cancel.cancelled_caught
        frames = await write_after_the_cancel(
            ws,
            client,
            peer,
            lambda: client.write_message(ws.MessageType.TEXT, "after the cancel"),
            lambda frames: len(frames) == 2,
        )
        if frames is not None:
            assert [(f.opcode, len(f.payload)) for f in frames] == [
                (Opcode.BINARY, BIG),
                (Opcode.TEXT, len("after the cancel")),
            ]


async def test_a_cancelled_streaming_write_leaves_the_connection_usable(ws):
    async with raw_server(ws, ws.Dialer(write_buffer_size=CHUNK)) as (client, peer):
        writer = client.next_writer(ws.MessageType.BINARY)
        with anyio.move_on_after(0.3) as cancel:
            for _ in range(CAP // CHUNK):
                await writer.write(bytes(CHUNK))
        assert cancel.cancelled_caught

        async def finish() -> None:
            async with writer:  # ends the message; if that fails, gives the writer role back
                await writer.write(b"tail")

        frames = await write_after_the_cancel(
            ws, client, peer, finish, lambda frames: bool(frames) and frames[-1].fin
        )
        if frames is not None:
            assert frames[0].opcode == Opcode.BINARY
            assert {f.opcode for f in frames[1:]} == {Opcode.CONTINUATION}
            assert all(len(f.payload) == CHUNK for f in frames[:-1])
            assert frames[-1].payload.endswith(b"tail")


# -- flow control ------------------------------------------------------------------------------


@dataclass
class Flood:
    """Numbered CHUNK-sized messages written from a task, then a text ``"end"``."""

    #: Writes done when one was found waiting.
    blocked_at: int = 0
    #: Writes done so far.
    sent: int = 0
    stopping: bool = False


async def flood_until_blocked(
    ws: Any,
    conn: Any,
    tg: anyio.abc.TaskGroup,
    seconds: float = 0.5,
    end_after: anyio.Event | None = None,
) -> Flood:
    """Flood ``conn`` from a task in ``tg`` until a write waits ``seconds``; then stop it.

    No write is cancelled (on some adapters a cancel fails the connection:
    see ``cancel_may_cut_a_frame``): the waiting one goes on once the peer
    reads, and the task then writes ``"end"`` (once ``end_after`` is set,
    if given) and returns.
    """
    flood = Flood()
    progress_at = anyio.current_time()

    async def write() -> None:
        nonlocal progress_at
        while not flood.stopping:
            data = flood.sent.to_bytes(4, "big") * (CHUNK // 4)
            await conn.write_message(ws.MessageType.BINARY, data)
            flood.sent += 1
            progress_at = anyio.current_time()
        if end_after is not None:
            await end_after.wait()
        await conn.write_message(ws.MessageType.TEXT, "end")

    tg.start_soon(write)
    while anyio.current_time() - progress_at < seconds:
        if flood.sent * CHUNK >= CAP:
            pytest.fail(f"{CAP} bytes were written and no write ever waited")
        await anyio.sleep(0.02)
    flood.blocked_at = flood.sent
    flood.stopping = True
    return flood


async def read_flood(ws: Any, conn: Any) -> int:
    """Read a flood, checking its order, up to its ``"end"``; return how many messages came."""
    got = 0
    while (message := await conn.read_message())[0] is ws.MessageType.BINARY:
        assert message[1][:4] == got.to_bytes(4, "big")
        got += 1
    assert message == (ws.MessageType.TEXT, "end")
    return got


async def test_writes_wait_for_a_peer_that_never_reads(ws):
    async with raw_server(ws) as (client, _):
        count = 0
        while count * CHUNK < CAP:
            with anyio.move_on_after(0.5) as cancel:  # ends the connection on trio: fine here
                await client.write_message(ws.MessageType.BINARY, bytes(CHUNK))
            if cancel.cancelled_caught:
                break
            count += 1
        assert 0 < count < CAP // CHUNK // 2


async def test_a_flooding_peer_is_paused_while_nobody_reads(ws):
    """The server does not read: the client's writes end up waiting, nothing piles up."""
    async with ws_pair(ws) as (client, server):
        async with anyio.create_task_group() as tg:
            flood = await flood_until_blocked(ws, client, tg)
            assert 0 < flood.blocked_at < CAP // CHUNK // 2
            # Now read: every message arrives, in order, and the writer goes on.
            got = await read_flood(ws, server)
        assert got == flood.sent == flood.blocked_at + 1  # the waiting write went on


async def test_control_frames_pass_once_the_reader_catches_up(ws):
    """A Ping sent to a flooding peer gets its Pong after the backlog, and nothing is lost."""
    async with ws_pair(ws) as (client, server):
        pongs: list[bytes] = []
        server.set_pong_handler(pongs.append)
        answered = anyio.Event()

        async def client_reads() -> None:  # and so answers the Ping, sent before this message
            assert await client.read_message() == (ws.MessageType.TEXT, "to the client")
            answered.set()

        async with anyio.create_task_group() as tg:
            # "end" waits for the client's read: where a reading task sends
            # the Pong (trio), it might otherwise read the Ping after "end" left.
            flood = await flood_until_blocked(ws, client, tg, 0.3, end_after=answered)
            tg.start_soon(client_reads)
            await server.write_control(ws.MessageType.PING, b"still there?")
            await server.write_message(ws.MessageType.TEXT, "to the client")
            got = await read_flood(ws, server)
        assert got == flood.sent
        assert pongs == [b"still there?"]


async def test_two_peers_writing_big_messages_at_each_other_do_not_deadlock(ws):
    """Each side writes more than TCP holds, with a task reading, as applications have.

    Without a reading task this would deadlock where reading needs a task
    (wsproto_trio, as gorilla): both writes would wait for the other side.
    """
    data = bytes(8 * 1024 * 1024)
    upgrader = ws.Upgrader(max_message_size=None)
    dialer = ws.Dialer(max_message_size=None)
    async with ws_pair(ws, upgrader=upgrader, dialer=dialer) as (client, server):
        results: dict[str, Any] = {}

        async def talk(name: str, conn: Any) -> None:
            async def read() -> None:
                results[name] = [await conn.read_message() for _ in range(3)]

            async with anyio.create_task_group() as tg:
                tg.start_soon(read)
                for i in range(3):
                    await conn.write_control(ws.MessageType.PING, b"%d" % i)
                    await conn.write_message(ws.MessageType.BINARY, data)

        async with anyio.create_task_group() as tg:
            tg.start_soon(talk, "client", client)
            tg.start_soon(talk, "server", server)
        assert results["client"] == results["server"] == [(ws.MessageType.BINARY, data)] * 3


# -- keepalive ---------------------------------------------------------------------------------


async def test_keepalive_measures_latency(ws):
    async with echo_server(ws) as server:
        dialer = ws.Dialer(keepalive_interval=0.1, keepalive_timeout=1.0)
        conn, _ = await dialer.dial(url_of(server))
        async with conn:
            assert conn.latency is None
            async with anyio.create_task_group() as tg:
                tg.start_soon(conn.read_message)  # a reader, as applications have
                with anyio.fail_after(2):
                    while conn.latency is None:
                        await anyio.sleep(0.05)
                tg.cancel_scope.cancel()
            assert 0 <= conn.latency < 0.1
            await conn.write_message(ws.MessageType.TEXT, "still open")
            assert await conn.read_message() == (ws.MessageType.TEXT, "still open")


async def test_keepalive_on_the_server_side(ws):
    upgrader = ws.Upgrader(keepalive_interval=0.1)
    async with ws_pair(ws, upgrader=upgrader) as (client, server):
        pings: list[bytes] = []
        async with anyio.create_task_group() as tg:

            def answer(payload: bytes) -> None:
                # A ping handler of one's own replaces the Pong: it sends it itself.
                pings.append(payload)
                tg.start_soon(client.write_control, ws.MessageType.PONG, payload)

            client.set_ping_handler(answer)
            tg.start_soon(server.read_message)
            with anyio.move_on_after(0.45):
                await client.read_message()
            tg.cancel_scope.cancel()
        assert len(pings) >= 2
        assert len(set(pings)) == len(pings)  # each Ping has its own payload
        assert server.latency is not None
        assert 0 <= server.latency < 0.1
        await server.write_message(ws.MessageType.TEXT, "still open")
        assert await client.read_message() == (ws.MessageType.TEXT, "still open")


async def test_keepalive_fails_a_peer_that_never_answers(ws):
    dialer = ws.Dialer(keepalive_interval=0.1, keepalive_timeout=0.2)
    async with raw_server(ws, dialer) as (client, peer):
        start = anyio.current_time()
        with pytest.raises(ws.CloseError) as info:
            await client.read_message()
        elapsed = anyio.current_time() - start
        assert 0.25 <= elapsed < 0.3 + 0.5  # interval + timeout, and some slack
        assert info.value.code == ws.CloseCode.ABNORMAL_CLOSURE  # no Close came back
        frame = await peer.frame()
        assert frame.opcode == Opcode.PING
        code, reason = await peer.close_frame()
        assert code == ws.CloseCode.INTERNAL_ERROR
        assert "keepalive" in reason
        assert await peer.at_eof()


async def test_a_peer_that_floods_pings_and_never_reads_the_pongs_is_throttled(ws):
    """The Pongs we owe cannot pile up: we stop reading until the peer reads them."""
    batch = serialize_pings(500)
    async with raw_client(ws, read_forever) as (peer, _):
        sent = 0
        while sent < CAP:
            with anyio.move_on_after(0.5) as cancel:
                await peer.stream.send(batch)
            if cancel.cancelled_caught:
                break
            sent += len(batch)
        assert sent < CAP // 2, "the server answered every Ping and buffered the Pongs"
        # Reading the Pongs lets the server go on: the connection still works.
        pongs = 0
        with anyio.fail_after(5):
            while pongs < 10:
                frame = await peer.frame()
                assert frame.opcode == Opcode.PONG
                pongs += 1


def serialize_pings(count: int) -> bytes:
    return b"".join(serialize_frame(Opcode.PING, b"p" * 125, mask_key=MASK) for _ in range(count))


async def read_forever(conn: Any) -> None:
    while True:
        await conn.read_message()
