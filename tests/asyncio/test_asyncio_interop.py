"""wsproto_asyncio against the ``websockets`` and ``aiohttp`` packages, both directions.

Each test runs four times: our ``Dialer`` against a ``websockets`` server and
an ``aiohttp.web`` server, and a ``websockets`` client and an ``aiohttp``
client against our ``Upgrader``. Both peers run on the test's event loop; a
:class:`Peer` gives the test the same few operations on either library, so
the tests read the same for all four. Each test is bounded by
``anyio.fail_after``, and the ``connect`` fixture closes everything it opened.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from typing import Any

import aiohttp
import anyio
import pytest
from aiohttp import web
from asyncio_helpers import (
    BIG,
    BIG_MESSAGES,
    BIG_TIMEOUT,
    CHUNK,
    CLOSES,
    COMPRESSIBLE,
    FRAGMENTED_TEXT,
    LIMIT,
    MESSAGES,
    PINGS,
    TIMEOUT,
    Relay,
    accept_upgrade,
    deflate_modes,
    digest,
    kind_of,
    kinds,
    read_streamed,
    write_streamed,
)
from websockets.asyncio.client import ClientConnection
from websockets.asyncio.client import connect as websockets_connect
from websockets.asyncio.server import ServerConnection
from websockets.asyncio.server import serve as websockets_serve
from websockets.protocol import State

from wsproto_asyncio import (
    CloseCode,
    CloseError,
    CloseSentError,
    Conn,
    Dialer,
    MessageType,
    ReadLimitError,
    Upgrader,
)
from wsproto_core import DEFAULT_MAX_MESSAGE_SIZE

pytestmark = pytest.mark.anyio

DEFLATE = ["permessage-deflate"]
CLOSE_TIMEOUT = 2.0  # how long the peers wait for our Close, well within the fixture's TIMEOUT


# -- their end, behind one interface ----------------------------------------------


class Peer:
    """Their end of a connection: the operations the tests need, on any library."""

    #: Whether :meth:`recv_fragments` shows the frames of a fragmented message.
    sees_fragments = False

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
        """Run the closing handshake from the peer's side; return the code of our answer."""
        raise NotImplementedError

    async def closed(self) -> tuple[int | None, str | None]:
        """Wait for the connection to close; return the code and reason the peer received."""
        raise NotImplementedError


class WebsocketsPeer(Peer):
    """A connection of ``websockets.asyncio``: it reads in the background, as we do."""

    sees_fragments = True

    def __init__(self, ws: Any) -> None:
        self.ws = ws

    @property
    def extensions(self) -> list[str]:
        return [extension.name for extension in self.ws.protocol.extensions]

    async def send(self, data: str | bytes) -> None:
        await self.ws.send(data)

    async def send_fragments(self, parts: Sequence[str | bytes], ping: bytes) -> None:
        pongs = []

        async def fragments() -> AsyncIterator[str | bytes]:
            for i, part in enumerate(parts):
                yield part
                if i == 0:
                    pongs.append(await self.ws.ping(ping))

        await self.ws.send(fragments())
        await pongs[0]

    async def recv(self) -> str | bytes:
        return await self.ws.recv()

    async def recv_fragments(self) -> list[str | bytes]:
        return [fragment async for fragment in self.ws.recv_streaming()]

    async def ping(self, payload: bytes) -> None:
        await (await self.ws.ping(payload))

    async def close(self, code: int, reason: str) -> int | None:
        await self.ws.close(code, reason)
        return self.ws.close_code

    async def closed(self) -> tuple[int | None, str | None]:
        await self.ws.wait_closed()
        return self.ws.close_code, self.ws.close_reason


class AiohttpPeer(Peer):
    """A ``WebSocketResponse`` or ``ClientWebSocketResponse``: it reads when asked to.

    With ``autoping`` (the default), aiohttp answers Pings but hides Pongs;
    :meth:`ping` needs a peer opened with ``autoping=False``.
    """

    def __init__(self, ws: Any, autoping: bool) -> None:
        self.ws = ws
        self.autoping = autoping

    @property
    def extensions(self) -> list[str]:
        return DEFLATE if self.ws.compress else []

    async def send(self, data: str | bytes) -> None:
        if isinstance(data, str):
            await self.ws.send_str(data)
        else:
            await self.ws.send_bytes(data)

    async def recv(self) -> str | bytes:
        message = await self.ws.receive()
        assert message.type in (aiohttp.WSMsgType.TEXT, aiohttp.WSMsgType.BINARY), message
        return message.data

    async def ping(self, payload: bytes) -> None:
        assert not self.autoping, "aiohttp shows Pongs only with autoping=False"
        await self.ws.ping(payload)
        message = await self.ws.receive()
        assert (message.type, message.data) == (aiohttp.WSMsgType.PONG, payload)

    async def close(self, code: int, reason: str) -> int | None:
        await self.ws.close(code=code, message=reason.encode())
        return self.ws.close_code

    async def closed(self) -> tuple[int | None, str | None]:
        message = await self.ws.receive()  # with autoclose, aiohttp answers it
        if message.type is aiohttp.WSMsgType.ERROR:
            # aiohttp failed the connection, and ran the closing handshake with our answer.
            return self.ws.close_code, None
        assert message.type is aiohttp.WSMsgType.CLOSE, message
        return message.data, message.extra


# -- connecting, in both directions --------------------------------------------------


@dataclass
class Link:
    """Our end of a connection, their end, and the relay between, if asked for."""

    conn: Conn
    peer: Peer
    relay: Relay | None


@dataclass(frozen=True)
class PeerOptions:
    deflate: bool
    autoping: bool
    max_size: int | None  # their read limit; None: none


class Connector:
    """``await connect(...)``: a new :class:`Link`; all it opened closes at teardown.

    Both ends enable permessage-deflate with ``deflate`` (their end with
    ``peer_deflate``, if given); ``autoping`` is aiohttp's option (``websockets``
    always answers Pings and shows Pongs); ``relay`` puts a counting
    :class:`Relay` between the two; ``max_message_size`` is our read limit,
    and ``peer_max_size`` theirs (by default, none).
    """

    def __init__(self, library: str, we_dial: bool, stack: contextlib.AsyncExitStack) -> None:
        self.library = library
        self.we_dial = we_dial
        self._stack = stack

    async def __call__(
        self,
        *,
        deflate: bool = False,
        peer_deflate: bool | None = None,
        autoping: bool = True,
        relay: bool = False,
        max_message_size: int | None = DEFAULT_MAX_MESSAGE_SIZE,
        peer_max_size: int | None = None,
    ) -> Link:
        peer_deflate = deflate if peer_deflate is None else peer_deflate
        options = PeerOptions(peer_deflate, autoping, peer_max_size)
        if self.we_dial:
            serve = (
                self._websockets_server if self.library == "websockets" else self._aiohttp_server
            )
            port, accepted = await serve(options)
            via = await self._relay(port) if relay else None
            dialer = Dialer(
                handshake_timeout=TIMEOUT,
                enable_compression=deflate,
                max_message_size=max_message_size,
            )
            conn, response = await dialer.dial(f"ws://127.0.0.1:{via.port if via else port}/")
            self._stack.push_async_callback(conn.close)
            # The extensions of the server's answer are those the core runs.
            assert [e.name for e in response.extensions] == [
                e.name for e in conn.protocol.extensions
            ]
            peer = await accepted.get()
        else:
            upgrader = Upgrader(
                handshake_timeout=TIMEOUT,
                enable_compression=deflate,
                max_message_size=max_message_size,
            )
            client = (
                self._websockets_client if self.library == "websockets" else self._aiohttp_client
            )
            with socket.create_server(("127.0.0.1", 0)) as listener:
                port = listener.getsockname()[1]
                via = await self._relay(port) if relay else None
                url = f"ws://127.0.0.1:{via.port if via else port}/"
                conn, peer = await accept_upgrade(listener, upgrader, client(url, options))
            self._stack.push_async_callback(conn.close)
        negotiated = DEFLATE if deflate and peer_deflate else []
        assert [extension.name for extension in conn.protocol.extensions] == negotiated
        assert peer.extensions == negotiated
        return Link(conn, peer, via)

    async def _relay(self, port: int) -> Relay:
        return await self._stack.enter_async_context(Relay(port))

    async def _websockets_server(self, options: PeerOptions) -> tuple[int, asyncio.Queue[Peer]]:
        accepted: asyncio.Queue[Peer] = asyncio.Queue()

        async def handler(ws: ServerConnection) -> None:
            accepted.put_nowait(WebsocketsPeer(ws))
            await ws.wait_closed()  # returning would close the connection

        server = await self._stack.enter_async_context(
            websockets_serve(
                handler,
                "127.0.0.1",
                0,
                compression="deflate" if options.deflate else None,
                max_size=options.max_size,
                ping_interval=None,
                close_timeout=CLOSE_TIMEOUT,
            )
        )
        return server.sockets[0].getsockname()[1], accepted

    async def _websockets_client(self, url: str, options: PeerOptions) -> Peer:
        ws = await websockets_connect(
            url,
            compression="deflate" if options.deflate else None,
            max_size=options.max_size,
            ping_interval=None,
            open_timeout=TIMEOUT,
            close_timeout=CLOSE_TIMEOUT,
        )
        self._stack.push_async_callback(_close_websockets_client, ws)
        return WebsocketsPeer(ws)

    async def _aiohttp_server(self, options: PeerOptions) -> tuple[int, asyncio.Queue[Peer]]:
        accepted: asyncio.Queue[Peer] = asyncio.Queue()
        finished = asyncio.Event()

        async def handler(request: web.Request) -> web.WebSocketResponse:
            ws = web.WebSocketResponse(
                timeout=CLOSE_TIMEOUT,
                compress=options.deflate,
                max_msg_size=options.max_size or 0,  # 0: no limit
                autoping=options.autoping,
            )
            await ws.prepare(request)
            accepted.put_nowait(AiohttpPeer(ws, options.autoping))
            await finished.wait()  # returning would close the connection
            return ws

        app = web.Application()
        app.router.add_get("/", handler)
        runner = web.AppRunner(app, shutdown_timeout=1.0)
        await runner.setup()
        self._stack.push_async_callback(runner.cleanup)
        self._stack.callback(finished.set)  # before the cleanup waits for the handlers
        await web.TCPSite(runner, "127.0.0.1", 0).start()
        return runner.addresses[0][1], accepted

    async def _aiohttp_client(self, url: str, options: PeerOptions) -> Peer:
        session = await self._stack.enter_async_context(aiohttp.ClientSession())
        ws = await session.ws_connect(
            url,
            compress=15 if options.deflate else 0,
            max_msg_size=options.max_size or 0,  # 0: no limit
            autoping=options.autoping,
            timeout=aiohttp.ClientWSTimeout(ws_close=CLOSE_TIMEOUT),
        )
        self._stack.push_async_callback(ws.close)
        return AiohttpPeer(ws, options.autoping)


async def _close_websockets_client(ws: ClientConnection) -> None:
    # On Python 3.11, closing a closed connection can fail: websockets aborts
    # the transport, and asyncio's abort() breaks on a transport that closed
    # once its write buffer drained (its _loop is None by then).
    if ws.state is not State.CLOSED:
        await ws.close()


@pytest.fixture(
    params=[("websockets", True), ("websockets", False), ("aiohttp", True), ("aiohttp", False)],
    ids=[
        "dialer-to-websockets",
        "websockets-to-upgrader",
        "dialer-to-aiohttp",
        "aiohttp-to-upgrader",
    ],
)
async def connect(request: pytest.FixtureRequest) -> AsyncIterator[Connector]:
    library, we_dial = request.param
    async with contextlib.AsyncExitStack() as stack:
        yield Connector(library, we_dial, stack)
        # Teardown, bounded like the tests: first ours closes, then theirs.
        with anyio.fail_after(TIMEOUT):
            await stack.aclose()


async def close_from_our_side(
    link: Link, code: int = 1000, reason: str = ""
) -> tuple[int | None, str | None]:
    """Run the closing handshake from our side; return the code and reason the peer got."""
    async with asyncio.TaskGroup() as tasks:
        seen = tasks.create_task(link.peer.closed())
        await link.conn.close_gracefully(code, reason, timeout=TIMEOUT)
    return seen.result()


# -- messages -------------------------------------------------------------------------


@deflate_modes
@pytest.mark.parametrize("data", MESSAGES)
async def test_message_both_ways(connect, deflate, data):
    with anyio.fail_after(TIMEOUT):
        link = await connect(deflate=deflate)
        for _ in range(2):  # the second time, deflate reuses its context (context takeover)
            await link.conn.write_message(kind_of(data), data)
            assert await link.peer.recv() == data
            await link.peer.send(data)
            assert await link.conn.read_message() == (kind_of(data), data)
        assert await close_from_our_side(link) == (CloseCode.NORMAL_CLOSURE, "")


@kinds
async def test_16mib_message_streamed_both_ways(connect, kind):
    data = BIG_MESSAGES[kind]
    message = data.decode() if kind is MessageType.TEXT else data
    with anyio.fail_after(BIG_TIMEOUT):
        link = await connect()
        link.conn.set_read_limit(None)
        # Frames of 64 KiB: websockets refuses a message of over 4096 frames
        # (WEBSOCKETS_MAX_FRAGMENTS) with 1009, so the default 4 KiB frames
        # would carry no more than 16 MiB.
        link.conn.write_buffer_size = CHUNK
        # Each side reads while the other writes: both stop reading the network
        # while what they read waits for the application.
        async with asyncio.TaskGroup() as tasks:
            received = tasks.create_task(link.peer.recv())
            await write_streamed(link.conn, kind, data)
        assert digest(received.result()) == digest(data)
        async with asyncio.TaskGroup() as tasks:
            tasks.create_task(link.peer.send(message))
            got_kind, size, sha, reads = await read_streamed(link.conn)
        assert (got_kind, size, sha) == (kind, len(data), digest(data))
        assert reads > 1  # delivered as it arrived, not whole
        assert await close_from_our_side(link) == (CloseCode.NORMAL_CLOSURE, "")


@deflate_modes
@kinds
async def test_fragmented_message_to_peer(connect, deflate, kind):
    with anyio.fail_after(TIMEOUT):
        link = await connect(deflate=deflate)
        conn = link.conn
        pongs: list[bytes] = []
        conn.set_pong_handler(pongs.append)
        conn.write_buffer_size = 7  # frames of 7 bytes: many cut a character in two
        data = FRAGMENTED_TEXT.encode()
        async with conn.next_writer(kind) as writer:
            for i in range(0, len(data), 50):
                await writer.write(data[i : i + 50])
                if i == 0:  # a control frame may come between two fragments
                    await conn.write_control(MessageType.PING, b"between our fragments")
        fragments = await link.peer.recv_fragments()
        if link.peer.sees_fragments:
            assert len(fragments) > 1
        if kind is MessageType.TEXT:
            assert "".join(fragments) == FRAGMENTED_TEXT
        else:
            assert b"".join(fragments) == data
        await link.peer.send("received")
        assert await conn.read_message() == (MessageType.TEXT, "received")
        assert pongs == [b"between our fragments"]
        assert await close_from_our_side(link) == (CloseCode.NORMAL_CLOSURE, "")


FRAGMENTS = ["héllo ", "☃ wörld ", "𝄞", "!"]


@deflate_modes
@pytest.mark.parametrize("streamed", [False, True], ids=["read_message", "next_reader"])
@kinds
async def test_fragmented_message_from_peer(connect, deflate, streamed, kind):
    if connect.library == "aiohttp":
        # aiohttp's WebSocketWriter.send_frame sets FIN on every frame: it has no
        # way to send a message in fragments.
        pytest.skip("aiohttp cannot send a fragmented message")
    with anyio.fail_after(TIMEOUT):
        link = await connect(deflate=deflate)
        text = "".join(FRAGMENTS)
        parts = FRAGMENTS if kind is MessageType.TEXT else [part.encode() for part in FRAGMENTS]
        async with asyncio.TaskGroup() as tasks:
            # The peer pings between two fragments and waits for our Pong.
            tasks.create_task(link.peer.send_fragments(parts, b"between fragments"))
            if streamed:
                got_kind, size, sha, reads = await read_streamed(link.conn)
                assert (got_kind, size, sha) == (kind, len(text.encode()), digest(text))
                assert reads > 1  # delivered as the fragments arrived
            else:
                expected = text if kind is MessageType.TEXT else text.encode()
                assert await link.conn.read_message() == (kind, expected)
        assert await close_from_our_side(link) == (CloseCode.NORMAL_CLOSURE, "")


# -- control frames -------------------------------------------------------------------


async def test_our_ping_gets_their_pong(connect):
    with anyio.fail_after(TIMEOUT):
        link = await connect()
        pongs: list[bytes] = []
        link.conn.set_pong_handler(pongs.append)
        for payload in PINGS:
            await link.conn.write_control(MessageType.PING, payload)
        await link.conn.write_message(MessageType.TEXT, "after the pings")
        # The peer answered the Pings as it read them, before the message behind.
        assert await link.peer.recv() == "after the pings"
        await link.peer.send("reply")
        assert await link.conn.read_message() == (MessageType.TEXT, "reply")
        assert pongs == PINGS
        assert await close_from_our_side(link) == (CloseCode.NORMAL_CLOSURE, "")


async def test_their_ping_gets_our_pong(connect):
    with anyio.fail_after(TIMEOUT):
        link = await connect(autoping=False)
        for payload in PINGS:
            await link.peer.ping(payload)  # answered though nobody reads on our side
        await link.peer.send("after the pings")
        assert await link.conn.read_message() == (MessageType.TEXT, "after the pings")
        assert await close_from_our_side(link) == (CloseCode.NORMAL_CLOSURE, "")


# -- closing --------------------------------------------------------------------------


@pytest.mark.parametrize(("code", "reason"), CLOSES)
async def test_their_close_code_reaches_us(connect, code, reason):
    with anyio.fail_after(TIMEOUT):
        link = await connect()
        async with asyncio.TaskGroup() as tasks:
            answer = tasks.create_task(link.peer.close(code, reason))
            with pytest.raises(CloseError) as info:
                await link.conn.read_message()
        assert (info.value.code, info.value.text) == (code, reason)
        assert answer.result() == code  # we echoed their code


@pytest.mark.parametrize(("code", "reason"), CLOSES)
async def test_our_close_code_reaches_them(connect, code, reason):
    with anyio.fail_after(TIMEOUT):
        link = await connect()
        assert await close_from_our_side(link, code, reason) == (code, reason)


# -- permessage-deflate ---------------------------------------------------------------


async def test_permessage_deflate_compresses_both_ways(connect):
    with anyio.fail_after(TIMEOUT):
        link = await connect(deflate=True, relay=True)  # both ends' views checked there
        conn, peer = link.conn, link.peer
        for _ in range(2):  # the second time with the window of the first (context takeover)
            await conn.write_message(MessageType.TEXT, COMPRESSIBLE)
            assert await peer.recv() == COMPRESSIBLE
            await peer.send(COMPRESSIBLE)
            assert await conn.read_message() == (MessageType.TEXT, COMPRESSIBLE)
        data = COMPRESSIBLE.encode()
        await write_streamed(conn, MessageType.BINARY, data)  # compressed and fragmented
        assert await peer.recv() == data
        assert await close_from_our_side(link) == (CloseCode.NORMAL_CLOSURE, "")
        # Some 3 MB went each way; what crossed the wire is a few KB.
        assert link.relay is not None
        assert link.relay.from_client < len(data) // 20
        assert link.relay.from_server < len(data) // 20


@pytest.mark.parametrize(("ours", "theirs"), [(True, False), (False, True)], ids=["ours", "theirs"])
async def test_permessage_deflate_needs_both_ends(connect, ours, theirs):
    with anyio.fail_after(TIMEOUT):
        link = await connect(deflate=ours, peer_deflate=theirs)  # checks neither negotiated it
        await link.conn.write_message(MessageType.TEXT, "plain")
        assert await link.peer.recv() == "plain"
        await link.peer.send("plain")
        assert await link.conn.read_message() == (MessageType.TEXT, "plain")
        assert await close_from_our_side(link) == (CloseCode.NORMAL_CLOSURE, "")


# -- our read limit -------------------------------------------------------------------


@deflate_modes
@kinds
@pytest.mark.parametrize("size", [LIMIT + 1, 4 * 1024 * 1024], ids=["limit+1", "4MiB"])
async def test_our_read_limit_closes_with_1009(connect, deflate, kind, size):
    # With deflate, "x" * 1001 arrives as a few bytes: the inflated size counts.
    with anyio.fail_after(TIMEOUT):
        link = await connect(deflate=deflate, max_message_size=LIMIT)
        fill = "x" if kind is MessageType.TEXT else b"x"
        await link.peer.send(fill * LIMIT)
        assert await link.conn.read_message() == (kind, fill * LIMIT)
        async with asyncio.TaskGroup() as tasks:
            tasks.create_task(link.peer.send(fill * size))
            with pytest.raises(ReadLimitError):
                await link.conn.read_message()
        with pytest.raises(ReadLimitError):  # errors are permanent
            await link.conn.read_message()
        code, _ = await link.peer.closed()
        assert code == CloseCode.MESSAGE_TOO_BIG


@deflate_modes
@pytest.mark.parametrize("size", [LIMIT + 1, BIG], ids=["limit+1", "16MiB"])
async def test_their_read_limit_closes_with_1009(connect, deflate, size):
    with anyio.fail_after(TIMEOUT):
        link = await connect(deflate=deflate, peer_max_size=LIMIT)
        # One byte under: uncompressed, aiohttp refuses LIMIT bytes already (>=, not >).
        await link.conn.write_message(MessageType.BINARY, b"y" * (LIMIT - 1))
        assert await link.peer.recv() == b"y" * (LIMIT - 1)
        async with asyncio.TaskGroup() as tasks:
            tasks.create_task(link.peer.closed())  # aiohttp acts only when it reads
            with contextlib.suppress(ConnectionError, CloseSentError):
                # The Close may come, and the connection end, before all is sent.
                await link.conn.write_message(MessageType.BINARY, b"y" * size)
            with pytest.raises(CloseError) as info:
                await link.conn.read_message()
        assert info.value.code == CloseCode.MESSAGE_TOO_BIG
