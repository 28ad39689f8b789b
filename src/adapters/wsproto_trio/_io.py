"""Stream I/O shared by the trio Conn, Upgrader and Dialer.

trio reports a failed or closed stream as ``trio.BrokenResourceError`` or
``trio.ClosedResourceError``; the adapters' public API raises what the
others raise instead (an ``OSError``: see :func:`os_error`), so code that
handles errors works with every adapter.
"""

from __future__ import annotations

import errno
from typing import Any, NoReturn

import trio

from wsproto_core import Connection, Event, ProxyConnect

__all__ = [
    "STREAM_GONE",
    "exchange",
    "open_tunnel",
    "os_error",
    "peer_of",
    "raise_stream_error",
    "socket_of",
]

#: What trio raises for a stream that failed, or that was closed.
STREAM_GONE = (trio.BrokenResourceError, trio.ClosedResourceError)


def os_error(exc: trio.BrokenResourceError | trio.ClosedResourceError) -> OSError:
    """The error the other adapters raise where trio raised ``exc``; raise it ``from exc``.

    That is the ``OSError`` trio wrapped (an ``ssl.SSLError`` from TLS, the
    socket's ``ConnectionResetError``...), else a ``ConnectionResetError``.
    """
    cause = exc.__cause__
    if isinstance(cause, OSError):
        # The caller makes exc the cause of this error: unlink the way back,
        # so the chain is no cycle.
        exc.__cause__ = exc.__context__ = None
        return cause
    if isinstance(exc, trio.ClosedResourceError):
        return ConnectionResetError("the connection is closed")
    return ConnectionResetError(str(exc) or "the connection failed")


def raise_stream_error(exc: OSError) -> NoReturn:
    """Raise what a ``SocketStream`` raises for its socket's ``exc`` (call it in the ``except``).

    For the adapter's own reads and writes of a plain TCP stream's socket,
    so the errors are the same as through the stream.
    """
    if exc.errno == errno.EBADF:  # closed under us (trio's rule: no cause)
        raise trio.ClosedResourceError("this socket was already closed") from None
    raise trio.BrokenResourceError(f"socket connection broken: {exc}") from exc


async def exchange(stream: trio.abc.Stream, core: Connection, read_size: int) -> Event:
    """Send what ``core`` queued, then read until it has an event for us.

    Raises:
        HandshakeError: from the core; send ``core.data_to_send()`` first.
        trio.BrokenResourceError: the stream failed (the caller maps it with
            :func:`os_error`).
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


def socket_of(stream: trio.abc.Stream) -> Any:
    """The socket under a stream (through TLS), or ``None`` (a memory stream's)."""
    while True:
        sock = getattr(stream, "socket", None)
        if sock is not None:
            return sock
        inner = getattr(stream, "transport_stream", None)
        if inner is None:
            return None
        stream = inner


def peer_of(stream: trio.abc.Stream) -> Any:
    """The peer's address, as ``Conn.remote_addr`` will have it; ``None`` if unknown."""
    sock = socket_of(stream)
    if sock is None:
        return None
    try:
        return sock.getpeername()
    except OSError:  # the client left already: the handshake will fail
        return None
