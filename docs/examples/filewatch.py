"""Show a file in the browser, updated whenever it changes (wsproto_sync).

Usage::

    python docs/examples/filewatch.py [--host 127.0.0.1] [--port 8080] [--interval 1.0] FILE

then open http://127.0.0.1:8080/ in a browser and edit FILE. This is
gorilla/websocket's filewatch example: each client gets the file's contents
when it connects, and again each time the file changes. Changes are found
by polling the file's modification time and size, so it needs nothing
beyond the standard library.
"""

from __future__ import annotations

import argparse
import contextlib
import html
import threading
from pathlib import Path

from wsproto_sync import Conn, HTTPRequest, MessageType, WebSocketError, serve

PAGE = r"""<!doctype html>
<meta charset="utf-8">
<title>{name}</title>
<pre id="file">loading...</pre>
<script>
  const file = document.getElementById("file");
  const ws = new WebSocket(`ws://${{location.host}}/ws`);
  ws.onmessage = (event) => {{ file.textContent = event.data; }};
  ws.onclose = (event) => {{ file.textContent += `\n(closed: ${{event.code}})`; }};
</script>
"""


def version(path: Path) -> tuple[int, int] | None:
    """What tells one version of the file from the next: (mtime, size), or None if missing."""
    try:
        stat = path.stat()
    except FileNotFoundError:
        return None
    return stat.st_mtime_ns, stat.st_size


def read_until_closed(conn: Conn, closed: threading.Event) -> None:
    """Read, and ignore, what the client sends until it closes.

    Reading is what answers the client's Pings and its Close, so a
    connection needs a reading thread even when messages only go out.
    """
    try:
        while True:
            conn.read_message()
    except WebSocketError:
        pass  # CloseError, most likely; a protocol error already closed the connection
    finally:
        closed.set()


def watch(conn: Conn, path: Path, interval: float) -> None:
    """Send the file now and after each change, until the client goes (a thread per client)."""
    closed = threading.Event()
    threading.Thread(target=read_until_closed, args=(conn, closed), daemon=True).start()
    sent = None
    while True:
        current = version(path)
        if current != sent:
            sent = current
            text = path.read_text(errors="replace") if current else f"({path} does not exist)"
            conn.write_message(MessageType.TEXT, text)
        if closed.wait(interval):  # sleeps, or wakes up as soon as the client is gone
            return


def main(host: str, port: int, path: Path, interval: float) -> None:
    """Serve until Ctrl-C."""

    def page(request: HTTPRequest) -> tuple[int, list[tuple[str, str]], bytes | None]:
        if request.target != "/":
            return 404, [], None  # None: the default error page
        body = PAGE.format(name=html.escape(path.name)).encode()
        return 200, [("Content-Type", "text/html; charset=utf-8")], body

    def handler(conn: Conn) -> None:
        watch(conn, path, interval)

    with (
        serve(handler, host, port, http_handler=page) as server,
        contextlib.suppress(KeyboardInterrupt),
    ):
        host, port = server.address[:2]
        print(f"open http://{host}:{port}/ in a browser to watch {path}")
        server.serve_forever()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description="Push a file to WebSocket clients as it changes.")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8080, help="0 picks a free port")
    parser.add_argument("--interval", type=float, default=1.0, help="seconds between polls")
    parser.add_argument("file", type=Path)
    args = parser.parse_args()
    main(args.host, args.port, args.file, args.interval)
