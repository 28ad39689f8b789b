"""The README's examples run as written."""

from __future__ import annotations

import re
from pathlib import Path

README = Path(__file__).parent.parent / "README.md"


def test_readme_core_example_runs() -> None:
    blocks = re.findall(r"```python\n(.*?)```", README.read_text(), re.S)
    assert blocks, "the README lost its example"
    exec(compile(blocks[0], "README.md", "exec"), {})


def test_readme_names_the_two_setup_commands() -> None:
    text = README.read_text()
    head = text[: text.index("## ")]
    assert "make demo" in head
    assert "make test" in head
