"""The error model, shared by the core and every adapter.

Two families, never mixed:

* :class:`LocalProtocolError`: this program misused the API (sending after
  close, a control payload over 125 bytes, an invalid close code). Raised at
  once by the method that was misused; the connection is unchanged and usable.
* :class:`RemoteProtocolError` and :class:`HandshakeError`: the peer broke the
  protocol. Raised only by ``next_event()``, after the core has queued the
  reaction the RFC asks for (a Close frame with the right code, or an HTTP
  error response) and moved to ``CLOSED``; send ``data_to_send()``, then close
  the transport.

:class:`CloseError` is what adapters raise from their read methods once the
connection is closed, with the code that closed it, as gorilla's ``CloseError``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from .constants import CloseCode

if TYPE_CHECKING:
    from .events import HandshakeRejected
    from .headers import Headers

__all__ = [
    "CloseError",
    "CloseSentError",
    "ConcurrencyError",
    "HandshakeError",
    "LocalProtocolError",
    "ReadLimitError",
    "RemoteProtocolError",
    "WebSocketError",
    "is_close_error",
    "is_unexpected_close_error",
]


class WebSocketError(Exception):
    """Base class of every error this library raises on purpose."""


class LocalProtocolError(WebSocketError):
    """The local program used the API in a way the protocol or state forbids.

    The connection is left exactly as it was; fix the calling code.
    """


class CloseSentError(LocalProtocolError):
    """Data was sent after the closing handshake started (gorilla: ``ErrCloseSent``).

    "After sending a Close frame, the endpoint MUST NOT send any further data."
    -- RFC 6455 §5.5.1. Stop writing; read until the peer's Close arrives.
    """


class ConcurrencyError(LocalProtocolError):
    """Two threads or tasks read, or wrote, at the same time.

    A connection supports one reader and one writer at a time, as gorilla's
    does (where this is a panic); ``write_control()`` and ``close()`` may be
    called from anywhere. Give each connection one reading and one writing
    thread or task, or serialize the calls yourself.
    """


class RemoteProtocolError(WebSocketError):
    """The peer violated RFC 6455 or RFC 7692 after the handshake.

    When this is raised, the core has already queued a Close frame with
    :attr:`code` (RFC 6455 §7.1.7, "Fail the WebSocket Connection") and
    discards any further input. Send ``data_to_send()`` and close the transport.

    Attributes:
        code: the close code sent to the peer (1002, 1007, 1009, ...).
        reason: a short explanation, also sent as the close reason.
    """

    def __init__(self, code: int, reason: str) -> None:
        super().__init__(f"{reason} (close code {code})")
        self.code = code
        self.reason = reason


class ReadLimitError(RemoteProtocolError):
    """A message exceeded the read limit (gorilla: ``ErrReadLimit``); closed with 1009."""

    def __init__(self, reason: str) -> None:
        super().__init__(CloseCode.MESSAGE_TOO_BIG, reason)


class HandshakeError(WebSocketError):
    """The opening handshake failed (gorilla: ``ErrBadHandshake``).

    On a server, the core has queued an HTTP error response with
    :attr:`status_code`; send ``data_to_send()``, then close the transport.
    On a client, the server's response was not a valid acceptance; close the
    transport. (A well-formed refusal, such as a 403, is not an error: it is a
    :class:`~wsproto_core.events.HandshakeRejected` event.)

    Attributes:
        reason: what was wrong, in words fit for a log line.
        status_code: the HTTP status answered (server) or received (client),
            or ``None`` when no complete response exists.
        headers: the response headers received (client) or sent (server).
        response: for a client refused with an HTTP error, the whole
            response (status, headers, body), to follow a redirect or
            authenticate; ``None`` otherwise.
    """

    def __init__(
        self,
        reason: str,
        *,
        status_code: int | None = None,
        headers: Headers | None = None,
        response: HandshakeRejected | None = None,
    ) -> None:
        super().__init__(reason if status_code is None else f"{reason} (HTTP {status_code})")
        self.reason = reason
        self.status_code = status_code
        self.headers = headers
        self.response = response


class CloseError(WebSocketError):
    """The connection is closed; every later read raises the same error.

    gorilla: ``CloseError``. Adapters raise it from their read methods with the
    code of the Close frame received, 1005 when that frame had no code, or 1006
    when the transport ended without one (RFC 6455 §7.1.5).

    Attributes:
        code: the close code.
        text: the close reason.
    """

    def __init__(self, code: int, text: str = "") -> None:
        super().__init__(f"websocket closed: {code} {text}".rstrip())
        self.code = code
        self.text = text

    @property
    def normal(self) -> bool:
        """Whether the peer ended the conversation on purpose.

        That is a Close with 1000 (normal closure), 1001 (going away) or no
        code (1005). Message iterators end quietly on these, and raise on
        anything else, 1006 (no Close at all) included.
        """
        return self.code in _NORMAL_CLOSE_CODES


_NORMAL_CLOSE_CODES = frozenset({1000, 1001, 1005})


def is_close_error(err: BaseException | None, *codes: int) -> bool:
    """Tell whether ``err`` is a :class:`CloseError` with one of ``codes``.

    gorilla: ``IsCloseError``.
    """
    return isinstance(err, CloseError) and err.code in codes


def is_unexpected_close_error(err: BaseException | None, *expected_codes: int) -> bool:
    """Tell whether ``err`` is a :class:`CloseError` with none of ``expected_codes``.

    gorilla: ``IsUnexpectedCloseError``. Typical use in a read loop::

        if is_unexpected_close_error(err, CloseCode.GOING_AWAY, CloseCode.NORMAL_CLOSURE):
            log.warning("connection lost: %s", err)
    """
    return isinstance(err, CloseError) and err.code not in expected_codes
