"""Drive ``tests/interop/node/peer.mjs``, a WebSocket peer on Node's ``ws``, from the tests.

Shared by the interoperability tests of every adapter (``tests/sync``,
``tests/asyncio``). The peer echoes every message, obeys command messages
(close, ping, send fragments, send N bytes) and reports what it saw as JSON
lines on stdout; see the header of ``peer.mjs``. A thread sorts the reports
into queues by the port of each connection's client end, so a test sees its
own connection's only. Every wait has a timeout, and :class:`NodePeers`
kills its processes, so no test can hang or leave a process behind.

The tests need ``node`` and ``tests/interop/node/node_modules`` (``ws``, pinned
by ``package-lock.json``): ``make unit`` installs the latter with ``npm ci``.
When either is missing :func:`require_node` FAILS, saying so, because CI must
run these tests; set ``WSPROTO_SKIP_NODE=1`` to skip them instead, on purpose.
"""

from __future__ import annotations

import asyncio
import json
import os
import queue
import shutil
import subprocess
import threading
import time
from pathlib import Path
from typing import Any

import pytest

NODE_DIR = Path(__file__).resolve().parent / "node"
PEER = NODE_DIR / "peer.mjs"
TIMEOUT = 5.0  # the longest a report may take to come


def require_node() -> str:
    """The ``node`` executable, once ``ws`` is installed; fails (or skips) otherwise."""
    if os.environ.get("WSPROTO_SKIP_NODE") == "1":
        pytest.skip("WSPROTO_SKIP_NODE=1: Node interoperability tests skipped")
    executable = shutil.which("node")
    if executable is None:
        pytest.fail(
            "node is not installed: install Node.js and npm (apt-get install nodejs npm), "
            "then run `make unit`; or set WSPROTO_SKIP_NODE=1 to skip these tests",
            pytrace=False,
        )
    if not (NODE_DIR / "node_modules" / "ws" / "package.json").is_file():
        pytest.fail(
            f"the Node peer's packages are not installed: run `make unit`, or `npm ci` "
            f"in {NODE_DIR}; or set WSPROTO_SKIP_NODE=1 to skip these tests",
            pytrace=False,
        )
    return executable


def command_message(do: str, **fields: Any) -> str:
    """The text message that makes the peer run a command."""
    return "!" + json.dumps({"do": do, **fields})


class NodePeer:
    """A running ``peer.mjs``; its stdout reports are sorted into queues by client port."""

    def __init__(self, node: str, *args: str) -> None:
        self._queues: dict[int | None, queue.Queue[dict[str, Any] | None]] = {}
        self._lock = threading.Lock()
        self._ended = False
        # stdin is a pipe the peer watches: it exits when we do, however we end.
        self._proc = subprocess.Popen(
            [node, str(PEER), *args], stdin=subprocess.PIPE, stdout=subprocess.PIPE, cwd=NODE_DIR
        )
        self._thread = threading.Thread(target=self._read, daemon=True)
        self._thread.start()

    def _queue(self, client: int | None) -> queue.Queue[dict[str, Any] | None]:
        with self._lock:
            if client not in self._queues:
                self._queues[client] = queue.Queue()
                if self._ended:
                    self._queues[client].put(None)
            return self._queues[client]

    def _read(self) -> None:
        assert self._proc.stdout is not None
        for line in self._proc.stdout:
            try:
                report = json.loads(line)
            except ValueError:
                report = {"event": "garbage", "line": line.decode(errors="replace")}
            self._queue(report.get("client")).put(report)
        with self._lock:
            self._ended = True
            for reports in self._queues.values():
                reports.put(None)

    def reports(self, client: int | None = None) -> Reports:
        """The reports about the connection whose client end has port ``client``.

        Reports about no connection (``listening``, a failed connect) have ``None``.
        """
        return Reports(self, self._queue(client))

    def connect(self, url: str) -> None:
        """Have a client peer open a connection to ``url``."""
        assert self._proc.stdin is not None
        self._proc.stdin.write(url.encode() + b"\n")
        self._proc.stdin.flush()

    def exit_code(self) -> int:
        return self._proc.wait(TIMEOUT)

    def stop(self) -> None:
        assert self._proc.stdin is not None
        assert self._proc.stdout is not None
        self._proc.stdin.close()
        if self._proc.poll() is None:
            self._proc.kill()
        self._proc.wait(TIMEOUT)
        self._thread.join(TIMEOUT)  # the kill ended stdout
        self._proc.stdout.close()


class Reports:
    """What a Node peer reported about one connection, in order."""

    def __init__(self, peer: NodePeer, reports: queue.Queue[dict[str, Any] | None]) -> None:
        self.seen: list[dict[str, Any]] = []
        self._peer = peer
        self._reports = reports

    def expect(self, event: str, timeout: float = TIMEOUT) -> dict[str, Any]:
        """Return the next report of kind ``event``, passing over the others."""
        deadline = time.monotonic() + timeout
        while True:
            try:
                report = self._reports.get(timeout=max(0.0, deadline - time.monotonic()))
            except queue.Empty:
                pytest.fail(f"node reported no {event!r} within {timeout} s; saw {self.seen}")
            if report is None:
                self._reports.put(None)  # later calls fail the same way
                code = self._peer.exit_code()
                pytest.fail(f"node exited ({code}) before reporting {event!r}; saw {self.seen}")
            self.seen.append(report)
            if report["event"] == event:
                return report

    async def expect_async(self, event: str, timeout: float = TIMEOUT) -> dict[str, Any]:
        """:meth:`expect` for a coroutine: the event loop runs on while it waits."""
        return await asyncio.to_thread(self.expect, event, timeout)


class NodePeers:
    """The Node peers of a test module: one process per role and set of options.

    ``peers("server", *options)`` or ``peers("client", *options)`` starts one
    the first time and returns it again after; ``stop()`` ends them all.
    """

    def __init__(self, node: str) -> None:
        self._node = node
        self._peers: dict[tuple[str, ...], NodePeer] = {}
        self._ports: dict[tuple[str, ...], int] = {}

    def __call__(self, *args: str) -> NodePeer:
        if args not in self._peers:
            self._peers[args] = NodePeer(self._node, *args)
        return self._peers[args]

    def server_port(self, *options: str) -> int:
        """The port of the ``ws`` server with those options."""
        if options not in self._ports:
            self._ports[options] = self("server", *options).reports().expect("listening")["port"]
        return self._ports[options]

    def stop(self) -> None:
        for peer in self._peers.values():
            peer.stop()
