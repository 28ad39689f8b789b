"""The CONNECT tunnel through a proxy, on a blocking socket.

The CONNECT exchange itself is the core's :class:`~wsproto_core.ProxyConnect`,
and the choice of proxy is ``wsproto_common``'s; this module only moves the
bytes, within the handshake's deadline.
"""

from __future__ import annotations

import socket

from wsproto_core import ProxyConnect, ProxyURL

from ._io import recv, sendall

__all__ = ["open_tunnel"]


def open_tunnel(
    sock: socket.socket,
    connect: ProxyConnect,
    deadline: float | None,
    read_size: int,
    proxy: ProxyURL,
) -> bytes:
    """Ask the proxy on ``sock`` for a tunnel; return the first bytes through it.

    ``sock`` must be non-blocking; it is a tunnel to the target afterwards.

    Raises:
        HandshakeError: the proxy refused (``.response`` has its answer),
            closed early or answered with malformed HTTP.
        TimeoutError: ``deadline`` passed before the proxy answered.
        OSError: the socket failed.
    """
    try:
        sendall(sock, connect.request, deadline)
        while (event := connect.next_event()) is None:
            connect.receive_data(recv(sock, read_size, deadline))
    except TimeoutError:
        raise TimeoutError(
            f"the proxy {proxy.host}:{proxy.port} did not open a tunnel to "
            f"{connect.authority} within the handshake timeout"
        ) from None
    return event.trailing_data
