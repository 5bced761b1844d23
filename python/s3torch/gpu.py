"""GPU destinations: host-to-device copies straight from the part buffers, overlapped with the download.

A GET stream's chunks live in the client's part buffers. With CUDA, those buffers' slabs are registered
as page-locked memory (``cudaHostRegister``, loaded at run time from the CUDA runtime torch uses: the
wheel links nothing of CUDA), so each chunk is copied to the GPU by DMA, asynchronously, on a side
stream, while the next parts download. A chunk, and so its part buffer, goes back to the pool only
once its copy's event has completed; the caller synchronizes once, at the end.

``copy_stream_to_tensor`` does this for ``get_object_stream`` users; the concurrent DCP loader does it
for every CUDA destination that takes the stored bytes as they are (same dtype, contiguous). Set
``S3TORCH_REGISTER_HOST_MEMORY=0`` to leave the part buffers pageable (copies then go through CUDA's
own staging: correct, slower).

The device is an interface (``DeviceCopier``), so the ordering logic (which buffer may be released
when) is tested without a GPU, with a fake device.
"""

from __future__ import annotations

import collections
import logging
import os
import threading
import warnings
from typing import Any, Callable, Deque, Dict, List, Optional, Protocol, Tuple

import torch

from ._exceptions import S3Exception

log = logging.getLogger(__name__)

_REGISTER_ENV = "S3TORCH_REGISTER_HOST_MEMORY"


class DeviceCopier(Protocol):
    """The device side of copies from part buffers: one in-order queue of asynchronous copies."""

    def handles(self, tensor: torch.Tensor) -> bool:
        """Whether ``tensor`` lives on this copier's device."""

    def copy(self, dest: torch.Tensor, chunk: Any) -> Any:
        """Queues a copy of ``chunk``'s bytes (a buffer) into ``dest`` (uint8, on the device); returns
        an event that completes with it. Copies complete in the order they were queued."""

    def wait(self, event: Any) -> None:
        """Blocks until the copy of ``event`` has completed."""

    def synchronize(self) -> None:
        """Blocks until every copy queued so far has completed."""


# torch.frombuffer warns about read-only buffers; the part buffers are only ever read from here.
warnings.filterwarnings("ignore", message="The given buffer is not writable", category=UserWarning)


class CudaCopier:
    """Copies on a side stream of one CUDA device, each followed by an event."""

    def __init__(self, device: torch.device, after: Optional[Any] = None) -> None:
        self.device = device
        self.stream = torch.cuda.Stream(device)
        # The copies must not overtake work already queued for the destinations (their allocation's
        # fill, an earlier step's writes) on the stream of the thread that started the load (`after`;
        # torch's current stream is per thread).
        self.stream.wait_stream(after if after is not None else torch.cuda.current_stream(device))
        self._last: Optional[Any] = None

    def handles(self, tensor: torch.Tensor) -> bool:
        return tensor.device.type == "cuda" and tensor.device.index == self.device.index

    def copy(self, dest: torch.Tensor, chunk: Any) -> Any:
        src = torch.frombuffer(chunk, dtype=torch.uint8)
        with torch.cuda.stream(self.stream):
            dest.copy_(src, non_blocking=True)
            event = torch.cuda.Event(blocking=True)  # the reaper sleeps in synchronize(), never spins
            event.record(self.stream)
        self._last = event
        return event

    def wait(self, event: Any) -> None:
        event.synchronize()

    def synchronize(self) -> None:
        # The last copy's event, not the stream: a pooled side stream may also carry others' work.
        if self._last is not None:
            self._last.synchronize()


class AsyncCopies:
    """Copies in flight from part buffers to one device.

    Each chunk is held (so its part buffer stays out of the pool) until its copy's event has
    completed; so is its destination view (so that no allocator reuses that memory meanwhile). A
    reaper thread waits for the oldest event and then releases its chunk, so buffers go back to the
    pool as the device finishes, whether or not anything else is submitted: a consumer blocked
    waiting for its next part cannot be waiting for a buffer that only its own next submit would
    release. At most ``max_held_bytes`` are held; a submit beyond that waits for the reaper, so a
    device slower than the download stalls the download instead of exhausting the pool. A device
    error is raised by the next ``submit`` or ``finish``. Thread-safe: the loader's workers share
    one instance per device, and its queue order is the device's copy order. ``close()`` stops the
    reaper (after ``finish()``).
    """

    def __init__(self, copier: DeviceCopier, max_held_bytes: int) -> None:
        self.copier = copier
        self._max_held = max(1, max_held_bytes)
        self._cv = threading.Condition()
        self._in_flight: Deque[Tuple[Any, Any, Any, int]] = collections.deque()  # event, chunk, dest, n
        self._closed = False
        self._error: Optional[BaseException] = None
        self.held_bytes = 0
        self.copies = 0
        self.bytes = 0
        self.waits = 0  # submits that waited because too much was held
        self.synchronizations = 0
        self._reaper = threading.Thread(target=self._reap, name="s3torch-copy-reaper", daemon=True)
        self._reaper.start()

    def _check(self) -> None:
        if self._error is not None:
            raise self._error
        if self._closed:
            raise RuntimeError("AsyncCopies is closed")

    def submit(self, dest: torch.Tensor, chunk: Any) -> Any:
        """Queues the copy of ``chunk`` into ``dest``; returns its event."""
        n = len(chunk)
        with self._cv:
            self._check()
            if self.held_bytes and self.held_bytes + n > self._max_held:
                self.waits += 1
                self._cv.wait_for(
                    lambda: (
                        self._error is not None
                        or not self.held_bytes
                        or self.held_bytes + n <= self._max_held
                    )
                )
                self._check()
            event = self.copier.copy(dest, chunk)  # under the lock: queue order is copy order
            self._in_flight.append((event, chunk, dest, n))
            self.held_bytes += n
            self.copies += 1
            self.bytes += n
            self._cv.notify_all()
        return event

    def _reap(self) -> None:
        while True:
            with self._cv:
                self._cv.wait_for(lambda: bool(self._in_flight) or self._closed)
                if not self._in_flight:
                    return
                event = self._in_flight[0][0]
            try:
                self.copier.wait(event)  # outside the lock: submits go on meanwhile
            except BaseException as e:  # a device error: nothing more completes; wake every waiter
                with self._cv:
                    self._error = e
                    self._cv.notify_all()
                return
            with self._cv:
                released = self._in_flight.popleft()
                self.held_bytes -= released[3]
                self._cv.notify_all()
            # The last reference, dropped outside the lock: returning the part buffer may map and
            # register a slab.
            del released

    def finish(self) -> None:
        """Waits for every copy queued so far (one synchronization) and until their chunks are
        released. Raises the device's error if a copy failed."""
        self.copier.synchronize()
        with self._cv:
            self.synchronizations += 1
            self._cv.wait_for(lambda: not self._in_flight or self._error is not None)
            if self._error is not None:
                raise self._error

    def close(self) -> None:
        """Stops the reaper once nothing is in flight (or the device failed); idempotent."""
        with self._cv:
            self._closed = True
            self._cv.notify_all()
        self._reaper.join()


def _cuda_runtime_candidates() -> List[str]:
    """The CUDA runtime library torch loaded (from /proc/self/maps), then the usual sonames."""
    found: List[str] = []
    try:
        with open("/proc/self/maps") as maps:
            for line in maps:
                path = line.rsplit(None, 1)[-1] if "/" in line else ""
                if "/libcudart" in path and path not in found:
                    found.append(path)
    except OSError:
        pass
    return found + ["libcudart.so.13", "libcudart.so.12", "libcudart.so.11.0", "libcudart.so"]


def register_host_memory(client: Any, device: torch.device) -> bool:
    """Registers ``client``'s part-buffer slabs (now and later) with CUDA for ``device``.

    The native client keeps the first registration and ignores later calls, so calling this per
    load costs a lookup; True then means the pool is registered (by this call or an earlier one).
    False when turned off (``S3TORCH_REGISTER_HOST_MEMORY=0``) or when no CUDA
    runtime library could be loaded; copies then still work, from pageable memory.
    """
    if os.environ.get(_REGISTER_ENV, "1") == "0":
        return False
    index = device.index if device.index is not None else torch.cuda.current_device()
    for library in _cuda_runtime_candidates():
        try:
            client._native.register_host_memory(library, index)
            return True
        except ValueError as e:
            log.debug("CUDA runtime %s: %s", library, e)
    log.info("no CUDA runtime library found: part buffers stay pageable")
    return False


def current_streams() -> Dict[int, Any]:
    """This thread's current stream of every CUDA device, when CUDA is in use in this process (a load
    into CUDA tensors has it initialized); empty otherwise, without initializing anything."""
    if not torch.cuda.is_available() or not torch.cuda.is_initialized():
        return {}
    return {i: torch.cuda.current_stream(i) for i in range(torch.cuda.device_count())}


CopierFactory = Callable[[torch.device, Any], Optional[DeviceCopier]]


def cuda_copier(device: torch.device, client: Any, after: Optional[Any] = None) -> Optional[DeviceCopier]:
    """A CudaCopier for a CUDA ``device`` (registering ``client``'s part buffers), else None.
    ``after``: the stream whose queued work the copies must follow (default: this thread's)."""
    if device.type != "cuda" or not torch.cuda.is_available():
        return None
    if client is not None:
        register_host_memory(client, device)
    return CudaCopier(device, after)


def copy_stream_to_tensor(
    stream: Any,
    tensor: torch.Tensor,
    *,
    client: Any = None,
    copier: Optional[DeviceCopier] = None,
    max_held_bytes: int = 256 * 1024 * 1024,
) -> int:
    """Copies the next ``tensor.nbytes`` bytes of a ``get_object_stream`` into ``tensor``.

    ``tensor`` must be contiguous and on a CUDA device (or the device of ``copier``); its dtype is
    whatever the bytes encode. The chunks are copied asynchronously straight from the part buffers,
    while the stream downloads the next ones; with ``client`` (the S3Client that opened the stream)
    its part buffers are registered with CUDA first, so that the copies are DMA from page-locked
    memory. Returns when every byte is on the device. Raises S3Exception if the stream ends first.

    >>> stream = client.get_object_stream("bucket", "weights.bin")          # doctest: +SKIP
    >>> w = torch.empty(n, dtype=torch.bfloat16, device="cuda")             # doctest: +SKIP
    >>> s3torch.gpu.copy_stream_to_tensor(stream, w, client=client)         # doctest: +SKIP
    """
    if not tensor.is_contiguous():
        raise ValueError("copy_stream_to_tensor needs a contiguous tensor")
    if copier is None:
        copier = cuda_copier(tensor.device, client)
        if copier is None:
            raise ValueError(f"copy_stream_to_tensor needs a CUDA tensor, got one on {tensor.device}")
    elif not copier.handles(tensor):
        raise ValueError(f"the copier does not handle a tensor on {tensor.device}")
    flat = tensor.reshape(-1).view(torch.uint8)
    copies = AsyncCopies(copier, max_held_bytes)
    done = 0
    try:
        while done < flat.numel():
            chunk = stream.next_chunk(flat.numel() - done)
            if chunk is None:
                raise S3Exception(
                    f"s3://{stream.bucket}/{stream.key}: the stream ended {flat.numel() - done} bytes "
                    f"before the tensor's {flat.numel()} were filled",
                    bucket=stream.bucket,
                    key=stream.key,
                    code="IncompleteBody",
                    operation="GetObject",
                )
            copies.submit(flat[done : done + len(chunk)], chunk)
            done += len(chunk)
    finally:
        copies.finish()  # also on failure: no copy may still be writing when we return
        copies.close()
    return done
