"""The asyncio protocol that joins one transport to one core connection.

Invariants:

* Bytes go to the core as soon as the transport delivers them, and the core
  is asked for events right away, up to the first message event: so Pings,
  Pongs and Closes that arrive while the application is busy are handled
  at once (Pongs and the Close echo leave whether or not anyone reads).
* Parsing never runs more than one message event ahead of the reader: the
  next one is parsed when the reader asks for it. So a protocol error
  behind a message is found, and the connection failed, only after the
  application has had that message and answered it, as a blocking reader
  would (Autobahn calls the other order "non-strict").
* The core streams every message parsed ahead of the reader, or read with
  ``next_reader()`` (``stream_messages``): a large one comes in bounded
  pieces. One under 1 MiB that arrived whole comes as one event, and so
  does a binary one under 1 MiB arriving (read into place). A message that
  starts while ``read_message()`` waits comes whole (``Conn`` turns
  streaming off meanwhile): it would be joined anyway.
* Unparsed input waits in the core. When more than ``_MAX_UNPARSED``
  bytes wait, or ``max_queue`` events, the transport stops reading until
  the reader catches up, so a fast peer and a slow reader cannot make
  memory grow: the peer's writes wait in TCP instead.
* What the core answers on its own (Pongs, the Close echo) cannot pile up
  either: when more than ``_MAX_ANSWER_BACKLOG`` bytes of it wait behind a
  full transport, reading stops until the peer reads. So a peer that sends
  Pings and never reads the Pongs is throttled, as a blocking reader that
  must send each Pong would be. The application's own writes never stop
  reading, so two peers writing big messages at each other don't deadlock.
* Writes never wait inside the bridge, and small ones are coalesced: a
  write that follows another with no read or wait between them stays in
  the core until the end of the current turn of the event loop
  (``flush_soon()``), or until the task waits to read, or until 64 KiB
  are queued, so a burst of small messages costs two ``send()`` calls,
  not one each (W3), and a lone write (a request, an answer) still goes
  at once, with no extra turn of the loop (W2). The frames then go to the
  transport whole, and ``drain()`` waits while its buffer is over the
  high-water mark. A cancelled ``drain()`` leaves no frame half-written.
  Closing the transport sends what is queued first.
* Nothing here decides a protocol question; the core does.
"""

from __future__ import annotations

import asyncio
import threading
from typing import Any, cast

from wsproto_core import (
    DEFAULT_READ_BUFFER_SIZE,
    Connection,
    Event,
    HandshakeError,
    Message,
    MessageData,
    MessageEnd,
    MessageStart,
    Pong,
    RemoteProtocolError,
    ServerConnection,
)

__all__ = ["Bridge"]

#: Events the reader may leave queued before reading is paused.
DEFAULT_MAX_QUEUE = 16
_LINGER = 1.0  # seconds to drain a peer that keeps sending after we failed the connection
_MAX_ANSWER_BACKLOG = 65536  # bytes of automatic answers buffered while the peer doesn't read
_MAX_UNPARSED = 256 * 1024  # bytes received and not yet parsed before reading pauses
# Bytes the application may write in one turn of the loop before they are
# handed to the transport at once: bounds the memory held back, and a
# larger write costs more in copying than a system call saves.
_COALESCE_BELOW = 65536
# Smaller messages come as one event when they arrived whole, or are binary
# (read into place: Connection.stream_min_size): the default read limit.
_WHOLE_BELOW = 1024 * 1024 + 1
_MESSAGE_EVENTS = frozenset({Message, MessageStart, MessageData, MessageEnd})


class _ReadBuffers(threading.local):
    """The read buffers of this thread's event loop, one per size.

    Every bridge on a loop shares one: asyncio calls ``get_buffer()``, fills
    the buffer and calls ``buffer_updated()`` in one go, on the loop's
    thread, and ``buffer_updated()`` copies the bytes out before anything
    else runs. So an idle connection costs no read buffer at all (it was
    64 KiB each, most of the memory of 10,000 idle connections).
    """

    def __init__(self) -> None:
        self.by_size: dict[int, memoryview] = {}

    def get(self, size: int) -> memoryview:
        view = self.by_size.get(size)
        if view is None:
            view = self.by_size[size] = memoryview(bytearray(size))
        return view


_read_buffers = _ReadBuffers()


class Bridge(asyncio.BufferedProtocol):
    """Moves bytes between an asyncio transport and a core connection."""

    # Slots and lists rather than deques: the queues hold a few items, and an
    # idle connection is smaller (W5: memory per idle connection).
    __slots__ = (
        "_answer_backlog",
        "_closing",
        "_deferred",
        "_drain_waiters",
        "_ended",
        "_flush_scheduled",
        "_in_place",
        "_looked",
        "_loop",
        "_lost",
        "_lost_exc",
        "_peer_closed",
        "_peer_done",
        "_queue_full",
        "_reading_paused",
        "_resume_at",
        "_unread_messages",
        "_view",
        "_waiter",
        "_writing_paused",
        "_wrote",
        "connected_at",
        "core",
        "error",
        "events",
        "last_received",
        "max_queue",
        "on_connect",
        "on_pong",
        "on_ready",
        "transport",
    )

    def __init__(
        self,
        core: Connection,
        *,
        read_buffer_size: int = DEFAULT_READ_BUFFER_SIZE,
        max_queue: int = DEFAULT_MAX_QUEUE,
    ) -> None:
        self.core = core
        core.stream_messages = True  # every message in bounded pieces (see above)
        core.stream_min_size = _WHOLE_BELOW
        self.transport: asyncio.Transport | None = None
        self.events: list[Event] = []
        #: A peer error met while parsing; raised once the queue is empty.
        self.error: RemoteProtocolError | HandshakeError | None = None
        self.max_queue = max_queue
        self._resume_at = max(0, max_queue // 4)
        self._view = _read_buffers.get(read_buffer_size)
        self._in_place = False  # get_buffer() lent the core's payload_buffer()
        self._loop = asyncio.get_running_loop()
        self._waiter: asyncio.Future[None] | None = None
        self._drain_waiters: list[asyncio.Future[None]] | None = None
        self._writing_paused = False
        self._reading_paused = False
        self._deferred = 0  # about how many bytes written wait for flush_soon()'s flush
        self._flush_scheduled = False
        # A write went out with no read or wait since: the next one may be
        # part of a burst, and is held (see flush_soon()).
        self._wrote = False
        # Why reading is paused: the queue is full, or the peer doesn't read
        # the answers the core queued on its own (bytes sent since writing paused).
        self._queue_full = False
        self._answer_backlog = 0
        self._unread_messages = 0  # message events queued and not yet read
        # parse_next() found no event, and nothing arrived since: waiter()
        # need not parse again (a reader that waits does both, in a row).
        self._looked = False
        #: ``loop.time()`` of the last bytes received: the peer was alive then.
        self.last_received = 0.0
        self._closing = False
        # The futures behind `lost` and `peer_closed`, made when first asked
        # for: most connections never need them, and idle ones are smaller
        # and cheaper for the garbage collector to walk without them.
        self._lost: asyncio.Future[BaseException | None] | None = None
        self._ended = False
        self._lost_exc: BaseException | None = None
        self._peer_closed: asyncio.Future[None] | None = None
        self._peer_done = False
        #: Called with each Pong's payload as it arrives (keepalive).
        self.on_pong: Any = None
        #: Called when the connection is made.
        self.on_connect: Any = None
        #: Called once, when the first event or error is queued (a server
        #: starts the handler's task then, not while the request is on its way).
        self.on_ready: Any = None
        #: ``loop.time()`` when the transport connected: handshake deadlines count from it.
        self.connected_at = 0.0

    @property
    def lost(self) -> asyncio.Future[BaseException | None]:
        """Set when the transport is gone; its result is the error, if any."""
        future = self._lost
        if future is None:
            future = self._lost = self._loop.create_future()
            if self._ended:
                future.set_result(self._lost_exc)
        return future

    @property
    def peer_closed(self) -> asyncio.Future[None]:
        """Set when the peer's Close arrived (read or not), or the transport ended."""
        future = self._peer_closed
        if future is None:
            future = self._peer_closed = self._loop.create_future()
            if self._peer_done:
                future.set_result(None)
        return future

    def _set_peer_closed(self) -> None:
        self._peer_done = True
        future = self._peer_closed
        if future is not None and not future.done():
            future.set_result(None)

    # -- asyncio.BufferedProtocol ------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # Not an isinstance() check: uvloop's transports don't derive from
        # asyncio.Transport, they only behave like one.
        self.transport = cast(asyncio.Transport, transport)
        self.connected_at = self._loop.time()
        if isinstance(self.core, ServerConnection):
            # Before any byte of the request: the requests the core reports
            # (to http_handler, process_request, the error hook) carry it.
            self.core.remote_addr = transport.get_extra_info("peername")
        self.flush()  # a client's handshake request
        if self.on_connect is not None:
            self.on_connect(self)

    def get_buffer(self, sizehint: int) -> memoryview:
        # Straight into a large binary message when one is arriving (no
        # copy at all), else into the loop's shared buffer.
        view = self.core.payload_buffer()
        self._in_place = view is not None
        return self._view if view is None else view

    def buffer_updated(self, nbytes: int) -> None:
        self.last_received = self._loop.time()
        self._wrote = False  # a new turn of the loop: no burst under way
        if self._in_place:
            self.core.payload_received(nbytes)
            # uvloop holds the view until this returns, and the core delivers
            # the message only once nobody does: process it after that too.
            self._loop.call_soon(self._process_read)
        else:
            self.core.receive_data(bytes(self._view[:nbytes]))
        self.process()

    def _process_read(self) -> None:
        if not self._ended:
            self.process()

    def eof_received(self) -> bool:
        self.core.receive_eof()
        self.process()
        return False  # the peer is gone: let the transport close

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.core.close_expected():
            # Ended without a clean close: the core reports it as 1006.
            self.core.receive_eof()
            self.process(flush=False)
        self._ended = True
        self._lost_exc = exc
        if self._lost is not None and not self._lost.done():
            self._lost.set_result(exc)
        self._set_peer_closed()
        self._wake()
        self._release_drain_waiters()

    def pause_writing(self) -> None:
        self._writing_paused = True

    def resume_writing(self) -> None:
        self._writing_paused = False
        if self._answer_backlog:
            self._answer_backlog = 0
            self._update_reading()
        self._release_drain_waiters()

    def _release_drain_waiters(self) -> None:
        waiters, self._drain_waiters = self._drain_waiters, None
        for waiter in waiters or ():
            if not waiter.done():
                waiter.set_result(None)

    # -- reading -----------------------------------------------------------------

    def process(self, *, flush: bool = True) -> None:
        """Parse up to the first unread message event, and send what the core queued."""
        self._looked = False
        if not self._unread_messages:
            self._parse()
        self._settle(flush=flush)

    def _parse(self) -> None:
        core = self.core
        events = self.events
        try:
            while len(events) < self.max_queue:
                event = core.next_event()
                if event is None:
                    break
                events.append(event)
                cls = type(event)
                if cls in _MESSAGE_EVENTS:
                    self._unread_messages += 1
                    break  # no further ahead of the reader (see the invariants)
                if cls is Pong and self.on_pong is not None:
                    self.on_pong(event.payload)  # type: ignore[attr-defined]
        except (RemoteProtocolError, HandshakeError) as exc:
            self.error = exc

    def _settle(self, *, flush: bool = True) -> None:
        """After parsing: answer, close if the core says so, pace the reading, wake the reader."""
        core = self.core
        if core.close_received is not None and not self._peer_done:
            self._set_peer_closed()
        if flush and not self._flush_scheduled:
            # Answers go out now. With a flush scheduled, they go out with
            # the application's writes at the end of this turn (writing is
            # not paused then: see flush_soon(), so there is no backlog).
            sent = self.flush()
            if self._writing_paused:
                self._answer_backlog += sent
        if core.close_expected() and not self._closing:
            self._close_transport()
        self._queue_full = len(self.events) >= self.max_queue
        self._update_reading()
        self._wake()
        if self.on_ready is not None and (self.events or self.error is not None):
            ready, self.on_ready = self.on_ready, None
            ready(self)

    def pop(self) -> Event:
        """Take the first queued event; the queue must not be empty."""
        event = self.events.pop(0)
        if type(event) in _MESSAGE_EVENTS:
            self._unread_messages -= 1
        if self._queue_full and len(self.events) <= self._resume_at:
            self._queue_full = False
            self._update_reading()
        return event

    def parse_next(self) -> Event | None:
        """The next event for a reader that found the queue empty, if it is here.

        The reader's fast path: no coroutine, and none of the bookkeeping
        that parsing a message leaves unchanged. ``None``: wait with
        :meth:`next_event`, which also raises a queued error.
        """
        if self.error is not None or self._reading_paused or self.on_ready is not None:
            return None
        try:
            event = self.core.next_event()
        except (RemoteProtocolError, HandshakeError) as exc:
            self.error = exc
            self._settle()
            return None
        if event is None:
            # Parsing that yields no event changes nothing _settle() minds:
            # it queues no answer, reads no Close, leaves reading as it was.
            self._looked = True
            return None
        if type(event) in _MESSAGE_EVENTS:
            # Taken at once: the queue stays empty, reading stays on (less is
            # unparsed than before), and parsing a message queues no answer.
            return event
        # A control event: what it changes is settled as for any other.
        self.events.append(event)
        if type(event) is Pong and self.on_pong is not None:
            self.on_pong(event.payload)
        self._settle()
        return self.pop()

    async def next_event(self, deadline: float | None = None) -> Event:
        """The next event, waiting for it until ``deadline`` (``loop.time()``).

        Raises:
            RemoteProtocolError, HandshakeError: the peer broke the protocol,
                after the events before the error were read.
            TimeoutError: the deadline passed.
        """
        while (waiter := self.waiter()) is not None:
            try:
                if deadline is None:
                    await waiter
                else:
                    async with asyncio.timeout_at(deadline):
                        await waiter
            finally:
                self.stop_waiting()
        return self.pop()

    def waiter(self) -> asyncio.Future[None] | None:
        """``None`` if an event is queued, else a future set when one may be.

        The body of :meth:`next_event` before it waits, for a reader that
        awaits the future itself: a reader waiting at an idle connection is
        then one coroutine smaller (W5: the garbage collector walks every
        one). Call :meth:`stop_waiting` once the future is done or given up.

        Raises:
            RemoteProtocolError, HandshakeError: as for :meth:`next_event`.
        """
        if self.events:
            return None
        if self.error is not None:
            raise self.error
        if self._looked:
            self._looked = False
        else:
            self._parse()  # the reader asks: parse the next event, if it is here
            self._settle()
            if self.events:
                return None
            if self.error is not None:
                raise self.error
        if self._flush_scheduled:
            self.flush()  # the task waits: what it wrote goes now, not a turn later
        self._wrote = False  # and its next write comes in a later turn
        waiter = self._waiter = self._loop.create_future()
        return waiter

    def stop_waiting(self) -> None:
        """The reader no longer waits on :meth:`waiter`'s future."""
        self._waiter = None

    def _wake(self) -> None:
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    def _update_reading(self) -> None:
        if self._closing:
            return  # closing: reading drains the peer (see _close_transport)
        pause = (
            self._queue_full
            or self._answer_backlog > _MAX_ANSWER_BACKLOG
            or self.core.buffered_input > _MAX_UNPARSED
        )
        if pause and not self._reading_paused:
            self._pause_reading()
        elif not pause and self._reading_paused:
            self._resume_reading()

    def _pause_reading(self) -> None:
        if self.transport is not None and not self.transport.is_closing():
            self._reading_paused = True
            self.transport.pause_reading()

    def _resume_reading(self) -> None:
        self._reading_paused = False
        if self.transport is not None and not self.transport.is_closing():
            self.transport.resume_reading()

    # -- writing -----------------------------------------------------------------

    def flush_soon(self, size: int) -> None:
        """Hand what the core queued to the transport by the end of this turn of the loop.

        ``size`` is about how many bytes the caller just queued. A first
        write goes at once; one that follows it with no read or wait
        between (a burst) is held, and the writes held in a turn leave in
        one ``send()``. Once 64 KiB wait, or while the transport holds more
        than its high-water mark (every write is a copy into its buffer
        then, and ``drain()`` must see it), they go at once.

        Holding a write is always safe, whatever the task does next: the
        flush is scheduled. ``_wrote`` only spares a lone write that
        schedule, a turn of the loop later.
        """
        deferred = self._deferred + size
        if deferred >= _COALESCE_BELOW or self._writing_paused:
            self.flush()
        elif not self._wrote and not self._flush_scheduled:
            self._wrote = True
            self.flush()
        else:
            self._deferred = deferred
            if not self._flush_scheduled:
                self._flush_scheduled = True
                self._loop.call_soon(self._scheduled_flush)

    def _scheduled_flush(self) -> None:
        self._wrote = False  # the turn of the burst has ended
        if self._flush_scheduled:  # else flushed meanwhile
            self.flush()

    def flush(self) -> int:
        """Hand what the core queued to the transport; return how many bytes."""
        self._deferred = 0
        self._flush_scheduled = False
        buffers = self.core.buffers_to_send()
        transport = self.transport
        if not buffers or transport is None or transport.is_closing():
            return 0
        size = 0
        # A write each: a large payload apart from its header, unjoined
        # (writelines() joins on Python 3.11); small frames come joined.
        for data in buffers:
            transport.write(data)
            size += len(data)
        return size

    def check_writable(self) -> None:
        """Raise if the transport is closed: nothing written would arrive."""
        if self.transport is None or self.transport.is_closing():
            raise ConnectionResetError("the connection is closed")

    async def drain(self, deadline: float | None = None) -> None:
        """Wait while the transport's buffer is over its high-water mark."""
        if not self._writing_paused:
            return
        self.check_writable()
        waiter = self._loop.create_future()
        if self._drain_waiters is None:
            self._drain_waiters = []
        self._drain_waiters.append(waiter)
        if deadline is None:
            await waiter
        else:
            async with asyncio.timeout_at(deadline):
                await waiter
        self.check_writable()

    # -- closing -----------------------------------------------------------------

    def _close_transport(self) -> None:
        # The core says when (RFC 6455 §7.1.1: the server closes first).
        transport = self.transport
        if transport is None:
            return
        self._closing = True
        self.flush()  # the Close, and anything written before it
        if isinstance(self.error, RemoteProtocolError) and transport.can_write_eof():
            # Closing with unread input makes TCP send a reset, which may
            # destroy the Close just sent before the peer reads it. So after
            # failing the connection, half-close and keep reading (the core
            # drops the input) until the peer closes, for a bounded time.
            if self._reading_paused:
                self._resume_reading()
            transport.write_eof()
            self._loop.call_later(_LINGER, transport.close)
        else:
            transport.close()

    def abort(self) -> None:
        """Drop the connection at once, unsent bytes included."""
        if self.transport is not None:
            self.transport.abort()

    async def close(self, timeout: float) -> None:
        """Close the transport after sending what it holds; abort after ``timeout``."""
        if self.transport is None:
            return
        self.flush()  # written, so sent before the transport closes
        if not self._closing:
            # Otherwise the core's close is under way, perhaps lingering after
            # a failure so the peer reads our Close before any reset: closing
            # now would cut that short (a 1009 lost to a reset, seen with
            # Chromium); the wait below still bounds it.
            self.transport.close()
        try:
            async with asyncio.timeout(timeout):
                await asyncio.shield(self.lost)
        except TimeoutError:
            pass
        finally:
            if not self.lost.done():  # timed out, or cancelled: close all the same
                self.transport.abort()
