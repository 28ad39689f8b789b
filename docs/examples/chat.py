"""A chat room: what one client says, every client hears (wsproto_asyncio).

Usage::

    python docs/examples/chat.py [--host 127.0.0.1] [--port 8080]

then open http://127.0.0.1:8080/ in two browser windows (the page is served
on the WebSocket's own port). This is gorilla/websocket's chat example: a
hub keeps the set of clients and broadcasts each message to them. Every
client has a bounded queue of messages waiting to be sent and a task that
sends them, so a slow client never holds up the room; one whose queue is
full is dropped instead of being buffered for without limit.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import itertools

from wsproto_asyncio import CloseError, Conn, MessageType, WebSocketError, serve
from wsproto_core import HTTPRequest

SEND_QUEUE_SIZE = 64  # messages waiting for one client before it is dropped

PAGE = r"""<!doctype html>
<meta charset="utf-8">
<title>Chat</title>
<pre id="log"></pre>
<form id="form"><input id="text" autofocus autocomplete="off"> <button>Send</button></form>
<script>
  const log = document.getElementById("log");
  const ws = new WebSocket(`ws://${location.host}/ws`);
  ws.onmessage = (event) => { log.textContent += event.data + "\n"; };
  ws.onclose = (event) => { log.textContent += `(closed: ${event.code} ${event.reason})\n`; };
  document.getElementById("form").onsubmit = (event) => {
    event.preventDefault();
    const text = document.getElementById("text");
    if (text.value) { ws.send(text.value); text.value = ""; }
  };
</script>
"""


class Client:
    """One member of the room: its connection, and the messages waiting for it."""

    def __init__(self, conn: Conn, name: str) -> None:
        self.conn = conn
        self.name = name
        self.queue: asyncio.Queue[str] = asyncio.Queue(SEND_QUEUE_SIZE)
        self.sender = asyncio.create_task(self._send_queued())

    async def _send_queued(self) -> None:
        # The connection's only writer, while its handler is its only reader.
        try:
            while True:
                await self.conn.write_message(MessageType.TEXT, await self.queue.get())
        except (WebSocketError, ConnectionError):
            pass  # the connection is closing: the handler's read ends by itself
        except asyncio.CancelledError:
            # The hub dropped the client (or it left): closing the connection
            # ends the handler's read too, with CloseError 1006.
            await self.conn.close()
            raise


class Hub:
    """The room: who is in it, and a broadcast to all of them."""

    def __init__(self) -> None:
        self.clients: set[Client] = set()
        self._numbers = itertools.count(1)

    def broadcast(self, message: str) -> None:
        """Queue ``message`` for every client; drop those too slow to take it."""
        for client in list(self.clients):
            try:
                client.queue.put_nowait(message)
            except asyncio.QueueFull:
                # It doesn't keep up: rather than hold the room's messages
                # for it without limit, hang up on it, as gorilla's hub does.
                self.clients.remove(client)
                client.sender.cancel()
                print(f"dropped {client.name}: too slow")

    async def serve_client(self, conn: Conn) -> None:
        """Run one client (``serve()`` calls this in a task per connection)."""
        client = Client(conn, f"guest-{next(self._numbers)}")
        self.clients.add(client)
        self.broadcast(f"{client.name} joined")
        try:
            async for message in conn:  # until the client leaves
                if isinstance(message, str):
                    self.broadcast(f"{client.name}: {message}")
        except CloseError:
            pass  # dropped, or gone without a closing handshake
        finally:
            if client in self.clients:
                self.clients.remove(client)
                self.broadcast(f"{client.name} left")
            client.sender.cancel()


def page(request: HTTPRequest) -> tuple[int, list[tuple[str, str]], bytes]:
    """Answer the plain HTTP requests on the WebSocket's port: the page, or 404."""
    if request.target == "/":
        return 200, [("Content-Type", "text/html; charset=utf-8")], PAGE.encode()
    return 404, [("Content-Type", "text/plain")], b"not found\n"


async def main(host: str, port: int) -> None:
    """Serve the room until cancelled (Ctrl-C)."""
    hub = Hub()
    async with await serve(hub.serve_client, host, port, http_handler=page) as server:
        host, port = server.address[:2]
        print(f"open http://{host}:{port}/ in a browser")
        await server.serve_forever()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description="A WebSocket chat room (wsproto_asyncio).")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8080, help="0 picks a free port")
    args = parser.parse_args()
    with contextlib.suppress(KeyboardInterrupt):  # Ctrl-C cancels main(), which shuts down
        asyncio.run(main(args.host, args.port))
