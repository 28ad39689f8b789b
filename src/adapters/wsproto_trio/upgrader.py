"""Upgrader: the server side of the opening handshake on trio (gorilla: ``Upgrader``).

The core checks the request and writes the response; the Upgrader only
moves the bytes between the stream and the core, within the handshake
timeout.
"""

from __future__ import annotations

import inspect
import math
from collections.abc import Awaitable, Callable
from contextlib import suppress
from dataclasses import dataclass

import trio

from wsproto_core import (
    HandshakeError,
    HandshakeRequest,
    HTTPRequest,
    ServerConnection,
    UpgraderOptions,
)
from wsproto_core.headers import HeadersLike

from ._io import STREAM_GONE, exchange, os_error
from .conn import Conn

__all__ = ["HTTPHandler", "Upgrader"]

HTTPResponse = tuple[int, HeadersLike, "bytes | None"]
HTTPHandler = Callable[[HTTPRequest], "HTTPResponse | Awaitable[HTTPResponse]"]
"""Answers a plain HTTP request on a WebSocket port: ``(status, headers, body)``.

A health check, say: ``lambda request: (200, [("Content-Type", "text/plain")], b"ok")``.
It may be an async function; a body of ``None`` is rendered by the ``error`` hook.
"""


@dataclass(frozen=True, kw_only=True)
class Upgrader(UpgraderOptions):
    """Turns accepted streams into :class:`Conn` objects (gorilla: ``Upgrader``).

    The options are keyword arguments, documented in
    :class:`~wsproto_core.UpgraderOptions` and shared by every adapter:
    ``handshake_timeout`` (10 s), ``read_buffer_size``, ``write_buffer_size``,
    ``write_buffer_pool``, ``subprotocols``, ``check_origin`` (same origin),
    ``error``, ``enable_compression``, ``max_message_size`` (1 MiB),
    ``max_handshake_size``, ``keepalive_interval`` and ``keepalive_timeout``.
    An Upgrader is immutable, so one serves every connection.
    """

    async def upgrade(
        self,
        stream: trio.abc.Stream,
        response_headers: HeadersLike = (),
        *,
        http_handler: HTTPHandler | None = None,
    ) -> Conn:
        """Read the handshake request from ``stream`` and answer it (gorilla: ``Upgrade``).

        Args:
            stream: a freshly accepted stream (TCP, or ``trio.SSLStream``);
                the Upgrader owns it from now on and closes it if the
                handshake fails.
            response_headers: more headers for the 101 response (``Set-Cookie``...).
            http_handler: answers a plain HTTP request (a health check, say);
                without it, such a request gets 426. Either way
                ``HandshakeError`` follows.

        Returns:
            The open connection.

        Raises:
            HandshakeError: the request was not a valid WebSocket handshake;
                the HTTP error response was sent and the stream closed.
            TimeoutError: the request did not arrive within ``handshake_timeout``.
            OSError: the stream failed (for TLS, an ``ssl.SSLError``); trio's
                error is the ``__cause__``.
        """
        core = self.new_connection()
        timeout = math.inf if self.handshake_timeout is None else self.handshake_timeout
        try:
            with trio.fail_after(timeout):
                try:
                    event = await exchange(stream, core, self.read_buffer_size)
                    if not isinstance(event, HandshakeRequest):
                        assert isinstance(event, HTTPRequest)
                        status = await _answer_http(core, event, http_handler)
                        raise HandshakeError(
                            f"not a WebSocket handshake request: {event.method} {event.target}",
                            status_code=status,
                        )
                    core.accept(extra_headers=response_headers)
                    await stream.send_all(core.data_to_send())
                except HandshakeError:
                    with suppress(*STREAM_GONE):
                        if data := core.data_to_send():  # the error response
                            await stream.send_all(data)
                    raise
        except trio.TooSlowError:
            await trio.aclose_forcefully(stream)
            raise TimeoutError("the handshake did not complete within handshake_timeout") from None
        except STREAM_GONE as exc:
            await trio.aclose_forcefully(stream)
            raise os_error(exc) from exc
        except BaseException:
            await trio.aclose_forcefully(stream)
            raise
        return Conn(
            stream,
            core,
            read_buffer_size=self.read_buffer_size,
            write_buffer_size=self.write_buffer_size,
            write_buffer_pool=self.write_buffer_pool,
            keepalive_interval=self.keepalive_interval,
            keepalive_timeout=self.keepalive_timeout,
        )


async def _answer_http(
    core: ServerConnection, request: HTTPRequest, http_handler: HTTPHandler | None
) -> int:
    if http_handler is None:
        core.reject()
        return 426  # Upgrade Required
    answer = http_handler(request)
    if inspect.isawaitable(answer):
        answer = await answer
    status, headers, body = answer
    core.reject(status, headers, body)
    return status
