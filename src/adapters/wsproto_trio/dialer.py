"""Dialer: the client side on trio, connecting and doing the opening handshake.

gorilla: ``Dialer``. The core writes the request and checks the answer, the
proxy tunnel's too; the Dialer opens the stream and moves the bytes, all
within the handshake timeout.
"""

from __future__ import annotations

import http.cookiejar
import math
import ssl
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

import trio

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

from ._io import STREAM_GONE, exchange, open_tunnel, os_error
from .conn import Conn

__all__ = ["Dialer", "NetDial", "default_dialer", "dial"]

NetDial = Callable[[tuple[str, int]], Awaitable[trio.abc.Stream]]
"""Opens the TCP connection: ``await net_dial((host, port))`` (gorilla: ``NetDialContext``).

It returns a connected stream; the handshake timeout covers it.
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
            (gorilla: ``NetDialContext``); by default ``trio.open_tcp_stream``.
        proxy: the HTTP proxy to tunnel through with ``CONNECT`` (gorilla:
            ``Proxy``): by default ``proxy_from_environment``, which reads
            ``http_proxy``, ``https_proxy``, ``all_proxy`` and ``no_proxy``;
            a URL such as ``"http://user:pass@proxy:3128"``; a function of
            the WebSocket URL returning one or ``None``; or ``None`` to
            always connect directly.
        cookie_jar: sends the jar's cookies with the handshake and stores
            the ``Set-Cookie`` of the answer (gorilla: ``Jar``).
    """

    ssl_context: ssl.SSLContext | None = None
    net_dial: NetDial | None = None
    proxy: str | ProxyFunc | None = proxy_from_environment
    cookie_jar: http.cookiejar.CookieJar | None = None

    def __post_init__(self) -> None:
        super().__post_init__()
        if isinstance(self.proxy, str):
            parse_proxy_url(self.proxy)  # a bad URL fails here, not at the first dial

    async def dial(self, url: str, headers: HeadersLike = ()) -> tuple[Conn, HandshakeResponse]:
        """Connect to ``url`` (``ws://`` or ``wss://``) and open a WebSocket (gorilla: ``Dial``).

        The connection is an async context manager: ``async with conn:``
        closes it.

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
            OSError: connecting failed (refused, unreachable, TLS errors such
                as ``ssl.SSLCertVerificationError``, the connection lost).
                As in the other adapters, it is the socket's own error
                (``ConnectionRefusedError``...) when every address of the
                host failed the same way; where trio reported the failure
                otherwise, trio's error is the ``__cause__``.
        """
        uri = parse_uri(url)
        proxy = resolve_proxy(self.proxy, uri)
        request_headers = Headers(headers)
        cookies = None if self.cookie_jar is None else CookieSession(self.cookie_jar, uri)
        if cookies is not None:
            request_headers = cookies.request_headers(request_headers)
        core = self.new_connection(uri, request_headers)
        timeout = math.inf if self.handshake_timeout is None else self.handshake_timeout
        stream: trio.abc.Stream | None = None
        try:
            with trio.fail_after(timeout):
                target = (uri.host, uri.port) if proxy is None else (proxy.host, proxy.port)
                stream = await (self.net_dial or _open_tcp)(target)
                if proxy is not None:
                    connect = ProxyConnect(
                        uri.host,
                        uri.port,
                        credentials=proxy.credentials,
                        max_response_size=self.max_handshake_size,
                    )
                    tunnelled = await open_tunnel(stream, connect, self.read_buffer_size)
                    if tunnelled:
                        if uri.secure:
                            # A TLS server speaks only after the ClientHello.
                            raise HandshakeError(
                                "the proxy sent data before the TLS handshake began"
                            )
                        core.receive_data(tunnelled)
                if uri.secure:
                    context = self.ssl_context or ssl.create_default_context()
                    stream = trio.SSLStream(stream, context, server_hostname=uri.host)
                    await stream.do_handshake()
                event = await exchange(stream, core, self.read_buffer_size)
        except trio.TooSlowError:
            if stream is not None:
                await trio.aclose_forcefully(stream)
            raise TimeoutError("the handshake did not complete within handshake_timeout") from None
        except STREAM_GONE as exc:
            if stream is not None:
                await trio.aclose_forcefully(stream)
            raise os_error(exc) from exc
        except BaseException:
            if stream is not None:
                await trio.aclose_forcefully(stream)
            raise
        if cookies is not None and isinstance(event, HandshakeResponse | HandshakeRejected):
            cookies.store(event.headers)
        if isinstance(event, HandshakeRejected):
            await trio.aclose_forcefully(stream)
            raise HandshakeError(
                "the server refused the handshake",
                status_code=event.status_code,
                headers=event.headers,
                response=event,
            )
        assert isinstance(event, HandshakeResponse)  # the only other handshake outcome
        conn = Conn(
            stream,
            core,
            read_buffer_size=self.read_buffer_size,
            write_buffer_size=self.write_buffer_size,
            write_buffer_pool=self.write_buffer_pool,
            keepalive_interval=self.keepalive_interval,
            keepalive_timeout=self.keepalive_timeout,
        )
        return conn, event


async def _open_tcp(address: tuple[str, int]) -> trio.abc.Stream:
    try:
        return await trio.open_tcp_stream(*address)
    except OSError as exc:
        error = _one_error(exc)
        if error is exc:
            raise
    # Outside the except block, so the chain doesn't loop back through the group.
    raise error


def _one_error(exc: OSError) -> OSError:
    """The error to raise for a failed ``trio.open_tcp_stream``: what the other adapters raise.

    trio tries every address and raises ``OSError("all attempts to connect
    ... failed")`` from an ``ExceptionGroup`` of the attempts' errors. When
    they all failed the same way (``ConnectionRefusedError`` from each of
    ``localhost``'s addresses, say), that is the error, as
    ``socket.create_connection`` and asyncio's ``create_connection`` raise
    it; different failures keep trio's summary, with the group as its cause.
    """
    group = exc.__cause__
    if not isinstance(group, ExceptionGroup):
        return exc
    first = group.exceptions[0]  # a group is never empty
    if isinstance(first, OSError) and all(
        isinstance(error, OSError) and type(error) is type(first) and error.errno == first.errno
        for error in group.exceptions
    ):
        return first
    return exc


default_dialer = Dialer()
"""A Dialer with the default options, which :func:`dial` uses (gorilla: ``DefaultDialer``)."""


async def dial(url: str, headers: HeadersLike = ()) -> tuple[Conn, HandshakeResponse]:
    """Connect with :data:`default_dialer` (gorilla: ``DefaultDialer.Dial``)."""
    return await default_dialer.dial(url, headers)
