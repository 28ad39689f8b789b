"""Extensions to the WebSocket protocol (RFC 6455 §9) and the interface they implement."""

from .base import ClientExtensionFactory, Extension, ServerExtensionFactory
from .permessage_deflate import (
    ClientPerMessageDeflate,
    PerMessageDeflate,
    ServerPerMessageDeflate,
)

__all__ = [
    "ClientExtensionFactory",
    "ClientPerMessageDeflate",
    "Extension",
    "PerMessageDeflate",
    "ServerExtensionFactory",
    "ServerPerMessageDeflate",
]
