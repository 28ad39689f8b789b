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
* Two extensions negotiated on one connection never claim the same RSV bit.
"""

from __future__ import annotations

import abc

from ..headers import ExtensionOffer

__all__ = ["ClientExtensionFactory", "Extension", "ServerExtensionFactory"]


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
    def decode(self, data: bytes, *, rsv: int, fin: bool, max_size: int | None) -> bytes:
        """Transform a piece of an incoming data message.

        Args:
            data: the piece, unmasked; it may be empty.
            rsv: this extension's RSV bits from the message's first frame.
            fin: ``True`` for the last piece of the message.
            max_size: produce at most ``max_size + 1`` bytes, so the connection
                can tell that the read limit was passed without the extension
                allocating beyond it; ``None`` for no limit.

        Raises:
            RemoteProtocolError: the data is invalid for this extension.
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
