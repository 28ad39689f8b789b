"""An echo server on blocking sockets, one thread per client (wsproto_sync).

Usage::

    python docs/examples/echo_sync_server.py [--host 127.0.0.1] [--port 8080]

Every message a client sends, text or binary, comes back to it unchanged.
Try it with any of the echo clients, such as ``echo_sync_client.py``.
Ctrl-C shuts the server down gracefully: each client still connected gets a
Close with code 1001 (going away).
"""

from __future__ import annotations

import argparse
import contextlib

from wsproto_sync import CloseError, Conn, serve


def echo(conn: Conn) -> None:
    """Send every message back until the client closes; ``serve()`` then closes the socket."""
    try:
        while True:
            conn.write_message(*conn.read_message())  # (type, data) in, the same out
    except CloseError:
        pass  # the client said goodbye (or vanished): nothing left to do


def main(host: str, port: int) -> None:
    """Serve until Ctrl-C."""
    with serve(echo, host, port) as server, contextlib.suppress(KeyboardInterrupt):
        host, port = server.address[:2]
        print(f"listening on ws://{host}:{port}/")
        server.serve_forever()
    # Leaving the block, on Ctrl-C, shut the server down: 1001 to every client.


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description="A WebSocket echo server (wsproto_sync).")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8080, help="0 picks a free port")
    args = parser.parse_args()
    main(args.host, args.port)
