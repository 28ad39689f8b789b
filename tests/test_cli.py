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
    assert report.count("[ok  ]") == 7
    assert "FAIL" not in report
    assert "subprotocol 'chat.v1'" in report
    assert "SHA-256 equal" in report
    assert report.rstrip().endswith("all steps passed")


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
