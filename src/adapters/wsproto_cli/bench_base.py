"""The parts of ``wsproto bench`` that every implementation and workload shares.

A workload drives a :class:`Session` (one client connection to an echo
server), whatever the client's runtime: asyncio (:class:`AsyncClient` on an
event loop of the session's own), threads (:class:`SyncClient`), trio (an
:class:`AsyncClient` on a trio loop in a thread of the session's own), or
another process (Node's ``ws``, see :mod:`wsproto_cli.bench_impls`). A
sans-I/O layer is driven without sockets, through :class:`SansIO`.

Invariants:

* Everything is bounded: every operation of a session runs within the
  measurement's deadline, and a server process that does not start in
  time, or does not stop when asked, is killed.
* The server and the client of a cell are the same library; only the
  clients of W5 and of the broadcast are ours, the same raw sockets for
  every server.
"""

from __future__ import annotations

import asyncio
import importlib.metadata
import importlib.util
import json
import os
import queue
import subprocess
import sys
import tempfile
import threading
import time
from abc import ABC, abstractmethod
from collections.abc import Awaitable, Callable, Sequence
from contextlib import AbstractAsyncContextManager, suppress
from dataclasses import asdict, dataclass
from time import perf_counter
from typing import IO, Any, TypeVar

__all__ = [
    "AsyncClient",
    "AsyncEchoClient",
    "BenchError",
    "Context",
    "Impl",
    "Metric",
    "Options",
    "Ready",
    "SansIO",
    "ServerProcess",
    "Servers",
    "Session",
    "Settings",
    "SyncClient",
    "SyncEchoClient",
    "TrioEchoClient",
    "UsageError",
    "Workload",
    "LOOP_VARIABLE",
    "async_session",
    "event_loop_name",
    "run_asyncio",
    "serve_asyncio_until_stdin_closes",
    "sync_session",
    "trio_session",
]

Payload = str | bytes
T = TypeVar("T")

HOST = "127.0.0.1"
MIB = 1024 * 1024
SERVER_START_TIMEOUT = 20.0  # seconds for a server process to print READY
SERVER_STOP_TIMEOUT = 5.0  # seconds for it to exit once its stdin is closed
CLOSE_TIMEOUT = 2.0  # seconds a client's closing handshake may take


#: The asyncio event loop every asyncio implementation runs on, client and
#: server: ``asyncio`` (the default) or ``uvloop`` (``--loop``). An environment
#: variable, so the server processes inherit it.
LOOP_VARIABLE = "WSPROTO_BENCH_LOOP"


def event_loop_name() -> str:
    """The asyncio event loop of this run: ``asyncio`` or ``uvloop``."""
    return os.environ.get(LOOP_VARIABLE) or "asyncio"


def _loop_factory() -> Callable[[], asyncio.AbstractEventLoop] | None:
    if event_loop_name() != "uvloop":
        return None
    import uvloop

    return uvloop.new_event_loop


def new_runner() -> asyncio.Runner:
    """An asyncio runner on the event loop of this run."""
    return asyncio.Runner(loop_factory=_loop_factory())


def run_asyncio(operation: Awaitable[T]) -> T:
    """``asyncio.run()``, on the event loop of this run."""

    async def main() -> T:
        return await operation

    with new_runner() as runner:
        return runner.run(main())


class BenchError(Exception):
    """A measurement went wrong: a wrong echo, a server that did not start..."""


class UsageError(ValueError):
    """The command line names an unknown workload or implementation."""


# -- configuration ---------------------------------------------------------------


@dataclass(frozen=True)
class Options:
    """What a workload asks of both ends of its connections.

    Attributes:
        compression: negotiate permessage-deflate (W6, the broadcast).
        read_limit: the largest message either end accepts, above every
            workload's messages, so no limit is hit.
        broadcast: the server is a broadcast server (see
            :mod:`wsproto_cli.bench_impls`), not an echo server.
    """

    compression: bool = False
    read_limit: int = 16 * MIB
    broadcast: bool = False


@dataclass(frozen=True)
class Settings:
    """How long and how often each figure is measured.

    Attributes:
        duration: seconds per measurement (pipelined workloads size their
            message count to last about as long).
        repeat: measurements per figure; the median is reported.
        quick: a smoke run: shorter warm-ups and calibrations.
        connections: how many connections W5 and the broadcast open.
    """

    duration: float = 2.0
    repeat: int = 3
    quick: bool = False
    connections: int = 10_000

    @property
    def warmup(self) -> float:
        """Seconds of the workload run, unmeasured, before each measurement."""
        return min(0.5, max(0.05, self.duration / 10))

    @property
    def calibration(self) -> int:
        """Messages of the pipelined warm-up, which also sizes the measurement."""
        return 200 if self.quick else 2000

    @property
    def budget(self) -> float:
        """Seconds one measurement may take, connecting and closing included."""
        return 15.0 + 5.0 * self.duration


# -- what workloads drive: sessions and clients ----------------------------------


class Session(ABC):
    """One open client connection to an echo server, driven by a workload.

    A session runs its client's operations to completion whatever the
    client's runtime, within the measurement's deadline. Use it as a
    context manager: leaving closes the connection.
    """

    @abstractmethod
    def exchange(self, message: Payload) -> Payload:
        """Send ``message`` and return its echo."""

    @abstractmethod
    def round_trips(self, message: Payload, duration: float) -> tuple[int, float]:
        """Send ``message`` and wait for its echo, again and again, for ``duration`` seconds.

        Returns:
            The number of round trips and the seconds they took.
        """

    @abstractmethod
    def pipelined(self, message: Payload, count: int) -> float:
        """Send ``message`` ``count`` times without waiting; return the seconds until every echo."""

    @abstractmethod
    def close(self) -> None:
        """Close the connection, within the deadline (or a short grace period past it)."""

    def compressed(self) -> bool | None:
        """Whether permessage-deflate is in use, if the client tells (else ``None``)."""
        return None

    def __enter__(self) -> Session:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


class AsyncClient(ABC):
    """An asyncio or trio client connection: the operations of a :class:`Session`, as coroutines."""

    @abstractmethod
    async def exchange(self, message: Payload) -> Payload:
        """As :meth:`Session.exchange`."""

    @abstractmethod
    async def round_trips(self, message: Payload, duration: float) -> tuple[int, float]:
        """As :meth:`Session.round_trips`."""

    @abstractmethod
    async def pipelined(self, message: Payload, count: int) -> float:
        """As :meth:`Session.pipelined`."""

    @abstractmethod
    async def close(self) -> None:
        """Close the connection, with a closing handshake."""

    def compressed(self) -> bool | None:
        """As :meth:`Session.compressed`."""
        return None


class AsyncEchoClient(AsyncClient):
    """The workloads on any asyncio library with ``send`` and ``recv`` coroutines.

    A subclass sets :attr:`recv` and implements :meth:`sender`, both returning
    the library's own bound methods where it can, so that the loops below
    call the library directly.
    """

    #: Receives the next message; what it returns goes through :meth:`payload`.
    recv: Callable[[], Awaitable[object]]

    @abstractmethod
    def sender(self, message: Payload) -> Callable[[Payload], Awaitable[object]]:
        """The coroutine function that sends messages like ``message`` (text or binary)."""

    def payload(self, received: object) -> Payload:
        """The message in what :attr:`recv` returned."""
        assert isinstance(received, str | bytes)
        return received

    async def exchange(self, message: Payload) -> Payload:
        """As :meth:`Session.exchange`."""
        await self.sender(message)(message)
        return self.payload(await self.recv())

    async def round_trips(self, message: Payload, duration: float) -> tuple[int, float]:
        """As :meth:`Session.round_trips`."""
        send, recv = self.sender(message), self.recv
        count = 0
        start = perf_counter()
        end = start + duration
        while True:
            await send(message)
            await recv()
            count += 1
            if (now := perf_counter()) >= end:
                return count, now - start

    async def pipelined(self, message: Payload, count: int) -> float:
        """As :meth:`Session.pipelined`: a reader task counts the echoes."""
        send, recv = self.sender(message), self.recv

        async def read_all() -> None:
            for _ in range(count):
                await recv()

        start = perf_counter()
        reader = asyncio.get_running_loop().create_task(read_all())
        try:
            for _ in range(count):
                await send(message)
            await reader
        finally:
            reader.cancel()
        return perf_counter() - start


class TrioEchoClient(AsyncEchoClient):
    """:class:`AsyncEchoClient` for trio libraries: the pipelined reader runs in a nursery."""

    async def pipelined(self, message: Payload, count: int) -> float:
        """As :meth:`Session.pipelined`: a reader task counts the echoes."""
        import trio

        send, recv = self.sender(message), self.recv

        async def read_all() -> None:
            for _ in range(count):
                await recv()

        start = perf_counter()
        async with trio.open_nursery() as nursery:
            nursery.start_soon(read_all)
            for _ in range(count):
                await send(message)
        return perf_counter() - start


class SyncClient(ABC):
    """A blocking client connection: the operations of a :class:`Session`."""

    #: The measurement's deadline (``time.monotonic()``), set by the session.
    deadline: float = float("inf")

    @abstractmethod
    def exchange(self, message: Payload) -> Payload:
        """As :meth:`Session.exchange`."""

    @abstractmethod
    def round_trips(self, message: Payload, duration: float) -> tuple[int, float]:
        """As :meth:`Session.round_trips`."""

    @abstractmethod
    def pipelined(self, message: Payload, count: int) -> float:
        """As :meth:`Session.pipelined`."""

    @abstractmethod
    def close(self) -> None:
        """Close the connection, with a closing handshake."""

    @abstractmethod
    def abort(self) -> None:
        """Break the connection from another thread, so that blocked calls fail."""

    def compressed(self) -> bool | None:
        """As :meth:`Session.compressed`."""
        return None


class SyncEchoClient(SyncClient):
    """The workloads on any blocking library with ``send`` and ``recv`` calls.

    The library must allow one thread to receive while another sends.
    """

    #: Receives the next message; what it returns goes through :meth:`payload`.
    recv: Callable[[], object]

    @abstractmethod
    def sender(self, message: Payload) -> Callable[[Payload], object]:
        """The function that sends messages like ``message`` (text or binary)."""

    def payload(self, received: object) -> Payload:
        """The message in what :attr:`recv` returned."""
        assert isinstance(received, str | bytes)
        return received

    def exchange(self, message: Payload) -> Payload:
        """As :meth:`Session.exchange`."""
        self.sender(message)(message)
        return self.payload(self.recv())

    def round_trips(self, message: Payload, duration: float) -> tuple[int, float]:
        """As :meth:`Session.round_trips`."""
        send, recv = self.sender(message), self.recv
        count = 0
        start = perf_counter()
        end = start + duration
        while True:
            send(message)
            recv()
            count += 1
            if (now := perf_counter()) >= end:
                return count, now - start

    def pipelined(self, message: Payload, count: int) -> float:
        """As :meth:`Session.pipelined`: a reader thread counts the echoes."""
        send, recv = self.sender(message), self.recv
        failures: list[BaseException] = []

        def read_all() -> None:
            try:
                for _ in range(count):
                    recv()
            except BaseException as exc:  # reported by the sending thread
                failures.append(exc)

        reader = threading.Thread(target=read_all, name="bench-reader", daemon=True)
        start = perf_counter()
        reader.start()
        try:
            for _ in range(count):
                send(message)
        finally:
            # The session's watchdog aborts the connection at the deadline,
            # which ends the reader; the margin only covers a stuck library.
            reader.join(max(0.0, self.deadline - time.monotonic()) + 5.0)
        elapsed = perf_counter() - start
        if failures:
            raise failures[0]
        if reader.is_alive():
            raise TimeoutError("the echoes did not all arrive before the deadline")
        return elapsed


class _AsyncSession(Session):
    """Runs an asyncio client on an event loop of its own, every call within the deadline."""

    def __init__(self, connect: Callable[[], Awaitable[AsyncClient]], deadline: float) -> None:
        self._deadline = deadline
        self._runner = new_runner()
        try:
            self._client = self._run(connect(), deadline)
        except BaseException:
            self._runner.close()
            raise

    def _run(self, operation: Awaitable[T], deadline: float) -> T:
        async def bounded() -> T:
            async with asyncio.timeout(max(0.0, deadline - time.monotonic())):
                return await operation

        return self._runner.run(bounded())

    def exchange(self, message: Payload) -> Payload:
        return self._run(self._client.exchange(message), self._deadline)

    def round_trips(self, message: Payload, duration: float) -> tuple[int, float]:
        return self._run(self._client.round_trips(message, duration), self._deadline)

    def pipelined(self, message: Payload, count: int) -> float:
        return self._run(self._client.pipelined(message, count), self._deadline)

    def compressed(self) -> bool | None:
        return self._client.compressed()

    def close(self) -> None:
        grace = max(self._deadline, time.monotonic() + CLOSE_TIMEOUT)
        try:
            with suppress(Exception):  # the measurement, not the close, reports errors
                self._run(self._client.close(), grace)
        finally:
            self._runner.close()


class _SyncSession(Session):
    """Runs a blocking client; a watchdog thread aborts it at the deadline."""

    def __init__(self, connect: Callable[[float], SyncClient], deadline: float) -> None:
        self._client = connect(max(0.1, deadline - time.monotonic()))
        self._client.deadline = deadline
        self._watchdog = threading.Timer(max(0.0, deadline - time.monotonic()), self._client.abort)
        self._watchdog.daemon = True
        self._watchdog.start()

    def exchange(self, message: Payload) -> Payload:
        return self._client.exchange(message)

    def round_trips(self, message: Payload, duration: float) -> tuple[int, float]:
        return self._client.round_trips(message, duration)

    def pipelined(self, message: Payload, count: int) -> float:
        return self._client.pipelined(message, count)

    def compressed(self) -> bool | None:
        return self._client.compressed()

    def close(self) -> None:
        try:
            with suppress(Exception):  # the measurement, not the close, reports errors
                self._client.close()
        finally:
            self._watchdog.cancel()
            self._client.abort()  # frees the socket if closing failed; harmless otherwise


class _TrioSession(Session):
    """Runs a trio client in a trio loop on a thread of its own, every call within the deadline.

    trio has no re-entrant runner like ``asyncio.Runner``, and its libraries
    open connections in ``async with`` blocks (with a nursery behind), so the
    thread's main task holds the block open until :meth:`close`, and each
    operation runs as a task of that loop (``trio.from_thread.run``).
    """

    def __init__(
        self, open_client: Callable[[], AbstractAsyncContextManager[AsyncClient]], deadline: float
    ) -> None:
        import trio

        self._deadline = deadline
        started: queue.Queue[BaseException | tuple[Any, AsyncClient, Any]] = queue.Queue()
        self._failure: BaseException | None = None

        async def host() -> None:
            # The whole session, its close included, ends by the deadline plus a grace period.
            with trio.move_on_after(max(0.0, deadline - time.monotonic()) + CLOSE_TIMEOUT):
                async with open_client() as client:
                    stop = trio.Event()
                    started.put((trio.lowlevel.current_trio_token(), client, stop))
                    await stop.wait()
            started.put(TimeoutError("the connection did not open before the deadline"))

        def main() -> None:
            try:
                trio.run(host)
            except BaseException as exc:  # reported by open or close, in the caller's thread
                self._failure = exc
                started.put(exc)

        self._thread = threading.Thread(target=main, name="bench-trio", daemon=True)
        self._thread.start()
        try:
            first = started.get(timeout=max(0.1, deadline - time.monotonic()) + CLOSE_TIMEOUT)
        except queue.Empty:
            raise TimeoutError("the trio client did not connect before the deadline") from None
        if isinstance(first, BaseException):
            raise first
        self._token, self._client, self._stop = first

    def _run(self, operation: Callable[[], Awaitable[T]]) -> T:
        import trio

        async def bounded() -> T:
            with trio.fail_after(max(0.0, self._deadline - time.monotonic())):
                return await operation()

        return trio.from_thread.run(bounded, trio_token=self._token)

    def exchange(self, message: Payload) -> Payload:
        return self._run(lambda: self._client.exchange(message))

    def round_trips(self, message: Payload, duration: float) -> tuple[int, float]:
        return self._run(lambda: self._client.round_trips(message, duration))

    def pipelined(self, message: Payload, count: int) -> float:
        return self._run(lambda: self._client.pipelined(message, count))

    def compressed(self) -> bool | None:
        return self._client.compressed()

    def close(self) -> None:
        import trio

        with suppress(trio.RunFinishedError):  # the loop already ended (at the deadline)
            trio.from_thread.run_sync(self._stop.set, trio_token=self._token)
        self._thread.join(max(0.0, self._deadline - time.monotonic()) + 2 * CLOSE_TIMEOUT)


def async_session(
    connect: Callable[[str, Options], Awaitable[AsyncClient]],
) -> Callable[[str, Options, float], Session]:
    """Make ``Impl.connect`` from a coroutine function that opens an asyncio client."""

    def open_session(url: str, options: Options, deadline: float) -> Session:
        return _AsyncSession(lambda: connect(url, options), deadline)

    return open_session


def sync_session(
    connect: Callable[[str, Options, float], SyncClient],
) -> Callable[[str, Options, float], Session]:
    """Make ``Impl.connect`` from a function ``(url, options, timeout)`` that opens a client."""

    def open_session(url: str, options: Options, deadline: float) -> Session:
        return _SyncSession(lambda timeout: connect(url, options, timeout), deadline)

    return open_session


def trio_session(
    open_client: Callable[[str, Options], AbstractAsyncContextManager[AsyncClient]],
) -> Callable[[str, Options, float], Session]:
    """Make ``Impl.connect`` from an async context manager function that opens a trio client.

    Leaving the ``async with`` block closes the connection.
    """

    def open_session(url: str, options: Options, deadline: float) -> Session:
        return _TrioSession(lambda: open_client(url, options), deadline)

    return open_session


# -- sans-I/O layers (W1) ----------------------------------------------------------


class SansIO(ABC):
    """A sans-I/O layer, driven without sockets: W1 measures these.

    Each method makes a fresh connection, open, and returns the function the
    measurement calls in its loop, so that the loop calls the library and
    nothing else.
    """

    @abstractmethod
    def parser(self, max_size: int) -> Callable[[Sequence[bytes]], int]:
        """A server connection's parser: feed it chunks of masked client frames.

        Returns:
            A function that feeds each chunk, takes every event it yields,
            and returns the number of messages completed.
        """

    @abstractmethod
    def sender(self, client: bool) -> Callable[[bytes], int]:
        """A connection's serializer: frame a binary message and take the bytes to send.

        Args:
            client: a client connection (masked frames), else a server one.

        Returns:
            A function that sends one message and returns the size of the bytes to send.
        """


# -- implementations ----------------------------------------------------------------

Ready = Callable[[int], None]


@dataclass(frozen=True)
class Impl:
    """A WebSocket implementation: an echo server and a client of one library.

    Attributes:
        key: its name on the command line and in the table.
        package: the distribution it comes from, for its version and the
            install hint.
        modules: what must be importable to run it; if any is missing it is
            skipped, with a note.
        ours: one of our adapters (else a peer, compared with).
        serve: runs the echo server, in the server process: calls
            ``ready(port)`` once listening, returns when stdin closes.
        connect: opens a client connection: ``connect(url, options, deadline)``.
        compression: it can negotiate permessage-deflate.
        note: a remark printed under the table.
        server_command: the command line of a server in another language,
            instead of :attr:`serve`; it keeps the same contract (prints
            ``READY <port>``, exits when its stdin closes).
        sansio: its sans-I/O layer, for W1.
        serve_broadcast: runs the broadcast server (see
            :mod:`wsproto_cli.bench_impls`), as :attr:`serve` does the echo.
        requires: why it can't run here besides a missing module (``None``: it can).
        websocket: it counts as a WebSocket library, ours or a peer. The
            references don't: raw TCP, the floors of an awaited read and the
            core driven from callbacks are shown as limits, never as peers.
        version_of: its version, if not the installed distribution's.
        only: the workloads it runs, if not every one it can (``()``: all).
    """

    key: str
    package: str
    modules: tuple[str, ...]
    ours: bool
    serve: Callable[[Options, Ready], None] | None = None
    connect: Callable[[str, Options, float], Session] | None = None
    compression: bool = True
    note: str = ""
    server_command: Callable[[Options], list[str]] | None = None
    sansio: SansIO | None = None
    serve_broadcast: Callable[[Options, Ready], None] | None = None
    requires: Callable[[], str | None] | None = None
    version_of: Callable[[], str] | None = None
    websocket: bool = True
    only: tuple[str, ...] = ()

    @property
    def has_server(self) -> bool:
        """It has an echo server, in Python or not."""
        return self.serve is not None or self.server_command is not None

    def missing(self) -> str | None:
        """The first of :attr:`modules` that cannot be imported, if any."""
        for module in self.modules:
            try:
                found = importlib.util.find_spec(module) is not None
            except ImportError:  # its parent package is missing
                found = False
            if not found:
                return module
        return None

    def unavailable(self) -> str | None:
        """Why it cannot run here (a module missing...), or ``None`` if it can."""
        if (module := self.missing()) is not None:
            return f"{module} is not installed (pip install -e '.[bench]', or make bench)"
        return None if self.requires is None else self.requires()

    def version(self) -> str:
        """The version of what is measured, or ``"?"``."""
        if self.version_of is not None:
            return self.version_of()
        try:
            return importlib.metadata.version(self.package)
        except importlib.metadata.PackageNotFoundError:
            return "?"


# -- workloads ---------------------------------------------------------------------


@dataclass(frozen=True)
class Metric:
    """One figure a workload measures: a section of the table.

    Attributes:
        key: its name in the table and the JSON report (``W2``, ``W1 parse 16 B``...).
        title: what it is, in a line.
        unit: the unit of its figure.
        higher_is_better: how figures compare (memory, say, is better lower).
        also: another unit the figure is shown in, and the factor to it
            (``("MB/s", 1024 / 1e6)`` for 1 KiB messages a second).
        ratios: show ratios (not for a count such as encodings, where they say little).
    """

    key: str
    title: str
    unit: str
    higher_is_better: bool = True
    also: tuple[str, float] | None = None
    ratios: bool = True


#: What a workload needs of an implementation.
NEEDS_CLIENT, NEEDS_SERVER, NEEDS_SANSIO, NEEDS_BROADCAST = (
    "client",
    "server",
    "sansio",
    "broadcast",
)


@dataclass(frozen=True)
class Workload:
    """One comparison: what is measured, and how.

    Attributes:
        key: its name on the command line (``W2``...).
        title: what it does, in a line.
        metrics: the figures it measures.
        run: measures once and returns each metric's figure by key; see :class:`Context`.
        options: what it needs of both ends' connections.
        needs: what of an implementation it runs: its client and server
            (``"client"``), its server alone (``"server"``, with our raw
            clients), its sans-I/O layer (``"sansio"``), its broadcast
            server (``"broadcast"``).
        check: why it can't run here at all (too few file descriptors...), or ``None``.
        budget: seconds one measurement may take, if not :attr:`Settings.budget`.
    """

    key: str
    title: str
    metrics: tuple[Metric, ...]
    run: Callable[[Context], dict[str, float]]
    options: Options = Options()
    needs: str = NEEDS_CLIENT
    check: Callable[[Settings], str | None] | None = None
    budget: Callable[[Settings], float] | None = None

    def not_applicable(self, impl: Impl) -> str | None:
        """Why ``impl`` has nothing to measure here (``n/a``), or ``None`` if it has."""
        if impl.only and self.key not in impl.only:
            return f"runs {', '.join(impl.only)} only"
        if self.needs == NEEDS_SANSIO:
            return None if impl.sansio is not None else "measures sans-I/O layers"
        if not impl.websocket and self.needs != NEEDS_CLIENT:
            return "not WebSocket"
        if self.needs == NEEDS_BROADCAST:
            return None if impl.serve_broadcast is not None else "no prepared message or broadcast"
        if not impl.has_server or (self.needs == NEEDS_CLIENT and impl.connect is None):
            return "a sans-I/O layer only" if impl.sansio is not None else "no server"
        if self.options.compression and not impl.compression:
            return "no permessage-deflate"
        return None


class Context:
    """What a workload's ``run`` gets: the implementation, the settings, and connections.

    Attributes:
        impl: the implementation measured.
        workload: the workload run.
        settings: the run's settings.
        deadline: the measurement's deadline, a ``time.monotonic()`` time.
        status: shows how a long measurement is going (on a terminal).
    """

    def __init__(
        self,
        impl: Impl,
        workload: Workload,
        settings: Settings,
        servers: Servers,
        status: Callable[[str], None] = lambda text: None,
    ) -> None:
        self.impl = impl
        self.workload = workload
        self.settings = settings
        budget = settings.budget if workload.budget is None else workload.budget(settings)
        self.deadline = time.monotonic() + budget
        self.status = status
        self._servers = servers

    def connect(self) -> Session:
        """Open a client connection to the implementation's echo server (started if need be)."""
        url = self._servers.url(self.impl, self.workload.options)
        assert self.impl.connect is not None
        return self.impl.connect(url, self.workload.options, self.deadline)

    def start_server(self) -> ServerProcess:
        """Start a server process of the implementation's for this measurement alone.

        Stop it with :meth:`ServerProcess.stop`.
        """
        return ServerProcess(self.impl, self.workload.options)


# -- server processes ----------------------------------------------------------------


class ServerProcess:
    """A server in a process of its own: started, then stopped or killed.

    A Python server is ``python -m wsproto_cli.bench --serve IMPL``; a
    server in another language runs :attr:`Impl.server_command`. Either
    prints ``READY <port>`` when it listens and exits when its stdin closes.
    """

    def __init__(self, impl: Impl, options: Options) -> None:
        self.impl = impl
        if impl.server_command is not None:
            command = impl.server_command(options)
        else:
            command = [sys.executable, "-m", "wsproto_cli.bench", "--serve", impl.key]
            command += ["--serve-options", json.dumps(asdict(options))]
        # A file, not a pipe: a pipe could fill up and block the server.
        self._log: IO[bytes] = tempfile.TemporaryFile()  # noqa: SIM115 - closed by stop()
        self._process = subprocess.Popen(
            command, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=self._log
        )
        try:
            line = self._readline(SERVER_START_TIMEOUT)
            if not line.startswith(b"READY "):
                raise BenchError(f"the {impl.key} server did not start: {self.log_tail()}")
            self.port = int(line.split()[1])
        except BaseException:
            self.stop(kill=True)
            raise

    @property
    def pid(self) -> int:
        """The server's process id (for its memory: ``/proc/<pid>/status``)."""
        return self._process.pid

    @property
    def url(self) -> str:
        """The server's URL."""
        return f"ws://{HOST}:{self.port}/"

    def _readline(self, timeout: float) -> bytes:
        # A thread reads, so the wait has a timeout on any platform.
        lines: queue.Queue[bytes] = queue.Queue()
        stdout = self._process.stdout
        assert stdout is not None
        threading.Thread(target=lambda: lines.put(stdout.readline()), daemon=True).start()
        try:
            return lines.get(timeout=timeout)
        except queue.Empty:
            message = f"the {self.impl.key} server did not start in {timeout:.0f} s"
            raise BenchError(message) from None

    def log_tail(self, size: int = 2000) -> str:
        """The end of the server's stderr, for error messages."""
        self._log.seek(0, os.SEEK_END)
        self._log.seek(max(0, self._log.tell() - size))
        text = self._log.read().decode(errors="replace").strip()
        return text or f"exit status {self._process.poll()}"

    def stop(self, *, kill: bool = False) -> None:
        """Ask the server to exit (close its stdin); kill it if it doesn't, or at once."""
        process = self._process
        if kill:
            process.kill()
        with suppress(OSError):
            assert process.stdin is not None
            process.stdin.close()
        try:
            process.wait(SERVER_STOP_TIMEOUT)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(SERVER_STOP_TIMEOUT)
        finally:
            if process.stdout is not None:
                process.stdout.close()
            self._log.close()


class Servers:
    """The server processes of a run, started when first needed and stopped at the end."""

    def __init__(self) -> None:
        self._running: dict[tuple[str, Options], ServerProcess] = {}

    def url(self, impl: Impl, options: Options) -> str:
        """The URL of ``impl``'s echo server with ``options``, started if need be."""
        server = self._running.get((impl.key, options))
        if server is None:
            server = self._running[impl.key, options] = ServerProcess(impl, options)
        return server.url

    def discard(self, impl: Impl) -> None:
        """Kill ``impl``'s servers (after a failure: one may hang); the next use restarts them."""
        for key in [key for key in self._running if key[0] == impl.key]:
            self._running.pop(key).stop(kill=True)

    def close(self) -> None:
        """Stop every server."""
        while self._running:
            _, server = self._running.popitem()
            server.stop()


async def stdin_closed_async() -> None:
    """Wait (in asyncio) until the parent process closes our stdin: the signal to stop."""
    await asyncio.to_thread(stdin_closed)


def serve_asyncio_until_stdin_closes(
    start: Callable[[], Awaitable[asyncio.Server]], ready: Ready
) -> None:
    """Run the asyncio server that ``start()`` opens, report its port, close it when stdin closes.

    ``start()`` runs in the event loop of this run; its server listens on one socket.
    """

    async def main() -> None:
        server = await start()
        ready(server.sockets[0].getsockname()[1])
        await stdin_closed_async()
        server.close()

    run_asyncio(main())


def stdin_closed() -> None:
    """Block until the parent process closes our stdin: the signal to stop."""
    sys.stdin.buffer.read()


async def trio_stdin_closed() -> None:
    """Wait (in trio) until the parent process closes our stdin."""
    import trio

    await trio.to_thread.run_sync(stdin_closed, abandon_on_cancel=True)
