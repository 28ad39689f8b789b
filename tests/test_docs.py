"""The docs' code runs as written, and what is generated is up to date."""

from __future__ import annotations

import re
import socket
import subprocess
import sys
import threading
from pathlib import Path
from types import ModuleType

import pytest

import wsproto_asyncio
import wsproto_sync
import wsproto_trio
from wsproto_core import HandshakeRequest, Message, ServerConnection

DOCS = Path(__file__).parent.parent / "docs"


def python_blocks(path: Path) -> list[str]:
    return re.findall(r"```python\n(.*?)```", path.read_text(), re.S)


def echo_once(listener: socket.socket) -> None:
    """A loopback WebSocket server for one connection, built on the core."""
    sock, _ = listener.accept()
    with sock:
        conn = ServerConnection()
        while not conn.close_expected():
            data = sock.recv(65536)
            if data:
                conn.receive_data(data)
            else:
                conn.receive_eof()
            while (event := conn.next_event()) is not None:
                if isinstance(event, HandshakeRequest):
                    conn.accept()
                elif isinstance(event, Message):
                    conn.send_message(event.message_type, event.data)
            sock.sendall(conn.data_to_send())
            if not data:
                break


def test_core_guide_example_talks_to_a_real_server() -> None:
    blocks = python_blocks(DOCS / "core.md")
    assert len(blocks) == 1
    namespace: dict[str, object] = {}
    exec(compile(blocks[0], "docs/core.md", "exec"), namespace)
    with socket.create_server(("127.0.0.1", 0)) as listener:
        listener.settimeout(10)
        server = threading.Thread(target=echo_once, args=(listener,), daemon=True)
        server.start()
        fetch = namespace["fetch_one_message"]
        assert callable(fetch)
        assert fetch("127.0.0.1", listener.getsockname()[1]) == "hello"
        server.join(10)
        assert not server.is_alive()


def test_compression_guide_examples_run_in_order() -> None:
    # The guide's blocks build on each other, as a reader would run them.
    namespace: dict[str, object] = {}
    for block in python_blocks(DOCS / "compression.md"):
        exec(compile(block, "docs/compression.md", "exec"), namespace)
    prepared = namespace["tick"]
    assert getattr(prepared, "encodings", None) == 1


def test_deflate_measurement_script_runs() -> None:
    result = subprocess.run(
        [sys.executable, str(DOCS / "measure_deflate.py"), "--messages", "20", "--bomb-gib", "1"],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr
    assert "closed with 1009" in result.stdout
    assert result.stdout.count("deflate,") == 2


def test_sync_guide_examples_run(capsys: pytest.CaptureFixture[str]) -> None:
    blocks = python_blocks(DOCS / "sync.md")
    runnable = [block for block in blocks if "doctest: +SKIP" not in block]
    assert len(runnable) == 2
    namespace: dict[str, object] = {}
    exec(compile(runnable[0], "docs/sync.md", "exec"), namespace)
    server = namespace["server"]
    assert isinstance(server, wsproto_sync.Server)
    assert server.socket.fileno() == -1  # shut down, as the example says
    namespace = {}
    exec(compile(runnable[1], "docs/sync.md", "exec"), namespace)
    assert namespace["httpd"].socket.fileno() == -1  # type: ignore[attr-defined]
    printed = capsys.readouterr()
    assert printed.out.splitlines() == [
        "(<MessageType.TEXT: 1>, 'hello')",
        "(<MessageType.TEXT: 1>, 'through http.server')",
    ]
    assert '"GET /ws HTTP/1.1" 101' in printed.err  # http.server's access log


def test_asyncio_guide_example_runs(capsys: pytest.CaptureFixture[str]) -> None:
    blocks = python_blocks(DOCS / "asyncio.md")
    runnable = [block for block in blocks if "doctest: +SKIP" not in block]
    assert len(runnable) == 1
    exec(compile(runnable[0], "docs/asyncio.md", "exec"), {})
    assert capsys.readouterr().out == "(<MessageType.TEXT: 1>, 'hello')\n"


def test_trio_guide_example_runs(capsys: pytest.CaptureFixture[str]) -> None:
    blocks = python_blocks(DOCS / "trio.md")
    runnable = [block for block in blocks if "doctest: +SKIP" not in block]
    assert len(runnable) == 1
    exec(compile(runnable[0], "docs/trio.md", "exec"), {})
    assert capsys.readouterr().out == "(<MessageType.TEXT: 1>, 'hello')\n"


@pytest.mark.parametrize(
    ("guide", "module"),
    [("sync.md", wsproto_sync), ("asyncio.md", wsproto_asyncio), ("trio.md", wsproto_trio)],
)
def test_guides_name_every_public_name(guide: str, module: ModuleType) -> None:
    text = (DOCS / guide).read_text()
    if module is not wsproto_sync:  # the async guides refer to the sync one for what is shared
        text += (DOCS / "sync.md").read_text()
    missing = [name for name in module.__all__ if f"`{name}" not in text]
    assert missing == []


def test_state_diagram_is_current() -> None:
    result = subprocess.run(
        [sys.executable, str(DOCS / "gen_state_diagram.py"), "--check"],
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0, result.stdout
