"""Helpers of the wsproto_trio tests.

* :func:`conn_pair` connects a Dialer's Conn to an Upgrader's over
  ``trio.testing`` memory streams: no sockets, no clock of its own, so
  under ``MockClock`` every test goes the same way.
* :class:`Gate` wraps a stream to cut or stall what it sends, or to act
  the moment data arrives: the cancellation tests' instruments.
* :func:`serving` runs ``serve()`` in a nursery of its own on 127.0.0.1.
* :class:`Relay` is a byte-counting TCP relay, to see what crossed the wire.
"""

from __future__ import annotations

import dataclasses
import hashlib
import random
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from functools import partial
from typing import Any

import trio
import trio.testing

from wsproto_trio import Conn, Dialer, MessageType, Server, Upgrader, serve

STEP = 5.0  # seconds any one step may take
BIG_TIMEOUT = 30.0  # tests moving 16 MiB messages, on slow machines
BIG = 16 * 1024 * 1024
CHUNK = 64 * 1024

#: 16 MiB of noise: a slice in the wrong place changes the hash, and nothing compresses it.
BIG_DATA = random.Random(6455).randbytes(BIG)


def digest(data: str | bytes) -> str:
    return hashlib.sha256(data.encode() if isinstance(data, str) else data).hexdigest()


def kind_of(data: str | bytes) -> MessageType:
    return MessageType.TEXT if isinstance(data, str) else MessageType.BINARY


async def write_streamed(conn: Conn, kind: MessageType, data: bytes) -> None:
    """Send ``data`` as one message through ``next_writer()``, ``CHUNK`` bytes a write."""
    view = memoryview(data)
    async with conn.next_writer(kind) as writer:
        for start in range(0, len(data), CHUNK):
            await writer.write(view[start : start + CHUNK])


async def read_streamed(conn: Conn) -> tuple[MessageType, int, str, int]:
    """Read one message through ``next_reader()``: its type, size, SHA-256 and read count."""
    kind, reader = await conn.next_reader()
    sha, size, reads = hashlib.sha256(), 0, 0
    while chunk := await reader.read(CHUNK):
        sha.update(chunk)
        size += len(chunk)
        reads += 1
    return kind, size, sha.hexdigest(), reads


# -- over memory streams ------------------------------------------------------------------


class Gate(trio.abc.Stream):
    """A stream that passes everything on to ``inner``, unless told otherwise.

    * ``send_limit``: ``send_all`` passes on at most this many more bytes,
      then waits for :meth:`open` (or a cancel), as a send stuck on a full
      socket does: 0 holds everything back, ``None`` (the default) nothing.
    * ``on_data``: called each time ``receive_some`` returns data, before
      the caller sees it (to cancel the caller's scope at that moment, say).
    """

    def __init__(self, inner: trio.abc.Stream) -> None:
        self.inner = inner
        self.send_limit: int | None = None
        self.on_data: Callable[[], None] | None = None
        self.stalled = trio.Event()  # set once a send waits at the gate
        self._opened = trio.Event()

    def open(self) -> None:
        """Let everything through from now on."""
        self.send_limit = None
        self._opened.set()

    async def send_all(self, data: bytes | bytearray | memoryview) -> None:
        data = bytes(data)
        if self.send_limit is not None and len(data) > self.send_limit:
            passed, data = data[: self.send_limit], data[self.send_limit :]
            self.send_limit = 0
            if passed:
                await self.inner.send_all(passed)
            self.stalled.set()
            await self._opened.wait()
        elif self.send_limit is not None:
            self.send_limit -= len(data)
        await self.inner.send_all(data)

    async def wait_send_all_might_not_block(self) -> None:
        await self.inner.wait_send_all_might_not_block()

    async def send_eof(self) -> None:
        await self.inner.send_eof()  # type: ignore[attr-defined]

    async def receive_some(self, max_bytes: int | None = None) -> bytes | bytearray:
        data = await self.inner.receive_some(max_bytes)
        if data and self.on_data is not None:
            self.on_data()
        return data

    async def aclose(self) -> None:
        await self.inner.aclose()


@asynccontextmanager
async def conn_pair(
    *,
    upgrader: Upgrader | None = None,
    dialer: Dialer | None = None,
    lockstep: bool = False,
) -> AsyncIterator[tuple[Conn, Conn, Gate, Gate]]:
    """A ``(client, server, client_gate, server_gate)`` pair over memory streams.

    The Dialer's ``net_dial`` returns one end of ``memory_stream_pair()``
    (``lockstep_stream_pair()`` with ``lockstep``: no buffering at all, each
    ``send_all`` waits for the peer to read), the Upgrader upgrades the
    other; each end is wrapped in a :class:`Gate`. Both Conns close on exit.
    """
    make = trio.testing.lockstep_stream_pair if lockstep else trio.testing.memory_stream_pair
    client_end, server_end = make()
    client_gate, server_gate = Gate(client_end), Gate(server_end)

    async def net_dial(address: tuple[str, int]) -> trio.abc.Stream:
        assert address == ("example.test", 80)
        return client_gate

    accepted: list[Conn] = []

    async def accept() -> None:
        accepted.append(await (upgrader or Upgrader()).upgrade(server_gate))

    async with trio.open_nursery() as nursery:
        nursery.start_soon(accept)
        dialer = dataclasses.replace(dialer or Dialer(), net_dial=net_dial, proxy=None)
        client, response = await dialer.dial("ws://example.test/")
    assert response.status_code == 101
    async with client, accepted[0] as server:
        yield client, server, client_gate, server_gate


# -- over sockets ---------------------------------------------------------------------------


def url_of(server: Server, path: str = "/") -> str:
    host, port = server.address[:2]
    return f"ws://{host}:{port}{path}"


@asynccontextmanager
async def serving(
    handler: Callable[[Conn], Awaitable[None]], **options: Any
) -> AsyncIterator[Server]:
    """``serve(handler)`` on 127.0.0.1, any port, in a nursery of its own; shut down on exit."""
    options.setdefault("shutdown_timeout", 1.0)
    async with trio.open_nursery() as nursery:
        server = await nursery.start(partial(serve, handler, "127.0.0.1", 0, **options))
        try:
            yield server
        finally:
            await server.shutdown()


def all_tasks() -> set[trio.lowlevel.Task]:
    """Every task of this ``trio.run``, walking the task tree from its root."""
    found = set()
    pending = [trio.lowlevel.current_root_task()]
    while pending:
        task = pending.pop()
        if task is None:
            continue
        found.add(task)
        for nursery in task.child_nurseries:
            pending.extend(nursery.child_tasks)
    return found


class Relay:
    """A TCP relay on 127.0.0.1 to ``target_port`` that counts the bytes it forwards.

    ``async with Relay(port) as relay`` (it runs in a nursery of its own),
    then connect to ``relay.port``; ``from_client`` and ``from_server``
    count what went each way.
    """

    def __init__(self, target_port: int) -> None:
        self.target_port = target_port
        self.port = 0
        self.from_client = 0
        self.from_server = 0

    async def __aenter__(self) -> Relay:
        self._nursery_manager = trio.open_nursery()
        nursery = await self._nursery_manager.__aenter__()
        self._scope = nursery.cancel_scope
        listeners = await nursery.start(partial(trio.serve_tcp, self._relay, 0, host="127.0.0.1"))
        self.port = listeners[0].socket.getsockname()[1]
        return self

    async def __aexit__(self, *exc_info: Any) -> bool | None:
        self._scope.cancel()
        return await self._nursery_manager.__aexit__(*exc_info)

    async def _relay(self, client: trio.SocketStream) -> None:
        async with (
            client,
            await trio.open_tcp_stream("127.0.0.1", self.target_port) as server,
            trio.open_nursery() as nursery,
        ):
            nursery.start_soon(self._pump, client, server, "from_client")
            nursery.start_soon(self._pump, server, client, "from_server")

    async def _pump(self, source: trio.SocketStream, target: trio.SocketStream, count: str) -> None:
        try:
            while data := await source.receive_some(CHUNK):
                setattr(self, count, getattr(self, count) + len(data))
                await target.send_all(data)
            await target.send_eof()  # pass the half-close on, as TCP would
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            await trio.aclose_forcefully(target)  # pass a reset on
