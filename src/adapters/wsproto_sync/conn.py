"""Conn: one WebSocket connection on a blocking socket (gorilla: ``Conn``).

The adapter owns the socket, the locks and the deadlines; every protocol
decision is the core's. Invariants:

* Every call into the core happens under ``_core_lock``; bytes the core
  queues are sent under ``_write_lock``, taken first, so frames leave in the
  order they were queued and the two locks never deadlock.
* The socket is non-blocking and waits go through ``poll``/``select``: reads
  and writes get independent deadlines, which one socket timeout cannot give.
* Errors on the read side are permanent (gorilla's rule): after one, every
  read raises it again. A failed or timed-out write closes the connection,
  since a frame may have been cut in half.
"""

from __future__ import annotations

import io
import json
import socket
import struct
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager, suppress
from typing import Any

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

from ._io import prefers_blocking, recv, recv_into, send_buffers

__all__ = ["Conn", "MessageReader", "MessageWriter", "join_messages"]

_CLOSE_FLUSH_WAIT = 1.0  # seconds the reader waits for a writer to send the last Close
_LINGER = 1.0  # seconds to drain a peer that keeps sending after our last Close

PingHandler = Callable[[bytes], None]
PongHandler = Callable[[bytes], None]
CloseHandler = Callable[[int, str], None]

_CONTROL = {MessageType.PING, MessageType.PONG, MessageType.CLOSE}


class Conn:
    """A WebSocket connection on a blocking socket (gorilla: ``Conn``).

    Get one from an ``Upgrader`` or a ``Dialer``, or build one around a
    socket whose handshake is done and an open core connection.

    **Concurrency:** one thread may read (``read_message``, ``next_reader``,
    and the reader it returns, ``read_json``, ``for message in conn``) and one may write
    (``write_message``, ``next_writer``, ``write_json``,
    ``write_prepared_message``) at a time; a second one raises
    :class:`~wsproto_core.ConcurrencyError`. ``write_control()``, ``close()``
    and the setters may be called from any thread at any time.

    Args:
        sock: the connected socket (TCP or TLS); the Conn owns it from now on.
        protocol: the core connection, already open.
        read_buffer_size: how many bytes to ask the socket for at once.
        write_buffer_size: the frame size of ``next_writer()``'s writers.
        write_buffer_pool: where writers take their buffer from and give it
            back to when the message is done (gorilla: ``WriteBufferPool``);
            by default each writer allocates its own.
        keepalive_interval: send a Ping this often, from a thread of the
            Conn's own, and fail the connection with 1011 when no Pong
            answers within ``keepalive_timeout`` (default: the interval).
            Pongs are seen by the read methods, so keep a thread reading,
            as gorilla requires for control frames. :attr:`latency` holds
            the last round trip.
        keepalive_timeout: seconds a keepalive Ping waits for its Pong.
    """

    def __init__(
        self,
        sock: socket.socket,
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
        self._sock = sock
        self._proto = protocol
        self._read_size = read_buffer_size
        self.write_buffer_size = write_buffer_size
        self.write_buffer_pool = write_buffer_pool
        self._core_lock = threading.Lock()
        self._write_lock = threading.Lock()
        self._reader_role = threading.Lock()
        self._writer_role = threading.Lock()
        self._read_error: WebSocketError | OSError | None = None
        self._write_error: WebSocketError | OSError | None = None
        self._read_deadline: float | None = None
        self._write_deadline: float | None = None
        self._ping_handler: PingHandler | None = None
        self._pong_handler: PongHandler | None = None
        self._close_handler: CloseHandler | None = None
        self._reader: MessageReader | None = None
        self._closed = False
        self.local_addr = sock.getsockname()
        """The address of this end (gorilla: ``LocalAddr``)."""
        self.remote_addr = sock.getpeername()
        """The address of the peer (gorilla: ``RemoteAddr``)."""
        sock.setblocking(prefers_blocking(sock))  # see _io
        if sock.family in (socket.AF_INET, socket.AF_INET6):
            # Frames go out whole, often as one send; don't let Nagle hold
            # a small one back waiting for an ACK (asyncio does the same).
            with suppress(OSError):
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.latency: float | None = None
        """Seconds between the last keepalive Ping and its Pong, once measured."""
        self._stopped = threading.Event()
        self._pings: dict[bytes, tuple[float, threading.Event]] = {}
        if keepalive_interval is not None:
            timeout = keepalive_interval if keepalive_timeout is None else keepalive_timeout
            threading.Thread(
                target=self._keep_alive,
                args=(keepalive_interval, timeout),
                name=f"wsproto keepalive {self.remote_addr!r}",
                daemon=True,
            ).start()

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

    def net_conn(self) -> socket.socket:
        """The underlying socket (gorilla: ``NetConn``). Don't read or write it."""
        return self._sock

    # -- reading -----------------------------------------------------------------

    def read_message(self) -> tuple[MessageType, str | bytes]:
        """Read the next whole message (gorilla: ``ReadMessage``).

        Returns:
            ``(MessageType.TEXT, str)`` or ``(MessageType.BINARY, bytes)``.

        Raises:
            CloseError: the connection closed (the code says how).
            RemoteProtocolError: the peer broke the protocol (``ReadLimitError``
                for a message over the read limit).
            TimeoutError: the read deadline passed.
        """
        # Roles taken by hand, not with a context manager: this is the hot path.
        _take_role(self._reader_role, "reading", "reader")
        try:
            if self._reader is not None:
                self._skip_current_message()
            self._proto.stream_messages = False
            while True:
                event = self._next_message_event()
                if type(event) is Message:
                    return event.message_type, event.data
        finally:
            self._reader_role.release()

    def next_reader(self) -> tuple[MessageType, MessageReader]:
        """Start reading the next message as a stream (gorilla: ``NextReader``).

        The reader reads one message, piece by piece as it arrives; calling
        ``next_reader()`` or ``read_message()`` again discards what is left of it.

        Raises:
            CloseError: the connection closed, as for :meth:`read_message`.
            RemoteProtocolError: the peer broke the protocol (``ReadLimitError``
                for a message over the read limit).
            TimeoutError: the read deadline passed.
        """
        with self._reading():
            self._skip_current_message()
            self._proto.stream_messages = True
            while True:
                event = self._next_message_event()
                if isinstance(event, MessageStart):
                    self._reader = MessageReader(self, event.message_type)
                    return event.message_type, self._reader
                if isinstance(event, Message):  # started before streaming was on
                    self._reader = MessageReader(self, event.message_type, event.data)
                    return event.message_type, self._reader

    def read_json(self, **loads: Any) -> Any:
        """Read the next message and decode it as JSON (gorilla: ``ReadJSON``)."""
        return json.loads(self.read_message()[1], **loads)

    def __iter__(self) -> Iterator[str | bytes]:
        """Iterate over messages (``str`` or ``bytes``) until the peer closes normally.

        The iteration ends on a Close with 1000, 1001 or no code; any other
        close, or any error, is raised. As the async adapters' ``async for``.
        """
        while True:
            try:
                _, data = self.read_message()
            except CloseError as exc:
                if exc.normal:
                    return
                raise
            yield data

    def _skip_current_message(self) -> None:
        reader = self._reader
        self._reader = None
        if reader is not None:
            reader._discard()

    def _reading(self) -> AbstractContextManager[None]:
        return _role(self._reader_role, "reading", "reader")

    def _next_message_event(self) -> Event:
        """The next message event; control events go to their handlers."""
        while True:
            event = self._next_event()
            if type(event) is Message:  # the common case first
                return event
            if isinstance(event, Ping):
                if self._ping_handler is not None:
                    self._ping_handler(event.payload)
            elif isinstance(event, Pong):
                if self._pings:
                    self._pong_arrived(event.payload)
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

    def _next_event(self) -> Event:
        if self._read_error is not None:
            raise self._read_error
        while True:
            error: WebSocketError | None = None
            with self._core_lock:
                try:
                    event = self._proto.next_event()
                except RemoteProtocolError as exc:
                    event, error = None, exc
            if self._proto.has_data_to_send:
                self._flush()  # Pongs, the Close echo, the Close that fails the connection
            if error is not None:
                self._read_error = error
                self._close_if_expected()
                raise error
            if event is not None:
                if isinstance(event, Close):
                    self._close_if_expected()
                return event
            with self._core_lock:
                view = self._proto.payload_buffer()
            try:
                if view is not None:  # straight into a large message, no copy
                    size = recv_into(self._sock, view, self._read_deadline)
                    data = b""
                else:
                    data = recv(self._sock, self._read_size, self._read_deadline)
                    size = len(data)
            except TimeoutError as exc:
                self._read_error = exc
                raise
            except OSError as exc:
                if not self._closed:
                    self._read_error = exc
                    raise
                size = 0  # close() from another thread: report it as the end of the stream
            with self._core_lock:
                if not size:
                    self._proto.receive_eof()
                elif view is not None:
                    self._proto.payload_received(size)
                else:
                    self._proto.receive_data(data)

    def _close_if_expected(self) -> None:
        # The server closes the TCP connection first (RFC 6455 §7.1.1); the core says when.
        if self._proto.close_expected():
            # The last Close should go out before the socket closes, if a
            # stuck writer lets it within a bounded time (gorilla waits 1 s too).
            self._flush(wait=_CLOSE_FLUSH_WAIT)
            if isinstance(self._read_error, RemoteProtocolError):
                self._linger()
            self.close()

    def _linger(self) -> None:
        # Closing a socket with unread input makes TCP send a reset, and the
        # reset may destroy the Close just sent before the peer reads it: a
        # peer still sending a message over the read limit would see 1006,
        # not 1009. So after failing the connection, half-close, then read
        # and drop what the peer sends until it closes too, for a bounded
        # time. (After a normal closing handshake the peer sends nothing more.)
        if self._closed:
            return
        with suppress(OSError):
            self._sock.shutdown(socket.SHUT_WR)
        deadline = time.monotonic() + _LINGER
        with suppress(OSError):  # TimeoutError included
            while recv(self._sock, self._read_size, deadline):
                pass

    # -- writing -----------------------------------------------------------------

    def write_message(self, message_type: MessageType | int, data: str | bytes) -> None:
        """Send a whole message (gorilla: ``WriteMessage``).

        Raises:
            CloseSentError: a Close was already sent.
            ConcurrencyError: another thread is writing.
            TimeoutError: the write deadline passed; the connection is closed.
            OSError: the socket failed; the connection is closed.
        """
        _take_role(self._writer_role, "writing", "writer")
        try:
            self._send(lambda core: core.send_message(message_type, data), self._write_deadline)
        finally:
            self._writer_role.release()

    def write_json(self, value: Any, **dumps: Any) -> None:
        """Send ``value`` as a JSON text message (gorilla: ``WriteJSON``)."""
        self.write_message(MessageType.TEXT, json.dumps(value, **dumps))

    def write_prepared_message(self, message: PreparedMessage) -> None:
        """Send a prepared message (gorilla: ``WritePreparedMessage``)."""
        with self._writing():
            self._send(lambda core: core.send_prepared(message), self._write_deadline)

    def next_writer(self, message_type: MessageType | int) -> MessageWriter:
        """Start a message to write as a stream (gorilla: ``NextWriter``).

        Each ``write_buffer_size`` bytes written become one frame; ``close()``
        sends the last one. Use it as a context manager.

        Raises:
            ConcurrencyError: another thread is writing.
        """
        if message_type not in (MessageType.TEXT, MessageType.BINARY):
            raise LocalProtocolError("next_writer() writes text or binary messages")
        _take_role(self._writer_role, "writing", "writer")  # released by the writer's close()
        return MessageWriter(self, MessageType(message_type))

    def write_control(
        self, message_type: MessageType | int, data: bytes = b"", deadline: float | None = None
    ) -> None:
        """Send a Ping, Pong or Close frame, from any thread (gorilla: ``WriteControl``).

        Args:
            message_type: ``MessageType.PING``, ``PONG`` or ``CLOSE``; a Close
                payload is built with ``format_close_message()``.
            data: the payload, at most 125 bytes.
            deadline: a ``time.monotonic()`` time to give up at, or ``None``.

        Raises:
            CloseSentError: a Close was already sent.
            TimeoutError: the deadline passed.
        """
        if message_type not in _CONTROL:
            raise LocalProtocolError("write_control() sends Ping, Pong or Close")
        self._send(lambda core: core.send_message(message_type, data), deadline)

    def _write_failed(self) -> bool:
        """Whether nothing written can arrive any more: a write failed, or the socket closed."""
        return self._write_error is not None or self._closed

    def _writing(self) -> AbstractContextManager[None]:
        return _role(self._writer_role, "writing", "writer")

    def _send(self, queue: Callable[[Connection], None], deadline: float | None) -> None:
        timeout = -1 if deadline is None else max(0.0, deadline - time.monotonic())
        if not self._write_lock.acquire(timeout=timeout):
            raise TimeoutError("write deadline passed waiting for another write")
        try:
            with self._core_lock:
                queue(self._proto)
                buffers = self._proto.buffers_to_send(MASK_PIECE)
            while buffers:
                self._send_buffers(buffers, deadline)
                if not self._proto.has_data_to_send:
                    break
                # The rest of a payload masked piece by piece, and what the
                # reader queued meanwhile (Pongs, a Close echo).
                with self._core_lock:
                    buffers = self._proto.buffers_to_send(MASK_PIECE)
        finally:
            self._write_lock.release()
        # A reader that queued a Pong after that last look, while we still
        # held the lock, could not send it: its _flush() does not wait.
        if self._proto.has_data_to_send:
            self._flush()

    def _flush(self, *, wait: float = 0.0) -> None:
        # The reader never waits long for a busy writer: two peers each stuck
        # writing would otherwise stop reading for good. The writer sends
        # what is left queued as soon as its frame is out.
        acquired = (
            self._write_lock.acquire(timeout=wait) if wait else self._write_lock.acquire(False)
        )
        if not acquired:
            return
        try:
            with self._core_lock:
                buffers = self._proto.buffers_to_send()
            if buffers:
                with suppress(OSError):  # the read side reports what matters
                    self._send_buffers(buffers, self._write_deadline)
        finally:
            self._write_lock.release()

    def _send_buffers(self, buffers: list[bytes], deadline: float | None) -> None:
        if self._write_error is not None:
            raise self._write_error
        try:
            send_buffers(self._sock, buffers, deadline)
        except OSError as exc:
            # Part of a frame may be on the wire: nothing can follow it.
            self._write_error = exc
            self.close()
            raise

    # -- options -----------------------------------------------------------------

    def set_read_limit(self, limit: int | None) -> None:
        """Set the largest message to accept, in bytes (gorilla: ``SetReadLimit``).

        A longer message closes the connection with 1009 and raises
        ``ReadLimitError``. ``None`` removes the limit.
        """
        with self._core_lock:
            self._proto.max_message_size = limit

    def set_read_deadline(self, deadline: float | None) -> None:
        """Fail reads that are not done by ``deadline`` (``time.monotonic()`` time, or ``None``).

        gorilla: ``SetReadDeadline``. As in gorilla, a timed-out read is
        permanent: the connection is unusable afterwards.
        """
        self._read_deadline = deadline

    def set_write_deadline(self, deadline: float | None) -> None:
        """Fail writes that are not done by ``deadline`` (gorilla: ``SetWriteDeadline``)."""
        self._write_deadline = deadline

    def enable_write_compression(self, enabled: bool) -> None:
        """Compress the next messages, or not (gorilla: ``EnableWriteCompression``)."""
        with self._core_lock:
            self._proto.enable_write_compression(enabled)

    def set_compression_level(self, level: int) -> None:
        """Set the zlib level of the next messages (gorilla: ``SetCompressionLevel``)."""
        with self._core_lock:
            self._proto.set_compression_level(level)

    # -- handlers ----------------------------------------------------------------

    def set_ping_handler(self, handler: PingHandler | None) -> None:
        """Call ``handler(payload)`` for each Ping (gorilla: ``SetPingHandler``).

        Handlers run inside the read methods. ``None`` restores the default,
        which answers with a Pong. A handler of your own replaces that
        answer: send it with ``write_control()``.
        """
        with self._core_lock:
            self._ping_handler = handler
            self._proto.auto_pong = handler is None

    def ping_handler(self) -> PingHandler | None:
        """The ping handler, or ``None`` for the default (gorilla: ``PingHandler``)."""
        return self._ping_handler

    def set_pong_handler(self, handler: PongHandler | None) -> None:
        """Call ``handler(payload)`` for each Pong (gorilla: ``SetPongHandler``).

        By default, Pongs are ignored.
        """
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

    # -- keepalive ---------------------------------------------------------------

    def _keep_alive(self, interval: float, timeout: float) -> None:
        count = 0
        while not self._stopped.wait(interval):
            count += 1
            payload = struct.pack("!I", count & 0xFFFFFFFF)
            answered = threading.Event()
            sent_at = time.monotonic()
            self._pings[payload] = (sent_at, answered)
            try:
                self.write_control(MessageType.PING, payload, sent_at + timeout)
                remaining = sent_at + timeout - time.monotonic()
                if not answered.wait(max(0.0, remaining)) and not self._stopped.is_set():
                    self._fail_keepalive()
                    return
            except TimeoutError:
                self._fail_keepalive()
                return
            except (WebSocketError, OSError):
                return  # closing or closed: nothing to keep alive
            finally:
                self._pings.pop(payload, None)

    def _pong_arrived(self, payload: bytes) -> None:
        entry = self._pings.get(payload)
        if entry is not None and not entry[1].is_set():
            self.latency = time.monotonic() - entry[0]
            entry[1].set()

    def _fail_keepalive(self) -> None:
        # No Pong in time: the peer or the path is gone. Say why, then drop
        # the connection; the reader gets 1006, since no Close will come back.
        with suppress(WebSocketError, OSError):
            self.write_control(
                MessageType.CLOSE,
                format_close_message(CloseCode.INTERNAL_ERROR, "keepalive ping timeout"),
                time.monotonic() + _CLOSE_FLUSH_WAIT,
            )
        self.close()

    # -- closing -----------------------------------------------------------------

    def close(self) -> None:
        """Close the socket at once, without a closing handshake (gorilla: ``Close``).

        A thread blocked reading wakes up with ``CloseError`` 1006. For a
        clean close, use :meth:`close_gracefully`.
        """
        if self._closed:
            return
        self._closed = True
        self._stopped.set()
        with suppress(OSError):
            self._sock.shutdown(socket.SHUT_RDWR)  # wakes a thread waiting on the socket
        self._sock.close()

    def close_gracefully(
        self, code: int = CloseCode.NORMAL_CLOSURE, reason: str = "", timeout: float = 5.0
    ) -> None:
        """Send a Close, wait up to ``timeout`` seconds for the peer's, then close.

        Messages that arrive meanwhile are discarded. Call it from the
        reading thread, or when no thread is reading.
        """
        deadline = time.monotonic() + timeout
        try:
            with self._core_lock:
                closing = self._proto.close_sent is None and self._proto.close_received is None
            if closing:
                self._send(lambda core: core.send_close(code, reason), deadline)
            self.set_read_deadline(deadline)
            while True:
                self.read_message()
        except (WebSocketError, OSError):
            pass
        finally:
            self.close()

    def __enter__(self) -> Conn:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"<Conn {self._proto.role.value} {self.remote_addr!r} {self._proto.state.name}>"


class MessageReader(io.RawIOBase):
    """Reads one message as it arrives (what ``next_reader()`` returns).

    A file-like, binary reader: text messages give their UTF-8 bytes. It
    must be read by the connection's reading thread.
    """

    def __init__(self, conn: Conn, message_type: MessageType, whole: str | bytes | None = None):
        super().__init__()
        self._conn = conn
        self.message_type = message_type
        # The current piece, and how much of it was read: reads take slices
        # of it rather than cutting it down each time, which would copy the
        # rest of a 256 KiB piece on every small read.
        self._pending = (
            b"" if whole is None else (whole.encode() if isinstance(whole, str) else whole)
        )
        self._offset = 0
        self._done = whole is not None
        self._discarded = False

    def readable(self) -> bool:
        """Always ``True``."""
        return True

    def readinto(self, buffer: Any) -> int:
        """Read what is available into ``buffer``; 0 at the end of the message."""
        with memoryview(buffer) as target, target.cast("B") as view:
            chunk = self.read(len(view))
            view[: len(chunk)] = chunk
            return len(chunk)

    def read(self, size: int = -1) -> bytes:
        """Read up to ``size`` bytes (all the rest with -1); ``b""`` at the end."""
        self._check_current()
        if size is None or size < 0:
            parts = PieceJoiner()
            parts.append(self._pending[self._offset :])
            self._pending, self._offset = b"", 0
            while not self._done:
                self._pull()
                parts.append(self._pending)
                self._pending = b""
            return parts.join()
        while self._offset >= len(self._pending) and not self._done:
            self._pull()
        pending, offset = self._pending, self._offset
        if offset == 0 and size >= len(pending):
            self._pending = b""  # the whole piece: no copy
            return pending
        chunk = pending[offset : offset + size]
        self._offset += len(chunk)
        return chunk

    def _check_current(self) -> None:
        if self._discarded:
            raise LocalProtocolError("this message was discarded by a later read")

    def _pull(self) -> None:
        with self._conn._reading():
            event = self._conn._next_message_event()
        if isinstance(event, MessageData):
            self._pending, self._offset = event.data, 0
        elif isinstance(event, MessageEnd):
            self._done = True
            self._conn._reader = None

    def _discard(self) -> None:
        self._discarded = True
        self._pending, self._offset = b"", 0
        while not self._done:
            event = self._conn._next_message_event()
            if isinstance(event, MessageEnd):
                self._done = True


class MessageWriter(io.RawIOBase):
    """Writes one message in frames of ``write_buffer_size`` (what ``next_writer()`` returns).

    ``close()`` sends the last frame and ends the message; use it as a
    context manager. Text messages take UTF-8 ``bytes`` (or ``str`` through
    :meth:`write_text`). The buffer comes from the connection's
    ``write_buffer_pool`` at the first write and goes back at ``close()``.

    Leaving the ``with`` block normally ends the message, and an error doing
    so is raised. Leaving it on an exception lets that exception through:
    the message is ended if the connection still can (an error doing so is
    dropped), and nothing is sent once the socket failed or closed.
    """

    def __init__(self, conn: Conn, message_type: MessageType) -> None:
        super().__init__()
        self._conn = conn
        self._type = message_type
        self._frames = FrameBuffer(conn.write_buffer_size, conn.write_buffer_pool)

    def writable(self) -> bool:
        """Always ``True``."""
        return True

    def write(self, data: Any) -> int:
        """Buffer ``data``; each time the buffer is full and more comes, it goes out as a frame."""
        if self.closed:
            raise ValueError("write to a closed message writer")
        for payload in self._frames.write(data):
            self._frame(payload, fin=False)
        return memoryview(data).nbytes

    def write_text(self, text: str) -> int:
        """Write ``text`` as UTF-8; returns the number of characters."""
        self.write(text.encode())
        return len(text)

    def close(self) -> None:
        """Send the last frame, ending the message."""
        self._end(send=True)

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: object
    ) -> None:
        if exc is None:
            self.close()  # its errors are the block's
            return
        # Leaving on an error: let that error through, not one of ours. A
        # read that failed the connection (ReadLimitError, say) would
        # otherwise become the CloseSentError of this message's last frame.
        # End the message if the connection still can, as trio's writer
        # does; on one whose socket failed or closed, don't even try.
        with suppress(Exception):
            self._end(send=not self._conn._write_failed())

    def _end(self, *, send: bool) -> None:
        if self.closed:
            return
        try:
            last = self._frames.finish()  # the buffer goes back to the pool either way
            if send:
                self._frame(last, fin=True)
        finally:
            super().close()
            self._conn._writer_role.release()

    def _frame(self, data: bytes, *, fin: bool) -> None:
        text = self._type is MessageType.TEXT

        def queue(core: Connection) -> None:
            if text:
                core.send_text(data, fin=fin)
            else:
                core.send_binary(data, fin=fin)

        self._conn._send(queue, self._conn._write_deadline)


def _take_role(lock: threading.Lock, doing: str, who: str) -> None:
    if not lock.acquire(blocking=False):
        raise ConcurrencyError(f"another thread is {doing}: a Conn has one {who} at a time")


@contextmanager
def _role(lock: threading.Lock, doing: str, who: str) -> Iterator[None]:
    _take_role(lock, doing, who)
    try:
        yield
    finally:
        lock.release()


class _JoinedReader(io.RawIOBase):
    def __init__(self, conn: Conn, term: bytes) -> None:
        super().__init__()
        self._conn = conn
        self._term = term
        self._reader: MessageReader | None = None
        self._pending = b""
        self._eof = False

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        while not self._pending:
            if self._eof:
                return 0
            if self._reader is None:
                try:
                    _, self._reader = self._conn.next_reader()
                except CloseError as exc:
                    if not exc.normal:
                        raise
                    self._eof = True
                    return 0
            chunk = self._reader.read(DEFAULT_READ_BUFFER_SIZE)
            if chunk:
                self._pending = chunk
            else:
                self._pending, self._reader = self._term, None
        with memoryview(buffer) as target:
            size = min(len(target), len(self._pending))
            target[:size] = self._pending[:size]
        self._pending = self._pending[size:]
        return size


def join_messages(conn: Conn, term: bytes = b"") -> io.BufferedReader:
    """Read the messages as one stream, ``term`` after each (gorilla: ``JoinMessages``).

    The stream ends when the peer closes normally (1000, 1001 or no code);
    any other close or error is raised by the read. Only the connection's
    reading thread may read it. Lines of text, for example, with
    ``term=NEWLINE`` where ``NEWLINE = bytes([10])``::

        for line in io.TextIOWrapper(join_messages(conn, NEWLINE), encoding="utf-8"):
            ...
    """
    return io.BufferedReader(_JoinedReader(conn, term))
