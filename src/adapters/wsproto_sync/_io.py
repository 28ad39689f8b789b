"""Socket I/O with deadlines, shared by Conn, Upgrader and Dialer.

Every operation gets its own deadline (one socket timeout could not give
reads and writes different ones), so an operation with a deadline never
blocks in the call itself: it tries, and waits in ``poll`` (``select``
where there is none) when the socket is not ready.

Two kinds of socket go through here. A non-blocking one (TLS, and every
socket where ``MSG_DONTWAIT`` does not exist) is tried as it is. A plain
socket that a :class:`~wsproto_sync.Conn` owns stays in blocking mode (see
:func:`prefers_blocking`) and is tried with ``MSG_DONTWAIT``: then an
operation without a deadline, the common case, is one blocking call, where
a non-blocking socket needs a failed call, a poll and a second call.
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

__all__ = [
    "exchange",
    "prefers_blocking",
    "recv",
    "recv_into",
    "send_buffers",
    "sendall",
    "tls_handshake",
]

_DONTWAIT: int = getattr(socket, "MSG_DONTWAIT", 0)
_SENDMSG = hasattr(socket.socket, "sendmsg")  # not on Windows
_MAX_BUFFERS = 64  # well under any system's limit on one vectored write (IOV_MAX)


def prefers_blocking(sock: socket.socket) -> bool:
    """Whether ``sock`` can be left in blocking mode: plain, on a system with ``MSG_DONTWAIT``.

    TLS sockets take no flags, so they stay non-blocking.
    """
    return bool(_DONTWAIT) and not isinstance(sock, ssl.SSLSocket)


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
    _call(sock, deadline, False, sock.do_handshake)


def recv(sock: socket.socket, size: int, deadline: float | None) -> bytes:
    """Read up to ``size`` bytes from ``sock``, waiting until ``deadline``."""
    if not sock.getblocking():
        return _call(sock, deadline, False, sock.recv, size)  # type: ignore[no-any-return]
    if deadline is None:
        return sock.recv(size)
    return _call(sock, deadline, False, sock.recv, size, _DONTWAIT)  # type: ignore[no-any-return]


def recv_into(sock: socket.socket, view: memoryview, deadline: float | None) -> int:
    """Read up to ``len(view)`` bytes into ``view``, waiting until ``deadline``."""
    if not sock.getblocking():
        return _call(sock, deadline, False, sock.recv_into, view)  # type: ignore[no-any-return]
    if deadline is None:
        return sock.recv_into(view)
    return _call(sock, deadline, False, sock.recv_into, view, 0, _DONTWAIT)  # type: ignore[no-any-return]


def send_buffers(sock: socket.socket, buffers: list[bytes], deadline: float | None) -> None:
    """Write ``buffers`` one after the other, waiting until ``deadline``.

    A plain socket gets them in one vectored write (``sendmsg``), so a large
    payload follows its header without a copy to join them; TLS encrypts
    records of its own anyway, so the buffers are joined for it.
    """
    if len(buffers) == 1:
        sendall(sock, buffers[0], deadline)
        return
    if isinstance(sock, ssl.SSLSocket) or not _SENDMSG or len(buffers) > _MAX_BUFFERS:
        sendall(sock, b"".join(buffers), deadline)
        return
    if not sock.getblocking():
        sent: int = _call(sock, deadline, True, sock.sendmsg, buffers)
    elif deadline is None:
        sent = sock.sendmsg(buffers)
    else:
        sent = _call(sock, deadline, True, sock.sendmsg, buffers, (), _DONTWAIT)
    for data in buffers:  # what a partial write left, if any
        if sent >= len(data):
            sent -= len(data)
            continue
        with memoryview(data) as view:
            sendall(sock, view[sent:], deadline)
        sent = 0


def sendall(sock: socket.socket, data: bytes | memoryview, deadline: float | None) -> None:
    """Write all of ``data`` to ``sock``, waiting until ``deadline``."""
    if not sock.getblocking():
        flags: tuple[int, ...] = ()
    elif deadline is None:
        sock.sendall(data)
        return
    else:
        flags = (_DONTWAIT,)
    sent: int = _call(sock, deadline, True, sock.send, data, *flags)
    if sent == len(data):  # the usual case: all of it at once, no view to make
        return
    with memoryview(data) as view:
        view = view[sent:]
        while view:
            view = view[_call(sock, deadline, True, sock.send, view, *flags) :]


def _call(
    sock: socket.socket, deadline: float | None, write: bool, op: Callable[..., Any], *args: Any
) -> Any:
    while True:
        try:
            return op(*args)
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
