"""Entry point of the ``wsproto`` command."""

from __future__ import annotations

import argparse
import os
import sys

from . import connect, serve
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
    serve.add_arguments(
        commands.add_parser(
            "serve",
            help="serve an echo, a chat hub and a chat page for browsers",
            description="Serve WebSocket echo on every path but /chat, a chat hub on /chat, "
            "and a chat page for browsers on / (see docs/cli.md).",
        )
    )
    connect.add_arguments(
        commands.add_parser(
            "connect",
            help="an interactive client: send the lines typed, print the messages received",
            description=connect.DESCRIPTION,
            formatter_class=argparse.RawDescriptionHelpFormatter,
        )
    )
    args = parser.parse_args(argv)
    try:
        return _run(parser, bench, args)
    except BrokenPipeError:
        # The reader of our output went away (`wsproto demo | head`): stop
        # quietly, as Unix tools do, and keep Python from reporting the same
        # error again when it flushes stdout at exit.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 1


def _run(
    parser: argparse.ArgumentParser, bench: argparse.ArgumentParser, args: argparse.Namespace
) -> int:
    if args.command == "demo":
        return run_demo()
    if args.command == "bench":
        try:
            return run_bench(args)
        except UsageError as exc:
            bench.error(str(exc))
    if args.command == "serve":
        return serve.run_serve(args)
    if args.command == "connect":
        return connect.run_connect(args)
    parser.error(f"unknown command {args.command!r}")  # pragma: no cover - argparse refuses first
    return 2  # pragma: no cover


if __name__ == "__main__":
    sys.exit(main())
