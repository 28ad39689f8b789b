"""wsproto_sync: gorilla/websocket's Conn on blocking sockets and threads.

``Upgrader`` turns accepted sockets into ``Conn`` objects, ``Dialer``
connects to servers. The errors are the core's, re-exported so one import
is enough.
"""

from wsproto_common import ProxyFunc
from wsproto_core import (
    Acceptance,
    BufferPool,
    ClientPerMessageDeflate,
    CloseCode,
    CloseError,
    CloseSentError,
    ConcurrencyError,
    HandshakeError,
    HandshakeRequest,
    HandshakeResponse,
    HTTPRequest,
    LocalProtocolError,
    MessageType,
    PreparedMessage,
    ReadLimitError,
    Rejection,
    RemoteProtocolError,
    ServerPerMessageDeflate,
    SharedBufferPool,
    WebSocketError,
    format_close_message,
    is_close_error,
    is_unexpected_close_error,
)

from .conn import Conn, MessageReader, MessageWriter, join_messages
from .dialer import Dialer, NetDial, default_dialer, dial, proxy_from_environment
from .server import Server, serve
from .upgrader import HTTPHandler, ProcessRequest, Upgrader

__all__ = [
    "Acceptance",
    "BufferPool",
    "ClientPerMessageDeflate",
    "CloseCode",
    "CloseError",
    "CloseSentError",
    "ConcurrencyError",
    "Conn",
    "Dialer",
    "HTTPHandler",
    "HTTPRequest",
    "HandshakeError",
    "HandshakeRequest",
    "HandshakeResponse",
    "LocalProtocolError",
    "MessageReader",
    "MessageType",
    "MessageWriter",
    "NetDial",
    "PreparedMessage",
    "ProcessRequest",
    "ProxyFunc",
    "ReadLimitError",
    "Rejection",
    "RemoteProtocolError",
    "Server",
    "ServerPerMessageDeflate",
    "SharedBufferPool",
    "Upgrader",
    "WebSocketError",
    "default_dialer",
    "dial",
    "format_close_message",
    "is_close_error",
    "is_unexpected_close_error",
    "join_messages",
    "proxy_from_environment",
    "serve",
]
