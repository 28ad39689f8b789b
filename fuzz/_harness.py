"""What the fuzz targets share: the input layout, a test extension, and the read contract.

The targets import this module inside ``atheris.instrument_imports()``, so the
``wsproto_core`` it pulls in is instrumented. This module itself is not (it is
not in the ``include`` list): its own branches would only be noise to the fuzzer.

A contract violation is an ``AssertionError`` (the fuzzer reports it as a
crash); any exception that is not one of the core's documented ones is a
crash too, simply by escaping ``TestOneInput``.
"""

from __future__ import annotations

import codecs
from dataclasses import dataclass

import atheris

from wsproto_core import (
    Close,
    CloseCode,
    Connection,
    Event,
    ExtensionOffer,
    Frame,
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
    is_valid_close_code,
    parse_close_payload,
    parse_frame,
)
from wsproto_core.extensions import ClientExtensionFactory, Extension, ServerExtensionFactory
from wsproto_core.frames import RSV1, parse_header

Item = tuple[object, ...]

# -- input layout ----------------------------------------------------------------------


#: Option bit shared by every target that reads a :class:`Layout`.
EMPTY_READS = 0x80


@dataclass(frozen=True)
class Layout:
    """A fuzz input, split: option bits, chunk sizes, and the bytes to feed.

    ``FuzzedDataProvider`` takes integers from the *end* of the input and bytes
    from the front, so an input is ``wire + tail``: seeds are easy to write, and
    most mutations of the wire leave the options alone.

    Attributes:
        options: eight option bits; each target says what bits 0-6 mean. Bit 7
            feeds an empty chunk before each one: ``receive_data(b"")`` is an
            empty read, which must change nothing (the end of the stream is
            ``receive_eof()``).
        sizes: chunk sizes, used in turn; empty means "all in one piece".
        wire: the bytes the peer sends.
    """

    options: int
    sizes: tuple[int, ...]
    wire: bytes

    def chunks(self) -> list[bytes]:
        """Cut :attr:`wire` into pieces of :attr:`sizes`, cycling through them."""
        if not self.sizes:
            chunks = [self.wire]
        else:
            chunks = []
            pos = 0
            while pos < len(self.wire):
                size = self.sizes[len(chunks) % len(self.sizes)]
                chunks.append(self.wire[pos : pos + size])
                pos += size
        if self.options & EMPTY_READS:
            return [piece for chunk in chunks for piece in (b"", chunk)]
        return [chunk for chunk in chunks if chunk]


def _chunk_size(byte: int) -> int:
    # 1..192 byte by byte (header boundaries), then up to 16 KiB in 256-byte steps.
    return byte + 1 if byte < 192 else (byte - 191) * 256


def split_input(data: bytes) -> Layout:
    """Split a fuzz input; :func:`join_input` is the inverse."""
    fdp = atheris.FuzzedDataProvider(data)
    options = fdp.ConsumeIntInRange(0, 255)
    count = fdp.ConsumeIntInRange(0, 255) % 8
    sizes = tuple(_chunk_size(fdp.ConsumeIntInRange(0, 255)) for _ in range(count))
    return Layout(options, sizes, fdp.ConsumeBytes(fdp.remaining_bytes()))


def join_input(layout: Layout) -> bytes:
    """Build the fuzz input that :func:`split_input` splits into ``layout`` (for seeds)."""
    tail = [layout.options, len(layout.sizes)]
    for size in layout.sizes:
        byte = size - 1 if size <= 192 else 191 + size // 256
        if _chunk_size(byte) != size or not 0 <= byte <= 255:
            raise ValueError(f"chunk size {size} cannot be encoded")
        tail.append(byte)
    data = layout.wire + bytes(reversed(tail))
    assert split_input(data) == layout, "the input layout changed; update join_input"
    return data


# -- determinism -----------------------------------------------------------------------

#: RFC 6455 §1.3's example: this nonce is the key ``dGhlIHNhbXBsZSBub25jZQ==``.
SAMPLE_NONCE = b"the sample nonce"
SAMPLE_KEY = "dGhlIHNhbXBsZSBub25jZQ=="
SAMPLE_ACCEPT = "s3pPLMBiTxaQ9kYGzzhZRbK+xOo="


def fixed_random(size: int) -> bytes:
    """Stand in for ``os.urandom``: a crash must replay the same masking keys.

    A client's ``Sec-WebSocket-Key`` is then :data:`SAMPLE_KEY`, so the fuzzer
    can reach an accepted handshake by finding :data:`SAMPLE_ACCEPT`.
    """
    return (SAMPLE_NONCE * (size // 16 + 1))[:size]


# -- a test extension ------------------------------------------------------------------

EXTENSION_NAME = "x-flip"
_FLIP = bytes(byte ^ 0x20 for byte in range(256))


class FlipExtension(Extension):
    """Flip bit 5 of every payload byte of a message sent with RSV1.

    No real extension ships with the core yet; this one drives the same code
    paths (RSV bits allowed, payload transformed piece by piece, size checked
    after decoding), and a sender that forgot it would be caught at once.

    With ``fail_on_ff`` it raises ``ValueError`` when a message's first payload
    byte is 0xFF, as a buggy extension might; the core must fail the connection
    with 1011. Only the first byte, so that it fires however the input is chunked.
    """

    name = EXTENSION_NAME
    rsv = RSV1

    def __init__(self, *, fail_on_ff: bool = False) -> None:
        self._fail_on_ff = fail_on_ff
        self._started = False

    def decode(
        self, data: bytes, *, rsv: int, fin: bool, max_size: int | None, text: bool = False
    ) -> bytes:
        if data and not self._started:
            self._started = True
            if self._fail_on_ff and data[0] == 0xFF:
                raise ValueError("simulated extension bug")
        if fin:
            self._started = False
        decoded = data.translate(_FLIP)
        return decoded if max_size is None else decoded[: max_size + 1]

    def encode(self, data: bytes, *, first: bool, fin: bool) -> tuple[bytes, int]:
        return data.translate(_FLIP), RSV1


class ClientFlip(ClientExtensionFactory):
    """Offer ``x-flip``; a response with parameters fails the handshake."""

    name = EXTENSION_NAME
    rsv = RSV1

    def offer(self) -> ExtensionOffer:
        return ExtensionOffer(EXTENSION_NAME)

    def accept(self, response: ExtensionOffer) -> Extension:
        if response.params:
            raise ValueError("x-flip takes no parameters")
        return FlipExtension()


class ServerFlip(ServerExtensionFactory):
    """Accept an ``x-flip`` offer without parameters; decline the others."""

    name = EXTENSION_NAME
    rsv = RSV1

    def negotiate(self, offer: ExtensionOffer) -> tuple[ExtensionOffer, Extension] | None:
        if offer.params:
            return None
        return ExtensionOffer(EXTENSION_NAME), FlipExtension()


def flip(data: bytes) -> bytes:
    """What :class:`FlipExtension` does to a payload (its own inverse)."""
    return data.translate(_FLIP)


# -- wire checks -----------------------------------------------------------------------


def parse_wire(data: bytes, *, masked: bool) -> list[Frame]:
    """Parse the frames a core queued: whole frames only, masked exactly when ``masked``.

    Each must also re-serialize to the same bytes, i.e. use the shortest length
    encoding ("the minimal number of bytes MUST be used" -- RFC 6455 §5.2).
    """
    frames = []
    pos = 0
    while pos < len(data):
        header = parse_header(data, pos)
        parsed = parse_frame(data, pos)
        assert header is not None, f"the core queued a partial frame header: {data[pos:]!r}"
        assert parsed is not None, "the core queued a partial frame"
        frame, was_masked, end = parsed
        assert was_masked is masked, f"frame masked={was_masked}, expected {masked}"
        assert frame.serialize(header.mask_key) == data[pos:end], "not the shortest encoding"
        frames.append(frame)
        pos = end
    return frames


# -- the read contract -----------------------------------------------------------------

_PROTOCOL_ERRORS = frozenset(
    {
        CloseCode.PROTOCOL_ERROR,
        CloseCode.INVALID_FRAME_PAYLOAD_DATA,
        CloseCode.MESSAGE_TOO_BIG,
    }
)


def _short(value: object) -> str:
    text = repr(value)
    return text if len(text) <= 300 else text[:300] + "..."


class FrameReader:
    """Read an open connection that sends nothing itself, checking every step.

    * ``next_event()`` returns events or raises ``RemoteProtocolError``; nothing else.
    * After the error: state ``CLOSED``, the last frame queued is a Close with the
      error's code, and ``next_event()`` returns ``None`` for good, whatever arrives.
    * Events are well formed: text is ``str``, streamed text is valid UTF-8 piece
      by piece, ``MessageData`` is never empty, control payloads fit in 125
      bytes, a close code may appear on the wire, nothing follows ``Close``.
    * The read limit holds after any extension's decoding: no ``Message``, and
      no streamed message so far, is longer than ``max_message_size``.
    * What it queues is exactly one Pong per Ping (with ``auto_pong``), then the
      Close echo or the failing Close; masked if and only if it is a client.

    :attr:`items` and :meth:`check_output` summarize a run in a form that does
    not depend on how the input was chunked: whole messages (a message cut
    short by an error or the end of input is left out), control events, errors.

    Args:
        conn: an ``OPEN`` connection, freshly made or just past its handshake.
        internal_errors: a buggy extension is installed, so 1011 may be raised.
    """

    def __init__(self, conn: Connection, *, internal_errors: bool = False) -> None:
        assert conn.state is State.OPEN, conn.state
        self.conn = conn
        self.items: list[Item] = []
        self.error: RemoteProtocolError | None = None
        self.closed = False
        self._allowed_codes = _PROTOCOL_ERRORS | (
            {CloseCode.INTERNAL_ERROR} if internal_errors else set()
        )
        self._expected_out: list[Item] = []
        self._out = bytearray()
        # The streamed message being read: its type, pieces, and UTF-8 check.
        self._stream: tuple[MessageType, list[bytes], codecs.IncrementalDecoder] | None = None
        self._streamed = 0  # its size so far

    @property
    def done(self) -> bool:
        """A ``Close`` event was returned or the connection failed."""
        return self.closed or self.error is not None

    def feed(self, chunk: bytes) -> None:
        """Feed bytes received, then read every event they complete.

        While the connection lends the payload of a large message
        (``payload_buffer()``), the chunk goes into it first, as a
        transport's ``recv_into()`` would put it: so the chunked feed, which
        the targets compare with the whole one, also checks reading in place.
        """
        conn = self.conn
        rest = memoryview(chunk)
        while rest and (view := conn.payload_buffer()) is not None:
            size = min(len(view), len(rest))
            view[:size] = rest[:size]
            conn.payload_received(size)
            rest = rest[size:]
            self.drain()
        if rest or not chunk:
            conn.receive_data(bytes(rest))
            self.drain()

    def finish(self) -> list[Item]:
        """End the input as the transport would, read what remains, check what was queued.

        Returns:
            The frames queued, as :meth:`check_output` returns them.
        """
        self.conn.receive_eof()
        self.drain()
        # The transport ended, so the connection must be over.
        assert self.done, "no Close or error after the end of input"
        return self.check_output()

    def drain(self) -> None:
        """Call ``next_event()`` until it returns ``None``."""
        conn = self.conn
        while True:
            try:
                event = conn.next_event()
            except RemoteProtocolError as exc:
                self._failed(exc)
                continue  # the next call must return None
            if event is None:
                break
            self._event(event)
        self._out += conn.data_to_send()
        expected = State.CLOSED if self.done else State.OPEN
        assert conn.state is expected, f"state {conn.state}, expected {expected}"

    def _failed(self, exc: RemoteProtocolError) -> None:
        assert not self.done, f"{exc!r} raised after the connection was over"
        assert exc.code in self._allowed_codes, f"unexpected close code in {exc!r}"
        assert isinstance(exc, ReadLimitError) is (exc.code == CloseCode.MESSAGE_TOO_BIG), exc
        assert self.conn.state is State.CLOSED, f"state {self.conn.state} after {exc!r}"
        self.error = exc
        self._stream = None
        self.items.append(("error", exc.code))
        self._expected_out.append(("close", exc.code))

    def _event(self, event: Event) -> None:
        assert not self.done, f"{event!r} after the connection was over"
        stream = self._stream
        if isinstance(event, Message):
            assert stream is None, f"{event!r} inside a streamed message"
            assert not self.conn.stream_messages, f"{event!r} while streaming messages"
            if type(event.data) is str:
                self._within_limit(len(_encodable(event.data)))
                self.items.append(("message", "text", event.data))
            else:
                assert type(event.data) is bytes, f"Message.data is a {type(event.data)}"
                self._within_limit(len(event.data))
                self.items.append(("message", "binary", event.data))
        elif isinstance(event, MessageStart):
            assert stream is None, f"{event!r} inside a streamed message"
            assert self.conn.stream_messages, f"{event!r} while not streaming messages"
            assert event.message_type in (MessageType.TEXT, MessageType.BINARY), event
            self._stream = (event.message_type, [], codecs.getincrementaldecoder("utf-8")())
            self._streamed = 0
        elif isinstance(event, MessageData):
            assert stream is not None, f"{event!r} outside a streamed message"
            assert type(event.data) is bytes, f"MessageData.data is a {type(event.data)}"
            assert event.data, "empty MessageData"
            if stream[0] is MessageType.TEXT:
                _valid_utf8(stream[2], event.data, final=False)
            stream[1].append(event.data)
            self._streamed += len(event.data)
            self._within_limit(self._streamed)
        elif isinstance(event, MessageEnd):
            assert stream is not None, "MessageEnd outside a streamed message"
            message_type, pieces, decoder = stream
            self._stream = None
            data = b"".join(pieces)
            if message_type is MessageType.TEXT:
                _valid_utf8(decoder, b"", final=True)
                self.items.append(("message", "text", data.decode()))
            else:
                self.items.append(("message", "binary", data))
        elif isinstance(event, (Ping, Pong)):
            assert type(event.payload) is bytes, event
            assert len(event.payload) <= 125, event
            if isinstance(event, Ping):
                self.items.append(("ping", event.payload))
                if self.conn.auto_pong:
                    self._expected_out.append(("pong", event.payload))
            else:
                self.items.append(("pong", event.payload))
        elif isinstance(event, Close):
            code = event.code
            assert is_valid_close_code(code) or code in (1005, 1006), f"close code {code}"
            assert code != 1005 or not event.reason, event
            assert len(_encodable(event.reason)) <= 123, event
            self.closed = True
            self._stream = None
            self.items.append(("close", code, event.reason))
            if code != CloseCode.ABNORMAL_CLOSURE:  # 1006: the transport ended, nothing to echo
                self._expected_out.append(("close", code))
        else:
            raise AssertionError(f"unexpected event {event!r}")

    def _within_limit(self, size: int) -> None:
        limit = self.conn.max_message_size
        assert limit is None or size <= limit, f"{size} bytes delivered, read limit {limit}"

    def check_output(self) -> list[Item]:
        """Check what the connection queued against the events and the error.

        Returns:
            The frames queued: ``("pong", payload)`` and ``("close", code)``.
        """
        self._out += self.conn.data_to_send()
        frames = parse_wire(bytes(self._out), masked=self.conn.role is Role.CLIENT)
        sent: list[Item] = []
        reason = ""
        for frame in frames:
            if frame.opcode is Opcode.PONG:
                sent.append(("pong", frame.payload))
            elif frame.opcode is Opcode.CLOSE:
                code, reason = parse_close_payload(frame.payload)
                sent.append(("close", code))
            else:
                raise AssertionError(f"a reader queued a {frame.opcode.name} frame")
        assert sent == self._expected_out, (
            f"queued {_short(sent)}, expected {_short(self._expected_out)}"
        )
        if self.error is not None:
            assert self.error.reason.startswith(reason), f"close reason {reason!r}"
        return sent


def _valid_utf8(decoder: codecs.IncrementalDecoder, data: bytes, *, final: bool) -> None:
    try:
        decoder.decode(data, final)
    except UnicodeDecodeError as exc:
        raise AssertionError(f"invalid UTF-8 in a streamed text message: {exc}") from None


def _encodable(text: str) -> bytes:
    # A str decoded from valid UTF-8 has no lone surrogates, so it encodes back.
    try:
        return text.encode()
    except UnicodeEncodeError as exc:
        raise AssertionError(f"text that is not valid Unicode: {exc}") from None
