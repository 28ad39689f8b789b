"""The write buffer pool shared by connections."""

from __future__ import annotations

import array

import pytest

from wsproto_core import BufferPool, FrameBuffer, SharedBufferPool


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


def test_frame_buffer_cuts_writes_into_full_frames() -> None:
    frames = FrameBuffer(4)
    assert list(frames.write(b"ab")) == []
    assert list(frames.write(bytearray(b"cdefghij"))) == [b"abcd", b"efgh"]
    assert list(frames.write(memoryview(b""))) == []
    assert frames.finish() == b"ij"


def test_frame_buffer_never_ends_with_an_empty_frame() -> None:
    frames = FrameBuffer(4)
    assert list(frames.write(b"abcd")) == []  # full, but nothing more came yet
    assert frames.finish() == b"abcd"


def test_frame_buffer_without_writes_finishes_empty() -> None:
    assert FrameBuffer(4).finish() == b""


def test_frame_buffer_borrows_only_while_writing() -> None:
    pool = SharedBufferPool()
    lent = bytearray(4)
    pool.put(bytearray(9))  # another size: not used, and dropped
    pool.put(lent)
    frames = FrameBuffer(4, pool)
    assert len(pool) == 2
    assert list(frames.write(array.array("H", [1, 2, 3]))) == [bytes(array.array("H", [1, 2]))]
    assert len(pool) == 1
    assert frames.finish() == bytes(array.array("H", [3]))
    assert len(pool) == 2
    assert pool.get() is lent
    other = FrameBuffer(4, pool)
    list(other.write(b"x"))
    other.finish()
    assert [len(buffer) for buffer in pool._idle] == [4]  # the 9-byte one was replaced
