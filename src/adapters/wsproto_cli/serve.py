"""``wsproto serve``: an echo server, a chat hub and a chat page, on one port.

Routes, the same for every adapter:

* a WebSocket handshake to ``/chat`` joins the chat hub, which sends each
  message to every member (gorilla/websocket's ``examples/chat``);
* a handshake to any other path gets an echo: text back as text, binary as
  binary, streamed, so a large message never sits whole in memory;
* a plain ``GET /`` gets the chat page, whose WebSocket joins ``/chat``.

This module holds what the adapters share: the options, the page, the
answers to plain HTTP requests, the log lines and the banner. Each adapter's
server is a module of its own, in its idiom: :mod:`.serve_sync` (a thread
per connection), :mod:`.serve_asyncio` (tasks) and :mod:`.serve_trio`
(nurseries). They use the adapters' public API only.
"""

from __future__ import annotations

import argparse
import base64
import functools
import hashlib
import importlib.resources
import logging
import re
import signal
import sys
import threading
import urllib.parse
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from wsproto_core import (
    DEFAULT_MAX_MESSAGE_SIZE,
    CloseCode,
    CloseError,
    Connection,
    HTTPRequest,
    RemoteProtocolError,
    ServerConnection,
    format_close_message,
    plain_text_error,
)

__all__ = [
    "ADAPTERS",
    "CHAT_PATH",
    "CHAT_QUEUE",
    "CHUNK",
    "KEEPALIVE_INTERVAL",
    "SHUTDOWN_TIMEOUT",
    "TOO_SLOW",
    "WRITE_WAIT",
    "ServeOptions",
    "Session",
    "add_arguments",
    "announce",
    "describe_end",
    "http_handler",
    "logger",
    "page",
    "render_error",
    "run_serve",
    "stop_on_signals",
]

ADAPTERS = ("sync", "asyncio", "trio")
CHAT_PATH = "/chat"
#: Messages waiting for one chat member; a member this far behind is dropped
#: rather than let it hold up the hub or fill memory (gorilla's chat: 256).
CHAT_QUEUE = 256
#: Seconds one write to a chat member may take (gorilla's chat: ``writeWait``).
WRITE_WAIT = 10.0
#: Seconds between keepalive Pings, so dead peers leave the hub.
KEEPALIVE_INTERVAL = 30.0
#: Seconds connections get to close after Ctrl-C, before they are dropped.
SHUTDOWN_TIMEOUT = 3.0
#: The size of the pieces an echo reads and writes.
CHUNK = 65536
#: The Close a dropped chat member gets.
TOO_SLOW = format_close_message(CloseCode.POLICY_VIOLATION, "too slow")

logger = logging.getLogger("wsproto.serve")

_TEXT = ("Content-Type", "text/plain; charset=utf-8")


@dataclass(frozen=True)
class ServeOptions:
    """What the command line asked for.

    Attributes:
        adapter: ``"sync"``, ``"asyncio"`` or ``"trio"``.
        host: the address to listen on.
        port: the port; 0 for any free one.
        compression: negotiate permessage-deflate.
        max_size: the read limit in bytes, or ``None`` for none.
    """

    adapter: str = "sync"
    host: str = "127.0.0.1"
    port: int = 8080
    compression: bool = False
    max_size: int | None = DEFAULT_MAX_MESSAGE_SIZE


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Add ``wsproto serve``'s options to ``parser``."""
    parser.add_argument(
        "--adapter", choices=ADAPTERS, default="sync", help="the adapter to serve with (sync)"
    )
    parser.add_argument("--host", default="127.0.0.1", help="the address to listen on (127.0.0.1)")
    parser.add_argument(
        "--port", type=_port, default=8080, help="the port to listen on; 0 picks a free one (8080)"
    )
    parser.add_argument(
        "--compression", action="store_true", help="negotiate permessage-deflate (RFC 7692)"
    )
    parser.add_argument(
        "--max-size",
        type=_size,
        default=DEFAULT_MAX_MESSAGE_SIZE,
        metavar="BYTES",
        help="the largest message accepted, larger ones close the connection with 1009 "
        f"(default {DEFAULT_MAX_MESSAGE_SIZE}; 0: no limit)",
    )


def _port(text: str) -> int:
    port = int(text)
    if not 0 <= port <= 65535:
        raise argparse.ArgumentTypeError(f"{text} is not a port number")
    return port


def _size(text: str) -> int:
    size = int(text)
    if size < 0:
        raise argparse.ArgumentTypeError("a size is 0 or more")
    return size


def run_serve(args: argparse.Namespace) -> int:
    """Run ``wsproto serve`` until Ctrl-C or SIGTERM; return the exit status."""
    options = ServeOptions(
        adapter=args.adapter,
        host=args.host,
        port=args.port,
        compression=args.compression,
        max_size=args.max_size or None,
    )
    _configure_logging()
    try:
        if options.adapter == "asyncio":
            from .serve_asyncio import run
        elif options.adapter == "trio":
            from .serve_trio import run
        else:
            from .serve_sync import run
        run(options)
    except KeyboardInterrupt:  # Ctrl-C before the server was up: nothing to shut down
        return 0
    except OSError as exc:  # listening failed: connections' errors stay in their handlers
        where = f"{options.host}:{options.port}"
        print(f"wsproto serve: cannot listen on {where}: {exc}", file=sys.stderr)
        return 1
    return 0


def _configure_logging() -> None:
    if not logger.handlers:  # once, should main() run twice in one process
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter("%(asctime)s %(message)s", "%Y-%m-%d %H:%M:%S"))
        logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    logger.propagate = False
    # The adapters log refusals at INFO (we log our own line for those) and
    # failures at WARNING and above, which should show.
    logging.basicConfig(
        level=logging.WARNING, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )


def announce(adapter: str, address: Any) -> None:
    """Print where the server listens: the first line is the page's URL."""
    host, port = address[:2]
    shown = f"[{host}]" if ":" in host else host
    print(f"wsproto serve ({adapter}): listening on http://{shown}:{port}/", flush=True)
    print(
        f"chat page http://{shown}:{port}/, chat hub ws://{shown}:{port}{CHAT_PATH}, "
        f"echo ws://{shown}:{port}/ (any other path); Ctrl-C stops",
        flush=True,
    )


def stop_on_signals() -> threading.Event:
    """An event that SIGINT (Ctrl-C) or SIGTERM sets, from now on (main thread only).

    Call it before announcing the server, so that no signal finds the
    default handlers, which would end the process at once.
    """
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    return stop


# -- plain HTTP ----------------------------------------------------------------------------


@functools.cache
def page() -> bytes:
    """The chat page: HTML, CSS and JavaScript in one file, with no external resources."""
    return importlib.resources.files(__package__).joinpath("chat.html").read_bytes()


@functools.cache
def _page_headers() -> tuple[tuple[str, str], ...]:
    # The page loads nothing from elsewhere; the policy says so to the
    # browser, allowing its own inline script and style by their hashes.
    html = page().decode()
    hashes = {
        kind: " ".join(
            "'sha256-" + base64.b64encode(hashlib.sha256(body.encode()).digest()).decode() + "'"
            for body in re.findall(rf"<{kind}>(.*?)</{kind}>", html, re.S)
        )
        for kind in ("script", "style")
    }
    policy = (
        f"default-src 'none'; script-src {hashes['script']}; style-src {hashes['style']}; "
        "connect-src 'self' ws: wss:; img-src data:; base-uri 'none'; form-action 'none'"
    )
    return (
        ("Content-Type", "text/html; charset=utf-8"),
        ("Content-Security-Policy", policy),
        ("X-Content-Type-Options", "nosniff"),
        ("Cache-Control", "no-cache"),
    )


def http_handler(request: HTTPRequest) -> tuple[int, Sequence[tuple[str, str]], bytes]:
    """Answer a plain HTTP request: the chat page at ``/``, else an error; log one line."""
    path = urllib.parse.urlsplit(request.target).path
    headers: Sequence[tuple[str, str]]
    if request.method != "GET":
        status, headers, body = 405, [_TEXT, ("Allow", "GET")], b"405 Method Not Allowed\n"
    elif path in ("/", "/index.html"):
        status, headers, body = 200, _page_headers(), page()
    elif path == CHAT_PATH:
        status, headers = 426, [_TEXT, ("Upgrade", "websocket")]
        body = b"426 Upgrade Required: /chat is the chat hub's WebSocket; open / instead\n"
    else:
        status, headers, body = 404, [_TEXT], b"404 Not Found\n"
    peer = _format_address(request.remote_addr)
    logger.info("%s HTTP %s %s: %d", peer, request.method, _shorten(request.target), status)
    return status, headers, body


def render_error(status: int, reason: str, request: HTTPRequest | None) -> tuple[Any, bytes]:
    """Render a refused handshake as plain text, and log it (the Upgrader's ``error`` hook)."""
    if request is None:
        # Unparsed, it has no address either; the adapter's own log line has it.
        logger.info("refused a malformed request: %d %s", status, reason)
    else:
        what = f"{request.method} {_shorten(request.target)}"
        origin = request.headers.get("origin")
        if origin is not None:
            what += f" from origin {_shorten(origin)}"
        peer = _format_address(request.remote_addr)
        logger.info("%s was refused %s: %d %s", peer, what, status, reason)
    return plain_text_error(status, reason, request)


def _shorten(text: str, limit: int = 200) -> str:
    return text if len(text) <= limit else text[:limit] + "..."


# -- connections ---------------------------------------------------------------------------


class Session:
    """One WebSocket connection, as the log tells it: a line when it opens, one when it ends.

    Args:
        remote_addr: the peer's address (the Conn's ``remote_addr``).
        protocol: the Conn's core connection (its ``protocol``).
    """

    def __init__(self, remote_addr: Any, protocol: Connection) -> None:
        self.peer = _format_address(remote_addr)
        request = protocol.handshake_request if isinstance(protocol, ServerConnection) else None
        self.target = request.target if request is not None else "/"
        #: The request's path, which picks the route.
        self.path = urllib.parse.urlsplit(self.target).path
        self._protocol = protocol
        #: Messages read from the peer, and written to it.
        self.received = 0
        self.sent = 0

    @property
    def is_chat(self) -> bool:
        """Whether this connection joins the chat hub."""
        return self.path == CHAT_PATH

    def opened(self, detail: str = "") -> None:
        """Log that the connection is open, with what was negotiated."""
        parts = [extension.name for extension in self._protocol.extensions]
        if self._protocol.subprotocol:
            parts.append(f"subprotocol {self._protocol.subprotocol}")
        if detail:
            parts.append(detail)
        extra = f" ({', '.join(parts)})" if parts else ""
        logger.info("%s connected to %s%s", self.peer, _shorten(self.target), extra)

    def closed(self, error: BaseException | None) -> None:
        """Log how the connection ended; ``error`` is what ended the reading."""
        logger.info(
            "%s disconnected from %s: %s; %d message(s) in, %d out",
            self.peer,
            _shorten(self.target),
            describe_end(error),
            self.received,
            self.sent,
        )

    def dropped(self) -> None:
        """Log that the chat hub dropped this member for falling behind."""
        logger.info(
            "%s dropped from %s: %d messages waiting, closing with 1008",
            self.peer,
            self.path,
            CHAT_QUEUE,
        )


def describe_end(error: BaseException | None) -> str:
    """How a connection ended, with its close code, in words for a log line."""
    if isinstance(error, CloseError):
        if error.code == CloseCode.ABNORMAL_CLOSURE:
            return "connection lost without a Close (1006)"
        return f"closed {_code(error.code)}{_reason(error.text)}"
    if isinstance(error, RemoteProtocolError):
        return f"failed, sent {_code(error.code)}{_reason(error.reason)}"
    if isinstance(error, TimeoutError):
        return "timed out"
    if isinstance(error, OSError):
        return f"connection lost ({error.strerror or error})"
    if error is None:  # the handler was cancelled: the shutdown's time ran out
        return "cancelled at shutdown"
    return f"ended by {type(error).__name__}"


def _code(code: int) -> str:
    try:
        return f"{code} {CloseCode(code).name.lower().replace('_', ' ')}"
    except ValueError:
        return str(code)


def _reason(text: str) -> str:
    return f" {_shorten(text, 123)!r}" if text else ""


def _format_address(address: Any) -> str:
    if isinstance(address, tuple) and len(address) >= 2:
        host, port = address[:2]
        return f"[{host}]:{port}" if ":" in str(host) else f"{host}:{port}"
    return str(address)
