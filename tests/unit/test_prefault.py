"""_core.Prefault: maps in fresh destination memory from a thread, ahead of a transfer."""

from __future__ import annotations

import mmap
import os
import time

import pytest

from s3torch import _core

MiB = 1024 * 1024


def _mapped_when_done(p: _core.Prefault) -> int:
    """What ``p`` mapped once its thread stopped on its own."""
    deadline = time.monotonic() + 30
    while not p.finished and time.monotonic() < deadline:
        time.sleep(0.01)
    assert p.finished
    p.close()
    p.close()  # again: nothing left to stop or release
    return p.mapped


def test_fresh_memory_is_mapped_in_and_its_bytes_kept() -> None:
    region = mmap.mmap(-1, 64 * MiB)
    region[:5] = b"hello"  # one page of the first step is mapped already: the step is still mapped in
    mapped = _mapped_when_done(_core.Prefault([region]))
    assert mapped == (64 * MiB if _core.Prefault.supported() else 0)
    assert region[:5] == b"hello" and region[5:4096] == bytes(4091) and region[-1] == 0


def test_memory_already_written_is_left_alone() -> None:
    region = mmap.mmap(-1, 40 * MiB)
    region.write(b"\1" * (40 * MiB))
    assert _mapped_when_done(_core.Prefault([region])) == 0
    assert region[:3] == b"\1\1\1"


def test_small_spans_start_nothing_and_buffers_must_be_writable() -> None:
    p = _core.Prefault([bytearray(10 * MiB), mmap.mmap(-1, 10 * MiB)])  # under 32 MiB in all
    assert p.finished  # no thread
    p.close()
    assert p.mapped == 0
    with pytest.raises((BufferError, TypeError)):
        _core.Prefault([b"read-only"])


def test_a_forked_child_does_not_wait_for_the_parents_thread() -> None:
    region = mmap.mmap(-1, 512 * MiB)
    p = _core.Prefault([region])  # its thread is still mapping when the process forks
    pid = os.fork()
    if pid == 0:
        code = 1
        try:
            p.close()  # the child has no such thread: waiting for it would never end
            code = 0
        finally:
            os._exit(code)
    deadline = time.monotonic() + 20
    status = None
    while time.monotonic() < deadline:
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            break
        time.sleep(0.05)
    else:
        os.kill(pid, 9)
        os.waitpid(pid, 0)
        pytest.fail("the forked child hung closing the parent's Prefault")
    p.close()
    assert status is not None and os.waitstatus_to_exitcode(status) == 0
