"""The public API of the core, pinned: a change here is a change to users' code."""

from __future__ import annotations

import inspect
from importlib.resources import files

import wsproto_core

PUBLIC = {
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
}


def test_all_is_pinned() -> None:
    assert set(wsproto_core.__all__) == PUBLIC
    assert len(wsproto_core.__all__) == len(PUBLIC)
    for name in PUBLIC:
        assert hasattr(wsproto_core, name), name


def test_every_public_name_is_documented() -> None:
    undocumented = []
    for name in PUBLIC:
        obj = getattr(wsproto_core, name)
        if inspect.isclass(obj) or inspect.isfunction(obj):
            if not inspect.getdoc(obj):
                undocumented.append(name)
            for attr, member in vars(obj).items() if inspect.isclass(obj) else ():
                if not attr.startswith("_") and inspect.isfunction(member) and not member.__doc__:
                    undocumented.append(f"{name}.{attr}")
    assert undocumented == []


def test_typed_package() -> None:
    assert files("wsproto_core").joinpath("py.typed").is_file()
