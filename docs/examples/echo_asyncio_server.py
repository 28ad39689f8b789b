"""An echo server on asyncio, one task per client (wsproto_asyncio).

Usage::

    python docs/examples/echo_asyncio_server.py [--host 127.0.0.1] [--port 8080]

Every message a client sends, text or binary, comes back to it unchanged.
Try it with any of the echo clients, such as ``echo_asyncio_client.py``.
Ctrl-C shuts the server down gracefully: each client still connected gets a
Close with code 1001 (going away).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib

from wsproto_asyncio import Conn, MessageType, serve


async def echo(conn: Conn) -> None:
    """Send every message back until the client closes; ``serve()`` then closes the connection."""
    async for message in conn:  # ends quietly when the client closes normally
        kind = MessageType.TEXT if isinstance(message, str) else MessageType.BINARY
        await conn.write_message(kind, message)


async def main(host: str, port: int) -> None:
    """Serve until cancelled (Ctrl-C)."""
    async with await serve(echo, host, port) as server:
        host, port = server.address[:2]
        print(f"listening on ws://{host}:{port}/")
        await server.serve_forever()
    # Leaving the block, even by cancellation, shut down: 1001 to every client.


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description="A WebSocket echo server (wsproto_asyncio).")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8080, help="0 picks a free port")
    args = parser.parse_args()
    with contextlib.suppress(KeyboardInterrupt):  # Ctrl-C cancels main(), then lands here
        asyncio.run(main(args.host, args.port))
