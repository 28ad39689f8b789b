"""A client core and a server core wired to each other in memory.

No transport at all: bytes one side queues are fed to the other. Tests, the
demo and anyone exploring the protocol use it to watch both ends at once.
"""

from __future__ import annotations

from .connection import ClientConnection, Connection, ServerConnection
from .events import Event, HandshakeRequest, HandshakeResponse

__all__ = ["ConnectionPair"]


class ConnectionPair:
    """Two connection cores, a client and a server, joined back to back.

    >>> pair = ConnectionPair.open()
    >>> pair.client.send_text("hello")
    >>> pair.transfer()
    ([], [Message(data='hello')])
    """

    def __init__(self, client: Connection, server: Connection) -> None:
        self.client = client
        """The client core."""
        self.server = server
        """The server core."""
        self.client_to_server = bytearray()
        """Every byte sent client to server, in order."""
        self.server_to_client = bytearray()
        """Every byte sent server to client, in order."""

    @classmethod
    def open(
        cls,
        client: ClientConnection | None = None,
        server: ServerConnection | None = None,
    ) -> ConnectionPair:
        """Run the opening handshake between the two (default ones if omitted).

        The server accepts the client's request with its default choices.

        Raises:
            AssertionError: the handshake did not open the connection.
        """
        pair = cls(client or ClientConnection("ws://localhost/"), server or ServerConnection())
        _, server_events = pair.transfer()
        assert isinstance(server_events[0], HandshakeRequest), server_events
        assert isinstance(pair.server, ServerConnection)
        pair.server.accept()
        client_events, _ = pair.transfer()
        assert isinstance(client_events[0], HandshakeResponse), client_events
        return pair

    def transfer(self) -> tuple[list[Event], list[Event]]:
        """Move bytes both ways until neither side has anything to say.

        Returns:
            The events the client and the server received, in order.

        Raises:
            RemoteProtocolError, HandshakeError: as ``next_event()`` does.
        """
        client_events: list[Event] = []
        server_events: list[Event] = []
        while True:
            moved = False
            for sender, receiver, log, events in (
                (self.client, self.server, self.client_to_server, server_events),
                (self.server, self.client, self.server_to_client, client_events),
            ):
                data = sender.data_to_send()
                if data:
                    moved = True
                    log += data
                    receiver.receive_data(data)
                while (event := receiver.next_event()) is not None:
                    moved = True
                    events.append(event)
            if not moved:
                return client_events, server_events
