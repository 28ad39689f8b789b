"""Run Autobahn|Testsuite against every adapter, as server and as client.

    python fuzz/autobahn/run.py                 # every adapter, both modes, all cases
    python fuzz/autobahn/run.py --fast          # groups 1-7 and 10 only (seconds)
    python fuzz/autobahn/run.py --slow --jobs 2 # groups 9, 12 and 13, two runs at a time
    python fuzz/autobahn/run.py --slow --adapters rotate  # one adapter, picked by the commit
    python fuzz/autobahn/run.py --adapters sync --modes server --cases "12.*"

It uses the suite's Python 3 port in ``../shared/tools/autobahn`` (run its
``setup.sh`` first: ``make autobahn`` does), starts ``peer.py`` for each
adapter, and prints the suite's one-line summary per run. It exits non-zero
unless every case of every run is OK or INFORMATIONAL: a FAILED, NON-STRICT
or UNIMPLEMENTED case, or a missing one, fails the run. Reports go to
``fuzz/autobahn/reports/<adapter>-<mode>/index.html``.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor, as_completed
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent.parent
TOOLS = Path(os.environ.get("AUTOBAHN_TOOLS", ROOT.parent / "shared" / "tools" / "autobahn"))
ADAPTERS = ["sync", "asyncio", "trio"]
MODES = ["server", "client"]
FAST = "1.*,2.*,3.*,4.*,5.*,6.*,7.*,10.*"
# The rest of the suite (there are no groups 8 and 11): limits and performance,
# and permessage-deflate. FAST and SLOW together are all 517 cases; each run of
# SLOW takes minutes, most of it real compression work on both sides.
SLOW = "9.*,12.*,13.*"
# What each INFORMATIONAL case leaves to the implementation (the suite
# cannot tell right from wrong there); docs/conformance.md explains our choices.
ACCEPTED = {"OK", "INFORMATIONAL"}


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_for_port(port: int, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1):
                return
        except OSError:
            time.sleep(0.05)
    raise TimeoutError(f"the echo server did not listen on port {port}")


def run_server_mode(adapter: str, cases: str, out: Path, timeout: int) -> tuple[Path, str]:
    port = free_port()
    peer = subprocess.Popen(
        [
            sys.executable,
            str(HERE / "peer.py"),
            "server",
            "--adapter",
            adapter,
            "--port",
            str(port),
        ],
        stdout=subprocess.DEVNULL,
    )
    try:
        wait_for_port(port)
        env = {
            **os.environ,
            "AUTOBAHN_AGENT": f"wsproto_{adapter}",
            "AUTOBAHN_TIMEOUT": str(timeout),
        }
        log = subprocess.run(
            ["bash", str(TOOLS / "run-server-suite.sh"), f"ws://127.0.0.1:{port}", cases, str(out)],
            env=env,
            check=False,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            errors="replace",
        ).stdout
    finally:
        peer.terminate()
        try:
            peer.wait(10)
        except subprocess.TimeoutExpired:
            peer.kill()
            peer.wait()
    return out / "index.json", log


def run_client_mode(adapter: str, cases: str, out: Path, timeout: int) -> tuple[Path, str]:
    command = f"{sys.executable} {HERE / 'peer.py'} client --adapter {adapter}"
    env = {**os.environ, "AUTOBAHN_AGENT": f"wsproto_{adapter}", "AUTOBAHN_TIMEOUT": str(timeout)}
    log = subprocess.run(
        ["bash", str(TOOLS / "run-client-suite.sh"), command, cases, str(out)],
        env=env,
        check=False,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        errors="replace",
    ).stdout
    return out / "index.json", log


def verdict(index: Path, agent: str) -> list[str]:
    """The cases whose behaviour or close behaviour is not acceptable."""
    if not index.is_file():
        return ["(no report: the run did not finish)"]
    results = json.loads(index.read_text())[agent]
    bad = []
    for case, result in sorted(results.items(), key=lambda item: _case_key(item[0])):
        if result["behavior"] not in ACCEPTED or result["behaviorClose"] not in ACCEPTED:
            bad.append(f"{case} ({result['behavior']}/{result['behaviorClose']})")
    return bad


def _case_key(case: str) -> tuple[int, ...]:
    return tuple(int(part) for part in case.split("."))


def rotate() -> str:
    """The adapter whose turn it is, from the commit under test.

    The slow groups take minutes per run, too long for every adapter in
    every CI run; so each run takes one adapter (both modes), and any three
    consecutive commits usually cover all three. ``make autobahn`` runs them all.
    """
    try:
        head = subprocess.run(
            ["git", "-C", str(ROOT), "rev-parse", "HEAD"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return ",".join(ADAPTERS)  # not a git checkout: no way to rotate, so all
    return ADAPTERS[int(head, 16) % len(ADAPTERS)]


def run(adapter: str, mode: str, cases: str, timeout: int) -> tuple[bool, str]:
    """One run of the suite; its verdict and what it printed."""
    out = HERE / "reports" / f"{adapter}-{mode}"
    started = time.monotonic()
    index, log = (run_server_mode if mode == "server" else run_client_mode)(
        adapter, cases, out, timeout
    )
    bad = verdict(index, f"wsproto_{adapter}")
    status = "ok" if not bad else f"{len(bad)} not OK: {', '.join(bad[:20])}"
    took = time.monotonic() - started
    return not bad, f"{log.rstrip()}\n== wsproto_{adapter} {mode}: {status} ({took:.0f} s)"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--adapters",
        default=",".join(ADAPTERS),
        help='comma-separated, or "rotate": the one whose turn it is for this commit',
    )
    parser.add_argument("--modes", default=",".join(MODES))
    parser.add_argument("--cases", default="*", help='case globs, e.g. "1.*,12.1.*"')
    which = parser.add_mutually_exclusive_group()
    which.add_argument("--fast", action="store_true", help=f"only {FAST}")
    which.add_argument("--slow", action="store_true", help=f"only {SLOW}")
    parser.add_argument("--timeout", type=int, default=1800, help="seconds per run")
    parser.add_argument(
        "--jobs", type=int, default=1, help="runs at a time (each keeps about one core busy)"
    )
    args = parser.parse_args()
    if not (TOOLS / "run-server-suite.sh").is_file():
        print(f"autobahn: {TOOLS} not found; set AUTOBAHN_TOOLS", file=sys.stderr)
        return 2
    cases = FAST if args.fast else SLOW if args.slow else args.cases
    adapters = args.adapters
    if adapters == "rotate":
        adapters = rotate()
        print(f"autobahn: {adapters}'s turn for this commit ({cases})", flush=True)
    runs = [(adapter, mode) for adapter in adapters.split(",") for mode in args.modes.split(",")]
    # Each run has its own port, report folder and processes, so runs can
    # overlap; their output is printed whole as each one ends.
    failures = 0
    with ThreadPoolExecutor(max_workers=max(1, args.jobs)) as pool:
        pending = [pool.submit(run, adapter, mode, cases, args.timeout) for adapter, mode in runs]
        for future in as_completed(pending):
            ok, report = future.result()
            print(report, flush=True)
            failures += not ok
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
