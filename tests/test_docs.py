"""The docs' code runs as written, and what is generated is up to date.

The adapter guides (core, compression, sync, asyncio, trio) are run block by
block below. Every other page follows one convention, set by an HTML comment
on the line before a fenced Python block:

- no comment: the block is compiled (top-level ``await`` allowed), not run;
- ``<!-- test: run -->``: the block runs as a script in a fresh interpreter,
  in an empty directory, and must exit with 0 (its asserts are the test);
  ``<!-- test: run tls -->`` puts a certificate for ``localhost`` there
  first, as ``cert.pem`` and ``key.pem``;
- ``<!-- test: program NAME -->``: the block is the program ``NAME``, which a
  test below runs together with others (the tutorial's servers and clients);
- ``<!-- test: skip -->``: not even compiled (a fragment).
"""

from __future__ import annotations

import ast
import os
import queue
import re
import shutil
import signal
import socket
import subprocess
import sys
import threading
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType

import pytest

import wsproto_asyncio
import wsproto_core
import wsproto_sync
import wsproto_trio
from wsproto_core import HandshakeRequest, Message, ServerConnection

DOCS = Path(__file__).parent.parent / "docs"
# The guides that the tests above run block by block, each in its own way.
GUIDES = {"core.md", "compression.md", "sync.md", "asyncio.md", "trio.md"}
TIMEOUT = 120  # seconds for any one snippet or program: a hang fails, it never blocks


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


# The pages' marked snippets (see the module docstring).

MARKED_BLOCK = re.compile(
    r"(?:<!-- test: (?P<marker>[^>]*?) -->\n)?```python\n(?P<code>.*?)```", re.S
)


@dataclass(frozen=True)
class Snippet:
    page: str
    line: int
    marker: str
    code: str

    def __str__(self) -> str:
        return f"{self.page}:{self.line}"


def pages() -> list[Path]:
    return sorted(path for path in DOCS.rglob("*.md") if path.name not in GUIDES)


def snippets(page: Path) -> list[Snippet]:
    text = page.read_text()
    return [
        Snippet(
            page=str(page.relative_to(DOCS)),
            line=text.count("\n", 0, match.start("code")) + 1,
            marker=match["marker"] or "",
            code=match["code"],
        )
        for match in MARKED_BLOCK.finditer(text)
    ]


ALL_SNIPPETS = [snippet for page in pages() for snippet in snippets(page)]
RUNNABLE = [snippet for snippet in ALL_SNIPPETS if snippet.marker.split()[:1] == ["run"]]
PROGRAMS = {
    snippet.marker.split()[1]: snippet
    for snippet in ALL_SNIPPETS
    if snippet.marker.split()[:1] == ["program"]
}


def test_markers_are_known() -> None:
    unknown = [
        f"{snippet}: {snippet.marker!r}"
        for snippet in ALL_SNIPPETS
        if snippet.marker
        and snippet.marker not in ("skip", "run", "run tls")
        and not re.fullmatch(r"program \S+\.py", snippet.marker)
    ]
    assert unknown == []


@pytest.mark.parametrize("snippet", [s for s in ALL_SNIPPETS if s.marker != "skip"], ids=str)
def test_python_blocks_compile(snippet: Snippet) -> None:
    compile(snippet.code, snippet.page, "exec", flags=ast.PyCF_ALLOW_TOP_LEVEL_AWAIT)


@pytest.mark.parametrize("snippet", RUNNABLE, ids=str)
def test_runnable_blocks_run(
    snippet: Snippet, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    if snippet.marker == "run tls":
        cert, key = request.getfixturevalue("certificate")
        shutil.copy(cert, tmp_path / "cert.pem")
        shutil.copy(key, tmp_path / "key.pem")
    script = tmp_path / "snippet.py"
    # Blank lines first, so that a traceback's line numbers are the page's.
    script.write_text("\n" * (snippet.line - 1) + snippet.code)
    result = subprocess.run(
        [sys.executable, str(script)],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=TIMEOUT,
        check=False,
    )
    assert result.returncode == 0, f"{snippet} failed:\n{result.stdout}\n{result.stderr}"


def next_line(process: subprocess.Popen[str]) -> str:
    """The next line the process prints, waiting at most TIMEOUT seconds."""
    lines: queue.Queue[str] = queue.Queue()
    assert process.stdout is not None
    reader = threading.Thread(target=lambda: lines.put(process.stdout.readline()), daemon=True)
    reader.start()
    try:
        return lines.get(timeout=TIMEOUT)
    except queue.Empty:
        pytest.fail("the server printed nothing more")


@pytest.mark.parametrize("adapter", ["sync", "asyncio", "trio"])
def test_tutorial_server_and_client_talk(adapter: str, tmp_path: Path) -> None:
    for role in ("server", "client"):
        snippet = PROGRAMS[f"{adapter}_{role}.py"]
        (tmp_path / f"{role}.py").write_text("\n" * (snippet.line - 1) + snippet.code)
    server = subprocess.Popen(
        [sys.executable, "server.py"],
        cwd=tmp_path,
        env={**os.environ, "PORT": "0"},  # any free port; the server says which
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        listening = next_line(server)
        url = re.fullmatch(r"listening on (ws://127\.0\.0\.1:\d+/)\n", listening)
        assert url is not None, listening
        client = subprocess.run(
            [sys.executable, "client.py", url[1]],
            cwd=tmp_path,
            capture_output=True,
            text=True,
            timeout=TIMEOUT,
            check=False,
        )
        assert client.returncode == 0, client.stderr
        assert client.stdout == "connected: HTTP 101\nreceived 'hello'\n"
        left = "client left with code 1000" if adapter == "sync" else "client left"
        assert next_line(server) == left + "\n"  # the handler saw the Close
        server.send_signal(signal.SIGINT)  # Ctrl-C, as the tutorial says
        out, err = server.communicate(timeout=TIMEOUT)
    finally:
        if server.poll() is None:
            server.kill()
            server.communicate(timeout=TIMEOUT)
    assert server.returncode == 0, err
    assert out == "shutting down\n"


def test_every_program_is_run() -> None:
    tutorial = {
        f"{adapter}_{role}.py"
        for adapter in ("sync", "asyncio", "trio")
        for role in ("server", "client")
    }
    assert set(PROGRAMS) == tutorial


# The reference pages: every public name has its entry (mkdocs --strict checks the links).


def test_core_reference_has_an_entry_per_public_name() -> None:
    text = (DOCS / "reference" / "wsproto_core.md").read_text()
    entries = re.findall(r"^::: wsproto_core\.(\w+)$", text, re.M)
    assert sorted(entries) == sorted(wsproto_core.__all__)


@pytest.mark.parametrize("module", [wsproto_sync, wsproto_asyncio, wsproto_trio])
def test_adapter_reference_renders_or_links_every_public_name(module: ModuleType) -> None:
    text = (DOCS / "reference" / f"{module.__name__}.md").read_text()
    rendered = re.findall(r"^        - (\w+)$", text, re.M)
    linked = re.findall(r"\]\[wsproto_(?:core|common)\.(\w+)\]", text)
    assert sorted(rendered + linked) == sorted(module.__all__)
