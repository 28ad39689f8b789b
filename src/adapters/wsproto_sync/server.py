"""serve(): a threaded WebSocket server with graceful shutdown.

Each accepted connection gets a thread that upgrades it (TLS first, with
``ssl_context``) and runs the handler. Shutting down stops accepting, sends
every open connection a Close with 1001 (going away), gives handlers a
bounded time to finish, and closes what is left.
"""

from __future__ import annotations

import logging
import os
import selectors
import socket
import ssl
import threading
import time
from collections.abc import Callable
from contextlib import suppress
from typing import Any

from wsproto_core import CloseCode, HandshakeError, MessageType, WebSocketError
from wsproto_core.frames import format_close_message

from .conn import Conn
from .upgrader import HTTPHandler, ProcessRequest, Upgrader

__all__ = ["Server", "serve"]

logger = logging.getLogger("wsproto_sync.server")

Handler = Callable[[Conn], None]
_GOING_AWAY = "server shutting down"


class Server:
    """A threaded WebSocket server; build it with :func:`serve`.

    Use it as a context manager, and call :meth:`serve_forever` (blocking)
    or run it in a thread; :meth:`shutdown` from any thread stops it.
    """

    def __init__(
        self,
        handler: Handler,
        sock: socket.socket,
        upgrader: Upgrader,
        shutdown_timeout: float,
        http_handler: HTTPHandler | None = None,
        *,
        process_request: ProcessRequest | None = None,
        ssl_context: ssl.SSLContext | None = None,
    ) -> None:
        self.handler = handler
        self.socket = sock
        self.upgrader = upgrader
        self.http_handler = http_handler
        self.process_request = process_request
        self.ssl_context = ssl_context
        self.shutdown_timeout = shutdown_timeout
        self._lock = threading.Lock()
        self._conns: set[Conn] = set()
        self._threads: set[threading.Thread] = set()
        self._stopping = threading.Event()
        self._stopped = threading.Event()
        self._wakeup_read, self._wakeup_write = socket.socketpair()

    @property
    def address(self) -> Any:
        """The address the server listens on, e.g. ``("127.0.0.1", 8765)``."""
        return self.socket.getsockname()

    def serve_forever(self) -> None:
        """Accept connections until :meth:`shutdown`."""
        with selectors.DefaultSelector() as selector:
            selector.register(self.socket, selectors.EVENT_READ)
            selector.register(self._wakeup_read, selectors.EVENT_READ)
            try:
                while not self._stopping.is_set():
                    for key, _ in selector.select():
                        if key.fileobj is self.socket:
                            self._accept()
            finally:
                self._stopped.set()

    def _accept(self) -> None:
        try:
            sock, peer = self.socket.accept()
        except (BlockingIOError, InterruptedError):
            return  # another thread or a reset took it
        thread = threading.Thread(target=self._run, args=(sock, peer), daemon=True)
        with self._lock:
            if self._stopping.is_set():
                sock.close()
                return
            self._threads.add(thread)
        thread.start()

    def _run(self, sock: socket.socket, peer: Any) -> None:
        try:
            try:
                conn = self.upgrader.upgrade(
                    sock,
                    http_handler=self.http_handler,
                    process_request=self.process_request,
                    ssl_context=self.ssl_context,
                )
            except HandshakeError as exc:
                logger.info("refused a handshake from %r: %s", peer, exc)
                return
            except (OSError, TimeoutError) as exc:
                logger.info("handshake failed: %r (from %r)", exc, peer)
                return
            except Exception:
                logger.exception("a request hook failed (http_handler or process_request)")
                return
            with self._lock:
                stopping = self._stopping.is_set()
                if not stopping:
                    self._conns.add(conn)
            if stopping:
                # Opened while the server was shutting down: close it as the others.
                conn.close_gracefully(CloseCode.GOING_AWAY, _GOING_AWAY, self.shutdown_timeout)
                return
            try:
                self.handler(conn)
            except (WebSocketError, OSError) as exc:
                logger.debug("connection ended: %r", exc)
            except Exception:
                logger.exception("the handler failed")
            finally:
                conn.close()
                with self._lock:
                    self._conns.discard(conn)
        finally:
            with self._lock:
                self._threads.discard(threading.current_thread())

    def shutdown(self, timeout: float | None = None) -> None:
        """Stop accepting, close every connection with 1001, and wait for the handlers.

        Handlers get ``timeout`` seconds (default: ``shutdown_timeout``) to
        finish after the Close; connections still open then are closed.
        """
        timeout = self.shutdown_timeout if timeout is None else timeout
        deadline = time.monotonic() + timeout
        self._stopping.set()
        with suppress(OSError):
            self._wakeup_write.send(b"\0")
        with self._lock:
            conns = list(self._conns)
        going_away = format_close_message(CloseCode.GOING_AWAY, _GOING_AWAY)
        for conn in conns:
            with suppress(WebSocketError, OSError):
                conn.write_control(MessageType.CLOSE, going_away, deadline=deadline)
        for thread in self._snapshot():
            thread.join(max(0.0, deadline - time.monotonic()))
        with self._lock:
            conns = list(self._conns)
        for conn in conns:  # handlers that did not finish in time
            conn.close()
        for thread in self._snapshot():
            thread.join(1.0)
        self._stopped.wait(1.0)
        self.socket.close()
        self._wakeup_read.close()
        self._wakeup_write.close()

    def _snapshot(self) -> list[threading.Thread]:
        with self._lock:
            return list(self._threads)

    def __enter__(self) -> Server:
        return self

    def __exit__(self, *exc_info: object) -> None:
        if not self._stopping.is_set():
            self.shutdown()


def serve(
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
    """Listen on ``host``:``port`` (or a Unix socket) and run ``handler(conn)`` per WebSocket.

    Each connection is upgraded (with ``upgrader``'s options, or the
    defaults: same-origin check, 10 s handshake timeout, 1 MiB read limit)
    in a thread of its own, which then runs the handler and closes the
    connection when it returns. A plain HTTP request goes to
    ``http_handler`` (a health check, say) or gets 426; a valid handshake
    request goes to ``process_request``, if given, which may refuse it.
    Example::

        def echo(conn: Conn) -> None:
            for message in conn:  # ends quietly on a normal close
                conn.write_message(
                    MessageType.TEXT if isinstance(message, str) else MessageType.BINARY, message
                )

        with serve(echo, "127.0.0.1", 8765) as server:
            server.serve_forever()   # server.shutdown() from another thread stops it

    Args:
        handler: called with each open connection, in its own thread.
        host: the address to listen on (``None``: all interfaces).
        port: the port, 0 for any free one (see ``server.address``).
        upgrader: handshake options.
        http_handler: answers plain HTTP requests: ``(status, headers, body)``.
        process_request: inspects each valid handshake request, to accept it
            (with more response headers) or refuse it with a status of its
            choice; see :data:`ProcessRequest`.
        ssl_context: serve ``wss://`` with this TLS context; the TLS
            handshake counts towards the upgrader's ``handshake_timeout``.
        unix_path: listen on this Unix socket instead of ``host``:``port``.
        backlog: the listen backlog.
        shutdown_timeout: seconds handlers get to finish on shutdown.
    """
    if unix_path is not None:
        sock = _unix_listener(unix_path, backlog)
    else:
        sock = socket.create_server((host or "", port), backlog=backlog)
    sock.setblocking(False)
    return Server(
        handler,
        sock,
        upgrader or Upgrader(),
        shutdown_timeout,
        http_handler,
        process_request=process_request,
        ssl_context=ssl_context,
    )


def _unix_listener(path: str, backlog: int) -> socket.socket:
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        with suppress(FileNotFoundError):
            os.unlink(path)  # a socket file left by an earlier run
        sock.bind(path)
        sock.listen(backlog)
    except BaseException:
        sock.close()
        raise
    return sock
