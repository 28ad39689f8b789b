"""wsproto_sync: gorilla/websocket's Conn on blocking sockets and threads.

Work in progress: ``Conn`` is here; ``Upgrader`` and ``Dialer`` follow.
The errors are the core's, re-exported so one import is enough.
"""

from wsproto_core import (
    CloseCode,
    CloseError,
    CloseSentError,
    ConcurrencyError,
    HandshakeError,
    LocalProtocolError,
    MessageType,
    PreparedMessage,
    ReadLimitError,
    RemoteProtocolError,
    WebSocketError,
    format_close_message,
    is_close_error,
    is_unexpected_close_error,
)

from .conn import Conn, MessageReader, MessageWriter

__all__ = [
    "CloseCode",
    "CloseError",
    "CloseSentError",
    "ConcurrencyError",
    "Conn",
    "HandshakeError",
    "LocalProtocolError",
    "MessageReader",
    "MessageType",
    "MessageWriter",
    "PreparedMessage",
    "ReadLimitError",
    "RemoteProtocolError",
    "WebSocketError",
    "format_close_message",
    "is_close_error",
    "is_unexpected_close_error",
]
