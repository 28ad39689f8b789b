"""Dialer: the client side on asyncio, connecting and doing the opening handshake.

gorilla: ``Dialer``. The core writes the request and checks the answer, the
proxy tunnel's too; the Dialer opens the transport and moves the bytes,
all within the handshake timeout.
"""

from __future__ import annotations

import asyncio
import http.cookiejar
import socket
import ssl
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from wsproto_common import CookieSession, ProxyFunc, proxy_from_environment, resolve_proxy
from wsproto_core import (
    DialerOptions,
    HandshakeError,
    HandshakeRejected,
    HandshakeResponse,
    Headers,
    ProxyConnect,
    ProxyURL,
    WebSocketURI,
    parse_proxy_url,
    parse_uri,
)
from wsproto_core.headers import HeadersLike

from ._bridge import Bridge
from .conn import Conn

__all__ = ["Dialer", "NetDial", "default_dialer", "dial"]

NetDial = Callable[[tuple[str, int]], Awaitable[socket.socket]]
"""Opens the TCP connection: ``await net_dial((host, port))`` (gorilla: ``NetDialContext``).

It returns a connected socket; the handshake timeout covers it.
"""


@dataclass(frozen=True, kw_only=True)
class Dialer(DialerOptions):
    """Connects to WebSocket servers (gorilla: ``Dialer``).

    The protocol options are keyword arguments documented in
    :class:`~wsproto_core.DialerOptions` and shared by every adapter:
    ``handshake_timeout`` (45 s, for connecting, the proxy tunnel, TLS and
    the handshake together), ``read_buffer_size``, ``write_buffer_size``,
    ``write_buffer_pool``, ``subprotocols``, ``enable_compression``,
    ``max_message_size`` (1 MiB), ``max_handshake_size``,
    ``max_rejected_body_size``, ``keepalive_interval`` and
    ``keepalive_timeout``. A Dialer is immutable, so one serves every
    connection.

    Attributes:
        ssl_context: for ``wss://``; by default one that verifies
            certificates (gorilla: ``TLSClientConfig``).
        net_dial: opens the TCP connection, to the server or to the proxy
            (gorilla: ``NetDialContext``); by default the event loop's.
        proxy: the HTTP proxy to tunnel through with ``CONNECT`` (gorilla:
            ``Proxy``): by default ``proxy_from_environment``, which reads
            ``http_proxy``, ``https_proxy``, ``all_proxy`` and ``no_proxy``;
            a URL such as ``"http://user:pass@proxy:3128"``; a function of
            the WebSocket URL returning one or ``None``; or ``None`` to
            always connect directly.
        cookie_jar: sends the jar's cookies with the handshake and stores
            the ``Set-Cookie`` of the answer (gorilla: ``Jar``).
        max_queue: messages read ahead of the application before the
            connection stops reading from the network.
    """

    ssl_context: ssl.SSLContext | None = None
    net_dial: NetDial | None = None
    proxy: str | ProxyFunc | None = proxy_from_environment
    cookie_jar: http.cookiejar.CookieJar | None = None
    max_queue: int = 16

    def __post_init__(self) -> None:
        super().__post_init__()
        if isinstance(self.proxy, str):
            parse_proxy_url(self.proxy)  # a bad URL fails here, not at the first dial
        if self.max_queue < 1:
            raise ValueError("max_queue must be at least 1")

    async def dial(self, url: str, headers: HeadersLike = ()) -> tuple[Conn, HandshakeResponse]:
        """Connect to ``url`` (``ws://`` or ``wss://``) and open a WebSocket (gorilla: ``Dial``).

        Args:
            url: the server's URI.
            headers: more request headers (``Origin`` is one: browsers send it).

        Returns:
            The open connection, and the server's 101 response.

        Raises:
            ValueError: ``url`` is not a WebSocket URI, or the proxy URL is invalid.
            HandshakeError: the server, or the proxy, refused or answered
                wrongly; for a refusal, ``.response`` has the status,
                headers and body.
            TimeoutError: ``handshake_timeout`` passed.
            OSError: connecting failed (refused, unreachable, TLS errors).
        """
        uri = parse_uri(url)
        proxy = resolve_proxy(self.proxy, uri)
        request_headers = Headers(headers)
        cookies = None if self.cookie_jar is None else CookieSession(self.cookie_jar, uri)
        if cookies is not None:
            request_headers = cookies.request_headers(request_headers)
        bridge = Bridge(
            self.new_connection(uri, request_headers),
            read_buffer_size=self.read_buffer_size,
            max_queue=self.max_queue,
        )
        try:
            async with asyncio.timeout(self.handshake_timeout):
                await self._connect(uri, proxy, bridge)
                event = await bridge.next_event()
        except BaseException:
            bridge.abort()
            raise
        if cookies is not None and isinstance(event, HandshakeResponse | HandshakeRejected):
            cookies.store(event.headers)
        if isinstance(event, HandshakeRejected):
            bridge.abort()
            raise HandshakeError(
                "the server refused the handshake",
                status_code=event.status_code,
                headers=event.headers,
                response=event,
            )
        assert isinstance(event, HandshakeResponse)  # the only other handshake outcome
        conn = Conn(
            bridge,
            write_buffer_size=self.write_buffer_size,
            write_buffer_pool=self.write_buffer_pool,
            keepalive_interval=self.keepalive_interval,
            keepalive_timeout=self.keepalive_timeout,
        )
        return conn, event

    async def _connect(self, uri: WebSocketURI, proxy: ProxyURL | None, bridge: Bridge) -> None:
        loop = asyncio.get_running_loop()
        context = (self.ssl_context or ssl.create_default_context()) if uri.secure else None
        server_hostname = uri.host if uri.secure else None
        if proxy is None and self.net_dial is None:
            await loop.create_connection(
                lambda: bridge, uri.host, uri.port, ssl=context, server_hostname=server_hostname
            )
            return
        target = (uri.host, uri.port) if proxy is None else (proxy.host, proxy.port)
        sock = await (self.net_dial or _open_socket)(target)
        try:
            if proxy is not None:
                tunnelled = await _open_tunnel(loop, sock, proxy, uri, self)
                if tunnelled:
                    if uri.secure:
                        # A TLS server speaks only after the ClientHello.
                        raise HandshakeError("the proxy sent data before the TLS handshake began")
                    bridge.core.receive_data(tunnelled)
            await loop.create_connection(
                lambda: bridge, sock=sock, ssl=context, server_hostname=server_hostname
            )
        except BaseException:
            sock.close()
            raise


async def _open_socket(address: tuple[str, int]) -> socket.socket:
    """Connect a non-blocking TCP socket to the first address that answers."""
    loop = asyncio.get_running_loop()
    host, port = address
    infos = await loop.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    error: OSError = OSError(f"no address for {host}")
    for family, kind, proto, _, sockaddr in infos:
        sock = socket.socket(family, kind, proto)
        sock.setblocking(False)
        try:
            await loop.sock_connect(sock, sockaddr)
        except OSError as exc:
            sock.close()
            error = exc
            continue
        except BaseException:
            sock.close()
            raise
        return sock
    raise error


async def _open_tunnel(
    loop: asyncio.AbstractEventLoop,
    sock: socket.socket,
    proxy: ProxyURL,
    uri: WebSocketURI,
    options: Dialer,
) -> bytes:
    """Ask the proxy on ``sock`` for a tunnel; return the first bytes through it."""
    sock.setblocking(False)
    connect = ProxyConnect(
        uri.host,
        uri.port,
        credentials=proxy.credentials,
        max_response_size=options.max_handshake_size,
    )
    await loop.sock_sendall(sock, connect.request)
    while (event := connect.next_event()) is None:
        connect.receive_data(await loop.sock_recv(sock, options.read_buffer_size))
    return event.trailing_data


default_dialer = Dialer()
"""A Dialer with the default options, which :func:`dial` uses (gorilla: ``DefaultDialer``)."""


async def dial(url: str, headers: HeadersLike = ()) -> tuple[Conn, HandshakeResponse]:
    """Connect with :data:`default_dialer` (gorilla: ``DefaultDialer.Dial``)."""
    return await default_dialer.dial(url, headers)
