"""Events: what the core reports to the program driving it.

Every event is an immutable, slotted value, cheap to build and easy to
compare in tests. Adapters dispatch on them with ``match event:``.

What arrives after the handshake comes as exactly one of:

* a whole :class:`Message` (the default), or, when the connection's
  ``stream_messages`` is on, :class:`MessageStart`, any number of
  :class:`MessageData`, then :class:`MessageEnd`;
* :class:`Ping`, :class:`Pong` (also between the fragments of a message);
* :class:`Close`, last: the peer's Close frame, or code 1006 when the
  transport ended without one.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from .constants import CloseCode, MessageType
from .headers import ExtensionOffer, Headers

__all__ = [
    "Close",
    "Event",
    "HTTPRequest",
    "HandshakeRejected",
    "HandshakeRequest",
    "HandshakeResponse",
    "Message",
    "MessageData",
    "MessageEnd",
    "MessageStart",
    "Ping",
    "Pong",
]

# Module globals for Message.message_type, read once per message by the
# adapters: an enum member looked up on its class costs about 60 ns on 3.11.
_TEXT = MessageType.TEXT
_BINARY = MessageType.BINARY


@dataclass(frozen=True, slots=True, kw_only=True)
class Event:
    """Base class of all events."""


@dataclass(frozen=True, slots=True, kw_only=True)
class HandshakeRequest(Event):
    """A valid WebSocket opening handshake arrived (server side).

    It passed every check of RFC 6455 §4.2.1 and the origin check. Answer with
    ``ServerConnection.accept()`` or ``ServerConnection.reject()``.

    Attributes:
        target: the request target (path and query), e.g. ``"/chat?room=1"``.
        headers: all request headers.
        host: the ``Host`` header.
        origin: the ``Origin`` header, if any (browsers always send one).
        subprotocols: the subprotocols offered, in the client's order.
        extensions: the extensions offered, in the client's order.
        remote_addr: the address of the client, as the program driving the
            core gave it (see ``ServerConnection.remote_addr``): the
            adapters give the socket's peer address, the one their
            ``Conn.remote_addr`` has; ``None`` if unknown. The core only
            carries it (Go's ``http.Request.RemoteAddr``).
    """

    target: str
    headers: Headers
    host: str
    origin: str | None = None
    subprotocols: tuple[str, ...] = ()
    extensions: tuple[ExtensionOffer, ...] = ()
    remote_addr: Any = None


@dataclass(frozen=True, slots=True, kw_only=True)
class HTTPRequest(Event):
    """A well-formed HTTP request that does not ask for a WebSocket (server side).

    For example a health check or a browser fetching a page. Answer it with
    ``ServerConnection.reject(status, headers, body)``; with no arguments that
    sends ``426 Upgrade Required``.

    Attributes:
        method: the request method, e.g. ``"GET"``.
        target: the request target.
        headers: all request headers.
        body: the request body (bounded by the handshake size limit).
        remote_addr: the address of the client, as in a
            :class:`HandshakeRequest`; ``None`` if unknown.
    """

    method: str
    target: str
    headers: Headers
    body: bytes = b""
    remote_addr: Any = None


@dataclass(frozen=True, slots=True, kw_only=True)
class HandshakeResponse(Event):
    """The opening handshake succeeded; the connection is open.

    A client receives it from ``next_event()``; a server gets it as the return
    value of ``accept()``.

    Attributes:
        headers: the response headers (``101 Switching Protocols``).
        subprotocol: the subprotocol selected, or ``None``.
        extensions: the extensions in use, as negotiated, in order.
    """

    headers: Headers
    subprotocol: str | None = None
    extensions: tuple[ExtensionOffer, ...] = ()
    status_code: int = 101


@dataclass(frozen=True, slots=True, kw_only=True)
class HandshakeRejected(Event):
    """The server answered the opening handshake with an HTTP response other than 101.

    The connection is closed. Redirects (3xx) and authentication challenges
    (401, 407) arrive here with the headers needed to follow them.

    Attributes:
        status_code: the HTTP status, e.g. ``403``.
        reason: the reason phrase, e.g. ``"Forbidden"``.
        headers: the response headers.
        body: the response body, cut at the client's ``max_rejected_body_size``.
    """

    status_code: int
    reason: str = ""
    headers: Headers = field(default_factory=Headers)
    body: bytes = b""


def _short(data: str | bytes) -> str:
    # Messages can be megabytes: keep reprs (and so log lines) readable.
    if len(data) <= 64:
        return repr(data)
    return f"{data[:48]!r}... ({len(data)} {'chars' if isinstance(data, str) else 'bytes'})"


@dataclass(frozen=True, slots=True, kw_only=True, repr=False)
class Message(Event):
    """A complete message: ``str`` for text (already UTF-8 validated), ``bytes`` for binary."""

    data: str | bytes

    def __repr__(self) -> str:
        return f"Message(data={_short(self.data)})"

    @property
    def message_type(self) -> MessageType:
        """``MessageType.TEXT`` or ``MessageType.BINARY``."""
        return _TEXT if isinstance(self.data, str) else _BINARY


@dataclass(frozen=True, slots=True, kw_only=True)
class MessageStart(Event):
    """A streamed message begins (only with ``stream_messages`` on)."""

    message_type: MessageType


@dataclass(frozen=True, slots=True, kw_only=True, repr=False)
class MessageData(Event):
    """A piece of a streamed message, never empty.

    For a text message the pieces are UTF-8 bytes, validated as they arrive; a
    piece may end inside a multi-byte character that the next piece completes.
    """

    data: bytes

    def __repr__(self) -> str:
        return f"MessageData(data={_short(self.data)})"


@dataclass(frozen=True, slots=True, kw_only=True)
class MessageEnd(Event):
    """A streamed message is complete."""


@dataclass(frozen=True, slots=True, kw_only=True)
class Ping(Event):
    """A Ping frame. Unless ``auto_pong`` is off, the core has already queued the Pong."""

    payload: bytes = b""


@dataclass(frozen=True, slots=True, kw_only=True)
class Pong(Event):
    """A Pong frame (solicited by our Ping, or an unsolicited heartbeat)."""

    payload: bytes = b""


@dataclass(frozen=True, slots=True, kw_only=True)
class Close(Event):
    """The connection is closed for reading; no event follows.

    Either the peer's Close frame arrived (RFC 6455 §5.5.1) and the core
    queued the echo if we had not sent a Close yet, or the transport ended
    without one and :attr:`code` is 1006 (``ABNORMAL_CLOSURE``).

    Attributes:
        code: the close code; 1005 (``NO_STATUS_RCVD``) if the frame had none.
        reason: the close reason.
    """

    code: int = CloseCode.NO_STATUS_RCVD
    reason: str = ""
