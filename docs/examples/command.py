"""Run a command for each client, connected to it over a WebSocket (wsproto_asyncio).

Usage::

    python docs/examples/command.py [--host 127.0.0.1] [--port 8080] -- COMMAND [ARG ...]

for example ``python docs/examples/command.py -- sh``, then open
http://127.0.0.1:8080/ in a browser. This is gorilla/websocket's command
example: each client that connects gets a process of its own. Every line
the process writes, to stdout or stderr, goes to the client as a text
message; every message from the client goes to the process's stdin, as a
line. When the process exits, the connection closes normally with the exit
status as the reason ("exit status 0"); when the client goes, the process
is killed.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import shlex
from asyncio.subprocess import PIPE, STDOUT, Process
from collections.abc import Sequence

from wsproto_asyncio import Conn, MessageType, WebSocketError, serve
from wsproto_core import HTTPRequest

PAGE = r"""<!doctype html>
<meta charset="utf-8">
<title>Command</title>
<pre id="log"></pre>
<form id="form"><input id="text" autofocus autocomplete="off"> <button>Send</button></form>
<script>
  const log = document.getElementById("log");
  const ws = new WebSocket(`ws://${location.host}/ws`);
  ws.onmessage = (event) => { log.textContent += event.data + "\n"; };
  ws.onclose = (event) => { log.textContent += `(closed: ${event.reason || event.code})\n`; };
  document.getElementById("form").onsubmit = (event) => {
    event.preventDefault();
    const text = document.getElementById("text");
    ws.send(text.value);
    text.value = "";
  };
</script>
"""


async def send_output(conn: Conn, process: Process) -> None:
    """Send the process's output a line at a time; when it ends, close with the exit status."""
    assert process.stdout is not None  # stdout=PIPE
    async for line in process.stdout:  # to the end, even once the client is gone: see below
        text = line.decode(errors="replace").rstrip("\r\n")
        with contextlib.suppress(WebSocketError, ConnectionError):  # the client is gone
            await conn.write_message(MessageType.TEXT, text)
    status = await process.wait()
    # The reading task (run_command) gets the client's answering Close, and returns.
    await conn.close_gracefully(reason=f"exit status {status}")


async def run_command(conn: Conn, command: Sequence[str]) -> None:
    """Start ``command`` for this client and connect the two until either ends."""
    process = await asyncio.create_subprocess_exec(*command, stdin=PIPE, stdout=PIPE, stderr=STDOUT)
    print(f"pid {process.pid}: started")
    output = asyncio.create_task(send_output(conn, process))
    assert process.stdin is not None  # stdin=PIPE
    try:
        async for message in conn:  # until the client closes (or answers our Close)
            line = message.encode() if isinstance(message, str) else message
            process.stdin.write(line + b"\n")
            with contextlib.suppress(ConnectionError):  # the process closed its stdin
                await process.stdin.drain()
    finally:
        if process.returncode is None:  # the client went first
            process.kill()
        # asyncio counts a process as finished once its output is read to the
        # end, which comes soon after it exits: send_output reads it.
        await output
        print(f"pid {process.pid}: exit status {process.returncode}")


def page(request: HTTPRequest) -> tuple[int, list[tuple[str, str]], bytes]:
    """Answer the plain HTTP requests on the WebSocket's port: the page, or 404."""
    if request.target == "/":
        return 200, [("Content-Type", "text/html; charset=utf-8")], PAGE.encode()
    return 404, [("Content-Type", "text/plain")], b"not found\n"


async def main(host: str, port: int, command: Sequence[str]) -> None:
    """Serve until cancelled (Ctrl-C)."""

    async def handler(conn: Conn) -> None:
        await run_command(conn, command)

    async with await serve(handler, host, port, http_handler=page) as server:
        host, port = server.address[:2]
        print(f"open http://{host}:{port}/ in a browser to run: {shlex.join(command)}")
        await server.serve_forever()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description="Connect a command to WebSocket clients.")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8080, help="0 picks a free port")
    parser.add_argument("command", nargs="+", help="the command to run, after --")
    args = parser.parse_args()
    with contextlib.suppress(KeyboardInterrupt):  # Ctrl-C cancels main(), which shuts down
        asyncio.run(main(args.host, args.port, args.command))
