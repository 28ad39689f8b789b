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
from typing import Any

from wsproto_core import (
    Acceptance,
    HandshakeError,
    HandshakeRequest,
    HTTPRequest,
    Rejection,
    UpgraderOptions,
)
from wsproto_core.headers import HeadersLike
from wsproto_core.options import (
    answer_handshake_request,
    answer_http_request,
    answer_internal_error,
)

from ._io import exchange, sendall, tls_handshake
from .conn import Conn

__all__ = ["HTTPHandler", "ProcessRequest", "Upgrader"]

HTTPResponse = tuple[int, HeadersLike, "bytes | None"]
HTTPHandler = Callable[[HTTPRequest], HTTPResponse]
"""Answers a plain HTTP request on a WebSocket port: ``(status, headers, body)``.

A health check, say: ``lambda request: (200, [("Content-Type", "text/plain")], b"ok")``.
The request's ``remote_addr`` is the client's address. A body of ``None``
is rendered by the Upgrader's ``error`` hook. If it raises, the client gets
``500 Internal Server Error``.
"""

ProcessRequest = Callable[[HandshakeRequest], "Acceptance | Rejection | None"]
"""Inspects a valid handshake request before it is answered (websockets: ``process_request``).

It runs after the core's checks and the origin check, in the thread that
upgrades. Return ``None`` to accept the request, an
:class:`~wsproto_core.Acceptance` to accept it with more response headers
(``Set-Cookie``...) or a chosen subprotocol, or a
:class:`~wsproto_core.Rejection` to refuse it with a status, headers and
body of your choice (``401`` with ``WWW-Authenticate``, say). If it raises,
or returns what the core refuses, the client gets ``500 Internal Server
Error`` and the exception propagates.
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
        process_request: ProcessRequest | None = None,
        ssl_context: ssl.SSLContext | None = None,
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
            process_request: inspects a valid handshake request and accepts
                it (with more headers) or refuses it; see :data:`ProcessRequest`.
            ssl_context: for a socket, the server's TLS context: the TLS
                handshake runs first, within the same ``handshake_timeout``.

        Returns:
            The open connection.

        Raises:
            HandshakeError: the request was not a valid WebSocket handshake
                (a plain HTTP request gets 426), or ``process_request``
                refused it; the HTTP response was sent and the socket closed.
            TimeoutError: the request did not arrive within ``handshake_timeout``.
            OSError: the socket failed (``ssl.SSLError`` for TLS).
            ValueError: ``ssl_context`` with an ``http.server`` handler,
                whose server does its TLS itself.
            Exception: what ``http_handler`` or ``process_request`` raised,
                after ``500 Internal Server Error`` was sent.
        """
        deadline = None
        if self.handshake_timeout is not None:
            deadline = time.monotonic() + self.handshake_timeout
        handler = None
        if isinstance(request, http.server.BaseHTTPRequestHandler):
            if ssl_context is not None:
                raise ValueError("ssl_context is for a socket; http.server does its own TLS")
            handler, sock = request, request.connection
        else:
            sock = request
        core = self.new_connection(remote_addr=_peer_of(sock))
        sock.setblocking(False)
        status = 101
        try:
            if ssl_context is not None:
                # wrap_socket() takes the descriptor over: close the TLS socket from now on.
                sock = tls = ssl_context.wrap_socket(
                    sock, server_side=True, do_handshake_on_connect=False
                )
                tls_handshake(tls, deadline)
            if handler is not None:
                core.receive_data(_hijack(handler))
            event = exchange(sock, core, deadline, self.read_buffer_size)
            try:
                if isinstance(event, HandshakeRequest):
                    answer = None if process_request is None else process_request(event)
                    answer_handshake_request(core, event, answer, response_headers)
                else:
                    assert isinstance(event, HTTPRequest)
                    reply = None if http_handler is None else http_handler(event)
                    answer_http_request(core, event, reply)  # 426 Upgrade Required by default
            except HandshakeError:
                raise
            except Exception:
                # The program's hook failed, or answered what the core
                # refuses: the client gets a 500, not a dropped connection.
                answer_internal_error(core)
                status = 500
                with suppress(OSError):
                    sendall(sock, core.data_to_send(), deadline)
                raise
            sendall(sock, core.data_to_send(), deadline)
        except HandshakeError as exc:
            status = exc.status_code or 400
            with suppress(OSError):
                sendall(sock, core.data_to_send(), deadline)  # the error response, if any
            sock.close()
            raise
        except BaseException:
            if status != 500:
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


def _peer_of(sock: socket.socket) -> Any:
    """The peer's address, as ``Conn.remote_addr`` will have it; ``None`` if it is gone."""
    try:
        return sock.getpeername()
    except OSError:  # the client left already: the handshake will fail
        return None


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
