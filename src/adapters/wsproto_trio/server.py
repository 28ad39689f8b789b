"""serve(): a trio WebSocket server with graceful shutdown, for ``nursery.start``.

Each accepted connection gets a task, in the server's own nursery, that
does the handshake and runs the handler; nothing outlives ``serve()``.
Shutting down stops accepting, sends every open connection a Close with
1001 (going away), gives handlers a bounded time to finish, then cancels
what is left. Cancelling ``serve()`` stops everything at once, as cancelling
any trio task does.
"""

from __future__ import annotations

import logging
import os
import socket as stdlib_socket
import ssl
from collections.abc import Awaitable, Callable
from contextlib import suppress
from typing import Any

import trio

from wsproto_core import CloseCode, HandshakeError, MessageType, WebSocketError
from wsproto_core.frames import format_close_message

from ._io import STREAM_GONE, peer_of
from .conn import Conn
from .upgrader import HTTPHandler, ProcessRequest, Upgrader

__all__ = ["Server", "serve"]

logger = logging.getLogger("wsproto_trio.server")

Handler = Callable[[Conn], Awaitable[None]]
_GOING_AWAY = "server shutting down"
_GOING_AWAY_WAIT = 1.0  # seconds a returning handler's connection gets to send its 1001


class Server:
    """A running trio WebSocket server: what ``await nursery.start(serve, ...)`` returns.

    :meth:`shutdown` stops it gracefully, from any task; ``serve()`` then
    returns.
    """

    def __init__(
        self,
        listeners: list[trio.SocketListener],
        handler: Handler,
        upgrader: Upgrader,
        http_handler: HTTPHandler | None,
        ssl_context: ssl.SSLContext | None,
        shutdown_timeout: float,
        *,
        process_request: ProcessRequest | None = None,
    ) -> None:
        self.listeners = listeners
        self.handler = handler
        self.upgrader = upgrader
        self.http_handler = http_handler
        self.process_request = process_request
        self.ssl_context = ssl_context
        self.shutdown_timeout = shutdown_timeout
        self._conns: set[Conn] = set()
        self._stopping = trio.Event()
        self._stopped = trio.Event()
        self._idle = trio.Event()  # set when stopping and no connection is left
        self._active = 0
        self._tasks: trio.Nursery | None = None  # where handlers run
        # Kept: once the listeners close, their sockets can't say it any more.
        self._address = listeners[0].socket.getsockname()

    @property
    def address(self) -> Any:
        """The first listening address, e.g. ``("127.0.0.1", 8765)`` or a Unix path."""
        return self._address

    async def _run(self, task_status: trio.TaskStatus[Server]) -> None:
        try:
            async with trio.open_nursery() as tasks:
                self._tasks = tasks
                for listener in self.listeners:
                    tasks.start_soon(self._accept, listener, tasks)
                task_status.started(self)
                await self._stopping.wait()
                await self._close_listeners()  # the accept loops end
                with trio.move_on_after(self.shutdown_timeout):
                    await self._going_away()
                    await self._idle.wait()
                tasks.cancel_scope.cancel()  # handlers that did not finish in time
        finally:
            with trio.CancelScope(shield=True):
                await self._close_listeners()
            self._stopped.set()

    async def _accept(self, listener: trio.SocketListener, handlers: trio.Nursery) -> None:
        while not self._stopping.is_set():
            try:
                stream = await listener.accept()
            except (trio.ClosedResourceError, trio.BrokenResourceError):
                return
            except OSError as exc:  # e.g. out of file descriptors: wait, don't spin
                logger.warning("accept failed: %r", exc)
                await trio.sleep(0.1)
                continue
            handlers.start_soon(self._serve_one, stream)

    async def _serve_one(self, stream: trio.abc.Stream) -> None:
        self._active += 1
        try:
            await self._serve(stream)
        finally:
            self._active -= 1
            if not self._active and self._stopping.is_set():
                self._idle.set()

    async def _serve(self, stream: trio.abc.Stream) -> None:
        peer = peer_of(stream)  # for the log: a failed stream is closed, and says no more
        try:
            if self.ssl_context is not None:
                stream = trio.SSLStream(stream, self.ssl_context, server_side=True)
            conn = await self.upgrader.upgrade(
                stream, http_handler=self.http_handler, process_request=self.process_request
            )
        except HandshakeError as exc:
            logger.info("refused a handshake from %r: %s", peer, exc)
            return
        except (OSError, TimeoutError) as exc:
            logger.info("handshake failed: %r (from %r)", exc, peer)
            return
        except Exception:
            # The hook's own exception: the client got a 500 (see Upgrader.upgrade).
            logger.exception("a request hook failed (http_handler or process_request)")
            await trio.aclose_forcefully(stream)
            return
        self._conns.add(conn)
        try:
            if self._stopping.is_set() and self._tasks is not None:
                # Upgraded as shutdown began: send_all() lets other tasks run
                # once the 101 is out, so the client may have seen its
                # connection open, and _going_away() may have missed it. Treat
                # it as the others, however the race went: its handler runs,
                # and its 1001 goes from a task of its own, so a peer that
                # doesn't read can't hold up the handler.
                self._tasks.start_soon(self._send_going_away, conn)
            await self.handler(conn)
        except (WebSocketError, OSError, *STREAM_GONE) as exc:  # trio's: a handler's own streams
            logger.debug("connection ended: %r", exc)
        except Exception:
            logger.exception("the handler failed")
        finally:
            self._conns.discard(conn)
            with trio.CancelScope(shield=True):
                if self._stopping.is_set():
                    # A handler that returns during shutdown (one that called
                    # shutdown() itself, say) may beat _going_away() to its
                    # connection: the 1001 is owed to this one too.
                    with trio.move_on_after(_GOING_AWAY_WAIT):
                        await self._send_going_away(conn)
                await conn.aclose()

    async def _going_away(self) -> None:
        # Every connection at once: one peer that does not read must not
        # hold up the others' Close.
        async with trio.open_nursery() as nursery:
            for conn in list(self._conns):
                nursery.start_soon(self._send_going_away, conn)

    @staticmethod
    async def _send_going_away(conn: Conn) -> None:
        # A connection that sent its Close already raises CloseSentError: fine.
        with suppress(WebSocketError, TimeoutError, OSError):
            await conn.write_control(
                MessageType.CLOSE, format_close_message(CloseCode.GOING_AWAY, _GOING_AWAY)
            )

    async def _close_listeners(self) -> None:
        for listener in self.listeners:
            await listener.aclose()

    async def shutdown(self) -> None:
        """Stop accepting, close every connection with 1001, and wait until ``serve()`` ends.

        Called from a handler (or a task a handler started), it returns at
        once instead: ``serve()`` can't end before that handler does, so
        waiting would only get the handler cancelled after ``shutdown_timeout``.
        """
        self._stopping.set()
        if not self._active:
            self._idle.set()
        if not self._in_a_handler():
            await self._stopped.wait()
        else:
            await trio.lowlevel.checkpoint()

    def _in_a_handler(self) -> bool:
        task: trio.lowlevel.Task | None = trio.lowlevel.current_task()
        while task is not None:
            nursery = task.parent_nursery
            if nursery is None:
                return False
            if nursery is self._tasks:
                return True
            task = nursery.parent_task
        return False


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
    task_status: trio.TaskStatus[Server] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Listen on ``host``:``port`` (or a Unix socket) and run ``await handler(conn)`` per WebSocket.

    Start it with ``server = await nursery.start(serve, handler, host, port)``:
    it reports the :class:`Server` once listening, and runs until
    ``await server.shutdown()`` or until cancelled. Each connection is
    upgraded (with ``upgrader``'s options, or the defaults) in a task of
    its own, which runs the handler and closes the connection when it
    returns. A plain HTTP request goes to ``http_handler`` or gets 426; a
    valid handshake request goes to ``process_request``, if given, which may
    refuse it. Example::

        async def echo(conn: Conn) -> None:
            async for message in conn:
                await conn.write_message(MessageType.TEXT if isinstance(message, str)
                                         else MessageType.BINARY, message)

        async with trio.open_nursery() as nursery:
            server = await nursery.start(serve, echo, "127.0.0.1", 8765)
            ...
            await server.shutdown()

    Args:
        handler: an async function called with each open connection.
        host: the address to listen on (``None``: all interfaces).
        port: the port, 0 for any free one (see ``server.address``).
        upgrader: handshake options.
        http_handler: answers plain HTTP requests: ``(status, headers, body)``.
        process_request: inspects each valid handshake request, to accept it
            (with more response headers) or refuse it with a status of its
            choice; see :data:`ProcessRequest`.
        ssl_context: serve ``wss://`` with this TLS context.
        unix_path: listen on this Unix socket instead of ``host``:``port``.
        backlog: the listen backlog.
        shutdown_timeout: seconds handlers get to finish on shutdown.
        task_status: given by ``nursery.start``.
    """
    if unix_path is not None:
        listeners = [await _unix_listener(unix_path, backlog)]
    else:
        listeners = await trio.open_tcp_listeners(port, host=host, backlog=backlog)
    server = Server(
        listeners,
        handler,
        upgrader or Upgrader(),
        http_handler,
        ssl_context,
        shutdown_timeout,
        process_request=process_request,
    )
    await server._run(task_status)


async def _unix_listener(path: str, backlog: int) -> trio.SocketListener:
    sock = trio.socket.socket(stdlib_socket.AF_UNIX, stdlib_socket.SOCK_STREAM)
    try:
        with suppress(FileNotFoundError):
            os.unlink(path)  # a socket file left by an earlier run
        await sock.bind(path)
        sock.listen(backlog)
    except BaseException:
        sock.close()
        raise
    return trio.SocketListener(sock)
