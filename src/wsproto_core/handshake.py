"""The opening handshake (RFC 6455 §4) over HTTP/1.1, parsed and written by h11.

:class:`ClientHandshake` builds the upgrade request and checks the server's
answer; :class:`ServerHandshake` checks a request and writes the answer. Both
hand over to the framing layer with the bytes that followed the handshake in
the same read, so none are lost. Every input is bounded by a size limit, and
every failure is a :class:`~wsproto_core.errors.HandshakeError`; a server
has then already queued the HTTP error response the RFC asks for.

The module-level helpers are gorilla/websocket's: ``IsWebSocketUpgrade``,
``Subprotocols`` and the default same-origin check. :class:`Acceptance` and
:class:`Rejection` are how a server program answers a request it inspected
(the adapters' ``process_request`` hook returns them).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import http
import os
import re
import urllib.parse
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import h11

from .errors import HandshakeError, LocalProtocolError
from .events import HandshakeRejected, HandshakeRequest, HandshakeResponse, HTTPRequest
from .extensions.base import ClientExtensionFactory, Extension, ServerExtensionFactory
from .headers import (
    ExtensionOffer,
    Headers,
    HeadersLike,
    format_extensions,
    is_token,
    parse_extensions,
    parse_token_list,
)
from .uri import WebSocketURI, parse_uri

__all__ = [
    "DEFAULT_MAX_HANDSHAKE_SIZE",
    "Acceptance",
    "ClientHandshake",
    "ErrorRenderer",
    "OriginCheck",
    "Rejection",
    "ServerHandshake",
    "accept_key",
    "is_websocket_upgrade",
    "same_origin",
    "subprotocols",
]

GUID = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"  # RFC 6455 §1.3
VERSION = "13"  # RFC 6455 §4.1
DEFAULT_MAX_HANDSHAKE_SIZE = 16 * 1024
DEFAULT_MAX_REJECTED_BODY_SIZE = 64 * 1024

OriginCheck = Callable[[HandshakeRequest], bool]
"""A server's origin policy: return ``False`` to refuse the request with 403."""

ErrorRenderer = Callable[[int, str, "HTTPRequest | None"], tuple[HeadersLike, bytes]]
"""Renders a server's HTTP error response (gorilla: ``Upgrader.Error``).

Called as ``render(status_code, reason, request)``, where ``request`` is the
offending request, or ``None`` if it could not be parsed; returns the
response's ``(headers, body)``. The status code is the handshake's choice
and stays; so do the headers the RFC requires with it (``Allow``,
``Sec-WebSocket-Version``, ``Upgrade``), and ``Content-Length`` and
``Connection: close``, which are always set for you. The reason is written
for people and never quotes the peer's bytes.

Who was refused is ``request.remote_addr`` (gorilla's hook reads
``r.RemoteAddr``): the client's address, which every adapter gives the core
(see ``ServerConnection.remote_addr``). The signature stays gorilla's three
arguments: the address travels with the request it belongs to, so one
renderer serves every adapter, and the core on its own, unchanged.
"""

_PLAIN_TEXT = (("Content-Type", "text/plain; charset=utf-8"),)


@dataclass(frozen=True, slots=True)
class Acceptance:
    """Accept a handshake request, with more in the ``101`` response than the defaults.

    What a server program returns, from an adapter's ``process_request``
    hook, to accept a request and set a cookie, say; returning ``None``
    accepts it as it is. The fields are the arguments of
    :meth:`ServerConnection.accept() <wsproto_core.ServerConnection.accept>`,
    which checks them.

    Attributes:
        headers: more response headers (``Set-Cookie``, ...), kept as
            :class:`Headers`; not the ones the handshake sets itself.
        subprotocol: the subprotocol to select, one the client offered;
            ``None`` picks the first of the server's ``subprotocols`` that
            the client offered (gorilla's rule).
    """

    headers: HeadersLike = ()
    subprotocol: str | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "headers", Headers(self.headers))


@dataclass(frozen=True, slots=True)
class Rejection:
    """Refuse a handshake request with an HTTP response of your choice.

    What a server program returns, from an adapter's ``process_request``
    hook, to refuse a request: ``Rejection(401, [("WWW-Authenticate",
    'Bearer realm="chat"')])``, or 429 with ``Retry-After``. The fields are
    the arguments of :meth:`ServerConnection.reject()
    <wsproto_core.ServerConnection.reject>`, which writes the response
    (``Content-Length`` and ``Connection: close`` are set for you).

    Attributes:
        status_code: a final status other than 101 (200-599); 403 by default.
        headers: response headers, kept as :class:`Headers`.
        body: the response body; ``None`` renders an error page with the
            server's ``error`` renderer (:data:`ErrorRenderer`).
    """

    status_code: int = 403
    headers: HeadersLike = ()
    body: bytes | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "headers", Headers(self.headers))


def plain_text_error(
    status_code: int, reason: str, request: HTTPRequest | None
) -> tuple[HeadersLike, bytes]:
    """The default :data:`ErrorRenderer`: the reason as one line of plain text."""
    title = f"{status_code} {_phrase(status_code).decode()}".rstrip()
    return _PLAIN_TEXT, f"{title}: {reason}\n".encode()


# Headers the handshake owns; extra headers may not replace them.
_CLIENT_OWNED = frozenset(
    {
        "host",
        "upgrade",
        "connection",
        "sec-websocket-key",
        "sec-websocket-version",
        "sec-websocket-protocol",
        "sec-websocket-extensions",
    }
)
_SERVER_OWNED = frozenset(
    {
        "upgrade",
        "connection",
        "sec-websocket-accept",
        "sec-websocket-protocol",
        "sec-websocket-extensions",
    }
)


def accept_key(key: str) -> str:
    """Compute ``Sec-WebSocket-Accept`` for a ``Sec-WebSocket-Key`` (RFC 6455 §4.2.2)."""
    digest = hashlib.sha1((key + GUID).encode("ascii")).digest()
    return base64.b64encode(digest).decode("ascii")


def _tokens(headers: Headers, name: str) -> list[str]:
    return _lower_tokens(headers.get_all(name))


def _lower_tokens(values: Sequence[str]) -> list[str]:
    return [token.lower() for token in parse_token_list(values)]


# The request fields the server's handshake reads (RFC 6455 §4.2.1): those a
# client's handshake sets, and Origin, which browsers add.
_REQUEST_FIELDS = _CLIENT_OWNED | {"origin"}
_NONE: tuple[str, ...] = ()
_SWITCHING = b"HTTP/1.1 101 Switching Protocols\r\n"


def is_websocket_upgrade(headers: Headers) -> bool:
    """Tell whether a request asks for a WebSocket upgrade (gorilla: ``IsWebSocketUpgrade``).

    True when ``Connection`` has the ``upgrade`` token and ``Upgrade`` has
    ``websocket``; it says nothing about whether the rest of the handshake is valid.
    """
    try:
        return "upgrade" in _tokens(headers, "connection") and "websocket" in _tokens(
            headers, "upgrade"
        )
    except ValueError:
        return False


def subprotocols(headers: Headers) -> list[str]:
    """Return the subprotocols a request offers, in order (gorilla: ``Subprotocols``).

    Raises:
        ValueError: the ``Sec-WebSocket-Protocol`` header is malformed.
    """
    return parse_token_list(headers.get_all("sec-websocket-protocol"))


def same_origin(request: HandshakeRequest) -> bool:
    """The default origin check: gorilla's ``checkSameOrigin``.

    A request without ``Origin`` passes (it does not come from a browser
    page); otherwise the origin's host and port must equal ``Host``, ignoring
    ASCII case. This stops a page on another site from opening a WebSocket to
    your server with the visitor's cookies (cross-site WebSocket hijacking).
    """
    if request.origin is None:
        return True
    try:
        origin = urllib.parse.urlsplit(request.origin)
    except ValueError:
        return False
    return origin.netloc.lower() == request.host.lower() and bool(origin.netloc)


class _RawHeaders(Protocol):
    def raw_items(self) -> list[tuple[bytes, bytes]]: ...


def _decode_headers(raw: _RawHeaders) -> Headers:
    # h11 has checked the syntax; HTTP header bytes are ISO-8859-1 (RFC 7230 §3.2.4).
    # raw_items() is a plain list: iterating h11's Sequence item by item costs
    # more than the whole decoding. Names in lowercase, as h11 reports them.
    items = raw.raw_items()
    return Headers._of(
        tuple([(name.decode("latin-1").lower(), value.decode("latin-1")) for name, value in items])
    )


def _check_extra_headers(extra: Headers, owned: frozenset[str]) -> None:
    for name, _ in extra:
        if name.lower() in owned:
            raise LocalProtocolError(
                f"the handshake sets {name!r} itself; use the matching option instead"
            )


def _h11_send(conn: h11.Connection, make: Callable[[], h11._events.Event]) -> bytes:
    # h11 validates header names and values (no CR/LF injection) when the
    # event is built, so build it here, where its errors become ours.
    try:
        return conn.send(make()) or b""
    except (h11.LocalProtocolError, UnicodeEncodeError) as exc:
        raise LocalProtocolError(f"invalid HTTP message: {exc}") from exc


def _phrase(status: int) -> bytes:
    try:
        return http.HTTPStatus(status).phrase.encode("ascii")
    except ValueError:
        return b""


class ClientHandshake:
    """The client side of the opening handshake (RFC 6455 §4.1).

    Build it, send :attr:`request`, feed the response with
    :meth:`receive_data` and call :meth:`next_event` until it returns an event.
    """

    def __init__(
        self,
        uri: str | WebSocketURI,
        *,
        origin: str | None = None,
        subprotocols: Sequence[str] = (),
        extensions: Sequence[ClientExtensionFactory] = (),
        extra_headers: HeadersLike = (),
        cookies: Mapping[str, str] | None = None,
        random_bytes: Callable[[int], bytes] = os.urandom,
        max_handshake_size: int = DEFAULT_MAX_HANDSHAKE_SIZE,
        max_rejected_body_size: int = DEFAULT_MAX_REJECTED_BODY_SIZE,
    ) -> None:
        self.uri = parse_uri(uri) if isinstance(uri, str) else uri
        for protocol in subprotocols:
            if not is_token(protocol):
                raise LocalProtocolError(f"subprotocol {protocol!r} is not an HTTP token")
        # "The elements that comprise this value MUST be non-empty strings [...]
        # and MUST all be unique strings." -- RFC 6455 §4.1
        if len(set(subprotocols)) != len(subprotocols):
            raise LocalProtocolError("each subprotocol may be offered once")
        if len({factory.name for factory in extensions}) != len(extensions):
            raise LocalProtocolError("each extension may be offered once")
        self.subprotocols = tuple(subprotocols)
        self._factories = tuple(extensions)
        self.key = base64.b64encode(random_bytes(16)).decode("ascii")
        self._max_rejected_body_size = max_rejected_body_size

        extra = Headers(extra_headers)
        _check_extra_headers(extra, _CLIENT_OWNED)
        fields = [
            ("Host", self.uri.host_header),
            ("Upgrade", "websocket"),
            ("Connection", "Upgrade"),
            ("Sec-WebSocket-Key", self.key),
            ("Sec-WebSocket-Version", VERSION),
        ]
        if origin is not None:
            fields.append(("Origin", origin))
        if self.subprotocols:
            fields.append(("Sec-WebSocket-Protocol", ", ".join(self.subprotocols)))
        if self._factories:
            offers = [factory.offer() for factory in self._factories]
            fields.append(("Sec-WebSocket-Extensions", format_extensions(offers)))
        if cookies:
            for name, value in cookies.items():
                if not is_token(name) or not _COOKIE_VALUE.fullmatch(value):
                    raise LocalProtocolError(f"invalid cookie {name!r}={value!r} (RFC 6265 §4.1.1)")
            fields.append(("Cookie", "; ".join(f"{k}={v}" for k, v in cookies.items())))
        if self.uri.user_info is not None and "authorization" not in extra:
            credentials = ":".join(self.uri.user_info).encode()
            fields.append(("Authorization", "Basic " + base64.b64encode(credentials).decode()))
        self.request_headers = Headers(fields) + extra

        self._h11 = h11.Connection(h11.CLIENT, max_incomplete_event_size=max_handshake_size)
        self._head = _HeadMeter(max_handshake_size)
        self._eof = False
        fields = list(self.request_headers)
        self.request: bytes = _h11_send(
            self._h11,
            lambda: h11.Request(method="GET", target=self.uri.resource_name, headers=fields),
        ) + _h11_send(self._h11, h11.EndOfMessage)
        self._rejection: h11.Response | None = None
        self._body: list[bytes] = []
        self._body_size = 0
        self.extensions: list[Extension] = []
        self.trailing_data = b""

    def receive_data(self, data: bytes) -> None:
        """Feed bytes of the server's response; ``b""`` means end of stream."""
        self._head.received += len(data)
        self._eof = not data
        self._h11.receive_data(data)

    def next_event(self) -> HandshakeResponse | HandshakeRejected | None:
        """Return the outcome once the response is complete, else ``None``.

        After a :class:`HandshakeResponse`, :attr:`extensions` holds the
        negotiated extensions and :attr:`trailing_data` the bytes that
        followed the response.

        Raises:
            HandshakeError: the response is malformed or does not accept
                the handshake as RFC 6455 §4.1 requires.
        """
        while True:
            try:
                event = self._h11.next_event()
            except h11.RemoteProtocolError as exc:
                if self._eof and self._rejection is None:
                    raise HandshakeError(
                        "connection closed before the handshake response"
                    ) from None
                raise HandshakeError(f"malformed HTTP response: {exc}") from None
            if event is h11.NEED_DATA:
                return None
            if isinstance(event, (h11.InformationalResponse, h11.Response)) and self._head.exceeded(
                self._h11
            ):
                raise HandshakeError("response head larger than max_handshake_size")
            if isinstance(event, h11.InformationalResponse):
                if event.status_code == 101:
                    return self._accepted(event)
                continue  # 100 Continue, 103 Early Hints: the real answer follows
            if isinstance(event, h11.Response):
                self._rejection = event
            elif isinstance(event, h11.Data):
                room = self._max_rejected_body_size - self._body_size
                self._body.append(event.data[:room])
                self._body_size += min(room, len(event.data))
                if self._body_size >= self._max_rejected_body_size:
                    return self._rejected()
            else:  # EndOfMessage (h11 raises on a premature ConnectionClosed)
                return self._rejected()

    def _rejected(self) -> HandshakeRejected:
        assert self._rejection is not None
        return HandshakeRejected(
            status_code=self._rejection.status_code,
            reason=self._rejection.reason.decode("latin-1"),
            headers=_decode_headers(self._rejection.headers),
            body=b"".join(self._body),
        )

    def _accepted(self, response: h11.InformationalResponse) -> HandshakeResponse:
        headers = _decode_headers(response.headers)

        def fail(reason: str) -> HandshakeError:
            return HandshakeError(reason, status_code=101, headers=headers)

        try:
            upgrade = _tokens(headers, "upgrade")
            connection = _tokens(headers, "connection")
            protocols = parse_token_list(headers.get_all("sec-websocket-protocol"))
            responses = parse_extensions(headers.get_all("sec-websocket-extensions"))
        except ValueError as exc:
            raise fail(f"malformed header in the response: {exc}") from None
        # RFC 6455 §4.1, the client's checks of the server's handshake, in order.
        if upgrade != ["websocket"]:
            raise fail("the response's Upgrade header is not 'websocket'")
        if "upgrade" not in connection:
            raise fail("the response's Connection header lacks 'Upgrade'")
        if headers.get_all("sec-websocket-accept") != [accept_key(self.key)]:
            raise fail("the response's Sec-WebSocket-Accept does not match our key")
        extensions, rsv_used = [], 0
        offered = {factory.name: factory for factory in self._factories}
        for response_offer in responses:
            factory = offered.pop(response_offer.name, None)
            if factory is None:
                raise fail(f"the server accepted extension {response_offer.name!r}, not offered")
            try:
                extension = factory.accept(response_offer)
            except ValueError as exc:
                raise fail(f"unacceptable {response_offer.name} parameters: {exc}") from None
            if extension.rsv & rsv_used:
                raise fail("two negotiated extensions claim the same RSV bit")
            rsv_used |= extension.rsv
            extensions.append(extension)
        subprotocol = None
        if protocols:
            if len(protocols) != 1 or protocols[0] not in self.subprotocols:
                raise fail(f"the server selected subprotocol {', '.join(protocols)!r}, not offered")
            subprotocol = protocols[0]
        self.extensions = extensions
        self.trailing_data = self._h11.trailing_data[0]
        return HandshakeResponse(
            headers=headers, subprotocol=subprotocol, extensions=tuple(responses)
        )


class ServerHandshake:
    """The server side of the opening handshake (RFC 6455 §4.2).

    Feed the request with :meth:`receive_data`; :meth:`next_event` returns a
    :class:`HandshakeRequest` (answer with :meth:`accept` or :meth:`reject`)
    or an :class:`HTTPRequest` (answer with :meth:`reject`).
    """

    def __init__(
        self,
        *,
        subprotocols: Sequence[str] = (),
        extensions: Sequence[ServerExtensionFactory] = (),
        check_origin: OriginCheck | None = same_origin,
        max_handshake_size: int = DEFAULT_MAX_HANDSHAKE_SIZE,
        render_error: ErrorRenderer = plain_text_error,
        remote_addr: Any = None,
    ) -> None:
        self.subprotocols = tuple(subprotocols)
        self._factories = tuple(extensions)
        self._check_origin = check_origin
        self._render_error = render_error
        # Opaque to the core: copied into the requests it reports.
        self.remote_addr = remote_addr
        self._max_handshake_size = max_handshake_size
        self._h11 = h11.Connection(h11.SERVER, max_incomplete_event_size=max_handshake_size)
        self._head = _HeadMeter(max_handshake_size)
        self._request: h11.Request | None = None
        self._body: list[bytes] = []
        self._body_size = 0
        self.event: HandshakeRequest | HTTPRequest | None = None
        self.extensions: list[Extension] = []
        self.trailing_data = b""
        self.response = b""

    def receive_data(self, data: bytes) -> None:
        """Feed bytes of the client's request; ``b""`` means end of stream."""
        self._head.received += len(data)
        self._h11.receive_data(data)

    def next_event(self) -> HandshakeRequest | HTTPRequest | None:
        """Return the request once it is complete and valid, else ``None``.

        Raises:
            HandshakeError: the request is not a valid handshake; the error
                response is in :attr:`response`, to send before closing.
        """
        if self.event is not None:
            return None
        while True:
            try:
                event = self._h11.next_event()
            except h11.RemoteProtocolError as exc:
                # h11's message may quote the peer's bytes: keep it out of the body.
                raise self._fail(
                    exc.error_status_hint, "malformed HTTP request", str(exc)
                ) from None
            if event is h11.NEED_DATA or event is h11.PAUSED:
                return None
            if isinstance(event, h11.Request):
                if self._head.exceeded(self._h11):
                    raise self._fail(431, "request head larger than max_handshake_size")
                self._request = event
                if not _has_body_framing(event.headers):
                    # No Content-Length or Transfer-Encoding: a request
                    # without a body (RFC 9112 §6.3), whose EndOfMessage h11
                    # would only report next (a handshake request, always:
                    # about 4 us of its cost). h11's buffer holds what
                    # follows the head either way, and is dropped after.
                    self.event = self._evaluate()
                    return self.event
            elif isinstance(event, h11.Data):
                self._body_size += len(event.data)
                if self._body_size > self._max_handshake_size:
                    raise self._fail(413, "request body too large")
                self._body.append(event.data)
            elif isinstance(event, h11.EndOfMessage):
                self.event = self._evaluate()
                return self.event
            else:  # ConnectionClosed before a request
                raise HandshakeError("connection closed before the handshake request")

    def _fail(
        self,
        status: int,
        reason: str,
        detail: str = "",
        headers: Sequence[tuple[str, str]] = (),
    ) -> HandshakeError:
        fields = self._error_page(status, reason, headers, None)
        message = f"{reason}: {detail}" if detail else reason
        return HandshakeError(message, status_code=status, headers=Headers(fields))

    def _error_page(
        self,
        status: int,
        reason: str,
        required: Sequence[tuple[str, str]],
        body: bytes | None,
    ) -> list[tuple[str, str]]:
        """Queue an error response; ``body=None`` asks the renderer for the page."""
        fields = list(required)
        if body is None:
            page_headers, body = self._render_error(status, reason, self._request_event())
            owned = {name.lower() for name, _ in fields}
            fields += [(k, v) for k, v in Headers(page_headers) if k.lower() not in owned]
        self.response = self._respond(status, fields, body)
        return fields

    def _request_event(self) -> HTTPRequest | None:
        request = self._request
        if request is None:
            return None
        return HTTPRequest(
            method=request.method.decode("ascii"),
            target=request.target.decode("ascii"),
            headers=_decode_headers(request.headers),
            body=b"".join(self._body),
            remote_addr=self.remote_addr,
        )

    def _evaluate(self) -> HandshakeRequest | HTTPRequest:
        request = self._request
        assert request is not None
        headers = _decode_headers(request.headers)
        method = request.method.decode("ascii")
        target = request.target.decode("ascii")
        # One pass over the fields for those the handshake reads; h11 gives
        # their names in lowercase. (The handshake rate depends on it.)
        fields: dict[str, list[str]] = {}
        for name, value in headers:
            if name in _REQUEST_FIELDS:
                if name in fields:
                    fields[name].append(value)
                else:
                    fields[name] = [value]
        try:
            upgrade = _lower_tokens(fields.get("upgrade", _NONE))
            connection = _lower_tokens(fields.get("connection", _NONE))
        except ValueError as exc:
            raise self._fail(400, f"malformed header: {exc}") from None
        if "websocket" not in upgrade:
            return HTTPRequest(
                method=method,
                target=target,
                headers=headers,
                body=b"".join(self._body),
                remote_addr=self.remote_addr,
            )
        # RFC 6455 §4.2.1: what the server reads from the client's handshake.
        if method != "GET":
            raise self._fail(
                405, "a WebSocket handshake must be a GET request", headers=[("Allow", "GET")]
            )
        if request.http_version < b"1.1":
            raise self._fail(400, "a WebSocket handshake needs HTTP/1.1 or later")
        if "upgrade" not in connection:
            raise self._fail(400, "the Connection header lacks 'Upgrade'")
        if self._body_size:
            raise self._fail(400, "a WebSocket handshake has no body")
        versions = fields.get("sec-websocket-version", [])
        if versions != [VERSION]:
            # "the server [...] MUST [...] send an appropriate HTTP error code
            # (such as 426 Upgrade Required) and a |Sec-WebSocket-Version|
            # header field indicating the version(s)" -- RFC 6455 §4.2.2.
            # A missing or repeated header is a malformed request (§4.2.1).
            raise self._fail(
                426 if len(versions) == 1 else 400,
                f"unsupported WebSocket version {', '.join(versions) or '(none)'}; use 13",
                headers=[("Sec-WebSocket-Version", VERSION)],
            )
        # h11 requires Host of HTTP/1.1 only; RFC 6455 §4.2.1 requires it of every handshake.
        hosts = fields.get("host")
        if hosts is None:
            raise self._fail(400, "missing Host header")
        keys = fields.get("sec-websocket-key", _NONE)
        if len(keys) != 1 or not _valid_key(keys[0]):
            raise self._fail(400, "missing or invalid Sec-WebSocket-Key")
        try:
            protocols = parse_token_list(fields.get("sec-websocket-protocol", _NONE))
            offers = parse_extensions(fields.get("sec-websocket-extensions", _NONE))
        except ValueError as exc:
            raise self._fail(400, f"malformed header: {exc}") from None
        if not target.startswith("/"):
            # "(or an absolute HTTP/HTTPS URI containing the /resource name/)" -- §4.2.1
            parts = urllib.parse.urlsplit(target)
            if parts.scheme.lower() not in ("http", "https") or not parts.netloc:
                raise self._fail(400, "the request target is not a resource name")
            target = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
        event = HandshakeRequest(
            target=target,
            headers=headers,
            host=hosts[0],
            origin=fields["origin"][0] if "origin" in fields else None,
            subprotocols=tuple(protocols),
            extensions=tuple(offers),
            remote_addr=self.remote_addr,
        )
        if self._check_origin is not None and not self._check_origin(event):
            raise self._fail(403, "origin not allowed")
        return event

    def accept(
        self, *, subprotocol: str | None = None, extra_headers: HeadersLike = ()
    ) -> tuple[bytes, HandshakeResponse]:
        """Accept the handshake request.

        Args:
            subprotocol: the subprotocol to use; by default the first of the
                server's ``subprotocols`` that the client offered (gorilla's
                order), or none.
            extra_headers: more response headers, e.g. ``Set-Cookie``.

        Returns:
            The ``101 Switching Protocols`` response bytes, and the event
            describing what was agreed.

        Raises:
            LocalProtocolError: there is no request to accept, the subprotocol
                was not offered, or an extra header is one the handshake sets.
        """
        request = self.event
        if not isinstance(request, HandshakeRequest) or self.response:
            raise LocalProtocolError("accept() answers a HandshakeRequest, once")
        extra = Headers(extra_headers)
        _check_extra_headers(extra, _SERVER_OWNED)
        if subprotocol is None:
            subprotocol = next((p for p in self.subprotocols if p in request.subprotocols), None)
        elif subprotocol not in request.subprotocols:
            raise LocalProtocolError(f"the client did not offer subprotocol {subprotocol!r}")
        responses, extensions = self._negotiate(request.extensions)
        key = request.headers["sec-websocket-key"]
        fields = [
            ("Upgrade", "websocket"),
            ("Connection", "Upgrade"),
            ("Sec-WebSocket-Accept", accept_key(key)),
        ]
        if subprotocol is not None:
            fields.append(("Sec-WebSocket-Protocol", subprotocol))
        if responses:
            try:
                fields.append(("Sec-WebSocket-Extensions", format_extensions(responses)))
            except ValueError as exc:
                raise LocalProtocolError(f"an extension answered badly: {exc}") from None
        headers = Headers._of(tuple(fields)) + extra
        if extra:
            # The program's headers: h11 validates them as it serializes.
            fields = list(headers)
            self.response = _h11_send(
                self._h11,
                lambda: h11.InformationalResponse(
                    status_code=101, headers=fields, reason=b"Switching Protocols"
                ),
            )
        else:
            # Only fields of ours, whose values are tokens, base64 or built by
            # format_extensions(): nothing for h11 to check, and sending
            # through its state machine was a quarter of a handshake's cost.
            self.response = (
                _SWITCHING
                + "".join(f"{name}: {value}\r\n" for name, value in fields).encode("latin-1")
                + b"\r\n"
            )
        self.extensions = extensions
        self.trailing_data = self._h11.trailing_data[0]
        return self.response, HandshakeResponse(
            headers=headers, subprotocol=subprotocol, extensions=tuple(responses)
        )

    def _negotiate(
        self, offers: Sequence[ExtensionOffer]
    ) -> tuple[list[ExtensionOffer], list[Extension]]:
        # The client lists offers in its order of preference (RFC 6455 §9.1);
        # the server takes the first acceptable offer of each extension it knows.
        responses: list[ExtensionOffer] = []
        extensions: list[Extension] = []
        rsv_used = 0
        for offer in offers:
            if any(response.name == offer.name for response in responses):
                continue
            for factory in self._factories:
                if factory.name != offer.name or factory.rsv & rsv_used:
                    continue
                result = factory.negotiate(offer)
                if result is not None and result[0].name == offer.name:
                    responses.append(result[0])
                    extensions.append(result[1])
                    rsv_used |= result[1].rsv
                    break
        return responses, extensions

    def reject(
        self,
        status_code: int | None = None,
        headers: HeadersLike = (),
        body: bytes | None = None,
    ) -> bytes:
        """Refuse the request with an HTTP response; the connection then closes.

        Args:
            status_code: defaults to 403 for a :class:`HandshakeRequest` and to
                ``426 Upgrade Required`` for a plain :class:`HTTPRequest`.
            headers: response headers (``Content-Length`` is set for you).
            body: the response body; ``None`` renders an error page with the
                ``render_error`` hook, below ``headers``.

        Returns:
            The response bytes.

        Raises:
            LocalProtocolError: there is no request to answer, or the status
                is not a final status (200-599) other than 101.
        """
        if self.event is None or self.response:
            raise LocalProtocolError("reject() answers a request, once")
        websocket = isinstance(self.event, HandshakeRequest)
        if status_code is None:
            status_code = 403 if websocket else 426
        if not 200 <= status_code <= 599:
            raise LocalProtocolError(f"{status_code} is not a status that refuses a request")
        fields = list(Headers(headers))
        if status_code == 426 and not any(k.lower() == "upgrade" for k, _ in fields):
            fields += [("Upgrade", "websocket"), ("Sec-WebSocket-Version", VERSION)]
        if status_code == 426 and not websocket:
            reason = "this is a WebSocket endpoint: connect with a WebSocket client"
        elif status_code >= 500:
            # A 5xx says the server failed, not that the request was wrong (RFC 9110 §15.6).
            reason = "the server could not answer the request"
        else:
            reason = "the server refused the request"
        self._error_page(status_code, reason, fields, body)
        return self.response

    def _respond(self, status: int, fields: list[tuple[str, str]], body: bytes) -> bytes:
        fields = [(k, v) for k, v in fields if k.lower() not in ("content-length", "connection")]
        fields += [("Content-Length", str(len(body))), ("Connection", "close")]
        head = _h11_send(
            self._h11,
            lambda: h11.Response(status_code=status, headers=fields, reason=_phrase(status)),
        )
        if self._request is not None and self._request.method == b"HEAD":
            # A response to HEAD has the headers of the GET response and no
            # body (RFC 7231 §4.3.2); h11 enforces it.
            return head + _h11_send(self._h11, h11.EndOfMessage)
        return (
            head
            + _h11_send(self._h11, lambda: h11.Data(data=body))
            + _h11_send(self._h11, h11.EndOfMessage)
        )


# cookie-value = *cookie-octet / DQUOTE *cookie-octet DQUOTE -- RFC 6265 §4.1.1
_OCTETS = r"[\x21\x23-\x2b\x2d-\x3a\x3c-\x5b\x5d-\x7e]*"
_COOKIE_VALUE = re.compile(f'{_OCTETS}|"{_OCTETS}"')


_BODY_FRAMING = frozenset({b"content-length", b"transfer-encoding"})


def _has_body_framing(headers: _RawHeaders) -> bool:
    """Whether h11's request headers announce a body."""
    # raw_items(), a plain list, as in _decode_headers(): iterating h11's
    # Sequence costs about 0.5 us a field.
    return any(name.lower() in _BODY_FRAMING for name, _ in headers.raw_items())


class _HeadMeter:
    """Bounds a complete HTTP head too: h11 only bounds incomplete ones."""

    __slots__ = ("limit", "received")

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.received = 0

    def exceeded(self, conn: h11.Connection) -> bool:
        # Called when a head arrives: what was fed, less what follows it, is the head.
        return self.received - len(conn.trailing_data[0]) > self.limit


def _valid_key(key: str) -> bool:
    # "a randomly selected 16-byte value that has been base64-encoded" -- RFC 6455 §4.1
    try:
        return len(base64.b64decode(key.encode("ascii"), validate=True)) == 16
    except (binascii.Error, UnicodeEncodeError):
        return False
