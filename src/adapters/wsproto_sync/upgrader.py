"""Upgrader: the server side of the opening handshake (gorilla: ``Upgrader``).

It upgrades either a freshly accepted socket, reading the request itself,
or a request that ``http.server`` has already read, taking the connection
over from the handler as Go's ``Hijack`` does. Either way the core checks
the request and writes the response; the Upgrader only moves the bytes.
"""

from __future__ import annotations

import http.server
import socket
import ssl
import time
from collections.abc import Callable
from contextlib import suppress

from wsproto_core import HandshakeError, HandshakeRequest, HTTPRequest, UpgraderOptions
from wsproto_core.headers import HeadersLike

from ._io import exchange, sendall
from .conn import Conn

__all__ = ["HTTPHandler", "Upgrader"]

HTTPResponse = tuple[int, HeadersLike, "bytes | None"]
HTTPHandler = Callable[[HTTPRequest], HTTPResponse]
"""Answers a plain HTTP request on a WebSocket port: ``(status, headers, body)``.

A health check, say: ``lambda request: (200, [("Content-Type", "text/plain")], b"ok")``.
A body of ``None`` is rendered by the Upgrader's ``error`` hook.
"""


class Upgrader(UpgraderOptions):
    """Turns an accepted socket into a :class:`Conn` (gorilla: ``Upgrader``).

    The options are keyword arguments, documented in
    :class:`~wsproto_core.UpgraderOptions` and shared by every adapter:
    ``handshake_timeout`` (10 s), ``read_buffer_size``, ``write_buffer_size``,
    ``write_buffer_pool``, ``subprotocols``, ``check_origin`` (same origin),
    ``error``, ``enable_compression``, ``max_message_size`` (1 MiB),
    ``max_handshake_size``, ``keepalive_interval`` and ``keepalive_timeout``.
    An Upgrader is immutable, so one serves every connection, from any thread.
    """

    def upgrade(
        self,
        request: socket.socket | http.server.BaseHTTPRequestHandler,
        response_headers: HeadersLike = (),
        *,
        http_handler: HTTPHandler | None = None,
    ) -> Conn:
        """Answer a handshake request and open the connection (gorilla: ``Upgrade``).

        ``request`` is either

        * a freshly accepted socket: the Upgrader reads the request, within
          ``handshake_timeout``, and owns the socket from now on; or
        * the ``http.server`` handler that received the request, from its
          ``do_GET``: the Upgrader takes its connection over (gorilla's use
          of ``Hijack``) and tells the server not to read another request.
          ``http.server`` closes the socket when ``do_GET`` returns, so
          serve the connection before returning; ``ThreadingHTTPServer``
          gives each connection a thread to do that in::

              class Handler(http.server.BaseHTTPRequestHandler):
                  def do_GET(self) -> None:
                      if self.path == "/ws":
                          with upgrader.upgrade(self) as conn:
                              serve_messages(conn)
                      else:
                          self.send_error(404)

        Args:
            request: the socket or the handler.
            response_headers: more headers for the 101 response (``Set-Cookie``...).
            http_handler: answers a plain HTTP request (a health check, say)
                with ``(status, headers, body)``; without it, such a request
                gets 426. Either way ``HandshakeError`` follows.

        Returns:
            The open connection.

        Raises:
            HandshakeError: the request was not a valid WebSocket handshake
                (a plain HTTP request gets 426); the HTTP error response was
                sent and the socket closed.
            TimeoutError: the request did not arrive within ``handshake_timeout``.
            OSError: the socket failed.
        """
        deadline = None
        if self.handshake_timeout is not None:
            deadline = time.monotonic() + self.handshake_timeout
        core = self.new_connection()
        handler = None
        if isinstance(request, http.server.BaseHTTPRequestHandler):
            handler, sock = request, request.connection
        else:
            sock = request
        sock.setblocking(False)
        status = 101
        try:
            if handler is not None:
                core.receive_data(_hijack(handler))
            event = exchange(sock, core, deadline, self.read_buffer_size)
            if not isinstance(event, HandshakeRequest):
                assert isinstance(event, HTTPRequest)
                answer = (426, (), None) if http_handler is None else http_handler(event)
                core.reject(*answer)  # 426 Upgrade Required by default
                sendall(sock, core.data_to_send(), deadline)
                raise HandshakeError(
                    f"not a WebSocket handshake request: {event.method} {event.target}",
                    status_code=answer[0],
                )
            core.accept(extra_headers=response_headers)
            sendall(sock, core.data_to_send(), deadline)
        except HandshakeError as exc:
            status = exc.status_code or 400
            with suppress(OSError):
                sendall(sock, core.data_to_send(), deadline)  # the error response, if any
            sock.close()
            raise
        except BaseException:
            status = 0
            sock.close()
            raise
        finally:
            if handler is not None and status:
                handler.log_request(status)  # http.server's access log
        return Conn(
            sock,
            core,
            read_buffer_size=self.read_buffer_size,
            write_buffer_size=self.write_buffer_size,
            write_buffer_pool=self.write_buffer_pool,
            keepalive_interval=self.keepalive_interval,
            keepalive_timeout=self.keepalive_timeout,
        )


def _hijack(handler: http.server.BaseHTTPRequestHandler) -> bytes:
    """Take the connection over from ``handler``; return the request as it came."""
    # http.server must not read the next request from what is now a WebSocket.
    handler.close_connection = True
    # The core checks the request itself, so give it the request's bytes:
    # http.server keeps the request line and the header fields as latin-1
    # text (folded lines included), which encodes back exactly.
    lines = [handler.requestline, *(f"{name}: {value}" for name, value in handler.headers.items())]
    head = "".join(line + "\r\n" for line in lines).encode("latin-1") + b"\r\n"
    # http.server reads through a buffer: what it read past the request's
    # head belongs to the WebSocket. The socket is non-blocking by now, so
    # this takes what is buffered without waiting for more.
    read1 = getattr(handler.rfile, "read1", None)  # absent if rbufsize is 0: no buffer
    try:
        extra = read1() if read1 is not None else None
    except ssl.SSLWantReadError:
        extra = None
    return head + bytes(extra or b"")
