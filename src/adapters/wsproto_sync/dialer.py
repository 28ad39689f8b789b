"""Dialer: the client side, connecting and doing the opening handshake (gorilla: ``Dialer``)."""

from __future__ import annotations

import http.cookiejar
import socket
import ssl
import time
from collections.abc import Callable
from contextlib import suppress
from dataclasses import dataclass

from wsproto_common import CookieSession, ProxyFunc, proxy_from_environment, resolve_proxy
from wsproto_core import (
    DialerOptions,
    HandshakeError,
    HandshakeRejected,
    HandshakeResponse,
    Headers,
    ProxyConnect,
    parse_proxy_url,
    parse_uri,
)
from wsproto_core.headers import HeadersLike

from ._io import exchange
from ._proxy import open_tunnel
from .conn import Conn

__all__ = ["Dialer", "NetDial", "ProxyFunc", "default_dialer", "dial", "proxy_from_environment"]

NetDial = Callable[[tuple[str, int], "float | None"], socket.socket]
"""Opens the TCP connection: ``net_dial((host, port), timeout)`` (gorilla: ``NetDial``)."""


@dataclass(frozen=True, kw_only=True)
class Dialer(DialerOptions):
    """Connects to WebSocket servers (gorilla: ``Dialer``).

    The protocol options are keyword arguments documented in
    :class:`~wsproto_core.DialerOptions` and shared by every adapter:
    ``handshake_timeout`` (45 s, for connecting, the proxy tunnel, TLS and
    the handshake together), ``read_buffer_size``, ``write_buffer_size``,
    ``write_buffer_pool``, ``subprotocols``, ``enable_compression``,
    ``max_message_size`` (1 MiB), ``max_handshake_size`` (the proxy's
    answer's too), ``max_rejected_body_size``, ``keepalive_interval`` and
    ``keepalive_timeout``. A Dialer is immutable, so one serves every
    connection, from any thread.

    Attributes:
        ssl_context: for ``wss://``; by default one that verifies
            certificates (gorilla: ``TLSClientConfig``).
        net_dial: opens the TCP connection, to the server or to the proxy,
            instead of ``socket.create_connection`` (gorilla: ``NetDial``).
        proxy: the HTTP proxy to tunnel through with ``CONNECT`` (gorilla:
            ``Proxy``): by default :func:`proxy_from_environment`, which
            reads ``http_proxy``, ``https_proxy``, ``all_proxy`` and
            ``no_proxy`` (as gorilla's ``DefaultDialer`` does; its zero
            ``Dialer`` connects directly); a URL such as
            ``"http://user:pass@proxy:3128"`` for every connection; a
            :data:`ProxyFunc` that returns one (or ``None``) per URL; or
            ``None`` to always connect directly. Credentials in the URL are
            sent as Basic authentication, and TLS for ``wss://`` runs
            through the tunnel.
        cookie_jar: sends the jar's cookies for the URL with the handshake
            and stores the ``Set-Cookie`` of the answer, a refusal's too
            (gorilla: ``Jar``). The cookie policy sees ``ws://`` as
            ``http://`` and ``wss://`` as ``https://``. A ``Cookie`` header
            passed to :meth:`dial` replaces the jar's cookies.
    """

    ssl_context: ssl.SSLContext | None = None
    net_dial: NetDial | None = None
    proxy: str | ProxyFunc | None = proxy_from_environment
    cookie_jar: http.cookiejar.CookieJar | None = None

    def __post_init__(self) -> None:
        super().__post_init__()
        if isinstance(self.proxy, str):
            parse_proxy_url(self.proxy)  # a bad URL fails here, not at the first dial

    def dial(self, url: str, headers: HeadersLike = ()) -> tuple[Conn, HandshakeResponse]:
        """Connect to ``url`` (``ws://`` or ``wss://``) and open a WebSocket (gorilla: ``Dial``).

        Args:
            url: the server's URI.
            headers: more request headers (``Origin`` is one: browsers send it).

        Returns:
            The open connection, and the server's 101 response.

        Raises:
            ValueError: ``url`` is not a WebSocket URI, or the proxy URL is
                invalid.
            HandshakeError: the server, or the proxy, refused or answered
                wrongly; for a refusal, ``.response`` has the status,
                headers and body (a proxy's 407 and its
                ``Proxy-Authenticate`` challenge, say).
            TimeoutError: ``handshake_timeout`` passed.
            OSError: connecting failed (refused, unreachable, TLS errors).
        """
        uri = parse_uri(url)
        proxy = resolve_proxy(self.proxy, uri)
        request_headers = Headers(headers)
        cookies = None if self.cookie_jar is None else CookieSession(self.cookie_jar, uri)
        if cookies is not None:
            request_headers = cookies.request_headers(request_headers)
        deadline = None
        if self.handshake_timeout is not None:
            deadline = time.monotonic() + self.handshake_timeout
        if proxy is None:
            sock = self._connect(uri.host, uri.port, deadline)
        else:
            sock = self._connect(proxy.host, proxy.port, deadline)
        try:
            tunnelled = b""  # the target's first bytes, read with the proxy's answer
            if proxy is not None:
                sock.setblocking(False)
                connect = ProxyConnect(
                    uri.host,
                    uri.port,
                    credentials=proxy.credentials,
                    max_response_size=self.max_handshake_size,
                )
                tunnelled = open_tunnel(sock, connect, deadline, self.read_buffer_size, proxy)
            if uri.secure:
                if tunnelled:
                    # A TLS server speaks only after the ClientHello, so these
                    # bytes cannot be the target's TLS.
                    raise HandshakeError("the proxy sent data before the TLS handshake began")
                context = self.ssl_context or ssl.create_default_context()
                sock.settimeout(_remaining(deadline))
                sock = context.wrap_socket(sock, server_hostname=uri.host)
            sock.setblocking(False)
            core = self.new_connection(uri, request_headers)
            if tunnelled:
                core.receive_data(tunnelled)
            event = exchange(sock, core, deadline, self.read_buffer_size)
            if cookies is not None and isinstance(event, HandshakeResponse | HandshakeRejected):
                cookies.store(event.headers)
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
            write_buffer_pool=self.write_buffer_pool,
            keepalive_interval=self.keepalive_interval,
            keepalive_timeout=self.keepalive_timeout,
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


default_dialer = Dialer()
"""A Dialer with the default options, which :func:`dial` uses (gorilla: ``DefaultDialer``)."""


def dial(url: str, headers: HeadersLike = ()) -> tuple[Conn, HandshakeResponse]:
    """Connect with :data:`default_dialer` (gorilla: ``DefaultDialer.Dial``)."""
    return default_dialer.dial(url, headers)
