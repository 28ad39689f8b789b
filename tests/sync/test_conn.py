"""Behaviour of wsproto_sync.Conn over real sockets from socket.socketpair().

Every blocking step runs with a timeout, so a broken Conn fails a test
instead of hanging the run.
"""

from __future__ import annotations

import array
import io
import json
import os
import socket
import struct
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest
from sync_helpers import TIMEOUT, Background

from wsproto_core import (
    ClientPerMessageDeflate,
    CloseCode,
    CloseError,
    CloseSentError,
    ConcurrencyError,
    Connection,
    ExtensionOffer,
    Frame,
    LocalProtocolError,
    MessageType,
    Opcode,
    PreparedMessage,
    ReadLimitError,
    RemoteProtocolError,
    Role,
    ServerPerMessageDeflate,
    SharedBufferPool,
    format_close_message,
    is_close_error,
    is_unexpected_close_error,
    parse_close_payload,
    parse_frame,
    serialize_frame,
)
from wsproto_core.frames import RSV1
from wsproto_sync import Conn, MessageReader, MessageWriter, join_messages

MASK = b"\x01\x02\x03\x04"


# -- helpers ----------------------------------------------------------------------


class RawPeer:
    """A plain socket that speaks frames by hand."""

    def __init__(self, sock: socket.socket, *, client: bool) -> None:
        self.sock = sock
        self.client = client
        self.buffer = b""
        sock.settimeout(TIMEOUT)

    def send(self, opcode: int, payload: bytes = b"", *, fin: bool = True, masked: Any = None):
        mask = (MASK if self.client else None) if masked is None else (MASK if masked else None)
        self.sock.sendall(serialize_frame(opcode, payload, fin=fin, mask_key=mask))

    def frame(self) -> tuple[Frame, bool]:
        while True:
            parsed = parse_frame(self.buffer)
            if parsed is not None:
                frame, masked, end = parsed
                self.buffer = self.buffer[end:]
                return frame, masked
            data = self.sock.recv(65536)
            if not data:
                raise EOFError("peer closed the connection")
            self.buffer += data

    def close_frame(self) -> tuple[int, str]:
        frame, _ = self.frame()
        assert frame.opcode == Opcode.CLOSE
        return parse_close_payload(frame.payload)

    def at_eof(self) -> bool:
        return not self.buffer and self.sock.recv(65536) == b""


@pytest.fixture
def sockets() -> Iterator[tuple[socket.socket, socket.socket]]:
    a, b = socket.socketpair()
    yield a, b
    a.close()
    b.close()


@pytest.fixture
def pair(sockets: tuple[socket.socket, socket.socket]) -> Iterator[tuple[Conn, Conn]]:
    a, b = sockets
    client = Conn(a, Connection(Role.CLIENT))
    server = Conn(b, Connection(Role.SERVER))
    yield client, server
    client.close()
    server.close()


@pytest.fixture
def raw_client(sockets: tuple[socket.socket, socket.socket]) -> Iterator[tuple[RawPeer, Conn]]:
    a, b = sockets
    server = Conn(b, Connection(Role.SERVER))
    yield RawPeer(a, client=True), server
    server.close()


@pytest.fixture
def raw_server(sockets: tuple[socket.socket, socket.socket]) -> Iterator[tuple[Conn, RawPeer]]:
    a, b = sockets
    client = Conn(a, Connection(Role.CLIENT))
    yield client, RawPeer(b, client=False)
    client.close()


def read_until_error(conn: Conn) -> BaseException:
    """Read and drop messages until a read fails; return the error."""
    while True:
        try:
            conn.read_message()
        except Exception as exc:
            return exc


def guard_reads(*conns: Conn) -> None:
    """Make every read of ``conns`` give up instead of hanging."""
    for conn in conns:
        conn.set_read_deadline(time.monotonic() + TIMEOUT)


# -- whole messages -----------------------------------------------------------------

MESSAGES = [
    pytest.param(MessageType.TEXT, "héllo wörld ☃", id="text"),
    pytest.param(MessageType.BINARY, bytes(range(256)), id="binary"),
    pytest.param(MessageType.TEXT, "", id="empty-text"),
    pytest.param(MessageType.BINARY, b"", id="empty-binary"),
]


@pytest.mark.parametrize(("message_type", "data"), MESSAGES)
def test_read_write_message_both_directions(pair, message_type, data):
    client, server = pair
    guard_reads(client, server)
    client.write_message(message_type, data)
    assert server.read_message() == (message_type, data)
    server.write_message(message_type, data)
    assert client.read_message() == (message_type, data)


def test_messages_keep_their_order(pair):
    client, server = pair
    guard_reads(server)
    for i in range(20):
        client.write_message(MessageType.TEXT, f"m{i}")
    assert [server.read_message()[1] for _ in range(20)] == [f"m{i}" for i in range(20)]


@pytest.mark.parametrize("direction", ["client-to-server", "server-to-client"])
def test_one_mebibyte_message_with_raised_read_limit(pair, direction):
    client, server = pair
    sender, receiver = (client, server) if direction == "client-to-server" else (server, client)
    receiver.set_read_limit(2 * 1024 * 1024)
    guard_reads(receiver)
    data = os.urandom(1024 * 1024 + 1)  # one byte over the default limit
    writer = Background(lambda: sender.write_message(MessageType.BINARY, data))
    assert receiver.read_message() == (MessageType.BINARY, data)
    writer.result()


def test_default_read_limit_refuses_over_one_mebibyte(pair):
    client, server = pair
    guard_reads(server)
    writer = Background(lambda: client.write_message(MessageType.BINARY, bytes(1024 * 1024 + 1)))
    with pytest.raises(ReadLimitError):
        server.read_message()
    writer.error()  # the server went away: the write may fail, it must not hang


def test_write_json_read_json(pair):
    client, server = pair
    guard_reads(client, server)
    value = {"a": [1, 2.5, None, True], "b": "ü"}
    client.write_json(value)
    assert server.read_json() == value
    server.write_json(value, sort_keys=True)
    assert client.read_message() == (MessageType.TEXT, json.dumps(value, sort_keys=True))


def test_read_json_passes_options(pair):
    client, server = pair
    guard_reads(server)
    client.write_message(MessageType.TEXT, '{"x": 1.5}')
    assert server.read_json(parse_float=str) == {"x": "1.5"}


# -- next_reader ----------------------------------------------------------------------


def send_fragmented(conn: Conn, data: bytes, frame_size: int) -> None:
    conn.write_buffer_size = frame_size
    with conn.next_writer(MessageType.BINARY) as writer:
        writer.write(data)


def test_next_reader_reads_a_fragmented_message_in_pieces(pair):
    client, server = pair
    guard_reads(server)
    data = os.urandom(20_000)
    send_fragmented(client, data, 1000)
    message_type, reader = server.next_reader()
    assert message_type is MessageType.BINARY
    assert isinstance(reader, MessageReader)
    assert reader.readable()
    pieces = []
    while piece := reader.read(333):
        assert len(piece) <= 333
        pieces.append(piece)
    assert len(pieces) > 1
    assert b"".join(pieces) == data
    assert reader.read(10) == b""
    assert reader.read() == b""


def test_next_reader_read_all(pair):
    client, server = pair
    guard_reads(server)
    data = os.urandom(50_000)
    send_fragmented(client, data, 4096)
    _, reader = server.next_reader()
    assert reader.read() == data
    assert reader.read() == b""


def test_next_reader_readinto(pair):
    client, server = pair
    guard_reads(server)
    data = os.urandom(10_000)
    send_fragmented(client, data, 700)
    _, reader = server.next_reader()
    out = bytearray()
    buffer = bytearray(256)
    while size := reader.readinto(buffer):
        out += buffer[:size]
    assert bytes(out) == data


def test_next_reader_text_gives_utf8_bytes(pair):
    client, server = pair
    guard_reads(server)
    client.write_message(MessageType.TEXT, "ünïcode")
    message_type, reader = server.next_reader()
    assert message_type is MessageType.TEXT
    assert reader.read() == "ünïcode".encode()


def test_next_reader_then_read_message(pair):
    """Switching between streamed and whole reads loses no message."""
    client, server = pair
    guard_reads(server)
    client.write_message(MessageType.TEXT, "one")
    client.write_message(MessageType.TEXT, "two")
    client.write_message(MessageType.BINARY, b"three")
    _, reader = server.next_reader()
    assert reader.read() == b"one"
    assert server.read_message() == (MessageType.TEXT, "two")
    _, reader = server.next_reader()
    assert reader.read() == b"three"


@pytest.mark.parametrize("again", ["read_message", "next_reader"])
def test_reading_again_discards_the_rest_of_the_message(pair, again):
    client, server = pair
    guard_reads(server)
    send_fragmented(client, os.urandom(30_000), 1000)
    client.write_message(MessageType.BINARY, b"next")
    _, reader = server.next_reader()
    assert len(reader.read(10)) > 0
    if again == "read_message":
        assert server.read_message() == (MessageType.BINARY, b"next")
    else:
        message_type, second = server.next_reader()
        assert message_type is MessageType.BINARY
        assert second.read() == b"next"


def test_reading_again_discards_an_unread_message(pair):
    client, server = pair
    guard_reads(server)
    client.write_message(MessageType.TEXT, "skipped")
    client.write_message(MessageType.TEXT, "read")
    server.next_reader()
    assert server.read_message() == (MessageType.TEXT, "read")


def test_discarded_reader_raises_when_read(pair):
    client, server = pair
    guard_reads(server)
    send_fragmented(client, os.urandom(30_000), 1000)
    client.write_message(MessageType.BINARY, b"next")
    _, reader = server.next_reader()
    reader.read(10)
    assert server.read_message() == (MessageType.BINARY, b"next")
    with pytest.raises(LocalProtocolError):
        reader.read(10)
    with pytest.raises(LocalProtocolError):
        reader.read()


# -- next_writer ----------------------------------------------------------------------


def test_next_writer_many_writes_arrive_as_one_message(pair):
    client, server = pair
    guard_reads(server)
    client.write_buffer_size = 100
    data = os.urandom(5000)
    writer = client.next_writer(MessageType.BINARY)
    assert isinstance(writer, MessageWriter)
    assert writer.writable()
    for i in range(0, len(data), 37):
        assert writer.write(data[i : i + 37]) == len(data[i : i + 37])
    writer.close()
    assert server.read_message() == (MessageType.BINARY, data)


def test_next_writer_frames_are_write_buffer_size(raw_server):
    client, peer = raw_server
    client.write_buffer_size = 100
    data = os.urandom(1000)
    with client.next_writer(MessageType.BINARY) as writer:
        for i in range(0, len(data), 7):
            writer.write(data[i : i + 7])
    frames = []
    while True:
        frame, masked = peer.frame()
        assert masked  # a client masks every frame
        frames.append(frame)
        if frame.fin:
            break
    assert [len(f.payload) for f in frames] == [100] * 10
    assert frames[0].opcode == Opcode.BINARY
    assert all(f.opcode == Opcode.CONTINUATION for f in frames[1:])
    assert [f.fin for f in frames] == [False] * 9 + [True]
    assert b"".join(f.payload for f in frames) == data


def test_next_writer_small_message_is_one_frame_on_close(raw_server):
    client, peer = raw_server
    writer = client.next_writer(MessageType.TEXT)
    writer.write(b"abc")
    peer.sock.settimeout(0.2)
    with pytest.raises(socket.timeout):
        peer.frame()  # nothing is sent before close()
    peer.sock.settimeout(TIMEOUT)
    writer.close()
    frame, _ = peer.frame()
    assert (frame.opcode, frame.payload, frame.fin) == (Opcode.TEXT, b"abc", True)


def test_next_writer_context_manager_and_write_text(pair):
    client, server = pair
    guard_reads(server)
    with client.next_writer(MessageType.TEXT) as writer:
        assert writer.write_text("hé") == 2
        writer.write(b"llo")
    assert writer.closed
    assert server.read_message() == (MessageType.TEXT, "héllo")
    with pytest.raises(ValueError, match="closed"):
        writer.write(b"more")
    writer.close()  # idempotent: no second final frame
    client.write_message(MessageType.TEXT, "after")
    assert server.read_message() == (MessageType.TEXT, "after")


def test_one_writer_at_a_time(pair):
    client, server = pair
    guard_reads(server)
    writer = client.next_writer(MessageType.BINARY)
    writer.write(b"x" * 10)
    with pytest.raises(ConcurrencyError):
        client.next_writer(MessageType.BINARY)
    with pytest.raises(ConcurrencyError):
        client.write_message(MessageType.TEXT, "no")
    with pytest.raises(ConcurrencyError):
        client.write_json([])
    with pytest.raises(ConcurrencyError):
        client.write_prepared_message(PreparedMessage(MessageType.TEXT, "no"))
    writer.close()
    client.write_message(MessageType.TEXT, "yes")  # the writer role was released
    assert server.read_message() == (MessageType.BINARY, b"x" * 10)
    assert server.read_message() == (MessageType.TEXT, "yes")


def test_next_writer_refuses_control_types(pair):
    client, _ = pair
    with pytest.raises(LocalProtocolError):
        client.next_writer(MessageType.PING)
    client.next_writer(MessageType.TEXT).close()  # and did not take the writer role


class CountingPool(SharedBufferPool):
    """A shared pool that counts how many buffers are out."""

    def __init__(self) -> None:
        super().__init__()
        self.out = 0
        self.handed: list[bytearray] = []

    def get(self) -> bytearray | None:
        buffer = super().get()
        self.out += 1
        if buffer is not None:
            self.handed.append(buffer)
        return buffer

    def put(self, buffer: bytearray) -> None:
        self.out -= 1
        super().put(buffer)


def test_writers_hold_a_pool_buffer_only_while_writing(sockets):
    a, b = sockets
    pool = CountingPool()
    client = Conn(a, Connection(Role.CLIENT), write_buffer_size=64, write_buffer_pool=pool)
    server = Conn(b, Connection(Role.SERVER))
    guard_reads(server)
    writer = client.next_writer(MessageType.BINARY)
    assert pool.out == 0  # an idle writer holds nothing
    writer.write(b"a" * 200)
    assert pool.out == 1
    writer.close()
    assert (pool.out, len(pool)) == (0, 1)
    first = pool._idle[0]
    with client.next_writer(MessageType.TEXT) as writer:
        writer.write_text("second")
    assert pool.handed == [first]  # the same buffer served the next message
    assert server.read_message() == (MessageType.BINARY, b"a" * 200)
    assert server.read_message() == (MessageType.TEXT, "second")
    client.close()
    server.close()


def test_a_pool_buffer_of_another_size_is_not_used(sockets):
    a, b = sockets
    pool = SharedBufferPool()
    pool.put(bytearray(10))
    client = Conn(a, Connection(Role.CLIENT), write_buffer_size=64, write_buffer_pool=pool)
    server = Conn(b, Connection(Role.SERVER))
    guard_reads(server)
    data = os.urandom(1000)
    with client.next_writer(MessageType.BINARY) as writer:
        writer.write(data)
    assert server.read_message() == (MessageType.BINARY, data)
    assert [len(buffer) for buffer in pool._idle] == [64]
    client.close()
    server.close()


def test_a_failed_writer_gives_its_buffer_back(sockets):
    a, b = sockets
    pool = CountingPool()
    client = Conn(a, Connection(Role.CLIENT), write_buffer_pool=pool)
    writer = client.next_writer(MessageType.BINARY)
    writer.write(b"x")
    client.write_control(MessageType.CLOSE, format_close_message(CloseCode.NORMAL_CLOSURE))
    with pytest.raises(CloseSentError):
        writer.close()
    assert pool.out == 0
    client.close()
    b.close()


class Boom(Exception):
    """An error of the program's own, raised inside a writer's block."""


def test_an_error_inside_the_writer_block_propagates_and_the_message_ends(pair):
    client, server = pair
    guard_reads(server)
    client.write_buffer_size = 4

    def stream() -> None:
        with client.next_writer(MessageType.BINARY) as writer:
            writer.write(b"012345")  # a frame of "0123" goes out, "45" waits
            raise Boom

    with pytest.raises(Boom):
        stream()
    # As trio's writer does (and gorilla's next NextWriter): what was
    # written is sent, and the writer role is free again.
    assert server.read_message() == (MessageType.BINARY, b"012345")
    client.write_message(MessageType.TEXT, "next")
    assert server.read_message() == (MessageType.TEXT, "next")


def test_a_read_error_inside_the_writer_block_is_not_replaced(raw_client):
    """The error that failed the connection leaves the block, not CloseSentError."""
    peer, server = raw_client
    guard_reads(server)
    server.set_read_limit(1000)
    pool = CountingPool()
    server.write_buffer_pool = pool
    peer.send(Opcode.BINARY, bytes(500), fin=False)
    peer.send(Opcode.CONTINUATION, bytes(500), fin=False)
    peer.send(Opcode.CONTINUATION, bytes(500), fin=True)
    message_type, reader = server.next_reader()

    def echo() -> None:
        with server.next_writer(message_type) as writer:
            while chunk := reader.read(65536):
                writer.write(chunk)

    with pytest.raises(ReadLimitError):
        echo()
    assert peer.close_frame()[0] == CloseCode.MESSAGE_TOO_BIG
    assert pool.out == 0  # the buffer went back, with no frame sent
    with pytest.raises(CloseSentError):  # the role is free: the core answers
        server.next_writer(MessageType.BINARY).close()


def test_the_writer_block_tries_no_write_on_a_closed_connection(pair):
    client, _ = pair
    writer = client.next_writer(MessageType.BINARY)
    writer.write(b"pending")
    client.close()
    with pytest.raises(Boom), writer:
        raise Boom
    assert writer.closed
    with pytest.raises(OSError):  # noqa: PT011 - the role is free: the socket answers
        client.write_message(MessageType.TEXT, "late")


def test_next_writer_takes_any_bytes_like(pair):
    client, server = pair
    guard_reads(server)
    client.write_buffer_size = 4
    with client.next_writer(MessageType.BINARY) as writer:
        assert writer.write(bytearray(b"ab")) == 2
        assert writer.write(memoryview(b"cdefgh")) == 6
        assert writer.write(array.array("H", [0x4241])) == 2  # counted in bytes
        assert writer.write(b"") == 0
    assert server.read_message() == (
        MessageType.BINARY,
        b"abcdefgh" + bytes(array.array("H", [0x4241])),
    )


def test_write_control_refuses_data_types(pair):
    client, _ = pair
    with pytest.raises(LocalProtocolError):
        client.write_control(MessageType.TEXT, b"x")


def test_buffer_sizes_must_be_positive(sockets):
    a, _ = sockets
    with pytest.raises(ValueError, match="positive"):
        Conn(a, Connection(Role.CLIENT), write_buffer_size=0)
    with pytest.raises(ValueError, match="positive"):
        Conn(a, Connection(Role.CLIENT), read_buffer_size=0)


def test_write_control_while_streaming_does_not_corrupt_frames(pair):
    client, server = pair
    server.set_read_limit(None)
    guard_reads(server)
    client.write_buffer_size = 1024
    data = os.urandom(2 * 1024 * 1024)
    pings: list[bytes] = []
    server.set_ping_handler(pings.append)
    streaming = threading.Event()
    finished = threading.Event()

    def write() -> None:
        with client.next_writer(MessageType.BINARY) as writer:
            streaming.set()
            for i in range(0, len(data), 1000):
                writer.write(data[i : i + 1000])
        finished.set()

    def ping() -> int:
        assert streaming.wait(TIMEOUT)
        sent = 0
        while not finished.is_set() and sent < 2000:
            client.write_control(MessageType.PING, b"p%d" % sent)
            sent += 1
        return sent

    writer = Background(write)
    pinger = Background(ping)
    assert server.read_message() == (MessageType.BINARY, data)
    writer.result()
    sent = pinger.result()
    client.write_message(MessageType.TEXT, "done")
    assert server.read_message() == (MessageType.TEXT, "done")
    assert sent > 0
    assert pings == [b"p%d" % i for i in range(sent)]


# -- handlers -------------------------------------------------------------------------


def test_default_ping_handler_answers_with_pong(pair):
    client, server = pair
    guard_reads(client, server)
    pongs: list[bytes] = []
    client.set_pong_handler(pongs.append)
    client.write_control(MessageType.PING, b"hi")
    client.write_message(MessageType.TEXT, "x")
    assert server.read_message() == (MessageType.TEXT, "x")
    server.write_message(MessageType.TEXT, "y")
    assert client.read_message() == (MessageType.TEXT, "y")
    assert pongs == [b"hi"]


def test_custom_ping_handler_replaces_the_pong(pair):
    client, server = pair
    guard_reads(client, server)
    pings: list[bytes] = []
    pongs: list[bytes] = []
    client.set_pong_handler(pongs.append)
    server.set_ping_handler(pings.append)
    assert server.ping_handler() == pings.append
    client.write_control(MessageType.PING, b"one")
    client.write_message(MessageType.TEXT, "x")
    assert server.read_message() == (MessageType.TEXT, "x")
    assert pings == [b"one"]
    server.write_message(MessageType.TEXT, "y")
    assert client.read_message() == (MessageType.TEXT, "y")
    assert pongs == []  # no automatic answer

    server.set_ping_handler(None)  # restores the default
    assert server.ping_handler() is None
    client.write_control(MessageType.PING, b"two")
    client.write_message(MessageType.TEXT, "x")
    assert server.read_message() == (MessageType.TEXT, "x")
    server.write_message(MessageType.TEXT, "y")
    assert client.read_message() == (MessageType.TEXT, "y")
    assert pings == [b"one"]
    assert pongs == [b"two"]


def test_custom_ping_handler_can_answer_itself(pair):
    client, server = pair
    guard_reads(client, server)
    pongs: list[bytes] = []
    client.set_pong_handler(pongs.append)
    server.set_ping_handler(lambda p: server.write_control(MessageType.PONG, p[::-1]))
    client.write_control(MessageType.PING, b"abc")
    client.write_message(MessageType.TEXT, "x")
    server.read_message()
    server.write_message(MessageType.TEXT, "y")
    client.read_message()
    assert pongs == [b"cba"]


def test_pongs_are_ignored_by_default(pair):
    client, server = pair
    guard_reads(server)
    assert server.pong_handler() is None
    client.write_control(MessageType.PONG, b"unsolicited")
    client.write_message(MessageType.TEXT, "x")
    assert server.read_message() == (MessageType.TEXT, "x")


def test_close_handler_sees_code_and_text(pair):
    client, server = pair
    guard_reads(client, server)
    seen: list[tuple[int, str]] = []
    server.set_close_handler(lambda code, text: seen.append((code, text)))
    assert server.close_handler() is not None
    client.write_control(MessageType.CLOSE, format_close_message(4000, "bye"))
    with pytest.raises(CloseError) as info:
        server.read_message()
    assert (info.value.code, info.value.text) == (4000, "bye")
    assert seen == [(4000, "bye")]
    # The core echoed the Close; the server then closed the TCP connection.
    with pytest.raises(CloseError) as echo:
        client.read_message()
    assert echo.value.code == 4000
    assert server.net_conn().fileno() == -1


def test_handler_getters(pair):
    client, _ = pair
    assert (client.ping_handler(), client.pong_handler(), client.close_handler()) == (
        None,
        None,
        None,
    )

    def ping(payload: bytes) -> None:
        pass

    def pong(payload: bytes) -> None:
        pass

    def close(code: int, text: str) -> None:
        pass

    client.set_ping_handler(ping)
    client.set_pong_handler(pong)
    client.set_close_handler(close)
    assert client.ping_handler() is ping
    assert client.pong_handler() is pong
    assert client.close_handler() is close
    client.set_pong_handler(None)
    client.set_close_handler(None)
    assert client.pong_handler() is None
    assert client.close_handler() is None


# -- errors are permanent ---------------------------------------------------------------


def test_close_error_is_permanent(pair):
    client, server = pair
    guard_reads(server)
    client.write_control(MessageType.CLOSE, format_close_message(1001, "going"))
    with pytest.raises(CloseError) as first:
        server.read_message()
    assert first.value.code == CloseCode.GOING_AWAY
    for read in (server.read_message, server.next_reader, server.read_json):
        with pytest.raises(CloseError) as again:
            read()
        assert again.value is first.value


def test_close_without_code_is_1005(pair):
    client, server = pair
    guard_reads(server)
    client.write_control(MessageType.CLOSE, b"")
    with pytest.raises(CloseError) as info:
        server.read_message()
    assert info.value.code == CloseCode.NO_STATUS_RCVD


def test_unmasked_frame_fails_the_connection_with_1002(raw_client):
    peer, server = raw_client
    guard_reads(server)
    peer.send(Opcode.TEXT, b"hi", masked=False)
    with pytest.raises(RemoteProtocolError) as first:
        server.read_message()
    assert first.value.code == CloseCode.PROTOCOL_ERROR
    assert peer.close_frame()[0] == CloseCode.PROTOCOL_ERROR
    assert peer.at_eof()  # the server closed its socket
    with pytest.raises(RemoteProtocolError) as again:
        server.read_message()
    assert again.value is first.value
    assert not is_close_error(first.value, CloseCode.PROTOCOL_ERROR)


def test_over_the_read_limit_fails_with_1009(raw_client):
    peer, server = raw_client
    guard_reads(server)
    server.set_read_limit(10)
    peer.send(Opcode.BINARY, b"x" * 100)
    with pytest.raises(ReadLimitError) as first:
        server.read_message()
    assert first.value.code == CloseCode.MESSAGE_TOO_BIG
    assert peer.close_frame()[0] == CloseCode.MESSAGE_TOO_BIG
    assert peer.at_eof()
    with pytest.raises(ReadLimitError) as again:
        server.next_reader()
    assert again.value is first.value


def test_read_limit_none_removes_the_limit(raw_client):
    peer, server = raw_client
    guard_reads(server)
    server.set_read_limit(None)
    data = os.urandom(1024 * 1024 + 10)
    sender = Background(lambda: peer.send(Opcode.BINARY, data))
    assert server.read_message() == (MessageType.BINARY, data)
    sender.result()


def test_read_limit_applies_to_a_streamed_message(raw_client):
    peer, server = raw_client
    guard_reads(server)
    server.set_read_limit(1000)
    peer.send(Opcode.BINARY, b"a" * 600, fin=False)
    peer.send(Opcode.CONTINUATION, b"b" * 600)
    _, reader = server.next_reader()
    with pytest.raises(ReadLimitError):
        reader.read()
    assert peer.close_frame()[0] == CloseCode.MESSAGE_TOO_BIG


def test_invalid_utf8_fails_with_1007(raw_client):
    peer, server = raw_client
    guard_reads(server)
    peer.send(Opcode.TEXT, b"\xff\xfe")
    with pytest.raises(RemoteProtocolError) as info:
        server.read_message()
    assert info.value.code == CloseCode.INVALID_FRAME_PAYLOAD_DATA
    assert peer.close_frame()[0] == CloseCode.INVALID_FRAME_PAYLOAD_DATA


def test_eof_without_close_is_1006(raw_server):
    client, peer = raw_server
    guard_reads(client)
    peer.sock.close()
    with pytest.raises(CloseError) as info:
        client.read_message()
    err = info.value
    assert err.code == CloseCode.ABNORMAL_CLOSURE
    assert is_close_error(err, CloseCode.ABNORMAL_CLOSURE)
    assert not is_close_error(err, CloseCode.NORMAL_CLOSURE)
    assert is_unexpected_close_error(err, CloseCode.NORMAL_CLOSURE, CloseCode.GOING_AWAY)
    assert not is_unexpected_close_error(err, CloseCode.ABNORMAL_CLOSURE)
    with pytest.raises(CloseError) as again:
        client.read_message()
    assert again.value is err


def test_normal_close_is_expected(pair):
    client, server = pair
    guard_reads(server)
    client.write_control(MessageType.CLOSE, format_close_message(CloseCode.NORMAL_CLOSURE))
    with pytest.raises(CloseError) as info:
        server.read_message()
    assert is_close_error(info.value, CloseCode.NORMAL_CLOSURE, CloseCode.GOING_AWAY)
    assert not is_unexpected_close_error(info.value, CloseCode.NORMAL_CLOSURE)


def test_eof_mid_message_is_1006(raw_server):
    client, peer = raw_server
    guard_reads(client)
    peer.send(Opcode.BINARY, b"partial", fin=False)
    peer.sock.shutdown(socket.SHUT_WR)
    with pytest.raises(CloseError) as info:
        client.read_message()
    assert info.value.code == CloseCode.ABNORMAL_CLOSURE


def test_write_after_close_sent_raises_close_sent_error(pair):
    client, server = pair
    client.write_control(MessageType.CLOSE, format_close_message())
    with pytest.raises(CloseSentError):
        client.write_message(MessageType.TEXT, "late")
    with pytest.raises(CloseSentError):
        client.write_json({})
    with pytest.raises(CloseSentError):
        client.write_control(MessageType.PING, b"")
    with pytest.raises(CloseSentError):
        client.write_control(MessageType.CLOSE, format_close_message())
    with pytest.raises(CloseSentError), client.next_writer(MessageType.TEXT) as writer:
        writer.write(b"late")
    # The failed writer released the writer role.
    with pytest.raises(CloseSentError):
        client.write_message(MessageType.TEXT, "late")
    guard_reads(server)
    with pytest.raises(CloseError) as info:
        server.read_message()
    assert info.value.code == CloseCode.NORMAL_CLOSURE


def test_write_after_receiving_close_raises_close_sent_error(pair):
    client, server = pair
    guard_reads(server)
    client.write_control(MessageType.CLOSE, format_close_message())
    with pytest.raises(CloseError):
        server.read_message()
    with pytest.raises(CloseSentError):  # the core echoed the Close
        server.write_message(MessageType.TEXT, "late")


# -- deadlines ------------------------------------------------------------------------


def test_read_deadline_with_silent_peer(pair):
    client, _ = pair
    start = time.monotonic()
    client.set_read_deadline(start + 0.2)
    with pytest.raises(TimeoutError) as first:
        client.read_message()
    elapsed = time.monotonic() - start
    assert 0.15 <= elapsed < 2
    # Permanent, and immediate, even with the deadline lifted.
    client.set_read_deadline(None)
    start = time.monotonic()
    with pytest.raises(TimeoutError) as again:
        client.read_message()
    assert again.value is first.value
    assert time.monotonic() - start < 0.5


def test_read_deadline_in_the_past_fails_at_once_when_nothing_is_buffered(pair):
    client, _ = pair
    client.set_read_deadline(time.monotonic() - 1)
    start = time.monotonic()
    with pytest.raises(TimeoutError):
        client.next_reader()
    assert time.monotonic() - start < 0.5


def test_read_deadline_does_not_stop_a_timely_message(pair):
    client, server = pair
    server.set_read_deadline(time.monotonic() + 2)
    timer = threading.Timer(0.1, lambda: client.write_message(MessageType.TEXT, "in time"))
    timer.start()
    try:
        assert server.read_message() == (MessageType.TEXT, "in time")
    finally:
        timer.join(TIMEOUT)


def test_write_deadline_with_peer_that_never_reads(pair):
    client, _ = pair
    start = time.monotonic()
    client.set_write_deadline(start + 0.3)
    with pytest.raises(TimeoutError) as first:
        client.write_message(MessageType.BINARY, bytes(16 * 1024 * 1024))
    assert time.monotonic() - start < 2
    assert client.net_conn().fileno() == -1  # a frame may be cut in half: the Conn closed
    client.set_write_deadline(None)
    with pytest.raises(TimeoutError) as again:  # and stays unusable
        client.write_message(MessageType.TEXT, "x")
    assert again.value is first.value


def test_write_control_deadline_waiting_for_a_blocked_writer(pair):
    client, _ = pair
    writer = Background(lambda: client.write_message(MessageType.BINARY, bytes(16 * 1024 * 1024)))
    time.sleep(0.2)  # the writer is now stuck: the peer never reads
    assert writer.alive()
    start = time.monotonic()
    with pytest.raises(TimeoutError):
        client.write_control(MessageType.PING, b"x", deadline=start + 0.2)
    assert 0.15 <= time.monotonic() - start < 2
    client.close()  # frees the stuck writer
    assert isinstance(writer.error(), OSError)


def test_write_control_deadline_on_a_full_socket(pair):
    client, _ = pair
    client.set_write_deadline(time.monotonic() + 0.3)
    with pytest.raises(TimeoutError) as first:
        client.write_message(MessageType.BINARY, bytes(16 * 1024 * 1024))
    with pytest.raises(TimeoutError) as again:
        client.write_control(MessageType.PING, b"x", deadline=time.monotonic() + 0.2)
    assert again.value is first.value


# -- closing ----------------------------------------------------------------------------


def test_close_from_another_thread_wakes_a_blocked_reader(pair):
    client, _ = pair
    reader = Background(client.read_message)
    time.sleep(0.2)
    assert reader.alive()
    closed_at = time.monotonic()
    client.close()
    error = reader.error(2)
    assert isinstance(error, CloseError)
    assert error.code == CloseCode.ABNORMAL_CLOSURE
    assert reader.done_at is not None
    assert reader.done_at - closed_at < 2


def test_two_concurrent_readers(pair):
    client, _ = pair
    client.set_read_deadline(time.monotonic() + 3)  # neither thread can hang
    first = Background(client.read_message)
    time.sleep(0.2)  # the first reader is now blocked: the peer sends nothing
    assert first.alive()
    with pytest.raises(ConcurrencyError):
        client.read_message()
    with pytest.raises(ConcurrencyError):
        client.next_reader()
    with pytest.raises(ConcurrencyError):
        client.read_json()
    assert first.alive()  # the first reader was not disturbed
    client.close()
    error = first.error(2)
    assert isinstance(error, CloseError)
    assert error.code == CloseCode.ABNORMAL_CLOSURE


def test_close_gracefully(pair):
    client, server = pair
    guard_reads(server)
    server_read = Background(server.read_message)
    start = time.monotonic()
    client.close_gracefully(reason="bye", timeout=3)
    assert time.monotonic() - start < 2  # returned on the echo, not the timeout
    assert client.net_conn().fileno() == -1
    error = server_read.error()
    assert isinstance(error, CloseError)
    assert (error.code, error.text) == (CloseCode.NORMAL_CLOSURE, "bye")
    assert server.net_conn().fileno() == -1


def test_close_gracefully_discards_messages_meanwhile(pair):
    client, server = pair
    guard_reads(server)
    server.write_message(MessageType.TEXT, "unread")

    def serve() -> None:
        with pytest.raises(CloseError):
            server.read_message()

    server_read = Background(serve)
    client.close_gracefully(code=CloseCode.GOING_AWAY, timeout=3)
    server_read.result()
    assert client.net_conn().fileno() == -1


def test_close_gracefully_times_out_with_silent_peer(pair):
    client, _ = pair
    start = time.monotonic()
    client.close_gracefully(timeout=0.3)
    assert 0.25 <= time.monotonic() - start < 2
    assert client.net_conn().fileno() == -1


def test_close_gracefully_after_close_received(pair):
    client, server = pair
    guard_reads(server)
    client.write_control(MessageType.CLOSE, format_close_message())
    with pytest.raises(CloseError):
        server.read_message()
    start = time.monotonic()
    server.close_gracefully(timeout=3)
    assert time.monotonic() - start < 1


def test_close_is_idempotent_and_reads_and_writes_after_it_fail(pair):
    client, _ = pair
    client.close()
    client.close()
    assert client.net_conn().fileno() == -1
    with pytest.raises(OSError, match="Bad file descriptor"):
        client.write_message(MessageType.TEXT, "x")
    with pytest.raises(CloseError) as info:
        client.read_message()
    assert info.value.code == CloseCode.ABNORMAL_CLOSURE


def test_next_writer_text_split_inside_a_character(pair):
    client, server = pair
    guard_reads(server)
    client.write_buffer_size = 3  # every other frame ends inside a two-byte character
    with client.next_writer(MessageType.TEXT) as writer:
        writer.write_text("üüüüü")
    assert server.read_message() == (MessageType.TEXT, "üüüüü")


def test_ping_while_the_writer_is_stuck_respects_the_read_deadline(raw_server):
    """Answering a Ping must not block the reader past its deadline.

    The writer thread holds the write lock while the peer doesn't read; the
    automatic Pong then has to wait for it (gorilla gives that wait a deadline).
    """
    client, peer = raw_server
    writer = Background(lambda: client.write_message(MessageType.BINARY, bytes(16 * 1024 * 1024)))
    time.sleep(0.2)
    assert writer.alive()
    peer.send(Opcode.PING, b"are you there")
    client.set_read_deadline(time.monotonic() + 0.3)
    reader = Background(client.read_message)
    reader._thread.join(2)
    stuck = reader.alive()
    client.close()  # frees both threads
    writer.error()
    error = reader.error()
    assert not stuck, "read_message ignored its deadline while waiting to send the Pong"
    assert isinstance(error, TimeoutError)


# -- accessors ----------------------------------------------------------------------------


def test_accessors(sockets):
    a, b = sockets
    core = Connection(Role.CLIENT, subprotocol="chat")
    local, remote = a.getsockname(), a.getpeername()
    with Conn(a, core) as client:
        assert client.subprotocol == "chat"
        assert client.protocol is core
        assert client.net_conn() is a
        assert client.local_addr == local
        assert client.remote_addr == remote
        # A plain socket stays blocking: reads and writes without a deadline
        # are one call each, the others use MSG_DONTWAIT (wsproto_sync._io).
        assert a.getblocking() is hasattr(socket, "MSG_DONTWAIT")
        text = repr(client)
        assert text.startswith("<Conn client")
        assert "OPEN" in text
        server = Conn(b, Connection(Role.SERVER))
        assert server.subprotocol is None
        assert repr(server).startswith("<Conn server")
        server.close()
    assert a.fileno() == -1  # the context manager closed it


def test_repr_shows_the_state(pair):
    client, _ = pair
    client.write_control(MessageType.CLOSE, format_close_message())
    assert "OPEN" not in repr(client)


# -- prepared messages and compression ----------------------------------------------------------


def deflate_pair(sockets) -> tuple[Conn, Conn]:
    a, b = sockets
    _, server_ext = ServerPerMessageDeflate().negotiate(ExtensionOffer("permessage-deflate"))
    client_ext = ClientPerMessageDeflate().accept(ExtensionOffer("permessage-deflate"))
    client = Conn(a, Connection(Role.CLIENT, extensions=[client_ext]))
    server = Conn(b, Connection(Role.SERVER, extensions=[server_ext]))
    return client, server


def deflate_server_and_raw_client(sockets) -> tuple[RawPeer, Conn]:
    a, b = sockets
    _, server_ext = ServerPerMessageDeflate().negotiate(ExtensionOffer("permessage-deflate"))
    return RawPeer(a, client=True), Conn(b, Connection(Role.SERVER, extensions=[server_ext]))


def test_write_prepared_message_plain(pair):
    client, server = pair
    guard_reads(client, server)
    prepared = PreparedMessage(MessageType.TEXT, "prepared ü")
    for _ in range(3):
        client.write_prepared_message(prepared)
        server.write_prepared_message(prepared)
    for _ in range(3):
        assert server.read_message() == (MessageType.TEXT, "prepared ü")
        assert client.read_message() == (MessageType.TEXT, "prepared ü")


def test_write_prepared_message_compressed(sockets):
    client, server = deflate_pair(sockets)
    guard_reads(client, server)
    data = b"compressible " * 1000
    prepared = PreparedMessage(MessageType.BINARY, data)
    client.write_prepared_message(prepared)
    server.write_prepared_message(prepared)
    server.write_prepared_message(prepared)
    assert server.read_message() == (MessageType.BINARY, data)
    assert client.read_message() == (MessageType.BINARY, data)
    assert client.read_message() == (MessageType.BINARY, data)
    client.close()
    server.close()


def test_compression_round_trip_and_toggles(sockets):
    client, server = deflate_pair(sockets)
    guard_reads(client, server)
    data = "über " * 5000
    client.set_compression_level(9)
    client.write_message(MessageType.TEXT, data)
    client.enable_write_compression(False)
    client.write_message(MessageType.TEXT, data)
    with client.next_writer(MessageType.TEXT) as writer:
        writer.write_text(data)
    assert [server.read_message() for _ in range(3)] == [(MessageType.TEXT, data)] * 3
    client.close()
    server.close()


def test_enable_write_compression_on_the_wire(sockets):
    peer, server = deflate_server_and_raw_client(sockets)
    data = b"a" * 5000
    server.write_message(MessageType.BINARY, data)
    frame, _ = peer.frame()
    assert frame.rsv & RSV1
    assert len(frame.payload) < len(data)

    server.enable_write_compression(False)
    server.write_message(MessageType.BINARY, data)
    frame, _ = peer.frame()
    assert not frame.rsv & RSV1
    assert frame.payload == data

    server.enable_write_compression(True)
    server.set_compression_level(0)  # stored blocks: no smaller than the input
    server.write_message(MessageType.BINARY, data)
    frame, _ = peer.frame()
    assert frame.rsv & RSV1
    assert len(frame.payload) >= len(data)

    server.write_prepared_message(PreparedMessage(MessageType.BINARY, data))
    frame, _ = peer.frame()
    assert frame.rsv & RSV1
    server.close()


def test_set_compression_level_checks_the_level(pair):
    client, _ = pair
    with pytest.raises(LocalProtocolError):
        client.set_compression_level(10)
    client.set_compression_level(5)  # no extension: a no-op
    client.enable_write_compression(True)


def test_pong_queued_while_the_writer_is_busy_goes_out_after_its_frame(raw_server):
    client, peer = raw_server
    data = bytes(4 * 1024 * 1024)
    writer = Background(lambda: client.write_message(MessageType.BINARY, data))
    time.sleep(0.2)
    assert writer.alive()  # stuck: the peer doesn't read yet
    peer.send(Opcode.PING, b"late pong")
    reader = Background(client.read_message)
    time.sleep(0.2)  # the reader has seen the Ping and queued the Pong
    frame, _ = peer.frame()  # now read: the writer's frame first...
    assert (frame.opcode, len(frame.payload)) == (Opcode.BINARY, len(data))
    frame, _ = peer.frame()  # ...then the Pong the writer found queued
    assert (frame.opcode, frame.payload) == (Opcode.PONG, b"late pong")
    writer.result()
    client.close()
    assert isinstance(reader.error(), CloseError)


def test_every_ping_is_answered_while_messages_are_written(pair):
    """No Pong may be left queued when reader and writer race for the socket."""
    client, server = pair
    client.set_read_limit(None)
    pongs: list[bytes] = []
    all_pongs = threading.Event()
    count = 300

    def on_pong(payload: bytes) -> None:
        pongs.append(payload)
        if len(pongs) == count:
            all_pongs.set()

    server.set_pong_handler(on_pong)

    def client_reads() -> BaseException:
        return read_until_error(client)

    def client_writes() -> None:
        for _ in range(3000):
            client.write_message(MessageType.BINARY, b"m" * 100)

    def server_reads() -> BaseException:
        return read_until_error(server)

    guard_reads(client, server)
    threads = [Background(client_reads), Background(client_writes), Background(server_reads)]
    for i in range(count):
        server.write_control(MessageType.PING, b"%d" % i)
    threads[1].result()
    got_all = all_pongs.wait(3)
    client.close()
    server.close()
    for thread in (threads[0], threads[2]):
        assert isinstance(thread.result(), CloseError)
    assert got_all, f"{count - len(pongs)} of {count} Pongs were never sent"
    assert pongs == [b"%d" % i for i in range(count)]


def test_an_exception_from_a_handler_propagates_and_reading_goes_on(raw_client):
    peer, server = raw_client
    guard_reads(server)

    def ping_handler(payload: bytes) -> None:
        raise ValueError(payload.decode())

    server.set_ping_handler(ping_handler)
    peer.send(Opcode.BINARY, b"ab", fin=False)
    peer.send(Opcode.PING, b"boom")
    peer.send(Opcode.CONTINUATION, b"cd")
    with pytest.raises(ValueError, match="boom"):
        server.read_message()
    # The message begun before the exception is still delivered, whole.
    message_type, reader = server.next_reader()
    assert message_type is MessageType.BINARY
    assert reader.read() == b"abcd"
    peer.send(Opcode.TEXT, b"next")
    assert server.read_message() == (MessageType.TEXT, "next")


def test_connection_reset_is_a_permanent_read_error():
    with socket.create_server(("127.0.0.1", 0)) as listener:
        a = socket.create_connection(listener.getsockname(), timeout=TIMEOUT)
        b, _ = listener.accept()
    client = Conn(a, Connection(Role.CLIENT))
    try:
        assert client.remote_addr == b.getsockname()
        b.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        b.close()  # sends a TCP reset
        guard_reads(client)
        with pytest.raises(ConnectionResetError) as first:
            client.read_message()
        with pytest.raises(ConnectionResetError) as again:
            client.read_message()
        assert again.value is first.value
    finally:
        client.close()


def test_waiting_on_a_socket_closed_by_another_thread_is_an_os_error() -> None:
    # The race close() can win between a would-block and the wait: it must
    # surface as OSError (then CloseError 1006 on the read side), not ValueError.
    from wsproto_sync._io import _wait

    a, b = socket.socketpair()
    b.close()
    a.close()
    with pytest.raises(OSError, match="closed"):
        _wait(a, False, None)


def test_join_messages_reads_every_message_with_the_terminator(pair: tuple[Conn, Conn]) -> None:
    client, server = pair
    client.set_read_deadline(time.monotonic() + 5)
    for text in ("a", "", "bb", "ccc" * 30_000):
        server.write_message(MessageType.TEXT, text)
    server.write_message(MessageType.BINARY, b"\xff")
    server.write_control(MessageType.CLOSE, format_close_message(1000))
    joined = join_messages(client, b"\n")
    assert joined.read() == b"a\n\nbb\n" + b"ccc" * 30_000 + b"\n\xff\n"
    assert joined.read() == b""


def test_join_messages_raises_an_abnormal_close(pair: tuple[Conn, Conn]) -> None:
    client, server = pair
    client.set_read_deadline(time.monotonic() + 5)
    server.write_message(MessageType.TEXT, "partial")
    server.close()  # no Close frame: 1006
    joined = join_messages(client)
    with pytest.raises(CloseError) as info:
        joined.read()
    assert info.value.code == CloseCode.ABNORMAL_CLOSURE


def test_join_messages_as_lines_of_text(pair: tuple[Conn, Conn]) -> None:
    client, server = pair
    client.set_read_deadline(time.monotonic() + 5)
    for line in ("first", "second"):
        server.write_message(MessageType.TEXT, line)
    server.write_control(MessageType.CLOSE, format_close_message(1001))
    lines = io.TextIOWrapper(join_messages(client, b"\n"), encoding="utf-8")
    assert [line.rstrip("\n") for line in lines] == ["first", "second"]


# -- for message in conn (as the async adapters' async for) -------------------------


@pytest.mark.parametrize("code", [1000, 1001, None])
def test_for_ends_on_a_normal_close(pair: tuple[Conn, Conn], code: int | None) -> None:
    client, server = pair
    client.set_read_deadline(time.monotonic() + 5)
    for text in ("one", "two"):
        server.write_message(MessageType.TEXT, text)
    server.write_message(MessageType.BINARY, b"three")
    payload = b"" if code is None else format_close_message(code, "bye")
    server.write_control(MessageType.CLOSE, payload)
    assert list(client) == ["one", "two", b"three"]
    with pytest.raises(CloseError) as info:  # the end is permanent
        client.read_message()
    assert info.value.code == (CloseCode.NO_STATUS_RCVD if code is None else code)


@pytest.mark.parametrize("code", [1011, 4000])
def test_for_raises_an_abnormal_close(pair: tuple[Conn, Conn], code: int) -> None:
    client, server = pair
    client.set_read_deadline(time.monotonic() + 5)
    server.write_message(MessageType.TEXT, "before")
    server.write_control(MessageType.CLOSE, format_close_message(code, "why"))
    got: list[str | bytes] = []
    with pytest.raises(CloseError) as info:
        got.extend(client)
    assert got == ["before"]
    assert (info.value.code, info.value.text) == (code, "why")


def test_for_raises_1006_when_the_peer_vanishes(pair: tuple[Conn, Conn]) -> None:
    client, server = pair
    client.set_read_deadline(time.monotonic() + 5)
    server.write_message(MessageType.TEXT, "last")
    server.close()
    got: list[str | bytes] = []
    with pytest.raises(CloseError) as info:
        got.extend(client)
    assert got == ["last"]
    assert info.value.code == CloseCode.ABNORMAL_CLOSURE


def test_for_is_a_read_and_takes_the_reader_role(pair: tuple[Conn, Conn]) -> None:
    client, server = pair
    messages = iter(client)
    reading = Background(lambda: next(messages))
    time.sleep(0.05)  # the iteration is now waiting in read_message()
    with pytest.raises(ConcurrencyError):
        client.read_message()
    server.write_message(MessageType.TEXT, "to the iteration")
    assert reading.result() == "to the iteration"


def test_request_and_response_need_a_handshake(pair: tuple[Conn, Conn]) -> None:
    client, server = pair  # built open, around cores without a handshake
    for conn in (client, server):
        with pytest.raises(LocalProtocolError, match="only a server connection"):
            conn.request  # noqa: B018 - the property raises
        with pytest.raises(LocalProtocolError, match="not opened by a handshake"):
            conn.response  # noqa: B018


# -- keepalive ---------------------------------------------------------------------


def test_keepalive_measures_latency_while_both_sides_read(sockets):
    a, b = sockets
    client = Conn(a, Connection(Role.CLIENT), keepalive_interval=0.05)
    server = Conn(b, Connection(Role.SERVER))
    guard_reads(client, server)
    pongs: list[bytes] = []
    client.set_pong_handler(pongs.append)  # a handler of one's own still sees them
    server_reads = Background(lambda: read_until_error(server))
    client_reads = Background(lambda: read_until_error(client))
    deadline = time.monotonic() + TIMEOUT
    while len(pongs) < 3 and time.monotonic() < deadline:
        time.sleep(0.01)
    assert len(pongs) >= 3
    assert client.latency is not None
    assert 0 <= client.latency < TIMEOUT
    assert [struct.unpack("!I", p)[0] for p in pongs[:3]] == [1, 2, 3]
    client.close_gracefully(timeout=TIMEOUT)
    assert isinstance(client_reads.result(), CloseError)
    assert isinstance(server_reads.result(), CloseError)
    server.close()


def test_keepalive_fails_a_connection_whose_peer_never_answers(sockets):
    a, b = sockets
    peer = RawPeer(b, client=False)
    conn = Conn(a, Connection(Role.CLIENT), keepalive_interval=0.05, keepalive_timeout=0.1)
    guard_reads(conn)
    started = time.monotonic()
    error = read_until_error(conn)
    assert isinstance(error, CloseError)
    assert error.code == CloseCode.ABNORMAL_CLOSURE  # no Close came back
    assert time.monotonic() - started < TIMEOUT
    ping, _ = peer.frame()
    assert (ping.opcode, ping.payload) == (Opcode.PING, struct.pack("!I", 1))
    assert peer.close_frame() == (CloseCode.INTERNAL_ERROR, "keepalive ping timeout")
    assert conn.latency is None


def test_keepalive_interval_must_be_positive(sockets):
    a, _ = sockets
    with pytest.raises(ValueError, match="keepalive_interval"):
        Conn(a, Connection(Role.CLIENT), keepalive_interval=0)
