"""The benchmark runs and reports; its figures are not checked (they depend on the machine)."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

from wsproto_cli import bench
from wsproto_cli.__main__ import main as wsproto_main


def test_quick_run_prints_a_figure(tmp_path: Path) -> None:
    report = tmp_path / "bench.json"
    command = [sys.executable, "-m", "wsproto_cli.bench", "--quick", "--duration", "0.2"]
    command += ["--impls", "wsproto_asyncio", "--workloads", "W2", "--json", str(report)]
    result = subprocess.run(command, capture_output=True, text=True, timeout=60, check=False)
    assert result.returncode == 0, result.stdout + result.stderr
    assert re.search(r"^W2 ", result.stdout, re.M)
    assert re.search(r"^  wsproto_asyncio +[\d,.]+ ", result.stdout, re.M), result.stdout
    cell = json.loads(report.read_text())["workloads"]["W2"]["results"]["wsproto_asyncio"]
    assert cell["error"] is None
    assert len(cell["samples"]) == 1
    assert cell["figure"] > 0


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
    assert bench.main(["--quick", "--impls", "absent"]) == 0
    out = capsys.readouterr().out
    assert "skipped" in out
    assert "wsproto_bench_absent_module is not installed" in out


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
