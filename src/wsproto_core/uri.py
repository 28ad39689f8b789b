"""WebSocket URIs (RFC 6455 §3): what a client connects to and what it sends as ``Host``."""

from __future__ import annotations

import urllib.parse
from dataclasses import dataclass

__all__ = ["WebSocketURI", "parse_uri"]

_DEFAULT_PORTS = {"ws": 80, "wss": 443}


@dataclass(frozen=True, slots=True)
class WebSocketURI:
    """A parsed ``ws://`` or ``wss://`` URI.

    Attributes:
        secure: ``True`` for ``wss``.
        host: the host name or IP address, without brackets for IPv6.
        port: the port, defaulted from the scheme (80 or 443).
        resource_name: path and query, at least ``"/"`` (RFC 6455 §3).
        user_info: ``(user, password)`` from the URI, if present.
    """

    secure: bool
    host: str
    port: int
    resource_name: str = "/"
    user_info: tuple[str, str] | None = None

    @property
    def host_header(self) -> str:
        """The ``Host`` header value: the port only when it is not the default."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        if self.port == (443 if self.secure else 80):
            return host
        return f"{host}:{self.port}"

    def __str__(self) -> str:
        return f"{'wss' if self.secure else 'ws'}://{self.host_header}{self.resource_name}"


def parse_uri(uri: str) -> WebSocketURI:
    """Parse a WebSocket URI. ``http`` and ``https`` are taken as ``ws`` and ``wss``.

    Raises:
        ValueError: not a ws/wss URI, no host, a bad port, or a fragment
            ("Fragment identifiers are meaningless in the context of WebSocket
            URIs and MUST NOT be used on these URIs" -- RFC 6455 §3).
    """
    parts = urllib.parse.urlsplit(uri)
    scheme = {"http": "ws", "https": "wss"}.get(parts.scheme.lower(), parts.scheme.lower())
    if scheme not in _DEFAULT_PORTS:
        raise ValueError(f"{uri!r} is not a WebSocket URI: the scheme must be ws or wss")
    if parts.fragment or uri.endswith("#"):
        raise ValueError(f"{uri!r} has a fragment, which WebSocket URIs must not have")
    if not parts.hostname:
        raise ValueError(f"{uri!r} has no host")
    try:
        port = parts.port or _DEFAULT_PORTS[scheme]
    except ValueError as exc:
        raise ValueError(f"{uri!r} has an invalid port") from exc
    host = parts.hostname
    if not host.isascii():
        host = host.encode("idna").decode("ascii")
    resource_name = parts.path or "/"
    if parts.query:
        resource_name += "?" + parts.query
    user_info = None
    if parts.username is not None:
        user_info = (
            urllib.parse.unquote(parts.username),
            urllib.parse.unquote(parts.password or ""),
        )
    return WebSocketURI(scheme == "wss", host, port, resource_name, user_info)
