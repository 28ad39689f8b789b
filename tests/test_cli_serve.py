"""``wsproto serve``, run as a subprocess for each adapter and checked from outside.

Clients are ``wsproto_sync``'s Dialer, and ``http.client`` for the page.
Every wait has a timeout, and every process is killed at teardown.
"""

from __future__ import annotations

import http.client
import os
import re
import selectors
import signal
import socket
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

import wsproto_sync as ws
from wsproto_cli.__main__ import main
from wsproto_cli.serve import CHAT_QUEUE

ADAPTERS = ["sync", "asyncio", "trio"]
TIMEOUT = 10.0
MAX_SIZE = 1_000_000


class ServeProcess:
    """``python -m wsproto_cli serve --port 0 ...``, with its log in a file."""

    def __init__(self, adapter: str, *args: str, log_path: Path) -> None:
        self.adapter = adapter
        self.log_path = log_path
        command = [sys.executable, "-m", "wsproto_cli", "serve", "--adapter", adapter]
        with log_path.open("wb") as log:
            self.process = subprocess.Popen(
                [*command, "--host", "127.0.0.1", "--port", "0", *args],
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=log,
            )
        try:
            self.banner = self._read_line()
            match = re.search(r"http://127\.0\.0\.1:(\d+)/", self.banner)
            assert match, self.banner
            self.port = int(match.group(1))
        except BaseException:
            self.kill()
            raise

    def _read_line(self) -> str:
        assert self.process.stdout is not None
        with selectors.DefaultSelector() as selector:
            selector.register(self.process.stdout, selectors.EVENT_READ)
            if not selector.select(TIMEOUT):
                raise TimeoutError(f"no banner within {TIMEOUT} s; log: {self.log()}")
        line = self.process.stdout.readline().decode()
        if not line:
            raise RuntimeError(f"the server exited: {self.log()}")
        return line

    @property
    def http_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/"

    def ws_url(self, path: str = "/") -> str:
        return f"ws://127.0.0.1:{self.port}{path}"

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def wait_for_log(self, text: str, timeout: float = TIMEOUT) -> str:
        """Wait until the log has a line containing ``text``; return that line."""
        deadline = time.monotonic() + timeout
        while True:
            for line in self.log().splitlines():
                if text in line:
                    return line
            if time.monotonic() > deadline:
                raise AssertionError(f"{text!r} not in the log:\n{self.log()}")
            time.sleep(0.02)

    def stop(self, signum: int) -> int:
        """Send ``signum`` and return the exit status."""
        self.process.send_signal(signum)
        try:
            return self.process.wait(TIMEOUT + 5)
        finally:
            self.kill()

    def kill(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait(TIMEOUT)
        if self.process.stdout is not None:
            self.process.stdout.close()


@pytest.fixture(scope="module", params=ADAPTERS)
def server(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[ServeProcess]:
    """One server per adapter for this module, with compression and a read limit."""
    log = tmp_path_factory.mktemp("serve") / f"{request.param}.log"
    process = ServeProcess(
        request.param, "--compression", "--max-size", str(MAX_SIZE), log_path=log
    )
    try:
        yield process
    finally:
        process.kill()


def dial(url: str, headers: list[tuple[str, str]] | None = None, **options: Any) -> ws.Conn:
    options = {"proxy": None, "handshake_timeout": TIMEOUT, "max_message_size": None, **options}
    conn, _ = ws.Dialer(**options).dial(url, headers or [])
    conn.set_read_deadline(time.monotonic() + 3 * TIMEOUT)
    return conn


def read_until(conn: ws.Conn, wanted: str | bytes) -> None:
    """Read messages until ``wanted`` arrives (the chat may carry others first)."""
    while conn.read_message()[1] != wanted:
        pass


def close_code(conn: ws.Conn) -> int:
    """Read until the connection closes; return the close code."""
    try:
        while True:
            conn.read_message()
    except ws.CloseError as exc:
        return exc.code


# -- the echo ------------------------------------------------------------------------------


def test_echo_sends_text_back_as_text_and_binary_as_binary(server: ServeProcess) -> None:
    with dial(server.ws_url("/anything?x=1")) as conn:
        for message in ("héllo 👋", b"\x00\x01\xfe\xff", "", b""):
            kind = ws.MessageType.TEXT if isinstance(message, str) else ws.MessageType.BINARY
            conn.write_message(kind, message)
            assert conn.read_message() == (kind, message)
        conn.close_gracefully(timeout=TIMEOUT)


def test_echo_streams_messages_larger_than_its_pieces(server: ServeProcess) -> None:
    text = "Grüße, 你好 👋 " * 40_000  # split mid-character by the echo's pieces
    binary = os.urandom(900_000)
    assert len(text.encode()) < MAX_SIZE
    with dial(server.ws_url(), write_buffer_size=32_768) as conn:
        conn.write_message(ws.MessageType.TEXT, text)
        assert conn.read_message() == (ws.MessageType.TEXT, text)
        conn.write_message(ws.MessageType.BINARY, binary)
        assert conn.read_message() == (ws.MessageType.BINARY, binary)
        conn.close_gracefully(timeout=TIMEOUT)


def test_compression_is_negotiated_on_request(server: ServeProcess) -> None:
    text = '{"user": "ada", "text": "hello"}' * 500
    with dial(server.ws_url(), enable_compression=True) as conn:
        assert [e.name for e in conn.protocol.extensions] == ["permessage-deflate"]
        conn.write_message(ws.MessageType.TEXT, text)
        assert conn.read_message() == (ws.MessageType.TEXT, text)
        port = conn.local_addr[1]
        conn.close_gracefully(timeout=TIMEOUT)
    assert "permessage-deflate" in server.wait_for_log(f"127.0.0.1:{port} connected to /")
    with dial(server.ws_url()) as conn:  # not offered: not used
        assert not conn.protocol.extensions
        conn.close_gracefully(timeout=TIMEOUT)


@pytest.mark.parametrize("path", ["/", "/chat"])
def test_a_message_over_max_size_closes_with_1009(server: ServeProcess, path: str) -> None:
    with dial(server.ws_url(path)) as conn:
        port = conn.local_addr[1]
        conn.write_message(ws.MessageType.BINARY, b"x" * MAX_SIZE)  # at the limit: fine
        assert conn.read_message() == (ws.MessageType.BINARY, b"x" * MAX_SIZE)
        conn.write_message(ws.MessageType.BINARY, b"x" * (MAX_SIZE + 1))
        with pytest.raises(ws.CloseError) as info:
            conn.read_message()
        assert info.value.code == ws.CloseCode.MESSAGE_TOO_BIG
    line = server.wait_for_log(f"127.0.0.1:{port} disconnected from {path}")
    assert "failed, sent 1009 message too big" in line


# -- the chat hub --------------------------------------------------------------------------


def test_the_chat_hub_broadcasts_to_every_member(server: ServeProcess) -> None:
    token = uuid.uuid4().hex
    with dial(server.ws_url("/chat")) as alice, dial(server.ws_url("/chat")) as bob:
        # Each hears its own message once it is a member: then both are.
        alice.write_message(ws.MessageType.TEXT, f"alice joined {token}")
        read_until(alice, f"alice joined {token}")
        bob.write_message(ws.MessageType.TEXT, f"bob joined {token}")
        read_until(bob, f"bob joined {token}")
        read_until(alice, f"bob joined {token}")

        alice.write_message(ws.MessageType.TEXT, f"hello bob {token}")
        read_until(bob, f"hello bob {token}")
        read_until(alice, f"hello bob {token}")
        bob.write_message(ws.MessageType.BINARY, token.encode())
        read_until(alice, token.encode())
        read_until(bob, token.encode())
        port = bob.local_addr[1]
        bob.close_gracefully(timeout=TIMEOUT)
        alice.close_gracefully(timeout=TIMEOUT)
    line = server.wait_for_log(f"127.0.0.1:{port} disconnected from /chat")
    assert "closed 1000 normal closure; 2 message(s) in" in line


def test_the_chat_hub_drops_a_member_that_does_not_read(server: ServeProcess) -> None:
    def small_window(address: tuple[str, int], timeout: float | None) -> socket.socket:
        sock = socket.socket()
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)  # fills up soon
        sock.settimeout(timeout)
        sock.connect(address)
        return sock

    token = uuid.uuid4().hex
    slow = dial(server.ws_url("/chat"), net_dial=small_window)
    talker = dial(server.ws_url("/chat"))
    try:
        slow_port = slow.local_addr[1]
        talker.write_message(ws.MessageType.TEXT, token)
        read_until(talker, token)  # both joined: the talker joined last
        # The talker reads its own copies in a thread, or it would be dropped too.
        heard: list[int] = []

        def listen() -> None:
            try:
                while True:
                    talker.read_message()
                    heard.append(1)
            except (ws.WebSocketError, OSError):
                pass

        listener = threading.Thread(target=listen, daemon=True)
        listener.start()
        payload = b"m" * 16_384
        deadline = time.monotonic() + 4 * TIMEOUT
        dropped = f"127.0.0.1:{slow_port} dropped from /chat"
        sent = 0
        while dropped not in server.log():
            assert time.monotonic() < deadline, server.log()
            # Keep the talker's own lag far below CHAT_QUEUE: on a loaded machine
            # an unpaced flood got the talker dropped as well.
            if sent - len(heard) >= CHAT_QUEUE // 4:
                time.sleep(0.001)
                continue
            talker.write_message(ws.MessageType.BINARY, payload)
            sent += 1
        # The hub goes on for the others.
        sent_before = len(heard)
        talker.write_message(ws.MessageType.TEXT, f"still here {token}")
        while len(heard) <= sent_before:
            assert time.monotonic() < deadline
            time.sleep(0.01)
        # The dropped member reads what was on its way, then the Close.
        code = close_code(slow)
        assert code in (ws.CloseCode.POLICY_VIOLATION, ws.CloseCode.ABNORMAL_CLOSURE)
        talker.close_gracefully(timeout=TIMEOUT)
        listener.join(TIMEOUT)
    finally:
        slow.close()
        talker.close()


# -- the page and plain HTTP ---------------------------------------------------------------


def http_get(server: ServeProcess, path: str, method: str = "GET") -> http.client.HTTPResponse:
    connection = http.client.HTTPConnection("127.0.0.1", server.port, timeout=TIMEOUT)
    connection.request(method, path)
    response = connection.getresponse()
    response.read()
    connection.close()
    return response


def test_get_slash_returns_the_chat_page(server: ServeProcess) -> None:
    connection = http.client.HTTPConnection("127.0.0.1", server.port, timeout=TIMEOUT)
    connection.request("GET", "/")
    response = connection.getresponse()
    body = response.read().decode()
    connection.close()
    assert response.status == 200
    assert response.getheader("Content-Type") == "text/html; charset=utf-8"
    for hook in ('id="input"', 'id="send"', 'id="log"', '"message"', '"/chat"'):
        assert hook in body
    # Self-contained: nothing is loaded from elsewhere, and the policy says so.
    assert not re.search(r"""(src|href)\s*=\s*["']?(https?:)?//""", body)
    assert "default-src 'none'" in (response.getheader("Content-Security-Policy") or "")
    server.wait_for_log("HTTP GET /: 200")


@pytest.mark.parametrize(
    ("method", "path", "status"),
    [("GET", "/chat", 426), ("GET", "/nowhere", 404), ("POST", "/", 405)],
)
def test_other_http_requests_get_errors(
    server: ServeProcess, method: str, path: str, status: int
) -> None:
    assert http_get(server, path, method).status == status
    line = server.wait_for_log(f"HTTP {method} {path}: {status}")
    assert re.search(rf"127\.0\.0\.1:\d+ HTTP {method} ", line), line  # who asked


# -- logs ----------------------------------------------------------------------------------


def test_connections_are_logged_one_line_each(server: ServeProcess) -> None:
    with dial(server.ws_url("/echo"), subprotocols=["ignored"]) as conn:
        port = conn.local_addr[1]
        server.wait_for_log(f"127.0.0.1:{port} connected to /echo")
        conn.write_message(ws.MessageType.TEXT, "one")
        conn.read_message()
        conn.close_gracefully(ws.CloseCode.GOING_AWAY, "bye", timeout=TIMEOUT)
    line = server.wait_for_log(f"127.0.0.1:{port} disconnected from /echo")
    assert line.endswith("closed 1001 going away 'bye'; 1 message(s) in, 1 out")


def test_a_cross_origin_handshake_is_refused_and_logged(server: ServeProcess) -> None:
    with pytest.raises(ws.HandshakeError) as info:
        dial(server.ws_url("/chat"), [("Origin", "http://evil.example")])
    assert info.value.status_code == 403
    line = server.wait_for_log("refused GET /chat from origin http://evil.example: 403")
    assert re.search(r"127\.0\.0\.1:\d+ was refused ", line), line  # who was refused


def test_a_same_origin_handshake_is_accepted(server: ServeProcess) -> None:
    origin = f"http://127.0.0.1:{server.port}"  # what the chat page's browser sends
    with dial(server.ws_url("/chat"), [("Origin", origin)]) as conn:
        conn.close_gracefully(timeout=TIMEOUT)


# -- starting and stopping -----------------------------------------------------------------


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
@pytest.mark.parametrize("adapter", ADAPTERS)
def test_a_signal_stops_the_server_cleanly(adapter: str, signum: int, tmp_path: Path) -> None:
    server = ServeProcess(adapter, log_path=tmp_path / "serve.log")
    conns: list[ws.Conn] = []
    try:
        assert f"wsproto_{adapter}" in server.banner
        echo = dial(server.ws_url(), enable_compression=True)
        conns.append(echo)
        assert not echo.protocol.extensions  # --compression is off by default
        chat = dial(server.ws_url("/chat"))
        conns.append(chat)
        chat.write_message(ws.MessageType.TEXT, "hi")
        read_until(chat, "hi")
        # Clients keep reading, as they should, to answer the server's Close.
        codes: list[int] = []
        readers = [
            threading.Thread(target=lambda c=conn: codes.append(close_code(c)), daemon=True)
            for conn in conns
        ]
        for reader in readers:
            reader.start()
        assert server.stop(signum) == 0
        for reader in readers:
            reader.join(TIMEOUT)
        assert codes == [ws.CloseCode.GOING_AWAY] * 2
    finally:
        for conn in conns:
            conn.close()
        server.kill()
    log = server.log()
    assert "shutting down" in log
    assert "Traceback" not in log
    assert "disconnected from /: closed 1001 going away" in log
    assert "disconnected from /chat: closed 1001 going away" in log


@pytest.mark.parametrize("adapter", ADAPTERS)
def test_a_port_in_use_is_one_line_and_status_1(adapter: str) -> None:
    with socket.create_server(("127.0.0.1", 0)) as taken:
        port = taken.getsockname()[1]
        command = [sys.executable, "-m", "wsproto_cli", "serve", "--adapter", adapter]
        result = subprocess.run(
            [*command, "--port", str(port)], capture_output=True, text=True, timeout=30
        )
    assert result.returncode == 1
    assert result.stderr.startswith(f"wsproto serve: cannot listen on 127.0.0.1:{port}: ")
    assert result.stderr.count("\n") == 1
    assert result.stdout == ""


@pytest.mark.parametrize("args", [["--port", "70000"], ["--max-size", "-1"], ["--adapter", "x"]])
def test_usage_errors_exit_2(args: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as info:
        main(["serve", *args])
    assert info.value.code == 2
    assert "usage: wsproto serve" in capsys.readouterr().err
