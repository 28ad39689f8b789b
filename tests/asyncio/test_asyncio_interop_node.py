"""wsproto_asyncio against Node's ``ws`` package, in both directions, over loopback.

Each test runs twice: our ``Dialer`` against a ``ws`` server, and a ``ws``
client against our ``Upgrader``. The Node side is ``tests/interop/node/peer.mjs``,
driven through ``tests/interop/node_peer.py`` as in ``tests/sync``: it echoes
every message, obeys command messages and reports what it saw, which the
tests await with a timeout. One Node process per role and set of options
serves the whole module; reports name the port of the connection's client
end, so each test sees its own connection's only. Each test is bounded by
``anyio.fail_after``, and the fixtures close our connections and kill the
Node processes, so no test can hang.

The tests need ``node`` and ``tests/interop/node/node_modules``: when either
is missing they FAIL, saying how to install them; ``WSPROTO_SKIP_NODE=1``
skips them instead.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import socket
import tracemalloc
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from typing import Any

import anyio
import pytest
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

from interop.node_peer import NodePeers, Reports, command_message, require_node
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


@pytest.fixture(scope="module")
def node_peers() -> Iterator[NodePeers]:
    """The module's Node peers; fails (or skips) when Node or ``ws`` is missing."""
    peers = NodePeers(require_node())
    yield peers
    peers.stop()


@dataclass
class Link:
    """Our end of a connection to Node, Node's reports about it, and the relay between."""

    conn: Conn
    node: Reports
    extensions: str  # what ws says it negotiated (Sec-WebSocket-Extensions)
    relay: Relay | None


class Connector:
    """``await connect(...)``: a new :class:`Link`; all it opened closes at teardown.

    Both ends enable permessage-deflate with ``deflate`` (Node with
    ``node_deflate``, if given); ``max_message_size`` is our read limit and
    ``max_payload`` Node's; ``relay`` puts a counting :class:`Relay` between
    the two.
    """

    def __init__(self, peers: NodePeers, we_dial: bool, stack: contextlib.AsyncExitStack) -> None:
        self.we_dial = we_dial
        self._peers = peers
        self._stack = stack

    async def __call__(
        self,
        *,
        deflate: bool = False,
        node_deflate: bool | None = None,
        max_payload: int | None = None,
        relay: bool = False,
        max_message_size: int | None = DEFAULT_MAX_MESSAGE_SIZE,
    ) -> Link:
        node_deflate = deflate if node_deflate is None else node_deflate
        options: tuple[str, ...] = ("--deflate",) if node_deflate else ()
        if max_payload is not None:
            options += ("--max-payload", str(max_payload))
        if self.we_dial:
            port = await asyncio.to_thread(self._peers.server_port, *options)
            via = await self._relay(port) if relay else None
            dialer = Dialer(
                handshake_timeout=TIMEOUT,
                enable_compression=deflate,
                max_message_size=max_message_size,
            )
            conn, _ = await dialer.dial(f"ws://127.0.0.1:{via.port if via else port}/")
            self._stack.push_async_callback(conn.close)
            client = conn.local_addr[1]
            peer = self._peers("server", *options)
        else:
            upgrader = Upgrader(
                handshake_timeout=TIMEOUT,
                enable_compression=deflate,
                max_message_size=max_message_size,
            )
            peer = self._peers("client", *options)

            async def connect(url: str) -> None:
                peer.connect(url)

            with socket.create_server(("127.0.0.1", 0)) as listener:
                port = listener.getsockname()[1]
                via = await self._relay(port) if relay else None
                url = f"ws://127.0.0.1:{via.port if via else port}/"
                conn, _ = await accept_upgrade(listener, upgrader, connect(url))
            self._stack.push_async_callback(conn.close)
            client = conn.remote_addr[1]
        # Through the relay, Node sees the relay's port instead of ours.
        node = peer.reports(client=via.other_end(client) if via else client)
        opened = await node.expect_async("open")
        # Both ends agree on permessage-deflate exactly when both enable it.
        negotiated = deflate and node_deflate
        assert [e.name for e in conn.protocol.extensions] == (
            ["permessage-deflate"] if negotiated else []
        )
        assert opened["extensions"].startswith("permessage-deflate") is negotiated
        return Link(conn, node, opened["extensions"], via)

    async def _relay(self, port: int) -> Relay:
        return await self._stack.enter_async_context(Relay(port))


@pytest.fixture(params=[True, False], ids=["dialer-to-ws-server", "ws-client-to-upgrader"])
async def connect(
    request: pytest.FixtureRequest, node_peers: NodePeers
) -> AsyncIterator[Connector]:
    async with contextlib.AsyncExitStack() as stack:
        yield Connector(node_peers, request.param, stack)
        with anyio.fail_after(TIMEOUT):
            await stack.aclose()


async def command(conn: Conn, do: str, **fields: Any) -> None:
    """Send the Node peer a command message."""
    await conn.write_message(MessageType.TEXT, command_message(do, **fields))


async def close_from_our_side(
    link: Link, code: int = CloseCode.NORMAL_CLOSURE, reason: str = ""
) -> tuple[int, str]:
    """Run the closing handshake from our side; return the code and reason Node got."""
    await link.conn.close_gracefully(code, reason, timeout=TIMEOUT)
    report = await link.node.expect_async("close")
    return report["code"], report["reason"]


# -- messages -------------------------------------------------------------------------


@deflate_modes
@pytest.mark.parametrize("data", MESSAGES)
async def test_message_round_trip(connect, deflate, data):
    with anyio.fail_after(TIMEOUT):
        link = await connect(deflate=deflate)
        kind = kind_of(data)
        for _ in range(2):  # the second time, deflate reuses its context (context takeover)
            await link.conn.write_message(kind, data)
            report = await link.node.expect_async("message")
            assert (report["binary"], report["sha256"]) == (
                kind is MessageType.BINARY,
                digest(data),
            )
            assert await link.conn.read_message() == (kind, data)  # the echo
        assert await close_from_our_side(link) == (CloseCode.NORMAL_CLOSURE, "")


@pytest.mark.parametrize(
    ("deflate", "kind"),
    [(False, MessageType.BINARY), (False, MessageType.TEXT), (True, MessageType.TEXT)],
    ids=["plain-binary", "plain-text", "deflate-text"],  # the binary one is noise: no deflating
)
async def test_16mib_message_streamed_both_ways(connect, deflate, kind):
    data = BIG_MESSAGES[kind]
    with anyio.fail_after(BIG_TIMEOUT):
        link = await connect(deflate=deflate)
        link.conn.set_read_limit(None)
        link.conn.write_buffer_size = CHUNK  # 256 frames: the default 4 KiB take twice as long
        async with asyncio.TaskGroup() as tasks:
            # Reading from the start, so that the echo streams (see the test below).
            reading = tasks.create_task(read_streamed(link.conn))
            await write_streamed(link.conn, kind, data)
            report = await link.node.expect_async("message", BIG_TIMEOUT)
        assert (report["size"], report["sha256"]) == (len(data), digest(data))
        # ws echoes it in one frame; we read it in pieces as they arrive.
        got_kind, size, sha, reads = reading.result()
        assert (got_kind, size, sha) == (kind, len(data), digest(data))
        assert reads > 1
        assert await close_from_our_side(link) == (CloseCode.NORMAL_CLOSURE, "")


STREAM_MEMORY = 4 * 1024 * 1024  # what reading a 16 MiB message may take, at most


@pytest.mark.parametrize(
    ("deflate", "arrives_first"),
    [
        pytest.param(False, False, id="plain-reader-waits"),
        # "s" * 16 MiB deflates 1000:1: inflating must stream too.
        pytest.param(True, False, id="deflate-reader-waits"),
        pytest.param(False, True, id="plain-message-arrives-first"),
        pytest.param(True, True, id="deflate-message-arrives-first"),
    ],
)
async def test_streamed_read_holds_little_memory(connect, deflate, arrives_first):
    with anyio.fail_after(BIG_TIMEOUT):
        link = await connect(deflate=deflate, max_message_size=None)
        conn = link.conn
        tracemalloc.start()  # Node runs in a process of its own: this counts our side only
        try:
            if arrives_first:
                await command(conn, "send", binary=True, size=BIG, fill=ord("s"))
                # Let as much arrive as will before anyone reads: the bridge
                # stops reading once 256 KiB wait unparsed, so TCP holds the rest.
                await asyncio.sleep(0.5)
                kind, size, sha, _ = await read_streamed(conn)
                sent = await link.node.expect_async("sent")
            else:
                async with asyncio.TaskGroup() as tasks:
                    reading = tasks.create_task(read_streamed(conn))
                    await command(conn, "send", binary=True, size=BIG, fill=ord("s"))
                    sent = await link.node.expect_async("sent")
                kind, size, sha, _ = reading.result()
            peak = tracemalloc.get_traced_memory()[1]
        finally:
            tracemalloc.stop()
        assert (kind, size, sha) == (MessageType.BINARY, BIG, sent["sha256"])
        assert peak < STREAM_MEMORY, f"{peak / 2**20:.1f} MiB held reading a 16 MiB message"


@deflate_modes
@kinds
async def test_fragmented_message_to_node(connect, deflate, kind):
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
        report = await link.node.expect_async("message")
        assert (report["size"], report["sha256"]) == (len(data), digest(data))
        expected = FRAGMENTED_TEXT if kind is MessageType.TEXT else data
        assert await conn.read_message() == (kind, expected)  # the echo, after the Pong
        assert pongs == [b"between our fragments"]
        assert await close_from_our_side(link) == (CloseCode.NORMAL_CLOSURE, "")


# Fragment borders cut "☃" (e2 98 83) and "𝄞" (f0 9d 84 9e) in the middle.
FRAGMENTS = [b"h\xc3\xa9llo \xe2", b"\x98", b"\x83 w\xc3\xb6rld \xf0\x9d", b"\x84\x9e", b"!"]


@deflate_modes
@pytest.mark.parametrize("streamed", [False, True], ids=["read_message", "next_reader"])
@kinds
async def test_fragmented_message_from_node(connect, deflate, streamed, kind):
    with anyio.fail_after(TIMEOUT):
        link = await connect(deflate=deflate)
        whole = b"".join(FRAGMENTS)
        # One message, a frame per part, and a Ping between the second and third.
        await command(
            link.conn,
            "fragments",
            binary=kind is MessageType.BINARY,
            parts=[part.hex() for part in FRAGMENTS],
            pingAfter=1,
        )
        if streamed:
            got_kind, size, sha, reads = await read_streamed(link.conn)
            assert (got_kind, size, sha) == (kind, len(whole), digest(whole))
            assert reads > 1  # delivered as the fragments arrived
        else:
            expected = whole.decode() if kind is MessageType.TEXT else whole
            assert await link.conn.read_message() == (kind, expected)
        # We answered the Ping in the middle of the message.
        assert (await link.node.expect_async("pong"))["data"] == b"between fragments".hex()
        assert await close_from_our_side(link) == (CloseCode.NORMAL_CLOSURE, "")


# -- control frames -------------------------------------------------------------------


async def test_our_ping_gets_nodes_pong(connect):
    with anyio.fail_after(TIMEOUT):
        link = await connect()
        pongs: list[bytes] = []
        link.conn.set_pong_handler(pongs.append)
        for payload in PINGS:
            await link.conn.write_control(MessageType.PING, payload)
        await link.conn.write_message(MessageType.TEXT, "after the pings")
        # ws answers each Ping as it reads it, before echoing the message behind.
        assert await link.conn.read_message() == (MessageType.TEXT, "after the pings")
        assert pongs == PINGS
        assert await close_from_our_side(link) == (CloseCode.NORMAL_CLOSURE, "")


async def test_nodes_ping_gets_our_pong(connect):
    with anyio.fail_after(TIMEOUT):
        link = await connect()
        for payload in PINGS:
            await command(link.conn, "ping", data=payload.hex())
            # Answered though nobody reads on our side (no message waits unread).
            assert (await link.node.expect_async("pong"))["data"] == payload.hex()
            # Node also tells us about each Pong, in a message.
            _, message = await link.conn.read_message()
            assert json.loads(message) == {"event": "pong", "data": payload.hex()}
        assert await close_from_our_side(link) == (CloseCode.NORMAL_CLOSURE, "")


# -- closing --------------------------------------------------------------------------


@pytest.mark.parametrize(("code", "reason"), CLOSES)
async def test_node_close_code_reaches_us(connect, code, reason):
    with anyio.fail_after(TIMEOUT):
        link = await connect()
        await command(link.conn, "close", code=code, reason=reason)
        with pytest.raises(CloseError) as info:
            await link.conn.read_message()
        assert (info.value.code, info.value.text) == (code, reason)
        assert (await link.node.expect_async("close"))["code"] == code  # our echo


async def test_node_close_without_code_reaches_us_as_1005(connect):
    with anyio.fail_after(TIMEOUT):
        link = await connect()
        await command(link.conn, "close")
        with pytest.raises(CloseError) as info:
            await link.conn.read_message()
        assert info.value.code == CloseCode.NO_STATUS_RCVD
        assert (await link.node.expect_async("close"))["code"] == CloseCode.NO_STATUS_RCVD


@pytest.mark.parametrize(("code", "reason"), CLOSES)
async def test_our_close_code_reaches_node(connect, code, reason):
    with anyio.fail_after(TIMEOUT):
        link = await connect()
        assert await close_from_our_side(link, code, reason) == (code, reason)


async def test_our_close_without_code_reaches_node_as_1005(connect):
    with anyio.fail_after(TIMEOUT):
        link = await connect()
        await link.conn.write_control(MessageType.CLOSE, b"")
        with pytest.raises(CloseError) as info:
            await link.conn.read_message()
        assert info.value.code == CloseCode.NO_STATUS_RCVD  # Node's echo
        assert (await link.node.expect_async("close"))["code"] == CloseCode.NO_STATUS_RCVD


# -- permessage-deflate ---------------------------------------------------------------


async def test_permessage_deflate_compresses_both_ways(connect):
    with anyio.fail_after(TIMEOUT):
        link = await connect(deflate=True, relay=True)  # both ends' views checked there
        assert link.extensions.split(";")[0] == "permessage-deflate"
        conn = link.conn
        for _ in range(2):  # the second time with the window of the first (context takeover)
            await conn.write_message(MessageType.TEXT, COMPRESSIBLE)
            report = await link.node.expect_async("message")
            assert report["sha256"] == digest(COMPRESSIBLE)
            assert await conn.read_message() == (MessageType.TEXT, COMPRESSIBLE)
        data = COMPRESSIBLE.encode()
        await write_streamed(conn, MessageType.BINARY, data)  # compressed and fragmented
        assert (await link.node.expect_async("message"))["sha256"] == digest(data)
        assert await conn.read_message() == (MessageType.BINARY, data)
        assert await close_from_our_side(link) == (CloseCode.NORMAL_CLOSURE, "")
        # Some 3 MB went each way; what crossed the wire is a few KB.
        assert link.relay is not None
        assert link.relay.from_client < len(data) // 20
        assert link.relay.from_server < len(data) // 20


@pytest.mark.parametrize(("ours", "nodes"), [(True, False), (False, True)], ids=["ours", "nodes"])
async def test_permessage_deflate_needs_both_ends(connect, ours, nodes):
    with anyio.fail_after(TIMEOUT):
        link = await connect(deflate=ours, node_deflate=nodes)  # checks neither negotiated it
        assert link.extensions == ""
        await link.conn.write_message(MessageType.TEXT, "plain")
        assert await link.conn.read_message() == (MessageType.TEXT, "plain")
        assert await close_from_our_side(link) == (CloseCode.NORMAL_CLOSURE, "")


# -- our read limit -------------------------------------------------------------------


@deflate_modes
@kinds
@pytest.mark.parametrize("size", [LIMIT + 1, BIG], ids=["limit+1", "16MiB"])
async def test_our_read_limit_closes_with_1009(connect, deflate, kind, size):
    # With deflate, "x" * 1001 arrives as a few bytes: the inflated size counts,
    # and 16 MiB of "x", some 16 KiB compressed, are refused early.
    with anyio.fail_after(TIMEOUT):
        link = await connect(deflate=deflate, max_message_size=LIMIT)
        binary = kind is MessageType.BINARY
        await command(link.conn, "send", binary=binary, size=LIMIT, fill=ord("x"))
        assert await link.conn.read_message() == (kind, b"x" * LIMIT if binary else "x" * LIMIT)
        await command(link.conn, "send", binary=binary, size=size, fill=ord("x"))
        with pytest.raises(ReadLimitError):
            await link.conn.read_message()
        with pytest.raises(ReadLimitError):  # errors are permanent
            await link.conn.read_message()
        report = await link.node.expect_async("close")
        # Node got our 1009, and no TCP reset: we read on while it was still sending.
        resets = [seen for seen in link.node.seen if seen["event"] == "socket-error"]
        assert (report["code"], resets) == (CloseCode.MESSAGE_TOO_BIG, [])


@deflate_modes
@pytest.mark.parametrize("size", [LIMIT + 1, BIG], ids=["limit+1", "16MiB"])
async def test_nodes_read_limit_closes_with_1009(connect, deflate, size):
    with anyio.fail_after(TIMEOUT):
        link = await connect(deflate=deflate, max_payload=LIMIT)
        await link.conn.write_message(MessageType.BINARY, b"y" * LIMIT)
        assert await link.conn.read_message() == (MessageType.BINARY, b"y" * LIMIT)
        with contextlib.suppress(ConnectionError, CloseSentError):
            # The Close may come, and the connection end, before all is sent.
            await link.conn.write_message(MessageType.BINARY, b"y" * size)
        with pytest.raises(CloseError) as info:
            await link.conn.read_message()
        assert info.value.code == CloseCode.MESSAGE_TOO_BIG
        report = await link.node.expect_async("error")
        assert report["code"] == "WS_ERR_UNSUPPORTED_MESSAGE_LENGTH"
