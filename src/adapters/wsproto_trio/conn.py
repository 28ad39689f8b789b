"""Conn: one WebSocket connection on a trio stream (gorilla: ``Conn``).

The same contract as ``wsproto_sync.Conn`` and ``wsproto_asyncio.Conn``, in
trio's manners. Invariants:

* There is no background task: the reading task parses input as it reads
  it, as gorilla and ``wsproto_sync`` do, so nothing outlives the caller's
  nursery. Pongs, the Close echo and keepalive Pings leave while a task
  reads: keep one reading.
* One lock orders what goes to the stream, so frames never interleave. The
  reading task never waits long for a busy writer: what it must send goes
  out right after the writer's frame.
* Cancelling a read loses nothing (trio's ``receive_some`` guarantees it,
  and no event is taken from the core at a point where a cancel can land),
  so the connection stays usable. A Close, once taken, is always reported:
  its echo and the closing that follow are shielded, each bounded by 1 s.
* Cancelling a write that had started sending may leave a frame cut in
  half, so the connection then fails cleanly: the stream is closed, reads
  raise ``CloseError`` 1006 and writes the same ``ConnectionResetError``
  each time. A write cancelled before it sent anything leaves its frame
  whole in the core's queue (the core can't take it back): it goes out with
  the next send. The reading task's Pongs follow the same rules.
* Errors are permanent (gorilla's rule), on the read side and the write side.
* trio's stream errors never leave a Conn: reads report a lost stream as
  ``CloseError`` 1006, writes as ``ConnectionResetError``, as in
  ``wsproto_asyncio``.
"""

from __future__ import annotations

import json
import math
import struct
from collections.abc import AsyncIterator, Callable
from contextlib import suppress
from typing import Any

import trio

from wsproto_common import MASK_PIECE
from wsproto_core import (
    DEFAULT_READ_BUFFER_SIZE,
    DEFAULT_WRITE_BUFFER_SIZE,
    BufferPool,
    Close,
    CloseCode,
    CloseError,
    ConcurrencyError,
    Connection,
    Event,
    FrameBuffer,
    HandshakeRequest,
    HandshakeResponse,
    LocalProtocolError,
    Message,
    MessageData,
    MessageEnd,
    MessageStart,
    MessageType,
    Ping,
    Pong,
    PreparedMessage,
    RemoteProtocolError,
    WebSocketError,
    format_close_message,
)
from wsproto_core.assembly import PieceJoiner
from wsproto_core.options import opening_request, opening_response

from ._io import STREAM_GONE, raise_stream_error, socket_of

__all__ = ["Conn", "MessageReader", "MessageWriter"]

PingHandler = Callable[[bytes], None]
PongHandler = Callable[[bytes], None]
CloseHandler = Callable[[int, str], None]

_CONTROL = {MessageType.PING, MessageType.PONG, MessageType.CLOSE}
_CLOSE_FLUSH_WAIT = 1.0  # seconds the reader waits for a writer to send the last Close
_LINGER = 1.0  # seconds to drain a peer that keeps sending after we failed the connection
_CLOSE_WAIT = 1.0  # seconds a client waits for the server to close after the closing handshake
_SEND_BATCH = 65536  # bytes of frames one MessageWriter.write() queues before sending them
_MAX_HEADER = 14  # bytes of a frame header at most (RFC 6455 §5.2), for the batch's count


class Conn:
    """A WebSocket connection on a trio stream (gorilla: ``Conn``).

    Get one from an ``Upgrader``, a ``Dialer`` or ``serve()``; it is an
    async context manager that closes the connection.

    **Concurrency:** one task may read (``read_message``, ``next_reader``
    and its reader, ``read_json``, ``async for``) and one may write
    (``write_message``, ``next_writer``, ``write_json``,
    ``write_prepared_message``) at a time; a second one raises
    :class:`~wsproto_core.ConcurrencyError`. ``write_control()``,
    ``aclose()`` and the setters may be used by any task. Closing from
    another task wakes a blocked reader with ``CloseError`` 1006.

    **Cancellation and deadlines:** trio's cancel scopes (``trio.move_on_after``,
    ``trio.fail_after``) work around any call. A cancelled read loses
    nothing. A cancelled write either sent nothing, and its frame goes out
    whole with the next send, or cut its frame, and the connection fails:
    reads raise ``CloseError`` 1006, writes ``ConnectionResetError``.
    A cancelled :meth:`aclose` closes all the same. :meth:`set_read_deadline` and
    :meth:`set_write_deadline` are gorilla's, in ``trio.current_time()``, and
    permanent once they pass.

    **Keepalive:** with ``keepalive_interval`` set, a read that has waited
    that long sends a Ping; if no Pong answers within ``keepalive_timeout``,
    it sends a Close with 1011 and raises ``CloseError`` 1006. As in
    gorilla, Pings go out (and Pongs, and Close echoes) only while a task
    reads. :attr:`latency` holds the last round trip.
    """

    def __init__(
        self,
        stream: trio.abc.Stream,
        protocol: Connection,
        *,
        read_buffer_size: int = DEFAULT_READ_BUFFER_SIZE,
        write_buffer_size: int = DEFAULT_WRITE_BUFFER_SIZE,
        write_buffer_pool: BufferPool | None = None,
        keepalive_interval: float | None = None,
        keepalive_timeout: float | None = None,
    ) -> None:
        if read_buffer_size <= 0 or write_buffer_size <= 0:
            raise ValueError("buffer sizes must be positive")
        if keepalive_interval is not None and keepalive_interval <= 0:
            raise ValueError("keepalive_interval must be positive")
        self._stream = stream
        self._proto = protocol
        self._read_size = read_buffer_size
        self.write_buffer_size = write_buffer_size
        self.write_buffer_pool = write_buffer_pool
        self._send_lock = _SendLock()
        self._reading = False
        # Where close_gracefully() waits while another task reads (made then).
        self._reader_left: trio.lowlevel.ParkingLot | None = None
        self._writing = False
        self._read_error: BaseException | None = None
        self._write_error: BaseException | None = None
        self._read_deadline = math.inf
        self._write_deadline = math.inf
        self._ping_handler: PingHandler | None = None
        self._pong_handler: PongHandler | None = None
        self._close_handler: CloseHandler | None = None
        self._reader: MessageReader | None = None
        self._closed = False
        self._keepalive_interval = keepalive_interval
        self._keepalive_timeout = keepalive_timeout or keepalive_interval
        self._ping_payload: bytes | None = None
        self._ping_sent_at = trio.current_time()  # the first Ping is due an interval from now
        self._ping_count = 0
        self.latency: float | None = None
        """Seconds between the last keepalive Ping and its Pong, once measured."""
        sock = socket_of(stream)
        # A plain TCP stream's socket is read and written directly, as its
        # SocketStream would, without that layer (a few microseconds a
        # message), and lets a large message be read straight into place
        # (Connection.payload_buffer); through TLS, the stream only.
        self._sock = sock if type(stream) is trio.SocketStream else None
        self.local_addr: Any = sock.getsockname() if sock is not None else None
        """The address of this end (gorilla: ``LocalAddr``), if the stream has a socket."""
        self.remote_addr: Any = sock.getpeername() if sock is not None else None
        """The address of the peer (gorilla: ``RemoteAddr``), if the stream has a socket."""

    # -- properties --------------------------------------------------------------

    @property
    def subprotocol(self) -> str | None:
        """The negotiated subprotocol (gorilla: ``Subprotocol``)."""
        return self._proto.subprotocol

    @property
    def protocol(self) -> Connection:
        """The core connection this Conn drives."""
        return self._proto

    @property
    def request(self) -> HandshakeRequest:
        """The handshake request this server connection accepted.

        What a handler of ``serve()`` needs to know who connected, and to
        what: ``request.target`` (path and query), ``request.headers``
        (``Authorization``, ``Cookie``...), ``request.origin`` and the
        ``subprotocols`` offered.

        Raises:
            LocalProtocolError: this is a client connection (its request is
                what it dialled), or one built open, without a handshake.
        """
        return opening_request(self._proto)

    @property
    def response(self) -> HandshakeResponse:
        """The ``101`` response that opened the connection.

        A client's is the one the server sent, as ``dial()`` returned it;
        a server's the one it answered with: headers, ``subprotocol`` and
        the ``extensions`` negotiated, with their parameters.

        Raises:
            LocalProtocolError: the connection was built open, without a
                handshake.
        """
        return opening_response(self._proto)

    def net_conn(self) -> trio.abc.Stream:
        """The underlying stream (gorilla: ``NetConn``). Don't read or write it."""
        return self._stream

    # -- reading -----------------------------------------------------------------

    async def read_message(self) -> tuple[MessageType, str | bytes]:
        """Read the next whole message (gorilla: ``ReadMessage``).

        Returns:
            ``(MessageType.TEXT, str)`` or ``(MessageType.BINARY, bytes)``.

        Raises:
            CloseError: the connection closed (the code says how).
            RemoteProtocolError: the peer broke the protocol (``ReadLimitError``
                for a message over the read limit).
            TimeoutError: the read deadline passed.
        """
        self._take_reader()
        try:
            if self._reader is not None:
                await self._skip_current_message()
            self._proto.stream_messages = False
            while True:
                event = await self._next_message_event()
                if isinstance(event, Message):
                    return event.message_type, event.data
        finally:
            self._release_reader()

    async def next_reader(self) -> tuple[MessageType, MessageReader]:
        """Start reading the next message as a stream (gorilla: ``NextReader``).

        The reader delivers one message piece by piece as it arrives;
        calling ``next_reader()`` or ``read_message()`` again discards what
        is left of it.

        Raises:
            CloseError: the connection closed, as for :meth:`read_message`.
            RemoteProtocolError: the peer broke the protocol (``ReadLimitError``
                for a message over the read limit).
            TimeoutError: the read deadline passed.
        """
        self._take_reader()
        try:
            if self._reader is not None:
                await self._skip_current_message()
            self._proto.stream_messages = True
            while True:
                event = await self._next_message_event()
                if isinstance(event, MessageStart):
                    self._reader = MessageReader(self, event.message_type)
                    return event.message_type, self._reader
                if isinstance(event, Message):  # started before streaming was on
                    self._reader = MessageReader(self, event.message_type, event.data)
                    return event.message_type, self._reader
        finally:
            self._release_reader()

    async def read_json(self, **loads: Any) -> Any:
        """Read the next message and decode it as JSON (gorilla: ``ReadJSON``)."""
        return json.loads((await self.read_message())[1], **loads)

    def __aiter__(self) -> AsyncIterator[str | bytes]:
        """Iterate over messages (``str`` or ``bytes``) until the peer closes normally.

        The iteration ends on a Close with 1000, 1001 or no code; any other
        close, or any error, is raised.
        """
        return self._messages()

    async def _messages(self) -> AsyncIterator[str | bytes]:
        while True:
            try:
                _, data = await self.read_message()
            except CloseError as exc:
                if exc.normal:
                    return
                raise
            yield data

    def _take_reader(self) -> None:
        if self._reading:
            raise ConcurrencyError("another task is reading: a Conn has one reader at a time")
        self._reading = True

    def _release_reader(self) -> None:
        self._reading = False
        if self._reader_left:  # someone waits (close_gracefully): rarely
            self._reader_left.unpark_all()

    async def _skip_current_message(self) -> None:
        reader = self._reader
        self._reader = None
        if reader is not None:
            await reader._discard()

    async def _next_message_event(self) -> Event:
        """The next message event; control events go to their handlers."""
        while True:
            event = await self._next_event()
            if isinstance(event, Ping):
                if self._ping_handler is not None:
                    self._ping_handler(event.payload)
            elif isinstance(event, Pong):
                if event.payload == self._ping_payload:
                    self.latency = trio.current_time() - self._ping_sent_at
                    self._ping_payload = None
                if self._pong_handler is not None:
                    self._pong_handler(event.payload)
            elif isinstance(event, Close):
                error = CloseError(event.code, event.reason)
                self._read_error = error
                if self._close_handler is not None:
                    self._close_handler(event.code, event.reason)
                raise error
            else:
                return event

    async def _next_event(self) -> Event:
        if self._read_error is not None:
            raise self._read_error
        received = False
        while True:
            # A cancel that lands before next_event() has taken nothing, so
            # loses nothing; and every read is a cancel point, as in trio.
            await trio.lowlevel.checkpoint_if_cancelled()
            if self._proto.has_data_to_send:
                await self._flush()  # what earlier events queued: Pongs
            try:
                event = self._proto.next_event()
            except RemoteProtocolError as exc:
                self._read_error = exc
                await self._finish_closing()  # the Close that fails the connection
                raise
            if event is not None:
                if isinstance(event, Close):
                    await self._finish_closing()  # the Close echo
                elif not received:
                    # Buffered by an earlier read: still a schedule point, as
                    # every trio read is, and shielded, so the event is kept.
                    await trio.lowlevel.cancel_shielded_checkpoint()
                return event
            view = self._proto.payload_buffer() if self._sock is not None else None
            got = await self._receive(view)
            received = True
            if not got:
                self._proto.receive_eof()
            elif isinstance(got, int):  # read into the view
                self._proto.payload_received(got)
            else:
                self._proto.receive_data(got)

    async def _receive(self, view: memoryview | None) -> bytes | bytearray | int:
        """Read within the read deadline, keeping the connection alive.

        Returns what ``receive_some()`` returns, or with ``view``, how many
        bytes were read into it; empty or 0 at the end of the stream.
        """
        while True:
            wake = self._read_deadline
            if self._keepalive_interval is not None:
                await self._keepalive_step()
                wake = min(wake, self._keepalive_due())
            try:
                if wake == math.inf:  # the usual case: no cancel scope to set up
                    return await self._receive_now(view)
                with trio.move_on_at(wake):
                    return await self._receive_now(view)
            except STREAM_GONE:
                if not self._closed:  # not closed by another task: the peer vanished
                    self._read_error = CloseError(CloseCode.ABNORMAL_CLOSURE)
                return b""  # the core reports the end of the stream as 1006
            if trio.current_time() >= self._read_deadline:
                error = TimeoutError("read deadline passed")
                self._read_error = error
                raise error

    async def _receive_now(self, view: memoryview | None) -> bytes | bytearray | int:
        sock = self._sock
        if sock is None:
            return await self._stream.receive_some(self._read_size)
        # As SocketStream.receive_some (which has no recv_into): a socket's
        # error is the stream's, and cancelling loses nothing.
        try:
            if view is None:
                return await sock.recv(self._read_size)  # type: ignore[no-any-return]
            return await sock.recv_into(view)  # type: ignore[no-any-return]
        except OSError as exc:
            raise_stream_error(exc)

    async def _finish_closing(self) -> None:
        """Send the Close echo (or the Close failing the connection), then close the stream.

        The core has taken the Close, so the event must reach the caller
        even if this read is cancelled meanwhile: lost, it would leave reads
        that never end. So this runs shielded, bounded by its own timeouts.
        """
        with trio.CancelScope(shield=True):
            with trio.move_on_after(_CLOSE_FLUSH_WAIT):
                # The last Close should go out before the stream closes, if a
                # stuck writer lets it within a bounded time (gorilla waits 1 s too).
                await self._flush(wait=_CLOSE_FLUSH_WAIT)
            if not self._proto.close_expected():
                # A client after a clean closing handshake: "the server SHOULD
                # close the TCP connection first" (RFC 6455 §7.1.1). No task
                # reads once this one returns, so wait for that here, for a
                # bounded time, as the core advises; then close anyway.
                await self._drain(_CLOSE_WAIT)
            elif isinstance(self._read_error, RemoteProtocolError):
                # Closing a socket with unread input makes TCP send a reset,
                # and the reset may destroy the Close just sent before the
                # peer reads it. So after failing the connection, half-close
                # if the stream can, and drop what the peer sends until it
                # closes too, for a bounded time.
                send_eof = getattr(self._stream, "send_eof", None)
                # Not under a writer stuck part way through a frame (it
                # holds the send lock): the stream closes after the wait.
                if send_eof is not None and not self._send_lock.locked():
                    with suppress(*STREAM_GONE, trio.BusyResourceError):
                        await send_eof()
                    await self._drain(_LINGER)
            await self.aclose()

    async def _drain(self, timeout: float) -> None:
        """Read and drop what comes until the peer closes, for at most ``timeout`` seconds."""
        with trio.move_on_after(timeout):
            try:
                while await self._stream.receive_some(self._read_size):
                    pass
            except (*STREAM_GONE, trio.BusyResourceError):
                pass

    # -- keepalive ---------------------------------------------------------------

    def _keepalive_due(self) -> float:
        if self._ping_payload is not None:  # waiting for the Pong
            return self._ping_sent_at + (self._keepalive_timeout or math.inf)
        return self._ping_sent_at + (self._keepalive_interval or math.inf)

    async def _keepalive_step(self) -> None:
        # The reading task queues what keepalive sends and flushes it as it
        # flushes Pongs: were it to wait for a stuck writer, it would stop
        # reading, and two peers stuck writing to each other would hang.
        now = trio.current_time()
        if now < self._keepalive_due():
            return
        if self._ping_payload is not None:
            # No Pong in time: the peer or the path is gone. Say why, then
            # drop the connection; no Close will come back, so this is 1006.
            error = CloseError(CloseCode.ABNORMAL_CLOSURE, "keepalive ping timeout")
            self._read_error = error
            with suppress(WebSocketError):  # a Close went already
                self._proto.send_message(
                    MessageType.CLOSE,
                    format_close_message(CloseCode.INTERNAL_ERROR, "keepalive ping timeout"),
                )
            try:
                with trio.move_on_after(_CLOSE_FLUSH_WAIT):
                    await self._flush(wait=_CLOSE_FLUSH_WAIT)
            finally:
                await self.aclose()  # cancelled or not: the connection is over
            raise error
        self._ping_count += 1
        payload = struct.pack("!I", self._ping_count & 0xFFFFFFFF)
        try:
            self._proto.send_message(MessageType.PING, payload)
        except WebSocketError:
            return  # closing: nothing to keep alive
        self._ping_payload, self._ping_sent_at = payload, now
        await self._flush()

    # -- writing -----------------------------------------------------------------

    async def write_message(self, message_type: MessageType | int, data: str | bytes) -> None:
        """Send a whole message (gorilla: ``WriteMessage``).

        Raises:
            CloseSentError: a Close was already sent.
            ConcurrencyError: another task is writing.
            TimeoutError: the write deadline passed (now or at an earlier
                write); the connection is closed.
            ConnectionResetError: the connection is closed, or failed (also
                at an earlier write); its ``__cause__`` may tell why.
        """
        self._take_writer()
        try:
            self._check_writable()
            self._proto.send_message(message_type, data)
            await self._send(self._write_deadline)
        finally:
            self._writing = False

    async def write_json(self, value: Any, **dumps: Any) -> None:
        """Send ``value`` as a JSON text message (gorilla: ``WriteJSON``)."""
        await self.write_message(MessageType.TEXT, json.dumps(value, **dumps))

    async def write_prepared_message(self, message: PreparedMessage) -> None:
        """Send a prepared message (gorilla: ``WritePreparedMessage``)."""
        self._take_writer()
        try:
            self._check_writable()
            self._proto.send_prepared(message)
            await self._send(self._write_deadline)
        finally:
            self._writing = False

    def next_writer(self, message_type: MessageType | int) -> MessageWriter:
        """Start a message to write as a stream (gorilla: ``NextWriter``).

        Each ``write_buffer_size`` bytes written become one frame; ``aclose()``
        sends the last one. Use it as ``async with conn.next_writer(t) as w``.

        Raises:
            ConcurrencyError: another task is writing.
        """
        if message_type not in (MessageType.TEXT, MessageType.BINARY):
            raise LocalProtocolError("next_writer() writes text or binary messages")
        self._take_writer()  # released by the writer's aclose()
        return MessageWriter(self, MessageType(message_type))

    async def write_control(
        self, message_type: MessageType | int, data: bytes = b"", deadline: float | None = None
    ) -> None:
        """Send a Ping, Pong or Close frame, from any task (gorilla: ``WriteControl``).

        Args:
            message_type: ``MessageType.PING``, ``PONG`` or ``CLOSE``; a Close
                payload is built with ``format_close_message()``.
            data: the payload, at most 125 bytes.
            deadline: a ``trio.current_time()`` time to give up at, or ``None``.

        Raises:
            CloseSentError: a Close was already sent.
            TimeoutError: the deadline passed.
            ConnectionResetError: the connection is closed, or failed.
        """
        if message_type not in _CONTROL:
            raise LocalProtocolError("write_control() sends Ping, Pong or Close")
        self._check_writable()
        self._proto.send_message(message_type, data)
        await self._send(math.inf if deadline is None else deadline)

    def _take_writer(self) -> None:
        if self._writing:
            raise ConcurrencyError("another task is writing: a Conn has one writer at a time")
        self._writing = True

    def _write_failed(self) -> bool:
        """Whether nothing written can arrive any more: a write failed, or the stream closed."""
        return self._write_error is not None or self._closed

    def _check_writable(self) -> None:
        # Write errors are permanent too (gorilla keeps writeErr): the same
        # error, before the core queues a frame that could never leave.
        if self._write_error is not None:
            raise self._write_error

    async def _send(self, deadline: float) -> None:
        """Send what the core queued, then what was queued meanwhile (Pongs, a Close echo)."""
        self._check_writable()
        if self._closed:
            # After the core's checks, as in wsproto_asyncio: a write after
            # our Close was sent raises CloseSentError, closed or not.
            raise ConnectionResetError("the connection is closed")
        if deadline == math.inf:  # the usual case: no cancel scope to set up
            await self._send_queued()
            return
        with trio.move_on_at(deadline) as scope:
            await self._send_queued()
        if scope.cancelled_caught:
            # gorilla's write deadline: the connection is done.
            error = TimeoutError("write deadline passed")
            self._write_error = error
            await self.aclose()
            raise error

    async def _send_queued(self) -> None:
        lock = self._send_lock
        try:
            # Free, it is taken without a schedule point: send_all() has one.
            lock.acquire_nowait()
        except trio.WouldBlock:
            await lock.acquire()
        try:
            # A cancel that arrived while we waited for the lock leaves the
            # frame whole in the core's queue: the next send takes it.
            await trio.lowlevel.checkpoint_if_cancelled()
            await self._send_all_queued()
        finally:
            lock.release()

    async def _send_all_queued(self) -> None:
        """Send what the core queued, then what was queued meanwhile (Pongs, a Close echo)."""
        while buffers := self._proto.buffers_to_send(MASK_PIECE):
            # A large payload goes after its header without a copy to join them;
            # a client's, masked a piece at a time.
            for data in buffers:
                await self._send_all(data)

    async def _flush(self, *, wait: float = 0.0) -> None:
        # The reader never waits long for a busy writer: two peers each stuck
        # writing would otherwise stop reading for good. The writer sends
        # what is left queued as soon as its frame is out.
        if self._write_error is not None or self._closed:
            return
        if wait:
            acquired = False
            with trio.move_on_after(wait):
                await self._send_lock.acquire()
                acquired = True
            if not acquired:
                return
        else:
            try:
                self._send_lock.acquire_nowait()  # no checkpoint: reads stay fast
            except trio.WouldBlock:
                return
        try:
            # A cancel that arrived before this point has cut nothing: it
            # leaves what is queued whole, for the next send to take.
            await trio.lowlevel.checkpoint_if_cancelled()
            await self._send_all_queued()
        except OSError:
            pass  # the read side reports what matters
        finally:
            self._send_lock.release()

    async def _send_all(self, data: bytes) -> None:
        try:
            sock = self._sock
            if sock is None:
                await self._stream.send_all(data)
            else:
                await _send_all_to(sock, data)
        except BaseException as exc:
            # Cancelled or failed part way: a frame may be cut in half, so
            # nothing can follow it. Fail cleanly: close the stream.
            error = _write_error_of(exc)
            if self._write_error is None and not self._closed:
                # The first failure is every later write's error; one that
                # closed the stream under us (a deadline's) stays theirs.
                self._write_error = error
            await trio.aclose_forcefully(self._stream)
            if isinstance(exc, STREAM_GONE):
                raise error from exc  # what the other adapters raise
            raise

    # -- options -----------------------------------------------------------------

    def set_read_limit(self, limit: int | None) -> None:
        """Set the largest message to accept, in bytes (gorilla: ``SetReadLimit``).

        A longer message closes the connection with 1009 and raises
        ``ReadLimitError``. ``None`` removes the limit.
        """
        self._proto.max_message_size = limit

    def set_read_deadline(self, deadline: float | None) -> None:
        """Fail reads not done by ``deadline``, in ``trio.current_time()`` (``SetReadDeadline``).

        As in gorilla, a read that times out this way is permanent. To give
        up on one read and keep the connection, use ``trio.move_on_after()``.
        """
        self._read_deadline = math.inf if deadline is None else deadline

    def set_write_deadline(self, deadline: float | None) -> None:
        """Fail writes not done by ``deadline`` (gorilla: ``SetWriteDeadline``).

        A write that times out this way closes the connection.
        """
        self._write_deadline = math.inf if deadline is None else deadline

    def enable_write_compression(self, enabled: bool) -> None:
        """Compress the next messages, or not (gorilla: ``EnableWriteCompression``)."""
        self._proto.enable_write_compression(enabled)

    def set_compression_level(self, level: int) -> None:
        """Set the zlib level of the next messages (gorilla: ``SetCompressionLevel``)."""
        self._proto.set_compression_level(level)

    # -- handlers ----------------------------------------------------------------

    def set_ping_handler(self, handler: PingHandler | None) -> None:
        """Call ``handler(payload)`` for each Ping (gorilla: ``SetPingHandler``).

        Handlers run inside the read methods. ``None`` restores the default,
        which answers with a Pong. A handler of your own replaces that
        answer: send it with ``write_control()``.
        """
        self._ping_handler = handler
        self._proto.auto_pong = handler is None

    def ping_handler(self) -> PingHandler | None:
        """The ping handler, or ``None`` for the default (gorilla: ``PingHandler``)."""
        return self._ping_handler

    def set_pong_handler(self, handler: PongHandler | None) -> None:
        """Call ``handler(payload)`` for each Pong, inside the reads (``SetPongHandler``)."""
        self._pong_handler = handler

    def pong_handler(self) -> PongHandler | None:
        """The pong handler, or ``None`` (gorilla: ``PongHandler``)."""
        return self._pong_handler

    def set_close_handler(self, handler: CloseHandler | None) -> None:
        """Call ``handler(code, text)`` on the peer's Close (gorilla: ``SetCloseHandler``).

        The core has already answered the Close (RFC 6455 §5.5.1 requires
        it), so the handler only observes; the read then raises ``CloseError``.
        """
        self._close_handler = handler

    def close_handler(self) -> CloseHandler | None:
        """The close handler, or ``None`` (gorilla: ``CloseHandler``)."""
        return self._close_handler

    # -- closing -----------------------------------------------------------------

    async def aclose(self) -> None:
        """Close the stream now, without a closing handshake (gorilla: ``Close``).

        A task blocked reading wakes up with ``CloseError`` 1006, one
        blocked writing with ``ConnectionResetError``, as every later write.
        It never waits for the peer, and closes even when cancelled. For a
        clean close, use :meth:`close_gracefully`.
        """
        if self._closed:
            await trio.lowlevel.checkpoint()  # a checkpoint, as every trio aclose()
            return
        self._closed = True
        await trio.aclose_forcefully(self._stream)

    close = aclose
    """The same as :meth:`aclose`, under the name the other adapters use."""

    async def close_gracefully(
        self, code: int = CloseCode.NORMAL_CLOSURE, reason: str = "", timeout: float = 5.0
    ) -> None:
        """Send a Close, wait up to ``timeout`` seconds for the peer's, then close.

        If another task is reading, it reads the messages that arrive
        meanwhile, and then the peer's Close (and this waits for it, or
        reads on if that task stops); otherwise they are discarded.
        """
        try:
            with trio.move_on_after(timeout):
                if self._proto.close_sent is None and self._proto.close_received is None:
                    await self.write_control(
                        MessageType.CLOSE, format_close_message(code, reason), self._write_deadline
                    )
                while self._read_error is None and not self._closed:
                    if self._reading:
                        # Reading too would raise ConcurrencyError, and take
                        # messages from that task: it reads up to the Close.
                        if self._reader_left is None:
                            self._reader_left = trio.lowlevel.ParkingLot()
                        await self._reader_left.park()
                    else:
                        await self.read_message()
        except (WebSocketError, TimeoutError, OSError):
            pass
        finally:
            await self.aclose()

    async def __aenter__(self) -> Conn:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()

    def __repr__(self) -> str:
        return f"<Conn {self._proto.role.value} {self.remote_addr!r} {self._proto.state.name}>"


class _SendLock:
    """Who sends on the stream: one task at a time, in the order they asked.

    What ``trio.StrictFIFOLock`` does for this one use, on a ``ParkingLot``
    as it is, without what every call pays there for checks not needed
    here (which task holds it; breaking the lot if that task exits, when
    every use releases it in a ``finally``): a twentieth of a W2 round
    trip. The lot is made when a task first has to wait (rarely: a reader
    sending a Pong while a writer sends), not for every idle connection.
    """

    __slots__ = ("_held", "_waiting")

    def __init__(self) -> None:
        self._held = False
        self._waiting: trio.lowlevel.ParkingLot | None = None

    def locked(self) -> bool:
        return self._held

    def acquire_nowait(self) -> None:
        if self._held:
            raise trio.WouldBlock
        self._held = True

    async def acquire(self) -> None:
        await trio.lowlevel.checkpoint_if_cancelled()
        if not self._held:
            self._held = True
            await trio.lowlevel.cancel_shielded_checkpoint()
            return
        if self._waiting is None:
            self._waiting = trio.lowlevel.ParkingLot()
        # Cancelled while parked, the task leaves the lot without the lock;
        # unparked, it holds it: release() hands it over, first come first.
        await self._waiting.park()

    def release(self) -> None:
        if not (self._waiting and self._waiting.unpark()):
            self._held = False


async def _send_all_to(sock: Any, data: bytes) -> None:
    """As ``SocketStream.send_all()``, for a frame: send it all, a socket's error the stream's."""
    try:
        sent = await sock.send(data)
        if sent < len(data):  # the socket's buffer is full: the rest when it drains
            with memoryview(data) as view:
                while sent < len(view):
                    sent += await sock.send(view[sent:])
    except OSError as exc:
        raise_stream_error(exc)


def _write_error_of(exc: BaseException) -> BaseException:
    """What every write raises once a send failed with ``exc``, or was cancelled part way.

    wsproto_asyncio raises ``ConnectionResetError`` for any write on a lost
    connection, whatever the socket said (``EPIPE``, a TLS error...): so do
    we, with trio's error, which holds the socket's, as the cause.
    """
    if isinstance(exc, trio.ClosedResourceError):
        return ConnectionResetError("the connection is closed")
    if isinstance(exc, trio.BrokenResourceError):
        return ConnectionResetError("the connection failed")
    if isinstance(exc, Exception):
        return exc  # a stream of one's own: its error, as it is
    return ConnectionResetError("a write was cancelled part way: the connection failed")


class MessageReader:
    """Reads one message as it arrives (what ``next_reader()`` returns).

    ``await reader.read(n)`` gives up to ``n`` bytes, ``b""`` at the end;
    ``async for chunk in reader`` gives the pieces as they arrive. Text
    messages give their UTF-8 bytes. Only the connection's reading task
    may read it.
    """

    def __init__(self, conn: Conn, message_type: MessageType, whole: str | bytes | None = None):
        self._conn = conn
        self.message_type = message_type
        """``MessageType.TEXT`` or ``MessageType.BINARY``."""
        self._pending = (
            b"" if whole is None else (whole.encode() if isinstance(whole, str) else whole)
        )
        self._done = whole is not None
        self._discarded = False

    async def read(self, size: int = -1) -> bytes:
        """Read up to ``size`` bytes (all the rest with -1); ``b""`` at the end."""
        self._check_current()
        if self._pending or self._done:
            await trio.lowlevel.checkpoint()  # served from the buffer: still a checkpoint
        if size is None or size < 0:
            parts = PieceJoiner()
            parts.append(self._pending)
            self._pending = b""
            try:
                while not self._done:
                    await self._pull()
                    parts.append(self._pending)
                    self._pending = b""
            except BaseException:
                self._pending = parts.join()  # cancelled: what came stays for the next read
                raise
            return parts.join()
        while not self._pending and not self._done:
            await self._pull()
        chunk = self._pending[:size]
        self._pending = self._pending[size:]
        return chunk

    def __aiter__(self) -> AsyncIterator[bytes]:
        """The message's pieces as they arrive."""
        return self._chunks()

    async def _chunks(self) -> AsyncIterator[bytes]:
        while chunk := await self.read(DEFAULT_READ_BUFFER_SIZE):
            yield chunk

    def _check_current(self) -> None:
        if self._discarded:
            raise LocalProtocolError("this message was discarded by a later read")

    async def _pull(self) -> None:
        conn = self._conn
        conn._take_reader()
        try:
            event = await conn._next_message_event()
        finally:
            conn._release_reader()
        if isinstance(event, MessageData):
            self._pending = event.data
        elif isinstance(event, MessageEnd):
            self._done = True
            conn._reader = None

    async def _discard(self) -> None:
        self._discarded = True
        self._pending = b""
        while not self._done:
            event = await self._conn._next_message_event()
            if isinstance(event, MessageEnd):
                self._done = True


class MessageWriter:
    """Writes one message in frames of ``write_buffer_size`` (what ``next_writer()`` returns).

    ``await writer.aclose()`` sends the last frame and ends the message; use
    it as ``async with conn.next_writer(t) as writer``. The frames one
    ``write()`` fills go out together, about 64 KiB at a time. Text messages take
    UTF-8 ``bytes`` (or ``str`` through :meth:`write_text`). The buffer
    comes from the connection's ``write_buffer_pool`` at the first write and
    goes back at ``aclose()``.

    Leaving the ``async with`` block normally ends the message, and an error
    doing so is raised. Leaving it on an exception lets that exception
    through: the message is ended if the connection still can (an error
    doing so is dropped), and nothing is sent once the stream failed or
    closed.
    """

    def __init__(self, conn: Conn, message_type: MessageType) -> None:
        self._conn = conn
        self._type = message_type
        self._frames = FrameBuffer(conn.write_buffer_size, conn.write_buffer_pool)
        self.closed = False

    async def write(self, data: Any) -> int:
        """Buffer ``data``; each time the buffer is full and more comes, it goes out as a frame."""
        if self.closed:
            raise ValueError("write to a closed message writer")
        await trio.lowlevel.checkpoint_if_cancelled()  # cancelled: nothing was buffered
        sent = False
        queued = 0  # bytes of frames queued in the core and not sent yet
        for payload in self._frames.write(data):
            self._queue_frame(payload, fin=False)
            queued += len(payload) + _MAX_HEADER
            if queued >= _SEND_BATCH:
                # Many small frames, one send: each send costs a syscall
                # and a pass through trio's scheduler, and wakes the peer's
                # reader once more.
                await self._conn._send(self._conn._write_deadline)
                sent, queued = True, 0
        if queued:
            await self._conn._send(self._conn._write_deadline)
        elif not sent:
            await trio.lowlevel.cancel_shielded_checkpoint()  # buffered only: still a checkpoint
        return memoryview(data).nbytes

    async def write_text(self, text: str) -> int:
        """Write ``text`` as UTF-8; returns the number of characters."""
        await self.write(text.encode())
        return len(text)

    async def aclose(self) -> None:
        """Send the last frame, ending the message."""
        await self._end(send=True)

    close = aclose
    """The same as :meth:`aclose`, under the name the other adapters use."""

    async def __aenter__(self) -> MessageWriter:
        return self

    async def __aexit__(self, exc_type: object, exc: BaseException | None, tb: object) -> None:
        if exc is None:
            await self.aclose()
            return
        # Leaving on an error: end the message if the connection still can,
        # but let that error through, not one of ours: a Cancelled replaced
        # by a BrokenResourceError would never reach its cancel scope. On a
        # stream that failed or closed, don't even try.
        with suppress(Exception):
            await self._end(send=not self._conn._write_failed())

    async def _end(self, *, send: bool) -> None:
        if self.closed:
            return
        self.closed = True
        try:
            last = self._frames.finish()  # the buffer goes back to the pool either way
            if send:
                await self._frame(last, fin=True)
        finally:
            self._conn._writing = False

    async def _frame(self, data: bytes, *, fin: bool) -> None:
        self._queue_frame(data, fin=fin)
        await self._conn._send(self._conn._write_deadline)

    def _queue_frame(self, data: bytes, *, fin: bool) -> None:
        self._conn._check_writable()
        core = self._conn._proto
        if self._type is MessageType.TEXT:
            core.send_text(data, fin=fin)
        else:
            core.send_binary(data, fin=fin)
