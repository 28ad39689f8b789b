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
from collections.abc import Sequence
from contextlib import suppress

from wsproto_core import (
    DEFAULT_MAX_MESSAGE_SIZE,
    BufferPool,
    ErrorRenderer,
    HandshakeError,
    HandshakeRequest,
    OriginCheck,
    ServerConnection,
    ServerPerMessageDeflate,
    plain_text_error,
    same_origin,
)
from wsproto_core.handshake import DEFAULT_MAX_HANDSHAKE_SIZE
from wsproto_core.headers import HeadersLike

from ._io import exchange, sendall
from .conn import DEFAULT_READ_BUFFER_SIZE, DEFAULT_WRITE_BUFFER_SIZE, Conn

__all__ = ["Upgrader"]


class Upgrader:
    """Turns an accepted socket into a :class:`Conn` (gorilla: ``Upgrader``).

    An Upgrader holds options only, so one serves every connection, from any
    thread.

    Args:
        handshake_timeout: seconds the client has to send its request
            (gorilla: ``HandshakeTimeout``); ``None`` waits forever, which
            lets a slow client hold a thread: keep a limit.
        read_buffer_size: bytes asked of the socket at once (``ReadBufferSize``).
        write_buffer_size: frame size of ``next_writer()`` (``WriteBufferSize``).
        write_buffer_pool: lends writers their buffer only while they write
            (``WriteBufferPool``); share one ``SharedBufferPool`` between
            many connections. By default each writer allocates its own.
        subprotocols: subprotocols spoken, in order of preference (``Subprotocols``).
        check_origin: the origin policy (``CheckOrigin``). The default refuses
            browsers on other sites with 403; ``None`` accepts every origin.
        error: renders the HTTP error responses (``Error``): called with the
            status, a reason and the request (``None`` if unparsable), it
            returns ``(headers, body)``; see ``wsproto_core.ErrorRenderer``.
            The default answers with the reason in plain text.
        enable_compression: negotiate permessage-deflate (``EnableCompression``).
        max_message_size: the read limit of new connections (1 MiB; ``None``: none).
        max_handshake_size: the largest request head accepted.
    """

    def __init__(
        self,
        *,
        handshake_timeout: float | None = 10.0,
        read_buffer_size: int = DEFAULT_READ_BUFFER_SIZE,
        write_buffer_size: int = DEFAULT_WRITE_BUFFER_SIZE,
        write_buffer_pool: BufferPool | None = None,
        subprotocols: Sequence[str] = (),
        check_origin: OriginCheck | None = same_origin,
        error: ErrorRenderer | None = None,
        enable_compression: bool = False,
        max_message_size: int | None = DEFAULT_MAX_MESSAGE_SIZE,
        max_handshake_size: int = DEFAULT_MAX_HANDSHAKE_SIZE,
    ) -> None:
        self.handshake_timeout = handshake_timeout
        self.read_buffer_size = read_buffer_size
        self.write_buffer_size = write_buffer_size
        self.write_buffer_pool = write_buffer_pool
        self.subprotocols = tuple(subprotocols)
        self.check_origin = check_origin
        self.error = error
        self.enable_compression = enable_compression
        self.max_message_size = max_message_size
        self.max_handshake_size = max_handshake_size

    def upgrade(
        self,
        request: socket.socket | http.server.BaseHTTPRequestHandler,
        response_headers: HeadersLike = (),
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
        core = ServerConnection(
            subprotocols=self.subprotocols,
            extensions=[ServerPerMessageDeflate()] if self.enable_compression else [],
            check_origin=self.check_origin,
            max_handshake_size=self.max_handshake_size,
            max_message_size=self.max_message_size,
            render_error=self.error or plain_text_error,
        )
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
                core.reject()  # a plain HTTP request: 426 Upgrade Required
                sendall(sock, core.data_to_send(), deadline)
                raise HandshakeError("not a WebSocket handshake request", status_code=426)
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
