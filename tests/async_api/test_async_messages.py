"""Messages over real loopback connections: whole, streamed, JSON, prepared, compressed."""

from __future__ import annotations

import array
import json
import os
from typing import Any

import anyio
import pytest
from async_helpers import (
    STEP,
    RawPeer,
    echo_server,
    handshake_request,
    kind_of,
    raw_client,
    raw_server,
    read_head,
    serving,
    url_of,
    ws_pair,
)
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from wsproto_core import Opcode
from wsproto_core.frames import RSV1

pytestmark = pytest.mark.anyio

MIB = 1024 * 1024

MESSAGES = [
    pytest.param("héllo wörld ☃", id="text"),
    pytest.param(bytes(range(256)), id="binary"),
    pytest.param("", id="empty-text"),
    pytest.param(b"", id="empty-binary"),
    pytest.param("ab☃" * 100_000, id="large-text"),
    pytest.param(os.urandom(MIB), id="one-mebibyte-binary"),
]


# -- whole messages ----------------------------------------------------------------------------


@pytest.mark.parametrize("data", MESSAGES)
async def test_echo(ws, data):
    async with echo_server(ws) as server:
        conn, response = await ws.Dialer(handshake_timeout=STEP).dial(url_of(server))
        async with conn:
            assert response.status_code == 101
            await conn.write_message(kind_of(ws, data), data)
            assert await conn.read_message() == (kind_of(ws, data), data)


@pytest.mark.parametrize("direction", ["client-to-server", "server-to-client"])
async def test_both_directions_keep_order(ws, direction):
    async with ws_pair(ws) as (client, server):
        sender, receiver = (client, server) if direction == "client-to-server" else (server, client)
        for i in range(50):
            await sender.write_message(ws.MessageType.TEXT, f"m{i}")
        got = [await receiver.read_message() for _ in range(50)]
        assert got == [(ws.MessageType.TEXT, f"m{i}") for i in range(50)]


async def test_over_the_default_read_limit_client_side(ws):
    """1 MiB + 1 from the server: the client refuses it with 1009, which the server reads."""
    async with ws_pair(ws, upgrader=ws.Upgrader(max_message_size=None)) as (client, server):
        async with anyio.create_task_group() as tg:
            tg.start_soon(server.write_message, ws.MessageType.BINARY, bytes(MIB + 1))
            with pytest.raises(ws.ReadLimitError) as info:
                await client.read_message()
        assert info.value.code == ws.CloseCode.MESSAGE_TOO_BIG
        with pytest.raises(ws.CloseError) as seen:
            await server.read_message()
        assert seen.value.code == ws.CloseCode.MESSAGE_TOO_BIG
        with pytest.raises(ws.ReadLimitError) as again:  # permanent
            await client.read_message()
        assert again.value is info.value


async def test_over_the_default_read_limit_server_side(ws):
    # Writes of more than TCP holds run beside the read: every adapter's
    # peer needs a task reading then (see async_helpers).
    async with ws_pair(ws, dialer=ws.Dialer(max_message_size=None)) as (client, server):
        async with anyio.create_task_group() as tg:
            tg.start_soon(client.write_message, ws.MessageType.BINARY, bytes(MIB))
            # Exactly the limit: fine.
            assert await server.read_message() == (ws.MessageType.BINARY, bytes(MIB))
        async with anyio.create_task_group() as tg:
            tg.start_soon(client.write_message, ws.MessageType.TEXT, "x" * (MIB + 1))
            with pytest.raises(ws.ReadLimitError):
                await server.read_message()
        with pytest.raises(ws.CloseError) as seen:
            await client.read_message()
        assert seen.value.code == ws.CloseCode.MESSAGE_TOO_BIG


async def test_set_read_limit(ws):
    async with ws_pair(ws) as (client, server):
        server.set_read_limit(2 * MIB)
        data = os.urandom(2 * MIB)
        async with anyio.create_task_group() as tg:
            tg.start_soon(client.write_message, ws.MessageType.BINARY, data)
            assert await server.read_message() == (ws.MessageType.BINARY, data)
        server.set_read_limit(None)
        async with anyio.create_task_group() as tg:
            tg.start_soon(client.write_message, ws.MessageType.BINARY, data + b"!")
            assert await server.read_message() == (ws.MessageType.BINARY, data + b"!")
        server.set_read_limit(10)
        await client.write_message(ws.MessageType.TEXT, "0123456789")
        assert await server.read_message() == (ws.MessageType.TEXT, "0123456789")
        await client.write_message(ws.MessageType.TEXT, "0123456789a")
        with pytest.raises(ws.ReadLimitError) as info:
            await server.read_message()
        assert info.value.code == ws.CloseCode.MESSAGE_TOO_BIG


async def test_read_limit_applies_to_a_streamed_message(ws):
    async def handler(conn: Any) -> None:
        conn.set_read_limit(1000)
        _, reader = await conn.next_reader()
        with pytest.raises(ws.ReadLimitError):
            await reader.read()
        errors.append(True)

    errors: list[bool] = []
    async with raw_client(ws, handler) as (peer, _):
        await peer.send(Opcode.BINARY, b"a" * 600, fin=False)
        await peer.send(Opcode.CONTINUATION, b"b" * 600)
        code, _ = await peer.close_frame()
        assert code == ws.CloseCode.MESSAGE_TOO_BIG
    assert errors == [True]


async def test_json(ws):
    value = {"a": [1, 2.5, None, True], "b": "ü"}
    async with ws_pair(ws) as (client, server):
        await client.write_json(value)
        assert await server.read_json() == value
        await server.write_json(value, sort_keys=True)
        assert await client.read_message() == (
            ws.MessageType.TEXT,
            json.dumps(value, sort_keys=True),
        )
        await client.write_message(ws.MessageType.TEXT, '{"x": 1.5}')
        assert await server.read_json(parse_float=str) == {"x": "1.5"}
        await client.write_message(ws.MessageType.TEXT, "not json")
        with pytest.raises(json.JSONDecodeError):
            await server.read_json()
        await client.write_message(ws.MessageType.TEXT, "[]")  # a bad message costs nothing
        assert await server.read_json() == []


# -- async for ---------------------------------------------------------------------------------


@pytest.mark.parametrize("code", [1000, 1001, None])
async def test_async_for_ends_on_a_normal_close(ws, code):
    async with ws_pair(ws) as (client, server):
        for text in ("one", "two"):
            await server.write_message(ws.MessageType.TEXT, text)
        await server.write_message(ws.MessageType.BINARY, b"three")
        payload = b"" if code is None else ws.format_close_message(code, "bye")
        await server.write_control(ws.MessageType.CLOSE, payload)
        assert [message async for message in client] == ["one", "two", b"three"]
        with pytest.raises(ws.CloseError) as info:  # the end is permanent
            await client.read_message()
        assert info.value.code == (ws.CloseCode.NO_STATUS_RCVD if code is None else code)


async def collect(conn: Any, into: list[str | bytes]) -> None:
    async for message in conn:
        into.append(message)


@pytest.mark.parametrize("code", [1011, 4000])
async def test_async_for_raises_an_abnormal_close(ws, code):
    async with ws_pair(ws) as (client, server):
        await server.write_message(ws.MessageType.TEXT, "before")
        await server.write_control(ws.MessageType.CLOSE, ws.format_close_message(code, "why"))
        got: list[str | bytes] = []
        with pytest.raises(ws.CloseError) as info:
            await collect(client, got)
        assert got == ["before"]
        assert (info.value.code, info.value.text) == (code, "why")


async def test_async_for_raises_1006_when_the_peer_vanishes(ws):
    async with ws_pair(ws) as (client, server):
        await server.write_message(ws.MessageType.TEXT, "last")
        await server.close()
        got: list[str | bytes] = []
        with pytest.raises(ws.CloseError) as info:
            await collect(client, got)
        assert got == ["last"]
        assert info.value.code == ws.CloseCode.ABNORMAL_CLOSURE


# -- next_reader -------------------------------------------------------------------------------


async def send_fragmented(ws: Any, conn: Any, data: bytes, frame_size: int) -> None:
    conn.write_buffer_size = frame_size
    async with conn.next_writer(ws.MessageType.BINARY) as writer:
        await writer.write(data)


async def test_next_reader_read_n(ws):
    data = os.urandom(20_000)
    async with ws_pair(ws) as (client, server):
        await send_fragmented(ws, client, data, 1000)
        message_type, reader = await server.next_reader()
        assert message_type is ws.MessageType.BINARY
        assert isinstance(reader, ws.MessageReader)
        pieces = []
        while piece := await reader.read(333):
            assert len(piece) <= 333
            pieces.append(piece)
        assert len(pieces) >= 20000 // 333
        assert b"".join(pieces) == data
        assert await reader.read(10) == b""
        assert await reader.read() == b""


async def test_next_reader_async_for_chunks(ws):
    data = os.urandom(50_000)
    async with ws_pair(ws) as (client, server):
        await send_fragmented(ws, client, data, 4096)
        _, reader = await server.next_reader()
        chunks = [chunk async for chunk in reader]
        assert len(chunks) > 1
        assert b"".join(chunks) == data


async def test_next_reader_read_all_and_text(ws):
    async with ws_pair(ws) as (client, server):
        await send_fragmented(ws, client, b"x" * 10_000, 700)
        await client.write_message(ws.MessageType.TEXT, "ünïcode")
        _, reader = await server.next_reader()
        assert await reader.read() == b"x" * 10_000
        message_type, reader = await server.next_reader()
        assert message_type is ws.MessageType.TEXT
        assert await reader.read() == "ünïcode".encode()


async def test_next_reader_then_read_message(ws):
    async with ws_pair(ws) as (client, server):
        for data in ("one", "two", b"three"):
            await client.write_message(kind_of(ws, data), data)
        _, reader = await server.next_reader()
        assert await reader.read() == b"one"
        assert await server.read_message() == (ws.MessageType.TEXT, "two")
        _, reader = await server.next_reader()
        assert await reader.read() == b"three"


@pytest.mark.parametrize("again", ["read_message", "next_reader"])
async def test_reading_again_discards_the_rest_and_the_old_reader_raises(ws, again):
    async with ws_pair(ws) as (client, server):
        await send_fragmented(ws, client, os.urandom(30_000), 1000)
        await client.write_message(ws.MessageType.BINARY, b"next")
        _, reader = await server.next_reader()
        assert len(await reader.read(10)) == 10
        if again == "read_message":
            assert await server.read_message() == (ws.MessageType.BINARY, b"next")
        else:
            message_type, second = await server.next_reader()
            assert message_type is ws.MessageType.BINARY
            assert await second.read() == b"next"
        with pytest.raises(ws.LocalProtocolError):
            await reader.read(10)
        with pytest.raises(ws.LocalProtocolError):
            await reader.read()


async def test_an_unread_message_is_discarded_by_the_next_read(ws):
    async with ws_pair(ws) as (client, server):
        await client.write_message(ws.MessageType.TEXT, "skipped")
        await client.write_message(ws.MessageType.TEXT, "read")
        await server.next_reader()
        assert await server.read_message() == (ws.MessageType.TEXT, "read")


# -- next_writer -------------------------------------------------------------------------------


async def test_next_writer_frames_are_write_buffer_size(ws):
    data = os.urandom(1000)
    async with raw_server(ws, ws.Dialer(write_buffer_size=100)) as (client, peer):
        writer = client.next_writer(ws.MessageType.BINARY)
        assert isinstance(writer, ws.MessageWriter)
        for i in range(0, len(data), 7):
            assert await writer.write(data[i : i + 7]) == len(data[i : i + 7])
        await writer.close()
        frames = [await peer.frame()]
        while not frames[-1].fin:
            frames.append(await peer.frame())
    assert [len(frame.payload) for frame in frames] == [100] * 10
    assert [frame.opcode for frame in frames] == [Opcode.BINARY] + [Opcode.CONTINUATION] * 9
    assert b"".join(frame.payload for frame in frames) == data


async def test_next_writer_sends_nothing_before_close_for_a_small_message(ws):
    async with raw_server(ws) as (client, peer):
        writer = client.next_writer(ws.MessageType.TEXT)
        await writer.write(b"abc")
        with anyio.move_on_after(0.2) as scope:
            await peer.frame()
        assert scope.cancelled_caught  # nothing was sent yet
        await writer.close()
        frame = await peer.frame()
        assert (frame.opcode, frame.payload, frame.fin) == (Opcode.TEXT, b"abc", True)


async def test_next_writer_context_manager_write_text_and_bytes_likes(ws):
    async with ws_pair(ws) as (client, server):
        client.write_buffer_size = 3  # frames end inside two-byte characters
        async with client.next_writer(ws.MessageType.TEXT) as writer:
            assert await writer.write_text("hé") == 2
            assert await writer.write(b"llo") == 3
            assert await writer.write_text("üüü") == 3
        assert writer.closed
        assert await server.read_message() == (ws.MessageType.TEXT, "hélloüüü")
        with pytest.raises(ValueError, match="closed"):
            await writer.write(b"more")
        await writer.close()  # idempotent: no second final frame
        async with client.next_writer(ws.MessageType.BINARY) as writer:
            assert await writer.write(bytearray(b"ab")) == 2
            assert await writer.write(memoryview(b"cdefgh")) == 6
            assert await writer.write(array.array("H", [0x4241])) == 2  # counted in bytes
            assert await writer.write(b"") == 0
        await client.write_message(ws.MessageType.TEXT, "after")
        expected = b"abcdefgh" + bytes(array.array("H", [0x4241]))
        assert await server.read_message() == (ws.MessageType.BINARY, expected)
        assert await server.read_message() == (ws.MessageType.TEXT, "after")


async def test_next_writer_refuses_control_types(ws):
    async with ws_pair(ws) as (client, _):
        with pytest.raises(ws.LocalProtocolError):
            client.next_writer(ws.MessageType.PING)
        await client.next_writer(ws.MessageType.TEXT).close()  # the writer role was not taken


def counting_pool(ws: Any) -> Any:
    class Pool(ws.SharedBufferPool):  # type: ignore[name-defined,misc]
        """Counts the buffers out on loan."""

        def __init__(self) -> None:
            super().__init__()
            self.out = 0
            self.handed: list[bytearray] = []

        def get(self) -> bytearray | None:
            buffer = super().get()
            self.out += 1
            if buffer is not None:
                self.handed.append(buffer)
            return buffer  # type: ignore[no-any-return]

        def put(self, buffer: bytearray) -> None:
            self.out -= 1
            super().put(buffer)

    return Pool()


async def test_write_buffer_pool_lends_buffers_only_while_writing(ws):
    pool = counting_pool(ws)
    dialer = ws.Dialer(write_buffer_size=64, write_buffer_pool=pool)
    async with ws_pair(ws, dialer=dialer) as (client, server):
        writer = client.next_writer(ws.MessageType.BINARY)
        assert pool.out == 0  # nothing is lent before the first write
        await writer.write(b"a" * 200)
        assert pool.out == 1
        await writer.close()
        assert pool.out == 0
        await client.write_message(ws.MessageType.TEXT, "whole messages take no buffer")
        assert pool.out == 0
        async with client.next_writer(ws.MessageType.TEXT) as writer:
            await writer.write_text("second")
            assert pool.out == 1
        assert pool.out == 0
        assert len(pool.handed) == 1  # the second writer reused the first one's buffer
        assert len(pool.handed[0]) == 64
        assert await server.read_message() == (ws.MessageType.BINARY, b"a" * 200)
        assert await server.read_message() == (
            ws.MessageType.TEXT,
            "whole messages take no buffer",
        )
        assert await server.read_message() == (ws.MessageType.TEXT, "second")


async def test_a_failed_writer_gives_its_buffer_back(ws):
    pool = counting_pool(ws)
    async with ws_pair(ws, dialer=ws.Dialer(write_buffer_pool=pool)) as (client, _):
        writer = client.next_writer(ws.MessageType.BINARY)
        await writer.write(b"x")
        await client.write_control(ws.MessageType.CLOSE, ws.format_close_message(1000))
        with pytest.raises(ws.CloseSentError):
            await writer.close()
        assert pool.out == 0


@settings(
    max_examples=25,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
@given(
    sizes=st.lists(st.integers(0, 70_000), min_size=1, max_size=4),
    frame_size=st.integers(1, 20_000),
    pieces=st.integers(1, 9),
    read_size=st.one_of(st.just(-1), st.integers(1, 30_000)),
    text=st.booleans(),
)
async def test_fragmented_messages_round_trip_exactly(
    ws, sizes, frame_size, pieces, read_size, text
):
    """Any sizes, frame sizes, splits into writes and read sizes: the same bytes arrive."""
    async with ws_pair(ws) as (client, server):
        client.write_buffer_size = frame_size
        kind = ws.MessageType.TEXT if text else ws.MessageType.BINARY
        sent = [("é" * (size // 2)).encode() if text else os.urandom(size) for size in sizes]

        async def write() -> None:
            for data in sent:
                async with client.next_writer(kind) as writer:
                    step = max(1, len(data) // pieces)
                    for i in range(0, len(data), step):
                        await writer.write(data[i : i + step])

        async with anyio.create_task_group() as tg:
            # Beside the reads: thousands of tiny frames fill TCP's buffers
            # long before their bytes do, and the peer needs a task reading.
            tg.start_soon(write)
            for i, data in enumerate(sent):
                if i % 2:  # whole, and streamed
                    expected = data.decode() if text else data
                    assert await server.read_message() == (kind, expected)
                    continue
                message_type, reader = await server.next_reader()
                assert message_type is kind
                received = bytearray()
                while chunk := await reader.read(read_size):
                    assert read_size == -1 or len(chunk) <= read_size
                    received += chunk
                assert received == data


# -- prepared messages and compression ---------------------------------------------------------


async def test_write_prepared_message(ws):
    async with ws_pair(ws) as (client, server):
        prepared = ws.PreparedMessage(ws.MessageType.TEXT, "prepared ü")
        for _ in range(3):
            await client.write_prepared_message(prepared)
            await server.write_prepared_message(prepared)
        for _ in range(3):
            assert await server.read_message() == (ws.MessageType.TEXT, "prepared ü")
            assert await client.read_message() == (ws.MessageType.TEXT, "prepared ü")


async def test_write_prepared_message_compressed(ws):
    upgrader = ws.Upgrader(enable_compression=True)
    dialer = ws.Dialer(enable_compression=True)
    data = b"compressible " * 1000
    async with ws_pair(ws, upgrader=upgrader, dialer=dialer) as (client, server):
        prepared = ws.PreparedMessage(ws.MessageType.BINARY, data)
        await client.write_prepared_message(prepared)
        await server.write_prepared_message(prepared)
        await server.write_prepared_message(prepared)
        assert await server.read_message() == (ws.MessageType.BINARY, data)
        assert await client.read_message() == (ws.MessageType.BINARY, data)
        assert await client.read_message() == (ws.MessageType.BINARY, data)


@pytest.mark.parametrize(
    ("server_on", "client_on", "negotiated"),
    [(True, True, True), (True, False, False), (False, True, False)],
)
async def test_compression_negotiation(ws, server_on, client_on, negotiated):
    upgrader = ws.Upgrader(enable_compression=server_on)
    dialer = ws.Dialer(enable_compression=client_on)
    async with echo_server(ws, upgrader=upgrader) as server:
        conn, response = await dialer.dial(url_of(server))
        async with conn:
            names = [offer.name for offer in response.extensions]
            assert names == (["permessage-deflate"] if negotiated else [])
            assert bool(conn.protocol.extensions) is negotiated
            payload = "compress me " * 5000
            for _ in range(3):  # context takeover: later messages use the window
                await conn.write_message(ws.MessageType.TEXT, payload)
                assert await conn.read_message() == (ws.MessageType.TEXT, payload)
            await conn.write_message(ws.MessageType.BINARY, b"\x00" * 100_000)
            assert await conn.read_message() == (ws.MessageType.BINARY, b"\x00" * 100_000)


async def test_enable_write_compression_and_level_on_the_wire(ws):
    """Toggles seen by a raw peer: RSV1 and the payload size tell what was sent."""
    data = b"a" * 5000
    dialer = ws.Dialer(enable_compression=True)
    async with raw_server(ws, dialer) as (client, peer):
        # The raw server did not accept the extension: no compression at all.
        await client.write_message(ws.MessageType.BINARY, data)
        frame = await peer.frame()
        assert not frame.rsv & RSV1
        assert frame.payload == data

    upgrader = ws.Upgrader(enable_compression=True)
    refused: list[Exception] = []

    async def handler(conn: Any) -> None:
        await conn.write_message(ws.MessageType.BINARY, data)
        conn.enable_write_compression(False)
        await conn.write_message(ws.MessageType.BINARY, data)
        conn.enable_write_compression(True)
        conn.set_compression_level(0)  # stored blocks: no smaller than the input
        await conn.write_message(ws.MessageType.BINARY, data)
        conn.set_compression_level(9)
        await conn.write_prepared_message(ws.PreparedMessage(ws.MessageType.BINARY, data))
        try:
            conn.set_compression_level(10)
        except ws.LocalProtocolError as exc:
            refused.append(exc)
        await conn.read_message()

    async with serving(ws, handler, upgrader=upgrader) as server:
        host, port = server.address[:2]
        stream = await anyio.connect_tcp(host, port)
        async with stream:
            await stream.send(
                handshake_request(f"{host}:{port}", "Sec-WebSocket-Extensions: permessage-deflate")
            )
            head, rest = await read_head(stream)
            assert b"permessage-deflate" in head.lower()
            peer = RawPeer(stream, client=True, buffer=rest)
            frames = [await peer.frame() for _ in range(4)]
            await peer.send(Opcode.CLOSE, ws.format_close_message(1000))
    compressed = [bool(frame.rsv & RSV1) for frame in frames]
    assert compressed == [True, False, True, True]
    assert len(frames[0].payload) < 100
    assert frames[1].payload == data
    assert len(frames[2].payload) >= len(data)
    assert len(frames[3].payload) < 100
    assert len(refused) == 1  # zlib has no level 10
