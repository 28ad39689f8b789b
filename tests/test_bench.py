"""The benchmark runs and reports; its figures are not checked (they depend on the machine).

A short smoke: tiny durations, a few connections, a few cells.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

from wsproto_cli import bench
from wsproto_cli.__main__ import main as wsproto_main

QUICK = ["--quick", "--duration", "0.05", "--connections", "20"]


def run(*arguments: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    command = [sys.executable, "-m", "wsproto_cli.bench", *QUICK, *arguments]
    return subprocess.run(command, capture_output=True, text=True, timeout=timeout, check=False)


def test_quick_run_of_every_kind_of_workload(tmp_path: Path) -> None:
    report = tmp_path / "bench.json"
    result = run(
        "--impls", "wsproto_core", "wsproto_asyncio",
        "--workloads", "W1", "W2", "W5", "W6", "broadcast",
        "--json", str(report),
    )  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr
    out = result.stdout
    # The table: a section per metric, a row per implementation measured.
    for metric in ("W1 parse 16 B", "W1 parse 1 MiB", "W1 send 1 KiB masked", "W2", "W6"):
        assert re.search(rf"^{metric}  .*\[", out, re.M), out
    assert re.search(r"^  wsproto_core +[\d,.]+ +[\d,.]+ ", out, re.M), out  # msg/s and MB/s
    assert re.search(r"^  wsproto_asyncio +[\d,.]+ ", out, re.M), out
    assert re.search(r"^  n/a \(measures sans-I/O layers\): wsproto_asyncio$", out, re.M), out
    # The progress, on stderr: each cell, k of n.
    assert re.search(r"^\[1/5\] W1 wsproto_core: [\d,.]+ msg/s", result.stderr, re.M)

    workloads = json.loads(report.read_text())["workloads"]
    w1 = workloads["W1"]["results"]["wsproto_core"]
    assert w1["error"] is None
    assert len(w1["metrics"]) == 5
    assert all(metric["figure"] > 0 for metric in w1["metrics"].values())
    assert workloads["W1"]["results"]["wsproto_asyncio"]["not_applicable"]
    w2 = workloads["W2"]["results"]["wsproto_asyncio"]
    assert w2["error"] is None
    assert len(w2["samples"]) == 1
    assert w2["figure"] > 0
    w5 = workloads["W5"]["results"]["wsproto_asyncio"]["metrics"]
    assert isinstance(w5["W5 memory"]["figure"], float)  # growth may be ~0 for 20 connections
    assert w5["W5 handshakes"]["figure"] > 0
    assert workloads["W6"]["results"]["wsproto_asyncio"]["figure"] > 0
    broadcast = workloads["broadcast"]["results"]["wsproto_asyncio"]["metrics"]
    assert broadcast["broadcast server"]["figure"] > 0
    assert broadcast["broadcast encodings"]["figure"] == 1  # one for all 20 connections


def test_trio_and_node_clients() -> None:
    result = run("--impls", "wsproto_trio", "node_ws", "--workloads", "W2")
    assert result.returncode == 0, result.stdout + result.stderr
    assert re.search(r"^  wsproto_trio +[\d,.]+ ", result.stdout, re.M), result.stdout
    if bench.IMPLS["node_ws"].unavailable() is None:
        assert re.search(r"^  node_ws +[\d,.]+ ", result.stdout, re.M), result.stdout
    else:
        assert re.search(r"^  node_ws +skipped ", result.stdout, re.M), result.stdout


def test_uvloop_runs_the_asyncio_implementations() -> None:
    pytest.importorskip("uvloop")
    result = run("--loop", "uvloop", "--impls", "wsproto_asyncio", "aiohttp", "--workloads", "W2")
    assert result.returncode == 0, result.stdout + result.stderr
    assert re.search(r"; asyncio event loop: uvloop [\d.]+$", result.stdout.splitlines()[0])
    assert re.search(r"^  wsproto_asyncio +[\d,.]+ ", result.stdout, re.M), result.stdout


def test_raw_tcp_is_the_limit_not_a_peer() -> None:
    result = run("--impls", "raw_tcp", "websockets_sync", "--workloads", "W4", "W5")
    assert result.returncode == 0, result.stdout + result.stderr
    out = result.stdout
    assert re.search(r"^  raw_tcp +[\d,.]+ ", out, re.M), out
    assert "vs best peer (websockets_sync)" in out  # never raw_tcp, however fast
    assert re.search(r"^  n/a \(not WebSocket\): raw_tcp$", out, re.M), out


def test_w2_references_run_w2_only() -> None:
    # The floors of an awaited read, and the core answering from asyncio's callbacks.
    references = ("raw_asyncio", "raw_trio", "core_callbacks")
    result = run("--impls", *references, "aiohttp", "--workloads", "W2", "W3")
    assert result.returncode == 0, result.stdout + result.stderr
    out = result.stdout
    for key in references:  # a figure, not an error (a peer's error passes)
        assert re.search(rf"^  {key} +[\d,.]+ ", out, re.M), out
    assert "vs best peer (aiohttp)" in out  # none is a peer
    assert re.search(
        r"^  n/a \(runs W2 only\): raw_asyncio, raw_trio, core_callbacks$", out, re.M
    ), out


def test_ratios_follow_the_direction_of_each_metric() -> None:
    workload = bench.WORKLOADS["W5"]
    impls = [bench.IMPLS[key] for key in ("wsproto_asyncio", "websockets", "aiohttp")]
    figures = {
        "wsproto_asyncio": (10.0, 3000.0),
        "websockets": (20.0, 1000.0),
        "aiohttp": (40.0, 2000.0),
    }
    results = {"W5": {}}
    for key, (memory, handshakes) in figures.items():
        samples = {"W5 memory": [memory], "W5 handshakes": [handshakes]}
        results["W5"][key] = bench.Result("W5", key, samples)
    table = bench.format_report([workload], impls, results, bench.Settings(), "websockets")
    # Memory: lower is better, so half the baseline's is 2x; the best peer is websockets.
    assert re.search(r"^  wsproto_asyncio +10 +- +2\.00x +2\.00x$", table, re.M), table
    assert "vs best peer (websockets)" in table
    # Handshakes: higher is better; the best peer is aiohttp.
    assert re.search(r"^  wsproto_asyncio +3,000 +- +3\.00x +1\.50x$", table, re.M), table
    assert "vs best peer (aiohttp)" in table


def test_missing_package_is_skipped_with_a_note(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    absent = bench.Impl(
        "absent",
        "absent-package",
        ("wsproto_bench_absent_module",),
        False,
        serve=lambda options, ready: None,
        connect=bench.sync_session(lambda url, options, timeout: pytest.fail("connected")),
    )
    monkeypatch.setitem(bench.IMPLS, "absent", absent)
    assert bench.main(["--quick", "--impls", "absent", "--workloads", "W1", "W2"]) == 0
    out = capsys.readouterr().out
    assert re.search(r"^  absent +skipped +wsproto_bench_absent_module is not installed", out, re.M)
    assert "n/a (measures sans-I/O layers): absent" in out


@pytest.mark.parametrize("ours", [False, True], ids=["peer", "ours"])
def test_only_our_failures_fail_the_run(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], ours: bool
) -> None:
    # The server process doesn't know this implementation, so it never starts.
    failing = bench.Impl(
        "failing",
        "failing-package",
        (),
        ours,
        serve=lambda options, ready: None,
        connect=bench.sync_session(lambda url, options, timeout: pytest.fail("connected")),
    )
    monkeypatch.setitem(bench.IMPLS, "failing", failing)
    status = bench.main(["--quick", "--impls", "failing", "--workloads", "W2"])
    captured = capsys.readouterr()
    assert re.search(
        r"^  failing +error +BenchError: the failing server did not start", captured.out, re.M
    )
    if ours:
        assert status == 1
        assert "peers that failed" not in captured.err
    else:
        assert status == 0  # the peer's failure is in the table, and named
        assert "peers that failed a measurement (see the table): failing (W2)" in captured.err


def test_unknown_names_are_usage_errors(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as info:
        wsproto_main(["bench", "--workloads", "W99"])
    assert info.value.code == 2
    assert "unknown workloads: W99" in capsys.readouterr().err


def test_list(capsys: pytest.CaptureFixture[str]) -> None:
    assert wsproto_main(["bench", "--list"]) == 0
    out = capsys.readouterr().out
    for key in [*bench.WORKLOADS, *bench.IMPLS]:
        assert re.search(rf"^{key} ", out, re.M)
