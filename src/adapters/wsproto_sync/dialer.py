"""Dialer: the client side, connecting and doing the opening handshake (gorilla: ``Dialer``)."""

from __future__ import annotations

import socket
import ssl
import time
from collections.abc import Callable, Sequence
from contextlib import suppress

from wsproto_core import (
    DEFAULT_MAX_MESSAGE_SIZE,
    ClientConnection,
    ClientPerMessageDeflate,
    HandshakeError,
    HandshakeRejected,
    HandshakeResponse,
    parse_uri,
)
from wsproto_core.handshake import DEFAULT_MAX_HANDSHAKE_SIZE
from wsproto_core.headers import HeadersLike

from ._io import exchange
from .conn import DEFAULT_READ_BUFFER_SIZE, DEFAULT_WRITE_BUFFER_SIZE, Conn

__all__ = ["Dialer", "NetDial", "default_dialer", "dial"]

NetDial = Callable[[tuple[str, int], "float | None"], socket.socket]
"""Opens the TCP connection: ``net_dial((host, port), timeout)`` (gorilla: ``NetDial``)."""


class Dialer:
    """Connects to WebSocket servers (gorilla: ``Dialer``).

    A Dialer holds options only, so one serves every connection, from any
    thread.

    Args:
        handshake_timeout: seconds for connecting, TLS and the handshake
            together (gorilla: ``HandshakeTimeout``, 45 s by default there too).
        read_buffer_size: bytes asked of the socket at once.
        write_buffer_size: frame size of ``next_writer()``.
        subprotocols: subprotocols to offer, in order of preference.
        enable_compression: offer permessage-deflate.
        ssl_context: for ``wss://``; by default one that verifies certificates.
        net_dial: opens the TCP connection instead of ``socket.create_connection``.
        max_message_size: the read limit of new connections (1 MiB; ``None``: none).
        max_handshake_size: the largest response head accepted.
    """

    def __init__(
        self,
        *,
        handshake_timeout: float | None = 45.0,
        read_buffer_size: int = DEFAULT_READ_BUFFER_SIZE,
        write_buffer_size: int = DEFAULT_WRITE_BUFFER_SIZE,
        subprotocols: Sequence[str] = (),
        enable_compression: bool = False,
        ssl_context: ssl.SSLContext | None = None,
        net_dial: NetDial | None = None,
        max_message_size: int | None = DEFAULT_MAX_MESSAGE_SIZE,
        max_handshake_size: int = DEFAULT_MAX_HANDSHAKE_SIZE,
    ) -> None:
        self.handshake_timeout = handshake_timeout
        self.read_buffer_size = read_buffer_size
        self.write_buffer_size = write_buffer_size
        self.subprotocols = tuple(subprotocols)
        self.enable_compression = enable_compression
        self.ssl_context = ssl_context
        self.net_dial = net_dial
        self.max_message_size = max_message_size
        self.max_handshake_size = max_handshake_size

    def dial(self, url: str, headers: HeadersLike = ()) -> tuple[Conn, HandshakeResponse]:
        """Connect to ``url`` (``ws://`` or ``wss://``) and open a WebSocket (gorilla: ``Dial``).

        Args:
            url: the server's URI.
            headers: more request headers (``Origin`` is one: browsers send it).

        Returns:
            The open connection, and the server's 101 response.

        Raises:
            ValueError: ``url`` is not a WebSocket URI.
            HandshakeError: the server refused or answered wrongly; for a
                refusal, ``.response`` has the status, headers and body.
            TimeoutError: ``handshake_timeout`` passed.
            OSError: connecting failed (refused, unreachable, TLS errors).
        """
        uri = parse_uri(url)
        deadline = None
        if self.handshake_timeout is not None:
            deadline = time.monotonic() + self.handshake_timeout
        sock = self._connect(uri.host, uri.port, deadline)
        try:
            if uri.secure:
                context = self.ssl_context or ssl.create_default_context()
                sock.settimeout(_remaining(deadline))
                sock = context.wrap_socket(sock, server_hostname=uri.host)
            sock.setblocking(False)
            core = ClientConnection(
                uri,
                subprotocols=self.subprotocols,
                extensions=[ClientPerMessageDeflate()] if self.enable_compression else [],
                extra_headers=headers,
                max_handshake_size=self.max_handshake_size,
                max_message_size=self.max_message_size,
            )
            event = exchange(sock, core, deadline, self.read_buffer_size)
        except BaseException:
            with suppress(OSError):
                sock.close()
            raise
        if isinstance(event, HandshakeRejected):
            sock.close()
            raise HandshakeError(
                "the server refused the handshake",
                status_code=event.status_code,
                headers=event.headers,
                response=event,
            )
        assert isinstance(event, HandshakeResponse)  # the only other handshake outcome
        conn = Conn(
            sock,
            core,
            read_buffer_size=self.read_buffer_size,
            write_buffer_size=self.write_buffer_size,
        )
        return conn, event

    def _connect(self, host: str, port: int, deadline: float | None) -> socket.socket:
        timeout = _remaining(deadline)
        if self.net_dial is not None:
            return self.net_dial((host, port), timeout)
        return socket.create_connection((host, port), timeout=timeout)


def _remaining(deadline: float | None) -> float | None:
    if deadline is None:
        return None
    remaining = deadline - time.monotonic()
    if remaining <= 0:
        raise TimeoutError("handshake timeout passed")
    return remaining


#: A Dialer with the default options (gorilla: ``DefaultDialer``).
default_dialer = Dialer()


def dial(url: str, headers: HeadersLike = ()) -> tuple[Conn, HandshakeResponse]:
    """Connect with :data:`default_dialer` (gorilla: ``DefaultDialer.Dial``)."""
    return default_dialer.dial(url, headers)
