"""A message read in pieces costs memory in proportion to its payload, however it was cut.

Kept as one object per fragment, a message of 1-byte fragments once cost
~124 bytes per byte of payload (a ``bytes`` object, a list slot, then a
buffer view in ``b"".join``), so a read limit bounded memory to ~124 times
itself. Memory is traced here (tracemalloc) in the core alone, no sockets:
the bounds are multiples of the payload, never durations.
"""

from __future__ import annotations

import tracemalloc

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from wsproto_core import (
    CloseCode,
    Connection,
    Event,
    Message,
    MessageData,
    MessageEnd,
    MessageStart,
    MessageType,
    Opcode,
    RemoteProtocolError,
    Role,
    serialize_frame,
)
from wsproto_core.assembly import SMALL_PIECE, PieceJoiner

KEY = b"\x01\x02\x03\x04"
KiB = 1024
SIZE = 32 * KiB  # payload of the messages whose memory is measured
READ = 4 * KiB  # what each receive_data() gets: a read buffer, small next to SIZE

# Characters of each UTF-8 length, so fragments cut them anywhere.
CHARACTERS = "aé€😀"


def cut(payload: bytes, sizes: list[int]) -> list[bytes]:
    """``payload`` cut into fragments of ``sizes``, repeated in turn; at least one."""
    pieces = []
    pos = turn = 0
    while pos < len(payload):
        size = sizes[turn % len(sizes)]
        pieces.append(payload[pos : pos + size])
        pos += size
        turn += 1
    return pieces or [b""]


def client_frames(opcode: Opcode, fragments: list[bytes]) -> bytes:
    """A message as a client sends it: masked, one frame per fragment."""
    last = len(fragments) - 1
    return b"".join(
        serialize_frame(Opcode.CONTINUATION if i else opcode, fragment, fin=i == last, mask_key=KEY)
        for i, fragment in enumerate(fragments)
    )


def receive(conn: Connection, wire: bytes, read: int = READ) -> list[Event]:
    events: list[Event] = []
    for start in range(0, len(wire), read):
        conn.receive_data(wire[start : start + read])
        while (event := conn.next_event()) is not None:
            events.append(event)
    return events


def payload_of(kind: str, size: int = SIZE) -> bytes:
    if kind == "binary":
        return bytes(range(256)) * (size // 256)
    character = {"ascii": "a", "2-byte": "é", "3-byte": "€", "4-byte": "😀"}[kind]
    return (character * (size // len(character.encode()))).encode()


# -- PieceJoiner ----------------------------------------------------------------------------


def test_the_joiner_hands_back_a_single_piece_without_a_copy() -> None:
    parts = PieceJoiner()
    last = b"x" * 10
    assert parts.join(last) is last  # nothing appended
    for piece in (b"y" * 10, b"z" * SMALL_PIECE):
        parts.append(piece)
        assert parts.join() is piece


def test_the_joiner_ignores_empty_pieces_and_starts_over_after_a_join() -> None:
    parts = PieceJoiner()
    parts.append(b"")
    assert parts.join() == b""
    for piece in (b"a", b"", b"b", b"", b"c"):
        parts.append(piece)
    assert parts.join(b"d") == b"abcd"
    parts.append(b"e")
    assert parts.join() == b"e"
    assert parts.join() == b""


piece_sizes = st.sampled_from([0, 1, 2, 3, SMALL_PIECE - 1, SMALL_PIECE, SMALL_PIECE + 1, 3000])


@settings(max_examples=200, deadline=None)
@given(
    messages=st.lists(st.lists(piece_sizes, max_size=12), min_size=1, max_size=3),
    last=piece_sizes,
)
def test_the_joiner_keeps_every_byte_in_order(messages: list[list[int]], last: int) -> None:
    parts = PieceJoiner()  # one joiner for several messages, as a connection uses it
    counter = 0
    for sizes in messages:
        pieces = []
        for size in [*sizes, last]:
            pieces.append(bytes((counter + i) % 251 for i in range(size)))
            counter += size
        for piece in pieces[:-1]:
            parts.append(piece)
        assert parts.join(pieces[-1]) == b"".join(pieces)


@pytest.mark.parametrize(
    "sizes",
    [[1], [3], [SMALL_PIECE - 1], [SMALL_PIECE], [1, SMALL_PIECE]],
    ids=["1", "3", "small-1", "small", "1-then-small"],
)
def test_the_joiner_costs_about_the_payload(sizes: list[int]) -> None:
    # What the adapters do with the MessageData of a streamed message.
    payload = payload_of("binary")
    pieces = cut(payload, sizes)
    parts = PieceJoiner()
    tracemalloc.start()
    try:
        for piece in pieces:
            parts.append(piece)
        kept, _ = tracemalloc.get_traced_memory()
        joined = parts.join()
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert joined == payload
    # The pieces existed before, and large ones are kept as they are: what
    # the joiner adds is the copies of the small ones and a slot per part.
    # A list of the 1-byte pieces alone would take 8 bytes per byte, and
    # b"".join() 80 more.
    assert kept < 1.25 * len(payload), kept
    assert peak < 2.5 * len(payload), peak  # and the message


# -- Connection: a message delivered whole ----------------------------------------------------


PATTERNS = {
    "1-byte": [1],
    "3-byte": [3],
    "1000-byte": [1000],
    "1-byte and 5000-byte": [1, 5000],
}


@pytest.mark.parametrize("pattern", PATTERNS.values(), ids=PATTERNS.keys())
@pytest.mark.parametrize("kind", ["binary", "ascii", "2-byte", "3-byte", "4-byte"])
def test_a_message_in_tiny_fragments_costs_about_its_payload(kind: str, pattern: list[int]) -> None:
    payload = payload_of(kind)
    opcode = Opcode.BINARY if kind == "binary" else Opcode.TEXT
    wire = client_frames(opcode, cut(payload, pattern))
    conn = Connection(Role.SERVER, max_message_size=None)
    tracemalloc.start()
    try:
        events = receive(conn, wire)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    expected = payload if kind == "binary" else payload.decode()
    assert events == [Message(data=expected)]
    # What is kept until the end (about the payload: with one kind of
    # character, a string takes no more bytes than its UTF-8), the message
    # joined from it, a read, and the parts not joined yet: 1.1 to 2.4
    # times the payload is measured. A part per fragment cost ~124 times
    # the payload for 1-byte fragments.
    assert peak < 2.5 * len(payload) + 16 * KiB, peak


def test_a_message_costs_about_the_same_however_it_is_fragmented() -> None:
    # The same message, however the sender cut it into fragments, within a
    # few percent; in one frame it is written straight into place
    # (payload.py): as much without _speedups, a payload less with it.
    payload = payload_of("binary")
    peaks = []
    for pattern in ([len(payload)], [1], [7], [1, 5000], [len(payload) // 2]):
        wire = client_frames(Opcode.BINARY, cut(payload, pattern))
        conn = Connection(Role.SERVER, max_message_size=None)
        tracemalloc.start()
        try:
            assert receive(conn, wire) == [Message(data=payload)]
            _, peak = tracemalloc.get_traced_memory()
        finally:
            tracemalloc.stop()
        peaks.append(peak)
    one_frame, fragmented = peaks[0], peaks[1:]
    assert max(fragmented) < 1.25 * min(fragmented), peaks
    assert one_frame < 1.1 * min(fragmented), peaks


def test_a_streamed_message_in_tiny_fragments_is_not_kept() -> None:
    # stream_messages: the core keeps nothing between pieces, whatever their size.
    payload = payload_of("3-byte")
    wire = client_frames(Opcode.TEXT, cut(payload, [1]))
    conn = Connection(Role.SERVER, max_message_size=None, stream_messages=True)
    received = 0
    tracemalloc.start()
    try:
        for start in range(0, len(wire), READ):
            conn.receive_data(wire[start : start + READ])
            while (event := conn.next_event()) is not None:
                if isinstance(event, MessageData):
                    # Checked and dropped at once, as a program streaming it would.
                    assert event.data == payload[received : received + len(event.data)]
                    received += len(event.data)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert received == len(payload)
    assert peak < 16 * KiB, peak  # a read and a piece, not the message


# -- Connection: text pieces are checked as they come and joined right -------------------------


fragment_sizes = st.lists(
    st.sampled_from([1, 2, 3, 5, SMALL_PIECE - 1, SMALL_PIECE, SMALL_PIECE + 1, 2500]),
    min_size=1,
    max_size=6,
)


@settings(max_examples=150, deadline=None)
@given(
    text=st.lists(st.sampled_from(CHARACTERS), min_size=0, max_size=1500).map("".join),
    sizes=fragment_sizes,
    read=st.sampled_from([1, 7, 100, 65536]),
)
def test_text_in_fragments_of_any_size_comes_out_whole(
    text: str, sizes: list[int], read: int
) -> None:
    conn = Connection(Role.SERVER)
    payload = text.encode()
    wire = client_frames(Opcode.TEXT, cut(payload, sizes))
    # A second message, cut the same way, finds nothing left of the first.
    events = receive(conn, wire + wire + client_frames(Opcode.BINARY, cut(payload, sizes)), read)
    assert events == [Message(data=text), Message(data=text), Message(data=payload)]


def test_hundreds_of_small_text_pieces_around_a_large_one() -> None:
    text = "".join(CHARACTERS[i % 4] for i in range(1500))
    payload = text.encode()
    # 1-byte fragments (several runs of them), one large, then 1-byte again.
    fragments = [*cut(payload[:1500], [1]), payload[1500:3000], *cut(payload[3000:], [1])]
    conn = Connection(Role.SERVER)
    assert receive(conn, client_frames(Opcode.TEXT, fragments)) == [Message(data=text)]


def test_invalid_utf8_in_a_tiny_fragment_fails_at_once() -> None:
    # Hundreds of small pieces first, so they were joined into a run already.
    conn = Connection(Role.SERVER)
    fragments = cut("€".encode() * 300, [1])
    wire = b"".join(
        serialize_frame(Opcode.CONTINUATION if i else Opcode.TEXT, f, fin=False, mask_key=KEY)
        for i, f in enumerate(fragments)
    )
    assert receive(conn, wire) == []
    conn.receive_data(
        serialize_frame(Opcode.CONTINUATION, b"\xe2\x82", fin=False, mask_key=KEY)
        + serialize_frame(Opcode.CONTINUATION, b"\x41", fin=False, mask_key=KEY)  # not 80..BF
    )
    with pytest.raises(RemoteProtocolError) as info:
        conn.next_event()
    assert info.value.code == CloseCode.INVALID_FRAME_PAYLOAD_DATA


def test_a_message_cut_short_inside_a_character_fails() -> None:
    conn = Connection(Role.SERVER)
    fragments = [*cut("€".encode() * 2000, [1]), b"\xe2", b"\x82", b""]
    conn.receive_data(client_frames(Opcode.TEXT, fragments))
    with pytest.raises(RemoteProtocolError) as info:
        conn.next_event()
    assert info.value.code == CloseCode.INVALID_FRAME_PAYLOAD_DATA


def test_streaming_is_unchanged_by_the_joining() -> None:
    # One MessageData per fragment, as it arrives: joining is for whole messages only.
    conn = Connection(Role.SERVER, stream_messages=True)
    fragments = [b"a", b"\xc3", b"\xa9", b"b" * 2000, b"c"]
    assert receive(conn, client_frames(Opcode.TEXT, fragments), 65536) == [
        MessageStart(message_type=MessageType.TEXT),
        *(MessageData(data=f) for f in fragments),
        MessageEnd(),
    ]
