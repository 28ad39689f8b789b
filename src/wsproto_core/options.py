"""The options every adapter's ``Upgrader`` and ``Dialer`` share, defined once.

Each adapter's ``Upgrader`` and ``Dialer`` is one of these frozen
dataclasses with methods that do I/O added, so the three adapters cannot
drift apart in names, defaults or meaning. The options also build the core
connection that does the handshake; the adapter only moves its bytes.
Timeouts are plain numbers of seconds here: the core keeps no clock, the
adapters apply them.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from .connection import DEFAULT_MAX_MESSAGE_SIZE, ClientConnection, ServerConnection
from .extensions import ClientPerMessageDeflate, ServerPerMessageDeflate
from .handshake import (
    DEFAULT_MAX_HANDSHAKE_SIZE,
    DEFAULT_MAX_REJECTED_BODY_SIZE,
    ErrorRenderer,
    OriginCheck,
    plain_text_error,
    same_origin,
)
from .headers import HeadersLike
from .pool import BufferPool
from .uri import WebSocketURI

__all__ = [
    "DEFAULT_READ_BUFFER_SIZE",
    "DEFAULT_WRITE_BUFFER_SIZE",
    "DialerOptions",
    "UpgraderOptions",
]

DEFAULT_READ_BUFFER_SIZE = 65536
DEFAULT_WRITE_BUFFER_SIZE = 4096  # gorilla's default


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
            status, a reason and the request (``None`` if unparsable), it
            returns ``(headers, body)``; see :data:`ErrorRenderer`. The
            default answers with the reason in plain text.
        enable_compression: negotiate permessage-deflate (``EnableCompression``).
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
    enable_compression: bool = False
    max_message_size: int | None = DEFAULT_MAX_MESSAGE_SIZE
    max_handshake_size: int = DEFAULT_MAX_HANDSHAKE_SIZE
    keepalive_interval: float | None = None
    keepalive_timeout: float | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "subprotocols", tuple(self.subprotocols))
        _check_sizes(self)

    def new_connection(self) -> ServerConnection:
        """A server core set up with these options, waiting for a request."""
        return ServerConnection(
            subprotocols=self.subprotocols,
            extensions=[ServerPerMessageDeflate()] if self.enable_compression else [],
            check_origin=self.check_origin,
            max_handshake_size=self.max_handshake_size,
            max_message_size=self.max_message_size,
            render_error=self.error or plain_text_error,
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
        enable_compression: offer permessage-deflate (``EnableCompression``).
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
    enable_compression: bool = False
    max_message_size: int | None = DEFAULT_MAX_MESSAGE_SIZE
    max_handshake_size: int = DEFAULT_MAX_HANDSHAKE_SIZE
    max_rejected_body_size: int = DEFAULT_MAX_REJECTED_BODY_SIZE
    keepalive_interval: float | None = None
    keepalive_timeout: float | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "subprotocols", tuple(self.subprotocols))
        _check_sizes(self)

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
            extensions=[ClientPerMessageDeflate()] if self.enable_compression else [],
            extra_headers=headers,
            cookies=cookies,
            max_handshake_size=self.max_handshake_size,
            max_rejected_body_size=self.max_rejected_body_size,
            max_message_size=self.max_message_size,
        )
