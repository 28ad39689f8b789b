"""wsproto_sync against Node's ``ws`` package, in both directions, over loopback.

Each test runs twice: our ``Dialer`` against a ``ws`` server, and a ``ws``
client against our ``Upgrader``. The Node side is ``tests/interop/node/peer.mjs``,
driven through ``tests/interop/node_peer.py``: it echoes every message, obeys
command messages (close, ping, send fragments, send N bytes) and reports what
it saw as JSON lines on stdout, which the tests read with a timeout. One Node
process per role and set of options serves the whole module (a client opens a
connection for each URL we write to its stdin); reports name the port of the
connection's client end, so each test sees its own connection's only. Every
read and write of ours has a deadline, and the fixtures kill the Node
processes, so no test can hang.

The tests need ``node`` and ``tests/interop/node/node_modules`` (``ws``, pinned
by ``package-lock.json``): ``make unit`` installs the latter with ``npm ci``.
When either is missing the tests FAIL, saying so, because CI must run them;
set ``WSPROTO_SKIP_NODE=1`` to skip them instead, on purpose.
"""

from __future__ import annotations

import hashlib
import json
import socket
import time
import tracemalloc
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import pytest
from sync_helpers import TIMEOUT

from interop.node_peer import NodePeers, Reports, command_message, require_node
from wsproto_core import DEFAULT_MAX_MESSAGE_SIZE, CloseCode, CloseError, ReadLimitError
from wsproto_sync import Conn, Dialer, MessageType, Upgrader, format_close_message

BIG = 16 * 1024 * 1024
CHUNK = 64 * 1024
BIG_TIMEOUT = 30.0  # deadline of the 16 MiB exchanges, for slow CI machines


# -- the Node peer ----------------------------------------------------------------


@pytest.fixture(scope="module")
def node_peer() -> Iterator[NodePeers]:
    """``node_peer(mode, *options)``: the module's ``ws`` server or client with those options.

    Fails (or skips) when Node or ``ws`` is missing.
    """
    peers = NodePeers(require_node())
    yield peers
    peers.stop()


@pytest.fixture(scope="module")
def node_server_port(node_peer) -> Callable[..., int]:
    """``node_server_port(*options)``: the port of the module's ``ws`` server with those options."""
    return node_peer.server_port


# -- connecting, in both directions ------------------------------------------------------


@dataclass
class Link:
    """Our end of a connection to Node, and Node's reports about it."""

    conn: Conn
    node: Reports
    extensions: str  # what ws says it negotiated (Sec-WebSocket-Extensions)


Connect = Callable[..., Link]


def command(conn: Conn, do: str, **fields: Any) -> None:
    """Send the Node peer a command message."""
    conn.write_message(MessageType.TEXT, command_message(do, **fields))


def set_deadlines(conn: Conn, timeout: float = TIMEOUT) -> None:
    conn.set_read_deadline(time.monotonic() + timeout)
    conn.set_write_deadline(time.monotonic() + timeout)


@pytest.fixture(params=["dialer-to-ws-server", "ws-client-to-upgrader"])
def connect(request, node_peer, node_server_port) -> Iterator[Connect]:
    """``connect(deflate=, max_message_size=, max_payload=)``: a fresh ``Link``.

    ``deflate`` enables permessage-deflate on both sides (``node_deflate``, if
    given, on Node's side); ``max_message_size`` is our read limit, and
    ``max_payload`` Node's.
    """
    conns: list[Conn] = []

    def start(
        *,
        deflate: bool = False,
        node_deflate: bool | None = None,
        max_message_size: int | None = DEFAULT_MAX_MESSAGE_SIZE,
        max_payload: int | None = None,
    ) -> Link:
        node_deflate = deflate if node_deflate is None else node_deflate
        negotiated = deflate and node_deflate
        options: tuple[str, ...] = ("--deflate",) if node_deflate else ()
        if max_payload is not None:
            options += ("--max-payload", str(max_payload))
        if request.param == "dialer-to-ws-server":
            dialer = Dialer(
                handshake_timeout=TIMEOUT,
                enable_compression=deflate,
                max_message_size=max_message_size,
            )
            port = node_server_port(*options)
            conn, response = dialer.dial(f"ws://127.0.0.1:{port}/")
            conns.append(conn)
            reports = node_peer("server", *options).reports(client=conn.local_addr[1])
            assert [offer.name for offer in response.extensions] == (
                ["permessage-deflate"] if negotiated else []
            )
        else:
            upgrader = Upgrader(
                handshake_timeout=TIMEOUT,
                enable_compression=deflate,
                max_message_size=max_message_size,
            )
            peer = node_peer("client", *options)
            with socket.create_server(("127.0.0.1", 0)) as listener:
                listener.settimeout(TIMEOUT)
                peer.connect(f"ws://127.0.0.1:{listener.getsockname()[1]}/")
                sock, _ = listener.accept()
            conn = upgrader.upgrade(sock)
            conns.append(conn)
            reports = peer.reports(client=conn.remote_addr[1])
        set_deadlines(conn)
        opened = reports.expect("open")
        # Both sides agree on permessage-deflate exactly when both enable it.
        assert [ext.name for ext in conn.protocol.extensions] == (
            ["permessage-deflate"] if negotiated else []
        )
        assert opened["extensions"].startswith("permessage-deflate") is negotiated
        return Link(conn, reports, opened["extensions"])

    yield start
    for conn in conns:
        conn.close()


deflate_modes = pytest.mark.parametrize("deflate", [False, True], ids=["plain", "deflate"])


def digest(data: str | bytes) -> str:
    return hashlib.sha256(data.encode() if isinstance(data, str) else data).hexdigest()


def close_cleanly(link: Link) -> dict[str, Any]:
    """Close from our side; return Node's close report."""
    link.conn.close_gracefully(CloseCode.NORMAL_CLOSURE, timeout=TIMEOUT)
    return link.node.expect("close")


# -- messages -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("ours", "nodes"),
    [(False, False), (True, False), (False, True), (True, True)],
    ids=["neither", "only-ours", "only-node", "both"],
)
def test_permessage_deflate_needs_both_sides(connect, ours, nodes):
    link = connect(deflate=ours, node_deflate=nodes)  # the fixture checks both views
    if ours and nodes:
        assert link.extensions.split(";")[0] == "permessage-deflate"
    else:
        assert link.extensions == ""
    link.conn.write_message(MessageType.TEXT, "squeeze me " * 100)
    assert link.conn.read_message() == (MessageType.TEXT, "squeeze me " * 100)
    assert close_cleanly(link)["code"] == CloseCode.NORMAL_CLOSURE


MESSAGES = [
    pytest.param(MessageType.TEXT, "héllo ☃ 𝄞 日本語", id="text-utf8"),
    pytest.param(MessageType.TEXT, "", id="text-empty"),
    pytest.param(MessageType.TEXT, "compressible ☃ " * 5000, id="text-75k"),
    pytest.param(MessageType.BINARY, bytes(range(256)), id="binary"),
    pytest.param(MessageType.BINARY, b"", id="binary-empty"),
    pytest.param(MessageType.BINARY, bytes(range(256)) * 400, id="binary-100k"),
]


@deflate_modes
def test_messages_round_trip(connect, deflate):
    link = connect(deflate=deflate)
    for _ in range(2):  # the second time, deflate reuses its context (context takeover)
        for param in MESSAGES:
            kind, data = param.values
            link.conn.write_message(kind, data)
            report = link.node.expect("message")
            assert report["binary"] is (kind is MessageType.BINARY)
            assert report["sha256"] == digest(data)
            assert link.conn.read_message() == (kind, data)
    assert close_cleanly(link)["code"] == CloseCode.NORMAL_CLOSURE


def chunks_of_big_message(kind: MessageType) -> Iterator[bytes]:
    """16 MiB in 64 KiB chunks, each different; text chunks cut characters in two."""
    if kind is MessageType.BINARY:
        for i in range(BIG // CHUNK):
            yield hashlib.sha256(i.to_bytes(4, "big")).digest() * (CHUNK // 32)
        return
    # 19 000 bytes: the 64 KiB borders fall anywhere in it, some inside characters
    # (16 MiB ends after an ASCII byte of it, so the whole is valid UTF-8).
    text = "".join(f"line {i:04d} ☃ 𝄞\n" for i in range(1000)).encode()
    pending = b""
    for _ in range(BIG // CHUNK):
        while len(pending) < CHUNK:
            pending += text
        yield pending[:CHUNK]
        pending = pending[CHUNK:]


def read_streamed(conn: Conn) -> tuple[MessageType, int, str, int]:
    """Read a message with ``next_reader()``, ``CHUNK`` bytes at a time.

    Returns its type, size and SHA-256, and the most memory allocated meanwhile.
    """
    tracemalloc.start()
    try:
        kind, reader = conn.next_reader()
        sha, size = hashlib.sha256(), 0
        while chunk := reader.read(CHUNK):
            sha.update(chunk)
            size += len(chunk)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    return kind, size, sha.hexdigest(), peak


@pytest.mark.parametrize("kind", [MessageType.BINARY, MessageType.TEXT], ids=["binary", "text"])
@deflate_modes
def test_16_mib_message_streamed_both_ways(connect, deflate, kind):
    link = connect(deflate=deflate, max_message_size=None)
    conn = link.conn
    set_deadlines(conn, BIG_TIMEOUT)
    conn.write_buffer_size = CHUNK
    sent = hashlib.sha256()
    with conn.next_writer(kind) as writer:
        for chunk in chunks_of_big_message(kind):
            sent.update(chunk)
            writer.write(chunk)
    report = link.node.expect("message", BIG_TIMEOUT)
    assert (report["size"], report["sha256"]) == (BIG, sent.hexdigest())
    # ws echoes it in one frame (compressed: in one piece); we read it in pieces.
    assert read_streamed(conn)[:3] == (kind, BIG, sent.hexdigest())
    assert close_cleanly(link)["code"] == CloseCode.NORMAL_CLOSURE


STREAM_MEMORY = 4 * 1024 * 1024  # what reading a 16 MiB message may take, at most


@deflate_modes
def test_streamed_read_holds_little_memory(connect, deflate):
    link = connect(deflate=deflate, max_message_size=None)
    set_deadlines(link.conn, BIG_TIMEOUT)
    command(link.conn, "send", binary=True, size=BIG, fill=ord("s"))  # deflates 1000:1
    sent = link.node.expect("sent")
    kind, size, sha, peak = read_streamed(link.conn)
    assert (kind, size, sha) == (MessageType.BINARY, BIG, sent["sha256"])
    assert peak < STREAM_MEMORY, f"{peak / 2**20:.1f} MiB held reading a 16 MiB message"


FRAGMENTED_TEXT = "frag ☃ mént 𝄞 日本 " * 20


@deflate_modes
@pytest.mark.parametrize("kind", [MessageType.TEXT, MessageType.BINARY], ids=["text", "binary"])
def test_fragmented_message_to_node(connect, deflate, kind):
    link = connect(deflate=deflate)
    conn = link.conn
    data = FRAGMENTED_TEXT.encode()
    conn.write_buffer_size = 7  # frames of 7 bytes: many cut a character in two
    with conn.next_writer(kind) as writer:
        for i in range(0, len(data), 50):
            writer.write(data[i : i + 50])
    report = link.node.expect("message")
    assert (report["size"], report["sha256"]) == (len(data), digest(data))
    expected = FRAGMENTED_TEXT if kind is MessageType.TEXT else data
    assert conn.read_message() == (kind, expected)
    assert close_cleanly(link)["code"] == CloseCode.NORMAL_CLOSURE


# Fragment borders cut "☃" (e2 98 83) and "𝄞" (f0 9d 84 9e) in the middle.
FRAGMENTS = [b"h\xc3\xa9llo \xe2", b"\x98", b"\x83 w\xc3\xb6rld \xf0\x9d", b"\x84\x9e", b"!"]


@deflate_modes
@pytest.mark.parametrize("streamed", [False, True], ids=["read_message", "next_reader"])
@pytest.mark.parametrize("kind", [MessageType.TEXT, MessageType.BINARY], ids=["text", "binary"])
def test_fragmented_message_from_node(connect, deflate, streamed, kind):
    link = connect(deflate=deflate)
    conn = link.conn
    whole = b"".join(FRAGMENTS)
    parts = [part.hex() for part in FRAGMENTS]
    for ping_after in (None, 1):  # then with a Ping between two fragments
        binary = kind is MessageType.BINARY
        command(conn, "fragments", binary=binary, parts=parts, pingAfter=ping_after)
        if streamed:
            got_kind, reader = conn.next_reader()
            chunks = []
            while chunk := reader.read(CHUNK):
                chunks.append(chunk)
            assert got_kind == kind
            assert b"".join(chunks) == whole
            assert len(chunks) > 1  # delivered as the fragments arrived
        else:
            expected = whole.decode() if kind is MessageType.TEXT else whole
            assert conn.read_message() == (kind, expected)
    # We answered the Ping while reading the message around it.
    pong = {"event": "pong", "data": b"between fragments".hex()}
    assert json.loads(conn.read_message()[1]) == pong
    assert close_cleanly(link)["code"] == CloseCode.NORMAL_CLOSURE


# -- control frames -----------------------------------------------------------------


@pytest.mark.parametrize(
    "payload", [b"", b"are you there? \x00\xff", bytes(range(125))], ids=["empty", "short", "125"]
)
def test_our_ping_gets_nodes_pong(connect, payload):
    link = connect()
    conn = link.conn
    pongs: list[bytes] = []
    conn.set_pong_handler(pongs.append)
    conn.write_control(MessageType.PING, payload, time.monotonic() + TIMEOUT)
    conn.write_message(MessageType.TEXT, "after the ping")
    # ws answers the Ping as it reads it, before echoing the message behind it.
    assert conn.read_message() == (MessageType.TEXT, "after the ping")
    assert pongs == [payload]
    assert close_cleanly(link)["code"] == CloseCode.NORMAL_CLOSURE


@pytest.mark.parametrize(
    "payload",
    [b"", b"ping \x00\xff \xe2\x98\x83", bytes(range(125))],
    ids=["empty", "short", "125"],
)
def test_nodes_ping_gets_our_pong(connect, payload):
    link = connect()
    conn = link.conn
    command(conn, "ping", data=payload.hex())
    # Reading answers the Ping; Node then tells us about the Pong in a message.
    assert json.loads(conn.read_message()[1]) == {"event": "pong", "data": payload.hex()}
    assert link.node.expect("pong")["data"] == payload.hex()
    assert close_cleanly(link)["code"] == CloseCode.NORMAL_CLOSURE


# -- closing ------------------------------------------------------------------------

CLOSES = [
    pytest.param(4000, "bye ☃", id="4000-reason"),
    pytest.param(CloseCode.GOING_AWAY, "", id="1001"),
    pytest.param(CloseCode.NORMAL_CLOSURE, "é" * 61 + "!", id="1000-123-byte-reason"),
]


@pytest.mark.parametrize(("code", "reason"), CLOSES)
def test_node_close_code_reaches_us(connect, code, reason):
    link = connect()
    command(link.conn, "close", code=code, reason=reason)
    with pytest.raises(CloseError) as info:
        link.conn.read_message()
    assert (info.value.code, info.value.text) == (code, reason)
    link.conn.close()  # a client waits for the server's EOF, which no read will see now
    report = link.node.expect("close")
    assert report["code"] == code  # our echo of its Close


def test_node_close_without_code_reaches_us_as_1005(connect):
    link = connect()
    command(link.conn, "close")
    with pytest.raises(CloseError) as info:
        link.conn.read_message()
    assert info.value.code == CloseCode.NO_STATUS_RCVD
    link.conn.close()
    assert link.node.expect("close")["code"] == CloseCode.NO_STATUS_RCVD


@pytest.mark.parametrize(("code", "reason"), CLOSES)
def test_our_close_code_reaches_node(connect, code, reason):
    link = connect()
    link.conn.close_gracefully(code, reason, timeout=TIMEOUT)
    report = link.node.expect("close")
    assert (report["code"], report["reason"]) == (code, reason)


def test_our_close_without_code_reaches_node_as_1005(connect):
    link = connect()
    conn = link.conn
    conn.write_control(MessageType.CLOSE, b"", time.monotonic() + TIMEOUT)
    with pytest.raises(CloseError) as info:
        conn.read_message()
    assert info.value.code == CloseCode.NO_STATUS_RCVD  # Node's echo
    conn.close()
    assert link.node.expect("close")["code"] == CloseCode.NO_STATUS_RCVD


def test_close_with_format_close_message_reaches_node(connect):
    link = connect()
    conn = link.conn
    conn.write_control(MessageType.CLOSE, format_close_message(4999, "last"), None)
    with pytest.raises(CloseError) as info:
        conn.read_message()
    assert info.value.code == 4999
    conn.close()
    report = link.node.expect("close")
    assert (report["code"], report["reason"]) == (4999, "last")


# -- read limits --------------------------------------------------------------------

LIMIT = 1000


@deflate_modes
@pytest.mark.parametrize("kind", [MessageType.TEXT, MessageType.BINARY], ids=["text", "binary"])
def test_our_read_limit_closes_with_1009(connect, deflate, kind):
    # With deflate, 'x' * 1001 arrives as a few bytes: the inflated size counts.
    link = connect(deflate=deflate, max_message_size=LIMIT)
    conn = link.conn
    binary = kind is MessageType.BINARY
    command(conn, "send", binary=binary, size=LIMIT, fill=ord("x"))
    assert conn.read_message() == (kind, "x" * LIMIT if not binary else b"x" * LIMIT)
    command(conn, "send", binary=binary, size=LIMIT + 1, fill=ord("x"))
    with pytest.raises(ReadLimitError):
        conn.read_message()
    with pytest.raises(ReadLimitError):  # errors are permanent
        conn.read_message()
    report = link.node.expect("close")
    assert report["code"] == CloseCode.MESSAGE_TOO_BIG


def test_our_read_limit_refuses_a_compression_bomb(connect):
    # 16 MiB of 'x' deflate to some 16 KiB: the inflated size must stop it early.
    link = connect(deflate=True, max_message_size=LIMIT)
    command(link.conn, "send", binary=True, size=BIG, fill=ord("x"))
    with pytest.raises(ReadLimitError):
        link.conn.read_message()
    assert link.node.expect("close")["code"] == CloseCode.MESSAGE_TOO_BIG


def test_our_read_limit_on_a_message_still_arriving_ends_without_a_reset(connect):
    # The peer is still writing when we refuse its message. For the 1009 to
    # reach it reliably, we must keep reading (and discarding) until it closes,
    # as ws itself does: closing a socket with unread data sends a TCP reset,
    # which makes the peer's pending writes fail and may drop our Close frame.
    link = connect(max_message_size=LIMIT)
    command(link.conn, "send", binary=True, size=BIG, fill=ord("z"))
    with pytest.raises(ReadLimitError):
        link.conn.read_message()
    report = link.node.expect("close")
    resets = [seen["code"] for seen in link.node.seen if seen["event"] == "socket-error"]
    assert (report["code"], resets) == (CloseCode.MESSAGE_TOO_BIG, [])


@deflate_modes
@pytest.mark.parametrize("size", [LIMIT + 1, BIG], ids=["limit+1", "16MiB"])
def test_nodes_max_payload_closes_with_1009(connect, deflate, size):
    link = connect(deflate=deflate, max_payload=LIMIT)
    conn = link.conn
    set_deadlines(conn, BIG_TIMEOUT)
    conn.write_message(MessageType.BINARY, b"y" * LIMIT)
    assert conn.read_message() == (MessageType.BINARY, b"y" * LIMIT)
    conn.write_message(MessageType.BINARY, b"y" * size)  # ws reads on, discarding it
    with pytest.raises(CloseError) as info:
        conn.read_message()
    assert info.value.code == CloseCode.MESSAGE_TOO_BIG
    assert link.node.expect("error")["code"] == "WS_ERR_UNSUPPORTED_MESSAGE_LENGTH"
