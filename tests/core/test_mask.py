"""Masking (RFC 6455 §5.3): the compiled and the pure functions, and the choice between them.

1. Each implementation matches a reference built straight from §5.3, at every
   size around the word, block and GIL boundaries, at every alignment and
   offset, for every kind of buffer.
2. Compiled and pure agree on arbitrary input (hypothesis), errors included.
3. ``wsproto_core.mask`` picks the compiled functions when they import, the
   pure ones when they don't or when ``WSPROTO_CORE_PURE_PYTHON=1``.

The pure functions are tested in every run; the compiled ones wherever the
extension was built, which CI requires (see ``test_ci_runs_the_path_it_means``).
"""

from __future__ import annotations

import array
import importlib.util
import itertools
import os
import subprocess
import sys
import types
from collections.abc import Callable
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import wsproto_core
from wsproto_core import mask
from wsproto_core.mask import PURE_PYTHON_ENV, pure_apply_mask, pure_mask_frame

try:
    from wsproto_core import _speedups
except ImportError:  # not built here: only the pure functions are tested
    _speedups = None  # type: ignore[assignment]

needs_compiled = pytest.mark.skipif(_speedups is None, reason="wsproto_core._speedups not built")

APPLY_MASK = [
    pytest.param(pure_apply_mask, id="pure"),
    pytest.param(getattr(_speedups, "apply_mask", None), id="compiled", marks=needs_compiled),
]
MASK_FRAME = [
    pytest.param(pure_mask_frame, id="pure"),
    pytest.param(getattr(_speedups, "mask_frame", None), id="compiled", marks=needs_compiled),
]

KEY = b"\x37\xfa\x21\x3d"
# Around the compiled loop's 8- and 16-byte steps, the pure one's 8 KiB blocks
# and 16 KiB switch, the compiled one's 64 KiB GIL threshold, and a large message.
SIZES = [
    *range(101),
    *(4095, 4096, 4097, 8191, 8192, 8193, 16383, 16384, 16385),
    *(65535, 65536, 65537, 1 << 20, 3 * (1 << 20) + 3),
]
XOR_TABLES = [bytes(byte ^ k for byte in range(256)) for k in range(256)]


def reference_mask(data: bytes, key: bytes, offset: int = 0) -> bytes:
    """RFC 6455 §5.3 literally: octet i XOR key octet (i + offset) mod 4.

    Each of the four octets of the key applies to every fourth octet, so
    ``bytes.translate`` does it at C speed, even for megabytes.
    """
    out = bytearray(data)
    for j in range(4):
        out[j::4] = data[j::4].translate(XOR_TABLES[key[(j + offset) % 4]])
    return bytes(out)


def test_reference_is_the_rfc_definition() -> None:
    data = bytes(range(256)) * 3
    for offset in range(5):
        assert reference_mask(data, KEY, offset) == bytes(
            byte ^ KEY[(i + offset) % 4] for i, byte in enumerate(data)
        )


def payload(size: int) -> bytes:
    """At least ``size`` bytes with no period of 4 or 8, so any slip of the key shows."""
    return bytes((i * 7 + (i >> 8) * 13) & 0xFF for i in range(min(size, 65599))) * (
        size // 65599 + 1
    )


# -- 1. each implementation against the reference -------------------------------------------


@pytest.mark.parametrize("apply_mask", APPLY_MASK)
def test_every_size_alignment_and_offset(apply_mask: Callable[..., bytes]) -> None:
    whole = payload(max(SIZES) + 8)
    for size in SIZES:
        large = size > 4096
        for start in (0, 1, 3, 7) if large else range(8):  # data at any address
            data = whole[start : start + size]
            for offset in (0, 1, 3) if large else range(5):
                expected = reference_mask(data, KEY, offset)
                with memoryview(whole) as view, view[start : start + size] as window:
                    assert apply_mask(window, KEY, offset) == expected, (size, start, offset)
                if start == 0:
                    assert apply_mask(data, KEY, offset) == expected, (size, offset)
                    assert apply_mask(bytearray(data), KEY, offset) == expected, (size, offset)


@pytest.mark.parametrize("apply_mask", APPLY_MASK)
def test_any_bytes_like_object(apply_mask: Callable[..., bytes]) -> None:
    data = bytes(range(200))
    expected = reference_mask(data, KEY)
    assert apply_mask(array.array("B", data), KEY) == expected
    # Other formats are taken as their bytes, not their items.
    with memoryview(data) as view, view.cast("I") as words:
        assert len(words) == 50
        assert apply_mask(words, KEY) == expected
    assert apply_mask(data, bytearray(KEY)) == expected
    assert apply_mask(data, memoryview(KEY)) == expected
    assert apply_mask(data, array.array("I", [int.from_bytes(KEY, sys.byteorder)])) == expected
    result = apply_mask(bytearray(data), KEY)
    assert type(result) is bytes


@pytest.mark.parametrize("apply_mask", APPLY_MASK)
def test_offset_is_any_integer(apply_mask: Callable[..., bytes]) -> None:
    data = bytes(range(40))
    for offset in (4, 5, 7, 1 << 63, (1 << 64) + 1, (1 << 100) + 3, -1, -(1 << 70) + 2):
        assert apply_mask(data, KEY, offset) == reference_mask(data, KEY, offset % 4), offset
    assert apply_mask(data, KEY, True) == reference_mask(data, KEY, 1)
    assert apply_mask(data=data, key=KEY, offset=6) == reference_mask(data, KEY, 2)


@pytest.mark.parametrize("apply_mask", APPLY_MASK)
def test_pieces_at_their_offsets_make_the_whole(apply_mask: Callable[..., bytes]) -> None:
    data = payload(200_003)
    cuts = [0, 1, 2, 5, 13, 4096, 70_001, 70_002, 150_000, len(data)]
    pieces = [apply_mask(data[a:b], KEY, a) for a, b in itertools.pairwise(cuts)]
    assert b"".join(pieces) == reference_mask(data, KEY)


@pytest.mark.parametrize("apply_mask", APPLY_MASK)
def test_releases_the_buffers_it_borrows(apply_mask: Callable[..., bytes]) -> None:
    # A buffer still exported would make resizing fail with BufferError, as the
    # core's receive buffer (a bytearray) is resized after every frame.
    for size in (10, 70_000):
        data = bytearray(size)
        apply_mask(data, KEY)
        with pytest.raises(ValueError, match="4 bytes"):
            apply_mask(data, b"abc")
        with pytest.raises(TypeError):
            apply_mask(data, KEY, "1")
        data += b"more"
        del data[:3]


@pytest.mark.parametrize("mask_frame", MASK_FRAME)
def test_mask_frame_is_header_and_masked_payload(mask_frame: Callable[..., bytes]) -> None:
    header = b"\x82\xfe\x00\x00" + KEY
    for size in (0, 1, 7, 16, 125, 4097, 65536, 1 << 20):
        data = payload(size)[:size]
        frame = mask_frame(header, data, KEY)
        assert type(frame) is bytes
        assert frame == header + reference_mask(data, KEY)
    assert mask_frame(b"", b"abcd", KEY) == reference_mask(b"abcd", KEY)
    assert mask_frame(bytearray(b"h"), memoryview(b"abcd"), bytearray(KEY)) == b"h" + (
        reference_mask(b"abcd", KEY)
    )
    assert mask_frame(header=b"h", payload=b"p", key=KEY) == b"h" + reference_mask(b"p", KEY)
    with memoryview(b"xabcdefgh") as view, view[1:] as window:
        assert mask_frame(window[:2], window[2:], KEY) == b"ab" + reference_mask(b"cdefgh", KEY)


# -- 2. compiled and pure agree -------------------------------------------------------------

BUFFER_KINDS = ["bytes", "bytearray", "memoryview", "unaligned view", "array"]


def as_buffer(data: bytes, kind: str, lead: int) -> Any:
    if kind == "bytearray":
        return bytearray(data)
    if kind == "memoryview":
        return memoryview(data)
    if kind == "unaligned view":
        return memoryview(bytes(lead) + data)[lead:]
    if kind == "array":
        return array.array("B", data)
    return data


@needs_compiled
@settings(max_examples=300)
@given(
    data=st.binary(max_size=3000),
    key=st.binary(min_size=4, max_size=4),
    offset=st.integers(-(1 << 70), 1 << 70),
    kind=st.sampled_from(BUFFER_KINDS),
    lead=st.integers(1, 15),
)
def test_compiled_equals_pure(data: bytes, key: bytes, offset: int, kind: str, lead: int) -> None:
    buffer = as_buffer(data, kind, lead)
    compiled = _speedups.apply_mask(buffer, key, offset)
    assert compiled == pure_apply_mask(buffer, key, offset)
    assert compiled == reference_mask(data, key, offset)
    assert _speedups.apply_mask(compiled, key, offset) == data  # its own inverse


@needs_compiled
@settings(max_examples=200)
@given(
    header=st.binary(max_size=14),
    data=st.binary(max_size=3000),
    key=st.binary(min_size=4, max_size=4),
    kind=st.sampled_from(BUFFER_KINDS),
)
def test_compiled_mask_frame_equals_pure(header: bytes, data: bytes, key: bytes, kind: str) -> None:
    buffer = as_buffer(data, kind, 3)
    compiled = _speedups.mask_frame(header, buffer, key)
    assert compiled == pure_mask_frame(header, buffer, key)
    assert compiled == header + reference_mask(data, key)


# Each call fails the same way in both implementations.
NOT_CONTIGUOUS = memoryview(bytes(range(16)))[::2]
BAD_APPLY_MASK_CALLS: list[tuple[tuple[Any, ...], dict[str, Any], type[Exception], str]] = [
    ((b"", b""), {}, ValueError, "4 bytes"),
    ((b"", b"abc"), {}, ValueError, "4 bytes"),
    ((b"data", b"abc"), {}, ValueError, "4 bytes"),
    ((b"data", b"abcde"), {}, ValueError, "4 bytes"),
    ((bytes(70_000), bytes(8)), {}, ValueError, "4 bytes"),
    ((b"data", 1234), {}, TypeError, ""),
    ((b"data", "abcd"), {}, TypeError, ""),
    ((b"data", None), {}, TypeError, ""),
    ((None, KEY), {}, TypeError, ""),
    (("text", KEY), {}, TypeError, ""),
    (([1, 2, 3], KEY), {}, TypeError, ""),
    ((NOT_CONTIGUOUS, KEY), {}, BufferError, "contiguous"),
    ((b"data", KEY, "1"), {}, TypeError, ""),
    ((b"", KEY, 1.0), {}, TypeError, ""),
    ((b"data", KEY, None), {}, TypeError, ""),
    ((b"data",), {}, TypeError, "key"),
    ((), {"key": KEY}, TypeError, "data"),
    ((b"data", KEY, 0, 1), {}, TypeError, "positional"),
    ((b"data", KEY), {"shift": 1}, TypeError, "shift"),
    ((b"data", KEY), {"key": KEY}, TypeError, "key"),
]


def bad_call_id(call: tuple[tuple[Any, ...], dict[str, Any], type[Exception], str]) -> str:
    args, kwargs, error, _ = call
    shown = [
        type(arg).__name__ + (f"[{len(arg)}]" if hasattr(arg, "__len__") else "") for arg in args
    ]
    return ",".join([*shown, *kwargs]) + "-" + error.__name__


@pytest.mark.parametrize("apply_mask", APPLY_MASK)
@pytest.mark.parametrize(
    ("args", "kwargs", "error", "match"),
    BAD_APPLY_MASK_CALLS,
    ids=[bad_call_id(c) for c in BAD_APPLY_MASK_CALLS],
)
def test_apply_mask_refuses(
    apply_mask: Callable[..., bytes],
    args: tuple[Any, ...],
    kwargs: dict[str, Any],
    error: type[Exception],
    match: str,
) -> None:
    with pytest.raises(error, match=match or None):
        apply_mask(*args, **kwargs)


BAD_MASK_FRAME_CALLS: list[tuple[tuple[Any, ...], dict[str, Any], type[Exception], str]] = [
    ((b"h", b"data", b"abc"), {}, ValueError, "4 bytes"),
    ((b"h", b"", b"abcde"), {}, ValueError, "4 bytes"),
    ((b"h", b"data", "abcd"), {}, TypeError, ""),
    ((None, b"data", KEY), {}, TypeError, ""),
    (("h", b"data", KEY), {}, TypeError, ""),
    ((b"h", None, KEY), {}, TypeError, ""),
    ((b"h", NOT_CONTIGUOUS, KEY), {}, BufferError, "contiguous"),
    ((NOT_CONTIGUOUS, b"data", KEY), {}, BufferError, "contiguous"),
    ((b"h", b"data"), {}, TypeError, "key"),
    ((b"h", b"data", KEY, 0), {}, TypeError, "positional"),
]


@pytest.mark.parametrize("mask_frame", MASK_FRAME)
@pytest.mark.parametrize(
    ("args", "kwargs", "error", "match"),
    BAD_MASK_FRAME_CALLS,
    ids=[bad_call_id(c) for c in BAD_MASK_FRAME_CALLS],
)
def test_mask_frame_refuses(
    mask_frame: Callable[..., bytes],
    args: tuple[Any, ...],
    kwargs: dict[str, Any],
    error: type[Exception],
    match: str,
) -> None:
    with pytest.raises(error, match=match or None):
        mask_frame(*args, **kwargs)


@pytest.mark.parametrize("mask_frame", MASK_FRAME)
def test_mask_frame_releases_the_buffers_it_borrows(mask_frame: Callable[..., bytes]) -> None:
    header, data = bytearray(b"head"), bytearray(70_000)
    mask_frame(header, data, KEY)
    with pytest.raises(TypeError):
        mask_frame("not bytes", data, KEY)  # fails after borrowing data
    header += b"more"
    data += b"more"


# -- 3. choosing the implementation ---------------------------------------------------------


def test_the_core_uses_the_chosen_functions() -> None:
    if mask.COMPILED:
        assert mask.apply_mask is _speedups.apply_mask
        assert mask.mask_frame is _speedups.mask_frame
    else:
        assert mask.apply_mask is pure_apply_mask
        assert mask.mask_frame is pure_mask_frame
    assert wsproto_core.apply_mask is mask.apply_mask


def test_ci_runs_the_path_it_means() -> None:
    """`make unit` must test the compiled path in CI, and `make unit-pure` the pure one."""
    if os.environ.get(PURE_PYTHON_ENV) == "1":
        assert not mask.COMPILED
    elif os.environ.get("CI"):
        assert mask.COMPILED, "wsproto_core._speedups was not built; see setup.py"


def load_mask_module(
    monkeypatch: pytest.MonkeyPatch, env: str | None, speedups: types.ModuleType | None
) -> types.ModuleType:
    """A fresh copy of wsproto_core.mask, imported with this environment and this extension.

    The copy runs mask.py's own lines (so they count for coverage) without
    touching the module the rest of the core and the other tests use.
    ``speedups=None`` makes ``from . import _speedups`` fail as if never built.
    """
    if env is None:
        monkeypatch.delenv(PURE_PYTHON_ENV, raising=False)
    else:
        monkeypatch.setenv(PURE_PYTHON_ENV, env)
    monkeypatch.setitem(sys.modules, "wsproto_core._speedups", speedups)
    if speedups is None:
        monkeypatch.delattr(wsproto_core, "_speedups", raising=False)
    else:
        monkeypatch.setattr(wsproto_core, "_speedups", speedups, raising=False)
    spec = importlib.util.spec_from_file_location("wsproto_core._mask_copy", mask.__file__)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def fake_speedups() -> types.ModuleType:
    module = types.ModuleType("wsproto_core._speedups")
    module.apply_mask = lambda data, key, offset=0: b"compiled"  # type: ignore[attr-defined]
    module.mask_frame = lambda header, payload, key: b"compiled"  # type: ignore[attr-defined]
    return module


@pytest.mark.parametrize("env", [None, "", "0", "yes"])
def test_compiled_functions_are_used_when_they_import(
    monkeypatch: pytest.MonkeyPatch, env: str | None
) -> None:
    speedups = fake_speedups()
    module = load_mask_module(monkeypatch, env, speedups)
    assert module.COMPILED is True
    assert module.apply_mask is speedups.apply_mask
    assert module.mask_frame is speedups.mask_frame


def test_pure_functions_are_used_when_the_extension_is_missing(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    module = load_mask_module(monkeypatch, None, None)
    assert module.COMPILED is False
    assert module.apply_mask is module.pure_apply_mask
    assert module.mask_frame is module.pure_mask_frame
    assert module.apply_mask(b"abcd", KEY) == reference_mask(b"abcd", KEY)


def test_the_environment_forces_the_pure_functions(monkeypatch: pytest.MonkeyPatch) -> None:
    module = load_mask_module(monkeypatch, "1", fake_speedups())
    assert module.COMPILED is False
    assert module.apply_mask is module.pure_apply_mask
    assert module.mask_frame is module.pure_mask_frame


def probe(env: dict[str, str]) -> str:
    code = (
        "import wsproto_core, wsproto_core.mask as m; "
        "print(m.COMPILED, wsproto_core.apply_mask is m.pure_apply_mask)"
    )
    return subprocess.run(
        [sys.executable, "-c", code], env=env, check=True, capture_output=True, text=True
    ).stdout.strip()


def test_the_environment_variable_in_a_fresh_interpreter() -> None:
    """The variable as a user sets it: before anything imports wsproto_core."""
    env = {name: value for name, value in os.environ.items() if name != PURE_PYTHON_ENV}
    assert probe({**env, PURE_PYTHON_ENV: "1"}) == "False True"
    built = _speedups is not None
    assert probe(env) == f"{built} {not built}"
