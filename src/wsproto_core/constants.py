"""Numbers defined by RFC 6455: opcodes, message types and close codes.

Everything here is a plain value with no behaviour beyond classification, so
both roles and every adapter read the same table.
"""

from __future__ import annotations

import enum

__all__ = [
    "CloseCode",
    "MessageType",
    "Opcode",
    "is_valid_close_code",
]


class Opcode(enum.IntEnum):
    """Frame opcodes (RFC 6455 §5.2, §11.8)."""

    CONTINUATION = 0x0
    TEXT = 0x1
    BINARY = 0x2
    CLOSE = 0x8
    PING = 0x9
    PONG = 0xA

    @property
    def is_control(self) -> bool:
        """Control frames have the high bit of the opcode set (RFC 6455 §5.5)."""
        return self >= 0x8


class MessageType(enum.IntEnum):
    """Message types, numbered like gorilla/websocket's and like the opcodes.

    gorilla: ``TextMessage``, ``BinaryMessage``, ``CloseMessage``,
    ``PingMessage``, ``PongMessage``.
    """

    TEXT = 1
    BINARY = 2
    CLOSE = 8
    PING = 9
    PONG = 10


class CloseCode(enum.IntEnum):
    """Close status codes (RFC 6455 §7.4.1 and the IANA registry).

    gorilla: ``CloseNormalClosure`` and friends.
    """

    NORMAL_CLOSURE = 1000
    GOING_AWAY = 1001
    PROTOCOL_ERROR = 1002
    UNSUPPORTED_DATA = 1003
    # 1004 is reserved.
    NO_STATUS_RCVD = 1005
    ABNORMAL_CLOSURE = 1006
    INVALID_FRAME_PAYLOAD_DATA = 1007
    POLICY_VIOLATION = 1008
    MESSAGE_TOO_BIG = 1009
    MANDATORY_EXTENSION = 1010
    INTERNAL_ERROR = 1011
    SERVICE_RESTART = 1012
    TRY_AGAIN_LATER = 1013
    BAD_GATEWAY = 1014
    TLS_HANDSHAKE = 1015


# Codes that may appear on the wire. 1005, 1006 and 1015 "MUST NOT be set as a
# status code in a Close control frame by an endpoint" (RFC 6455 §7.4.1); 1004
# and the rest of 1000-2999 are reserved; 3000-4999 belong to libraries and
# applications; anything below 1000 or above 4999 is never valid (§7.4.2).
_WIRE_CODES = frozenset({1000, 1001, 1002, 1003, 1007, 1008, 1009, 1010, 1011, 1012, 1013, 1014})


def is_valid_close_code(code: int) -> bool:
    """Tell whether ``code`` may appear in a Close frame, sent or received.

    An endpoint must not send what its peer must refuse, so one set serves both.
    """
    return code in _WIRE_CODES or 3000 <= code <= 4999
