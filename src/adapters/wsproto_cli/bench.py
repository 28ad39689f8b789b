"""``wsproto bench``: our adapters and their peers, measured in one run.

Run ``python -m wsproto_cli.bench`` (or ``wsproto bench``, or ``make
bench``); ``--help`` lists the options and ``--list`` the workloads and
implementations. Each figure is printed with its ratio to the
``websockets`` package and to the best peer; docs/performance.md explains
the workloads and what the figures say.

How a figure is measured:

* Every cell of the table is one workload run by one implementation. For
  W2, W3, W4 and W6 the server and the client are of the same library; the
  server runs in a process of its own, so the two ends use two cores, and
  the client runs here. W1 runs sans-I/O layers here, without sockets. W5
  and the broadcast open many connections to a fresh server process with
  raw sockets, the same client for every server.
* A server process is ``python -m wsproto_cli.bench --serve IMPL`` (or
  ``node bench_node.mjs server ...`` for Node's ws): it prints ``READY
  <port>`` when it listens and exits when its stdin closes.
* Each measurement checks what it measures (an echo, a message count, the
  negotiated compression), warms up, then measures. The repeats are
  interleaved (every cell once, then again), so a noisy neighbour slows
  every implementation alike instead of one of them.
* Everything is bounded: a measurement that overruns its budget aborts its
  connection and fails, and its server process is killed and restarted.

The progress goes to standard error (the cell running, k/n, and an
estimate of the time left), the table to standard output.

The parts: :mod:`~wsproto_cli.bench_base` (sessions, clients, server
processes), :mod:`~wsproto_cli.bench_impls` (each library's server and
client: add an :class:`Impl` to :data:`IMPLS`) and
:mod:`~wsproto_cli.bench_workloads` (add a :class:`Workload` to
:data:`WORKLOADS`); this module runs them and reports.
"""

from __future__ import annotations

import argparse
import gc
import importlib.metadata
import importlib.util
import json
import os
import platform
import statistics
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any, TextIO, TypeVar

import wsproto_core.mask

from .bench_base import (
    LOOP_VARIABLE,
    AsyncClient,
    AsyncEchoClient,
    BenchError,
    Context,
    Impl,
    Metric,
    Options,
    SansIO,
    Servers,
    Session,
    Settings,
    SyncClient,
    SyncEchoClient,
    TrioEchoClient,
    UsageError,
    Workload,
    async_session,
    event_loop_name,
    sync_session,
    trio_session,
)
from .bench_impls import IMPLS, NODE_MODULES_VARIABLE
from .bench_workloads import WORKLOADS, raise_fd_limit

__all__ = [
    "IMPLS",
    "WORKLOADS",
    "AsyncClient",
    "AsyncEchoClient",
    "BenchError",
    "Context",
    "Impl",
    "Metric",
    "Options",
    "Result",
    "SansIO",
    "Session",
    "Settings",
    "SyncClient",
    "SyncEchoClient",
    "TrioEchoClient",
    "UsageError",
    "Workload",
    "add_arguments",
    "async_session",
    "format_report",
    "main",
    "run_bench",
    "sync_session",
    "trio_session",
]

T = TypeVar("T")

_QUICK_DURATION = 0.25
_QUICK_CONNECTIONS = 1000


# -- results ---------------------------------------------------------------------------


@dataclass
class Result:
    """The figures of one cell of the table: a workload run by an implementation.

    Attributes:
        workload: the workload's key.
        impl: the implementation's key.
        samples: for each metric's key, one figure per measurement.
        error: why a measurement failed (the cell then has no figure).
        skipped: why the cell was not measured (a package missing...).
        not_applicable: why the implementation has nothing to measure here.
    """

    workload: str
    impl: str
    samples: dict[str, list[float]] = field(default_factory=dict)
    error: str | None = None
    skipped: str | None = None
    not_applicable: str | None = None

    def figure(self, metric: str) -> float | None:
        """The median of a metric's samples, if the cell was measured without error."""
        samples = self.samples.get(metric)
        if self.error is not None or not samples:
            return None
        return statistics.median(samples)

    def spread(self, metric: str) -> float | None:
        """Half the range of a metric's samples relative to their median (0.03: ±3 %)."""
        figure = self.figure(metric)
        samples = self.samples.get(metric, [])
        if figure is None or len(samples) < 2 or figure == 0:
            return None
        return (max(samples) - min(samples)) / 2 / figure


Results = dict[str, dict[str, Result]]  # by workload, then by implementation


def _describe(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0]}" if text else type(exc).__name__


def _format_figure(value: float) -> str:
    if value >= 100 or float(value).is_integer():
        return f"{value:,.0f}"
    return f"{value:,.1f}" if value >= 1 else f"{value:,.3f}"


def _raw_ratio(value: float | None, reference: float | None, metric: Metric) -> float | None:
    if value is None or not reference or not value or not metric.ratios:
        return None
    return value / reference if metric.higher_is_better else reference / value


def _ratio(value: float | None, reference: float | None, metric: Metric) -> str:
    ratio = _raw_ratio(value, reference, metric)
    return "-" if ratio is None else f"{ratio:.2f}x"


def _best_peer(metric: Metric, row: dict[str, Result]) -> str | None:
    if not metric.ratios:
        return None
    figures = {
        key: figure
        for key, result in row.items()
        if not IMPLS[key].ours
        and IMPLS[key].websocket  # raw TCP is the limit, not a peer
        and (figure := result.figure(metric.key)) is not None
    }
    if not figures:
        return None
    pick = max if metric.higher_is_better else min
    return pick(figures, key=figures.__getitem__)


def _figure(row: dict[str, Result], key: str | None, metric: Metric) -> float | None:
    result = None if key is None else row.get(key)
    return None if result is None else result.figure(metric.key)


def _environment() -> dict[str, Any]:
    load = os.getloadavg() if hasattr(os, "getloadavg") else None
    return {
        "python": platform.python_version(),
        "platform": f"{platform.system()} {platform.machine()}",
        "cpus": os.cpu_count(),
        "load": None if load is None else [round(value, 2) for value in load],
        # Our figures depend on it: see wsproto_core.mask.
        "masking": "compiled" if wsproto_core.mask.COMPILED else "pure Python",
        "event_loop": _loop_description(),
    }


def _loop_description() -> str:
    name = event_loop_name()
    if name == "uvloop":
        try:
            return f"uvloop {importlib.metadata.version('uvloop')}"
        except importlib.metadata.PackageNotFoundError:
            return "uvloop (not installed)"
    return name


def format_report(
    workloads: Sequence[Workload],
    impls: Sequence[Impl],
    results: Results,
    settings: Settings,
    baseline: str,
) -> str:
    """The table: for each metric of each workload, every implementation's figure and ratios."""
    env = _environment()
    many = any(workload.key in ("W5", "broadcast") for workload in workloads)
    # The implementations that have something to measure in at least one workload.
    present = [
        impl
        for impl in impls
        if any(results[w.key][impl.key].not_applicable is None for w in workloads)
    ]
    lines = [
        f"wsproto bench: Python {env['python']}, {env['platform']}, {env['cpus']} CPUs, "
        f"loopback; median of {settings.repeat} x {settings.duration:g} s"
        + (f"; {settings.connections:,} connections in W5 and broadcast" if many else "")
        + (f"; load {' '.join(map(str, env['load']))} at the end" if env["load"] else "")
        + f"; wsproto_core masking: {env['masking']}"
        + f"; asyncio event loop: {env['event_loop']}",
        "versions: "
        + ", ".join(dict.fromkeys(f"{impl.package} {impl.version()}" for impl in present)),
        "ratios: >1 is better than the reference; 'best peer' is the best library not ours",
    ]
    for workload in workloads:
        row = results[workload.key]
        shown = [impl for impl in impls if row[impl.key].not_applicable is None]
        width = max([len("implementation"), *(len(impl.key) for impl in shown)])
        if len(workload.metrics) > 1:
            lines += ["", f"== {workload.key}: {workload.title}"]
        for metric in workload.metrics:
            lines += ["", *_section(metric, shown, row, baseline, width)]
        lines += _not_applicable(impls, row)
    notes = [f"  {impl.key}: {impl.note}" for impl in present if impl.note]
    if notes:
        lines += ["", "notes:", *notes]
    return "\n".join(lines) + "\n"


def _section(
    metric: Metric, impls: Sequence[Impl], row: dict[str, Result], baseline: str, width: int
) -> list[str]:
    best = _best_peer(metric, row)
    reference, best_figure = _figure(row, baseline, metric), _figure(row, best, metric)
    better = "higher" if metric.higher_is_better else "lower"
    also = f"  {metric.also[0]:>10}" if metric.also else ""
    ratios = (
        f"  {'vs ' + baseline:>16}  {'vs best peer' + (f' ({best})' if best else ''):>22}"
        if metric.ratios
        else ""
    )
    lines = [
        f"{metric.key}  {metric.title}  [{metric.unit}, {better} is better]",
        f"  {'implementation':<{width}}  {'median':>12}{also}  {'spread':>7}{ratios}",
    ]
    for impl in impls:
        result = row[impl.key]
        figure = result.figure(metric.key)
        if figure is None:
            why = result.error or result.skipped or "not measured"
            label = "error" if result.error else "skipped"
            lines.append(f"  {impl.key:<{width}}  {label:>12}  {why}")
            continue
        spread = result.spread(metric.key)
        also = f"  {_format_figure(figure * metric.also[1]):>10}" if metric.also else ""
        ratios = (
            f"  {_ratio(figure, reference, metric):>16}  {_ratio(figure, best_figure, metric):>22}"
            if metric.ratios
            else ""
        )
        lines.append(
            f"  {impl.key:<{width}}  {_format_figure(figure):>12}{also}"
            f"  {'-' if spread is None else f'±{spread:.0%}':>7}{ratios}"
        )
    return lines


def _not_applicable(impls: Sequence[Impl], row: dict[str, Result]) -> list[str]:
    reasons: dict[str, list[str]] = {}
    for impl in impls:
        if (why := row[impl.key].not_applicable) is not None:
            reasons.setdefault(why, []).append(impl.key)
    return [f"  n/a ({why}): {', '.join(keys)}" for why, keys in reasons.items()]


def _report_json(
    workloads: Sequence[Workload], results: Results, settings: Settings, baseline: str
) -> dict[str, Any]:
    """The results as JSON: the first metric's figures stay where version 1 had them."""
    report: dict[str, Any] = {
        "environment": _environment(),
        "settings": {**asdict(settings), "baseline": baseline},
        "versions": {impl.key: impl.version() for impl in IMPLS.values()},
        "workloads": {},
    }
    for workload in workloads:
        row = results[workload.key]
        metrics: dict[str, Any] = {}
        cells: dict[str, Any] = {key: {} for key in row}
        for metric in workload.metrics:
            best = _best_peer(metric, row)
            reference, best_figure = _figure(row, baseline, metric), _figure(row, best, metric)
            metrics[metric.key] = {
                "title": metric.title,
                "unit": metric.unit,
                "higher_is_better": metric.higher_is_better,
                "best_peer": best,
            }
            for key, result in row.items():
                figure = result.figure(metric.key)
                cells[key].setdefault("metrics", {})[metric.key] = {
                    "samples": result.samples.get(metric.key, []),
                    "figure": figure,
                    "vs_baseline": _raw_ratio(figure, reference, metric),
                    "vs_best_peer": _raw_ratio(figure, best_figure, metric),
                }
        for key, result in row.items():
            first = cells[key]["metrics"][workload.metrics[0].key]
            cells[key] = {
                "workload": result.workload,
                "impl": result.impl,
                "error": result.error,
                "skipped": result.skipped,
                "not_applicable": result.not_applicable,
                **first,
                "metrics": cells[key]["metrics"],
            }
        first_metric = metrics[workload.metrics[0].key]
        report["workloads"][workload.key] = {
            "title": workload.title,
            "unit": first_metric["unit"],
            "higher_is_better": first_metric["higher_is_better"],
            "best_peer": first_metric["best_peer"],
            "metrics": metrics,
            "results": cells,
        }
    return report


# -- running ------------------------------------------------------------------------------


class _Progress:
    """The progress on standard error: the cell running, k/n, and an estimate of the time left.

    On a terminal, one line is rewritten as a cell goes; elsewhere (a log)
    each cell is one line, begun when the cell starts, ended with its figure.
    """

    def __init__(self, stream: TextIO, todo: Sequence[tuple[Workload, Impl]]) -> None:
        self._stream = stream
        self._tty = stream.isatty()
        self._todo = todo
        self._seconds: dict[tuple[str, str], float] = {}
        self._started = time.monotonic()
        self._prefix = ""

    def _left(self, index: int) -> str:
        if not self._seconds:
            return ""
        mean = statistics.mean(self._seconds.values())
        left = sum(
            self._seconds.get((workload.key, impl.key), mean)
            for workload, impl in self._todo[index - 1 :]
        )
        return f", about {_duration(left)} left"

    def start(self, index: int, workload: Workload, impl: Impl) -> None:
        """A cell starts."""
        self._prefix = f"[{index}/{len(self._todo)}{self._left(index)}] {workload.key} {impl.key}: "
        self._write(self._prefix + "running" if self._tty else self._prefix)

    def status(self, text: str) -> None:
        """How the cell is going (only on a terminal)."""
        if self._tty:
            self._write(f"\r\x1b[K{self._prefix}{text}")

    def done(self, workload: Workload, impl: Impl, seconds: float, text: str) -> None:
        """The cell ended, with ``text``."""
        self._seconds[workload.key, impl.key] = seconds
        self._write((f"\r\x1b[K{self._prefix}" if self._tty else "") + text + "\n")

    def finish(self) -> None:
        """Everything ran."""
        self._write(f"done in {_duration(time.monotonic() - self._started)}\n")

    def _write(self, text: str) -> None:
        self._stream.write(text)
        self._stream.flush()


def _duration(seconds: float) -> str:
    minutes, seconds = divmod(round(seconds), 60)
    return f"{minutes}:{seconds:02d}" if minutes else f"{seconds} s"


def _measure(
    todo: Sequence[tuple[Workload, Impl]], results: Results, settings: Settings, stream: TextIO
) -> None:
    servers = Servers()
    progress = _Progress(stream, todo)
    try:
        for index, (workload, impl) in enumerate(todo, 1):
            result = results[workload.key][impl.key]
            if result.error is not None:
                continue  # failed once: the later repeats would too, or hang again
            progress.start(index, workload, impl)
            gc.collect()
            started = time.monotonic()
            context = Context(impl, workload, settings, servers, progress.status)
            try:
                figures = workload.run(context)
            except Exception as exc:
                result.error = _describe(exc)
                if time.monotonic() > context.deadline:
                    result.error = f"timed out ({result.error})"
                servers.discard(impl)
                done = f"error: {result.error}"
            else:
                for key, figure in figures.items():
                    result.samples.setdefault(key, []).append(figure)
                done = ", ".join(
                    f"{_format_figure(figures[metric.key])} {metric.unit}"
                    for metric in workload.metrics
                    if metric.key in figures
                )
            progress.done(workload, impl, time.monotonic() - started, done)
    finally:
        servers.close()
    progress.finish()


def _select(names: Sequence[str] | None, table: dict[str, T], what: str) -> list[T]:
    if not names:
        return list(table.values())
    wanted = [name.strip() for value in names for name in value.split(",") if name.strip()]
    by_key = {key.lower(): item for key, item in table.items()}
    unknown = [name for name in wanted if name.lower() not in by_key]
    if unknown:
        raise UsageError(f"unknown {what}: {', '.join(unknown)} (known: {', '.join(table)})")
    return list(dict.fromkeys(by_key[name.lower()] for name in wanted))


def _settings(args: argparse.Namespace) -> Settings:
    quick = bool(args.quick)
    return Settings(
        duration=args.duration
        if args.duration is not None
        else (_QUICK_DURATION if quick else 2.0),
        repeat=args.repeat if args.repeat is not None else (1 if quick else 3),
        quick=quick,
        connections=(
            args.connections
            if args.connections is not None
            else (_QUICK_CONNECTIONS if quick else Settings.connections)
        ),
    )


def run_bench(args: argparse.Namespace, out: TextIO | None = None) -> int:
    """Run the benchmark the parsed ``args`` describe; return the exit status.

    The table goes to ``out`` (standard output by default), the progress to
    standard error. The status is 1 if a measurement of ours failed. A
    peer's failure (websockets.sync running out of file descriptors in W5,
    say) is shown in its cells and named on standard error, but is the
    peer's, not the run's; an implementation skipped for a missing package
    is no failure either.
    """
    out = out or sys.stdout
    if args.serve is not None:
        return _serve_main(args.serve, args.serve_options)
    if args.node_modules is not None:
        os.environ[NODE_MODULES_VARIABLE] = os.path.abspath(args.node_modules)
    if args.loop is not None:
        os.environ[LOOP_VARIABLE] = args.loop  # the server processes inherit it
    if event_loop_name() not in ("asyncio", "uvloop"):
        raise UsageError(f"unknown event loop {event_loop_name()!r}: asyncio or uvloop")
    if event_loop_name() == "uvloop" and importlib.util.find_spec("uvloop") is None:
        raise UsageError("--loop uvloop needs uvloop: pip install uvloop (or make bench)")
    if args.list:
        for workload in WORKLOADS.values():
            out.write(f"{workload.key:<16} {workload.title}\n")
            for metric in workload.metrics:
                out.write(f"{'':<16}   {metric.key} [{metric.unit}]\n")
        for impl in IMPLS.values():
            why = impl.unavailable()
            state = f"; not available: {why}" if why else ""
            kind = "ours" if impl.ours else "peer" if impl.websocket else "reference"
            out.write(f"{impl.key:<16} {impl.package} ({kind}{state})\n")
        return 0
    settings = _settings(args)
    workloads = _select(args.workloads, WORKLOADS, "workloads")
    impls = _select(args.impls, IMPLS, "implementations")
    results = {w.key: {i.key: Result(w.key, i.key) for i in impls} for w in workloads}
    runnable: list[tuple[Workload, Impl]] = []
    for workload in workloads:
        cells = []
        for impl in impls:
            result = results[workload.key][impl.key]
            if (why := workload.not_applicable(impl)) is not None:
                result.not_applicable = why
            elif (why := impl.unavailable()) is not None:
                result.skipped = why
            else:
                cells.append((workload, impl))
        if cells and workload.check is not None and (why := workload.check(settings)) is not None:
            for _, impl in cells:
                results[workload.key][impl.key].skipped = why
            cells = []
        runnable += cells
    todo = [cell for _ in range(settings.repeat) for cell in runnable]
    _measure(todo, results, settings, sys.stderr)
    out.write(format_report(workloads, impls, results, settings, args.baseline))
    if args.json is not None:
        with open(args.json, "w", encoding="utf-8") as file:
            json.dump(_report_json(workloads, results, settings, args.baseline), file, indent=2)
            file.write("\n")
    failed = [
        (result.impl, result.workload)
        for row in results.values()
        for result in row.values()
        if result.error is not None
    ]
    peers = sorted({f"{impl} ({workload})" for impl, workload in failed if not IMPLS[impl].ours})
    if peers:
        sys.stderr.write(f"peers that failed a measurement (see the table): {', '.join(peers)}\n")
    return 1 if any(IMPLS[impl].ours for impl, _ in failed) else 0


def _serve_main(impl_key: str, options_json: str) -> int:
    """The server process: run one implementation's server until stdin closes."""
    impl = IMPLS[impl_key]
    options = Options(**json.loads(options_json))
    serve = impl.serve_broadcast if options.broadcast else impl.serve
    if serve is None:
        raise BenchError(f"{impl.key} has no {'broadcast' if options.broadcast else 'echo'} server")
    raise_fd_limit(0)  # up to the hard limit: W5 opens thousands of connections

    def ready(port: int) -> None:
        sys.stdout.write(f"READY {port}\n")
        sys.stdout.flush()
        # Nobody reads the pipe after this line: a library printing more could fill it.
        sys.stdout = sys.stderr

    serve(options, ready)
    return 0


# -- the command line -------------------------------------------------------------------


def _positive(kind: Callable[[str], T]) -> Callable[[str], T]:
    def parse(text: str) -> T:
        value = kind(text)
        if not value > 0:  # type: ignore[operator]
            raise argparse.ArgumentTypeError(f"must be positive: {text}")
        return value

    return parse


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Add the benchmark's options to ``parser`` (``wsproto bench`` and this module's own)."""
    parser.add_argument(
        "--workloads",
        nargs="+",
        metavar="W",
        help=f"workloads to run, by key, comma or space separated (default: {' '.join(WORKLOADS)})",
    )
    parser.add_argument(
        "--impls",
        nargs="+",
        metavar="IMPL",
        help=f"implementations to measure (default: all: {' '.join(IMPLS)})",
    )
    parser.add_argument(
        "--repeat",
        type=_positive(int),
        metavar="N",
        help="measurements per figure; the median is reported (default: 3; --quick: 1)",
    )
    parser.add_argument(
        "--duration",
        type=_positive(float),
        metavar="SECONDS",
        help=f"seconds per measurement (default: 2; --quick: {_QUICK_DURATION:g})",
    )
    parser.add_argument(
        "--connections",
        type=_positive(int),
        metavar="N",
        help=f"connections W5 and the broadcast open (default: {Settings.connections:,}; "
        f"--quick: {_QUICK_CONNECTIONS:,})",
    )
    parser.add_argument(
        "--quick", action="store_true", help="a smoke run: short measurements, no repeats"
    )
    parser.add_argument(
        "--baseline",
        default="websockets",
        choices=list(IMPLS),
        metavar="IMPL",
        help="the implementation the ratios refer to (default: websockets)",
    )
    parser.add_argument(
        "--node-modules",
        metavar="DIR",
        help="a node_modules directory holding Node's ws, for the node_ws peer "
        f"(default: ${NODE_MODULES_VARIABLE}, else a checkout's tests/interop/node, "
        "else ./node_modules)",
    )
    parser.add_argument(
        "--loop",
        choices=["asyncio", "uvloop"],
        help="the event loop of the asyncio implementations, clients and servers "
        f"(default: ${LOOP_VARIABLE}, else asyncio)",
    )
    parser.add_argument("--json", metavar="PATH", help="also write the results as JSON to PATH")
    parser.add_argument(
        "--list", action="store_true", help="list the workloads and implementations, and exit"
    )
    # The server process of an implementation (see ServerProcess); not for users.
    parser.add_argument("--serve", choices=list(IMPLS), help=argparse.SUPPRESS)
    parser.add_argument("--serve-options", default="{}", help=argparse.SUPPRESS)


def main(argv: list[str] | None = None) -> int:
    """Run ``python -m wsproto_cli.bench``; return the exit status."""
    parser = argparse.ArgumentParser(
        prog="python -m wsproto_cli.bench",
        description="Measure our adapters and their peers in one run.",
    )
    add_arguments(parser)
    args = parser.parse_args(argv)
    try:
        return run_bench(args)
    except UsageError as exc:
        parser.error(str(exc))
    return 2  # pragma: no cover - parser.error exits


if __name__ == "__main__":
    sys.exit(main())
