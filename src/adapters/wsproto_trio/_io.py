"""Handshake I/O shared by the trio Upgrader and Dialer."""

from __future__ import annotations

import trio

from wsproto_core import Connection, Event, ProxyConnect

__all__ = ["exchange", "open_tunnel"]


async def exchange(stream: trio.abc.Stream, core: Connection, read_size: int) -> Event:
    """Send what ``core`` queued, then read until it has an event for us.

    Raises:
        HandshakeError: from the core; send ``core.data_to_send()`` first.
        trio.BrokenResourceError: the stream failed.
    """
    if request := core.data_to_send():
        await stream.send_all(request)
    while True:
        event = core.next_event()
        if event is not None:
            return event
        data = await stream.receive_some(read_size)
        if data:
            core.receive_data(data)
        else:
            core.receive_eof()


async def open_tunnel(stream: trio.abc.Stream, connect: ProxyConnect, read_size: int) -> bytes:
    """Ask the proxy on ``stream`` for a tunnel; return the first bytes through it.

    Raises:
        HandshakeError: the proxy refused (``.response`` has its answer),
            closed early or answered with malformed HTTP.
    """
    await stream.send_all(connect.request)
    while (event := connect.next_event()) is None:
        connect.receive_data(bytes(await stream.receive_some(read_size)))
    return event.trailing_data
