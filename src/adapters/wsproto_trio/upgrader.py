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
from typing import Any

import trio

from wsproto_core import (
    Acceptance,
    HandshakeError,
    HandshakeRequest,
    HTTPRequest,
    Rejection,
    UpgraderOptions,
)
from wsproto_core.headers import HeadersLike
from wsproto_core.options import (
    answer_handshake_request,
    answer_http_request,
    answer_internal_error,
)

from ._io import STREAM_GONE, exchange, os_error, peer_of
from .conn import Conn

__all__ = ["HTTPHandler", "ProcessRequest", "Upgrader"]

HTTPResponse = tuple[int, HeadersLike, "bytes | None"]
HTTPHandler = Callable[[HTTPRequest], "HTTPResponse | Awaitable[HTTPResponse]"]
"""Answers a plain HTTP request on a WebSocket port: ``(status, headers, body)``.

A health check, say: ``lambda request: (200, [("Content-Type", "text/plain")], b"ok")``.
The request's ``remote_addr`` is the client's address (``None`` for a
stream without a socket). It may be an async function; a body of ``None``
is rendered by the ``error`` hook. If it raises, the client gets ``500
Internal Server Error``.
"""

Answer = Acceptance | Rejection | None
ProcessRequest = Callable[[HandshakeRequest], "Answer | Awaitable[Answer]"]
"""Inspects a valid handshake request before it is answered (websockets: ``process_request``).

It runs after the core's checks and the origin check, within the
``handshake_timeout``, and may be an async function. Return ``None`` to
accept the request, an :class:`~wsproto_core.Acceptance` to accept it with
more response headers (``Set-Cookie``...) or a chosen subprotocol, or a
:class:`~wsproto_core.Rejection` to refuse it with a status, headers and
body of your choice (``401`` with ``WWW-Authenticate``, say). If it raises,
or returns what the core refuses, the client gets ``500 Internal Server
Error`` and the exception propagates.
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
        process_request: ProcessRequest | None = None,
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
            process_request: inspects a valid handshake request and accepts
                it (with more headers) or refuses it; see :data:`ProcessRequest`.

        Returns:
            The open connection.

        Raises:
            HandshakeError: the request was not a valid WebSocket handshake,
                or ``process_request`` refused it; the HTTP response was sent
                and the stream closed.
            TimeoutError: the request did not arrive within ``handshake_timeout``.
            OSError: the stream failed (for TLS, an ``ssl.SSLError``); trio's
                error is the ``__cause__``.
            Exception: what ``http_handler`` or ``process_request`` raised,
                after ``500 Internal Server Error`` was sent.
        """
        core = self.new_connection(remote_addr=peer_of(stream))
        timeout = math.inf if self.handshake_timeout is None else self.handshake_timeout
        try:
            with trio.fail_after(timeout):
                try:
                    event = await exchange(stream, core, self.read_buffer_size)
                    try:
                        if isinstance(event, HandshakeRequest):
                            answer = await _call(process_request, event)
                            answer_handshake_request(core, event, answer, response_headers)
                        else:
                            assert isinstance(event, HTTPRequest)
                            reply = await _call(http_handler, event)
                            answer_http_request(core, event, reply)  # 426 by default
                    except HandshakeError:
                        raise
                    except Exception:
                        # The program's hook failed, or answered what the core
                        # refuses: the client gets a 500, not a dropped connection.
                        answer_internal_error(core)
                        with suppress(*STREAM_GONE):
                            await stream.send_all(core.data_to_send())
                        raise
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


async def _call(hook: Callable[[Any], Any] | None, request: object) -> Any:
    """Call a hook that may be an async function; ``None`` without one."""
    if hook is None:
        return None
    answer = hook(request)
    if inspect.isawaitable(answer):
        answer = await answer
    return answer
