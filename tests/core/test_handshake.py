# The opening handshake (RFC 6455 §4) through the public API: a ServerConnection
# fed raw request bytes, a ClientConnection fed crafted responses, and a
# ConnectionPair running both ends. Every request and response is fed three
# ways (whole, one byte at a time, and followed by frame bytes in the same
# read that must come out as events once the connection is open).

from __future__ import annotations

import base64
import binascii
from collections.abc import Iterable
from dataclasses import dataclass

import h11
import pytest

from wsproto_core import (
    ClientConnection,
    ClientExtensionFactory,
    Close,
    CloseCode,
    ConnectionPair,
    Event,
    Extension,
    ExtensionOffer,
    HandshakeError,
    HandshakeRejected,
    HandshakeRequest,
    HandshakeResponse,
    Headers,
    HTTPRequest,
    LocalProtocolError,
    Message,
    Opcode,
    RemoteProtocolError,
    ServerConnection,
    ServerExtensionFactory,
    State,
    UpgraderOptions,
    accept_key,
    is_websocket_upgrade,
    parse_close_payload,
    parse_frame,
    same_origin,
    serialize_frame,
    subprotocols,
)
from wsproto_core.frames import RSV2, RSV3

# RFC 6455 §1.3 / §4.2.2: the worked example.
RFC_NONCE = b"the sample nonce"
RFC_KEY = "dGhlIHNhbXBsZSBub25jZQ=="
RFC_ACCEPT = "s3pPLMBiTxaQ9kYGzzhZRbK+xOo="

MASK = b"\x0f\x1e\x2d\x3c"
TRAILING_TEXT = "after the handshake"
CLIENT_FRAME = serialize_frame(Opcode.TEXT, TRAILING_TEXT.encode(), mask_key=MASK)
SERVER_FRAME = serialize_frame(Opcode.TEXT, TRAILING_TEXT.encode())

MODES = ["whole", "bytewise", "trailing"]


@pytest.fixture(params=MODES)
def mode(request: pytest.FixtureRequest) -> str:
    return str(request.param)


def rfc_nonce(n: int) -> bytes:
    # The RFC's nonce as the handshake key; zero masking keys otherwise.
    return RFC_NONCE if n == 16 else bytes(n)


def xor(data: bytes, key: int) -> bytes:
    return bytes(b ^ key for b in data)


# -- a toy extension: XOR every payload byte with a key, flagged with RSV2 --------


class XorExtension(Extension):
    name = "x-test"
    rsv = RSV2

    def __init__(self, key: int) -> None:
        self.key = key

    def decode(
        self, data: bytes, *, rsv: int, fin: bool, text: bool, max_size: int | None
    ) -> bytes:
        assert rsv == RSV2
        return xor(data, self.key)

    def encode(self, data: bytes, *, first: bool, fin: bool) -> tuple[bytes, int]:
        return xor(data, self.key), RSV2


def _key_param(params: tuple[tuple[str, str | None], ...]) -> int:
    # Exactly one parameter, key=<1..255>; anything else is unacceptable.
    if len(params) != 1 or params[0][0] != "key" or params[0][1] is None:
        raise ValueError(f"unexpected parameters {params!r}")
    value = params[0][1]
    if not value.isdigit() or not 1 <= int(value) <= 255:
        raise ValueError(f"bad key {value!r}")
    return int(value)


class XorClientFactory(ClientExtensionFactory):
    name = "x-test"
    rsv = RSV2

    def __init__(self, key: int = 0x5A) -> None:
        self.key = key

    def offer(self) -> ExtensionOffer:
        return ExtensionOffer(self.name, [("key", str(self.key))])

    def accept(self, response: ExtensionOffer) -> Extension:
        return XorExtension(_key_param(response.params))


class XorServerFactory(ServerExtensionFactory):
    name = "x-test"
    rsv = RSV2

    def negotiate(self, offer: ExtensionOffer) -> tuple[ExtensionOffer, Extension] | None:
        try:
            key = _key_param(offer.params)
        except ValueError:
            return None  # decline this offer
        return ExtensionOffer(self.name, [("key", str(key))]), XorExtension(key)


class OtherClientFactory(XorClientFactory):
    name = "x-other"


# -- building and parsing HTTP messages --------------------------------------------


def ws_request(
    *extra: str,
    method: str = "GET",
    target: str = "/chat",
    version: str = "HTTP/1.1",
    host: str | None = "good.example",
    upgrade: str | None = "websocket",
    connection: str | None = "Upgrade",
    key: str | None = RFC_KEY,
    ws_version: str | None = "13",
    body: bytes = b"",
) -> bytes:
    lines = [f"{method} {target} {version}"]
    for name, value in [
        ("Host", host),
        ("Upgrade", upgrade),
        ("Connection", connection),
        ("Sec-WebSocket-Key", key),
        ("Sec-WebSocket-Version", ws_version),
    ]:
        if value is not None:
            lines.append(f"{name}: {value}")
    lines.extend(extra)
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body


def ws_response(
    *extra: str,
    key: str = RFC_KEY,
    accept: str | None = None,
    upgrade: str | None = "websocket",
    connection: str | None = "Upgrade",
) -> bytes:
    lines = ["HTTP/1.1 101 Switching Protocols"]
    for name, value in [
        ("Upgrade", upgrade),
        ("Connection", connection),
        ("Sec-WebSocket-Accept", accept_key(key) if accept is None else accept),
    ]:
        if value is not None:
            lines.append(f"{name}: {value}")
    lines.extend(extra)
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")


def decode_headers(raw: Iterable[tuple[bytes, bytes]]) -> Headers:
    return Headers([(k.decode("latin-1"), v.decode("latin-1")) for k, v in raw])


@dataclass
class ParsedResponse:
    status_code: int
    reason: str
    headers: Headers
    body: bytes


def parse_response(data: bytes) -> ParsedResponse:
    """Parse exactly one HTTP response with h11, as a client would."""
    conn = h11.Connection(h11.CLIENT)
    conn.send(
        h11.Request(
            method="GET",
            target="/",
            headers=[("Host", "x"), ("Upgrade", "websocket"), ("Connection", "Upgrade")],
        )
    )
    conn.send(h11.EndOfMessage())
    conn.receive_data(data)
    head: h11.Response | h11.InformationalResponse | None = None
    body = b""
    while True:
        event = conn.next_event()
        if isinstance(event, h11.InformationalResponse):
            head = event
            if event.status_code == 101:
                assert conn.next_event() is h11.PAUSED
                assert conn.trailing_data == (b"", False), "bytes after the 101 head"
                break
        elif isinstance(event, h11.Response):
            head = event
        elif isinstance(event, h11.Data):
            body += event.data
        elif isinstance(event, h11.EndOfMessage):
            break
        else:
            raise AssertionError(f"incomplete or malformed response: {event!r}")
    assert head is not None
    return ParsedResponse(
        head.status_code, head.reason.decode("latin-1"), decode_headers(head.headers), body
    )


def parse_request(data: bytes) -> tuple[h11.Request, Headers]:
    """Parse exactly one HTTP request (no body) with h11, as a server would."""
    conn = h11.Connection(h11.SERVER)
    conn.receive_data(data)
    request = conn.next_event()
    assert isinstance(request, h11.Request)
    assert isinstance(conn.next_event(), h11.EndOfMessage)
    assert conn.next_event() is h11.PAUSED  # an upgrade request, nothing after it
    assert conn.trailing_data == (b"", False)
    return request, decode_headers(request.headers)


def tokens(value: str) -> list[str]:
    return [t.strip().lower() for t in value.split(",") if t.strip()]


# -- feeding connections -----------------------------------------------------------


def drain(conn: ServerConnection | ClientConnection) -> list[Event]:
    events = []
    while (event := conn.next_event()) is not None:
        events.append(event)
    return events


def feed(conn: ServerConnection | ClientConnection, data: bytes, mode: str) -> list[Event]:
    """Feed ``data`` in ``mode`` and return the events; errors propagate."""
    if mode == "trailing":
        data += CLIENT_FRAME if isinstance(conn, ServerConnection) else SERVER_FRAME
    chunks = [data[i : i + 1] for i in range(len(data))] if mode == "bytewise" else [data]
    events: list[Event] = []
    for chunk in chunks:
        conn.receive_data(chunk)
        events += drain(conn)
    return events


def trailing_events(mode: str) -> list[Event]:
    return [Message(data=TRAILING_TEXT)] if mode == "trailing" else []


def server_request(data: bytes, mode: str, **kwargs: object) -> tuple[ServerConnection, Event]:
    server = ServerConnection(**kwargs)  # type: ignore[arg-type]
    events = feed(server, data, mode)
    assert len(events) == 1, events
    assert server.state is State.CONNECTING
    assert server.handshake_request is events[0]
    return server, events[0]


def server_error(
    data: bytes, mode: str, **kwargs: object
) -> tuple[ServerConnection, HandshakeError, ParsedResponse]:
    """Feed an invalid request; check the failure and return the queued response."""
    server = ServerConnection(**kwargs)  # type: ignore[arg-type]
    with pytest.raises(HandshakeError) as info:
        feed(server, data, mode)
    assert server.state is State.CLOSED
    assert server.close_expected()
    response = parse_response(server.data_to_send())
    assert response.status_code == info.value.status_code
    assert response.headers["connection"] == "close"
    assert response.headers.get_all("content-length") == [str(len(response.body))]
    assert info.value.headers is not None
    # Nothing the client sends afterwards gets through.
    server.receive_data(CLIENT_FRAME)
    assert drain(server) == []
    assert server.data_to_send() == b""
    return server, info.value, response


def new_client(**kwargs: object) -> ClientConnection:
    client = ClientConnection("ws://example.com/chat", random_bytes=rfc_nonce, **kwargs)  # type: ignore[arg-type]
    _, headers = parse_request(client.data_to_send())
    assert headers["sec-websocket-key"] == RFC_KEY
    return client


# == server: a valid request ========================================================


def test_valid_request_gives_handshake_request(mode: str) -> None:
    data = ws_request(
        "Origin: http://good.example",
        "Sec-WebSocket-Protocol: chat, superchat",
        'Sec-WebSocket-Extensions: x-test; key=7, x-other; flag; q="1"',
        "X-Custom: Value",
        target="/chat?room=1&x=%20",
    )
    _, event = server_request(data, mode)
    assert isinstance(event, HandshakeRequest)
    assert event.target == "/chat?room=1&x=%20"
    assert event.host == "good.example"
    assert event.origin == "http://good.example"
    assert event.subprotocols == ("chat", "superchat")
    assert event.extensions == (
        ExtensionOffer("x-test", [("key", "7")]),
        ExtensionOffer("x-other", [("flag", None), ("q", "1")]),
    )
    assert event.headers["X-CUSTOM"] == "Value"
    assert event.headers["sec-websocket-key"] == RFC_KEY
    assert len(event.headers) == 9


def test_accept_sends_101_and_opens(mode: str) -> None:
    server, _ = server_request(ws_request(), mode)
    assert not server.close_expected()
    event = server.accept()
    assert server.state is State.OPEN
    assert not server.close_expected()
    raw = server.data_to_send()
    assert raw.startswith(b"HTTP/1.1 101 ")
    response = parse_response(raw)
    assert response.status_code == 101
    assert response.headers.get_all("sec-websocket-accept") == [RFC_ACCEPT]
    assert tokens(response.headers["upgrade"]) == ["websocket"]
    assert "upgrade" in tokens(response.headers["connection"])
    assert "sec-websocket-protocol" not in response.headers
    assert "sec-websocket-extensions" not in response.headers
    assert "content-length" not in response.headers
    assert response.body == b""
    assert event == HandshakeResponse(headers=response.headers, subprotocol=None, extensions=())
    assert server.subprotocol is None
    assert server.extensions == ()
    # The frame that followed the request in the same read is not lost.
    assert drain(server) == trailing_events(mode)


def test_frames_arriving_before_accept_are_kept(mode: str) -> None:
    server, _ = server_request(ws_request(), mode)
    # More frames arrive, one byte at a time, before the program accepts.
    extra = serialize_frame(Opcode.BINARY, b"\x00\x01", mask_key=MASK)
    for i in range(len(extra)):
        server.receive_data(extra[i : i + 1])
        assert server.next_event() is None
    server.accept()
    assert drain(server) == [*trailing_events(mode), Message(data=b"\x00\x01")]


def test_accept_works_for_every_valid_key() -> None:
    key = base64.b64encode(bytes(range(16))).decode()
    server, _ = server_request(ws_request(key=key), "whole")
    server.accept()
    response = parse_response(server.data_to_send())
    assert response.headers["sec-websocket-accept"] == accept_key(key)


def test_header_tokens_are_case_insensitive(mode: str) -> None:
    data = ws_request(upgrade="WebSocket", connection="keep-alive, UPGRADE")
    server, event = server_request(data, mode)
    assert isinstance(event, HandshakeRequest)
    server.accept()
    assert server.state is State.OPEN


def test_accept_extra_headers_are_sent(mode: str) -> None:
    server, _ = server_request(ws_request(), mode)
    event = server.accept(extra_headers=[("Set-Cookie", "a=1"), ("Set-Cookie", "b=2")])
    response = parse_response(server.data_to_send())
    assert response.headers.get_all("set-cookie") == ["a=1", "b=2"]
    assert event.headers.get_all("Set-Cookie") == ["a=1", "b=2"]
    assert drain(server) == trailing_events(mode)


@pytest.mark.parametrize(
    "name",
    [
        "Sec-WebSocket-Accept",
        "sec-websocket-accept",
        "Upgrade",
        "Connection",
        "Sec-WebSocket-Protocol",
        "Sec-WebSocket-Extensions",
    ],
)
def test_accept_refuses_extra_headers_it_owns(name: str) -> None:
    server, _ = server_request(ws_request(), "whole")
    with pytest.raises(LocalProtocolError):
        server.accept(extra_headers={name: "x"})
    assert server.state is State.CONNECTING
    assert server.data_to_send() == b""
    server.accept()  # still usable
    assert server.state is State.OPEN


@pytest.mark.parametrize(
    "header",
    [("X-Evil", "a\r\nInjected: yes"), ("X-Evil", "a\nb"), ("X-Evil\r\nInjected", "yes")],
    ids=["crlf-value", "lf-value", "crlf-name"],
)
def test_accept_refuses_header_injection(header: tuple[str, str]) -> None:
    server, _ = server_request(ws_request(), "whole")
    with pytest.raises(LocalProtocolError):
        server.accept(extra_headers=[header])
    assert server.state is State.CONNECTING
    assert server.data_to_send() == b""
    server.accept()  # "The connection stays usable" (STYLE.md)
    assert parse_response(server.data_to_send()).status_code == 101


def test_reject_refuses_header_injection() -> None:
    server, _ = server_request(ws_request(), "whole")
    with pytest.raises(LocalProtocolError):
        server.reject(403, [("X-Evil", "a\r\nInjected: yes")])
    assert server.state is State.CONNECTING


# == server: subprotocols ============================================================


def test_subprotocol_follows_server_preference(mode: str) -> None:
    data = ws_request("Sec-WebSocket-Protocol: a, b")
    server, _ = server_request(data, mode, subprotocols=["b", "a"])
    event = server.accept()
    assert event.subprotocol == "b"
    assert server.subprotocol == "b"
    response = parse_response(server.data_to_send())
    assert response.headers.get_all("sec-websocket-protocol") == ["b"]
    assert drain(server) == trailing_events(mode)


def test_no_common_subprotocol_sends_no_header(mode: str) -> None:
    data = ws_request("Sec-WebSocket-Protocol: a, b")
    server, _ = server_request(data, mode, subprotocols=["c"])
    event = server.accept()
    assert event.subprotocol is None
    assert server.subprotocol is None
    assert "sec-websocket-protocol" not in parse_response(server.data_to_send()).headers


def test_explicit_subprotocol_must_have_been_offered() -> None:
    data = ws_request("Sec-WebSocket-Protocol: a, b")
    server, _ = server_request(data, "whole", subprotocols=["b"])
    with pytest.raises(LocalProtocolError):
        server.accept(subprotocol="c")
    assert server.state is State.CONNECTING
    assert server.data_to_send() == b""
    # An explicit choice the client offered overrides the server's preference.
    assert server.accept(subprotocol="a").subprotocol == "a"
    assert parse_response(server.data_to_send()).headers["sec-websocket-protocol"] == "a"


def test_explicit_subprotocol_when_none_offered() -> None:
    server, _ = server_request(ws_request(), "whole", subprotocols=["a"])
    with pytest.raises(LocalProtocolError):
        server.accept(subprotocol="a")


def test_subprotocols_across_header_lines(mode: str) -> None:
    data = ws_request(
        "Sec-WebSocket-Protocol: a", "Sec-WebSocket-Protocol: b,, c", "Sec-WebSocket-Protocol: "
    )
    server, event = server_request(data, mode, subprotocols=["c"])
    assert isinstance(event, HandshakeRequest)
    assert event.subprotocols == ("a", "b", "c")
    assert server.accept().subprotocol == "c"


def test_malformed_subprotocol_header_is_400(mode: str) -> None:
    data = ws_request("Sec-WebSocket-Protocol: a b")
    _, error, _ = server_error(data, mode)
    assert error.status_code == 400


# == server: extensions ================================================================


def test_extension_accepted(mode: str) -> None:
    data = ws_request("Sec-WebSocket-Extensions: x-test; key=7")
    server, _ = server_request(data, mode, extensions=[XorServerFactory()])
    event = server.accept()
    assert event.extensions == (ExtensionOffer("x-test", [("key", "7")]),)
    response = parse_response(server.data_to_send())
    assert response.headers.get_all("sec-websocket-extensions") == ["x-test; key=7"]
    [extension] = server.extensions
    assert isinstance(extension, XorExtension)
    assert extension.key == 7
    assert drain(server) == trailing_events(mode)


def test_extension_declined(mode: str) -> None:
    data = ws_request("Sec-WebSocket-Extensions: x-test; key=0")
    server, _ = server_request(data, mode, extensions=[XorServerFactory()])
    event = server.accept()
    assert server.state is State.OPEN
    assert event.extensions == ()
    assert server.extensions == ()
    assert "sec-websocket-extensions" not in parse_response(server.data_to_send()).headers
    assert drain(server) == trailing_events(mode)


def test_first_acceptable_offer_wins(mode: str) -> None:
    data = ws_request(
        "Sec-WebSocket-Extensions: x-unknown, x-test; key=0, x-test; key=9",
        "Sec-WebSocket-Extensions: x-test; key=3",
    )
    server, _ = server_request(data, mode, extensions=[XorServerFactory()])
    event = server.accept()
    assert event.extensions == (ExtensionOffer("x-test", [("key", "9")]),)
    response = parse_response(server.data_to_send())
    assert response.headers.get_all("sec-websocket-extensions") == ["x-test; key=9"]
    assert [ext.key for ext in server.extensions] == [9]  # type: ignore[attr-defined]


class ZeroRsvServerFactory(XorServerFactory):
    # An extension that claims no RSV bit, so only its name stops a second accept.
    name = "x-zero"
    rsv = 0

    def negotiate(self, offer: ExtensionOffer) -> tuple[ExtensionOffer, Extension] | None:
        result = super().negotiate(offer)
        if result is not None:
            result[1].name = self.name
            result[1].rsv = 0
            return ExtensionOffer(self.name, result[0].params), result[1]
        return None


class Rsv3ServerFactory(XorServerFactory):
    rsv = RSV3


def test_each_extension_is_accepted_once(mode: str) -> None:
    data = ws_request("Sec-WebSocket-Extensions: x-zero; key=1, x-zero; key=2, x-test; key=3")
    server, _ = server_request(
        data, mode, extensions=[ZeroRsvServerFactory(), XorServerFactory(), Rsv3ServerFactory()]
    )
    event = server.accept()
    assert event.extensions == (
        ExtensionOffer("x-zero", [("key", "1")]),
        ExtensionOffer("x-test", [("key", "3")]),
    )
    response = parse_response(server.data_to_send())
    assert response.headers.get_all("sec-websocket-extensions") == ["x-zero; key=1, x-test; key=3"]
    assert [ext.key for ext in server.extensions] == [1, 3]  # type: ignore[attr-defined]


def test_extension_unknown_to_server_is_ignored() -> None:
    data = ws_request("Sec-WebSocket-Extensions: x-test; key=7")
    server, _ = server_request(data, "whole")
    assert server.accept().extensions == ()
    assert "sec-websocket-extensions" not in parse_response(server.data_to_send()).headers


def test_trailing_frame_is_decoded_by_the_negotiated_extension(mode: str) -> None:
    data = ws_request("Sec-WebSocket-Extensions: x-test; key=7")
    frame = serialize_frame(Opcode.BINARY, xor(b"secret", 7), rsv=RSV2, mask_key=MASK)
    server = ServerConnection(extensions=[XorServerFactory()])
    events = feed(server, data + frame, "bytewise" if mode == "bytewise" else "whole")
    assert len(events) == 1
    server.accept()
    assert drain(server) == [Message(data=b"secret")]


@pytest.mark.parametrize(
    "value", ["x-test;", "x-test; key=", "x-test key", ";key=1", 'x-test; key="a b"', "x-t\u00e9st"]
)
def test_malformed_extension_header_is_400(mode: str, value: str) -> None:
    data = ws_request(f"Sec-WebSocket-Extensions: {value}")
    _, error, _ = server_error(data, mode, extensions=[XorServerFactory()])
    assert error.status_code == 400


# == server: invalid handshakes ========================================================

PADDING = tuple(f"X-Pad-{i}: {'a' * 100}" for i in range(200))  # ~22 KiB of headers

INVALID_REQUESTS = [
    pytest.param(ws_request(key=None), 400, {}, id="missing-key"),
    pytest.param(ws_request(key="dG9vIHNob3J0"), 400, {}, id="key-too-short"),
    pytest.param(ws_request(key=base64.b64encode(bytes(17)).decode()), 400, {}, id="key-17-bytes"),
    pytest.param(ws_request(key="not base64 at all!!!!!!="), 400, {}, id="key-not-base64"),
    pytest.param(ws_request(key="dGhlIHNhbXBsZSBub25jZQ"), 400, {}, id="key-unpadded"),
    pytest.param(ws_request(key="dGhlIHNh!bXBsZSBub25jZQ=="), 400, {}, id="key-with-junk"),
    pytest.param(ws_request(f"Sec-WebSocket-Key: {RFC_KEY}"), 400, {}, id="duplicate-keys"),
    pytest.param(
        ws_request("Sec-WebSocket-Key: AAAAAAAAAAAAAAAAAAAAAA=="), 400, {}, id="two-different-keys"
    ),
    pytest.param(
        ws_request(ws_version="8"),
        426,
        {"sec-websocket-version": "13"},
        id="version-8",
    ),
    pytest.param(
        ws_request(ws_version=None),
        400,
        {"sec-websocket-version": "13"},
        id="missing-version",
    ),
    pytest.param(ws_request(method="POST"), 405, {"allow": "GET"}, id="post"),
    pytest.param(ws_request(version="HTTP/1.0"), 400, {}, id="http-1.0"),
    pytest.param(ws_request(connection=None), 400, {}, id="missing-connection"),
    pytest.param(ws_request(connection="keep-alive"), 400, {}, id="connection-without-upgrade"),
    pytest.param(ws_request(connection="up grade"), 400, {}, id="malformed-connection"),
    pytest.param(ws_request(host=None), 400, {}, id="missing-host"),
    pytest.param(b"GARBAGE\r\n\r\n", 400, {}, id="garbage-request-line"),
    pytest.param(b"GET / HTTP/1.1\r\nno colon here\r\n\r\n", 400, {}, id="garbage-header"),
    pytest.param(ws_request(*PADDING), 431, {}, id="header-flood"),
    pytest.param(ws_request("Content-Length: 5", body=b"hello"), 400, {}, id="body-content-length"),
    pytest.param(
        ws_request("Transfer-Encoding: chunked", body=b"5\r\nhello\r\n0\r\n\r\n"),
        400,
        {},
        id="body-chunked",
    ),
    pytest.param(ws_request("Origin: http://evil.example"), 403, {}, id="foreign-origin"),
]


@pytest.mark.parametrize(("data", "status", "headers"), INVALID_REQUESTS)
def test_invalid_handshake_is_refused(
    mode: str, data: bytes, status: int, headers: dict[str, str]
) -> None:
    _, error, response = server_error(data, mode)
    assert error.status_code == status
    assert response.status_code == status
    for name, value in headers.items():
        assert response.headers.get_all(name) == [value]
        assert error.headers is not None
        assert error.headers.get_all(name) == [value]


def test_small_request_passes_a_small_limit(mode: str) -> None:
    data = ws_request()
    server, _ = server_request(data, mode, max_handshake_size=len(data) + 16)
    server.accept()
    assert server.state is State.OPEN


def test_request_over_a_small_limit_is_431(mode: str) -> None:
    data = ws_request(*PADDING[:3])
    _, error, _ = server_error(data, mode, max_handshake_size=len(data) - 100)
    assert error.status_code == 431


def test_large_plain_request_body_is_413(mode: str) -> None:
    body = b"x" * 300
    data = b"POST /upload HTTP/1.1\r\nHost: good.example\r\nContent-Length: 300\r\n\r\n" + body
    _, error, _ = server_error(data, mode, max_handshake_size=256)
    assert error.status_code == 413


# == server: origin =====================================================================


@pytest.mark.parametrize(
    ("origin", "host"),
    [
        (None, "good.example"),
        ("http://good.example", "good.example"),
        ("https://good.example", "good.example"),
        ("http://GOOD.Example", "good.example"),
        ("http://good.example", "GOOD.EXAMPLE"),
        ("http://good.example:8080", "good.example:8080"),
    ],
)
def test_same_origin_passes(mode: str, origin: str | None, host: str) -> None:
    extra = () if origin is None else (f"Origin: {origin}",)
    server, event = server_request(ws_request(*extra, host=host), mode)
    assert isinstance(event, HandshakeRequest)
    assert event.origin == origin
    server.accept()
    assert drain(server) == trailing_events(mode)


@pytest.mark.parametrize(
    ("origin", "host"),
    [
        ("http://evil.example", "good.example"),
        ("http://good.example:8080", "good.example"),
        ("http://good.example", "good.example:8080"),
        ("http://good.example.evil.example", "good.example"),
        ("null", "good.example"),
        ("http://[::1", "good.example"),
    ],
)
def test_foreign_origin_is_403(mode: str, origin: str, host: str) -> None:
    _, error, response = server_error(ws_request(f"Origin: {origin}", host=host), mode)
    assert error.status_code == 403
    assert response.status_code == 403


def test_check_origin_none_accepts_everything(mode: str) -> None:
    data = ws_request("Origin: http://evil.example")
    server, event = server_request(data, mode, check_origin=None)
    assert isinstance(event, HandshakeRequest)
    assert event.origin == "http://evil.example"
    server.accept()
    assert drain(server) == trailing_events(mode)


def test_custom_check_origin(mode: str) -> None:
    seen: list[HandshakeRequest] = []

    def check(request: HandshakeRequest) -> bool:
        seen.append(request)
        return request.origin == "https://app.example"

    server, event = server_request(
        ws_request("Origin: https://app.example"), mode, check_origin=check
    )
    assert seen == [event]
    server.accept()
    assert server.state is State.OPEN

    # Same origin by the default rule, but the custom policy says no.
    _, error, _ = server_error(ws_request("Origin: http://good.example"), mode, check_origin=check)
    assert error.status_code == 403
    assert seen[-1].origin == "http://good.example"


# == server: plain HTTP and the reject/accept state machine ===========================


def test_plain_get_gives_http_request(mode: str) -> None:
    data = b"GET /health?full=1 HTTP/1.1\r\nHost: good.example\r\nAccept: */*\r\n\r\n"
    server, event = server_request(data, mode)
    assert event == HTTPRequest(
        method="GET",
        target="/health?full=1",
        headers=Headers([("Host", "good.example"), ("Accept", "*/*")]),
        body=b"",
    )
    server.reject()
    response = parse_response(server.data_to_send())
    assert response.status_code == 426
    assert response.headers["upgrade"] == "websocket"
    assert response.headers["sec-websocket-version"] == "13"
    assert response.headers["content-type"] == "text/plain; charset=utf-8"
    assert response.body == (
        b"426 Upgrade Required: this is a WebSocket endpoint: connect with a WebSocket client\n"
    )
    assert response.headers["connection"] == "close"
    assert server.state is State.CLOSED
    assert server.close_expected()
    # Whatever followed a plain HTTP request is never read as frames.
    assert drain(server) == []


def test_reject_426_keeps_a_custom_upgrade() -> None:
    server, _ = server_request(b"GET / HTTP/1.1\r\nHost: good.example\r\n\r\n", "whole")
    server.reject(426, {"Upgrade": "TLS/1.2"})
    response = parse_response(server.data_to_send())
    assert response.status_code == 426
    assert response.headers.get_all("upgrade") == ["TLS/1.2"]


def test_other_upgrade_is_plain_http(mode: str) -> None:
    data = b"GET / HTTP/1.1\r\nHost: good.example\r\nUpgrade: h2c\r\nConnection: Upgrade\r\n\r\n"
    _, event = server_request(data, mode)
    assert isinstance(event, HTTPRequest)


@pytest.mark.parametrize(
    ("framing", "body"),
    [
        ("Content-Length: 11", b"hello world"),
        ("Transfer-Encoding: chunked", b"5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n"),
    ],
)
def test_plain_post_body_is_delivered(mode: str, framing: str, body: bytes) -> None:
    data = f"POST /form HTTP/1.1\r\nHost: good.example\r\n{framing}\r\n\r\n".encode() + body
    _, event = server_request(data, mode)
    assert isinstance(event, HTTPRequest)
    assert event.method == "POST"
    assert event.target == "/form"
    assert event.body == b"hello world"


def test_reject_with_status_headers_and_body(mode: str) -> None:
    data = b"GET / HTTP/1.1\r\nHost: good.example\r\n\r\n"
    server, _ = server_request(data, mode)
    server.reject(200, {"Content-Type": "text/plain", "Content-Length": "999"}, b"healthy\n")
    response = parse_response(server.data_to_send())
    assert response.status_code == 200
    assert response.headers["content-type"] == "text/plain"
    assert response.headers.get_all("content-length") == ["8"]
    assert response.body == b"healthy\n"
    assert server.state is State.CLOSED
    assert server.close_expected()


def test_reject_handshake_request_defaults_to_403(mode: str) -> None:
    server, _ = server_request(ws_request(), mode)
    server.reject()
    response = parse_response(server.data_to_send())
    assert response.status_code == 403
    assert server.state is State.CLOSED
    assert server.close_expected()
    assert drain(server) == []  # frames after a refused handshake are discarded


def test_reject_handshake_request_with_redirect() -> None:
    server, _ = server_request(ws_request(), "whole")
    server.reject(302, [("Location", "ws://other.example/")])
    response = parse_response(server.data_to_send())
    assert response.status_code == 302
    assert response.headers["location"] == "ws://other.example/"


def test_reject_twice_is_an_error() -> None:
    server, _ = server_request(ws_request(), "whole")
    server.reject()
    server.data_to_send()
    with pytest.raises(LocalProtocolError):
        server.reject()
    assert server.data_to_send() == b""


def test_accept_after_reject_is_an_error() -> None:
    server, _ = server_request(ws_request(), "whole")
    server.reject()
    server.data_to_send()
    with pytest.raises(LocalProtocolError):
        server.accept()
    assert server.state is State.CLOSED
    assert server.data_to_send() == b""


def test_reject_after_accept_is_an_error() -> None:
    server, _ = server_request(ws_request(), "whole")
    server.accept()
    server.data_to_send()
    with pytest.raises(LocalProtocolError):
        server.reject()
    with pytest.raises(LocalProtocolError):
        server.accept()
    assert server.state is State.OPEN
    assert server.data_to_send() == b""


def test_accept_on_http_request_is_an_error() -> None:
    server, _ = server_request(b"GET / HTTP/1.1\r\nHost: good.example\r\n\r\n", "whole")
    with pytest.raises(LocalProtocolError):
        server.accept()
    assert server.state is State.CONNECTING
    assert server.data_to_send() == b""
    server.reject(404)  # still answerable
    assert parse_response(server.data_to_send()).status_code == 404


def test_accept_or_reject_before_any_request_is_an_error() -> None:
    server = ServerConnection()
    server.receive_data(ws_request()[:20])
    assert server.next_event() is None
    with pytest.raises(LocalProtocolError):
        server.accept()
    with pytest.raises(LocalProtocolError):
        server.reject()
    assert server.state is State.CONNECTING
    assert server.data_to_send() == b""


@pytest.mark.parametrize("status", [100, 101, 199, 600])
def test_reject_needs_a_final_status(status: int) -> None:
    server, _ = server_request(ws_request(), "whole")
    with pytest.raises(LocalProtocolError):
        server.reject(status)
    assert server.state is State.CONNECTING
    assert server.data_to_send() == b""
    server.reject(400)
    assert parse_response(server.data_to_send()).status_code == 400


@pytest.mark.parametrize("partial", [b"", ws_request()[:-2], b"GET /chat HTTP/1.1\r\nHo"])
def test_eof_before_a_complete_request(partial: bytes) -> None:
    server = ServerConnection()
    if partial:
        server.receive_data(partial)
    assert server.next_event() is None
    server.receive_eof()
    with pytest.raises(HandshakeError):
        server.next_event()
    assert server.state is State.CLOSED
    assert server.close_expected()
    assert server.next_event() is None


def test_empty_read_during_the_handshake_is_not_eof() -> None:
    # receive_eof() is the end of stream; b"" is just an empty read, as it is
    # once the connection is open.
    server = ServerConnection()
    server.receive_data(b"")
    assert server.next_event() is None
    server.receive_data(ws_request())
    assert isinstance(server.next_event(), HandshakeRequest)
    server.receive_data(b"")
    server.accept()
    assert server.state is State.OPEN

    client = new_client()
    client.receive_data(b"")
    assert client.next_event() is None
    client.receive_data(ws_response())
    assert isinstance(client.next_event(), HandshakeResponse)


# == client: the request ===============================================================


def test_client_request() -> None:
    client = ClientConnection("ws://example.com:8080/chat?room=1", random_bytes=rfc_nonce)
    assert client.state is State.CONNECTING
    request, headers = parse_request(client.data_to_send())
    assert request.method == b"GET"
    assert request.target == b"/chat?room=1"
    assert request.http_version == b"1.1"
    assert headers.get_all("host") == ["example.com:8080"]
    assert tokens(headers["upgrade"]) == ["websocket"]
    assert "upgrade" in tokens(headers["connection"])
    assert headers.get_all("sec-websocket-key") == [RFC_KEY]
    assert headers.get_all("sec-websocket-version") == ["13"]
    for absent in (
        "origin",
        "sec-websocket-protocol",
        "sec-websocket-extensions",
        "cookie",
        "authorization",
    ):
        assert absent not in headers
    assert client.data_to_send() == b""


@pytest.mark.parametrize(
    ("uri", "host", "target"),
    [
        ("ws://example.com", "example.com", "/"),
        ("ws://example.com:80/", "example.com", "/"),
        ("wss://example.com:443/a/b", "example.com", "/a/b"),
        ("wss://example.com:80/", "example.com:80", "/"),
        ("ws://example.com:443/", "example.com:443", "/"),
        ("ws://Example.COM:9000/?q", "example.com:9000", "/?q"),
        ("ws://127.0.0.1:9000/x", "127.0.0.1:9000", "/x"),
        ("ws://[::1]/", "[::1]", "/"),
        ("wss://[2001:db8::1]:8443/x?y=1", "[2001:db8::1]:8443", "/x?y=1"),
        ("http://example.com/x", "example.com", "/x"),
    ],
)
def test_client_host_and_target(uri: str, host: str, target: str) -> None:
    request, headers = parse_request(ClientConnection(uri).data_to_send())
    assert headers.get_all("host") == [host]
    assert request.target == target.encode()


def test_client_key_is_fresh_and_16_random_bytes() -> None:
    keys = set()
    for _ in range(3):
        _, headers = parse_request(ClientConnection("ws://example.com/").data_to_send())
        key = headers["sec-websocket-key"]
        assert len(base64.b64decode(key, validate=True)) == 16
        keys.add(key)
    assert len(keys) == 3

    drawn: list[int] = []

    def source(n: int) -> bytes:
        drawn.append(n)
        return bytes(range(n))

    client = ClientConnection("ws://example.com/", random_bytes=source)
    _, headers = parse_request(client.data_to_send())
    assert drawn[0] == 16
    assert headers["sec-websocket-key"] == base64.b64encode(bytes(range(16))).decode()


def test_client_request_options() -> None:
    client = ClientConnection(
        "ws://alice:s%3Acr%C3%A9t@example.com/chat",
        origin="https://app.example",
        subprotocols=["chat.v2", "chat.v1"],
        extensions=[XorClientFactory(7), OtherClientFactory(9)],
        cookies={"session": "abc", "theme": "dark"},
        extra_headers=[("X-Trace", "1"), ("X-Trace", "2")],
    )
    _, headers = parse_request(client.data_to_send())
    assert headers.get_all("origin") == ["https://app.example"]
    assert headers.get_all("sec-websocket-protocol") == ["chat.v2, chat.v1"]
    assert headers.get_all("sec-websocket-extensions") == ["x-test; key=7, x-other; key=9"]
    assert headers.get_all("cookie") == ["session=abc; theme=dark"]
    assert headers.get_all("x-trace") == ["1", "2"]
    [authorization] = headers.get_all("authorization")
    scheme, credentials = authorization.split(" ")
    assert scheme == "Basic"
    assert base64.b64decode(credentials) == "alice:s:crét".encode()


def test_explicit_authorization_wins_over_user_info() -> None:
    client = ClientConnection(
        "ws://alice:secret@example.com/", extra_headers={"authorization": "Bearer t0ken"}
    )
    _, headers = parse_request(client.data_to_send())
    assert headers.get_all("authorization") == ["Bearer t0ken"]


def test_user_without_password() -> None:
    _, headers = parse_request(ClientConnection("ws://bob@example.com/").data_to_send())
    assert headers["authorization"] == "Basic " + base64.b64encode(b"bob:").decode()


@pytest.mark.parametrize(
    "name",
    [
        "Host",
        "host",
        "Upgrade",
        "Connection",
        "Sec-WebSocket-Key",
        "Sec-WebSocket-Version",
        "Sec-WebSocket-Protocol",
        "SEC-WEBSOCKET-EXTENSIONS",
    ],
)
def test_client_refuses_extra_headers_it_owns(name: str) -> None:
    with pytest.raises(LocalProtocolError):
        ClientConnection("ws://example.com/", extra_headers=[(name, "x")])


@pytest.mark.parametrize("protocol", ["", "a b", "a,b", "a;b", "a/b", "ch\u00e4t", '"a"'])
def test_client_refuses_invalid_subprotocol(protocol: str) -> None:
    with pytest.raises(LocalProtocolError):
        ClientConnection("ws://example.com/", subprotocols=["ok", protocol])


def test_client_refuses_duplicate_subprotocols() -> None:
    # "The elements that comprise this value [...] MUST all be unique
    # strings." -- RFC 6455 §4.1
    with pytest.raises(LocalProtocolError):
        ClientConnection("ws://example.com/", subprotocols=["chat", "chat"])


def test_client_refuses_duplicate_extension_factories() -> None:
    with pytest.raises(LocalProtocolError):
        ClientConnection("ws://example.com/", extensions=[XorClientFactory(), XorClientFactory()])


@pytest.mark.parametrize(
    "kwargs",
    [
        {"extra_headers": [("X-Evil", "a\r\nInjected: yes")]},
        {"extra_headers": [("X-Evil\r\nInjected", "yes")]},
        {"extra_headers": [("X-Latin", "caf\u00e9")]},
        {"origin": "http://a.example\r\nInjected: yes"},
        {"cookies": {"a": "1\r\nInjected: yes"}},
    ],
    ids=["crlf-value", "crlf-name", "non-ascii", "origin", "cookie"],
)
def test_client_refuses_invalid_header_values(kwargs: dict[str, object]) -> None:
    with pytest.raises(LocalProtocolError):
        ClientConnection("ws://example.com/", **kwargs)  # type: ignore[arg-type]


# == client: the response ==============================================================


def test_client_accepts_valid_101(mode: str) -> None:
    client = new_client(subprotocols=["chat", "superchat"], extensions=[XorClientFactory()])
    data = ws_response(
        "Sec-WebSocket-Protocol: superchat", "Sec-WebSocket-Extensions: x-test; key=90"
    )
    events = feed(client, data, mode)
    event = events[0]
    assert isinstance(event, HandshakeResponse)
    assert event.status_code == 101
    assert event.subprotocol == "superchat"
    assert event.extensions == (ExtensionOffer("x-test", [("key", "90")]),)
    assert event.headers["sec-websocket-accept"] == RFC_ACCEPT
    assert client.handshake_response is event
    assert client.subprotocol == "superchat"
    [extension] = client.extensions
    assert isinstance(extension, XorExtension)
    assert extension.key == 90
    assert client.state is State.OPEN
    assert not client.close_expected()
    assert events[1:] == trailing_events(mode)
    assert client.data_to_send() == b""


def test_client_accepts_plain_101(mode: str) -> None:
    client = new_client()
    events = feed(client, ws_response(upgrade="WebSocket", connection="keep-alive, upgrade"), mode)
    event = events[0]
    assert isinstance(event, HandshakeResponse)
    assert event == HandshakeResponse(headers=event.headers, subprotocol=None, extensions=())
    assert client.subprotocol is None
    assert client.extensions == ()
    assert events[1:] == trailing_events(mode)


def test_client_decodes_trailing_frame_with_extension(mode: str) -> None:
    client = new_client(extensions=[XorClientFactory()])
    frame = serialize_frame(Opcode.BINARY, xor(b"secret", 90), rsv=RSV2)
    data = ws_response("Sec-WebSocket-Extensions: x-test; key=90") + frame
    events = feed(client, data, "bytewise" if mode == "bytewise" else "whole")
    assert isinstance(events[0], HandshakeResponse)
    assert events[1:] == [Message(data=b"secret")]


def test_client_accepts_the_rfc_example() -> None:
    client = new_client()
    client.receive_data(ws_response(accept=RFC_ACCEPT))
    assert isinstance(client.next_event(), HandshakeResponse)


OFFERING = {"subprotocols": ["chat", "superchat"], "extensions": [XorClientFactory()]}

INVALID_RESPONSES = [
    pytest.param(ws_response(accept=accept_key("AAAAAAAAAAAAAAAAAAAAAA==")), OFFERING, id="accept"),
    pytest.param(ws_response(accept=RFC_KEY), OFFERING, id="accept-is-key"),
    pytest.param(ws_response(accept=None, key="x"), OFFERING, id="accept-other-key"),
    pytest.param(ws_response(f"Sec-WebSocket-Accept: {RFC_ACCEPT}"), OFFERING, id="two-accepts"),
    pytest.param(
        b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n",
        OFFERING,
        id="missing-accept",
    ),
    pytest.param(ws_response(upgrade=None), OFFERING, id="missing-upgrade"),
    pytest.param(ws_response(upgrade="h2c"), OFFERING, id="upgrade-h2c"),
    pytest.param(ws_response(upgrade="websocket, h2c"), OFFERING, id="upgrade-two-tokens"),
    pytest.param(ws_response(upgrade="web socket"), OFFERING, id="upgrade-malformed"),
    pytest.param(ws_response(connection=None), OFFERING, id="missing-connection"),
    pytest.param(ws_response(connection="keep-alive"), OFFERING, id="connection-no-upgrade"),
    pytest.param(
        ws_response("Sec-WebSocket-Protocol: other"), OFFERING, id="subprotocol-not-offered"
    ),
    pytest.param(
        ws_response("Sec-WebSocket-Protocol: chat, superchat"), OFFERING, id="two-subprotocols"
    ),
    pytest.param(
        ws_response("Sec-WebSocket-Protocol: chat", "Sec-WebSocket-Protocol: chat"),
        OFFERING,
        id="subprotocol-twice",
    ),
    pytest.param(ws_response("Sec-WebSocket-Protocol: chat"), {}, id="subprotocol-none-offered"),
    pytest.param(
        ws_response("Sec-WebSocket-Extensions: x-other; key=1"),
        OFFERING,
        id="extension-not-offered",
    ),
    pytest.param(
        ws_response("Sec-WebSocket-Extensions: x-test; key=1"), {}, id="extension-none-offered"
    ),
    pytest.param(
        ws_response("Sec-WebSocket-Extensions: x-test; bogus"), OFFERING, id="extension-refused"
    ),
    pytest.param(
        ws_response("Sec-WebSocket-Extensions: x-test; key=1, x-test; key=2"),
        OFFERING,
        id="extension-twice",
    ),
    pytest.param(
        ws_response("Sec-WebSocket-Extensions: x-test;"), OFFERING, id="extension-malformed"
    ),
    pytest.param(ws_response("Sec-WebSocket-Protocol: a b"), OFFERING, id="subprotocol-malformed"),
]


@pytest.mark.parametrize(("data", "kwargs"), INVALID_RESPONSES)
def test_client_fails_invalid_101(mode: str, data: bytes, kwargs: dict[str, object]) -> None:
    client = new_client(**kwargs)
    with pytest.raises(HandshakeError) as info:
        feed(client, data, mode)
    assert info.value.status_code == 101
    assert info.value.headers is not None
    assert client.state is State.CLOSED
    assert client.close_expected()
    assert client.handshake_response is None
    assert client.data_to_send() == b""
    assert client.next_event() is None


class ZeroRsvExtension(XorExtension):
    name = "x-zero"
    rsv = 0


class ZeroRsvClientFactory(XorClientFactory):
    name = "x-zero"
    rsv = 0

    def accept(self, response: ExtensionOffer) -> Extension:
        return ZeroRsvExtension(_key_param(response.params))


def test_client_fails_an_extension_accepted_twice() -> None:
    # No RSV bit clash to catch it: the name alone must.
    client = new_client(extensions=[ZeroRsvClientFactory()])
    client.receive_data(ws_response("Sec-WebSocket-Extensions: x-zero; key=1, x-zero; key=2"))
    with pytest.raises(HandshakeError):
        client.next_event()
    assert client.state is State.CLOSED


def test_client_extension_rsv_clash_fails() -> None:
    class Clashing(XorClientFactory):
        name = "x-clash"

    client = new_client(extensions=[XorClientFactory(), Clashing()])
    client.receive_data(ws_response("Sec-WebSocket-Extensions: x-test; key=1, x-clash; key=2"))
    with pytest.raises(HandshakeError):
        client.next_event()
    assert client.state is State.CLOSED


def test_client_rejected_403(mode: str) -> None:
    client = new_client()
    data = b"HTTP/1.1 403 Forbidden\r\nContent-Type: text/plain\r\nContent-Length: 7\r\n\r\ngo away"
    events = feed(client, data, mode)
    assert events == [
        HandshakeRejected(
            status_code=403,
            reason="Forbidden",
            headers=Headers([("Content-Type", "text/plain"), ("Content-Length", "7")]),
            body=b"go away",
        )
    ]
    assert client.state is State.CLOSED
    assert client.close_expected()
    assert client.handshake_response is None
    assert client.data_to_send() == b""


def test_client_rejected_redirect(mode: str) -> None:
    client = new_client()
    data = b"HTTP/1.1 302 Found\r\nLocation: wss://other.example/chat\r\nContent-Length: 0\r\n\r\n"
    [event] = feed(client, data, mode)
    assert isinstance(event, HandshakeRejected)
    assert event.status_code == 302
    assert event.reason == "Found"
    assert event.headers["location"] == "wss://other.example/chat"
    assert event.body == b""


def test_client_rejected_body_is_truncated(mode: str) -> None:
    client = new_client(max_rejected_body_size=10)
    body = bytes(range(100))
    data = b"HTTP/1.1 500 Oops\r\nContent-Length: 100\r\n\r\n" + body
    [event] = feed(client, data, mode)
    assert isinstance(event, HandshakeRejected)
    assert event.status_code == 500
    assert event.body == body[:10]
    assert client.state is State.CLOSED
    assert client.close_expected()


def test_client_rejected_does_not_wait_for_the_rest_of_a_long_body() -> None:
    client = new_client(max_rejected_body_size=10)
    client.receive_data(b"HTTP/1.1 500 Oops\r\nContent-Length: 1000000\r\n\r\n" + bytes(9))
    assert client.next_event() is None
    client.receive_data(b"\x01")
    event = client.next_event()
    assert isinstance(event, HandshakeRejected)
    assert event.body == bytes(9) + b"\x01"
    assert client.state is State.CLOSED


def test_client_rejected_body_at_the_limit(mode: str) -> None:
    client = new_client(max_rejected_body_size=5)
    [event] = feed(client, b"HTTP/1.1 401 Unauthorized\r\nContent-Length: 5\r\n\r\nhello", mode)
    assert isinstance(event, HandshakeRejected)
    assert event.body == b"hello"


def test_client_rejected_chunked_body(mode: str) -> None:
    client = new_client()
    data = (
        b"HTTP/1.1 400 Bad Request\r\nTransfer-Encoding: chunked\r\n\r\n"
        b"5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n"
    )
    [event] = feed(client, data, mode)
    assert isinstance(event, HandshakeRejected)
    assert event.body == b"hello world"


def test_client_rejected_body_until_eof(mode: str) -> None:
    client = new_client()
    assert feed(client, b"HTTP/1.1 200 OK\r\nServer: x\r\n\r\nno length", mode) == []
    assert client.state is State.CONNECTING
    client.receive_eof()
    [event] = drain(client)
    assert isinstance(event, HandshakeRejected)
    assert event.status_code == 200
    # With no Content-Length, everything up to EOF is the body.
    assert event.body == b"no length" + (SERVER_FRAME if mode == "trailing" else b"")
    assert client.state is State.CLOSED
    assert client.close_expected()


def test_client_skips_100_continue(mode: str) -> None:
    client = new_client()
    data = b"HTTP/1.1 100 Continue\r\n\r\n" + ws_response()
    events = feed(client, data, mode)
    assert isinstance(events[0], HandshakeResponse)
    assert events[1:] == trailing_events(mode)
    assert client.state is State.OPEN


def test_client_100_continue_then_rejected(mode: str) -> None:
    client = new_client()
    data = b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n"
    [event] = feed(client, data, mode)
    assert isinstance(event, HandshakeRejected)
    assert event.status_code == 404


@pytest.mark.parametrize("partial", [b"", b"HTTP/1.1 101 Switching", ws_response()[:-2]])
def test_client_eof_before_response(partial: bytes) -> None:
    client = new_client()
    if partial:
        client.receive_data(partial)
    assert client.next_event() is None
    client.receive_eof()
    with pytest.raises(HandshakeError):
        client.next_event()
    assert client.state is State.CLOSED
    assert client.close_expected()


@pytest.mark.parametrize(
    "data",
    [
        pytest.param(b"SSH-2.0-OpenSSH\r\n\r\n", id="garbage"),
        pytest.param(b"HTTP/1.1 abc Nope\r\n\r\n", id="bad-status"),
        pytest.param(ws_response(*PADDING), id="header-flood"),
    ],
)
def test_client_fails_malformed_response(mode: str, data: bytes) -> None:
    client = new_client()
    with pytest.raises(HandshakeError):
        feed(client, data, mode)
    assert client.state is State.CLOSED
    assert client.close_expected()


# == both ends: ConnectionPair =========================================================


def test_pair_negotiates_and_runs_the_extension() -> None:
    client = ClientConnection(
        "ws://localhost/",
        subprotocols=["v2", "v1"],
        extensions=[XorClientFactory(0x5A)],
    )
    server = ServerConnection(subprotocols=["v1", "v2"], extensions=[XorServerFactory()])
    pair = ConnectionPair.open(client, server)
    assert client.state is State.OPEN
    assert server.state is State.OPEN

    assert client.subprotocol == server.subprotocol == "v1"
    assert client.handshake_response is not None
    assert client.handshake_response.subprotocol == "v1"
    assert client.handshake_response.extensions == (ExtensionOffer("x-test", [("key", "90")]),)
    assert isinstance(server.handshake_request, HandshakeRequest)
    assert server.handshake_request.subprotocols == ("v2", "v1")
    assert server.handshake_request.extensions == (ExtensionOffer("x-test", [("key", "90")]),)
    for conn in (client, server):
        [extension] = conn.extensions
        assert isinstance(extension, XorExtension)
        assert extension.key == 0x5A

    # Client to server: one masked frame, RSV2 set, payload transformed.
    start = len(pair.client_to_server)
    client.send_binary(b"hello")
    assert pair.transfer() == ([], [Message(data=b"hello")])
    parsed = parse_frame(pair.client_to_server, start)
    assert parsed is not None
    frame, masked, end = parsed
    assert masked
    assert end == len(pair.client_to_server)
    assert frame.rsv == RSV2
    assert frame.payload == xor(b"hello", 0x5A)

    # Server to client, fragmented: RSV2 on the first frame only.
    start = len(pair.server_to_client)
    server.send_text("h\u00e9", fin=False)
    server.send_text("llo")
    assert pair.transfer() == ([Message(data="h\u00e9llo")], [])
    first = parse_frame(pair.server_to_client, start)
    assert first is not None
    assert first[0].rsv == RSV2
    assert not first[0].fin
    assert not first[1]
    assert first[0].payload == xor("h\u00e9".encode(), 0x5A)
    second = parse_frame(pair.server_to_client, first[2])
    assert second is not None
    assert second[0].opcode is Opcode.CONTINUATION
    assert second[0].rsv == 0
    assert second[0].payload == xor(b"llo", 0x5A)


def expect_protocol_error(conn: ServerConnection | ClientConnection) -> None:
    with pytest.raises(RemoteProtocolError) as info:
        conn.next_event()
    assert info.value.code == CloseCode.PROTOCOL_ERROR
    assert conn.state is State.CLOSED
    parsed = parse_frame(conn.data_to_send())
    assert parsed is not None
    assert parsed[0].opcode is Opcode.CLOSE
    assert parse_close_payload(parsed[0].payload)[0] == CloseCode.PROTOCOL_ERROR


def test_pair_refuses_rsv_bits_no_extension_claims() -> None:
    pair = ConnectionPair.open(
        ClientConnection("ws://localhost/", extensions=[XorClientFactory()]),
        ServerConnection(extensions=[XorServerFactory()]),
    )
    pair.server.receive_data(serialize_frame(Opcode.BINARY, b"x", rsv=RSV3, mask_key=MASK))
    expect_protocol_error(pair.server)  # type: ignore[arg-type]


def test_pair_refuses_rsv_bits_of_a_declined_extension() -> None:
    client = ClientConnection("ws://localhost/", extensions=[XorClientFactory()])
    server = ServerConnection()  # knows no extension
    pair = ConnectionPair.open(client, server)
    assert client.extensions == ()
    assert server.extensions == ()
    assert client.handshake_response is not None
    assert client.handshake_response.extensions == ()

    # Without the extension, messages go through untransformed.
    start = len(pair.client_to_server)
    client.send_binary(b"plain")
    assert pair.transfer() == ([], [Message(data=b"plain")])
    parsed = parse_frame(pair.client_to_server, start)
    assert parsed is not None
    assert parsed[0].rsv == 0
    assert parsed[0].payload == b"plain"

    pair.client.receive_data(serialize_frame(Opcode.BINARY, xor(b"x", 0x5A), rsv=RSV2))
    expect_protocol_error(pair.client)  # type: ignore[arg-type]


def test_pair_close_after_handshake() -> None:
    pair = ConnectionPair.open(
        ClientConnection("ws://localhost/", subprotocols=["v1"]),
        ServerConnection(subprotocols=["v1"]),
    )
    pair.client.send_close(CloseCode.NORMAL_CLOSURE, "bye")
    client_events, server_events = pair.transfer()
    assert server_events == [Close(code=CloseCode.NORMAL_CLOSURE, reason="bye")]
    assert client_events == [Close(code=CloseCode.NORMAL_CLOSURE)]


# == module helpers ====================================================================


def test_accept_key_rfc_example() -> None:
    assert accept_key(RFC_KEY) == RFC_ACCEPT
    assert len(binascii.a2b_base64(accept_key("x"))) == 20  # a SHA-1 digest


@pytest.mark.parametrize(
    ("fields", "expected"),
    [
        ([("Connection", "Upgrade"), ("Upgrade", "websocket")], True),
        ([("connection", "keep-alive, UPGRADE"), ("upgrade", "WebSocket")], True),
        ([("Connection", "keep-alive"), ("Connection", "upgrade"), ("Upgrade", "websocket")], True),
        ([("Connection", "Upgrade"), ("Upgrade", "h2c, websocket")], True),
        ([("Upgrade", "websocket")], False),
        ([("Connection", "Upgrade")], False),
        ([("Connection", "Upgrade"), ("Upgrade", "h2c")], False),
        ([("Connection", "close"), ("Upgrade", "websocket")], False),
        ([("Connection", "up grade"), ("Upgrade", "websocket")], False),
        ([("Connection", "Upgrade"), ("Upgrade", "web socket")], False),
        ([], False),
    ],
)
def test_is_websocket_upgrade(fields: list[tuple[str, str]], expected: bool) -> None:
    assert is_websocket_upgrade(Headers(fields)) is expected


def test_subprotocols_helper() -> None:
    assert subprotocols(Headers()) == []
    headers = Headers([("Sec-WebSocket-Protocol", "b, a"), ("sec-websocket-protocol", "c")])
    assert subprotocols(headers) == ["b", "a", "c"]
    with pytest.raises(ValueError, match="invalid token"):
        subprotocols(Headers({"Sec-WebSocket-Protocol": "a b"}))


def _request(host: str, origin: str | None) -> HandshakeRequest:
    return HandshakeRequest(target="/", headers=Headers(), host=host, origin=origin)


@pytest.mark.parametrize(
    ("host", "origin", "expected"),
    [
        ("good.example", None, True),
        ("good.example", "http://good.example", True),
        ("good.example", "https://good.example/path", True),
        ("good.example", "http://GOOD.EXAMPLE", True),
        ("Good.Example", "http://good.example", True),
        ("good.example:8080", "http://good.example:8080", True),
        ("[::1]:8080", "http://[::1]:8080", True),
        ("good.example", "http://evil.example", False),
        ("good.example", "http://good.example:8080", False),
        ("good.example:8080", "http://good.example", False),
        ("good.example", "http://good.example.evil.example", False),
        ("good.example", "null", False),
        ("good.example", "", False),
        ("good.example", "http://[::1", False),
    ],
)
def test_same_origin(host: str, origin: str | None, expected: bool) -> None:
    assert same_origin(_request(host, origin)) is expected


# == fixes found by these tests: absolute-form targets, error responses, bad answers ====


@pytest.mark.parametrize(
    ("target", "resource"),
    [("http://good.example/chat?room=1", "/chat?room=1"), ("HTTPS://good.example", "/")],
)
def test_absolute_form_target_becomes_the_resource_name(
    mode: str, target: str, resource: str
) -> None:
    # "(or an absolute HTTP/HTTPS URI containing the /resource name/)" -- RFC 6455 §4.2.1
    _, event = server_request(ws_request(target=target), mode)
    assert isinstance(event, HandshakeRequest)
    assert event.target == resource


@pytest.mark.parametrize("target", ["*", "ws://good.example/chat", "http:/chat"])
def test_other_targets_are_400(mode: str, target: str) -> None:
    _, error, response = server_error(ws_request(target=target), mode)
    assert error.status_code == response.status_code == 400


def test_error_responses_have_a_reason_phrase_and_no_peer_bytes(mode: str) -> None:
    _, error, response = server_error(b"GARBAGE\r\n\r\n", mode)
    assert (response.status_code, response.reason) == (400, "Bad Request")
    assert b"GARBAGE" not in response.body
    assert response.body == b"400 Bad Request: malformed HTTP request\n"
    assert error.reason.startswith("malformed HTTP request: ")  # h11's detail, for logs


def test_accept_response_has_its_reason_phrase() -> None:
    server, _ = server_request(ws_request(), "whole")
    server.accept()
    assert server.data_to_send().startswith(b"HTTP/1.1 101 Switching Protocols\r\n")


def test_unknown_status_has_an_empty_reason_phrase() -> None:
    server, _ = server_request(ws_request(), "whole")
    server.reject(599)
    assert server.data_to_send().startswith(b"HTTP/1.1 599 \r\n")


class BadAnswerFactory(XorServerFactory):
    def negotiate(self, offer: ExtensionOffer) -> tuple[ExtensionOffer, Extension] | None:
        return ExtensionOffer(self.name, [("key", "not a token")]), XorExtension(1)


class RenamingFactory(XorServerFactory):
    def negotiate(self, offer: ExtensionOffer) -> tuple[ExtensionOffer, Extension] | None:
        return ExtensionOffer("x-other"), XorExtension(1)


def test_extension_answer_that_is_not_a_token_is_a_local_error() -> None:
    server, _ = server_request(
        ws_request("Sec-WebSocket-Extensions: x-test; key=1"),
        "whole",
        extensions=[BadAnswerFactory()],
    )
    with pytest.raises(LocalProtocolError, match="answered badly"):
        server.accept()
    assert server.state is State.CONNECTING
    assert server.data_to_send() == b""


def test_extension_answer_under_another_name_is_declined() -> None:
    server, _ = server_request(
        ws_request("Sec-WebSocket-Extensions: x-test; key=1"),
        "whole",
        extensions=[RenamingFactory()],
    )
    response = server.accept()
    assert response.extensions == ()
    assert server.extensions == ()


def test_client_exposes_its_uri() -> None:
    client = ClientConnection("ws://example.com:8080/chat?x=1")
    assert str(client.uri) == "ws://example.com:8080/chat?x=1"


# == found by fuzzing ==================================================================


def test_missing_host_is_400_whatever_the_http_version(mode: str) -> None:
    # h11 requires Host of HTTP/1.1 only; the handshake requires it always (RFC 6455 §4.2.1).
    _, error, response = server_error(ws_request(version="HTTP/1.2", host=None), mode)
    assert error.status_code == response.status_code == 400
    assert response.body == b"400 Bad Request: missing Host header\n"


def test_error_response_to_head_has_no_body() -> None:
    server = ServerConnection()
    server.receive_data(b"HEAD / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n")
    with pytest.raises(HandshakeError) as info:
        drain(server)
    assert info.value.status_code == 400
    wire = server.data_to_send()
    assert wire.startswith(b"HTTP/1.1 400 Bad Request\r\n")
    assert wire.endswith(
        b"Content-Length: 40\r\nConnection: close\r\n\r\n"
    )  # GET's length, no body


def test_reject_of_a_head_request_sends_no_body() -> None:
    server = ServerConnection()
    server.receive_data(b"HEAD /health HTTP/1.1\r\nHost: a\r\n\r\n")
    assert drain(server) == [
        HTTPRequest(method="HEAD", target="/health", headers=Headers([("host", "a")]))
    ]
    server.reject(200, body=b"ok")
    assert server.data_to_send() == (
        b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\n"
    )


# == server: rendering error pages (gorilla: Upgrader.Error) ==========================


class PageRecorder:
    """An ErrorRenderer that records its calls and answers with a JSON page."""

    def __init__(self, headers: Iterable[tuple[str, str]] = ()) -> None:
        self.calls: list[tuple[int, str, HTTPRequest | None]] = []
        self.headers = list(headers)

    def __call__(
        self, status: int, reason: str, request: HTTPRequest | None
    ) -> tuple[list[tuple[str, str]], bytes]:
        self.calls.append((status, reason, request))
        headers = [("Content-Type", "application/json"), *self.headers]
        return headers, f'{{"status": {status}}}'.encode()


def test_render_error_renders_a_failed_handshake(mode: str) -> None:
    render = PageRecorder()
    data = ws_request(ws_version="8")
    _, error, response = server_error(data, mode, render_error=render)
    assert response.status_code == 426
    assert response.body == b'{"status": 426}'
    assert response.headers["content-type"] == "application/json"
    assert response.headers["sec-websocket-version"] == "13"  # RFC 6455 §4.2.2 keeps it
    [(status, reason, request)] = render.calls
    assert status == 426
    assert reason.startswith("unsupported WebSocket version 8")
    assert request is not None
    assert (request.method, request.target) == ("GET", "/chat")
    assert request.headers["sec-websocket-version"] == "8"
    assert error.headers is not None
    assert error.headers["content-type"] == "application/json"


def test_render_error_cannot_drop_or_replace_required_headers() -> None:
    render = PageRecorder(
        [("Allow", "POST"), ("Content-Length", "1"), ("Connection", "keep-alive"), ("X-Id", "7")]
    )
    _, _, response = server_error(ws_request(method="POST"), "whole", render_error=render)
    assert response.status_code == 405
    assert response.headers.get_all("allow") == ["GET"]
    assert response.headers.get_all("connection") == ["close"]
    assert response.headers.get_all("content-length") == [str(len(response.body))]
    assert response.headers["x-id"] == "7"


def test_render_error_gets_no_request_when_it_could_not_be_parsed() -> None:
    render = PageRecorder()
    server_error(b"GARBAGE\r\n\r\n", "whole", render_error=render)
    [(status, reason, request)] = render.calls
    assert (status, reason, request) == (400, "malformed HTTP request", None)


def test_render_error_renders_a_refused_origin() -> None:
    render = PageRecorder()
    data = ws_request("Origin: https://evil.example")
    _, _, response = server_error(data, "whole", render_error=render)
    assert response.status_code == 403
    assert render.calls[0][:2] == (403, "origin not allowed")


# == server: the client's address, carried for the program's hooks ====================

PEER = ("203.0.113.7", 50123)


def test_requests_carry_the_remote_addr_the_program_gave() -> None:
    server, event = server_request(ws_request(), "whole", remote_addr=PEER)
    assert server.remote_addr == PEER
    assert isinstance(event, HandshakeRequest)
    assert event.remote_addr == PEER
    _, event = server_request(b"GET /x HTTP/1.1\r\nHost: a\r\n\r\n", "whole", remote_addr=PEER)
    assert isinstance(event, HTTPRequest)
    assert event.remote_addr == PEER


def test_remote_addr_is_none_unless_given_and_may_be_set_before_the_request() -> None:
    _, event = server_request(ws_request(), "whole")
    assert isinstance(event, HandshakeRequest)
    assert event.remote_addr is None
    server = ServerConnection()
    assert server.remote_addr is None
    server.remote_addr = "/run/ws.sock"  # what a transport says once connected
    server.receive_data(ws_request())
    [event] = drain(server)
    assert isinstance(event, HandshakeRequest)
    assert event.remote_addr == "/run/ws.sock"


def test_remote_addr_outlives_the_handshake() -> None:
    # The connection drops its handshake state once open; the address stays.
    server, _ = server_request(ws_request(), "whole", remote_addr=PEER)
    server.accept()
    assert server.remote_addr == PEER
    server.remote_addr = ("198.51.100.1", 443)  # a proxy's PROXY header, read later
    assert server.remote_addr == ("198.51.100.1", 443)


def test_the_error_hook_sees_who_was_refused() -> None:
    render = PageRecorder()
    server_error(
        ws_request("Origin: https://evil.example"), "whole", render_error=render, remote_addr=PEER
    )
    server_error(ws_request(ws_version="8"), "whole", render_error=render, remote_addr=PEER)
    server, _ = server_request(ws_request(), "whole", render_error=render, remote_addr=PEER)
    server.reject(401)
    assert [(status, request.remote_addr) for status, _, request in render.calls if request] == [
        (403, PEER),
        (426, PEER),
        (401, PEER),
    ]


def test_upgrader_options_pass_the_remote_addr_on() -> None:
    server = UpgraderOptions().new_connection(remote_addr=PEER)
    assert server.remote_addr == PEER
    assert UpgraderOptions().new_connection().remote_addr is None


def test_reject_without_a_body_renders_the_page() -> None:
    render = PageRecorder()
    server, event = server_request(
        b"GET /x HTTP/1.1\r\nHost: a\r\n\r\n", "whole", render_error=render
    )
    server.reject()
    response = parse_response(server.data_to_send())
    assert response.status_code == 426
    assert response.body == b'{"status": 426}'
    assert response.headers["upgrade"] == "websocket"
    [(_, _, request)] = render.calls
    assert request == event


def test_reject_of_a_websocket_request_renders_a_page() -> None:
    server, _ = server_request(ws_request(), "whole")
    server.reject(401, [("WWW-Authenticate", 'Bearer realm="chat"')])
    response = parse_response(server.data_to_send())
    assert response.status_code == 401
    assert response.headers["www-authenticate"] == 'Bearer realm="chat"'
    assert response.body == b"401 Unauthorized: the server refused the request\n"


def test_reject_with_a_body_does_not_render() -> None:
    render = PageRecorder()
    server, _ = server_request(ws_request(), "whole", render_error=render)
    server.reject(404, body=b"")
    response = parse_response(server.data_to_send())
    assert (response.status_code, response.body) == (404, b"")
    assert "content-type" not in response.headers
    assert render.calls == []


def test_default_page_of_a_status_without_a_phrase() -> None:
    server, _ = server_request(ws_request(), "whole")
    server.reject(499)
    assert parse_response(server.data_to_send()).body == (b"499: the server refused the request\n")


@pytest.mark.parametrize("status", [500, 503, 599])
def test_default_page_of_a_server_error_says_the_server_failed(status: int) -> None:
    # A 5xx blames the server, not the request (RFC 9110 §15.6).
    server, _ = server_request(ws_request(), "whole")
    server.reject(status)
    body = parse_response(server.data_to_send()).body
    assert body.endswith(b": the server could not answer the request\n")
