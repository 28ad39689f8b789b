"""Write buffers shared by many connections (gorilla: ``BufferPool``).

A streaming writer needs a buffer of ``write_buffer_size`` bytes, but only
while a message is being written. With a pool, a server with 10,000 mostly
idle connections holds as many buffers as messages being written at once,
not one per connection. Adapters take a buffer when a writer starts and give
it back when the writer closes; nothing here knows about threads or loops.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterator
from typing import Any, Protocol, runtime_checkable

__all__ = ["BufferPool", "FrameBuffer", "SharedBufferPool"]


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


class FrameBuffer:
    """Cuts a message written in pieces into frames of ``size`` bytes.

    What every adapter's streaming writer (gorilla: ``NextWriter``) needs,
    written once: :meth:`write` buffers the data and yields each full frame
    payload that must go out before more fits; :meth:`finish` returns the
    last one. A full buffer is only handed out once more data comes, so the
    last frame is never empty. The buffer comes from ``pool`` at the first
    write and goes back at :meth:`finish`.

    Args:
        size: the payload size of each frame but the last.
        pool: where to borrow the buffer from, if anywhere.
    """

    def __init__(self, size: int, pool: BufferPool | None = None) -> None:
        self.size = size
        self._pool = pool
        self._buffer: bytearray | None = None
        self._filled = 0

    def write(self, data: Any) -> Iterator[bytes]:
        """Buffer ``data`` (any bytes-like object); yield the frame payloads it fills."""
        with memoryview(data) as whole, whole.cast("B") as view:
            buffer = self._buffer if self._buffer is not None else self._borrow()
            start, end = 0, len(view)
            while start < end:
                if self._filled == self.size:
                    yield self._take()
                count = min(end - start, self.size - self._filled)
                buffer[self._filled : self._filled + count] = view[start : start + count]
                self._filled += count
                start += count

    def finish(self) -> bytes:
        """The last frame's payload; the buffer goes back to the pool."""
        payload = self._take() if self._buffer is not None else b""
        if self._buffer is not None and self._pool is not None:
            self._pool.put(self._buffer)
        self._buffer = None
        return payload

    def _borrow(self) -> bytearray:
        buffer = self._pool.get() if self._pool is not None else None
        if buffer is None or len(buffer) != self.size:  # a pool shared across sizes
            buffer = bytearray(self.size)
        self._buffer = buffer
        return buffer

    def _take(self) -> bytes:
        assert self._buffer is not None
        with memoryview(self._buffer) as view:
            payload = bytes(view[: self._filled])  # a copy: the buffer is reused
        self._filled = 0
        return payload
