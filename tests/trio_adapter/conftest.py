"""Runs the wsproto_trio tests: plain ``async def`` functions, each in a ``trio.run`` of its own.

No plugin: the hook below runs every coroutine test of this folder with
``trio.run``, inside ``trio.fail_after``, so a hang fails its test instead
of the whole run. (anyio's plugin would run trio in guest mode, its I/O
waits on a second thread: not how applications run trio.)

Markers:

* ``@pytest.mark.mock_clock``: run on ``trio.testing.MockClock(autojump_threshold=0)``,
  whose time jumps to the next deadline whenever every task waits. Deadline
  and keepalive tests then take no real time and always go the same way.
  Only for tests over memory streams: a socket's bytes may arrive after a jump.
  ``trio.fail_after`` then bounds virtual time, and a watchdog the real time.
* ``@pytest.mark.trio_timeout(seconds)``: a longer bound than ``TEST_TIMEOUT``.
"""

from __future__ import annotations

import inspect
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress

import pytest
import trio
import trio.testing

TEST_TIMEOUT = 10.0  # seconds any one test may take, unless marked trio_timeout
VIRTUAL_TIMEOUT = 3600.0  # seconds of MockClock time any one test may take


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers", "mock_clock: run the trio test on MockClock(autojump_threshold=0)"
    )
    config.addinivalue_line("markers", "trio_timeout(seconds): bound the trio test differently")


@pytest.hookimpl(tryfirst=True)
def pytest_pyfunc_call(pyfuncitem: pytest.Function) -> bool | None:
    """Run a coroutine test with ``trio.run``, bounded by ``trio.fail_after``."""
    test = pyfuncitem.obj
    if not inspect.iscoroutinefunction(test):
        return None
    kwargs = {name: pyfuncitem.funcargs[name] for name in pyfuncitem._fixtureinfo.argnames}
    marker = pyfuncitem.get_closest_marker("trio_timeout")
    timeout = TEST_TIMEOUT if marker is None else float(marker.args[0])
    mock = pyfuncitem.get_closest_marker("mock_clock") is not None

    async def bounded() -> None:
        if not mock:
            with trio.fail_after(timeout):
                await test(**kwargs)
            return
        # On a MockClock, fail_after counts virtual time, which jumps: it
        # bounds the test's story. A watchdog thread bounds the real time.
        with (
            trio.fail_after(VIRTUAL_TIMEOUT),
            trio.CancelScope() as watchdog,
            _after_real_seconds(timeout, watchdog.cancel),
        ):
            await test(**kwargs)
        if watchdog.cancelled_caught:
            raise trio.TooSlowError(f"the test took over {timeout} s of real time")

    trio.run(bounded, clock=trio.testing.MockClock(autojump_threshold=0) if mock else None)
    return True


@contextmanager
def _after_real_seconds(seconds: float, callback: Callable[[], None]) -> Iterator[None]:
    """Call ``callback`` in this trio run after ``seconds`` of real time, unless left before."""
    token = trio.lowlevel.current_trio_token()

    def fire() -> None:
        with suppress(trio.RunFinishedError):
            token.run_sync_soon(callback)

    timer = threading.Timer(seconds, fire)
    timer.start()
    try:
        yield
    finally:
        timer.cancel()
        timer.join()
