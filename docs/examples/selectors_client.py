"""An echo client on the sans-I/O core alone: a selectors loop, no adapter.

Usage::

    python docs/examples/selectors_client.py [--url ws://127.0.0.1:8080/] [MESSAGE ...]

Sends each MESSAGE (by default a greeting) to an echo server, one after the
other's echo, prints the echoes, then closes with the closing handshake. The
client of ``selectors_server.py``, built the same way: the core says what
to send and what happened, the loop moves the bytes. Any echo server works.
"""

from __future__ import annotations

import argparse
import selectors
import socket

from wsproto_core import (
    ClientConnection,
    Close,
    HandshakeRejected,
    HandshakeResponse,
    Message,
    parse_uri,
)

TIMEOUT = 10.0  # seconds without any progress before giving up


def send_next(ws: ClientConnection, messages: list[str]) -> None:
    """Queue the next message, or the Close once they are all sent."""
    if messages:
        ws.send_text(messages.pop(0))
    else:
        ws.send_close()


def run(url: str, messages: list[str]) -> None:
    """Connect to ``url``, send ``messages`` one at a time, print the echoes, close."""
    uri = parse_uri(url)
    if uri.secure:
        raise SystemExit("this example speaks ws:// only; TLS would wrap the socket")
    ws = ClientConnection(uri)  # the handshake request is queued already
    to_send = list(messages)
    outgoing = bytearray()
    with socket.create_connection((uri.host, uri.port), TIMEOUT) as sock:
        sock.setblocking(False)
        with selectors.DefaultSelector() as selector:
            selector.register(sock, selectors.EVENT_READ)
            while not ws.close_expected():
                # Always drain the core: our messages, Pongs, the Close.
                outgoing += ws.data_to_send()
                events = selectors.EVENT_READ | (selectors.EVENT_WRITE if outgoing else 0)
                selector.modify(sock, events)
                ready = selector.select(TIMEOUT)
                if not ready:
                    raise TimeoutError(f"nothing happened for {TIMEOUT} seconds")
                _, mask = ready[0]
                if mask & selectors.EVENT_WRITE:
                    del outgoing[: sock.send(outgoing)]
                if not mask & selectors.EVENT_READ:
                    continue
                try:
                    data = sock.recv(65536)
                except ConnectionError:
                    data = b""
                if data:
                    ws.receive_data(data)
                else:
                    ws.receive_eof()
                while (event := ws.next_event()) is not None:
                    match event:
                        case HandshakeRejected(status_code=status):
                            raise SystemExit(f"the server refused the connection: {status}")
                        case HandshakeResponse():
                            send_next(ws, to_send)
                        case Message(data=echo):
                            print(f"received {echo!r}")
                            send_next(ws, to_send)
                        case Close(code=code, reason=reason):
                            print(f"closed with {code} {reason!r}")
    # close_expected() turned true when the server closed the TCP connection,
    # as it should first (RFC 6455 §7.1.1); leaving the block closed ours.


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description="A WebSocket echo client on wsproto_core alone.")
    parser.add_argument("--url", default="ws://127.0.0.1:8080/")
    parser.add_argument("messages", nargs="*", default=["Hello, WebSocket!"], metavar="MESSAGE")
    args = parser.parse_args()
    run(args.url, args.messages)
