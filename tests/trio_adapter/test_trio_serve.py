"""serve() in trio's structured concurrency: nursery.start, shutdown(), cancellation.

Real loopback sockets and the real clock; timeouts are short so the file
stays fast. "No task is left" is checked by walking the run's task tree.
"""

from __future__ import annotations

import logging
from functools import partial

import pytest
import trio
from trio_helpers import STEP, all_tasks, serving, url_of

from wsproto_trio import CloseCode, CloseError, Conn, Dialer, MessageType, Server, serve

TEXT = MessageType.TEXT


async def echo(conn: Conn) -> None:
    async for message in conn:  # ends on the client's Close, or on the server's 1001 echoed
        await conn.write_message(TEXT if isinstance(message, str) else MessageType.BINARY, message)


async def dial(server: Server) -> Conn:
    conn, response = await Dialer(handshake_timeout=STEP).dial(url_of(server))
    assert response.status_code == 101
    return conn


async def assert_refused(address: tuple[str, int]) -> None:
    with pytest.raises(OSError, match="all attempts to connect"):
        await trio.open_tcp_stream(*address)


async def test_shutdown_returns_from_serve_and_leaves_no_task() -> None:
    before = all_tasks()
    returned = trio.Event()

    async def run_serve(task_status: trio.TaskStatus[Server]) -> None:
        await serve(echo, "127.0.0.1", 0, shutdown_timeout=STEP, task_status=task_status)
        returned.set()

    async with trio.open_nursery() as nursery:
        server = await nursery.start(run_serve)
        assert isinstance(server, Server)
        host, port = server.address
        assert (host, port > 0) == ("127.0.0.1", True)
        async with await dial(server) as conn:
            await conn.write_message(TEXT, "héllo")
            assert await conn.read_message() == (TEXT, "héllo")
            async with trio.open_nursery() as reading:
                reading.start_soon(server.shutdown)
                with pytest.raises(CloseError) as info:
                    await conn.read_message()  # reading, the client answers the Close
            assert (info.value.code, info.value.text) == (1001, "server shutting down")
        # The handler saw the echo and returned well before shutdown_timeout,
        # and by the time shutdown() returned, serve() had returned too.
        assert returned.is_set()
        assert not nursery.child_tasks
    await assert_refused((host, port))
    assert all_tasks() == before


async def test_cancelling_serve_drops_every_connection() -> None:
    before = all_tasks()
    handler_cancelled = trio.Event()

    async def handler(conn: Conn) -> None:
        try:
            await conn.write_message(TEXT, "hello")
            await trio.sleep_forever()
        except trio.Cancelled:
            handler_cancelled.set()
            raise

    with trio.CancelScope() as scope:
        async with trio.open_nursery() as nursery:
            server = await nursery.start(partial(serve, handler, "127.0.0.1", 0))
            conns = [await dial(server) for _ in range(3)]
            for conn in conns:
                assert await conn.read_message() == (TEXT, "hello")
            scope.cancel()
    assert handler_cancelled.is_set()
    for conn in conns:  # no closing handshake: a cancel is abrupt
        with pytest.raises(CloseError) as info:
            await conn.read_message()
        assert info.value.code == CloseCode.ABNORMAL_CLOSURE
        await conn.aclose()
    await assert_refused(server.address)
    assert all_tasks() == before


async def test_handlers_run_in_serves_nursery_and_are_cancelled_after_shutdown_timeout() -> None:
    handler_tasks: list[trio.lowlevel.Task] = []
    cancelled = trio.Event()

    async def stubborn(conn: Conn) -> None:
        """Ignores the server's Close: it neither reads nor returns."""
        handler_tasks.append(trio.lowlevel.current_task())
        try:
            await trio.sleep_forever()
        except trio.Cancelled:
            cancelled.set()
            raise

    serve_tasks: list[trio.lowlevel.Task] = []

    async def run_serve(task_status: trio.TaskStatus[Server]) -> None:
        serve_tasks.append(trio.lowlevel.current_task())
        await serve(stubborn, "127.0.0.1", 0, shutdown_timeout=0.3, task_status=task_status)

    async with trio.open_nursery() as nursery:
        server = await nursery.start(run_serve)
        async with await dial(server) as conn:
            with trio.fail_after(STEP):
                while not handler_tasks:
                    await trio.sleep(0.01)
            # The handler's task descends from the task running serve().
            task: trio.lowlevel.Task | None = handler_tasks[0]
            while task is not None and task is not serve_tasks[0]:
                task = task.parent_nursery.parent_task if task.parent_nursery else None
            assert task is serve_tasks[0]

            start = trio.current_time()
            async with trio.open_nursery() as reading:
                reading.start_soon(server.shutdown)
                with pytest.raises(CloseError) as info:
                    await conn.read_message()  # the Close comes at once...
            assert info.value.code == CloseCode.GOING_AWAY
            # ...the handler is cancelled only after shutdown_timeout.
            assert 0.3 <= trio.current_time() - start < 0.3 + 1.0
            assert cancelled.is_set()


async def test_a_handler_may_shut_the_server_down() -> None:
    """shutdown() from a handler returns at once: serve() can't end before the handler."""
    returned_in: list[float] = []

    async def handler(conn: Conn) -> None:
        await conn.read_message()  # "quit"
        start = trio.current_time()
        await server.shutdown()
        returned_in.append(trio.current_time() - start)

    async with trio.open_nursery() as nursery:
        server = await nursery.start(partial(serve, handler, "127.0.0.1", 0, shutdown_timeout=STEP))
        async with await dial(server) as conn:
            await conn.write_message(TEXT, "quit")
            with pytest.raises(CloseError) as info:
                await conn.read_message()
            assert (info.value.code, info.value.text) == (1001, "server shutting down")
        with trio.fail_after(1):  # not shutdown_timeout: serve() ends with the handler
            while nursery.child_tasks:
                await trio.sleep(0.01)
    assert returned_in[0] < 0.5
    await assert_refused(server.address)


async def test_a_failing_handler_does_not_stop_serve(caplog: pytest.LogCaptureFixture) -> None:
    """A handler's exception is logged; it does not cancel the server's nursery."""

    async def handler(conn: Conn) -> None:
        if (await conn.read_message())[1] == "fail":
            raise ValueError("the handler failed")
        await conn.write_message(TEXT, "fine")

    with caplog.at_level(logging.ERROR, logger="wsproto_trio.server"):
        async with serving(handler) as server:
            async with await dial(server) as conn:
                await conn.write_message(TEXT, "fail")
                with pytest.raises(CloseError) as info:
                    await conn.read_message()
                assert info.value.code == CloseCode.ABNORMAL_CLOSURE
            async with await dial(server) as conn:
                await conn.write_message(TEXT, "next")
                assert await conn.read_message() == (TEXT, "fine")
    assert "the handler failed" in caplog.text


async def test_close_from_another_task_wakes_the_reader_on_a_socket() -> None:
    release = trio.Event()

    async def handler(conn: Conn) -> None:
        await conn.write_message(TEXT, "hello")
        await release.wait()

    async with serving(handler) as server:
        conn = await dial(server)
        assert await conn.read_message() == (TEXT, "hello")
        async with trio.open_nursery() as nursery:

            async def close_soon() -> None:
                await trio.sleep(0.05)
                await conn.aclose()

            nursery.start_soon(close_soon)
            with pytest.raises(CloseError) as info:
                await conn.read_message()
        assert info.value.code == CloseCode.ABNORMAL_CLOSURE
        release.set()


async def test_a_write_cancelled_mid_frame_on_a_socket_fails_the_connection() -> None:
    """A server's write to a client that doesn't read is stuck mid-frame when cancelled."""
    result: list[BaseException] = []
    big = bytes(64 * 1024 * 1024)  # more than both sockets' buffers hold
    cancelled = trio.Event()

    async def handler(conn: Conn) -> None:
        with trio.move_on_after(0.3) as scope:
            await conn.write_message(MessageType.BINARY, big)
        assert scope.cancelled_caught
        cancelled.set()
        try:
            await conn.read_message()
        except CloseError as exc:
            result.append(exc)

    async with serving(handler) as server:
        conn = await dial(server)
        async with conn:
            conn.set_read_limit(None)
            with trio.fail_after(STEP):
                await cancelled.wait()
            with pytest.raises(CloseError) as info:  # part of a frame, then the end
                await conn.read_message()
            assert info.value.code == CloseCode.ABNORMAL_CLOSURE
    assert [exc.code for exc in result] == [CloseCode.ABNORMAL_CLOSURE]  # type: ignore[attr-defined]
