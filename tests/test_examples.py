"""Every example in docs/examples runs, for real, over loopback, and does what it says.

Each example runs as a user runs it, ``python docs/examples/<name>.py``, in a
subprocess, with ``--port 0``; the test reads the chosen port from the first
line it prints, talks to it with ``wsproto_sync`` clients, and checks what
can be observed: messages, close codes and reasons, and what the example
logs. Every wait has a timeout, and every process started is killed, with
its process group, when the test ends.
"""

from __future__ import annotations

import contextlib
import http.client
import json
import os
import queue
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from wsproto_sync import CloseError, Conn, Dialer, MessageType, format_close_message

EXAMPLES = Path(__file__).resolve().parent.parent / "docs" / "examples"
TIMEOUT = 10.0  # seconds for any one thing to happen
ADAPTERS = ["sync", "asyncio", "trio"]
ENV = {**os.environ, "PYTHONUNBUFFERED": "1", "PYTHONUTF8": "1"}  # lines as they are printed

pytestmark = pytest.mark.skipif(
    sys.platform == "win32", reason="the tests stop examples with SIGINT"
)


def _default_sigint() -> None:
    # The examples stop on Ctrl-C; if pytest ignores SIGINT (started in the
    # background by a shell, say), its children would too.
    signal.signal(signal.SIGINT, signal.SIG_DFL)


class Example:
    """An example running in a subprocess, with the lines it prints as they come."""

    def __init__(self, name: str, *args: str) -> None:
        self.name = name
        ignored = signal.getsignal(signal.SIGINT) is signal.SIG_IGN
        self.process = subprocess.Popen(
            [sys.executable, str(EXAMPLES / name), *args],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            encoding="utf-8",
            env=ENV,
            start_new_session=True,  # its own process group: teardown kills its children too
            preexec_fn=_default_sigint if ignored else None,
        )
        self.lines: queue.Queue[str] = queue.Queue()
        self.stdout: list[str] = []
        self.stderr: list[str] = []
        self._readers = [
            threading.Thread(target=self._read, args=(self.process.stdout, True), daemon=True),
            threading.Thread(target=self._read, args=(self.process.stderr, False), daemon=True),
        ]
        for reader in self._readers:
            reader.start()

    def _read(self, stream: Any, is_stdout: bool) -> None:
        # Always drained, so an example that logs a lot never blocks on a full pipe.
        for line in stream:
            if is_stdout:
                self.stdout.append(line)
                self.lines.put(line)
            else:
                self.stderr.append(line)

    def expect(self, pattern: str, timeout: float = TIMEOUT) -> re.Match[str]:
        """Wait for a line that matches ``pattern``; skip the lines before it."""
        deadline = time.monotonic() + timeout
        while (remaining := deadline - time.monotonic()) > 0:
            try:
                line = self.lines.get(timeout=remaining)
            except queue.Empty:
                break
            if match := re.search(pattern, line):
                return match
        pytest.fail(f"{self.name} printed no line matching {pattern!r}:\n{self.report()}")

    def printed(self, pattern: str) -> bool:
        """Whether a line printed so far matches ``pattern`` (without waiting)."""
        return any(re.search(pattern, line) for line in list(self.stdout))

    def port(self) -> int:
        """The port the example listens on, from the URL in its first line."""
        return int(self.expect(r"://127\.0\.0\.1:(\d+)/").group(1))

    def interrupt(self) -> None:
        """Press Ctrl-C."""
        self.process.send_signal(signal.SIGINT)

    def wait(self) -> int:
        """Wait for the example to exit; return its exit status, with all its output read."""
        try:
            status = self.process.wait(TIMEOUT)
        except subprocess.TimeoutExpired:
            pytest.fail(f"{self.name} is still running:\n{self.report()}")
        for reader in self._readers:
            reader.join(TIMEOUT)
        return status

    def kill(self) -> None:
        """Kill the example and whatever it started, and collect its output."""
        if self.process.poll() is None:
            with contextlib.suppress(ProcessLookupError):  # it just ended
                os.killpg(self.process.pid, signal.SIGKILL)
        self.process.wait(TIMEOUT)
        for reader in self._readers:
            reader.join(TIMEOUT)
        for stream in (self.process.stdout, self.process.stderr):
            if stream is not None:
                stream.close()

    def report(self) -> str:
        return f"stdout:\n{''.join(self.stdout)}\nstderr:\n{''.join(self.stderr)}"


@pytest.fixture
def run() -> Iterator[Callable[..., Example]]:
    """Start examples; they are all killed when the test ends."""
    started: list[Example] = []

    def start(name: str, *args: str) -> Example:
        example = Example(name, *args)
        started.append(example)
        return example

    yield start
    for example in started:
        example.kill()


@pytest.fixture
def connect() -> Iterator[Callable[..., Conn]]:
    """Open client connections with deadlines on every read; all closed when the test ends."""
    opened: list[Conn] = []

    def dial(url: str, **options: Any) -> Conn:
        dialer = Dialer(handshake_timeout=TIMEOUT, proxy=None, **options)
        conn, _ = dialer.dial(url)
        conn.set_read_deadline(time.monotonic() + TIMEOUT)
        opened.append(conn)
        return conn

    yield dial
    for conn in opened:
        conn.close()


def run_client(name: str, *args: str) -> list[str]:
    """Run a client example to the end; return its output lines."""
    result = subprocess.run(
        [sys.executable, str(EXAMPLES / name), *args],
        capture_output=True,
        encoding="utf-8",
        env=ENV,
        timeout=TIMEOUT * 2,
        check=False,
    )
    assert result.returncode == 0, f"{name} failed:\n{result.stdout}\n{result.stderr}"
    return result.stdout.splitlines()


def read_text(conn: Conn) -> str:
    conn.set_read_deadline(time.monotonic() + TIMEOUT)
    message_type, data = conn.read_message()
    assert message_type is MessageType.TEXT
    assert isinstance(data, str)
    return data


def read_until(conn: Conn, wanted: Callable[[str], bool]) -> str:
    """Read text messages until one is ``wanted`` (the read deadline bounds the wait)."""
    while not wanted(message := read_text(conn)):
        pass
    return message


def close_code(conn: Conn) -> tuple[int, str]:
    """Read until the connection closes; return the close code and reason."""
    conn.set_read_deadline(time.monotonic() + TIMEOUT)
    try:
        while True:
            conn.read_message()
    except CloseError as exc:
        return exc.code, exc.text


def get(port: int, path: str) -> tuple[int, str]:
    """A plain HTTP GET to the example's port: (status, body)."""
    client = http.client.HTTPConnection("127.0.0.1", port, timeout=TIMEOUT)
    try:
        client.request("GET", path)
        response = client.getresponse()
        return response.status, response.read().decode()
    finally:
        client.close()


# -- echo: a server and a client for each adapter ----------------------------------


@pytest.mark.parametrize("adapter", ADAPTERS)
def test_echo_server_answers_every_echo_client(
    adapter: str, run: Callable[..., Example], connect: Callable[..., Conn]
) -> None:
    server = run(f"echo_{adapter}_server.py", "--port", "0")
    url = f"ws://127.0.0.1:{server.port()}/"
    for client in ADAPTERS:
        lines = run_client(f"echo_{client}_client.py", "--url", url, "hello", "wörld ✓")
        assert lines == ["sent 'hello', received 'hello'", "sent 'wörld ✓', received 'wörld ✓'"]
    assert run_client("selectors_client.py", "--url", url, "one") == [
        "received 'one'",
        "closed with 1000 ''",
    ]

    conn = connect(url)
    conn.write_message(MessageType.BINARY, b"\x00\xff" * 40_000)
    assert conn.read_message() == (MessageType.BINARY, b"\x00\xff" * 40_000)
    # Ctrl-C: the client still connected gets 1001, and the server exits cleanly.
    server.interrupt()
    assert close_code(conn) == (1001, "server shutting down")
    assert server.wait() == 0
    assert server.stderr == []


def test_echo_client_defaults_to_a_greeting(run: Callable[..., Example]) -> None:
    server = run("echo_sync_server.py", "--port", "0")
    url = f"ws://127.0.0.1:{server.port()}/"
    lines = run_client("echo_trio_client.py", "--url", url)
    assert lines == ["sent 'Hello, WebSocket!', received 'Hello, WebSocket!'"]


# -- chat ---------------------------------------------------------------------------


def test_chat_broadcasts_between_clients(
    run: Callable[..., Example], connect: Callable[..., Conn]
) -> None:
    chat = run("chat.py", "--port", "0")
    port = chat.port()
    status, page = get(port, "/")
    assert status == 200
    assert "new WebSocket" in page
    assert get(port, "/nothing")[0] == 404

    alice = connect(f"ws://127.0.0.1:{port}/ws")
    assert read_text(alice) == "guest-1 joined"
    bob = connect(f"ws://127.0.0.1:{port}/ws")
    assert read_text(bob) == "guest-2 joined"
    assert read_text(alice) == "guest-2 joined"

    alice.write_message(MessageType.TEXT, "hi, bob")
    assert read_text(alice) == read_text(bob) == "guest-1: hi, bob"
    bob.write_message(MessageType.TEXT, "hi, alice")
    assert read_text(alice) == read_text(bob) == "guest-2: hi, alice"

    alice.close_gracefully()
    assert read_text(bob) == "guest-1 left"
    carol = connect(f"ws://127.0.0.1:{port}/ws")
    assert read_text(carol) == read_text(bob) == "guest-3 joined"
    chat.interrupt()
    for each in (bob, carol):  # may see the other leave first
        assert close_code(each) == (1001, "server shutting down")
    assert chat.wait() == 0
    assert chat.stderr == []


def test_chat_drops_a_client_too_slow_to_read(
    run: Callable[..., Example], connect: Callable[..., Conn]
) -> None:
    chat = run("chat.py", "--port", "0")
    url = f"ws://127.0.0.1:{chat.port()}/ws"

    def small_window(address: tuple[str, int], timeout: float | None) -> socket.socket:
        # A tiny receive buffer: the server's sends back up after a few KiB.
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        sock.settimeout(timeout)
        sock.connect(address)
        return sock

    talker = connect(url)
    sleeper = connect(url, net_dial=small_window)  # never reads, until the end
    assert read_text(talker) == "guest-1 joined"
    assert read_text(talker) == "guest-2 joined"

    # The talker reads the room's messages as they come; the sleeper does not,
    # so its queue in the hub fills, and the hub drops it.
    big = "x" * 200_000
    for _ in range(400):  # about 80 MB at most; the drop comes after about 20 MB
        talker.write_message(MessageType.TEXT, big)
        assert read_text(talker) == f"guest-1: {big}"
        if chat.printed(r"dropped guest-2: too slow"):
            break
    else:
        pytest.fail(f"the slow client was never dropped:\n{chat.report()}")

    # The room goes on without it; no "left" message for a dropped client.
    talker.write_message(MessageType.TEXT, "still here")
    assert read_text(talker) == "guest-1: still here"
    # The sleeper gets what was on its way, then the end of the connection.
    code, _ = close_code(sleeper)
    assert code == 1006  # dropped without a closing handshake: nothing could get through
    chat.interrupt()
    assert close_code(talker) == (1001, "server shutting down")
    assert chat.wait() == 0


# -- command ------------------------------------------------------------------------

CHILD = """\
import sys
print("ready")
for line in sys.stdin:
    line = line.rstrip("\\n")
    if line == "exit":
        sys.exit(3)
    if line == "flood":
        while True:
            print("spam" * 2000)
    if line == "complain":
        print("oops", file=sys.stderr)
    else:
        print(line.upper())
"""


@pytest.fixture
def command(tmp_path: Path, run: Callable[..., Example]) -> Example:
    script = tmp_path / "child.py"
    script.write_text(CHILD)
    return run("command.py", "--port", "0", "--", sys.executable, "-u", str(script))


def test_command_streams_the_process_and_closes_with_its_exit_status(
    command: Example, connect: Callable[..., Conn]
) -> None:
    port = command.port()
    status, page = get(port, "/")
    assert status == 200
    assert "new WebSocket" in page

    conn = connect(f"ws://127.0.0.1:{port}/ws")
    pid = int(command.expect(r"pid (\d+): started").group(1))
    assert read_text(conn) == "ready"
    conn.write_message(MessageType.TEXT, "hello")  # to stdin, as a line
    assert read_text(conn) == "HELLO"  # from stdout
    conn.write_message(MessageType.TEXT, "complain")
    assert read_text(conn) == "oops"  # from stderr
    conn.write_message(MessageType.TEXT, "exit")
    assert close_code(conn) == (1000, "exit status 3")
    command.expect(rf"pid {pid}: exit status 3")
    command.interrupt()
    assert command.wait() == 0
    assert command.stderr == []


def test_command_kills_the_process_when_the_client_goes(
    command: Example, connect: Callable[..., Conn]
) -> None:
    url = f"ws://127.0.0.1:{command.port()}/ws"
    # With a closing handshake and without; and while the process writes all it
    # can, so that it is blocked on a full pipe, unread, when the client goes.
    for leave, flood in ((Conn.close_gracefully, False), (Conn.close, False), (Conn.close, True)):
        conn = connect(url)
        pid = int(command.expect(r"pid (\d+): started").group(1))
        assert read_text(conn) == "ready"
        if flood:
            conn.write_message(MessageType.TEXT, "flood")
            assert read_text(conn) == "spam" * 2000
        leave(conn)
        command.expect(rf"pid {pid}: exit status {-signal.SIGKILL}")
        with pytest.raises(ProcessLookupError):  # killed, and reaped
            os.kill(pid, 0)
    command.interrupt()
    assert command.wait() == 0


# -- filewatch ----------------------------------------------------------------------


def test_filewatch_pushes_the_file_when_it_changes(
    tmp_path: Path, run: Callable[..., Example], connect: Callable[..., Conn]
) -> None:
    watched = tmp_path / "notes <1>.txt"
    watched.write_text("first\n")
    watcher = run("filewatch.py", "--port", "0", "--interval", "0.02", str(watched))
    port = watcher.port()
    status, page = get(port, "/")
    assert status == 200
    assert "<title>notes &lt;1&gt;.txt</title>" in page
    assert get(port, "/other")[0] == 404

    conn = connect(f"ws://127.0.0.1:{port}/ws")
    assert read_text(conn) == "first\n"  # the contents, at once
    watched.write_text("second, longer\n")  # the size changes, whatever the clock's resolution
    assert read_text(conn) == "second, longer\n"
    watched.unlink()
    assert read_text(conn) == f"({watched} does not exist)"
    watched.write_text("back\n")
    assert read_text(conn) == "back\n"

    watcher.interrupt()
    assert close_code(conn) == (1001, "server shutting down")
    assert watcher.wait() == 0
    assert watcher.stderr == []


# -- the core in a selectors loop ---------------------------------------------------


def test_selectors_server_echoes_and_closes_cleanly(
    run: Callable[..., Example], connect: Callable[..., Conn]
) -> None:
    server = run("selectors_server.py", "--port", "0")
    port = server.port()
    url = f"ws://127.0.0.1:{port}/"
    assert run_client("selectors_client.py", "--url", url, "a", "bé") == [
        "received 'a'",
        "received 'bé'",
        "closed with 1000 ''",
    ]
    assert run_client("echo_asyncio_client.py", "--url", url, "via asyncio") == [
        "sent 'via asyncio', received 'via asyncio'"
    ]

    # Many echoes unread at once: the server sends what the socket takes, keeps
    # the rest, and stops reading while a MiB waits (a thread writes meanwhile).
    conn = connect(url)
    blocks = [os.urandom(500_000) for _ in range(16)]

    def write_all() -> None:
        for block in blocks:
            conn.write_message(MessageType.BINARY, block)

    writer = threading.Thread(target=write_all)
    writer.start()
    for block in blocks:
        conn.set_read_deadline(time.monotonic() + TIMEOUT)
        assert conn.read_message() == (MessageType.BINARY, block)
    writer.join(TIMEOUT)
    assert not writer.is_alive()
    conn.write_control(MessageType.CLOSE, format_close_message(1000, "bye"))
    assert close_code(conn) == (1000, "")  # the core echoed the code
    server.expect(r"closed with 1000 'bye'")

    # A plain HTTP request gets 426; a frame a client must mask, unmasked, gets 1002.
    assert get(port, "/")[0] == 426
    rude = connect(url)
    rude.net_conn().sendall(b"\x81\x02hi")
    assert close_code(rude)[0] == 1002
    server.expect(r"RemoteProtocolError")

    # Ctrl-C: 1001 to the clients still connected, and a clean exit.
    last = connect(url)
    last.write_message(MessageType.TEXT, "ping")
    assert read_text(last) == "ping"
    server.interrupt()
    assert close_code(last) == (1001, "server shutting down")
    assert server.wait() == 0
    assert server.stderr == []


# -- broadcast with prepared messages -----------------------------------------------


def test_broadcast_encodes_each_tick_once_per_parameter_set(
    run: Callable[..., Example], connect: Callable[..., Conn]
) -> None:
    ticker = run("broadcast.py", "--port", "0", "--interval", "0.02")
    port = ticker.port()
    status, page = get(port, "/")
    assert status == 200
    assert "new WebSocket" in page
    url = f"ws://127.0.0.1:{port}/ws"

    def tick(conn: Conn, clients: int) -> dict[str, Any]:
        message = read_until(conn, lambda text: json.loads(text)["clients"] == clients)
        return dict(json.loads(message))

    # Three clients without compression: one encoding per tick, whatever their number.
    plain = [connect(url) for _ in range(3)]
    ticker.expect(r"tick \d+: 3 clients, encodings: 1$")
    # Three more, with compression: one more encoding, shared by the three.
    deflate = [connect(url, enable_compression=True) for _ in range(3)]
    assert all(conn.protocol.extensions for conn in deflate)
    assert not any(conn.protocol.extensions for conn in plain)
    ticker.expect(r"tick \d+: 6 clients, encodings: 2$")

    ticks = [tick(conn, 6) for conn in plain + deflate]
    assert all(set(each["prices"]) == {"ACME", "GLOBEX", "INITECH", "UMBRELLA"} for each in ticks)
    ticker.interrupt()
    for conn in plain + deflate:
        assert close_code(conn) == (1001, "server shutting down")
    assert ticker.wait() == 0
    assert ticker.stderr == []
