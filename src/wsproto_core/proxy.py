"""HTTP CONNECT tunnels through a proxy (RFC 9110 §9.3.6), for clients.

:class:`ProxyConnect` writes the ``CONNECT host:port`` request and reads
the proxy's answer with h11; :func:`parse_proxy_url` reads a proxy URL.
What opens the connection to the proxy, and what runs through the tunnel
(TLS, the WebSocket handshake), is the caller's.

Invariants:

* HTTP ends with the proxy's 2xx response head: "data received after that
  header section is from the server identified by the request target"
  -- RFC 9110 §9.3.6. Bytes that arrive with the head are handed over in
  :attr:`TunnelEstablished.trailing_data`, never dropped.
* Every input is bounded: the response heads (1xx ones included) together by
  ``max_response_size``, the body of a refusal by ``max_body_size``.
* Every failure is a :class:`~wsproto_core.errors.HandshakeError`; a refusal
  carries the proxy's whole response, as a refused WebSocket handshake does.
* Credentials never appear in a repr or an error message.
"""

from __future__ import annotations

import base64
import re
import urllib.parse
from dataclasses import dataclass, field

import h11

from .errors import HandshakeError, LocalProtocolError
from .events import Event, HandshakeRejected
from .handshake import (
    DEFAULT_MAX_HANDSHAKE_SIZE,
    DEFAULT_MAX_REJECTED_BODY_SIZE,
    _decode_headers,
)
from .headers import Headers, HeadersLike

__all__ = ["DEFAULT_PROXY_PORT", "ProxyConnect", "ProxyURL", "TunnelEstablished", "parse_proxy_url"]

DEFAULT_PROXY_PORT = 80  # as Go's net/http and urllib assume for http:// proxies
# A registered name or an IPv4 address, or an IPv6 address without a zone (as in uri.py).
_HOST = re.compile(r"[A-Za-z0-9._~!$&'()*+,;=-]+|[0-9A-Fa-f:.]+")
_CTL = re.compile(r"[\x00-\x1f\x7f]")


@dataclass(frozen=True, slots=True)
class ProxyURL:
    """A parsed ``http://[user:password@]host[:port]`` proxy URL.

    Attributes:
        host: the proxy's host name or IP address, without brackets for IPv6.
        port: the proxy's port, 80 by default.
        credentials: ``(user, password)``, percent-decoded, or ``None``;
            left out of the repr so that logs do not show the password.
    """

    host: str
    port: int = DEFAULT_PROXY_PORT
    credentials: tuple[str, str] | None = field(default=None, repr=False)


def parse_proxy_url(url: str) -> ProxyURL:
    """Parse the URL of an HTTP proxy, such as ``http://user:pass@proxy:3128``.

    A URL without a scheme (``proxy:3128``) is taken as ``http://``, as
    ``curl`` and Go's ``http.ProxyFromEnvironment`` do: the ``*_proxy``
    environment variables are often written that way. The path, if any, is
    ignored.

    Raises:
        ValueError: not an ``http://`` URL (``https://`` and ``socks5://``
            proxies are not supported), no host, a bad port or host, or
            credentials that Basic authentication cannot carry. The message
            never includes the credentials.
    """
    if "://" not in url:
        url = "http://" + url
    try:
        parts = urllib.parse.urlsplit(url)
        port = parts.port
    except ValueError:
        raise ValueError("invalid proxy URL: malformed host or port") from None
    scheme = parts.scheme.lower()
    if scheme != "http":
        raise ValueError(f"unsupported proxy scheme {scheme!r}: only http:// proxies are supported")
    host = parts.hostname
    if not host:
        raise ValueError("invalid proxy URL: no host")
    if port == 0:
        raise ValueError("invalid proxy URL: port 0")
    if not host.isascii():
        try:
            host = host.encode("idna").decode("ascii")
        except UnicodeError:
            raise ValueError("invalid proxy URL: invalid host name") from None
    if not _HOST.fullmatch(host):
        raise ValueError("invalid proxy URL: invalid host name")
    credentials = None
    if parts.username is not None:
        credentials = (
            urllib.parse.unquote(parts.username),
            urllib.parse.unquote(parts.password or ""),
        )
        try:
            _basic_credentials(*credentials)
        except LocalProtocolError as exc:
            raise ValueError(f"invalid proxy URL: {exc}") from None
    return ProxyURL(host, DEFAULT_PROXY_PORT if port is None else port, credentials)


def _basic_credentials(user: str, password: str) -> str:
    # "a user-id containing a colon character is invalid" and "The user-id
    # and password MUST NOT contain any control characters" -- RFC 7617 §2.
    if ":" in user:
        raise LocalProtocolError("a Basic authentication user name cannot contain ':'")
    if _CTL.search(user) or _CTL.search(password):
        raise LocalProtocolError("Basic authentication credentials cannot contain control codes")
    # RFC 7617 §2.1: UTF-8 is the only charset a server may ask for, and what
    # every client sends.
    token = base64.b64encode(f"{user}:{password}".encode()).decode("ascii")
    return f"Basic {token}"


@dataclass(frozen=True, slots=True, kw_only=True)
class TunnelEstablished(Event):
    """The proxy answered ``CONNECT`` with 2xx: the tunnel is open.

    Attributes:
        status_code: the proxy's status, usually 200.
        reason: its reason phrase, e.g. ``"Connection established"``.
        headers: its response headers.
        trailing_data: bytes that followed the response head in the same
            read; they come from the target through the tunnel, so feed them
            to whatever runs on top (the WebSocket handshake) before reading
            more.
    """

    status_code: int = 200
    reason: str = ""
    headers: Headers = field(default_factory=Headers)
    trailing_data: bytes = b""


class ProxyConnect:
    """The client side of an HTTP CONNECT request (RFC 9110 §9.3.6).

    Open a connection to the proxy, send :attr:`request`, then feed the
    proxy's answer with :meth:`receive_data` and call :meth:`next_event`
    until it returns a :class:`TunnelEstablished`. From then on, the
    connection is a tunnel to ``host:port``: feed the event's
    ``trailing_data`` to the protocol that runs in it, then continue with
    that protocol (TLS for ``wss://``, then the WebSocket handshake).

    Args:
        host: the target's host name or IP address (IPv6 with or without
            brackets).
        port: the target's port.
        credentials: ``(user, password)`` for the proxy, sent as
            ``Proxy-Authorization: Basic`` (RFC 7617).
        extra_headers: more request headers, such as ``User-Agent``.
        max_response_size: the most bytes the response head may take; 1xx
            heads before it count too.
        max_body_size: how much of a refusal's body to keep.

    Raises:
        LocalProtocolError: an invalid port or header, or credentials
            Basic authentication cannot carry.
    """

    def __init__(
        self,
        host: str,
        port: int,
        *,
        credentials: tuple[str, str] | None = None,
        extra_headers: HeadersLike = (),
        max_response_size: int = DEFAULT_MAX_HANDSHAKE_SIZE,
        max_body_size: int = DEFAULT_MAX_REJECTED_BODY_SIZE,
    ) -> None:
        if not 0 < port < 65536:
            raise LocalProtocolError(f"invalid port {port}")
        if ":" in host and not host.startswith("["):
            host = f"[{host}]"
        # "CONNECT uses a special form of request target, unique to this
        # method, consisting of only the host and port number of the tunnel
        # destination, separated by a colon" -- RFC 9110 §9.3.6; Host carries
        # the same authority (RFC 9110 §7.2).
        self.authority = f"{host}:{port}"
        """The tunnel's destination, ``host:port``, as sent."""
        fields = [("Host", self.authority)]
        if credentials is not None:
            fields.append(("Proxy-Authorization", _basic_credentials(*credentials)))
        extra = Headers(extra_headers)
        owned = {"host", "proxy-authorization"} if credentials is not None else {"host"}
        for name, _ in extra:
            if name.lower() in owned:
                raise LocalProtocolError(f"ProxyConnect sets {name!r} itself")
        self._max_response_size = max_response_size
        self._max_body_size = max_body_size
        self._h11 = h11.Connection(h11.CLIENT, max_incomplete_event_size=max_response_size)
        try:
            request = h11.Request(
                method="CONNECT", target=self.authority, headers=[*fields, *extra]
            )
            self.request: bytes = (self._h11.send(request) or b"") + (
                self._h11.send(h11.EndOfMessage()) or b""
            )
            """The CONNECT request, to send to the proxy."""
        except (h11.LocalProtocolError, UnicodeEncodeError) as exc:
            raise LocalProtocolError(f"invalid CONNECT request: {exc}") from None
        self._received = 0
        self._eof = False
        self._done = False
        self._response: h11.Response | None = None
        self._body: list[bytes] = []
        self._body_size = 0

    def receive_data(self, data: bytes) -> None:
        """Feed bytes of the proxy's response; ``b""`` means end of stream.

        Afterwards, call :meth:`next_event`.

        Raises:
            LocalProtocolError: the outcome is known already; bytes after a
                :class:`TunnelEstablished` belong to the tunnel.
        """
        if self._done:
            raise LocalProtocolError("the CONNECT exchange is over; tunnel bytes are not its own")
        self._received += len(data)
        self._eof = not data
        self._h11.receive_data(data)

    def next_event(self) -> TunnelEstablished | None:
        """Return the outcome once the response head is complete, else ``None``.

        Returns ``None`` again after the outcome.

        Raises:
            HandshakeError: the proxy refused (any status but 1xx and 2xx;
                ``.response`` has the status, headers and the start of the
                body, e.g. a 407 and its ``Proxy-Authenticate`` challenge),
                closed the connection before answering, or answered with
                malformed HTTP. Close the connection.
        """
        if self._done:
            return None
        while True:
            try:
                event = self._h11.next_event()
            except h11.RemoteProtocolError as exc:
                self._done = True
                if exc.error_status_hint == 431:  # h11's own bound on an incomplete head
                    raise self._too_large() from None
                if self._eof and self._response is not None:  # a refusal cut short
                    raise self._refused() from None
                if self._eof:
                    raise HandshakeError(
                        f"the proxy closed the connection before answering CONNECT {self.authority}"
                    ) from None
                raise HandshakeError(f"malformed response from the proxy: {exc}") from None
            if event is h11.NEED_DATA:
                return None
            if (
                isinstance(event, h11.InformationalResponse | h11.Response)
                and self._heads_too_large()
            ):
                self._done = True
                raise self._too_large()
            if isinstance(event, h11.InformationalResponse):
                continue  # "100 Continue" and the like: the real answer follows
            if isinstance(event, h11.Response):
                if 200 <= event.status_code < 300:
                    # h11 has switched protocols: all it holds is the tunnel's.
                    self._done = True
                    return TunnelEstablished(
                        status_code=event.status_code,
                        reason=event.reason.decode("latin-1"),
                        headers=_decode_headers(event.headers),
                        trailing_data=self._h11.trailing_data[0],
                    )
                self._response = event
            elif isinstance(event, h11.Data):
                room = self._max_body_size - self._body_size
                self._body.append(bytes(event.data[:room]))
                self._body_size += min(room, len(event.data))
                if self._body_size >= self._max_body_size:
                    self._done = True
                    raise self._refused()
            else:  # EndOfMessage: the refusal is complete
                self._done = True
                raise self._refused()

    def _heads_too_large(self) -> bool:
        # h11 bounds an incomplete head only. Called as a head arrives: what
        # was fed, less what follows the head, is every head so far.
        return self._received - len(self._h11.trailing_data[0]) > self._max_response_size

    def _too_large(self) -> HandshakeError:
        return HandshakeError("the proxy's response head is larger than max_response_size")

    def _refused(self) -> HandshakeError:
        response = self._response
        assert response is not None
        headers = _decode_headers(response.headers)
        return HandshakeError(
            f"the proxy refused CONNECT {self.authority}",
            status_code=response.status_code,
            headers=headers,
            response=HandshakeRejected(
                status_code=response.status_code,
                reason=response.reason.decode("latin-1"),
                headers=headers,
                body=b"".join(self._body),
            ),
        )
