"""wsproto_trio against trio-websocket and websockets' trio implementation, both directions.

Each test runs four times: our ``Dialer`` against ``trio_websocket.serve_websocket``
and ``websockets.trio.server.serve``, and trio-websocket's ``open_websocket_url``
and ``websockets.trio.client.connect`` against our ``serve()``. A :class:`Peer`
gives the tests the same few operations on either library, and
:func:`open_link` opens a connection in the direction under test; leaving it
closes ours first, then theirs.

Both peers read in a background task of their own; we don't, so wherever
they wait for our Pong or our Close echo, a task of ours is reading.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from functools import partial
from typing import Any

import pytest
import trio
import trio_websocket
from trio_helpers import (
    BIG,
    BIG_DATA,
    BIG_TIMEOUT,
    CHUNK,
    STEP,
    Relay,
    digest,
    kind_of,
    read_streamed,
    url_of,
    write_streamed,
)
from websockets.trio.client import connect as websockets_connect
from websockets.trio.server import serve as websockets_serve

from wsproto_trio import (
    CloseCode,
    CloseError,
    Conn,
    Dialer,
    MessageType,
    ReadLimitError,
    Upgrader,
    serve,
)

DEFLATE = ["permessage-deflate"]
THEIR_LIMIT = 64 * 1024 * 1024  # trio-websocket's read limit (1 MiB by default): above BIG


# -- their end, behind one interface ----------------------------------------------


class Peer:
    """Their end of a connection: the operations the tests need, on either library."""

    #: Whether :meth:`recv_fragments` shows the frames of a fragmented message.
    sees_fragments = False
    #: Whether :meth:`send_fragments` can send a message in several frames.
    sends_fragments = False

    @property
    def extensions(self) -> list[str]:
        """The extensions the peer says it negotiated."""
        raise NotImplementedError

    async def send(self, data: str | bytes) -> None:
        raise NotImplementedError

    async def send_fragments(self, parts: Sequence[str | bytes], ping: bytes) -> None:
        """Send one message, a frame per part, with a Ping after the first part."""
        raise NotImplementedError

    async def recv(self) -> str | bytes:
        raise NotImplementedError

    async def recv_fragments(self) -> list[str | bytes]:
        """Receive one message: its frames if the peer shows them, else the whole."""
        return [await self.recv()]

    async def ping(self, payload: bytes) -> None:
        """Send a Ping; return once its Pong arrived."""
        raise NotImplementedError

    async def close(self, code: int, reason: str) -> int | None:
        """Run the closing handshake from their side; return the code of our echo."""
        raise NotImplementedError

    async def closed(self) -> tuple[int | None, str]:
        """Wait for the connection to close; return the code and reason they received."""
        raise NotImplementedError


class TrioWebsocketPeer(Peer):
    """A ``trio_websocket.WebSocketConnection`` (wsproto underneath).

    It offers no extension, so it never negotiates permessage-deflate, and
    ``send_message`` always sends a message whole.
    """

    def __init__(self, ws: trio_websocket.WebSocketConnection) -> None:
        self.ws = ws

    @property
    def extensions(self) -> list[str]:
        return []

    async def send(self, data: str | bytes) -> None:
        await self.ws.send_message(data)

    async def recv(self) -> str | bytes:
        return await self.ws.get_message()

    async def ping(self, payload: bytes) -> None:
        await self.ws.ping(payload)  # returns with the Pong

    async def close(self, code: int, reason: str) -> int | None:
        await self.ws.aclose(code, reason)
        assert self.ws.closed is not None
        return self.ws.closed.code

    async def closed(self) -> tuple[int | None, str]:
        with pytest.raises(trio_websocket.ConnectionClosed) as info:
            await self.ws.get_message()
        reason = info.value.reason
        assert reason is not None
        return reason.code, reason.reason or ""


class WebsocketsPeer(Peer):
    """A connection of ``websockets.trio``."""

    sees_fragments = True
    sends_fragments = True

    def __init__(self, ws: Any) -> None:
        self.ws = ws

    @property
    def extensions(self) -> list[str]:
        return [extension.name for extension in self.ws.protocol.extensions]

    async def send(self, data: str | bytes) -> None:
        await self.ws.send(data)

    async def send_fragments(self, parts: Sequence[str | bytes], ping: bytes) -> None:
        pongs: list[trio.Event] = []

        async def fragments() -> AsyncIterator[str | bytes]:
            for i, part in enumerate(parts):
                yield part
                if i == 0:
                    pongs.append(await self.ws.ping(ping))

        await self.ws.send(fragments())
        await pongs[0].wait()

    async def recv(self) -> str | bytes:
        return await self.ws.recv()  # type: ignore[no-any-return]

    async def recv_fragments(self) -> list[str | bytes]:
        return [fragment async for fragment in self.ws.recv_streaming()]

    async def ping(self, payload: bytes) -> None:
        await (await self.ws.ping(payload)).wait()

    async def close(self, code: int, reason: str) -> int | None:
        await self.ws.aclose(code, reason)
        return self.ws.close_code  # type: ignore[no-any-return]

    async def closed(self) -> tuple[int | None, str]:
        await self.ws.wait_closed()
        return self.ws.close_code, self.ws.close_reason or ""


# -- connecting, in both directions --------------------------------------------------


@dataclass(frozen=True)
class Direction:
    library: str  # "trio-websocket" or "websockets"
    we_dial: bool


DIRECTIONS = [
    pytest.param(Direction("trio-websocket", True), id="dialer-to-trio-websocket"),
    pytest.param(Direction("trio-websocket", False), id="trio-websocket-to-serve"),
    pytest.param(Direction("websockets", True), id="dialer-to-websockets"),
    pytest.param(Direction("websockets", False), id="websockets-to-serve"),
]


@pytest.fixture(params=DIRECTIONS)
def direction(request: pytest.FixtureRequest) -> Direction:
    return request.param  # type: ignore[no-any-return]


@dataclass
class Link:
    """Our end of a connection, their end, and the counting relay between, if asked for."""

    conn: Conn
    peer: Peer
    relay: Relay | None


@contextlib.asynccontextmanager
async def open_link(
    direction: Direction,
    *,
    deflate: bool = False,
    peer_deflate: bool | None = None,
    relay: bool = False,
) -> AsyncIterator[Link]:
    """Connect us and them in ``direction``; both offer permessage-deflate with ``deflate``.

    ``peer_deflate`` sets their side alone; ``relay`` puts a byte-counting
    :class:`Relay` between the two. On exit, our Conn closes first, so their
    closing never waits for a Close echo nobody reads; then the handlers
    return, then the servers stop.
    """
    peer_deflate = deflate if peer_deflate is None else peer_deflate
    if direction.library == "trio-websocket" and peer_deflate:
        # trio-websocket passes no extensions to wsproto: it can't negotiate compression.
        pytest.skip("trio-websocket does not support permessage-deflate")
    async with contextlib.AsyncExitStack() as stack:
        nursery = await stack.enter_async_context(trio.open_nursery())
        stack.callback(nursery.cancel_scope.cancel)  # the servers' tasks, at the very end
        finished = trio.Event()  # lets the servers' handlers return
        world = _World(direction.library, stack, nursery, finished, deflate, peer_deflate, relay)
        conn, peer, via = await (world.dial_them() if direction.we_dial else world.let_them_dial())
        stack.callback(finished.set)
        stack.push_async_callback(conn.aclose)
        negotiated = DEFLATE if deflate and peer_deflate else []
        assert [extension.name for extension in conn.protocol.extensions] == negotiated
        assert peer.extensions == negotiated
        yield Link(conn, peer, via)


@dataclass
class _World:
    """What :func:`open_link` starts, in its exit stack and its nursery."""

    library: str
    stack: contextlib.AsyncExitStack
    nursery: trio.Nursery
    finished: trio.Event
    deflate: bool
    peer_deflate: bool
    relay: bool

    async def _relay_to(self, port: int) -> Relay | None:
        return await self.stack.enter_async_context(Relay(port)) if self.relay else None

    async def dial_them(self) -> tuple[Conn, Peer, Relay | None]:
        """Our Dialer connects to their server."""
        if self.library == "trio-websocket":
            port, accepted = await self._trio_websocket_server()
        else:
            port, accepted = await self._websockets_server()
        via = await self._relay_to(port)
        dialer = Dialer(handshake_timeout=STEP, enable_compression=self.deflate)
        conn, response = await dialer.dial(f"ws://127.0.0.1:{via.port if via else port}/")
        # The extensions of the server's answer are those the core runs.
        assert [e.name for e in response.extensions] == [e.name for e in conn.protocol.extensions]
        return conn, await accepted.receive(), via

    async def let_them_dial(self) -> tuple[Conn, Peer, Relay | None]:
        """Their client connects to our serve()."""
        conns_in, conns_out = trio.open_memory_channel[Conn](1)

        async def handler(conn: Conn) -> None:
            await conns_in.send(conn)
            await self.finished.wait()

        upgrader = Upgrader(handshake_timeout=STEP, enable_compression=self.deflate)
        server = await self.nursery.start(
            partial(serve, handler, "127.0.0.1", 0, upgrader=upgrader, shutdown_timeout=1)
        )
        self.stack.push_async_callback(server.shutdown)
        via = await self._relay_to(server.address[1])
        url = f"ws://127.0.0.1:{via.port}/" if via else url_of(server)
        if self.library == "trio-websocket":
            peer = await self._trio_websocket_client(url)
        else:
            peer = await self._websockets_client(url)
        return await conns_out.receive(), peer, via

    async def _trio_websocket_server(self) -> tuple[int, trio.MemoryReceiveChannel[Peer]]:
        accepted_in, accepted_out = trio.open_memory_channel[Peer](1)

        async def handler(request: trio_websocket.WebSocketRequest) -> None:
            ws = await request.accept()
            await accepted_in.send(TrioWebsocketPeer(ws))
            await self.finished.wait()  # returning would close the connection

        server = await self.nursery.start(
            partial(
                trio_websocket.serve_websocket,
                handler,
                "127.0.0.1",
                0,
                ssl_context=None,
                max_message_size=THEIR_LIMIT,
                receive_buffer_size=CHUNK,
                connect_timeout=STEP,
                disconnect_timeout=STEP,
            )
        )
        return server.port, accepted_out

    async def _websockets_server(self) -> tuple[int, trio.MemoryReceiveChannel[Peer]]:
        accepted_in, accepted_out = trio.open_memory_channel[Peer](1)

        async def handler(ws: Any) -> None:
            await accepted_in.send(WebsocketsPeer(ws))
            await ws.wait_closed()  # returning would close the connection

        server = await self.nursery.start(
            partial(
                websockets_serve,
                handler,
                0,
                host="127.0.0.1",
                compression="deflate" if self.peer_deflate else None,
                max_size=None,
                ping_interval=None,
                close_timeout=STEP,
            )
        )
        self.stack.push_async_callback(server.aclose)
        return server.listeners[0].socket.getsockname()[1], accepted_out

    async def _trio_websocket_client(self, url: str) -> Peer:
        # trio-websocket 0.12 leaves its client's socket open when the server
        # closed first (aclose() returns early once a close reason is set):
        # close it once its context is left, or the socket leaks.
        streams: list[trio.abc.Stream] = []
        self.stack.push_async_callback(_close_all, streams)
        ws = await self.stack.enter_async_context(
            trio_websocket.open_websocket_url(
                url,
                max_message_size=THEIR_LIMIT,
                receive_buffer_size=CHUNK,
                connect_timeout=STEP,
                disconnect_timeout=STEP,
            )
        )
        streams.append(ws._stream)
        return TrioWebsocketPeer(ws)

    async def _websockets_client(self, url: str) -> Peer:
        connect: Any = websockets_connect(
            url,
            compression="deflate" if self.peer_deflate else None,
            max_size=None,
            ping_interval=None,
            open_timeout=STEP,
            close_timeout=STEP,
            proxy=None,
        )
        return WebsocketsPeer(await self.stack.enter_async_context(connect))


async def _close_all(streams: list[trio.abc.Stream]) -> None:
    for stream in streams:
        await trio.aclose_forcefully(stream)


deflate_modes = pytest.mark.parametrize("deflate", [False, True], ids=["plain", "deflate"])


async def close_from_our_side(
    link: Link, code: int = 1000, reason: str = ""
) -> tuple[int | None, str]:
    """Run the closing handshake from our side; return the code and reason they received."""
    seen: list[tuple[int | None, str]] = []

    async def watch() -> None:
        seen.append(await link.peer.closed())

    async with trio.open_nursery() as nursery:
        nursery.start_soon(watch)
        await link.conn.close_gracefully(code, reason, timeout=STEP)
    return seen[0]


# -- messages -------------------------------------------------------------------------

MESSAGES = [
    pytest.param("héllo ☃ 𝄞 日本語", id="text-utf8"),
    pytest.param("", id="text-empty"),
    pytest.param(bytes(range(256)), id="binary"),
    pytest.param(b"", id="binary-empty"),
]


@deflate_modes
@pytest.mark.parametrize("data", MESSAGES)
async def test_message_both_ways(direction: Direction, deflate: bool, data: str | bytes) -> None:
    async with open_link(direction, deflate=deflate) as link:
        for _ in range(2):  # the second time, deflate reuses its context (context takeover)
            await link.conn.write_message(kind_of(data), data)
            assert await link.peer.recv() == data
            await link.peer.send(data)
            assert await link.conn.read_message() == (kind_of(data), data)
        assert await close_from_our_side(link) == (CloseCode.NORMAL_CLOSURE, "")


@pytest.mark.trio_timeout(BIG_TIMEOUT)
async def test_16mib_message_streamed_both_ways(direction: Direction) -> None:
    async with open_link(direction) as link:
        link.conn.set_read_limit(None)
        async with trio.open_nursery() as nursery:  # they read while we write
            nursery.start_soon(write_streamed, link.conn, MessageType.BINARY, BIG_DATA)
            assert digest(await link.peer.recv()) == digest(BIG_DATA)
        async with trio.open_nursery() as nursery:
            nursery.start_soon(link.peer.send, BIG_DATA)
            kind, size, sha, reads = await read_streamed(link.conn)
        assert (kind, size, sha) == (MessageType.BINARY, BIG, digest(BIG_DATA))
        assert reads > 1  # delivered as it arrived, not whole
        assert await close_from_our_side(link) == (CloseCode.NORMAL_CLOSURE, "")


# Frames of 7 bytes cut many of these characters in two.
FRAGMENTED_TEXT = "frag ☃ mént 𝄞 日本 " * 20


@deflate_modes
@pytest.mark.parametrize("kind", [MessageType.TEXT, MessageType.BINARY], ids=["text", "binary"])
async def test_fragmented_message_to_peer(
    direction: Direction, deflate: bool, kind: MessageType
) -> None:
    async with open_link(direction, deflate=deflate) as link:
        link.conn.write_buffer_size = 7
        data = FRAGMENTED_TEXT.encode()
        async with link.conn.next_writer(kind) as writer:
            for i in range(0, len(data), 50):
                await writer.write(data[i : i + 50])
        fragments = await link.peer.recv_fragments()
        if link.peer.sees_fragments:
            assert len(fragments) > 1
        expected = FRAGMENTED_TEXT if kind is MessageType.TEXT else data
        assert fragments[0][:0].join(fragments) == expected  # type: ignore[arg-type]
        assert await close_from_our_side(link) == (CloseCode.NORMAL_CLOSURE, "")


FRAGMENTS = ["héllo ", "☃ wörld ", "𝄞", "!"]


@deflate_modes
@pytest.mark.parametrize("streamed", [False, True], ids=["read_message", "next_reader"])
@pytest.mark.parametrize("kind", [MessageType.TEXT, MessageType.BINARY], ids=["text", "binary"])
async def test_fragmented_message_from_peer(
    direction: Direction, deflate: bool, streamed: bool, kind: MessageType
) -> None:
    if direction.library == "trio-websocket":
        # trio-websocket's send_message() always sends a whole message in one frame.
        pytest.skip("trio-websocket cannot send a fragmented message")
    async with open_link(direction, deflate=deflate) as link:
        text = "".join(FRAGMENTS)
        parts = FRAGMENTS if kind is MessageType.TEXT else [part.encode() for part in FRAGMENTS]
        async with trio.open_nursery() as nursery:
            # They ping between two fragments and wait for our Pong: we are reading.
            nursery.start_soon(link.peer.send_fragments, parts, b"between fragments")
            if streamed:
                got_kind, size, sha, reads = await read_streamed(link.conn)
                assert (got_kind, size, sha) == (kind, len(text.encode()), digest(text))
                assert reads > 1  # delivered as the fragments arrived
            else:
                expected = text if kind is MessageType.TEXT else text.encode()
                assert await link.conn.read_message() == (kind, expected)
        assert await close_from_our_side(link) == (CloseCode.NORMAL_CLOSURE, "")


# -- control frames -------------------------------------------------------------------

PINGS = [b"", b"are you there? \x00\xff \xe2\x98\x83", bytes(range(125))]


async def test_our_ping_gets_their_pong(direction: Direction) -> None:
    async with open_link(direction) as link:
        pongs: list[bytes] = []
        link.conn.set_pong_handler(pongs.append)
        for payload in PINGS:
            await link.conn.write_control(MessageType.PING, payload)
        await link.conn.write_message(MessageType.TEXT, "after the pings")
        assert await link.peer.recv() == "after the pings"
        await link.peer.send("reply")
        # The Pongs came before the reply: the read saw them first.
        assert await link.conn.read_message() == (MessageType.TEXT, "reply")
        assert pongs == PINGS
        assert await close_from_our_side(link) == (CloseCode.NORMAL_CLOSURE, "")


async def test_their_ping_gets_our_pong(direction: Direction) -> None:
    async with open_link(direction) as link:

        async def pings_then_message() -> None:
            for payload in PINGS:
                await link.peer.ping(payload)  # each waits for our Pong
            await link.peer.send("after the pings")

        async with trio.open_nursery() as nursery:
            nursery.start_soon(pings_then_message)
            # No background task answers for us: this read sends the Pongs.
            assert await link.conn.read_message() == (MessageType.TEXT, "after the pings")
        assert await close_from_our_side(link) == (CloseCode.NORMAL_CLOSURE, "")


# -- closing --------------------------------------------------------------------------

CLOSES = [
    pytest.param(4000, "bye ☃", id="4000-reason"),
    pytest.param(CloseCode.GOING_AWAY, "", id="1001"),
]


@pytest.mark.parametrize(("code", "reason"), CLOSES)
async def test_their_close_code_reaches_us(direction: Direction, code: int, reason: str) -> None:
    async with open_link(direction) as link:
        answers: list[int | None] = []

        async def close() -> None:
            answers.append(await link.peer.close(code, reason))

        start = trio.current_time()
        async with trio.open_nursery() as nursery:
            nursery.start_soon(close)
            with pytest.raises(CloseError) as info:
                await link.conn.read_message()  # reading, we echo their Close
        assert (info.value.code, info.value.text) == (code, reason)
        assert answers == [code]  # we echoed their code
        # Their close returned without waiting out its timeout (STEP): as a
        # server we closed the TCP connection, as a client we saw it closed.
        assert trio.current_time() - start < STEP / 2


@pytest.mark.parametrize(("code", "reason"), CLOSES)
async def test_our_close_code_reaches_them(direction: Direction, code: int, reason: str) -> None:
    async with open_link(direction) as link:
        assert await close_from_our_side(link, code, reason) == (code, reason)


# -- permessage-deflate (websockets only: trio-websocket skips) ---------------------

COMPRESSIBLE = "compressible ☃ " * 70_000  # 1.2 MB of UTF-8


async def test_permessage_deflate_compresses_both_ways(direction: Direction) -> None:
    async with open_link(direction, deflate=True, relay=True) as link:
        conn, peer = link.conn, link.peer
        conn.set_read_limit(None)  # 1.2 MB once inflated
        for _ in range(2):  # the second time with the window of the first (context takeover)
            await conn.write_message(MessageType.TEXT, COMPRESSIBLE)
            assert await peer.recv() == COMPRESSIBLE
            await peer.send(COMPRESSIBLE)
            assert await conn.read_message() == (MessageType.TEXT, COMPRESSIBLE)
        data = COMPRESSIBLE.encode()
        await write_streamed(conn, MessageType.BINARY, data)  # compressed and fragmented
        assert await peer.recv() == data
        assert await close_from_our_side(link) == (CloseCode.NORMAL_CLOSURE, "")
        # Over 3 MiB went each way; what crossed the wire is a few KiB.
        assert link.relay is not None
        assert link.relay.from_client < len(data) // 20
        assert link.relay.from_server < len(data) // 20


@pytest.mark.parametrize(("ours", "theirs"), [(True, False), (False, True)], ids=["ours", "theirs"])
async def test_permessage_deflate_needs_both_ends(
    direction: Direction, ours: bool, theirs: bool
) -> None:
    async with open_link(direction, deflate=ours, peer_deflate=theirs) as link:  # checks: none
        await link.conn.write_message(MessageType.TEXT, "plain")
        assert await link.peer.recv() == "plain"
        await link.peer.send("plain")
        assert await link.conn.read_message() == (MessageType.TEXT, "plain")
        assert await close_from_our_side(link) == (CloseCode.NORMAL_CLOSURE, "")


# -- our read limit -------------------------------------------------------------------

LIMIT = 1000


@deflate_modes
@pytest.mark.parametrize("kind", [MessageType.TEXT, MessageType.BINARY], ids=["text", "binary"])
@pytest.mark.parametrize("size", [LIMIT + 1, 4 * 1024 * 1024], ids=["limit+1", "4MiB"])
async def test_our_read_limit_closes_with_1009(
    direction: Direction, deflate: bool, kind: MessageType, size: int
) -> None:
    # With deflate, "x" * 4 MiB arrives as a few KiB: the inflated size counts.
    async with open_link(direction, deflate=deflate) as link:
        link.conn.set_read_limit(LIMIT)
        fill: str | bytes = "x" if kind is MessageType.TEXT else b"x"
        await link.peer.send(fill * LIMIT)
        assert await link.conn.read_message() == (kind, fill * LIMIT)
        seen: list[tuple[int | None, str]] = []

        async def send_too_much() -> None:
            with contextlib.suppress(Exception):  # they may find the connection closed
                await link.peer.send(fill * size)
            seen.append(await link.peer.closed())

        async with trio.open_nursery() as nursery:
            nursery.start_soon(send_too_much)
            with pytest.raises(ReadLimitError) as info:
                await link.conn.read_message()
            assert info.value.code == CloseCode.MESSAGE_TOO_BIG
        with pytest.raises(ReadLimitError):  # errors are permanent
            await link.conn.read_message()
        assert seen[0][0] == CloseCode.MESSAGE_TOO_BIG
