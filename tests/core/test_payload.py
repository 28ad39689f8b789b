"""Payloads written in place: the two buffer classes, and the core reading into one.

1. ``PurePayloadBuffer`` and the compiled ``PayloadBuffer`` do the same thing,
   call for call, errors included (each against a reference, and against
   each other under hypothesis).
2. A connection reads a large binary frame straight into its message,
   through ``receive_data()`` or through ``payload_buffer()`` and
   ``payload_received()``; any mix of the two, cut anywhere, gives the events
   that one ``receive_data()`` of the whole input gives.
3. ``buffers_to_send()`` gives the bytes ``data_to_send()`` would.
"""

from __future__ import annotations

import pickle
from collections.abc import Callable

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from wsproto_core import (
    Close,
    CloseCode,
    Connection,
    Event,
    LocalProtocolError,
    Message,
    Opcode,
    ReadLimitError,
    Role,
)
from wsproto_core.frames import serialize_frame
from wsproto_core.mask import pure_apply_mask
from wsproto_core.payload import PayloadBuffer, PurePayloadBuffer, new_payload_buffer

try:
    from wsproto_core._speedups import PayloadBuffer as CompiledPayloadBuffer
except ImportError:  # not built here: only the pure class is tested
    CompiledPayloadBuffer = None  # type: ignore[assignment,misc]

KEY = b"\x01\x02\x03\x04"
LARGE = 100_000  # over the core's threshold for reading in place (16 KiB)

BUFFERS = [
    pytest.param(PurePayloadBuffer, id="pure"),
    pytest.param(
        CompiledPayloadBuffer,
        id="compiled",
        marks=pytest.mark.skipif(CompiledPayloadBuffer is None, reason="_speedups not built"),
    ),
]


# -- the buffers -------------------------------------------------------------------------


@pytest.mark.parametrize("make", BUFFERS)
class TestBuffer:
    def test_put_copies_and_unmasks_at_an_offset(
        self, make: Callable[[int], PayloadBuffer]
    ) -> None:
        payload = bytes(range(256)) * 40
        buffer = make(len(payload))
        buffer.put(0, pure_apply_mask(payload[:1001], KEY))
        buffer.put(1001, memoryview(pure_apply_mask(payload, KEY))[1001:5000], KEY)
        buffer.put(5000, bytearray(payload[5000:]))
        assert buffer.finish()[:1001] == pure_apply_mask(payload[:1001], KEY)
        buffer = make(len(payload))
        buffer.put(0, pure_apply_mask(payload, KEY)[:7], KEY)  # the key's phase is the offset
        buffer.put(7, pure_apply_mask(payload, KEY)[7:], KEY)
        assert buffer.finish() == payload

    def test_read_into_its_view_then_unmask_in_place(
        self, make: Callable[[int], PayloadBuffer]
    ) -> None:
        payload = bytes(range(256)) * 300
        masked = pure_apply_mask(payload, KEY)
        buffer = make(len(payload))
        with buffer.view() as view:
            assert not view.readonly
            assert len(view) == len(payload)
            view[:] = masked
        buffer.mask(0, 3, KEY)
        buffer.mask(3, 70_001, KEY)
        buffer.mask(70_001, len(payload), KEY)
        data = buffer.finish()
        assert type(data) is bytes
        assert data == payload

    @pytest.mark.parametrize("size", [0, 1, 2, 3])
    def test_tiny_sizes(self, make: Callable[[int], PayloadBuffer], size: int) -> None:
        buffer = make(size)
        buffer.put(0, b"x" * size)
        assert buffer.finish() == b"x" * size

    def test_finish_refuses_while_a_view_is_alive(
        self, make: Callable[[int], PayloadBuffer]
    ) -> None:
        buffer = make(4)
        view = buffer.view()
        view[:] = b"abcd"
        with pytest.raises(BufferError, match="view"):
            buffer.finish()
        view.release()
        assert buffer.finish() == b"abcd"

    def test_a_finished_buffer_refuses_everything(
        self, make: Callable[[int], PayloadBuffer]
    ) -> None:
        buffer = make(4)
        buffer.finish()
        for call in (
            buffer.finish,
            buffer.view,
            lambda: buffer.put(0, b"a"),
            lambda: buffer.mask(0, 1, KEY),
        ):
            with pytest.raises(ValueError, match="finished"):
                call()

    @pytest.mark.parametrize(
        "call",
        [
            lambda b: b.put(-1, b"a"),
            lambda b: b.put(8, b"a"),
            lambda b: b.put(5, b"abcd"),
            lambda b: b.mask(-1, 2, KEY),
            lambda b: b.mask(3, 2, KEY),
            lambda b: b.mask(0, 9, KEY),
        ],
    )
    def test_out_of_bounds(
        self, make: Callable[[int], PayloadBuffer], call: Callable[[PayloadBuffer], None]
    ) -> None:
        with pytest.raises(ValueError, match="outside"):
            call(make(8))

    def test_bad_arguments(self, make: Callable[[int], PayloadBuffer]) -> None:
        with pytest.raises(ValueError, match=">= 0"):
            make(-1)
        with pytest.raises(ValueError, match="4 bytes"):
            make(8).put(0, b"a", b"abc")
        with pytest.raises(ValueError, match="4 bytes"):
            make(8).mask(0, 1, b"abcde")
        with pytest.raises(TypeError):
            make(8).put(0, "text")  # type: ignore[arg-type]


@pytest.mark.skipif(CompiledPayloadBuffer is None, reason="_speedups not built")
@settings(max_examples=200)
@given(
    size=st.integers(0, 3000),
    writes=st.lists(st.tuples(st.integers(0, 3000), st.binary(max_size=700), st.booleans())),
)
def test_the_two_buffers_agree(size: int, writes: list[tuple[int, bytes, bool]]) -> None:
    pure, compiled = PurePayloadBuffer(size), CompiledPayloadBuffer(size)
    for at, data, masked in writes:
        outcomes = []
        for buffer in (pure, compiled):
            try:
                if masked:
                    buffer.put(at, data)
                    buffer.mask(at, at + len(data), KEY)
                else:
                    buffer.put(at, data, KEY)
                outcomes.append(None)
            except ValueError as exc:
                outcomes.append(type(exc))
        assert outcomes[0] == outcomes[1]
    if size > 1:  # the bytes of sizes 0 and 1 are never written before put()
        pure_data, compiled_data = pure.finish(), compiled.finish()
        written = [False] * size
        for at, data, _ in writes:
            if at + len(data) <= size:
                written[at : at + len(data)] = [True] * len(data)
        # Bytes never written are unspecified (the compiled buffer does not zero them).
        assert [b for b, w in zip(pure_data, written, strict=True) if w] == [
            b for b, w in zip(compiled_data, written, strict=True) if w
        ]


def test_the_core_uses_the_compiled_buffer_where_it_is_built() -> None:
    expected = CompiledPayloadBuffer or PurePayloadBuffer
    from wsproto_core import mask

    assert new_payload_buffer is (expected if mask.COMPILED else PurePayloadBuffer)


# -- the core reading into one --------------------------------------------------------


def client_frame(opcode: int, payload: bytes, *, fin: bool = True) -> bytes:
    return serialize_frame(opcode, payload, fin=fin, mask_key=KEY)


def server_frame(opcode: int, payload: bytes) -> bytes:
    return serialize_frame(opcode, payload)


def started(wire: bytes, **options: object) -> Connection:
    """A server core given the first 100 bytes of ``wire``: a header, and a little payload."""
    options.setdefault("max_message_size", None)
    conn = Connection(Role.SERVER, **options)  # type: ignore[arg-type]
    conn.receive_data(wire[:100])
    return conn


def drain(conn: Connection) -> list[Event]:
    out = []
    while (event := conn.next_event()) is not None:
        out.append(event)
    return out


def test_a_large_binary_frame_is_read_into_place() -> None:
    payload = bytes(range(256)) * (LARGE // 256)
    wire = client_frame(Opcode.BINARY, payload) + client_frame(Opcode.TEXT, b"next")
    conn = Connection(Role.SERVER, max_message_size=None)
    assert conn.payload_buffer() is None  # nothing started
    conn.receive_data(wire[:1000])
    assert drain(conn) == []
    view = conn.payload_buffer()
    assert view is not None
    header = 2 + 8 + 4  # 100,000 takes the 64-bit length; then the key
    assert len(view) == len(payload) - (1000 - header)  # ends where the message ends
    rest = wire[1000 : header + len(payload)]
    view[:5000] = rest[:5000]
    conn.payload_received(5000)
    assert drain(conn) == []
    view = conn.payload_buffer()
    assert view is not None
    view[:] = rest[5000:]
    conn.payload_received(len(view))
    assert conn.payload_buffer() is None  # the message is whole: read as usual
    conn.receive_data(wire[header + len(payload) :])
    assert drain(conn) == [Message(data=payload), Message(data="next")]


def test_a_client_reads_unmasked_frames_into_place() -> None:
    payload = b"\xab" * LARGE
    wire = server_frame(Opcode.BINARY, payload)
    conn = Connection(Role.CLIENT, max_message_size=None)
    conn.receive_data(wire[:10])
    assert drain(conn) == []
    view = conn.payload_buffer()
    assert view is not None
    view[:] = wire[10:]
    conn.payload_received(len(view))
    assert drain(conn) == [Message(data=payload)]


def test_no_view_while_input_is_buffered_or_for_other_messages() -> None:
    conn = started(client_frame(Opcode.TEXT, b"t" * LARGE))  # text: validated as it comes
    assert drain(conn) == []
    assert conn.payload_buffer() is None
    conn = started(client_frame(Opcode.BINARY, b"b" * LARGE, fin=False))  # fragment
    assert drain(conn) == []
    assert conn.payload_buffer() is None
    conn = started(client_frame(Opcode.BINARY, b"b" * 1000))  # small
    assert drain(conn) == []
    assert conn.payload_buffer() is None
    conn = started(client_frame(Opcode.BINARY, b"b" * LARGE), stream_messages=True)  # streamed
    drain(conn)
    assert conn.payload_buffer() is None


def test_when_streaming_a_binary_message_under_stream_min_size_comes_whole() -> None:
    payload = b"w" * LARGE
    wire = client_frame(Opcode.BINARY, payload)
    conn = Connection(Role.SERVER, max_message_size=None, stream_messages=True)
    conn.stream_min_size = LARGE + 1
    conn.receive_data(wire[:100])
    assert drain(conn) == []  # no MessageStart: it will come whole
    view = conn.payload_buffer()
    assert view is not None
    view[:] = wire[100:]
    conn.payload_received(len(view))
    assert drain(conn) == [Message(data=payload)]


def test_a_transport_holding_the_view_delays_the_message_until_it_lets_go() -> None:
    # uvloop releases the buffer it read into after buffer_updated() returns.
    payload = b"u" * LARGE
    wire = client_frame(Opcode.BINARY, payload)
    conn = started(wire)
    drain(conn)
    view = conn.payload_buffer()
    assert view is not None
    held = pickle.PickleBuffer(view)  # an export of the view, as the transport's
    view[:] = wire[100:]
    conn.payload_received(len(view))
    assert drain(conn) == []
    held.release()
    view.release()
    assert drain(conn) == [Message(data=payload)]


def test_payload_received_is_checked() -> None:
    conn = Connection(Role.SERVER, max_message_size=None)
    with pytest.raises(LocalProtocolError, match="without a payload_buffer"):
        conn.payload_received(1)
    conn.receive_data(client_frame(Opcode.BINARY, b"b" * LARGE)[:100])
    drain(conn)
    view = conn.payload_buffer()
    assert view is not None
    with pytest.raises(LocalProtocolError, match="for a view of"):
        conn.payload_received(len(view) + 1)
    with pytest.raises(LocalProtocolError, match="for a view of"):
        conn.payload_received(-1)
    conn.payload_received(0)  # nothing read: allowed, and the view is taken back
    with pytest.raises(ValueError, match="released"):
        view[0]


def test_a_lent_view_is_taken_back_by_receive_data_and_by_a_new_one() -> None:
    payload = b"\x01" * LARGE
    wire = client_frame(Opcode.BINARY, payload)
    conn = started(wire)
    drain(conn)
    first = conn.payload_buffer()
    second = conn.payload_buffer()
    assert first is not None
    assert second is not None
    with pytest.raises(ValueError, match="released"):
        first[0]
    conn.receive_data(wire[100:])  # the transport read elsewhere after all
    with pytest.raises(ValueError, match="released"):
        second[0]
    assert drain(conn) == [Message(data=payload)]


def test_the_end_of_the_stream_in_a_payload_read_in_place() -> None:
    conn = started(client_frame(Opcode.BINARY, b"b" * LARGE))
    drain(conn)
    view = conn.payload_buffer()
    assert view is not None
    conn.receive_eof()
    assert drain(conn) == [Close(code=CloseCode.ABNORMAL_CLOSURE)]
    assert conn.payload_buffer() is None
    with pytest.raises(ValueError, match="released"):
        view[0]


def test_the_read_limit_applies_before_anything_is_allocated() -> None:
    conn = started(client_frame(Opcode.BINARY, b"b" * LARGE), max_message_size=LARGE - 1)
    with pytest.raises(ReadLimitError):
        drain(conn)
    assert conn.payload_buffer() is None


@pytest.mark.parametrize("claimed", [64 * 1024 * 1024 + 1, 2**48 - 1, 2**63 - 1])
def test_a_huge_claimed_length_allocates_nothing_up_front(claimed: int) -> None:
    # Without a read limit, a peer may claim any length in a frame's header;
    # a buffer of that size made when the header arrives was a MemoryError
    # (a fuzz find). Past 64 MiB the payload is taken as it comes instead.
    key = b"\x01\x02\x03\x04"
    header = bytes([0x82, 0x80 | 127]) + claimed.to_bytes(8, "big") + key
    conn = Connection(Role.SERVER, max_message_size=None)
    conn.receive_data(header + pure_apply_mask(b"x" * 1000, key))
    assert drain(conn) == []
    assert conn.payload_buffer() is None
    conn.receive_data(pure_apply_mask(b"y" * 1000, key, 1000))
    assert drain(conn) == []
    conn.receive_eof()
    assert drain(conn) == [Close(code=CloseCode.ABNORMAL_CLOSURE)]


def test_up_to_64_mib_a_claimed_length_is_read_into_place() -> None:
    key = b"\x01\x02\x03\x04"
    claimed = 64 * 1024 * 1024
    conn = Connection(Role.SERVER, max_message_size=None)
    conn.receive_data(bytes([0x82, 0x80 | 127]) + claimed.to_bytes(8, "big") + key)
    assert drain(conn) == []
    view = conn.payload_buffer()
    assert view is not None
    assert len(view) == claimed


PATTERN = bytes(range(256)) * 160
FRAMES = st.one_of(
    # Large payloads cheaply: a slice of a fixed pattern (bytes a key can't hide).
    st.tuples(
        st.just(Opcode.BINARY),
        st.builds(
            lambda size, start: PATTERN[start : start + size],
            st.integers(16384, 40_000),
            st.integers(0, 255),
        ),
    ),
    st.tuples(st.just(Opcode.BINARY), st.binary(max_size=300)),
    st.tuples(st.just(Opcode.TEXT), st.text(max_size=3000).map(str.encode)),
    st.tuples(st.just(Opcode.PING), st.binary(max_size=125)),
)


@settings(max_examples=60, deadline=None)
@given(
    frames=st.lists(FRAMES, min_size=1, max_size=5),
    cuts=st.lists(st.integers(1, 6000), min_size=1, max_size=40),
    into_place=st.lists(st.booleans(), min_size=1, max_size=40),
)
def test_any_mix_of_reads_gives_the_same_events(
    frames: list[tuple[Opcode, bytes]], cuts: list[int], into_place: list[bool]
) -> None:
    wire = b"".join(client_frame(opcode, payload) for opcode, payload in frames)
    whole = Connection(Role.SERVER, max_message_size=None)
    whole.receive_data(wire)
    expected = drain(whole)
    conn = Connection(Role.SERVER, max_message_size=None)
    got: list[Event] = []
    pos = step = 0
    while pos < len(wire):
        size = cuts[step % len(cuts)]
        view = conn.payload_buffer() if into_place[step % len(into_place)] else None
        step += 1
        if view is not None:
            size = min(size, len(view))
            view[:size] = wire[pos : pos + size]
            conn.payload_received(size)
        else:
            conn.receive_data(wire[pos : pos + size])
        pos += size
        got += drain(conn)
    assert got == expected


def test_buffers_to_send_holds_what_data_to_send_would() -> None:
    payload = b"p" * LARGE
    sender, twin = Connection(Role.SERVER), Connection(Role.SERVER)
    assert sender.buffers_to_send() == []
    for conn in (sender, twin):
        conn.send_binary(payload)
        conn.send_text("small")
    buffers = sender.buffers_to_send()
    assert len(buffers) == 3  # header, payload, small frame: nothing joined
    assert buffers[1] is payload
    assert b"".join(buffers) == twin.data_to_send()
    sender.send_text("one")
    sender.send_text("two")
    assert sender.buffers_to_send() == [b"\x81\x03one\x81\x03two"]  # small: joined
    assert not sender.has_data_to_send
    assert sender.buffers_to_send() == []


@pytest.mark.parametrize("role", [Role.SERVER, Role.CLIENT])
def test_buffers_to_send_joins_a_burst_of_small_frames_into_a_few_buffers(role: Role) -> None:
    # A burst that an adapter held back (wsproto_asyncio coalesces writes)
    # must leave in a few writes, not one per frame.
    def keys(n: int) -> bytes:
        return b"\x01\x02\x03\x04" * (n // 4)

    sender, twin = Connection(role, random_bytes=keys), Connection(role, random_bytes=keys)
    large = b"L" * LARGE
    for conn in (sender, twin):
        for i in range(3000):
            if i in (0, 1500):
                conn.send_binary(large)
            conn.send_text(f"message {i:>50}")  # 60 bytes a frame, 180 KB in all
        conn.send_binary(large)  # last: no run after it
    buffers = sender.buffers_to_send()
    assert b"".join(buffers) == twin.data_to_send()
    sizes = [len(data) for data in buffers]
    assert len(buffers) <= 10, sizes
    if role is Role.SERVER:
        assert sum(data is large for data in buffers) == 3  # the large payloads, not copied
    # Each joined run stops once it reaches 64 KiB: bounded copies.
    assert all(size < 2 * 65536 for size in sizes if size < LARGE), sizes
    for conn in (sender, twin):
        conn.send_text("alone")
    assert sender.buffers_to_send() == [twin.data_to_send()]


@settings(max_examples=150, deadline=None)
@given(
    role=st.sampled_from([Role.SERVER, Role.CLIENT]),
    steps=st.lists(
        st.one_of(
            st.integers(0, 300),  # a small message
            st.integers(30_000, 65_535),  # under the 64 KiB line: joined
            st.integers(65_536, 140_000),  # over it: apart
            st.just(-1),  # take what is queued
        ),
        max_size=40,
    ),
)
def test_buffers_to_send_gives_what_data_to_send_would(role: Role, steps: list[int]) -> None:
    def keys(n: int) -> bytes:
        return bytes(range(4)) * (n // 4)

    sender, twin = Connection(role, random_bytes=keys), Connection(role, random_bytes=keys)
    large: list[bytes] = []  # payloads of 64 KiB or more queued since the last take
    for size in [*steps, -1]:
        if size < 0:
            buffers = sender.buffers_to_send()
            assert b"".join(buffers) == twin.data_to_send()
            assert all(buffers)
            if role is Role.SERVER:
                # A large payload goes as it is, apart from its header...
                for payload in large:
                    assert any(data is payload for data in buffers)
                joined = [data for data in buffers if not any(data is p for p in large)]
            else:
                # ... and a client's large frame (header, key, masked payload) too.
                joined = [data for data in buffers if len(data) - 14 not in map(len, large)]
            # Small frames are joined in runs that stop once past 64 KiB.
            assert all(len(data) < 2 * 65536 for data in joined)
            large.clear()
            continue
        payload = bytes([size % 251]) * size
        if size >= 65536:
            large.append(payload)
        for conn in (sender, twin):
            conn.send_binary(payload)


def mask_keys(n: int) -> bytes:
    return bytes(range(4)) * (n // 4)  # four different bytes: a wrong key phase shows


def test_a_client_masks_a_large_payload_piece_by_piece() -> None:
    payload = bytes(range(256)) * 1000  # 256,000 bytes
    sender = Connection(Role.CLIENT, random_bytes=mask_keys)
    twin = Connection(Role.CLIENT, random_bytes=mask_keys)
    sender.send_binary(payload)
    twin.send_binary(bytearray(payload))  # masked at once: the reference
    first = sender.buffers_to_send(mask_limit=1000)
    assert [len(data) for data in first] == [14 + 1000]  # header and key, then 1000 bytes
    sender.send_ping(b"between")  # queued while the frame is half sent: goes after it
    twin.send_ping(b"between")
    pieces = [first]
    while sender.has_data_to_send:
        pieces.append(sender.buffers_to_send(mask_limit=1000))
    assert all(len(b"".join(each)) <= 1014 for each in pieces)
    assert b"".join(b"".join(each) for each in pieces) == twin.data_to_send()
    assert sender.buffers_to_send(mask_limit=1000) == []


def test_data_to_send_masks_what_is_left_of_a_payload() -> None:
    payload = b"abcdefg" * 20_000
    sender = Connection(Role.CLIENT, random_bytes=mask_keys)
    twin = Connection(Role.CLIENT, random_bytes=mask_keys)
    for conn in (sender, twin):
        conn.send_binary(payload)
        conn.send_binary(payload)
    head = b"".join(sender.buffers_to_send(mask_limit=4099))  # an odd piece: phase 3 next
    assert head + sender.data_to_send() == twin.data_to_send()
    assert not sender.has_data_to_send


def test_a_mutable_payload_is_masked_when_it_is_queued() -> None:
    # A bytearray could change before it is sent: it cannot wait to be masked.
    payload = bytearray(b"x" * 100_000)
    sender = Connection(Role.CLIENT, random_bytes=mask_keys)
    twin = Connection(Role.CLIENT, random_bytes=mask_keys)
    sender.send_binary(payload)
    twin.send_binary(bytes(payload))
    payload[:] = b"y" * len(payload)
    assert b"".join(sender.buffers_to_send(mask_limit=1000)) == twin.data_to_send()


@pytest.mark.parametrize("limit", [0, -1])
def test_mask_limit_must_be_positive(limit: int) -> None:
    conn = Connection(Role.CLIENT)
    with pytest.raises(ValueError, match="mask_limit must be positive"):
        conn.buffers_to_send(mask_limit=limit)


@settings(max_examples=150, deadline=None)
@given(
    steps=st.lists(
        st.one_of(
            st.integers(0, 300),  # a small message
            st.integers(65_536, 200_000),  # a large one: masked as it is taken
            st.just(-1),  # one buffers_to_send(mask_limit) call
            st.just(-2),  # a Ping, queued between the pieces of a frame or not
            st.just(-3),  # data_to_send(): all the rest at once
        ),
        max_size=30,
    ),
    limit=st.integers(1, 70_000),
)
def test_pieces_of_any_size_make_the_frames_masked_at_once(steps: list[int], limit: int) -> None:
    sender = Connection(Role.CLIENT, random_bytes=mask_keys)
    twin = Connection(Role.CLIENT, random_bytes=mask_keys)  # bytearrays: masked at once
    sent: list[bytes] = []
    wire = bytearray()
    for step in steps:
        if step == -1:
            buffers = sender.buffers_to_send(mask_limit=limit)
            assert all(buffers)
            wire += b"".join(buffers)
        elif step == -2:
            sender.send_ping(b"p")
            twin.send_ping(b"p")
        elif step == -3:
            wire += sender.data_to_send()
            assert not sender.has_data_to_send
        else:
            payload = bytes([step % 251]) * step
            sent.append(payload)
            sender.send_binary(payload)
            twin.send_binary(bytearray(payload))
    while sender.has_data_to_send:
        buffers = sender.buffers_to_send(mask_limit=limit)
        # A call masks at most `limit` bytes of a large payload (64 KiB runs of small frames aside).
        assert sum(map(len, buffers)) <= 2 * 65536 + 14 + limit
        wire += b"".join(buffers)
    assert wire == twin.data_to_send()
    receiver = Connection(Role.SERVER, max_message_size=None)
    receiver.receive_data(bytes(wire))
    events = drain(receiver)
    assert [event.data for event in events if isinstance(event, Message)] == sent
