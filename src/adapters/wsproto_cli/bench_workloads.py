"""The workloads of ``wsproto bench``: what each one measures, and how.

* W1, the sans-I/O layers alone, no sockets: parsing a pre-built stream of
  masked client frames, fed in 64 KiB reads as a socket would give them,
  into messages (server side); and serializing messages into frames.
* W2, W3, W4, W6: a client and an echo server of the same library, over
  loopback, the server in a process of its own.
* W5 and the broadcast: a server of the implementation's, in a fresh
  process, and many connections opened by raw asyncio sockets here, the
  same for every server, so that only the server differs.

Invariants: a workload checks what it measured (the echo, the message
count, the negotiated compression) before it returns a figure, and any
connection it opens is closed before it returns, whatever happens.
"""

from __future__ import annotations

import asyncio
import base64
import functools
import json
import os
import random
import socket
import statistics
import struct
import time
import zlib
from collections.abc import Callable, Coroutine, Sequence
from contextlib import suppress
from dataclasses import dataclass
from pathlib import Path
from time import perf_counter
from typing import Any, TypeVar

from wsproto_core.mask import apply_mask

from .bench_base import (
    HOST,
    MIB,
    NEEDS_BROADCAST,
    NEEDS_SANSIO,
    NEEDS_SERVER,
    BenchError,
    Context,
    Metric,
    Options,
    Payload,
    Session,
    Settings,
    Workload,
    run_asyncio,
)
from .bench_impls import BROADCAST

__all__ = ["WORKLOADS", "json_document", "raise_fd_limit"]

T = TypeVar("T")

_MIN_PIPELINED = 1000  # messages, at least, in a pipelined measurement
_MAX_PIPELINED = 2_000_000  # and at most: a server may buffer what it echoes
_READ_SIZE = 64 * 1024  # W1 feeds its streams in reads of this size
_OPEN_CONCURRENCY = 64  # handshakes in flight at once in W5 and the broadcast
_WARM_CONNECTIONS = 16  # opened before W5's first memory reading
_SPARE_FDS = 256  # file descriptors a process needs besides its connections
_SETTLE_TIMEOUT = 5.0  # seconds to wait for a server's memory to stop growing
_DEFLATE_OFFER = "permessage-deflate; server_no_context_takeover; client_no_context_takeover"


def _check_echo(session: Session, message: Payload) -> None:
    echo = session.exchange(message)
    if echo != message:
        got = f"{type(echo).__name__} of {len(echo)}"
        raise BenchError(f"wrong echo: sent {type(message).__name__} of {len(message)}, got {got}")


# -- W1: the sans-I/O layers ----------------------------------------------------------


def _frame_header(first: int, length: int, masked: bool) -> bytes:
    mask_bit = 0x80 if masked else 0
    if length < 126:
        return bytes([first, mask_bit | length])
    if length < 65536:
        return struct.pack("!BBH", first, mask_bit | 126, length)
    return struct.pack("!BBQ", first, mask_bit | 127, length)


@functools.cache
def _client_stream(size: int, total: int) -> tuple[tuple[bytes, ...], int]:
    """About ``total`` bytes of masked binary frames of ``size`` bytes, in reads of 64 KiB.

    Returns:
        The reads, and the number of messages in them.
    """
    rng = random.Random(size)
    payload = rng.randbytes(size)
    count = max(2, total // (size + 14))
    header = _frame_header(0x82, size, masked=True)
    frames = []
    for _ in range(count):
        key = rng.randbytes(4)  # a key per frame, as a client must (RFC 6455 §5.3)
        frames.append(header + key + apply_mask(payload, key))
    stream = b"".join(frames)
    reads = tuple(stream[i : i + _READ_SIZE] for i in range(0, len(stream), _READ_SIZE))
    return reads, count


def _parse_rate(
    parse: Callable[[Sequence[bytes]], int], size: int, total: int, seconds: float
) -> float:
    reads, expected = _client_stream(size, total)
    if (got := parse(reads)) != expected:  # the warm-up round checks the count
        raise BenchError(f"parsed {got} messages of {size} B, expected {expected}")
    count = 0
    start = perf_counter()
    while True:
        count += parse(reads)
        if (elapsed := perf_counter() - start) >= seconds:
            return count / elapsed


def _send_rate(send: Callable[[bytes], int], size: int, masked: bool, seconds: float) -> float:
    payload = random.Random(size).randbytes(size)
    expected = len(_frame_header(0x82, size, masked)) + (4 if masked else 0) + size
    if (got := send(payload)) != expected:
        raise BenchError(f"a frame of {got} bytes for a message of {size}, expected {expected}")
    batch = 1000
    count = 0
    start = perf_counter()
    while True:
        for _ in range(batch):
            send(payload)
        count += batch
        if (elapsed := perf_counter() - start) >= seconds:
            return count / elapsed


@dataclass(frozen=True)
class _Parse:
    """A W1 parsing metric: messages of ``size`` bytes, in a stream of about ``total``."""

    label: str
    size: int
    total: int

    @property
    def metric(self) -> Metric:
        return Metric(
            f"W1 parse {self.label}",
            f"parse masked client frames of {self.label} binary messages (server side), "
            "fed in 64 KiB reads",
            "msg/s",
            also=("MB/s", self.size / 1e6),
        )


_PARSES = (
    _Parse("16 B", 16, MIB),
    _Parse("1 KiB", 1024, 4 * MIB),
    _Parse("1 MiB", MIB, 8 * MIB),
)
_SENDS = (
    (
        Metric("W1 send 16 B", "serialize a 16 B binary message: a server frame", "frames/s"),
        16,
        False,
    ),
    (
        Metric(
            "W1 send 1 KiB masked",
            "serialize a 1 KiB binary message: a masked client frame",
            "frames/s",
        ),
        1024,
        True,
    ),
)


def _sansio(context: Context) -> dict[str, float]:
    layer = context.impl.sansio
    assert layer is not None
    seconds = context.settings.duration
    figures = {}
    for parse in _PARSES:
        context.status(parse.metric.key)
        parser = layer.parser(max_size=context.workload.options.read_limit)
        figures[parse.metric.key] = _parse_rate(parser, parse.size, parse.total, seconds)
    for metric, size, masked in _SENDS:
        context.status(metric.key)
        figures[metric.key] = _send_rate(layer.sender(client=masked), size, masked, seconds)
    return figures


# -- W2, W3, W4, W6: echo over loopback -----------------------------------------------


def _round_trips(
    key: str, message: Payload, scale: float = 1.0, *, compressed: bool = False
) -> Callable[[Context], dict[str, float]]:
    """A workload: round trips of ``message`` for the duration; the figure is trips/s × scale."""

    def run(context: Context) -> dict[str, float]:
        with context.connect() as session:
            if compressed and session.compressed() is False:
                raise BenchError("permessage-deflate was not negotiated")
            _check_echo(session, message)
            session.round_trips(message, context.settings.warmup)
            count, elapsed = session.round_trips(message, context.settings.duration)
        return {key: count * scale / elapsed}

    return run


def _pipelined(key: str, message: Payload) -> Callable[[Context], dict[str, float]]:
    """A workload: messages/s sending without waiting; the warm-up sizes the run."""

    def run(context: Context) -> dict[str, float]:
        settings = context.settings
        with context.connect() as session:
            _check_echo(session, message)
            warmup = settings.calibration
            rate = warmup / session.pipelined(message, warmup)
            count = int(min(_MAX_PIPELINED, max(_MIN_PIPELINED, rate * settings.duration)))
            elapsed = session.pipelined(message, count)
        return {key: count / elapsed}

    return run


@functools.cache
def json_document(size: int = 16 * 1024) -> str:
    """A JSON text of at most ``size`` bytes, as an API would send: records with the same keys."""
    rng = random.Random(6)
    symbols = ["ACME", "GLOBEX", "INITECH", "UMBRELLA", "HOOLI", "STARK", "WAYNE", "TYRELL"]
    venues = ["XNAS", "XNYS", "BATS", "ARCX"]
    records: list[dict[str, Any]] = []
    document = ""
    while True:
        number = len(records)
        records.append(
            {
                "id": 100_000 + number,
                "symbol": rng.choice(symbols),
                "side": rng.choice(["buy", "sell"]),
                "price": round(rng.uniform(10, 500), 2),
                "quantity": rng.randint(1, 5000),
                "venue": rng.choice(venues),
                "timestamp": f"2024-05-01T12:{number % 60:02d}:{rng.randint(0, 59):02d}."
                f"{rng.randint(0, 999):03d}Z",
                "account": f"ACC-{rng.randint(1000, 9999)}",
                "status": rng.choice(["filled", "partial", "open"]),
                "tags": rng.sample(["algo", "dark", "retail", "block", "odd-lot"], 2),
            }
        )
        candidate = json.dumps({"type": "trades", "page": 1, "records": records})
        if len(candidate) > size:
            return document
        document = candidate


# -- W5 and the broadcast: many connections from raw sockets ---------------------------


def raise_fd_limit(needed: int) -> str | None:
    """Raise this process's soft limit of open files to the hard limit, if ``needed`` requires.

    Server processes started afterwards inherit it.

    Returns:
        Why ``needed`` files can't be open at once here, or ``None`` if they can.
    """
    try:
        import resource
    except ImportError:  # pragma: no cover - not Unix
        return "needs the resource module (Unix)"
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    infinity = resource.RLIM_INFINITY
    if hard != infinity and hard < needed:
        return (
            f"needs {needed} open files per process, and the hard limit is {hard}: "
            f"raise it (ulimit -Hn) or pass --connections {max(1, hard - _SPARE_FDS * 2)}"
        )
    target = hard if hard != infinity else max(needed, soft)
    if soft != infinity and soft < target:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
        except (ValueError, OSError) as exc:
            if soft < needed:
                return f"needs {needed} open files per process; the limit is {soft}: {exc}"
    return None


def _fds_for(settings: Settings) -> str | None:
    return raise_fd_limit(settings.connections + _WARM_CONNECTIONS + _SPARE_FDS)


def _fds_and_proc(settings: Settings) -> str | None:
    if not Path("/proc/self/status").is_file():
        return "reads a server's memory in /proc/<pid>/status (Linux)"
    return _fds_for(settings)


def _many_budget(settings: Settings) -> float:
    return 60.0 + settings.connections / 50 + 10 * settings.duration


class _Raw:
    """A raw WebSocket client connection: a socket, and what was read past the last frame."""

    __slots__ = ("buffer", "deflate", "sock")

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.buffer = bytearray()
        self.deflate = False

    def _frame(self) -> tuple[int, bytes] | None:
        buffer = self.buffer
        if len(buffer) < 2:
            return None
        first, length, pos = buffer[0], buffer[1] & 0x7F, 2
        if buffer[1] & 0x80:
            raise BenchError("the server masked a frame")
        if not first & 0x80:
            raise BenchError("the server fragmented a message")
        if length >= 126:
            pos = 4 if length == 126 else 10
            if len(buffer) < pos:
                return None
            length = int.from_bytes(buffer[2:pos], "big")
        if len(buffer) < pos + length:
            return None
        payload = bytes(buffer[pos : pos + length])
        del buffer[: pos + length]
        if first & 0x40:  # RSV1: compressed, without context takeover as we offered
            payload = zlib.decompressobj(-15).decompress(payload + b"\x00\x00\xff\xff")
        return first & 0x0F, payload

    async def read_frame(self, loop: asyncio.AbstractEventLoop) -> tuple[int, bytes]:
        """The next frame's opcode and payload (inflated if compressed)."""
        while (frame := self._frame()) is None:
            data = await loop.sock_recv(self.sock, _READ_SIZE)
            if not data:
                raise BenchError("the server closed a connection")
            self.buffer += data
        return frame

    def abort(self) -> None:
        """Close with a reset (no TIME_WAIT left behind for thousands of ports)."""
        with suppress(OSError):
            self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        self.sock.close()


def _handshake_request(port: int, deflate: bool) -> bytes:
    key = base64.b64encode(os.urandom(16)).decode()
    lines = [
        "GET / HTTP/1.1",
        f"Host: {HOST}:{port}",
        "Upgrade: websocket",
        "Connection: Upgrade",
        f"Sec-WebSocket-Key: {key}",
        "Sec-WebSocket-Version: 13",
    ]
    if deflate:
        lines.append(f"Sec-WebSocket-Extensions: {_DEFLATE_OFFER}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


async def _open_one(port: int, request: bytes, into: list[_Raw]) -> None:
    loop = asyncio.get_running_loop()
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setblocking(False)
    raw = _Raw(sock)
    into.append(raw)  # closed by the caller, whatever happens here
    await loop.sock_connect(sock, (HOST, port))
    await loop.sock_sendall(sock, request)
    buffer = raw.buffer
    while (end := buffer.find(b"\r\n\r\n")) < 0:
        data = await loop.sock_recv(sock, 4096)
        if not data:
            raise BenchError("the server closed a connection during the handshake")
        buffer += data
        if len(buffer) > 16384:
            raise BenchError("the handshake response is too long")
    head = bytes(buffer[:end])
    del buffer[: end + 4]
    if not head.startswith(b"HTTP/1.1 101"):
        raise BenchError(f"handshake refused: {head.splitlines()[0].decode(errors='replace')}")
    raw.deflate = b"permessage-deflate" in head.lower()


async def _open_many(
    port: int, count: int, request: bytes, into: list[_Raw], status: Callable[[str], None]
) -> None:
    """Open ``count`` connections, a few at a time, each appended to ``into``."""
    todo = iter(range(count))
    opened = 0

    async def worker() -> None:
        nonlocal opened
        for _ in todo:  # one iterator: each connection is opened once
            await _open_one(port, request, into)
            opened += 1
            if opened % 500 == 0:
                status(f"{opened:,}/{count:,} connections open")

    await asyncio.gather(*(worker() for _ in range(min(_OPEN_CONCURRENCY, count))))


def _run_until(deadline: float, operation: Coroutine[Any, Any, T]) -> T:
    async def bounded() -> T:
        async with asyncio.timeout(max(0.0, deadline - time.monotonic())):
            return await operation

    return run_asyncio(bounded())


def _rss(pid: int) -> int:
    """The resident memory of process ``pid``, in bytes."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise BenchError(f"no VmRSS in /proc/{pid}/status")


def _open_files(pid: int) -> int:
    """How many file descriptors process ``pid`` has open."""
    return len(os.listdir(f"/proc/{pid}/fd"))


def _failure(exc: Exception, pid: int, log: str) -> BenchError:
    """A failure of W5 or the broadcast, with what the server says about it."""
    message = f"{exc} (server: {log})"
    with suppress(OSError, ValueError, IndexError):
        limits = Path(f"/proc/{pid}/limits").read_text().splitlines()
        limit = int(next(line for line in limits if line.startswith("Max open files")).split()[3])
        if (count := _open_files(pid)) >= limit - 8:
            message = f"the server ran out of file descriptors: {count} open, its limit {limit}"
    return BenchError(message)


def _settled_rss(pid: int) -> int:
    """The resident memory of ``pid`` once it stops changing (the server has caught up)."""
    previous = _rss(pid)
    end = time.monotonic() + _SETTLE_TIMEOUT
    while time.monotonic() < end:
        time.sleep(0.2)
        current = _rss(pid)
        if abs(current - previous) <= max(64 * 1024, previous // 500):
            return current
        previous = current
    return previous


def _idle_connections(context: Context) -> dict[str, float]:
    count = context.settings.connections
    server = context.start_server()
    raws: list[_Raw] = []
    try:
        request = _handshake_request(server.port, deflate=False)
        _run_until(
            context.deadline,
            _open_many(server.port, _WARM_CONNECTIONS, request, raws, context.status),
        )
        before, files = _settled_rss(server.pid), _open_files(server.pid)
        start = perf_counter()
        _run_until(context.deadline, _open_many(server.port, count, request, raws, context.status))
        elapsed = perf_counter() - start
        context.status("waiting for the server's memory to settle")
        after, files = _settled_rss(server.pid), _open_files(server.pid) - files
    except Exception as exc:
        raise _failure(exc, server.pid, server.log_tail(300)) from exc
    finally:
        for raw in raws:
            raw.abort()
        server.stop(kill=True)
    return {
        "W5 memory": (after - before) / count / 1024,
        "W5 handshakes": count / elapsed,
        "W5 files": files / count,
    }


@functools.cache
def _tick(number: int) -> str:
    """A broadcast message: about 1 KiB of JSON prices."""
    rng = random.Random(number)
    prices = {f"SYM{i:03d}": round(rng.uniform(10, 500), 2) for i in range(48)}
    return json.dumps({"type": "tick", "sequence": number, "prices": prices})


def _client_frame(opcode: int, payload: bytes) -> bytes:
    key = os.urandom(4)
    return _frame_header(0x80 | opcode, len(payload), masked=True) + key + apply_mask(payload, key)


async def _broadcast_rounds(raws: list[_Raw], rounds: int) -> list[tuple[float, float, int]]:
    """Ask for ``rounds`` broadcasts; each one's server time, delivery time and encodings."""
    loop = asyncio.get_running_loop()
    control = raws[0]
    figures = []
    for number in range(rounds):
        text = _tick(number)
        command = _client_frame(0x1, (BROADCAST + text).encode())
        start = perf_counter()
        await loop.sock_sendall(control.sock, command)
        received = await asyncio.gather(*(raw.read_frame(loop) for raw in raws))
        delivered = perf_counter() - start
        if received[0] != (0x1, text.encode()) or received[-1] != (0x1, text.encode()):
            raise BenchError("a connection received something else than the broadcast")
        _, reply = await control.read_frame(loop)
        answer = json.loads(reply)
        if answer["connections"] != len(raws):
            raise BenchError(f"broadcast to {answer['connections']} of {len(raws)} connections")
        figures.append((float(answer["seconds"]), delivered, int(answer["encodings"])))
    return figures


def _broadcast(context: Context) -> dict[str, float]:
    count = context.settings.connections
    rounds = 1 if context.settings.quick else 3
    server = context.start_server()
    raws: list[_Raw] = []
    try:
        request = _handshake_request(server.port, deflate=True)
        _run_until(context.deadline, _open_many(server.port, count, request, raws, context.status))
        if not all(raw.deflate for raw in raws):
            raise BenchError("permessage-deflate was not negotiated")
        time.sleep(0.5)  # every handler has registered its connection
        context.status("broadcasting")
        figures = _run_until(context.deadline, _broadcast_rounds(raws, rounds + 1))[1:]
    except Exception as exc:
        raise _failure(exc, server.pid, server.log_tail(300)) from exc
    finally:
        for raw in raws:
            raw.abort()
        server.stop(kill=True)
    return {
        "broadcast server": statistics.median(f[0] for f in figures) * 1000,
        "broadcast delivery": statistics.median(f[1] for f in figures) * 1000,
        "broadcast encodings": figures[-1][2],
    }


# -- the table -----------------------------------------------------------------------------


_SMALL = "0123456789abcdef"

#: Every workload; ``--workloads`` picks some.
WORKLOADS: dict[str, Workload] = {
    workload.key: workload
    for workload in (
        Workload(
            "W1",
            "the sans-I/O layers alone, no sockets: parse and serialize frames",
            (*(parse.metric for parse in _PARSES), *(metric for metric, _, _ in _SENDS)),
            _sansio,
            needs=NEEDS_SANSIO,
            budget=lambda settings: 30.0 + 10 * settings.duration,
        ),
        Workload(
            "W2",
            "round trips: a 16 B text message, then wait for its echo; one connection",
            (Metric("W2", "round trips of a 16 B text message; one connection", "msg/s"),),
            _round_trips("W2", _SMALL),
        ),
        Workload(
            "W3",
            "pipelined: 64 B text messages sent without waiting, echoes counted; one connection",
            (
                Metric(
                    "W3",
                    "pipelined 64 B text messages, sent without waiting; one connection",
                    "msg/s",
                ),
            ),
            _pipelined("W3", _SMALL * 4),
        ),
        Workload(
            "W4",
            "throughput: 1 MiB binary messages echoed one at a time; one connection",
            (Metric("W4", "1 MiB binary messages echoed one at a time; one connection", "MB/s"),),
            _round_trips("W4", bytes(range(256)) * 4096, scale=MIB / 1e6),
        ),
        Workload(
            "W5",
            "idle connections: the server's memory per connection, and handshakes/s opening them",
            (
                Metric(
                    "W5 memory",
                    "server memory (RSS) per idle connection",
                    "KiB/conn",
                    higher_is_better=False,
                ),
                Metric(
                    "W5 handshakes",
                    "handshakes/s opening them, 64 at a time, from raw asyncio sockets",
                    "conn/s",
                ),
                Metric(
                    "W5 files",
                    "file descriptors per connection in the server",
                    "fds/conn",
                    higher_is_better=False,
                    ratios=False,
                ),
            ),
            _idle_connections,
            needs=NEEDS_SERVER,
            check=_fds_and_proc,
            budget=_many_budget,
        ),
        Workload(
            "W6",
            "JSON with permessage-deflate: 16 KiB text messages echoed one at a time",
            (
                Metric(
                    "W6",
                    f"{len(json_document()):,} B JSON text messages, permessage-deflate, "
                    "echoed one at a time",
                    "msg/s",
                    also=("MB/s", len(json_document()) / 1e6),
                ),
            ),
            _round_trips("W6", json_document(), compressed=True),
            options=Options(compression=True),
        ),
        Workload(
            "broadcast",
            "one 1 KiB JSON message to every connection, permessage-deflate without "
            "context takeover",
            (
                Metric(
                    "broadcast server",
                    "server time of one broadcast: from the call until every write returned",
                    "ms",
                    higher_is_better=False,
                ),
                Metric(
                    "broadcast delivery",
                    "from the request until every connection has the message",
                    "ms",
                    higher_is_better=False,
                ),
                Metric(
                    "broadcast encodings",
                    "encodings the broadcast made (ours: PreparedMessage.encodings)",
                    "encodings",
                    higher_is_better=False,
                    ratios=False,
                ),
            ),
            _broadcast,
            options=Options(compression=True, broadcast=True),
            needs=NEEDS_BROADCAST,
            check=_fds_for,
            budget=_many_budget,
        ),
    )
}
