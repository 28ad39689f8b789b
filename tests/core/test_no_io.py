"""The sans-I/O promise: the core imports no I/O, clock, thread or event loop module.

Two independent checks: a static scan of every import statement in the core,
and what importing the core actually loads in a fresh interpreter (which
also covers h11 and anything it pulls in). ``make lint`` adds import-linter's
contract on top.
"""

from __future__ import annotations

import ast
import json
import subprocess
import sys
from pathlib import Path

import wsproto_core

FORBIDDEN = {
    "anyio",
    "asyncio",
    "concurrent",
    "multiprocessing",
    "select",
    "selectors",
    "signal",
    "socket",
    "ssl",
    "subprocess",
    "threading",
    "time",
    "trio",
}
CORE = Path(wsproto_core.__file__).parent


def imported_modules(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(), str(path))
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and not node.level and node.module:
            names.add(node.module)
    return {name.split(".")[0] for name in names}


def test_no_forbidden_import_statement() -> None:
    files = sorted(CORE.rglob("*.py"))
    assert len(files) > 10
    offenders = {str(f.relative_to(CORE)): imported_modules(f) & FORBIDDEN for f in files}
    assert {name: mods for name, mods in offenders.items() if mods} == {}


def test_importing_the_core_loads_no_forbidden_module() -> None:
    code = (
        "import json, sys; before = set(sys.modules); import wsproto_core; "
        "print(json.dumps(sorted(set(sys.modules) - before)))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], check=True, capture_output=True, text=True
    ).stdout
    loaded = {name.split(".")[0] for name in json.loads(out)}
    assert "wsproto_core" in loaded
    assert loaded & FORBIDDEN == set()


def test_the_scan_would_catch_an_offender(tmp_path: Path) -> None:
    sample = tmp_path / "sample.py"
    sample.write_text(
        "import os\nfrom socket import socket\nimport asyncio.events\nfrom . import x\n"
    )
    assert imported_modules(sample) & FORBIDDEN == {"socket", "asyncio"}
