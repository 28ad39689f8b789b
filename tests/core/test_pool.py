"""The write buffer pool shared by connections."""

from __future__ import annotations

import pytest

from wsproto_core import BufferPool, SharedBufferPool


def test_an_empty_pool_makes_the_caller_allocate() -> None:
    assert SharedBufferPool().get() is None


def test_a_buffer_put_back_is_handed_out_again() -> None:
    pool = SharedBufferPool()
    buffer = bytearray(4096)
    pool.put(buffer)
    assert len(pool) == 1
    assert pool.get() is buffer
    assert pool.get() is None


def test_the_pool_keeps_at_most_max_idle_buffers() -> None:
    pool = SharedBufferPool(max_idle=2)
    buffers = [bytearray(8) for _ in range(3)]
    for buffer in buffers:
        pool.put(buffer)
    assert len(pool) == 2
    kept = {id(pool.get()), id(pool.get())}
    assert kept == {id(buffers[1]), id(buffers[2])}  # the oldest idle one was dropped


def test_max_idle_zero_keeps_nothing() -> None:
    pool = SharedBufferPool(max_idle=0)
    pool.put(bytearray(8))
    assert len(pool) == 0
    assert pool.get() is None


def test_negative_max_idle_is_refused() -> None:
    with pytest.raises(ValueError, match="max_idle"):
        SharedBufferPool(max_idle=-1)


def test_any_object_with_get_and_put_is_a_pool() -> None:
    class Mine:
        def get(self) -> bytearray | None:
            return None

        def put(self, buffer: bytearray) -> None:
            pass

    assert isinstance(Mine(), BufferPool)
    assert isinstance(SharedBufferPool(), BufferPool)
    assert not isinstance(object(), BufferPool)
