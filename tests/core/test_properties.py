"""Property tests of the sans-I/O core, through its public API only.

Each section pins one family of properties:

1. The frame codec round-trips every frame, with the minimal length encoding.
2. ``apply_mask`` is an involution, matches a per-byte reference and works in pieces.
3. Any chunking of a valid byte stream gives the same events, for both roles.
4. Fragmented messages and Pings survive a ``ConnectionPair`` in both directions.
5. Arbitrary bytes raise nothing but ``RemoteProtocolError`` / ``HandshakeError``;
   the read limit is exact; an empty read is no input, in every state.
6. Every ``(State, send operation)`` pair follows ``SEND_TRANSITIONS`` or raises
   ``LocalProtocolError`` and changes nothing.
7. A text message is accepted iff it is UTF-8, and refused at the first bad byte.
"""

from __future__ import annotations

import codecs
import itertools
import struct
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeVar

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from wsproto_core import (
    DEFAULT_MAX_MESSAGE_SIZE,
    ClientConnection,
    Close,
    Connection,
    ConnectionPair,
    Event,
    HandshakeError,
    HandshakeRejected,
    HandshakeRequest,
    HandshakeResponse,
    HTTPRequest,
    LocalProtocolError,
    Message,
    MessageData,
    MessageEnd,
    MessageStart,
    MessageType,
    Opcode,
    Ping,
    Pong,
    RemoteProtocolError,
    Role,
    ServerConnection,
    format_close_message,
)
from wsproto_core.frames import RSV1, RSV2, RSV3, Frame, parse_frame
from wsproto_core.mask import apply_mask
from wsproto_core.state import SEND_TRANSITIONS, State

T = TypeVar("T", str, bytes)

# -- shared helpers ------------------------------------------------------------------------

FIXED_KEY = b"\x5a\xc3\x0f\x96"


def fixed_random(n: int) -> bytes:
    """Deterministic "random" bytes, so that masked output can be compared exactly."""
    return (FIXED_KEY * (n // 4 + 1))[:n]


def naive_mask(data: bytes, key: bytes, offset: int = 0) -> bytes:
    """RFC 6455 §5.3, literally: octet i XOR key octet (i mod 4)."""
    return bytes(byte ^ key[(i + offset) % 4] for i, byte in enumerate(data))


def pieces(data: T, cuts: Sequence[int], *, empty: bool = True) -> list[T]:
    """Split ``data`` at ``cuts`` (taken modulo ``len(data) + 1``).

    With ``empty`` the pieces may be empty (fragments); without, they never are
    (chunks read from a transport).
    """
    points = sorted(cut % (len(data) + 1) for cut in cuts)
    bounds = [0, *points, len(data)]
    parts = [data[start:end] for start, end in itertools.pairwise(bounds)]
    return parts if empty else [part for part in parts if part]


def merge_data(events: Sequence[Event]) -> list[Event]:
    """Join consecutive ``MessageData`` events: where they split depends on chunking."""
    merged: list[Event] = []
    run: list[bytes] = []
    for event in [*events, None]:
        if isinstance(event, MessageData):
            run.append(event.data)
            continue
        if run:
            merged.append(MessageData(data=b"".join(run)))
            run = []
        if event is not None:
            merged.append(event)
    return merged


def parse_all(data: bytes) -> list[tuple[Frame, bool]]:
    """Parse bytes that must hold whole frames only, as ``(frame, masked)`` pairs."""
    frames, pos = [], 0
    while pos < len(data):
        parsed = parse_frame(data, pos)
        assert parsed is not None, f"incomplete frame at {pos} in {data!r}"
        frame, masked, pos = parsed
        frames.append((frame, masked))
    return frames


def feed(conn: Connection, chunks: Sequence[bytes]) -> tuple[list[Event], bytes]:
    """Feed chunks as an adapter would; return every event and every byte sent back."""
    events: list[Event] = []
    out = bytearray()
    for chunk in chunks:
        conn.receive_data(chunk)
        while (event := conn.next_event()) is not None:
            events.append(event)
        out += conn.data_to_send()
    return events, bytes(out)


def handshake_bytes() -> tuple[bytes, bytes]:
    """A valid upgrade request of a ``fixed_random`` client, and the server's 101."""
    client = ClientConnection("ws://localhost/", random_bytes=fixed_random)
    request = client.data_to_send()
    server = ServerConnection()
    server.receive_data(request)
    assert isinstance(server.next_event(), HandshakeRequest)
    server.accept()
    return request, server.data_to_send()


UPGRADE_REQUEST, UPGRADE_RESPONSE = handshake_bytes()
PLAIN_REQUEST = b"GET / HTTP/1.1\r\nHost: localhost\r\n\r\n"
REFUSAL = b"HTTP/1.1 403 Forbidden\r\nContent-Length: 5\r\n\r\nnope!"

control_payloads = st.binary(max_size=125)
mask_keys = st.binary(min_size=4, max_size=4)
rsv_bits = st.sets(st.sampled_from([RSV1, RSV2, RSV3])).map(sum)
cut_lists = st.lists(st.integers(min_value=0, max_value=100_000), max_size=12)

# -- 1. the frame codec --------------------------------------------------------------------

LENGTH_BOUNDARIES = (0, 1, 125, 126, 127, 65535, 65536)


@st.composite
def payload_of(draw: st.DrawFn, sizes: st.SearchStrategy[int]) -> bytes:
    """A payload of a drawn size; big ones repeat a drawn pattern (hypothesis caps draws)."""
    size = draw(sizes)
    if size <= 512:
        return draw(st.binary(min_size=size, max_size=size))
    pattern = draw(st.binary(min_size=1, max_size=16))
    return (pattern * (size // len(pattern) + 1))[:size]


@st.composite
def frames(draw: st.DrawFn) -> Frame:
    """Any frame serialize_frame accepts: every opcode, RSV combination and size class."""
    opcode = draw(st.sampled_from(Opcode))
    if opcode.is_control:
        sizes = st.integers(0, 125) | st.sampled_from([0, 1, 124, 125])
        return Frame(opcode, draw(payload_of(sizes)), True, draw(rsv_bits))
    sizes = (
        st.integers(0, 300)
        | st.sampled_from((*LENGTH_BOUNDARIES, 65534, 65537, 70000))
        | st.integers(0, 70000)
    )
    return Frame(opcode, draw(payload_of(sizes)), draw(st.booleans()), draw(rsv_bits))


@settings(max_examples=300, deadline=None)
@given(
    frame=frames(),
    key=st.none() | mask_keys,
    trailing=st.binary(min_size=1, max_size=16),
    buffer_type=st.sampled_from([bytes, bytearray, memoryview]),
    data=st.data(),
)
def test_frame_round_trip(
    frame: Frame,
    key: bytes | None,
    trailing: bytes,
    buffer_type: Callable[[bytes], Any],
    data: st.DataObject,
) -> None:
    """parse_frame(serialize(frame)) gives the frame back, stopping exactly at its end."""
    wire = frame.serialize(key)
    expected = (frame, key is not None, len(wire))
    assert parse_frame(buffer_type(wire)) == expected

    # Trailing bytes stay where they are; a frame in mid-buffer parses from `pos`.
    assert parse_frame(buffer_type(wire + trailing)) == expected
    framed = trailing + wire + trailing
    assert parse_frame(buffer_type(framed), len(trailing)) == (
        frame,
        key is not None,
        len(trailing) + len(wire),
    )

    # Any proper prefix is incomplete: every header prefix, the longest one, and a
    # drawn one (checking all 70000 would be slow and adds nothing).
    cut = data.draw(st.integers(0, len(wire) - 1), label="prefix")
    for end in {*range(min(len(wire), 15)), len(wire) - 1, cut}:
        assert parse_frame(buffer_type(wire[:end])) is None, end
        assert parse_frame(buffer_type(trailing + wire[:end]), len(trailing)) is None, end


@settings(max_examples=200, deadline=None)
@given(frame=frames(), key=st.none() | mask_keys)
@example(frame=Frame(Opcode.BINARY, bytes(125)), key=None)
@example(frame=Frame(Opcode.BINARY, bytes(126)), key=FIXED_KEY)
@example(frame=Frame(Opcode.BINARY, bytes(127)), key=None)
@example(frame=Frame(Opcode.BINARY, bytes(65535)), key=None)
@example(frame=Frame(Opcode.BINARY, bytes(65536)), key=FIXED_KEY)
def test_frame_header_layout(frame: Frame, key: bytes | None) -> None:
    """The bytes are RFC 6455 §5.2's layout, with the minimal length encoding."""
    wire = frame.serialize(key)
    length = len(frame.payload)
    assert wire[0] == (0x80 if frame.fin else 0) | frame.rsv | frame.opcode
    assert bool(wire[1] & 0x80) is (key is not None)
    field = wire[1] & 0x7F
    if length <= 125:
        assert field == length
        size = 2
    elif length <= 0xFFFF:
        assert field == 126
        assert struct.unpack_from("!H", wire, 2) == (length,)
        size = 4
    else:
        assert field == 127
        assert struct.unpack_from("!Q", wire, 2) == (length,)
        size = 10
    if key is not None:
        assert wire[size : size + 4] == key
        size += 4
        # Checked on a slice: the per-byte reference is slow on 70000 bytes.
        assert wire[size : size + 300] == naive_mask(frame.payload[:300], key)
    else:
        assert wire[size:] == frame.payload
    assert len(wire) == size + length


# -- 2. masking ----------------------------------------------------------------------------


@settings(max_examples=300)
@given(data=st.binary(max_size=2000), key=mask_keys, offset=st.integers(0, 1 << 20))
def test_apply_mask_matches_reference(data: bytes, key: bytes, offset: int) -> None:
    """apply_mask is the per-byte XOR of §5.3, at any offset, and its own inverse."""
    masked = apply_mask(data, key, offset)
    assert type(masked) is bytes
    assert masked == naive_mask(data, key, offset)
    assert apply_mask(masked, key, offset) == data
    assert apply_mask(bytearray(data), key, offset) == masked
    assert apply_mask(memoryview(data), key, offset) == masked


@settings(max_examples=300)
@given(data=st.binary(max_size=2000), key=mask_keys, cuts=cut_lists)
def test_apply_mask_in_pieces(data: bytes, key: bytes, cuts: list[int]) -> None:
    """Masking piece by piece, each at its offset in the frame, equals masking whole."""
    out, offset = [], 0
    for piece in pieces(data, cuts):
        out.append(apply_mask(piece, key, offset))
        offset += len(piece)
    assert b"".join(out) == apply_mask(data, key)


# -- 3. arbitrary chunking -----------------------------------------------------------------


@dataclass
class Script:
    """A valid byte stream from one peer, and what the receiving core must make of it."""

    wire: bytearray = field(default_factory=bytearray)
    events: list[Event] = field(default_factory=list)  # default mode
    stream_events: list[Event] = field(default_factory=list)  # stream_messages=True
    replies: list[Frame] = field(default_factory=list)  # Pongs, the Close echo
    closed: bool = False
    starts: list[int] = field(default_factory=list)  # where each frame begins


# Big messages are rare (feeding them a byte at a time is slow), but they take
# the receive path for pieces of 4096 bytes and more.
MESSAGE_KINDS = ["text"] * 4 + ["binary"] * 4 + ["big text", "big binary"]
BIG_SIZES = st.sampled_from([4095, 4096, 4097, 65536]) | st.integers(4000, 12000)


@st.composite
def scripts(draw: st.DrawFn, *, masked: bool) -> Script:
    """Messages, fragmented anywhere (text inside a character), with controls between."""
    script = Script()

    def put(frame: Frame) -> None:
        script.starts.append(len(script.wire))
        script.wire += frame.serialize(draw(mask_keys) if masked else None)

    def both(event: Event) -> None:
        script.events.append(event)
        script.stream_events.append(event)

    def controls() -> None:
        kinds = st.sampled_from([Opcode.PING, Opcode.PONG])
        for opcode, payload in draw(st.lists(st.tuples(kinds, control_payloads), max_size=2)):
            put(Frame(opcode, payload))
            if opcode is Opcode.PING:
                both(Ping(payload=payload))
                script.replies.append(Frame(Opcode.PONG, payload))
            else:
                both(Pong(payload=payload))

    for _ in range(draw(st.integers(0, 3))):
        controls()
        kind = draw(st.sampled_from(MESSAGE_KINDS))
        text = kind in ("text", "big text")
        if kind == "text":
            data = draw(st.text(max_size=60)).encode()
        elif kind == "binary":
            data = draw(st.binary(max_size=300))
        elif kind == "big text":
            unit = draw(st.text(min_size=1, max_size=4)).encode()
            data = unit * (draw(BIG_SIZES) // len(unit) + 1)
        else:
            data = draw(payload_of(BIG_SIZES))
        fragments = pieces(data, draw(st.lists(st.integers(0, len(data)), max_size=4)))
        script.stream_events.append(
            MessageStart(message_type=MessageType.TEXT if text else MessageType.BINARY)
        )
        for i, fragment in enumerate(fragments):
            if i:
                controls()
                opcode = Opcode.CONTINUATION
            else:
                opcode = Opcode.TEXT if text else Opcode.BINARY
            put(Frame(opcode, fragment, fin=i == len(fragments) - 1))
            if fragment:
                script.stream_events.append(MessageData(data=fragment))
        script.stream_events.append(MessageEnd())
        script.events.append(Message(data=data.decode() if text else data))
    controls()
    if draw(st.booleans()):
        code = draw(st.none() | st.sampled_from([1000, 1001, 1003, 1011, 3000, 4999]))
        reason = "" if code is None else draw(st.text(max_size=30))  # <= 120 bytes
        put(Frame(Opcode.CLOSE, format_close_message(code or 1005, reason)))
        both(Close(code=code or 1005, reason=reason))
        script.replies.append(Frame(Opcode.CLOSE, b"" if code is None else code.to_bytes(2, "big")))
        script.closed = True
        # "The application MUST NOT send any more data frames after sending a
        # Close frame" (§5.5.1): whatever follows is discarded, even garbage.
        script.wire += draw(st.binary(max_size=20))
    script.stream_events = merge_data(script.stream_events)
    return script


@pytest.mark.parametrize("stream", [False, True], ids=["messages", "streamed"])
@pytest.mark.parametrize("role", list(Role), ids=lambda role: role.value)
@settings(max_examples=100, deadline=None)
@given(data=st.data())
def test_any_chunking_gives_the_same_events(role: Role, stream: bool, data: st.DataObject) -> None:
    """Whole, byte by byte or in any chunks: the same events and the same replies."""
    script = data.draw(scripts(masked=role is Role.SERVER), label="script")
    wire = bytes(script.wire)
    cuts = data.draw(cut_lists, label="cuts")
    feedings = {
        "whole": [wire],
        "bytewise": [wire[i : i + 1] for i in range(len(wire))],
        "chunks": pieces(wire, cuts, empty=False),
    }
    expected = script.stream_events if stream else script.events
    for name, chunks in feedings.items():
        conn = Connection(role, stream_messages=stream, random_bytes=fixed_random)
        events, out = feed(conn, chunks)
        assert (merge_data(events) if stream else events) == expected, name
        # Pongs for every Ping (auto_pong), then the Close echo, masked by a client.
        assert parse_all(out) == [(reply, role is Role.CLIENT) for reply in script.replies], name
        assert conn.state is (State.CLOSED if script.closed else State.OPEN), name


# -- 4. fragmentation round trip over a ConnectionPair -------------------------------------


@dataclass
class Plan:
    """What one side sends, and what its peer must receive."""

    actions: deque[tuple[Any, ...]] = field(default_factory=deque)
    expected: list[Event] = field(default_factory=list)  # at the peer, Pongs left out
    pings: list[bytes] = field(default_factory=list)


@st.composite
def plans(draw: st.DrawFn) -> Plan:
    """Messages split into arbitrary fragments, with Pings interleaved."""
    plan = Plan()

    def pings() -> None:
        for payload in draw(st.lists(st.binary(max_size=20) | control_payloads, max_size=2)):
            plan.actions.append(("ping", payload))
            plan.expected.append(Ping(payload=payload))
            plan.pings.append(payload)

    for _ in range(draw(st.integers(0, 4))):
        pings()
        kind = draw(st.sampled_from(["str", "utf8", "binary"]))
        parts: list[str | bytes]
        if kind == "str":
            text = draw(st.text(max_size=40))
            message: str | bytes = text
            # Split between characters; each piece goes as str or as its UTF-8.
            parts = pieces(text, draw(st.lists(st.integers(0, len(text)), max_size=4)))
            parts = [p.encode() if draw(st.booleans()) else p for p in parts]
            verb = "text"
        elif kind == "utf8":
            message = draw(st.text(max_size=40))
            # Split between bytes: a fragment may end inside a character.
            raw = message.encode()
            parts = pieces(raw, draw(st.lists(st.integers(0, len(raw)), max_size=4)))
            verb = "text"
        else:
            message = draw(st.binary(max_size=200))
            parts = pieces(message, draw(st.lists(st.integers(0, len(message)), max_size=4)))
            verb = "binary"
        for i, part in enumerate(parts):
            if i:
                pings()
            plan.actions.append((verb, part, i == len(parts) - 1))
        plan.expected.append(Message(data=message))
    pings()
    return plan


def perform(conn: Connection, action: tuple[Any, ...]) -> None:
    if action[0] == "ping":
        conn.send_ping(action[1])
    elif action[0] == "text":
        conn.send_text(action[1], fin=action[2])
    else:
        conn.send_binary(action[1], fin=action[2])


@settings(max_examples=150, deadline=None)
@given(
    client_plan=plans(),
    server_plan=plans(),
    schedule=st.lists(st.sampled_from(["client", "server", "transfer"]), max_size=40),
    closer=st.sampled_from(["client", "server"]),
)
def test_fragmented_round_trip(
    client_plan: Plan, server_plan: Plan, schedule: list[str], closer: str
) -> None:
    """Both peers get every message whole and every Ping, and Pongs come back."""
    pair = ConnectionPair.open()
    received: dict[str, list[Event]] = {"client": [], "server": []}

    def transfer() -> None:
        client_events, server_events = pair.transfer()
        received["client"] += client_events
        received["server"] += server_events

    # Interleave the two sides' sends and the transfers in a drawn order.
    sides = {"client": (pair.client, client_plan), "server": (pair.server, server_plan)}
    for step in schedule:
        if step == "transfer":
            transfer()
        elif sides[step][1].actions:
            perform(sides[step][0], sides[step][1].actions.popleft())
    for conn, plan in sides.values():
        while plan.actions:
            perform(conn, plan.actions.popleft())
    transfer()

    for me, peer in (("client", "server"), ("server", "client")):
        events = received[me]
        assert [e for e in events if not isinstance(e, Pong)] == sides[peer][1].expected, me
        assert [e for e in events if isinstance(e, Pong)] == [
            Pong(payload=payload) for payload in sides[me][1].pings
        ], me
        assert sides[me][0].state is State.OPEN

    # The closing handshake still completes after all that.
    sides[closer][0].send_close()
    transfer()
    assert received["client"][-1] == received["server"][-1] == Close(code=1000)
    assert pair.client.state is pair.server.state is State.CLOSED


# -- 5. arbitrary bytes --------------------------------------------------------------------

PEER_CLOSE_CODES = {1002, 1007, 1009, 1011}
RECEIVED_EVENTS = (
    Message,
    MessageStart,
    MessageData,
    MessageEnd,
    Ping,
    Pong,
    Close,
    HandshakeRequest,
    HTTPRequest,
    HandshakeResponse,
    HandshakeRejected,
)


@st.composite
def frameish(draw: st.DrawFn, *, masked: bool) -> bytes:
    """Bytes shaped like a frame, breaking any rule: deep enough to reach every check."""
    opcode = draw(st.sampled_from(Opcode) | st.integers(0, 15))
    first = opcode | draw(st.sampled_from([0, 0x80])) | draw(rsv_bits | st.just(0))
    payload = draw(
        st.binary(max_size=130)
        | st.text(max_size=30).map(str.encode)
        | st.tuples(st.integers(0, 5100), st.binary(max_size=8)).map(
            lambda t: t[0].to_bytes(2, "big") + t[1]  # a Close payload, valid or not
        )
    )
    length = draw(st.just(len(payload)) | st.sampled_from([126, 65536, 1 << 32, 1 << 63]))
    form = draw(st.sampled_from([0, 126, 127]))  # minimal, or a longer length field
    key = draw(mask_keys) if draw(st.sampled_from([masked, masked, not masked])) else None
    mask_bit = 0x80 if key is not None else 0
    if length < 126 and form == 0:
        head = bytes([first, mask_bit | length])
    elif length <= 0xFFFF and form != 127:
        head = bytes([first, mask_bit | 126]) + length.to_bytes(2, "big")
    else:
        head = bytes([first, mask_bit | 127]) + length.to_bytes(8, "big")
    if key is not None:
        return head + key + naive_mask(payload, key)
    return head + payload


@st.composite
def mutated(draw: st.DrawFn, base: bytes) -> bytes:
    """``base`` with a few bytes replaced, inserted or dropped, or cut short."""
    data = bytearray(base)
    for _ in range(draw(st.integers(1, 3))):
        pos = draw(st.integers(0, len(data)))
        op = draw(st.sampled_from(["replace", "insert", "delete", "truncate"]))
        if op == "insert":
            data[pos:pos] = draw(st.binary(min_size=1, max_size=4))
        elif op == "truncate":
            del data[pos:]
        elif pos < len(data):
            if op == "replace":
                data[pos] = draw(st.integers(0, 255))
            else:
                del data[pos]
    return bytes(data)


@st.composite
def broken_streams(draw: st.DrawFn, *, masked: bool) -> bytes:
    """A valid stream with a header bit flipped and/or a few bytes changed.

    Unlike noise, it gets deep into message state (mid-message, after Pings)
    before going wrong: flipped FIN, RSV, opcode, MASK or length bits.
    """
    script = draw(scripts(masked=masked))
    wire = bytearray(script.wire)
    if script.starts and draw(st.booleans()):
        start = draw(st.sampled_from(script.starts))
        wire[start + draw(st.sampled_from([0, 1]))] ^= draw(
            st.sampled_from([0x80, RSV1, RSV2, RSV3, 0x08, 0x04, 0x02, 0x01])
        )
    if draw(st.booleans()):
        return draw(mutated(bytes(wire)))
    return bytes(wire)


def handshake_prefixes(*good: bytes) -> st.SearchStrategy[bytes]:
    return st.sampled_from(good) | st.one_of([mutated(g) for g in good]) | st.binary(max_size=40)


CONNECTION_KINDS: dict[str, tuple[Callable[..., Connection], bool, st.SearchStrategy[bytes]]] = {
    # name: (factory, receives masked frames, what precedes the frames)
    "server": (lambda **kw: Connection(Role.SERVER, **kw), True, st.just(b"")),
    "client": (lambda **kw: Connection(Role.CLIENT, **kw), False, st.just(b"")),
    "server-handshake": (
        lambda **kw: ServerConnection(**kw),
        True,
        handshake_prefixes(UPGRADE_REQUEST, PLAIN_REQUEST),
    ),
    "client-handshake": (
        lambda **kw: ClientConnection("ws://localhost/", random_bytes=fixed_random, **kw),
        False,
        handshake_prefixes(UPGRADE_RESPONSE, REFUSAL),
    ),
}


def assert_failed_for_good(conn: Connection, *, eof: bool) -> None:
    """After a peer error: CLOSED, silent, and deaf to any further input."""
    assert conn.state is State.CLOSED
    assert conn.next_event() is None
    if not eof:
        conn.receive_data(b"\x81\x85" + bytes(20))
        assert conn.next_event() is None
        conn.receive_eof()
    assert conn.next_event() is None
    assert conn.state is State.CLOSED
    assert conn.data_to_send() == b""


def assert_peer_error(
    conn: Connection, error: RemoteProtocolError | HandshakeError, *, closing: bool, eof: bool
) -> None:
    """The documented reaction to a peer error was queued, and the connection is done."""
    out = conn.data_to_send()
    if isinstance(error, RemoteProtocolError):
        assert error.code in PEER_CLOSE_CODES, error
    if isinstance(error, RemoteProtocolError) and closing:
        assert out == b""  # one Close frame only: ours is already sent (§5.5.1)
    elif isinstance(error, RemoteProtocolError):
        # The Close frame that fails the connection is queued, with that code.
        [(frame, masked)] = parse_all(out)
        assert frame.opcode is Opcode.CLOSE
        assert frame.payload[:2] == error.code.to_bytes(2, "big")
        assert masked is (conn.role is Role.CLIENT)
    elif isinstance(conn, ServerConnection):
        if error.status_code is not None:
            assert out.startswith(b"HTTP/1.1 %d " % error.status_code), out
    else:
        assert out == b""  # a client has nobody to answer
    assert_failed_for_good(conn, eof=eof)


def pump(conn: Connection, *, eof: bool = False) -> bool:
    """Call next_event() until None, answering handshakes; ``False`` once it failed."""
    while True:
        error: RemoteProtocolError | HandshakeError | None = None
        event: Event | None = None
        closing = conn.close_sent is not None
        try:
            event = conn.next_event()
        except (RemoteProtocolError, HandshakeError) as exc:
            error = exc
        if error is not None:
            assert_peer_error(conn, error, closing=closing, eof=eof)
            return False
        if closing:
            # Nothing follows our Close frame: no data (RFC 6455 §5.5.1), and
            # the core answers no Ping once it has sent its Close.
            assert conn.data_to_send() == b""
        if event is None:
            return True
        assert isinstance(event, RECEIVED_EVENTS), event
        if isinstance(conn, ServerConnection) and conn.state is State.CONNECTING:
            if isinstance(event, HandshakeRequest):
                conn.accept()
            else:
                conn.reject()
        conn.data_to_send()


@pytest.mark.parametrize("kind", list(CONNECTION_KINDS))
@settings(max_examples=400, deadline=None)
@given(data=st.data())
def test_arbitrary_bytes_raise_only_peer_errors(kind: str, data: st.DataObject) -> None:
    """Any input, in any chunks, ends in events or a documented peer error, never a crash."""
    factory, masked, prefixes = CONNECTION_KINDS[kind]
    max_size = data.draw(st.sampled_from([DEFAULT_MAX_MESSAGE_SIZE, None]) | st.integers(0, 40))
    conn = factory(max_message_size=max_size, stream_messages=data.draw(st.booleans()))
    conn.data_to_send()
    noise = st.lists(frameish(masked=masked) | st.binary(min_size=1, max_size=16), max_size=8)
    wire = data.draw(prefixes) + data.draw(noise.map(b"".join) | broken_streams(masked=masked))
    close_at = data.draw(st.none() | st.integers(0, 8), label="send_close before chunk")
    for i, chunk in enumerate(pieces(wire, data.draw(cut_lists), empty=False)):
        if i == close_at and conn.state is State.OPEN:
            conn.send_close()  # failures in CLOSING too
            conn.data_to_send()
        conn.receive_data(chunk)  # stores only: never raises for the peer's sake
        if not pump(conn):
            return
    if data.draw(st.booleans()):
        conn.receive_eof()
        pump(conn, eof=True)


# -- 5b. the read limit --------------------------------------------------------------------


@settings(max_examples=300, deadline=None)
@given(
    size=st.integers(0, 60),
    limit=st.integers(0, 60),
    text=st.booleans(),
    stream=st.booleans(),
    fragment_cuts=st.lists(st.integers(0, 60), max_size=4),
    chunk_cuts=cut_lists,
)
def test_read_limit(
    size: int,
    limit: int,
    text: bool,
    stream: bool,
    fragment_cuts: list[int],
    chunk_cuts: list[int],
) -> None:
    """A message is delivered iff it fits ``max_message_size``; else 1009, as soon as the
    header of the frame that crosses the limit is in (nothing is buffered past it)."""
    payload = b"x" * size
    wire = bytearray()
    crossing: tuple[int, int] | None = None  # wire offsets: end of length field, of header
    fragments = pieces(payload, fragment_cuts)
    total = 0
    for i, fragment in enumerate(fragments):
        opcode = Opcode.CONTINUATION if i else (Opcode.TEXT if text else Opcode.BINARY)
        frame = Frame(opcode, fragment, fin=i == len(fragments) - 1).serialize(FIXED_KEY)
        total += len(fragment)
        if total > limit and crossing is None:
            header = len(frame) - len(fragment)
            crossing = (len(wire) + header - 5, len(wire) + header - 1)
        wire += frame

    conn = Connection(Role.SERVER, max_message_size=limit, stream_messages=stream)
    events: list[Event] = []
    consumed = 0
    for chunk in pieces(bytes(wire), chunk_cuts, empty=False):
        conn.receive_data(chunk)
        consumed += len(chunk)
        error: RemoteProtocolError | None = None
        try:
            while (event := conn.next_event()) is not None:
                events.append(event)
        except RemoteProtocolError as exc:
            error = exc
        if error is not None:
            assert crossing is not None, f"{size} bytes refused with a limit of {limit}"
            assert error.code == 1009
            assert consumed - 1 >= crossing[0], "refused before the length was known"
            assert consumed - len(chunk) <= crossing[1], "refused after the header was in"
            assert not any(isinstance(e, Message | MessageEnd) for e in events)
            return
    assert crossing is None, f"{size} bytes accepted with a limit of {limit}"
    assert events[-1] == (
        MessageEnd() if stream else Message(data=payload.decode() if text else payload)
    )


# -- 5c. empty reads -----------------------------------------------------------------------


@pytest.mark.parametrize("kind", list(CONNECTION_KINDS))
@settings(max_examples=60, deadline=None)
@given(data=st.data())
def test_empty_reads_change_nothing(kind: str, data: st.DataObject) -> None:
    """``receive_data(b"")`` is no input at all, in every state (EOF is ``receive_eof()``).

    Valid input is fed once as is and once with empty chunks sprinkled in; the
    events and replies must be the same.
    """
    factory, masked, _ = CONNECTION_KINDS[kind]
    prefix = {"server-handshake": UPGRADE_REQUEST, "client-handshake": UPGRADE_RESPONSE}
    script = data.draw(scripts(masked=masked), label="script")
    wire = prefix.get(kind, b"") + bytes(script.wire)
    chunks = pieces(wire, data.draw(cut_lists), empty=False)
    empties = data.draw(st.lists(st.integers(0, len(chunks)), min_size=1, max_size=4))
    sprinkled = list(chunks)
    for pos in sorted(empties, reverse=True):
        sprinkled.insert(pos, b"")

    def run(chunks: list[bytes]) -> tuple[list[Event], bytes, State]:
        conn = factory(random_bytes=fixed_random) if kind == "client" else factory()
        conn.data_to_send()
        events: list[Event] = []
        out = b""
        for chunk in chunks:
            conn.receive_data(chunk)
            while (event := conn.next_event()) is not None:
                events.append(event)
                if isinstance(event, HandshakeRequest):
                    assert isinstance(conn, ServerConnection)
                    conn.accept()
                    conn.data_to_send()
            out += conn.data_to_send()
        return events, out, conn.state

    plain = run(chunks)
    handshake = (HandshakeRequest, HandshakeResponse)
    assert [e for e in plain[0] if not isinstance(e, handshake)] == script.events
    assert run(sprinkled) == plain


# -- 6. the send state machine -------------------------------------------------------------


def _server_with(request: bytes) -> ServerConnection:
    conn = ServerConnection()
    conn.receive_data(request)
    assert isinstance(conn.next_event(), HandshakeRequest | HTTPRequest)
    return conn


def _closed_pair(side: str) -> Connection:
    pair = ConnectionPair.open()
    pair.client.send_close()
    pair.transfer()
    return pair.client if side == "client" else pair.server


def _failed() -> Connection:
    conn = Connection(Role.SERVER)
    conn.receive_data(Frame(Opcode.TEXT, b"unmasked").serialize())
    with pytest.raises(RemoteProtocolError):
        conn.next_event()
    return conn


def _handshake_failed() -> Connection:
    conn = ServerConnection()
    conn.receive_data(b"BREW /pot HTCPCP/1.0\r\n\r\n")
    with pytest.raises(HandshakeError):
        conn.next_event()
    return conn


def _client_refused() -> Connection:
    conn = ClientConnection("ws://localhost/")
    conn.receive_data(REFUSAL)
    assert isinstance(conn.next_event(), HandshakeRejected)
    return conn


def _closed_by_peer() -> Connection:
    conn = Connection(Role.CLIENT)
    conn.receive_data(Frame(Opcode.CLOSE, format_close_message(1001)).serialize())
    assert conn.next_event() == Close(code=1001)
    return conn


def _eof() -> Connection:
    conn = Connection(Role.SERVER)
    conn.receive_eof()
    assert conn.next_event() == Close(code=1006)
    return conn


def _rejected() -> Connection:
    conn = _server_with(UPGRADE_REQUEST)
    conn.reject()
    return conn


def _mid_message() -> Connection:
    conn = Connection(Role.CLIENT)
    conn.send_text("half", fin=False)
    return conn


def _closing(conn: Connection) -> Connection:
    conn.send_close()
    return conn


@dataclass(frozen=True)
class Setup:
    """A way to reach a state, and what else decides whether a send is valid there."""

    factory: Callable[[], Connection]
    state: State
    sending: str | None = None  # the op of a message half sent (fin=False)
    request: str | None = None  # what a server in CONNECTING may answer: "handshake", "http"


# Every way to reach each state; each setup asserts it got there.
SETUPS: dict[str, Setup] = {
    "server-awaiting-request": Setup(ServerConnection, State.CONNECTING),
    "server-got-handshake": Setup(
        lambda: _server_with(UPGRADE_REQUEST), State.CONNECTING, request="handshake"
    ),
    "server-got-http-request": Setup(
        lambda: _server_with(PLAIN_REQUEST), State.CONNECTING, request="http"
    ),
    "client-awaiting-response": Setup(
        lambda: ClientConnection("ws://localhost/"), State.CONNECTING
    ),
    "server-open": Setup(lambda: Connection(Role.SERVER), State.OPEN),
    "client-open": Setup(lambda: Connection(Role.CLIENT), State.OPEN),
    "server-open-after-handshake": Setup(lambda: ConnectionPair.open().server, State.OPEN),
    "client-open-after-handshake": Setup(lambda: ConnectionPair.open().client, State.OPEN),
    "client-open-mid-message": Setup(_mid_message, State.OPEN, sending="send_text"),
    "client-closing": Setup(lambda: _closing(Connection(Role.CLIENT)), State.CLOSING),
    "server-closing": Setup(lambda: _closing(ConnectionPair.open().server), State.CLOSING),
    "closed-we-started": Setup(lambda: _closed_pair("client"), State.CLOSED),
    "closed-peer-started": Setup(lambda: _closed_pair("server"), State.CLOSED),
    "closed-by-peer-close": Setup(_closed_by_peer, State.CLOSED),
    "closed-by-eof": Setup(_eof, State.CLOSED),
    "closed-failed": Setup(_failed, State.CLOSED),
    "closed-handshake-failed": Setup(_handshake_failed, State.CLOSED),
    "closed-server-rejected": Setup(_rejected, State.CLOSED),
    "closed-client-refused": Setup(_client_refused, State.CLOSED),
}
SERVER_SETUPS = {name for name, s in SETUPS.items() if isinstance(s.factory(), ServerConnection)}


@dataclass(frozen=True)
class Call:
    """One send call, and whether its arguments alone are acceptable."""

    run: Callable[[Any], object]
    args_ok: bool = True
    fin: bool = True  # for data: whether the call ends the message


def _close_call(code: int | None, reason: str) -> Call:
    # Sendable: 1000-1003, 1007-1014, 3000-4999 (RFC 6455 §7.4), with a reason of
    # at most 123 bytes; no code (None or 1005) goes with no reason.
    if code in (None, 1005):
        ok = not reason
    else:
        ok = code in (1000, 1001, 3000) and len(reason.encode()) <= 123
    return Call(lambda c: c.send_close(code, reason), ok)


@dataclass(frozen=True)
class SendOp:
    """A send operation: the event type it stands for in SEND_TRANSITIONS, and its calls."""

    event: type[Event]
    calls: st.SearchStrategy[Call]
    server_handshake_only: bool = False


control_payloads_any = st.binary(max_size=8) | st.binary(min_size=124, max_size=127)

SEND_OPS: dict[str, SendOp] = {
    "send_text": SendOp(
        Message,
        st.builds(
            lambda data, fin: Call(lambda c: c.send_text(data, fin=fin), fin=fin),
            st.text(max_size=8) | st.binary(max_size=8),
            st.booleans(),
        ),
    ),
    "send_binary": SendOp(
        Message,
        st.builds(
            lambda data, fin: Call(lambda c: c.send_binary(data, fin=fin), fin=fin),
            st.binary(max_size=8),
            st.booleans(),
        ),
    ),
    "send_ping": SendOp(
        Ping,
        st.builds(lambda p: Call(lambda c: c.send_ping(p), len(p) <= 125), control_payloads_any),
    ),
    "send_pong": SendOp(
        Pong,
        st.builds(lambda p: Call(lambda c: c.send_pong(p), len(p) <= 125), control_payloads_any),
    ),
    "send_close": SendOp(
        Close,
        st.builds(
            _close_call,
            st.none() | st.sampled_from([1000, 1001, 1004, 1005, 1006, 1015, 999, 3000, 5000]),
            st.just("") | st.text(max_size=70),
        ),
    ),
    "accept": SendOp(
        HandshakeResponse,
        st.builds(
            # The client offered no subprotocol.
            lambda proto: Call(lambda c: c.accept(subprotocol=proto), proto is None),
            st.none() | st.just("chat"),
        ),
        server_handshake_only=True,
    ),
    "reject": SendOp(
        HandshakeRejected,
        st.builds(
            lambda status: Call(
                lambda c: c.reject(status), status is None or (200 <= status <= 599)
            ),
            st.none() | st.sampled_from([101, 199, 400, 403, 426, 500, 599, 600]),
        ),
        server_handshake_only=True,
    ),
}


@dataclass
class Model:
    """What the test knows beyond the state: a half-sent message, a pending request."""

    sending: str | None
    request: str | None

    def allows(self, state: State, name: str, call: Call) -> bool:
        if (state, SEND_OPS[name].event) not in SEND_TRANSITIONS or not call.args_ok:
            return False
        if name in ("send_text", "send_binary"):
            return self.sending in (None, name)  # finish one message before the next
        if name == "accept":
            return self.request == "handshake"
        if name == "reject":
            return self.request is not None
        return True


def check_send(conn: Connection, model: Model, name: str, call: Call) -> None:
    """The STYLE.md property, exactly: a valid call makes the table's transition; any
    other raises LocalProtocolError (CloseSentError too) and changes nothing."""
    before = conn.state
    op = SEND_OPS[name]
    if not model.allows(before, name, call):
        with pytest.raises(LocalProtocolError):
            call.run(conn)
        assert conn.state is before
        assert conn.data_to_send() == b""
        return
    call.run(conn)
    assert conn.state is SEND_TRANSITIONS[(before, op.event)]
    out = conn.data_to_send()
    if op.server_handshake_only:
        model.request = None
        status = b"101" if op.event is HandshakeResponse else b""
        assert out.startswith(b"HTTP/1.1 " + status), out
    else:
        if name in ("send_text", "send_binary"):
            model.sending = None if call.fin else name
        # Exactly one frame, masked iff we are the client.
        [(_, masked)] = parse_all(out)
        assert masked is (conn.role is Role.CLIENT)


def _start(setup: str) -> tuple[Connection, Model]:
    spec = SETUPS[setup]
    conn = spec.factory()
    conn.data_to_send()
    assert conn.state is spec.state
    return conn, Model(spec.sending, spec.request)


STATE_PAIRS = [
    (setup, op)
    for setup, op in itertools.product(SETUPS, SEND_OPS)
    if setup in SERVER_SETUPS or not SEND_OPS[op].server_handshake_only
]


@pytest.mark.parametrize(("setup", "op_name"), STATE_PAIRS)
@settings(max_examples=10, deadline=None)
@given(data=st.data())
def test_every_state_and_send(setup: str, op_name: str, data: st.DataObject) -> None:
    """Each (State, send operation) pair, once per way of reaching the state."""
    conn, model = _start(setup)
    check_send(conn, model, op_name, data.draw(SEND_OPS[op_name].calls, label="call"))


@settings(max_examples=200, deadline=None)
@given(setup=st.sampled_from(list(SETUPS)), data=st.data())
def test_send_sequences(setup: str, data: st.DataObject) -> None:
    """Every step of any send sequence obeys the table: a refused call changes nothing,
    and the connection stays usable after it."""
    conn, model = _start(setup)
    names = [
        n for n, op in SEND_OPS.items() if setup in SERVER_SETUPS or not op.server_handshake_only
    ]
    for name in data.draw(st.lists(st.sampled_from(names), min_size=1, max_size=8)):
        check_send(conn, model, name, data.draw(SEND_OPS[name].calls, label=name))


# -- 7. UTF-8 -------------------------------------------------------------------------------

# Sequences around every rule of RFC 3629 / Unicode Table 3-7, valid and not.
UTF8_EDGES = [
    b"\x7f",
    b"\x80",  # lone continuation
    b"\xc0\x80",  # overlong
    b"\xc1\xbf",
    b"\xc2\x80",
    b"\xdf\xbf",
    b"\xe0\x80\x80",  # overlong
    b"\xe0\x9f\xbf",
    b"\xe0\xa0\x80",
    b"\xed\x9f\xbf",  # U+D7FF
    b"\xed\xa0\x80",  # U+D800, a surrogate
    b"\xed\xbf\xbf",  # U+DFFF
    b"\xee\x80\x80",
    b"\xef\xbf\xbf",
    b"\xf0\x8f\xbf\xbf",  # overlong
    b"\xf0\x90\x80\x80",
    b"\xf4\x8f\xbf\xbf",  # U+10FFFF
    b"\xf4\x90\x80\x80",  # over U+10FFFF
    b"\xf5\x80\x80\x80",
    b"\xfe",
    b"\xff",
    b"\xe2\x82",  # truncated
    b"\xf0\x9f\x98",
    b"\xed",
]
utf8ish = st.lists(
    st.text(max_size=6).map(str.encode)
    | st.sampled_from(UTF8_EDGES)
    | st.sampled_from(UTF8_EDGES).map(lambda s: s[:-1])
    | st.binary(max_size=3),
    max_size=8,
).map(b"".join)


def first_bad_byte(data: bytes) -> int | None:
    """The index of the first byte at which ``data`` stops being the start of any UTF-8.

    ``None`` if every prefix could still be completed. The reference feeds
    CPython's incremental decoder one byte at a time, which fails at the first
    such byte, except that it waits for a third byte after ``ED A0..BF`` (for
    the ``surrogatepass`` handler); UTF-8 has no surrogates, so that fails here.
    """
    decoder = codecs.getincrementaldecoder("utf-8")()
    for i in range(len(data)):
        try:
            decoder.decode(data[i : i + 1])
        except UnicodeDecodeError:
            return i
        pending = decoder.getstate()[0]
        if len(pending) == 2 and pending[0] == 0xED and pending[1] >= 0xA0:
            return i
    return None


@pytest.mark.parametrize(
    ("data", "bad"),
    [
        (b"ok", None),
        (b"\xe2\x82", None),  # incomplete, but a valid prefix
        (b"a\xed\xa0\x80", 2),
        (b"\xed\x9f\xbf", None),
        (b"\xf4\x90", 1),
        (b"\xe0\x9f", 1),
        (b"\xc0", 0),
        (b"\xe2\x82\x41", 2),
    ],
)
def test_first_bad_byte_reference(data: bytes, bad: int | None) -> None:
    """The reference itself, on hand-checked cases."""
    assert first_bad_byte(data) == bad


@settings(max_examples=600, deadline=None)
@given(
    payload=utf8ish,
    stream=st.booleans(),
    fragment_cuts=st.lists(st.integers(0, 1000), max_size=4),
    chunk_cuts=cut_lists,
    keys=st.lists(mask_keys, min_size=5, max_size=5),
)
@example(
    payload=b"a\xed\xa0\x80z", stream=False, fragment_cuts=[2], chunk_cuts=[], keys=[FIXED_KEY] * 5
)
@example(
    payload=b"a\xed\xa0\x80z", stream=True, fragment_cuts=[], chunk_cuts=[9], keys=[FIXED_KEY] * 5
)
@example(payload=b"\xe2\x82", stream=False, fragment_cuts=[], chunk_cuts=[], keys=[FIXED_KEY] * 5)
def test_text_is_checked_as_it_arrives(
    payload: bytes,
    stream: bool,
    fragment_cuts: list[int],
    chunk_cuts: list[int],
    keys: list[bytes],
) -> None:
    """Accepted iff UTF-8; otherwise 1007 in the very chunk holding the first bad byte.

    "When an endpoint is to interpret a byte stream as UTF-8 but finds that the
    byte stream is not, in fact, a valid UTF-8 stream, that endpoint MUST _Fail
    the WebSocket Connection_." -- RFC 6455 §8.1
    """
    # Frame the payload in fragments, remembering where each payload byte lands.
    wire = bytearray()
    where: list[int] = []  # wire offset of each payload byte
    fragments = pieces(payload, fragment_cuts)
    for i, fragment in enumerate(fragments):
        opcode = Opcode.CONTINUATION if i else Opcode.TEXT
        frame = Frame(opcode, fragment, fin=i == len(fragments) - 1).serialize(keys[i])
        start = len(wire) + len(frame) - len(fragment)
        where += range(start, start + len(fragment))
        wire += frame
    try:
        text: str | None = payload.decode()
    except UnicodeDecodeError:
        text = None
    bad = first_bad_byte(payload)
    assert bad is None or text is None  # the reference agrees with bytes.decode()
    # A payload cut short in a character is known bad when the message ends.
    bad_offset = where[bad] if bad is not None else len(wire) - 1

    conn = Connection(Role.SERVER, stream_messages=stream)
    events: list[Event] = []
    consumed = 0
    for chunk in pieces(bytes(wire), chunk_cuts, empty=False):
        conn.receive_data(chunk)
        consumed += len(chunk)
        error: RemoteProtocolError | None = None
        try:
            while (event := conn.next_event()) is not None:
                events.append(event)
        except RemoteProtocolError as exc:
            error = exc
        if error is not None:
            assert text is None, f"valid UTF-8 refused: {payload!r}"
            assert error.code == 1007
            assert consumed - len(chunk) <= bad_offset < consumed, "not the bad byte's chunk"
            assert conn.state is State.CLOSED
            streamed = b"".join(e.data for e in events if isinstance(e, MessageData))
            assert payload.startswith(streamed)
            return
    assert text is not None, f"invalid UTF-8 accepted: {payload!r}"
    if stream:
        data = [MessageData(data=payload)] if payload else []
        assert merge_data(events) == [
            MessageStart(message_type=MessageType.TEXT),
            *data,
            MessageEnd(),
        ]
    else:
        assert events == [Message(data=text)]
