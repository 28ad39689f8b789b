"""wsproto_core: a sans-I/O WebSocket protocol core (RFC 6455, RFC 7692).

It turns bytes into events and events into bytes, and never touches a
socket, a clock, a thread or an event loop. A server, in full::

    conn = ServerConnection()
    conn.receive_data(request_bytes)
    event = conn.next_event()          # HandshakeRequest
    conn.accept()
    transport.write(conn.data_to_send())

See the adapters ``wsproto_sync``, ``wsproto_asyncio`` and ``wsproto_trio``
for ready-made ``Conn`` / ``Upgrader`` / ``Dialer`` on top of it.
"""

from .connection import (
    DEFAULT_MAX_MESSAGE_SIZE,
    ClientConnection,
    Connection,
    Role,
    ServerConnection,
)
from .constants import CloseCode, MessageType, Opcode, is_valid_close_code
from .errors import (
    CloseError,
    CloseSentError,
    ConcurrencyError,
    HandshakeError,
    LocalProtocolError,
    ReadLimitError,
    RemoteProtocolError,
    WebSocketError,
    is_close_error,
    is_unexpected_close_error,
)
from .events import (
    Close,
    Event,
    HandshakeRejected,
    HandshakeRequest,
    HandshakeResponse,
    HTTPRequest,
    Message,
    MessageData,
    MessageEnd,
    MessageStart,
    Ping,
    Pong,
)
from .extensions import (
    ClientExtensionFactory,
    ClientPerMessageDeflate,
    Extension,
    PerMessageDeflate,
    ServerExtensionFactory,
    ServerPerMessageDeflate,
)
from .frames import Frame, format_close_message, parse_close_payload, parse_frame, serialize_frame
from .handshake import (
    Acceptance,
    ErrorRenderer,
    OriginCheck,
    Rejection,
    accept_key,
    is_websocket_upgrade,
    plain_text_error,
    same_origin,
    subprotocols,
)
from .headers import ExtensionOffer, Headers
from .mask import apply_mask
from .memory import ConnectionPair
from .options import (
    DEFAULT_READ_BUFFER_SIZE,
    DEFAULT_WRITE_BUFFER_SIZE,
    DialerOptions,
    UpgraderOptions,
)
from .pool import BufferPool, FrameBuffer, SharedBufferPool
from .prepared import PreparedMessage
from .proxy import ProxyConnect, ProxyURL, TunnelEstablished, parse_proxy_url
from .state import State
from .uri import WebSocketURI, parse_uri

__all__ = [
    "DEFAULT_MAX_MESSAGE_SIZE",
    "DEFAULT_READ_BUFFER_SIZE",
    "DEFAULT_WRITE_BUFFER_SIZE",
    "Acceptance",
    "BufferPool",
    "ClientConnection",
    "ClientExtensionFactory",
    "ClientPerMessageDeflate",
    "Close",
    "CloseCode",
    "CloseError",
    "CloseSentError",
    "ConcurrencyError",
    "Connection",
    "ConnectionPair",
    "ErrorRenderer",
    "DialerOptions",
    "Event",
    "Extension",
    "ExtensionOffer",
    "Frame",
    "FrameBuffer",
    "HTTPRequest",
    "HandshakeError",
    "HandshakeRejected",
    "HandshakeRequest",
    "HandshakeResponse",
    "Headers",
    "LocalProtocolError",
    "Message",
    "MessageData",
    "MessageEnd",
    "MessageStart",
    "MessageType",
    "Opcode",
    "OriginCheck",
    "PerMessageDeflate",
    "Ping",
    "Pong",
    "PreparedMessage",
    "ProxyConnect",
    "ProxyURL",
    "ReadLimitError",
    "Rejection",
    "RemoteProtocolError",
    "Role",
    "ServerConnection",
    "ServerExtensionFactory",
    "ServerPerMessageDeflate",
    "SharedBufferPool",
    "State",
    "UpgraderOptions",
    "TunnelEstablished",
    "WebSocketError",
    "WebSocketURI",
    "accept_key",
    "apply_mask",
    "format_close_message",
    "is_close_error",
    "is_unexpected_close_error",
    "is_valid_close_code",
    "is_websocket_upgrade",
    "parse_close_payload",
    "parse_frame",
    "parse_proxy_url",
    "parse_uri",
    "plain_text_error",
    "same_origin",
    "serialize_frame",
    "subprotocols",
]

__version__ = "0.1.0"
