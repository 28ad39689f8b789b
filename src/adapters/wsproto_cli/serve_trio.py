"""``wsproto serve --adapter trio``: nurseries.

``wsproto_trio.serve()`` runs in a nursery and each connection's handler
in a task of the server's nursery. A chat member's handler opens a nursery
of its own: the handler's task reads (in trio, reading is what moves a
connection), and a task beside it empties the member's bounded memory
channel. The hub runs in trio's thread only, so it needs no lock: a
broadcast sends to every channel without waiting, and drops a member whose
channel is full.
"""

from __future__ import annotations

import functools
import signal
from contextlib import suppress

import trio

import wsproto_trio as ws

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
    """A chat member: its connection, and the channel its writer task empties."""

    def __init__(self, conn: ws.Conn, session: Session) -> None:
        self.conn = conn
        self.session = session
        self._send, self._receive = trio.open_memory_channel[ws.PreparedMessage](CHAT_QUEUE)
        self.dropped = False

    def offer(self, message: ws.PreparedMessage) -> bool:
        """Queue ``message`` without waiting; ``False`` if the channel is full."""
        try:
            self._send.send_nowait(message)
        except trio.WouldBlock:
            return False
        return True

    def stop(self) -> None:
        """Close the channel, dropping what the writer has not sent; the writer then stops."""
        self._send.close()
        with suppress(trio.EndOfChannel):
            while True:
                self._receive.receive_nowait()

    async def write_pump(self) -> None:
        """Send the queued messages until the channel closes (the writer task)."""
        conn = self.conn
        try:
            async for message in self._receive:
                conn.set_write_deadline(trio.current_time() + WRITE_WAIT)
                await conn.write_prepared_message(message)
                self.session.sent += 1
            if self.dropped:
                await conn.write_control(ws.MessageType.CLOSE, TOO_SLOW, trio.current_time() + 1.0)
                await conn.aclose()  # as gorilla's chat does: the reader wakes with 1006
        except ws.CloseSentError:
            pass  # closing already (a shutdown's 1001): the reader sees it through
        except (ws.WebSocketError, OSError):
            await conn.aclose()  # a write failed or timed out: the reader wakes up


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
        """Queue ``message`` for every member, dropping those whose channel is full."""
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
        async with trio.open_nursery() as nursery:
            nursery.start_soon(member.write_pump)
            try:
                while True:
                    message_type, data = await conn.read_message()
                    session.received += 1
                    # Encoded once, whatever the number of members (per parameter set).
                    hub.broadcast(ws.PreparedMessage(message_type, data))
            except (ws.WebSocketError, OSError) as exc:
                error = exc
            finally:
                hub.leave(member)  # the writer stops; the nursery waits for it
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
    serve = functools.partial(
        ws.serve,
        handler,
        options.host,
        options.port,
        upgrader=upgrader,
        http_handler=http_handler,
        shutdown_timeout=SHUTDOWN_TIMEOUT,
    )
    with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
        async with trio.open_nursery() as nursery:
            server: ws.Server = await nursery.start(serve)
            announce("wsproto_trio", server.address)
            async for _ in signals:
                logger.info("shutting down: closing connections with 1001")
                await server.shutdown()  # serve() returns, and the nursery ends
                break


def run(options: ServeOptions) -> None:
    """Serve until SIGINT or SIGTERM, then shut down gracefully.

    Raises:
        OSError: listening failed.
    """
    try:
        trio.run(_serve, options)
    except BaseExceptionGroup as group:
        # serve() raises the OSError itself, and nursery.start() passes it
        # on as it is; but it leaves _serve()'s nursery, which wraps what
        # leaves its body (trio's strict exception groups): a group of one.
        error = group.exceptions[0]
        if len(group.exceptions) == 1 and isinstance(error, OSError):
            raise error from None
        raise
