"""Shrink a target's corpus to the inputs that add coverage, keeping the seeds.

    python fuzz/minimize.py                  # every target
    python fuzz/minimize.py frames deflate   # some of them
    python fuzz/minimize.py --check          # exit 1 if a corpus would shrink

libFuzzer's own ``-merge=1`` finds no coverage under atheris (its inner runs
are not instrumented), so this measures coverage itself: every input of
``corpus/<target>/`` runs through the target's ``TestOneInput`` under a
trace function that records the line-to-line arcs taken in the library
(``wsproto_core`` and the adapters; the harness does not count), each with
how often it ran in libFuzzer's hit-count classes (1, 2, 3, 4-7, ...). Then
a greedy set cover keeps the seeds (``seed-*``, written by
``make_corpus.py``) and former crashes (``crash-*``), and, smallest first
among equals, each input that adds a feature no kept input has; it deletes
the rest. These features approximate the fuzzer's, so a minimized corpus
may lose a little of what the fuzzer measures; the next run finds it again
quickly.
"""

from __future__ import annotations

import argparse
import importlib.util
import sys
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from types import FrameType
from typing import Any

FUZZ = Path(__file__).resolve().parent
ROOT = FUZZ.parent
TARGETS = ["frames", "handshake", "client_handshake", "deflate", "connection"]
LIBRARY = (str(ROOT / "src") + "/",)

Arc = tuple[str, int, int]
Feature = tuple[Arc, int]  # an arc and how often it ran, bucketed as libFuzzer does


def load_target(name: str) -> Callable[[bytes], None]:
    """The target's ``TestOneInput``, imported without starting the fuzzer."""
    sys.path.insert(0, str(FUZZ))
    spec = importlib.util.spec_from_file_location(f"fuzz_{name}", FUZZ / f"fuzz_{name}.py")
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    function: Callable[[bytes], None] = module.TestOneInput
    return function


def _bucket(count: int) -> int:
    # libFuzzer's hit-count classes: 1, 2, 3, 4-7, 8-15, 16-31, 32-127, 128+.
    for index, bound in enumerate((1, 2, 3, 7, 15, 31, 127)):
        if count <= bound:
            return index
    return 7


def features_of(test: Callable[[bytes], None], data: bytes) -> frozenset[Feature]:
    """The arcs through library code that one input takes, with their hit-count class."""
    arcs: Counter[Arc] = Counter()
    last: dict[int, int] = {}

    def local(frame: FrameType, event: str, arg: Any) -> Any:
        if event == "line":
            key = id(frame)
            arcs[frame.f_code.co_filename, last.get(key, -1), frame.f_lineno] += 1
            last[key] = frame.f_lineno
        elif event == "return":
            arcs[frame.f_code.co_filename, last.pop(id(frame), -1), 0] += 1
        return local

    def call(frame: FrameType, event: str, arg: Any) -> Any:
        return local if frame.f_code.co_filename.startswith(LIBRARY) else None

    sys.settrace(call)
    try:
        test(data)
    finally:
        sys.settrace(None)
    return frozenset((arc, _bucket(count)) for arc, count in arcs.items())


def minimize(name: str, *, check: bool) -> bool:
    """Minimize one corpus; return whether it was (or, with check, is) minimal."""
    corpus = FUZZ / "corpus" / name
    test = load_target(name)
    inputs = sorted(path for path in corpus.iterdir() if path.is_file())
    coverage = {path: features_of(test, path.read_bytes()) for path in inputs}
    # The seeds, and the inputs that once crashed the target (regression cases).
    seeds = [path for path in inputs if path.name.startswith(("seed-", "crash-"))]
    covered: set[Feature] = set().union(*(coverage[path] for path in seeds))
    keep = set(seeds)
    # Greedy set cover: the input adding the most arcs first, the smaller on
    # ties; its arcs then count as covered.
    rest = [path for path in inputs if path not in keep]
    while rest:
        gains = {path: len(coverage[path] - covered) for path in rest}
        best = max(rest, key=lambda path: (gains[path], -path.stat().st_size, path.name))
        if not gains[best]:
            break
        keep.add(best)
        covered |= coverage[best]
        rest.remove(best)
    dropped = [path for path in inputs if path not in keep]
    print(
        f"{name}: {len(inputs)} inputs, {len(covered)} features; keeping {len(keep)} "
        f"({len(seeds)} seeds), {'would drop' if check else 'dropping'} {len(dropped)}",
        flush=True,
    )
    if not check:
        for path in dropped:
            path.unlink()
    return not dropped


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("targets", nargs="*", metavar="TARGET", help=f"some of {TARGETS}")
    parser.add_argument(
        "--check", action="store_true", help="change nothing; exit 1 if a corpus would shrink"
    )
    args = parser.parse_args(argv)
    unknown = set(args.targets) - set(TARGETS)
    if unknown:
        parser.error(f"unknown targets {sorted(unknown)}; choose from {TARGETS}")
    minimal = [minimize(name, check=args.check) for name in args.targets or TARGETS]
    return 0 if all(minimal) else 1


if __name__ == "__main__":
    sys.exit(main())
