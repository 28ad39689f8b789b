"""wsproto_common: what the adapters share that is not the protocol's business.

Choosing a proxy from the environment and keeping cookies in an
``http.cookiejar.CookieJar`` are the same for every adapter, but
``urllib.request`` and ``http.cookiejar`` import ``socket``, which the
sans-I/O core may not. So they live here, once, for ``wsproto_sync``,
``wsproto_asyncio`` and ``wsproto_trio``, with the size the writers send
a large masked payload in. Nothing here does I/O.
"""

from __future__ import annotations

import http.cookiejar
import ipaddress
import urllib.request
from collections.abc import Callable

from wsproto_core import Headers, ProxyURL, WebSocketURI, parse_proxy_url, parse_uri

__all__ = ["MASK_PIECE", "CookieSession", "ProxyFunc", "proxy_from_environment", "resolve_proxy"]

MASK_PIECE = 48 * 1024
"""How much of a client's large payload a writer that waits for each send masks at once.

``Connection.buffers_to_send(mask_limit=MASK_PIECE)``: each piece goes out
while still in the CPU's cache (the core says why). In W4 (1 MiB echoed)
``wsproto_sync`` went from 0.72 to 0.86 of raw TCP's speed and
``wsproto_trio`` 13 % faster; 32 KiB gave 0.82, the cost of more pieces.
Kept under a loopback segment (64 KiB): pieces of 64 KiB sent a runt
segment each, which halved W4. ``wsproto_asyncio`` takes all at once: its
transport keeps what it cannot send now, and a send per piece would cost
more than the cache saves.
"""

ProxyFunc = Callable[[str], "str | None"]
"""Chooses the proxy of a connection (gorilla: ``Dialer.Proxy``).

Called with the normalized ``ws://`` or ``wss://`` URL (no credentials);
returns a proxy URL such as ``"http://user:pass@proxy:3128"``, or ``None``
(or ``""``) to connect directly.
"""


def proxy_from_environment(url: str) -> str | None:
    """Return the proxy the environment names for ``url`` (gorilla: ``http.ProxyFromEnvironment``).

    ``ws://`` uses ``http_proxy`` and ``wss://`` uses ``https_proxy``, as in
    gorilla (which asks for the proxy of the ``http``/``https`` URL); both
    fall back to ``all_proxy``. Hosts that ``no_proxy`` lists connect
    directly, and so, as in Go, do ``localhost`` and loopback addresses.
    Either case of the names works (lower case first), as
    ``urllib.request.getproxies()`` reads them; on macOS and Windows,
    without those variables, the system settings apply, also as in urllib.

    Args:
        url: a ``ws://`` or ``wss://`` URL.

    Returns:
        The proxy URL, or ``None`` for a direct connection.

    Raises:
        ValueError: ``url`` is not a WebSocket URI.
    """
    uri = parse_uri(url)
    proxies = urllib.request.getproxies()
    proxy = proxies.get("https" if uri.secure else "http") or proxies.get("all")
    if not proxy or _is_loopback(uri.host) or _bypass(uri):
        return None
    return proxy


def _is_loopback(host: str) -> bool:
    # Go's httpproxy never proxies these: a proxy could not reach them anyway.
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _bypass(uri: WebSocketURI) -> bool:
    # urllib matches no_proxy against "host:port" and the bare host; an IPv6
    # literal is only recognized bare ("::1"), not bracketed with a port.
    return bool(urllib.request.proxy_bypass(uri.host_header)) or bool(
        ":" in uri.host and urllib.request.proxy_bypass(uri.host)
    )


def resolve_proxy(proxy: str | ProxyFunc | None, uri: WebSocketURI) -> ProxyURL | None:
    """Turn a Dialer's ``proxy`` option into the proxy for ``uri``, or ``None``.

    Raises:
        ValueError: the proxy URL is invalid or not ``http://``.
    """
    if proxy is None:
        return None
    url = proxy if isinstance(proxy, str) else proxy(str(uri))
    return parse_proxy_url(url) if url else None


class CookieSession:
    """One handshake's use of a cookie jar (gorilla: ``Dialer.Jar``).

    The jar's policy knows ``http`` and ``https`` only; a ``wss://`` cookie
    is a secure one, as a browser's WebSocket sees it.

    Args:
        jar: the cookie jar.
        uri: the URI being dialled.
    """

    def __init__(self, jar: http.cookiejar.CookieJar, uri: WebSocketURI) -> None:
        self.jar = jar
        scheme = "https" if uri.secure else "http"
        self._request = urllib.request.Request(f"{scheme}://{uri.host_header}{uri.resource_name}")

    def request_headers(self, headers: Headers) -> Headers:
        """``headers`` with the jar's ``Cookie`` header for the URI added.

        The caller's own ``Cookie`` header wins, as in gorilla and in
        ``CookieJar.add_cookie_header()``. The header goes in verbatim: the
        core's ``cookies=`` option would reject values a jar may hold.
        """
        if "cookie" in headers:
            return headers
        self.jar.add_cookie_header(self._request)
        cookie = self._request.get_header("Cookie")
        return Headers([*headers, ("Cookie", cookie)]) if cookie else headers

    def store(self, response_headers: Headers) -> None:
        """Keep the ``Set-Cookie`` cookies of the server's answer."""
        # extract_cookies() is typed for an HTTPResponse but reads only info().
        self.jar.extract_cookies(_CookieResponse(response_headers), self._request)  # type: ignore[arg-type]


class _CookieResponse:
    """What CookieJar.extract_cookies() reads of a response: ``info().get_all()``."""

    def __init__(self, headers: Headers) -> None:
        self._headers = headers

    def info(self) -> _CookieResponse:
        return self

    def get_all(self, name: str, default: list[str]) -> list[str]:
        return self._headers.get_all(name) or default
