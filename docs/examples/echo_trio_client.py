"""An echo client on trio (wsproto_trio).

Usage::

    python docs/examples/echo_trio_client.py [--url ws://127.0.0.1:8080/] [MESSAGE ...]

Sends each MESSAGE (by default a greeting) to an echo server, prints what
comes back, and closes the connection with the closing handshake. Any of
the echo servers answers it.
"""

from __future__ import annotations

import argparse

import trio

from wsproto_trio import MessageType, dial


async def main(url: str, messages: list[str]) -> None:
    """Send the messages, print the echoes, say goodbye."""
    conn, _ = await dial(url)  # the second item is the server's handshake response
    async with conn:  # closes the connection, whatever happens
        for text in messages:
            await conn.write_message(MessageType.TEXT, text)
            _, echo = await conn.read_message()
            print(f"sent {text!r}, received {echo!r}")
        await conn.close_gracefully()  # send a Close, wait for the server's, then close


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description="A WebSocket echo client (wsproto_trio).")
    parser.add_argument("--url", default="ws://127.0.0.1:8080/")
    parser.add_argument("messages", nargs="*", default=["Hello, WebSocket!"], metavar="MESSAGE")
    args = parser.parse_args()
    trio.run(main, args.url, args.messages)
