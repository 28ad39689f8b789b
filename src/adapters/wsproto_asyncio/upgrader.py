"""Upgrader: the server side of the opening handshake on asyncio (gorilla: ``Upgrader``).

The core checks the request and writes the response; the Upgrader only
connects a transport to it and waits, within the handshake timeout.
"""

from __future__ import annotations

import asyncio
import inspect
import socket
import ssl
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, cast

from wsproto_core import (
    Acceptance,
    HandshakeError,
    HandshakeRequest,
    HTTPRequest,
    Rejection,
    ServerConnection,
    UpgraderOptions,
)
from wsproto_core.headers import HeadersLike
from wsproto_core.options import (
    answer_handshake_request,
    answer_http_request,
    answer_internal_error,
)

from ._bridge import Bridge
from .conn import Conn

__all__ = ["HTTPHandler", "ProcessRequest", "Upgrader"]

HTTPResponse = tuple[int, HeadersLike, "bytes | None"]
HTTPHandler = Callable[[HTTPRequest], "HTTPResponse | Awaitable[HTTPResponse]"]
"""Answers a plain HTTP request on a WebSocket port: ``(status, headers, body)``.

A health check, say: ``lambda request: (200, [("Content-Type", "text/plain")], b"ok")``.
The request's ``remote_addr`` is the client's address. It may be a
coroutine function; a body of ``None`` is rendered by the ``error`` hook.
If it raises, the client gets ``500 Internal Server Error``.
"""

Answer = Acceptance | Rejection | None
ProcessRequest = Callable[[HandshakeRequest], "Answer | Awaitable[Answer]"]
"""Inspects a valid handshake request before it is answered (websockets: ``process_request``).

It runs after the core's checks and the origin check, within the
``handshake_timeout``, and may be a coroutine function. Return ``None`` to
accept the request, an :class:`~wsproto_core.Acceptance` to accept it with
more response headers (``Set-Cookie``...) or a chosen subprotocol, or a
:class:`~wsproto_core.Rejection` to refuse it with a status, headers and
body of your choice (``401`` with ``WWW-Authenticate``, say). If it raises,
or returns what the core refuses, the client gets ``500 Internal Server
Error`` and the exception propagates.
"""

Streams = tuple[asyncio.StreamReader, asyncio.StreamWriter]


@dataclass(frozen=True, kw_only=True)
class Upgrader(UpgraderOptions):
    """Turns accepted connections into :class:`Conn` objects (gorilla: ``Upgrader``).

    The options are keyword arguments, documented in
    :class:`~wsproto_core.UpgraderOptions` and shared by every adapter:
    ``handshake_timeout`` (10 s), ``read_buffer_size``, ``write_buffer_size``,
    ``write_buffer_pool``, ``subprotocols``, ``check_origin`` (same origin),
    ``error``, ``enable_compression``, ``max_message_size`` (1 MiB),
    ``max_handshake_size``, ``keepalive_interval`` and ``keepalive_timeout``.
    One more is asyncio's own:

    Attributes:
        max_queue: messages (and control frames) read ahead of the
            application before the connection stops reading from the
            network, so a fast peer cannot fill memory.
    """

    max_queue: int = 16

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.max_queue < 1:
            raise ValueError("max_queue must be at least 1")

    async def upgrade(
        self,
        connection: socket.socket | Streams,
        response_headers: HeadersLike = (),
        *,
        http_handler: HTTPHandler | None = None,
        process_request: ProcessRequest | None = None,
        ssl_context: ssl.SSLContext | None = None,
    ) -> Conn:
        """Answer a handshake request and open the connection (gorilla: ``Upgrade``).

        Args:
            connection: a freshly accepted socket, which the Upgrader owns
                from now on; or the ``(reader, writer)`` pair that
                ``asyncio.start_server`` gave a handler, whose transport it
                takes over (nothing may have been read from the reader).
            response_headers: more headers for the 101 response (``Set-Cookie``...).
            http_handler: answers a plain HTTP request (a health check, say)
                with ``(status, headers, body)``; without it, such a request
                gets 426. Either way ``HandshakeError`` follows.
            process_request: inspects a valid handshake request and accepts
                it (with more headers) or refuses it; see :data:`ProcessRequest`.
            ssl_context: for a socket, the server's TLS context, if any.

        Returns:
            The open connection.

        Raises:
            HandshakeError: the request was not a valid WebSocket handshake
                (a plain HTTP request gets 426), or ``process_request``
                refused it; the HTTP response was sent and the connection
                closed.
            TimeoutError: the request did not arrive within ``handshake_timeout``
                (with ``ssl_context``, the TLS handshake gets as long again).
            OSError: the connection failed.
            Exception: what ``http_handler`` or ``process_request`` raised,
                after ``500 Internal Server Error`` was sent.
        """
        loop = asyncio.get_running_loop()
        bridge = self.new_bridge()
        if isinstance(connection, socket.socket):
            try:
                # The handshake timeout bounds the TLS handshake as well.
                async with asyncio.timeout(self.handshake_timeout):
                    await loop.connect_accepted_socket(lambda: bridge, connection, ssl=ssl_context)
            except BaseException:
                connection.close()
                raise
        else:
            _take_over(connection, bridge)
        return await self.handshake(bridge, response_headers, http_handler, process_request)

    def new_bridge(self) -> Bridge:
        """The protocol object of a new server connection (for ``serve()`` and ``upgrade()``)."""
        return Bridge(
            self.new_connection(),
            read_buffer_size=self.read_buffer_size,
            max_queue=self.max_queue,
        )

    async def handshake(
        self,
        bridge: Bridge,
        response_headers: HeadersLike = (),
        http_handler: HTTPHandler | None = None,
        process_request: ProcessRequest | None = None,
    ) -> Conn:
        """Wait for the request on a connected bridge and answer it.

        Plain HTTP requests go to ``http_handler``, or get 426; either way
        the connection then closes and :class:`HandshakeError` is raised.
        Handshake requests go to ``process_request``, if given, which may
        refuse them. If a hook raises, the client gets a 500, the connection
        closes and the exception propagates.
        """
        core = bridge.core
        assert isinstance(core, ServerConnection)
        # The timeout counts from the connection. Without a hook, a request
        # that is here already is answered without waiting: no timer to arm.
        timeout = self.handshake_timeout
        deadline = None if timeout is None else bridge.connected_at + timeout
        ready = bool(bridge.events) or bridge.error is not None
        if ready and process_request is None and http_handler is None:
            deadline = None
        try:
            async with asyncio.timeout_at(deadline):
                event = await bridge.next_event()
                try:
                    if isinstance(event, HandshakeRequest):
                        answer = await _call(process_request, event)
                        answer_handshake_request(core, event, answer, response_headers)
                    else:
                        assert isinstance(event, HTTPRequest)
                        reply = await _call(http_handler, event)
                        answer_http_request(core, event, reply)  # 426 Upgrade Required by default
                except HandshakeError:
                    raise
                except Exception:
                    # The program's hook failed, or answered what the core
                    # refuses: the client gets a 500, not a dropped connection.
                    answer_internal_error(core)
                    bridge.flush()
                    await bridge.close(1.0)
                    raise
        except HandshakeError:
            bridge.flush()  # the error response, if the core wrote one
            await bridge.close(1.0)
            raise
        except BaseException:
            bridge.abort()
            raise
        bridge.flush()
        bridge.process()  # frames that came with the request
        return Conn(
            bridge,
            write_buffer_size=self.write_buffer_size,
            write_buffer_pool=self.write_buffer_pool,
            keepalive_interval=self.keepalive_interval,
            keepalive_timeout=self.keepalive_timeout,
        )


async def _call(hook: Callable[[Any], Any] | None, request: object) -> Any:
    """Call a hook that may be a coroutine function; ``None`` without one."""
    if hook is None:
        return None
    answer = hook(request)
    if inspect.isawaitable(answer):
        answer = await answer
    return answer


def _take_over(streams: Streams, bridge: Bridge) -> None:
    """Move a stream pair's transport to ``bridge``, with what it read already."""
    reader, writer = streams
    transport = writer.transport
    # The streams API has no public way to take back buffered bytes; the
    # reader's buffer has been a bytearray named _buffer since Python 3.4.
    buffered: bytearray = getattr(reader, "_buffer", bytearray())
    pending = bytes(buffered)
    buffered.clear()
    transport.set_protocol(bridge)
    bridge.connection_made(transport)
    if pending:
        bridge.core.receive_data(pending)
        bridge.process()
    # Duck-typed: uvloop's transports don't derive from asyncio's classes.
    readable = cast(asyncio.ReadTransport, transport)
    if not readable.is_reading():
        readable.resume_reading()  # the stream paused it when its buffer was full
