"""Fuzz target: two open cores talking to each other, driven by a program.

``ConnectionPair.open()`` joins a client and a server core; the input is a
program of operations on either side (send text, binary, ping, pong, close or
any message type, with random data and FIN flags, toggle streaming, transfer).
A model of both peers predicts every outcome, and the target checks:

* every call the model deems valid succeeds; every misuse raises
  ``LocalProtocolError`` (``CloseSentError`` once a Close was sent or
  received) and changes nothing: the state, ``close_sent`` and the bytes
  queued are as before;
* ``transfer()`` never raises: two correct cores never fail each other;
* what one side sent arrives at the other as equal events, in order, with
  the Pongs and the Close echo the RFC asks for, and streamed messages when
  (and only when) the receiver streams them;
* on the wire, client frames are masked and server frames are not, lengths
  use the shortest encoding, and each frame is the one the model expects;
* the states follow the closing handshake, and ``close_expected()`` agrees.

Input layout: the first operation's byte is the last byte of the input
(``FuzzedDataProvider`` reads integers from the end); payloads are read from
the front. :func:`encode` builds an input from operations, for seeds.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import partial

import atheris

with atheris.instrument_imports(include=["wsproto_core"]):
    from _harness import ClientFlip, Item, ServerFlip, fixed_random, flip, parse_wire
    from wsproto_core import (
        ClientConnection,
        Close,
        CloseSentError,
        Connection,
        ConnectionPair,
        Event,
        Frame,
        LocalProtocolError,
        Message,
        MessageData,
        MessageEnd,
        MessageStart,
        MessageType,
        Opcode,
        Ping,
        Pong,
        ServerConnection,
        State,
    )
    from wsproto_core.frames import RSV1

TRANSFER, TEXT, BINARY, PING, PONG, CLOSE, MESSAGE, STREAM = range(8)
CLIENT, SERVER = 0, 1

#: Close codes to try: valid, reserved, wire-forbidden (1005, 1006, 1015), out of range.
CLOSE_CODES: tuple[int | None, ...] = (None, 1000, 1001, 1002, 1003, 1004, 1005, 1006)
CLOSE_CODES += (1007, 1011, 1014, 1015, 1016, 2999, 3000, 4999, 5000, 0, 65535)
#: Message types for send_message(): the five valid ones among others.
MESSAGE_TYPES = 12
#: Keep messages well under the default read limit (1 MiB).
MAX_MESSAGE = 200_000
MAX_OPS = 200
_WIRE_CODES = frozenset({1000, 1001, 1002, 1003, 1007, 1008, 1009, 1010, 1011, 1012, 1013, 1014})


def _valid_close_code(code: int) -> bool:
    # RFC 6455 §7.4, written out again rather than trusting is_valid_close_code().
    return code in _WIRE_CODES or 3000 <= code <= 4999


# -- the program -------------------------------------------------------------------------


@dataclass(frozen=True)
class Op:
    """One operation.

    Op byte: bit 0 the side, bits 1-3 :attr:`kind`, bit 4 *not* FIN, bit 5 a big
    payload, bit 6 pass ``str`` rather than ``bytes``. Then, as each kind needs
    them: the close code or message type index, the payload length (its bytes
    come from the front of the input), the repeat count of a big payload.
    """

    kind: int
    side: int = CLIENT
    data: bytes = b""
    fin: bool = True
    repeat: int | None = None  # big payload: data repeated 1 + 300 * repeat times
    as_str: bool = False
    arg: int = 0  # index into CLOSE_CODES, or the message type


def decode(data: bytes) -> tuple[int, list[Op]]:
    """Read the options byte and the program from a fuzz input."""
    fdp = atheris.FuzzedDataProvider(data)

    def byte() -> int:
        return int(fdp.ConsumeIntInRange(0, 255))

    options = byte()
    ops: list[Op] = []
    while fdp.remaining_bytes() and len(ops) < MAX_OPS:
        code = byte()
        kind = (code >> 1) & 7
        side = code & 1
        if kind in (TRANSFER, STREAM):
            ops.append(Op(kind, side))
            continue
        arg = byte() if kind in (CLOSE, MESSAGE) else 0
        payload = fdp.ConsumeBytes(byte())
        data_kind = kind in (TEXT, BINARY)
        repeat = byte() if data_kind and code & 0x20 else None
        fin = not (data_kind and code & 0x10)
        as_str = bool(code & 0x40) and kind in (TEXT, MESSAGE)
        ops.append(Op(kind, side, payload, fin, repeat, as_str, arg))
    return options, ops


def encode(options: int, ops: list[Op]) -> bytes:
    """Build the fuzz input that :func:`decode` reads as ``(options, ops)``."""
    front = bytearray()
    ints = [options]
    for op in ops:
        ints.append(
            op.side
            | op.kind << 1
            | (not op.fin) << 4
            | (op.repeat is not None) << 5
            | op.as_str << 6
        )
        if op.kind in (TRANSFER, STREAM):
            continue
        if op.kind in (CLOSE, MESSAGE):
            ints.append(op.arg)
        ints.append(len(op.data))
        front += op.data
        if op.repeat is not None:
            ints.append(op.repeat)
    data = bytes(front) + bytes(reversed(ints))
    assert decode(data) == (options, ops), "not a canonical program"
    return data


# -- the model ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Sent:
    """What a queued frame means to its receiver."""

    kind: str  # "data", "ping", "pong" or "close"
    payload: bytes = b""  # a data frame's piece (UTF-8 for text), a ping's or pong's payload
    opcode: Opcode = Opcode.BINARY  # the type of the message a data frame belongs to
    fin: bool = True
    code: int = 1005
    reason: str = ""


@dataclass
class Peer:
    """One side: its core, and what the model knows it must do."""

    conn: Connection
    name: str
    extension: bool
    sent_close: bool = False
    received_close: bool = False
    sending: Opcode | None = None  # the fragmented message we are sending
    sending_size: int = 0
    #: Frames queued for the other side: as on the wire, and what they mean.
    queue: list[tuple[Frame, Sent]] = field(default_factory=list)
    #: Frames sent during the current transfer, to check the wire against.
    flushed: list[Frame] = field(default_factory=list)
    #: The message being received: its type, delivery mode, and pieces.
    incoming: tuple[Opcode, str, list[bytes]] | None = None
    #: The streamed message being observed: its type and pieces.
    observed: tuple[MessageType, list[bytes]] | None = None
    wire_pos: int = 0

    @property
    def state(self) -> State:
        if self.received_close:
            return State.CLOSED
        return State.CLOSING if self.sent_close else State.OPEN

    def queue_close(self, code: int | None, reason: str) -> None:
        code = 1005 if code is None else code
        payload = b"" if code == 1005 else code.to_bytes(2, "big") + reason.encode()
        self.queue.append((Frame(Opcode.CLOSE, payload), Sent("close", code=code, reason=reason)))
        self.sent_close = True

    def deliver(self, sent: Sent, events: list[Item]) -> None:
        """Receive one frame the other side sent, as the core must."""
        if self.received_close:
            return  # "the endpoint [...] discards" what follows a Close (RFC 6455 §1.4)
        if sent.kind == "data":
            if self.incoming is None:
                mode = "stream" if self.conn.stream_messages else "whole"
                self.incoming = (sent.opcode, mode, [])
            self.incoming[2].append(sent.payload)
            if sent.fin:
                opcode, mode, pieces = self.incoming
                self.incoming = None
                data = b"".join(pieces)
                events.append(("message", mode, data.decode() if opcode is Opcode.TEXT else data))
        elif sent.kind == "ping":
            events.append(("ping", sent.payload))
            # "Upon receipt of a Ping frame, an endpoint MUST send a Pong frame
            # in response, unless it already received a Close frame" -- §5.5.2;
            # the core also stops answering once it sent its own Close.
            if self.conn.auto_pong and not self.sent_close:
                self.queue.append((Frame(Opcode.PONG, sent.payload), Sent("pong", sent.payload)))
        elif sent.kind == "pong":
            events.append(("pong", sent.payload))
        else:
            events.append(("close", sent.code, sent.reason))
            self.received_close = True
            self.incoming = None
            if not self.sent_close:
                # The echo carries the code only (RFC 6455 §5.5.1).
                self.queue_close(sent.code, "")

    def observe(self, events: list[Event]) -> list[Item]:
        """Turn the events the core returned into the model's terms, checking their shape."""
        items: list[Item] = []
        for event in events:
            stream = self.observed
            if isinstance(event, Message):
                assert stream is None, f"{self.name}: {event!r} inside a streamed message"
                assert type(event.data) in (str, bytes), type(event.data)
                items.append(("message", "whole", event.data))
            elif isinstance(event, MessageStart):
                assert stream is None, f"{self.name}: {event!r} inside a streamed message"
                self.observed = (event.message_type, [])
            elif isinstance(event, MessageData):
                assert stream is not None, f"{self.name}: {event!r} outside a message"
                assert type(event.data) is bytes, type(event.data)
                assert event.data, f"{self.name}: empty MessageData"
                stream[1].append(event.data)
            elif isinstance(event, MessageEnd):
                assert stream is not None, f"{self.name}: MessageEnd outside a message"
                self.observed = None
                data = b"".join(stream[1])
                text = stream[0] is MessageType.TEXT
                items.append(("message", "stream", data.decode() if text else data))
            elif isinstance(event, Ping):
                items.append(("ping", event.payload))
            elif isinstance(event, Pong):
                items.append(("pong", event.payload))
            elif isinstance(event, Close):
                self.observed = None
                items.append(("close", event.code, event.reason))
            else:
                raise AssertionError(f"{self.name}: unexpected event {event!r}")
        return items


def _short(value: object) -> str:
    text = repr(value)
    return text if len(text) <= 400 else text[:400] + "..."


class Conversation:
    """A ``ConnectionPair`` and its model, run one operation at a time."""

    def __init__(self, options: int) -> None:
        extension = bool(options & 16)
        client = ClientConnection(
            "ws://localhost/",
            extensions=[ClientFlip()] if extension else [],
            stream_messages=bool(options & 1),
            auto_pong=not options & 4,
            random_bytes=fixed_random,
        )
        server = ServerConnection(
            extensions=[ServerFlip()] if extension else [],
            stream_messages=bool(options & 2),
            auto_pong=not options & 8,
        )
        self.pair = ConnectionPair.open(client, server)
        self.client = Peer(client, "client", extension, wire_pos=len(self.pair.client_to_server))
        self.server = Peer(server, "server", extension, wire_pos=len(self.pair.server_to_client))
        for peer in (self.client, self.server):
            names = [ext.name for ext in peer.conn.extensions]
            assert names == (["x-flip"] if extension else []), names
            assert peer.conn.state is State.OPEN

    def run(self, op: Op) -> None:
        peer = self.server if op.side == SERVER else self.client
        if op.kind == TRANSFER:
            self.transfer()
        elif op.kind == STREAM:
            peer.conn.stream_messages = not peer.conn.stream_messages
        elif op.kind in (TEXT, BINARY):
            self.send_data(peer, op)
        elif op.kind in (PING, PONG):
            self.send_control(peer, Opcode.PING if op.kind == PING else Opcode.PONG, op.data)
        elif op.kind == CLOSE:
            code = CLOSE_CODES[op.arg % len(CLOSE_CODES)]
            self.send_close(peer, code, op.data.decode("utf-8", "replace"))
        else:
            self.send_message(peer, op)
        for side in (self.client, self.server):
            assert side.conn.state is side.state, (
                f"{side.name}: {side.conn.state}, not {side.state}"
            )

    # -- sending ---------------------------------------------------------------------

    def attempt(
        self, peer: Peer, call: Callable[[], None], error: type[LocalProtocolError] | None
    ) -> bool:
        """Make a call the model expects to succeed, or to raise ``error``."""
        before = (peer.conn.state, peer.conn.close_sent)
        raised = None
        try:
            call()
        except LocalProtocolError as exc:
            raised = exc
        if raised is None:
            assert error is None, f"{peer.name}: no {error and error.__name__}"
            return True
        assert error is not None, f"{peer.name}: {raised!r} from a valid call"
        assert type(raised) is error, f"{peer.name}: {raised!r}, expected {error.__name__}"
        assert (peer.conn.state, peer.conn.close_sent) == before, f"{raised!r} changed state"
        return False

    def _payload(self, peer: Peer, op: Op) -> bytes:
        data = op.data
        if op.repeat is not None:
            # Big payloads for the 16- and 64-bit lengths, within the read limit.
            budget = max(0, (MAX_MESSAGE - peer.sending_size) // 3)
            data = (data * (1 + 300 * op.repeat))[:budget]
        return data

    def send_data(self, peer: Peer, op: Op, *, via_message: bool = False) -> None:
        opcode = Opcode.TEXT if op.kind == TEXT else Opcode.BINARY
        raw = self._payload(peer, op)
        piece: str | bytes = raw.decode("utf-8", "replace") if opcode is Opcode.TEXT else raw
        wire = piece.encode() if isinstance(piece, str) else piece
        fin = op.fin
        if peer.state is not State.OPEN:
            error: type[LocalProtocolError] | None = CloseSentError
        elif peer.sending not in (None, opcode):
            error = LocalProtocolError
        else:
            error = None
        argument = piece if op.as_str else wire
        if via_message:
            call: Callable[[], None] = partial(peer.conn.send_message, opcode.value, argument)
        elif opcode is Opcode.TEXT:
            call = partial(peer.conn.send_text, argument, fin=fin)
        else:
            call = partial(peer.conn.send_binary, wire, fin=fin)
        if not self.attempt(peer, call, error):
            return
        first = peer.sending is None
        rsv = RSV1 if peer.extension and first else 0
        payload = flip(wire) if peer.extension else wire
        frame = Frame(opcode if first else Opcode.CONTINUATION, payload, fin, rsv)
        peer.queue.append((frame, Sent("data", wire, opcode, fin)))
        peer.sending = None if fin else opcode
        peer.sending_size = 0 if fin else peer.sending_size + len(wire)

    def send_control(
        self, peer: Peer, opcode: Opcode, payload: bytes, *, via_message: bool = False
    ) -> None:
        if peer.state is not State.OPEN:
            error: type[LocalProtocolError] | None = CloseSentError
        elif len(payload) > 125:
            error = LocalProtocolError
        else:
            error = None
        if via_message:
            call: Callable[[], None] = partial(peer.conn.send_message, opcode.value, payload)
        elif opcode is Opcode.PING:
            call = partial(peer.conn.send_ping, payload)
        else:
            call = partial(peer.conn.send_pong, payload)
        if self.attempt(peer, call, error):
            kind = "ping" if opcode is Opcode.PING else "pong"
            peer.queue.append((Frame(opcode, payload), Sent(kind, payload)))

    def send_close(self, peer: Peer, code: int | None, reason: str) -> None:
        if peer.state is not State.OPEN:
            error: type[LocalProtocolError] | None = CloseSentError
        elif code in (None, 1005):
            error = LocalProtocolError if reason else None
        elif not _valid_close_code(code) or len(reason.encode()) > 123:
            error = LocalProtocolError
        else:
            error = None
        if self.attempt(peer, partial(peer.conn.send_close, code, reason), error):
            peer.queue_close(code, reason)

    def send_message(self, peer: Peer, op: Op) -> None:
        message_type = op.arg % MESSAGE_TYPES
        if message_type in (MessageType.TEXT, MessageType.BINARY):
            kind = TEXT if message_type == MessageType.TEXT else BINARY
            as_str = op.as_str and kind == TEXT
            self.send_data(peer, Op(kind, op.side, op.data, as_str=as_str), via_message=True)
        elif message_type in (MessageType.PING, MessageType.PONG):
            opcode = Opcode(message_type)
            self.send_control(peer, opcode, op.data, via_message=True)
        elif message_type == MessageType.CLOSE:
            self.send_close_message(peer, op.data)
        else:
            call = partial(peer.conn.send_message, message_type, op.data)
            self.attempt(peer, call, LocalProtocolError)

    def send_close_message(self, peer: Peer, payload: bytes) -> None:
        # send_message(CLOSE) reads the payload first, then acts as send_close().
        code: int | None = None
        reason = ""
        error: type[LocalProtocolError] | None = None
        if len(payload) == 1 or len(payload) > 125:
            # A code needs two bytes; a control frame carries at most 125
            # (RFC 6455 §5.5), so the reason at most 123.
            error = LocalProtocolError
        elif payload:
            code = int.from_bytes(payload[:2], "big")
            try:
                reason = payload[2:].decode()
            except UnicodeDecodeError:
                error = LocalProtocolError
            if not _valid_close_code(code):
                error = LocalProtocolError
        if error is None and peer.state is not State.OPEN:
            error = CloseSentError
        call = partial(peer.conn.send_message, MessageType.CLOSE, payload)
        if self.attempt(peer, call, error):
            peer.queue_close(code, reason)

    # -- transfer --------------------------------------------------------------------

    def transfer(self) -> None:
        client, server = self.client, self.server
        expected: dict[str, list[Item]] = {"client": [], "server": []}
        # The same schedule as ConnectionPair.transfer(): client to server, then back.
        moving = True
        while moving:
            moving = False
            for sender, receiver in ((client, server), (server, client)):
                frames, sender.queue = sender.queue, []
                moving = moving or bool(frames)
                for frame, sent in frames:
                    sender.flushed.append(frame)
                    receiver.deliver(sent, expected[receiver.name])
        client_events, server_events = self.pair.transfer()
        for peer, events in ((client, client_events), (server, server_events)):
            observed = peer.observe(events)
            assert observed == expected[peer.name], (
                f"{peer.name} received {_short(observed)}, expected {_short(expected[peer.name])}"
            )
            assert peer.conn.data_to_send() == b"", f"{peer.name}: bytes left after transfer()"
        for peer, log in (
            (client, self.pair.client_to_server),
            (server, self.pair.server_to_client),
        ):
            on_wire = parse_wire(bytes(log[peer.wire_pos :]), masked=peer is client)
            assert on_wire == peer.flushed, (
                f"{peer.name} sent {_short(on_wire)}, expected {_short(peer.flushed)}"
            )
            peer.wire_pos = len(log)
            peer.flushed = []

    def finish(self) -> None:
        self.transfer()
        server, client = self.server.conn, self.client.conn
        assert server.close_expected() is (server.state is State.CLOSED)
        # "the server SHOULD close the TCP connection first" -- RFC 6455 §7.1.1
        assert not client.close_expected(), "a client closed before the server"


def TestOneInput(data: bytes) -> None:
    options, ops = decode(data)
    conversation = Conversation(options)
    for op in ops:
        conversation.run(op)
    conversation.finish()


def main() -> None:
    atheris.Setup(sys.argv, TestOneInput)
    atheris.Fuzz()


if __name__ == "__main__":
    main()
