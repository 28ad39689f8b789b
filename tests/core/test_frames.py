"""The frame codec and the Close payload, against RFC 6455 §5 and §7."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from wsproto_core import CloseCode, LocalProtocolError, Opcode, RemoteProtocolError
from wsproto_core.constants import is_valid_close_code
from wsproto_core.frames import (
    RSV1,
    RSV3,
    Frame,
    format_close_message,
    parse_close_payload,
    parse_frame,
    parse_header,
    read_header,
    read_header_fast,
    read_message,
    read_message_fast,
    serialize_frame,
)
from wsproto_core.mask import COMPILED, apply_mask

KEY = bytes([0x37, 0xFA, 0x21, 0x3D])

# RFC 6455 §5.7, "Examples".
RFC_EXAMPLES = [
    ("unmasked text", bytes.fromhex("810548656c6c6f"), Frame(Opcode.TEXT, b"Hello"), False),
    ("masked text", bytes.fromhex("818537fa213d7f9f4d5158"), Frame(Opcode.TEXT, b"Hello"), True),
    ("first fragment", bytes.fromhex("010348656c"), Frame(Opcode.TEXT, b"Hel", fin=False), False),
    ("last fragment", bytes.fromhex("80026c6f"), Frame(Opcode.CONTINUATION, b"lo"), False),
    ("unmasked ping", bytes.fromhex("890548656c6c6f"), Frame(Opcode.PING, b"Hello"), False),
    ("masked pong", bytes.fromhex("8a8537fa213d7f9f4d5158"), Frame(Opcode.PONG, b"Hello"), True),
]


@pytest.mark.parametrize(("name", "wire", "frame", "masked"), RFC_EXAMPLES)
def test_rfc_examples_parse_and_serialize(
    name: str, wire: bytes, frame: Frame, masked: bool
) -> None:
    assert parse_frame(wire) == (frame, masked, len(wire))
    assert frame.serialize(KEY if masked else None) == wire


def test_rfc_example_lengths() -> None:
    # "256 bytes binary message in a single unmasked frame: 0x82 0x7E 0x0100"
    assert serialize_frame(Opcode.BINARY, bytes(256))[:4] == bytes.fromhex("827e0100")
    # "64KiB binary message in a single unmasked frame: 0x82 0x7F 0x0000000000010000"
    assert serialize_frame(Opcode.BINARY, bytes(65536))[:10] == bytes.fromhex(
        "827f0000000000010000"
    )


@pytest.mark.parametrize("size", [0, 1, 125, 126, 127, 65535, 65536])
@pytest.mark.parametrize("mask_key", [None, KEY])
def test_sizes_fed_whole_bytewise_and_with_trailing_bytes(
    size: int, mask_key: bytes | None
) -> None:
    payload = bytes(i % 251 for i in range(size))
    wire = serialize_frame(Opcode.BINARY, payload, mask_key=mask_key)
    expected_header = 2 + (0 if size < 126 else 2 if size < 65536 else 8) + (4 if mask_key else 0)
    header = parse_header(wire)
    assert header is not None
    assert (header.size, header.length, header.mask_key) == (expected_header, size, mask_key)
    # Whole.
    assert parse_frame(wire) == (Frame(Opcode.BINARY, payload), mask_key is not None, len(wire))
    # Every proper prefix is incomplete, and consumes nothing.
    for cut in {0, 1, expected_header - 1, expected_header, len(wire) - 1} - {len(wire)}:
        if 0 <= cut < len(wire):
            assert parse_frame(wire[:cut]) is None
    # Trailing bytes stay where they are.
    frame, _, end = parse_frame(wire + b"\x81\x00tail") or (None, None, 0)
    assert frame == Frame(Opcode.BINARY, payload)
    assert end == len(wire)
    # And parsing resumes at an offset.
    assert parse_frame(b"xx" + wire, 2) == (
        Frame(Opcode.BINARY, payload),
        mask_key is not None,
        len(wire) + 2,
    )


def test_shortest_length_encoding_is_used() -> None:
    assert serialize_frame(Opcode.BINARY, bytes(125))[1] == 125
    assert serialize_frame(Opcode.BINARY, bytes(126))[1] == 126
    assert serialize_frame(Opcode.BINARY, bytes(65535))[1] == 126
    assert serialize_frame(Opcode.BINARY, bytes(65536))[1] == 127


def test_header_bits() -> None:
    wire = serialize_frame(Opcode.TEXT, b"x", fin=False, rsv=RSV1 | RSV3)
    header = parse_header(wire)
    assert header is not None
    assert (header.fin, header.rsv, header.opcode) == (False, RSV1 | RSV3, Opcode.TEXT)
    assert wire[0] == 0x01 | 0x40 | 0x10


@pytest.mark.parametrize("opcode", [3, 4, 5, 6, 7, 0xB, 0xC, 0xD, 0xE, 0xF])
def test_reserved_opcodes_fail_with_1002(opcode: int) -> None:
    with pytest.raises(RemoteProtocolError) as info:
        parse_header(bytes([0x80 | opcode, 0]))
    assert info.value.code == CloseCode.PROTOCOL_ERROR


def test_control_frame_over_125_bytes_fails() -> None:
    with pytest.raises(RemoteProtocolError) as info:
        parse_header(bytes([0x89, 126, 0, 126]))
    assert info.value.code == CloseCode.PROTOCOL_ERROR
    assert parse_header(bytes([0x89, 125])) is not None


@pytest.mark.parametrize("opcode", [Opcode.PING, Opcode.PONG, Opcode.CLOSE])
def test_fragmented_control_frame_fails(opcode: Opcode) -> None:
    with pytest.raises(RemoteProtocolError) as info:
        parse_header(bytes([opcode, 0]))
    assert info.value.code == CloseCode.PROTOCOL_ERROR


def test_64_bit_length_with_top_bit_set_fails() -> None:
    with pytest.raises(RemoteProtocolError) as info:
        parse_header(bytes([0x82, 127]) + (1 << 63).to_bytes(8, "big"))
    assert info.value.code == CloseCode.PROTOCOL_ERROR
    header = parse_header(bytes([0x82, 127]) + ((1 << 63) - 1).to_bytes(8, "big"))
    assert header is not None
    assert header.length == (1 << 63) - 1


def test_serialize_refuses_what_the_rfc_forbids() -> None:
    with pytest.raises(LocalProtocolError, match="opcode"):
        serialize_frame(3, b"")
    with pytest.raises(LocalProtocolError, match="125"):
        serialize_frame(Opcode.PING, bytes(126))
    with pytest.raises(LocalProtocolError, match="final"):
        serialize_frame(Opcode.CLOSE, b"", fin=False)
    with pytest.raises(LocalProtocolError, match="RSV"):
        serialize_frame(Opcode.TEXT, b"", rsv=0x08)
    with pytest.raises(LocalProtocolError, match="4 bytes"):
        serialize_frame(Opcode.TEXT, b"", mask_key=b"abc")
    assert serialize_frame(Opcode.PING, bytes(125))[1] == 125


def test_apply_mask_matches_the_rfc_definition() -> None:
    data = bytes(range(256)) * 3
    expected = bytes(b ^ KEY[i % 4] for i, b in enumerate(data))
    assert apply_mask(data, KEY) == expected
    assert apply_mask(expected, KEY) == data
    assert apply_mask(b"", KEY) == b""
    # Piecewise, with the offset carried across pieces.
    assert apply_mask(data[:5], KEY) + apply_mask(data[5:], KEY, 5) == expected
    assert apply_mask(memoryview(data)[7:11], KEY, 7) == expected[7:11]


def test_opcode_is_control() -> None:
    assert [op.is_control for op in Opcode] == [False, False, False, True, True, True]


class TestCloseCodes:
    VALID = (1000, 1001, 1002, 1003, 1007, 1008, 1009, 1010, 1011, 1012, 1013, 1014, 3000, 4999)
    INVALID = (0, 999, 1004, 1005, 1006, 1015, 1016, 1100, 2000, 2999, 5000, 65535)

    @pytest.mark.parametrize("code", VALID)
    def test_valid(self, code: int) -> None:
        assert is_valid_close_code(code)
        payload = format_close_message(code, "bye")
        assert payload == code.to_bytes(2, "big") + b"bye"
        assert parse_close_payload(payload) == (code, "bye")

    @pytest.mark.parametrize("code", INVALID)
    def test_invalid(self, code: int) -> None:
        assert not is_valid_close_code(code)
        if code != CloseCode.NO_STATUS_RCVD:
            with pytest.raises(LocalProtocolError, match="may not be sent"):
                format_close_message(code)
        with pytest.raises(RemoteProtocolError) as info:
            parse_close_payload(code.to_bytes(2, "big"))
        assert info.value.code == CloseCode.PROTOCOL_ERROR

    def test_no_status(self) -> None:
        assert format_close_message(CloseCode.NO_STATUS_RCVD) == b""
        assert parse_close_payload(b"") == (CloseCode.NO_STATUS_RCVD, "")
        with pytest.raises(LocalProtocolError, match="needs a close code"):
            format_close_message(CloseCode.NO_STATUS_RCVD, "why")

    def test_one_byte_payload_is_a_protocol_error(self) -> None:
        with pytest.raises(RemoteProtocolError) as info:
            parse_close_payload(b"\x03")
        assert info.value.code == CloseCode.PROTOCOL_ERROR

    def test_reason_must_be_utf8(self) -> None:
        with pytest.raises(RemoteProtocolError) as info:
            parse_close_payload(b"\x03\xe8\xff")
        assert info.value.code == CloseCode.INVALID_FRAME_PAYLOAD_DATA

    def test_reason_length_limit_counts_bytes(self) -> None:
        assert len(format_close_message(1000, "é" * 61 + "a")) == 125
        with pytest.raises(LocalProtocolError, match="123 bytes"):
            format_close_message(1000, "é" * 62)


# -- the compiled header parser ------------------------------------------------------------


def _pure_outcome(buf: bytes | bytearray, pos: int) -> object:
    try:
        return read_header(buf, pos)
    except RemoteProtocolError as exc:
        return ("raises", exc.code, exc.reason)


def _fast_outcome(buf: bytes | bytearray, pos: int) -> object:
    if not COMPILED:  # read_header itself
        return _pure_outcome(buf, pos)
    header = read_header_fast(buf, pos)
    if header is NotImplemented:
        # Where read_header raises, the fast path hands over to it.
        outcome = _pure_outcome(buf, pos)
        assert isinstance(outcome, tuple), outcome
        assert outcome[0] == "raises", outcome
        return outcome
    return header


# Headers near every boundary: 7-, 16- and 64-bit lengths, masked or not,
# every opcode, FIN and RSV bits, cut anywhere.
_heads = st.builds(
    lambda first, second, extra: bytes([first, second]) + extra,
    st.integers(0, 255),
    st.integers(0, 255),
    st.binary(max_size=14),
)


@settings(max_examples=2000)
@given(head=_heads, lead=st.binary(max_size=3), as_bytearray=st.booleans())
def test_the_fast_header_parser_agrees_with_read_header(
    head: bytes, lead: bytes, as_bytearray: bool
) -> None:
    data = lead + head
    buf: bytes | bytearray = bytearray(data) if as_bytearray else data
    for end in range(len(data) + 1):
        piece = buf[:end]
        assert _fast_outcome(piece, len(lead)) == _pure_outcome(piece, len(lead))


def test_the_receive_loop_uses_the_compiled_parser_when_built() -> None:
    if COMPILED:
        from wsproto_core import _speedups

        assert read_header_fast is _speedups.read_header
        with pytest.raises(ValueError, match="position >= 0"):
            read_header_fast(b"\x81\x00", -1)
    else:
        assert read_header_fast is read_header


# -- the small message reader (the receive loop's fast path) -------------------------------


def _frame(first: int, payload: bytes, *, masked: bool, long_form: bool = False) -> bytes:
    """A frame with any first byte; ``long_form`` spells a short length in 16 bits."""
    length = len(payload)
    head = bytes([first])
    mask_bit = 0x80 if masked else 0
    if length < 126 and not long_form:
        head += bytes([mask_bit | length])
    elif length < 0x10000:
        head += bytes([mask_bit | 126]) + length.to_bytes(2, "big")
    else:
        head += bytes([mask_bit | 127]) + length.to_bytes(8, "big")
    return head + (KEY + apply_mask(payload, KEY) if masked else payload)


@pytest.mark.parametrize("client", [False, True], ids=["server", "client"])
def test_read_message_takes_a_whole_small_message(client: bool) -> None:
    masked = not client
    text = _frame(0x81, "héllo ✓ 𝄞".encode(), masked=masked)
    binary = _frame(0x82, bytes(range(256)) * 3, masked=masked)
    buf = b"xy" + text + binary + b"\x81"
    assert read_message(buf, 2, client, None, None) == ("héllo ✓ 𝄞", 2 + len(text))
    end = 2 + len(text) + len(binary)
    assert read_message(buf, 2 + len(text), client, 1 << 20, 1 << 20) == (
        bytes(range(256)) * 3,
        end,
    )
    assert read_message(buf, end, client, None, None) is None  # incomplete
    empty = _frame(0x82, b"", masked=masked)
    assert read_message(empty, 0, client, 0, None) == (b"", len(empty))
    assert read_message(_frame(0x81, b"ab", masked=masked, long_form=True), 0, client, None, None)


@pytest.mark.parametrize(
    ("first", "payload", "options", "why"),
    [
        (0x01, b"x", {}, "not the last fragment"),
        (0x80, b"x", {}, "a continuation"),
        (0x89, b"x", {}, "a control frame"),
        (0xC1, b"x", {}, "RSV1 (compressed)"),
        (0x81, b"\xff", {}, "invalid UTF-8: the usual path fails with 1007"),
        (0x81, b"\xed\xa0\x80", {}, "a surrogate is not UTF-8"),
        (0x82, b"x" * 11, {"max_size": 10}, "over the read limit: the usual path fails with 1009"),
        (0x82, b"x" * 10, {"stream_below": 10}, "streamed"),
        (0x82, b"x" * 65536, {}, "64 KiB or more: the usual path"),
    ],
)
def test_read_message_leaves_every_other_frame_to_the_usual_path(
    first: int, payload: bytes, options: dict[str, int], why: str
) -> None:
    for client in (False, True):
        frame = _frame(first, payload, masked=not client)
        limits = (options.get("max_size"), options.get("stream_below"))
        assert read_message(frame, 0, client, *limits) is None, why
        if read_message_fast is not None:
            assert read_message_fast(frame, 0, client, *limits) is None, why


def test_read_message_refuses_frames_masked_against_the_role() -> None:
    # RFC 6455 §5.1: a server's frames are not masked, a client's are.
    assert read_message(_frame(0x81, b"x", masked=False), 0, False, None, None) is None
    assert read_message(_frame(0x81, b"x", masked=True), 0, True, None, None) is None


_payloads = st.one_of(
    st.binary(max_size=300),
    st.text(max_size=200).map(str.encode),
    st.binary(min_size=500, max_size=70_000),  # past the stack buffer and 64 KiB
)


@settings(max_examples=600, deadline=None)
@given(
    first=st.one_of(st.sampled_from([0x81, 0x82]), st.integers(0, 255)),
    payload=_payloads,
    masked=st.booleans(),
    long_form=st.booleans(),
    client=st.booleans(),
    max_size=st.one_of(st.none(), st.integers(0, 70_000)),
    stream_below=st.one_of(st.none(), st.integers(0, 70_000)),
    lead=st.binary(max_size=3),
    cut=st.integers(0, 20),
    as_bytearray=st.booleans(),
)
def test_the_compiled_message_reader_agrees_with_read_message(
    first: int,
    payload: bytes,
    masked: bool,
    long_form: bool,
    client: bool,
    max_size: int | None,
    stream_below: int | None,
    lead: bytes,
    cut: int,
    as_bytearray: bool,
) -> None:
    data = lead + _frame(first, payload, masked=masked, long_form=long_form)
    for end in (len(data), max(0, len(data) - cut), min(len(data), len(lead) + cut)):
        piece: bytes | bytearray = bytearray(data[:end]) if as_bytearray else data[:end]
        expected = read_message(piece, len(lead), client, max_size, stream_below)
        if read_message_fast is not None:
            assert read_message_fast(piece, len(lead), client, max_size, stream_below) == expected
        if expected is not None:
            # What it takes is exactly the frame parse_frame sees there.
            parsed = parse_frame(piece[len(lead) :])
            assert parsed is not None
            frame, _, size = parsed
            assert expected[1] == len(lead) + size
            assert expected[0] == (
                frame.payload.decode() if frame.opcode is Opcode.TEXT else frame.payload
            )


def test_the_receive_loop_uses_the_compiled_message_reader_when_built() -> None:
    if COMPILED:
        from wsproto_core import _speedups

        assert read_message_fast is _speedups.read_message
        with pytest.raises(ValueError, match="position >= 0"):
            read_message_fast(b"\x81\x00", -1, True, None, None)
        with pytest.raises(TypeError, match="takes buf"):
            read_message_fast(b"\x81\x00", 0)  # type: ignore[call-arg]
    else:
        assert read_message_fast is None
    with pytest.raises(ValueError, match="position >= 0"):
        read_message(b"\x81\x00", -1, True, None, None)
