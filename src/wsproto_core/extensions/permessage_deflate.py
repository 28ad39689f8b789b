"""permessage-deflate (RFC 7692): negotiation, compression and bounded decompression.

Invariants:

* Parameters are validated strictly in both directions (RFC 7692 §7): a
  server declines an offer it cannot accept and tries the client's next one;
  a client fails the handshake on a response it did not allow.
* Decompression never produces more than the read limit allows: the
  connection passes the room left under its limit, and zlib stops there, so a
  few kilobytes that would inflate to gigabytes cost about the read limit of
  memory before the connection fails with 1009.
* Nor more than ``MAX_PIECE_SIZE`` bytes at once, whatever the limit: zlib
  stops there too, and the rest of the piece waits (in zlib, and as its
  ``unconsumed_tail``) for ``decode_more()``. So a streamed message passes in
  bounded pieces even with no read limit, one piece of input at a time.
* zlib objects are created on first use and, without context takeover,
  released after each message: an idle connection holds no zlib state, and a
  compressor (about 256 KiB with the defaults) lives only while it is useful.
* zlib cannot compress raw DEFLATE with an 8-bit window (it refuses the
  option). When the peer limits our window to 8 bits we still accept, and
  send our messages uncompressed, which RFC 7692 allows for any message. When
  decompressing, an 8-bit window is widened to 9 bits: a larger window reads
  every stream a smaller one produced, including the 9-bit streams that zlib
  writes when asked for 8.
"""

from __future__ import annotations

import re
import zlib
from collections.abc import Hashable, Sequence

from ..constants import CloseCode
from ..errors import RemoteProtocolError
from ..frames import RSV1
from ..headers import ExtensionOffer
from .base import (
    MAX_PIECE_SIZE,
    PLAIN,
    ClientExtensionFactory,
    Extension,
    ServerExtensionFactory,
)

__all__ = [
    "DEFAULT_COMPRESSION_LEVEL",
    "DEFAULT_MEMORY_LEVEL",
    "DEFAULT_THRESHOLD",
    "ClientPerMessageDeflate",
    "PerMessageDeflate",
    "ServerPerMessageDeflate",
]

NAME = "permessage-deflate"
# gorilla's default too: on JSON, level 1 compresses about 3x faster than
# zlib's default of 6 for about 40% more bytes (docs/compression.md).
DEFAULT_COMPRESSION_LEVEL = 1
DEFAULT_MEMORY_LEVEL = 8  # zlib's default
DEFAULT_THRESHOLD = 32  # smaller messages gain nothing from compression
_TAIL = b"\x00\x00\xff\xff"  # the end of an empty non-final stored block (RFC 7692 §7.2.1)
_BITS = re.compile(r"[1-9][0-9]?")  # "a decimal integer ... without leading zeros" (§7.1.2)

# Compressed bytes given to zlib at once. When zlib stops at its output bound,
# it copies the input it did not read (unconsumed_tail): slices bound that
# copy without copying the payload to cut it.
_SLICE = 64 * 1024

_SERVER_NCT = "server_no_context_takeover"
_CLIENT_NCT = "client_no_context_takeover"
_SERVER_BITS = "server_max_window_bits"
_CLIENT_BITS = "client_max_window_bits"


def _check_options(level: int, memory_level: int, threshold: int) -> None:
    if not -1 <= level <= 9:
        raise ValueError(f"compression level {level} is not in -1..9")
    if not 1 <= memory_level <= 9:
        raise ValueError(f"memory level {memory_level} is not in 1..9")
    if threshold < 0:
        raise ValueError("the compression threshold must be >= 0")


def _check_bits(bits: int | None, name: str) -> None:
    if bits is not None and not 8 <= bits <= 15:
        raise ValueError(f"{name} must be in 8..15, or None")


class PerMessageDeflate(Extension):
    """permessage-deflate on one connection, as negotiated.

    "Local" is what this endpoint sends (compresses), "remote" what it
    receives (decompresses). Factories build this; programs use
    :attr:`compress_outgoing` and :meth:`set_compression_level` (through the
    connection's ``enable_write_compression()`` and ``set_compression_level()``).

    Args:
        local_no_context_takeover: start each outgoing message afresh.
        remote_no_context_takeover: the peer starts each of its messages afresh.
        local_max_window_bits: the window we may compress with (8..15).
        remote_max_window_bits: the window the peer compresses with (8..15).
        compression_level: zlib level, -1..9.
        memory_level: zlib memory level, 1..9.
        threshold: messages shorter than this are sent uncompressed.
    """

    name = NAME
    rsv = RSV1

    def __init__(
        self,
        *,
        local_no_context_takeover: bool = False,
        remote_no_context_takeover: bool = False,
        local_max_window_bits: int = 15,
        remote_max_window_bits: int = 15,
        compression_level: int = DEFAULT_COMPRESSION_LEVEL,
        memory_level: int = DEFAULT_MEMORY_LEVEL,
        threshold: int = DEFAULT_THRESHOLD,
    ) -> None:
        _check_options(compression_level, memory_level, threshold)
        _check_bits(local_max_window_bits, "local_max_window_bits")
        _check_bits(remote_max_window_bits, "remote_max_window_bits")
        self.local_no_context_takeover = local_no_context_takeover
        self.remote_no_context_takeover = remote_no_context_takeover
        self.local_max_window_bits = local_max_window_bits
        self.remote_max_window_bits = remote_max_window_bits
        self.memory_level = memory_level
        self.threshold = threshold
        self.compress_outgoing = local_max_window_bits > 8
        """Compress outgoing messages (gorilla: ``EnableWriteCompression``).

        Takes effect at the next message.
        """
        self._level = compression_level
        self._compressor: zlib._Compress | None = None
        self._decompressor: zlib._Decompress | None = None
        self._received = 0  # compressed bytes of the incoming message so far
        # The piece being inflated, while it may hold more output (decode_pending):
        self._input: bytes | None = None  # the piece, None when nothing is kept back
        self._offset = 0  # where its next slice starts
        self._rest = b""  # what zlib left unread of the last input it was given
        self._full = False  # zlib's last output reached its bound: it may hold more
        self._fin = False  # the piece ends the message
        self._add_tail = False  # the RFC 7692 tail is still to be inflated
        self._text = False
        self._compressor_level = compression_level
        self._compressing = False  # whether the outgoing message in progress is compressed

    @property
    def compression_level(self) -> int:
        """The zlib level for the next outgoing message."""
        return self._level

    def set_compression_level(self, level: int) -> None:
        """Change the compression level from the next message on (gorilla: ``SetCompressionLevel``).

        Raises:
            ValueError: ``level`` is not in -1..9.
        """
        _check_options(level, self.memory_level, self.threshold)
        self._level = level

    def enable_compression(self, enabled: bool) -> None:
        """Turn compression of outgoing messages on or off, from the next message."""
        self.compress_outgoing = enabled and self.local_max_window_bits > 8

    # -- prepared messages ---------------------------------------------------

    def _compresses(self, size: int) -> bool:
        return self.compress_outgoing and size >= self.threshold

    def prepared_key(self, size: int) -> Hashable | None:
        """Share encodings with connections that compress the same way, afresh."""
        if not self._compresses(size):
            return PLAIN
        if not self.local_no_context_takeover:
            # Our compressor must see the message, or its next back-references
            # would point at the wrong bytes of the peer's window.
            return None
        return (NAME, self._level, self.local_max_window_bits, self.memory_level)

    def encode_prepared(self, data: bytes) -> tuple[bytes, int]:
        """Compress a whole message with a fresh compressor, leaving ours alone.

        Only called when :meth:`prepared_key` named a compressed encoding.
        """
        compressor = zlib.compressobj(
            self._level, zlib.DEFLATED, -self.local_max_window_bits, self.memory_level
        )
        return (compressor.compress(data) + compressor.flush(zlib.Z_SYNC_FLUSH))[:-4], RSV1

    # -- receiving -----------------------------------------------------------

    def decode(
        self, data: bytes, *, rsv: int, fin: bool, text: bool, max_size: int | None
    ) -> bytes:
        """Inflate a piece of a compressed message (RFC 7692 §7.2.2).

        Returns at most ``MAX_PIECE_SIZE`` bytes, and at most ``max_size + 1``;
        :meth:`decode_more` returns the rest.
        """
        if not rsv:
            return data
        self._received += len(data)
        if fin and not self._received:
            # An empty compressed message carries no DEFLATE data at all (a
            # sender's is at least 0x00, RFC 7692 §7.2.3.6): inflating just the
            # tail would leave zlib in the middle of a block for the next message.
            self._end_message()
            return b""
        self._input = data
        self._offset = 0
        self._fin = self._add_tail = fin
        self._text = text
        return self._output(data, max_size)

    def decode_message(self, data: bytes, *, text: bool, max_size: int | None) -> bytes:
        """Inflate a whole message that came in one frame of at most 4 KiB.

        The connection's shortcut for the commonest compressed message: the
        same bytes, errors and state as :meth:`decode` of it as the last
        piece and then :meth:`decode_more` until nothing is pending, joined,
        but with the payload and the tail in one zlib call and none of the
        bookkeeping between pieces. zlib is stopped at the same output
        bounds (``MAX_PIECE_SIZE``, and ``max_size + 1`` in all), so what
        it accepts cannot differ either (see _COMPRESSED_PIECE in the
        connection). Returns more than ``max_size`` bytes only to say the
        read limit was passed.

        Raises:
            RemoteProtocolError: the data is not valid DEFLATE.
        """
        if not data:
            # An empty compressed message: no DEFLATE data at all (see decode()).
            self._end_message()
            return b""
        output = []
        size = 0
        # "Append 4 octets of 0x00 0x00 0xff 0xff to the tail end of the
        # payload of the message." -- RFC 7692 §7.2.2. They close the empty
        # stored block whose header ends the payload; no output, no
        # back-reference, so one call or two inflate the same.
        source = data + _TAIL
        try:
            while True:
                # decode() and decode_more() stop zlib at each MAX_PIECE_SIZE
                # of output, and at max_size + 1 bytes in all: here too.
                want = MAX_PIECE_SIZE - size % MAX_PIECE_SIZE
                if max_size is not None:
                    if size > max_size:
                        break  # past the read limit: the connection fails it
                    want = min(want, max_size + 1 - size)
                decompressor = self._open_decompressor()
                out = decompressor.decompress(source, want)
                if out:
                    output.append(out)
                    size += len(out)
                if decompressor.eof:
                    # A BFINAL block ended the stream; what follows starts a
                    # new one (see _inflate). If it ended with the payload,
                    # the tail closes no block: decode() skips it too.
                    self._decompressor = None
                    source = decompressor.unused_data
                    if not source or source == _TAIL:
                        break
                else:
                    source = decompressor.unconsumed_tail
                    if not source and len(out) < want:
                        break  # all read, all out; else zlib may hold more
        except zlib.error:
            raise self._invalid_data(text) from None
        self._end_message()
        if len(output) == 1:
            return output[0]
        return b"".join(output)

    @property
    def decode_pending(self) -> bool:
        """Whether the piece last given to :meth:`decode` may hold more output."""
        return self._input is not None

    def decode_more(self, *, max_size: int | None) -> bytes:
        """Inflate more of the piece last given to :meth:`decode`, with the same bounds."""
        data = self._input
        if data is None:
            return b""
        return self._output(data, max_size)

    def _output(self, data: bytes, max_size: int | None) -> bytes:
        want = MAX_PIECE_SIZE if max_size is None else min(max_size + 1, MAX_PIECE_SIZE)
        output = []
        try:
            while want > 0:
                if self._rest or self._full:
                    # Go on where zlib stopped: input past its output bound,
                    # or after a BFINAL block; none, when it may hold output.
                    source: bytes | memoryview = self._rest
                elif self._offset < len(data):
                    start = self._offset
                    end = self._offset = start + _SLICE
                    source = memoryview(data)[start:end] if len(data) > _SLICE else data
                elif self._add_tail:
                    self._add_tail = False
                    if self._decompressor is None:
                        # A BFINAL block ended the stream right at the end of
                        # the payload: there is no open block for the tail to close.
                        continue
                    # "Append 4 octets of 0x00 0x00 0xff 0xff to the tail end
                    # of the payload of the message." -- RFC 7692 §7.2.2
                    source = _TAIL
                else:
                    self._input = None  # all of the piece is out
                    if self._fin:
                        self._end_message()
                    break
                out = self._inflate(source, want)
                if out:
                    output.append(out)
                    want -= len(out)
        except zlib.error:
            raise self._invalid_data(self._text) from None
        if len(output) == 1:
            return output[0]
        return b"".join(output)

    def _open_decompressor(self) -> zlib._Decompress:
        """The decompressor of the stream under way, or a new one."""
        decompressor = self._decompressor
        if decompressor is None:
            decompressor = self._decompressor = zlib.decompressobj(
                -max(self.remote_max_window_bits, 9)
            )
        return decompressor

    def _invalid_data(self, text: bool) -> RemoteProtocolError:
        """Drop the state of the failed message; the error to raise for its data."""
        self._decompressor = None
        self._input = None
        self._rest = b""
        self._full = False
        self._received = 0
        return RemoteProtocolError(
            CloseCode.INVALID_FRAME_PAYLOAD_DATA if text else CloseCode.PROTOCOL_ERROR,
            "invalid compressed data",
        )

    def _inflate(self, data: bytes | memoryview, want: int) -> bytes:
        decompressor = self._open_decompressor()
        # zlib stops after ``want`` bytes and keeps what it did not read.
        out = decompressor.decompress(data, want)
        if decompressor.eof:
            # A block with BFINAL set ended the DEFLATE stream; what follows
            # starts a new one (RFC 7692 §7.2.3.4). A sender can only continue
            # with a fresh, empty window, as a reset zlib or Java compressor does.
            self._decompressor = None  # the next data, if any, opens a new stream
            self._rest = decompressor.unused_data
            self._full = False
        else:
            self._rest = decompressor.unconsumed_tail
            # Stopped at the bound, zlib may be in the middle of a
            # back-reference after reading all its input: the rest of it
            # comes from another call, with no input.
            self._full = len(out) == want
        return out

    def _end_message(self) -> None:
        self._received = 0
        if self.remote_no_context_takeover:
            self._decompressor = None

    # -- sending -------------------------------------------------------------

    def encode(self, data: bytes, *, first: bool, fin: bool) -> tuple[bytes, int]:
        """Deflate a piece of an outgoing message (RFC 7692 §7.2.1)."""
        if first:
            self._compressing = self.compress_outgoing and not (fin and len(data) < self.threshold)
            if self._compressor_level != self._level:
                # Python's zlib cannot change a compressor's level; a fresh one
                # is valid even with context takeover, since a compressor may
                # always stop referring to earlier data.
                self._compressor = None
        if not self._compressing:
            return data, 0
        compressor = self._compressor
        if compressor is None:
            self._compressor_level = self._level
            compressor = self._compressor = zlib.compressobj(
                self._level, zlib.DEFLATED, -self.local_max_window_bits, self.memory_level
            )
        out = compressor.compress(data) + compressor.flush(zlib.Z_SYNC_FLUSH)
        if fin:
            # "Remove 4 octets (that are 0x00 0x00 0xff 0xff) from the tail
            # end." -- RFC 7692 §7.2.1; a sync flush always ends with them.
            out = out[:-4]
            self._compressing = False
            if self.local_no_context_takeover:
                self._compressor = None
        return out, RSV1 if first else 0

    def __repr__(self) -> str:
        return (
            f"PerMessageDeflate(local_no_context_takeover={self.local_no_context_takeover}, "
            f"remote_no_context_takeover={self.remote_no_context_takeover}, "
            f"local_max_window_bits={self.local_max_window_bits}, "
            f"remote_max_window_bits={self.remote_max_window_bits})"
        )


def _parse(params: Sequence[tuple[str, str | None]]) -> dict[str, int | None]:
    """Validate permessage-deflate parameters (RFC 7692 §7.1).

    Returns:
        Parameter name to value: an int for window bits, ``None`` for a flag or
        for ``client_max_window_bits`` without a value.

    Raises:
        ValueError: an unknown or repeated parameter, or an invalid value.
    """
    parsed: dict[str, int | None] = {}
    for name, value in params:
        # "A server MUST decline an extension negotiation offer for this
        # extension if [...] the negotiation offer contains an extension
        # parameter not defined for use in an offer. [...] has an extension
        # parameter with an invalid value. [...] contains multiple extension
        # parameters with the same name." -- RFC 7692 §7
        if name in parsed:
            raise ValueError(f"{name} appears twice")
        if name in (_SERVER_NCT, _CLIENT_NCT):
            if value is not None:
                raise ValueError(f"{name} takes no value")
            parsed[name] = None
        elif name in (_SERVER_BITS, _CLIENT_BITS):
            if value is None:
                if name == _SERVER_BITS:
                    raise ValueError(f"{name} needs a value")
                parsed[name] = None
            elif _BITS.fullmatch(value) and 8 <= int(value) <= 15:
                parsed[name] = int(value)
            else:
                raise ValueError(f"{name}={value} is not an integer in 8..15")
        else:
            raise ValueError(f"unknown parameter {name!r}")
    return parsed


class _Factory:
    """What both factories share: the common options and building the extension."""

    name = NAME
    rsv = RSV1

    def __init__(
        self,
        server_no_context_takeover: bool,
        client_no_context_takeover: bool,
        server_max_window_bits: int | None,
        compression_level: int,
        memory_level: int,
        threshold: int,
    ) -> None:
        _check_options(compression_level, memory_level, threshold)
        _check_bits(server_max_window_bits, "server_max_window_bits")
        self.server_no_context_takeover = server_no_context_takeover
        self.client_no_context_takeover = client_no_context_takeover
        self.server_max_window_bits = server_max_window_bits
        self.compression_level = compression_level
        self.memory_level = memory_level
        self.threshold = threshold

    def _extension(
        self, local_nct: bool, remote_nct: bool, local_bits: int, remote_bits: int
    ) -> PerMessageDeflate:
        return PerMessageDeflate(
            local_no_context_takeover=local_nct,
            remote_no_context_takeover=remote_nct,
            local_max_window_bits=local_bits,
            remote_max_window_bits=remote_bits,
            compression_level=self.compression_level,
            memory_level=self.memory_level,
            threshold=self.threshold,
        )


class ClientPerMessageDeflate(_Factory, ClientExtensionFactory):
    """Offer permessage-deflate from a client.

    Args:
        server_no_context_takeover: ask the server to compress each message
            afresh (saves the client a 32 KiB window per connection).
        client_no_context_takeover: compress each of our messages afresh.
        server_max_window_bits: ask the server for a smaller window (8..15).
        client_max_window_bits: ``True`` to tell the server we can use a
            smaller window if it asks, an int (8..15) to limit our own
            window, or ``False`` not to mention it.
        compression_level: zlib level, -1..9.
        memory_level: zlib memory level, 1..9.
        threshold: messages shorter than this are sent uncompressed.
    """

    def __init__(
        self,
        *,
        server_no_context_takeover: bool = False,
        client_no_context_takeover: bool = False,
        server_max_window_bits: int | None = None,
        client_max_window_bits: int | bool = True,
        compression_level: int = DEFAULT_COMPRESSION_LEVEL,
        memory_level: int = DEFAULT_MEMORY_LEVEL,
        threshold: int = DEFAULT_THRESHOLD,
    ) -> None:
        super().__init__(
            server_no_context_takeover,
            client_no_context_takeover,
            server_max_window_bits,
            compression_level,
            memory_level,
            threshold,
        )
        if not isinstance(client_max_window_bits, bool):
            _check_bits(client_max_window_bits, "client_max_window_bits")
        self.client_max_window_bits = client_max_window_bits

    def offer(self) -> ExtensionOffer:
        """Build the ``permessage-deflate`` offer."""
        params: list[tuple[str, str | None]] = []
        if self.server_no_context_takeover:
            params.append((_SERVER_NCT, None))
        if self.client_no_context_takeover:
            params.append((_CLIENT_NCT, None))
        if self.server_max_window_bits is not None:
            params.append((_SERVER_BITS, str(self.server_max_window_bits)))
        if self.client_max_window_bits is True:
            params.append((_CLIENT_BITS, None))
        elif self.client_max_window_bits is not False:
            params.append((_CLIENT_BITS, str(self.client_max_window_bits)))
        return ExtensionOffer(NAME, params)

    def accept(self, response: ExtensionOffer) -> PerMessageDeflate:
        """Check the server's response against our offer (RFC 7692 §7.1)."""
        params = _parse(response.params)
        if self.server_no_context_takeover and _SERVER_NCT not in params:
            # "A server accepting an extension negotiation offer with this
            # parameter MUST include [it] in the [...] response." -- §7.1.1.1
            raise ValueError("the server ignored server_no_context_takeover")
        server_bits = params.get(_SERVER_BITS)
        if self.server_max_window_bits is not None:
            if server_bits is None:
                raise ValueError("the server ignored server_max_window_bits")  # §7.1.2.1
            if server_bits > self.server_max_window_bits:
                raise ValueError("the server's window is larger than we asked")
        if _CLIENT_BITS in params:
            client_bits = params[_CLIENT_BITS]
            if self.client_max_window_bits is False:
                # "the server MUST NOT include [it] in the [...] response"
                # when the offer did not have it -- §7.1.2.2
                raise ValueError("client_max_window_bits was not offered")
            if client_bits is None:
                raise ValueError("client_max_window_bits needs a value in a response")
            if (
                self.client_max_window_bits is not True
                and client_bits > self.client_max_window_bits
            ):
                raise ValueError("the server allows our window to be larger than we said")
        elif self.client_max_window_bits in (True, False):
            client_bits = 15
        else:
            client_bits = self.client_max_window_bits
        return self._extension(
            self.client_no_context_takeover or _CLIENT_NCT in params,
            _SERVER_NCT in params,
            client_bits,
            server_bits or 15,
        )


class ServerPerMessageDeflate(_Factory, ServerExtensionFactory):
    """Accept permessage-deflate on a server.

    Args:
        server_no_context_takeover: compress each of our messages afresh
            (no 256 KiB compressor kept per connection between messages).
        client_no_context_takeover: require clients to compress each message
            afresh (no 32 KiB window kept per connection to decompress).
        server_max_window_bits: the largest window we compress with (9..15;
            8 is accepted and means we send uncompressed).
        client_max_window_bits: ask clients to use at most this window, when
            they say they can (8..15).
        compression_level: zlib level, -1..9.
        memory_level: zlib memory level, 1..9.
        threshold: messages shorter than this are sent uncompressed.
    """

    def __init__(
        self,
        *,
        server_no_context_takeover: bool = False,
        client_no_context_takeover: bool = False,
        server_max_window_bits: int | None = None,
        client_max_window_bits: int | None = None,
        compression_level: int = DEFAULT_COMPRESSION_LEVEL,
        memory_level: int = DEFAULT_MEMORY_LEVEL,
        threshold: int = DEFAULT_THRESHOLD,
    ) -> None:
        super().__init__(
            server_no_context_takeover,
            client_no_context_takeover,
            server_max_window_bits,
            compression_level,
            memory_level,
            threshold,
        )
        _check_bits(client_max_window_bits, "client_max_window_bits")
        self.client_max_window_bits = client_max_window_bits

    def negotiate(self, offer: ExtensionOffer) -> tuple[ExtensionOffer, PerMessageDeflate] | None:
        """Answer one offer, or decline it if its parameters are invalid (RFC 7692 §7)."""
        try:
            params = _parse(offer.params)
        except ValueError:
            return None
        response: list[tuple[str, str | None]] = []
        local_nct = self.server_no_context_takeover or _SERVER_NCT in params
        if local_nct:
            response.append((_SERVER_NCT, None))
        remote_nct = self.client_no_context_takeover or _CLIENT_NCT in params
        if remote_nct:
            response.append((_CLIENT_NCT, None))
        offered_server_bits = params.get(_SERVER_BITS)
        server_bits = min(offered_server_bits or 15, self.server_max_window_bits or 15)
        if offered_server_bits is not None or server_bits < 15:
            response.append((_SERVER_BITS, str(server_bits)))
        client_bits = 15
        if _CLIENT_BITS in params:
            offered_client_bits = params[_CLIENT_BITS] or 15
            client_bits = min(offered_client_bits, self.client_max_window_bits or 15)
            if client_bits < offered_client_bits or self.client_max_window_bits is not None:
                response.append((_CLIENT_BITS, str(client_bits)))
        return ExtensionOffer(NAME, response), self._extension(
            local_nct, remote_nct, server_bits, client_bits
        )
