"""Peers that send without reading: a Ping flood, and echoes nobody reads.

A server must not buffer without bound what a peer does not read: its
writes (Pongs, echoes) wait in TCP, it stops reading meanwhile, and TCP
makes the peer wait in turn. The servers run in this process, so their
memory is traced (tracemalloc) during the attack, with a generous bound;
the attack itself is sized so that a server buffering everything would
pass that bound several times over. Meanwhile, and afterwards, other
clients must be served.
"""

from __future__ import annotations

import select
import time

import pytest
from hostile_helpers import (
    READ_LIMIT,
    SHUTDOWN_TIMEOUT,
    TIMEOUT,
    MemoryMeter,
    MiB,
    RawClient,
    ServerHandle,
    assert_still_serves,
    open_websocket,
    peer_closed,
    send_until_stalled,
)

import wsproto_sync
from wsproto_core import MessageType, Opcode, parse_frame, serialize_frame

MEMORY_BOUND = 16 * MiB  # for the echo floods: 64 MiB sent, ~2 MiB measured
PING_MEMORY_BOUND = 4 * MiB  # for the Ping flood: 26 MB of Pongs, ~0.2 MiB measured
KEY = b"\x5a\x11\xc3\x0f"  # one masking key for every frame of a flood: built once, fast
CLIENT_RCVBUF = 32 * 1024  # the flooding client's receive buffer: what TCP holds for it

PINGS = 200_000  # 125-byte Pings: 26 MB of them, and as many Pongs
PING_SIZE = 2 + 4 + 125  # header, masking key, payload


def ping_payload(index: int) -> bytes:
    return f"{index:08d}".encode().ljust(125, b".")


def dial_echo(port: int) -> None:
    """A round trip through the adapter's own client, the sync Dialer."""
    conn, _ = wsproto_sync.Dialer(handshake_timeout=TIMEOUT).dial(f"ws://127.0.0.1:{port}/")
    with conn:
        conn.set_read_deadline(time.monotonic() + TIMEOUT)
        conn.set_write_deadline(time.monotonic() + TIMEOUT)
        conn.write_message(MessageType.TEXT, "served meanwhile")
        assert conn.read_message() == (MessageType.TEXT, "served meanwhile")
        conn.close_gracefully(timeout=TIMEOUT)


def read_pongs_until(client: RawClient, rest: bytes, last: int, *, timeout: float) -> int:
    """Send ``rest`` while reading Pongs, until the Pong for Ping ``last``; return the count.

    "If an endpoint receives a Ping frame and has not yet sent Pong frame(s)
    in response to previous Ping frame(s), the endpoint MAY elect to send a
    Pong frame for only the most recently processed Ping frame." -- RFC 6455
    §5.5.3. So Pongs may be skipped, but they come in order, each with the
    "exact same Application data as found in the message body of the Ping
    frame being replied to" (§5.5.3), and the last Ping gets one.
    """
    sock = client.sock
    end = time.monotonic() + timeout
    expected = 0  # the lowest Ping index the next Pong may answer
    pongs = 0
    sent = 0
    sock.setblocking(False)
    try:
        while True:
            left = end - time.monotonic()
            assert left > 0, f"Pong {last} not received; last seen {expected - 1}"
            want_write = [sock] if sent < len(rest) else []
            readable, writable, _ = select.select([sock], want_write, [], left)
            if writable:
                sent += sock.send(rest[sent : sent + 65536])
            if not readable:
                continue
            data = sock.recv(1 << 20)
            assert data, "the server closed the connection"
            client.buffer += data
            pos = 0
            while (parsed := parse_frame(client.buffer, pos)) is not None:
                frame, _, pos = parsed
                assert frame.opcode is Opcode.PONG, frame
                index = int(frame.payload[:8])
                assert frame.payload == ping_payload(index)
                assert index >= expected, (index, expected)
                expected = index + 1
                pongs += 1
                if index == last:
                    del client.buffer[:pos]
                    return pongs
            del client.buffer[:pos]
    finally:
        sock.settimeout(TIMEOUT)


def test_ping_flood_without_reading_the_pongs(server: ServerHandle) -> None:
    flood = b"".join(
        serialize_frame(Opcode.PING, ping_payload(i), mask_key=KEY) for i in range(PINGS)
    )
    assert len(flood) == PINGS * PING_SIZE
    with open_websocket(server.port, rcvbuf=CLIENT_RCVBUF) as client:
        with MemoryMeter() as memory:
            sent = send_until_stalled(client.sock, flood, stall=0.3)
            # The server's Pongs fill TCP, so it stopped reading, so we stalled
            # long before 26 MB: a server that kept reading would have had to
            # keep most of 26 MB of Pongs in memory.
            assert sent < len(flood), "the server took the whole flood"
            # Stalled, the flooded connection does not stop the others.
            assert_still_serves(server.port)
            dial_echo(server.port)
        assert memory.peak < PING_MEMORY_BOUND, memory.peak
        # Now read: the Pongs waited in TCP, in order, and the server reads
        # again. Finish the Ping cut in half, read up to its Pong.
        last = -(-sent // PING_SIZE) - 1  # the last Ping at least partly sent
        rest = flood[sent : (last + 1) * PING_SIZE]
        pongs = read_pongs_until(client, rest, last, timeout=15.0)
        assert pongs >= 1
        client.echo("after the flood")
        client.close_handshake()
    assert_still_serves(server.port)


def test_ping_flood_then_vanish(server: ServerHandle) -> None:
    # The same flood, then the client resets the connection with the Pongs
    # unread: the server's blocked writes must fail, and its handler end.
    flood = serialize_frame(Opcode.PING, ping_payload(0), mask_key=KEY) * PINGS
    with open_websocket(server.port, rcvbuf=CLIENT_RCVBUF) as client:
        sent = send_until_stalled(client.sock, flood, stall=0.3)
        assert sent < len(flood), "the server took the whole flood"
        server.wait_handlers(1, 1.0)
    server.wait_handlers_done(3.0)
    assert_still_serves(server.port)


MESSAGES = 64  # 1 MiB echoes nobody reads: 64 MiB, four times the memory bound


def test_peer_that_never_reads_the_echoes(server: ServerHandle) -> None:
    # Messages just under the read limit, each echoed whole by the handler,
    # and a client that never reads a byte: the handler's writes must wait
    # in TCP (gorilla: a write blocks), its reads stop meanwhile, and TCP
    # makes the client's sends wait in turn.
    message = serialize_frame(Opcode.BINARY, bytes(READ_LIMIT), mask_key=KEY)
    flood = message * MESSAGES
    with RawClient(server.port, rcvbuf=CLIENT_RCVBUF) as client:
        client.handshake()
        with MemoryMeter() as memory:
            sent = send_until_stalled(client.sock, flood, stall=0.5)
            assert sent < len(flood), "the server read every message"
            assert_still_serves(server.port)
            dial_echo(server.port)
            server.wait_handlers(1, 1.0)  # the others are done; the stuck one is not
        assert memory.peak < MEMORY_BOUND, memory.peak
    # Closing the client (a reset: its input is unread) must free the
    # handler blocked on its write.
    server.wait_handlers_done(3.0)
    assert_still_serves(server.port)


def test_peer_that_stops_reading_midway_and_then_reads(server: ServerHandle) -> None:
    # The stalled connection recovers once the client reads: every echo
    # arrives whole and in order, then the closing handshake completes.
    count = 32  # 16 MiB: more than TCP holds, so the client stalls first
    payloads = [bytes([i]) * (READ_LIMIT // 2) for i in range(count)]
    flood = b"".join(serialize_frame(Opcode.BINARY, p, mask_key=KEY) for p in payloads)
    with RawClient(server.port, rcvbuf=CLIENT_RCVBUF) as client:
        client.handshake()
        sent = send_until_stalled(client.sock, flood, stall=0.3)
        assert sent < len(flood), "the server read every message"
        client.sock.setblocking(False)
        received = 0
        deadline = time.monotonic() + 15.0
        while received < count:
            assert time.monotonic() < deadline
            want_write = [client.sock] if sent < len(flood) else []
            readable, writable, _ = select.select([client.sock], want_write, [], 1.0)
            if writable:
                sent += client.sock.send(flood[sent : sent + 65536])
            if readable:
                data = client.sock.recv(1 << 20)
                assert data
                client.buffer += data
                while (parsed := parse_frame(client.buffer)) is not None:
                    frame, _, end = parsed
                    del client.buffer[:end]
                    assert (frame.opcode, frame.payload) == (Opcode.BINARY, payloads[received])
                    received += 1
        client.sock.settimeout(TIMEOUT)
        client.close_handshake()
    assert_still_serves(server.port)


def test_shutdown_with_a_peer_that_never_reads(server: ServerHandle) -> None:
    # A handler stuck writing to a peer that never reads must not hold up
    # the server's shutdown past its shutdown_timeout.
    message = serialize_frame(Opcode.BINARY, bytes(READ_LIMIT), mask_key=KEY)
    with RawClient(server.port, rcvbuf=CLIENT_RCVBUF) as client:
        client.handshake()
        sent = send_until_stalled(client.sock, message * MESSAGES, stall=0.5)
        assert sent < len(message) * MESSAGES
        took = server.shutdown()
        assert took < SHUTDOWN_TIMEOUT + 1.5, took
        # The server dropped the connection: what it had sent, then the end.
        assert peer_closed(client.sock, TIMEOUT)


FRAGMENTED_LIMIT = 32 * 1024  # a small read limit keeps the fragment flood fast


@pytest.mark.upgrader(max_message_size=FRAGMENTED_LIMIT)
@pytest.mark.parametrize("opcode", [Opcode.BINARY, Opcode.TEXT], ids=["binary", "text"])
@pytest.mark.parametrize(
    "fragment",
    [FRAGMENTED_LIMIT, 1024, 1],
    ids=["one frame", "1 KiB fragments", "1-byte fragments"],
)
def test_memory_of_a_message_in_tiny_fragments(
    server: ServerHandle, fragment: int, opcode: Opcode
) -> None:
    # A message at the read limit, sent as fragments of ``fragment`` bytes
    # (for text, 2-byte characters, so 1-byte fragments cut each in two).
    # The read limit counts payload bytes (§7.4.1: 1009 past it), so the
    # server's memory for one message should be a small multiple of it,
    # however the message is cut: the brief's bound is 16x (16 MiB for the
    # default 1 MiB), plus room for the read buffers. Kept as one object per
    # fragment, 1-byte fragments once cost ~124 bytes per byte; joined as
    # they come (wsproto_core.assembly), they cost about as much as one
    # frame: ~4 to 9 times the limit is measured here, read buffers and the
    # client's side included.
    if opcode is Opcode.TEXT:
        payload = "é".encode() * (FRAGMENTED_LIMIT // 2)
    else:
        payload = b"f" * FRAGMENTED_LIMIT
    count = FRAGMENTED_LIMIT // fragment
    data = b"".join(
        serialize_frame(
            Opcode.CONTINUATION if i else opcode,
            payload[i * fragment : (i + 1) * fragment],
            fin=i == count - 1,
            mask_key=KEY,
        )
        for i in range(count)
    )
    with open_websocket(server.port) as client:
        with MemoryMeter() as memory:
            client.send(data)
            assert client.read_message() == (opcode, payload)
        client.close_handshake()
    assert memory.peak < 16 * FRAGMENTED_LIMIT + 256 * 1024, memory.peak
