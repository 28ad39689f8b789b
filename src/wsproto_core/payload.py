"""A message's payload, written in place as it arrives.

A large frame's payload arrives over many reads. Unmasking each piece into
a ``bytes`` of its own and joining them at the end writes the payload
twice, into fresh memory both times, and fresh memory costs a page fault
per 4 KiB, which costs more than the copying (``docs/performance.md``). A
payload buffer is allocated once, at the frame's size, and filled where the
bytes belong: copied and unmasked into it (:meth:`~PurePayloadBuffer.put`),
or read into it by the transport (:meth:`~PurePayloadBuffer.view`, then
:meth:`~PurePayloadBuffer.mask`); :meth:`~PurePayloadBuffer.finish` hands
it out as ``bytes``.

:func:`new_payload_buffer` makes the compiled one (``_speedups.c``), which
fills the ``bytes`` object it hands out, when ``wsproto_core._speedups`` is
in use (:data:`wsproto_core.mask.COMPILED`); else a
:class:`PurePayloadBuffer`, which fills a ``bytearray`` and copies it at
the end. Both do what :class:`PayloadBuffer` describes, call for call
(``tests/core/test_payload.py``).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Protocol

from .mask import apply_mask, compiled_module

__all__ = ["PayloadBuffer", "PurePayloadBuffer", "new_payload_buffer"]


class PayloadBuffer(Protocol):
    """What the two implementations offer."""

    def view(self) -> memoryview:
        """A writable view of the whole payload; release it before :meth:`finish`."""

    def put(self, at: int, data: bytes | bytearray | memoryview, key: bytes | None = None) -> None:
        """Write ``data`` at offset ``at``, unmasked with ``key`` if given (key phase ``at``)."""

    def mask(self, start: int, end: int, key: bytes) -> None:
        """Unmask bytes ``start`` to ``end`` in place (key phase ``start``)."""

    def finish(self) -> bytes:
        """The payload as ``bytes``; the buffer is then finished for good.

        Raises:
            BufferError: a view is still alive.
            ValueError: already finished.
        """


class PurePayloadBuffer:
    """The pure-Python payload buffer: a ``bytearray``, copied by :meth:`finish`."""

    __slots__ = ("_data",)

    def __init__(self, size: int) -> None:
        if size < 0:
            raise ValueError("a payload's size is >= 0")
        self._data: bytearray | None = bytearray(size)

    def _checked(self, start: int, end: int) -> bytearray:
        data = self._data
        if data is None:
            raise ValueError("the payload is finished")
        if start < 0 or end < start or end > len(data):
            raise ValueError(f"bytes {start} to {end} are outside a payload of {len(data)}")
        return data

    def view(self) -> memoryview:
        """See :meth:`PayloadBuffer.view`."""
        return memoryview(self._checked(0, 0))

    def put(self, at: int, data: bytes | bytearray | memoryview, key: bytes | None = None) -> None:
        """See :meth:`PayloadBuffer.put`."""
        size = memoryview(data).nbytes
        target = self._checked(at, at + size)
        target[at : at + size] = data if key is None else apply_mask(data, key, at)

    def mask(self, start: int, end: int, key: bytes) -> None:
        """See :meth:`PayloadBuffer.mask`."""
        target = self._checked(start, end)
        with memoryview(target) as view, view[start:end] as window:
            target[start:end] = apply_mask(window, key, start)

    def finish(self) -> bytes:
        """See :meth:`PayloadBuffer.finish`."""
        data = self._checked(0, 0)
        try:
            data.append(0)  # fails while a view is alive, as the compiled one does
        except BufferError:
            raise BufferError("finish() while a view of the payload is alive") from None
        del data[-1]
        self._data = None
        return bytes(data)


new_payload_buffer: Callable[[int], PayloadBuffer] = (
    getattr(compiled_module, "PayloadBuffer", None) or PurePayloadBuffer
)
"""``new_payload_buffer(size)``: the compiled class where it is in use, else the pure one."""
