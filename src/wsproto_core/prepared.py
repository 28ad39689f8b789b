"""Prepared messages (gorilla: ``PreparedMessage``): encode once, send to many.

A broadcast to many connections should not compress the same bytes once per
connection. A :class:`PreparedMessage` keeps one encoding per distinct set of
negotiated parameters (uncompressed; compressed without context takeover at a
given level and window) and, for servers, the whole frame, so each further
send is a lookup and a buffer append. A connection whose encoding depends on
its own history (compression with context takeover) encodes the message
itself, as it would any other: sharing bytes across such connections would
corrupt their compression contexts.

Invariants, which make a message safe to send from many threads at once:

* Everything but the two caches is fixed at construction.
* A cache entry is added whole, by one atomic ``dict.setdefault``, and never
  changed or removed: the first encoding stored for a key is the one every
  send with that key uses. Two sends that need a missing entry at the same
  moment may both compute it; the second one's result is dropped.
* No lock: the core knows no threads, and the worst a race costs is an
  encoding computed twice.
"""

from __future__ import annotations

from collections.abc import Hashable

from .constants import MessageType
from .errors import LocalProtocolError

__all__ = ["PreparedMessage"]


class PreparedMessage:
    """A text or binary message, ready to be sent to many connections.

    Build it once and pass it to ``send_prepared()`` of each connection.
    Encodings are made lazily, on the first send that needs each one.

    **Threads:** one message may be sent by any number of threads at once,
    each to its own connections (a connection itself still has one writer
    at a time), as gorilla's ``PreparedMessage`` can: a hub that broadcasts
    from several threads needs no lock around it. The cache of encodings is
    never corrupted; at worst, threads that first need the same encoding at
    the same moment each compute it, and all of them send the one stored
    first, so every connection with the same parameters gets the same bytes.

    Args:
        message_type: ``MessageType.TEXT`` or ``MessageType.BINARY``.
        data: the message; ``str`` is encoded as UTF-8.

    Raises:
        LocalProtocolError: another message type.
    """

    __slots__ = ("_encodings", "_frames", "data", "message_type")

    def __init__(self, message_type: MessageType | int, data: str | bytes) -> None:
        if message_type not in (MessageType.TEXT, MessageType.BINARY):
            raise LocalProtocolError("a prepared message is a text or binary message")
        self.message_type = MessageType(message_type)
        self.data = data.encode() if isinstance(data, str) else bytes(data)
        self._encodings: dict[Hashable, tuple[bytes, int]] = {}
        self._frames: dict[Hashable, bytes] = {}

    @property
    def encodings(self) -> int:
        """How many distinct encodings were made so far (one per parameter set)."""
        return len(self._encodings)

    def __repr__(self) -> str:
        return (
            f"PreparedMessage({self.message_type.name}, {len(self.data)} bytes, "
            f"{self.encodings} encodings)"
        )
