"""The error model shared by the core and the adapters."""

from __future__ import annotations

import pytest

from wsproto_core import (
    CloseCode,
    CloseError,
    CloseSentError,
    ConcurrencyError,
    HandshakeError,
    Headers,
    LocalProtocolError,
    ReadLimitError,
    RemoteProtocolError,
    WebSocketError,
    is_close_error,
    is_unexpected_close_error,
)


def test_hierarchy() -> None:
    assert issubclass(CloseSentError, LocalProtocolError)
    assert issubclass(ConcurrencyError, LocalProtocolError)
    assert issubclass(ReadLimitError, RemoteProtocolError)
    for error in (LocalProtocolError, RemoteProtocolError, HandshakeError, CloseError):
        assert issubclass(error, WebSocketError)
    # Local misuse and peer misbehaviour never share a branch.
    assert not issubclass(RemoteProtocolError, LocalProtocolError)
    assert not issubclass(HandshakeError, RemoteProtocolError)


def test_remote_protocol_error_carries_code_and_reason() -> None:
    error = RemoteProtocolError(1002, "bad frame")
    assert (error.code, error.reason) == (1002, "bad frame")
    assert str(error) == "bad frame (close code 1002)"
    assert ReadLimitError("too big").code == CloseCode.MESSAGE_TOO_BIG


def test_handshake_error() -> None:
    error = HandshakeError("nope", status_code=403, headers=Headers({"a": "b"}))
    assert (error.reason, error.status_code, error.headers) == ("nope", 403, Headers({"a": "b"}))
    assert str(error) == "nope (HTTP 403)"
    assert str(HandshakeError("closed")) == "closed"


def test_close_error() -> None:
    error = CloseError(1001, "going away")
    assert (error.code, error.text) == (1001, "going away")
    assert str(error) == "websocket closed: 1001 going away"
    assert str(CloseError(1006)) == "websocket closed: 1006"


@pytest.mark.parametrize(
    ("code", "normal"),
    [(1000, True), (1001, True), (1005, True), (1006, False), (1011, False), (4000, False)],
)
def test_close_error_normal(code: int, normal: bool) -> None:
    assert CloseError(code).normal is normal


@pytest.mark.parametrize(
    ("error", "codes", "expected"),
    [
        (CloseError(1000), (1000, 1001), True),
        (CloseError(1006), (1000, 1001), False),
        (CloseError(1000), (), False),
        (ValueError(), (1000,), False),
        (None, (1000,), False),
    ],
)
def test_is_close_error(
    error: BaseException | None, codes: tuple[int, ...], expected: bool
) -> None:
    assert is_close_error(error, *codes) is expected


@pytest.mark.parametrize(
    ("error", "codes", "expected"),
    [
        (CloseError(1006), (1000, 1001), True),
        (CloseError(1001), (1000, 1001), False),
        (CloseError(1000), (), True),
        (ValueError(), (), False),
        (None, (), False),
    ],
)
def test_is_unexpected_close_error(
    error: BaseException | None, codes: tuple[int, ...], expected: bool
) -> None:
    assert is_unexpected_close_error(error, *codes) is expected
