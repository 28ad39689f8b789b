"""Masking of frame payloads (RFC 6455 §5.3).

Masking is a XOR with a 4-byte key repeated over the payload, on every byte
a client sends and a server receives, so it has two implementations that
mean the same thing, byte for byte and error for error:

* the compiled one, ``wsproto_core._speedups`` (``_speedups.c``), XORs 16
  bytes at a time and releases the GIL for payloads of 64 KiB or more;
  40 to 60 times faster than the pure one on large payloads, 10 times on
  small ones (``docs/measure_mask.py``);
* the pure one, :func:`pure_apply_mask` and :func:`pure_mask_frame`, the
  definition, used where the extension was not built (no compiler, another
  Python implementation).

:func:`apply_mask` and :func:`mask_frame` are the compiled functions when
``wsproto_core._speedups`` imports, else the pure ones; :data:`COMPILED`
tells which. Setting ``WSPROTO_CORE_PURE_PYTHON=1`` in the environment
before ``wsproto_core`` is imported forces the pure ones (``make test`` runs
the unit tests both ways).

Invariants:

* The choice is made once, at import; nothing else in the core knows there
  are two implementations.
* Every function here returns a new ``bytes`` object and never changes its
  arguments.

How the pure one is fast enough: doing it a byte at a time in Python would
cost about 100 ns a byte; converting the payload to an integer and XOR-ing it
with the repeated key keeps every step in C. Large payloads go 8 KiB at a
time: the blocks stay in the CPU cache, which makes it about 1.7 times faster
than one huge integer, and the temporaries stay small, so unmasking costs
about twice the payload in memory instead of four times.
"""

from __future__ import annotations

import os
from types import ModuleType

__all__ = [
    "COMPILED",
    "PURE_PYTHON_ENV",
    "apply_mask",
    "mask_frame",
    "pure_apply_mask",
    "pure_mask_frame",
]

PURE_PYTHON_ENV = "WSPROTO_CORE_PURE_PYTHON"
"""The environment variable that, set to ``1``, makes :func:`apply_mask` and
:func:`mask_frame` the pure-Python functions even where the compiled ones were
built. Read once, when this module is first imported."""

_BLOCK = 8192  # a multiple of 4, so every block starts at key offset 0
_WHOLE = 16384  # below this, one integer is as fast as blocks


def pure_apply_mask(data: bytes | bytearray | memoryview, key: bytes, offset: int = 0) -> bytes:
    """Mask or unmask ``data`` with the 4-byte ``key`` (the operation is its own inverse).

    This is the pure-Python definition; :func:`apply_mask` is the one to call.

    Args:
        data: the payload, or a piece of it: any C-contiguous bytes-like
            object, taken as its bytes.
        key: the masking key from the frame header (bytes-like).
        offset: how many payload bytes came before ``data`` in the same frame,
            so a payload can be unmasked piece by piece as it arrives.

    Returns:
        The masked bytes, as many as ``data`` holds.

    Raises:
        ValueError: ``key`` is not 4 bytes long.
        TypeError: ``data`` or ``key`` is not bytes-like, or ``offset`` is
            not an integer.
        BufferError: ``data`` is not C-contiguous.
    """
    if type(key) is not bytes:
        key = memoryview(key).tobytes()  # rotating and repeating need bytes
    if len(key) != 4:
        # Any other length would repeat with the wrong period and mask wrong
        # without a word, so refuse it.
        raise ValueError("the masking key must be 4 bytes")
    shift = offset & 3  # before looking at data, so a bad offset always fails
    if type(data) is bytes or type(data) is bytearray:
        return _mask(data, key, shift)
    with memoryview(data) as view:
        if not view.c_contiguous:
            raise BufferError("the data to mask is not C-contiguous")
        # A view of another format counts items, not bytes.
        with view.cast("B") as octets:
            return _mask(octets, key, shift)


def _mask(data: bytes | bytearray | memoryview, key: bytes, shift: int) -> bytes:
    size = len(data)
    if not size:
        return b""
    if shift:
        key = key[shift:] + key[:shift]
    # "octet i of the transformed data is the XOR of octet i of the original
    # data with octet at index i modulo 4 of the masking key" -- RFC 6455 §5.3.
    # Little-endian keeps byte i of the payload at bit 8*i of the integer.
    if size < _WHOLE:
        repeated = (key * ((size + 3) >> 2))[:size]
        return (int.from_bytes(data, "little") ^ int.from_bytes(repeated, "little")).to_bytes(
            size, "little"
        )
    mask = int.from_bytes(key * (_BLOCK // 4), "little")
    end = size - size % _BLOCK
    with memoryview(data) as view:
        blocks = [
            (int.from_bytes(view[start : start + _BLOCK], "little") ^ mask).to_bytes(
                _BLOCK, "little"
            )
            for start in range(0, end, _BLOCK)
        ]
        if end < size:
            blocks.append(_mask(view[end:], key, 0))
    return b"".join(blocks)


def pure_mask_frame(
    header: bytes | bytearray | memoryview, payload: bytes | bytearray | memoryview, key: bytes
) -> bytes:
    """Return ``header`` followed by ``payload`` masked with ``key``, as one ``bytes``.

    This is the pure-Python definition; :func:`mask_frame` is the one to call.

    Args:
        header: the frame header, masking key included, sent as it is.
        payload: the whole payload of the frame, unmasked.
        key: the masking key.

    Returns:
        The frame, ready to send.

    Raises:
        ValueError: ``key`` is not 4 bytes long.
        TypeError: ``header``, ``payload`` or ``key`` is not bytes-like.
        BufferError: ``header`` or ``payload`` is not C-contiguous.
    """
    masked = pure_apply_mask(payload, key)
    with memoryview(header) as view:
        if not view.c_contiguous:
            raise BufferError("the frame header is not C-contiguous")
        return b"".join((view, masked))


COMPILED = False
"""Whether :func:`apply_mask` and :func:`mask_frame` are the compiled functions
of ``wsproto_core._speedups``; else they are the pure ones."""
if os.environ.get(PURE_PYTHON_ENV) != "1":
    try:
        from . import _speedups
    except ImportError:  # not built: no compiler, or not CPython
        pass
    else:
        COMPILED = True

compiled_module: ModuleType | None = _speedups if COMPILED else None
"""``wsproto_core._speedups`` when :data:`COMPILED`, else ``None`` (for frames.py)."""

apply_mask = _speedups.apply_mask if COMPILED else pure_apply_mask
"""Mask or unmask a payload (RFC 6455 §5.3): ``apply_mask(data, key, offset=0) -> bytes``.

The compiled function if :data:`COMPILED`, else :func:`pure_apply_mask`,
which documents the arguments; both accept any contiguous bytes-like
``data`` and raise :exc:`ValueError` for a key that is not 4 bytes long."""

mask_frame = _speedups.mask_frame if COMPILED else pure_mask_frame
"""A client frame as one object: ``mask_frame(header, payload, key) -> bytes``.

The header followed by the masked payload, with a single copy of a large
payload where ``header + apply_mask(payload, key)`` takes two. The compiled
function if :data:`COMPILED`, else :func:`pure_mask_frame`, which documents
the arguments."""
