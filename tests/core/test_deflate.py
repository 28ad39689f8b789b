# permessage-deflate (RFC 7692) through the public API: negotiation tables for
# both roles, round trips over every parameter combination, the wire rules of
# RSV1, failures and their close codes, a decompression bomb under tracemalloc,
# the compression controls, prepared messages, the RFC's own examples, and
# interoperability with two third-party implementations (websockets, wsproto)
# driven as sans-I/O peers.

from __future__ import annotations

import contextlib
import functools
import itertools
import random
import threading
import tracemalloc
import zlib
from collections.abc import Iterable, Iterator, Sequence
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import wsproto_core.connection
from wsproto_core import (
    ClientConnection,
    CloseCode,
    Connection,
    ConnectionPair,
    Event,
    Extension,
    Frame,
    HandshakeError,
    HandshakeRequest,
    HandshakeResponse,
    LocalProtocolError,
    Message,
    MessageData,
    MessageEnd,
    MessageStart,
    MessageType,
    Opcode,
    PreparedMessage,
    ReadLimitError,
    RemoteProtocolError,
    Role,
    ServerConnection,
    State,
    accept_key,
    parse_close_payload,
    parse_frame,
    serialize_frame,
)
from wsproto_core.extensions import (
    ClientPerMessageDeflate,
    PerMessageDeflate,
    ServerPerMessageDeflate,
)
from wsproto_core.extensions import permessage_deflate as pmd_module
from wsproto_core.extensions.base import MAX_PIECE_SIZE
from wsproto_core.frames import RSV1, RSV2, RSV3

PMD = "permessage-deflate"
KEY = "dGhlIHNhbXBsZSBub25jZQ=="  # RFC 6455 §1.3
MASK = b"\x37\xfa\x21\x3d"
TAIL = b"\x00\x00\xff\xff"
MiB = 1024 * 1024

Options = dict[str, Any]


# -- helpers ---------------------------------------------------------------------


def upgrade_request(extensions: str | None) -> bytes:
    lines = [
        "GET /chat HTTP/1.1",
        "Host: example.com",
        "Upgrade: websocket",
        "Connection: Upgrade",
        f"Sec-WebSocket-Key: {KEY}",
        "Sec-WebSocket-Version: 13",
    ]
    if extensions is not None:
        lines.append(f"Sec-WebSocket-Extensions: {extensions}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


def header_values(head: bytes, name: str) -> list[str]:
    """The values of header ``name`` in an HTTP head (a request or a response)."""
    lines = head.split(b"\r\n\r\n", 1)[0].decode("latin-1").split("\r\n")[1:]
    values = []
    for line in lines:
        field, _, value = line.partition(":")
        if field.strip().lower() == name:
            values.append(value.strip())
    return values


Params = tuple[tuple[str, str | None], ...]


def parse_extension_header(value: str) -> list[tuple[str, Params]]:
    """A simple reading of a Sec-WebSocket-Extensions value, parameters sorted.

    The order of parameters carries no meaning (RFC 7692 §7), so the tables
    compare them as sets. No quoting: our own output never needs it.
    """
    offers = []
    for element in value.split(","):
        name, *raw = (part.strip() for part in element.split(";"))
        params = []
        for param in raw:
            key, eq, val = param.partition("=")
            params.append((key.strip(), val.strip() if eq else None))
        offers.append((name, tuple(sorted(params, key=lambda p: (p[0], p[1] or "")))))
    return offers


def the_deflate(conn: Connection) -> PerMessageDeflate:
    (extension,) = conn.extensions
    assert isinstance(extension, PerMessageDeflate)
    return extension


def negotiated(conn: Connection) -> tuple[bool, bool, int, int]:
    ext = the_deflate(conn)
    return (
        ext.local_no_context_takeover,
        ext.remote_no_context_takeover,
        ext.local_max_window_bits,
        ext.remote_max_window_bits,
    )


def server_negotiate(offer: str | None, options: Options) -> tuple[ServerConnection, str | None]:
    """Feed a raw upgrade request; return the server and its 101's extension header."""
    server = ServerConnection(extensions=[ServerPerMessageDeflate(**options)])
    server.receive_data(upgrade_request(offer))
    assert isinstance(server.next_event(), HandshakeRequest)
    event = server.accept()
    response = server.data_to_send()
    assert response.startswith(b"HTTP/1.1 101 ")
    assert server.state is State.OPEN
    values = header_values(response, "sec-websocket-extensions")
    assert values == ([", ".join(str(offer) for offer in event.extensions)] if values else [])
    assert not values or len(event.extensions) == 1
    return server, (values[0] if values else None)


def deflate_client(options: Options | None = None, **conn: Any) -> ClientConnection:
    return ClientConnection(
        "ws://example.com/chat",
        extensions=[ClientPerMessageDeflate(**(options or {}))],
        **conn,
    )


def respond(client: ClientConnection, extensions: str | None) -> Event | None:
    """Answer the client's request with a valid 101 carrying ``extensions``."""
    request = client.data_to_send()
    (key,) = header_values(request, "sec-websocket-key")
    lines = [
        "HTTP/1.1 101 Switching Protocols",
        "Upgrade: websocket",
        "Connection: Upgrade",
        f"Sec-WebSocket-Accept: {accept_key(key)}",
    ]
    if extensions is not None:
        lines.append(f"Sec-WebSocket-Extensions: {extensions}")
    client.receive_data(("\r\n".join(lines) + "\r\n\r\n").encode())
    return client.next_event()


def open_pair(
    client_options: Options | None = None,
    server_options: Options | None = None,
    **conn: Any,
) -> ConnectionPair:
    """A pair after its handshake, with empty wire logs. ``None``: no deflate on that side."""
    client = ClientConnection(
        "ws://example.com/chat",
        extensions=[] if client_options is None else [ClientPerMessageDeflate(**client_options)],
        **conn,
    )
    server = ServerConnection(
        extensions=[] if server_options is None else [ServerPerMessageDeflate(**server_options)],
        **conn,
    )
    pair = ConnectionPair.open(client, server)
    pair.client_to_server.clear()
    pair.server_to_client.clear()
    return pair


def wire_frames(data: bytes | bytearray) -> list[tuple[Frame, bool]]:
    """Every frame in ``data`` with whether it was masked; ``data`` must end on a frame."""
    frames = []
    pos = 0
    while pos < len(data):
        parsed = parse_frame(data, pos)
        assert parsed is not None, "incomplete frame on the wire"
        frame, masked, pos = parsed
        frames.append((frame, masked))
    return frames


def raw_deflate(data: bytes, bits: int = 15, level: int = 6) -> bytes:
    """Compress one whole message as RFC 7692 §7.2.1 says, with a fresh compressor."""
    compressor = zlib.compressobj(level, zlib.DEFLATED, -bits)
    out = compressor.compress(data) + compressor.flush(zlib.Z_SYNC_FLUSH)
    assert out.endswith(TAIL)
    return out[:-4]


def fragments(data: bytes, cuts: list[int]) -> list[bytes]:
    bounds = [0, *sorted(cuts), len(data)]
    return [data[a:b] for a, b in itertools.pairwise(bounds)]


def send_pieces(conn: Connection, text: bool, pieces: list[bytes]) -> None:
    send = conn.send_text if text else conn.send_binary
    for piece in pieces[:-1]:
        send(piece, fin=False)
    send(pieces[-1])


def expected(data: bytes, text: bool) -> Message:
    return Message(data=data.decode() if text else data)


def sent_close_code(conn: Connection) -> int:
    """The code of the Close frame that ends ``conn``'s queued output."""
    frames = wire_frames(conn.data_to_send())
    frame, _ = frames[-1]
    assert frame.opcode is Opcode.CLOSE
    return parse_close_payload(frame.payload)[0]


def drain(conn: Connection, *reads: bytes) -> list[Event]:
    """Feed ``reads`` one by one, taking every event after each."""
    events = []
    for data in reads or (b"",):
        conn.receive_data(data)
        while (event := conn.next_event()) is not None:
            events.append(event)
    return events


def words(n: int, seed: int = 0) -> bytes:
    """Compressible but not trivial text: random words, about ``n`` bytes."""
    rng = random.Random(seed)
    vocabulary = ["alpha", "bravo", "charlie", "delta", "echo", "foxtrot", "golf", "hotel", "é€"]
    out: list[str] = []
    size = 0
    while size < n:
        word = rng.choice(vocabulary) + rng.choice([" ", ", ", ".\n", str(rng.randrange(100))])
        out.append(word)
        size += len(word.encode())
    return "".join(out).encode()[:n].decode("utf-8", "ignore").encode()


def open_directions(pair: ConnectionPair) -> Iterator[tuple[Connection, Connection, bytearray]]:
    yield pair.client, pair.server, pair.client_to_server
    yield pair.server, pair.client, pair.server_to_client


def one_message_on_wire(
    pair: ConnectionPair, sender: Connection, log: bytearray, text: bool, pieces: list[bytes]
) -> tuple[list[Event], list[tuple[Frame, bool]]]:
    """Send one message; return what the other side received and the frames used."""
    start = len(log)
    send_pieces(sender, text, pieces)
    client_events, server_events = pair.transfer()
    events = server_events if sender is pair.client else client_events
    return events, wire_frames(log[start:])


# -- 1. negotiation: the server (RFC 7692 §5, §7) ----------------------------------

F, T = False, True

# (offer, server factory options, expected response or None for declined,
#  negotiated on the server: (local_nct, remote_nct, local_bits, remote_bits))
SERVER_TABLE: list[tuple[str, Options, str | None, tuple[bool, bool, int, int] | None]] = [
    # plain
    (PMD, {}, PMD, (F, F, 15, 15)),
    (f"{PMD}; client_max_window_bits", {}, PMD, (F, F, 15, 15)),
    # context takeover, asked by the client or required by the server
    (
        f"{PMD}; server_no_context_takeover",
        {},
        f"{PMD}; server_no_context_takeover",
        (T, F, 15, 15),
    ),
    (
        f"{PMD}; client_no_context_takeover",
        {},
        f"{PMD}; client_no_context_takeover",
        (F, T, 15, 15),
    ),
    (PMD, {"server_no_context_takeover": T}, f"{PMD}; server_no_context_takeover", (T, F, 15, 15)),
    (PMD, {"client_no_context_takeover": T}, f"{PMD}; client_no_context_takeover", (F, T, 15, 15)),
    (
        f"{PMD}; server_no_context_takeover",
        {"client_no_context_takeover": T},
        f"{PMD}; server_no_context_takeover; client_no_context_takeover",
        (T, T, 15, 15),
    ),
    (
        f"{PMD}; server_no_context_takeover; client_no_context_takeover",
        {"server_no_context_takeover": T, "client_no_context_takeover": T},
        f"{PMD}; server_no_context_takeover; client_no_context_takeover",
        (T, T, 15, 15),
    ),
    # server_max_window_bits: the response carries a value <= the offered one
    (f"{PMD}; server_max_window_bits=10", {}, f"{PMD}; server_max_window_bits=10", (F, F, 10, 15)),
    (f"{PMD}; server_max_window_bits=15", {}, f"{PMD}; server_max_window_bits=15", (F, F, 15, 15)),
    (f"{PMD}; server_max_window_bits=8", {}, f"{PMD}; server_max_window_bits=8", (F, F, 8, 15)),
    (
        f"{PMD}; server_max_window_bits=10",
        {"server_max_window_bits": 9},
        f"{PMD}; server_max_window_bits=9",
        (F, F, 9, 15),
    ),
    (
        f"{PMD}; server_max_window_bits=10",
        {"server_max_window_bits": 12},
        f"{PMD}; server_max_window_bits=10",
        (F, F, 10, 15),
    ),
    (PMD, {"server_max_window_bits": 11}, f"{PMD}; server_max_window_bits=11", (F, F, 11, 15)),
    (PMD, {"server_max_window_bits": 15}, PMD, (F, F, 15, 15)),
    (
        f'{PMD}; server_max_window_bits="12"',
        {},
        f"{PMD}; server_max_window_bits=12",
        (F, F, 12, 15),
    ),
    # client_max_window_bits: only answered when offered, never above the offer
    (
        f"{PMD}; client_max_window_bits",
        {"client_max_window_bits": 10},
        f"{PMD}; client_max_window_bits=10",
        (F, F, 15, 10),
    ),
    (f"{PMD}; client_max_window_bits=12", {}, PMD, (F, F, 15, 12)),
    (
        f"{PMD}; client_max_window_bits=12",
        {"client_max_window_bits": 10},
        f"{PMD}; client_max_window_bits=10",
        (F, F, 15, 10),
    ),
    (
        f"{PMD}; client_max_window_bits=9",
        {"client_max_window_bits": 10},
        f"{PMD}; client_max_window_bits=9",
        (F, F, 15, 9),
    ),
    (
        f"{PMD}; client_max_window_bits",
        {"client_max_window_bits": 8},
        f"{PMD}; client_max_window_bits=8",
        (F, F, 15, 8),
    ),
    (PMD, {"client_max_window_bits": 10}, PMD, (F, F, 15, 15)),
    # everything at once
    (
        f"{PMD}; client_no_context_takeover; server_max_window_bits=12; client_max_window_bits=11",
        {
            "server_no_context_takeover": T,
            "server_max_window_bits": 10,
            "client_max_window_bits": 9,
        },
        f"{PMD}; server_no_context_takeover; client_no_context_takeover;"
        " server_max_window_bits=10; client_max_window_bits=9",
        (T, T, 10, 9),
    ),
    # another extension first: ignored, deflate still taken
    (f"x-unknown-extension; a=1, {PMD}", {}, PMD, (F, F, 15, 15)),
    # no offer at all
    ("x-unknown-extension", {}, None, None),
]

# A first offer the server must decline (RFC 7692 §7: unknown or repeated
# parameter, invalid value); the second offer, distinguishable by its answer,
# must be taken instead.
INVALID_OFFERS = [
    "server_no_context_takeover; server_no_context_takeover",
    "client_no_context_takeover; client_no_context_takeover",
    "server_max_window_bits=10; server_max_window_bits=10",
    "client_max_window_bits; client_max_window_bits",
    "client_max_window_bits=10; client_max_window_bits=11",
    "x_unknown",
    "mux=1",
    "server_max_window_bits=7",
    "server_max_window_bits=16",
    "client_max_window_bits=7",
    "client_max_window_bits=16",
    "server_max_window_bits=09",
    "client_max_window_bits=09",
    "server_max_window_bits=0",
    "server_max_window_bits=ten",
    "client_max_window_bits=-9",
    "server_no_context_takeover=1",
    'client_no_context_takeover="x"',
    "server_max_window_bits",
]


@pytest.mark.parametrize(("offer", "options", "response", "attributes"), SERVER_TABLE)
def test_server_negotiation(
    offer: str,
    options: Options,
    response: str | None,
    attributes: tuple[bool, bool, int, int] | None,
) -> None:
    server, header = server_negotiate(offer, options)
    if response is None:
        assert header is None
        assert server.extensions == ()
        return
    assert header is not None
    assert parse_extension_header(header) == parse_extension_header(response)
    assert negotiated(server) == attributes


@pytest.mark.parametrize("invalid", INVALID_OFFERS)
def test_server_declines_an_invalid_offer_and_takes_the_next(invalid: str) -> None:
    server, header = server_negotiate(
        f"{PMD}; {invalid}, {PMD}; server_max_window_bits=11; client_max_window_bits", {}
    )
    assert header is not None
    assert parse_extension_header(header) == parse_extension_header(
        f"{PMD}; server_max_window_bits=11"
    )
    assert negotiated(server) == (F, F, 11, 15)


@pytest.mark.parametrize("invalid", INVALID_OFFERS)
def test_server_declines_every_invalid_offer_and_still_opens(invalid: str) -> None:
    server, header = server_negotiate(f"{PMD}; {invalid}, {PMD}; server_max_window_bits=6", {})
    assert header is None
    assert server.extensions == ()
    # The connection works, uncompressed.
    server.send_text("hello")
    [(frame, _)] = wire_frames(server.data_to_send())
    assert frame.rsv == 0


def test_server_without_the_factory_ignores_the_offer() -> None:
    server = ServerConnection()
    server.receive_data(upgrade_request(PMD))
    assert isinstance(server.next_event(), HandshakeRequest)
    server.accept()
    assert header_values(server.data_to_send(), "sec-websocket-extensions") == []
    assert server.extensions == ()


def test_server_answers_only_the_first_acceptable_offer() -> None:
    server, header = server_negotiate(
        f"{PMD}; server_max_window_bits=10, {PMD}; server_max_window_bits=12", {}
    )
    assert header == f"{PMD}; server_max_window_bits=10"
    assert negotiated(server) == (F, F, 10, 15)


# -- 1b. negotiation: the client --------------------------------------------------

CLIENT_OFFERS: list[tuple[Options, str]] = [
    ({}, f"{PMD}; client_max_window_bits"),
    ({"client_max_window_bits": False}, PMD),
    ({"client_max_window_bits": 10}, f"{PMD}; client_max_window_bits=10"),
    ({"client_max_window_bits": 8}, f"{PMD}; client_max_window_bits=8"),
    (
        {"server_no_context_takeover": T},
        f"{PMD}; server_no_context_takeover; client_max_window_bits",
    ),
    (
        {"client_no_context_takeover": T},
        f"{PMD}; client_no_context_takeover; client_max_window_bits",
    ),
    ({"server_max_window_bits": 9}, f"{PMD}; server_max_window_bits=9; client_max_window_bits"),
    (
        {"server_max_window_bits": 15, "client_max_window_bits": False},
        f"{PMD}; server_max_window_bits=15",
    ),
    (
        {
            "server_no_context_takeover": T,
            "client_no_context_takeover": T,
            "server_max_window_bits": 12,
            "client_max_window_bits": 11,
        },
        f"{PMD}; server_no_context_takeover; client_no_context_takeover;"
        " server_max_window_bits=12; client_max_window_bits=11",
    ),
]


@pytest.mark.parametrize(("options", "offer"), CLIENT_OFFERS)
def test_client_offer(options: Options, offer: str) -> None:
    request = deflate_client(options).data_to_send()
    [header] = header_values(request, "sec-websocket-extensions")
    assert parse_extension_header(header) == parse_extension_header(offer)


# (client options, response, negotiated on the client)
CLIENT_ACCEPTS: list[tuple[Options, str, tuple[bool, bool, int, int]]] = [
    ({}, PMD, (F, F, 15, 15)),
    ({}, f"{PMD}; server_no_context_takeover", (F, T, 15, 15)),  # §7.1.1.1: may add it
    ({}, f"{PMD}; client_no_context_takeover", (T, F, 15, 15)),
    ({"client_no_context_takeover": T}, PMD, (T, F, 15, 15)),  # our own hint holds
    ({"server_no_context_takeover": T}, f"{PMD}; server_no_context_takeover", (F, T, 15, 15)),
    ({}, f"{PMD}; server_max_window_bits=10", (F, F, 15, 10)),  # §7.1.2.1: may add it
    ({"server_max_window_bits": 10}, f"{PMD}; server_max_window_bits=10", (F, F, 15, 10)),
    ({"server_max_window_bits": 10}, f"{PMD}; server_max_window_bits=9", (F, F, 15, 9)),
    ({}, f"{PMD}; client_max_window_bits=9", (F, F, 9, 15)),
    ({}, f"{PMD}; client_max_window_bits=8", (F, F, 8, 15)),
    ({"client_max_window_bits": 10}, PMD, (F, F, 10, 15)),
    ({"client_max_window_bits": 10}, f"{PMD}; client_max_window_bits=10", (F, F, 10, 15)),
    ({"client_max_window_bits": 10}, f"{PMD}; client_max_window_bits=9", (F, F, 9, 15)),
    (
        {"server_no_context_takeover": T, "server_max_window_bits": 12},
        f"{PMD}; client_no_context_takeover; server_max_window_bits=11;"
        " server_no_context_takeover; client_max_window_bits=13",
        (T, T, 13, 11),
    ),
]


@pytest.mark.parametrize(("options", "response", "attributes"), CLIENT_ACCEPTS)
def test_client_accepts(
    options: Options, response: str, attributes: tuple[bool, bool, int, int]
) -> None:
    client = deflate_client(options)
    assert isinstance(respond(client, response), HandshakeResponse)
    assert client.state is State.OPEN
    assert negotiated(client) == attributes


def test_client_without_deflate_in_the_response_goes_on_without_it() -> None:
    client = deflate_client()
    assert isinstance(respond(client, None), HandshakeResponse)
    assert client.extensions == ()


CLIENT_REJECTS: list[tuple[Options, str]] = [
    ({}, f"{PMD}; x_unknown"),
    ({}, f"{PMD}; mux=1"),
    ({}, f"{PMD}; server_no_context_takeover; server_no_context_takeover"),
    ({}, f"{PMD}; server_max_window_bits=10; server_max_window_bits=10"),
    ({}, f"{PMD}; client_max_window_bits=10; client_max_window_bits=10"),
    ({}, f"{PMD}; server_max_window_bits=16"),
    ({}, f"{PMD}; server_max_window_bits=7"),
    ({}, f"{PMD}; server_max_window_bits=09"),
    ({}, f"{PMD}; client_max_window_bits=16"),
    ({}, f"{PMD}; client_max_window_bits=7"),
    ({}, f"{PMD}; server_max_window_bits"),
    ({}, f"{PMD}; server_no_context_takeover=1"),
    ({}, f"{PMD}; client_max_window_bits"),  # a response must give a value
    ({"client_max_window_bits": False}, f"{PMD}; client_max_window_bits=10"),  # not offered
    ({"server_max_window_bits": 10}, f"{PMD}; server_max_window_bits=11"),  # larger than asked
    ({"server_max_window_bits": 10}, PMD),  # ignored server_max_window_bits
    ({"server_no_context_takeover": T}, PMD),  # ignored server_no_context_takeover
    ({"client_max_window_bits": 10}, f"{PMD}; client_max_window_bits=11"),  # above our own
    ({}, f"{PMD}, {PMD}"),  # accepted twice
]


@pytest.mark.parametrize(("options", "response"), CLIENT_REJECTS)
def test_client_rejects(options: Options, response: str) -> None:
    client = deflate_client(options)
    with pytest.raises(HandshakeError):
        respond(client, response)
    assert client.state is State.CLOSED
    assert client.extensions == ()


@pytest.mark.parametrize(
    ("factory", "options"),
    [
        (cls, options)
        for cls in (ClientPerMessageDeflate, ServerPerMessageDeflate, PerMessageDeflate)
        for options in (
            {"compression_level": -2},
            {"compression_level": 10},
            {"memory_level": 0},
            {"memory_level": 10},
            {"threshold": -1},
        )
    ]
    + [
        (cls, {name: bits})
        for cls in (ClientPerMessageDeflate, ServerPerMessageDeflate)
        for name in ("server_max_window_bits", "client_max_window_bits")
        for bits in (7, 16, 0)
    ]
    + [
        (PerMessageDeflate, {name: bits})
        for name in ("local_max_window_bits", "remote_max_window_bits")
        for bits in (7, 16)
    ],
)
def test_factory_options_are_validated(factory: type, options: Options) -> None:
    with pytest.raises(ValueError):  # noqa: PT011 - each case has its own message
        factory(**options)


@pytest.mark.parametrize("factory", [ClientPerMessageDeflate, ServerPerMessageDeflate])
def test_factory_options_at_their_bounds_are_accepted(factory: type) -> None:
    for level in (-1, 0, 9):
        factory(compression_level=level)
    for memory in (1, 9):
        factory(memory_level=memory)
    factory(threshold=0)
    for bits in (8, 15):
        factory(server_max_window_bits=bits, client_max_window_bits=bits)


# -- 2. round trips ---------------------------------------------------------------

TAKEOVER = list(itertools.product([False, True], repeat=2))


@pytest.mark.parametrize(("server_nct", "client_nct"), TAKEOVER)
def test_round_trip_every_window_and_takeover_combination(
    server_nct: bool, client_nct: bool
) -> None:
    base = words(6000, seed=1)
    messages = [
        (True, base, [100, 3000]),
        (False, bytes(reversed(base)), []),
        (True, base.decode()[:2000].encode() + base, [1]),  # refers back to earlier messages
    ]
    for index, (server_bits, client_bits) in enumerate(itertools.product(range(8, 16), repeat=2)):
        level = index % 11 - 1
        combo = (server_nct, client_nct, server_bits, client_bits, level)
        pair = open_pair(
            {
                "server_no_context_takeover": server_nct,
                "client_no_context_takeover": client_nct,
                "server_max_window_bits": server_bits,
                "client_max_window_bits": client_bits,
                "compression_level": level,
            },
            {"compression_level": level},
        )
        assert negotiated(pair.client) == (client_nct, server_nct, client_bits, server_bits), combo
        assert negotiated(pair.server) == (server_nct, client_nct, server_bits, client_bits), combo
        for sender, _, log in open_directions(pair):
            bits = the_deflate(sender).local_max_window_bits
            for text, data, cuts in messages:
                events, frames = one_message_on_wire(pair, sender, log, text, fragments(data, cuts))
                assert events == [expected(data, text)], combo
                # RSV1 on the first frame only, and only when this side can
                # compress (zlib has no 8-bit raw window).
                assert [frame.rsv for frame, _ in frames] == [RSV1 if bits > 8 else 0] + [0] * (
                    len(frames) - 1
                ), combo


def _text_payloads() -> st.SearchStrategy[bytes]:
    return st.one_of(
        st.text(max_size=200).map(str.encode),
        st.builds(
            lambda unit, n: (unit * n).encode(),
            st.text(min_size=1, max_size=8),
            st.integers(1, 3000),
        ),
        st.builds(
            lambda seed, n: "".join(random.Random(seed).choices("ab é€😀\n{}:,", k=n)).encode(),
            st.integers(0, 2**32),
            st.sampled_from([40_000, 70_000]),
        ),
    )


def _binary_payloads() -> st.SearchStrategy[bytes]:
    return st.one_of(
        st.binary(max_size=300),
        st.builds(
            lambda unit, n: unit * n, st.binary(min_size=1, max_size=16), st.integers(1, 9000)
        ),
        st.builds(
            lambda seed, n: random.Random(seed).randbytes(n),
            st.integers(0, 2**32),
            st.sampled_from([65_535, 65_536, 65_537, 150_000]),
        ),
        st.just(bytes(200_000)),
    )


@st.composite
def messages(draw: st.DrawFn) -> tuple[bool, bool, bytes, list[int]]:
    """(from the client?, text?, payload, fragment cut points)."""
    from_client = draw(st.booleans())
    text = draw(st.booleans())
    data = draw(_text_payloads() if text else _binary_payloads())
    cuts = draw(st.lists(st.integers(0, len(data)), max_size=4))
    return from_client, text, data, cuts


client_options = st.fixed_dictionaries(
    {
        "server_no_context_takeover": st.booleans(),
        "client_no_context_takeover": st.booleans(),
        "server_max_window_bits": st.none() | st.integers(8, 15),
        "client_max_window_bits": st.sampled_from([True, False]) | st.integers(8, 15),
        "compression_level": st.integers(-1, 9),
        "threshold": st.sampled_from([0, 1, 32, 500]),
    }
)
server_options = st.fixed_dictionaries(
    {
        "server_no_context_takeover": st.booleans(),
        "client_no_context_takeover": st.booleans(),
        "server_max_window_bits": st.none() | st.integers(8, 15),
        "client_max_window_bits": st.none() | st.integers(8, 15),
        "compression_level": st.integers(-1, 9),
        "threshold": st.sampled_from([0, 1, 32, 500]),
    }
)


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(client_options, server_options, st.lists(messages(), min_size=1, max_size=6))
def test_round_trip_property(
    client_opts: Options,
    server_opts: Options,
    sequence: list[tuple[bool, bool, bytes, list[int]]],
) -> None:
    pair = open_pair(client_opts, server_opts)
    client, server = the_deflate(pair.client), the_deflate(pair.server)
    # Both ends agree on what each direction does.
    assert client.local_no_context_takeover == server.remote_no_context_takeover
    assert client.remote_no_context_takeover == server.local_no_context_takeover
    assert client.local_max_window_bits == server.remote_max_window_bits
    assert client.remote_max_window_bits == server.local_max_window_bits
    for from_client, text, data, cuts in sequence:
        sender = pair.client if from_client else pair.server
        log = pair.client_to_server if from_client else pair.server_to_client
        ext = client if from_client else server
        pieces = fragments(data, cuts)
        events, frames = one_message_on_wire(pair, sender, log, text, pieces)
        assert events == [expected(data, text)]
        assert len(frames) == len(pieces)
        assert all(masked is from_client for _, masked in frames)
        assert all(frame.rsv == 0 for frame, _ in frames[1:])  # never on a continuation
        first_rsv = frames[0][0].rsv
        assert first_rsv in (0, RSV1)
        if ext.local_max_window_bits == 8:
            assert first_rsv == 0
        if len(pieces) == 1:
            compress = ext.local_max_window_bits > 8 and len(data) >= ext.threshold
            assert first_rsv == (RSV1 if compress else 0)


@pytest.mark.parametrize("threshold", [0, 1, 32, 100])
def test_threshold_decides_compression_of_whole_messages(threshold: int) -> None:
    pair = open_pair({"threshold": threshold}, {"threshold": threshold})
    for sender, _, log in open_directions(pair):
        for size in sorted({0, max(threshold - 1, 0), threshold, threshold + 1, 1000}):
            data = b"x" * size
            events, [(frame, _)] = one_message_on_wire(pair, sender, log, False, [data])
            assert events == [Message(data=data)]
            assert frame.rsv == (RSV1 if size >= threshold else 0), size
            if size < threshold:
                assert frame.payload == data  # really sent as it is


@pytest.mark.parametrize("side", ["server", "client"])
def test_window_bits_8_sends_uncompressed(side: str) -> None:
    # The server's outgoing window is limited by the client's offer, the
    # client's by the server's answer.
    if side == "server":
        pair = open_pair({"server_max_window_bits": 8}, {})
    else:
        pair = open_pair({}, {"client_max_window_bits": 8})
    limited = pair.server if side == "server" else pair.client
    assert the_deflate(limited).local_max_window_bits == 8
    limited.enable_write_compression(True)  # cannot turn it on
    data = words(5000)
    for sender, _, log in open_directions(pair):
        for text in (True, False):
            events, frames = one_message_on_wire(pair, sender, log, text, fragments(data, [7]))
            assert events == [expected(data, text)]
            assert frames[0][0].rsv == (0 if sender is limited else RSV1)


@pytest.mark.parametrize(("server_nct", "client_nct"), TAKEOVER)
def test_context_takeover_shrinks_a_repeated_message(server_nct: bool, client_nct: bool) -> None:
    pair = open_pair(
        {"server_no_context_takeover": server_nct, "client_no_context_takeover": client_nct}, {}
    )
    data = words(3000, seed=2)
    for sender, _, log in open_directions(pair):
        nct = the_deflate(sender).local_no_context_takeover
        assert nct is (server_nct if sender is pair.server else client_nct)
        sizes = []
        for _ in range(3):
            events, [(frame, _)] = one_message_on_wire(pair, sender, log, True, [data])
            assert events == [expected(data, True)]
            assert frame.rsv == RSV1
            sizes.append(len(frame.payload))
        if nct:
            assert sizes[0] == sizes[1] == sizes[2]
        else:
            # The second copy is back-references to the first: a few bytes.
            assert sizes[1] < sizes[0] // 4
            assert sizes[2] < sizes[0] // 4


def test_decompression_uses_the_negotiated_window() -> None:
    # The client may only use a 9-bit window: a back-reference 1000 bytes into
    # the previous message is invalid, and the server, which keeps only the
    # 512 bytes it agreed to, must refuse it rather than read garbage.
    pair = open_pair({}, {"client_max_window_bits": 9})
    assert the_deflate(pair.server).remote_max_window_bits == 9
    chunk = random.Random(3).randbytes(1000)
    compressor = zlib.compressobj(6, zlib.DEFLATED, -15)
    first, second = (
        (compressor.compress(chunk) + compressor.flush(zlib.Z_SYNC_FLUSH))[:-4] for _ in range(2)
    )
    assert len(second) < 100  # one back-reference, 1000 bytes back
    assert drain(pair.server, client_frame(Opcode.BINARY, first, rsv=RSV1)) == [Message(data=chunk)]
    err = fail_server(pair, client_frame(Opcode.BINARY, second, rsv=RSV1))
    assert err.code == CloseCode.PROTOCOL_ERROR


# Found by fuzz_deflate: one compressed frame whose back-references reach past
# the 9-bit window a peer limited to 8 bits may use. zlib accepts such a
# reference within one decompress() call and refuses it across two, so the
# core cuts compressed payload at fixed offsets of the frame, never where a
# read happened to end: the outcome must not depend on the reads.
BEYOND_THE_WINDOW = bytes.fromhex(
    "c2f237fa213ddb3b103c37fa21ff970f6e503af5813d37fa213d37fa213d37fa213d37fa213d37fa"
    "bd213d37fa213d37fa213d37fa213d374c4c4c4c4c4c4c4c4c4c4c4c4c4c4c4c4c4c4c4c4c4c4c4c"
    "4c4c4c4c4c4c4c4c4c4c4c4c4c4c4c4c4c4c4c4c4c4c4c4c4c4c4c4c4c4c4c4c4c4c3d37fa213d37"
    "fa213d37fa213d37fa213d37fa213d37fa213d37fa21bd60f9"
)


@pytest.mark.parametrize("read_size", [1, 7, 40, 100, None])
def test_decoding_does_not_depend_on_how_the_bytes_were_read(read_size: int | None) -> None:
    extension = PerMessageDeflate(remote_max_window_bits=8, local_max_window_bits=8)
    conn = Connection(Role.SERVER, extensions=[extension])
    wire = BEYOND_THE_WINDOW[:120]  # the frame (what follows it is not a frame)
    reads = [wire] if read_size is None else list(fragments_of(wire, read_size))
    events: list[Event] = []
    for data in reads:
        conn.receive_data(data)
        while (event := conn.next_event()) is not None:
            events.append(event)
    assert len(events) == 1
    assert isinstance(events[0], Message)
    assert len(events[0].data) == 20064


def test_an_8_bit_remote_window_reads_zlib_streams() -> None:
    # zlib writes 9-bit streams when asked for 8 bits; a peer limited to 8
    # bits may reference up to 256 bytes back. Both must decode.
    pair = open_pair({}, {"client_max_window_bits": 8})
    assert the_deflate(pair.server).remote_max_window_bits == 8
    data = random.Random(4).randbytes(200) * 5
    for payload in (raw_deflate(data, bits=9), raw_deflate(data, bits=9, level=1)):
        pair.server.receive_data(serialize_frame(Opcode.BINARY, payload, rsv=RSV1, mask_key=MASK))
        assert pair.server.next_event() == Message(data=data)


# -- 3. streaming receive ---------------------------------------------------------


@pytest.mark.parametrize("text", [True, False])
@pytest.mark.parametrize("read_size", [7, 1000, 1 << 20])
def test_streamed_compressed_message(text: bool, read_size: int) -> None:
    pair = open_pair({}, {}, stream_messages=True)
    data = words(80_000, seed=5) if text else random.Random(5).randbytes(30_000) + bytes(80_000)
    for sender, receiver, _ in open_directions(pair):
        for cuts in ([], [10, 20_000, 50_000]):
            send_pieces(sender, text, fragments(data, cuts))
            wire = sender.data_to_send()
            assert wire_frames(wire)[0][0].rsv == RSV1
            events: list[Event] = []
            for start in range(0, len(wire), read_size):
                receiver.receive_data(wire[start : start + read_size])
                while (event := receiver.next_event()) is not None:
                    events.append(event)
            assert events[0] == MessageStart(
                message_type=MessageType.TEXT if text else MessageType.BINARY
            )
            assert events[-1] == MessageEnd()
            pieces = [p.data for p in events[1:-1] if isinstance(p, MessageData)]
            assert len(pieces) == len(events) - 2
            assert all(pieces)  # never an empty MessageData
            assert b"".join(pieces) == data
            if read_size == 1000:
                assert len(pieces) > 1  # really streamed, not buffered whole


def test_control_frames_between_compressed_fragments() -> None:
    pair = open_pair({}, {})
    data = words(4000, seed=13)
    payload = raw_deflate(data)
    third = len(payload) // 3
    events = drain(
        pair.server,
        client_frame(Opcode.TEXT, payload[:third], fin=False, rsv=RSV1),
        client_frame(Opcode.PING, b"ping"),
        client_frame(Opcode.CONTINUATION, payload[third : 2 * third], fin=False),
        client_frame(Opcode.PONG, b"pong"),
        client_frame(Opcode.CONTINUATION, payload[2 * third :]),
    )
    assert [type(event).__name__ for event in events] == ["Ping", "Pong", "Message"]
    assert events[-1] == expected(data, True)


def test_an_uncompressed_message_passes_through_the_extension() -> None:
    # The Extension contract: RSV bits 0 mean "not for you", data unchanged,
    # and the decompression context is not touched.
    pair = open_pair({}, {})
    ext = the_deflate(pair.client)
    assert ext.decode(b"\xff\xfe", rsv=0, fin=True, text=False, max_size=None) == b"\xff\xfe"
    first, second = (raw_deflate(b"Hello") for _ in range(2))
    events = to_client(
        pair,
        serialize_frame(Opcode.TEXT, first, rsv=RSV1),
        serialize_frame(Opcode.BINARY, b"\xff\xfe"),
        serialize_frame(Opcode.TEXT, second, rsv=RSV1),
    )
    assert events == [Message(data="Hello"), Message(data=b"\xff\xfe"), Message(data="Hello")]


# -- 3b. streaming in bounded pieces ---------------------------------------------
#
# A streamed compressed message comes out in MessageData events of at most
# MAX_PIECE_SIZE bytes, however much one piece of input inflates to: the
# extension keeps the rest (in zlib, and as its unconsumed_tail) until the
# connection asks for it. Shrinking the bound (and zlib's input slices) lets
# small messages cross every boundary.


@contextlib.contextmanager
def piece_bounds(piece: int, zlib_slice: int | None = None) -> Iterator[None]:
    """Make the piece bound ``piece`` bytes (and zlib's input slices ``zlib_slice``)."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(wsproto_core.connection, "MAX_PIECE_SIZE", piece)
        patch.setattr(pmd_module, "MAX_PIECE_SIZE", piece)
        if zlib_slice is not None:
            patch.setattr(pmd_module, "_SLICE", zlib_slice)
        yield


def inflating_client(
    limit: int | None = None, *, stream: bool = True, nct: bool = False
) -> Connection:
    """A client whose permessage-deflate reads the server's compressed frames."""
    return Connection(
        Role.CLIENT,
        extensions=[PerMessageDeflate(remote_no_context_takeover=nct)],
        max_message_size=limit,
        stream_messages=stream,
    )


def compressed_frames(payload: bytes, *, text: bool = False, cuts: Sequence[int] = ()) -> bytes:
    """A server's compressed message: ``payload`` in frames cut at ``cuts``."""
    opcode = Opcode.TEXT if text else Opcode.BINARY
    parts = fragments(payload, list(cuts))
    return b"".join(
        serialize_frame(
            opcode if i == 0 else Opcode.CONTINUATION,
            part,
            fin=i == len(parts) - 1,
            rsv=RSV1 if i == 0 else 0,
        )
        for i, part in enumerate(parts)
    )


def fragments_of(data: bytes, size: int) -> Iterator[bytes]:
    return (data[i : i + size] for i in range(0, len(data), size))


def streamed_pieces(events: list[Event]) -> list[list[bytes]]:
    """The MessageData of each streamed message in ``events``, checking their order."""
    messages: list[list[bytes]] = []
    current: list[bytes] | None = None
    for event in events:
        if isinstance(event, MessageStart):
            assert current is None
            current = []
        elif isinstance(event, MessageData):
            assert current is not None
            assert event.data, "an empty MessageData"
            current.append(event.data)
        else:
            assert event == MessageEnd(), event
            assert current is not None
            messages.append(current)
            current = None
    assert current is None, "a message without its MessageEnd"
    return messages


def take_events(conn: Connection, sizes: list[int]) -> None:
    """Call ``next_event()`` until ``None``, noting the size of each MessageData."""
    while (event := conn.next_event()) is not None:
        assert not isinstance(event, Message) or not conn.stream_messages
        if isinstance(event, MessageData):
            sizes.append(len(event.data))


SIXTEEN_MIB_OF_S = b"s" * (16 * MiB)


@functools.cache
def sixteen_mib_bomb() -> bytes:
    """16 MiB of one byte, compressed as one message: about 16 KiB."""
    payload = raw_deflate(SIXTEEN_MIB_OF_S, level=9)
    assert len(payload) < 20_000
    return payload


@pytest.mark.parametrize("read_size", [None, 4096, 100], ids=["one-read", "4k-reads", "100-b"])
def test_a_streamed_bomb_without_limit_comes_out_in_bounded_pieces(read_size: int | None) -> None:
    wire = compressed_frames(sixteen_mib_bomb())
    reads = [wire] if read_size is None else list(fragments_of(wire, read_size))
    conn = inflating_client(None)
    sizes: list[int] = []
    tracemalloc.start()
    try:
        tracemalloc.reset_peak()
        for data in reads:
            conn.receive_data(data)
            while (event := conn.next_event()) is not None:
                if isinstance(event, MessageData):
                    # Checked and dropped at once, as a program streaming it would.
                    assert event.data.count(b"s") == len(event.data)
                    sizes.append(len(event.data))
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert not the_deflate(conn).decode_pending
    assert sum(sizes) == len(SIXTEEN_MIB_OF_S)
    assert max(sizes) <= MAX_PIECE_SIZE
    # Compressed input is decoded 4 KiB at a time, at fixed offsets (so the
    # result never depends on the reads): a piece is short only where such a
    # slice of input ran out, however the bytes were read.
    short = sum(size < MAX_PIECE_SIZE for size in sizes)
    assert short <= len(wire) // 4096 + 1
    # A piece, zlib's state and one read; nowhere near 16 MiB.
    assert peak < 4 * MAX_PIECE_SIZE, f"peak {peak / MiB:.2f} MiB"


def test_a_streamed_gigabyte_passes_in_constant_memory() -> None:
    # docs/core.md: "a 1 GB message passes through in constant memory".
    conn = inflating_client(None)
    conn.receive_data(compressed_frames(bomb()))
    total = pieces = 0
    tracemalloc.start()
    try:
        tracemalloc.reset_peak()
        while (event := conn.next_event()) is not None:
            if isinstance(event, MessageData):
                assert len(event.data) <= MAX_PIECE_SIZE
                total += len(event.data)
                pieces += 1
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert total == BOMB_SIZE
    assert pieces >= BOMB_SIZE // MAX_PIECE_SIZE
    # A piece of input, a piece of output (twice while zlib builds it), zlib's
    # state: about 1.2 MiB, for 1 GiB.
    assert peak < 6 * MAX_PIECE_SIZE, f"peak {peak / MiB:.2f} MiB"


@pytest.mark.parametrize("stream", [True, False], ids=["stream_messages", "whole"])
@pytest.mark.parametrize("limit", [MiB, MiB + 1, 3 * MAX_PIECE_SIZE + 5, 7])
def test_a_bomb_under_a_read_limit_fails_with_1009_at_the_limit(stream: bool, limit: int) -> None:
    conn = inflating_client(limit, stream=stream)
    conn.receive_data(compressed_frames(sixteen_mib_bomb()))
    sizes: list[int] = []
    with pytest.raises(ReadLimitError) as exc:
        take_events(conn, sizes)
    assert exc.value.code == CloseCode.MESSAGE_TOO_BIG
    assert sent_close_code(conn) == CloseCode.MESSAGE_TOO_BIG
    assert conn.state is State.CLOSED
    if stream:
        # The pieces before the one that passes the limit were delivered.
        assert all(size <= MAX_PIECE_SIZE for size in sizes)
        assert limit - MAX_PIECE_SIZE < sum(sizes) <= limit
    assert conn.next_event() is None


def test_held_back_output_ends_exactly() -> None:
    # The bound falls in the last back-reference, after zlib read all its
    # input: what zlib holds must still come out, and the tail after it.
    data = b"a" * (MAX_PIECE_SIZE + 100)
    conn = inflating_client(None)
    events = drain(conn, compressed_frames(raw_deflate(data, level=9)))
    assert streamed_pieces(events) == [[data[:MAX_PIECE_SIZE], data[MAX_PIECE_SIZE:]]]
    whole = inflating_client(None, stream=False)
    assert drain(whole, compressed_frames(raw_deflate(data, level=9))) == [Message(data=data)]


def test_deflate_repr_names_the_negotiated_parameters() -> None:
    ext = PerMessageDeflate(remote_no_context_takeover=True, local_max_window_bits=10)
    assert repr(ext) == (
        "PerMessageDeflate(local_no_context_takeover=False, remote_no_context_takeover=True, "
        "local_max_window_bits=10, remote_max_window_bits=15)"
    )


def test_deflate_decode_keeps_back_output_past_its_bounds() -> None:
    # The Extension contract, on PerMessageDeflate itself.
    ext = PerMessageDeflate()
    assert not ext.decode_pending
    assert ext.decode_more(max_size=None) == b""
    data = words(3 * MAX_PIECE_SIZE, seed=3)
    payload = raw_deflate(data)
    first = ext.decode(payload, rsv=RSV1, fin=True, text=True, max_size=9)
    assert first == data[:10]  # max_size + 1
    assert ext.decode_pending
    out = [first]
    while ext.decode_pending:
        piece = ext.decode_more(max_size=None)
        assert len(piece) <= MAX_PIECE_SIZE
        out.append(piece)
    assert b"".join(out) == data
    assert ext.decode_more(max_size=None) == b""
    # The context is kept: the same message again is a back-reference.
    again = ext.decode(raw_deflate(b"x" * 10), rsv=RSV1, fin=True, text=False, max_size=None)
    assert (again, ext.decode_pending) == (b"x" * 10, False)


@pytest.mark.parametrize("text", [True, False], ids=["text", "binary"])
@pytest.mark.parametrize("stream", [True, False], ids=["stream_messages", "whole"])
def test_corrupt_data_after_held_back_output(text: bool, stream: bool) -> None:
    # zlib meets the bad block only while the connection takes more of the
    # piece: the same close code as ever, and nothing kept afterwards.
    data = b"z" * (3 * MAX_PIECE_SIZE)
    synced = zlib.compressobj(9, zlib.DEFLATED, -15)
    payload = synced.compress(data) + synced.flush(zlib.Z_SYNC_FLUSH) + CORRUPT
    conn = inflating_client(None, stream=stream)
    conn.receive_data(compressed_frames(payload, text=text))
    sizes: list[int] = []
    with pytest.raises(RemoteProtocolError) as exc:
        take_events(conn, sizes)
    code = CloseCode.INVALID_FRAME_PAYLOAD_DATA if text else CloseCode.PROTOCOL_ERROR
    assert exc.value.code == code
    assert sent_close_code(conn) == code
    if stream:  # the pieces before the bad block came out
        assert len(data) - MAX_PIECE_SIZE <= sum(sizes) <= len(data)
    else:
        assert sizes == []
    assert not the_deflate(conn).decode_pending


def takeover_payloads(messages: list[bytes], takeover: bool) -> list[bytes]:
    compressor = zlib.compressobj(6, zlib.DEFLATED, -15)
    payloads = []
    for data in messages:
        if not takeover:
            compressor = zlib.compressobj(6, zlib.DEFLATED, -15)
        payloads.append((compressor.compress(data) + compressor.flush(zlib.Z_SYNC_FLUSH))[:-4])
    return payloads


@pytest.mark.parametrize("takeover", [True, False], ids=["takeover", "no-takeover"])
def test_context_takeover_across_streamed_messages_in_pieces(takeover: bool) -> None:
    # Each message inflates to several pieces. With takeover, the next one
    # starts with back-references into the end of the one before (the
    # 32 KiB window), which the draining of its pieces must have kept.
    first = words(2 * MAX_PIECE_SIZE + 1234, seed=21)
    second = first[-30_000:] + words(MAX_PIECE_SIZE + 99, seed=22)
    third = second[-30_000:] + first
    messages = [first, second, third]
    payloads = takeover_payloads(messages, takeover)
    if takeover:
        assert len(payloads[1]) + 5000 < len(takeover_payloads(messages, False)[1])
    wire = b"".join(compressed_frames(p, text=True, cuts=[len(p) // 3]) for p in payloads)
    for stream in (True, False):
        conn = inflating_client(None, stream=stream, nct=not takeover)
        events = drain(conn, *fragments_of(wire, 10_000))
        if stream:
            got = streamed_pieces(events)
            assert [b"".join(pieces) for pieces in got] == messages
            assert all(len(piece) <= MAX_PIECE_SIZE for pieces in got for piece in pieces)
            assert all(len(pieces) >= 2 for pieces in got)
        else:
            assert events == [expected(data, True) for data in messages]


def test_streamed_text_pieces_split_characters() -> None:
    # Pieces end anywhere, inside characters too; UTF-8 is still checked
    # across their borders, and invalid text fails with 1007 where it starts.
    text = "☃𝄞é€ ascii " * 200
    data = text.encode()
    with piece_bounds(7):
        conn = inflating_client(None)
        pieces = streamed_pieces(drain(conn, compressed_frames(raw_deflate(data), text=True)))[0]
    assert b"".join(pieces) == data
    assert all(len(piece) <= 7 for piece in pieces)
    split = 0
    for piece in pieces:
        try:
            piece.decode()
        except UnicodeDecodeError:
            split += 1
    assert split > len(pieces) // 2
    bad = data[:5000] + b"\xed\xa0\x80" + data[5000:]  # a surrogate: never valid UTF-8
    for bound, stream in itertools.product([7, 64, MAX_PIECE_SIZE], [True, False]):
        with piece_bounds(bound):
            conn = inflating_client(None, stream=stream)
            conn.receive_data(compressed_frames(raw_deflate(bad), text=True))
            sizes: list[int] = []
            with pytest.raises(RemoteProtocolError) as exc:
                take_events(conn, sizes)
        assert exc.value.code == CloseCode.INVALID_FRAME_PAYLOAD_DATA, (bound, stream)
        # Text is checked as it arrives: nothing past the bad bytes came out.
        assert sum(sizes) <= 5000 + bound, (bound, stream)


@pytest.mark.parametrize("bound", [1, 7, 1000, MAX_PIECE_SIZE])
@pytest.mark.parametrize("stream", [True, False], ids=["stream_messages", "whole"])
def test_1007_before_1009_however_pieces_fall(bound: int, stream: bool) -> None:
    # As for uncompressed messages: invalid UTF-8 within the read limit is
    # 1007, past it 1009, wherever the pieces end.
    data = ("é" * 3000).encode() + b"\xff" + ("é" * 3000).encode()
    for limit, code in [
        (6001, CloseCode.INVALID_FRAME_PAYLOAD_DATA),  # the bad byte is the last one allowed
        (6000, CloseCode.MESSAGE_TOO_BIG),  # the bad byte is the first one too many
        (3001, CloseCode.MESSAGE_TOO_BIG),  # ends inside a character: not a UTF-8 error
        (len(data) + 10, CloseCode.INVALID_FRAME_PAYLOAD_DATA),
    ]:
        with piece_bounds(bound, zlib_slice=max(bound, 5)):
            conn = inflating_client(limit, stream=stream)
            for read in fragments_of(compressed_frames(raw_deflate(data), text=True), 50):
                conn.receive_data(read)
            with pytest.raises(RemoteProtocolError) as exc:
                take_events(conn, [])
        assert exc.value.code == code, (limit, bound, stream)
        assert sent_close_code(conn) == code


# Messages as a peer may compress them: parts of a message may each end their
# DEFLATE stream with a BFINAL block (RFC 7692 §7.2.1), the last one too.
StreamedMessage = tuple[bool, bytes, list[int], bool, list[int]]


@st.composite
def streamed_messages(draw: st.DrawFn) -> StreamedMessage:
    """(text?, data, BFINAL cut points, ends with BFINAL?, frame cut points)."""
    text = draw(st.booleans())
    if text:
        data = draw(
            st.text(max_size=300).map(str.encode)
            | st.builds(
                lambda unit, n: (unit * n).encode(),
                st.text(min_size=1, max_size=6),
                st.integers(1, 2000),
            )
        )
    else:
        data = draw(
            st.binary(max_size=300)
            | st.builds(
                lambda unit, n: unit * n, st.binary(min_size=1, max_size=9), st.integers(1, 6000)
            )
        )
    finals = draw(st.lists(st.integers(0, len(data)), max_size=3))
    end_final = draw(st.booleans())
    frame_cuts = draw(st.lists(st.integers(0, 10_000), max_size=3))
    return text, data, sorted(finals), end_final, frame_cuts


def peer_payloads(messages: list[StreamedMessage], takeover: bool) -> list[bytes]:
    """Compress ``messages`` as a peer would, with a fresh window after each BFINAL block."""
    payloads = []
    compressor = zlib.compressobj(6, zlib.DEFLATED, -15)
    for _, data, finals, end_final, _ in messages:
        if not takeover:
            compressor = zlib.compressobj(6, zlib.DEFLATED, -15)
        parts = fragments(data, finals)
        out = b""
        for i, part in enumerate(parts):
            last = i == len(parts) - 1
            if last and not end_final:
                out += (compressor.compress(part) + compressor.flush(zlib.Z_SYNC_FLUSH))[:-4]
            else:
                out += compressor.compress(part) + compressor.flush(zlib.Z_FINISH)
                compressor = zlib.compressobj(6, zlib.DEFLATED, -15)
        payloads.append(out)
    return payloads


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    messages=st.lists(streamed_messages(), min_size=1, max_size=3),
    takeover=st.booleans(),
    bound=st.sampled_from([1, 2, 5, 64, 1000, MAX_PIECE_SIZE]),
    zlib_slice=st.sampled_from([1, 3, 100, 64 * 1024]),
    read_cuts=st.lists(st.integers(0, 20_000), max_size=6),
    limit_slack=st.none() | st.integers(0, 3),
)
def test_streamed_pieces_are_bounded_and_exact_for_any_chunking(
    messages: list[StreamedMessage],
    takeover: bool,
    bound: int,
    zlib_slice: int,
    read_cuts: list[int],
    limit_slack: int | None,
) -> None:
    payloads = peer_payloads(messages, takeover)
    wire = b"".join(
        compressed_frames(payload, text=text, cuts=[c % (len(payload) + 1) for c in cuts])
        for payload, (text, _, _, _, cuts) in zip(payloads, messages, strict=True)
    )
    reads = fragments(wire, [cut % (len(wire) + 1) for cut in read_cuts])
    datas = [data for _, data, _, _, _ in messages]
    # A read limit no message passes (at most 3 bytes of room to spare).
    limit = None if limit_slack is None else max(map(len, datas)) + limit_slack
    with piece_bounds(bound, zlib_slice):
        streamed = drain(inflating_client(limit, nct=not takeover), *reads)
        whole = drain(inflating_client(limit, stream=False, nct=not takeover), *reads)
    got = streamed_pieces(streamed)
    assert [b"".join(pieces) for pieces in got] == datas
    assert all(len(piece) <= bound for pieces in got for piece in pieces)
    assert whole == [expected(data, text) for text, data, _, _, _ in messages]


def outcome(conn: Connection, reads: Iterable[bytes]) -> tuple[list[Event], int | None]:
    """The events of ``reads``, and the close code of the error that ended them, if any."""
    events: list[Event] = []
    try:
        for data in reads:
            conn.receive_data(data)
            while (event := conn.next_event()) is not None:
                events.append(event)
    except RemoteProtocolError as exc:
        code = exc.code
    else:
        return events, None
    assert sent_close_code(conn) == code
    return events, code


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    messages=st.lists(streamed_messages(), min_size=1, max_size=3),
    takeover=st.booleans(),
    bound=st.sampled_from([1, 7, 1000, MAX_PIECE_SIZE]),
    limit=st.none() | st.integers(0, 3000),
    damage=st.none() | st.tuples(st.integers(0, 10_000), st.integers(1, 255)),
)
def test_a_whole_frame_inflated_in_one_step_as_piece_by_piece(
    messages: list[StreamedMessage],
    takeover: bool,
    bound: int,
    limit: int | None,
    damage: tuple[int, int] | None,
) -> None:
    # A message in one frame of at most 4 KiB, here whole, is inflated in one
    # step (decode_message()); read a byte at a time, the same frames go
    # piece by piece. Same events, same errors, however the peer compressed
    # (BFINAL blocks, fresh streams within a payload), whatever the limit,
    # and for corrupt data (a byte of a payload changed) too.
    payloads = peer_payloads(messages, takeover)
    if damage is not None:
        at, flip = damage
        index = at % len(payloads)
        payload = bytearray(payloads[index])
        if payload:
            payload[at % len(payload)] ^= flip
            payloads[index] = bytes(payload)
    wire = b"".join(
        compressed_frames(payload, text=text)
        for payload, (text, _, _, _, _) in zip(payloads, messages, strict=True)
    )
    with piece_bounds(bound):
        at_once = outcome(inflating_client(limit, stream=False, nct=not takeover), [wire])
        by_bytes = outcome(
            inflating_client(limit, stream=False, nct=not takeover), fragments_of(wire, 1)
        )
    assert at_once == by_bytes
    if damage is None and limit is None:
        assert at_once == ([expected(data, text) for text, data, _, _, _ in messages], None)


def test_an_empty_compressed_message_in_pieces_is_empty() -> None:
    # In one frame, decode_message() takes it; in two (empty) frames, decode() does.
    for cuts in ([], [0]):
        conn = inflating_client(stream=False)
        assert drain(conn, compressed_frames(b"", text=True, cuts=cuts)) == [Message(data="")]


def test_a_bug_in_inflating_a_whole_message_is_1011(monkeypatch: pytest.MonkeyPatch) -> None:
    def broken(*args: object, **kwargs: object) -> bytes:
        raise ValueError("a bug")

    monkeypatch.setattr(PerMessageDeflate, "decode_message", broken)
    conn = inflating_client(stream=False)
    with pytest.raises(RemoteProtocolError) as exc:
        drain(conn, compressed_frames(raw_deflate(b"hello")))
    assert exc.value.code == CloseCode.INTERNAL_ERROR
    assert sent_close_code(conn) == CloseCode.INTERNAL_ERROR


# -- 4. errors --------------------------------------------------------------------


def fail_server(pair: ConnectionPair, *frames: bytes) -> RemoteProtocolError:
    """Feed masked frames to the server until it fails; return the error."""
    with pytest.raises(RemoteProtocolError) as exc:
        drain(pair.server, b"".join(frames))
    assert pair.server.state is State.CLOSED
    assert sent_close_code(pair.server) == exc.value.code
    return exc.value


def client_frame(opcode: int, payload: bytes = b"", *, fin: bool = True, rsv: int = 0) -> bytes:
    return serialize_frame(opcode, payload, fin=fin, rsv=rsv, mask_key=MASK)


HELLO = raw_deflate(b"Hello, world! Hello, world!")
_synced = zlib.compressobj(6, zlib.DEFLATED, -15)
SYNCED = _synced.compress(b"Hello, world!") + _synced.flush(zlib.Z_SYNC_FLUSH)  # byte-aligned end
# At a block boundary: BFINAL=1, BTYPE=11 (reserved) -- RFC 1951 §3.2.3.
CORRUPT = b"\xff\xff\xff\xff"


@pytest.mark.parametrize(
    "frames",
    [
        # RSV1 on a continuation of a compressed message
        (
            client_frame(Opcode.TEXT, HELLO[:5], fin=False, rsv=RSV1),
            client_frame(Opcode.CONTINUATION, HELLO[5:], rsv=RSV1),
        ),
        # RSV1 on a continuation of an uncompressed message
        (
            client_frame(Opcode.BINARY, b"abc", fin=False),
            client_frame(Opcode.CONTINUATION, HELLO, rsv=RSV1),
        ),
        # RSV1 on control frames, also between fragments
        (client_frame(Opcode.PING, b"x", rsv=RSV1),),
        (client_frame(Opcode.PONG, b"", rsv=RSV1),),
        (client_frame(Opcode.CLOSE, b"\x03\xe8", rsv=RSV1),),
        (
            client_frame(Opcode.TEXT, HELLO[:5], fin=False, rsv=RSV1),
            client_frame(Opcode.PING, b"x", rsv=RSV1),
        ),
        # RSV2 / RSV3: no extension claims them
        (client_frame(Opcode.TEXT, HELLO, rsv=RSV1 | RSV2),),
        (client_frame(Opcode.BINARY, b"abc", rsv=RSV2),),
        (client_frame(Opcode.BINARY, b"abc", rsv=RSV3),),
        # corrupt compressed binary data: 1002, also in a continuation
        (client_frame(Opcode.BINARY, CORRUPT, rsv=RSV1),),
        (
            client_frame(Opcode.BINARY, SYNCED, fin=False, rsv=RSV1),
            client_frame(Opcode.CONTINUATION, CORRUPT),
        ),
    ],
    ids=[
        "rsv1-continuation-compressed",
        "rsv1-continuation-uncompressed",
        "rsv1-ping",
        "rsv1-pong",
        "rsv1-close",
        "rsv1-ping-between-fragments",
        "rsv2-with-rsv1",
        "rsv2",
        "rsv3",
        "corrupt-binary",
        "corrupt-binary-continuation",
    ],
)
def test_protocol_errors_with_deflate(frames: tuple[bytes, ...]) -> None:
    pair = open_pair({}, {})
    assert fail_server(pair, *frames).code == CloseCode.PROTOCOL_ERROR


@pytest.mark.parametrize(
    "frames",
    [
        (client_frame(Opcode.TEXT, CORRUPT, rsv=RSV1),),
        (
            client_frame(Opcode.TEXT, SYNCED, fin=False, rsv=RSV1),
            client_frame(Opcode.CONTINUATION, CORRUPT),
        ),
    ],
)
def test_corrupt_compressed_text_is_1007(frames: tuple[bytes, ...]) -> None:
    pair = open_pair({}, {})
    assert fail_server(pair, *frames).code == CloseCode.INVALID_FRAME_PAYLOAD_DATA


def test_compressed_text_that_inflates_to_bad_utf8_is_1007() -> None:
    pair = open_pair({}, {})
    payload = raw_deflate(b"valid, then \xc3\x28 invalid")
    err = fail_server(pair, client_frame(Opcode.TEXT, payload, rsv=RSV1))
    assert err.code == CloseCode.INVALID_FRAME_PAYLOAD_DATA


@pytest.mark.parametrize(("client_opts", "server_opts"), [(None, None), ({}, None), (None, {})])
def test_rsv1_without_negotiated_deflate_is_1002(
    client_opts: Options | None, server_opts: Options | None
) -> None:
    pair = open_pair(client_opts, server_opts)
    assert pair.server.extensions == ()
    err = fail_server(pair, client_frame(Opcode.TEXT, HELLO, rsv=RSV1))
    assert err.code == CloseCode.PROTOCOL_ERROR


def test_client_fails_on_rsv1_from_a_server_without_deflate() -> None:
    pair = open_pair(None, None)
    pair.client.receive_data(serialize_frame(Opcode.BINARY, HELLO, rsv=RSV1))
    with pytest.raises(RemoteProtocolError) as exc:
        pair.client.next_event()
    assert exc.value.code == CloseCode.PROTOCOL_ERROR
    assert pair.client.state is State.CLOSED
    assert sent_close_code(pair.client) == CloseCode.PROTOCOL_ERROR


# -- 5. decompression bomb --------------------------------------------------------

BOMB_LIMIT = MiB
BOMB_SIZE = 1024 * MiB


@functools.cache
def bomb() -> bytes:
    """Raw deflate data inflating to 1 GiB of zeros, built without holding 1 GiB."""
    compressor = zlib.compressobj(9, zlib.DEFLATED, -15)
    zeros = bytes(MiB)
    parts = [compressor.compress(zeros) for _ in range(BOMB_SIZE // MiB)]
    parts.append(compressor.flush(zlib.Z_SYNC_FLUSH))
    data = b"".join(parts)
    assert data.endswith(TAIL)
    return data[:-4]


def bomb_reads(layout: str) -> list[bytes]:
    data = bomb()
    if layout == "many frames":
        size = 16 * 1024
        pieces = [data[i : i + size] for i in range(0, len(data), size)]
        last = len(pieces) - 1
        return [
            b"".join(
                client_frame(
                    Opcode.BINARY if i == 0 else Opcode.CONTINUATION,
                    piece,
                    fin=i == last,
                    rsv=RSV1 if i == 0 else 0,
                )
                for i, piece in enumerate(pieces)
            )
        ]
    frame = client_frame(Opcode.BINARY, data, rsv=RSV1)
    if layout == "small reads":
        return [frame[i : i + 4096] for i in range(0, len(frame), 4096)]
    return [frame]


@pytest.mark.parametrize("stream", [False, True], ids=["whole", "stream_messages"])
@pytest.mark.parametrize("layout", ["one frame", "many frames", "small reads"])
def test_decompression_bomb(layout: str, stream: bool) -> None:
    compressed = len(bomb())
    assert compressed < 2 * MiB  # a few MB that inflate to 1 GiB
    pair = open_pair({}, {}, max_message_size=BOMB_LIMIT, stream_messages=stream)
    reads = bomb_reads(layout)
    server = pair.server
    tracemalloc.start()
    try:
        tracemalloc.reset_peak()
        with pytest.raises(ReadLimitError) as exc:
            drain(server, *reads)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert exc.value.code == CloseCode.MESSAGE_TOO_BIG
    assert server.state is State.CLOSED
    assert sent_close_code(server) == CloseCode.MESSAGE_TOO_BIG
    bound = 2 * BOMB_LIMIT + compressed
    assert peak < bound, f"peak {peak / MiB:.2f} MiB over {bound / MiB:.2f} MiB ({layout})"


def test_messages_at_the_read_limit_still_arrive() -> None:
    # The bound is exact: a compressed message of exactly the limit passes,
    # one byte more fails, however the inflated bytes come out of zlib.
    limit = 300_000
    for size, ok in ((limit, True), (limit + 1, False)):
        pair = open_pair({}, {}, max_message_size=limit)
        data = bytes(size)
        pair.server.receive_data(client_frame(Opcode.BINARY, raw_deflate(data), rsv=RSV1))
        if ok:
            assert pair.server.next_event() == Message(data=data)
        else:
            with pytest.raises(ReadLimitError):
                pair.server.next_event()


# -- 6. compression controls ------------------------------------------------------


def test_enable_write_compression_toggles_from_the_next_message() -> None:
    pair = open_pair({}, {})
    data = words(2000)
    for sender, _, log in open_directions(pair):
        rsvs = []
        for enabled in (False, True, False):
            sender.enable_write_compression(enabled)
            events, [(frame, _)] = one_message_on_wire(pair, sender, log, True, [data])
            assert events == [expected(data, True)]
            rsvs.append(frame.rsv)
        assert rsvs == [0, RSV1, 0]


def test_enable_write_compression_mid_message_waits_for_the_next() -> None:
    pair = open_pair({}, {})
    data = words(2000)
    sender, log = pair.server, pair.server_to_client
    sender.send_text(data[:500], fin=False)
    sender.enable_write_compression(False)
    sender.send_text(data[500:])
    sender.send_text(data)
    client_events, _ = pair.transfer()
    assert client_events == [expected(data, True)] * 2
    rsvs = [frame.rsv for frame, _ in wire_frames(log)]
    assert rsvs == [RSV1, 0, 0]


def test_compression_level_changes_the_wire_size() -> None:
    pair = open_pair({}, {})
    data = words(20_000, seed=6)
    for sender, _, log in open_directions(pair):
        sizes = {}
        for level in (0, 9, 1, -1):
            sender.set_compression_level(level)
            assert the_deflate(sender).compression_level == level
            events, [(frame, _)] = one_message_on_wire(pair, sender, log, True, [data])
            assert events == [expected(data, True)]
            assert frame.rsv == RSV1
            sizes[level] = len(frame.payload)
        assert sizes[0] >= len(data)  # stored blocks
        assert sizes[9] < len(data) // 2


@pytest.mark.parametrize("level", [10, -2, 100])
def test_invalid_compression_level(level: int) -> None:
    pair = open_pair({}, {"compression_level": 4})
    with pytest.raises(LocalProtocolError):
        pair.server.set_compression_level(level)
    assert the_deflate(pair.server).compression_level == 4
    pair.server.send_text(words(100))  # still usable


def test_compression_controls_without_deflate_do_nothing() -> None:
    pair = open_pair({}, None)
    assert pair.client.extensions == pair.server.extensions == ()
    data = words(2000)
    for sender, _, log in open_directions(pair):
        sender.set_compression_level(9)
        sender.enable_write_compression(True)
        events, [(frame, _)] = one_message_on_wire(pair, sender, log, True, [data])
        assert events == [expected(data, True)]
        assert frame.rsv == 0
        assert frame.payload == data


def test_setting_the_same_level_keeps_the_context() -> None:
    # Only a real change needs a fresh compressor; the same level must not
    # throw away the window that makes a repeated message cheap.
    pair = open_pair({}, {"compression_level": 5})
    data = words(5000, seed=12)
    sizes = []
    for _ in range(2):
        pair.server.set_compression_level(5)
        _, [(frame, _)] = one_message_on_wire(
            pair, pair.server, pair.server_to_client, True, [data]
        )
        sizes.append(len(frame.payload))
    assert sizes[1] < sizes[0] // 4


@pytest.mark.parametrize("nct", [False, True], ids=["takeover", "no_context_takeover"])
def test_level_change_mid_message_applies_from_the_next(nct: bool) -> None:
    pair = open_pair({"server_no_context_takeover": nct}, {"compression_level": 0})
    data = words(20_000, seed=7)
    sender, log = pair.server, pair.server_to_client
    # Level 0: stored blocks, no smaller than the data.
    events, [(frame, _)] = one_message_on_wire(pair, sender, log, True, [data])
    assert events == [expected(data, True)]
    assert len(frame.payload) >= len(data)
    # Change the level in the middle of a fragmented message...
    sender.send_text(data[:1000], fin=False)
    sender.set_compression_level(9)
    sender.send_text(data[1000:2000], fin=False)
    start = len(log)
    sender.send_text(data[2000:])
    client_events, _ = pair.transfer()
    assert client_events == [expected(data, True)]  # the current message still decodes
    assert len(wire_frames(log[start:])[-1][0].payload) >= len(data) - 2000  # still level 0
    # ... and the next messages use it.
    for _ in range(2):
        fresh = words(20_000, seed=8)
        events, [(frame, _)] = one_message_on_wire(pair, sender, log, True, [fresh])
        assert events == [expected(fresh, True)]
        assert len(frame.payload) < len(fresh) // 2, "the new level was not applied"


# -- 7. prepared messages ---------------------------------------------------------


def broadcast_pairs(n: int) -> list[ConnectionPair]:
    """A third without deflate, a third without server context takeover, a third with it."""
    pairs = []
    for i in range(n):
        if i % 3 == 0:
            pairs.append(open_pair({}, None))
        elif i % 3 == 1:
            pairs.append(open_pair({"server_no_context_takeover": True}, {}))
        else:
            pairs.append(open_pair({}, {}))
    return pairs


def test_prepared_broadcast() -> None:
    pairs = broadcast_pairs(50)
    warmup = words(4000, seed=9)
    prepared_data = words(8000, seed=10)
    after = (prepared_data.decode()[:3000] + warmup.decode()[:3000]).encode()
    # A first normal message gives the takeover connections some history.
    for pair in pairs:
        pair.server.send_text(warmup)
        assert pair.transfer()[0] == [expected(warmup, True)]
    prepared = PreparedMessage(MessageType.TEXT, prepared_data.decode())
    assert prepared.encodings == 0
    wires = []
    for index, pair in enumerate(pairs):
        start = len(pair.server_to_client)
        pair.server.send_prepared(prepared)
        client_events, _ = pair.transfer()
        assert client_events == [expected(prepared_data, True)], index
        wires.append(bytes(pair.server_to_client[start:]))
        [(frame, masked)] = wire_frames(wires[-1])
        assert not masked
        assert frame.rsv == (0 if index % 3 == 0 else RSV1)
        if index == 9:
            assert prepared.encodings == 2
    # Uncompressed, and deflate without takeover at one level and window: the
    # count does not grow with the number of connections.
    assert prepared.encodings == 2
    assert len(set(wires[0::3])) == 1
    assert len(set(wires[1::3])) == 1
    # With takeover, each connection compressed against its own history.
    assert all(len(wire) < len(wires[1]) for wire in wires[2::3])
    # Later normal messages, which refer back to the prepared one, still decode.
    for index, pair in enumerate(pairs):
        pair.server.send_text(after)
        pair.server.send_prepared(prepared)
        pair.server.send_text(after)
        want = [expected(after, True), expected(prepared_data, True), expected(after, True)]
        assert pair.transfer()[0] == want, index
    assert prepared.encodings == 2


def test_prepared_frames_are_identical_across_no_takeover_servers() -> None:
    pairs = [open_pair({"server_no_context_takeover": True}, {}) for _ in range(5)]
    prepared = PreparedMessage(MessageType.BINARY, words(5000))
    wires = []
    for pair in pairs:
        pair.server.send_prepared(prepared)
        wires.append(pair.server.data_to_send())
    assert len(set(wires)) == 1
    [(frame, _)] = wire_frames(wires[0])
    assert frame.rsv == RSV1
    assert zlib.decompressobj(-15).decompress(frame.payload + TAIL) == prepared.data


def test_prepared_below_threshold_or_disabled_is_uncompressed() -> None:
    pair = open_pair({}, {"threshold": 100})
    for data, enabled, rsv in (
        (b"x" * 99, True, 0),
        (b"x" * 100, True, RSV1),
        (b"x" * 100, False, 0),
    ):
        pair.server.enable_write_compression(enabled)
        pair.server.send_prepared(PreparedMessage(MessageType.BINARY, data))
        [(frame, _)] = wire_frames(pair.server.data_to_send())
        assert frame.rsv == rsv
        if not rsv:
            assert frame.payload == data


def test_prepared_plain_encoding_is_shared_with_and_without_deflate() -> None:
    # docs/compression.md: "connections that do not compress, or whose message
    # is below the threshold, share the plain one." The bytes are the same, so
    # one encoding serves both.
    pairs = [open_pair({}, None), open_pair({}, {}), open_pair({}, {"threshold": 1000})]
    prepared = PreparedMessage(MessageType.TEXT, "short")
    for pair in pairs:
        pair.server.send_prepared(prepared)
        [(frame, _)] = wire_frames(pair.server.data_to_send())
        assert (frame.rsv, frame.payload) == (0, b"short")
    assert prepared.encodings == 1


THREADS = 8


@pytest.mark.parametrize("role", ["server", "client"])
def test_prepared_sent_from_many_threads_at_once(
    role: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Threads that need the same missing encoding at once each compute it; all send one."""
    barrier = threading.Barrier(THREADS, timeout=10)
    calls = itertools.count()
    count_lock = threading.Lock()

    def encode_prepared(self: Any, data: bytes) -> tuple[bytes, int]:
        with count_lock:
            level = next(calls) % 10  # a different encoding in each thread, each valid
        barrier.wait()  # every thread encodes at once: the worst case
        compressor = zlib.compressobj(
            level, zlib.DEFLATED, -self.local_max_window_bits, self.memory_level
        )
        return (compressor.compress(data) + compressor.flush(zlib.Z_SYNC_FLUSH))[:-4], RSV1

    monkeypatch.setattr(pmd_module.PerMessageDeflate, "encode_prepared", encode_prepared)
    no_takeover = {"server_no_context_takeover": True, "client_no_context_takeover": True}
    pairs = [open_pair(no_takeover, {}) for _ in range(THREADS)]
    senders = [pair.server if role == "server" else pair.client for pair in pairs]
    prepared = PreparedMessage(MessageType.TEXT, words(20_000, seed=12))
    wires: dict[int, bytes] = {}
    errors: list[BaseException] = []

    def send(index: int) -> None:
        try:
            senders[index].send_prepared(prepared)  # one connection per thread
            wires[index] = senders[index].data_to_send()
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=send, args=(index,)) for index in range(THREADS)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(10)
    assert not any(thread.is_alive() for thread in threads)
    assert errors == []
    assert next(calls) == THREADS  # the worst case happened: every thread encoded
    assert prepared.encodings == 1
    sent = set()
    for index, pair in enumerate(pairs):
        [(frame, _)] = wire_frames(wires[index])
        sent.add((frame.rsv, frame.payload))
        receiver = pair.client if role == "server" else pair.server
        receiver.receive_data(wires[index])
        assert receiver.next_event() == expected(prepared.data, True)
    # Every connection sent the encoding that was stored first, and kept:
    # a later send uses it too, without encoding again.
    assert len(sent) == 1
    senders[0].send_prepared(prepared)
    [(frame, _)] = wire_frames(senders[0].data_to_send())
    assert {(frame.rsv, frame.payload)} == sent
    assert next(calls) == THREADS + 1  # only the count above: no more encoding


@pytest.mark.parametrize("client_nct", [False, True])
def test_prepared_from_clients_are_masked_with_distinct_keys(client_nct: bool) -> None:
    pairs = [open_pair({"client_no_context_takeover": client_nct}, {}) for _ in range(4)]
    data = words(3000, seed=11)
    prepared = PreparedMessage(MessageType.TEXT, data)
    keys = []
    for pair in pairs:
        for _ in range(2):
            pair.client.send_prepared(prepared)
            wire = pair.client.data_to_send()
            [(frame, masked)] = wire_frames(wire)
            assert masked
            assert frame.rsv == RSV1
            end = len(wire) - len(frame.payload)
            keys.append(wire[end - 4 : end])
            pair.server.receive_data(wire)
            assert pair.server.next_event() == expected(data, True)
    assert len(set(keys)) == len(keys)


def test_prepared_during_a_fragmented_message_is_refused() -> None:
    pair = open_pair({}, {})
    prepared = PreparedMessage(MessageType.BINARY, b"prepared" * 10)
    for sender, _, _ in open_directions(pair):
        sender.send_binary(b"first half" * 10, fin=False)
        with pytest.raises(LocalProtocolError):
            sender.send_prepared(prepared)
        sender.send_binary(b"second half" * 10)
        sender.send_prepared(prepared)
    client_events, server_events = pair.transfer()
    whole = [Message(data=b"first half" * 10 + b"second half" * 10), Message(data=prepared.data)]
    assert client_events == server_events == whole


@pytest.mark.parametrize(
    "message_type", [MessageType.PING, MessageType.PONG, MessageType.CLOSE, 99]
)
def test_prepared_message_types(message_type: int) -> None:
    with pytest.raises(LocalProtocolError):
        PreparedMessage(message_type, b"x")


# -- 8. RFC 7692 §7.2.3 examples and edge cases -----------------------------------


def to_client(pair: ConnectionPair, *frames: bytes) -> list[Event]:
    return drain(pair.client, b"".join(frames))


HELLO_RFC = bytes([0xF2, 0x48, 0xCD, 0xC9, 0xC9, 0x07, 0x00])  # §7.2.3.1


def test_rfc_7_2_3_1_a_message_compressed_in_one_and_two_frames() -> None:
    pair = open_pair({}, {})
    assert to_client(pair, serialize_frame(Opcode.TEXT, HELLO_RFC, rsv=RSV1)) == [
        Message(data="Hello")
    ]
    # "0x41 0x03 0xf2 0x48 0xcd" then "0x80 0x04 0xc9 0xc9 0x07 0x00"
    fragmented = bytes([0x41, 0x03, 0xF2, 0x48, 0xCD, 0x80, 0x04, 0xC9, 0xC9, 0x07, 0x00])
    assert to_client(pair, fragmented) == [Message(data="Hello")]


@pytest.mark.parametrize("nct", [False, True])
def test_rfc_7_2_3_2_sharing_the_lz77_window(nct: bool) -> None:
    pair = open_pair({"server_no_context_takeover": nct}, {"threshold": 0, "compression_level": 6})
    pair.server.send_text("Hello")
    pair.server.send_text("Hello")
    frames = wire_frames(pair.server.data_to_send())
    second = HELLO_RFC if nct else bytes([0xF2, 0x00, 0x11, 0x00, 0x00])
    assert [frame.payload for frame, _ in frames] == [HELLO_RFC, second]
    assert (
        to_client(pair, *(frame.serialize() for frame, _ in frames)) == [Message(data="Hello")] * 2
    )


def test_rfc_7_2_3_3_stored_block() -> None:
    pair = open_pair({}, {})
    stored = bytes([0x00, 0x05, 0x00, 0xFA, 0xFF, 0x48, 0x65, 0x6C, 0x6C, 0x6F, 0x00])
    assert to_client(pair, serialize_frame(Opcode.TEXT, stored, rsv=RSV1)) == [
        Message(data="Hello")
    ]


def test_rfc_7_2_3_4_bfinal_block_then_the_next_message() -> None:
    # "implementors can choose to flush data using DEFLATE blocks with BFINAL
    # set to 1" -- the message after it must still decode.
    pair = open_pair({}, {})
    bfinal = bytes([0xF3, 0x48, 0xCD, 0xC9, 0xC9, 0x07, 0x00, 0x00])
    events = to_client(
        pair,
        serialize_frame(Opcode.TEXT, bfinal, rsv=RSV1),
        serialize_frame(Opcode.TEXT, HELLO_RFC, rsv=RSV1),
        serialize_frame(Opcode.TEXT, HELLO_RFC, rsv=RSV1),
    )
    assert events == [Message(data="Hello")] * 3


def test_rfc_7_2_1_blocks_after_a_bfinal_block_in_one_message() -> None:
    # "An endpoint MAY use both DEFLATE blocks with the BFINAL bit set to 0 and
    # DEFLATE blocks with the BFINAL bit set to 1 [...] The next DEFLATE block
    # follows the padded data if any." -- RFC 7692 §7.2.1
    finished = zlib.compressobj(6, zlib.DEFLATED, -15)
    first = finished.compress(b"Hello, ") + finished.flush(zlib.Z_FINISH)
    pair = open_pair({}, {})
    events = to_client(pair, serialize_frame(Opcode.TEXT, first + raw_deflate(b"World"), rsv=RSV1))
    assert events == [Message(data="Hello, World")]


def test_rfc_7_2_3_5_two_deflate_blocks_in_one_message() -> None:
    pair = open_pair({}, {})
    two = bytes([0xF2, 0x48, 0x05, 0x00, 0x00, 0x00, 0xFF, 0xFF, 0xCA, 0xC9, 0xC9, 0x07, 0x00])
    assert to_client(pair, serialize_frame(Opcode.TEXT, two, rsv=RSV1)) == [Message(data="Hello")]


def test_rfc_7_2_3_6_empty_message() -> None:
    pair = open_pair({}, {"threshold": 0})
    pair.server.send_binary(b"")
    [(frame, _)] = wire_frames(pair.server.data_to_send())
    assert (frame.rsv, frame.payload) == (RSV1, b"\x00")
    events = to_client(pair, frame.serialize(), serialize_frame(Opcode.TEXT, HELLO_RFC, rsv=RSV1))
    assert events == [Message(data=b""), Message(data="Hello")]


def test_an_empty_compressed_payload_fails_or_keeps_the_context() -> None:
    # An RSV1 frame with no payload at all is not a DEFLATE stream (the empty
    # message is 0x00, §7.2.3.6). Refusing it is fine; accepting it is fine
    # too, but then the next, valid message must still decode.
    pair = open_pair({}, {})
    pair.client.receive_data(serialize_frame(Opcode.TEXT, b"", rsv=RSV1))
    try:
        first = pair.client.next_event()
    except RemoteProtocolError:
        return
    assert first == Message(data="")
    assert to_client(pair, serialize_frame(Opcode.TEXT, HELLO_RFC, rsv=RSV1)) == [
        Message(data="Hello")
    ]


# -- 9. interoperability with third-party implementations -------------------------

INTEROP_BITS = list(range(9, 16))
INTEROP_MESSAGES: list[tuple[bool, bytes, list[int]]] = [
    (True, words(3000, seed=12), []),
    (True, words(3000, seed=12), [1000, 2000]),  # the same again: back-references
    (False, random.Random(13).randbytes(2000) * 3, [5]),
    (False, bytes(70_000), []),
    (True, "é€😀".encode() * 100, [1, 2, 3]),  # fragments split characters
    (False, b"", []),
]


def their_messages(events: list[Any]) -> list[Message]:
    from websockets.frames import Opcode as WsOpcode

    out: list[Message] = []
    text = False
    parts: list[bytes] = []
    for frame in events:
        if frame.opcode in (WsOpcode.TEXT, WsOpcode.BINARY):
            text = frame.opcode is WsOpcode.TEXT
            parts = []
        elif frame.opcode is not WsOpcode.CONT:
            continue
        parts.append(bytes(frame.data))
        if frame.fin:
            out.append(expected(b"".join(parts), text))
    return out


def their_send(theirs: Any, text: bool, pieces: list[bytes]) -> None:
    first = theirs.send_text if text else theirs.send_binary
    for i, piece in enumerate(pieces):
        fin = i == len(pieces) - 1
        if i == 0:
            first(piece, fin=fin)
        else:
            theirs.send_continuation(piece, fin=fin)


def check_ws_exchange(ours: Connection, theirs: Any) -> None:
    """Send INTEROP_MESSAGES both ways between our connection and a websockets protocol."""
    for text, data, cuts in INTEROP_MESSAGES:
        send_pieces(ours, text, fragments(data, cuts))
        wire = ours.data_to_send()
        if data:
            assert wire_frames(wire)[0][0].rsv == RSV1  # really compressed
        theirs.receive_data(wire)
        assert their_messages(theirs.events_received()) == [expected(data, text)]
        their_send(theirs, text, fragments(data, cuts))
        wire = b"".join(theirs.data_to_send())
        assert wire_frames(wire)[0][0].rsv == RSV1
        assert drain(ours, wire) == [expected(data, text)]


@pytest.mark.parametrize("nct", [False, True], ids=["takeover", "no_context_takeover"])
@pytest.mark.parametrize("bits", INTEROP_BITS)
def test_interop_our_client_with_websockets_server(bits: int, nct: bool) -> None:
    pytest.importorskip("websockets")
    from websockets.extensions.permessage_deflate import (
        PerMessageDeflate as WsPerMessageDeflate,
    )
    from websockets.extensions.permessage_deflate import ServerPerMessageDeflateFactory
    from websockets.protocol import State as WsState
    from websockets.server import ServerProtocol

    theirs = ServerProtocol(extensions=[ServerPerMessageDeflateFactory()], max_size=None)
    ours = deflate_client(
        {
            "server_no_context_takeover": nct,
            "client_no_context_takeover": nct,
            "server_max_window_bits": bits,
            "client_max_window_bits": bits,
            "threshold": 0,
        },
        max_message_size=None,
    )
    theirs.receive_data(ours.data_to_send())
    [request] = theirs.events_received()
    theirs.send_response(theirs.accept(request))
    assert theirs.state is WsState.OPEN
    assert isinstance(drain(ours, b"".join(theirs.data_to_send()))[0], HandshakeResponse)
    [their_ext] = theirs.extensions
    assert isinstance(their_ext, WsPerMessageDeflate)
    assert negotiated(ours) == (
        their_ext.remote_no_context_takeover,
        their_ext.local_no_context_takeover,
        their_ext.remote_max_window_bits,
        their_ext.local_max_window_bits,
    )
    assert negotiated(ours) == (nct, nct, bits, bits)
    check_ws_exchange(ours, theirs)


@pytest.mark.parametrize("nct", [False, True], ids=["takeover", "no_context_takeover"])
@pytest.mark.parametrize("bits", INTEROP_BITS)
def test_interop_websockets_client_with_our_server(bits: int, nct: bool) -> None:
    pytest.importorskip("websockets")
    from websockets.client import ClientProtocol
    from websockets.extensions.permessage_deflate import (
        ClientPerMessageDeflateFactory,
    )
    from websockets.extensions.permessage_deflate import (
        PerMessageDeflate as WsPerMessageDeflate,
    )
    from websockets.protocol import State as WsState
    from websockets.uri import parse_uri

    theirs = ClientProtocol(
        parse_uri("ws://example.com/chat"),
        extensions=[
            ClientPerMessageDeflateFactory(
                server_no_context_takeover=nct,
                client_no_context_takeover=nct,
                server_max_window_bits=bits,
                client_max_window_bits=True,
            )
        ],
        max_size=None,
    )
    theirs.send_request(theirs.connect())
    ours = ServerConnection(
        extensions=[ServerPerMessageDeflate(client_max_window_bits=bits, threshold=0)],
        max_message_size=None,
    )
    ours.receive_data(b"".join(theirs.data_to_send()))
    assert isinstance(ours.next_event(), HandshakeRequest)
    ours.accept()
    theirs.receive_data(ours.data_to_send())
    theirs.events_received()
    assert theirs.handshake_exc is None
    assert theirs.state is WsState.OPEN
    [their_ext] = theirs.extensions
    assert isinstance(their_ext, WsPerMessageDeflate)
    assert negotiated(ours) == (nct, nct, bits, bits)
    assert (their_ext.local_max_window_bits, their_ext.remote_max_window_bits) == (bits, bits)
    check_ws_exchange(ours, theirs)


def check_wsproto_exchange(ours: Connection, theirs: Any) -> None:
    """Send INTEROP_MESSAGES both ways between our connection and a wsproto one."""
    from wsproto.events import BytesMessage, TextMessage

    kind = {True: TextMessage, False: BytesMessage}
    for text, data, cuts in INTEROP_MESSAGES:
        send_pieces(ours, text, fragments(data, cuts))
        theirs.receive_data(ours.data_to_send())
        events = list(theirs.events())
        assert all(isinstance(event, kind[text]) for event in events)
        assert events[-1].message_finished
        received = (
            b"".join(e.data.encode() for e in events)
            if text
            else b"".join(bytes(e.data) for e in events)
        )
        assert received == data
        # wsproto sends text fragments as str: cut at characters, not bytes.
        pieces: list[Any] = (
            fragments_of_text(data.decode(), cuts) if text else fragments(data, cuts)
        )
        wire = b"".join(
            theirs.send(kind[text](data=piece, message_finished=i == len(pieces) - 1))
            for i, piece in enumerate(pieces)
        )
        assert wire_frames(wire)[0][0].rsv == RSV1
        assert drain(ours, wire) == [expected(data, text)]


def fragments_of_text(text: str, cuts: list[int]) -> list[str]:
    bounds = [0, *sorted(min(cut, len(text)) for cut in cuts), len(text)]
    return [text[a:b] for a, b in itertools.pairwise(bounds)]


@pytest.mark.parametrize("nct", [False, True], ids=["takeover", "no_context_takeover"])
@pytest.mark.parametrize("bits", [9, 12, 15])
def test_interop_with_wsproto_both_roles(bits: int, nct: bool) -> None:
    pytest.importorskip("wsproto")
    from wsproto import ConnectionType, WSConnection
    from wsproto.events import AcceptConnection, Request
    from wsproto.extensions import PerMessageDeflate as WsprotoDeflate

    # Our client, their server.
    ours: Connection = deflate_client(
        {
            "server_no_context_takeover": nct,
            "client_no_context_takeover": nct,
            "server_max_window_bits": bits,
            "client_max_window_bits": bits,
            "threshold": 0,
        },
        max_message_size=None,
    )
    theirs = WSConnection(ConnectionType.SERVER)
    theirs.receive_data(ours.data_to_send())
    [request] = theirs.events()
    assert isinstance(request, Request)
    response = theirs.send(AcceptConnection(extensions=[WsprotoDeflate()]))
    assert isinstance(drain(ours, response)[0], HandshakeResponse)
    assert negotiated(ours) == (nct, nct, bits, bits)
    check_wsproto_exchange(ours, theirs)

    # Their client, our server.
    theirs = WSConnection(ConnectionType.CLIENT)
    offer = WsprotoDeflate(
        client_no_context_takeover=nct,
        client_max_window_bits=bits,
        server_no_context_takeover=nct,
        server_max_window_bits=bits,
    )
    ours = ServerConnection(
        extensions=[ServerPerMessageDeflate(threshold=0)], max_message_size=None
    )
    ours.receive_data(theirs.send(Request(host="example.com", target="/", extensions=[offer])))
    assert isinstance(ours.next_event(), HandshakeRequest)
    ours.accept()
    theirs.receive_data(ours.data_to_send())
    [accepted] = theirs.events()
    assert isinstance(accepted, AcceptConnection)
    assert negotiated(ours) == (nct, nct, bits, bits)
    check_wsproto_exchange(ours, theirs)


def test_bfinal_stream_then_more_past_the_limit_fails_with_1009() -> None:
    # After a BFINAL block, the rest of the piece still counts against the limit.
    finished = zlib.compressobj(6, zlib.DEFLATED, -15)
    first = finished.compress(b"a" * 6) + finished.flush(zlib.Z_FINISH)
    pair = open_pair({}, {})
    pair.client.max_message_size = 10
    frame = serialize_frame(Opcode.BINARY, first + raw_deflate(b"b" * 100), rsv=RSV1)
    pair.client.receive_data(frame)
    with pytest.raises(ReadLimitError):
        pair.client.next_event()
    assert sent_close_code(pair.client) == CloseCode.MESSAGE_TOO_BIG


def test_an_extension_without_prepared_keys_encodes_prepared_messages_itself() -> None:
    class Reverse(Extension):
        name = "x-reverse"
        rsv = RSV3

        def decode(
            self, data: bytes, *, rsv: int, fin: bool, text: bool, max_size: int | None
        ) -> bytes:
            return data[::-1] if rsv else data

        def encode(self, data: bytes, *, first: bool, fin: bool) -> tuple[bytes, int]:
            return data[::-1], RSV3

    sender = Connection(Role.SERVER, extensions=[Reverse()])
    receiver = Connection(Role.CLIENT, extensions=[Reverse()])
    prepared = PreparedMessage(MessageType.BINARY, b"abc")
    sender.send_prepared(prepared)
    assert prepared.encodings == 0  # the default prepared_key() shares nothing
    receiver.receive_data(sender.data_to_send())
    assert receiver.next_event() == Message(data=b"abc")


def test_prepared_message_repr() -> None:
    prepared = PreparedMessage(MessageType.TEXT, "hello")
    assert repr(prepared) == "PreparedMessage(TEXT, 5 bytes, 0 encodings)"


def test_a_message_ending_exactly_with_a_bfinal_block_keeps_the_next_one_intact() -> None:
    # Without the 0x00 the RFC's example adds (§7.2.3.4), the appended tail
    # must not be fed to a new stream, or it would swallow the next message.
    for takeover in (True, False):
        finished = zlib.compressobj(6, zlib.DEFLATED, -15)
        only_final = finished.compress(b"Hello") + finished.flush(zlib.Z_FINISH)
        pair = open_pair({}, {} if takeover else {"server_no_context_takeover": True})
        events = to_client(
            pair,
            serialize_frame(Opcode.TEXT, only_final, rsv=RSV1),
            serialize_frame(Opcode.TEXT, raw_deflate(b"World"), rsv=RSV1),
        )
        assert events == [Message(data="Hello"), Message(data="World")]
