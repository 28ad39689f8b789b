"""The framing connection: every rule of RFC 6455 §5-§8 it enforces, without sockets."""

from __future__ import annotations

import pytest

from wsproto_core import (
    Close,
    CloseCode,
    CloseSentError,
    Connection,
    ConnectionPair,
    Event,
    Extension,
    LocalProtocolError,
    Message,
    MessageData,
    MessageEnd,
    MessageStart,
    MessageType,
    Opcode,
    Ping,
    Pong,
    ReadLimitError,
    RemoteProtocolError,
    Role,
    State,
)
from wsproto_core.frames import RSV1, RSV2, RSV3, parse_frame, serialize_frame

KEY = b"\x01\x02\x03\x04"


def client_frame(opcode: int, payload: bytes = b"", *, fin: bool = True, rsv: int = 0) -> bytes:
    """A frame as a client sends it: masked."""
    return serialize_frame(opcode, payload, fin=fin, rsv=rsv, mask_key=KEY)


def server_frame(opcode: int, payload: bytes = b"", *, fin: bool = True, rsv: int = 0) -> bytes:
    """A frame as a server sends it: unmasked."""
    return serialize_frame(opcode, payload, fin=fin, rsv=rsv)


def events(conn: Connection) -> list[Event]:
    out = []
    while (event := conn.next_event()) is not None:
        out.append(event)
    return out


def server(**options: object) -> Connection:
    return Connection(Role.SERVER, **options)  # type: ignore[arg-type]


def feed(conn: Connection, *chunks: bytes) -> list[Event]:
    out: list[Event] = []
    for chunk in chunks:
        conn.receive_data(chunk)
        out += events(conn)
    return out


def fails(conn: Connection, data: bytes, code: int) -> RemoteProtocolError:
    """Feed ``data`` and check the connection fails as RFC 6455 §7.1.7 says."""
    conn.receive_data(data)
    with pytest.raises(RemoteProtocolError) as info:
        events(conn)
    assert info.value.code == code
    assert conn.state is State.CLOSED
    assert conn.close_expected()
    sent = conn.data_to_send()
    parsed = parse_frame(sent)
    assert parsed is not None
    frame, masked, _ = parsed
    assert frame.opcode is Opcode.CLOSE
    assert int.from_bytes(frame.payload[:2], "big") == code
    assert masked is (conn.role is Role.CLIENT)
    # Input after the failure is ignored, and no other event or error follows.
    conn.receive_data(client_frame(Opcode.TEXT, b"ignored"))
    assert conn.next_event() is None
    assert conn.data_to_send() == b""
    return info.value


def sent_frames(conn: Connection) -> list[tuple[Opcode, bytes, bool, int, bool]]:
    data = conn.data_to_send()
    frames = []
    pos = 0
    while pos < len(data):
        parsed = parse_frame(data, pos)
        assert parsed is not None
        frame, masked, pos = parsed
        frames.append((frame.opcode, frame.payload, frame.fin, frame.rsv, masked))
    return frames


class TestMasking:
    def test_server_refuses_unmasked_client_frame(self) -> None:
        fails(server(), server_frame(Opcode.TEXT, b"hi"), CloseCode.PROTOCOL_ERROR)

    def test_client_refuses_masked_server_frame(self) -> None:
        fails(Connection(Role.CLIENT), client_frame(Opcode.TEXT, b"hi"), CloseCode.PROTOCOL_ERROR)

    def test_client_masks_every_frame_with_a_fresh_key(self) -> None:
        conn = Connection(Role.CLIENT)
        for _ in range(3):
            conn.send_binary(b"same payload")
        wire = conn.data_to_send()
        keys = set()
        pos = 0
        while pos < len(wire):
            parsed = parse_frame(wire, pos)
            assert parsed is not None
            frame, masked, end = parsed
            assert masked
            assert frame.payload == b"same payload"
            keys.add(wire[pos + 2 : pos + 6])
            pos = end
        assert len(keys) == 3

    def test_masking_keys_come_from_the_random_source(self) -> None:
        calls = []

        def random_bytes(n: int) -> bytes:
            calls.append(n)
            return bytes(range(8)) * (n // 8)

        conn = Connection(Role.CLIENT, random_bytes=random_bytes)
        conn.send_ping()
        conn.send_ping()
        wire = conn.data_to_send()
        assert wire == b"\x89\x80\x00\x01\x02\x03" + b"\x89\x80\x04\x05\x06\x07"
        assert calls == [4096]  # keys are drawn in batches, not one system call each

    def test_server_does_not_mask(self) -> None:
        conn = server()
        conn.send_text("x")
        assert conn.data_to_send() == b"\x81\x01x"


class TestReservedBits:
    @pytest.mark.parametrize("rsv", [RSV1, RSV2, RSV3])
    def test_unclaimed_rsv_on_data_frame(self, rsv: int) -> None:
        fails(server(), client_frame(Opcode.TEXT, b"x", rsv=rsv), CloseCode.PROTOCOL_ERROR)

    @pytest.mark.parametrize("opcode", [Opcode.PING, Opcode.PONG, Opcode.CLOSE])
    def test_rsv_on_control_frame(self, opcode: Opcode) -> None:
        fails(server(), client_frame(opcode, rsv=RSV1), CloseCode.PROTOCOL_ERROR)

    def test_rsv_on_continuation_frame(self) -> None:
        conn = server()
        assert feed(conn, client_frame(Opcode.TEXT, b"a", fin=False)) == []
        fails(conn, client_frame(Opcode.CONTINUATION, b"b", rsv=RSV1), CloseCode.PROTOCOL_ERROR)


class TestFragmentation:
    def test_fragments_assemble(self) -> None:
        conn = server()
        wire = (
            client_frame(Opcode.TEXT, "héllo ".encode()[:2], fin=False)
            + client_frame(Opcode.CONTINUATION, "héllo ".encode()[2:], fin=False)
            + client_frame(Opcode.CONTINUATION, b"world")
        )
        assert feed(conn, wire) == [Message(data="héllo world")]

    def test_control_frames_between_fragments(self) -> None:
        conn = server()
        wire = (
            client_frame(Opcode.BINARY, b"ab", fin=False)
            + client_frame(Opcode.PING, b"p")
            + client_frame(Opcode.PONG, b"q")
            + client_frame(Opcode.CONTINUATION, b"cd")
        )
        assert feed(conn, wire) == [Ping(payload=b"p"), Pong(payload=b"q"), Message(data=b"abcd")]
        assert sent_frames(conn) == [(Opcode.PONG, b"p", True, 0, False)]

    def test_continuation_without_a_message(self) -> None:
        fails(server(), client_frame(Opcode.CONTINUATION, b"x"), CloseCode.PROTOCOL_ERROR)

    @pytest.mark.parametrize("opcode", [Opcode.TEXT, Opcode.BINARY])
    def test_new_message_inside_a_fragmented_one(self, opcode: Opcode) -> None:
        conn = server()
        feed(conn, client_frame(Opcode.TEXT, b"a", fin=False))
        fails(conn, client_frame(opcode, b"b"), CloseCode.PROTOCOL_ERROR)

    def test_empty_fragments_and_messages(self) -> None:
        conn = server()
        wire = (
            client_frame(Opcode.TEXT, b"", fin=False)
            + client_frame(Opcode.CONTINUATION, b"", fin=False)
            + client_frame(Opcode.CONTINUATION, b"")
            + client_frame(Opcode.BINARY, b"")
        )
        assert feed(conn, wire) == [Message(data=""), Message(data=b"")]

    def test_sending_fragments(self) -> None:
        conn = server()
        conn.send_binary(b"a", fin=False)
        conn.send_binary(b"b", fin=False)
        conn.send_ping(b"between")
        conn.send_binary(b"c")
        conn.send_text("next")
        assert sent_frames(conn) == [
            (Opcode.BINARY, b"a", False, 0, False),
            (Opcode.CONTINUATION, b"b", False, 0, False),
            (Opcode.PING, b"between", True, 0, False),
            (Opcode.CONTINUATION, b"c", True, 0, False),
            (Opcode.TEXT, b"next", True, 0, False),
        ]

    def test_switching_type_mid_message_is_refused(self) -> None:
        conn = server()
        conn.send_text("a", fin=False)
        conn.data_to_send()
        with pytest.raises(LocalProtocolError, match="text message is in progress"):
            conn.send_binary(b"b")
        assert conn.data_to_send() == b""
        conn.send_text(b"b")
        assert sent_frames(conn) == [(Opcode.CONTINUATION, b"b", True, 0, False)]


class TestReadLimit:
    def test_announced_length_over_the_limit_fails_before_the_payload(self) -> None:
        conn = server(max_message_size=1000)
        header = client_frame(Opcode.BINARY, bytes(1001))[:8]  # header and mask only
        error = fails(conn, header, CloseCode.MESSAGE_TOO_BIG)
        assert isinstance(error, ReadLimitError)

    def test_huge_length_claim_allocates_nothing(self) -> None:
        conn = server()
        header = bytes([0x82, 0xFF]) + ((1 << 63) - 1).to_bytes(8, "big") + KEY
        fails(conn, header, CloseCode.MESSAGE_TOO_BIG)

    def test_exactly_the_limit_is_accepted(self) -> None:
        conn = server(max_message_size=1000)
        assert feed(conn, client_frame(Opcode.BINARY, bytes(1000))) == [Message(data=bytes(1000))]

    def test_fragments_count_together(self) -> None:
        conn = server(max_message_size=1000)
        feed(conn, client_frame(Opcode.BINARY, bytes(600), fin=False))
        fails(conn, client_frame(Opcode.CONTINUATION, bytes(401)), CloseCode.MESSAGE_TOO_BIG)

    def test_limit_is_per_message(self) -> None:
        conn = server(max_message_size=10)
        wire = client_frame(Opcode.BINARY, bytes(10)) + client_frame(Opcode.BINARY, bytes(10))
        assert feed(conn, wire) == [Message(data=bytes(10))] * 2

    def test_no_limit(self) -> None:
        conn = server(max_message_size=None)
        size = 3 * 1024 * 1024
        assert feed(conn, client_frame(Opcode.BINARY, bytes(size))) == [Message(data=bytes(size))]

    def test_default_limit_is_one_mebibyte(self) -> None:
        conn = server()
        assert conn.max_message_size == 1024 * 1024
        fails(conn, client_frame(Opcode.BINARY, bytes(1024 * 1024 + 1))[:14], 1009)

    def test_limit_applies_when_streaming(self) -> None:
        conn = server(max_message_size=100, stream_messages=True)
        got = feed(conn, client_frame(Opcode.BINARY, bytes(60), fin=False))
        assert got == [MessageStart(message_type=MessageType.BINARY), MessageData(data=bytes(60))]
        fails(conn, client_frame(Opcode.CONTINUATION, bytes(41)), CloseCode.MESSAGE_TOO_BIG)

    def test_limit_can_change_and_must_not_be_negative(self) -> None:
        conn = server()
        conn.max_message_size = 4
        fails(conn, client_frame(Opcode.TEXT, b"12345"), CloseCode.MESSAGE_TOO_BIG)
        with pytest.raises(LocalProtocolError):
            conn.max_message_size = -1


class TestUtf8:
    def test_invalid_single_frame(self) -> None:
        fails(server(), client_frame(Opcode.TEXT, b"\xff"), CloseCode.INVALID_FRAME_PAYLOAD_DATA)

    def test_fails_fast_in_the_first_fragment(self) -> None:
        conn = server()
        # The bad byte is in the first fragment: fail now, without waiting for the rest.
        fails(
            conn,
            client_frame(Opcode.TEXT, b"ok \xed\xa0", fin=False),
            CloseCode.INVALID_FRAME_PAYLOAD_DATA,
        )

    def test_fails_fast_inside_a_partial_frame(self) -> None:
        conn = server()
        wire = client_frame(Opcode.TEXT, b"abc\xc0\xafdef" + bytes(1000))
        # Only the first 20 bytes of a 1 KB frame have arrived.
        fails(conn, wire[:20], CloseCode.INVALID_FRAME_PAYLOAD_DATA)

    @pytest.mark.parametrize("stream", [False, True])
    def test_message_ending_inside_a_character(self, stream: bool) -> None:
        conn = server(stream_messages=stream)
        feed(conn, client_frame(Opcode.TEXT, b"\xe2\x82", fin=False))
        fails(conn, client_frame(Opcode.CONTINUATION, b""), CloseCode.INVALID_FRAME_PAYLOAD_DATA)

    def test_character_split_across_fragments_is_fine(self) -> None:
        conn = server()
        euro = "€".encode()
        wire = (
            client_frame(Opcode.TEXT, euro[:1], fin=False)
            + client_frame(Opcode.CONTINUATION, euro[1:2], fin=False)
            + client_frame(Opcode.CONTINUATION, euro[2:])
        )
        assert feed(conn, wire) == [Message(data="€")]

    def test_binary_is_not_validated(self) -> None:
        assert feed(server(), client_frame(Opcode.BINARY, b"\xff")) == [Message(data=b"\xff")]

    def test_streamed_text_is_validated(self) -> None:
        conn = server(stream_messages=True)
        feed(conn, client_frame(Opcode.TEXT, b"fine", fin=False))
        fails(
            conn, client_frame(Opcode.CONTINUATION, b"\xf5"), CloseCode.INVALID_FRAME_PAYLOAD_DATA
        )


class TestBufferedInput:
    def test_counts_what_was_received_and_not_parsed(self) -> None:
        conn = server()
        assert conn.buffered_input == 0
        wire = client_frame(Opcode.TEXT, b"one") + client_frame(Opcode.TEXT, b"two")
        conn.receive_data(wire + b"\x81")  # and the first byte of a third frame
        assert conn.buffered_input == len(wire) + 1
        assert conn.next_event() == Message(data="one")
        assert conn.buffered_input == len(wire) // 2 + 1
        assert conn.next_event() == Message(data="two")
        assert conn.next_event() is None
        assert conn.buffered_input == 1


class TestHasDataToSend:
    def test_says_whether_data_to_send_has_bytes(self) -> None:
        conn = server()
        assert not conn.has_data_to_send
        conn.send_text("hi")
        assert conn.has_data_to_send
        assert conn.data_to_send()
        assert not conn.has_data_to_send

    def test_sees_the_pong_that_reading_a_ping_queued(self) -> None:
        conn = server()
        feed(conn, client_frame(Opcode.PING, b"p"))
        assert conn.has_data_to_send
        assert conn.data_to_send() == b"\x8a\x01p"
        assert not conn.has_data_to_send


class TestStreaming:
    def test_event_order(self) -> None:
        conn = server(stream_messages=True)
        wire = (
            client_frame(Opcode.TEXT, b"ab", fin=False)
            + client_frame(Opcode.PING, b"")
            + client_frame(Opcode.CONTINUATION, b"", fin=False)
            + client_frame(Opcode.CONTINUATION, b"cd")
            + client_frame(Opcode.BINARY, b"")
        )
        assert feed(conn, wire) == [
            MessageStart(message_type=MessageType.TEXT),
            MessageData(data=b"ab"),
            Ping(payload=b""),
            MessageData(data=b"cd"),
            MessageEnd(),
            MessageStart(message_type=MessageType.BINARY),
            MessageEnd(),
        ]

    def test_partial_frames_are_delivered_as_they_arrive(self) -> None:
        # A frame announcing 1 GB: the core hands out each piece and keeps none.
        conn = server(stream_messages=True, max_message_size=None)
        size = 1 << 30
        header = bytes([0x82, 0xFF]) + size.to_bytes(8, "big") + b"\x00\x00\x00\x00"
        assert feed(conn, header) == [MessageStart(message_type=MessageType.BINARY)]
        piece = bytes(range(256)) * 256
        for _ in range(16):
            assert feed(conn, piece) == [MessageData(data=piece)]

    def test_small_whole_messages_come_whole_below_stream_min_size(self) -> None:
        conn = server(stream_messages=True)
        conn.stream_min_size = 4
        got = feed(
            conn,
            client_frame(Opcode.TEXT, "hé".encode()),  # 3 bytes, here whole: one event
            client_frame(Opcode.BINARY, b"four"),  # not below 4: streamed
            client_frame(Opcode.TEXT, b"ab", fin=False),  # fragmented: streamed
            client_frame(Opcode.CONTINUATION, b"c"),
        )
        assert got == [
            Message(data="hé"),
            MessageStart(message_type=MessageType.BINARY),
            MessageData(data=b"four"),
            MessageEnd(),
            MessageStart(message_type=MessageType.TEXT),
            MessageData(data=b"ab"),
            MessageData(data=b"c"),
            MessageEnd(),
        ]

    def test_a_small_message_still_arriving_is_streamed(self) -> None:
        conn = server(stream_messages=True)
        conn.stream_min_size = 100
        wire = client_frame(Opcode.BINARY, b"x" * 10)
        assert feed(conn, wire[:-3]) == [
            MessageStart(message_type=MessageType.BINARY),
            MessageData(data=b"x" * 7),
        ]
        assert feed(conn, wire[-3:]) == [MessageData(data=b"xxx"), MessageEnd()]

    def test_toggle_takes_effect_at_the_next_message(self) -> None:
        conn = server()
        assert feed(conn, client_frame(Opcode.TEXT, b"a", fin=False)) == []
        conn.stream_messages = True
        got = feed(conn, client_frame(Opcode.CONTINUATION, b"b"), client_frame(Opcode.TEXT, b"c"))
        assert got == [
            Message(data="ab"),
            MessageStart(message_type=MessageType.TEXT),
            MessageData(data=b"c"),
            MessageEnd(),
        ]


class TestPing:
    def test_auto_pong(self) -> None:
        conn = server()
        assert feed(conn, client_frame(Opcode.PING, b"echo me")) == [Ping(payload=b"echo me")]
        assert sent_frames(conn) == [(Opcode.PONG, b"echo me", True, 0, False)]

    def test_auto_pong_off(self) -> None:
        conn = server(auto_pong=False)
        assert feed(conn, client_frame(Opcode.PING, b"x")) == [Ping(payload=b"x")]
        assert conn.data_to_send() == b""
        conn.send_pong(b"x")
        assert sent_frames(conn) == [(Opcode.PONG, b"x", True, 0, False)]

    def test_no_pong_after_close_sent(self) -> None:
        conn = server()
        conn.send_close()
        conn.data_to_send()
        assert feed(conn, client_frame(Opcode.PING, b"x")) == [Ping(payload=b"x")]
        assert conn.data_to_send() == b""

    def test_pong_is_an_event(self) -> None:
        assert feed(server(), client_frame(Opcode.PONG, b"hb")) == [Pong(payload=b"hb")]

    def test_control_payload_limit(self) -> None:
        conn = server()
        with pytest.raises(LocalProtocolError, match="125"):
            conn.send_ping(bytes(126))
        with pytest.raises(LocalProtocolError, match="125"):
            conn.send_pong(bytes(126))
        assert conn.data_to_send() == b""
        conn.send_ping(bytes(125))
        assert sent_frames(conn) == [(Opcode.PING, bytes(125), True, 0, False)]


class TestClosingHandshake:
    def test_peer_closes_first(self) -> None:
        conn = server()
        assert feed(conn, client_frame(Opcode.CLOSE, b"\x03\xe9going")) == [
            Close(code=1001, reason="going")
        ]
        # The echo carries the same code (RFC 6455 §5.5.1).
        assert sent_frames(conn) == [(Opcode.CLOSE, b"\x03\xe9", True, 0, False)]
        assert conn.state is State.CLOSED
        assert conn.close_received == Close(code=1001, reason="going")
        assert conn.close_sent == Close(code=1001)
        assert conn.close_expected()  # the server closes the TCP connection first

    def test_client_waits_for_the_server_to_close_tcp(self) -> None:
        conn = Connection(Role.CLIENT)
        assert feed(conn, server_frame(Opcode.CLOSE, b"\x03\xe8")) == [Close(code=1000)]
        assert conn.state is State.CLOSED
        assert not conn.close_expected()
        conn.receive_eof()
        assert conn.next_event() is None
        assert conn.close_expected()

    def test_close_without_code(self) -> None:
        conn = server()
        assert feed(conn, client_frame(Opcode.CLOSE)) == [Close(code=CloseCode.NO_STATUS_RCVD)]
        assert sent_frames(conn) == [(Opcode.CLOSE, b"", True, 0, False)]

    def test_we_close_first(self) -> None:
        conn = server()
        conn.send_close(4000, "done")
        assert sent_frames(conn) == [(Opcode.CLOSE, b"\x0f\xa0done", True, 0, False)]
        assert conn.state is State.CLOSING
        assert conn.close_sent == Close(code=4000, reason="done")
        assert not conn.close_expected()
        # The peer may still be sending; its messages are delivered.
        got = feed(
            conn, client_frame(Opcode.TEXT, b"late"), client_frame(Opcode.CLOSE, b"\x0f\xa0")
        )
        assert got == [Message(data="late"), Close(code=4000)]
        assert conn.state is State.CLOSED
        assert conn.data_to_send() == b""  # no second Close
        assert conn.close_expected()

    def test_send_close_without_code(self) -> None:
        conn = server()
        conn.send_close(None)
        assert sent_frames(conn) == [(Opcode.CLOSE, b"", True, 0, False)]
        assert conn.close_sent == Close(code=CloseCode.NO_STATUS_RCVD)

    @pytest.mark.parametrize(
        ("payload", "code"),
        [
            (b"\x03", CloseCode.PROTOCOL_ERROR),
            (b"\x03\xec", CloseCode.PROTOCOL_ERROR),  # 1004, reserved
            (b"\x03\xed", CloseCode.PROTOCOL_ERROR),  # 1005 may not be sent
            (b"\x00\x00", CloseCode.PROTOCOL_ERROR),
            (b"\x03\xe8\xc3", CloseCode.INVALID_FRAME_PAYLOAD_DATA),
        ],
    )
    def test_invalid_close_frames(self, payload: bytes, code: int) -> None:
        fails(server(), client_frame(Opcode.CLOSE, payload), code)

    def test_input_after_close_is_discarded(self) -> None:
        conn = server()
        wire = client_frame(Opcode.CLOSE, b"\x03\xe8") + client_frame(Opcode.TEXT, b"after")
        assert feed(conn, wire) == [Close(code=1000)]
        assert feed(conn, client_frame(Opcode.TEXT, b"later")) == []

    def test_sending_after_close(self) -> None:
        conn = server()
        conn.send_close()
        conn.data_to_send()
        for send in (
            lambda: conn.send_text("x"),
            lambda: conn.send_binary(b"x"),
            lambda: conn.send_ping(),
            lambda: conn.send_pong(),
            lambda: conn.send_close(),
        ):
            with pytest.raises(CloseSentError):
                send()
        assert conn.data_to_send() == b""
        assert conn.state is State.CLOSING

    def test_sending_after_the_peer_closed(self) -> None:
        conn = server()
        feed(conn, client_frame(Opcode.CLOSE))
        with pytest.raises(CloseSentError):
            conn.send_text("x")

    def test_invalid_local_close_changes_nothing(self) -> None:
        conn = server()
        for code, reason in ((1006, ""), (999, ""), (1000, "x" * 124)):
            with pytest.raises(LocalProtocolError):
                conn.send_close(code, reason)
        assert conn.state is State.OPEN
        assert conn.close_sent is None
        assert conn.data_to_send() == b""


class TestEndOfStream:
    def test_eof_without_close_is_1006(self) -> None:
        conn = server()
        feed(conn, client_frame(Opcode.TEXT, b"abc", fin=False))
        conn.receive_eof()
        assert events(conn) == [Close(code=CloseCode.ABNORMAL_CLOSURE)]
        assert conn.state is State.CLOSED
        assert conn.close_expected()
        assert conn.data_to_send() == b""  # nobody to send a Close to

    def test_eof_inside_a_frame(self) -> None:
        conn = Connection(Role.CLIENT)
        feed(conn, server_frame(Opcode.BINARY, bytes(100))[:50])
        conn.receive_eof()
        assert events(conn) == [Close(code=CloseCode.ABNORMAL_CLOSURE)]

    @pytest.mark.parametrize("cut", [1, 5, 7])  # in the header, in the key, in the payload
    def test_eof_inside_a_control_frame(self, cut: int) -> None:
        conn = server()
        assert feed(conn, client_frame(Opcode.PING, b"abc")[:cut]) == []
        conn.receive_eof()
        assert events(conn) == [Close(code=CloseCode.ABNORMAL_CLOSURE)]

    def test_eof_while_closing(self) -> None:
        conn = server()
        conn.send_close()
        conn.receive_eof()
        assert events(conn) == [Close(code=CloseCode.ABNORMAL_CLOSURE)]
        assert conn.close_received == Close(code=CloseCode.ABNORMAL_CLOSURE)

    def test_frames_before_eof_are_delivered(self) -> None:
        conn = server()
        conn.receive_data(client_frame(Opcode.TEXT, b"last words"))
        conn.receive_eof()
        assert events(conn) == [Message(data="last words"), Close(code=1006)]

    def test_data_after_eof_is_a_local_error(self) -> None:
        conn = server()
        conn.receive_eof()
        conn.receive_eof()  # idempotent
        with pytest.raises(LocalProtocolError):
            conn.receive_data(b"x")


class TestSending:
    def test_text_from_str_and_bytes(self) -> None:
        conn = server()
        conn.send_text("é")
        conn.send_text("é".encode())
        conn.send_text(bytearray(b"ok"))
        assert sent_frames(conn) == [
            (Opcode.TEXT, "é".encode(), True, 0, False),
            (Opcode.TEXT, "é".encode(), True, 0, False),
            (Opcode.TEXT, b"ok", True, 0, False),
        ]

    def test_binary_from_buffers(self) -> None:
        conn = server()
        conn.send_binary(memoryview(b"abc")[1:])
        assert sent_frames(conn) == [(Opcode.BINARY, b"bc", True, 0, False)]

    @pytest.mark.parametrize(
        ("message_type", "data", "frame"),
        [
            (MessageType.TEXT, "t", (Opcode.TEXT, b"t")),
            (MessageType.BINARY, b"b", (Opcode.BINARY, b"b")),
            (MessageType.PING, b"p", (Opcode.PING, b"p")),
            (MessageType.PONG, b"q", (Opcode.PONG, b"q")),
            (MessageType.CLOSE, b"\x03\xe8bye", (Opcode.CLOSE, b"\x03\xe8bye")),
            (MessageType.CLOSE, b"", (Opcode.CLOSE, b"")),
            (8, b"", (Opcode.CLOSE, b"")),
        ],
    )
    def test_send_message(
        self, message_type: int, data: bytes | str, frame: tuple[Opcode, bytes]
    ) -> None:
        conn = server()
        conn.send_message(message_type, data)
        assert sent_frames(conn) == [(*frame, True, 0, False)]

    def test_send_message_refuses_bad_input(self) -> None:
        conn = server()
        with pytest.raises(LocalProtocolError, match="message type"):
            conn.send_message(3, b"")
        with pytest.raises(LocalProtocolError, match="invalid Close payload"):
            conn.send_message(MessageType.CLOSE, b"\x03")
        assert conn.data_to_send() == b""
        assert conn.state is State.OPEN

    def test_a_bad_close_payload_is_refused_before_the_state_is_looked_at(self) -> None:
        # Found by fuzz_connection: a Close payload over a control frame's 125
        # bytes raised CloseSentError once closing, where every other bad
        # payload raises LocalProtocolError whatever the state.
        conn = server()
        conn.send_close()
        too_long = b"\x03\xe8" + b"r" * 124
        for payload in (b"\x03", b"\x03\xe8\xff", too_long):
            with pytest.raises(LocalProtocolError) as info:
                conn.send_message(MessageType.CLOSE, payload)
            assert type(info.value) is LocalProtocolError, info.value
        with pytest.raises(CloseSentError):
            conn.send_message(MessageType.CLOSE, b"\x03\xe8")
        open_conn = server()
        with pytest.raises(LocalProtocolError, match="at most 125 bytes"):
            open_conn.send_message(MessageType.CLOSE, too_long)
        assert open_conn.state is State.OPEN

    def test_data_to_send_empties_the_queue(self) -> None:
        conn = server()
        assert conn.data_to_send() == b""
        conn.send_text("a")
        conn.send_text("b")
        assert conn.data_to_send() == b"\x81\x01a\x81\x01b"
        assert conn.data_to_send() == b""


class XorExtension(Extension):
    """A toy extension claiming RSV2: XOR every payload byte with 0x55."""

    name = "x-xor"
    rsv = RSV2

    def decode(
        self, data: bytes, *, rsv: int, fin: bool, text: bool, max_size: int | None
    ) -> bytes:
        return bytes(b ^ 0x55 for b in data)

    def encode(self, data: bytes, *, first: bool, fin: bool) -> tuple[bytes, int]:
        return bytes(b ^ 0x55 for b in data), RSV2


class BrokenExtension(XorExtension):
    def decode(
        self, data: bytes, *, rsv: int, fin: bool, text: bool, max_size: int | None
    ) -> bytes:
        raise ValueError("bug")


class StrictExtension(Extension):
    """A toy extension claiming RSV3 that refuses any payload starting with '!'."""

    name = "x-strict"
    rsv = RSV3

    def decode(
        self, data: bytes, *, rsv: int, fin: bool, text: bool, max_size: int | None
    ) -> bytes:
        if data.startswith(b"!"):
            raise RemoteProtocolError(CloseCode.POLICY_VIOLATION, "refused")
        return data.upper()

    def encode(self, data: bytes, *, first: bool, fin: bool) -> tuple[bytes, int]:
        return data, 0


class TestExtensions:
    def test_claimed_rsv_bit_is_accepted_and_decoded(self) -> None:
        conn = server(extensions=[XorExtension()])
        payload = bytes(b ^ 0x55 for b in b"secret")
        wire = client_frame(Opcode.BINARY, payload[:3], fin=False, rsv=RSV2) + client_frame(
            Opcode.CONTINUATION, payload[3:]
        )
        assert feed(conn, wire) == [Message(data=b"secret")]
        # Messages without the bit pass through untouched; other bits are still refused.
        assert feed(conn, client_frame(Opcode.BINARY, b"plain")) == [Message(data=b"plain")]
        fails(conn, client_frame(Opcode.BINARY, b"x", rsv=RSV1), CloseCode.PROTOCOL_ERROR)

    def test_encode_sets_rsv_on_the_first_frame_only(self) -> None:
        conn = server(extensions=[XorExtension()])
        conn.send_binary(b"ab", fin=False)
        conn.send_binary(b"cd")
        assert sent_frames(conn) == [
            (Opcode.BINARY, bytes([0x61 ^ 0x55, 0x62 ^ 0x55]), False, RSV2, False),
            (Opcode.CONTINUATION, bytes([0x63 ^ 0x55, 0x64 ^ 0x55]), True, 0, False),
        ]

    def test_read_limit_is_on_decoded_size(self) -> None:
        conn = server(extensions=[XorExtension()], max_message_size=4)
        fails(conn, client_frame(Opcode.BINARY, bytes(5), rsv=RSV2), CloseCode.MESSAGE_TOO_BIG)

    def test_a_crashing_extension_fails_with_1011(self) -> None:
        conn = server(extensions=[BrokenExtension()])
        error = fails(conn, client_frame(Opcode.BINARY, b"x", rsv=RSV2), CloseCode.INTERNAL_ERROR)
        assert isinstance(error.__cause__, ValueError)
        assert error.reason == "internal error"

    def test_each_extension_sees_only_messages_with_its_bits(self) -> None:
        conn = server(extensions=[XorExtension(), StrictExtension()])
        xored = bytes(b ^ 0x55 for b in b"abc")
        got = feed(
            conn,
            client_frame(Opcode.BINARY, xored, rsv=RSV2),
            client_frame(Opcode.BINARY, b"abc", rsv=RSV3),
            client_frame(Opcode.BINARY, b"xyz", rsv=RSV2 | RSV3),
        )
        # Decoding runs in reverse order of negotiation: x-strict, then x-xor.
        both = bytes(b ^ 0x55 for b in b"XYZ")
        assert got == [Message(data=b"abc"), Message(data=b"ABC"), Message(data=both)]

    def test_an_extension_may_fail_the_connection(self) -> None:
        conn = server(extensions=[StrictExtension()])
        error = fails(conn, client_frame(Opcode.TEXT, b"!x", rsv=RSV3), CloseCode.POLICY_VIOLATION)
        assert error.reason == "refused"

    def test_two_extensions_may_not_claim_one_bit(self) -> None:
        with pytest.raises(LocalProtocolError, match="RSV"):
            server(extensions=[XorExtension(), XorExtension()])


class StretchExtension(Extension):
    """A toy extension that expands: each byte comes out ``factor`` times.

    Like a decompressor, it returns at most ``bound`` bytes at once (and at
    most ``max_size + 1``) and keeps the rest for ``decode_more()``. It notes
    every call, and every breach of the Extension contract by the connection.
    """

    name = "x-stretch"

    def __init__(self, rsv: int, factor: int, bound: int) -> None:
        self.rsv = rsv
        self.factor = factor
        self.bound = bound
        self._held = b""
        self._fin = False
        self.calls: list[tuple[str, int, bool]] = []  # (method, input size, fin)
        self.produced = 0
        self.breaches: list[str] = []

    @property
    def decode_pending(self) -> bool:
        return bool(self._held)

    def _out(self, max_size: int | None) -> bytes:
        size = self.bound if max_size is None else min(self.bound, max_size + 1)
        out, self._held = self._held[:size], self._held[size:]
        self.produced += len(out)
        return out

    def decode(
        self, data: bytes, *, rsv: int, fin: bool, text: bool, max_size: int | None
    ) -> bytes:
        self.calls.append(("decode", len(data), fin))
        if self._held:
            self.breaches.append("decode() while output was held back")
        self._held = bytes(b for b in data for _ in range(self.factor))
        self._fin = fin
        return self._out(max_size)

    def decode_more(self, *, max_size: int | None) -> bytes:
        self.calls.append(("decode_more", 0, self._fin))
        if not self._held:
            self.breaches.append("decode_more() with nothing held back")
        return self._out(max_size)

    def encode(self, data: bytes, *, first: bool, fin: bool) -> tuple[bytes, int]:
        raise NotImplementedError  # receiving only


def stretched(data: bytes, factor: int) -> bytes:
    return bytes(b for b in data for _ in range(factor))


class TestExtensionsHoldingBackOutput:
    """Extensions may return part of a piece's output and the rest on demand."""

    def test_the_defaults_hold_nothing_back(self) -> None:
        xor = XorExtension()
        assert not xor.decode_pending
        assert xor.decode_more(max_size=None) == b""

    @pytest.mark.parametrize("stream", [True, False], ids=["stream_messages", "whole"])
    def test_pieces_are_pulled_through_every_extension_in_order(self, stream: bool) -> None:
        # Negotiated [outer, inner]: inner decodes first and feeds outer. Both
        # hold back, so the connection drains outer, then pulls more of inner.
        outer = StretchExtension(RSV2, 3, bound=5)
        inner = StretchExtension(RSV3, 2, bound=7)
        conn = server(extensions=[outer, inner], stream_messages=stream)
        wire = client_frame(Opcode.BINARY, b"abc", fin=False, rsv=RSV2 | RSV3)
        wire += client_frame(Opcode.CONTINUATION, b"") + client_frame(Opcode.PING, b"p")
        got = feed(conn, wire)
        data = stretched(b"abc", 6)
        if stream:
            assert got[0] == MessageStart(message_type=MessageType.BINARY)
            pieces = [e.data for e in got if isinstance(e, MessageData)]
            assert b"".join(pieces) == data
            assert max(map(len, pieces)) == 5
            assert got[-2:] == [MessageEnd(), Ping(payload=b"p")]
        else:
            assert got == [Message(data=data), Ping(payload=b"p")]
        assert (outer.breaches, inner.breaches) == ([], [])
        # Each saw its input end once, as its last call: inner with the empty
        # last frame, outer after all of inner's output.
        assert [call for call in inner.calls if call[2]] == [("decode", 0, True)]
        assert outer.calls[-1] == ("decode", 0, True)
        assert [call[2] for call in outer.calls].count(True) == 1

    def test_an_extension_after_one_that_holds_back(self) -> None:
        # Only the first to decode holds back; the next one transforms each piece.
        conn = server(extensions=[XorExtension(), StretchExtension(RSV3, 4, bound=3)])
        conn.stream_messages = True
        payload = bytes(b ^ 0x55 for b in b"xyz")
        got = feed(conn, client_frame(Opcode.TEXT, payload, rsv=RSV2 | RSV3))
        pieces = [e.data for e in got if isinstance(e, MessageData)]
        assert b"".join(pieces) == stretched(b"xyz", 4)
        assert [len(piece) for piece in pieces] == [3, 3, 3, 3]
        assert got[-1] == MessageEnd()

    @pytest.mark.parametrize("stream", [True, False], ids=["stream_messages", "whole"])
    def test_the_read_limit_counts_what_comes_out(self, stream: bool) -> None:
        stretch = StretchExtension(RSV3, 10, bound=4)
        conn = server(extensions=[stretch], max_message_size=25, stream_messages=stream)
        conn.receive_data(client_frame(Opcode.BINARY, b"abc", rsv=RSV3))  # 30 bytes out
        with pytest.raises(ReadLimitError):
            events(conn)
        # Asked for no more than the room left under the limit, plus one.
        assert stretch.produced == 26
        assert stretch.breaches == []

    def test_a_failure_while_holding_back_ends_the_message(self) -> None:
        stretch = StretchExtension(RSV3, 2, bound=1)
        conn = server(extensions=[stretch], stream_messages=True)
        conn.receive_data(client_frame(Opcode.TEXT, b"\xe2\x82", rsv=RSV3))  # e2 e2 82 82
        assert conn.next_event() == MessageStart(message_type=MessageType.TEXT)
        assert conn.next_event() == MessageData(data=b"\xe2")
        with pytest.raises(RemoteProtocolError) as info:
            conn.next_event()  # the second e2 cannot follow the first
        assert info.value.code == CloseCode.INVALID_FRAME_PAYLOAD_DATA
        assert conn.next_event() is None  # nothing held back comes out


class TestPair:
    @pytest.mark.parametrize("size", [0, 1, 125, 126, 127, 65535, 65536])
    def test_sizes_both_ways(self, size: int) -> None:
        pair = ConnectionPair.open()
        payload = bytes(i % 256 for i in range(size))
        pair.client.send_binary(payload)
        pair.server.send_binary(payload)
        assert pair.transfer() == ([Message(data=payload)], [Message(data=payload)])

    def test_properties(self) -> None:
        pair = ConnectionPair.open()
        assert pair.client.role is Role.CLIENT
        assert pair.server.role is Role.SERVER
        assert pair.client.state is pair.server.state is State.OPEN
        assert Message(data="x").message_type is MessageType.TEXT
        assert Message(data=b"x").message_type is MessageType.BINARY


def test_message_repr_is_short() -> None:
    assert repr(Message(data="hi")) == "Message(data='hi')"
    assert repr(Message(data=bytes(1000))).endswith("... (1000 bytes))")
    assert repr(Message(data="é" * 100)).endswith("... (100 chars))")
    assert repr(MessageData(data=bytes(100))).endswith("... (100 bytes))")


class TestErrorPrecedence:
    """The close code must not depend on how the peer's bytes were split into reads."""

    @pytest.mark.parametrize("stream", [False, True])
    @pytest.mark.parametrize("split", [12, 3, 1])
    def test_invalid_utf8_within_the_limit_wins_over_the_limit(
        self, stream: bool, split: int
    ) -> None:
        conn = server(extensions=[XorExtension()], max_message_size=8, stream_messages=stream)
        payload = bytes(b ^ 0x55 for b in b"ab\xffcdefghijkl")  # bad 3rd byte; 12 bytes > 8
        wire = client_frame(Opcode.TEXT, payload, rsv=RSV2)
        reads = [wire[:6]] + [wire[i : i + split] for i in range(6, len(wire), split)]

        def feed_reads() -> None:
            for data in reads:
                conn.receive_data(data)
                events(conn)

        with pytest.raises(RemoteProtocolError) as info:
            feed_reads()
        assert info.value.code == CloseCode.INVALID_FRAME_PAYLOAD_DATA

    def test_valid_text_over_the_limit_is_1009(self) -> None:
        conn = server(extensions=[XorExtension()], max_message_size=8)
        payload = bytes(b ^ 0x55 for b in "ab€defghijkl".encode())
        fails(conn, client_frame(Opcode.TEXT, payload, rsv=RSV2), CloseCode.MESSAGE_TOO_BIG)
