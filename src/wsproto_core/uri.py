"""WebSocket URIs (RFC 6455 §3): what a client connects to and what it sends as ``Host``."""

from __future__ import annotations

import re
import urllib.parse
from dataclasses import dataclass

__all__ = ["WebSocketURI", "parse_uri"]

_DEFAULT_PORTS = {"ws": 80, "wss": 443}
# A registered name or an IPv4 address, or an IPv6 address without a zone.
_HOST = re.compile(r"[A-Za-z0-9._~!$&'()*+,;=-]+|[0-9A-Fa-f:.]+")
_PATH_SAFE = "/:@!$&'()*+,;=-._~%"


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
        port = parts.port
    except ValueError as exc:
        raise ValueError(f"{uri!r} has an invalid port") from exc
    if port is None:
        port = _DEFAULT_PORTS[scheme]
    elif port == 0:
        raise ValueError(f"{uri!r} has an invalid port")
    host = parts.hostname
    if not host.isascii():
        try:
            host = host.encode("idna").decode("ascii")
        except UnicodeError as exc:
            raise ValueError(f"{uri!r} has an invalid host name") from exc
    if not _HOST.fullmatch(host):
        raise ValueError(f"{uri!r} has an invalid host name")
    # Characters a URI may not hold (spaces, non-ASCII) are percent-encoded,
    # as browsers do; existing escapes are kept.
    resource_name = urllib.parse.quote(parts.path or "/", safe=_PATH_SAFE)
    if parts.query:
        resource_name += "?" + urllib.parse.quote(parts.query, safe=_PATH_SAFE + "?")
    user_info = None
    if parts.username is not None:
        user_info = (
            urllib.parse.unquote(parts.username),
            urllib.parse.unquote(parts.password or ""),
        )
    return WebSocketURI(scheme == "wss", host, port, resource_name, user_info)
