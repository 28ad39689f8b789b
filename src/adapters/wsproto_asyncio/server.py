"""serve(): an asyncio WebSocket server with graceful shutdown.

Each accepted connection gets a task that does the handshake and runs the
handler, started once the request is in: while it is on its way, the
connection costs a timer (the handshake timeout), not a task waiting.
Shutting down stops accepting, sends every open connection a Close with
1001 (going away), gives handlers a bounded time to finish, then cancels
what is left and drops its connections.
"""

from __future__ import annotations

import asyncio
import logging
import ssl
from collections.abc import Awaitable, Callable
from contextlib import suppress
from typing import Any

from wsproto_core import CloseCode, HandshakeError, MessageType, WebSocketError
from wsproto_core.frames import format_close_message

from ._bridge import Bridge
from .conn import Conn
from .upgrader import HTTPHandler, ProcessRequest, Upgrader

__all__ = ["Server", "serve"]

logger = logging.getLogger("wsproto_asyncio.server")

Handler = Callable[[Conn], Awaitable[None]]
_GOING_AWAY = "server shutting down"


class Server:
    """An asyncio WebSocket server; build it with :func:`serve`.

    Use it as ``async with``: leaving the block shuts it down. In between,
    ``await server.serve_forever()`` runs until cancelled or shut down.
    """

    def __init__(
        self,
        handler: Handler,
        upgrader: Upgrader,
        http_handler: HTTPHandler | None,
        shutdown_timeout: float,
        *,
        process_request: ProcessRequest | None = None,
    ) -> None:
        self.handler = handler
        self.upgrader = upgrader
        self.http_handler = http_handler
        self.process_request = process_request
        self.shutdown_timeout = shutdown_timeout
        self._server: asyncio.Server | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        # Connections whose request has not arrived, with their handshake timers.
        self._pending: dict[Bridge, asyncio.TimerHandle] = {}
        # Bound once, not per connection: each would be one more object for
        # every connection, kept as long as it is open.
        self._on_connect = self._connected
        self._on_ready = self._ready
        self._conns: set[Conn] = set()
        self._stopping = False
        self._stopped = asyncio.Event()

    @property
    def sockets(self) -> tuple[Any, ...]:
        """The listening sockets."""
        return () if self._server is None else tuple(self._server.sockets)

    @property
    def address(self) -> Any:
        """The first listening address, e.g. ``("127.0.0.1", 8765)`` or a Unix path."""
        return self.sockets[0].getsockname()

    def protocol_factory(self) -> Bridge:
        """A protocol for one new connection (for ``loop.create_server``)."""
        bridge = self.upgrader.new_bridge()
        bridge.on_connect = self._on_connect
        return bridge

    def attach(self, server: asyncio.Server) -> None:
        """Serve the connections of ``server``, built with :meth:`protocol_factory`."""
        self._server = server

    def _connected(self, bridge: Bridge) -> None:
        if self._stopping:
            bridge.abort()
            return
        timeout = self.upgrader.handshake_timeout
        if timeout is None:
            self._ready(bridge)  # nothing to time out: the task may as well wait
            return
        loop = asyncio.get_running_loop()
        self._pending[bridge] = loop.call_later(timeout, self._timed_out, bridge)
        bridge.on_ready = self._on_ready

    def _ready(self, bridge: Bridge) -> None:
        timer = self._pending.pop(bridge, None)
        if timer is not None:
            timer.cancel()
        # The task leaves the set itself (_run): a done callback would cost
        # the collector four more objects per connection (W5).
        self._tasks.add(asyncio.get_running_loop().create_task(self._run(bridge)))

    def _timed_out(self, bridge: Bridge) -> None:
        del self._pending[bridge]
        bridge.on_ready = None
        logger.info("handshake failed: no request in time (from %r)", _peer_of(bridge))
        bridge.abort()

    async def _run(self, bridge: Bridge) -> None:
        try:
            try:
                conn = await self.upgrader.handshake(
                    bridge, http_handler=self.http_handler, process_request=self.process_request
                )
            except HandshakeError as exc:
                logger.info("refused a handshake from %r: %s", _peer_of(bridge), exc)
                return
            except (OSError, TimeoutError) as exc:
                logger.info("handshake failed: %r (from %r)", exc, _peer_of(bridge))
                return
            except Exception:
                # The hook's own exception: the client got a 500 (see Upgrader.handshake).
                logger.exception("a request hook failed (http_handler or process_request)")
                bridge.abort()
                return
            self._conns.add(conn)
            try:
                if self._stopping:
                    # Opened while the server was shutting down: close it as the others.
                    await conn.close_gracefully(CloseCode.GOING_AWAY, _GOING_AWAY, 1.0)
                    return
                await self.handler(conn)
            except (WebSocketError, OSError) as exc:
                logger.debug("connection ended: %r", exc)
            except Exception:
                logger.exception("the handler failed")
            finally:
                self._conns.discard(conn)
                await conn.close()
        finally:
            self._tasks.discard(asyncio.current_task())

    async def serve_forever(self) -> None:
        """Wait until the server is shut down (or the task is cancelled)."""
        await self._stopped.wait()

    async def shutdown(self, timeout: float | None = None) -> None:
        """Stop accepting, close every connection with 1001, and wait for the handlers.

        Handlers get ``timeout`` seconds (default: ``shutdown_timeout``) to
        finish after the Close; those still running are then cancelled and
        their connections dropped.
        """
        timeout = self.shutdown_timeout if timeout is None else timeout
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        self._stopping = True
        if self._server is not None:
            self._server.close()
        for bridge, timer in list(self._pending.items()):
            timer.cancel()  # no request yet: nothing to say goodbye to
            bridge.on_ready = None
            bridge.abort()
        self._pending.clear()
        going_away = format_close_message(CloseCode.GOING_AWAY, _GOING_AWAY)
        for conn in list(self._conns):
            # Queue the Close without waiting: a peer that doesn't read must
            # not hold up the Close of the others.
            with suppress(WebSocketError, OSError):
                conn._write_control_nowait(MessageType.CLOSE, going_away)
        tasks = list(self._tasks)
        if tasks:
            await asyncio.wait(tasks, timeout=max(0.0, deadline - loop.time()))
        for task in self._tasks:
            task.cancel()
        for conn in list(self._conns):
            conn.net_conn().abort()
        if self._tasks:
            await asyncio.wait(list(self._tasks), timeout=1.0)
        # A task cancelled before it started never ran the code that leaves the set.
        self._tasks = {task for task in self._tasks if not task.done()}
        if self._server is not None:
            await self._server.wait_closed()
        self._stopped.set()

    async def __aenter__(self) -> Server:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        if not self._stopping:
            await self.shutdown()


async def serve(
    handler: Handler,
    host: str | None = "127.0.0.1",
    port: int = 0,
    *,
    upgrader: Upgrader | None = None,
    http_handler: HTTPHandler | None = None,
    process_request: ProcessRequest | None = None,
    ssl_context: ssl.SSLContext | None = None,
    unix_path: str | None = None,
    backlog: int = 128,
    shutdown_timeout: float = 5.0,
) -> Server:
    """Listen on ``host``:``port`` (or a Unix socket) and run ``await handler(conn)`` per WebSocket.

    Each connection is upgraded (with ``upgrader``'s options, or the
    defaults: same-origin check, 10 s handshake timeout, 1 MiB read limit)
    in a task of its own, which then runs the handler and closes the
    connection when it returns. A plain HTTP request goes to
    ``http_handler`` (a health check, say) or gets 426; a valid handshake
    request goes to ``process_request``, if given, which may refuse it.
    Example::

        async def echo(conn: Conn) -> None:
            async for message in conn:
                await conn.write_message(MessageType.TEXT if isinstance(message, str)
                                         else MessageType.BINARY, message)

        async with await serve(echo, "127.0.0.1", 8765) as server:
            await server.serve_forever()

    Args:
        handler: a coroutine function called with each open connection.
        host: the address to listen on (``None``: all interfaces).
        port: the port, 0 for any free one (see ``server.address``).
        upgrader: handshake options.
        http_handler: answers plain HTTP requests: ``(status, headers, body)``.
        process_request: inspects each valid handshake request, to accept it
            (with more response headers) or refuse it with a status of its
            choice; see :data:`ProcessRequest`.
        ssl_context: serve ``wss://`` with this TLS context; the TLS handshake
            gets the upgrader's ``handshake_timeout`` too.
        unix_path: listen on this Unix socket instead of ``host``:``port``.
        backlog: the listen backlog.
        shutdown_timeout: seconds handlers get to finish on shutdown.
    """
    server = Server(
        handler,
        upgrader or Upgrader(),
        http_handler,
        shutdown_timeout,
        process_request=process_request,
    )
    loop = asyncio.get_running_loop()
    tls: dict[str, Any] = {}
    if ssl_context is not None:
        # The handshake timeout covers TLS too: asyncio runs that handshake
        # before the protocol exists, so it gets the same bound of its own.
        tls = {"ssl": ssl_context, "ssl_handshake_timeout": server.upgrader.handshake_timeout}
    if unix_path is not None:
        listener = await loop.create_unix_server(
            server.protocol_factory, unix_path, backlog=backlog, **tls
        )
    else:
        listener = await loop.create_server(
            server.protocol_factory, host, port, backlog=backlog, **tls
        )
    server.attach(listener)
    return server


def _peer_of(bridge: Bridge) -> Any:
    """The client's address, for the log."""
    transport = bridge.transport
    return None if transport is None else transport.get_extra_info("peername")
