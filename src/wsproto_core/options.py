"""The options every adapter's ``Upgrader`` and ``Dialer`` share, defined once.

Each adapter's ``Upgrader`` and ``Dialer`` is one of these frozen
dataclasses with methods that do I/O added, so the three adapters cannot
drift apart in names, defaults or meaning. The options also build the core
connection that does the handshake; the adapter only moves its bytes.
Timeouts are plain numbers of seconds here: the core keeps no clock, the
adapters apply them.

The functions below are the rest of what the adapters share about a
handshake: answering a request the way the program's hooks decided
(``process_request``, ``http_handler``), and the handshake behind an open
``Conn`` (its ``request`` and ``response``). They call the hooks nowhere:
calling one is I/O of a kind (it may be a coroutine), so each adapter does
that, then hands the answer here.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, NoReturn, TypeVar

from .connection import DEFAULT_MAX_MESSAGE_SIZE, ClientConnection, Connection, ServerConnection
from .errors import HandshakeError, LocalProtocolError
from .events import HandshakeRequest, HandshakeResponse, HTTPRequest
from .extensions import ClientPerMessageDeflate, ServerPerMessageDeflate
from .handshake import (
    DEFAULT_MAX_HANDSHAKE_SIZE,
    DEFAULT_MAX_REJECTED_BODY_SIZE,
    Acceptance,
    ErrorRenderer,
    OriginCheck,
    Rejection,
    plain_text_error,
    same_origin,
)
from .headers import Headers, HeadersLike
from .pool import BufferPool
from .state import State
from .uri import WebSocketURI

__all__ = [
    "DEFAULT_READ_BUFFER_SIZE",
    "DEFAULT_WRITE_BUFFER_SIZE",
    "DialerOptions",
    "UpgraderOptions",
    "answer_handshake_request",
    "answer_http_request",
    "answer_internal_error",
    "opening_request",
    "opening_response",
]

_Factory = TypeVar("_Factory", ServerPerMessageDeflate, ClientPerMessageDeflate)

DEFAULT_READ_BUFFER_SIZE = 65536
DEFAULT_WRITE_BUFFER_SIZE = 4096  # gorilla's default


def _check_compression(options: UpgraderOptions | DialerOptions, factory: type) -> None:
    value = options.enable_compression
    # A client's factory given to a server (or the reverse) would negotiate
    # nothing, silently: refuse it here, at construction.
    if not isinstance(value, bool | factory):
        raise TypeError(
            f"enable_compression takes a bool or a {factory.__name__}, not {type(value).__name__}"
        )


def _extensions(enabled: bool | _Factory, default: type[_Factory]) -> list[_Factory]:
    if enabled is True:
        return [default()]
    return [] if enabled is False else [enabled]


def _check_sizes(options: UpgraderOptions | DialerOptions) -> None:
    if options.read_buffer_size <= 0 or options.write_buffer_size <= 0:
        raise ValueError("buffer sizes must be positive")
    for name in ("handshake_timeout", "keepalive_interval", "keepalive_timeout"):
        value = getattr(options, name)
        if value is not None and value <= 0:
            raise ValueError(f"{name} must be positive, or None")


@dataclass(frozen=True, kw_only=True)
class UpgraderOptions:
    """How a server answers handshakes (gorilla: the fields of ``Upgrader``).

    Attributes:
        handshake_timeout: seconds a client has to send its request
            (``HandshakeTimeout``); ``None`` waits forever, which lets a slow
            client hold a connection open: keep a limit.
        read_buffer_size: bytes asked of the transport at once (``ReadBufferSize``).
        write_buffer_size: the frame size of streaming writers (``WriteBufferSize``).
        write_buffer_pool: lends streaming writers their buffer only while
            they write (``WriteBufferPool``); share one ``SharedBufferPool``
            between connections. By default each writer allocates its own.
        subprotocols: the subprotocols spoken, in order of preference
            (``Subprotocols``).
        check_origin: the origin policy (``CheckOrigin``). The default refuses
            browsers on other sites with 403; ``None`` accepts every origin.
        error: renders the HTTP error responses (``Error``): called with the
            status, a reason and the request (``None`` if unparsable), whose
            ``remote_addr`` is the client's address, it returns
            ``(headers, body)``; see :data:`ErrorRenderer`. The default
            answers with the reason in plain text.
        enable_compression: negotiate permessage-deflate (``EnableCompression``):
            ``True`` with the RFC's defaults (context takeover both ways,
            15-bit windows, zlib level 1), or a
            :class:`~wsproto_core.ServerPerMessageDeflate` with the
            parameters to answer offers with, e.g.
            ``ServerPerMessageDeflate(server_no_context_takeover=True)``,
            which lets compressing connections share the encoding of a
            ``PreparedMessage`` and holds no compressor between messages.
            One factory serves every connection.
        max_message_size: the read limit of new connections, in bytes; 1 MiB
            by default (gorilla has none), ``None`` for no limit.
        max_handshake_size: the largest request head accepted, in bytes.
        keepalive_interval: send a Ping after this many seconds, repeatedly,
            and fail the connection with 1011 when no Pong answers within
            ``keepalive_timeout`` (by default the same time). ``None``, the
            default as in gorilla, sends none.
        keepalive_timeout: seconds a keepalive Ping waits for its Pong.
    """

    handshake_timeout: float | None = 10.0
    read_buffer_size: int = DEFAULT_READ_BUFFER_SIZE
    write_buffer_size: int = DEFAULT_WRITE_BUFFER_SIZE
    write_buffer_pool: BufferPool | None = None
    subprotocols: Sequence[str] = ()
    check_origin: OriginCheck | None = same_origin
    error: ErrorRenderer | None = None
    enable_compression: bool | ServerPerMessageDeflate = False
    max_message_size: int | None = DEFAULT_MAX_MESSAGE_SIZE
    max_handshake_size: int = DEFAULT_MAX_HANDSHAKE_SIZE
    keepalive_interval: float | None = None
    keepalive_timeout: float | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "subprotocols", tuple(self.subprotocols))
        _check_sizes(self)
        _check_compression(self, ServerPerMessageDeflate)

    def new_connection(self, remote_addr: Any = None) -> ServerConnection:
        """A server core set up with these options, waiting for a request.

        Args:
            remote_addr: the client's address, for the requests the core
                reports (see ``ServerConnection.remote_addr``).
        """
        deflate = self.enable_compression
        return ServerConnection(
            subprotocols=self.subprotocols,
            extensions=_extensions(deflate, ServerPerMessageDeflate),
            check_origin=self.check_origin,
            max_handshake_size=self.max_handshake_size,
            max_message_size=self.max_message_size,
            render_error=self.error or plain_text_error,
            remote_addr=remote_addr,
        )


@dataclass(frozen=True, kw_only=True)
class DialerOptions:
    """How a client opens connections (gorilla: the protocol fields of ``Dialer``).

    The transport options (TLS, proxies, how to connect) are the adapter's.

    Attributes:
        handshake_timeout: seconds for connecting, TLS and the handshake
            together (``HandshakeTimeout``; 45 s, as in gorilla's ``DefaultDialer``).
        read_buffer_size: bytes asked of the transport at once (``ReadBufferSize``).
        write_buffer_size: the frame size of streaming writers (``WriteBufferSize``).
        write_buffer_pool: as for :class:`UpgraderOptions` (``WriteBufferPool``).
        subprotocols: subprotocols to offer, in order of preference (``Subprotocols``).
        enable_compression: offer permessage-deflate (``EnableCompression``):
            ``True`` with the RFC's defaults, or a
            :class:`~wsproto_core.ClientPerMessageDeflate` with the
            parameters to offer (RFC 7692 §7), e.g.
            ``ClientPerMessageDeflate(server_no_context_takeover=True)``;
            the server's answer is checked against the offer.
        max_message_size: the read limit of new connections (1 MiB; ``None``: none).
        max_handshake_size: the largest response head accepted, in bytes.
        max_rejected_body_size: how much of a refusal's body is kept for
            :attr:`HandshakeError.response <wsproto_core.HandshakeError.response>`.
        keepalive_interval: as for :class:`UpgraderOptions`.
        keepalive_timeout: as for :class:`UpgraderOptions`.
    """

    handshake_timeout: float | None = 45.0
    read_buffer_size: int = DEFAULT_READ_BUFFER_SIZE
    write_buffer_size: int = DEFAULT_WRITE_BUFFER_SIZE
    write_buffer_pool: BufferPool | None = None
    subprotocols: Sequence[str] = ()
    enable_compression: bool | ClientPerMessageDeflate = False
    max_message_size: int | None = DEFAULT_MAX_MESSAGE_SIZE
    max_handshake_size: int = DEFAULT_MAX_HANDSHAKE_SIZE
    max_rejected_body_size: int = DEFAULT_MAX_REJECTED_BODY_SIZE
    keepalive_interval: float | None = None
    keepalive_timeout: float | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "subprotocols", tuple(self.subprotocols))
        _check_sizes(self)
        _check_compression(self, ClientPerMessageDeflate)

    def new_connection(
        self,
        uri: WebSocketURI | str,
        headers: HeadersLike = (),
        cookies: Mapping[str, str] | None = None,
    ) -> ClientConnection:
        """A client core set up with these options, its request queued."""
        return ClientConnection(
            uri,
            subprotocols=self.subprotocols,
            extensions=_extensions(self.enable_compression, ClientPerMessageDeflate),
            extra_headers=headers,
            cookies=cookies,
            max_handshake_size=self.max_handshake_size,
            max_rejected_body_size=self.max_rejected_body_size,
            max_message_size=self.max_message_size,
        )


# -- what the adapters share about the handshake ------------------------------


def answer_handshake_request(
    core: ServerConnection,
    request: HandshakeRequest,
    answer: Acceptance | Rejection | None,
    response_headers: HeadersLike = (),
) -> None:
    """Answer ``request`` as the program's ``process_request`` hook decided.

    ``None`` or an :class:`Acceptance` accepts it, with the Upgrader's
    ``response_headers`` and then the acceptance's; a :class:`Rejection`
    refuses it through :meth:`ServerConnection.reject`, so the response is
    the one the core writes for any refusal. Send ``core.data_to_send()``
    either way.

    Raises:
        HandshakeError: the request was refused; the response is queued.
        LocalProtocolError: the answer is one the core refuses (a status
            outside 200-599 or 101, a header the handshake sets, a
            subprotocol not offered); nothing is queued: answer with
            :func:`answer_internal_error`.
        TypeError: the hook returned something else.
    """
    if isinstance(answer, Rejection):
        core.reject(answer.status_code, answer.headers, answer.body)
        raise HandshakeError(
            f"process_request refused the handshake for {request.target}",
            status_code=answer.status_code,
        )
    if answer is None:
        core.accept(extra_headers=response_headers)
        return
    if not isinstance(answer, Acceptance):
        raise TypeError(
            "process_request returns None, an Acceptance or a Rejection, "
            f"not {type(answer).__name__}"
        )
    core.accept(
        subprotocol=answer.subprotocol, extra_headers=Headers(response_headers) + answer.headers
    )


def answer_http_request(
    core: ServerConnection,
    request: HTTPRequest,
    answer: tuple[int, HeadersLike, bytes | None] | None,
) -> NoReturn:
    """Answer a plain HTTP request with the ``http_handler``'s answer, or 426.

    Args:
        core: the server core that read ``request``.
        request: the request.
        answer: ``(status, headers, body)`` from the ``http_handler`` (a
            ``body`` of ``None`` is rendered by the ``error`` hook), or
            ``None`` for ``426 Upgrade Required``.

    Raises:
        HandshakeError: always, since no WebSocket opens; the response is
            queued.
        LocalProtocolError: the status is not one that answers a request
            (200-599, not 101); nothing is queued: answer with
            :func:`answer_internal_error`.
    """
    status, headers, body = (426, (), None) if answer is None else answer
    core.reject(status, headers, body)
    raise HandshakeError(
        f"not a WebSocket handshake request: {request.method} {request.target}",
        status_code=status,
    )


def answer_internal_error(core: ServerConnection) -> None:
    """Queue ``500 Internal Server Error``, after a hook of the program failed.

    A server that fails answers, rather than dropping the connection
    without a word (RFC 9110 §15.6.1); the page comes from the ``error``
    renderer, and says nothing of the failure. Does nothing when a
    response is queued already.
    """
    if core.handshake_request is not None and core.state is State.CONNECTING:
        core.reject(500)


def opening_request(core: Connection) -> HandshakeRequest:
    """The handshake request that opened a server connection (a ``Conn``'s ``request``).

    Raises:
        LocalProtocolError: ``core`` is a client, or was built open, without
            a handshake.
    """
    request = core.handshake_request if isinstance(core, ServerConnection) else None
    if not isinstance(request, HandshakeRequest):
        raise LocalProtocolError(
            "only a server connection has a handshake request; a client's "
            "is what it dialled (see response)"
        )
    return request


def opening_response(core: Connection) -> HandshakeResponse:
    """The ``101`` response that opened a connection: sent by a server, received by a client.

    Raises:
        LocalProtocolError: ``core`` was built open, without a handshake,
            or its handshake has not succeeded.
    """
    response = None
    if isinstance(core, ClientConnection | ServerConnection):
        response = core.handshake_response
    if response is None:
        raise LocalProtocolError("this connection was not opened by a handshake")
    return response
