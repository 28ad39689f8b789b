"""The implementations ``wsproto bench`` measures: an echo server and a client of each library.

Each is written as the library's documentation suggests: read limits raised
to :attr:`Options.read_limit`, keepalive pings off, no logging, and
permessage-deflate only when the workload asks for it, with the library's
own default settings. Where a library offers one, there is also a sans-I/O
layer (W1) and a broadcast server.

A broadcast server keeps its open connections; when one of them sends a
text message ``broadcast:<text>``, it sends ``<text>`` to every open
connection, the way the library offers for it (our ``PreparedMessage``,
websockets' ``broadcast()``), and answers the sender with a JSON text
message: ``{"seconds": ..., "encodings": ..., "connections": ...}``.

Node's ``ws`` runs in ``node``, with ``bench_node.mjs`` (shipped beside
this module) as its server and client; it needs ``ws`` installed with npm
somewhere: see :func:`node_modules`.
"""

from __future__ import annotations

import asyncio
import base64
import functools
import json
import os
import platform
import queue
import shutil
import socket
import struct
import subprocess
import tempfile
import threading
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from contextlib import asynccontextmanager, suppress
from pathlib import Path
from time import perf_counter
from typing import IO, TYPE_CHECKING, Any

import wsproto_core

from .bench_base import (
    CLOSE_TIMEOUT,
    HOST,
    AsyncClient,
    AsyncEchoClient,
    BenchError,
    Impl,
    Options,
    Payload,
    Ready,
    SansIO,
    Session,
    SyncClient,
    SyncEchoClient,
    TrioEchoClient,
    async_session,
    run_asyncio,
    serve_asyncio_until_stdin_closes,
    stdin_closed,
    stdin_closed_async,
    sync_session,
    trio_session,
    trio_stdin_closed,
)

if TYPE_CHECKING:
    import aiohttp
    import trio
    import trio_websocket
    import websockets.asyncio.client
    import websockets.sync.client
    import websockets.trio.client

    import wsproto_asyncio
    import wsproto_sync
    import wsproto_trio

__all__ = ["BROADCAST", "IMPLS", "node_modules"]

#: The prefix of the text message that asks a broadcast server to broadcast the rest.
BROADCAST = "broadcast:"

#: The environment variable naming a ``node_modules`` directory that holds ``ws``.
NODE_MODULES_VARIABLE = "WSPROTO_BENCH_NODE_MODULES"

_NODE_SCRIPT = Path(__file__).with_name("bench_node.mjs")


def _reply(seconds: float, encodings: int, connections: int) -> str:
    """A broadcast server's answer to the connection that asked for the broadcast."""
    return json.dumps({"seconds": seconds, "encodings": encodings, "connections": connections})


def _text_command(data: object) -> str | None:
    """The text to broadcast, if ``data`` is a broadcast command."""
    if isinstance(data, str) and data.startswith(BROADCAST):
        return data[len(BROADCAST) :]
    return None


# -- wsproto_asyncio -------------------------------------------------------------


def _serve_wsproto_asyncio(options: Options, ready: Ready) -> None:
    import wsproto_asyncio

    async def echo(conn: wsproto_asyncio.Conn) -> None:
        while True:  # until the CloseError that serve() expects
            await conn.write_message(*await conn.read_message())

    async def main() -> None:
        upgrader = wsproto_asyncio.Upgrader(
            max_message_size=options.read_limit, enable_compression=options.compression
        )
        server = await wsproto_asyncio.serve(echo, HOST, 0, upgrader=upgrader)
        ready(server.address[1])
        await stdin_closed_async()
        await server.shutdown(1.0)

    run_asyncio(main())


def _serve_wsproto_asyncio_broadcast(options: Options, ready: Ready) -> None:
    import wsproto_asyncio
    from wsproto_asyncio import MessageType, PreparedMessage

    conns: set[wsproto_asyncio.Conn] = set()

    async def handler(conn: wsproto_asyncio.Conn) -> None:
        conns.add(conn)
        try:
            while True:  # until the CloseError that serve() expects
                _, data = await conn.read_message()
                if (text := _text_command(data)) is not None:
                    start = perf_counter()
                    message = PreparedMessage(MessageType.TEXT, text)
                    for each in list(conns):
                        await each.write_prepared_message(message)
                    seconds = perf_counter() - start
                    await conn.write_message(
                        MessageType.TEXT, _reply(seconds, message.encodings, len(conns))
                    )
        finally:
            conns.discard(conn)

    async def main() -> None:
        upgrader = wsproto_asyncio.Upgrader(
            max_message_size=options.read_limit, enable_compression=options.compression
        )
        server = await wsproto_asyncio.serve(handler, HOST, 0, upgrader=upgrader)
        ready(server.address[1])
        await stdin_closed_async()

    run_asyncio(main())


class _WsprotoAsyncioClient(AsyncEchoClient):
    def __init__(self, conn: wsproto_asyncio.Conn, compressed: bool) -> None:
        self._conn = conn
        self._compressed = compressed
        self.recv = conn.read_message

    def sender(self, message: Payload) -> Callable[[Payload], Awaitable[object]]:
        from wsproto_asyncio import MessageType

        kind = MessageType.TEXT if isinstance(message, str) else MessageType.BINARY
        return functools.partial(self._conn.write_message, kind)

    def payload(self, received: object) -> Payload:
        assert isinstance(received, tuple)
        return super().payload(received[1])

    def compressed(self) -> bool:
        return self._compressed

    async def close(self) -> None:
        await self._conn.close_gracefully(timeout=CLOSE_TIMEOUT)


def _deflate_in(extensions: Sequence[Any]) -> bool:
    """Whether permessage-deflate is among our core's negotiated extensions."""
    return any(getattr(offer, "name", None) == "permessage-deflate" for offer in extensions)


async def _connect_wsproto_asyncio(url: str, options: Options) -> AsyncClient:
    import wsproto_asyncio

    dialer = wsproto_asyncio.Dialer(
        max_message_size=options.read_limit, enable_compression=options.compression, proxy=None
    )
    conn, response = await dialer.dial(url)
    return _WsprotoAsyncioClient(conn, _deflate_in(response.extensions))


# -- wsproto_sync ---------------------------------------------------------------------


def _serve_wsproto_sync(options: Options, ready: Ready) -> None:
    import wsproto_sync

    def echo(conn: wsproto_sync.Conn) -> None:
        while True:  # until the CloseError that serve() expects
            conn.write_message(*conn.read_message())

    upgrader = wsproto_sync.Upgrader(
        max_message_size=options.read_limit, enable_compression=options.compression
    )
    server = wsproto_sync.serve(echo, HOST, 0, upgrader=upgrader)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    ready(server.address[1])
    stdin_closed()
    server.shutdown(1.0)


def _serve_wsproto_sync_broadcast(options: Options, ready: Ready) -> None:
    import wsproto_sync
    from wsproto_sync import MessageType, PreparedMessage

    conns: set[wsproto_sync.Conn] = set()
    lock = threading.Lock()

    def handler(conn: wsproto_sync.Conn) -> None:
        with lock:
            conns.add(conn)
        try:
            while True:  # until the CloseError that serve() expects
                _, data = conn.read_message()
                if (text := _text_command(data)) is not None:
                    start = perf_counter()
                    message = PreparedMessage(MessageType.TEXT, text)
                    with lock:
                        audience = list(conns)
                    # Other threads are reading those connections: one writer
                    # and one reader at a time is what Conn allows.
                    for each in audience:
                        each.write_prepared_message(message)
                    seconds = perf_counter() - start
                    conn.write_message(
                        MessageType.TEXT, _reply(seconds, message.encodings, len(audience))
                    )
        finally:
            with lock:
                conns.discard(conn)

    upgrader = wsproto_sync.Upgrader(
        max_message_size=options.read_limit, enable_compression=options.compression
    )
    server = wsproto_sync.serve(handler, HOST, 0, upgrader=upgrader)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    ready(server.address[1])
    stdin_closed()


class _WsprotoSyncClient(SyncEchoClient):
    def __init__(self, conn: wsproto_sync.Conn, compressed: bool) -> None:
        self._conn = conn
        self._compressed = compressed
        self.recv = conn.read_message

    def sender(self, message: Payload) -> Callable[[Payload], object]:
        from wsproto_sync import MessageType

        kind = MessageType.TEXT if isinstance(message, str) else MessageType.BINARY
        return functools.partial(self._conn.write_message, kind)

    def payload(self, received: object) -> Payload:
        assert isinstance(received, tuple)
        return super().payload(received[1])

    def compressed(self) -> bool:
        return self._compressed

    def close(self) -> None:
        self._conn.close_gracefully(timeout=CLOSE_TIMEOUT)

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
    conn, response = dialer.dial(url)
    return _WsprotoSyncClient(conn, _deflate_in(response.extensions))


# -- wsproto_trio ---------------------------------------------------------------------


def _serve_wsproto_trio(options: Options, ready: Ready) -> None:
    import trio

    import wsproto_trio

    async def echo(conn: wsproto_trio.Conn) -> None:
        while True:  # until the CloseError that serve() expects
            await conn.write_message(*await conn.read_message())

    async def main() -> None:
        upgrader = wsproto_trio.Upgrader(
            max_message_size=options.read_limit, enable_compression=options.compression
        )
        async with trio.open_nursery() as nursery:
            start = functools.partial(wsproto_trio.serve, echo, HOST, 0, upgrader=upgrader)
            server: wsproto_trio.Server = await nursery.start(start)
            ready(server.address[1])
            await trio_stdin_closed()
            await server.shutdown()

    trio.run(main)


def _serve_wsproto_trio_broadcast(options: Options, ready: Ready) -> None:
    import trio

    import wsproto_trio
    from wsproto_trio import MessageType, PreparedMessage

    conns: set[wsproto_trio.Conn] = set()

    async def handler(conn: wsproto_trio.Conn) -> None:
        conns.add(conn)
        try:
            while True:  # until the CloseError that serve() expects
                _, data = await conn.read_message()
                if (text := _text_command(data)) is not None:
                    start = perf_counter()
                    message = PreparedMessage(MessageType.TEXT, text)
                    for each in list(conns):
                        await each.write_prepared_message(message)
                    seconds = perf_counter() - start
                    await conn.write_message(
                        MessageType.TEXT, _reply(seconds, message.encodings, len(conns))
                    )
        finally:
            conns.discard(conn)

    async def main() -> None:
        upgrader = wsproto_trio.Upgrader(
            max_message_size=options.read_limit, enable_compression=options.compression
        )
        async with trio.open_nursery() as nursery:
            start = functools.partial(wsproto_trio.serve, handler, HOST, 0, upgrader=upgrader)
            server: wsproto_trio.Server = await nursery.start(start)
            ready(server.address[1])
            await trio_stdin_closed()
            nursery.cancel_scope.cancel()

    trio.run(main)


class _WsprotoTrioClient(TrioEchoClient):
    def __init__(self, conn: wsproto_trio.Conn, compressed: bool) -> None:
        self._conn = conn
        self._compressed = compressed
        self.recv = conn.read_message

    def sender(self, message: Payload) -> Callable[[Payload], Awaitable[object]]:
        from wsproto_trio import MessageType

        kind = MessageType.TEXT if isinstance(message, str) else MessageType.BINARY
        return functools.partial(self._conn.write_message, kind)

    def payload(self, received: object) -> Payload:
        assert isinstance(received, tuple)
        return super().payload(received[1])

    def compressed(self) -> bool:
        return self._compressed

    async def close(self) -> None:
        await self._conn.close_gracefully(timeout=CLOSE_TIMEOUT)


@asynccontextmanager
async def _open_wsproto_trio(url: str, options: Options) -> AsyncIterator[AsyncClient]:
    import wsproto_trio

    dialer = wsproto_trio.Dialer(
        max_message_size=options.read_limit, enable_compression=options.compression, proxy=None
    )
    conn, response = await dialer.dial(url)
    client = _WsprotoTrioClient(conn, _deflate_in(response.extensions))
    try:
        yield client
    finally:
        await client.close()


# -- websockets (asyncio) ---------------------------------------------------------


def _serve_websockets(options: Options, ready: Ready) -> None:
    from websockets.asyncio.server import ServerConnection, serve

    async def echo(ws: ServerConnection) -> None:
        async for message in ws:
            await ws.send(message)

    async def main() -> None:
        async with serve(
            echo,
            HOST,
            0,
            compression="deflate" if options.compression else None,
            max_size=options.read_limit,
            ping_interval=None,
        ) as server:
            ready(server.sockets[0].getsockname()[1])
            await stdin_closed_async()

    run_asyncio(main())


def _serve_websockets_broadcast(options: Options, ready: Ready) -> None:
    from websockets.asyncio.server import ServerConnection, broadcast, serve

    conns: set[ServerConnection] = set()

    async def handler(ws: ServerConnection) -> None:
        conns.add(ws)
        try:
            async for message in ws:
                if (text := _text_command(message)) is not None:
                    start = perf_counter()
                    broadcast(conns, text)
                    seconds = perf_counter() - start
                    # broadcast() frames (and compresses) the message once per connection.
                    await ws.send(_reply(seconds, len(conns), len(conns)))
        finally:
            conns.discard(ws)

    async def main() -> None:
        async with serve(
            handler,
            HOST,
            0,
            compression="deflate" if options.compression else None,
            max_size=options.read_limit,
            ping_interval=None,
        ) as server:
            ready(server.sockets[0].getsockname()[1])
            await stdin_closed_async()

    run_asyncio(main())


class _WebsocketsClient(AsyncEchoClient):
    def __init__(self, ws: websockets.asyncio.client.ClientConnection) -> None:
        self._ws = ws
        self.recv = ws.recv

    def sender(self, message: Payload) -> Callable[[Payload], Awaitable[object]]:
        return self._ws.send

    def compressed(self) -> bool:
        return any(ext.name == "permessage-deflate" for ext in self._ws.protocol.extensions)

    async def close(self) -> None:
        await self._ws.close()


async def _connect_websockets(url: str, options: Options) -> AsyncClient:
    from websockets.asyncio.client import connect

    ws = await connect(
        url,
        compression="deflate" if options.compression else None,
        max_size=options.read_limit,
        ping_interval=None,
        close_timeout=CLOSE_TIMEOUT,
        proxy=None,
    )
    return _WebsocketsClient(ws)


# -- websockets (threads) ---------------------------------------------------------


def _serve_websockets_sync(options: Options, ready: Ready) -> None:
    from websockets.sync.server import ServerConnection, serve

    def echo(ws: ServerConnection) -> None:
        for message in ws:
            ws.send(message)

    server = serve(
        echo,
        HOST,
        0,
        compression="deflate" if options.compression else None,
        max_size=options.read_limit,
        ping_interval=None,
    )
    threading.Thread(target=server.serve_forever, daemon=True).start()
    ready(server.socket.getsockname()[1])
    stdin_closed()
    server.shutdown()


def _serve_websockets_sync_broadcast(options: Options, ready: Ready) -> None:
    from websockets.sync.server import ServerConnection, broadcast, serve

    conns: set[ServerConnection] = set()
    lock = threading.Lock()

    def handler(ws: ServerConnection) -> None:
        with lock:
            conns.add(ws)
        try:
            for message in ws:
                if (text := _text_command(message)) is not None:
                    start = perf_counter()
                    with lock:
                        audience = list(conns)
                    broadcast(audience, text)
                    seconds = perf_counter() - start
                    ws.send(_reply(seconds, len(audience), len(audience)))
        finally:
            with lock:
                conns.discard(ws)

    server = serve(
        handler,
        HOST,
        0,
        compression="deflate" if options.compression else None,
        max_size=options.read_limit,
        ping_interval=None,
    )
    threading.Thread(target=server.serve_forever, daemon=True).start()
    ready(server.socket.getsockname()[1])
    stdin_closed()


class _WebsocketsSyncClient(SyncEchoClient):
    def __init__(self, ws: websockets.sync.client.ClientConnection) -> None:
        self._ws = ws
        self.recv = ws.recv

    def sender(self, message: Payload) -> Callable[[Payload], object]:
        return self._ws.send

    def compressed(self) -> bool:
        return any(ext.name == "permessage-deflate" for ext in self._ws.protocol.extensions)

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
        close_timeout=CLOSE_TIMEOUT,
        proxy=None,
        legacy=True,  # the documented way to keep the connection outside a `with` block
    )
    return _WebsocketsSyncClient(ws)


# -- websockets (trio) ------------------------------------------------------------


def _serve_websockets_trio(options: Options, ready: Ready) -> None:
    import trio
    from websockets.trio.server import Server, ServerConnection, serve

    async def echo(ws: ServerConnection) -> None:
        async for message in ws:
            await ws.send(message)

    async def main() -> None:
        async with trio.open_nursery() as nursery:
            start = functools.partial(
                serve,
                echo,
                0,
                host=HOST,
                compression="deflate" if options.compression else None,
                max_size=options.read_limit,
                ping_interval=None,
            )
            server: Server = await nursery.start(start)
            ready(server.listeners[0].socket.getsockname()[1])
            await trio_stdin_closed()
            await server.aclose()

    trio.run(main)


def _serve_websockets_trio_broadcast(options: Options, ready: Ready) -> None:
    import trio
    from websockets.trio.server import Server, ServerConnection, broadcast, serve

    conns: set[ServerConnection] = set()

    async def handler(ws: ServerConnection) -> None:
        conns.add(ws)
        try:
            async for message in ws:
                if (text := _text_command(message)) is not None:
                    start = perf_counter()
                    await broadcast(list(conns), text)
                    seconds = perf_counter() - start
                    await ws.send(_reply(seconds, len(conns), len(conns)))
        finally:
            conns.discard(ws)

    async def main() -> None:
        async with trio.open_nursery() as nursery:
            start = functools.partial(
                serve,
                handler,
                0,
                host=HOST,
                compression="deflate" if options.compression else None,
                max_size=options.read_limit,
                ping_interval=None,
            )
            server: Server = await nursery.start(start)
            ready(server.listeners[0].socket.getsockname()[1])
            await trio_stdin_closed()
            nursery.cancel_scope.cancel()

    trio.run(main)


class _WebsocketsTrioClient(TrioEchoClient):
    def __init__(self, ws: websockets.trio.client.ClientConnection) -> None:
        self._ws = ws
        self.recv = ws.recv

    def sender(self, message: Payload) -> Callable[[Payload], Awaitable[object]]:
        return self._ws.send

    def compressed(self) -> bool:
        return any(ext.name == "permessage-deflate" for ext in self._ws.protocol.extensions)

    async def close(self) -> None:
        await self._ws.aclose()


@asynccontextmanager
async def _open_websockets_trio(url: str, options: Options) -> AsyncIterator[AsyncClient]:
    from websockets.trio.client import connect

    async with connect(
        url,
        compression="deflate" if options.compression else None,
        max_size=options.read_limit,
        ping_interval=None,
        close_timeout=CLOSE_TIMEOUT,
        proxy=None,
    ) as ws:
        yield _WebsocketsTrioClient(ws)


def _websockets_has_trio() -> str | None:
    import importlib.util

    if importlib.util.find_spec("websockets.trio") is None:
        return "the installed websockets has no trio implementation (websockets.trio)"
    return None


# -- aiohttp ----------------------------------------------------------------------------


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
        site = web.TCPSite(runner, HOST, 0)
        await site.start()
        ready(runner.addresses[0][1])
        await stdin_closed_async()
        await runner.cleanup()

    run_asyncio(main())


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

    def compressed(self) -> bool:
        return bool(self._ws.compress)

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


# -- picows --------------------------------------------------------------------------
#
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
            self.done: Any = None  # an asyncio.Future[Payload | None]
            self.paused = False
            self.resumed: Any = None  # an asyncio.Future[None]

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
    serve_asyncio_until_stdin_closes(
        lambda: ws_create_server(
            lambda request: echo_listener(), HOST, 0, max_frame_size=options.read_limit
        ),
        ready,
    )


class _PicowsClient(AsyncClient):
    """picows is callback-based, so its client has its own drivers, in its listener."""

    def __init__(self, transport: Any, listener: Any) -> None:
        self._transport = transport
        self._listener = listener

    def _start(self, mode: int, message: Payload) -> Any:
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
        return echo  # type: ignore[no-any-return]

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
            async with asyncio.timeout(CLOSE_TIMEOUT):
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


# -- trio-websocket ----------------------------------------------------------------


def _serve_trio_websocket(options: Options, ready: Ready) -> None:
    import trio
    from trio_websocket import ConnectionClosed, WebSocketRequest, serve_websocket

    async def echo(request: WebSocketRequest) -> None:
        ws = await request.accept()
        with suppress(ConnectionClosed):
            while True:
                await ws.send_message(await ws.get_message())

    async def main() -> None:
        async with trio.open_nursery() as nursery:
            start = functools.partial(
                serve_websocket, echo, HOST, 0, None, max_message_size=options.read_limit
            )
            server: trio_websocket.WebSocketServer = await nursery.start(start)
            ready(server.port)
            await trio_stdin_closed()
            nursery.cancel_scope.cancel()

    trio.run(main)


class _TrioWebsocketClient(TrioEchoClient):
    def __init__(self, ws: trio_websocket.WebSocketConnection) -> None:
        self._ws = ws
        self.recv = ws.get_message

    def sender(self, message: Payload) -> Callable[[Payload], Awaitable[object]]:
        return self._ws.send_message

    async def close(self) -> None:
        await self._ws.aclose()


@asynccontextmanager
async def _open_trio_websocket(url: str, options: Options) -> AsyncIterator[AsyncClient]:
    from trio_websocket import open_websocket_url

    async with open_websocket_url(
        url, max_message_size=options.read_limit, disconnect_timeout=CLOSE_TIMEOUT
    ) as ws:
        yield _TrioWebsocketClient(ws)


# -- Node's ws ----------------------------------------------------------------------------


def node_modules() -> Path | None:
    """The ``node_modules`` directory that holds Node's ``ws``, if one is found.

    In order: ``$WSPROTO_BENCH_NODE_MODULES`` (``--node-modules``), the
    checkout's ``tests/interop/node/node_modules`` (which ``make test``
    installs with ``npm ci``), and ``./node_modules``.
    """
    candidates = []
    if configured := os.environ.get(NODE_MODULES_VARIABLE):
        candidates.append(Path(configured))
    # src/adapters/wsproto_cli/ in a checkout; nothing there in an installed wheel.
    candidates.append(Path(__file__).resolve().parents[3] / "tests" / "interop" / "node")
    candidates.append(Path.cwd())
    for candidate in candidates:
        for directory in (candidate, candidate / "node_modules"):
            if (directory / "ws" / "package.json").is_file():
                return directory
    return None


def _node_requires() -> str | None:
    if shutil.which("node") is None:
        return "node is not on PATH"
    if node_modules() is None:
        return (
            "Node's ws was not found: `npm install ws` in a directory and pass "
            f"--node-modules DIR/node_modules (or set {NODE_MODULES_VARIABLE})"
        )
    return None


@functools.cache
def _node_version() -> str:
    modules = node_modules()
    try:
        assert modules is not None
        ws = json.loads((modules / "ws" / "package.json").read_text())["version"]
        node = subprocess.run(
            ["node", "--version"], capture_output=True, text=True, timeout=10, check=True
        ).stdout.strip()
    except (AssertionError, OSError, ValueError, KeyError, subprocess.SubprocessError):
        return "?"
    return f"{ws} (node {node})"


def _node_command(mode: str, options: Options, *arguments: str) -> list[str]:
    modules = node_modules()
    if modules is None:
        raise BenchError("Node's ws was not found")
    command = ["node", str(_NODE_SCRIPT), mode, str(modules), *arguments]
    command += ["--max-payload", str(options.read_limit)]
    return [*command, "--deflate"] if options.compression else command


class _NodeSession(Session):
    """A client in a ``node`` process, driven with one JSON command a line on its stdin.

    ``bench_node.mjs`` runs each command (``exchange``, ``round_trips``,
    ``pipelined``, ``close``) itself and answers with one JSON line, so the
    loops that are measured run in Node, as a Node program would.
    """

    def __init__(self, url: str, options: Options, deadline: float) -> None:
        self._deadline = deadline
        self._log: IO[bytes] = tempfile.TemporaryFile()  # noqa: SIM115 - closed by close()
        self._process = subprocess.Popen(
            _node_command("client", options, url),
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=self._log,
        )
        self._lines: queue.Queue[bytes] = queue.Queue()
        threading.Thread(target=self._read_lines, daemon=True).start()
        try:
            opened = self._reply()
        except BaseException:
            self._end()
            raise
        self._extensions = str(opened.get("extensions", ""))

    def _read_lines(self) -> None:
        stdout = self._process.stdout
        assert stdout is not None
        for line in stdout:
            self._lines.put(line)
        self._lines.put(b"")

    def _reply(self, deadline: float | None = None) -> dict[str, Any]:
        deadline = self._deadline if deadline is None else deadline
        try:
            line = self._lines.get(timeout=max(0.0, deadline - time.monotonic()))
        except queue.Empty:
            self._process.kill()
            raise TimeoutError("the node client did not answer before the deadline") from None
        if not line:
            self._log.seek(0)
            text = self._log.read().decode(errors="replace").strip()[-2000:]
            raise BenchError(f"the node client exited: {text or self._process.poll()}")
        reply: dict[str, Any] = json.loads(line)
        if "error" in reply:
            raise BenchError(f"node: {reply['error']}")
        return reply

    def _call(
        self, op: str, message: Payload | None = None, deadline: float | None = None, **fields: Any
    ) -> dict[str, Any]:
        command: dict[str, Any] = {"op": op, **fields}
        if message is not None:
            command["binary"] = isinstance(message, bytes)
            command["data"] = (
                base64.b64encode(message).decode() if isinstance(message, bytes) else message
            )
        stdin = self._process.stdin
        assert stdin is not None
        stdin.write(json.dumps(command).encode() + b"\n")
        stdin.flush()
        return self._reply(deadline)

    def exchange(self, message: Payload) -> Payload:
        reply = self._call("exchange", message)
        data = reply["data"]
        return base64.b64decode(data) if reply["binary"] else str(data)

    def round_trips(self, message: Payload, duration: float) -> tuple[int, float]:
        reply = self._call("round_trips", message, duration=duration)
        return int(reply["count"]), float(reply["elapsed"])

    def pipelined(self, message: Payload, count: int) -> float:
        return float(self._call("pipelined", message, count=count)["elapsed"])

    def compressed(self) -> bool:
        return "permessage-deflate" in self._extensions

    def close(self) -> None:
        grace = max(self._deadline, time.monotonic() + CLOSE_TIMEOUT)
        try:
            with suppress(Exception):  # the measurement, not the close, reports errors
                self._call("close", deadline=grace)
        finally:
            self._end()

    def _end(self) -> None:
        with suppress(OSError):
            assert self._process.stdin is not None
            self._process.stdin.close()
        try:
            self._process.wait(CLOSE_TIMEOUT)
        except subprocess.TimeoutExpired:
            self._process.kill()
            self._process.wait()
        self._log.close()


# -- raw TCP: the limit ----------------------------------------------------------------
# Not WebSocket: messages behind a 5-byte prefix (a type byte, a 32-bit length),
# echoed by a thread per connection over blocking sockets. What Python's sockets
# do with no protocol at all: the ceiling of the blocking adapters.

_RAW_PREFIX = struct.Struct("!BI")
_RAW_TEXT, _RAW_BINARY = 1, 2
_RAW_READ = 65536


def _raw_message(buffer: bytearray) -> tuple[int, bytes] | None:
    """The first whole prefixed message in ``buffer``, taken out of it, or ``None``."""
    if len(buffer) < _RAW_PREFIX.size:
        return None
    kind, size = _RAW_PREFIX.unpack_from(buffer)
    end = _RAW_PREFIX.size + size
    if len(buffer) < end:
        return None
    data = bytes(buffer[_RAW_PREFIX.size : end])
    del buffer[:end]
    return kind, data


def _raw_frame(kind: int, message: Payload) -> bytes:
    data = message.encode() if isinstance(message, str) else message
    return _RAW_PREFIX.pack(kind, len(data)) + data


def _port_of(url: str) -> int:
    """The port of a ``ws://host:port/`` URL of the bench's servers."""
    return int(url.rsplit(":", 1)[1].split("/", 1)[0])


class _RawStream:
    """Prefixed messages over a blocking socket."""

    def __init__(self, sock: socket.socket) -> None:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.sock = sock
        self._buffer = bytearray()

    def read(self) -> tuple[int, bytes | bytearray]:
        buffer = self._buffer
        while True:
            if (message := _raw_message(buffer)) is not None:
                return message
            if len(buffer) >= _RAW_PREFIX.size:
                kind, size = _RAW_PREFIX.unpack_from(buffer)
                if size >= _RAW_READ:
                    return kind, self._read_large(size)
            chunk = self.sock.recv(_RAW_READ)
            if not chunk:
                raise EOFError("the peer closed the connection")
            buffer += chunk

    def _read_large(self, size: int) -> bytearray:
        # Straight into a buffer of the message's size, no copy to join.
        data = bytearray(size)
        have = len(self._buffer) - _RAW_PREFIX.size
        data[:have] = memoryview(self._buffer)[_RAW_PREFIX.size :]
        self._buffer.clear()
        with memoryview(data) as view:
            while have < size:
                received = self.sock.recv_into(view[have:])
                if not received:
                    raise EOFError("the peer closed the connection")
                have += received
        return data

    def write(self, kind: int, data: bytes | bytearray) -> None:
        prefix = _RAW_PREFIX.pack(kind, len(data))
        if len(data) < _RAW_READ:
            self.sock.sendall(prefix + data)  # one send for a small message
        else:
            self.sock.sendall(prefix)  # no copy of a large one
            self.sock.sendall(data)


def _serve_raw_tcp(options: Options, ready: Ready) -> None:
    def echo(sock: socket.socket) -> None:
        stream = _RawStream(sock)
        with sock, suppress(EOFError, OSError):
            while True:
                stream.write(*stream.read())

    listener = socket.create_server((HOST, 0))

    def accept() -> None:
        with suppress(OSError):
            while True:
                sock, _ = listener.accept()
                threading.Thread(target=echo, args=(sock,), daemon=True).start()

    threading.Thread(target=accept, daemon=True).start()
    ready(listener.getsockname()[1])
    stdin_closed()
    listener.close()


class _RawMessages:
    """What every raw client shares: the payload of a prefixed message, never compressed."""

    def payload(self, received: object) -> Payload:
        assert isinstance(received, tuple)
        kind, data = received
        return data.decode() if kind == _RAW_TEXT else bytes(data)

    def compressed(self) -> bool:
        return False


class _RawTcpClient(_RawMessages, SyncEchoClient):
    def __init__(self, sock: socket.socket) -> None:
        self._stream = _RawStream(sock)
        self.recv = self._stream.read

    def sender(self, message: Payload) -> Callable[[Payload], object]:
        write = self._stream.write
        if isinstance(message, str):
            return lambda text: write(_RAW_TEXT, text.encode())  # type: ignore[union-attr]
        return functools.partial(write, _RAW_BINARY)

    def close(self) -> None:
        self._stream.sock.close()

    def abort(self) -> None:
        with suppress(OSError):  # shutdown() wakes the threads blocked on the socket
            self._stream.sock.shutdown(socket.SHUT_RDWR)
        self._stream.sock.close()


def _connect_raw_tcp(url: str, options: Options, timeout: float) -> SyncClient:
    port = _port_of(url)
    sock = socket.create_connection((HOST, port), timeout=timeout)
    sock.settimeout(None)
    return _RawTcpClient(sock)


# -- raw asyncio and raw trio: what an awaited read costs --------------------------------
#
# Not WebSocket either: raw TCP's prefixed messages, read by a task that
# waits whenever the next message is not here yet, as any API whose reads
# are awaited must (ours, aiohttp's, websockets', trio-websocket's), and
# nothing else. In W2 every read waits, so this is what such a library can
# reach on this event loop at best; picows calls the application back from
# the loop instead, which no awaited read can match. W2 only: in W3 and W4
# these naive streams (a send per message, copies to join) are no ceiling.


class _RawAsyncioStream(asyncio.BufferedProtocol):
    """Prefixed messages over an asyncio transport; a read awaits a future when it must wait.

    A buffered protocol, as ``wsproto_asyncio``'s: the transport reads into
    one buffer kept for the connection, where ``data_received()`` would get
    a fresh ``bytes`` of each read (asyncio's selector loop allocates 256 KiB
    for every ``recv()`` and shrinks it), which costs more than the floor.
    """

    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self._buffer = bytearray()
        self._incoming = memoryview(bytearray(_RAW_READ))
        self._waiter: asyncio.Future[None] | None = None
        self._ended = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]  # a TCP transport

    def get_buffer(self, sizehint: int) -> memoryview:
        return self._incoming

    def buffer_updated(self, nbytes: int) -> None:
        self._buffer += self._incoming[:nbytes]
        self._wake()

    def eof_received(self) -> bool:
        self._ended = True
        self._wake()
        return False

    def connection_lost(self, exc: Exception | None) -> None:
        self._ended = True
        self._wake()

    def _wake(self) -> None:
        if self._waiter is not None and not self._waiter.done():
            self._waiter.set_result(None)

    async def read(self) -> tuple[int, bytes]:
        while (message := _raw_message(self._buffer)) is None:
            if self._ended:
                raise EOFError("the peer closed the connection")
            self._waiter = asyncio.get_running_loop().create_future()
            try:
                await self._waiter
            finally:
                self._waiter = None
        return message

    async def write(self, kind: int, message: Payload) -> None:
        assert self.transport is not None
        self.transport.write(_raw_frame(kind, message))


def _serve_raw_asyncio(options: Options, ready: Ready) -> None:
    tasks: set[asyncio.Task[None]] = set()

    async def echo(stream: _RawAsyncioStream) -> None:
        with suppress(EOFError, ConnectionError):
            while True:
                kind, data = await stream.read()
                await stream.write(kind, data)

    def connected() -> _RawAsyncioStream:
        stream = _RawAsyncioStream()
        task = asyncio.get_running_loop().create_task(echo(stream))
        tasks.add(task)
        task.add_done_callback(tasks.discard)
        return stream

    serve_asyncio_until_stdin_closes(
        lambda: asyncio.get_running_loop().create_server(connected, HOST, 0), ready
    )


class _RawAsyncClient(_RawMessages, AsyncEchoClient):
    """What the raw asyncio and raw trio clients share: the stream's read and write."""

    def __init__(self, stream: _RawAsyncioStream | _RawTrioStream) -> None:
        self.recv = stream.read
        self._write = stream.write

    def sender(self, message: Payload) -> Callable[[Payload], Awaitable[object]]:
        return functools.partial(
            self._write, _RAW_TEXT if isinstance(message, str) else _RAW_BINARY
        )


class _RawAsyncioClient(_RawAsyncClient):
    def __init__(self, stream: _RawAsyncioStream) -> None:
        super().__init__(stream)
        self._transport = stream.transport

    async def close(self) -> None:
        if self._transport is not None:
            self._transport.close()


async def _connect_raw_asyncio(url: str, options: Options) -> AsyncClient:
    port = _port_of(url)
    _, stream = await asyncio.get_running_loop().create_connection(_RawAsyncioStream, HOST, port)
    return _RawAsyncioClient(stream)


class _RawTrioStream:
    """Prefixed messages over a trio stream's socket, the layer ``wsproto_trio`` uses.

    A read awaits the trio socket's ``recv()`` when it must wait: the least
    any trio library does (``SocketStream`` adds its own layer on top).
    """

    def __init__(self, stream: trio.SocketStream) -> None:
        self.stream = stream
        self._socket = stream.socket
        self._buffer = bytearray()

    async def read(self) -> tuple[int, bytes]:
        while (message := _raw_message(self._buffer)) is None:
            chunk = await self._socket.recv(_RAW_READ)
            if not chunk:
                raise EOFError("the peer closed the connection")
            self._buffer += chunk
        return message

    async def write(self, kind: int, message: Payload) -> None:
        frame = _raw_frame(kind, message)
        sent = await self._socket.send(frame)
        if sent < len(frame):  # the socket's buffer is full: the rest when it drains
            with memoryview(frame) as view:
                while sent < len(view):
                    sent += await self._socket.send(view[sent:])


def _serve_raw_trio(options: Options, ready: Ready) -> None:
    import trio

    async def echo(socket_stream: trio.SocketStream) -> None:
        stream = _RawTrioStream(socket_stream)
        with suppress(EOFError, OSError, trio.BrokenResourceError, trio.ClosedResourceError):
            while True:
                kind, data = await stream.read()
                await stream.write(kind, data)

    async def main() -> None:
        async with trio.open_nursery() as nursery:
            serve = functools.partial(trio.serve_tcp, echo, 0, host=HOST)
            listeners = await nursery.start(serve)
            ready(listeners[0].socket.getsockname()[1])
            await trio_stdin_closed()
            nursery.cancel_scope.cancel()

    trio.run(main)


class _RawTrioClient(_RawAsyncClient, TrioEchoClient):
    def __init__(self, stream: _RawTrioStream) -> None:
        super().__init__(stream)
        self._stream = stream.stream

    async def close(self) -> None:
        await self._stream.aclose()


@asynccontextmanager
async def _open_raw_trio(url: str, options: Options) -> AsyncIterator[AsyncClient]:
    import trio

    port = _port_of(url)
    stream = await trio.open_tcp_stream(HOST, port)
    async with stream:
        yield _RawTrioClient(_RawTrioStream(stream))


# -- the core in asyncio's callbacks: what a listener API could reach ----------------
#
# Not one of our adapters: wsproto_core driven from an asyncio buffered
# protocol, each message answered in the callback that read it, with no
# task and no future per message, as picows does. W2 only: it measures what
# a callback API in picows' style (which wsproto_asyncio does not have)
# would reach over the same core, against raw_asyncio's awaited reads.

_CORE_CAPTURE, _CORE_ROUND_TRIPS = range(2)


class _CoreCallbacks(asyncio.BufferedProtocol):
    """A connection of wsproto_core in an asyncio protocol; subclasses handle the events."""

    def __init__(self, ws: wsproto_core.Connection) -> None:
        self.ws = ws
        self.transport: asyncio.Transport | None = None
        self._incoming = memoryview(bytearray(_RAW_READ))
        self.lost: asyncio.Future[None] = asyncio.get_running_loop().create_future()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]  # a TCP transport
        self.flush()  # a client's handshake request

    def get_buffer(self, sizehint: int) -> memoryview:
        return self._incoming

    def buffer_updated(self, nbytes: int) -> None:
        self.ws.receive_data(self._incoming[:nbytes])
        self._handle_events()

    def eof_received(self) -> bool:
        self.ws.receive_eof()
        self._handle_events()
        return False

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.lost.done():
            self.lost.set_result(None)

    def _handle_events(self) -> None:
        ws = self.ws
        # A broken request or frame: the core queued the answer (an HTTP error, a Close).
        with suppress(wsproto_core.HandshakeError, wsproto_core.RemoteProtocolError):
            while (event := ws.next_event()) is not None:
                self.on_event(event)
        self.flush()

    def on_event(self, event: wsproto_core.Event) -> None:
        """Handle one event of the core; what it queues is sent after the last one."""

    def flush(self) -> None:
        """Send what the core queued; close the TCP connection when the core says so."""
        assert self.transport is not None
        if data := self.ws.data_to_send():
            self.transport.write(data)
        if self.ws.close_expected():
            self.transport.close()


class _CoreEchoServer(_CoreCallbacks):
    ws: wsproto_core.ServerConnection

    def __init__(self, options: Options) -> None:
        super().__init__(wsproto_core.ServerConnection(max_message_size=options.read_limit))

    def on_event(self, event: wsproto_core.Event) -> None:
        if isinstance(event, wsproto_core.Message):
            self.ws.send_message(event.message_type, event.data)
        elif isinstance(event, wsproto_core.HandshakeRequest):
            self.ws.accept()


def _serve_core_callbacks(options: Options, ready: Ready) -> None:
    serve_asyncio_until_stdin_closes(
        lambda: asyncio.get_running_loop().create_server(lambda: _CoreEchoServer(options), HOST, 0),
        ready,
    )


class _CoreClientConnection(_CoreCallbacks):
    """Runs the workloads in the callbacks: the next send happens in ``on_event()``."""

    def __init__(self, url: str, options: Options) -> None:
        super().__init__(wsproto_core.ClientConnection(url, max_message_size=options.read_limit))
        self.opened: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.mode = _CORE_CAPTURE
        self.count = 0
        self.start = self.end = self.elapsed = 0.0
        self.message: Payload = b""
        self.done: asyncio.Future[Payload | None] | None = None

    def on_event(self, event: wsproto_core.Event) -> None:
        if isinstance(event, wsproto_core.Message):
            if self.mode == _CORE_ROUND_TRIPS:
                self.count += 1
                if (now := perf_counter()) < self.end:
                    self.ws.send_message(event.message_type, self.message)
                    return
                self.elapsed = now - self.start
                self._finish(None)
            else:
                self._finish(event.data)
        elif isinstance(event, wsproto_core.HandshakeResponse):
            self.opened.set_result(None)

    def _finish(self, result: Payload | None) -> None:
        if self.done is not None and not self.done.done():
            self.done.set_result(result)

    def connection_lost(self, exc: Exception | None) -> None:
        super().connection_lost(exc)
        for future in (self.opened, self.done):
            if future is not None and not future.done():
                future.set_exception(ConnectionResetError("the connection was lost"))
                future.exception()  # a waiter still gets it; if it timed out, no warning


class _CoreCallbacksClient(AsyncClient):
    def __init__(self, conn: _CoreClientConnection) -> None:
        self._conn = conn

    def _start(self, mode: int, message: Payload) -> asyncio.Future[Payload | None]:
        conn = self._conn
        conn.mode = mode
        conn.count = 0
        conn.message = message
        conn.done = asyncio.get_running_loop().create_future()
        types = wsproto_core.MessageType
        conn.ws.send_message(types.TEXT if isinstance(message, str) else types.BINARY, message)
        return conn.done

    async def exchange(self, message: Payload) -> Payload:
        done = self._start(_CORE_CAPTURE, message)
        self._conn.flush()
        echo = await done
        assert echo is not None
        return echo

    async def round_trips(self, message: Payload, duration: float) -> tuple[int, float]:
        conn = self._conn
        done = self._start(_CORE_ROUND_TRIPS, message)
        conn.start = perf_counter()
        conn.end = conn.start + duration
        conn.flush()
        await done
        return conn.count, conn.elapsed

    async def pipelined(self, message: Payload, count: int) -> float:
        raise BenchError("core_callbacks runs W2 only")

    async def close(self) -> None:
        conn = self._conn
        conn.ws.send_close()
        conn.flush()
        try:
            async with asyncio.timeout(CLOSE_TIMEOUT):
                await conn.lost
        finally:
            assert conn.transport is not None
            conn.transport.abort()


async def _connect_core_callbacks(url: str, options: Options) -> AsyncClient:
    loop = asyncio.get_running_loop()
    _, conn = await loop.create_connection(
        lambda: _CoreClientConnection(url, options), HOST, _port_of(url)
    )
    await conn.opened
    return _CoreCallbacksClient(conn)


# -- sans-I/O layers (W1) --------------------------------------------------------------


class _CoreSansIO(SansIO):
    """Our core: ``ServerConnection`` / ``ClientConnection`` after a handshake."""

    @staticmethod
    def _pair(max_size: int) -> tuple[Any, Any]:
        from wsproto_core import ClientConnection, HandshakeRequest, ServerConnection

        client = ClientConnection("ws://localhost/", max_message_size=max_size)
        server = ServerConnection(max_message_size=max_size)
        server.receive_data(client.data_to_send())
        if not isinstance(server.next_event(), HandshakeRequest):
            raise BenchError("wsproto_core: no handshake request")
        server.accept()
        client.receive_data(server.data_to_send())
        client.next_event()
        return client, server

    def parser(self, max_size: int) -> Callable[[Sequence[bytes]], int]:
        _, server = self._pair(max_size)
        receive, next_event = server.receive_data, server.next_event

        def parse(chunks: Sequence[bytes]) -> int:
            count = 0
            for chunk in chunks:
                receive(chunk)
                while next_event() is not None:  # a Message each
                    count += 1
            return count

        return parse

    def sender(self, client: bool) -> Callable[[bytes], int]:
        conn = self._pair(1024 * 1024)[0 if client else 1]
        send, take = conn.send_binary, conn.data_to_send

        def send_one(payload: bytes) -> int:
            send(payload)
            return len(take())

        return send_one


class _WebsocketsSansIO(SansIO):
    """websockets' ``ServerProtocol`` / ``ClientProtocol``, open.

    Its sans-I/O layer yields frames (``events_received()``); joining
    fragments into messages is left to its I/O layers. W1's messages are
    single frames, so a frame is a message here.
    """

    def parser(self, max_size: int) -> Callable[[Sequence[bytes]], int]:
        from websockets.protocol import State
        from websockets.server import ServerProtocol

        server = ServerProtocol(state=State.OPEN, max_size=max_size)
        receive, events = server.receive_data, server.events_received

        def parse(chunks: Sequence[bytes]) -> int:
            count = 0
            for chunk in chunks:
                receive(chunk)
                count += len(events())
            return count

        return parse

    def sender(self, client: bool) -> Callable[[bytes], int]:
        from websockets.client import ClientProtocol
        from websockets.protocol import Protocol, State
        from websockets.server import ServerProtocol
        from websockets.uri import parse_uri

        conn: Protocol = (
            ClientProtocol(parse_uri("ws://localhost/"), state=State.OPEN)
            if client
            else ServerProtocol(state=State.OPEN)
        )
        send, take = conn.send_binary, conn.data_to_send

        def send_one(payload: bytes) -> int:
            send(payload)
            return sum(map(len, take()))

        return send_one


class _WsprotoSansIO(SansIO):
    """The ``wsproto`` package's ``Connection``, open.

    It yields a message in pieces, as they arrive (``message_finished``
    marks the last); a piece here is at most a read of 64 KiB.
    """

    def parser(self, max_size: int) -> Callable[[Sequence[bytes]], int]:
        from wsproto.connection import Connection, ConnectionType

        server = Connection(ConnectionType.SERVER)
        receive, events = server.receive_data, server.events

        def parse(chunks: Sequence[bytes]) -> int:
            count = 0
            for chunk in chunks:
                receive(chunk)
                for event in events():
                    if event.message_finished:  # type: ignore[attr-defined]
                        count += 1
            return count

        return parse

    def sender(self, client: bool) -> Callable[[bytes], int]:
        from wsproto.connection import Connection, ConnectionType
        from wsproto.events import BytesMessage

        conn = Connection(ConnectionType.CLIENT if client else ConnectionType.SERVER)
        send = conn.send

        def send_one(payload: bytes) -> int:
            return len(send(BytesMessage(data=payload)))

        return send_one


# -- the table -----------------------------------------------------------------------------


def _node_connect(url: str, options: Options, deadline: float) -> Session:
    return _NodeSession(url, options, deadline)


def _node_server(options: Options) -> list[str]:
    return _node_command("server", options)


#: Every implementation, ours first; ``--impls`` picks some.
IMPLS: dict[str, Impl] = {
    impl.key: impl
    for impl in (
        Impl(
            "wsproto_core",
            "wsproto-core",
            ("wsproto_core",),
            True,
            sansio=_CoreSansIO(),
            note="the sans-I/O core, in W1; the adapters run it in every other workload",
        ),
        Impl(
            "wsproto_asyncio",
            "wsproto-core",
            ("wsproto_asyncio",),
            True,
            _serve_wsproto_asyncio,
            async_session(_connect_wsproto_asyncio),
            serve_broadcast=_serve_wsproto_asyncio_broadcast,
        ),
        Impl(
            "wsproto_sync",
            "wsproto-core",
            ("wsproto_sync",),
            True,
            _serve_wsproto_sync,
            sync_session(_connect_wsproto_sync),
            note="a thread per connection on the server; a reader thread in W3",
            serve_broadcast=_serve_wsproto_sync_broadcast,
        ),
        Impl(
            "wsproto_trio",
            "wsproto-core",
            ("wsproto_trio", "trio"),
            True,
            _serve_wsproto_trio,
            trio_session(_open_wsproto_trio),
            serve_broadcast=_serve_wsproto_trio_broadcast,
        ),
        Impl(
            "websockets",
            "websockets",
            ("websockets",),
            False,
            _serve_websockets,
            async_session(_connect_websockets),
            note="websockets.asyncio, the reference of the ratios; in W1 its sans-I/O layer "
            "(ServerProtocol), which yields frames, not messages",
            sansio=_WebsocketsSansIO(),
            serve_broadcast=_serve_websockets_broadcast,
        ),
        Impl(
            "websockets_sync",
            "websockets",
            ("websockets",),
            False,
            _serve_websockets_sync,
            sync_session(_connect_websockets_sync),
            note="websockets.sync; a thread per connection on the server",
            serve_broadcast=_serve_websockets_sync_broadcast,
        ),
        Impl(
            "websockets_trio",
            "websockets",
            ("websockets", "trio"),
            False,
            _serve_websockets_trio,
            trio_session(_open_websockets_trio),
            note="websockets.trio",
            serve_broadcast=_serve_websockets_trio_broadcast,
            requires=_websockets_has_trio,
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
        Impl(
            "trio_websocket",
            "trio-websocket",
            ("trio_websocket",),
            False,
            _serve_trio_websocket,
            trio_session(_open_trio_websocket),
            compression=False,
            note="on the wsproto package",
        ),
        Impl(
            "raw_tcp",
            "Python sockets",
            (),
            False,
            _serve_raw_tcp,
            sync_session(_connect_raw_tcp),
            compression=False,
            websocket=False,
            note="not WebSocket: prefixed messages over blocking sockets, a thread per "
            "connection; the ceiling, not a peer",
            version_of=platform.python_version,
        ),
        Impl(
            "raw_asyncio",
            "asyncio",
            (),
            False,
            _serve_raw_asyncio,
            async_session(_connect_raw_asyncio),
            compression=False,
            websocket=False,
            only=("W2",),
            note="not WebSocket: raw_tcp's messages over an asyncio protocol, each read "
            "awaiting a future when it must wait; what any library whose reads are "
            "awaited can reach in W2, not a peer",
            version_of=platform.python_version,
        ),
        Impl(
            "raw_trio",
            "trio",
            ("trio",),
            False,
            _serve_raw_trio,
            trio_session(_open_raw_trio),
            compression=False,
            websocket=False,
            only=("W2",),
            note="not WebSocket: raw_tcp's messages over a trio socket, each read awaiting "
            "recv() when it must wait; what a trio library can reach in W2, not a peer",
        ),
        Impl(
            "core_callbacks",
            "wsproto-core",
            (),
            False,
            _serve_core_callbacks,
            async_session(_connect_core_callbacks),
            compression=False,
            websocket=False,
            only=("W2",),
            note="not an adapter: wsproto_core in an asyncio protocol, each message "
            "answered in the callback that read it, as picows does; what a callback API "
            "over the same core could reach in W2, not a peer",
        ),
        Impl(
            "wsproto",
            "wsproto",
            ("wsproto",),
            False,
            sansio=_WsprotoSansIO(),
            note="the wsproto package's sans-I/O layer (W1); it yields messages in pieces",
        ),
        Impl(
            "node_ws",
            "ws",
            (),
            False,
            connect=_node_connect,
            server_command=_node_server,
            note="Node's ws, server and client in node (bench_node.mjs)",
            requires=_node_requires,
            version_of=_node_version,
        ),
    )
}
