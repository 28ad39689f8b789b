"""Non-blocking socket I/O with deadlines, shared by Conn, Upgrader and Dialer.

Sockets stay non-blocking and waits go through ``poll`` (``select`` where
there is none), so every operation gets its own deadline: one socket timeout
could not give reads and writes different ones.
"""

from __future__ import annotations

import errno
import select
import socket
import ssl
import time
from collections.abc import Callable
from typing import Any

from wsproto_core import Connection, Event

__all__ = ["exchange", "recv", "sendall", "tls_handshake"]


def exchange(
    sock: socket.socket, core: Connection, deadline: float | None, read_size: int
) -> Event:
    """Send what ``core`` queued, then read until it has an event for us.

    Raises:
        HandshakeError: from the core; send ``core.data_to_send()`` first.
        TimeoutError: ``deadline`` passed.
        OSError: the socket failed.
    """
    sendall(sock, core.data_to_send(), deadline)
    while True:
        event = core.next_event()
        if event is not None:
            return event
        data = recv(sock, read_size, deadline)
        if data:
            core.receive_data(data)
        else:
            core.receive_eof()


def tls_handshake(sock: ssl.SSLSocket, deadline: float | None) -> None:
    """Do the TLS handshake of a non-blocking TLS socket, waiting until ``deadline``.

    Raises:
        TimeoutError: ``deadline`` passed.
        ssl.SSLError: the handshake failed (not TLS, no shared cipher...).
    """
    _call(sock, lambda _: sock.do_handshake(), None, deadline, write=False)


def recv(sock: socket.socket, size: int, deadline: float | None) -> bytes:
    """Read up to ``size`` bytes from a non-blocking socket, waiting until ``deadline``."""
    return _call(sock, sock.recv, size, deadline, write=False)  # type: ignore[no-any-return]


def sendall(sock: socket.socket, data: bytes, deadline: float | None) -> None:
    """Write all of ``data`` to a non-blocking socket, waiting until ``deadline``."""
    with memoryview(data) as view:
        while view:
            view = view[_call(sock, sock.send, view, deadline, write=True) :]


def _call(
    sock: socket.socket, op: Callable[[Any], Any], arg: Any, deadline: float | None, *, write: bool
) -> Any:
    while True:
        try:
            return op(arg)
        except BlockingIOError:
            _wait(sock, write, deadline)
        except ssl.SSLWantReadError:  # TLS may need to read to write, and the reverse
            _wait(sock, False, deadline)
        except ssl.SSLWantWriteError:
            _wait(sock, True, deadline)


def _wait(sock: socket.socket, write: bool, deadline: float | None) -> None:
    timeout = None if deadline is None else deadline - time.monotonic()
    if timeout is not None and timeout <= 0:
        raise TimeoutError("deadline passed")
    if hasattr(select, "poll"):
        poller = select.poll()
        try:
            poller.register(sock, select.POLLOUT if write else select.POLLIN)
        except ValueError:  # close() from another thread got here first: no descriptor
            raise OSError(errno.EBADF, "the connection is closed") from None
        ready = bool(poller.poll(None if timeout is None else timeout * 1000))
    else:  # pragma: no cover - Windows
        readers, writers, _ = select.select(
            [] if write else [sock], [sock] if write else [], [], timeout
        )
        ready = bool(readers or writers)
    if not ready:
        raise TimeoutError("deadline passed")
