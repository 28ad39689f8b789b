"""Interoperability, both directions, for every adapter: one matrix over loopback.

Every test runs once per pair: each adapter's real ``serve()`` with a client
of each peer library (``websockets`` sync and asyncio, the ``wsproto``
package, ``aiohttp``, Node's ``ws``), and each adapter's ``Dialer`` with a
server of each. The client drives the exchange; the server echoes, obeys
command messages and reports what it saw (see ``peers.py``), so one
scenario, written once, checks both ends of every pair:

* messages: text (with 2-, 3- and 4-byte characters), binary and empty
  ones, and some compressible ones twice, plain and with permessage-deflate
  negotiated by both ends (checked on both);
* a 4 MiB message each way, binary (noise) and text, checked by SHA-256,
  plain and compressed;
* a fragmented message each way, text cut inside characters where the
  sender's API allows it, with a Ping between two fragments, plain and
  compressed;
* a Ping each way, answered with its Pong (one with the largest payload);
* a Close with a code and a reason each way (one with the longest reason);

and every test but the closing ones ends with a normal closing handshake
that the server sees. Servers live for the module, in threads (or Node's
process); clients run in the test thread, under ``asyncio.run`` or
``trio.run`` for the async ones. Each scenario is bounded by a timeout.

What a peer cannot do is skipped, saying why (aiohttp has no way to send a
fragmented message); what a peer gets wrong is a strict xfail, saying whose
bug it is (the wsproto package and a Ping between compressed fragments).

Node's tests need ``node`` and ``tests/interop/node/node_modules``: without
node they skip, except under ``CI``, where they fail; ``WSPROTO_SKIP_NODE=1``
skips them.
"""

from __future__ import annotations

import logging
import random
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass
from typing import Any

import pytest

from interop.peers import (
    BETWEEN,
    BIG_TIMEOUT,
    CLIENTS,
    DEFLATE,
    OUR_ADAPTERS,
    SERVERS,
    TIMEOUT,
    Client,
    NodeServerReports,
    Reports,
    World,
    bounded,
    cleaning_up,
    command,
    digest,
    is_pong_notice,
    off_loop,
    run_client,
)
from wsproto_core import CloseCode

OURS = [f"ours-{adapter}" for adapter in OUR_ADAPTERS]
PEERS = ["websockets-sync", "websockets-asyncio", "wsproto", "aiohttp", "node"]


@dataclass(frozen=True)
class Pair:
    client: str
    server: str

    def __str__(self) -> str:
        return f"{self.client}-to-{self.server}"


PAIRS = [Pair(peer, ours) for ours in OURS for peer in PEERS] + [
    Pair(ours, peer) for ours in OURS for peer in PEERS
]

MESSAGES: list[str | bytes] = [
    "hello",
    "héllo wörld ☃ 日本語 𝄞 🎉",  # 2-, 3- and 4-byte (astral) characters
    "",
    bytes(range(256)),
    b"",
    "compressible ☃ 𝄞 " * 5000,  # twice: with deflate, the second uses the first's window
    "compressible ☃ 𝄞 " * 5000,
    bytes(range(16)) * 5000,
]

BIG = 4 * 1024 * 1024
BIG_MESSAGES: dict[str, str | bytes] = {
    "binary": random.Random(6455).randbytes(BIG),  # incompressible noise
    "text": "line ☃ 𝄞 " * (BIG // 14),  # 14 bytes a line: pieces cut characters
}

#: Sent in frames of 7 bytes, which cut many of these characters in two.
FRAGMENTED_TEXT = "frag ☃ mént 𝄞 日本 🎉 " * 12
FRAME = 7

CLIENT_PING = bytes(range(125))  # the largest control payload
SERVER_PING = b"server ping \x00\xff"
CLIENT_CLOSE = (4001, "client says bye ☃ 𝄞")
SERVER_CLOSE = (4002, "𝄞" * 30 + "bye")  # the longest reason: 123 bytes

#: A bug of the wsproto package (1.3.2), not ours: see python-hyper/wsproto#205.
WSPROTO_CONTROL_FRAME_BUG = (
    "wsproto (the package, 1.3.2) corrupts a compressed message with a control frame "
    "between its fragments: PerMessageDeflate.frame_inbound_complete() resets the "
    "message's compression state on the Ping, so it passes the next fragments through "
    "still compressed (python-hyper/wsproto#205)"
)

deflate_modes = pytest.mark.parametrize("deflate", [False, True], ids=["plain", "deflate"])
kinds = pytest.mark.parametrize("kind", ["text", "binary"])


# -- the pairs, and running one -------------------------------------------------------------


@pytest.fixture(scope="module")
def world() -> Iterator[World]:
    """The servers (and Node processes) of the module; all stopped at its end."""
    world = World()
    yield world
    world.stop()


@pytest.fixture(autouse=True)
def _no_logged_errors() -> Iterator[None]:
    """Fail a test during which anything (a server, a handler, asyncio) logged an error."""
    records: list[logging.LogRecord] = []
    handler = logging.Handler(logging.ERROR)
    handler.emit = records.append  # type: ignore[method-assign]
    root = logging.getLogger()
    root.addHandler(handler)
    try:
        yield
    finally:
        root.removeHandler(handler)
    logged = [f"{record.name}: {record.getMessage()}" for record in records]
    assert not logged, f"errors were logged: {logged}"


@dataclass
class Link:
    """A running pair: the client, and the server's reports about its connection."""

    client: Client
    reports: Reports | NodeServerReports
    runner: str

    async def expect(self, event: str, timeout: float = TIMEOUT) -> dict[str, Any]:
        """The server's next report of kind ``event`` (waiting in a thread if a loop runs here)."""
        return await off_loop(self.runner, self.reports.expect, event, timeout)


Scenario = Callable[[Link], Awaitable[None]]


class Connector:
    """Runs a scenario on a new connection of one pair."""

    def __init__(self, pair: Pair, world: World, node: pytest.Item) -> None:
        self.pair = pair
        self.world = world
        self._node = node

    def xfail(self, reason: str) -> None:
        """Mark this test as failing, strictly: a fix in a peer makes it fail (XPASS)."""
        self._node.add_marker(pytest.mark.xfail(strict=True, reason=reason))

    def skip_unless_client_fragments(self) -> None:
        client = CLIENTS[self.pair.client]
        if not client.sends_fragments:
            pytest.skip(client.why_not_fragments)

    def skip_unless_server_fragments(self) -> None:
        server = SERVERS[self.pair.server]
        if not server.can_fragment:
            pytest.skip(server.why_not_fragments)

    def run(self, scenario: Scenario, *, deflate: bool = False, timeout: float = TIMEOUT) -> None:
        """Connect (offering permessage-deflate if ``deflate``), check it, run ``scenario``."""
        server = self.world.server(self.pair.server)  # servers always accept deflate
        runner = CLIENTS[self.pair.client].runner

        async def main() -> None:
            client: Client | None = None
            try:
                async with bounded(runner, timeout):
                    client = await self.world.open_client(
                        self.pair.client, server.url, deflate, timeout
                    )
                    link = Link(client, server.reports(client.local_port), runner)
                    opened = await link.expect("open")
                    negotiated = DEFLATE if deflate else []
                    assert client.extensions == negotiated, "the client's view"
                    assert opened["extensions"] == negotiated, "the server's view"
                    await scenario(link)
            finally:
                if client is not None:
                    async with cleaning_up(runner):
                        await client.aclose()

        run_client(runner, main)


@pytest.fixture(params=PAIRS, ids=str)
def connect(request: pytest.FixtureRequest, world: World) -> Connector:
    return Connector(request.param, world, request.node)


async def close_normally(link: Link) -> None:
    """The closing handshake, from the client, with 1000; the server must see it."""
    await link.client.close(CloseCode.NORMAL_CLOSURE, "")
    report = await link.expect("close")
    assert (report["code"], report["reason"]) == (CloseCode.NORMAL_CLOSURE, "")


async def round_trip(link: Link, data: str | bytes, timeout: float = TIMEOUT) -> None:
    """Send ``data``; the server must see it whole, and echo it back."""
    await link.client.send(data)
    raw = data.encode() if isinstance(data, str) else data
    report = await link.expect("message", timeout)
    assert (report["binary"], report["size"]) == (isinstance(data, bytes), len(raw))
    assert report["sha256"] == digest(raw)
    echo = await link.client.recv()
    assert type(echo) is type(data)
    assert (len(echo), digest(echo)) == (len(data), digest(data))


# -- messages ---------------------------------------------------------------------------------


@deflate_modes
def test_messages(connect, deflate):
    async def scenario(link: Link) -> None:
        for data in MESSAGES:
            await round_trip(link, data)
        await close_normally(link)

    connect.run(scenario, deflate=deflate)


@deflate_modes
@pytest.mark.parametrize("kind", BIG_MESSAGES)
def test_4_mib_message(connect, kind, deflate):
    async def scenario(link: Link) -> None:
        await round_trip(link, BIG_MESSAGES[kind], BIG_TIMEOUT)
        await close_normally(link)

    connect.run(scenario, deflate=deflate, timeout=BIG_TIMEOUT)


def parts_of(data: bytes) -> list[bytes]:
    return [data[i : i + FRAME] for i in range(0, len(data), FRAME)]


@deflate_modes
@kinds
def test_fragmented_message_from_client(connect, deflate, kind):
    connect.skip_unless_client_fragments()
    if deflate and connect.pair.server == "wsproto":
        connect.xfail(WSPROTO_CONTROL_FRAME_BUG)
    raw = FRAGMENTED_TEXT.encode()

    async def scenario(link: Link) -> None:
        # wsproto's client cuts text where characters end (its frames are str).
        await link.client.send_fragments(kind == "binary", parts_of(raw), ping_after=0)
        report = await link.expect("message")
        assert (report["binary"], report["sha256"]) == (kind == "binary", digest(raw))
        assert await link.client.recv() == (raw if kind == "binary" else FRAGMENTED_TEXT)
        # The server answered the Ping between two fragments while reading the message.
        assert link.client.pongs == [BETWEEN]
        await close_normally(link)

    connect.run(scenario, deflate=deflate)


@deflate_modes
@kinds
def test_fragmented_message_from_server(connect, deflate, kind):
    connect.skip_unless_server_fragments()
    if deflate and connect.pair.client == "wsproto":
        connect.xfail(WSPROTO_CONTROL_FRAME_BUG)
    raw = FRAGMENTED_TEXT.encode()
    parts = [part.hex() for part in parts_of(raw)]

    async def scenario(link: Link) -> None:
        # wsproto's server cuts text where characters end (its frames are str).
        binary = kind == "binary"
        await link.client.send(command("fragments", binary=binary, parts=parts, pingAfter=0))
        assert await link.client.recv() == (raw if binary else FRAGMENTED_TEXT)
        # The client answered the Ping between two fragments while reading the message.
        assert (await link.expect("pong"))["data"] == BETWEEN.hex()
        await close_normally(link)

    connect.run(scenario, deflate=deflate)


# -- control frames -------------------------------------------------------------------------


def test_client_ping_gets_the_servers_pong(connect):
    async def scenario(link: Link) -> None:
        await link.client.ping(CLIENT_PING)
        await link.client.send("after the ping")
        # Every server answers a Ping before it reads on, so the Pong came first.
        assert await link.client.recv() == "after the ping"
        assert link.client.pongs == [CLIENT_PING]
        await close_normally(link)

    connect.run(scenario)


def test_server_ping_gets_the_clients_pong(connect):
    async def scenario(link: Link) -> None:
        await link.client.send(command("ping", data=SERVER_PING.hex()))
        await link.client.send("after the ping")
        # Reading the echo answers the Ping, which came before it. (Node's
        # server reports the Pong to the client too, in a message.)
        while is_pong_notice(echo := await link.client.recv()):
            pass
        assert echo == "after the ping"
        assert (await link.expect("pong"))["data"] == SERVER_PING.hex()
        await close_normally(link)

    connect.run(scenario)


# -- closing --------------------------------------------------------------------------------


def test_client_close_code_reaches_the_server(connect):
    async def scenario(link: Link) -> None:
        await link.client.close(*CLIENT_CLOSE)
        report = await link.expect("close")
        assert (report["code"], report["reason"]) == CLIENT_CLOSE

    connect.run(scenario)


def test_server_close_code_reaches_the_client(connect):
    code, reason = SERVER_CLOSE

    async def scenario(link: Link) -> None:
        await link.client.send(command("close", code=code, reason=reason))
        assert await link.client.closed() == SERVER_CLOSE

    connect.run(scenario)
