"""What "no background task" means, over memory streams on a MockClock.

The reading task parses what it reads and sends what that calls for
(Pongs, the Close echo); one send lock orders those with the writer's
frames, and the reading task never waits for a busy writer: what it
queued goes out right after the writer's frame.
"""

from __future__ import annotations

import pytest
import trio
import trio.testing
from trio_helpers import conn_pair

from wsproto_trio import Conn, MessageType

pytestmark = pytest.mark.mock_clock

TEXT = MessageType.TEXT
BINARY = MessageType.BINARY


async def test_pongs_leave_only_while_a_task_reads() -> None:
    async with conn_pair() as (client, server, _, _):
        pongs: list[bytes] = []
        client.set_pong_handler(pongs.append)
        await client.write_control(MessageType.PING, b"anyone?")
        async with trio.open_nursery() as nursery:
            nursery.start_soon(client.read_message)  # to see the Pong when it comes
            await trio.sleep(60)
            assert pongs == []  # nobody reads on the server: nobody answers
            with trio.move_on_after(1):  # a read, even one given up, answers
                await server.read_message()
            await trio.testing.wait_all_tasks_blocked()
            assert pongs == [b"anyone?"]
            await server.write_message(TEXT, "done")


async def test_a_stuck_writer_does_not_stop_the_reader() -> None:
    async with conn_pair() as (client, server, _, server_gate):
        pongs: list[bytes] = []
        client.set_pong_handler(pongs.append)
        async with trio.open_nursery() as nursery:
            server_gate.send_limit = 10  # the client reads nothing yet: the frame sticks
            nursery.start_soon(server.write_message, BINARY, bytes(1000))
            await server_gate.stalled.wait()
            await client.write_control(MessageType.PING, b"ping")
            await client.write_message(TEXT, "hello")
            # The server reads on: the Pong it owes waits behind the stuck frame.
            assert await server.read_message() == (TEXT, "hello")
            server_gate.open()
            assert await client.read_message() == (BINARY, bytes(1000))
        await server.write_message(TEXT, "after")
        assert await client.read_message() == (TEXT, "after")
        assert pongs == [b"ping"]  # sent by the writer, right after its frame


async def test_both_ends_write_at_once_over_unbuffered_streams() -> None:
    """lockstep_stream_pair: each send waits until the peer has read it all.

    Both ends write a message and a Ping at once, from two tasks, while a
    third reads: nothing waits on anything that waits on it, the messages
    cross and each Pong comes back, sent by whichever of the reading task
    and the writers holds the send lock.
    """
    async with conn_pair(lockstep=True) as (client, server, _, _):
        data = {"client": bytes(range(256)) * 400, "server": bytes(range(255, -1, -1)) * 400}
        received: dict[str, list[tuple[MessageType, str | bytes]]] = {}

        async def run(name: str, conn: Conn) -> None:
            ponged = trio.Event()
            conn.set_pong_handler(lambda payload: ponged.set())

            async def write_then_end() -> None:
                async with trio.open_nursery() as writers:
                    writers.start_soon(conn.write_message, BINARY, data[name])
                    writers.start_soon(conn.write_control, MessageType.PING, name.encode())
                await ponged.wait()
                await conn.write_message(TEXT, "end")  # the peer reads until then

            async with trio.open_nursery() as nursery:
                nursery.start_soon(write_then_end)
                received[name] = [await conn.read_message(), await conn.read_message()]

        async with trio.open_nursery() as nursery:
            nursery.start_soon(run, "client", client)
            nursery.start_soon(run, "server", server)
        assert received == {
            "client": [(BINARY, data["server"]), (TEXT, "end")],
            "server": [(BINARY, data["client"]), (TEXT, "end")],
        }
