"""The server side of the browser tests: each adapter's real ``serve()``, in a thread.

:class:`RunningServer` starts ``wsproto_sync``, ``wsproto_asyncio`` or
``wsproto_trio``'s ``serve()`` on 127.0.0.1 in a thread of its own (with its
own event loop), so the tests stay synchronous while the browser, a separate
process, talks to it. The same port answers plain HTTP through
``http_handler``: ``/`` is ``page.html``, so the page and its WebSocket share
an origin and the default same-origin check lets it in.

Every connection runs :class:`Peer`, which echoes each message and obeys
command messages from the page (text starting with ``!``, then JSON, as the
Node peer in ``tests/interop/node/peer.mjs`` does):

    !{"do": "close", "code": C, "reason": R}    close_gracefully(C, R)
    !{"do": "ping", "data": HEX}                a Ping; the Pong is reported
    !{"do": "fragments", "text": T, "frame": N} T (or "hex": HEX, binary) in N-byte frames
    !{"do": "latency"}                          answers {"latency": conn.latency}

It reports what happened to :class:`Reports`, which the tests read with a timeout:

    open {extensions, subprotocol}       message {binary, size, sha256, text}
    sent {binary, size, sha256}          pong {data}
    close {code, reason}                 (the peer's Close: CloseError)
    closed {}                            (our close_gracefully() returned)
    error {code, reason}                 (RemoteProtocolError, e.g. 1009)
    crash {error}                        (anything else: a bug)
"""

from __future__ import annotations

import asyncio
import functools
import hashlib
import importlib
import json
import queue
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import trio

from wsproto_core import (
    CloseError,
    HTTPRequest,
    MessageType,
    RemoteProtocolError,
    plain_text_error,
)
from wsproto_core.headers import HeadersLike

ADAPTERS = ["sync", "asyncio", "trio"]
TIMEOUT = 10.0  # seconds any one step may take
SHUTDOWN_TIMEOUT = 2.0  # seconds handlers get to finish when a server stops
PAGE = (Path(__file__).resolve().parent / "page.html").read_bytes()
TEXT_SHOWN = 1000  # text messages up to this size are reported whole


def serve_page(request: HTTPRequest) -> tuple[int, HeadersLike, bytes | None]:
    """The ``http_handler`` of every test server: the test page at ``/``, 404 elsewhere."""
    if request.method == "GET" and request.target == "/":
        return 200, [("Content-Type", "text/html; charset=utf-8")], PAGE
    return 404, [], None  # favicon.ico; the error hook renders the body


def digest(data: str | bytes) -> str:
    return hashlib.sha256(data.encode() if isinstance(data, str) else data).hexdigest()


def describe(kind: MessageType, data: str | bytes) -> dict[str, Any]:
    """A message as the reports and the page describe it: type, size, digest."""
    raw = data.encode() if isinstance(data, str) else data
    return {"binary": kind is MessageType.BINARY, "size": len(raw), "sha256": digest(raw)}


# -- what happened, for the tests ---------------------------------------------------------


class Reports:
    """What a server's connections reported, in order; read with :meth:`expect`."""

    def __init__(self) -> None:
        self.seen: list[dict[str, Any]] = []
        self._queue: queue.Queue[dict[str, Any]] = queue.Queue()

    def put(self, event: str, **fields: Any) -> None:
        self._queue.put({"event": event, **fields})

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
                pytest.fail(f"the server's peer crashed: {report['error']}; saw {self.seen}")

    def drain(self) -> list[dict[str, Any]]:
        """Everything reported so far and not yet read, without waiting."""
        while True:
            try:
                self.seen.append(self._queue.get_nowait())
            except queue.Empty:
                return self.seen


# -- the peer: one behaviour, run by a sync and an async loop ---------------------------------


@dataclass(frozen=True)
class Send:
    """Write a message; ``frame`` (bytes per frame) sends it in fragments."""

    kind: MessageType
    data: str | bytes
    frame: int | None = None


@dataclass(frozen=True)
class Ping:
    data: bytes


@dataclass(frozen=True)
class CloseGracefully:
    code: int
    reason: str


Action = Send | Ping | CloseGracefully


class Peer:
    """What the server does with each message; the I/O loops are in :class:`RunningServer`."""

    def __init__(self, reports: Reports) -> None:
        self.reports = reports

    def opened(self, conn: Any) -> None:
        conn.set_pong_handler(lambda data: self.reports.put("pong", data=data.hex()))
        names = [extension.name for extension in conn.protocol.extensions]
        self.reports.put("open", extensions=names, subprotocol=conn.subprotocol)

    def act(self, conn: Any, kind: MessageType, data: str | bytes) -> Action:
        if kind is MessageType.TEXT and isinstance(data, str) and data.startswith("!"):
            return self.command(conn, json.loads(data[1:]))
        fields = describe(kind, data)
        if isinstance(data, str) and len(data) <= TEXT_SHOWN:
            fields["text"] = data
        self.reports.put("message", **fields)
        return Send(kind, data)

    def command(self, conn: Any, command: dict[str, Any]) -> Action:
        match command["do"]:
            case "close":
                return CloseGracefully(command["code"], command.get("reason", ""))
            case "ping":
                return Ping(bytes.fromhex(command["data"]))
            case "fragments":
                binary = "hex" in command
                kind = MessageType.BINARY if binary else MessageType.TEXT
                data = bytes.fromhex(command["hex"]) if binary else command["text"]
                self.reports.put("sent", **describe(kind, data))
                return Send(kind, data, command["frame"])
            case "latency":
                return Send(MessageType.TEXT, json.dumps({"latency": conn.latency}))
            case other:
                raise ValueError(f"unknown command {other!r}")

    def ended(self, exc: BaseException) -> None:
        match exc:
            case CloseError():
                self.reports.put("close", code=exc.code, reason=exc.text)
            case RemoteProtocolError():
                self.reports.put("error", code=exc.code, reason=exc.reason)
            case _:
                self.reports.put("crash", error=repr(exc))

    def run_sync(self, conn: Any) -> None:
        self.opened(conn)
        try:
            while True:
                match self.act(conn, *conn.read_message()):
                    case Send(kind, data, None):
                        conn.write_message(kind, data)
                    case Send(kind, data, frame):
                        conn.write_buffer_size = frame
                        with conn.next_writer(kind) as writer:
                            writer.write(data.encode() if isinstance(data, str) else data)
                    case Ping(data):
                        conn.write_control(MessageType.PING, data)
                    case CloseGracefully(code, reason):
                        conn.close_gracefully(code, reason, TIMEOUT)
                        self.reports.put("closed")
                        return
        except Exception as exc:
            self.ended(exc)

    async def run_async(self, conn: Any) -> None:
        """:meth:`run_sync`, for wsproto_asyncio and wsproto_trio (the same async API)."""
        self.opened(conn)
        try:
            while True:
                match self.act(conn, *await conn.read_message()):
                    case Send(kind, data, None):
                        await conn.write_message(kind, data)
                    case Send(kind, data, frame):
                        conn.write_buffer_size = frame
                        async with conn.next_writer(kind) as writer:
                            await writer.write(data.encode() if isinstance(data, str) else data)
                    case Ping(data):
                        await conn.write_control(MessageType.PING, data)
                    case CloseGracefully(code, reason):
                        await conn.close_gracefully(code, reason, TIMEOUT)
                        self.reports.put("closed")
                        return
        except Exception as exc:
            self.ended(exc)


# -- the servers ----------------------------------------------------------------------------

# What a server thread reports once it listens: its address, and how to stop it.
Started = Future[tuple[Any, Callable[[], object]]]


class RunningServer:
    """An adapter's ``serve()`` on 127.0.0.1, in a thread, running :class:`Peer`.

    ``options`` go to the adapter's ``Upgrader``. Error responses (a 403 for a
    foreign origin, a 404 for a missing page) are recorded in ``refusals`` as
    ``(status, target)``.
    """

    def __init__(self, adapter: str, **options: Any) -> None:
        self.adapter = adapter
        self.reports = Reports()
        self.refusals: list[tuple[int, str | None]] = []  # (status, request target)
        self._peer = Peer(self.reports)
        self._module = importlib.import_module(f"wsproto_{adapter}")
        options.setdefault("handshake_timeout", TIMEOUT)
        self._upgrader = self._module.Upgrader(error=self._record_refusal, **options)
        self._errors: list[BaseException] = []
        started: Started = Future()
        run = getattr(self, f"_run_{adapter}")
        self._thread = threading.Thread(target=self._guard, args=(run, started), daemon=True)
        self._thread.start()
        address, self._stop = started.result(TIMEOUT)
        self.port: int = address[1]
        self.url = f"http://127.0.0.1:{self.port}/"
        self.ws_url = f"ws://127.0.0.1:{self.port}/ws"

    def _record_refusal(
        self, status: int, reason: str, request: HTTPRequest | None
    ) -> tuple[HeadersLike, bytes]:
        self.refusals.append((status, None if request is None else request.target))
        return plain_text_error(status, reason, request)

    def _options(self) -> dict[str, Any]:
        return {
            "upgrader": self._upgrader,
            "http_handler": serve_page,
            "shutdown_timeout": SHUTDOWN_TIMEOUT,
        }

    def _guard(self, run: Callable[[Started], None], started: Started) -> None:
        # An exception must reach the test, not die with the thread.
        try:
            run(started)
        except BaseException as exc:
            self._errors.append(exc)
            if not started.done():
                started.set_exception(exc)

    def _run_sync(self, started: Started) -> None:
        with self._module.serve(self._peer.run_sync, "127.0.0.1", 0, **self._options()) as server:
            started.set_result((server.address, server.shutdown))
            server.serve_forever()

    def _run_asyncio(self, started: Started) -> None:
        async def main() -> None:
            handler, options = self._peer.run_async, self._options()
            async with await self._module.serve(handler, "127.0.0.1", 0, **options) as server:
                stopping = asyncio.Event()
                loop = asyncio.get_running_loop()
                stop = functools.partial(loop.call_soon_threadsafe, stopping.set)
                started.set_result((server.address, stop))
                await stopping.wait()
            # Leaving the block shut the server down: 1001 to every connection.

        asyncio.run(main())

    def _run_trio(self, started: Started) -> None:
        async def main() -> None:
            serve = functools.partial(
                self._module.serve, self._peer.run_async, "127.0.0.1", 0, **self._options()
            )
            async with trio.open_nursery() as nursery:
                server = await nursery.start(serve)
                stopping = trio.Event()
                token = trio.lowlevel.current_trio_token()
                stop = functools.partial(trio.from_thread.run_sync, stopping.set, trio_token=token)
                started.set_result((server.address, stop))
                await stopping.wait()
                await server.shutdown()

        trio.run(main)

    def stop(self) -> None:
        """Shut the server down (1001 to every open connection); re-raise its thread's error."""
        if self._thread.is_alive():
            self._stop()
            self._thread.join(SHUTDOWN_TIMEOUT + TIMEOUT)
        assert not self._thread.is_alive(), f"the {self.adapter} server did not stop"
        if self._errors:
            raise self._errors[0]
