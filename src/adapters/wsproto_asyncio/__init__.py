"""wsproto_asyncio: gorilla/websocket's Conn, Upgrader and Dialer on asyncio.

The same names, errors and defaults as ``wsproto_sync``; the methods that
wait are coroutines. Built on asyncio's buffered protocols with flow
control both ways: writes wait while the transport's buffer is full, and
reading stops while unread messages pile up. The errors are the core's,
re-exported so one import is enough.
"""

from wsproto_common import ProxyFunc, proxy_from_environment
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

from .conn import Conn, MessageReader, MessageWriter
from .dialer import Dialer, NetDial, default_dialer, dial
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
    "proxy_from_environment",
    "serve",
]
