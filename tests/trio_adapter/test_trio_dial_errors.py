"""How wsproto_trio's Dialer reports a failure to connect: as the other adapters do.

trio.open_tcp_stream tries every address of the host and raises
``OSError("all attempts to connect ... failed")`` from a group of the
attempts' errors; the Dialer raises the socket's own error when every
attempt failed the same way, as ``socket.create_connection`` and asyncio do.
"""

from __future__ import annotations

import errno
from typing import Any, NoReturn

import pytest
import trio

from wsproto_trio import Dialer

DIALER = Dialer(handshake_timeout=5, proxy=None)


def failing_open_tcp_stream(*errors: OSError) -> Any:
    async def open_tcp_stream(host: str, port: int) -> NoReturn:
        await trio.lowlevel.checkpoint()
        message = f"all attempts to connect to {host}:{port} failed"
        raise OSError(message) from ExceptionGroup(message, list(errors))

    return open_tcp_stream


async def test_every_address_refused_is_connection_refused_error(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    v6 = ConnectionRefusedError(errno.ECONNREFUSED, "refused on ::1")
    v4 = ConnectionRefusedError(errno.ECONNREFUSED, "refused on 127.0.0.1")
    monkeypatch.setattr(trio, "open_tcp_stream", failing_open_tcp_stream(v6, v4))
    with pytest.raises(ConnectionRefusedError) as info:
        await DIALER.dial("ws://example.test:8765/")
    assert info.value is v6  # the first attempt's, as asyncio's create_connection raises


async def test_different_failures_keep_trios_summary(monkeypatch: pytest.MonkeyPatch) -> None:
    refused = ConnectionRefusedError(errno.ECONNREFUSED, "refused")
    unreachable = OSError(errno.ENETUNREACH, "unreachable")
    monkeypatch.setattr(trio, "open_tcp_stream", failing_open_tcp_stream(refused, unreachable))
    with pytest.raises(OSError, match="all attempts to connect") as info:
        await DIALER.dial("ws://example.test:8765/")
    assert isinstance(info.value.__cause__, ExceptionGroup)
    assert list(info.value.__cause__.exceptions) == [refused, unreachable]


async def test_other_errors_pass_as_they_are(monkeypatch: pytest.MonkeyPatch) -> None:
    lookup = OSError(errno.ENOENT, "no such host")

    async def open_tcp_stream(host: str, port: int) -> NoReturn:
        await trio.lowlevel.checkpoint()
        raise lookup

    monkeypatch.setattr(trio, "open_tcp_stream", open_tcp_stream)
    with pytest.raises(OSError) as info:  # noqa: PT011 - the very error, checked below
        await DIALER.dial("ws://example.test:8765/")
    assert info.value is lookup
