"""The ``wsproto`` command."""

from __future__ import annotations

import io
import subprocess
import sys

import pytest

from wsproto_cli.__main__ import main
from wsproto_cli.demo import run_demo


def test_demo_reports_every_step() -> None:
    out = io.StringIO()
    assert run_demo(out) == 0
    report = out.getvalue()
    assert report.count("[ok  ]") == 7 + 3 * 7  # the core in memory, then each adapter
    assert "FAIL" not in report
    for adapter in ("wsproto_sync", "wsproto_asyncio", "wsproto_trio"):
        assert f"{adapter}: a server and a client over loopback" in report
    assert report.count("subprotocol 'chat.v1'") == 4
    assert report.count("SHA-256 equal") == 4
    assert report.count("server saw 1000; both sides closed") == 3
    assert report.rstrip().endswith("all steps passed")


def test_demo_reports_a_failing_adapter_without_crashing(monkeypatch: pytest.MonkeyPatch) -> None:
    def broken() -> object:
        raise ConnectionRefusedError("no server")

    monkeypatch.setattr("wsproto_cli.demo_adapters.run_trio", broken)
    out = io.StringIO()
    assert run_demo(out) == 1
    report = out.getvalue()
    assert "[FAIL] run" in report
    assert "ConnectionRefusedError: no server" in report
    assert report.rstrip().endswith("1 step(s) failed")


def test_demo_command_exits_zero() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "wsproto_cli", "demo"], capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stderr
    assert "all steps passed" in result.stdout


def test_unknown_command_is_a_usage_error(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as info:
        main(["nonsense"])
    assert info.value.code == 2
    assert "invalid choice" in capsys.readouterr().err


def test_main_runs_the_demo(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["demo"]) == 0
    assert "all steps passed" in capsys.readouterr().out


def test_a_reader_that_goes_away_stops_the_command_quietly() -> None:
    # `wsproto demo | head -1`: the pipe breaks after the first line.
    with subprocess.Popen(
        [sys.executable, "-m", "wsproto_cli", "demo"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    ) as process:
        assert process.stdout is not None
        assert process.stderr is not None
        assert process.stdout.readline()
        process.stdout.close()
        stderr = process.stderr.read()
        status = process.wait(timeout=120)
    assert status == 1
    assert b"Traceback" not in stderr, stderr.decode(errors="replace")
