"""The extension interface (RFC 6455 §9) that permessage-deflate plugs into.

An extension has two halves. A *factory* takes part in the opening handshake:
a :class:`ClientExtensionFactory` makes an offer and checks the server's
answer; a :class:`ServerExtensionFactory` answers an offer or declines it.
Negotiation yields an :class:`Extension`, the per-connection object that
transforms the payload of data messages.

Invariants the connection keeps, so extensions need not check them:

* An extension sees data messages only, never control frames.
* It sees every piece of every incoming message, in order, with the RSV bits
  of the message's first frame that belong to it (``0``: not for you; pass
  the data through). Continuation frames must have no RSV bits set.
* A piece is at most :data:`MAX_PIECE_SIZE` bytes, and while an extension
  says :attr:`Extension.decode_pending`, the connection takes the rest of its
  output with :meth:`Extension.decode_more` before it passes the next piece.
  So an extension that returns at most :data:`MAX_PIECE_SIZE` bytes at once
  (permessage-deflate does) keeps a streamed message in bounded memory,
  however much it expands.
* Two extensions negotiated on one connection never claim the same RSV bit.
"""

from __future__ import annotations

import abc
from collections.abc import Hashable

from ..headers import ExtensionOffer

__all__ = [
    "MAX_PIECE_SIZE",
    "PLAIN",
    "ClientExtensionFactory",
    "Extension",
    "ServerExtensionFactory",
]

MAX_PIECE_SIZE = 256 * 1024
"""The most bytes the connection passes to :meth:`Extension.decode` at once.

It is also the most :meth:`Extension.decode` or :meth:`Extension.decode_more`
should return at once. With ``stream_messages``, no ``MessageData`` of a
message an extension decoded is larger, if the extension keeps to it.
"""

PLAIN = ("plain",)
"""The prepared key of an extension that leaves a message as it is.

Such connections share the encoding of connections without the extension.
"""


class Extension(abc.ABC):
    """A negotiated extension, transforming message payloads on one connection.

    Attributes:
        name: the extension's registered name, e.g. ``"permessage-deflate"``.
        rsv: the RSV bits (``frames.RSV1`` ...) it may set on the first frame
            of a data message.
    """

    name: str
    rsv: int = 0

    @abc.abstractmethod
    def decode(
        self, data: bytes, *, rsv: int, fin: bool, text: bool, max_size: int | None
    ) -> bytes:
        """Transform a piece of an incoming data message.

        An extension whose output may be larger than allowed below (one that
        decompresses) returns the first part of it and keeps the rest, with
        :attr:`decode_pending` true; the connection then calls
        :meth:`decode_more` until :attr:`decode_pending` is false, and only
        then passes the next piece. An extension that returns everything at
        once needs neither.

        Args:
            data: the piece, unmasked, at most :data:`MAX_PIECE_SIZE` bytes;
                it may be empty.
            rsv: this extension's RSV bits from the message's first frame.
            fin: ``True`` for the last piece of the message; the message ends
                once :attr:`decode_pending` is false.
            text: ``True`` for a text message (its invalid data fails with 1007).
            max_size: return at most ``max_size + 1`` bytes, so the connection
                can tell that the read limit was passed without the extension
                allocating beyond it; ``None`` for no limit.

        Returns:
            The transformed data, or its first part: at most
            :data:`MAX_PIECE_SIZE` bytes, so that streamed messages pass in
            bounded pieces.

        Raises:
            RemoteProtocolError: the data is invalid for this extension.
        """

    @property
    def decode_pending(self) -> bool:
        """Whether :meth:`decode` kept output back for :meth:`decode_more`.

        The default, ``False``, suits an extension that returns all of a
        piece's output from :meth:`decode`.
        """
        return False

    def decode_more(self, *, max_size: int | None) -> bytes:
        """Return more of the output kept back from the piece last decoded.

        Called only while :attr:`decode_pending` is true, with the same
        bounds as :meth:`decode` (``max_size`` is the room left under the
        read limit now). It may return ``b""`` and then clear
        :attr:`decode_pending`, when the rest of the piece held no output.

        Raises:
            RemoteProtocolError: the data is invalid for this extension.
        """
        return b""

    def prepared_key(self, size: int) -> Hashable | None:
        """Name how a whole message of ``size`` bytes sent now would be encoded.

        Prepared messages share one encoding among the connections whose
        extensions return equal keys, so equal keys must mean identical output
        from :meth:`encode_prepared`. Return ``None`` when the encoding depends
        on this connection's history; the connection then encodes the message
        itself with :meth:`encode`. Return :data:`PLAIN` when the extension
        would send this message unchanged. The default, ``None``, is always
        correct.
        """
        return None

    def encode_prepared(self, data: bytes) -> tuple[bytes, int]:
        """Encode a whole message as :meth:`prepared_key` named it.

        It must not touch this connection's state: the result is shared.

        Returns:
            The payload and the RSV bits of its frame.
        """
        raise NotImplementedError(f"{type(self).__name__} returns prepared keys but cannot encode")

    def enable_compression(self, enabled: bool) -> None:  # noqa: B027 - optional hook
        """Turn compression of outgoing messages on or off; others ignore it."""

    def set_compression_level(self, level: int) -> None:  # noqa: B027 - optional hook
        """Change the compression level of outgoing messages; others ignore it.

        Raises:
            ValueError: the level is out of range for this extension.
        """

    @abc.abstractmethod
    def encode(self, data: bytes, *, first: bool, fin: bool) -> tuple[bytes, int]:
        """Transform a piece of an outgoing data message.

        Args:
            data: the piece, as the program sent it.
            first: ``True`` for the first frame of a message; the extension
                decides then whether it transforms this message.
            fin: ``True`` for the last frame of the message.

        Returns:
            The frame payload, and the RSV bits to set (honoured on the first
            frame only).
        """


class ClientExtensionFactory(abc.ABC):
    """The client's half of an extension's negotiation."""

    name: str
    rsv: int = 0

    @abc.abstractmethod
    def offer(self) -> ExtensionOffer:
        """Return the offer to put in ``Sec-WebSocket-Extensions``."""

    @abc.abstractmethod
    def accept(self, response: ExtensionOffer) -> Extension:
        """Build the extension from the server's response to our offer.

        Raises:
            ValueError: the response's parameters are not acceptable; the
                client then fails the handshake (RFC 6455 §4.1).
        """


class ServerExtensionFactory(abc.ABC):
    """The server's half of an extension's negotiation."""

    name: str
    rsv: int = 0

    @abc.abstractmethod
    def negotiate(self, offer: ExtensionOffer) -> tuple[ExtensionOffer, Extension] | None:
        """Answer one offer of this extension.

        Returns:
            The response parameters and the extension, or ``None`` to decline
            this offer (the server then tries the client's next offer, or goes
            on without the extension; declining never fails the handshake).
        """
