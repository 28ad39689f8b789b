"""``wsproto serve --adapter sync``: threads.

``wsproto_sync.serve()`` runs each connection in a thread of its own, which
reads. A chat member also gets a writer thread that empties its bounded
queue, so one slow member never holds up the hub: the hub only ever puts
into queues, without waiting, and drops a member whose queue is full.
"""

from __future__ import annotations

import queue
import threading
import time
from contextlib import suppress

import wsproto_sync as ws

from .serve import (
    CHAT_QUEUE,
    CHUNK,
    KEEPALIVE_INTERVAL,
    SHUTDOWN_TIMEOUT,
    TOO_SLOW,
    WRITE_WAIT,
    ServeOptions,
    Session,
    announce,
    http_handler,
    logger,
    render_error,
    stop_on_signals,
)

__all__ = ["Hub", "Member", "run"]


class Member:
    """A chat member: its connection, and the queue its writer thread empties."""

    def __init__(self, conn: ws.Conn, session: Session) -> None:
        self.conn = conn
        self.session = session
        # None, last, tells the writer to stop.
        self.outbox: queue.Queue[ws.PreparedMessage | None] = queue.Queue(CHAT_QUEUE)
        self.dropped = False

    def offer(self, message: ws.PreparedMessage) -> bool:
        """Queue ``message`` without waiting; ``False`` if the queue is full."""
        try:
            self.outbox.put_nowait(message)
        except queue.Full:
            return False
        return True

    def stop(self) -> None:
        """Tell the writer to stop, dropping what it has not sent; never blocks."""
        # Only the hub puts, under its lock, and only once more: after the
        # queue is emptied, the marker fits.
        with suppress(queue.Empty):
            while True:
                self.outbox.get_nowait()
        self.outbox.put_nowait(None)

    def write_pump(self) -> None:
        """Send the queued messages until told to stop (the writer thread)."""
        conn = self.conn
        try:
            while (message := self.outbox.get()) is not None:
                conn.set_write_deadline(time.monotonic() + WRITE_WAIT)
                conn.write_prepared_message(message)
                self.session.sent += 1
            if self.dropped:
                conn.write_control(ws.MessageType.CLOSE, TOO_SLOW, time.monotonic() + 1.0)
                conn.close()  # as gorilla's chat does: the reader wakes with 1006
        except ws.CloseSentError:
            pass  # closing already (a shutdown's 1001): the reader sees it through
        except (ws.WebSocketError, OSError):
            conn.close()  # a write failed or timed out: the reader wakes up


class Hub:
    """The chat hub: a set of members, under a lock, that each message goes to."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._members: set[Member] = set()

    def join(self, member: Member) -> int:
        """Add ``member``; return how many members there are now."""
        with self._lock:
            self._members.add(member)
            return len(self._members)

    def leave(self, member: Member) -> None:
        """Remove ``member`` and stop its writer, if the hub has not dropped it already."""
        with self._lock:
            if member in self._members:
                self._members.discard(member)
                member.stop()

    def broadcast(self, message: ws.PreparedMessage) -> None:
        """Queue ``message`` for every member, dropping those whose queue is full."""
        dropped = []
        with self._lock:
            for member in list(self._members):
                if not member.offer(message):
                    self._members.discard(member)
                    member.dropped = True
                    member.stop()
                    dropped.append(member)
        for member in dropped:
            member.session.dropped()


def _chat(conn: ws.Conn, session: Session, hub: Hub) -> None:
    member = Member(conn, session)
    session.opened(f"{hub.join(member)} in the chat")
    writer = threading.Thread(
        target=member.write_pump, name=f"chat writer {session.peer}", daemon=True
    )
    writer.start()
    error: BaseException | None = None
    try:
        while True:
            message_type, data = conn.read_message()
            session.received += 1
            # Encoded once, whatever the number of members (per parameter set).
            hub.broadcast(ws.PreparedMessage(message_type, data))
    except (ws.WebSocketError, OSError) as exc:
        error = exc
    finally:
        hub.leave(member)
        writer.join(WRITE_WAIT + 1.0)  # the write deadline bounds it
        session.closed(error)


def _echo(conn: ws.Conn, session: Session) -> None:
    session.opened()
    error: BaseException | None = None
    try:
        while True:
            message_type, reader = conn.next_reader()
            # Left on a read error (a message over the limit), the writer
            # lets that error through.
            with conn.next_writer(message_type) as writer:
                while chunk := reader.read(CHUNK):
                    writer.write(chunk)
            session.received += 1
            session.sent += 1
    except (ws.WebSocketError, OSError) as exc:
        error = exc
    session.closed(error)


def run(options: ServeOptions) -> None:
    """Serve until SIGINT or SIGTERM, then shut down gracefully."""
    hub = Hub()

    def handler(conn: ws.Conn) -> None:
        session = Session(conn.remote_addr, conn.protocol)
        if session.is_chat:
            _chat(conn, session, hub)
        else:
            _echo(conn, session)

    upgrader = ws.Upgrader(
        enable_compression=options.compression,
        max_message_size=options.max_size,
        keepalive_interval=KEEPALIVE_INTERVAL,
        error=render_error,
    )
    stop = stop_on_signals()
    with ws.serve(
        handler,
        options.host,
        options.port,
        upgrader=upgrader,
        http_handler=http_handler,
        shutdown_timeout=SHUTDOWN_TIMEOUT,
    ) as server:
        announce("wsproto_sync", server.address)
        acceptor = threading.Thread(target=server.serve_forever, name="accept", daemon=True)
        acceptor.start()
        stop.wait()
        # Shutting down takes up to SHUTDOWN_TIMEOUT: another Ctrl-C changes nothing.
        logger.info("shutting down: closing connections with 1001")
        server.shutdown()
        acceptor.join(1.0)
