"""Upgrader: the server side of the opening handshake (gorilla: ``Upgrader``)."""

from __future__ import annotations

import socket
import time
from collections.abc import Sequence
from contextlib import suppress

from wsproto_core import (
    DEFAULT_MAX_MESSAGE_SIZE,
    HandshakeError,
    HandshakeRequest,
    ServerConnection,
    ServerPerMessageDeflate,
    same_origin,
)
from wsproto_core.handshake import DEFAULT_MAX_HANDSHAKE_SIZE, OriginCheck
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
        subprotocols: subprotocols spoken, in order of preference (``Subprotocols``).
        check_origin: the origin policy (``CheckOrigin``). The default refuses
            browsers on other sites with 403; ``None`` accepts every origin.
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
        subprotocols: Sequence[str] = (),
        check_origin: OriginCheck | None = same_origin,
        enable_compression: bool = False,
        max_message_size: int | None = DEFAULT_MAX_MESSAGE_SIZE,
        max_handshake_size: int = DEFAULT_MAX_HANDSHAKE_SIZE,
    ) -> None:
        self.handshake_timeout = handshake_timeout
        self.read_buffer_size = read_buffer_size
        self.write_buffer_size = write_buffer_size
        self.subprotocols = tuple(subprotocols)
        self.check_origin = check_origin
        self.enable_compression = enable_compression
        self.max_message_size = max_message_size
        self.max_handshake_size = max_handshake_size

    def upgrade(self, sock: socket.socket, response_headers: HeadersLike = ()) -> Conn:
        """Read the handshake request from ``sock`` and answer it (gorilla: ``Upgrade``).

        Args:
            sock: a freshly accepted socket; the upgrader owns it from now on
                and closes it if the handshake fails.
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
        )
        sock.setblocking(False)
        try:
            event = exchange(sock, core, deadline, self.read_buffer_size)
            if not isinstance(event, HandshakeRequest):
                core.reject()  # a plain HTTP request: 426 Upgrade Required
                sendall(sock, core.data_to_send(), deadline)
                raise HandshakeError("not a WebSocket handshake request", status_code=426)
            core.accept(extra_headers=response_headers)
            sendall(sock, core.data_to_send(), deadline)
        except HandshakeError:
            with suppress(OSError):
                sendall(sock, core.data_to_send(), deadline)  # the error response, if any
            sock.close()
            raise
        except BaseException:
            sock.close()
            raise
        return Conn(
            sock,
            core,
            read_buffer_size=self.read_buffer_size,
            write_buffer_size=self.write_buffer_size,
        )
