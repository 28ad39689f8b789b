"""Drive headless Chromium from the tests, through ``tests/interop/node/browser.mjs``.

One :class:`Browser` is one Node process running playwright-core, which
launches Debian's Chromium (``/usr/bin/chromium``, never a downloaded build)
once; launching costs about a second, so share a Browser per module or
session, and open a :class:`Page` per test::

    with Browser(*require_browser()) as browser:
        alice, bob = browser.open_pages([url, url])
        alice.fill("#message", "hello")
        alice.press("#message", "Enter")
        bob.wait_for_text("#messages", "hello")
        assert bob.evaluate("() => document.title") == "chat"

Requests run concurrently in the driver, so pages may be used from several
threads. Every call has a timeout, and a failure in the page or the driver
raises :class:`BrowserError` with its message. :meth:`Browser.stop` (or
leaving ``with``) closes the browser and then kills whatever of the
driver's process tree is left, so no Chromium outlives the tests; so does
the driver itself when its stdin ends, should the test run die.

The tests need ``node``, playwright-core in ``tests/interop/node/node_modules``
(``make unit`` runs ``npm ci``) and ``/usr/bin/chromium`` (Debian: ``apt-get
install chromium``). Without node or the browser, :func:`require_browser`
skips, unless ``CI`` is set: CI must run these tests, so there it FAILS.
``WSPROTO_SKIP_NODE=1`` skips them on purpose, as it does the Node tests.
"""

from __future__ import annotations

import collections
import contextlib
import itertools
import json
import os
import shutil
import signal
import subprocess
import threading
import time
from collections.abc import Sequence
from concurrent.futures import Future
from concurrent.futures import TimeoutError as FutureTimeout
from pathlib import Path
from typing import Any

import pytest

NODE_DIR = Path(__file__).resolve().parent / "node"
DRIVER = NODE_DIR / "browser.mjs"
CHROMIUM = "/usr/bin/chromium"
TIMEOUT = 10.0  # seconds a browser call may take by default
LAUNCH_TIMEOUT = 60.0  # seconds to launch Chromium: slow on a busy CI machine
STOP_TIMEOUT = 10.0  # seconds to close the browser before we kill it
MARGIN = 5.0  # seconds we wait beyond a call's own timeout for the driver's answer


class BrowserError(AssertionError):
    """A browser call failed: an exception in the page, a timeout, or the driver died."""


def in_ci() -> bool:
    return os.environ.get("CI", "").lower() not in ("", "0", "false", "no")


def require_browser() -> tuple[str, str]:
    """``(node, chromium)``, the executables a :class:`Browser` needs.

    Skips when node or Chromium is missing, but fails under ``CI`` (where they
    must be installed); fails when playwright-core is not installed.
    """
    if os.environ.get("WSPROTO_SKIP_NODE") == "1":
        pytest.skip("WSPROTO_SKIP_NODE=1: browser tests skipped")
    node = shutil.which("node")
    missing = []
    if node is None:
        missing.append("node (Debian: apt-get install nodejs npm)")
    if not os.access(CHROMIUM, os.X_OK):
        missing.append(f"{CHROMIUM} (Debian: apt-get install chromium)")
    if missing:
        message = "browser tests need " + " and ".join(missing)
        if in_ci():
            pytest.fail(f"{message}; CI is set, so they must run", pytrace=False)
        pytest.skip(message)
    assert node is not None
    if not (NODE_DIR / "node_modules" / "playwright-core" / "package.json").is_file():
        pytest.fail(
            f"playwright-core is not installed: run `make unit`, or `npm ci` in {NODE_DIR}",
            pytrace=False,
        )
    return node, CHROMIUM


class Browser:
    """Headless Chromium, driven through ``browser.mjs``; see the module docstring.

    Args:
        node: the ``node`` executable.
        chromium: the browser's executable.
        tmpdir: where Chromium keeps its throwaway profile (default: the system's).
    """

    def __init__(self, node: str, chromium: str = CHROMIUM, *, tmpdir: Path | None = None) -> None:
        env = dict(os.environ)
        if tmpdir is not None:
            env["TMPDIR"] = str(tmpdir)  # Node's os.tmpdir(), where Playwright puts the profile
        self._ids = itertools.count(1)
        self._pending: dict[int, Future[Any]] = {}
        self._lock = threading.Lock()
        self._stderr: collections.deque[str] = collections.deque(maxlen=50)
        self._ready: Future[Any] = Future()
        self._ended = False
        # stdin is a pipe the driver watches: it closes the browser when we exit, however.
        self._proc = subprocess.Popen(
            [node, str(DRIVER), chromium],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            cwd=NODE_DIR,
            env=env,
        )
        self._threads = [
            threading.Thread(target=self._read, daemon=True),
            threading.Thread(target=self._read_stderr, daemon=True),
        ]
        for thread in self._threads:
            thread.start()
        try:
            ready = self._ready.result(LAUNCH_TIMEOUT)
        except FutureTimeout:
            ready = {"error": f"no answer in {LAUNCH_TIMEOUT} s"}
        if "error" in ready:
            self.stop()  # after which stderr has been read to its end
            raise BrowserError(f"Chromium did not start: {ready['error']}; {self._stderr_tail()}")
        self.version: str = ready["version"]

    # -- the pages -------------------------------------------------------------------

    def open(self, url: str, timeout: float = TIMEOUT) -> Page:
        """Open ``url`` in a new page, in a browser context of its own, and wait for its load."""
        return Page(self, self.call("open", timeout, url=url), url)

    def open_pages(self, urls: Sequence[str], timeout: float = TIMEOUT) -> list[Page]:
        """Open each URL in a page of its own (one user each: no shared cookies or storage)."""
        return [self.open(url, timeout) for url in urls]

    # -- the driver ------------------------------------------------------------------

    def call(self, op: str, timeout: float = TIMEOUT, **fields: Any) -> Any:
        """Send the driver a request (see ``browser.mjs``); return its answer's value."""
        future: Future[Any] = Future()
        with self._lock:
            if self._ended:
                raise BrowserError(f"the browser driver has exited; {self._stderr_tail()}")
            request_id = next(self._ids)
            self._pending[request_id] = future
            line = json.dumps({"id": request_id, "op": op, "timeout": timeout * 1000, **fields})
            assert self._proc.stdin is not None
            try:
                self._proc.stdin.write(line.encode() + b"\n")
                self._proc.stdin.flush()
            except OSError as exc:
                del self._pending[request_id]
                raise BrowserError(f"the browser driver has exited: {exc}") from None
        try:
            answer = future.result(timeout + MARGIN)
        except FutureTimeout:
            raise BrowserError(f"{op}: no answer from the browser driver in time") from None
        finally:
            with self._lock:
                self._pending.pop(request_id, None)
        if answer.get("exited"):
            raise BrowserError(f"{op}: {answer['error']}; {self._stderr_tail()}")
        if "error" in answer:
            raise BrowserError(f"{op}: {answer['error']}")
        return answer.get("value")

    def _read(self) -> None:
        assert self._proc.stdout is not None
        for line in self._proc.stdout:
            try:
                answer = json.loads(line)
            except ValueError:
                self._stderr.append(f"(stdout) {line.decode(errors='replace').rstrip()}")
                continue
            if answer.get("event") == "ready":
                self._ready.set_result(answer)
                continue
            with self._lock:
                future = self._pending.get(answer.get("id"))
            if future is not None and not future.done():
                future.set_result(answer)
        with self._lock:
            self._ended = True
            pending = list(self._pending.values())
        error = {"error": "the browser driver exited", "exited": True}
        for future in [self._ready, *pending]:
            if not future.done():
                future.set_result(error)

    def _read_stderr(self) -> None:
        assert self._proc.stderr is not None
        for line in self._proc.stderr:
            self._stderr.append(line.decode(errors="replace").rstrip())

    def _stderr_tail(self) -> str:
        return "driver stderr: " + (" | ".join(self._stderr) or "(empty)")

    # -- stopping --------------------------------------------------------------------

    def stop(self) -> None:
        """Close the browser, then kill what is left of the driver's process tree."""
        tree = _descendants(self._proc.pid)  # now, before they lose their parent
        assert self._proc.stdin is not None
        try:
            self._proc.stdin.close()  # the driver closes the browser and exits
            self._proc.wait(STOP_TIMEOUT)
        except (OSError, subprocess.TimeoutExpired):
            self._proc.kill()
            self._proc.wait(STOP_TIMEOUT)
        for pid, started in tree:  # usually gone already, with the browser
            if _start_time(pid) == started:  # the same process, not a new one with its pid
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
        # Orphans linger as zombies until init reaps them: wait, so a check
        # such as `pgrep chromium` right after the tests finds nothing.
        deadline = time.monotonic() + STOP_TIMEOUT
        while any(_start_time(pid) == started for pid, started in tree):
            if time.monotonic() > deadline:
                break
            time.sleep(0.02)
        for thread in self._threads:
            thread.join(STOP_TIMEOUT)
        for stream in (self._proc.stdout, self._proc.stderr):
            if stream is not None:
                stream.close()

    def __enter__(self) -> Browser:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()


class Page:
    """A page open in a :class:`Browser`; JS runs in it as with Playwright's ``page.evaluate``."""

    def __init__(self, browser: Browser, page_id: int, url: str) -> None:
        self.browser = browser
        self.id = page_id
        self.url = url

    def evaluate(self, js: str, arg: Any = None, timeout: float = TIMEOUT) -> Any:
        """Run ``js`` in the page and return its value (awaited, if a promise).

        ``js`` is a function expression, such as ``"async (arg) => ..."``,
        called with ``arg``, or any other expression. Arguments and values
        go through JSON.
        """
        return self._call("evaluate", timeout, js=js, arg=arg)

    def wait_for(self, js: str, arg: Any = None, timeout: float = TIMEOUT) -> Any:
        """Evaluate ``js`` (as :meth:`evaluate`) until its value is truthy; return that value."""
        return self._call("wait", timeout, js=js, arg=arg)

    def wait_for_text(self, selector: str, text: str, timeout: float = TIMEOUT) -> str:
        """Wait until the element ``selector`` shows ``text``; return all its text."""
        js = "([selector, text]) => document.querySelector(selector)?.innerText.includes(text)"
        self.wait_for(js, [selector, text], timeout)
        return self.text(selector, timeout)

    def text(self, selector: str, timeout: float = TIMEOUT) -> str:
        """The ``innerText`` of the element ``selector`` (waiting for it to exist)."""
        return str(self._call("text", timeout, selector=selector))

    def fill(self, selector: str, value: str, timeout: float = TIMEOUT) -> None:
        """Type ``value`` into the input ``selector``, replacing what it held."""
        self._call("fill", timeout, selector=selector, value=value)

    def click(self, selector: str, timeout: float = TIMEOUT) -> None:
        self._call("click", timeout, selector=selector)

    def press(self, selector: str, key: str, timeout: float = TIMEOUT) -> None:
        """Press ``key`` (``"Enter"``, ``"Control+A"``...) in the element ``selector``."""
        self._call("press", timeout, selector=selector, value=key)

    def logs(self) -> list[str]:
        """The page's console messages and uncaught errors so far, as ``"type: text"``."""
        return list(self._call("logs"))

    def close(self) -> None:
        self._call("close")

    def _call(self, op: str, timeout: float = TIMEOUT, **fields: Any) -> Any:
        return self.browser.call(op, timeout, page=self.id, **fields)


def _descendants(pid: int) -> list[tuple[int, int]]:
    """The processes below ``pid``, as ``(pid, start time)``, from ``/proc`` (Linux; else none)."""
    children: dict[int, list[tuple[int, int]]] = collections.defaultdict(list)
    for stat in Path("/proc").glob("[0-9]*/stat"):
        fields = _stat_fields(int(stat.parent.name))
        if fields:
            children[int(fields[1])].append((int(stat.parent.name), int(fields[19])))
    found, todo = [], [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            found.append(child)
            todo.append(child[0])
    return found


def _start_time(pid: int) -> int | None:
    fields = _stat_fields(pid)
    return int(fields[19]) if fields else None


def _stat_fields(pid: int) -> list[str]:
    """The fields of ``/proc/PID/stat`` after the command name; ``[]`` if gone."""
    try:
        # The command name, in parentheses, may hold spaces: the rest follows its ")".
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return []
