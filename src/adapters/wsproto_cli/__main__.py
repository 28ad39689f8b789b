"""Entry point of the ``wsproto`` command."""

from __future__ import annotations

import argparse
import sys

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
    args = parser.parse_args(argv)
    if args.command == "demo":
        return run_demo()
    parser.error(f"unknown command {args.command!r}")  # pragma: no cover - argparse refuses first
    return 2  # pragma: no cover


if __name__ == "__main__":
    sys.exit(main())
