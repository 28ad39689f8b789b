"""The Upgrader and Dialer options shared by every adapter."""

from __future__ import annotations

import dataclasses

import pytest

from wsproto_core import (
    Acceptance,
    ClientConnection,
    ClientPerMessageDeflate,
    Connection,
    ConnectionPair,
    DialerOptions,
    HandshakeError,
    HandshakeRequest,
    HandshakeResponse,
    Headers,
    HTTPRequest,
    LocalProtocolError,
    Message,
    PerMessageDeflate,
    Rejection,
    Role,
    ServerConnection,
    ServerPerMessageDeflate,
    State,
    UpgraderOptions,
)
from wsproto_core.options import (
    answer_handshake_request,
    answer_http_request,
    answer_internal_error,
    opening_request,
    opening_response,
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


# -- compression parameters ---------------------------------------------------------


def test_enable_compression_takes_the_parameters_of_the_core_factories() -> None:
    """RFC 7692 §7: the client's offer and the server's parameters meet in the answer."""
    server_deflate = ServerPerMessageDeflate(
        server_no_context_takeover=True, client_max_window_bits=10, compression_level=6
    )
    client_deflate = ClientPerMessageDeflate(server_max_window_bits=12)
    upgrader = UpgraderOptions(enable_compression=server_deflate)
    dialer = DialerOptions(enable_compression=client_deflate)
    for _ in range(2):  # one factory serves every connection
        pair = ConnectionPair.open(dialer.new_connection("ws://x/"), upgrader.new_connection())
        assert isinstance(pair.client, ClientConnection)
        assert pair.client.handshake_response is not None
        [offer] = pair.client.handshake_response.extensions
        assert dict(offer.params) == {
            "server_no_context_takeover": None,
            "server_max_window_bits": "12",
            "client_max_window_bits": "10",
        }
        [sent], [received] = pair.server.extensions, pair.client.extensions
        assert isinstance(sent, PerMessageDeflate)
        assert isinstance(received, PerMessageDeflate)
        assert (sent.local_no_context_takeover, sent.local_max_window_bits) == (True, 12)
        assert (sent.remote_max_window_bits, sent.compression_level) == (10, 6)
        assert (received.remote_no_context_takeover, received.local_max_window_bits) == (True, 10)
        pair.server.send_text("compressed " * 20)
        assert pair.transfer()[0] == [Message(data="compressed " * 20)]


def test_enable_compression_false_and_true() -> None:
    assert UpgraderOptions(enable_compression=False).new_connection()._handshake._factories == ()
    [factory] = UpgraderOptions(enable_compression=True).new_connection()._handshake._factories
    assert isinstance(factory, ServerPerMessageDeflate)
    assert not factory.server_no_context_takeover  # the RFC's default: context takeover
    client = DialerOptions(enable_compression=True).new_connection("ws://x/")
    assert isinstance(client._handshake._factories[0], ClientPerMessageDeflate)


@pytest.mark.parametrize(
    ("cls", "value"),
    [
        (UpgraderOptions, ClientPerMessageDeflate()),
        (DialerOptions, ServerPerMessageDeflate()),
        (UpgraderOptions, "deflate"),
    ],
)
def test_enable_compression_refuses_the_other_sides_factory(cls: type, value: object) -> None:
    with pytest.raises(TypeError, match="enable_compression takes a bool or a"):
        cls(enable_compression=value)


# -- answering requests as the program's hooks decided --------------------------------


def requested(**options: object) -> tuple[ServerConnection, HandshakeRequest | HTTPRequest]:
    server = UpgraderOptions(**options).new_connection()  # type: ignore[arg-type]
    request = (
        b"GET /chat?room=1 HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
        b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n"
        b"Sec-WebSocket-Protocol: a, b\r\n\r\n"
    )
    server.receive_data(request)
    event = server.next_event()
    assert isinstance(event, HandshakeRequest | HTTPRequest)
    return server, event


def response_of(server: ServerConnection) -> tuple[bytes, bytes]:
    head, _, body = server.data_to_send().partition(b"\r\n\r\n")
    return head, body


@pytest.mark.parametrize("answer", [None, Acceptance()])
def test_none_or_an_acceptance_accepts(answer: Acceptance | None) -> None:
    server, request = requested(subprotocols=["b"])
    assert isinstance(request, HandshakeRequest)
    answer_handshake_request(server, request, answer, [("X-Upgrader", "1")])
    head, _ = response_of(server)
    assert head.startswith(b"HTTP/1.1 101 ")
    assert b"X-Upgrader: 1" in head
    assert server.state is State.OPEN
    assert server.subprotocol == "b"


def test_an_acceptance_adds_headers_and_picks_the_subprotocol() -> None:
    server, request = requested(subprotocols=["b"])
    assert isinstance(request, HandshakeRequest)
    acceptance = Acceptance([("Set-Cookie", "session=1")], subprotocol="a")
    assert acceptance.headers == Headers([("Set-Cookie", "session=1")])  # kept immutable
    answer_handshake_request(server, request, acceptance, {"X-Upgrader": "1"})
    head, _ = response_of(server)
    assert head.index(b"X-Upgrader: 1") < head.index(b"Set-Cookie: session=1")
    assert server.subprotocol == "a"
    assert opening_response(server).headers["set-cookie"] == "session=1"


def test_a_rejection_refuses_through_the_core() -> None:
    server, request = requested()
    assert isinstance(request, HandshakeRequest)
    rejection = Rejection(401, [("WWW-Authenticate", 'Bearer realm="chat"')])
    with pytest.raises(HandshakeError, match=r"refused the handshake for /chat\?room=1") as info:
        answer_handshake_request(server, request, rejection)
    assert info.value.status_code == 401
    head, body = response_of(server)
    assert head.startswith(b"HTTP/1.1 401 Unauthorized\r\n")
    assert b'WWW-Authenticate: Bearer realm="chat"' in head
    assert b"Connection: close" in head
    assert body == b"401 Unauthorized: the server refused the request\n"  # the error renderer
    assert server.state is State.CLOSED
    assert server.close_expected()
    assert Rejection().status_code == 403


@pytest.mark.parametrize(
    "answer",
    [
        Rejection(101),
        Rejection(99),
        Acceptance([("Sec-WebSocket-Accept", "forged")]),
        Acceptance(subprotocol="not offered"),
    ],
)
def test_an_answer_the_core_refuses_leaves_room_for_a_500(answer: Acceptance | Rejection) -> None:
    server, request = requested()
    assert isinstance(request, HandshakeRequest)
    with pytest.raises(LocalProtocolError):
        answer_handshake_request(server, request, answer)
    assert server.data_to_send() == b""
    answer_internal_error(server)
    head, body = response_of(server)
    assert head.startswith(b"HTTP/1.1 500 Internal Server Error\r\n")
    assert body == b"500 Internal Server Error: the server could not answer the request\n"
    answer_internal_error(server)  # answered already: nothing more
    assert server.data_to_send() == b""


def test_answer_internal_error_needs_a_request() -> None:
    server = UpgraderOptions().new_connection()
    answer_internal_error(server)
    assert server.data_to_send() == b""
    assert server.state is State.CONNECTING


def test_any_other_answer_is_a_type_error() -> None:
    server, request = requested()
    assert isinstance(request, HandshakeRequest)
    with pytest.raises(TypeError, match="not bool"):
        answer_handshake_request(server, request, True)  # type: ignore[arg-type]


def plain_request(target: str) -> tuple[ServerConnection, HTTPRequest]:
    server = UpgraderOptions().new_connection()
    server.receive_data(f"GET {target} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
    request = server.next_event()
    assert isinstance(request, HTTPRequest)
    return server, request


def test_a_plain_http_request_gets_the_handlers_answer() -> None:
    server, request = plain_request("/health")
    with pytest.raises(HandshakeError, match="not a WebSocket handshake request: GET /health"):
        answer_http_request(server, request, (200, [("Content-Type", "text/plain")], b"ok\n"))
    head, body = response_of(server)
    assert head.startswith(b"HTTP/1.1 200 OK\r\n")
    assert body == b"ok\n"


def test_a_plain_http_request_gets_426_without_a_handler() -> None:
    server, request = plain_request("/")
    with pytest.raises(HandshakeError) as info:
        answer_http_request(server, request, None)
    assert info.value.status_code == 426
    assert response_of(server)[0].startswith(b"HTTP/1.1 426 Upgrade Required\r\n")


# -- the handshake behind an open connection ----------------------------------------------


def test_opening_request_and_response_on_each_side() -> None:
    pair = ConnectionPair.open()
    request = opening_request(pair.server)
    assert request.target == "/"
    assert opening_response(pair.server) == pair.server.handshake_response  # what it sent
    assert opening_response(pair.client) == pair.client.handshake_response  # what it got
    assert opening_response(pair.client).status_code == 101
    with pytest.raises(LocalProtocolError, match="only a server connection"):
        opening_request(pair.client)


def test_no_handshake_no_request_or_response() -> None:
    framing = Connection(Role.SERVER)
    with pytest.raises(LocalProtocolError, match="only a server connection"):
        opening_request(framing)
    with pytest.raises(LocalProtocolError, match="not opened by a handshake"):
        opening_response(framing)
    waiting = UpgraderOptions().new_connection()  # no request yet
    with pytest.raises(LocalProtocolError, match="only a server connection"):
        opening_request(waiting)
    with pytest.raises(LocalProtocolError, match="not opened by a handshake"):
        opening_response(waiting)
