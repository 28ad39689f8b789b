"""The Upgrader and Dialer options shared by every adapter."""

from __future__ import annotations

import dataclasses

import pytest

from wsproto_core import (
    ConnectionPair,
    DialerOptions,
    HandshakeError,
    HandshakeRequest,
    HandshakeResponse,
    PerMessageDeflate,
    ServerConnection,
    State,
    UpgraderOptions,
)


def test_defaults_are_the_documented_ones() -> None:
    upgrader, dialer = UpgraderOptions(), DialerOptions()
    assert (upgrader.handshake_timeout, dialer.handshake_timeout) == (10.0, 45.0)
    assert upgrader.max_message_size == dialer.max_message_size == 1024 * 1024
    assert upgrader.write_buffer_size == dialer.write_buffer_size == 4096
    assert upgrader.write_buffer_pool is None
    assert not upgrader.enable_compression
    assert not dialer.enable_compression


def test_options_are_immutable_and_subprotocols_a_tuple() -> None:
    options = UpgraderOptions(subprotocols=["chat", "superchat"])
    assert options.subprotocols == ("chat", "superchat")
    with pytest.raises(dataclasses.FrozenInstanceError):
        options.enable_compression = True  # type: ignore[misc]


@pytest.mark.parametrize("cls", [UpgraderOptions, DialerOptions])
@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("read_buffer_size", 0, "buffer sizes"),
        ("write_buffer_size", -1, "buffer sizes"),
        ("handshake_timeout", 0, "handshake_timeout"),
        ("keepalive_interval", 0, "keepalive_interval"),
        ("keepalive_timeout", -1.5, "keepalive_timeout"),
    ],
)
def test_nonsense_sizes_are_refused(cls: type, field: str, value: int, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        cls(**{field: value})


def test_no_handshake_timeout_is_allowed() -> None:
    assert UpgraderOptions(handshake_timeout=None).handshake_timeout is None


def test_the_options_build_cores_that_agree() -> None:
    upgrader = UpgraderOptions(subprotocols=["b", "a"], enable_compression=True)
    dialer = DialerOptions(subprotocols=["a", "b"], enable_compression=True, max_message_size=10)
    client = dialer.new_connection("ws://example.com/chat", [("X-Id", "1")], {"session": "s"})
    server = upgrader.new_connection()
    assert isinstance(server, ServerConnection)
    pair = ConnectionPair(client, server)
    _, [request] = pair.transfer()
    assert isinstance(request, HandshakeRequest)
    assert request.headers["x-id"] == "1"
    assert request.headers["cookie"] == "session=s"
    server.accept()
    [response], _ = pair.transfer()
    assert isinstance(response, HandshakeResponse)
    assert response.subprotocol == "b"  # the server's preference
    assert client.state is State.OPEN
    assert isinstance(client.extensions[0], PerMessageDeflate)
    assert client.max_message_size == 10


def test_the_error_option_renders_the_servers_errors() -> None:
    def render(status: int, reason: str, request: object) -> tuple[list[tuple[str, str]], bytes]:
        return [], b"custom"

    server = UpgraderOptions(error=render).new_connection()
    server.receive_data(b"GARBAGE\r\n\r\n")
    with pytest.raises(HandshakeError, match="malformed"):
        server.next_event()
    assert server.data_to_send().endswith(b"\r\n\r\ncustom")
