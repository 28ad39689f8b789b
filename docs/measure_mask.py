"""Measure masking (RFC 6455 §5.3): the compiled functions against the pure ones.

Run ``python docs/measure_mask.py`` (``--quick`` for a shorter run). It prints:

1. ``apply_mask`` on 16 B, 1 KiB, 64 KiB and 1 MiB, pure and compiled (the
   best of several runs, in CPU time, so the figures are the code's rather
   than the machine's other load);
2. a 1 MiB client frame built as ``header + apply_mask(payload, key)`` and as
   ``mask_frame(header, payload, key)``, which copies the payload once;
3. a 1 MiB message echoed between a client core and a server core in memory
   (64 KiB reads), in two fresh interpreters, with and without
   ``WSPROTO_CORE_PURE_PYTHON=1``.
"""

from __future__ import annotations

import argparse
import functools
import os
import subprocess
import sys
import time
import timeit
from collections.abc import Callable

from wsproto_core import Connection, ConnectionPair, Message, mask
from wsproto_core.mask import pure_apply_mask, pure_mask_frame

KEY = b"\x37\xfa\x21\x3d"


def best(func: Callable[[], object], budget: float) -> float:
    """CPU seconds per call: the best of 5 runs of about ``budget / 5`` seconds each.

    CPU time, not wall time, so that other processes on a shared machine
    change the figures less: the code measured runs in one thread.
    """
    timer = time.process_time
    number = max(1, int(budget / 5 / max(timeit.timeit(func, number=1, timer=timer), 1e-7)))
    return min(timeit.repeat(func, number=number, repeat=5, timer=timer)) / number


def human(seconds: float) -> str:
    """Seconds in µs or ms."""
    return f"{seconds * 1e6:9.2f} µs" if seconds < 1e-3 else f"{seconds * 1e3:9.2f} ms"


def measure_apply_mask(budget: float) -> None:
    """apply_mask on a few sizes, pure and compiled."""
    print("apply_mask(data, key)          pure      compiled   speedup")
    for label, size in (("16 B", 16), ("1 KiB", 1024), ("64 KiB", 65536), ("1 MiB", 1 << 20)):
        data = os.urandom(size)
        pure = best(functools.partial(pure_apply_mask, data, KEY), budget)
        if not mask.COMPILED:
            print(f"  {label:>8}  {human(pure)}   (not built)")
            continue
        fast = best(functools.partial(mask.apply_mask, data, KEY), budget)
        per_mib = f"{fast * (1 << 20) / size * 1e6:7.1f} µs/MiB"
        print(f"  {label:>8}  {human(pure)}  {human(fast)}  {pure / fast:7.1f}x   ({per_mib})")


def measure_mask_frame(budget: float) -> None:
    """A 1 MiB client frame: header and masked payload, in two copies or in one."""
    header = b"\x82\xff" + (1 << 20).to_bytes(8, "big") + KEY
    payload = os.urandom(1 << 20)
    print("a 1 MiB client frame")
    rows = [("header + pure_apply_mask()", lambda: header + pure_apply_mask(payload, KEY))]
    rows.append(("pure_mask_frame()", lambda: pure_mask_frame(header, payload, KEY)))
    if mask.COMPILED:
        rows.append(("header + apply_mask()", lambda: header + mask.apply_mask(payload, KEY)))
        rows.append(("mask_frame()", lambda: mask.mask_frame(header, payload, KEY)))
    for label, func in rows:
        print(f"  {label:<28}{human(best(func, budget))}")


def echo(size: int, budget: float) -> float:
    """Seconds for one message of ``size`` bytes, client to server and back, in memory."""
    pair = ConnectionPair.open()
    client, server = pair.client, pair.server
    payload = os.urandom(size)

    def deliver(conn: Connection, data: bytes) -> bytes:
        message = b""
        for start in range(0, len(data), 65536):
            conn.receive_data(data[start : start + 65536])
            while (event := conn.next_event()) is not None:
                if isinstance(event, Message) and isinstance(event.data, bytes):
                    message = event.data
        return message

    def once() -> None:
        client.send_binary(payload)
        data = deliver(server, client.data_to_send())
        server.send_binary(data)
        assert deliver(client, server.data_to_send()) == payload

    return best(once, budget)


def measure_echo(budget: float) -> None:
    """A 1 MiB echo through two cores, in a pure and in a default interpreter."""
    print("a 1 MiB message echoed between two cores in memory")
    code = f"import sys; sys.path[:0] = {sys.path[:1]!r}; import measure_mask as m; "
    code += f"print(m.mask.COMPILED, m.echo(1 << 20, {budget}))"
    env = {name: value for name, value in os.environ.items() if name != mask.PURE_PYTHON_ENV}
    for label, extra in (("pure", {mask.PURE_PYTHON_ENV: "1"}), ("default", {})):
        out = subprocess.run(
            [sys.executable, "-c", code], env={**env, **extra}, check=True, capture_output=True
        )
        compiled, seconds = out.stdout.decode().split()
        which = "compiled" if compiled == "True" else "pure"
        print(f"  {label:<8} ({which:>8}) {human(float(seconds))}")


def main() -> None:
    """Print the figures."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="shorter runs, rougher figures")
    args = parser.parse_args()
    budget = 0.2 if args.quick else 1.0
    print(f"wsproto_core.mask.COMPILED = {mask.COMPILED}\n")
    measure_apply_mask(budget)
    print()
    measure_mask_frame(budget)
    print()
    measure_echo(budget * 2)


if __name__ == "__main__":
    main()
