"""Extensions to the WebSocket protocol (RFC 6455 §9) and the interface they implement."""

from .base import ClientExtensionFactory, Extension, ServerExtensionFactory

__all__ = ["ClientExtensionFactory", "Extension", "ServerExtensionFactory"]
