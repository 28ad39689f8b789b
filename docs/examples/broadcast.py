"""Broadcast to many clients, each message encoded once (wsproto_trio, PreparedMessage).

Usage::

    python docs/examples/broadcast.py [--host 127.0.0.1] [--port 8080] [--interval 1.0]

then open http://127.0.0.1:8080/ in a few browser tabs, or connect any
WebSocket client. Every interval the server sends each client a tick of
made-up prices, as JSON. Each tick is one ``PreparedMessage``: it is
encoded once for all the connections that negotiated the same parameters
(gorilla: ``PreparedMessage``), not once per connection, and the server
logs how many encodings a tick took, e.g.::

    tick 7: 10 clients, encodings: 2

two for ten clients: one plain, for the clients without compression, and
one compressed, which all the compressing clients share.
"""

from __future__ import annotations

import argparse
import itertools
import json
import random
import signal
from contextlib import suppress
from functools import partial

import trio

from wsproto_trio import (
    Conn,
    HTTPRequest,
    MessageType,
    PreparedMessage,
    Server,
    ServerPerMessageDeflate,
    Upgrader,
    WebSocketError,
    serve,
)

PAGE = b"""<!doctype html>
<meta charset="utf-8">
<title>Ticks</title>
<pre id="tick">waiting for a tick...</pre>
<script>
  const ws = new WebSocket(`ws://${location.host}/ws`);
  ws.onmessage = (event) => {
    document.getElementById("tick").textContent = JSON.stringify(JSON.parse(event.data), null, 2);
  };
</script>
"""


class Ticker:
    """The audience, and the ticks sent to it."""

    def __init__(self) -> None:
        self.audience: set[Conn] = set()
        self.prices = {"ACME": 100.0, "GLOBEX": 50.0, "INITECH": 20.0, "UMBRELLA": 75.0}

    async def subscribe(self, conn: Conn) -> None:
        """Keep a client in the audience until it leaves (``serve()`` calls this per client)."""
        self.audience.add(conn)
        try:
            async for _ in conn:  # reading answers Pings and the Close; messages are ignored
                pass
        finally:
            self.audience.discard(conn)

    async def tick_forever(self, interval: float) -> None:
        """Send a tick to every client, every ``interval`` seconds."""
        for number in itertools.count(1):
            await trio.sleep(interval)
            for symbol, price in self.prices.items():
                self.prices[symbol] = round(price * random.uniform(0.99, 1.01), 2)
            audience = list(self.audience)
            tick = {"tick": number, "clients": len(audience), "prices": self.prices}
            message = PreparedMessage(MessageType.TEXT, json.dumps(tick))
            async with trio.open_nursery() as nursery:  # to every client at once
                for conn in audience:
                    nursery.start_soon(self.send, conn, message, interval)
            print(f"tick {number}: {len(audience)} clients, encodings: {message.encodings}")

    @staticmethod
    async def send(conn: Conn, message: PreparedMessage, timeout: float) -> None:
        """Send ``message``, giving up on a client that can't take it in ``timeout`` seconds."""
        # A write cancelled part way fails the connection: a client that can't
        # keep up is dropped rather than holding up the next tick.
        with trio.move_on_after(timeout), suppress(WebSocketError, OSError):
            await conn.write_prepared_message(message)


def page(request: HTTPRequest) -> tuple[int, list[tuple[str, str]], bytes | None]:
    """Answer the plain HTTP requests on the WebSocket's port: the page, or 404."""
    if request.target == "/":
        return 200, [("Content-Type", "text/html; charset=utf-8")], PAGE
    return 404, [], None  # None: the Upgrader's default error page


async def main(host: str, port: int, interval: float) -> None:
    """Serve and tick until Ctrl-C, then shut down gracefully."""
    ticker = Ticker()
    # With context takeover (permessage-deflate's default), a connection's
    # compressor has to see every message the connection sends, so each one
    # would compress a tick by itself. Without it (server_no_context_takeover,
    # the only mode gorilla implements), connections with the same parameters
    # share one compressed frame, and hold no compressor between ticks.
    deflate = ServerPerMessageDeflate(server_no_context_takeover=True)
    upgrader = Upgrader(enable_compression=deflate)
    start_server = partial(serve, upgrader=upgrader, http_handler=page)
    # Ctrl-C comes as a signal here, not as KeyboardInterrupt: see echo_trio_server.py.
    with trio.open_signal_receiver(signal.SIGINT) as ctrl_c:
        async with trio.open_nursery() as nursery:
            server: Server = await nursery.start(start_server, ticker.subscribe, host, port)
            host, port = server.address[:2]
            print(f"open http://{host}:{port}/ in a browser, or connect to ws://{host}:{port}/")
            nursery.start_soon(ticker.tick_forever, interval)
            async for _ in ctrl_c:
                break
            await server.shutdown()  # 1001 to every client; serve() then returns
            nursery.cancel_scope.cancel()  # and the ticks stop


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description="Broadcast ticks with prepared messages.")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8080, help="0 picks a free port")
    parser.add_argument("--interval", type=float, default=1.0, help="seconds between ticks")
    args = parser.parse_args()
    trio.run(main, args.host, args.port, args.interval)
