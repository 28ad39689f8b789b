"""Run the fuzz targets, each in its own process, with this interpreter.

    python fuzz/run.py [--smoke] [--seconds N] [--skip-missing] [target ...]

Without ``--smoke`` (``make fuzz``): each target fuzzes for N seconds (default
60) from ``fuzz/corpus/<target>/``, and keeps the new inputs it finds there.
With ``--smoke`` (``make fuzz-smoke``, part of ``make test``): each target
replays its corpus, then fuzzes briefly (default 7 s), leaving the corpus as
it was. Either way, a crashing input is written to ``fuzz/crashes/<target>/``
and the exit status is 1. Reproduce one with
``python fuzz/fuzz_<target>.py fuzz/crashes/<target>/crash-...``.

Without atheris (it is Linux-only), the run fails, unless ``--skip-missing``
is given: then it says so and succeeds.
"""

from __future__ import annotations

import argparse
import re
import subprocess
import sys
import tempfile
from collections import deque
from pathlib import Path

FUZZ = Path(__file__).resolve().parent
TARGETS = ("frames", "handshake", "client_handshake", "connection", "deflate")
#: Extra libFuzzer flags per target.
FLAGS = {
    "handshake": [f"-dict={FUZZ / 'http.dict'}"],
    "client_handshake": [f"-dict={FUZZ / 'http.dict'}"],
}
LONG_SECONDS = 60
SMOKE_SECONDS = 7
#: An input slower than this is reported as a crash (libFuzzer's default is 20 minutes).
TIMEOUT = 25
_STATUS = re.compile(r"^#(\d+)\s+(?:DONE|pulse|NEW|REDUCE|INITED)\s+(.*)$")
_ARTIFACTS = ("crash-", "timeout-", "oom-", "leak-")


def _target(name: str) -> str:
    # Accept "frames", "fuzz_frames" and "fuzz/fuzz_frames.py" alike.
    name = Path(name).name.removesuffix(".py").removeprefix("fuzz_")
    if name not in TARGETS:
        raise argparse.ArgumentTypeError(f"unknown target {name!r}; choose from {TARGETS}")
    return name


def _atheris_missing() -> str | None:
    try:
        import atheris  # noqa: F401
    except ImportError as exc:  # not installed, or built for another Python
        return str(exc)
    return None


def run_target(name: str, seconds: int, *, smoke: bool) -> tuple[bool, str]:
    """Fuzz one target in a subprocess.

    Returns:
        Whether it passed, and a one-line summary of its final statistics.
    """
    corpus = FUZZ / "corpus" / name
    crashes = FUZZ / "crashes" / name
    corpus.mkdir(parents=True, exist_ok=True)
    crashes.mkdir(parents=True, exist_ok=True)
    before = set(crashes.iterdir())
    with tempfile.TemporaryDirectory(prefix=f"fuzz-{name}-") as scratch:
        # libFuzzer writes new inputs to the first directory: a scratch one
        # for a smoke run, so the tree stays clean.
        directories = [scratch, str(corpus)] if smoke else [str(corpus)]
        command = [
            sys.executable,
            str(FUZZ / f"fuzz_{name}.py"),
            *directories,
            f"-max_total_time={seconds}",
            f"-timeout={TIMEOUT}",
            f"-artifact_prefix={crashes}/",
            "-print_final_stats=1",
            *FLAGS.get(name, []),
        ]
        print(f"== {name}: {'smoke, ' if smoke else ''}{seconds} s", flush=True)
        status, tail, returncode = _stream(command, echo=not smoke)
    found = sorted(
        path for path in set(crashes.iterdir()) - before if path.name.startswith(_ARTIFACTS)
    )
    passed = returncode == 0 and not found
    if not passed and smoke:
        print(*tail, sep="\n")  # the traceback, which a smoke run did not echo
    for path in found:
        print(f"   {path.name}: reproduce with python {FUZZ / f'fuzz_{name}.py'} {path}")
    summary = f"{name}: {'ok' if passed else f'FAILED (exit {returncode})'}; {status}"
    print(summary, flush=True)
    return passed, summary


def _stream(command: list[str], *, echo: bool) -> tuple[str, deque[str], int]:
    # Echo libFuzzer's output as it comes (or keep only its tail), noting the
    # last status line: "#runs DONE cov: ... ft: ... corp: ... exec/s: ...".
    status = "no statistics"
    tail: deque[str] = deque(maxlen=60)
    with subprocess.Popen(
        command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, errors="replace"
    ) as process:
        assert process.stdout is not None
        for line in process.stdout:
            line = line.rstrip("\n")
            if line.startswith("INFO: Instrumenting"):
                continue
            tail.append(line)
            if echo:
                print(line, flush=True)
            match = _STATUS.match(line)
            if match:
                status = f"{match[1]} runs, {match[2]}"
    return status, tail, process.returncode


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description="Run the atheris fuzz targets (see fuzz/README.md)."
    )
    parser.add_argument(
        "targets", nargs="*", type=_target, help=f"default: all of {', '.join(TARGETS)}"
    )
    parser.add_argument(
        "--smoke", action="store_true", help="a short run for CI; leaves the corpus untouched"
    )
    parser.add_argument(
        "--seconds",
        type=int,
        help=f"per target (default {LONG_SECONDS}, or {SMOKE_SECONDS} with --smoke)",
    )
    parser.add_argument(
        "--skip-missing", action="store_true", help="succeed, with a message, without atheris"
    )
    args = parser.parse_args(argv)
    missing = _atheris_missing()
    if missing is not None:
        print(f"fuzz: atheris is not importable ({missing})")
        print("  install it (Linux only) with: pip install -e '.[fuzz]'")
        print("fuzz: skipped" if args.skip_missing else "fuzz: failed (--skip-missing to allow)")
        return 0 if args.skip_missing else 1
    seconds = args.seconds or (SMOKE_SECONDS if args.smoke else LONG_SECONDS)
    results = [run_target(name, seconds, smoke=args.smoke) for name in args.targets or TARGETS]
    print("\n".join(["", "== summary", *(summary for _, summary in results)]))
    return 0 if all(passed for passed, _ in results) else 1


if __name__ == "__main__":
    sys.exit(main())
