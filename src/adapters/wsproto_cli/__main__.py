"""Entry point of the ``wsproto`` command."""

from __future__ import annotations

import argparse
import sys

from .bench import UsageError, add_arguments, run_bench
from .demo import run_demo

__all__ = ["main"]


def main(argv: list[str] | None = None) -> int:
    """Run the ``wsproto`` command line; return the exit status."""
    parser = argparse.ArgumentParser(
        prog="wsproto", description="WebSocket tools built on wsproto-core."
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    commands.add_parser(
        "demo", help="exchange messages between a client and a server core and print a report"
    )
    bench = commands.add_parser(
        "bench",
        help="measure our adapters and their peers over loopback, in one run",
        description="Measure our adapters and their peers over loopback, in one run.",
    )
    add_arguments(bench)
    args = parser.parse_args(argv)
    if args.command == "demo":
        return run_demo()
    if args.command == "bench":
        try:
            return run_bench(args)
        except UsageError as exc:
            bench.error(str(exc))
    parser.error(f"unknown command {args.command!r}")  # pragma: no cover - argparse refuses first
    return 2  # pragma: no cover


if __name__ == "__main__":
    sys.exit(main())
