"""Both ends of the interoperability matrix (``tests/interop/test_matrix.py``).

Every connection of the matrix has a *client* that the test drives and a
*server* that echoes and obeys commands, whichever library plays which part:

* Servers (:class:`ServerSide`): each adapter's real ``serve()``, the
  ``websockets`` sync and asyncio servers, a small server on the ``wsproto``
  package, an ``aiohttp.web`` server (all in a thread of their own, with
  their own event loop), and Node's ``ws`` (``node/peer.mjs``, through
  ``node_peer.py``). All of them speak ``peer.mjs``'s language: they echo
  every message, except text messages that start with ``!``, which are
  commands in JSON::

      !{"do": "close", "code": C, "reason": R}    the closing handshake, from the server
      !{"do": "ping", "data": HEX}                a Ping; its Pong is reported
      !{"do": "fragments", "binary": B,           one message, a frame per part,
        "parts": [HEX], "pingAfter": I}           and a Ping after part I, if given

  and they report what they saw, per connection, keyed by the port of its
  client end: ``open {extensions}``, ``message {binary, size, sha256}``,
  ``pong {data}``, ``close {code, reason}`` (the client's Close), and
  ``crash {error}`` (anything unexpected: a bug, which fails the test).
  Node's server also tells the client about a Pong with a text message,
  ``{"event": "pong", ...}``; see :func:`is_pong_notice`.

* Clients (:class:`Client`): each adapter's ``Dialer``, the ``websockets``
  sync and asyncio clients, a ``wsproto`` package client on a blocking
  socket, an ``aiohttp`` client, and Node's ``ws`` (``node/matrix_client.mjs``,
  which does what the test says). They share one ``async`` interface, so a
  scenario is written once; :func:`run_client` runs it in the client's own
  world: directly in the test thread for the blocking clients (their
  coroutines never suspend), under ``asyncio.run`` or ``trio.run`` for the
  others.

Every wait has a timeout; :class:`World` stops every thread and process it
started. Servers listen on 127.0.0.1, port 0.
"""

from __future__ import annotations

import asyncio
import base64
import codecs
import contextlib
import functools
import hashlib
import itertools
import json
import os
import queue
import shutil
import socket
import subprocess
import threading
import time
import urllib.parse
from collections import deque
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine, Iterator, Sequence
from concurrent.futures import Future
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar, TypeVar

import aiohttp
import pytest
import trio
import websockets.asyncio.client
import websockets.asyncio.server
import websockets.sync.client
import websockets.sync.server
import wsproto
import wsproto.events as wsevents
from aiohttp import web
from websockets.exceptions import ConnectionClosed
from websockets.protocol import State
from wsproto.extensions import PerMessageDeflate

import wsproto_asyncio
import wsproto_sync
import wsproto_trio
from interop.node_peer import NodePeers
from interop.node_peer import Reports as NodeReports
from wsproto_core import CloseError, MessageType

T = TypeVar("T")

TIMEOUT = 10.0  # the longest any one scenario may take (or a step of a blocking client)
BIG_TIMEOUT = 30.0  # ...but those moving multi-MiB messages, on slow CI machines
STOP_TIMEOUT = 10.0  # a server thread must end within this once told to stop
IDLE_TIMEOUT = 60.0  # a server gives up on a connection silent for this long
LIMIT = 16 * 1024 * 1024  # every read limit of the matrix, on both ends
DEFLATE = ["permessage-deflate"]
#: The payload of the Ping sent between two fragments (``peer.mjs``'s, too).
BETWEEN = b"between fragments"

NODE_DIR = Path(__file__).resolve().parent / "node"
NODE_CLIENT = NODE_DIR / "matrix_client.mjs"


def digest(data: str | bytes) -> str:
    return hashlib.sha256(data.encode() if isinstance(data, str) else data).hexdigest()


def kind_of(data: str | bytes) -> MessageType:
    return MessageType.TEXT if isinstance(data, str) else MessageType.BINARY


def command(do: str, **fields: Any) -> str:
    """The text message that makes a server run a command (as ``node_peer.command_message``)."""
    return "!" + json.dumps({"do": do, **fields})


def is_pong_notice(data: str | bytes) -> bool:
    """Whether ``data`` is the message in which Node's ``peer.mjs`` reports a Pong."""
    return isinstance(data, str) and data.startswith('{"event":"pong"')


def character_aligned(parts: Sequence[bytes]) -> list[str]:
    """``parts`` of UTF-8, cut again where characters end, for APIs that send ``str`` frames.

    A part that holds no whole character disappears; the last piece may be empty.
    """
    decoder = codecs.getincrementaldecoder("utf-8")()
    pieces = [decoder.decode(part) for part in parts]
    pieces.append(decoder.decode(b"", final=True))
    return [piece for piece in pieces[:-1] if piece] + [pieces[-1]]


def extension_names(header: str) -> list[str]:
    """The extension names of a ``Sec-WebSocket-Extensions`` value."""
    return [item.split(";")[0].strip() for item in header.split(",") if item.strip()]


def in_ci() -> bool:
    return os.environ.get("CI", "").lower() not in ("", "0", "false", "no")


def require_node() -> str:
    """The ``node`` executable, once ``ws`` is installed.

    Skips when ``WSPROTO_SKIP_NODE=1``, or when node is missing outside CI
    (in CI, where Node must be installed, it fails); fails when ``ws`` is
    not installed (``make unit`` runs ``npm ci``).
    """
    if os.environ.get("WSPROTO_SKIP_NODE") == "1":
        pytest.skip("WSPROTO_SKIP_NODE=1: Node interoperability tests skipped")
    executable = shutil.which("node")
    if executable is None:
        message = "node is not installed (Debian: apt-get install nodejs npm, then `make unit`)"
        if in_ci():
            pytest.fail(f"{message}; CI must run the Node tests", pytrace=False)
        pytest.skip(message)
    if not (NODE_DIR / "node_modules" / "ws" / "package.json").is_file():
        pytest.fail(
            f"Node's ws is not installed: run `make unit`, or `npm ci` in {NODE_DIR}; "
            "or set WSPROTO_SKIP_NODE=1 to skip the Node tests",
            pytrace=False,
        )
    return executable


# -- what the servers report ----------------------------------------------------------


class Reports:
    """What a server reported about one connection, in order."""

    def __init__(self) -> None:
        self.seen: list[dict[str, Any]] = []
        self._queue: queue.Queue[dict[str, Any]] = queue.Queue()

    def put(self, report: dict[str, Any]) -> None:
        self._queue.put(report)

    def expect(self, event: str, timeout: float = TIMEOUT) -> dict[str, Any]:
        """Return the next report of kind ``event``, passing over the others."""
        deadline = time.monotonic() + timeout
        while True:
            try:
                report = self._queue.get(timeout=max(0.0, deadline - time.monotonic()))
            except queue.Empty:
                pytest.fail(f"the server reported no {event!r} within {timeout} s; saw {self.seen}")
            self.seen.append(report)
            if report["event"] == event:
                return report
            if report["event"] == "crash":  # no use waiting: say what broke
                pytest.fail(f"the server crashed: {report['error']}; saw {self.seen}")
            if report["event"] == "close":  # nothing comes after it
                pytest.fail(f"the connection closed before any {event!r}; saw {self.seen}")


class Board:
    """The reports of a server's connections, sorted by the port of their client end."""

    def __init__(self) -> None:
        self._reports: dict[int, Reports] = {}
        self._lock = threading.Lock()

    def reports(self, client_port: int) -> Reports:
        with self._lock:
            return self._reports.setdefault(client_port, Reports())

    def put(self, client_port: int, event: str, **fields: Any) -> None:
        self.reports(client_port).put({"event": event, **fields})


class NodeServerReports:
    """Node's reports about a connection, with ``open``'s extensions as names."""

    def __init__(self, reports: NodeReports) -> None:
        self._reports = reports

    def expect(self, event: str, timeout: float = TIMEOUT) -> dict[str, Any]:
        report = self._reports.expect(event, timeout)
        if event == "open":
            report = {**report, "extensions": extension_names(report["extensions"])}
        return report


# -- what a server does with each message ---------------------------------------------------


@dataclass(frozen=True)
class Echo:
    data: str | bytes


@dataclass(frozen=True)
class SendPing:
    data: bytes


@dataclass(frozen=True)
class SendFragments:
    binary: bool
    parts: list[bytes]
    ping_after: int | None  # a Ping (BETWEEN) after this part


@dataclass(frozen=True)
class SendClose:
    code: int
    reason: str


Action = Echo | SendPing | SendFragments | SendClose


class Session:
    """One connection of a Python server: turns messages into actions, and reports.

    The server loops (one per library) do the I/O; this holds what they share.
    """

    def __init__(self, board: Board, client_port: int) -> None:
        self._board = board
        self._port = client_port

    def report(self, event: str, **fields: Any) -> None:
        self._board.put(self._port, event, **fields)

    def opened(self, extensions: Sequence[str]) -> None:
        self.report("open", extensions=list(extensions))

    def on_message(self, data: str | bytes) -> Action:
        if isinstance(data, str) and data.startswith("!"):
            cmd = json.loads(data[1:])
            match cmd["do"]:
                case "close":
                    return SendClose(cmd["code"], cmd.get("reason", ""))
                case "ping":
                    return SendPing(bytes.fromhex(cmd["data"]))
                case "fragments":
                    parts = [bytes.fromhex(part) for part in cmd["parts"]]
                    return SendFragments(cmd["binary"], parts, cmd.get("pingAfter"))
                case other:
                    raise ValueError(f"unknown command {other!r}")
        raw = data.encode() if isinstance(data, str) else data
        self.report("message", binary=isinstance(data, bytes), size=len(raw), sha256=digest(raw))
        return Echo(data)

    def on_pong(self, data: bytes) -> None:
        self.report("pong", data=bytes(data).hex())

    def on_close(self, code: int | None, reason: str) -> None:
        self.report("close", code=code, reason=reason)

    def crashed(self, exc: BaseException) -> None:
        self.report("crash", error=repr(exc))


def frame_size(parts: Sequence[bytes], ping_after: int | None) -> int:
    """The frame size that cuts a message into ``parts`` (all but the last of one size).

    For our ``next_writer()``, which sends a frame once the next one's data
    comes: the frame of part ``ping_after`` goes out when part
    ``ping_after + 1`` is written, so there must be one.
    """
    assert all(len(part) == len(parts[0]) for part in parts[:-1]), "parts of unequal sizes"
    assert ping_after is None or ping_after < len(parts) - 1, "no part after the Ping"
    return len(parts[0])


def ping_now(ping_after: int | None, written: int) -> bool:
    """Whether our writer, having written part ``written``, has sent part ``ping_after``."""
    return ping_after is not None and written == ping_after + 1


# -- the servers ----------------------------------------------------------------------


class ServerSide:
    """A running server of the matrix."""

    #: Whether it can send a message in several frames (the ``fragments`` command).
    can_fragment: ClassVar[bool] = True
    #: Why not, if it cannot.
    why_not_fragments: ClassVar[str] = ""
    url: str

    def reports(self, client_port: int) -> Reports | NodeServerReports:
        raise NotImplementedError

    def stop(self) -> None:
        raise NotImplementedError


Started = Future[tuple[int, Callable[[], object]]]


class ThreadedServer(ServerSide):
    """A Python server, run by :meth:`run` in a thread of its own; reports to a :class:`Board`."""

    def __init__(self) -> None:
        self.board = Board()
        self._errors: list[BaseException] = []
        started: Started = Future()
        self._thread = threading.Thread(
            target=self._guard, args=(started,), name=type(self).__name__, daemon=True
        )
        self._thread.start()
        self.port, self._stop = started.result(TIMEOUT)
        self.url = f"ws://127.0.0.1:{self.port}/"

    def reports(self, client_port: int) -> Reports:
        return self.board.reports(client_port)

    def _guard(self, started: Started) -> None:
        try:
            self.run(started)
        except BaseException as exc:  # it must reach the test, not die with the thread
            self._errors.append(exc)
            if not started.done():
                started.set_exception(exc)

    def run(self, started: Started) -> None:
        """Listen; report ``(port, stop)`` to ``started``; serve until ``stop()``."""
        raise NotImplementedError

    def stop(self) -> None:
        if self._thread.is_alive():
            self._stop()
            self._thread.join(STOP_TIMEOUT)
        assert not self._thread.is_alive(), f"{type(self).__name__} did not stop"
        if self._errors:
            raise self._errors[0]


class OurServer(ThreadedServer):
    """An adapter's ``serve()``, running :meth:`handle_sync` or :meth:`handle_async`."""

    def __init__(self, adapter: str) -> None:
        self.adapter = adapter
        self.module: Any = {"sync": wsproto_sync, "asyncio": wsproto_asyncio, "trio": wsproto_trio}[
            adapter
        ]
        super().__init__()

    def _options(self) -> dict[str, Any]:
        upgrader = self.module.Upgrader(
            handshake_timeout=TIMEOUT, enable_compression=True, max_message_size=LIMIT
        )
        return {"upgrader": upgrader, "shutdown_timeout": 2.0}

    def _session(self, conn: Any) -> Session:
        session = Session(self.board, conn.remote_addr[1])
        conn.set_pong_handler(session.on_pong)
        session.opened([extension.name for extension in conn.protocol.extensions])
        return session

    def handle_sync(self, conn: wsproto_sync.Conn) -> None:
        session = self._session(conn)
        try:
            while True:
                kind, data = conn.read_message()
                match session.on_message(data):
                    case Echo(data):
                        conn.write_message(kind, data)
                    case SendPing(payload):
                        conn.write_control(MessageType.PING, payload, time.monotonic() + TIMEOUT)
                    case SendFragments(binary, parts, ping_after):
                        conn.write_buffer_size = frame_size(parts, ping_after)
                        with conn.next_writer(
                            MessageType.BINARY if binary else MessageType.TEXT
                        ) as writer:
                            for i, part in enumerate(parts):
                                writer.write(part)
                                if ping_now(ping_after, i):
                                    deadline = time.monotonic() + TIMEOUT
                                    conn.write_control(MessageType.PING, BETWEEN, deadline)
                    case SendClose(code, reason):
                        conn.close_gracefully(code, reason, TIMEOUT)
                        return
        except CloseError as exc:
            session.on_close(exc.code, exc.text)
        except Exception as exc:
            session.crashed(exc)

    async def handle_async(self, conn: Any) -> None:
        """:meth:`handle_sync` for wsproto_asyncio and wsproto_trio (the same async API)."""
        session = self._session(conn)
        try:
            while True:
                kind, data = await conn.read_message()
                match session.on_message(data):
                    case Echo(data):
                        await conn.write_message(kind, data)
                    case SendPing(payload):
                        await conn.write_control(MessageType.PING, payload)
                    case SendFragments(binary, parts, ping_after):
                        conn.write_buffer_size = frame_size(parts, ping_after)
                        async with conn.next_writer(
                            MessageType.BINARY if binary else MessageType.TEXT
                        ) as writer:
                            for i, part in enumerate(parts):
                                await writer.write(part)
                                if ping_now(ping_after, i):
                                    await conn.write_control(MessageType.PING, BETWEEN)
                    case SendClose(code, reason):
                        await conn.close_gracefully(code, reason, TIMEOUT)
                        return
        except CloseError as exc:
            session.on_close(exc.code, exc.text)
        except Exception as exc:
            session.crashed(exc)

    def run(self, started: Started) -> None:
        getattr(self, f"_run_{self.adapter}")(started)

    def _run_sync(self, started: Started) -> None:
        with self.module.serve(self.handle_sync, "127.0.0.1", 0, **self._options()) as server:
            started.set_result((server.address[1], server.shutdown))
            server.serve_forever()

    def _run_asyncio(self, started: Started) -> None:
        async def main() -> None:
            handler, options = self.handle_async, self._options()
            async with await self.module.serve(handler, "127.0.0.1", 0, **options) as server:
                stopping = asyncio.Event()
                loop = asyncio.get_running_loop()
                started.set_result(
                    (server.address[1], functools.partial(loop.call_soon_threadsafe, stopping.set))
                )
                await stopping.wait()

        asyncio.run(main())

    def _run_trio(self, started: Started) -> None:
        async def main() -> None:
            serve = functools.partial(
                self.module.serve, self.handle_async, "127.0.0.1", 0, **self._options()
            )
            async with trio.open_nursery() as nursery:
                server = await nursery.start(serve)
                stopping = trio.Event()
                token = trio.lowlevel.current_trio_token()
                stop = functools.partial(trio.from_thread.run_sync, stopping.set, trio_token=token)
                started.set_result((server.address[1], stop))
                await stopping.wait()
                await server.shutdown()

        trio.run(main)


class WebsocketsSyncServer(ThreadedServer):
    """``websockets.sync.server.serve``: a thread per connection."""

    def __init__(self) -> None:
        self._waiters: list[threading.Thread] = []
        super().__init__()

    def handler(self, ws: websockets.sync.server.ServerConnection) -> None:
        session = Session(self.board, ws.remote_address[1])
        session.opened([extension.name for extension in ws.protocol.extensions])
        try:
            while True:
                match session.on_message(ws.recv()):
                    case Echo(data):
                        ws.send(data)
                    case SendPing(payload):
                        self._ping(ws, session, payload)
                    case SendFragments(binary, parts, ping_after):
                        ws.send(self._fragments(ws, session, parts, ping_after), text=not binary)
                    case SendClose(code, reason):
                        ws.close(code, reason)
                        return
        except ConnectionClosed as exc:
            if exc.rcvd is not None:
                session.on_close(exc.rcvd.code, exc.rcvd.reason)
            else:
                session.on_close(None, "")
        except Exception as exc:
            session.crashed(exc)

    def _ping(
        self, ws: websockets.sync.server.ServerConnection, session: Session, payload: bytes
    ) -> None:
        # websockets has no Pong handler: a thread waits for this Pong.
        pong = ws.ping(payload)
        waiter = threading.Thread(
            target=lambda: pong.wait(TIMEOUT) and session.on_pong(payload), daemon=True
        )
        self._waiters.append(waiter)
        waiter.start()

    def _fragments(
        self,
        ws: websockets.sync.server.ServerConnection,
        session: Session,
        parts: list[bytes],
        ping_after: int | None,
    ) -> Iterator[bytes]:
        for i, part in enumerate(parts):
            yield part  # websockets sends it before asking for the next
            if i == ping_after:
                self._ping(ws, session, BETWEEN)

    def run(self, started: Started) -> None:
        with websockets.sync.server.serve(
            self.handler,
            "127.0.0.1",
            0,
            compression="deflate",
            max_size=LIMIT,
            ping_interval=None,
            close_timeout=TIMEOUT,
        ) as server:
            started.set_result((server.socket.getsockname()[1], server.shutdown))
            server.serve_forever()

    def stop(self) -> None:
        super().stop()
        for waiter in self._waiters:
            waiter.join(TIMEOUT)
            assert not waiter.is_alive()


class WebsocketsAsyncioServer(ThreadedServer):
    """``websockets.asyncio.server.serve``, on an event loop in the server's thread."""

    async def handler(self, ws: websockets.asyncio.server.ServerConnection) -> None:
        session = Session(self.board, ws.remote_address[1])
        session.opened([extension.name for extension in ws.protocol.extensions])
        waiters: set[asyncio.Task[None]] = set()

        async def report_pong(payload: bytes, pong: Awaitable[float]) -> None:
            with contextlib.suppress(ConnectionClosed, asyncio.CancelledError):
                async with asyncio.timeout(TIMEOUT):
                    await pong
                session.on_pong(payload)

        async def ping(payload: bytes) -> None:
            pong = await ws.ping(payload)
            waiters.add(asyncio.create_task(report_pong(payload, pong)))

        async def fragments(parts: list[bytes], ping_after: int | None) -> AsyncIterator[bytes]:
            for i, part in enumerate(parts):
                yield part  # websockets sends it before asking for the next
                if i == ping_after:
                    await ping(BETWEEN)

        try:
            while True:
                match session.on_message(await ws.recv()):
                    case Echo(data):
                        await ws.send(data)
                    case SendPing(payload):
                        await ping(payload)
                    case SendFragments(binary, parts, ping_after):
                        await ws.send(fragments(parts, ping_after), text=not binary)
                    case SendClose(code, reason):
                        await ws.close(code, reason)
                        return
        except ConnectionClosed as exc:
            if exc.rcvd is not None:
                session.on_close(exc.rcvd.code, exc.rcvd.reason)
            else:
                session.on_close(None, "")
        except Exception as exc:
            session.crashed(exc)
        finally:
            if waiters:
                await asyncio.wait(waiters, timeout=TIMEOUT)

    def run(self, started: Started) -> None:
        async def main() -> None:
            async with websockets.asyncio.server.serve(
                self.handler,
                "127.0.0.1",
                0,
                compression="deflate",
                max_size=LIMIT,
                ping_interval=None,
                close_timeout=TIMEOUT,
            ) as server:
                stopping = asyncio.Event()
                loop = asyncio.get_running_loop()
                port = server.sockets[0].getsockname()[1]
                started.set_result(
                    (port, functools.partial(loop.call_soon_threadsafe, stopping.set))
                )
                await stopping.wait()

        asyncio.run(main())


class AiohttpServer(ThreadedServer):
    """An ``aiohttp.web`` application, with ``autoping=False`` so that it sees Pongs."""

    can_fragment = False
    why_not_fragments = (
        "aiohttp cannot send a fragmented message: send_str(), send_bytes() and "
        "send_frame() always set FIN"
    )

    async def handler(self, request: web.Request) -> web.WebSocketResponse:
        ws = web.WebSocketResponse(compress=True, max_msg_size=LIMIT, autoping=False)
        await ws.prepare(request)
        assert request.transport is not None
        session = Session(self.board, request.transport.get_extra_info("peername")[1])
        session.opened(DEFLATE if ws.compress else [])
        try:
            while True:
                message = await ws.receive(IDLE_TIMEOUT)
                match message.type:
                    case aiohttp.WSMsgType.TEXT | aiohttp.WSMsgType.BINARY:
                        match session.on_message(message.data):
                            case Echo(str() as text):
                                await ws.send_str(text)
                            case Echo(bytes() as data):
                                await ws.send_bytes(data)
                            case SendPing(payload):
                                await ws.ping(payload)
                            case SendClose(code, reason):
                                await ws.close(code=code, message=reason.encode())
                                break
                            case action:
                                raise AssertionError(f"aiohttp cannot {action}")
                    case aiohttp.WSMsgType.PING:
                        await ws.pong(message.data)
                    case aiohttp.WSMsgType.PONG:
                        session.on_pong(message.data)
                    case aiohttp.WSMsgType.CLOSE:  # aiohttp answered it (autoclose)
                        session.on_close(message.data, message.extra or "")
                        break
                    case _:
                        session.on_close(ws.close_code, "")
                        break
        except Exception as exc:
            session.crashed(exc)
        return ws

    def run(self, started: Started) -> None:
        async def main() -> None:
            app = web.Application()
            app.router.add_get("/", self.handler)
            runner = web.AppRunner(app, shutdown_timeout=2.0)
            await runner.setup()
            try:
                await web.TCPSite(runner, "127.0.0.1", 0).start()
                stopping = asyncio.Event()
                loop = asyncio.get_running_loop()
                port = runner.addresses[0][1]
                started.set_result(
                    (port, functools.partial(loop.call_soon_threadsafe, stopping.set))
                )
                await stopping.wait()
            finally:
                await runner.cleanup()

        asyncio.run(main())


class WsprotoIO:
    """A ``wsproto.WSConnection`` on a blocking socket: events in, events out."""

    def __init__(self, sock: socket.socket, ws: wsproto.WSConnection) -> None:
        self.sock = sock
        self.ws = ws
        self._events: deque[wsevents.Event] = deque()
        self._eof = False

    def send(self, event: wsevents.Event) -> None:
        self.sock.sendall(self.ws.send(event))

    def send_fragments(self, binary: bool, parts: Sequence[bytes], ping_after: int | None) -> None:
        """One message, a frame per part (text: :func:`character_aligned`), maybe a Ping between."""
        pieces: Sequence[str | bytes] = parts if binary else character_aligned(parts)
        for i, piece in enumerate(pieces):
            last = i == len(pieces) - 1
            if isinstance(piece, bytes):
                self.send(wsevents.BytesMessage(data=piece, message_finished=last))
            else:
                self.send(wsevents.TextMessage(data=piece, message_finished=last))
            if i == ping_after:
                self.send(wsevents.Ping(payload=BETWEEN))

    def next_event(self) -> wsevents.Event:
        """The next event; raises ``EOFError`` when the peer closed TCP and none is left."""
        while not self._events:
            if self._eof:
                raise EOFError("the peer closed the TCP connection")
            data = self.sock.recv(65536)
            self._eof = not data
            self.ws.receive_data(data or None)
            self._events.extend(self.ws.events())
        return self._events.popleft()

    def wait_eof(self) -> None:
        """Read (and drop) until the peer closes TCP."""
        with contextlib.suppress(EOFError, OSError):
            while True:
                self.next_event()

    def wait_close(self) -> wsevents.CloseConnection:
        """Read (and drop messages) until the peer's Close."""
        while not isinstance(event := self.next_event(), wsevents.CloseConnection):
            pass
        return event


class WsprotoServer(ThreadedServer):
    """A server on the ``wsproto`` package: blocking sockets, a thread per connection.

    wsproto sends text frames from ``str``, so its fragments end where
    characters end (:func:`character_aligned`).
    """

    def __init__(self) -> None:
        self._stopping = threading.Event()
        self._threads: list[threading.Thread] = []
        self._socks: list[socket.socket] = []
        super().__init__()

    def run(self, started: Started) -> None:
        with socket.create_server(("127.0.0.1", 0)) as listener:
            listener.settimeout(0.05)  # how often the accepting loop looks at _stopping
            started.set_result((listener.getsockname()[1], self._stopping.set))
            while not self._stopping.is_set():
                try:
                    sock, _ = listener.accept()
                except TimeoutError:
                    continue
                sock.settimeout(IDLE_TIMEOUT)  # and stop() shuts it down, ending any read
                self._socks.append(sock)
                thread = threading.Thread(target=self._serve, args=(sock,), daemon=True)
                self._threads.append(thread)
                thread.start()
        for sock in self._socks:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
        for thread in self._threads:
            thread.join(STOP_TIMEOUT)

    def _serve(self, sock: socket.socket) -> None:
        with sock:
            io = WsprotoIO(sock, wsproto.WSConnection(wsproto.ConnectionType.SERVER))
            session = Session(self.board, sock.getpeername()[1])
            try:
                self._converse(io, session)
            except EOFError:
                session.on_close(1006, "")
            except Exception as exc:
                session.crashed(exc)

    def _converse(self, io: WsprotoIO, session: Session) -> None:
        request = io.next_event()
        assert isinstance(request, wsevents.Request), request
        deflate = PerMessageDeflate()
        io.send(wsevents.AcceptConnection(extensions=[deflate]))
        session.opened(DEFLATE if deflate.enabled() else [])
        pieces: list[Any] = []
        while True:
            match io.next_event():
                case wsevents.Message(data=data, message_finished=finished):
                    pieces.append(data)
                    if not finished:
                        continue
                    whole = "".join(pieces) if isinstance(data, str) else b"".join(pieces)
                    pieces = []
                    if self._act(io, session.on_message(whole)):
                        return
                case wsevents.Ping() as ping:
                    io.send(ping.response())
                case wsevents.Pong(payload=payload):
                    session.on_pong(payload)
                case wsevents.CloseConnection(code=code, reason=reason) as close:
                    session.on_close(code, reason or "")
                    io.send(close.response())
                    return  # the server closes TCP first
                case event:
                    raise AssertionError(f"unexpected {event!r}")

    def _act(self, io: WsprotoIO, action: Action) -> bool:
        """Do what a message asks; returns whether the connection is over."""
        match action:
            case Echo(str() as text):
                io.send(wsevents.TextMessage(data=text))
            case Echo(bytes() as data):
                io.send(wsevents.BytesMessage(data=data))
            case SendPing(payload):
                io.send(wsevents.Ping(payload=payload))
            case SendFragments(binary, parts, ping_after):
                io.send_fragments(binary, parts, ping_after)
            case SendClose(code, reason):
                io.send(wsevents.CloseConnection(code=code, reason=reason))
                io.wait_close()  # then the server closes TCP first (RFC 6455 §7.1.1)
                return True
        return False


class NodeServer(ServerSide):
    """``peer.mjs server --deflate``: Node's ``ws`` server, willing to compress."""

    def __init__(self, peers: NodePeers) -> None:
        self._peers = peers
        self.url = f"ws://127.0.0.1:{peers.server_port('--deflate')}/"

    def reports(self, client_port: int) -> NodeServerReports:
        return NodeServerReports(self._peers("server", "--deflate").reports(client=client_port))

    def stop(self) -> None:
        pass  # the NodePeers are stopped by the World


# -- the clients ----------------------------------------------------------------------


class Client:
    """The end of a connection that a scenario drives: one interface for every library.

    The methods are coroutines, so a scenario is written once; those of a
    blocking client never suspend (:func:`run_client` runs them without a loop).
    """

    #: Where it runs: "sync" (in the test thread), "asyncio" or "trio".
    runner: ClassVar[str] = "sync"
    #: Whether it can send a message in several frames, and why not.
    sends_fragments: ClassVar[bool] = True
    why_not_fragments: ClassVar[str] = ""
    #: Whether its text fragments may end inside a character.
    cuts_characters: ClassVar[bool] = True

    extensions: list[str]
    local_port: int

    def __init__(self) -> None:
        #: The payloads of the Pongs seen so far (after the reads that brought them).
        self.pongs: list[bytes] = []

    async def send(self, data: str | bytes) -> None:
        raise NotImplementedError

    async def send_fragments(
        self, binary: bool, parts: Sequence[bytes], ping_after: int | None = None
    ) -> None:
        """Send one message, a frame per part (for text, UTF-8 cut anywhere).

        With ``ping_after``, a Ping (:data:`BETWEEN`) follows that part.
        """
        raise NotImplementedError

    async def recv(self) -> str | bytes:
        """The next message; answers Pings and records Pongs on the way."""
        raise NotImplementedError

    async def ping(self, payload: bytes) -> None:
        """Send a Ping; its Pong shows in :attr:`pongs` once a later read has seen it."""
        raise NotImplementedError

    async def close(self, code: int, reason: str) -> None:
        """Run the closing handshake from this side."""
        raise NotImplementedError

    async def closed(self) -> tuple[int | None, str]:
        """Read until the server's Close: its code and reason."""
        raise NotImplementedError

    async def aclose(self) -> None:
        """Let go of the connection, whatever its state."""
        raise NotImplementedError


class OurSyncClient(Client):
    """wsproto_sync's ``Dialer``; every call has a deadline."""

    def __init__(self, conn: wsproto_sync.Conn, timeout: float) -> None:
        super().__init__()
        self.conn = conn
        self.timeout = timeout
        self.extensions = [extension.name for extension in conn.protocol.extensions]
        self.local_port = conn.local_addr[1]
        conn.set_pong_handler(self.pongs.append)

    @classmethod
    async def open(cls, url: str, deflate: bool, timeout: float) -> OurSyncClient:
        dialer = wsproto_sync.Dialer(
            handshake_timeout=timeout, enable_compression=deflate, max_message_size=LIMIT
        )
        conn, _ = dialer.dial(url)
        return cls(conn, timeout)

    def _deadlines(self) -> float:
        deadline = time.monotonic() + self.timeout
        self.conn.set_read_deadline(deadline)
        self.conn.set_write_deadline(deadline)
        return deadline

    async def send(self, data: str | bytes) -> None:
        self._deadlines()
        self.conn.write_message(kind_of(data), data)

    async def send_fragments(
        self, binary: bool, parts: Sequence[bytes], ping_after: int | None = None
    ) -> None:
        deadline = self._deadlines()
        self.conn.write_buffer_size = frame_size(parts, ping_after)
        with self.conn.next_writer(MessageType.BINARY if binary else MessageType.TEXT) as writer:
            for i, part in enumerate(parts):
                writer.write(part)
                if ping_now(ping_after, i):
                    self.conn.write_control(MessageType.PING, BETWEEN, deadline)

    async def recv(self) -> str | bytes:
        self._deadlines()
        return self.conn.read_message()[1]

    async def ping(self, payload: bytes) -> None:
        self.conn.write_control(MessageType.PING, payload, self._deadlines())

    async def close(self, code: int, reason: str) -> None:
        self.conn.close_gracefully(code, reason, self.timeout)

    async def closed(self) -> tuple[int | None, str]:
        self._deadlines()
        try:
            message = self.conn.read_message()
        except CloseError as exc:
            return exc.code, exc.text
        pytest.fail(f"a message instead of the server's Close: {message!r:.200}")

    async def aclose(self) -> None:
        self.conn.close()


class OurAsyncClient(Client):
    """wsproto_asyncio's or wsproto_trio's ``Dialer``, bounded by the run's timeout."""

    def __init__(self, conn: Any, timeout: float) -> None:
        super().__init__()
        self.conn = conn
        self.timeout = timeout
        self.extensions = [extension.name for extension in conn.protocol.extensions]
        self.local_port = conn.local_addr[1]
        conn.set_pong_handler(self.pongs.append)

    @classmethod
    async def open(cls, url: str, deflate: bool, timeout: float) -> OurAsyncClient:
        module: Any = wsproto_asyncio if cls.runner == "asyncio" else wsproto_trio
        dialer = module.Dialer(
            handshake_timeout=timeout, enable_compression=deflate, max_message_size=LIMIT
        )
        conn, _ = await dialer.dial(url)
        return cls(conn, timeout)

    async def send(self, data: str | bytes) -> None:
        await self.conn.write_message(kind_of(data), data)

    async def send_fragments(
        self, binary: bool, parts: Sequence[bytes], ping_after: int | None = None
    ) -> None:
        self.conn.write_buffer_size = frame_size(parts, ping_after)
        kind = MessageType.BINARY if binary else MessageType.TEXT
        async with self.conn.next_writer(kind) as writer:
            for i, part in enumerate(parts):
                await writer.write(part)
                if ping_now(ping_after, i):
                    await self.conn.write_control(MessageType.PING, BETWEEN)

    async def recv(self) -> str | bytes:
        return (await self.conn.read_message())[1]

    async def ping(self, payload: bytes) -> None:
        await self.conn.write_control(MessageType.PING, payload)

    async def close(self, code: int, reason: str) -> None:
        await self.conn.close_gracefully(code, reason, self.timeout)

    async def closed(self) -> tuple[int | None, str]:
        try:
            message = await self.conn.read_message()
        except CloseError as exc:
            return exc.code, exc.text
        pytest.fail(f"a message instead of the server's Close: {message!r:.200}")

    async def aclose(self) -> None:
        await self.conn.close()


class OurAsyncioClient(OurAsyncClient):
    runner = "asyncio"


class OurTrioClient(OurAsyncClient):
    runner = "trio"


class WebsocketsSyncClient(Client):
    """``websockets.sync.client.connect``."""

    def __init__(
        self,
        ws: websockets.sync.client.ClientConnection,
        stack: contextlib.ExitStack,
        timeout: float,
    ) -> None:
        super().__init__()
        self.ws = ws
        self.stack = stack
        self.timeout = timeout
        self.extensions = [extension.name for extension in ws.protocol.extensions]
        self.local_port = ws.local_address[1]
        self._pings: list[tuple[bytes, threading.Event]] = []

    @classmethod
    async def open(cls, url: str, deflate: bool, timeout: float) -> WebsocketsSyncClient:
        # Used as a context manager, as websockets 17.1 asks (or it warns).
        stack = contextlib.ExitStack()
        ws = stack.enter_context(
            websockets.sync.client.connect(
                url,
                compression="deflate" if deflate else None,
                max_size=LIMIT,
                ping_interval=None,
                open_timeout=timeout,
                close_timeout=timeout,
            )
        )
        return cls(ws, stack, timeout)

    async def send(self, data: str | bytes) -> None:
        self.ws.send(data)

    async def send_fragments(
        self, binary: bool, parts: Sequence[bytes], ping_after: int | None = None
    ) -> None:
        def fragments() -> Iterator[bytes]:
            for i, part in enumerate(parts):
                yield part  # websockets sends it before asking for the next
                if i == ping_after:
                    self._pings.append((BETWEEN, self.ws.ping(BETWEEN)))

        self.ws.send(fragments(), text=not binary)

    async def recv(self) -> str | bytes:
        data = self.ws.recv(timeout=self.timeout)
        # The background thread saw the Pongs that came before this message.
        self.pongs[:] = [payload for payload, pong in self._pings if pong.is_set()]
        return data

    async def ping(self, payload: bytes) -> None:
        self._pings.append((payload, self.ws.ping(payload)))

    async def close(self, code: int, reason: str) -> None:
        self.ws.close(code, reason)

    async def closed(self) -> tuple[int | None, str]:
        try:
            message = self.ws.recv(timeout=self.timeout)
        except ConnectionClosed as exc:
            if exc.rcvd is None:
                return None, "(no Close frame received)"
            return exc.rcvd.code, exc.rcvd.reason
        pytest.fail(f"a message instead of the server's Close: {message!r:.200}")

    async def aclose(self) -> None:
        self.stack.close()


class WebsocketsAsyncioClient(Client):
    """``websockets.asyncio.client.connect``."""

    runner = "asyncio"

    def __init__(self, ws: websockets.asyncio.client.ClientConnection) -> None:
        super().__init__()
        self.ws = ws
        self.extensions = [extension.name for extension in ws.protocol.extensions]
        self.local_port = ws.local_address[1]
        self._pings: list[tuple[bytes, Awaitable[float]]] = []

    @classmethod
    async def open(cls, url: str, deflate: bool, timeout: float) -> WebsocketsAsyncioClient:
        ws = await websockets.asyncio.client.connect(
            url,
            compression="deflate" if deflate else None,
            max_size=LIMIT,
            ping_interval=None,
            open_timeout=timeout,
            close_timeout=timeout,
        )
        return cls(ws)

    async def send(self, data: str | bytes) -> None:
        await self.ws.send(data)

    async def send_fragments(
        self, binary: bool, parts: Sequence[bytes], ping_after: int | None = None
    ) -> None:
        async def fragments() -> AsyncIterator[bytes]:
            for i, part in enumerate(parts):
                yield part  # websockets sends it before asking for the next
                if i == ping_after:
                    await self.ping(BETWEEN)

        await self.ws.send(fragments(), text=not binary)

    async def recv(self) -> str | bytes:
        data = await self.ws.recv()
        self.pongs[:] = [
            payload
            for payload, pong in self._pings
            if isinstance(pong, asyncio.Future) and pong.done() and not pong.exception()
        ]
        return data

    async def ping(self, payload: bytes) -> None:
        self._pings.append((payload, await self.ws.ping(payload)))

    async def close(self, code: int, reason: str) -> None:
        await self.ws.close(code, reason)

    async def closed(self) -> tuple[int | None, str]:
        try:
            message = await self.ws.recv()
        except ConnectionClosed as exc:
            if exc.rcvd is None:
                return None, "(no Close frame received)"
            return exc.rcvd.code, exc.rcvd.reason
        pytest.fail(f"a message instead of the server's Close: {message!r:.200}")

    async def aclose(self) -> None:
        # On Python 3.11, closing a closed connection can fail (see
        # tests/asyncio/test_asyncio_interop.py): close only an open one.
        if self.ws.state is not State.CLOSED:
            await self.ws.close()


class AiohttpClient(Client):
    """``aiohttp.ClientSession.ws_connect``, with ``autoping=False`` so that it sees Pongs."""

    runner = "asyncio"
    sends_fragments = False
    why_not_fragments = AiohttpServer.why_not_fragments

    def __init__(self, session: aiohttp.ClientSession, ws: aiohttp.ClientWebSocketResponse):
        super().__init__()
        self.session = session
        self.ws = ws
        self.extensions = DEFLATE if ws.compress else []
        self.local_port = ws.get_extra_info("sockname")[1]

    @classmethod
    async def open(cls, url: str, deflate: bool, timeout: float) -> AiohttpClient:
        session = aiohttp.ClientSession()
        try:
            ws = await session.ws_connect(
                url,
                compress=15 if deflate else 0,
                max_msg_size=LIMIT,
                autoping=False,
                timeout=aiohttp.ClientWSTimeout(ws_close=timeout),
            )
        except BaseException:
            await session.close()
            raise
        return cls(session, ws)

    async def send(self, data: str | bytes) -> None:
        if isinstance(data, str):
            await self.ws.send_str(data)
        else:
            await self.ws.send_bytes(data)

    async def _receive(self) -> aiohttp.WSMessage:
        """The next message that is not a Ping (answered) or a Pong (recorded)."""
        while True:
            message = await self.ws.receive()
            if message.type is aiohttp.WSMsgType.PING:
                await self.ws.pong(message.data)
            elif message.type is aiohttp.WSMsgType.PONG:
                self.pongs.append(message.data)
            else:
                return message

    async def recv(self) -> str | bytes:
        message = await self._receive()
        assert message.type in (aiohttp.WSMsgType.TEXT, aiohttp.WSMsgType.BINARY), message
        data: str | bytes = message.data
        return data

    async def ping(self, payload: bytes) -> None:
        await self.ws.ping(payload)

    async def close(self, code: int, reason: str) -> None:
        await self.ws.close(code=code, message=reason.encode())

    async def closed(self) -> tuple[int | None, str]:
        message = await self._receive()  # aiohttp answers it (autoclose)
        assert message.type is aiohttp.WSMsgType.CLOSE, message
        return message.data, message.extra or ""

    async def aclose(self) -> None:
        try:
            await self.ws.close()
        finally:
            await self.session.close()


class WsprotoClient(Client):
    """A client on the ``wsproto`` package, on a blocking socket with a timeout.

    wsproto sends text frames from ``str``, so its fragments end where
    characters end (:func:`character_aligned`).
    """

    cuts_characters = False

    def __init__(self, io: WsprotoIO, extensions: list[str]) -> None:
        super().__init__()
        self.io = io
        self.extensions = extensions
        self.local_port = io.sock.getsockname()[1]

    @classmethod
    async def open(cls, url: str, deflate: bool, timeout: float) -> WsprotoClient:
        parts = urllib.parse.urlsplit(url)
        assert parts.hostname is not None
        assert parts.port is not None
        sock = socket.create_connection((parts.hostname, parts.port), timeout=timeout)
        try:
            io = WsprotoIO(sock, wsproto.WSConnection(wsproto.ConnectionType.CLIENT))
            offer = [PerMessageDeflate()] if deflate else []
            io.send(wsevents.Request(host=parts.netloc, target="/", extensions=offer))
            answer = io.next_event()
            assert isinstance(answer, wsevents.AcceptConnection), answer
        except BaseException:
            sock.close()
            raise
        return cls(io, [extension.name for extension in answer.extensions])

    async def send(self, data: str | bytes) -> None:
        if isinstance(data, str):
            self.io.send(wsevents.TextMessage(data=data))
        else:
            self.io.send(wsevents.BytesMessage(data=data))

    async def send_fragments(
        self, binary: bool, parts: Sequence[bytes], ping_after: int | None = None
    ) -> None:
        self.io.send_fragments(binary, parts, ping_after)

    def _next(self) -> wsevents.Event:
        """The next event that is not a Ping (answered) or a Pong (recorded)."""
        while True:
            match self.io.next_event():
                case wsevents.Ping() as ping:
                    self.io.send(ping.response())
                case wsevents.Pong(payload=payload):
                    self.pongs.append(payload)
                case event:
                    return event

    async def recv(self) -> str | bytes:
        pieces: list[Any] = []
        while True:
            match self._next():
                case wsevents.Message(data=data, message_finished=finished):
                    pieces.append(data)
                    if finished:
                        return "".join(pieces) if isinstance(data, str) else b"".join(pieces)
                case event:
                    pytest.fail(f"{event!r} instead of a message")

    async def ping(self, payload: bytes) -> None:
        self.io.send(wsevents.Ping(payload=payload))

    async def close(self, code: int, reason: str) -> None:
        self.io.send(wsevents.CloseConnection(code=code, reason=reason))
        self.io.wait_close()  # dropping messages sent before the server saw our Close
        self.io.wait_eof()  # the server closes TCP first

    async def closed(self) -> tuple[int | None, str]:
        event = self._next()
        assert isinstance(event, wsevents.CloseConnection), f"{event!r:.200} instead of a Close"
        self.io.send(event.response())
        self.io.wait_eof()
        return event.code, event.reason or ""

    async def aclose(self) -> None:
        self.io.sock.close()


class NodeDriver:
    """``matrix_client.mjs``: Node's ``ws`` clients, driven over stdin, reporting on stdout.

    One process holds every connection of a test module; reports are sorted
    into queues by connection id.
    """

    def __init__(self, node: str) -> None:
        self._queues: dict[int | None, queue.Queue[dict[str, Any] | None]] = {}
        self._lock = threading.Lock()
        self._ended = False
        self._ids = itertools.count(1)
        # stdin is a pipe the script watches: it exits when we do, however we end.
        self._proc = subprocess.Popen(
            [node, str(NODE_CLIENT)], stdin=subprocess.PIPE, stdout=subprocess.PIPE, cwd=NODE_DIR
        )
        self._thread = threading.Thread(target=self._read, name="NodeDriver", daemon=True)
        self._thread.start()

    def _queue(self, ident: int | None) -> queue.Queue[dict[str, Any] | None]:
        with self._lock:
            if ident not in self._queues:
                self._queues[ident] = queue.Queue()
                if self._ended:
                    self._queues[ident].put(None)
            return self._queues[ident]

    def _read(self) -> None:
        assert self._proc.stdout is not None
        for line in self._proc.stdout:
            try:
                report = json.loads(line)
            except ValueError:
                report = {"event": "garbage", "line": line.decode(errors="replace")}
            self._queue(report.get("id")).put(report)
        with self._lock:
            self._ended = True
            for reports in self._queues.values():
                reports.put(None)

    def new_id(self) -> int:
        return next(self._ids)

    def tell(self, ident: int, do: str, **fields: Any) -> None:
        assert self._proc.stdin is not None
        self._proc.stdin.write(json.dumps({"id": ident, "do": do, **fields}).encode() + b"\n")
        self._proc.stdin.flush()

    def next_report(self, ident: int, timeout: float) -> dict[str, Any]:
        try:
            report = self._queue(ident).get(timeout=timeout)
        except queue.Empty:
            pytest.fail(f"node's client {ident} reported nothing within {timeout} s")
        if report is None:
            self._queue(ident).put(None)  # later calls fail the same way
            pytest.fail(f"node's client exited ({self._proc.wait(TIMEOUT)})")
        if report["event"] == "error":
            pytest.fail(f"node's client {ident} reported an error: {report['message']}")
        return report

    def stop(self) -> None:
        assert self._proc.stdin is not None
        assert self._proc.stdout is not None
        with contextlib.suppress(OSError):
            self._proc.stdin.close()  # the script terminates its connections and exits
        try:
            self._proc.wait(TIMEOUT)
        except subprocess.TimeoutExpired:
            self._proc.kill()
            self._proc.wait(TIMEOUT)
        self._thread.join(TIMEOUT)
        self._proc.stdout.close()


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


class NodeClient(Client):
    """A ``ws`` client of ``matrix_client.mjs``; its calls wait for the script's reports."""

    def __init__(self, driver: NodeDriver, ident: int, opened: dict[str, Any], timeout: float):
        super().__init__()
        self.node = driver
        self.ident = ident
        self.timeout = timeout
        self.extensions = extension_names(opened["extensions"])
        self.local_port = opened["port"]
        self._closed = False

    @classmethod
    async def open_with(
        cls, driver: NodeDriver, url: str, deflate: bool, timeout: float
    ) -> NodeClient:
        ident = driver.new_id()
        driver.tell(ident, "open", url=url, deflate=deflate)
        opened = driver.next_report(ident, timeout)
        assert opened["event"] == "open", opened
        return cls(driver, ident, opened, timeout)

    def _next(self) -> dict[str, Any]:
        """The next report that is not a Pong (recorded)."""
        while True:
            report = self.node.next_report(self.ident, self.timeout)
            if report["event"] != "pong":
                self._closed = report["event"] == "close"
                return report
            self.pongs.append(base64.b64decode(report["data"]))

    async def send(self, data: str | bytes) -> None:
        raw = data.encode() if isinstance(data, str) else data
        self.node.tell(self.ident, "send", binary=isinstance(data, bytes), data=_b64(raw))

    async def send_fragments(
        self, binary: bool, parts: Sequence[bytes], ping_after: int | None = None
    ) -> None:
        encoded = [_b64(part) for part in parts]
        self.node.tell(self.ident, "fragments", binary=binary, parts=encoded, pingAfter=ping_after)

    async def recv(self) -> str | bytes:
        report = self._next()
        assert report["event"] == "message", report
        data = base64.b64decode(report["data"])
        return data if report["binary"] else data.decode()

    async def ping(self, payload: bytes) -> None:
        self.node.tell(self.ident, "ping", data=_b64(payload))

    async def close(self, code: int, reason: str) -> None:
        self.node.tell(self.ident, "close", code=code, reason=reason)
        while self._next()["event"] != "close":
            pass  # messages sent before the server saw our Close

    async def closed(self) -> tuple[int | None, str]:
        report = self._next()
        assert report["event"] == "close", f"{report!r:.200} instead of the server's Close"
        return report["code"], report["reason"]

    async def aclose(self) -> None:
        if not self._closed:
            self.node.tell(self.ident, "terminate")


# -- running a client, in its own world -------------------------------------------------------

OUR_ADAPTERS = ["sync", "asyncio", "trio"]

CLIENTS: dict[str, type[Client]] = {
    "ours-sync": OurSyncClient,
    "ours-asyncio": OurAsyncioClient,
    "ours-trio": OurTrioClient,
    "websockets-sync": WebsocketsSyncClient,
    "websockets-asyncio": WebsocketsAsyncioClient,
    "wsproto": WsprotoClient,
    "aiohttp": AiohttpClient,
    "node": NodeClient,
}

SERVERS: dict[str, type[ServerSide]] = {
    "ours-sync": OurServer,
    "ours-asyncio": OurServer,
    "ours-trio": OurServer,
    "websockets-sync": WebsocketsSyncServer,
    "websockets-asyncio": WebsocketsAsyncioServer,
    "wsproto": WsprotoServer,
    "aiohttp": AiohttpServer,
    "node": NodeServer,
}


class World:
    """The servers and Node processes of a test module, started when first needed."""

    def __init__(self) -> None:
        self._servers: dict[str, ServerSide] = {}
        self._node_peers: NodePeers | None = None
        self._node_driver: NodeDriver | None = None

    def server(self, name: str) -> ServerSide:
        if name not in self._servers:
            if name == "node":
                if self._node_peers is None:
                    self._node_peers = NodePeers(require_node())
                self._servers[name] = NodeServer(self._node_peers)
            elif name.startswith("ours-"):
                self._servers[name] = OurServer(name.removeprefix("ours-"))
            else:
                self._servers[name] = SERVERS[name]()
        return self._servers[name]

    async def open_client(self, name: str, url: str, deflate: bool, timeout: float) -> Client:
        if name == "node":
            if self._node_driver is None:
                self._node_driver = NodeDriver(require_node())
            return await NodeClient.open_with(self._node_driver, url, deflate, timeout)
        opener: Any = CLIENTS[name]
        client: Client = await opener.open(url, deflate, timeout)
        return client

    def stop(self) -> None:
        errors: list[BaseException] = []
        stops = [server.stop for server in self._servers.values()]
        if self._node_peers is not None:
            stops.append(self._node_peers.stop)
        if self._node_driver is not None:
            stops.append(self._node_driver.stop)
        for stop in stops:
            try:
                stop()
            except BaseException as exc:  # stop the others all the same
                errors.append(exc)
        if errors:
            raise errors[0]


def run_client(runner: str, main: Callable[[], Coroutine[Any, Any, T]]) -> T:
    """Run ``main()`` where a client of ``runner`` lives.

    A blocking client's coroutines never suspend, so the test thread runs
    them to the end in one step, without an event loop.
    """
    if runner == "asyncio":
        return asyncio.run(main())
    if runner == "trio":
        return trio.run(main)
    coroutine = main()
    try:
        coroutine.send(None)
    except StopIteration as done:
        result: T = done.value
        return result
    coroutine.close()
    raise AssertionError("a blocking client suspended: it needs an event loop")


@contextlib.asynccontextmanager
async def bounded(runner: str, seconds: float) -> AsyncIterator[None]:
    """Fail what runs inside after ``seconds`` (a blocking client bounds each call instead)."""
    if runner == "asyncio":
        async with asyncio.timeout(seconds):
            yield
    elif runner == "trio":
        with trio.fail_after(seconds):
            yield
    else:
        yield


@contextlib.asynccontextmanager
async def cleaning_up(runner: str) -> AsyncIterator[None]:
    """Bounded, and shielded from a cancellation that is already under way (trio)."""
    if runner == "trio":
        with trio.CancelScope(shield=True), trio.fail_after(TIMEOUT):
            yield
    else:
        async with bounded(runner, TIMEOUT):
            yield


async def off_loop(runner: str, function: Callable[..., T], *args: Any) -> T:
    """Call a blocking ``function``, in a worker thread if an event loop runs here."""
    if runner == "asyncio":
        return await asyncio.to_thread(function, *args)
    if runner == "trio":
        return await trio.to_thread.run_sync(function, *args)
    return function(*args)
