"""s3torch.gpu's ordering logic, with a scripted device: which part buffer may be released when."""

from __future__ import annotations

import gc
import threading
import time
import weakref
from typing import Any, List

import pytest
import torch

from s3torch import gpu


class Part(bytearray):
    """Stands for a chunk: released (no reference left) is observable through a weakref."""


class ScriptedDevice:
    """Copies complete only when the test says so; wait() blocks until then, like a real device."""

    def __init__(self) -> None:
        self.events: List[dict] = []
        self.synchronizations = 0

    def handles(self, tensor: torch.Tensor) -> bool:
        return True

    def copy(self, dest: torch.Tensor, chunk: Any) -> dict:
        event = {"done": threading.Event(), "dest": dest, "data": bytes(chunk)}
        self.events.append(event)
        return event

    def complete(self, index: int) -> None:
        event = self.events[index]
        event["dest"].copy_(torch.frombuffer(bytearray(event["data"]), dtype=torch.uint8))
        event["done"].set()

    def fail(self, index: int) -> None:
        self.events[index]["error"] = RuntimeError(f"device error in copy {index}")
        self.events[index]["done"].set()

    def wait(self, event: dict) -> None:
        event["done"].wait()
        if "error" in event:
            raise event["error"]

    def synchronize(self) -> None:
        for i, event in enumerate(self.events):
            if not event["done"].is_set():
                self.complete(i)
        self.synchronizations += 1


def parts(n: int, size: int = 4) -> List[Part]:
    return [Part(bytes([i]) * size) for i in range(n)]


def eventually(condition: Any, timeout: float = 5.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        gc.collect()
        if condition():
            return True
        time.sleep(0.01)
    return False


def test_a_part_is_released_once_its_copy_completed_in_order() -> None:
    device = ScriptedDevice()
    copies = gpu.AsyncCopies(device, max_held_bytes=1 << 20)
    dest = torch.zeros(12, dtype=torch.uint8)
    chunks = parts(3)
    refs = [weakref.ref(c) for c in chunks]
    for i, c in enumerate(chunks):
        copies.submit(dest[4 * i : 4 * i + 4], c)
    del chunks, c
    time.sleep(0.1)
    gc.collect()
    assert all(r() is not None for r in refs)  # nothing completed: every part is held
    assert copies.held_bytes == 12
    device.complete(0)  # released without any further submit: the reaper saw its event
    assert eventually(lambda: refs[0]() is None)
    device.complete(2)  # out of order on purpose: the oldest in flight (1) is not done
    time.sleep(0.1)
    gc.collect()
    assert refs[1]() is not None and refs[2]() is not None
    device.complete(1)
    assert eventually(lambda: refs[1]() is None and refs[2]() is None)
    assert copies.held_bytes == 0
    copies.finish()
    copies.close()
    assert device.synchronizations == 1 and copies.synchronizations == 1
    assert dest.tolist() == [0] * 4 + [1] * 4 + [2] * 4
    assert copies.copies == 3 and copies.bytes == 12


def test_too_much_held_makes_submit_wait_for_the_device() -> None:
    device = ScriptedDevice()
    copies = gpu.AsyncCopies(device, max_held_bytes=8)
    dest = torch.zeros(16, dtype=torch.uint8)
    chunks = parts(4)
    submitted: List[int] = []

    def feed() -> None:
        for i, c in enumerate(chunks):
            copies.submit(dest[4 * i : 4 * i + 4], c)
            submitted.append(i)

    feeder = threading.Thread(target=feed)
    feeder.start()
    assert eventually(lambda: submitted == [0, 1])
    time.sleep(0.1)
    assert submitted == [0, 1] and copies.held_bytes == 8  # the third waits for the device
    device.complete(0)
    assert eventually(lambda: submitted == [0, 1, 2])
    device.complete(1)
    feeder.join(timeout=5)
    assert submitted == [0, 1, 2, 3] and copies.waits == 2
    copies.finish()
    copies.close()
    assert dest.tolist() == [0] * 4 + [1] * 4 + [2] * 4 + [3] * 4
    assert copies.held_bytes == 0


def test_a_device_error_is_raised_not_waited_for_forever() -> None:
    device = ScriptedDevice()
    copies = gpu.AsyncCopies(device, max_held_bytes=8)
    dest = torch.zeros(16, dtype=torch.uint8)
    chunks = parts(3)
    copies.submit(dest[0:4], chunks[0])
    copies.submit(dest[4:8], chunks[1])
    errors: List[BaseException] = []

    def third() -> None:  # waits for room, which never comes: the device fails instead
        try:
            copies.submit(dest[8:12], chunks[2])
        except RuntimeError as e:
            errors.append(e)

    waiter = threading.Thread(target=third)
    waiter.start()
    time.sleep(0.1)
    device.fail(0)
    waiter.join(timeout=5)
    assert not waiter.is_alive() and "device error in copy 0" in str(errors[0])
    with pytest.raises(RuntimeError, match="device error in copy 0"):
        copies.finish()
    copies.close()
    with pytest.raises(RuntimeError, match="device error"):
        copies.submit(dest[12:16], Part(b"late"))


def test_submit_after_close_is_refused() -> None:
    copies = gpu.AsyncCopies(ScriptedDevice(), max_held_bytes=8)
    copies.finish()
    copies.close()
    copies.close()  # idempotent
    with pytest.raises(RuntimeError, match="closed"):
        copies.submit(torch.zeros(1, dtype=torch.uint8), Part(b"x"))


def test_finish_synchronizes_once_and_releases_everything() -> None:
    device = ScriptedDevice()
    copies = gpu.AsyncCopies(device, max_held_bytes=1 << 20)
    chunks = parts(5)
    refs = [weakref.ref(c) for c in chunks]
    for c in chunks:
        copies.submit(torch.zeros(4, dtype=torch.uint8), c)
    del chunks, c
    copies.finish()
    copies.close()
    gc.collect()
    assert all(r() is None for r in refs)
    assert device.synchronizations == 1 and copies.held_bytes == 0


def test_without_cuda_there_is_no_copier_and_registration_can_be_turned_off(monkeypatch: Any) -> None:
    assert gpu.cuda_copier(torch.device("cpu"), None) is None
    if not torch.cuda.is_available():
        assert gpu.cuda_copier(torch.device("cuda", 0), None) is None
    monkeypatch.setenv("S3TORCH_REGISTER_HOST_MEMORY", "0")
    assert gpu.register_host_memory(object(), torch.device("cuda", 0)) is False


def test_cuda_runtime_candidates_end_with_the_usual_sonames() -> None:
    names = gpu._cuda_runtime_candidates()
    assert names[-4:] == ["libcudart.so.13", "libcudart.so.12", "libcudart.so.11.0", "libcudart.so"]
    assert all("libcudart" in n for n in names)


def test_copy_stream_to_tensor_refuses_what_it_cannot_copy() -> None:
    with pytest.raises(ValueError, match="contiguous"):
        gpu.copy_stream_to_tensor(iter(()), torch.zeros(4, 4).t(), copier=ScriptedDevice())
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="needs a CUDA tensor"):
            gpu.copy_stream_to_tensor(iter(()), torch.zeros(4))
