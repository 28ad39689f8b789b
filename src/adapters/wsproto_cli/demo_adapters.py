"""The adapters' part of ``wsproto demo``: a server and a client for each adapter.

Each adapter serves an echo handler on a loopback port and dials it with
permessage-deflate and a subprotocol, through its public API only, then
exchanges the same things: text, binary, a large message streamed both
ways, a compressible one, a ping, and a clean close. The three scripts have
one shape on purpose: the API is the same, only ``await`` differs.
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Callable
from dataclasses import dataclass, field

__all__ = ["AdapterRun", "run_asyncio", "run_sync", "run_trio"]

LARGE = 8 * 1024 * 1024
CHUNK = 64 * 1024
TEXT = "Hello, WebSocket! Grüße, 你好 👋"
BINARY = bytes(range(256))
# A typical chat payload, repeated: compresses well.
COMPRESSIBLE = json.dumps([{"user": f"user{i % 7}", "text": "hello there"} for i in range(2000)])
SUBPROTOCOL = "chat.v1"


@dataclass
class AdapterRun:
    """What one adapter's run did: ``(title, ok, detail)`` steps, in order."""

    steps: list[tuple[str, bool, str]] = field(default_factory=list)

    def step(self, title: str, ok: bool, detail: str) -> None:
        """Record a step."""
        self.steps.append((title, ok, detail))


def _block(i: int) -> bytes:
    return bytes([i % 251]) * CHUNK


def _large_digest() -> bytes:
    digest = hashlib.sha256()
    for i in range(LARGE // CHUNK):
        digest.update(_block(i))
    return digest.digest()


def _negotiated(extensions: object) -> bool:
    return any(type(e).__name__ == "PerMessageDeflate" for e in extensions)  # type: ignore[attr-defined]


def _close_detail(codes: list[int]) -> str:
    return f"server saw {codes[0] if codes else 'nothing'}; both sides closed"


# -- wsproto_sync --------------------------------------------------------------------------


def run_sync() -> AdapterRun:
    """Run the exchange with ``wsproto_sync`` (threads)."""
    import threading

    import wsproto_sync as ws

    run = AdapterRun()
    codes: list[int] = []
    done = threading.Event()

    def echo(conn: ws.Conn) -> None:
        try:
            while True:
                kind, reader = conn.next_reader()
                with conn.next_writer(kind) as writer:
                    while chunk := reader.read(CHUNK):
                        writer.write(chunk)
        except ws.CloseError as exc:
            codes.append(exc.code)
        finally:
            done.set()

    upgrader = ws.Upgrader(
        subprotocols=[SUBPROTOCOL], enable_compression=True, max_message_size=None
    )
    with ws.serve(echo, upgrader=upgrader) as server:
        threading.Thread(target=server.serve_forever, daemon=True).start()
        host, port = server.address[:2]
        dialer = ws.Dialer(
            subprotocols=[SUBPROTOCOL],
            enable_compression=True,
            max_message_size=None,
            handshake_timeout=10,
            proxy=None,
        )
        conn, _ = dialer.dial(f"ws://{host}:{port}/chat")
        conn.set_read_deadline(time.monotonic() + 30)
        run.step(
            "handshake",
            conn.subprotocol == SUBPROTOCOL and _negotiated(conn.protocol.extensions),
            f"subprotocol {conn.subprotocol!r}, permessage-deflate",
        )
        conn.write_message(ws.MessageType.TEXT, TEXT)
        run.step("text echo", conn.read_message() == (ws.MessageType.TEXT, TEXT), repr(TEXT))
        conn.write_message(ws.MessageType.BINARY, BINARY)
        got = conn.read_message()
        run.step("binary echo", got == (ws.MessageType.BINARY, BINARY), "256 bytes")
        conn.write_message(ws.MessageType.TEXT, COMPRESSIBLE)
        got = conn.read_message()
        run.step("compressed echo", got[1] == COMPRESSIBLE, f"{len(COMPRESSIBLE)} bytes of JSON")

        def send_large() -> None:
            with conn.next_writer(ws.MessageType.BINARY) as writer:
                for i in range(LARGE // CHUNK):
                    writer.write(_block(i))

        sender = threading.Thread(target=send_large)
        sender.start()
        _, reader = conn.next_reader()
        digest = hashlib.sha256()
        while chunk := reader.read(CHUNK):
            digest.update(chunk)
        sender.join()
        run.step(
            f"{LARGE // 2**20} MiB streamed both ways",
            digest.digest() == _large_digest(),
            "next_writer / next_reader, SHA-256 equal",
        )
        pongs: list[bytes] = []
        conn.set_pong_handler(pongs.append)
        started = time.monotonic()
        conn.write_control(ws.MessageType.PING, b"demo")
        conn.write_message(ws.MessageType.TEXT, "after the ping")
        conn.read_message()  # the Pong is handled on the way to this echo
        run.step(
            "ping",
            pongs == [b"demo"],
            f"pong in {(time.monotonic() - started) * 1000:.1f} ms",
        )
        conn.close_gracefully(ws.CloseCode.NORMAL_CLOSURE, "demo done", timeout=5)
        done.wait(5)
        run.step("closing handshake", codes == [1000], _close_detail(codes))
        server.shutdown()
    return run


# -- wsproto_asyncio -----------------------------------------------------------------------


def run_asyncio() -> AdapterRun:
    """Run the exchange with ``wsproto_asyncio``."""
    import asyncio

    import wsproto_asyncio as ws

    run = AdapterRun()
    codes: list[int] = []

    async def echo(conn: ws.Conn) -> None:
        try:
            while True:
                kind, reader = await conn.next_reader()
                async with conn.next_writer(kind) as writer:
                    async for chunk in reader:
                        await writer.write(chunk)
        except ws.CloseError as exc:
            codes.append(exc.code)

    async def main() -> None:
        upgrader = ws.Upgrader(
            subprotocols=[SUBPROTOCOL], enable_compression=True, max_message_size=None
        )
        async with await ws.serve(echo, upgrader=upgrader) as server:
            host, port = server.address[:2]
            dialer = ws.Dialer(
                subprotocols=[SUBPROTOCOL],
                enable_compression=True,
                max_message_size=None,
                handshake_timeout=10,
                proxy=None,
            )
            conn, _ = await dialer.dial(f"ws://{host}:{port}/chat")
            async with asyncio.timeout(30):
                await _async_exchange(ws, conn, run)
                await conn.close_gracefully(ws.CloseCode.NORMAL_CLOSURE, "demo done", timeout=5)
                while not codes:
                    await asyncio.sleep(0.01)
        run.step("closing handshake", codes == [1000], _close_detail(codes))

    asyncio.run(main())
    return run


# -- wsproto_trio --------------------------------------------------------------------------


def run_trio() -> AdapterRun:
    """Run the exchange with ``wsproto_trio``."""
    import functools

    import trio

    import wsproto_trio as ws

    run = AdapterRun()
    codes: list[int] = []

    async def echo(conn: ws.Conn) -> None:
        try:
            while True:
                kind, reader = await conn.next_reader()
                async with conn.next_writer(kind) as writer:
                    async for chunk in reader:
                        await writer.write(chunk)
        except ws.CloseError as exc:
            codes.append(exc.code)

    async def main() -> None:
        upgrader = ws.Upgrader(
            subprotocols=[SUBPROTOCOL], enable_compression=True, max_message_size=None
        )
        with trio.fail_after(30):
            async with trio.open_nursery() as nursery:
                serve = functools.partial(ws.serve, upgrader=upgrader)
                server = await nursery.start(serve, echo)
                host, port = server.address[:2]
                dialer = ws.Dialer(
                    subprotocols=[SUBPROTOCOL],
                    enable_compression=True,
                    max_message_size=None,
                    handshake_timeout=10,
                    proxy=None,
                )
                conn, _ = await dialer.dial(f"ws://{host}:{port}/chat")
                await _async_exchange(ws, conn, run, spawn=nursery.start_soon)
                await conn.close_gracefully(ws.CloseCode.NORMAL_CLOSURE, "demo done", timeout=5)
                while not codes:
                    await trio.sleep(0.01)
                await server.shutdown()
        run.step("closing handshake", codes == [1000], _close_detail(codes))

    trio.run(main)
    return run


async def _async_exchange(
    ws: object, conn: object, run: AdapterRun, spawn: Callable[..., object] | None = None
) -> None:
    """The exchange, written once for both async adapters (they share the API)."""
    from typing import Any

    api: Any = ws
    c: Any = conn
    run.step(
        "handshake",
        c.subprotocol == SUBPROTOCOL and _negotiated(c.protocol.extensions),
        f"subprotocol {c.subprotocol!r}, permessage-deflate",
    )
    await c.write_message(api.MessageType.TEXT, TEXT)
    run.step("text echo", await c.read_message() == (api.MessageType.TEXT, TEXT), repr(TEXT))
    await c.write_message(api.MessageType.BINARY, BINARY)
    got = await c.read_message()
    run.step("binary echo", got == (api.MessageType.BINARY, BINARY), "256 bytes")
    await c.write_message(api.MessageType.TEXT, COMPRESSIBLE)
    got = await c.read_message()
    run.step("compressed echo", got[1] == COMPRESSIBLE, f"{len(COMPRESSIBLE)} bytes of JSON")

    async def send_large() -> None:
        async with c.next_writer(api.MessageType.BINARY) as writer:
            for i in range(LARGE // CHUNK):
                await writer.write(_block(i))

    if spawn is None:  # asyncio
        import asyncio

        sender = asyncio.ensure_future(send_large())
    else:
        spawn(send_large)
    _, reader = await c.next_reader()
    digest = hashlib.sha256()
    async for chunk in reader:
        digest.update(chunk)
    if spawn is None:
        await sender
    run.step(
        f"{LARGE // 2**20} MiB streamed both ways",
        digest.digest() == _large_digest(),
        "next_writer / next_reader, SHA-256 equal",
    )
    pongs: list[bytes] = []
    c.set_pong_handler(pongs.append)
    started = time.monotonic()
    await c.write_control(api.MessageType.PING, b"demo")
    await c.write_message(api.MessageType.TEXT, "after the ping")
    await c.read_message()  # the Pong is handled on the way to this echo
    run.step("ping", pongs == [b"demo"], f"pong in {(time.monotonic() - started) * 1000:.1f} ms")
