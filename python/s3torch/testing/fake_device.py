"""A fake device for the GPU-destination logic (s3torch.gpu), on machines without a GPU.

``FakeDevice`` handles the CPU tensors it was told to (``claim``), as if they were on a device. Each
queued copy runs later, in order, on a worker thread (``delay_s`` after the previous one, like a
copy engine behind the download), reading the part buffer by address at that time. It checks that
the buffer still holds what it held when the copy was queued: a part buffer released to the pool
before its copy completed would have been reused, and the check records it in ``violations``.
"""

from __future__ import annotations

import ctypes
import queue
import threading
import time
import zlib
from typing import Any, List, Optional, Set

import torch


class FakeEvent:
    def __init__(self, index: int) -> None:
        self.index = index
        self.completed = threading.Event()
        self.error: Optional[BaseException] = None


class FakeDevice:
    """A DeviceCopier (s3torch.gpu) over claimed CPU tensors, with late, in-order copies."""

    def __init__(self, delay_s: float = 0.002, fail_at: Optional[int] = None) -> None:
        self.delay_s = delay_s
        self.fail_at = fail_at  # this copy (0-based) fails, as a device error would
        self._storages: Set[int] = set()
        self._queue: queue.Queue[Optional[tuple]] = queue.Queue()
        self._lock = threading.Lock()
        self.queued = 0
        self.completed = 0
        self.synchronizations = 0
        self.violations: List[str] = []
        self._worker = threading.Thread(target=self._run, name="fake-device", daemon=True)
        self._worker.start()

    def claim(self, tensors: Any) -> None:
        """Makes these tensors (an iterable) "device" tensors."""
        for t in tensors:
            self._storages.add(t.untyped_storage().data_ptr())

    def factory(self, device: torch.device, client: Any) -> Optional[FakeDevice]:
        """For S3StorageReader._device_copier (a CopierFactory): this device for CPU tensors."""
        return self if device.type == "cpu" else None

    # -- DeviceCopier
    def handles(self, tensor: torch.Tensor) -> bool:
        return tensor.untyped_storage().data_ptr() in self._storages

    def copy(self, dest: torch.Tensor, chunk: Any) -> FakeEvent:
        n = len(chunk)
        if dest.numel() != n or dest.dtype != torch.uint8:
            self.violations.append(f"copy of {n} bytes into a {dest.dtype} view of {dest.numel()}")
        with self._lock:
            event = FakeEvent(self.queued)
            self.queued += 1
        # The address only: holding the chunk here would keep its buffer out of the pool and hide an
        # early release.
        self._queue.put((dest, chunk.address, n, zlib.crc32(memoryview(chunk)), event))
        return event

    def wait(self, event: FakeEvent) -> None:
        event.completed.wait()
        if event.error is not None:
            raise event.error

    def synchronize(self) -> None:
        self._queue.join()
        self.synchronizations += 1
        if self.fail_at is not None and self.fail_at < self.queued:
            raise RuntimeError(f"fake device: copy {self.fail_at} failed")

    def close(self) -> None:
        self._queue.put(None)
        self._worker.join(timeout=10)

    def _run(self) -> None:
        while True:
            item = self._queue.get()
            if item is None:
                self._queue.task_done()
                return
            dest, address, n, crc, event = item
            time.sleep(self.delay_s)
            if event.index == self.fail_at:
                event.error = RuntimeError(f"fake device: copy {event.index} failed")
                event.completed.set()
                self._queue.task_done()
                continue
            data = ctypes.string_at(address, n)
            if zlib.crc32(data) != crc:
                self.violations.append(f"copy {event.index}: its part buffer changed before the copy ran")
            dest.copy_(torch.frombuffer(bytearray(data), dtype=torch.uint8))
            with self._lock:
                self.completed += 1
            event.completed.set()
            self._queue.task_done()
