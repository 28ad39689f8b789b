"""Write buffers shared by many connections (gorilla: ``BufferPool``).

A streaming writer needs a buffer of ``write_buffer_size`` bytes, but only
while a message is being written. With a pool, a server with 10,000 mostly
idle connections holds as many buffers as messages being written at once,
not one per connection. Adapters take a buffer when a writer starts and give
it back when the writer closes; nothing here knows about threads or loops.
"""

from __future__ import annotations

from collections import deque
from typing import Protocol, runtime_checkable

__all__ = ["BufferPool", "SharedBufferPool"]


@runtime_checkable
class BufferPool(Protocol):
    """What a write buffer pool provides (gorilla: ``BufferPool``).

    Any object with these two methods will do; :class:`SharedBufferPool` is
    the ready-made one. A pool shared between threads must be thread-safe.
    """

    def get(self) -> bytearray | None:
        """A free buffer, or ``None`` to make the caller allocate one."""

    def put(self, buffer: bytearray) -> None:
        """Take back a buffer that is no longer used."""


class SharedBufferPool:
    """A bounded pool of idle buffers, safe to share between threads.

    It keeps at most ``max_idle`` idle buffers (the others are left to the
    garbage collector), so a burst of writers does not pin memory for good.
    It relies on ``deque.append`` and ``deque.pop`` being atomic, which the
    standard library documents, so it needs no lock.

    Args:
        max_idle: how many idle buffers to keep.
    """

    def __init__(self, max_idle: int = 64) -> None:
        if max_idle < 0:
            raise ValueError("max_idle must be >= 0")
        self._idle: deque[bytearray] = deque(maxlen=max_idle or None)
        self._keep = max_idle > 0

    def get(self) -> bytearray | None:
        """A free buffer, or ``None`` when none is idle."""
        try:
            return self._idle.pop()
        except IndexError:
            return None

    def put(self, buffer: bytearray) -> None:
        """Keep ``buffer`` for the next writer, unless enough are idle already."""
        if self._keep:
            self._idle.append(buffer)  # past maxlen, the oldest one is dropped

    def __len__(self) -> int:
        """The number of idle buffers."""
        return len(self._idle)
