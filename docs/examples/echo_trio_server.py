"""An echo server on trio, one task per client (wsproto_trio).

Usage::

    python docs/examples/echo_trio_server.py [--host 127.0.0.1] [--port 8080]

Every message a client sends, text or binary, comes back to it unchanged.
Try it with any of the echo clients, such as ``echo_trio_client.py``.
Ctrl-C shuts the server down gracefully: each client still connected gets a
Close with code 1001 (going away).
"""

from __future__ import annotations

import argparse
import signal

import trio

from wsproto_trio import Conn, MessageType, Server, serve


async def echo(conn: Conn) -> None:
    """Send every message back until the client closes; ``serve()`` then closes the connection."""
    async for message in conn:  # ends quietly when the client closes normally
        kind = MessageType.TEXT if isinstance(message, str) else MessageType.BINARY
        await conn.write_message(kind, message)


async def main(host: str, port: int) -> None:
    """Serve until Ctrl-C, then shut down gracefully."""
    # Ctrl-C comes as a signal here, not as KeyboardInterrupt, which would
    # cancel everything at once and drop the clients without a Close.
    with trio.open_signal_receiver(signal.SIGINT) as ctrl_c:
        async with trio.open_nursery() as nursery:
            server: Server = await nursery.start(serve, echo, host, port)
            host, port = server.address[:2]
            print(f"listening on ws://{host}:{port}/")
            async for _ in ctrl_c:
                break
            await server.shutdown()  # 1001 to every client; serve() then returns


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description="A WebSocket echo server (wsproto_trio).")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8080, help="0 picks a free port")
    args = parser.parse_args()
    trio.run(main, args.host, args.port)
