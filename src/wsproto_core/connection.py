"""WebSocket connections: the framing state machine, for either role.

One driving style, h11's, everywhere:

* ``receive_data(bytes)`` / ``receive_eof()`` store what the network gave;
  they never parse and never raise for the peer's sake.
* ``next_event()`` parses lazily and returns one event, or ``None`` when it
  needs more bytes. It is the only place a peer's error surfaces.
* ``send_*()`` methods queue frames; ``data_to_send()`` returns everything
  queued, including what ``next_event()`` queued (Pongs, the Close echo, the
  Close that fails a connection). Drain it after every call of either kind.

Invariants:

* Input is consumed as it arrives: a data frame's payload is unmasked,
  decoded, size-checked and UTF-8-checked piece by piece, so the receive
  buffer never holds more than the last read, errors are found at the first
  bad byte, and nothing larger than the read limit is ever allocated.
* A piece is at most ``MAX_PIECE_SIZE`` bytes, before and after decoding
  (when the extensions keep to it): what an extension holds back is passed on
  before more payload is read, so a streamed message of any size, compressed
  or not, passes in bounded memory.
* A message delivered whole takes memory proportional to its payload
  however it was cut: small pieces are joined as they come, a run at a
  time, not kept as one object each (see :mod:`~wsproto_core.assembly`).
* Once a Close frame is received or the connection fails, input is
  discarded (RFC 6455 §1.4, §7.1.7).
* Every state change goes through :func:`~wsproto_core.state.transition`.
"""

from __future__ import annotations

import enum
import os
import struct
from collections.abc import Callable, Mapping, Sequence
from contextlib import suppress
from typing import Any

from .assembly import SMALL_PIECE, PieceJoiner
from .constants import CloseCode, MessageType, Opcode
from .errors import HandshakeError, LocalProtocolError, ReadLimitError, RemoteProtocolError
from .events import (
    Close,
    Event,
    HandshakeRejected,
    HandshakeRequest,
    HandshakeResponse,
    HTTPRequest,
    Message,
    MessageData,
    MessageEnd,
    MessageStart,
    Ping,
    Pong,
)
from .extensions.base import (
    MAX_PIECE_SIZE,
    PLAIN,
    ClientExtensionFactory,
    Extension,
    ServerExtensionFactory,
)
from .extensions.permessage_deflate import PerMessageDeflate
from .frames import (
    FIN,
    RSV1,
    RSV3,
    format_close_message,
    parse_close_payload,
    read_header,
    read_header_fast,
    read_message_fast,
    serialize_header,
)
from .handshake import (
    DEFAULT_MAX_HANDSHAKE_SIZE,
    DEFAULT_MAX_REJECTED_BODY_SIZE,
    ClientHandshake,
    ErrorRenderer,
    OriginCheck,
    ServerHandshake,
    plain_text_error,
    same_origin,
)
from .headers import HeadersLike
from .mask import apply_mask, mask_frame
from .payload import PayloadBuffer, new_payload_buffer
from .prepared import PreparedMessage
from .state import RECEIVE_TRANSITIONS, SEND_TRANSITIONS, State, transition
from .uri import WebSocketURI
from .utf8 import Utf8Decoder, decode_text

__all__ = [
    "DEFAULT_MAX_MESSAGE_SIZE",
    "ClientConnection",
    "Connection",
    "Role",
    "ServerConnection",
]

DEFAULT_MAX_MESSAGE_SIZE = 1024 * 1024
_MASK_POOL = 4096  # random bytes fetched at once: 1024 masking keys per system call
_SMALL = 4096  # payloads below this are sliced, above it copied through a memoryview
_COMPRESSED_PIECE = 4096  # compressed payload is decoded in pieces of this, at most
_TEXT_RUN = 256  # the small pieces of a text message are joined this many at a time
# A binary frame at least this large that is not here whole when its header
# is read goes straight into its message (payload.py says why).
_DIRECT_MIN = 16384
# ... and at most this large: its buffer is allocated when the header
# arrives, for the length the peer claims, so without a read limit a claim
# of terabytes would be a MemoryError (fuzz/corpus/frames/crash-1b9036...).
# A larger message comes in pieces, in memory that grows as bytes arrive.
_DIRECT_MAX = 64 * 1024 * 1024
_JOIN_BELOW = 65536  # buffers_to_send() joins small frames into buffers of about this size

Data = bytes | bytearray | memoryview


_pack_short = struct.Struct("!BB").pack  # a header with a 7-bit length (RFC 6455 §5.2)
_pack_medium = struct.Struct("!BBH").pack  # ... with a 16-bit length
_MASKED = 0x80  # the MASK bit of a header's second byte

# The enum members the per-message paths compare against, as module globals:
# on Python 3.11 an enum member looked up on its class costs about 60 ns,
# three times a global, several times per message.
_CONNECTING = State.CONNECTING
_OPEN = State.OPEN
_TEXT = MessageType.TEXT
_BINARY = MessageType.BINARY
_OP_TEXT = Opcode.TEXT
_OP_BINARY = Opcode.BINARY
_new = object.__new__
# The slot's descriptor: sets the field of a frozen event that nobody has seen yet.
_set_message_data: Callable[[Message, str | bytes], None] = vars(Message)["data"].__set__


class _LaterMasked:
    """A client's large ``bytes`` payload, queued with its header and key, masked as it is taken.

    ``buffers_to_send(mask_limit=...)`` masks it piece by piece, so that a
    blocking writer sends each piece while it is still in the CPU's cache
    (docs/performance.md, W4). Only immutable payloads wait: a bytearray
    could change before it is sent.
    """

    __slots__ = ("header", "key", "payload", "taken", "view")

    def __init__(self, header: bytes, payload: bytes, key: bytes) -> None:
        self.header = header
        self.payload = payload
        self.view = memoryview(payload)
        self.key = key
        self.taken = 0  # payload bytes already masked and handed out

    def take(self, limit: int | None) -> bytes:
        """The next piece, at most ``limit`` payload bytes (all that is left if ``None``)."""
        start = self.taken
        end = size = len(self.payload)
        if limit is not None and start + limit < size:
            end = start + limit
        self.taken = end
        if start == 0:
            return mask_frame(self.header, self.view[:end], self.key)
        # The key's phase continues where the last piece stopped (RFC 6455 §5.3: j MOD 4).
        return apply_mask(self.view[start:end], self.key, start)

    @property
    def done(self) -> bool:
        """Whether the whole frame was handed out."""
        return self.taken == len(self.payload)


def _message(data: str | bytes) -> Message:
    """``Message(data=data)`` without the frozen dataclass's ``__init__`` (twice the cost)."""
    message = _new(Message)
    _set_message_data(message, data)
    return message


# The decoders by RSV value of a connection without extensions.
_NO_DECODERS: dict[int, tuple[tuple[Extension, int], ...]] = {0: ()}
_NO_INFLATERS: dict[int, PerMessageDeflate] = {}


class Role(enum.Enum):
    """Which end of the connection we are; it decides who masks (RFC 6455 §5.1)."""

    CLIENT = "client"
    SERVER = "server"


class Connection:
    """A WebSocket connection whose handshake is done: the framing layer.

    Build one directly for a stream opened by other means (for example an
    HTTP/2 extended CONNECT, RFC 8441) or in tests; it starts ``OPEN``. For
    the HTTP/1.1 handshake, use :class:`ClientConnection` or
    :class:`ServerConnection`, which start ``CONNECTING``.

    Args:
        role: our role; a client masks its frames, a server refuses
            unmasked ones.
        extensions: negotiated extensions, in the order of the handshake.
        subprotocol: the negotiated subprotocol, if any.
        max_message_size: the read limit in bytes (after decompression), or
            ``None`` for none; a longer message fails the connection with 1009.
        auto_pong: answer each Ping with a Pong automatically.
        stream_messages: deliver messages as :class:`MessageStart`,
            :class:`MessageData`, :class:`MessageEnd` instead of whole; each
            :class:`MessageData` holds at most ``MAX_PIECE_SIZE`` (256 KiB),
            decompressed or not. See also :attr:`stream_min_size`.
        random_bytes: the source of masking keys; must be unpredictable
            (RFC 6455 §10.3). Replace it only in tests.
    """

    # Slots: 10,000 idle connections each save the ~1.5 KiB of a dict (W5).
    # A subclass without __slots__ gets a __dict__ back, and works as before.
    __slots__ = (
        "_buffer",
        "_claimed_rsv",
        "_client",
        "_decoders",
        "_decoders_by_rsv",
        "_direct",
        "_direct_view",
        "_eof",
        "_failed",
        "_fin",
        "_frame_key",
        "_held",
        "_held_last",
        "_in_frame",
        "_inflaters",
        "_joiner",
        "_later",
        "_mask_pool",
        "_mask_pos",
        "_max_size",
        "_offset",
        "_out",
        "_pending",
        "_pos",
        "_random_bytes",
        "_reading",
        "_remaining",
        "_role",
        "_rsv",
        "_run",
        "_sending",
        "_size",
        "_state",
        "_streaming",
        "_text",
        "_texts",
        "_utf8",
        "auto_pong",
        "close_received",
        "close_sent",
        "extensions",
        "stream_messages",
        "stream_min_size",
        "subprotocol",
    )

    def __init__(
        self,
        role: Role,
        *,
        extensions: Sequence[Extension] = (),
        subprotocol: str | None = None,
        max_message_size: int | None = DEFAULT_MAX_MESSAGE_SIZE,
        auto_pong: bool = True,
        stream_messages: bool = False,
        random_bytes: Callable[[int], bytes] = os.urandom,
    ) -> None:
        self._role = role
        self._client = role is Role.CLIENT
        self._state = State.OPEN
        self._set_extensions(extensions)
        self.subprotocol = subprotocol
        self.max_message_size = max_message_size
        self.auto_pong = auto_pong
        self.stream_messages = stream_messages
        """Deliver the next messages in pieces; takes effect at the next message."""
        self.stream_min_size = 0
        """In streaming mode, deliver shorter messages whole.

        An uncompressed, unfragmented message shorter than this comes as one
        :class:`Message` when its frame is already here whole (three events
        would cost more and save no memory), and a binary one also when it
        is not: it is then read straight into place (see
        :meth:`payload_buffer`), in memory this size bounds. 0 (the default)
        streams every message.
        """
        self._random_bytes = random_bytes
        self._mask_pool = b""
        self._mask_pos = 0

        self._eof = False
        self._failed = False
        self._pending: Event | None = None  # the MessageEnd after a last MessageData
        # Frames to send; a _LaterMasked among them sets _later (see _take_later()).
        self._out: list[bytes | _LaterMasked] = []
        self._later = False
        self.close_sent: Close | None = None
        """The Close we sent, or ``None``."""
        self.close_received: Close | None = None
        """The Close we received (code 1006 if the transport ended without one), or ``None``."""

        # Input not yet consumed is self._buffer[self._pos:].
        self._buffer: bytes | bytearray = b""
        self._pos = 0
        # The data frame being read: its FIN bit, key, and how much payload is left.
        self._in_frame = False
        self._fin = False
        self._frame_key: bytes | None = None
        self._remaining = 0
        self._offset = 0
        # A large binary message in one frame goes straight into its payload
        # (see _direct_event), with the view of it lent by payload_buffer().
        self._direct: PayloadBuffer | None = None
        self._direct_view: memoryview | None = None
        # The message being read.
        self._reading = False
        self._text = False
        self._rsv = 0
        self._size = 0
        self._streaming = False
        self._utf8: Utf8Decoder | None = None
        # A message delivered whole, so far, in memory proportional to its
        # size: the payload of a binary one; the text of a text one, and the
        # small pieces of text after it, to be joined into one string.
        # Made when a message comes in several pieces, dropped at its end:
        # most messages come whole, and an idle connection is smaller.
        self._joiner: PieceJoiner | None = None
        self._texts: list[str] | None = None
        self._run: list[str] | None = None
        # The extensions that decode the message, in the order they run, with
        # their RSV bits; and whether they hold back output of the last piece
        # of payload (and whether that piece was the message's last).
        self._decoders: tuple[tuple[Extension, int], ...] = ()
        self._held = False
        self._held_last = False
        # The message being sent in fragments, if any.
        self._sending: Opcode | None = None

    def _set_extensions(self, extensions: Sequence[Extension]) -> None:
        if not extensions:  # the common case, shared (never mutated)
            self.extensions: tuple[Extension, ...] = ()
            self._claimed_rsv = 0
            self._decoders_by_rsv = _NO_DECODERS
            self._inflaters = _NO_INFLATERS
            return
        claimed = 0
        for extension in extensions:
            if extension.rsv & claimed:
                raise LocalProtocolError("two extensions claim the same RSV bit")
            claimed |= extension.rsv
        self.extensions = tuple(extensions)
        self._claimed_rsv = claimed
        # For each RSV value a message may start with: the extensions that
        # decode it, with their bits. Decoding undoes encoding, so they run in
        # the reverse of the order they were negotiated in (and encode in).
        self._decoders_by_rsv = {
            rsv: tuple(
                (extension, rsv & extension.rsv)
                for extension in reversed(self.extensions)
                if rsv & extension.rsv
            )
            for rsv in range(0, RSV1 << 1, RSV3)
            if not rsv & ~claimed
        }
        # The RSV values of messages that permessage-deflate alone decodes:
        # those it can inflate whole in one step (see _frame_event).
        self._inflaters = {
            rsv: decoders[0][0]
            for rsv, decoders in self._decoders_by_rsv.items()
            # The class itself: a subclass may decode otherwise.
            if len(decoders) == 1 and type(decoders[0][0]) is PerMessageDeflate
        }

    # -- properties -------------------------------------------------------------

    @property
    def role(self) -> Role:
        """Our role."""
        return self._role

    @property
    def state(self) -> State:
        """The connection's state."""
        return self._state

    @property
    def max_message_size(self) -> int | None:
        """The read limit in bytes, or ``None``. Applies from the next frame on."""
        return self._max_size

    @max_message_size.setter
    def max_message_size(self, value: int | None) -> None:
        if value is not None and value < 0:
            raise LocalProtocolError("max_message_size must be >= 0, or None for no limit")
        self._max_size = value

    @property
    def buffered_input(self) -> int:
        """Bytes received and not yet turned into events.

        An adapter that parses ahead of its reader can stop reading from
        the network while this is large, and so bound its memory.
        """
        return len(self._buffer) - self._pos

    @property
    def has_data_to_send(self) -> bool:
        """Whether :meth:`data_to_send` would return bytes.

        Cheap, so an adapter can skip its write path (and the locks around
        it) when reading queued nothing: no Pong, no Close echo.
        """
        return bool(self._out)

    def close_expected(self) -> bool:
        """Tell whether the transport should be closed now.

        True once the connection is ``CLOSED`` on a server, and on a client
        whose connection failed or whose transport already ended. A client
        that finished the closing handshake normally waits for the server to
        close the TCP connection first ("the server SHOULD close the TCP
        connection first" -- RFC 6455 §7.1.1); give it a bounded time, then
        close it yourself.
        """
        if self._state is not State.CLOSED:
            return False
        return not self._client or self._failed or self._eof

    # -- input ------------------------------------------------------------------

    def receive_data(self, data: Data) -> None:
        """Feed bytes read from the network.

        Afterwards, call :meth:`next_event` until it returns ``None``, and send
        :meth:`data_to_send` to the peer.

        Raises:
            LocalProtocolError: called after :meth:`receive_eof`.
        """
        if self._eof:
            raise LocalProtocolError("receive_data() after receive_eof()")
        if not data:
            return  # an empty read is not the end of the stream: see receive_eof()
        if self._direct_view is not None:
            self._release_direct_view()
        if self._state is _CONNECTING:
            self._handshake_data(bytes(data))
        elif self.close_received is None and not self._failed:
            self._append(data)

    def receive_eof(self) -> None:
        """Tell the connection that the peer closed its side of the transport.

        Then call :meth:`next_event` as usual: it reports a :class:`Close`
        with code 1006 if the peer vanished without a closing handshake.
        """
        if not self._eof:
            self._eof = True
            if self._state is State.CONNECTING:
                self._handshake_data(b"")

    def _handshake_data(self, data: bytes) -> None:
        raise NotImplementedError  # pragma: no cover - only subclasses start CONNECTING

    def next_event(self) -> Event | None:
        """Return the next event, or ``None`` if more data is needed.

        After it returns, send :meth:`data_to_send`: it may hold a Pong, the
        Close echo, or a handshake response.

        Raises:
            RemoteProtocolError: the peer broke the protocol. The Close frame
                with the RFC's code is queued and the state is ``CLOSED``;
                send :meth:`data_to_send`, then close the transport.
            HandshakeError: the opening handshake failed (see its docs).
        """
        if self._pending is not None:
            event, self._pending = self._pending, None
            return event
        try:
            if self._state is _CONNECTING:
                return self._handshake_event()
            return self._frame_event()
        except RemoteProtocolError as exc:
            self._fail(exc.code, exc.reason)
            raise
        except HandshakeError:
            self._failed = True
            self._state = State.CLOSED
            raise

    def _handshake_event(self) -> Event | None:
        raise NotImplementedError  # pragma: no cover - only subclasses start CONNECTING

    def _fail(self, code: int, reason: str) -> None:
        # "_Fail the WebSocket Connection_": send a Close frame if none was
        # sent, stop processing input, close the transport -- RFC 6455 §7.1.7.
        if self.close_sent is None and self._state is not State.CONNECTING:
            self.close_sent = Close(code=code, reason=reason)
            self._queue_close(format_close_message(code, reason[:100]))
        self._failed = True
        self._state = State.CLOSED
        self._discard_input()

    def _frame_event(self) -> Event | None:
        buf = self._buffer
        while True:
            if self.close_received is not None or self._failed:
                return None
            if self._held:
                # Pass on what the extensions kept back, a piece at a time,
                # before reading more: a streamed message stays bounded.
                chunk, last = self._decode(None, self._held_last)
                event = self._message_piece(chunk, last)
                if event is not None:
                    return event
                continue
            pos = self._pos
            if not self._in_frame:
                if read_message_fast is not None and not self._reading:
                    # The commonest frame (a small whole message) in one
                    # compiled call; for any other, None, and on as below,
                    # which applies every rule (frames.read_message).
                    got = read_message_fast(
                        buf,
                        pos,
                        self._client,
                        self._max_size,
                        self.stream_min_size if self.stream_messages else None,
                    )
                    if got is not None:
                        data, self._pos = got
                        message = _new(Message)
                        _set_message_data(message, data)
                        return message
                header = read_header_fast(buf, pos)
                if header is None:
                    return self._end_of_input()
                if header is NotImplemented:
                    read_header(buf, pos)  # raises the RFC's error (see read_header_fast)
                fin, rsv, opcode, length, mask_key, size = header
                self._check_header(rsv, opcode, length, mask_key)
                start = pos + size
                end = start + length
                if opcode >= 0x8:
                    if len(buf) < end:
                        return self._end_of_input()
                    return self._control(opcode, self._take(start, end, mask_key, 0))
                if (
                    fin
                    and opcode
                    and not rsv
                    and len(buf) >= end
                    and (not self.stream_messages or length < self.stream_min_size)
                ):
                    # The common case in one step: a whole unfragmented message
                    # is here (_check_header applied the read limit).
                    payload = self._take(start, end, mask_key, 0)
                    # _message() inlined (a call less): the dataclass __init__
                    # would cost half of an event, a fifth of a small message.
                    message = _new(Message)
                    _set_message_data(message, decode_text(payload) if opcode == 1 else payload)
                    return message
                if (
                    rsv
                    and fin
                    and opcode
                    and length <= _COMPRESSED_PIECE
                    and len(buf) >= end
                    and not self.stream_messages
                    and (inflater := self._inflaters.get(rsv)) is not None
                ):
                    # The commonest compressed message, whole and in one
                    # frame, inflated in one step: the same rules and result
                    # as piece by piece below (a piece is this long at most).
                    return self._inflated(inflater, opcode, self._take(start, end, mask_key, 0))
                self._pos = start
                self._in_frame = True
                self._fin = fin
                self._frame_key = mask_key
                self._remaining = length
                self._offset = 0
                if opcode:
                    # A large binary frame goes straight into its message
                    # (payload.py), delivered whole even when streaming if
                    # it is shorter than stream_min_size.
                    direct = (
                        fin
                        and opcode == Opcode.BINARY
                        and not rsv
                        and _DIRECT_MIN <= length <= _DIRECT_MAX
                        and (not self.stream_messages or length < self.stream_min_size)
                    )
                    event = self._start_message(opcode, rsv, self.stream_messages and not direct)
                    if event is not None:
                        return event
                    if direct:
                        self._direct = new_payload_buffer(length)
                continue
            direct = self._direct
            if direct is not None:
                return self._direct_event(direct)
            available = len(buf) - pos
            size = self._remaining
            if self._rsv:
                # Compressed payload is decoded in pieces cut at fixed offsets
                # of the frame, whatever the reads: zlib accepts a
                # back-reference beyond the agreed window (RFC 7692 §7.1.2)
                # within one call but not across two, so where the calls
                # split the data must not depend on how the network did.
                size = min(size, _COMPRESSED_PIECE - self._offset % _COMPRESSED_PIECE)
                if available < size:
                    return self._end_of_input()
            elif available < size:
                if not available:
                    return self._end_of_input()
                size = available
            if size > MAX_PIECE_SIZE and self._streaming:
                # Bounded pieces keep what an extension or a stream handles
                # at once small, whatever the size of the read.
                size = MAX_PIECE_SIZE
            chunk = self._take(pos, pos + size, self._frame_key, self._offset)
            self._offset += size
            self._remaining -= size
            last = False
            if not self._remaining:
                self._in_frame = False
                last = self._fin
            if self._decoders:
                chunk, last = self._decode(chunk, last)
            event = self._message_piece(chunk, last)
            if event is not None:
                return event

    def _direct_event(self, direct: PayloadBuffer) -> Event | None:
        """Put what is buffered of a direct payload in place; the message once it is whole."""
        pos = self._pos
        size = min(len(self._buffer) - pos, self._remaining)
        if size:
            with memoryview(self._buffer) as view, view[pos : pos + size] as window:
                direct.put(self._offset, window, self._frame_key)
            self._pos = pos + size
            self._offset += size
            self._remaining -= size
        if self._remaining:
            return self._end_of_input()
        self._release_direct_view()
        try:
            data = direct.finish()
        except BufferError:
            # The transport still holds the view it read into (uvloop lets
            # go only after buffer_updated() returns): a later call delivers.
            return None
        self._direct = None
        self._in_frame = False
        self._reading = False
        return _message(data)

    def payload_buffer(self) -> memoryview | None:
        """Where the next bytes read can go straight into a message, or ``None``.

        While a large binary message arrives, reading into this view (a
        socket's ``recv_into()``, asyncio's ``get_buffer()``) and then
        calling :meth:`payload_received` puts its payload in place with no
        copy, where :meth:`receive_data` copies it from the read's buffer.
        ``None`` means: read as usual and call :meth:`receive_data`. Call it
        after :meth:`next_event` returned ``None``; the view ends at the
        message's end, so it never takes bytes that come after.

        A view is valid until the next call of this method, of
        :meth:`payload_received` or of :meth:`receive_data`.
        """
        if self._direct_view is not None:
            self._release_direct_view()
        direct = self._direct
        if direct is None or not self._remaining or self._pos < len(self._buffer):
            return None  # (never an empty view: a read of 0 bytes means the end)
        with direct.view() as whole:
            view = whole[self._offset : self._offset + self._remaining]
        self._direct_view = view
        return view

    def payload_received(self, nbytes: int) -> None:
        """Tell the connection that ``nbytes`` were read into :meth:`payload_buffer`'s view.

        Then call :meth:`next_event` as after :meth:`receive_data`. A read of
        0 bytes is not the end of the stream: call :meth:`receive_eof`.

        A transport may hold on to the view until after this call (uvloop
        does, until its ``buffer_updated()`` returns); the message is then
        not delivered before a :meth:`next_event` call made after it let go.

        Raises:
            LocalProtocolError: no view is lent, or ``nbytes`` is more than it holds.
        """
        view = self._direct_view
        direct = self._direct
        if view is None or direct is None:
            raise LocalProtocolError("payload_received() without a payload_buffer() view")
        if not 0 <= nbytes <= len(view):
            raise LocalProtocolError(f"payload_received({nbytes}) for a view of {len(view)}")
        self._release_direct_view()
        if nbytes:
            offset = self._offset
            if self._frame_key is not None:
                direct.mask(offset, offset + nbytes, self._frame_key)
            self._offset = offset + nbytes
            self._remaining -= nbytes

    def _release_direct_view(self) -> None:
        view = self._direct_view
        if view is not None:
            self._direct_view = None
            with suppress(BufferError):  # still held by the transport: it lets go later
                view.release()

    def _take(self, start: int, end: int, mask_key: bytes | None, offset: int) -> bytes:
        """Consume ``buffer[start:end]`` and return it unmasked, with one copy."""
        buf = self._buffer
        self._pos = end
        if end - start < _SMALL:
            # Slicing beats setting up a memoryview for small payloads.
            piece = buf[start:end]
            if mask_key is not None:
                return apply_mask(piece, mask_key, offset)
            return piece if type(piece) is bytes else bytes(piece)
        with memoryview(buf) as view, view[start:end] as window:
            return bytes(window) if mask_key is None else apply_mask(window, mask_key, offset)

    def _append(self, data: Data) -> None:
        buf = self._buffer
        pos = self._pos
        if pos >= len(buf):
            # Everything read so far is consumed: adopt the new bytes without
            # copying them (the common case: each read holds whole frames).
            self._buffer = data if type(data) is bytes else bytes(data)
        elif isinstance(buf, bytearray):
            del buf[:pos]  # O(1): CPython moves the bytearray's start
            buf += data
        else:
            # A partial frame is left: from now on, accumulate in a bytearray,
            # whose appends are amortized O(1).
            pending = bytearray(memoryview(buf)[pos:])
            pending += data
            self._buffer = pending
        self._pos = 0

    def _discard_input(self) -> None:
        self._buffer = b""
        self._pos = 0
        self._release_direct_view()
        self._direct = None

    def _end_of_input(self) -> Event | None:
        if not self._eof:
            return None
        # The transport ended without a Close frame: "_The WebSocket
        # Connection is Closed_" with code 1006 (RFC 6455 §7.1.5, §7.4.1).
        event = Close(code=CloseCode.ABNORMAL_CLOSURE)
        self._state = transition(RECEIVE_TRANSITIONS, self._state, Close)
        self.close_received = event
        self._discard_input()
        return event

    def _check_header(self, rsv: int, opcode: int, length: int, mask_key: bytes | None) -> None:
        """Check a frame header against the connection's state and options."""
        # "The server MUST close the connection upon receiving a frame that is
        # not masked. [...] A client MUST close a connection if it detects a
        # masked frame." -- RFC 6455 §5.1
        if (mask_key is None) is not self._client:
            raise RemoteProtocolError(
                CloseCode.PROTOCOL_ERROR,
                "server frame is masked" if self._client else "client frame is not masked",
            )
        if opcode >= 0x8:
            if rsv:
                raise RemoteProtocolError(
                    CloseCode.PROTOCOL_ERROR, "RSV bits set on a control frame"
                )
            return
        if opcode:  # TEXT or BINARY: a new message
            if self._reading:
                raise RemoteProtocolError(
                    CloseCode.PROTOCOL_ERROR, "new message started before the last one ended"
                )
            # "If a nonzero value is received and none of the negotiated
            # extensions defines the meaning of such a nonzero value, the
            # receiving endpoint MUST _Fail the WebSocket Connection_." -- §5.2
            if rsv & ~self._claimed_rsv:
                raise RemoteProtocolError(CloseCode.PROTOCOL_ERROR, "reserved bits set")
            transformed, so_far = rsv, 0
        else:
            if not self._reading:
                raise RemoteProtocolError(
                    CloseCode.PROTOCOL_ERROR, "continuation frame without a message to continue"
                )
            if rsv:
                raise RemoteProtocolError(
                    CloseCode.PROTOCOL_ERROR, "RSV bits set on a continuation frame"
                )
            transformed, so_far = self._rsv, self._size
        # Refuse an announced length past the read limit before buffering any
        # of it. An extension (compression) may change the size, so then the
        # decoded size is checked instead, as it is produced.
        limit = self._max_size
        if limit is not None and not transformed and so_far + length > limit:
            raise ReadLimitError(f"message larger than the read limit of {limit} bytes")

    def _start_message(self, opcode: int, rsv: int, streaming: bool) -> Event | None:
        self._reading = True
        self._text = opcode == Opcode.TEXT
        self._rsv = rsv
        self._decoders = self._decoders_by_rsv[rsv]
        self._size = 0
        self._streaming = streaming
        self._utf8 = None
        if self._streaming:
            return MessageStart(message_type=MessageType(opcode))
        return None

    def _inflated(self, inflater: PerMessageDeflate, opcode: int, payload: bytes) -> Message:
        """A whole compressed message from one frame, as _decode() and _message_piece() make it."""
        text = opcode == _OP_TEXT
        limit = self._max_size
        try:
            data = inflater.decode_message(payload, text=text, max_size=limit)
        except RemoteProtocolError:
            raise
        except Exception as exc:  # as in _decode(): a bug must not escape as a crash
            raise RemoteProtocolError(CloseCode.INTERNAL_ERROR, "internal error") from exc
        if limit is not None and len(data) > limit:
            if text:
                # The text up to the limit first, as _message_piece(): 1007 before 1009.
                Utf8Decoder().decode(data[:limit], False)
            raise ReadLimitError(f"message larger than the read limit of {limit} bytes")
        return _message(decode_text(data) if text else data)

    def _message_piece(self, chunk: bytes, last: bool) -> Event | None:
        size = self._size = self._size + len(chunk)
        limit = self._max_size
        if limit is not None and size > limit:
            if self._text:
                # Check the text up to the limit first, so the close code
                # (1007 before 1009) never depends on how reads were split.
                room = len(chunk) - (size - limit)
                (self._utf8 or Utf8Decoder()).decode(chunk[:room], False)
            raise ReadLimitError(f"message larger than the read limit of {limit} bytes")
        if self._streaming:
            if self._text:
                if self._utf8 is None:
                    self._utf8 = Utf8Decoder()
                self._utf8.decode(chunk, last)
            if last:
                self._reading = False
                if chunk:
                    self._pending = MessageEnd()
                    return MessageData(data=chunk)
                return MessageEnd()
            return MessageData(data=chunk) if chunk else None
        if self._text:
            utf8 = self._utf8
            if utf8 is None:
                if last:
                    self._reading = False
                    return _message(decode_text(chunk))
                if not chunk:
                    return None
                utf8 = self._utf8 = Utf8Decoder()
            text = utf8.decode(chunk, last)  # checked as it comes: fail at the first bad byte
            run, texts = self._run, self._texts
            if run is None or texts is None:
                run, texts = self._run, self._texts = [], []
            if len(chunk) < SMALL_PIECE and not last:
                # A string kept for each small piece would cost far more than
                # its bytes: join them a run at a time.
                if text:
                    run.append(text)
                    if len(run) >= _TEXT_RUN:
                        texts.append("".join(run))
                        run.clear()
                return None
            if run:
                texts.append("".join(run))
                run.clear()
            if text:
                texts.append(text)
            if not last:
                return None
            self._reading = False
            self._texts = self._run = None
            return _message("".join(texts))  # no copy if it is the only piece
        joiner = self._joiner
        if last:
            self._reading = False
            if joiner is None:
                return _message(chunk)
            self._joiner = None
            return _message(joiner.join(chunk))  # no copy if it is the only piece
        if joiner is None:
            joiner = self._joiner = PieceJoiner()
        joiner.append(chunk)
        return None

    def _decode(self, chunk: bytes | None, last: bool) -> tuple[bytes, bool]:
        """Run a piece of payload through the message's extensions.

        Args:
            chunk: the next piece of payload, or ``None`` for more of what the
                extensions held back (``self._held``).
            last: the piece of payload is the message's last.

        Returns:
            Decoded bytes (at most a piece), and whether they end the message.
        """
        decoders = self._decoders
        limit = None if self._max_size is None else self._max_size - self._size
        text = self._text
        try:
            if chunk is None:
                # Drain the last extension that holds output first: it must
                # not take more input before all its output is out.
                index = len(decoders) - 1
                while not decoders[index][0].decode_pending:
                    index -= 1
                chunk = decoders[index][0].decode_more(max_size=limit)
                index += 1
                held = any(extension.decode_pending for extension, _ in decoders[:index])
            else:
                index = 0
                held = False
            for extension, rsv in decoders[index:]:
                # An extension's input ends with the message's last piece
                # only once the extensions before it hold nothing back.
                fin = last and not held
                chunk = extension.decode(chunk, rsv=rsv, fin=fin, text=text, max_size=limit)
                held = held or extension.decode_pending
        except RemoteProtocolError:
            raise
        except Exception as exc:  # a bug in an extension must not escape as a crash
            raise RemoteProtocolError(CloseCode.INTERNAL_ERROR, "internal error") from exc
        self._held = held
        self._held_last = last
        return chunk, last and not held

    def _control(self, opcode: int, payload: bytes) -> Event:
        if opcode == Opcode.PING:
            # "Upon receipt of a Ping frame, an endpoint MUST send a Pong frame
            # in response, unless it already received a Close frame." -- §5.5.2
            if self.auto_pong and self.close_sent is None:
                self._queue(Opcode.PONG, payload)
            return Ping(payload=payload)
        if opcode == Opcode.PONG:
            return Pong(payload=payload)
        code, reason = parse_close_payload(payload)
        event = Close(code=code, reason=reason)
        self._state = transition(RECEIVE_TRANSITIONS, self._state, Close)
        self.close_received = event
        if self.close_sent is None:
            # "If an endpoint receives a Close frame and did not previously
            # send a Close frame, the endpoint MUST send a Close frame in
            # response. [...] it typically echos the status code it
            # received." -- RFC 6455 §5.5.1
            self.close_sent = Close(code=code)
            self._queue_close(format_close_message(code))
        self._discard_input()
        return event

    # -- output -----------------------------------------------------------------

    def data_to_send(self) -> bytes:
        """Return and forget the bytes queued for the peer (``b""`` if none)."""
        if not self._out:
            return b""
        if self._later:
            out = self._take_later(None)
            return out[0] if len(out) == 1 else b"".join(out)
        out = self._out  # type: ignore[assignment]  # (all bytes: nothing masked later)
        data = out[0] if len(out) == 1 else b"".join(out)
        out.clear()
        return data

    def buffers_to_send(self, mask_limit: int | None = None) -> list[bytes]:
        """Return and forget the bytes queued for the peer, as a list of buffers.

        The same bytes as :meth:`data_to_send`, for a write of each buffer
        or one vectored write (``socket.sendmsg()``): a payload of 64 KiB or
        more stays apart from its header, since joining them is a copy into
        fresh memory that costs more than the send (``docs/performance.md``).
        Smaller frames come joined, about 64 KiB to a buffer: a write each
        would cost more than the copy, and a burst of thousands of small
        messages is a few writes, not thousands.

        Args:
            mask_limit: a client masks at most this many bytes of a
                ``bytes`` payload of 64 KiB or more in this call (any other
                payload was masked when queued: it could have changed since)
                and leaves the rest queued (:attr:`has_data_to_send` stays
                true until all of it is taken). A blocking writer that sends
                each call's buffers before the next call then sends bytes
                masked a moment ago, still in the CPU's cache: with pieces
                of 48 KiB, ``wsproto_sync`` echoes 1 MiB messages a fifth
                faster than with each masked whole into fresh memory.
                ``None`` masks all that is queued.

        Raises:
            ValueError: ``mask_limit`` is not positive.
        """
        if mask_limit is not None and mask_limit <= 0:
            raise ValueError(f"mask_limit must be positive, not {mask_limit}")
        if not self._out:
            return []
        if self._later:
            out = self._take_later(mask_limit)
        else:
            out = self._out  # type: ignore[assignment]  # (all bytes: nothing masked later)
            self._out = []
        if len(out) == 1:
            return out
        if sum(map(len, out)) < _JOIN_BELOW:
            return [b"".join(out)]
        # (Joining one bytes object returns it: no copy.)
        buffers: list[bytes] = []
        run: list[bytes] = []  # small frames, joined once they reach 64 KiB
        size = 0
        for data in out:
            if len(data) >= _JOIN_BELOW:  # a large payload: as it is
                if run:
                    buffers.append(b"".join(run))
                    run, size = [], 0
                buffers.append(data)
            else:
                run.append(data)
                size += len(data)
                if size >= _JOIN_BELOW:
                    buffers.append(b"".join(run))
                    run, size = [], 0
        if run:
            buffers.append(b"".join(run))
        return buffers

    def _take_later(self, limit: int | None) -> list[bytes]:
        """Take the queued frames, masking what waits to be; with ``limit``, stop after a piece.

        With a limit, the frames before the first payload still to mask
        come with a piece of it of at most ``limit`` bytes; the rest of it,
        and whatever was queued after it, stays queued in order.
        """
        out = self._out
        taken: list[bytes] = []
        for index, item in enumerate(out):
            if not isinstance(item, _LaterMasked):
                taken.append(item)
                continue
            taken.append(item.take(limit))
            if limit is not None:
                self._out = out[index + 1 :] if item.done else out[index:]
                self._later = any(isinstance(each, _LaterMasked) for each in self._out)
                return taken
        self._out = []
        self._later = False
        return taken

    def _mask_key(self) -> bytes:
        pos = self._mask_pos
        if pos >= len(self._mask_pool):
            self._mask_pool = self._random_bytes(_MASK_POOL)
            pos = 0
        self._mask_pos = pos + 4
        return self._mask_pool[pos : pos + 4]

    def _queue(self, opcode: Opcode, payload: Data, *, fin: bool = True, rsv: int = 0) -> None:
        if self._client:
            key = self._mask_key()
            size = len(payload)
            # The common headers inline (no call, no keywords; RFC 6455 §5.2).
            if size < 126:
                header = _pack_short(opcode | rsv | (FIN if fin else 0), _MASKED | size) + key
            elif size < 0x10000:
                header = _pack_medium(opcode | rsv | (FIN if fin else 0), _MASKED | 126, size) + key
            else:
                header = serialize_header(opcode, size, fin=fin, rsv=rsv, mask_key=key)
                if type(payload) is bytes:  # immutable: it can wait to be masked
                    self._out.append(_LaterMasked(header, payload, key))
                    self._later = True
                    return
            # One object, one copy of the payload: a second fresh buffer for a
            # large frame costs more in page faults than the masking itself.
            self._out.append(mask_frame(header, payload, key))
        else:
            size = len(payload)
            if size < 126:
                # One object: the copy of a short payload costs less than a
                # second object to queue and join.
                self._out.append(_pack_short(opcode | rsv | (FIN if fin else 0), size) + payload)
                return
            self._out.append(serialize_header(opcode, size, fin=fin, rsv=rsv))
            self._out.append(bytes(payload) if not isinstance(payload, bytes) else payload)

    def _queue_close(self, payload: bytes) -> None:
        self._queue(Opcode.CLOSE, payload)

    def send_text(self, data: str | Data, *, fin: bool = True) -> None:
        """Queue a text message, or a fragment of one.

        Args:
            data: the text; ``bytes`` are sent as they are and must be UTF-8.
            fin: ``False`` to send a fragment: later ``send_text()`` calls
                continue the same message until one has ``fin=True``.

        Raises:
            LocalProtocolError: the connection is not open, or a binary
                message is half sent.
            CloseSentError: a Close frame was already sent.
        """
        self._send_data(_OP_TEXT, data.encode() if isinstance(data, str) else data, fin)

    def send_binary(self, data: Data, *, fin: bool = True) -> None:
        """Queue a binary message, or a fragment of one (see :meth:`send_text`)."""
        self._send_data(_OP_BINARY, data, fin)

    def send_message(self, message_type: MessageType | int, data: str | Data) -> None:
        """Queue a whole message of ``message_type`` (gorilla: ``WriteMessage``).

        Text, binary, ping, pong and close types are accepted, so a program
        can forward what it reads without sorting it first. For a close, the
        data is a Close payload (see :func:`~wsproto_core.frames.format_close_message`).
        """
        payload = data.encode() if isinstance(data, str) else data
        if message_type == _TEXT:
            self._send_data(_OP_TEXT, payload, True)
        elif message_type == _BINARY:
            self._send_data(_OP_BINARY, payload, True)
        elif message_type == MessageType.PING:
            self.send_ping(payload)
        elif message_type == MessageType.PONG:
            self.send_pong(payload)
        elif message_type == MessageType.CLOSE:
            # The payload is read, and refused if it is wrong, before the
            # state is looked at (send_close() then raises CloseSentError).
            if len(payload) > 125:  # a control frame's limit (RFC 6455 §5.5)
                raise LocalProtocolError("a Close payload is at most 125 bytes")
            try:
                code, reason = parse_close_payload(bytes(payload))
            except RemoteProtocolError as exc:
                raise LocalProtocolError(f"invalid Close payload: {exc.reason}") from None
            self.send_close(code, reason)
        else:
            raise LocalProtocolError(f"unknown message type {message_type!r}")

    def _send_data(self, opcode: Opcode, data: Data, fin: bool) -> None:
        if fin and self._state is _OPEN and self._sending is None and not self.extensions:
            # The common case in one step: a whole message, nothing to encode;
            # and a server's short one in one object (see _queue).
            if not self._client and len(data) < 126:
                self._out.append(_pack_short(opcode | FIN, len(data)) + data)
            else:
                self._queue(opcode, data)
            return
        state = transition(SEND_TRANSITIONS, self._state, Message)
        sending = self._sending
        if sending is None:
            first = True
            frame_opcode = opcode
        elif sending is opcode:
            first = False
            frame_opcode = Opcode.CONTINUATION
        else:
            raise LocalProtocolError(
                f"a fragmented {sending.name.lower()} message is in progress; finish it first"
            )
        rsv = 0
        if self.extensions:
            payload = bytes(data)
            for extension in self.extensions:
                payload, bits = extension.encode(payload, first=first, fin=fin)
                if first:
                    rsv |= bits
            data = payload
        self._queue(frame_opcode, data, fin=fin, rsv=rsv)
        self._sending = None if fin else opcode
        self._state = state

    def send_prepared(self, message: PreparedMessage) -> None:
        """Queue a prepared message (gorilla: ``WritePreparedMessage``).

        The encoding is shared with every other connection that negotiated
        the same parameters; see :class:`~wsproto_core.prepared.PreparedMessage`.

        Raises:
            LocalProtocolError: the connection is not open, or a fragmented
                message is half sent.
            CloseSentError: a Close frame was already sent.
        """
        state = transition(SEND_TRANSITIONS, self._state, Message)
        if self._sending is not None:
            raise LocalProtocolError("a fragmented message is in progress; finish it first")
        opcode = Opcode(message.message_type)
        data = message.data
        keys = []
        encoders = []
        for extension in self.extensions:
            key = extension.prepared_key(len(data))
            if key is None:
                self._send_data(opcode, data, True)
                return
            if key is not PLAIN:
                keys.append(key)
                encoders.append(extension)
        shared = tuple(keys)  # () for a message sent as it is, with or without extensions
        encoded = message._encodings.get(shared)
        if encoded is None:
            rsv = 0
            for extension in encoders:
                data, bits = extension.encode_prepared(data)
                rsv |= bits
            # Connections in other threads may be encoding it too: the first
            # stored wins, and this one sends that, so an entry never changes
            # once made (see PreparedMessage).
            encoded = message._encodings.setdefault(shared, (data, rsv))
        payload, rsv = encoded
        if self._client:
            self._queue(opcode, payload, rsv=rsv)  # each client frame needs its own mask
        else:
            frame = message._frames.get(shared)
            if frame is None:
                header = serialize_header(opcode, len(payload), rsv=rsv)
                frame = message._frames.setdefault(shared, header + payload)
            self._out.append(frame)
        self._state = state

    def enable_write_compression(self, enabled: bool) -> None:
        """Compress the following outgoing messages, or not (gorilla: ``EnableWriteCompression``).

        Applies from the next message when a compression extension was
        negotiated, and does nothing otherwise.
        """
        for extension in self.extensions:
            extension.enable_compression(enabled)

    def set_compression_level(self, level: int) -> None:
        """Set the zlib level, -1..9, of the following messages (gorilla: ``SetCompressionLevel``).

        Does nothing when no compression extension was negotiated.

        Raises:
            LocalProtocolError: ``level`` is not in -1..9.
        """
        if not -1 <= level <= 9:
            raise LocalProtocolError(f"compression level {level} is not in -1..9")
        for extension in self.extensions:
            extension.set_compression_level(level)

    def send_ping(self, payload: Data = b"") -> None:
        """Queue a Ping (at most 125 bytes). The peer answers with a :class:`Pong`."""
        self._send_control(Opcode.PING, Ping, payload)

    def send_pong(self, payload: Data = b"") -> None:
        """Queue a Pong: an answer to a Ping when ``auto_pong`` is off, or a heartbeat."""
        self._send_control(Opcode.PONG, Pong, payload)

    def _send_control(self, opcode: Opcode, kind: type[Event], payload: Data) -> None:
        state = transition(SEND_TRANSITIONS, self._state, kind)
        if len(payload) > 125:
            raise LocalProtocolError("control frame payloads are at most 125 bytes (RFC 6455 §5.5)")
        self._queue(opcode, payload)
        self._state = state

    def send_close(self, code: int | None = CloseCode.NORMAL_CLOSURE, reason: str = "") -> None:
        """Start the closing handshake (RFC 6455 §7.1.2).

        Keep reading afterwards: messages may still arrive until the peer's
        :class:`Close`. You need not answer a Close you receive: the core
        echoes it.

        Args:
            code: the close code, or ``None`` to send no code (the peer then
                sees 1005).
            reason: a short UTF-8 reason, at most 123 bytes encoded.

        Raises:
            LocalProtocolError: the code may not be sent (1005, 1006, 1015,
                reserved codes) or the reason is too long.
            CloseSentError: a Close frame was already sent.
        """
        state = transition(SEND_TRANSITIONS, self._state, Close)
        if code is None:
            code = CloseCode.NO_STATUS_RCVD
        payload = format_close_message(code, reason)
        self._queue_close(payload)
        self.close_sent = Close(code=code, reason=reason)
        self._state = state


class ClientConnection(Connection):
    """The client end, starting with the opening handshake (RFC 6455 §4.1).

    The upgrade request is queued as soon as the object exists: send
    :meth:`data_to_send`, feed the response, and call :meth:`next_event`
    until it returns a :class:`HandshakeResponse` (now ``OPEN``) or a
    :class:`HandshakeRejected` (now ``CLOSED``).

    Args:
        uri: ``ws://`` or ``wss://`` URI (only host, port and path are
            used; the transport is yours to open).
        origin: the ``Origin`` header to send, if any.
        subprotocols: subprotocols to offer, in order of preference.
        extensions: extensions to offer, in order of preference.
        extra_headers: more request headers (``Authorization``, ...).
        cookies: cookies to send in a ``Cookie`` header.
        max_handshake_size: the most bytes the response head may take.
        max_rejected_body_size: how much of a refusal's body to keep.
        max_message_size: as for :class:`Connection`.
        auto_pong: as for :class:`Connection`.
        stream_messages: as for :class:`Connection`.
        random_bytes: as for :class:`Connection`.
    """

    __slots__ = (
        "_handshake",
        "_uri",
        "handshake_response",
    )

    def __init__(
        self,
        uri: str | WebSocketURI,
        *,
        origin: str | None = None,
        subprotocols: Sequence[str] = (),
        extensions: Sequence[ClientExtensionFactory] = (),
        extra_headers: HeadersLike = (),
        cookies: Mapping[str, str] | None = None,
        max_handshake_size: int = DEFAULT_MAX_HANDSHAKE_SIZE,
        max_rejected_body_size: int = DEFAULT_MAX_REJECTED_BODY_SIZE,
        max_message_size: int | None = DEFAULT_MAX_MESSAGE_SIZE,
        auto_pong: bool = True,
        stream_messages: bool = False,
        random_bytes: Callable[[int], bytes] = os.urandom,
    ) -> None:
        super().__init__(
            Role.CLIENT,
            max_message_size=max_message_size,
            auto_pong=auto_pong,
            stream_messages=stream_messages,
            random_bytes=random_bytes,
        )
        self._state = State.CONNECTING
        # Dropped once the handshake is over: an open connection does not
        # carry the HTTP parser around (W5: memory per idle connection).
        self._handshake: ClientHandshake | None = ClientHandshake(
            uri,
            origin=origin,
            subprotocols=subprotocols,
            extensions=extensions,
            extra_headers=extra_headers,
            cookies=cookies,
            random_bytes=random_bytes,
            max_handshake_size=max_handshake_size,
            max_rejected_body_size=max_rejected_body_size,
        )
        self.handshake_response: HandshakeResponse | None = None
        """The server's response that opened the connection, once it has."""
        self._out.append(self._handshake.request)
        self._uri = self._handshake.uri

    @property
    def uri(self) -> WebSocketURI:
        """The URI this client connects to."""
        return self._uri

    def _handshake_data(self, data: bytes) -> None:
        assert self._handshake is not None  # only called while CONNECTING
        self._handshake.receive_data(data)

    def _handshake_event(self) -> Event | None:
        handshake = self._handshake
        assert handshake is not None  # only called while CONNECTING
        event = handshake.next_event()
        if event is None:
            return None
        self._state = transition(RECEIVE_TRANSITIONS, self._state, type(event))
        if isinstance(event, HandshakeResponse):
            self._set_extensions(handshake.extensions)
            self.subprotocol = event.subprotocol
            self.handshake_response = event
            self._append(handshake.trailing_data)
        else:
            self._failed = True  # nothing more will come; close the transport
        self._handshake = None
        return event


class ServerConnection(Connection):
    """The server end, starting with the opening handshake (RFC 6455 §4.2).

    Feed the request and call :meth:`next_event`: a valid handshake gives a
    :class:`HandshakeRequest`, to answer with :meth:`accept` or
    :meth:`reject`; a plain HTTP request gives an :class:`HTTPRequest`, to
    answer with :meth:`reject`. An invalid handshake raises
    :class:`HandshakeError` with the HTTP error response already queued.

    Args:
        subprotocols: subprotocols this server speaks, in order of preference.
        extensions: extensions this server supports.
        check_origin: the origin policy; the default, :func:`same_origin`,
            refuses browsers on other sites with 403. ``None`` accepts every
            origin: do that only if you authenticate otherwise.
        max_handshake_size: the most bytes a request head may take.
        render_error: renders the body and headers of the HTTP error
            responses (see :data:`~wsproto_core.handshake.ErrorRenderer`);
            the default writes the reason as plain text.
        max_message_size: as for :class:`Connection`.
        auto_pong: as for :class:`Connection`.
        stream_messages: as for :class:`Connection`.
        remote_addr: the client's address, if the program knows it already;
            see :attr:`remote_addr`.
    """

    __slots__ = (
        "_handshake",
        "_remote_addr",
        "handshake_request",
        "handshake_response",
    )

    def __init__(
        self,
        *,
        subprotocols: Sequence[str] = (),
        extensions: Sequence[ServerExtensionFactory] = (),
        check_origin: OriginCheck | None = same_origin,
        max_handshake_size: int = DEFAULT_MAX_HANDSHAKE_SIZE,
        render_error: ErrorRenderer = plain_text_error,
        max_message_size: int | None = DEFAULT_MAX_MESSAGE_SIZE,
        auto_pong: bool = True,
        stream_messages: bool = False,
        remote_addr: Any = None,
    ) -> None:
        super().__init__(
            Role.SERVER,
            max_message_size=max_message_size,
            auto_pong=auto_pong,
            stream_messages=stream_messages,
        )
        self._state = State.CONNECTING
        # Dropped once answered: an open connection does not carry the HTTP
        # parser around (W5: memory per idle connection).
        self._handshake: ServerHandshake | None = ServerHandshake(
            subprotocols=subprotocols,
            extensions=extensions,
            check_origin=check_origin,
            max_handshake_size=max_handshake_size,
            render_error=render_error,
            remote_addr=remote_addr,
        )
        self._remote_addr = remote_addr
        self.handshake_request: HandshakeRequest | HTTPRequest | None = None
        """The request being answered, once it has arrived."""
        self.handshake_response: HandshakeResponse | None = None
        """The response :meth:`accept` sent, which opened the connection."""

    @property
    def remote_addr(self) -> Any:
        """The client's address, which the requests this connection reports carry.

        The core never looks at it: whatever the program driving it says,
        such as a socket's ``getpeername()``, goes into the ``remote_addr``
        of the :class:`HandshakeRequest` or :class:`HTTPRequest`, which the
        ``render_error`` hook also receives, so a server's hooks know who
        they answer. Set it before feeding the request; ``None`` if unknown.
        """
        return self._remote_addr

    @remote_addr.setter
    def remote_addr(self, address: Any) -> None:
        self._remote_addr = address
        if self._handshake is not None:
            self._handshake.remote_addr = address

    def _handshake_data(self, data: bytes) -> None:
        assert self._handshake is not None  # only called while CONNECTING
        self._handshake.receive_data(data)

    def _handshake_event(self) -> Event | None:
        handshake = self._handshake
        assert handshake is not None  # only called while CONNECTING
        try:
            event = handshake.next_event()
        except HandshakeError:
            self._out.append(handshake.response)
            self._handshake = None
            raise
        if event is not None:
            self._state = transition(RECEIVE_TRANSITIONS, self._state, type(event))
            self.handshake_request = event
        return event

    def accept(
        self, *, subprotocol: str | None = None, extra_headers: HeadersLike = ()
    ) -> HandshakeResponse:
        """Accept the :class:`HandshakeRequest`; the connection is then ``OPEN``.

        Args:
            subprotocol: the subprotocol to select; by default the first of
                ``subprotocols`` the client offered (gorilla's rule), or none.
            extra_headers: more response headers (``Set-Cookie``, ...).

        Returns:
            What was agreed: headers sent, subprotocol and extensions.

        Raises:
            LocalProtocolError: no handshake request to accept, a subprotocol
                the client did not offer, or a header the handshake owns.
        """
        state = transition(SEND_TRANSITIONS, self._state, HandshakeResponse)
        handshake = self._handshake
        assert handshake is not None  # the transition allows only a request being answered
        response, event = handshake.accept(subprotocol=subprotocol, extra_headers=extra_headers)
        self._set_extensions(handshake.extensions)
        self.subprotocol = event.subprotocol
        self.handshake_response = event
        self._out.append(response)
        self._state = state
        self._append(handshake.trailing_data)
        self._handshake = None
        return event

    def reject(
        self, status_code: int | None = None, headers: HeadersLike = (), body: bytes | None = None
    ) -> None:
        """Answer the request with an HTTP response; the connection is then ``CLOSED``.

        Args:
            status_code: by default 403 for a :class:`HandshakeRequest` and
                426 (with ``Upgrade: websocket``) for an :class:`HTTPRequest`.
            headers: response headers.
            body: the response body; by default an error page from ``render_error``.

        Raises:
            LocalProtocolError: no request to answer, or not a final status.
        """
        state = transition(SEND_TRANSITIONS, self._state, HandshakeRejected)
        assert self._handshake is not None  # the transition allows only a request being answered
        self._out.append(self._handshake.reject(status_code, headers, body))
        self._handshake = None
        self._state = state
        self._failed = True  # the transport closes after the response
