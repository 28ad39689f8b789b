"""Helpers shared by the wsproto_sync tests."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Any

TIMEOUT = 5.0  # no step of a test may block longer than this


class Background:
    """Run ``fn`` in a daemon thread; ``result()`` joins with a timeout."""

    def __init__(self, fn: Callable[[], Any]) -> None:
        self._value: Any = None
        self._error: BaseException | None = None
        self.done_at: float | None = None
        self._thread = threading.Thread(target=self._run, args=(fn,), daemon=True)
        self._thread.start()

    def _run(self, fn: Callable[[], Any]) -> None:
        try:
            self._value = fn()
        except BaseException as exc:
            self._error = exc
        finally:
            self.done_at = time.monotonic()

    def alive(self) -> bool:
        return self._thread.is_alive()

    def join(self, timeout: float = TIMEOUT) -> None:
        self._thread.join(timeout)
        assert not self._thread.is_alive(), "background thread did not finish in time"

    def result(self, timeout: float = TIMEOUT) -> Any:
        self.join(timeout)
        if self._error is not None:
            raise self._error
        return self._value

    def error(self, timeout: float = TIMEOUT) -> BaseException | None:
        self.join(timeout)
        return self._error
