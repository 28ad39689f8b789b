"""Fuzz target: permessage-deflate (RFC 7692), read, round-tripped and negotiated.

The last byte of the input picks the mode (bits 0-1):

* 0 **read** and 3 **build**: an open ``Connection`` of either role, with a
  ``PerMessageDeflate`` whose parameters come from the input (context takeover
  and window bits each way, read limit, streaming), reads bytes from a peer.
  In *read* they are the input's own bytes; in *build* the input is a program
  that the target turns into frames as a peer would (text and binary
  messages, compressed or not, fragmented anywhere in the compressed bytes,
  with a new compressor, a too-wide window, context kept against the
  agreement, a BFINAL block, a corrupted byte; control frames; raw bytes).
  Checked:

  - the read contract of ``_harness.FrameReader``, including the read limit on
    the *decompressed* size of every ``Message`` and of a streamed message so
    far; ``RemoteProtocolError`` 1002, 1007 or 1009 only: every zlib error has
    its code, so a 1011 (an exception the extension did not expect) is a bug;
  - ``decode()`` never returns more than ``max_size + 1`` bytes, the bound
    that keeps a decompression bomb from allocating past the read limit;
  - fed whole and in chunks, the connection reads the same messages, control
    events, error and replies;
  - every message delivered is what a reference inflater (``Inflater``,
    written from RFC 7692 §7.2.2 apart from the core) makes of the frames;
  - in *build*, a peer that misbehaves in none of these ways has all its
    messages delivered, with no error.

* 1 **roundtrip**: ``ConnectionPair.open()`` with ``ClientPerMessageDeflate``
  and ``ServerPerMessageDeflate`` of input-chosen options, then a program:
  messages of either type from either side, whole or fragmented, prepared
  messages (one object may go out both ways), ``enable_write_compression()``
  and ``set_compression_level()`` between messages and between fragments.
  Each side gets exactly the messages sent, in order, and ``transfer()``
  never raises; each frame on the wire is the one a model of the sender
  (``Sender``) predicts: RSV1 exactly when compression was on as the message
  started and the message reaches the threshold (or has several frames),
  and a payload that is zlib's at the level in force when the message
  started, from a fresh compressor or, with context takeover, the previous
  one; a receiver whose read limit is the size of its largest message reads
  them all; the closing handshake then completes.

* 2 **handshake**: a ``ServerConnection`` with ``ServerPerMessageDeflate`` (its
  options from the input) reads an upgrade request whose
  ``Sec-WebSocket-Extensions`` lines hold offers built from the input (known
  and arbitrary names, parameters and values, quoted or not, with optional
  whitespace). A header made of tokens must parse into exactly those offers;
  another may raise ``HandshakeError`` 400. ``accept()`` must take the first
  valid permessage-deflate offer (RFC 7692 §7, checked here independently) or
  send no header when none is valid, answer with parameters that RFC 7692
  §7.1 allows for that offer and the server's options, and build an extension
  that keeps to its answer. A ``ClientConnection`` whose
  ``ClientPerMessageDeflate`` makes that same offer must accept the ``101``,
  agree with the server (windows, context takeover), and exchange compressed
  messages both ways. And each permessage-deflate element of the header, read
  as a response to that offer, must be accepted by
  ``ClientPerMessageDeflate.accept()`` exactly when §7.1 allows it.
"""

from __future__ import annotations

import re
import sys
import zlib
from dataclasses import dataclass, field

import atheris

with atheris.instrument_imports(include=["wsproto_core"]):
    from _harness import (
        SAMPLE_KEY,
        FrameReader,
        Item,
        Layout,
        fixed_random,
        join_input,
        parse_wire,
        split_input,
    )
    from wsproto_core import (
        DEFAULT_MAX_MESSAGE_SIZE,
        ClientConnection,
        ClientPerMessageDeflate,
        Close,
        Connection,
        ConnectionPair,
        Event,
        ExtensionOffer,
        Frame,
        HandshakeError,
        HandshakeRequest,
        HandshakeResponse,
        Message,
        MessageData,
        MessageEnd,
        MessageStart,
        MessageType,
        Opcode,
        PerMessageDeflate,
        PreparedMessage,
        RemoteProtocolError,
        Role,
        ServerConnection,
        ServerPerMessageDeflate,
        State,
        parse_frame,
        serialize_frame,
    )
    from wsproto_core.frames import RSV1
    from wsproto_core.headers import parse_extensions

READ, ROUNDTRIP, HANDSHAKE, BUILD = range(4)
KEY = b"\x37\xfa\x21\x3d"  # RFC 6455 §5.7's example masking key
TAIL = b"\x00\x00\xff\xff"
NAME = "permessage-deflate"
SERVER_NCT = "server_no_context_takeover"
CLIENT_NCT = "client_no_context_takeover"
SERVER_BITS = "server_max_window_bits"
CLIENT_BITS = "client_max_window_bits"


class Draw:
    """Read an input as ``FuzzedDataProvider`` does: integers from the end, bytes from the front."""

    def __init__(self, data: bytes) -> None:
        self._fdp = atheris.FuzzedDataProvider(data)

    def byte(self) -> int:
        return int(self._fdp.ConsumeIntInRange(0, 255))

    def take(self, size: int) -> bytes:
        return bytes(self._fdp.ConsumeBytes(size))

    def rest(self) -> bytes:
        return self.take(self._fdp.remaining_bytes())

    def __bool__(self) -> bool:
        return self._fdp.remaining_bytes() > 0


@dataclass
class Writer:
    """Build the input a :class:`Draw` reads back (for seeds)."""

    ints: list[int] = field(default_factory=list)
    front: bytearray = field(default_factory=bytearray)

    def byte(self, value: int) -> None:
        assert 0 <= value <= 255, value
        self.ints.append(value)

    def take(self, data: bytes) -> None:
        self.front += data

    def data(self, data: bytes) -> None:
        """A length byte, then the bytes."""
        self.byte(len(data))
        self.take(data)

    def done(self) -> bytes:
        return bytes(self.front) + bytes(reversed(self.ints))


def _valid_text(data: bytes) -> bytes:
    return data.decode("utf-8", "replace").encode()


# -- read and build: the reading side -------------------------------------------------

#: Read limits: the default (1 MiB), small, medium, none.
LIMITS = (DEFAULT_MAX_MESSAGE_SIZE, 25, 5000, None)


@dataclass(frozen=True)
class ReadParams:
    """The reading connection and what was agreed with its peer.

    Byte 1: bit 0 a client (else a server), 1 stream messages, 2 no auto-pong,
    3 local no context takeover, 4 remote no context takeover, 5-6 the read
    limit. Byte 2: bits 0-2 the remote window bits - 8, bits 3-5 the local ones.
    """

    role: Role = Role.SERVER
    stream: bool = False
    auto_pong: bool = True
    local_nct: bool = False
    remote_nct: bool = False
    limit: int | None = DEFAULT_MAX_MESSAGE_SIZE
    remote_bits: int = 15
    local_bits: int = 15

    @classmethod
    def draw(cls, draw: Draw) -> ReadParams:
        first, second = draw.byte(), draw.byte()
        return cls(
            role=Role.CLIENT if first & 1 else Role.SERVER,
            stream=bool(first & 2),
            auto_pong=not first & 4,
            local_nct=bool(first & 8),
            remote_nct=bool(first & 16),
            limit=LIMITS[(first >> 5) & 3],
            remote_bits=8 + (second & 7),
            local_bits=8 + ((second >> 3) & 7),
        )

    def write(self, writer: Writer) -> None:
        writer.byte(
            (self.role is Role.CLIENT)
            | self.stream << 1
            | (not self.auto_pong) << 2
            | self.local_nct << 3
            | self.remote_nct << 4
            | LIMITS.index(self.limit) << 5
        )
        writer.byte(self.remote_bits - 8 | (self.local_bits - 8) << 3)


class CheckedDeflate(PerMessageDeflate):
    """``PerMessageDeflate`` that notes any ``decode()`` output past ``max_size + 1``.

    An ``AssertionError`` raised inside ``decode()`` would become a 1011, so the
    overrun is kept and checked after each read.
    """

    overrun: str | None = None

    def decode(
        self, data: bytes, *, rsv: int, fin: bool, text: bool, max_size: int | None
    ) -> bytes:
        out = super().decode(data, rsv=rsv, fin=fin, text=text, max_size=max_size)
        if max_size is not None and len(out) > max_size + 1 and self.overrun is None:
            self.overrun = f"decode() returned {len(out)} bytes with max_size={max_size}"
        return out


def read(params: ReadParams, chunks: list[bytes]) -> tuple[list[Item], list[Item]]:
    """Feed ``chunks`` to a fresh open connection; return what it read and queued."""
    extension = CheckedDeflate(
        local_no_context_takeover=params.local_nct,
        remote_no_context_takeover=params.remote_nct,
        local_max_window_bits=params.local_bits,
        remote_max_window_bits=params.remote_bits,
    )
    conn = Connection(
        params.role,
        extensions=[extension],
        max_message_size=params.limit,
        auto_pong=params.auto_pong,
        stream_messages=params.stream,
        random_bytes=fixed_random,
    )
    # No 1011: PerMessageDeflate maps every zlib error to 1002 or 1007.
    reader = FrameReader(conn)
    for chunk in chunks:
        reader.feed(chunk)
        assert extension.overrun is None, extension.overrun
    sent = reader.finish()
    assert extension.overrun is None, extension.overrun
    return reader.items, sent


#: How many readings of the stream so far the reference keeps at most.
MAX_READINGS = 8


def _copy(state: zlib._Decompress | None) -> zlib._Decompress | None:
    return None if state is None else state.copy()


class Inflater:
    """What a receiver may make of each message (RFC 7692 §7.2.2), apart from the core.

    "Append 4 octets of 0x00 0x00 0xff 0xff to the tail end of the payload of
    the message. Decompress the resulting data using DEFLATE." The LZ77 window
    carries over from message to message unless the peer agreed to no context
    takeover; an 8-bit window is read with 9 bits, as the core documents (zlib
    writes 9-bit streams when asked for 8).

    A block with BFINAL set ends a DEFLATE stream (§7.2.3.4); the bytes after
    it, in the same message or the next ones, start a new stream with an
    empty window: nothing may be dropped. Where the RFC leaves a choice, every
    reading is allowed, and the messages delivered since tell them apart:

    * a stream that ends exactly at the end of a message's payload leaves no
      open block for the tail to close: the tail may be inflated or skipped;
    * a compressed message with no payload at all (a sender's is at least
      0x00, §7.2.3.6) is empty, with or without inflating the tail.

    :meth:`readings` gives what a message may decode to; :meth:`deliver` keeps
    the readings that agree with what the core delivered.
    """

    def __init__(self, bits: int, no_context_takeover: bool) -> None:
        self.bits = max(bits, 9)
        self.no_context_takeover = no_context_takeover
        # Inflaters mid-stream; None: the next data starts a new stream.
        self.states: list[zlib._Decompress | None] = [None]
        self._pending: list[tuple[bytes, zlib._Decompress | None]] = []

    def _inflate(
        self, state: zlib._Decompress | None, data: bytes
    ) -> tuple[bytes, bool, zlib._Decompress | None]:
        """Inflate ``data`` from ``state`` (a copy: it changes).

        Returns:
            The output, whether a stream ended at the very end of ``data``, and
            the state after.

        Raises:
            zlib.error: ``data`` is not DEFLATE from there.
        """
        out = b""
        ended = False
        while data:
            if state is None:
                state = zlib.decompressobj(-self.bits)
            out += state.decompress(data)
            ended = state.eof
            data = state.unused_data if ended else b""
            if ended:
                state = None
        return out, ended, state

    def readings(self, payload: bytes, compressed: bool) -> list[bytes]:
        """What the next message may decode to (nothing: it cannot be inflated)."""
        if not compressed:
            self._pending = [(payload, state) for state in self.states]
            return [payload]
        pending = []
        for state in self.states:
            try:
                out, ended, after = self._inflate(_copy(state), payload)
            except zlib.error:
                continue
            tails = [after]
            if not payload or ended:
                # No open block for the tail to close: it may be skipped.
                pending.append((out, after))
                tails = [_copy(state) if not payload else None]
            for start in tails:
                try:
                    tail_out, _, tail_after = self._inflate(start, TAIL)
                except zlib.error:
                    continue
                pending.append((out + tail_out, tail_after))
        self._pending = pending
        return [out for out, _ in pending]

    def deliver(self, data: bytes) -> None:
        """The core delivered ``data`` for the message last asked about."""
        states = [state for out, state in self._pending if out == data]
        if self.no_context_takeover:
            states = [None]
        self.states = states[:MAX_READINGS]


def wire_messages(wire: bytes) -> list[tuple[str, bool, bytes]]:
    """The data messages in ``wire``: type, compressed, payload; up to a Close or bad framing."""
    messages = []
    current: tuple[Opcode, int, list[bytes]] | None = None
    pos = 0
    while pos < len(wire):
        try:
            parsed = parse_frame(wire, pos)
        except RemoteProtocolError:
            break
        if parsed is None:
            break
        frame, _, pos = parsed
        if frame.opcode is Opcode.CLOSE:
            break
        if frame.opcode in (Opcode.PING, Opcode.PONG):
            continue
        if frame.opcode is Opcode.CONTINUATION:
            if current is None:
                break
            current[2].append(frame.payload)
        else:
            if current is not None:
                break
            current = (frame.opcode, frame.rsv, [frame.payload])
        if frame.fin:
            opcode, rsv, pieces = current
            current = None
            kind = "text" if opcode is Opcode.TEXT else "binary"
            messages.append((kind, bool(rsv & RSV1), b"".join(pieces)))
    return messages


def check_messages(params: ReadParams, wire: bytes, items: list[Item]) -> None:
    """Every message delivered is a reading of the same message by the reference."""
    delivered = [item for item in items if item[0] == "message"]
    messages = wire_messages(wire)
    assert len(delivered) <= len(messages), f"{len(delivered)} messages, {len(messages)} sent"
    inflater = Inflater(params.remote_bits, params.remote_nct)
    for index, ((_, kind, data), (sent_kind, compressed, payload)) in enumerate(
        zip(delivered, messages, strict=False)
    ):
        assert kind == sent_kind, (index, kind, sent_kind)
        got = data.encode() if isinstance(data, str) else data
        assert isinstance(got, bytes)
        readings = inflater.readings(payload, compressed)
        assert got in readings, (
            f"message {index}: got {got[:100]!r} ({len(got)} bytes), expected one of "
            f"{[r[:100] for r in readings]!r} (payload {payload[:100].hex()})"
        )
        inflater.deliver(got)


# The build program: an op byte, then what its kind needs.
TEXT, BINARY, CONTROL, RAW = range(4)
COMPRESS, SWITCH, BFINAL, BIG, CORRUPT, WIDE = (4, 8, 16, 32, 64, 128)
CONTROLS = (Opcode.PING, Opcode.PONG, Opcode.CLOSE)
MAX_BUILD_OPS = 64


@dataclass(frozen=True)
class BuildOp:
    """One thing the peer sends.

    Op byte: bits 0-1 :attr:`kind`; for a message, the flags ``COMPRESS``
    (RSV1, payload deflated), ``SWITCH`` (with context takeover: start with a
    new compressor, as a peer may; without: keep the last one's context, as a
    peer must not), ``BFINAL`` (end the DEFLATE stream with a final block,
    then a 0x00 octet, as RFC 7692 §7.2.3.4 shows), ``BIG`` (the data
    repeated), ``CORRUPT`` (one byte of the payload XORed), ``WIDE`` (compress
    with a 15-bit window whatever was agreed). Then, for a message: the
    fragment size in compressed bytes (0: one frame), the data, the repeat
    count if ``BIG``, the position and XOR mask if ``CORRUPT``; for a control
    frame: which one, and its payload; for raw bytes: the bytes.
    """

    kind: int
    flags: int = 0
    data: bytes = b""
    fragment: int = 0
    repeat: int = 0
    corrupt: tuple[int, int] = (0, 0)
    control: int = 0

    @classmethod
    def draw(cls, draw: Draw) -> BuildOp:
        code = draw.byte()
        kind, flags = code & 3, code & ~3
        if kind == RAW:
            return cls(kind, data=draw.take(draw.byte()))
        if kind == CONTROL:
            control = draw.byte()
            return cls(kind, control=control, data=draw.take(draw.byte()))
        fragment = draw.byte()
        data = draw.take(draw.byte())
        repeat = draw.byte() if flags & BIG else 0
        corrupt = (draw.byte(), draw.byte()) if flags & CORRUPT else (0, 0)
        return cls(kind, flags, data, fragment, repeat, corrupt)

    def message(self) -> bytes:
        data = self.data * (1 + 2 * self.repeat)
        return _valid_text(data) if self.kind == TEXT else data

    def write(self, writer: Writer) -> None:
        writer.byte(self.kind | self.flags)
        if self.kind == RAW:
            writer.data(self.data)
            return
        if self.kind == CONTROL:
            writer.byte(self.control)
            writer.data(self.data)
            return
        writer.byte(self.fragment)
        writer.data(self.data)
        if self.flags & BIG:
            writer.byte(self.repeat)
        if self.flags & CORRUPT:
            writer.byte(self.corrupt[0])
            writer.byte(self.corrupt[1])


def draw_program(data: bytes) -> list[BuildOp]:
    draw = Draw(data)
    ops = []
    while draw and len(ops) < MAX_BUILD_OPS:
        ops.append(BuildOp.draw(draw))
    return ops


def write_program(ops: list[BuildOp]) -> bytes:
    writer = Writer()
    for op in ops:
        op.write(writer)
    data = writer.done()
    assert draw_program(data) == ops, "not a canonical program"
    return data


def build_wire(params: ReadParams, ops: list[BuildOp]) -> bytes:
    """The frames a peer sends for ``ops``; masked when we are the server."""
    mask_key = KEY if params.role is Role.SERVER else None
    bits = max(params.remote_bits, 9)  # zlib refuses to deflate with 8
    compressor: zlib._Compress | None = None
    compressor_bits = 0
    wire = bytearray()
    for op in ops:
        if op.kind == RAW:
            wire += op.data
            continue
        if op.kind == CONTROL:
            opcode = CONTROLS[op.control % 3]
            wire += serialize_frame(opcode, op.data[:125], mask_key=mask_key)
            continue
        data = op.message()
        payload = data
        if op.flags & COMPRESS:
            wanted = 15 if op.flags & WIDE else bits
            if (
                compressor is None
                or bool(op.flags & SWITCH) is not params.remote_nct
                or compressor_bits != wanted
            ):
                compressor = zlib.compressobj(6, zlib.DEFLATED, -wanted)
                compressor_bits = wanted
            if op.flags & BFINAL:
                payload = compressor.compress(data) + compressor.flush(zlib.Z_FINISH) + b"\x00"
                compressor = None
            else:
                payload = (compressor.compress(data) + compressor.flush(zlib.Z_SYNC_FLUSH))[:-4]
        if op.flags & CORRUPT and payload:
            where, mask = op.corrupt
            corrupted = bytearray(payload)
            corrupted[where % len(payload)] ^= mask or 0xFF
            payload = bytes(corrupted)
        size = op.fragment or len(payload) or 1
        pieces = [payload[pos : pos + size] for pos in range(0, len(payload), size)] or [b""]
        opcode = Opcode.TEXT if op.kind == TEXT else Opcode.BINARY
        for index, piece in enumerate(pieces):
            wire += serialize_frame(
                opcode if index == 0 else Opcode.CONTINUATION,
                piece,
                fin=index == len(pieces) - 1,
                rsv=RSV1 if index == 0 and op.flags & COMPRESS else 0,
                mask_key=mask_key,
            )
    return bytes(wire)


def well_behaved(params: ReadParams, ops: list[BuildOp]) -> int | None:
    """How many messages ``ops`` must deliver, or ``None`` if the peer misbehaves.

    A peer that sends no raw bytes, corrupts nothing, keeps to the agreed window,
    sends no message over the read limit and no Close with a payload is
    correct: its messages must all arrive, whatever their fragmentation and
    however the bytes are chunked.
    """
    count = 0
    for op in ops:
        if op.kind == RAW or op.flags & CORRUPT:
            return None
        if op.kind == CONTROL:
            if CONTROLS[op.control % 3] is Opcode.CLOSE:
                return None if op.data else count
            continue
        if op.flags & COMPRESS and op.flags & WIDE and params.remote_bits < 15:
            return None
        if op.flags & COMPRESS and op.flags & SWITCH and params.remote_nct:
            return None
        if params.limit is not None and len(op.message()) > params.limit:
            return None
        count += 1
    return count


def read_mode(draw: Draw, build: bool) -> tuple[str, int]:
    params = ReadParams.draw(draw)
    layout = split_input(draw.rest())
    expected: int | None = None
    if build:
        ops = draw_program(layout.wire)
        expected = well_behaved(params, ops)
        layout = Layout(layout.options, layout.sizes, build_wire(params, ops))
    whole = read(params, [layout.wire])
    chunks = layout.chunks()
    if chunks != [layout.wire]:
        chunked = read(params, chunks)
        assert chunked == whole, f"chunked {chunked!r:.500} != whole {whole!r:.500}"
    items, _ = whole
    check_messages(params, layout.wire, items)
    errors = [item for item in items if item[0] == "error"]
    if expected is not None:
        assert not errors, f"{errors} from a well-behaved peer"
        delivered = sum(item[0] == "message" for item in items)
        assert delivered == expected, f"{delivered} messages delivered, {expected} sent"
    return (
        ("error", errors[0][1]) if errors else ("messages", sum(i[0] == "message" for i in items))
    )


# -- roundtrip ---------------------------------------------------------------------------

CLIENT, SERVER = 0, 1
MESSAGE, PREPARED, ENABLE, LEVEL = range(4)
THRESHOLDS = (32, 0, 1, 100)
#: Read limits of a round trip: the default, none, or exactly the largest message.
TIGHT = -1
RT_LIMITS = (DEFAULT_MAX_MESSAGE_SIZE, None, TIGHT)
MAX_OPS = 40


@dataclass(frozen=True)
class Options:
    """One side's factory options, and how it reads.

    Byte 1: bit 0 ``server_no_context_takeover``, 1 ``client_no_context_takeover``,
    2 stream messages, 3-4 the read limit (:data:`RT_LIMITS`), 5-6 the threshold
    (:data:`THRESHOLDS`). Byte 2: ``server_max_window_bits`` (0: none, else
    7 + n). Byte 3: ``client_max_window_bits`` (client: 0 ``True``, 1 ``False``,
    else 6 + n; server: 0 none, else 7 + n). Byte 4: the level + 1. Byte 5: the
    memory level - 1.
    """

    server_nct: bool = False
    client_nct: bool = False
    stream: bool = False
    limit: int | None = DEFAULT_MAX_MESSAGE_SIZE
    threshold: int = 32
    server_bits: int | None = None
    client_bits: int | bool | None = None
    level: int = 1
    memory_level: int = 8

    @classmethod
    def draw(cls, draw: Draw, side: int) -> Options:
        first = draw.byte()
        server_bits = draw.byte() % 9
        client_bits = draw.byte() % (10 if side == CLIENT else 9)
        bits: int | bool | None
        if side == CLIENT:
            bits = (True, False)[client_bits] if client_bits < 2 else 6 + client_bits
        else:
            bits = 7 + client_bits if client_bits else None
        return cls(
            server_nct=bool(first & 1),
            client_nct=bool(first & 2),
            stream=bool(first & 4),
            limit=RT_LIMITS[((first >> 3) & 3) % 3],
            threshold=THRESHOLDS[(first >> 5) & 3],
            server_bits=7 + server_bits if server_bits else None,
            client_bits=bits,
            level=draw.byte() % 11 - 1,
            memory_level=draw.byte() % 9 + 1,
        )

    def write(self, writer: Writer, side: int) -> None:
        writer.byte(
            self.server_nct
            | self.client_nct << 1
            | self.stream << 2
            | RT_LIMITS.index(self.limit) << 3
            | THRESHOLDS.index(self.threshold) << 5
        )
        writer.byte(0 if self.server_bits is None else self.server_bits - 7)
        if side == CLIENT:
            bits = self.client_bits
            writer.byte(0 if bits is True else 1 if bits is False else int(bits) - 6)
        else:
            writer.byte(0 if self.client_bits is None else int(self.client_bits) - 7)
        writer.byte(self.level + 1)
        writer.byte(self.memory_level - 1)

    def client(self) -> ClientPerMessageDeflate:
        assert self.client_bits is not None
        return ClientPerMessageDeflate(
            server_no_context_takeover=self.server_nct,
            client_no_context_takeover=self.client_nct,
            server_max_window_bits=self.server_bits,
            client_max_window_bits=self.client_bits,
            compression_level=self.level,
            memory_level=self.memory_level,
            threshold=self.threshold,
        )

    def server(self) -> ServerPerMessageDeflate:
        assert not isinstance(self.client_bits, bool)
        return ServerPerMessageDeflate(
            server_no_context_takeover=self.server_nct,
            client_no_context_takeover=self.client_nct,
            server_max_window_bits=self.server_bits,
            client_max_window_bits=self.client_bits,
            compression_level=self.level,
            memory_level=self.memory_level,
            threshold=self.threshold,
        )


@dataclass(frozen=True)
class RoundOp:
    """One operation.

    Op byte: bit 0 the side, bits 1-2 :attr:`kind`, bit 3 text (a message) or
    on (``ENABLE``), bit 4 big (the data repeated), bit 5 a twist (a message:
    a setting changed after its first fragment; a prepared message: sent by
    both sides), bit 6 ``transfer()`` afterwards, bit 7 (a prepared message)
    send the previous ``PreparedMessage`` object again, so its cached
    encodings and frames are used. Then, for a message: the fragment size (0:
    whole), the data, the repeat count if big, the twist byte (bit 0: 0
    enable/disable by bit 1, 1 the level (byte >> 1) % 11 - 1); for a new
    prepared message: the data, the repeat count if big; for ``LEVEL``: the
    level byte.
    """

    kind: int
    side: int = CLIENT
    flag: bool = False
    big: bool = False
    twist: int | None = None
    transfer: bool = False
    data: bytes = b""
    fragment: int = 0
    repeat: int = 0
    arg: int = 0
    reuse: bool = False

    @classmethod
    def draw(cls, draw: Draw) -> RoundOp:
        code = draw.byte()
        kind = (code >> 1) & 3
        side, flag, big = code & 1, bool(code & 8), bool(code & 16)
        twisted, transfer = bool(code & 32), bool(code & 64)
        if kind == ENABLE:
            return cls(kind, side, flag, transfer=transfer)
        if kind == LEVEL:
            return cls(kind, side, transfer=transfer, arg=draw.byte())
        if kind == PREPARED and code & 128:
            return cls(kind, side, twist=0 if twisted else None, transfer=transfer, reuse=True)
        fragment = draw.byte() if kind == MESSAGE else 0
        data = draw.take(draw.byte())
        repeat = draw.byte() if big else 0
        twist = draw.byte() if twisted and kind == MESSAGE else (0 if twisted else None)
        return cls(kind, side, flag, big, twist, transfer, data, fragment, repeat)

    def write(self, writer: Writer) -> None:
        writer.byte(
            self.side
            | self.kind << 1
            | self.flag << 3
            | self.big << 4
            | (self.twist is not None) << 5
            | self.transfer << 6
            | self.reuse << 7
        )
        if self.kind == LEVEL:
            writer.byte(self.arg)
        if self.kind not in (MESSAGE, PREPARED) or self.reuse:
            return
        if self.kind == MESSAGE:
            writer.byte(self.fragment)
        writer.data(self.data)
        if self.big:
            writer.byte(self.repeat)
        if self.twist is not None and self.kind == MESSAGE:
            writer.byte(self.twist)

    @property
    def payload(self) -> bytes:
        data = self.data * (1 + self.repeat)
        return _valid_text(data) if self.flag else data

    def pieces(self) -> list[bytes]:
        data = self.payload
        if not self.fragment:
            return [data]
        size = self.fragment * (256 if self.big else 1)
        return [data[pos : pos + size] for pos in range(0, len(data), size)] or [b""]


def draw_roundtrip(data: bytes) -> tuple[Options, Options, list[RoundOp]]:
    draw = Draw(data)
    client, server = Options.draw(draw, CLIENT), Options.draw(draw, SERVER)
    ops = []
    while draw and len(ops) < MAX_OPS:
        ops.append(RoundOp.draw(draw))
    return client, server, ops


def write_roundtrip(client: Options, server: Options, ops: list[RoundOp]) -> bytes:
    writer = Writer()
    writer.byte(ROUNDTRIP)
    client.write(writer, CLIENT)
    server.write(writer, SERVER)
    for op in ops:
        op.write(writer)
    data = writer.done()
    draw = Draw(data)
    assert draw.byte() == ROUNDTRIP
    assert draw_roundtrip(draw.rest()) == (client, server, ops), "not a canonical program"
    return data


@dataclass
class Send:
    """A message a side sent, as the model saw it go."""

    opcode: Opcode
    pieces: list[bytes]
    compressed: bool  # RSV1 and a deflated payload
    level: int  # the level in force when the message started
    shared: bool = False  # a prepared message deflated afresh, apart from our compressor


@dataclass
class Sender:
    """A model of one side's sending half, checked against the frames it queued.

    Whether a message is compressed is fully determined: compression is on (and
    the agreed window is over 8 bits) when the message starts, and the message
    has several frames or reaches the threshold. The compressed bytes are
    exactly zlib's, at the level in force when the message started, from
    either a fresh compressor (always allowed) or the one of the previous
    compressed message, if it had the same level and context takeover is on:
    the model does not fix when a compressor is replaced, only that the level
    and the window are right. When both give the same bytes (an empty
    message, say), their states may still differ, so the model keeps each
    compressor the core may be using, up to :data:`MAX_READINGS`.
    """

    extension: PerMessageDeflate
    level: int
    enabled: bool = True
    #: The compressors the core may be continuing with, and their level.
    compressors: list[zlib._Compress] = field(default_factory=list)
    compressor_level: int = 0
    sends: list[Send] = field(default_factory=list)

    @property
    def compress_outgoing(self) -> bool:
        return self.enabled and self.extension.local_max_window_bits > 8

    def start(self, opcode: Opcode, first_piece: bytes, *, fin: bool) -> None:
        compressed = self.compress_outgoing and not (
            fin and len(first_piece) < self.extension.threshold
        )
        self.sends.append(Send(opcode, [first_piece], compressed, self.level))

    def more(self, piece: bytes) -> None:
        self.sends[-1].pieces.append(piece)

    def prepared(self, opcode: Opcode, data: bytes) -> None:
        ext = self.extension
        compressed = self.compress_outgoing and len(data) >= ext.threshold
        shared = compressed and ext.local_no_context_takeover
        self.sends.append(Send(opcode, [data], compressed, self.level, shared))

    def _fresh(self, level: int) -> zlib._Compress:
        ext = self.extension
        return zlib.compressobj(level, zlib.DEFLATED, -ext.local_max_window_bits, ext.memory_level)

    def check(self, frames: list[Frame]) -> None:
        """Check the data frames sent since the last call against the messages sent."""
        pos = 0
        for send in self.sends:
            count = len(send.pieces)
            sent = frames[pos : pos + count]
            pos += count
            assert len(sent) == count, f"{len(sent)} frames for {count} pieces of {send}"
            for index, frame in enumerate(sent):
                opcode = send.opcode if index == 0 else Opcode.CONTINUATION
                rsv = RSV1 if index == 0 and send.compressed else 0
                assert (frame.opcode, frame.fin, frame.rsv) == (opcode, index == count - 1, rsv), (
                    f"frame {index} of {count}: {frame!r:.200}, compressed={send.compressed}"
                )
            payloads = [frame.payload for frame in sent]
            if not send.compressed:
                assert payloads == send.pieces, f"{payloads!r:.200} != {send.pieces!r:.200}"
                continue
            # Oldest first: when there are too many, the ones dropped are those
            # that started afresh lately, and a fresh one is always tried again.
            candidates = []
            if not send.shared and self.compressor_level == send.level:
                candidates = [compressor.copy() for compressor in self.compressors]
            candidates.append(self._fresh(send.level))
            matching = []
            for compressor in candidates:
                expected = [
                    compressor.compress(p) + compressor.flush(zlib.Z_SYNC_FLUSH)
                    for p in send.pieces
                ]
                expected[-1] = expected[-1][:-4]
                if expected == payloads:
                    matching.append(compressor)
            assert matching, (
                f"compressed {payloads!r:.200}: not what zlib makes at level {send.level} "
                f"with a fresh or continued compressor ({send!r:.200})"
            )
            if not send.shared:
                nct = self.extension.local_no_context_takeover
                self.compressors = [] if nct else matching[:MAX_READINGS]
                self.compressor_level = send.level
        assert pos == len(frames), (
            f"{len(frames) - pos} frames more than sent: {frames[pos:]!r:.200}"
        )
        self.sends.clear()


def _received(events: list[Event]) -> list[tuple[MessageType, bytes]]:
    """The messages in ``events``, whole or streamed; nothing else may be there."""
    messages: list[tuple[MessageType, bytes]] = []
    stream: tuple[MessageType, list[bytes]] | None = None
    for event in events:
        if isinstance(event, Message):
            assert stream is None, event
            if isinstance(event.data, str):
                messages.append((MessageType.TEXT, event.data.encode()))
            else:
                messages.append((MessageType.BINARY, event.data))
        elif isinstance(event, MessageStart):
            assert stream is None, event
            stream = (event.message_type, [])
        elif isinstance(event, MessageData):
            assert stream is not None, event
            assert event.data, event
            stream[1].append(event.data)
        elif isinstance(event, MessageEnd):
            assert stream is not None, event
            messages.append((stream[0], b"".join(stream[1])))
            stream = None
        else:
            raise AssertionError(f"unexpected event {event!r}")
    assert stream is None, "a streamed message left unfinished by transfer()"
    return messages


class RoundTrip:
    """A pair of connections with permessage-deflate, and the model of what they send."""

    def __init__(self, client: Options, server: Options, ops: list[RoundOp]) -> None:
        self.options = (client, server)
        self.ops = ops
        # What each prepared message op sends: a new message, or the previous one again.
        self.plan: list[PreparedMessage | None] = []
        last: PreparedMessage | None = None
        for op in ops:
            if op.kind == PREPARED and not (op.reuse and last is not None):
                last = PreparedMessage(
                    MessageType.TEXT if op.flag else MessageType.BINARY, op.payload
                )
            self.plan.append(last if op.kind == PREPARED else None)
        limits = []
        for side, options in enumerate(self.options):
            limit = options.limit
            if limit == TIGHT:
                sizes = [
                    len(op.payload if prepared is None else prepared.data)
                    for op, prepared in zip(ops, self.plan, strict=True)
                    if op.side != side or self._both(op)
                ]
                limit = max(sizes, default=0)
            limits.append(limit)
        self.limits = limits
        self.pair = ConnectionPair.open(
            ClientConnection(
                "ws://example.com/",
                extensions=[client.client()],
                max_message_size=limits[CLIENT],
                stream_messages=client.stream,
                random_bytes=fixed_random,
            ),
            ServerConnection(
                extensions=[server.server()],
                max_message_size=limits[SERVER],
                stream_messages=server.stream,
            ),
        )
        self.conns: tuple[Connection, Connection] = (self.pair.client, self.pair.server)
        self.senders = []
        for side, conn in enumerate(self.conns):
            (extension,) = conn.extensions  # our client's offer is always acceptable
            assert isinstance(extension, PerMessageDeflate), extension
            self.senders.append(Sender(extension, self.options[side].level))
        self.expected: tuple[list[tuple[MessageType, bytes]], ...] = ([], [])
        # Past the handshake.
        self.wire_pos = [len(self.pair.client_to_server), len(self.pair.server_to_client)]

    @staticmethod
    def _both(op: RoundOp) -> bool:
        return op.kind == PREPARED and op.twist is not None

    def run(self) -> int:
        for op, prepared in zip(self.ops, self.plan, strict=True):
            self.step(op, prepared)
            if op.transfer:
                self.transfer()
        self.transfer()
        # The closing handshake still works after all that.
        self.pair.client.send_close()
        self.transfer()
        assert self.pair.client.state is State.CLOSED, self.pair.client.state
        assert self.pair.server.state is State.CLOSED, self.pair.server.state
        return len(self.ops)

    def step(self, op: RoundOp, prepared: PreparedMessage | None) -> None:
        conn, sender = self.conns[op.side], self.senders[op.side]
        message_type = MessageType.TEXT if op.flag else MessageType.BINARY
        opcode = Opcode(message_type)
        if op.kind == ENABLE:
            conn.enable_write_compression(op.flag)
            sender.enabled = op.flag
        elif op.kind == LEVEL:
            level = op.arg % 11 - 1
            conn.set_compression_level(level)
            sender.level = level
        elif op.kind == PREPARED:
            assert prepared is not None
            message_type = prepared.message_type
            for side in (op.side, 1 - op.side) if self._both(op) else (op.side,):
                self.conns[side].send_prepared(prepared)
                self.senders[side].prepared(Opcode(message_type), prepared.data)
                self.expected[1 - side].append((message_type, prepared.data))
        else:
            pieces = op.pieces()
            for index, piece in enumerate(pieces):
                first, fin = index == 0, index == len(pieces) - 1
                if message_type is MessageType.TEXT:
                    conn.send_text(piece, fin=fin)
                else:
                    conn.send_binary(piece, fin=fin)
                if first:
                    sender.start(opcode, piece, fin=fin)
                else:
                    sender.more(piece)
                if first and op.twist is not None:
                    self.twist(op.side, op.twist)
            self.expected[1 - op.side].append((message_type, op.payload))

    def twist(self, side: int, code: int) -> None:
        if code & 1:
            level = (code >> 1) % 11 - 1
            self.conns[side].set_compression_level(level)
            self.senders[side].level = level
        else:
            self.conns[side].enable_write_compression(bool(code & 2))
            self.senders[side].enabled = bool(code & 2)

    def transfer(self) -> None:
        try:
            client_events, server_events = self.pair.transfer()
        except RemoteProtocolError as exc:
            raise AssertionError(f"transfer() between two correct cores raised {exc!r}") from exc
        for side, events in ((CLIENT, client_events), (SERVER, server_events)):
            received = _received([e for e in events if not isinstance(e, Close)])
            expected = self.expected[side]
            assert received == expected, (
                f"side {side} received {received!r:.300}, expected {expected!r:.300}"
            )
            expected.clear()
        for side, log in (
            (CLIENT, self.pair.client_to_server),
            (SERVER, self.pair.server_to_client),
        ):
            frames = parse_wire(bytes(log[self.wire_pos[side] :]), masked=side == CLIENT)
            self.wire_pos[side] = len(log)
            self.senders[side].check([f for f in frames if f.opcode is not Opcode.CLOSE])


def roundtrip_mode(draw: Draw) -> tuple[str, int]:
    client, server, ops = draw_roundtrip(draw.rest())
    return ("roundtrip", RoundTrip(client, server, ops).run())


# -- handshake ---------------------------------------------------------------------------

_TOKEN = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")
_BITS = re.compile(r"[1-9][0-9]*")
#: Extension names (index 3: from the input), parameter names (index 4: from the input).
EXT_NAMES = (NAME, NAME, "x-other")
PARAM_NAMES = (SERVER_NCT, CLIENT_NCT, SERVER_BITS, CLIENT_BITS)
NUMBERS = (*(str(n) for n in range(8, 16)), "7", "16", "08", "0", "015", "1", "99999")
SPACES = ("", " ", "\t", " \t ")
# Well under the 16 KiB a request head may take.
MAX_OFFERS = 8
MAX_PARAMS = 5
MAX_TEXT = 64

UPGRADE = (
    "GET /chat HTTP/1.1\r\n"
    "Host: example.com\r\n"
    "Upgrade: websocket\r\n"
    "Connection: Upgrade\r\n"
    f"Sec-WebSocket-Key: {SAMPLE_KEY}\r\n"
    "Sec-WebSocket-Version: 13\r\n"
)


def _text(data: bytes) -> str:
    # Visible ASCII, space and tab only: header bytes h11 would refuse are not
    # what this target is about (fuzz_handshake covers them).
    return bytes(b if 0x20 <= b < 0x7F or b == 9 else 0x21 + b % 94 for b in data).decode()


@dataclass(frozen=True)
class Param:
    """A parameter: the name (index into :data:`PARAM_NAMES`, or its own
    text), then no value, a number (index into :data:`NUMBERS`) or a text,
    quoted or not.

    Byte: bits 0-2 the name (4+: from the input), 3-4 the value (0 none, 1 a
    number, 2 a text, 3 a quoted number), 5 quote a text. Then the number's
    index, or the texts' lengths (their bytes from the front).
    """

    name: int | str
    value: int | str | None = None
    quoted: bool = False

    @classmethod
    def draw(cls, draw: Draw) -> Param:
        code = draw.byte()
        name: int | str = code & 7
        if name >= 4:
            name = _text(draw.take(draw.byte() % MAX_TEXT))
        kind = (code >> 3) & 3
        value: int | str | None = None
        if kind in (1, 3):
            value = draw.byte() % len(NUMBERS)
        elif kind == 2:
            value = _text(draw.take(draw.byte() % MAX_TEXT))
        return cls(name, value, kind == 3 or (kind == 2 and bool(code & 32)))

    def write(self, writer: Writer) -> None:
        kind = 0 if self.value is None else 2 if isinstance(self.value, str) else 1
        if kind == 1 and self.quoted:
            kind = 3
        name = self.name if isinstance(self.name, int) else 4
        writer.byte(name | kind << 3 | (kind == 2 and self.quoted) << 5)
        if isinstance(self.name, str):
            writer.data(self.name.encode())
        if isinstance(self.value, int):
            writer.byte(self.value)
        elif isinstance(self.value, str):
            writer.data(self.value.encode())

    @property
    def text(self) -> tuple[str, str | None]:
        """The parameter as sent: its name and raw value."""
        name = PARAM_NAMES[self.name] if isinstance(self.name, int) else self.name
        if self.value is None:
            return name, None
        value = NUMBERS[self.value] if isinstance(self.value, int) else self.value
        return name, f'"{value}"' if self.quoted else value

    @property
    def parsed(self) -> tuple[str, str | None]:
        """The parameter as a correct parser reads it (the quotes removed)."""
        name, value = self.text
        if value is not None and self.quoted:
            value = value[1:-1]
        return name, value

    @property
    def well_formed(self) -> bool:
        name, value = self.parsed
        return bool(_TOKEN.fullmatch(name)) and (value is None or bool(_TOKEN.fullmatch(value)))


@dataclass(frozen=True)
class Offer:
    """An offer: byte: bits 0-1 the name (3: from the input), 2 on a new header
    line, 3-4 the whitespace around separators; then the name's length if from
    the input, the parameter count, the parameters."""

    name: int | str
    params: tuple[Param, ...] = ()
    new_line: bool = False
    space: int = 0

    @classmethod
    def draw(cls, draw: Draw) -> Offer:
        code = draw.byte()
        name: int | str = code & 3
        if name == 3:
            name = _text(draw.take(draw.byte() % MAX_TEXT))
        count = draw.byte() % (MAX_PARAMS + 1)
        params = tuple(Param.draw(draw) for _ in range(count))
        return cls(name, params, bool(code & 4), (code >> 3) & 3)

    def write(self, writer: Writer) -> None:
        name = self.name if isinstance(self.name, int) else 3
        writer.byte(name | self.new_line << 2 | self.space << 3)
        if isinstance(self.name, str):
            writer.data(self.name.encode())
        writer.byte(len(self.params))
        for param in self.params:
            param.write(writer)

    @property
    def text_name(self) -> str:
        return EXT_NAMES[self.name] if isinstance(self.name, int) else self.name

    def header(self) -> str:
        space = SPACES[self.space]
        items = [self.text_name]
        for param in self.params:
            name, value = param.text
            items.append(name if value is None else f"{name}{space}={space}{value}")
        return f"{space};{space}".join(items)

    @property
    def well_formed(self) -> bool:
        return bool(_TOKEN.fullmatch(self.text_name)) and all(p.well_formed for p in self.params)

    def parsed(self) -> ExtensionOffer:
        return ExtensionOffer(self.text_name, [param.parsed for param in self.params])


def draw_handshake(data: bytes) -> tuple[Options, list[Offer]]:
    draw = Draw(data)
    options = Options.draw(draw, SERVER)
    offers = []
    while draw and len(offers) < MAX_OFFERS:
        offers.append(Offer.draw(draw))
    return options, offers


def write_handshake(options: Options, offers: list[Offer]) -> bytes:
    writer = Writer()
    writer.byte(HANDSHAKE)
    options.write(writer, SERVER)
    for offer in offers:
        offer.write(writer)
    data = writer.done()
    draw = Draw(data)
    assert draw.byte() == HANDSHAKE
    assert draw_handshake(draw.rest()) == (options, offers), "not a canonical program"
    return data


def request(offers: list[Offer]) -> bytes:
    lines: list[list[str]] = []
    for offer in offers:
        if offer.new_line or not lines:
            lines.append([])
        lines[-1].append(offer.header())
    fields = "".join(f"Sec-WebSocket-Extensions: {', '.join(line)}\r\n" for line in lines)
    return (UPGRADE + fields + "\r\n").encode()


def valid_offer(offer: ExtensionOffer) -> dict[str, int | None] | None:
    """RFC 7692 §7's rules for an offer, as the server must apply them, or ``None``.

    "A server MUST decline an extension negotiation offer for this extension
    if any of the following conditions are met: The negotiation offer
    contains an extension parameter not defined for use in an offer. The
    negotiation offer contains an extension parameter with an invalid value.
    The negotiation offer contains multiple extension parameters with the same
    name. The server doesn't support the offered configuration."
    """
    if offer.name != NAME:
        return None
    params: dict[str, int | None] = {}
    for name, value in offer.params:
        if name in params:
            return None
        if name in (SERVER_NCT, CLIENT_NCT):
            if value is not None:
                return None
            params[name] = None
        elif name in (SERVER_BITS, CLIENT_BITS):
            # "a decimal integer value without leading zeroes between 8 to 15"
            # (§7.1.2.1); a client's may be absent (§7.1.2.2).
            if value is None and name == CLIENT_BITS:
                params[name] = None
            elif value is not None and _BITS.fullmatch(value) and 8 <= int(value) <= 15:
                params[name] = int(value)
            else:
                return None
        else:
            return None
    return params


def _at_most(value: int | None, bound: int | None) -> bool:
    return value is not None and (bound is None or value <= bound)


def valid_response(
    offered: dict[str, int | None], response: ExtensionOffer
) -> dict[str, int | None] | None:
    """RFC 7692 §7.1's rules for a response to ``offered``: its parameters, or ``None``."""
    if response.name != NAME:
        return None
    params: dict[str, int | None] = {}
    for name, value in response.params:
        if name in params:
            return None
        if name in (SERVER_NCT, CLIENT_NCT):
            if value is not None:
                return None
            params[name] = None
            continue
        # "a decimal integer value without leading zeroes between 8 to 15"
        # (§7.1.2); a response's client_max_window_bits must have one too (§7.1.2.2).
        if name not in (SERVER_BITS, CLIENT_BITS) or not _BITS.fullmatch(value or ""):
            return None
        params[name] = int(value or "")
        if not 8 <= int(value or "") <= 15:
            return None
    # §7.1.1.1: "A server accepting an extension negotiation offer with this
    # parameter MUST include the 'server_no_context_takeover' extension
    # parameter in the extension negotiation response."
    if SERVER_NCT in offered and SERVER_NCT not in params:
        return None
    # §7.1.2.1: "[...] MUST include the 'server_max_window_bits' extension
    # parameter in the extension negotiation response to send back to the
    # client with the same or smaller value as the offer."
    if SERVER_BITS in offered and not _at_most(params.get(SERVER_BITS), offered[SERVER_BITS]):
        return None
    # §7.1.2.2: "If a received extension negotiation offer doesn't have the
    # 'client_max_window_bits' extension parameter, the corresponding
    # extension negotiation response to the offer MUST NOT include [it]."
    # With it, a value "smaller than or equal to the value in the offer".
    if CLIENT_BITS in params and (
        CLIENT_BITS not in offered or not _at_most(params[CLIENT_BITS], offered[CLIENT_BITS])
    ):
        return None
    return params


def check_response(
    options: Options, offered: dict[str, int | None], response: ExtensionOffer
) -> dict[str, int | None]:
    """The server's answer to ``offered``: valid, and true to the server's options."""
    params = valid_response(offered, response)
    assert params is not None, f"{response} is not a valid answer to {offered}"
    if options.server_nct:
        assert SERVER_NCT in params, (options, response)
    if options.client_nct:
        assert CLIENT_NCT in params, (options, response)
    if options.server_bits is not None and options.server_bits < 15:
        assert _at_most(params.get(SERVER_BITS), options.server_bits), (options, response)
    if CLIENT_BITS in offered and options.client_bits is not None:
        assert not isinstance(options.client_bits, bool)
        assert _at_most(params.get(CLIENT_BITS), options.client_bits), (options, response)
    return params


def check_client_accept(offered: dict[str, int | None], response: ExtensionOffer) -> None:
    """``ClientPerMessageDeflate.accept()`` takes exactly the valid responses to its offer.

    And the extension it builds keeps to the response: it compresses within
    the window the server allowed and afresh if told to, and inflates with a
    window as large as the server's and afresh only if the server said so.
    """
    params = valid_response(offered, response)
    try:
        extension: PerMessageDeflate | None = client_factory(offered).accept(response)
    except ValueError as exc:
        extension, refusal = None, str(exc)
    if extension is None:
        assert params is None, f"the client refused valid {response} to {offered}: {refusal}"
        return
    assert params is not None, f"the client accepted invalid {response} to {offered}"
    assert isinstance(extension, PerMessageDeflate), extension
    own = params.get(CLIENT_BITS) or offered.get(CLIENT_BITS) or 15
    assert extension.local_max_window_bits <= own, (offered, response, extension)
    assert extension.remote_max_window_bits >= (params.get(SERVER_BITS) or 15), extension
    if CLIENT_NCT in params or CLIENT_NCT in offered:
        assert extension.local_no_context_takeover, (offered, response, extension)
    if extension.remote_no_context_takeover:
        assert SERVER_NCT in params, (offered, response, extension)


def client_factory(offered: dict[str, int | None]) -> ClientPerMessageDeflate:
    """The ``ClientPerMessageDeflate`` that makes the offer ``offered``."""
    client_bits: int | bool = False
    if CLIENT_BITS in offered:
        value = offered[CLIENT_BITS]
        client_bits = True if value is None else value
    return ClientPerMessageDeflate(
        server_no_context_takeover=SERVER_NCT in offered,
        client_no_context_takeover=CLIENT_NCT in offered,
        server_max_window_bits=offered.get(SERVER_BITS),
        client_max_window_bits=client_bits,
    )


def _malformed(server: ServerConnection, offers: list[Offer], exc: HandshakeError) -> None:
    assert not all(offer.well_formed for offer in offers), f"{exc!r} for a valid header"
    assert exc.status_code == 400, exc
    assert server.state is State.CLOSED, server.state
    assert server.data_to_send().startswith(b"HTTP/1.1 400 "), exc


def handshake_mode(draw: Draw) -> tuple[str, int]:
    options, offers = draw_handshake(draw.rest())
    server = ServerConnection(extensions=[options.server()], check_origin=None)
    server.receive_data(request(offers))
    try:
        event = server.next_event()
    except HandshakeError as exc:
        _malformed(server, offers, exc)
        return ("malformed", 0)
    assert isinstance(event, HandshakeRequest), event
    if all(offer.well_formed for offer in offers):
        assert list(event.extensions) == [offer.parsed() for offer in offers], event.extensions
    chosen = next(
        (params for offer in event.extensions if (params := valid_offer(offer)) is not None), None
    )
    # Each permessage-deflate element of the header, read as a server's
    # response to the offer (the handshake only gives a factory its own name's).
    offered = chosen if chosen is not None else {CLIENT_BITS: None}
    for element in event.extensions:
        if element.name == NAME:
            check_client_accept(offered, element)
    agreed = server.accept()
    response = server.data_to_send()
    head = response.split(b"\r\n\r\n")[0].decode("latin-1")
    values = [
        line.split(":", 1)[1].strip()
        for line in head.split("\r\n")[1:]
        if line.lower().startswith("sec-websocket-extensions:")
    ]
    assert parse_extensions(values) == list(agreed.extensions), (values, agreed)
    if chosen is None:
        assert not agreed.extensions, (event.extensions, agreed)
        assert not server.extensions, (event.extensions, server.extensions)
        return ("declined", 0)
    (answer,) = agreed.extensions
    params = check_response(options, chosen, answer)
    (extension,) = server.extensions
    assert isinstance(extension, PerMessageDeflate), extension
    # The server keeps its answer: it compresses within the window it
    # announced, and afresh if it said so.
    assert extension.local_max_window_bits <= (params.get(SERVER_BITS) or 15), (extension, answer)
    if SERVER_NCT in params:
        assert extension.local_no_context_takeover, (extension, answer)
    # The client that made this offer accepts the answer.
    client_offer = client_factory(chosen).offer()
    assert sorted(client_offer.params) == sorted(
        (name, None if value is None else str(value)) for name, value in chosen.items()
    ), (client_offer, chosen)
    client = ClientConnection(
        "ws://example.com/", extensions=[client_factory(chosen)], random_bytes=fixed_random
    )
    client.data_to_send()
    client.receive_data(response)
    try:
        opened = client.next_event()
    except HandshakeError as exc:
        raise AssertionError(f"the client refused {answer} to {chosen}: {exc!r}") from exc
    assert isinstance(opened, HandshakeResponse), opened
    (theirs,) = client.extensions
    assert isinstance(theirs, PerMessageDeflate), theirs
    # They agree: each side inflates with a window at least as large as the
    # other deflates with (8 bits: it does not; 8 bits read as 9), and starts
    # each message afresh only if the other compresses each message afresh.
    for sender, receiver in ((theirs, extension), (extension, theirs)):
        pair_text = f"sender {sender}, receiver {receiver}; {chosen}, {answer}"
        window = sender.local_max_window_bits
        assert window == 8 or window <= max(receiver.remote_max_window_bits, 9), pair_text
        if receiver.remote_no_context_takeover:
            assert sender.local_no_context_takeover, pair_text
    # And they understand each other; twice each way, so that context takeover matters.
    pair = ConnectionPair(client, server)
    text = "permessage-deflate " * 8
    for _ in range(2):
        client.send_text(text)
        server.send_binary(text.encode())
    client_events, server_events = pair.transfer()
    assert client_events == [Message(data=text.encode())] * 2, client_events
    assert server_events == [Message(data=text)] * 2, server_events
    return ("accepted", len(params))


# -- entry point -------------------------------------------------------------------------


def run(data: bytes) -> tuple[str, int]:
    """Run one input; return what it reached (for the seeds' checks)."""
    draw = Draw(data)
    mode = draw.byte() & 3
    if mode == ROUNDTRIP:
        return roundtrip_mode(draw)
    if mode == HANDSHAKE:
        return handshake_mode(draw)
    return read_mode(draw, build=mode == BUILD)


def write_read(params: ReadParams, layout: Layout, *, build: bool = False) -> bytes:
    """Build a read or build input (for seeds)."""
    writer = Writer()
    writer.byte(BUILD if build else READ)
    params.write(writer)
    writer.take(join_input(layout))
    return writer.done()


def TestOneInput(data: bytes) -> None:
    run(data)


def main() -> None:
    atheris.Setup(sys.argv, TestOneInput)
    atheris.Fuzz()


if __name__ == "__main__":
    main()
