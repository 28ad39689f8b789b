"""The hostile-input suite: each adapter's real server, attacked over loopback.

The ``server`` fixture starts an echo server of one adapter (``sync``,
``asyncio`` or ``trio``; every test runs against all three) in a background
thread, which runs its own event loop for asyncio and trio, and yields a
:class:`ServerHandle` with the port. Tests attack it with plain blocking
sockets (``hostile_helpers.RawClient``), check the reaction the RFC asks
for, and then check that the server still serves a new connection.

Options for the server's ``Upgrader`` come from a marker::

    @pytest.mark.upgrader(handshake_timeout=0.5)
    def test_slow_request(server): ...

The handle counts the echo handlers still running (``wait_handlers()``),
so a test can check that a connection was released, and ``shutdown()``
stops the server from inside a test. Teardown shuts the server down (if the
test did not), checks that it stopped in bounded time, and fails the test if
the server thread raised or anything logged an error (a handler that
crashed, an asyncio callback that raised, ...).
"""

from __future__ import annotations

import asyncio
import functools
import logging
import queue
import threading
from collections.abc import Callable, Iterator
from typing import Any

import pytest
import trio
from hostile_helpers import SHUTDOWN_TIMEOUT, ServerHandle

import wsproto_asyncio
import wsproto_sync
import wsproto_trio
from wsproto_core import CloseError

ADAPTERS = ["sync", "asyncio", "trio"]
STOP_TIMEOUT = SHUTDOWN_TIMEOUT + 5.0  # the server thread must end within this


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers", "upgrader(**options): Upgrader options of the hostile suite's echo server"
    )


def _sync_echo(handle: ServerHandle) -> Callable[[wsproto_sync.Conn], None]:
    def echo(conn: wsproto_sync.Conn) -> None:
        handle.handler_started()
        try:
            while True:
                conn.write_message(*conn.read_message())
        except CloseError:
            pass  # other errors go to the server, which logs them at debug level
        finally:
            handle.handler_ended()

    return echo


def _async_echo(handle: ServerHandle) -> Callable[[Any], Any]:
    async def echo(conn: Any) -> None:
        handle.handler_started()
        try:
            while True:
                await conn.write_message(*await conn.read_message())
        except CloseError:
            pass
        finally:
            handle.handler_ended()

    return echo


class _ServerThread:
    """Runs one adapter's ``serve()`` in a thread; ``start()`` returns once it listens."""

    def __init__(self, handle: ServerHandle, options: dict[str, Any]) -> None:
        self.handle = handle
        self.options = options
        self.error: BaseException | None = None
        self._started: queue.Queue[tuple[int, Callable[[], None]] | BaseException] = queue.Queue()
        self._stop: Callable[[], None] | None = None
        target = getattr(self, f"_run_{handle.adapter}")
        self.thread = threading.Thread(target=self._run, args=(target,), daemon=True)

    def start(self) -> int:
        self.thread.start()
        started = self._started.get(timeout=STOP_TIMEOUT)
        if isinstance(started, BaseException):
            raise started
        port, self._stop = started
        return port

    def stop(self) -> None:
        assert self._stop is not None
        self._stop()
        self.thread.join(STOP_TIMEOUT)
        assert not self.thread.is_alive(), "the server did not shut down in time"
        if self.error is not None:
            raise self.error

    def _run(self, target: Callable[[], None]) -> None:
        try:
            target()
        except BaseException as exc:
            self.error = exc
            self._started.put(exc)  # if start() still waits

    def _run_sync(self) -> None:
        server = wsproto_sync.serve(
            _sync_echo(self.handle),
            "127.0.0.1",
            0,
            upgrader=wsproto_sync.Upgrader(**self.options),
            shutdown_timeout=SHUTDOWN_TIMEOUT,
        )
        with server:
            self._started.put((server.address[1], server.shutdown))
            server.serve_forever()

    def _run_asyncio(self) -> None:
        async def main() -> None:
            loop = asyncio.get_running_loop()
            stop = asyncio.Event()
            server = await wsproto_asyncio.serve(
                _async_echo(self.handle),
                "127.0.0.1",
                0,
                upgrader=wsproto_asyncio.Upgrader(**self.options),
                shutdown_timeout=SHUTDOWN_TIMEOUT,
            )
            async with server:
                self._started.put(
                    (server.address[1], functools.partial(loop.call_soon_threadsafe, stop.set))
                )
                await stop.wait()

        asyncio.run(main())

    def _run_trio(self) -> None:
        async def main() -> None:
            stop = trio.Event()
            async with trio.open_nursery() as nursery:
                serve = functools.partial(
                    wsproto_trio.serve,
                    _async_echo(self.handle),
                    "127.0.0.1",
                    0,
                    upgrader=wsproto_trio.Upgrader(**self.options),
                    shutdown_timeout=SHUTDOWN_TIMEOUT,
                )
                server = await nursery.start(serve)
                token = trio.lowlevel.current_trio_token()
                self._started.put(
                    (server.address[1], functools.partial(token.run_sync_soon, stop.set))
                )
                await stop.wait()
                await server.shutdown()

        trio.run(main)


class _ErrorLog(logging.Handler):
    """Collects the log records at ERROR and above, from any thread."""

    def __init__(self) -> None:
        super().__init__(logging.ERROR)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


@pytest.fixture(params=ADAPTERS)
def server(request: pytest.FixtureRequest) -> Iterator[ServerHandle]:
    """An echo server of one adapter, listening on 127.0.0.1; yields its handle."""
    marker = request.node.get_closest_marker("upgrader")
    options = dict(marker.kwargs) if marker is not None else {}
    errors = _ErrorLog()
    root = logging.getLogger()
    root.addHandler(errors)
    try:
        handle = ServerHandle(request.param)
        runner = _ServerThread(handle, options)
        handle.port = runner.start()
        handle._stop = runner.stop
        yield handle
        handle.shutdown()
    finally:
        root.removeHandler(errors)
    logged = [f"{r.name}: {r.getMessage()}" for r in errors.records]
    assert not logged, f"the server logged errors: {logged}"
