"""Conn: one WebSocket connection on asyncio (gorilla: ``Conn``).

The same contract as ``wsproto_sync.Conn``, with coroutines for the methods
that wait. Invariants:

* The bridge (an asyncio protocol) parses input as it arrives and queues
  the events; a Conn only takes them off the queue, so a cancelled read
  loses nothing and the connection stays usable.
* Writes hand whole frames to the transport and then wait while its buffer
  is full, so a cancelled write leaves nothing half-written.
* Errors on the read side are permanent (gorilla's rule): after one, every
  read raises it again. A write deadline that passes closes the connection,
  and every later write raises the same TimeoutError.
* One task may read and one may write at a time; a second gets
  ``ConcurrencyError``, not interleaved frames.
"""

from __future__ import annotations

import asyncio
import json
import struct
from collections.abc import AsyncIterator, Callable
from contextlib import suppress
from typing import Any

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

from ._bridge import _MESSAGE_EVENTS, Bridge

__all__ = ["Conn", "MessageReader", "MessageWriter"]

PingHandler = Callable[[bytes], None]
PongHandler = Callable[[bytes], None]
CloseHandler = Callable[[int, str], None]

_CONTROL = {MessageType.PING, MessageType.PONG, MessageType.CLOSE}
# Module globals for read_message(): an enum member looked up on its class
# costs about 60 ns on Python 3.11.
_TEXT = MessageType.TEXT
_BINARY = MessageType.BINARY
_CLOSE_WAIT = 1.0  # seconds close() lets the transport flush before aborting it


class Conn:
    """A WebSocket connection on asyncio (gorilla: ``Conn``).

    Get one from an ``Upgrader``, a ``Dialer`` or ``serve()``. The methods
    that wait are coroutines; the setters and getters are not.

    **Concurrency:** one task may read (``read_message``, ``next_reader``
    and its reader, ``read_json``, ``async for``) and one may write
    (``write_message``, ``next_writer``, ``write_json``,
    ``write_prepared_message``) at a time; a second one raises
    :class:`~wsproto_core.ConcurrencyError`. ``write_control()``,
    ``close()`` and the setters may be used by any task at any time.

    **Cancellation** (``asyncio.timeout``, ``Task.cancel``) of any coroutine
    leaves the connection usable: a read loses no message and a write
    leaves no frame half-sent. The deadlines set with
    :meth:`set_read_deadline` and :meth:`set_write_deadline` are gorilla's,
    and permanent: once one passes, the connection is done.

    **Keepalive:** with ``keepalive_interval`` set, the connection sends a
    Ping that often and fails with 1011 if no Pong answers within
    ``keepalive_timeout``; :attr:`latency` holds the last round trip.
    Pongs are seen as they arrive, read or not.
    """

    def __init__(
        self,
        bridge: Bridge,
        *,
        write_buffer_size: int = DEFAULT_WRITE_BUFFER_SIZE,
        write_buffer_pool: BufferPool | None = None,
        keepalive_interval: float | None = None,
        keepalive_timeout: float | None = None,
    ) -> None:
        if write_buffer_size <= 0:
            raise ValueError("write_buffer_size must be positive")
        transport = bridge.transport
        assert transport is not None, "the bridge is connected before a Conn exists"
        self._bridge = bridge
        self._proto = bridge.core
        self._loop = asyncio.get_running_loop()
        self.write_buffer_size = write_buffer_size
        self.write_buffer_pool = write_buffer_pool
        self._reading = False
        self._writing = False
        self._read_error: BaseException | None = None
        self._read_deadline: float | None = None
        self._write_deadline: float | None = None
        self._ping_handler: PingHandler | None = None
        self._pong_handler: PongHandler | None = None
        self._close_handler: CloseHandler | None = None
        self._reader: MessageReader | None = None
        # A message read_message() began joining when it was cancelled: its
        # type and the pieces so far, so the next read loses none of it.
        self._partial: tuple[MessageType, PieceJoiner] | None = None
        # The error of a write that failed midway; every later write raises it.
        self._write_error: BaseException | None = None
        self._closed = False
        self.local_addr: Any = transport.get_extra_info("sockname")
        """The address of this end (gorilla: ``LocalAddr``)."""
        self.remote_addr: Any = transport.get_extra_info("peername")
        """The address of the peer (gorilla: ``RemoteAddr``)."""
        self.latency: float | None = None
        """Seconds between the last keepalive Ping and its Pong, once measured."""
        self._pings: dict[bytes, tuple[float, asyncio.Future[None]]] = {}
        self._ping_count = 0
        self._keepalive: asyncio.Task[None] | None = None
        if keepalive_interval is not None:
            if keepalive_interval <= 0:
                raise ValueError("keepalive_interval must be positive")
            timeout = keepalive_timeout if keepalive_timeout is not None else keepalive_interval
            bridge.on_pong = self._pong_arrived
            self._keepalive = self._loop.create_task(self._keep_alive(keepalive_interval, timeout))
            bridge.lost.add_done_callback(lambda _: self._stop_keepalive())

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

    def net_conn(self) -> asyncio.Transport:
        """The underlying transport (gorilla: ``NetConn``). Don't read or write it."""
        assert self._bridge.transport is not None
        return self._bridge.transport

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
        if self._reading:
            raise ConcurrencyError("another task is reading: a Conn has one reader at a time")
        self._reading = True
        # A message that starts while we wait for it comes whole: its pieces
        # would all be joined here anyway, in memory the read limit bounds
        # (one parsed ahead of the reader still comes in pieces: see _bridge).
        core = self._proto
        core.stream_messages = False
        try:
            if self._reader is not None:
                await self._skip_current_message()
            while self._partial is None:
                # No coroutine if the message is here.
                event = self._poll_message_event() or await self._wait_message_event()
                if type(event) is Message:
                    data = event.data
                    return (_TEXT if type(data) is str else _BINARY), data
                if type(event) is MessageStart:  # a large message, or one still arriving
                    self._partial = (event.message_type, PieceJoiner())
            return await self._join(*self._partial)
        finally:
            core.stream_messages = True
            self._reading = False

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
        if self._reading:
            raise ConcurrencyError("another task is reading: a Conn has one reader at a time")
        self._reading = True
        try:
            if self._reader is not None:
                await self._skip_current_message()
            if self._partial is not None:  # begun by a cancelled read_message()
                message_type, parts = self._partial
                self._partial = None
                self._reader = MessageReader(self, message_type, begun=parts.join())
                return message_type, self._reader
            while True:
                event = await self._next_message_event()
                if isinstance(event, MessageStart):
                    self._reader = MessageReader(self, event.message_type)
                    return event.message_type, self._reader
                if isinstance(event, Message):  # a small message that arrived whole
                    self._reader = MessageReader(self, event.message_type, event.data)
                    return event.message_type, self._reader
        finally:
            self._reading = False

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

    async def _join(
        self, message_type: MessageType, parts: PieceJoiner
    ) -> tuple[MessageType, str | bytes]:
        # The pieces go to self._partial's joiner as they come: a cancelled
        # wait below leaves them for the next read.
        while True:
            event = await self._next_message_event()
            if isinstance(event, MessageData):
                parts.append(event.data)
            elif isinstance(event, MessageEnd):
                self._partial = None
                data = parts.join()
                # The core validated the UTF-8 as it arrived.
                return message_type, data.decode() if message_type is MessageType.TEXT else data

    async def _skip_current_message(self) -> None:
        reader = self._reader
        self._reader = None
        if reader is not None:
            await reader._discard()

    def _poll_message_event(self) -> Event | None:
        """The next message event if it is here, else ``None``; control events go to their handlers.

        A plain call, not a coroutine: reading a message that is already
        here (the common case when they come in bursts) creates none.
        """
        bridge = self._bridge
        while True:
            if self._read_error is not None:
                raise self._read_error
            event = bridge.pop() if bridge.events else bridge.parse_next()
            if event is None:
                return None
            if type(event) in _MESSAGE_EVENTS:
                return event
            self._control_event(event)

    async def _next_message_event(self) -> Event:
        """The next message event, waiting for it; control events go to their handlers."""
        return self._poll_message_event() or await self._wait_message_event()

    async def _wait_message_event(self) -> Event:
        """As :meth:`_next_message_event`, once :meth:`_poll_message_event` found none."""
        bridge = self._bridge
        while True:
            try:
                # Bridge.next_event() inlined: a reader waiting at an idle
                # connection is one coroutine smaller (W5).
                while (waiter := bridge.waiter()) is not None:
                    try:
                        if self._read_deadline is None:
                            await waiter
                        else:
                            async with asyncio.timeout_at(self._read_deadline):
                                await waiter
                    finally:
                        bridge.stop_waiting()
                event = bridge.pop()
            except (RemoteProtocolError, TimeoutError) as exc:
                # A TimeoutError here is our deadline: a caller's asyncio.timeout
                # cancels instead, which leaves the connection usable.
                self._read_error = exc
                raise
            if type(event) in _MESSAGE_EVENTS:
                return event
            self._control_event(event)
            if (polled := self._poll_message_event()) is not None:
                return polled

    def _control_event(self, event: Event) -> None:
        """Hand a Ping, Pong or Close to its handler; a Close ends reading with ``CloseError``."""
        cls = type(event)
        if cls is Ping:
            if self._ping_handler is not None:
                self._ping_handler(event.payload)  # type: ignore[attr-defined]
        elif cls is Pong:
            if self._pong_handler is not None:
                self._pong_handler(event.payload)  # type: ignore[attr-defined]
        elif cls is Close:
            assert isinstance(event, Close)
            error = CloseError(event.code, event.reason)
            self._read_error = error
            if self._close_handler is not None:
                self._close_handler(event.code, event.reason)
            raise error

    # -- writing -----------------------------------------------------------------

    async def write_message(self, message_type: MessageType | int, data: str | bytes) -> None:
        """Send a whole message (gorilla: ``WriteMessage``).

        Raises:
            CloseSentError: a Close was already sent.
            ConcurrencyError: another task is writing.
            TimeoutError: the write deadline passed (now or at an earlier
                write); the connection is closed.
            ConnectionError: the connection is closed.
        """
        if self._writing or self._write_error is not None:
            self._take_writer_role()  # raises
        self._writing = True
        try:
            self._proto.send_message(message_type, data)
            # _flush() inlined: one coroutine fewer per message.
            bridge = self._bridge
            bridge.check_writable()
            bridge.flush_soon(len(data))
            if bridge._writing_paused:
                await self._drain(self._write_deadline)
        finally:
            self._writing = False

    async def write_json(self, value: Any, **dumps: Any) -> None:
        """Send ``value`` as a JSON text message (gorilla: ``WriteJSON``)."""
        await self.write_message(MessageType.TEXT, json.dumps(value, **dumps))

    async def write_prepared_message(self, message: PreparedMessage) -> None:
        """Send a prepared message (gorilla: ``WritePreparedMessage``)."""
        self._take_writer_role()
        try:
            self._proto.send_prepared(message)
            await self._flush(self._write_deadline, len(message.data))
        finally:
            self._writing = False

    def next_writer(self, message_type: MessageType | int) -> MessageWriter:
        """Start a message to write as a stream (gorilla: ``NextWriter``).

        Each ``write_buffer_size`` bytes written become one frame; ``close()``
        sends the last one. Use it as ``async with conn.next_writer(t) as w``.

        Raises:
            ConcurrencyError: another task is writing.
        """
        if message_type not in (MessageType.TEXT, MessageType.BINARY):
            raise LocalProtocolError("next_writer() writes text or binary messages")
        self._take_writer_role()  # released by the writer's close()
        return MessageWriter(self, MessageType(message_type))

    def _take_writer_role(self) -> None:
        if self._writing:
            raise ConcurrencyError("another task is writing: a Conn has one writer at a time")
        self._check_write_error()
        self._writing = True

    def _write_failed(self) -> bool:
        """Whether nothing written can arrive any more: a write failed, or the transport closed."""
        transport = self._bridge.transport
        return (
            self._write_error is not None
            or self._closed
            or transport is None
            or transport.is_closing()
        )

    def _check_write_error(self) -> None:
        if self._write_error is not None:
            raise self._write_error

    async def write_control(
        self, message_type: MessageType | int, data: bytes = b"", deadline: float | None = None
    ) -> None:
        """Send a Ping, Pong or Close frame, from any task (gorilla: ``WriteControl``).

        Args:
            message_type: ``MessageType.PING``, ``PONG`` or ``CLOSE``; a Close
                payload is built with ``format_close_message()``.
            data: the payload, at most 125 bytes.
            deadline: a ``loop.time()`` time to give up waiting at, or ``None``.

        Raises:
            CloseSentError: a Close was already sent.
            TimeoutError: the deadline passed; the connection is closed.
        """
        if message_type not in _CONTROL:
            raise LocalProtocolError("write_control() sends Ping, Pong or Close")
        self._check_write_error()
        self._proto.send_message(message_type, data)
        await self._flush(deadline, len(data))

    def _write_control_nowait(self, message_type: MessageType, data: bytes) -> None:
        """Queue a control frame without waiting for the transport to take it (for serve())."""
        self._check_write_error()
        self._proto.send_message(message_type, data)
        self._bridge.check_writable()
        self._bridge.flush()

    async def _flush(self, deadline: float | None, size: int) -> None:
        # ``size``: about how many bytes were just queued (see Bridge.flush_soon).
        bridge = self._bridge
        bridge.check_writable()
        bridge.flush_soon(size)
        await self._drain(deadline)

    async def _drain(self, deadline: float | None) -> None:
        bridge = self._bridge
        try:
            await bridge.drain(deadline)
        except TimeoutError as exc:
            # The peer does not read: gorilla's write deadline ends the
            # connection, and every later write fails the same way.
            self._write_error = exc
            bridge.abort()
            raise

    # -- options -----------------------------------------------------------------

    def set_read_limit(self, limit: int | None) -> None:
        """Set the largest message to accept, in bytes (gorilla: ``SetReadLimit``).

        A longer message closes the connection with 1009 and raises
        ``ReadLimitError``. ``None`` removes the limit.
        """
        self._proto.max_message_size = limit

    def set_read_deadline(self, deadline: float | None) -> None:
        """Fail reads not done by ``deadline``, a ``loop.time()`` time (``SetReadDeadline``).

        As in gorilla, a read that times out this way is permanent. To give
        up on one read and keep the connection, use ``asyncio.timeout()``.
        """
        self._read_deadline = deadline

    def set_write_deadline(self, deadline: float | None) -> None:
        """Fail writes not done by ``deadline``, a ``loop.time()`` time (``SetWriteDeadline``).

        A write that times out this way closes the connection.
        """
        self._write_deadline = deadline

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
        which answers with a Pong as soon as the Ping arrives. A handler of
        your own replaces that answer: send it with ``write_control()``.
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

    # -- keepalive ---------------------------------------------------------------

    async def _keep_alive(self, interval: float, timeout: float) -> None:
        while True:
            await asyncio.sleep(interval)
            self._ping_count += 1
            payload = struct.pack("!I", self._ping_count & 0xFFFFFFFF)
            answered = self._loop.create_future()
            sent_at = self._loop.time()
            self._pings[payload] = (sent_at, answered)
            try:
                await self.write_control(MessageType.PING, payload, sent_at + timeout)
                async with asyncio.timeout_at(sent_at + timeout):
                    await answered
            except TimeoutError:
                if self._bridge.last_received > sent_at:
                    # No Pong yet, but the peer sent more since the Ping: it
                    # is alive, and its Pong waits behind messages not yet read.
                    continue
                self._fail_keepalive()
                return
            except (WebSocketError, ConnectionError):
                return  # closing or closed: nothing to keep alive
            finally:
                self._pings.pop(payload, None)

    def _pong_arrived(self, payload: bytes) -> None:
        entry = self._pings.get(payload)
        if entry is not None and not entry[1].done():
            self.latency = self._loop.time() - entry[0]
            entry[1].set_result(None)

    def _fail_keepalive(self) -> None:
        # No Pong in time: the peer or the path is gone. Say why, then drop
        # the connection; readers get 1006, since no Close will come back.
        with suppress(WebSocketError):  # a Close may have gone out already
            self._proto.send_close(CloseCode.INTERNAL_ERROR, "keepalive ping timeout")
        self._bridge.flush()
        self._bridge.abort()

    def _stop_keepalive(self) -> None:
        if self._keepalive is not None:
            self._keepalive.cancel()

    # -- closing -----------------------------------------------------------------

    async def close(self) -> None:
        """Close the connection now, without a closing handshake (gorilla: ``Close``).

        What was already written is flushed for up to a second; a task
        blocked reading wakes up with ``CloseError`` 1006. For a clean
        close, use :meth:`close_gracefully`.
        """
        if self._closed:
            return
        self._closed = True
        self._stop_keepalive()
        await self._bridge.close(_CLOSE_WAIT)

    async def close_gracefully(
        self, code: int = CloseCode.NORMAL_CLOSURE, reason: str = "", timeout: float = 5.0
    ) -> None:
        """Send a Close, wait up to ``timeout`` seconds for the peer's, then close.

        If another task is reading, it reads the messages that arrive
        meanwhile, and then the peer's Close; otherwise they are discarded.
        """
        try:
            async with asyncio.timeout(timeout):
                if self._proto.close_sent is None and self._proto.close_received is None:
                    await self.write_control(
                        MessageType.CLOSE, format_close_message(code, reason), self._write_deadline
                    )
                if self._reading:
                    # Reading too would raise ConcurrencyError; the reader
                    # drains the queue, so the peer's Close gets parsed.
                    await asyncio.shield(self._bridge.peer_closed)
                else:
                    while True:
                        await self.read_message()
        except (WebSocketError, OSError, TimeoutError):
            pass
        finally:
            await self.close()

    async def __aenter__(self) -> Conn:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()

    def __repr__(self) -> str:
        return f"<Conn {self._proto.role.value} {self.remote_addr!r} {self._proto.state.name}>"


class MessageReader:
    """Reads one message as it arrives (what ``next_reader()`` returns).

    ``await reader.read(n)`` gives up to ``n`` bytes, ``b""`` at the end;
    ``async for chunk in reader`` gives the pieces as they arrive. Text
    messages give their UTF-8 bytes. Only the connection's reading task
    may read it.
    """

    def __init__(
        self,
        conn: Conn,
        message_type: MessageType,
        whole: str | bytes | None = None,
        *,
        begun: bytes = b"",
    ):
        self._conn = conn
        self.message_type = message_type
        """``MessageType.TEXT`` or ``MessageType.BINARY``."""
        # Received and not yet read. Pieces are added here as they arrive, so
        # a cancelled read() leaves them for the next; deleting from the
        # front of a bytearray is cheap, so small reads of a big message are too.
        self._pending = bytearray(begun)
        if whole is not None:
            self._pending += whole.encode() if isinstance(whole, str) else whole
        self._done = whole is not None
        self._discarded = False

    async def read(self, size: int = -1) -> bytes:
        """Read up to ``size`` bytes (all the rest with -1); ``b""`` at the end."""
        self._check_current()
        if size is None or size < 0:
            while not self._done:
                await self._pull()
            size = len(self._pending)
        else:
            while not self._pending and not self._done:
                await self._pull()
        chunk = bytes(self._pending[:size])
        del self._pending[:size]
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
        if conn._reading:
            raise ConcurrencyError("another task is reading: a Conn has one reader at a time")
        conn._reading = True
        try:
            event = await conn._next_message_event()
        finally:
            conn._reading = False
        if isinstance(event, MessageData):
            self._pending += event.data
        elif isinstance(event, MessageEnd):
            self._done = True
            conn._reader = None

    async def _discard(self) -> None:
        self._discarded = True
        self._pending.clear()
        while not self._done:
            event = await self._conn._next_message_event()
            if isinstance(event, MessageEnd):
                self._done = True


class MessageWriter:
    """Writes one message in frames of ``write_buffer_size`` (what ``next_writer()`` returns).

    ``await writer.close()`` sends the last frame and ends the message; use
    it as ``async with conn.next_writer(t) as writer``. Text messages take
    UTF-8 ``bytes`` (or ``str`` through :meth:`write_text`). The buffer
    comes from the connection's ``write_buffer_pool`` at the first write and
    goes back at ``close()``.

    Leaving the ``async with`` block normally ends the message, and an error
    doing so is raised. Leaving it on an exception lets that exception
    through: the message is ended if the connection still can (an error
    doing so is dropped), and nothing is sent once the transport failed or
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
        for payload in self._frames.write(data):
            await self._frame(payload, fin=False)
        return memoryview(data).nbytes

    async def write_text(self, text: str) -> int:
        """Write ``text`` as UTF-8; returns the number of characters."""
        await self.write(text.encode())
        return len(text)

    async def close(self) -> None:
        """Send the last frame, ending the message."""
        await self._end(send=True)

    async def __aenter__(self) -> MessageWriter:
        return self

    async def __aexit__(self, exc_type: object, exc: BaseException | None, tb: object) -> None:
        if exc is None:
            await self.close()  # its errors are the block's
            return
        # Leaving on an error: let that error through, not one of ours. A
        # read that failed the connection (ReadLimitError, say) would
        # otherwise become the CloseSentError of this message's last frame.
        # End the message if the connection still can, as trio's writer
        # does; on one whose transport failed or closed, don't even try.
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
        self._conn._check_write_error()
        core = self._conn._proto
        if self._type is MessageType.TEXT:
            core.send_text(data, fin=fin)
        else:
            core.send_binary(data, fin=fin)
        # The frame is queued whole: a cancelled wait below cuts nothing in half.
        await self._conn._flush(self._conn._write_deadline, len(data))
