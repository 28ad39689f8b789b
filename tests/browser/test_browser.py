"""Headless Chromium's WebSocket against each adapter's real server, over loopback.

Every test runs for wsproto_sync, wsproto_asyncio and wsproto_trio: the
adapter's ``serve()`` listens on 127.0.0.1 and serves ``page.html`` on the
same port (``http_handler``), so the page's WebSocket passes the default
same-origin check. The page's functions (``connect()``, ``peer.next()``...)
run through ``page.evaluate()``; the server side is the echoing, command-
obeying peer of ``browser_helpers.py``, whose reports the tests read. Both
sides compare messages by type, size and SHA-256. Every wait has a timeout.

The browser is Debian's ``/usr/bin/chromium``, driven by playwright-core
(``tests/interop/browser.py``). Without it or node these tests skip, except
under ``CI``, where they fail.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import pytest
from browser_helpers import TIMEOUT, RunningServer, describe, digest

from interop.browser import Page
from wsproto_core import DEFAULT_MAX_MESSAGE_SIZE, CloseCode, MessageType

BIG = 8 * 1024 * 1024
BIG_TIMEOUT = 60.0  # seconds for an 8 MiB round trip, compressed, on a slow CI machine
# Characters of 1, 2, 3 and 4 bytes in turn: frame borders fall inside some
# of them (mixedText() in page.html builds the same text).
MIXED_UNIT = "a é ☃ 𝄞 😀 日本語 \U0010ffff\n"

deflate_modes = pytest.mark.parametrize("deflate", [False, True], ids=["plain", "deflate"])
kinds = pytest.mark.parametrize(
    "kind", [MessageType.TEXT, MessageType.BINARY], ids=["text", "binary"]
)


@dataclass
class Link:
    """A page connected to a server, and what each side saw of the handshake."""

    server: RunningServer
    page: Page
    opened: dict[str, Any]  # the page's: {opened, extensions, protocol}
    server_open: dict[str, Any]  # the server's "open" report

    def evaluate(self, js: str, arg: Any = None, timeout: float = TIMEOUT) -> Any:
        return self.page.evaluate(js, arg, timeout)

    def command(self, **fields: Any) -> None:
        """Have the page send the server's peer a command message."""
        self.evaluate("(fields) => peer.command(fields)", fields)


@pytest.fixture
def connect(
    serve: Callable[..., RunningServer], open_page: Callable[[str], Page]
) -> Callable[..., Link]:
    """``connect(protocols=None, **upgrader_options)``: a server, and a page connected to it."""

    def start(*, protocols: list[str] | None = None, **options: Any) -> Link:
        server = serve(**options)
        page = open_page(server.url)
        opened = page.evaluate("(protocols) => connect({ protocols })", protocols)
        assert opened["opened"], f"the WebSocket did not open: {page.logs()}"
        return Link(server, page, opened, server.reports.expect("open"))

    return start


def round_trip(link: Link, kind: MessageType, data: str | bytes) -> None:
    """Send ``data`` from the page; check the server's report and the echo."""
    binary = kind is MessageType.BINARY
    echo = link.evaluate(
        """async ([binary, data]) => {
            peer.send(binary ? fromHex(data) : data);
            const echo = await peer.next();
            return { ...(await describe(echo)), data: binary ? toHex(echo) : echo };
        }""",
        [binary, data.hex() if isinstance(data, bytes) else data],
    )
    expected = describe(kind, data)
    report = link.server.reports.expect("message")
    assert {key: report[key] for key in expected} == expected
    assert echo == {**expected, "data": data.hex() if isinstance(data, bytes) else data}


# -- the handshake ---------------------------------------------------------------------


def test_the_page_comes_from_the_websocket_port(serve, open_page):
    server = serve()
    page = open_page(server.url)
    assert page.text("h1") == "wsproto browser tests"
    # Another path gets the 404 the error hook renders (the browser asks for a favicon too).
    assert page.evaluate("async () => (await fetch('/nothing-here')).status") == 404
    assert (404, "/nothing-here") in server.refusals
    # The tests compare digests: Python and the page must hash text alike.
    assert page.evaluate("() => mixedText(1)") == MIXED_UNIT
    assert page.evaluate("(text) => sha256(text)", MIXED_UNIT * 3) == digest(MIXED_UNIT * 3)


@deflate_modes
def test_permessage_deflate_only_when_the_server_enables_it(connect, deflate):
    # Chromium always offers permessage-deflate; the server decides.
    link = connect(enable_compression=deflate)
    extensions = link.opened["extensions"]
    if deflate:
        assert extensions.split(";")[0] == "permessage-deflate"
        assert link.server_open["extensions"] == ["permessage-deflate"]
    else:
        assert extensions == ""
        assert link.server_open["extensions"] == []
    round_trip(link, MessageType.TEXT, "squeeze me ☃ " * 1000)
    round_trip(link, MessageType.BINARY, b"squeeze me too " * 1000)


def test_subprotocol_chosen_by_the_server(connect):
    link = connect(subprotocols=["superchat"], protocols=["chat", "superchat"])
    assert link.opened["protocol"] == "superchat"
    assert link.server_open["subprotocol"] == "superchat"


FROM_ELSEWHERE = """async (url) => {
    const { opened } = await connect({ url });
    if (opened) peer.ws.close(1000);
    return { opened, errors: peer.errors, closed: await peer.waitClosed() };
}"""


def test_the_default_origin_check_refuses_a_page_from_another_origin(serve, open_page):
    server, elsewhere = serve(), serve()
    page = open_page(elsewhere.url)  # another port: another origin
    result = page.evaluate(FROM_ELSEWHERE, server.ws_url)
    # The server answers 403; the browser shows its script only a failure.
    assert result == {
        "opened": False,
        "errors": 1,
        "closed": {"code": CloseCode.ABNORMAL_CLOSURE, "reason": "", "wasClean": False},
    }
    assert server.refusals == [(403, "/ws")]
    assert server.reports.drain() == []  # the handler never ran
    assert any("403" in line for line in page.logs()), page.logs()  # the console says why
    # The page may still use its own origin's server.
    assert page.evaluate(FROM_ELSEWHERE, elsewhere.ws_url)["opened"] is True


def test_check_origin_none_lets_a_page_from_another_origin_in(serve, open_page):
    server, elsewhere = serve(check_origin=None), serve()
    page = open_page(elsewhere.url)
    result = page.evaluate(FROM_ELSEWHERE, server.ws_url)
    assert result["opened"] is True
    assert result["closed"] == {"code": CloseCode.NORMAL_CLOSURE, "reason": "", "wasClean": True}
    assert server.reports.expect("open")
    assert server.refusals == []


# -- messages ---------------------------------------------------------------------------

MESSAGES = [
    pytest.param(MessageType.TEXT, "hello", id="text"),
    pytest.param(MessageType.TEXT, "", id="text-empty"),
    pytest.param(MessageType.TEXT, "héllo ☃ 𝄞 😀 日本語 \U0010ffff", id="text-utf8"),
    pytest.param(MessageType.TEXT, MIXED_UNIT * 10_000, id="text-utf8-260k"),
    pytest.param(MessageType.BINARY, bytes(range(256)), id="binary"),
    pytest.param(MessageType.BINARY, b"", id="binary-empty"),
    pytest.param(MessageType.BINARY, bytes(range(256)) * 400, id="binary-100k"),
]


@deflate_modes
def test_messages_round_trip(connect, deflate):
    link = connect(enable_compression=deflate)
    for _ in range(2):  # the second time, deflate reuses its context (context takeover)
        for param in MESSAGES:
            round_trip(link, *param.values)


@deflate_modes
@kinds
def test_several_mib_both_ways(connect, deflate, kind):
    # Random bytes (no help from deflate), or text of 1- to 4-byte characters.
    link = connect(enable_compression=deflate, max_message_size=2 * BIG)
    result = link.evaluate(
        """async ([binary, size]) => {
            const sent = binary ? randomBytes(size) : mixedText(size);
            const described = await describe(sent);
            peer.send(sent);
            return { sent: described, echo: await describe(await peer.next(60000)) };
        }""",
        [kind is MessageType.BINARY, BIG],
        BIG_TIMEOUT,
    )
    sent = result["sent"]
    assert sent["size"] >= BIG
    assert sent["binary"] is (kind is MessageType.BINARY)
    report = link.server.reports.expect("message", BIG_TIMEOUT)
    assert {key: report[key] for key in sent} == sent
    assert result["echo"] == sent


@deflate_modes
def test_the_default_read_limit_closes_with_1009(adapter, connect, deflate):
    # The handler returns on ReadLimitError while the browser is still
    # sending: the server's close must not cut short the linger that keeps
    # the 1009 from being destroyed by a TCP reset (asyncio once did).
    link = connect(enable_compression=deflate)  # 1 MiB, by default
    result = link.evaluate(
        """async (size) => {
            peer.send(randomBytes(size));
            const echo = await describe(await peer.next());
            peer.send(randomBytes(size + 1));
            return { echo: echo.size, closed: await peer.waitClosed() };
        }""",
        DEFAULT_MAX_MESSAGE_SIZE,
    )
    assert result["echo"] == DEFAULT_MAX_MESSAGE_SIZE
    error = link.server.reports.expect("error")
    assert error["code"] == CloseCode.MESSAGE_TOO_BIG
    # The server read on until the browser closed, so its Close arrived whole.
    assert result["closed"] == {"code": error["code"], "reason": error["reason"], "wasClean": True}


FRAGMENTED = "frag ☃ mént 𝄞 😀 日本 " * 50


@deflate_modes
@kinds
def test_a_message_in_7_byte_fragments_reaches_the_browser(connect, deflate, kind):
    # Most 7-byte borders cut a character: the browser must join the bytes first.
    link = connect(enable_compression=deflate)
    data: str | bytes = FRAGMENTED if kind is MessageType.TEXT else FRAGMENTED.encode()
    payload = {"text": data} if isinstance(data, str) else {"hex": data.hex()}
    link.command(do="fragments", frame=7, **payload)
    received = link.evaluate(
        "async () => { const m = await peer.next(); return typeof m === 'string' ? m : toHex(m) }"
    )
    assert link.server.reports.expect("sent") == {"event": "sent", **describe(kind, data)}
    assert received == (data if isinstance(data, str) else data.hex())


# -- control frames ---------------------------------------------------------------------


@pytest.mark.parametrize(
    "payload", [b"", b"are you there? \x00\xff", bytes(range(125))], ids=["empty", "short", "125"]
)
def test_the_browser_answers_our_ping(connect, payload):
    link = connect()
    link.command(do="ping", data=payload.hex())
    assert link.server.reports.expect("pong")["data"] == payload.hex()
    round_trip(link, MessageType.TEXT, "still open")


def test_keepalive_measures_the_browsers_round_trip(connect):
    # A read waiting 0.1 s sends a Ping; the browser's Pong sets conn.latency.
    link = connect(keepalive_interval=0.1, keepalive_timeout=TIMEOUT)
    latency = link.evaluate(
        """async () => {
            for (let i = 0; i < 20; i++) {
                await new Promise((resolve) => setTimeout(resolve, 300));  // let a Ping go
                peer.command({ do: "latency" });
                const { latency } = JSON.parse(await peer.next());
                if (latency !== null) return latency;
            }
            return null;
        }"""
    )
    assert isinstance(latency, float)
    assert latency >= 0
    round_trip(link, MessageType.TEXT, "still open")


# -- closing ----------------------------------------------------------------------------

CLOSES = [
    pytest.param(4000, "bye ☃", id="4000-reason"),
    pytest.param(CloseCode.NORMAL_CLOSURE, "", id="1000"),
    pytest.param(4999, "é" * 61 + "!", id="4999-123-byte-reason"),
]


@pytest.mark.parametrize(("code", "reason"), [*CLOSES, pytest.param(None, "", id="no-code")])
def test_the_browsers_close_reaches_the_server(connect, code, reason):
    link = connect()
    closed = link.evaluate(
        """async ([code, reason]) => {
            code === null ? peer.ws.close() : peer.ws.close(code, reason);
            return await peer.waitClosed();
        }""",
        [code, reason],
    )
    expected = CloseCode.NO_STATUS_RCVD if code is None else code
    report = link.server.reports.expect("close")
    assert (report["code"], report["reason"]) == (expected, reason)
    # The event shows our echo: the code (none for none: 1005 again), without
    # the reason, as gorilla's default close handler answers.
    assert closed == {"code": expected, "reason": "", "wasClean": True}


@pytest.mark.parametrize(
    ("code", "reason"), [*CLOSES, pytest.param(CloseCode.GOING_AWAY, "going away", id="1001")]
)
def test_the_servers_close_reaches_the_browser(connect, code, reason):
    link = connect()
    link.command(do="close", code=code, reason=reason)
    closed = link.evaluate("() => peer.waitClosed()")
    assert closed == {"code": code, "reason": reason, "wasClean": True}
    link.server.reports.expect("closed")


def test_server_shutdown_closes_with_1001(connect):
    link = connect()
    link.server.stop()  # waits for the handler, which waits for the browser's Close
    closed = link.evaluate("() => peer.waitClosed()")
    going_away = {"code": CloseCode.GOING_AWAY, "reason": "server shutting down"}
    assert closed == {**going_away, "wasClean": True}
    report = link.server.reports.expect("close")  # the browser's echo
    assert report["code"] == CloseCode.GOING_AWAY
