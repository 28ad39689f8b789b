"""``wsproto bench``: our adapters and their peers, measured in one run over loopback.

Run ``python -m wsproto_cli.bench`` (or ``wsproto bench``); ``--help`` lists
the options and ``--list`` the workloads and implementations. Each figure is
printed with its ratio to the ``websockets`` package and to the best peer.

How a figure is measured:

* Every cell of the table is one workload run by one implementation, with
  the server and the client of the same library. The server runs in a
  process of its own, so the two ends use two cores; the client runs here.
* A server process is ``python -m wsproto_cli.bench --serve IMPL``: it
  prints ``READY <port>`` when it listens and exits when its stdin closes.
  A server in another language (Node's ws) would keep the same contract,
  with a field of :class:`Impl` naming its command.
* Each measurement opens a fresh connection, checks one echo, warms up, then
  measures. The repeats are interleaved (every cell once, then again), so a
  noisy neighbour slows every implementation alike instead of one of them.
* Everything is bounded: a measurement that overruns its budget aborts its
  connection and fails, and its server process is killed and restarted.

To add a workload, write a ``run(context) -> figure`` function and add a
:class:`Workload` to :data:`WORKLOADS`; to add an implementation, write its
echo server and client and add an :class:`Impl` to :data:`IMPLS`. A client is
an :class:`AsyncClient` or a :class:`SyncClient` (the echo drivers exist for
any library with send and receive calls: see :class:`AsyncEchoClient` and
:class:`SyncEchoClient`), wrapped in a :class:`Session` that workloads drive.
"""

from __future__ import annotations

import argparse
import asyncio
import functools
import gc
import importlib.metadata
import importlib.util
import json
import os
import platform
import queue
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from abc import ABC, abstractmethod
from collections.abc import Awaitable, Callable, Sequence
from contextlib import suppress
from dataclasses import asdict, dataclass, field
from time import perf_counter
from typing import IO, TYPE_CHECKING, Any, TextIO, TypeVar

import wsproto_core.mask

if TYPE_CHECKING:
    import aiohttp
    import websockets.asyncio.client
    import websockets.sync.client

    import wsproto_asyncio
    import wsproto_sync

__all__ = [
    "IMPLS",
    "WORKLOADS",
    "AsyncClient",
    "AsyncEchoClient",
    "BenchError",
    "Context",
    "Impl",
    "Options",
    "Result",
    "Session",
    "Settings",
    "SyncClient",
    "SyncEchoClient",
    "UsageError",
    "Workload",
    "add_arguments",
    "async_session",
    "format_report",
    "main",
    "run_bench",
    "sync_session",
]

Payload = str | bytes
T = TypeVar("T")

_HOST = "127.0.0.1"
_MIB = 1024 * 1024
_SERVER_START_TIMEOUT = 20.0  # seconds for a server process to print READY
_SERVER_STOP_TIMEOUT = 5.0  # seconds for it to exit once its stdin is closed
_CLOSE_TIMEOUT = 2.0  # seconds a client's closing handshake may take
_MIN_PIPELINED = 1000  # messages, at least, in a pipelined measurement
_MAX_PIPELINED = 2_000_000  # and at most: a server may buffer what it echoes


class BenchError(Exception):
    """A measurement went wrong: a wrong echo, a server that did not start..."""


class UsageError(ValueError):
    """The command line names an unknown workload or implementation."""


# -- configuration ---------------------------------------------------------------


@dataclass(frozen=True)
class Options:
    """What a workload asks of both ends of its connections.

    Attributes:
        compression: negotiate permessage-deflate (no workload does yet).
        read_limit: the largest message either end accepts, above every
            workload's messages, so no limit is hit.
    """

    compression: bool = False
    read_limit: int = 16 * _MIB


@dataclass(frozen=True)
class Settings:
    """How long and how often each figure is measured.

    Attributes:
        duration: seconds per measurement (pipelined workloads size their
            message count to last about as long).
        repeat: measurements per figure; the median is reported.
        quick: a smoke run: shorter warm-ups and calibrations.
    """

    duration: float = 2.0
    repeat: int = 3
    quick: bool = False

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
    client's runtime (asyncio or threads), within the measurement's
    deadline. Use it as a context manager: leaving closes the connection.
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

    def __enter__(self) -> Session:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


class AsyncClient(ABC):
    """An asyncio client connection: the operations of a :class:`Session`, as coroutines."""

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
        self._runner = asyncio.Runner()
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

    def close(self) -> None:
        grace = max(self._deadline, time.monotonic() + _CLOSE_TIMEOUT)
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

    def close(self) -> None:
        try:
            with suppress(Exception):  # the measurement, not the close, reports errors
                self._client.close()
        finally:
            self._watchdog.cancel()
            self._client.abort()  # frees the socket if closing failed; harmless otherwise


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


# -- implementations ---------------------------------------------------------------
#
# Each one has an echo server, run in a server process, and a client. Both are
# written as the library's documentation suggests: no compression, read limits
# raised to Options.read_limit, keepalive pings off, no logging.

Ready = Callable[[int], None]


def _stdin_closed() -> None:
    """Block until the parent process closes our stdin: the signal to stop."""
    sys.stdin.buffer.read()


async def _stdin_closed_async() -> None:
    await asyncio.to_thread(_stdin_closed)


def _serve_wsproto_asyncio(options: Options, ready: Ready) -> None:
    import wsproto_asyncio

    async def echo(conn: wsproto_asyncio.Conn) -> None:
        while True:  # until the CloseError that serve() expects
            await conn.write_message(*await conn.read_message())

    async def main() -> None:
        upgrader = wsproto_asyncio.Upgrader(
            max_message_size=options.read_limit, enable_compression=options.compression
        )
        server = await wsproto_asyncio.serve(echo, _HOST, 0, upgrader=upgrader)
        ready(server.address[1])
        await _stdin_closed_async()
        await server.shutdown(1.0)

    asyncio.run(main())


class _WsprotoAsyncioClient(AsyncEchoClient):
    def __init__(self, conn: wsproto_asyncio.Conn) -> None:
        self._conn = conn
        self.recv = conn.read_message

    def sender(self, message: Payload) -> Callable[[Payload], Awaitable[object]]:
        from wsproto_asyncio import MessageType

        kind = MessageType.TEXT if isinstance(message, str) else MessageType.BINARY
        return functools.partial(self._conn.write_message, kind)

    def payload(self, received: object) -> Payload:
        assert isinstance(received, tuple)
        return super().payload(received[1])

    async def close(self) -> None:
        await self._conn.close_gracefully(timeout=_CLOSE_TIMEOUT)


async def _connect_wsproto_asyncio(url: str, options: Options) -> AsyncClient:
    import wsproto_asyncio

    dialer = wsproto_asyncio.Dialer(
        max_message_size=options.read_limit, enable_compression=options.compression, proxy=None
    )
    conn, _ = await dialer.dial(url)
    return _WsprotoAsyncioClient(conn)


def _serve_wsproto_sync(options: Options, ready: Ready) -> None:
    import wsproto_sync

    def echo(conn: wsproto_sync.Conn) -> None:
        while True:  # until the CloseError that serve() expects
            conn.write_message(*conn.read_message())

    upgrader = wsproto_sync.Upgrader(
        max_message_size=options.read_limit, enable_compression=options.compression
    )
    server = wsproto_sync.serve(echo, _HOST, 0, upgrader=upgrader)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    ready(server.address[1])
    _stdin_closed()
    server.shutdown(1.0)


class _WsprotoSyncClient(SyncEchoClient):
    def __init__(self, conn: wsproto_sync.Conn) -> None:
        self._conn = conn
        self.recv = conn.read_message

    def sender(self, message: Payload) -> Callable[[Payload], object]:
        from wsproto_sync import MessageType

        kind = MessageType.TEXT if isinstance(message, str) else MessageType.BINARY
        return functools.partial(self._conn.write_message, kind)

    def payload(self, received: object) -> Payload:
        assert isinstance(received, tuple)
        return super().payload(received[1])

    def close(self) -> None:
        self._conn.close_gracefully(timeout=_CLOSE_TIMEOUT)

    def abort(self) -> None:
        with suppress(OSError):  # shutdown() wakes the threads blocked on the socket
            self._conn.net_conn().shutdown(socket.SHUT_RDWR)
        self._conn.close()


def _connect_wsproto_sync(url: str, options: Options, timeout: float) -> SyncClient:
    import wsproto_sync

    dialer = wsproto_sync.Dialer(
        max_message_size=options.read_limit,
        enable_compression=options.compression,
        handshake_timeout=timeout,
        proxy=None,
    )
    conn, _ = dialer.dial(url)
    return _WsprotoSyncClient(conn)


def _serve_websockets(options: Options, ready: Ready) -> None:
    from websockets.asyncio.server import ServerConnection, serve

    async def echo(ws: ServerConnection) -> None:
        async for message in ws:
            await ws.send(message)

    async def main() -> None:
        async with serve(
            echo,
            _HOST,
            0,
            compression="deflate" if options.compression else None,
            max_size=options.read_limit,
            ping_interval=None,
        ) as server:
            ready(server.sockets[0].getsockname()[1])
            await _stdin_closed_async()

    asyncio.run(main())


class _WebsocketsClient(AsyncEchoClient):
    def __init__(self, ws: websockets.asyncio.client.ClientConnection) -> None:
        self._ws = ws
        self.recv = ws.recv

    def sender(self, message: Payload) -> Callable[[Payload], Awaitable[object]]:
        return self._ws.send

    async def close(self) -> None:
        await self._ws.close()


async def _connect_websockets(url: str, options: Options) -> AsyncClient:
    from websockets.asyncio.client import connect

    ws = await connect(
        url,
        compression="deflate" if options.compression else None,
        max_size=options.read_limit,
        ping_interval=None,
        close_timeout=_CLOSE_TIMEOUT,
        proxy=None,
    )
    return _WebsocketsClient(ws)


def _serve_websockets_sync(options: Options, ready: Ready) -> None:
    from websockets.sync.server import ServerConnection, serve

    def echo(ws: ServerConnection) -> None:
        for message in ws:
            ws.send(message)

    server = serve(
        echo,
        _HOST,
        0,
        compression="deflate" if options.compression else None,
        max_size=options.read_limit,
        ping_interval=None,
    )
    threading.Thread(target=server.serve_forever, daemon=True).start()
    ready(server.socket.getsockname()[1])
    _stdin_closed()
    server.shutdown()


class _WebsocketsSyncClient(SyncEchoClient):
    def __init__(self, ws: websockets.sync.client.ClientConnection) -> None:
        self._ws = ws
        self.recv = ws.recv

    def sender(self, message: Payload) -> Callable[[Payload], object]:
        return self._ws.send

    def close(self) -> None:
        self._ws.close()

    def abort(self) -> None:
        with suppress(OSError):
            self._ws.socket.shutdown(socket.SHUT_RDWR)
        self._ws.close_socket()


def _connect_websockets_sync(url: str, options: Options, timeout: float) -> SyncClient:
    from websockets.sync.client import connect

    ws = connect(
        url,
        compression="deflate" if options.compression else None,
        max_size=options.read_limit,
        ping_interval=None,
        open_timeout=timeout,
        close_timeout=_CLOSE_TIMEOUT,
        proxy=None,
        legacy=True,  # the documented way to keep the connection outside a `with` block
    )
    return _WebsocketsSyncClient(ws)


def _serve_aiohttp(options: Options, ready: Ready) -> None:
    from aiohttp import WSMsgType, web

    async def echo(request: web.Request) -> web.WebSocketResponse:
        ws = web.WebSocketResponse(compress=options.compression, max_msg_size=options.read_limit)
        await ws.prepare(request)
        async for message in ws:
            if message.type is WSMsgType.TEXT:
                await ws.send_str(message.data)
            elif message.type is WSMsgType.BINARY:
                await ws.send_bytes(message.data)
        return ws

    async def main() -> None:
        app = web.Application()
        app.router.add_get("/", echo)
        runner = web.AppRunner(app, access_log=None, handle_signals=False)
        await runner.setup()
        site = web.TCPSite(runner, _HOST, 0)
        await site.start()
        ready(runner.addresses[0][1])
        await _stdin_closed_async()
        await runner.cleanup()

    asyncio.run(main())


class _AiohttpClient(AsyncEchoClient):
    def __init__(self, session: aiohttp.ClientSession, ws: aiohttp.ClientWebSocketResponse) -> None:
        self._session = session
        self._ws = ws
        self.recv = ws.receive

    def sender(self, message: Payload) -> Callable[[Payload], Awaitable[object]]:
        # Each takes the one type it sends.
        return self._ws.send_str if isinstance(message, str) else self._ws.send_bytes  # type: ignore[return-value]

    def payload(self, received: object) -> Payload:
        from aiohttp import WSMessage

        assert isinstance(received, WSMessage)
        return super().payload(received.data)

    async def close(self) -> None:
        try:
            await self._ws.close()
        finally:
            await self._session.close()


async def _connect_aiohttp(url: str, options: Options) -> AsyncClient:
    import aiohttp

    session = aiohttp.ClientSession()
    try:
        ws = await session.ws_connect(
            url, compress=15 if options.compression else 0, max_msg_size=options.read_limit
        )
    except BaseException:
        await session.close()
        raise
    return _AiohttpClient(session, ws)


# picows is not in the `test` extra, so the type checker may not find it:
# hence the `unused-ignore` codes, and `Any` for its objects.

_PICOWS_CAPTURE, _PICOWS_ROUND_TRIPS, _PICOWS_PIPELINED = range(3)


@functools.cache
def _picows_listeners() -> tuple[type[Any], type[Any]]:
    """The listener classes of picows' echo server and client (picows calls them back)."""
    from picows import WSListener, WSMsgType  # type: ignore[import-not-found,unused-ignore]

    close, text = WSMsgType.CLOSE, WSMsgType.TEXT
    data_types = {WSMsgType.TEXT, WSMsgType.BINARY, WSMsgType.CONTINUATION}

    class EchoListener(WSListener):  # type: ignore[misc,unused-ignore]
        """Echoes each frame as it comes, as picows' own examples do."""

        def on_ws_frame(self, transport: Any, frame: Any) -> None:
            if frame.msg_type in data_types:
                transport.send(frame.msg_type, frame.get_payload_as_memoryview(), frame.fin)
            elif frame.msg_type is close:
                transport.send_close(frame.get_close_code(), frame.get_close_message())
                transport.disconnect()

        def pause_writing(self) -> None:
            pass  # keep writing: the transport buffers (picows calls this informative)

        def resume_writing(self) -> None:
            pass

    class ClientListener(WSListener):  # type: ignore[misc,unused-ignore]
        """Runs the workloads in picows' callbacks: the next send happens in ``on_ws_frame``."""

        def __init__(self) -> None:
            super().__init__()
            self.mode = _PICOWS_CAPTURE
            self.count = 0
            self.target = 0
            self.start = self.end = self.elapsed = 0.0
            self.message: Payload = b""
            self.msg_type: Any = None
            self.done: asyncio.Future[Payload | None] | None = None
            self.paused = False
            self.resumed: asyncio.Future[None] | None = None

        def on_ws_frame(self, transport: Any, frame: Any) -> None:
            msg_type = frame.msg_type
            if msg_type is close:
                transport.disconnect()
            elif msg_type not in data_types:
                return
            elif self.mode == _PICOWS_ROUND_TRIPS:
                self.count += 1
                if (now := perf_counter()) < self.end:
                    transport.send(self.msg_type, self.message)
                else:
                    self.elapsed = now - self.start
                    self.finish(None)
            elif self.mode == _PICOWS_PIPELINED:
                self.count += 1
                if self.count == self.target:
                    self.elapsed = perf_counter() - self.start
                    self.finish(None)
            elif msg_type is text:
                self.finish(frame.get_payload_as_utf8_text())
            else:
                self.finish(frame.get_payload_as_bytes())

        def finish(self, result: Payload | None) -> None:
            if self.done is not None and not self.done.done():
                self.done.set_result(result)

        def pause_writing(self) -> None:
            self.paused = True

        def resume_writing(self) -> None:
            self.paused = False
            if self.resumed is not None and not self.resumed.done():
                self.resumed.set_result(None)

        def on_ws_disconnected(self, transport: Any) -> None:
            for future in (self.done, self.resumed):
                if future is not None and not future.done():
                    future.set_exception(ConnectionResetError("picows: disconnected"))
                    future.exception()  # a waiter still gets it; if it timed out, no warning

    return EchoListener, ClientListener


def _serve_picows(options: Options, ready: Ready) -> None:
    if options.compression:
        raise BenchError("picows has no permessage-deflate")
    from picows import ws_create_server  # type: ignore[import-not-found,unused-ignore]

    echo_listener, _ = _picows_listeners()

    async def main() -> None:
        server = await ws_create_server(
            lambda request: echo_listener(), _HOST, 0, max_frame_size=options.read_limit
        )
        ready(server.sockets[0].getsockname()[1])
        await _stdin_closed_async()
        server.close()

    asyncio.run(main())


class _PicowsClient(AsyncClient):
    """picows is callback-based, so its client has its own drivers, in its listener."""

    def __init__(self, transport: Any, listener: Any) -> None:
        self._transport = transport
        self._listener = listener

    def _start(self, mode: int, message: Payload) -> asyncio.Future[Payload | None]:
        from picows import WSMsgType

        listener = self._listener
        listener.mode = mode
        listener.count = 0
        listener.message = message
        listener.msg_type = WSMsgType.TEXT if isinstance(message, str) else WSMsgType.BINARY
        future: asyncio.Future[Payload | None] = asyncio.get_running_loop().create_future()
        listener.done = future
        return future

    async def exchange(self, message: Payload) -> Payload:
        done = self._start(_PICOWS_CAPTURE, message)
        self._transport.send(self._listener.msg_type, message)
        echo = await done
        assert echo is not None
        return echo

    async def round_trips(self, message: Payload, duration: float) -> tuple[int, float]:
        listener = self._listener
        done = self._start(_PICOWS_ROUND_TRIPS, message)
        listener.start = perf_counter()
        listener.end = listener.start + duration
        self._transport.send(listener.msg_type, message)
        await done
        return listener.count, listener.elapsed

    async def pipelined(self, message: Payload, count: int) -> float:
        listener = self._listener
        done = self._start(_PICOWS_PIPELINED, message)
        listener.target = count
        send, msg_type = self._transport.send, listener.msg_type
        loop = asyncio.get_running_loop()
        listener.start = perf_counter()
        for _ in range(count):
            if listener.paused:  # honour the transport's flow control
                listener.resumed = loop.create_future()
                await listener.resumed
            send(msg_type, message)
        await done
        return float(listener.elapsed)

    async def close(self) -> None:
        from picows import WSCloseCode

        self._transport.send_close(WSCloseCode.OK)
        try:
            async with asyncio.timeout(_CLOSE_TIMEOUT):
                await self._transport.wait_disconnected()
        finally:
            self._transport.disconnect(graceful=False)


async def _connect_picows(url: str, options: Options) -> AsyncClient:
    if options.compression:
        raise BenchError("picows has no permessage-deflate")
    from picows import ws_connect

    _, client_listener = _picows_listeners()
    transport, listener = await ws_connect(client_listener, url, max_frame_size=options.read_limit)
    return _PicowsClient(transport, listener)


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
    """

    key: str
    package: str
    modules: tuple[str, ...]
    ours: bool
    serve: Callable[[Options, Ready], None]
    connect: Callable[[str, Options, float], Session]
    compression: bool = True
    note: str = ""

    def missing(self) -> str | None:
        """The first of :attr:`modules` that cannot be imported, if any."""
        for module in self.modules:
            if importlib.util.find_spec(module) is None:
                return module
        return None

    def version(self) -> str:
        """The installed version of :attr:`package`, or ``"?"``."""
        try:
            return importlib.metadata.version(self.package)
        except importlib.metadata.PackageNotFoundError:
            return "?"


#: Every implementation, ours first; ``--impls`` picks some.
IMPLS: dict[str, Impl] = {
    impl.key: impl
    for impl in (
        Impl(
            "wsproto_asyncio",
            "wsproto-core",
            ("wsproto_asyncio",),
            True,
            _serve_wsproto_asyncio,
            async_session(_connect_wsproto_asyncio),
        ),
        Impl(
            "wsproto_sync",
            "wsproto-core",
            ("wsproto_sync",),
            True,
            _serve_wsproto_sync,
            sync_session(_connect_wsproto_sync),
            note="a thread per connection on the server; a reader thread in W3",
        ),
        Impl(
            "websockets",
            "websockets",
            ("websockets",),
            False,
            _serve_websockets,
            async_session(_connect_websockets),
            note="websockets.asyncio; the reference of the ratios",
        ),
        Impl(
            "websockets_sync",
            "websockets",
            ("websockets",),
            False,
            _serve_websockets_sync,
            sync_session(_connect_websockets_sync),
            note="websockets.sync; a thread per connection on the server",
        ),
        Impl(
            "aiohttp",
            "aiohttp",
            ("aiohttp",),
            False,
            _serve_aiohttp,
            async_session(_connect_aiohttp),
        ),
        Impl(
            "picows",
            "picows",
            ("picows",),
            False,
            _serve_picows,
            async_session(_connect_picows),
            compression=False,
            note="Cython, callbacks per frame (no await per message); echoes frames as they come",
        ),
    )
}


# -- workloads ---------------------------------------------------------------------


class Context:
    """What a workload's ``run`` gets: the implementation, the settings, and connections.

    Attributes:
        impl: the implementation measured.
        workload: the workload run.
        settings: the run's settings.
        deadline: the measurement's deadline, a ``time.monotonic()`` time.
    """

    def __init__(
        self, impl: Impl, workload: Workload, settings: Settings, servers: _Servers
    ) -> None:
        self.impl = impl
        self.workload = workload
        self.settings = settings
        self.deadline = time.monotonic() + settings.budget
        self._servers = servers

    def connect(self) -> Session:
        """Open a client connection to the implementation's echo server (started if need be)."""
        url = self._servers.url(self.impl, self.workload.options)
        return self.impl.connect(url, self.workload.options, self.deadline)


def _check_echo(session: Session, message: Payload) -> None:
    echo = session.exchange(message)
    if echo != message:
        got = f"{type(echo).__name__} of {len(echo)}"
        raise BenchError(f"wrong echo: sent {type(message).__name__} of {len(message)}, got {got}")


def _round_trips(message: Payload, scale: float = 1.0) -> Callable[[Context], float]:
    """A workload: round trips of ``message`` for the duration; the figure is trips/s × scale."""

    def run(context: Context) -> float:
        with context.connect() as session:
            _check_echo(session, message)
            session.round_trips(message, context.settings.warmup)
            count, elapsed = session.round_trips(message, context.settings.duration)
        return count * scale / elapsed

    return run


def _pipelined(message: Payload) -> Callable[[Context], float]:
    """A workload: messages/s sending without waiting; the warm-up sizes the run."""

    def run(context: Context) -> float:
        settings = context.settings
        with context.connect() as session:
            _check_echo(session, message)
            warmup = settings.calibration
            rate = warmup / session.pipelined(message, warmup)
            count = int(min(_MAX_PIPELINED, max(_MIN_PIPELINED, rate * settings.duration)))
            elapsed = session.pipelined(message, count)
        return count / elapsed

    return run


@dataclass(frozen=True)
class Workload:
    """One column of the comparison: what is measured, and how.

    Attributes:
        key: its name on the command line (``W2``...).
        title: what it does, in a line.
        unit: the unit of its figure.
        run: measures once and returns the figure; see :class:`Context`.
        options: what it needs of both ends' connections.
        higher_is_better: how figures compare (memory, say, is better lower).
    """

    key: str
    title: str
    unit: str
    run: Callable[[Context], float]
    options: Options = Options()
    higher_is_better: bool = True

    def unsupported(self, impl: Impl) -> str | None:
        """Why ``impl`` cannot run this workload, or ``None`` if it can."""
        if self.options.compression and not impl.compression:
            return f"{impl.key} has no permessage-deflate"
        return None


#: Every workload; ``--workloads`` picks some. W1, W5 and W6 are yet to come.
WORKLOADS: dict[str, Workload] = {
    workload.key: workload
    for workload in (
        Workload(
            "W2",
            "round trips: a 16 B text message, then wait for its echo; one connection",
            "msg/s",
            _round_trips("0123456789abcdef"),
        ),
        Workload(
            "W3",
            "pipelined: 64 B text messages sent without waiting, echoes counted; one connection",
            "msg/s",
            _pipelined("0123456789abcdef" * 4),
        ),
        Workload(
            "W4",
            "throughput: 1 MiB binary messages echoed one at a time; one connection",
            "MB/s",
            _round_trips(bytes(range(256)) * 4096, scale=_MIB / 1e6),
        ),
    )
}


# -- server processes ----------------------------------------------------------------


class _ServerProcess:
    """An echo server in a process of its own: started, then stopped or killed."""

    def __init__(self, impl: Impl, options: Options) -> None:
        self.impl = impl
        # A file, not a pipe: a pipe could fill up and block the server.
        self._log: IO[bytes] = tempfile.TemporaryFile()  # noqa: SIM115 - closed by stop()
        command = [sys.executable, "-m", "wsproto_cli.bench", "--serve", impl.key]
        command += ["--serve-options", json.dumps(asdict(options))]
        self._process = subprocess.Popen(
            command, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=self._log
        )
        try:
            line = self._readline(_SERVER_START_TIMEOUT)
            if not line.startswith(b"READY "):
                raise BenchError(f"the {impl.key} server did not start: {self.log_tail()}")
            self.port = int(line.split()[1])
        except BaseException:
            self.stop(kill=True)
            raise

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
            process.wait(_SERVER_STOP_TIMEOUT)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(_SERVER_STOP_TIMEOUT)
        finally:
            if process.stdout is not None:
                process.stdout.close()
            self._log.close()


class _Servers:
    """The server processes of a run, started when first needed and stopped at the end."""

    def __init__(self) -> None:
        self._running: dict[tuple[str, Options], _ServerProcess] = {}

    def url(self, impl: Impl, options: Options) -> str:
        """The URL of ``impl``'s echo server with ``options``, started if need be."""
        server = self._running.get((impl.key, options))
        if server is None:
            server = self._running[impl.key, options] = _ServerProcess(impl, options)
        return f"ws://{_HOST}:{server.port}/"

    def discard(self, impl: Impl) -> None:
        """Kill ``impl``'s servers (after a failure: one may hang); the next use restarts them."""
        for key in [key for key in self._running if key[0] == impl.key]:
            self._running.pop(key).stop(kill=True)

    def close(self) -> None:
        """Stop every server."""
        while self._running:
            _, server = self._running.popitem()
            server.stop()


def _serve_main(impl_key: str, options_json: str) -> int:
    """The server process: run one implementation's echo server until stdin closes."""
    impl = IMPLS[impl_key]
    options = Options(**json.loads(options_json))

    def ready(port: int) -> None:
        sys.stdout.write(f"READY {port}\n")
        sys.stdout.flush()
        # Nobody reads the pipe after this line: a library printing more could fill it.
        sys.stdout = sys.stderr

    impl.serve(options, ready)
    return 0


# -- running, and the report ------------------------------------------------------------


@dataclass
class Result:
    """The figures of one cell of the table: a workload run by an implementation.

    Attributes:
        workload: the workload's key.
        impl: the implementation's key.
        samples: one figure per measurement.
        error: why a measurement failed (the cell then has no figure).
        skipped: why the cell was not measured.
    """

    workload: str
    impl: str
    samples: list[float] = field(default_factory=list)
    error: str | None = None
    skipped: str | None = None

    @property
    def figure(self) -> float | None:
        """The median of the samples, if the cell was measured without error."""
        if self.error is not None or not self.samples:
            return None
        return statistics.median(self.samples)

    @property
    def spread(self) -> float | None:
        """Half the range of the samples relative to their median (0.03: ±3 %)."""
        figure = self.figure
        if figure is None or len(self.samples) < 2 or figure == 0:
            return None
        return (max(self.samples) - min(self.samples)) / 2 / figure


def _describe(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0]}" if text else type(exc).__name__


def _format_figure(value: float) -> str:
    return f"{value:,.0f}" if value >= 100 else f"{value:,.1f}"


def _ratio(value: float | None, reference: float | None, workload: Workload) -> str:
    if value is None or not reference:
        return "-"
    return f"{(value / reference if workload.higher_is_better else reference / value):.2f}x"


def _best_peer(workload: Workload, results: dict[str, Result]) -> str | None:
    figures = {
        key: figure
        for key, result in results.items()
        if not IMPLS[key].ours and (figure := result.figure) is not None
    }
    if not figures:
        return None
    pick = max if workload.higher_is_better else min
    return pick(figures, key=figures.__getitem__)


def _figure(row: dict[str, Result], key: str | None) -> float | None:
    result = None if key is None else row.get(key)
    return None if result is None else result.figure


def _environment() -> dict[str, Any]:
    load = os.getloadavg() if hasattr(os, "getloadavg") else None
    return {
        "python": platform.python_version(),
        "platform": f"{platform.system()} {platform.machine()}",
        "cpus": os.cpu_count(),
        "load": None if load is None else [round(value, 2) for value in load],
        # Our figures depend on it: see wsproto_core.mask.
        "masking": "compiled" if wsproto_core.mask.COMPILED else "pure Python",
    }


def format_report(
    workloads: Sequence[Workload],
    impls: Sequence[Impl],
    results: dict[str, dict[str, Result]],
    settings: Settings,
    baseline: str,
) -> str:
    """The table: for each workload, every implementation's figure and its ratios."""
    env = _environment()
    lines = [
        f"wsproto bench: Python {env['python']}, {env['platform']}, {env['cpus']} CPUs, "
        f"loopback; median of {settings.repeat} x {settings.duration:g} s"
        + (f"; load {' '.join(map(str, env['load']))} at the end" if env["load"] else "")
        + f"; wsproto_core masking: {env['masking']}",
        "versions: "
        + ", ".join(dict.fromkeys(f"{impl.package} {impl.version()}" for impl in impls)),
        "ratios: >1 is better than the reference; 'best peer' is the best library not ours",
    ]
    width = max(len(impl.key) for impl in impls)
    for workload in workloads:
        row = results[workload.key]
        best = _best_peer(workload, row)
        reference, best_figure = _figure(row, baseline), _figure(row, best)
        better = "higher" if workload.higher_is_better else "lower"
        lines += ["", f"{workload.key}  {workload.title}  [{workload.unit}, {better} is better]"]
        lines.append(
            f"  {'implementation':<{width}}  {'median':>12}  {'spread':>7}"
            f"  {'vs ' + baseline:>16}  {'vs best peer' + (f' ({best})' if best else ''):>22}"
        )
        for impl in impls:
            result = row[impl.key]
            if result.figure is None:
                why = result.error or result.skipped or "not measured"
                label = "error" if result.error else "skipped"
                lines.append(f"  {impl.key:<{width}}  {label:>12}  {why}")
                continue
            spread = result.spread
            lines.append(
                f"  {impl.key:<{width}}  {_format_figure(result.figure):>12}"
                f"  {'-' if spread is None else f'±{spread:.0%}':>7}"
                f"  {_ratio(result.figure, reference, workload):>16}"
                f"  {_ratio(result.figure, best_figure, workload):>22}"
            )
    notes = [f"  {impl.key}: {impl.note}" for impl in impls if impl.note]
    if notes:
        lines += ["", "notes:", *notes]
    return "\n".join(lines) + "\n"


def _report_json(
    workloads: Sequence[Workload],
    results: dict[str, dict[str, Result]],
    settings: Settings,
    baseline: str,
) -> dict[str, Any]:
    report: dict[str, Any] = {
        "environment": _environment(),
        "settings": {**asdict(settings), "baseline": baseline},
        "versions": {impl.key: impl.version() for impl in IMPLS.values()},
        "workloads": {},
    }
    for workload in workloads:
        row = results[workload.key]
        best = _best_peer(workload, row)
        reference, best_figure = _figure(row, baseline), _figure(row, best)
        cells = {}
        for key, result in row.items():
            figure = result.figure
            cells[key] = {
                **asdict(result),
                "figure": figure,
                "vs_baseline": _raw_ratio(figure, reference, workload),
                "vs_best_peer": _raw_ratio(figure, best_figure, workload),
            }
        report["workloads"][workload.key] = {
            "title": workload.title,
            "unit": workload.unit,
            "higher_is_better": workload.higher_is_better,
            "best_peer": best,
            "results": cells,
        }
    return report


def _raw_ratio(value: float | None, reference: float | None, workload: Workload) -> float | None:
    if value is None or not reference:
        return None
    return value / reference if workload.higher_is_better else reference / value


def _measure(
    todo: Sequence[tuple[Workload, Impl]],
    results: dict[str, dict[str, Result]],
    settings: Settings,
    progress: TextIO,
) -> None:
    servers = _Servers()
    try:
        for index, (workload, impl) in enumerate(todo, 1):
            result = results[workload.key][impl.key]
            if result.error is not None:
                continue  # failed once: the later repeats would too, or hang again
            gc.collect()
            started = time.monotonic()
            try:
                figure = workload.run(Context(impl, workload, settings, servers))
            except Exception as exc:
                result.error = _describe(exc)
                if time.monotonic() - started >= settings.budget:
                    result.error = f"timed out after {settings.budget:.0f} s ({result.error})"
                servers.discard(impl)
                done = f"error: {result.error}"
            else:
                result.samples.append(figure)
                done = f"{_format_figure(figure)} {workload.unit}"
            progress.write(f"[{index}/{len(todo)}] {workload.key} {impl.key}: {done}\n")
            progress.flush()
    finally:
        servers.close()


def _select(names: Sequence[str] | None, table: dict[str, T], what: str) -> list[T]:
    if not names:
        return list(table.values())
    wanted = [name.strip() for value in names for name in value.split(",") if name.strip()]
    by_key = {key.lower(): item for key, item in table.items()}
    unknown = [name for name in wanted if name.lower() not in by_key]
    if unknown:
        raise UsageError(f"unknown {what}: {', '.join(unknown)} (known: {', '.join(table)})")
    return list(dict.fromkeys(by_key[name.lower()] for name in wanted))


def run_bench(args: argparse.Namespace, out: TextIO | None = None) -> int:
    """Run the benchmark the parsed ``args`` describe; return the exit status.

    The table goes to ``out`` (standard output by default), the progress to
    standard error. The status is 1 if a measurement failed; an
    implementation skipped for a missing package is not a failure.
    """
    out = out or sys.stdout
    if args.serve is not None:
        return _serve_main(args.serve, args.serve_options)
    if args.list:
        for workload in WORKLOADS.values():
            out.write(f"{workload.key:<16} {workload.title} [{workload.unit}]\n")
        for impl in IMPLS.values():
            out.write(f"{impl.key:<16} {impl.package} ({'ours' if impl.ours else 'peer'})\n")
        return 0
    settings = Settings(
        duration=args.duration if args.duration is not None else (0.25 if args.quick else 2.0),
        repeat=args.repeat if args.repeat is not None else (1 if args.quick else 3),
        quick=args.quick,
    )
    workloads = _select(args.workloads, WORKLOADS, "workloads")
    impls = _select(args.impls, IMPLS, "implementations")
    results = {w.key: {i.key: Result(w.key, i.key) for i in impls} for w in workloads}
    runnable: list[tuple[Workload, Impl]] = []
    for workload in workloads:
        for impl in impls:
            result = results[workload.key][impl.key]
            if (module := impl.missing()) is not None:
                result.skipped = (
                    f"{module} is not installed (pip install -e '.[bench]', or make bench)"
                )
            elif (reason := workload.unsupported(impl)) is not None:
                result.skipped = reason
            else:
                runnable.append((workload, impl))
    todo = [cell for _ in range(settings.repeat) for cell in runnable]
    _measure(todo, results, settings, sys.stderr)
    out.write(format_report(workloads, impls, results, settings, args.baseline))
    if args.json is not None:
        with open(args.json, "w", encoding="utf-8") as file:
            json.dump(_report_json(workloads, results, settings, args.baseline), file, indent=2)
            file.write("\n")
    failed = any(result.error for row in results.values() for result in row.values())
    return 1 if failed else 0


def _positive(kind: Callable[[str], T]) -> Callable[[str], T]:
    def parse(text: str) -> T:
        value = kind(text)
        if not value > 0:  # type: ignore[operator]
            raise argparse.ArgumentTypeError(f"must be positive: {text}")
        return value

    return parse


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Add the benchmark's options to ``parser`` (``wsproto bench`` and this module's own)."""
    parser.add_argument(
        "--workloads",
        nargs="+",
        metavar="W",
        help=f"workloads to run, by key, comma or space separated (default: {' '.join(WORKLOADS)})",
    )
    parser.add_argument(
        "--impls",
        nargs="+",
        metavar="IMPL",
        help=f"implementations to measure (default: all: {' '.join(IMPLS)})",
    )
    parser.add_argument(
        "--repeat",
        type=_positive(int),
        metavar="N",
        help="measurements per figure; the median is reported (default: 3; --quick: 1)",
    )
    parser.add_argument(
        "--duration",
        type=_positive(float),
        metavar="SECONDS",
        help="seconds per measurement (default: 2; --quick: 0.25)",
    )
    parser.add_argument(
        "--quick", action="store_true", help="a smoke run: short measurements, no repeats"
    )
    parser.add_argument(
        "--baseline",
        default="websockets",
        choices=list(IMPLS),
        metavar="IMPL",
        help="the implementation the ratios refer to (default: websockets)",
    )
    parser.add_argument("--json", metavar="PATH", help="also write the results as JSON to PATH")
    parser.add_argument(
        "--list", action="store_true", help="list the workloads and implementations, and exit"
    )
    # The server process of an implementation (see _ServerProcess); not for users.
    parser.add_argument("--serve", choices=list(IMPLS), help=argparse.SUPPRESS)
    parser.add_argument("--serve-options", default="{}", help=argparse.SUPPRESS)


def main(argv: list[str] | None = None) -> int:
    """Run ``python -m wsproto_cli.bench``; return the exit status."""
    parser = argparse.ArgumentParser(
        prog="python -m wsproto_cli.bench",
        description="Measure our adapters and their peers over loopback, in one run.",
    )
    add_arguments(parser)
    args = parser.parse_args(argv)
    try:
        return run_bench(args)
    except UsageError as exc:
        parser.error(str(exc))
    return 2  # pragma: no cover - parser.error exits


if __name__ == "__main__":
    sys.exit(main())
