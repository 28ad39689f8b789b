"""``wsproto connect``, run as a subprocess with each adapter against real servers.

The servers are ``wsproto serve`` (a subprocess) or an in-process server
that records what it saw. Every wait has a timeout; every process is killed.
"""

from __future__ import annotations

import asyncio
import re
import signal
import socket
import ssl
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

import wsproto_asyncio
import wsproto_sync as ws
from test_cli_serve import ServeProcess
from wsproto_cli.__main__ import main

ADAPTERS = ["sync", "asyncio", "trio"]
TIMEOUT = 30.0


def connect(
    *args: str, stdin: bytes = b"", adapter: str = "sync"
) -> subprocess.CompletedProcess[bytes]:
    """Run ``python -m wsproto_cli connect --adapter ADAPTER ARGS`` with ``stdin`` piped in."""
    command = [sys.executable, "-m", "wsproto_cli", "connect", "--adapter", adapter, *args]
    return subprocess.run(command, input=stdin, capture_output=True, timeout=TIMEOUT)


@pytest.fixture(scope="module")
def echo_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServeProcess]:
    log = tmp_path_factory.mktemp("connect") / "serve.log"
    server = ServeProcess("asyncio", "--compression", log_path=log)
    try:
        yield server
    finally:
        server.kill()


@contextmanager
def sync_server(
    handler: Callable[[ws.Conn], None], upgrader: ws.Upgrader | None = None
) -> Iterator[str]:
    """An in-process ``wsproto_sync`` server on 127.0.0.1; yields its URL."""
    with ws.serve(handler, "127.0.0.1", 0, upgrader=upgrader, shutdown_timeout=2) as server:
        thread = threading.Thread(target=server.serve_forever, daemon=True)
        thread.start()
        try:
            yield f"ws://127.0.0.1:{server.address[1]}/"
        finally:
            server.shutdown()
            thread.join(TIMEOUT)


def echo(conn: ws.Conn) -> None:
    try:
        while True:
            conn.write_message(*conn.read_message())
    except ws.CloseError:
        pass


# -- piped input ---------------------------------------------------------------------------


@pytest.mark.parametrize("adapter", ADAPTERS)
def test_piped_lines_are_sent_and_the_echoes_printed(
    echo_server: ServeProcess, adapter: str
) -> None:
    lines = "hello\nGrüße 👋\n\n" + "x" * 100_000 + "\nno newline at the end"
    result = connect(echo_server.ws_url(), stdin=lines.encode(), adapter=adapter)
    assert result.returncode == 0, result.stderr
    assert result.stdout.decode() == lines + "\n"
    assert result.stderr == b""
    # The server saw a clean close, after the messages.
    echo_server.wait_for_log("closed 1000 normal closure; 5 message(s) in, 5 out")


@pytest.mark.parametrize("adapter", ADAPTERS)
def test_answers_that_come_later_are_awaited(echo_server: ServeProcess, adapter: str) -> None:
    # The chat hub sends from another thread or task: its answer may follow the Pong.
    result = connect(echo_server.ws_url("/chat"), stdin=b"to everyone\n", adapter=adapter)
    assert result.returncode == 0, result.stderr
    assert result.stdout == b"to everyone\n"


@pytest.mark.parametrize("adapter", ADAPTERS)
def test_binary_mode_sends_bytes_and_prints_hex(echo_server: ServeProcess, adapter: str) -> None:
    result = connect(
        "--binary", echo_server.ws_url(), stdin=b"abc\r\n" + bytes(range(14, 54)), adapter=adapter
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.decode().splitlines() == [
        "[binary 3 bytes] 616263",
        f"[binary 40 bytes] {bytes(range(14, 46)).hex()}...",
    ]


@pytest.mark.parametrize("adapter", ADAPTERS)
def test_ping_prints_the_pong(echo_server: ServeProcess, adapter: str) -> None:
    stdin = b"/ping hello\n/ping\n//ping is text\n/ping " + b"x" * 126 + b"\n"
    result = connect(echo_server.ws_url(), stdin=stdin, adapter=adapter)
    assert result.returncode == 0, result.stderr
    assert result.stdout == b"/ping is text\n"
    notes = sorted(
        re.sub(r"after [\d.]+ ms", "after N ms", line)
        for line in result.stderr.decode().splitlines()
    )
    assert notes == [
        "a ping carries at most 125 bytes; not sent",
        "pong 'hello' after N ms",
        "pong after N ms",
    ]


# -- what is sent: headers, subprotocols ---------------------------------------------------


@pytest.mark.parametrize("adapter", ADAPTERS)
def test_headers_and_subprotocols_are_sent(adapter: str) -> None:
    seen: list[object] = []

    def record(conn: ws.Conn) -> None:
        request = conn.protocol.handshake_request  # type: ignore[attr-defined]
        seen.append((request.headers.get_all("x-token"), request.subprotocols))
        echo(conn)

    upgrader = ws.Upgrader(subprotocols=["chat.v2"])
    with sync_server(record, upgrader) as url:
        args = ["-v", "-H", "X-Token: a b", "-H", "x-token:c", "-s", "chat.v1", "-s", "chat.v2"]
        result = connect(*args, url, stdin=b"hi\n", adapter=adapter)
    assert result.returncode == 0, result.stderr
    assert result.stdout == b"hi\n"
    assert seen == [(["a b", "c"], ("chat.v1", "chat.v2"))]
    assert f"connected to {url} (HTTP 101, subprotocol chat.v2)" in result.stderr.decode()


@pytest.mark.parametrize("adapter", ADAPTERS)
def test_compression_is_offered_on_request(echo_server: ServeProcess, adapter: str) -> None:
    args = ["-v", "--compression", echo_server.ws_url()]
    result = connect(*args, stdin=b"squeeze\n", adapter=adapter)
    assert result.returncode == 0, result.stderr
    assert result.stdout == b"squeeze\n"
    assert "(HTTP 101, permessage-deflate)" in result.stderr.decode()


# -- how it ends ---------------------------------------------------------------------------


@pytest.mark.parametrize("adapter", ADAPTERS)
def test_the_servers_close_is_reported(adapter: str) -> None:
    def close_after_one(conn: ws.Conn) -> None:
        conn.write_message(*conn.read_message())
        conn.close_gracefully(4001, "go away", timeout=5)

    with sync_server(close_after_one) as url:
        command = [sys.executable, "-m", "wsproto_cli", "connect", "--adapter", adapter, url]
        process = subprocess.Popen(
            command, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE
        )
        try:
            # stdin stays open: the server's Close alone ends the client.
            assert process.stdin is not None
            process.stdin.write(b"first\n")
            process.stdin.flush()
            out, err = process.communicate(timeout=TIMEOUT)
        finally:
            process.kill()
            process.communicate()
    assert out == b"first\n"
    assert err.decode() == "closed by the server: 4001 'go away'\n"
    assert process.returncode == 1  # not a normal closure


@pytest.mark.parametrize("adapter", ADAPTERS)
def test_a_server_shutting_down_ends_the_client_with_status_0(adapter: str, tmp_path: Path) -> None:
    server = ServeProcess("trio", log_path=tmp_path / "serve.log")
    command = [sys.executable, "-m", "wsproto_cli", "connect", "--adapter", adapter]
    process = subprocess.Popen(
        [*command, server.ws_url()],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    try:
        server.wait_for_log("connected to /")
        assert server.stop(signal.SIGTERM) == 0
        out, err = process.communicate(timeout=TIMEOUT)
    finally:
        server.kill()
        process.kill()
        process.communicate()
    assert out == b""
    assert err.decode() == "closed by the server: 1001 'server shutting down'\n"
    assert process.returncode == 0


@pytest.mark.parametrize("adapter", ADAPTERS)
def test_a_message_over_max_size_fails_the_connection(adapter: str) -> None:
    def send_big(conn: ws.Conn) -> None:
        conn.read_message()
        conn.write_message(ws.MessageType.BINARY, b"x" * 2000)
        echo(conn)

    with sync_server(send_big) as url:
        result = connect("--max-size", "1000", url, stdin=b"go\n", adapter=adapter)
    assert result.returncode == 1
    assert result.stdout == b""
    assert result.stderr.decode() == (
        "closed: message larger than the read limit of 1000 bytes (sent 1009)\n"
    )


# -- errors: one line, status 1, no traceback ----------------------------------------------


def assert_one_line_error(result: subprocess.CompletedProcess[bytes], expected: str) -> None:
    err = result.stderr.decode()
    assert result.returncode == 1, err
    assert "Traceback" not in err
    assert err.count("\n") == 1, err
    assert err.startswith("wsproto connect: "), err
    assert expected in err
    assert result.stdout == b""


@pytest.fixture
def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.mark.parametrize("adapter", ADAPTERS)
def test_a_refused_connection(adapter: str, free_port: int) -> None:
    result = connect(f"ws://127.0.0.1:{free_port}/", stdin=b"hi\n", adapter=adapter)
    assert_one_line_error(result, f"cannot connect to 127.0.0.1:{free_port}: connection refused")


@pytest.mark.parametrize("adapter", ADAPTERS)
@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("ftp://example.com/", "invalid URL: 'ftp://example.com/' is not a WebSocket URI"),
        ("ws://", "invalid URL: 'ws://' has no host"),
        ("ws://127.0.0.1:99999/", "invalid URL: 'ws://127.0.0.1:99999/' has an invalid port"),
    ],
)
def test_a_bad_url(adapter: str, url: str, expected: str) -> None:
    assert_one_line_error(connect(url, adapter=adapter), expected)


@pytest.mark.parametrize("adapter", ADAPTERS)
def test_a_refused_handshake_shows_the_status(echo_server: ServeProcess, adapter: str) -> None:
    result = connect(
        "-H", "Origin: http://evil.example", echo_server.ws_url("/chat"), adapter=adapter
    )
    assert_one_line_error(result, "handshake failed: HTTP 403 Forbidden (origin not allowed)")


@pytest.mark.parametrize("adapter", ADAPTERS)
def test_a_handshake_header_of_our_own_is_refused(echo_server: ServeProcess, adapter: str) -> None:
    result = connect("-H", "Sec-WebSocket-Key: x", echo_server.ws_url(), adapter=adapter)
    assert_one_line_error(result, "the handshake sets 'Sec-WebSocket-Key' itself")


@pytest.mark.parametrize("adapter", ADAPTERS)
def test_tls_to_a_plain_server_fails(echo_server: ServeProcess, adapter: str) -> None:
    result = connect(f"wss://127.0.0.1:{echo_server.port}/", adapter=adapter)
    assert_one_line_error(result, f"TLS handshake with 127.0.0.1:{echo_server.port} failed: ")


@pytest.mark.parametrize("adapter", ADAPTERS)
def test_a_silent_server_times_out(adapter: str) -> None:
    with socket.create_server(("127.0.0.1", 0)) as listener:  # never accepts, never answers
        url = f"ws://127.0.0.1:{listener.getsockname()[1]}/"
        result = connect("--timeout", "0.5", url, stdin=b"hi\n", adapter=adapter)
    assert_one_line_error(result, f"timed out after 0.5 s connecting to {url}")


# -- TLS -----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def tls_server(certificate: tuple[Path, Path]) -> Iterator[str]:
    """A ``wss://`` echo server (wsproto_asyncio, in a thread), with a self-signed certificate."""
    cert, key = certificate
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(cert, key)
    loop = asyncio.new_event_loop()
    ready: list[str] = []
    stop = asyncio.Event()

    async def echo_async(conn: wsproto_asyncio.Conn) -> None:
        async for message in conn:
            kind = ws.MessageType.TEXT if isinstance(message, str) else ws.MessageType.BINARY
            await conn.write_message(kind, message)

    async def serve() -> None:
        async with await wsproto_asyncio.serve(
            echo_async, "127.0.0.1", 0, ssl_context=context
        ) as server:
            ready.append(f"wss://localhost:{server.address[1]}/")
            await stop.wait()

    thread = threading.Thread(target=loop.run_until_complete, args=(serve(),), daemon=True)
    thread.start()
    deadline = time.monotonic() + TIMEOUT
    while not ready:
        assert time.monotonic() < deadline
        assert thread.is_alive()
        time.sleep(0.01)
    try:
        yield ready[0]
    finally:
        loop.call_soon_threadsafe(stop.set)
        thread.join(TIMEOUT)
        loop.close()


@pytest.mark.parametrize("adapter", ADAPTERS)
def test_wss_with_the_servers_ca(
    tls_server: str, certificate: tuple[Path, Path], adapter: str
) -> None:
    result = connect(
        "--cafile", str(certificate[0]), tls_server, stdin=b"secret\n", adapter=adapter
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout == b"secret\n"
    result = connect("--insecure", tls_server, stdin=b"anyway\n", adapter=adapter)
    assert result.returncode == 0, result.stderr
    assert result.stdout == b"anyway\n"


@pytest.mark.parametrize("adapter", ADAPTERS)
def test_wss_with_an_untrusted_certificate_fails(tls_server: str, adapter: str) -> None:
    result = connect(tls_server, adapter=adapter)
    assert_one_line_error(result, "failed: self-signed certificate")


# -- usage ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "args",
    [
        [],
        ["-H", "no colon", "ws://x/"],
        ["--timeout", "0", "ws://x/"],
        ["--adapter", "x", "ws://x/"],
    ],
)
def test_usage_errors_exit_2(args: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as info:
        main(["connect", *args])
    assert info.value.code == 2
    assert "usage: wsproto connect" in capsys.readouterr().err
