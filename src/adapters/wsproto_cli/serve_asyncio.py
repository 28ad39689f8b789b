"""``wsproto serve --adapter asyncio``: tasks.

``wsproto_asyncio.serve()`` runs each connection's handler in a task. A
chat member's handler reads, and a second task in a ``TaskGroup`` empties
the member's bounded queue. The hub runs on the event loop's thread only,
so it needs no lock: a broadcast puts into every queue without awaiting,
and drops a member whose queue is full.
"""

from __future__ import annotations

import asyncio
import signal
from contextlib import suppress

import wsproto_asyncio as ws

from .serve import (
    CHAT_QUEUE,
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
)

__all__ = ["Hub", "Member", "run"]


class Member:
    """A chat member: its connection, and the queue its writer task empties."""

    def __init__(self, conn: ws.Conn, session: Session) -> None:
        self.conn = conn
        self.session = session
        # None, last, tells the writer to stop.
        self.outbox: asyncio.Queue[ws.PreparedMessage | None] = asyncio.Queue(CHAT_QUEUE)
        self.dropped = False

    def offer(self, message: ws.PreparedMessage) -> bool:
        """Queue ``message`` without waiting; ``False`` if the queue is full."""
        try:
            self.outbox.put_nowait(message)
        except asyncio.QueueFull:
            return False
        return True

    def stop(self) -> None:
        """Tell the writer to stop, dropping what it has not sent."""
        with suppress(asyncio.QueueEmpty):
            while True:
                self.outbox.get_nowait()
        self.outbox.put_nowait(None)

    async def write_pump(self) -> None:
        """Send the queued messages until told to stop (the writer task)."""
        conn = self.conn
        loop = asyncio.get_running_loop()
        try:
            while (message := await self.outbox.get()) is not None:
                conn.set_write_deadline(loop.time() + WRITE_WAIT)
                await conn.write_prepared_message(message)
                self.session.sent += 1
            if self.dropped:
                await conn.write_control(ws.MessageType.CLOSE, TOO_SLOW, loop.time() + 1.0)
                await conn.close()  # as gorilla's chat does: the reader wakes with 1006
        except ws.CloseSentError:
            pass  # closing already (a shutdown's 1001): the reader sees it through
        except (ws.WebSocketError, OSError):
            await conn.close()  # a write failed or timed out: the reader wakes up


class Hub:
    """The chat hub: the members each message goes to."""

    def __init__(self) -> None:
        self._members: set[Member] = set()

    def join(self, member: Member) -> int:
        """Add ``member``; return how many members there are now."""
        self._members.add(member)
        return len(self._members)

    def leave(self, member: Member) -> None:
        """Remove ``member`` and stop its writer, if the hub has not dropped it already."""
        if member in self._members:
            self._members.discard(member)
            member.stop()

    def broadcast(self, message: ws.PreparedMessage) -> None:
        """Queue ``message`` for every member, dropping those whose queue is full."""
        for member in list(self._members):
            if not member.offer(message):
                self._members.discard(member)
                member.dropped = True
                member.stop()
                member.session.dropped()


async def _chat(conn: ws.Conn, session: Session, hub: Hub) -> None:
    member = Member(conn, session)
    session.opened(f"{hub.join(member)} in the chat")
    error: BaseException | None = None
    try:
        async with asyncio.TaskGroup() as tasks:
            tasks.create_task(member.write_pump())
            try:
                while True:
                    message_type, data = await conn.read_message()
                    session.received += 1
                    # Encoded once, whatever the number of members (per parameter set).
                    hub.broadcast(ws.PreparedMessage(message_type, data))
            except (ws.WebSocketError, OSError) as exc:
                error = exc
            finally:
                hub.leave(member)  # the writer stops; the group waits for it
    finally:
        session.closed(error)


async def _echo(conn: ws.Conn, session: Session) -> None:
    session.opened()
    error: BaseException | None = None
    try:
        while True:
            message_type, reader = await conn.next_reader()
            # Left on a read error (a message over the limit), the writer
            # lets that error through.
            async with conn.next_writer(message_type) as writer:
                async for chunk in reader:
                    await writer.write(chunk)
            session.received += 1
            session.sent += 1
    except (ws.WebSocketError, OSError) as exc:
        error = exc
    finally:
        session.closed(error)


async def _serve(options: ServeOptions) -> None:
    hub = Hub()

    async def handler(conn: ws.Conn) -> None:
        session = Session(conn.remote_addr, conn.protocol)
        if session.is_chat:
            await _chat(conn, session, hub)
        else:
            await _echo(conn, session)

    upgrader = ws.Upgrader(
        enable_compression=options.compression,
        max_message_size=options.max_size,
        keepalive_interval=KEEPALIVE_INTERVAL,
        error=render_error,
    )
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    async with await ws.serve(
        handler,
        options.host,
        options.port,
        upgrader=upgrader,
        http_handler=http_handler,
        shutdown_timeout=SHUTDOWN_TIMEOUT,
    ) as server:
        announce("wsproto_asyncio", server.address)
        await stop.wait()
        logger.info("shutting down: closing connections with 1001")
    # Leaving the block shut the server down.


def run(options: ServeOptions) -> None:
    """Serve until SIGINT or SIGTERM, then shut down gracefully."""
    asyncio.run(_serve(options))
