"""``wsproto demo``: the core in memory, then each adapter over loopback.

First a client core and a server core talk with no sockets at all: the
bytes each side queues are handed to the other, and the report shows what
crossed the wire. This is the sans-I/O promise, shown. Then the same cores
run under each adapter, ``wsproto_sync``, ``wsproto_asyncio`` and
``wsproto_trio``: a server and a client exchange text, binary, a large
streamed message, a compressed one, a ping and a clean close.
"""

from __future__ import annotations

import hashlib
import sys
import time
from collections.abc import Callable
from typing import TextIO

from wsproto_core import (
    ClientConnection,
    Close,
    ConnectionPair,
    Event,
    HandshakeRequest,
    HandshakeResponse,
    Message,
    MessageData,
    MessageEnd,
    MessageStart,
    Pong,
    ServerConnection,
    State,
)

from . import demo_adapters

__all__ = ["run_demo"]

_LARGE_SIZE = 8 * 1024 * 1024
_FRAGMENT_SIZE = 256 * 1024


class _Report:
    def __init__(self, out: TextIO) -> None:
        self.out = out
        self.failures = 0

    def step(self, title: str, ok: bool, detail: str) -> None:
        mark = "ok  " if ok else "FAIL"
        self.out.write(f"  [{mark}] {title:<36} {detail}\n")
        self.out.flush()
        self.failures += not ok


def _wire(pair: ConnectionPair) -> tuple[int, int]:
    return len(pair.client_to_server), len(pair.server_to_client)


def run_demo(out: TextIO | None = None) -> int:
    """Run the demo and print a report; return the exit status (0: all good)."""
    out = out or sys.stdout
    report = _Report(out)
    out.write("wsproto-core demo\n\n")
    _core_in_memory(out, report)
    adapters = [
        ("wsproto_sync", demo_adapters.run_sync),
        ("wsproto_asyncio", demo_adapters.run_asyncio),
        ("wsproto_trio", demo_adapters.run_trio),
    ]
    for name, run in adapters:
        out.write(f"\n{name}: a server and a client over loopback\n")
        started = time.monotonic()
        try:
            steps = run().steps
        except Exception as exc:  # a demo reports a failure; it does not crash
            report.step("run", False, f"{type(exc).__name__}: {exc}")
            continue
        for title, ok, detail in steps:
            report.step(title, ok, detail)
        out.write(f"  ({time.monotonic() - started:.2f} s)\n")
    if report.failures:
        out.write(f"\n{report.failures} step(s) failed\n")
        return 1
    out.write("\nall steps passed\n")
    return 0


def _core_in_memory(out: TextIO, report: _Report) -> None:
    out.write("wsproto_core: a client core and a server core, wired in memory\n")

    client = ClientConnection(
        "ws://demo.local/chat", subprotocols=["chat.v2", "chat.v1"], origin="http://demo.local"
    )
    server = ServerConnection(subprotocols=["chat.v1", "chat.v2"])
    pair = ConnectionPair(client, server)
    _, server_events = pair.transfer()
    request = server_events[0] if server_events else None
    report.step(
        "opening handshake: request",
        isinstance(request, HandshakeRequest),
        f"GET {request.target} from {request.origin}"
        if isinstance(request, HandshakeRequest)
        else repr(server_events),
    )
    server.accept()
    client_events, _ = pair.transfer()
    opened = bool(client_events) and isinstance(client_events[0], HandshakeResponse)
    report.step(
        "opening handshake: 101 response",
        opened and client.state is State.OPEN,
        f"subprotocol {client.subprotocol!r} (server's preference)",
    )

    def exchange(
        title: str,
        send: Callable[[], None],
        expect: Callable[[list[Event], list[Event]], bool],
        detail: Callable[[int, int], str],
    ) -> None:
        before = _wire(pair)
        send()
        client_events, server_events = pair.transfer()
        after = _wire(pair)
        ok = expect(client_events, server_events)
        report.step(title, ok, detail(after[0] - before[0], after[1] - before[1]))

    exchange(
        "text message, client to server",
        lambda: client.send_text("Hello, WebSocket! Grüße, 你好 👋"),
        lambda _c, s: s == [Message(data="Hello, WebSocket! Grüße, 你好 👋")],
        lambda up, _down: f"{up} bytes on the wire (masked, as clients must)",
    )
    exchange(
        "binary message, server to client",
        lambda: server.send_binary(bytes(range(256))),
        lambda c, _s: c == [Message(data=bytes(range(256)))],
        lambda _up, down: f"{down} bytes on the wire (unmasked, as servers must)",
    )
    exchange(
        "ping, answered by an automatic pong",
        lambda: client.send_ping(b"are you there?"),
        lambda c, _s: c == [Pong(payload=b"are you there?")],
        lambda up, down: f"{up} bytes up, {down} bytes down",
    )

    # A large message, sent in fragments and received as a stream: neither
    # side ever holds more than one fragment of it.
    large = hashlib.sha256()
    server.stream_messages = True
    server.max_message_size = None
    received = hashlib.sha256()
    pieces = starts = ends = 0
    before = _wire(pair)
    block = bytes(range(256)) * (_FRAGMENT_SIZE // 256)
    for offset in range(0, _LARGE_SIZE, _FRAGMENT_SIZE):
        large.update(block)
        client.send_binary(block, fin=offset + _FRAGMENT_SIZE >= _LARGE_SIZE)
        _, events = pair.transfer()
        for event in events:
            if isinstance(event, MessageData):
                received.update(event.data)
                pieces += 1
            starts += isinstance(event, MessageStart)
            ends += isinstance(event, MessageEnd)
    report.step(
        f"{_LARGE_SIZE // 1024 // 1024} MiB message, streamed",
        received.digest() == large.digest() and starts == ends == 1,
        f"{(_wire(pair)[0] - before[0]) // 1024} KiB in {_LARGE_SIZE // _FRAGMENT_SIZE} "
        f"fragments, read as {pieces} pieces, SHA-256 equal",
    )
    server.stream_messages = False

    exchange(
        "closing handshake",
        lambda: client.send_close(1000, "demo done"),
        lambda c, s: s == [Close(code=1000, reason="demo done")] and c == [Close(code=1000)],
        lambda _up, _down: (
            f"client {client.state.name}, server {server.state.name}; "
            f"server closes TCP first: {server.close_expected()}"
        ),
    )

    up, down = _wire(pair)
    out.write(f"  ({up} bytes client to server, {down} bytes server to client)\n")
