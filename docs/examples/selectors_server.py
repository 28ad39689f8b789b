"""An echo server on the sans-I/O core alone: one thread, a selectors loop, no adapter.

Usage::

    python docs/examples/selectors_server.py [--host 127.0.0.1] [--port 8080]

``wsproto_core`` never touches a socket: it takes the bytes that arrive and
gives back events, and takes the messages to send and gives back bytes.
This file is the rest of a WebSocket server, written by hand with the
standard library's ``selectors``: non-blocking sockets, partial writes,
back-pressure and a graceful shutdown. Every protocol decision (handshake,
framing, Pongs, the echo of a Close, which close code a broken frame gets)
is the core's. Any echo client works with it, ``selectors_client.py`` too.
Ctrl-C sends each client a Close with code 1001 and waits, briefly, for
the closing handshakes to finish.
"""

from __future__ import annotations

import argparse
import selectors
import socket
import time

from wsproto_core import (
    Close,
    CloseCode,
    HandshakeError,
    HandshakeRequest,
    HTTPRequest,
    Message,
    RemoteProtocolError,
    ServerConnection,
    State,
)

MAX_BUFFERED = 1 << 20  # stop reading from a client while this much waits to be sent to it
SHUTDOWN_TIMEOUT = 5.0  # seconds clients get to answer the server's Close on shutdown


class Client:
    """One connection: its socket, its protocol core, and the bytes not sent yet."""

    def __init__(self, sock: socket.socket, name: str) -> None:
        self.sock = sock
        self.name = name
        self.ws = ServerConnection()
        self.outgoing = bytearray()


class EchoServer:
    """A selectors event loop serving WebSocket clients with the sans-I/O core."""

    def __init__(self, listener: socket.socket) -> None:
        self.listener = listener
        self.selector = selectors.DefaultSelector()
        self.selector.register(listener, selectors.EVENT_READ)
        self.clients: set[Client] = set()

    def serve_forever(self) -> None:
        """Serve until Ctrl-C, then close every connection gracefully."""
        try:
            while True:
                self.run_once(timeout=None)
        except KeyboardInterrupt:
            self.shutdown()

    def run_once(self, timeout: float | None) -> None:
        """Wait for sockets to be ready, and serve them."""
        for key, mask in self.selector.select(timeout):
            if key.fileobj is self.listener:
                self.accept()
                continue
            client: Client = key.data
            if mask & selectors.EVENT_WRITE:
                self.send(client)
            if mask & selectors.EVENT_READ and client in self.clients:  # not closed by send()
                self.receive(client)

    def accept(self) -> None:
        """Take a new connection; the core waits for its handshake request."""
        try:
            sock, address = self.listener.accept()
        except BlockingIOError:
            return  # the client gave up already
        sock.setblocking(False)
        client = Client(sock, "{}:{}".format(*address[:2]))
        self.clients.add(client)
        self.selector.register(sock, selectors.EVENT_READ, data=client)

    def receive(self, client: Client) -> None:
        """Feed what arrived to the core, and act on the events it gives back."""
        try:
            data = client.sock.recv(65536)
        except BlockingIOError:
            return
        except ConnectionError:
            data = b""
        if data:
            client.ws.receive_data(data)
        else:
            client.ws.receive_eof()  # the core turns a missing Close into Close(1006)
        try:
            while (event := client.ws.next_event()) is not None:
                match event:
                    case HandshakeRequest():
                        client.ws.accept()
                    case HTTPRequest():
                        client.ws.reject()  # not a WebSocket request: 426 Upgrade Required
                    case Message():
                        client.ws.send_message(event.message_type, event.data)  # the echo
                    case Close(code=code, reason=reason):
                        # The core has queued the echo of the client's Close already.
                        print(f"{client.name}: closed with {code} {reason!r}")
        except (HandshakeError, RemoteProtocolError) as exc:
            # The core queued the HTTP error response, or the Close that fails
            # the connection with the right code; sending it is our part.
            print(f"{client.name}: {exc!r}")
        self.send(client)

    def send(self, client: Client) -> None:
        """Send what the core queued, as much as the socket takes; close when the core says."""
        client.outgoing += client.ws.data_to_send()  # always drain: Pongs, Close echoes, errors
        try:
            sent = client.sock.send(client.outgoing) if client.outgoing else 0
        except BlockingIOError:
            sent = 0
        except ConnectionError:
            self.close(client)
            return
        del client.outgoing[:sent]
        if client.ws.close_expected() and not client.outgoing:
            self.close(client)  # the server closes the TCP connection first (RFC 6455 §7.1.1)
            return
        # Wait for the socket to take the rest; stop reading from a client that
        # doesn't read what we send, or its echoes would pile up here.
        events = selectors.EVENT_WRITE if client.outgoing else 0
        if len(client.outgoing) < MAX_BUFFERED:
            events |= selectors.EVENT_READ
        self.selector.modify(client.sock, events, data=client)

    def close(self, client: Client) -> None:
        """Forget a connection and close its socket."""
        self.clients.remove(client)
        self.selector.unregister(client.sock)
        client.sock.close()

    def shutdown(self) -> None:
        """Send every client a Close (1001), and serve until they answer or time runs out."""
        self.selector.unregister(self.listener)
        self.listener.close()
        for client in list(self.clients):
            if client.ws.state is State.OPEN:
                client.ws.send_close(CloseCode.GOING_AWAY, "server shutting down")
                self.send(client)
            elif client.ws.state is State.CONNECTING:
                self.close(client)  # no handshake yet: nothing to say goodbye with
        deadline = time.monotonic() + SHUTDOWN_TIMEOUT
        while self.clients and (remaining := deadline - time.monotonic()) > 0:
            self.run_once(timeout=remaining)
        for client in list(self.clients):
            self.close(client)  # too slow to answer: close without waiting any longer
        self.selector.close()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description="A WebSocket echo server on wsproto_core alone.")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8080, help="0 picks a free port")
    args = parser.parse_args()
    listener = socket.create_server((args.host, args.port))
    listener.setblocking(False)
    host, port = listener.getsockname()[:2]
    print(f"listening on ws://{host}:{port}/")
    EchoServer(listener).serve_forever()
