"""Read deadlines and keepalive, in trio.current_time(), on a MockClock over memory streams.

The clock jumps whenever every task waits, so "20 seconds later" takes no
real time and the assertions can be exact.
"""

from __future__ import annotations

import pytest
import trio
from trio_helpers import conn_pair

from wsproto_trio import CloseCode, CloseError, Conn, Dialer, MessageType

pytestmark = pytest.mark.mock_clock

TEXT = MessageType.TEXT


# -- set_read_deadline --------------------------------------------------------------------


async def test_read_deadline_is_permanent() -> None:
    async with conn_pair() as (client, server, _, _):
        start = trio.current_time()
        server.set_read_deadline(start + 3)
        with pytest.raises(TimeoutError) as info:
            await server.read_message()
        assert trio.current_time() == start + 3
        # As in gorilla: a new deadline, or none, does not revive the connection.
        server.set_read_deadline(None)
        await client.write_message(TEXT, "too late")
        with pytest.raises(TimeoutError) as again:
            await server.read_message()
        assert again.value is info.value
        with pytest.raises(TimeoutError):
            await server.next_reader()


async def test_read_deadline_met_then_moved() -> None:
    async with conn_pair() as (client, server, _, _):
        start = trio.current_time()
        server.set_read_deadline(start + 3)
        async with trio.open_nursery() as nursery:
            nursery.start_soon(_write_after, client, 2, "in time")
            assert await server.read_message() == (TEXT, "in time")
        server.set_read_deadline(start + 10)  # moved on before it passed: still usable
        await client.write_message(TEXT, "still fine")
        assert await server.read_message() == (TEXT, "still fine")
        with pytest.raises(TimeoutError):
            await server.read_message()
        assert trio.current_time() == start + 10


async def test_write_deadline_closes_the_connection() -> None:
    async with conn_pair() as (client, server, client_gate, _):
        start = trio.current_time()
        client.set_write_deadline(start + 2)
        client_gate.send_limit = 3  # the peer's buffer is full: the frame sticks, cut
        with pytest.raises(TimeoutError) as info:
            await client.write_message(MessageType.BINARY, bytes(100))
        assert trio.current_time() == start + 2
        client.set_write_deadline(None)
        with pytest.raises(TimeoutError) as again:  # permanent
            await client.write_message(TEXT, "more")
        assert again.value is info.value
        with pytest.raises(CloseError) as seen:  # the connection is closed
            await client.read_message()
        assert seen.value.code == CloseCode.ABNORMAL_CLOSURE
        with pytest.raises(CloseError) as theirs:  # three bytes of a frame, then the end
            await server.read_message()
        assert theirs.value.code == CloseCode.ABNORMAL_CLOSURE


async def test_a_cancel_scope_is_not_a_deadline() -> None:
    """``trio.move_on_after`` gives up on one read; the connection stays usable."""
    async with conn_pair() as (client, server, _, _):
        with trio.move_on_after(3):
            await server.read_message()
        await client.write_message(TEXT, "still here")
        assert await server.read_message() == (TEXT, "still here")


async def _write_after(conn: Conn, delay: float, text: str) -> None:
    await trio.sleep(delay)
    await conn.write_message(TEXT, text)


async def _read_two(conn: Conn) -> None:
    await conn.read_message()
    await conn.read_message()


# -- keepalive ----------------------------------------------------------------------------


async def test_keepalive_measures_latency_while_reading() -> None:
    async with conn_pair(dialer=Dialer(keepalive_interval=20)) as (client, server, _, _):
        start = trio.current_time()
        pings: list[tuple[float, bytes]] = []
        pinged = trio.Event()

        def on_ping(payload: bytes) -> None:
            pings.append((trio.current_time(), payload))
            pinged.set()

        server.set_ping_handler(on_ping)
        assert client.latency is None
        async with trio.open_nursery() as nursery:
            nursery.start_soon(server.read_message)  # the server reads, sees the Ping
            nursery.start_soon(client.read_message)  # the client reads: it sends the Ping
            await pinged.wait()
            sent_at, payload = pings[0]
            assert sent_at == start + 20
            await trio.sleep(0.25)  # the answer takes 250 ms
            await server.write_control(MessageType.PONG, payload)
            await server.write_message(TEXT, "done")  # the client's read returns
            await client.write_message(TEXT, "done")  # the server's read returns
        assert client.latency == pytest.approx(0.25)


async def test_keepalive_pings_only_while_a_task_reads() -> None:
    """No background task: a Conn nobody reads sends no keepalive Ping."""
    async with conn_pair(dialer=Dialer(keepalive_interval=20)) as (client, server, _, _):
        start = trio.current_time()
        pongs: list[float] = []
        client.set_pong_handler(lambda payload: pongs.append(trio.current_time() - start))
        async with trio.open_nursery() as nursery:
            nursery.start_soon(server.read_message)  # answers the Pings it reads
            await trio.sleep(100)  # the client reads nothing...
            with trio.move_on_after(50):  # ...then reads for 50 s
                await client.read_message()
            await client.write_message(TEXT, "done")
        # The Ping overdue since 20 s leaves when the read starts, then one every 20 s.
        assert pongs == [100, 120, 140]


@pytest.mark.parametrize(("interval", "timeout"), [(20, 5), (20, None)])
async def test_keepalive_gives_up_on_a_silent_peer(interval: float, timeout: float | None) -> None:
    dialer = Dialer(keepalive_interval=interval, keepalive_timeout=timeout)
    async with conn_pair(dialer=dialer) as (client, server, _, _):
        server.set_ping_handler(lambda payload: None)  # reads, never answers
        start = trio.current_time()
        async with trio.open_nursery() as nursery:

            async def server_reads() -> None:
                with pytest.raises(CloseError) as seen:
                    await server.read_message()
                assert (seen.value.code, seen.value.text) == (1011, "keepalive ping timeout")

            nursery.start_soon(server_reads)
            with pytest.raises(CloseError) as info:
                await client.read_message()
        # No Pong within the timeout (by default, the interval) after the Ping.
        assert trio.current_time() == start + interval + (timeout or interval)
        assert (info.value.code, info.value.text) == (
            CloseCode.ABNORMAL_CLOSURE,
            "keepalive ping timeout",
        )
        with pytest.raises(CloseError) as again:
            await client.read_message()
        assert again.value is info.value


async def test_keepalive_closes_the_connection_even_if_the_read_is_cancelled_meanwhile() -> None:
    """No Pong came; the read is cancelled while its Close waits for a stuck writer.

    The connection is over all the same: the stream is closed (the peer
    reads the end of it), not left open with nothing to close it.
    """
    dialer = Dialer(keepalive_interval=20, keepalive_timeout=5)
    async with conn_pair(dialer=dialer) as (client, server, gate, _):
        start = trio.current_time()
        async with trio.open_nursery() as nursery:
            gate.send_limit = 0  # the peer reads nothing: the writer gets stuck, holding the lock
            nursery.start_soon(client.write_message, MessageType.BINARY, b"stuck")
            with trio.move_on_at(start + 25.5) as scope:  # the Close waits for the lock till 26
                await client.read_message()
            assert scope.cancelled_caught
            assert trio.current_time() == start + 25.5
            with trio.fail_after(1), pytest.raises(CloseError) as seen:
                await server.read_message()
            assert seen.value.code == CloseCode.ABNORMAL_CLOSURE  # the end, no Close
            nursery.cancel_scope.cancel()  # the writer, stuck at the gate


async def test_keepalive_ping_does_not_make_the_reader_wait_for_a_stuck_writer() -> None:
    """The reading task queues the Ping and reads on; the stuck writer sends it after its frame.

    Waiting for the send lock instead would stop the reading task for as
    long as the writer is stuck: two peers stuck writing to each other then
    never read again.
    """
    async with conn_pair(dialer=Dialer(keepalive_interval=20)) as (client, server, gate, _):
        start = trio.current_time()
        client.set_pong_handler(lambda payload: pongs.append(trio.current_time() - start))
        pongs: list[float] = []
        async with trio.open_nursery() as nursery:
            gate.send_limit = 0  # the peer reads nothing: the writer gets stuck
            nursery.start_soon(client.write_message, MessageType.BINARY, b"stuck")
            nursery.start_soon(_write_after, server, 30, "read while the writer is stuck")
            assert await client.read_message() == (TEXT, "read while the writer is stuck")
            assert trio.current_time() == start + 30
            nursery.start_soon(_read_two, server)  # "stuck", then the Ping, answered, and "done"
            gate.open()  # the writer's frame goes, then the Ping queued behind it
            nursery.start_soon(_write_after, server, 1, "done")
            assert await client.read_message() == (TEXT, "done")
            await client.write_message(TEXT, "done")  # the server's read returns
        assert pongs == [30]
