"""Concurrent DCP load: all range GETs of a plan at once, items completed as their bytes arrive.

torch's FileSystemReader (and s3torchconnector's S3StorageReader) walk files and items one after
another, so a load runs at the speed of one stream. Here the plan's item ranges are coalesced per
object (``coalesce_ranges``), long groups are split at item boundaries, and a pool of K workers each
opens ONE ranged GET and consumes it to its end before taking the next (an opened stream without an
active consumer would hold part buffers of the shared pool and could stall the others). A GET that
starts off a part boundary is opened as two, so that its part requests line up with the stored
object's parts (``_segments``).

Tensor items are copied once. The position of the raw storage bytes inside each item's torch.save
archive is parsed from its first bytes (``GetObjectStream.peek``, ``_archive``), and smaller tensors
are copied from the part buffers by ``GetObjectStream.read_into``. A large tensor item's middle (a
"hole" from ``HEAD_WINDOW`` bytes after its start to ``TAIL_WINDOW`` bytes before its end, inside
the raw bytes for any torch.save archive) never touches a part buffer: the task's stream is opened
with those ranges scattered (``get_object_stream(scatter=...)``), so the CRT writes them straight
from the socket into the destination tensor as the parts arrive. That needs the tensor bytes' offset
inside the item before the head is parsed: it is guessed (the last one parsed; 704 bytes in every
torch.save archive we know) and, when the parsed head disagrees, the bytes are moved once into place
after the stream passed the item. Items whose destination cannot take the raw bytes (dtype cast,
narrowed read) scatter into a staging copy of the item instead. Anything unusual takes torch's own
path (``torch.load`` of the item bytes), so results are bit-identical to FileSystemReader's.

The pieces live beside it: the ranges, tasks and holes (``_tasks``), destination tensors
(``_targets``), the stream cursor (``_cursor``), pool sizing (``_sizing``), statistics (``_stats``).
"""

from __future__ import annotations

import io
import logging
import threading
import time
from concurrent.futures import FIRST_EXCEPTION, Future, ThreadPoolExecutor, wait
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple, cast

import torch
from torch.distributed._shard._utils import narrow_tensor_by_index
from torch.distributed.checkpoint.planner import LoadItemType, LoadPlan, LoadPlanner, ReadItem

from .. import _core
from ..gpu import AsyncCopies, CopierFactory, DeviceCopier, cuda_copier, current_streams
from ..s3reader.dcp_optimized import is_default_gap
from ._archive import ArchiveHead, NeedMoreBytes, UnsupportedArchive, check_tail, parse_head
from ._cursor import _Cursor, _segments, truncated
from ._stats import LoadStats
from ._targets import _byte_view, _fits_storage, _source
from ._tasks import _Hole, _Range, _Task

log = logging.getLogger(__name__)

MiB = 1024 * 1024
# Longest head of an item we parse in place; a tensor archive's records before the data are < 1 KiB.
_MAX_HEAD = 1 * MiB
_FIRST_PEEK = 2048
# Coalesced groups longer than this are split at item boundaries so that K streams share the work.
DEFAULT_SPLIT_BYTES = 64 * MiB
# The largest gap between two needed ranges that the concurrent loader fetches rather than skips, when the
# user left max_gap_size at its default. A skipped gap costs one more request, and with K GETs in flight
# a request's latency (about 1 ms here) is worth only bandwidth / K * latency bytes of transfer (1 GB/s /
# 8 streams * 1 ms = 128 KiB); fetching a larger gap costs more time than the request it saves. The
# reference's 32 MiB suits one sequential reader, not K streams (a partial load of every 10th key
# fetched 3.7x the bytes it needed with it).
DEFAULT_CONCURRENT_GAP = 256 * 1024
# A tensor item whose middle is at least this long is received straight into its destination.
DEFAULT_DIRECT_MIN = 1 * MiB
# The streamed head and tail of such an item: more than the archive records before and after the raw
# bytes of a torch.save archive (0.7 and 0.9 KiB by default; 20 and 4.8 KiB with 4 KiB storage
# alignment), so the hole lies inside the tensor bytes. A longer head or tail still loads, staged.
HEAD_WINDOW = 32 * 1024
TAIL_WINDOW = 8 * 1024
# Where torch.save puts a tensor's bytes in its archive (its records are 64-byte aligned): the first
# guess of a load, replaced by the last offset parsed.
DEFAULT_DATA_OFFSET = 704


class ConcurrentPlanLoader:
    """Loads one LoadPlan; created per ``read_data`` call."""

    def __init__(
        self,
        *,
        client: Any,
        storage_data: Dict[Any, Any],
        resolve_uri: Callable[[str], Tuple[str, str]],
        transforms: Any,
        planner: LoadPlanner,
        coalesce: Callable[[Sequence[Any], Any], List[Any]],
        item_range: Callable[[int, int], Any],
        max_gap_size: Any,
        max_streams: int,
        split_bytes: int = DEFAULT_SPLIT_BYTES,
        align_bytes: int = 0,
        direct_min: int = DEFAULT_DIRECT_MIN,
        progress: Optional[Callable[[int], None]] = None,
        device_copier: Optional[CopierFactory] = None,
    ) -> None:
        self._client = client
        self._storage_data = storage_data
        self._resolve_uri = resolve_uri
        self._transforms = transforms
        self._planner = planner
        self._coalesce = coalesce
        self._item_range = item_range
        # The reference's default suits one sequential reader; K concurrent streams skip gaps earlier.
        self._max_gap_size = DEFAULT_CONCURRENT_GAP if is_default_gap(max_gap_size) else max_gap_size
        self._max_streams = max(1, max_streams)
        self._split_bytes = max(1, split_bytes)
        self._align_bytes = align_bytes
        self._direct_min = direct_min if getattr(client, "scatter_supported", False) else 0
        self._data_offset = DEFAULT_DATA_OFFSET
        self._progress = progress
        # GPU destinations: asynchronous copies from the part buffers, one queue per device; their
        # tensors are committed to the planner after the one synchronization at the end of the load.
        self._copier_factory: CopierFactory = device_copier or self._cuda_copier
        self._caller_streams: Dict[int, Any] = {}  # CUDA device index -> the load's caller's stream
        self._device_lock = threading.Lock()  # one copier per device, made outside the stats lock
        self._device_copies: Dict[torch.device, Optional[AsyncCopies]] = {}
        limit = int(getattr(client, "memory_limit_bytes", 0) or 0)
        self._max_held = limit // 4 if limit else 256 * MiB
        self._deferred: List[Tuple[ReadItem, torch.Tensor]] = []
        # torch's planners are not thread-safe: every planner call goes through this lock.
        self._planner_lock = threading.Lock()
        self._cancel = threading.Event()
        self._stats_lock = threading.Lock()
        self._open_streams = 0
        self.stats = LoadStats(reader="dcp_optimized", mode="concurrent")

    # ---- planning -------------------------------------------------------------------------------

    def build_tasks(self, plan: LoadPlan) -> Tuple[List[_Task], List[_Range]]:
        """Groups the plan into ranged GETs; returns (tasks, zero-length ranges)."""
        per_file: Dict[str, Dict[Tuple[int, int], List[ReadItem]]] = {}
        for req in plan.items:
            md = self._storage_data[req.storage_index]
            # Several ReadItems may need the same stored bytes (resharding): fetch them once.
            per_file.setdefault(md.relative_path, {}).setdefault((md.offset, md.length), []).append(req)

        tasks: List[_Task] = []
        empty: List[_Range] = []
        stats = self.stats
        stats.files = len(per_file)
        stats.items = len(plan.items)

        for relative_path, by_range in per_file.items():
            bucket, key = self._resolve_uri(relative_path)
            pin = _core.EtagPin()
            spans = sorted(by_range)
            ranges: Dict[int, _Range] = {}
            item_ranges = []
            prev_end = -1
            for offset, length in spans:
                rng = _Range(offset, offset + length, by_range[(offset, length)])
                stats.bytes_needed += length
                if length == 0:
                    empty.append(rng)
                    continue
                if offset < prev_end:
                    raise ValueError(
                        f"Overlapping checkpoint items in s3://{bucket}/{key} at offset {offset}: "
                        "not a DCP layout; load with S3ReaderConstructor.sequential()"
                    )
                prev_end = offset + length
                ranges[offset] = rng
                item_ranges.append(self._item_range(offset, offset + length))
            for group in self._coalesce(item_ranges, self._max_gap_size):
                for task in self._split(bucket, key, [ranges[r.start] for r in group.item_ranges]):
                    task.pin = pin
                    tasks.append(task)
        stats.bytes_fetched = sum(t.end - t.start for t in tasks)
        return tasks, empty

    def _split(self, bucket: str, key: str, ranges: List[_Range]) -> List[_Task]:
        """Cuts a coalesced group at item boundaries into GETs of about split_bytes or more."""
        out: List[_Task] = []
        cur: Optional[_Task] = None
        for rng in ranges:
            if cur is None or cur.end - cur.start >= self._split_bytes:
                cur = _Task(bucket, key, rng.start, rng.end)
                out.append(cur)
            cur.ranges.append(rng)
            cur.end = rng.end
        return out

    # ---- running --------------------------------------------------------------------------------

    def run(self, plan: LoadPlan) -> LoadStats:
        t0 = time.perf_counter()
        tasks, empty = self.build_tasks(plan)
        for rng in empty:  # no bytes to fetch: torch's semantics on an empty slice
            self._load_generic(rng.reqs, bytearray(), None)
        workers = min(self._max_streams, len(tasks))
        self._caller_streams = current_streams()
        try:
            if workers:
                self._run_pool(tasks, workers)
        except BaseException:
            self._finish_copies(raise_error=False)  # the load's own error is the one to raise
            raise
        self._finish_copies(raise_error=True)
        with self._planner_lock:
            for req, target in self._deferred:
                self._planner.commit_tensor(req, target)
        self.stats.seconds = time.perf_counter() - t0
        return self.stats

    def _finish_copies(self, raise_error: bool) -> None:
        """Failed or not, no copy may still be writing into a tensor when the load returns: every
        device's copies are waited for, even when another's raised (the first error is raised)."""
        error: Optional[BaseException] = None
        for copies in self._device_copies.values():
            if copies is None:
                continue
            try:
                copies.finish()
            except BaseException as e:
                error = error or e
            finally:
                copies.close()
                self.stats.device_bytes += copies.bytes
        if error is not None and raise_error:
            raise error

    def _cuda_copier(self, device: torch.device, client: Any) -> Optional[DeviceCopier]:
        return cuda_copier(device, client, self._caller_streams.get(device.index or 0))

    def _copies_for(self, target: torch.Tensor) -> Optional[AsyncCopies]:
        """The asynchronous copies to ``target``'s device, when a copier handles it."""
        device = target.device
        if device not in self._device_copies:
            with self._device_lock:  # registration and stream creation can take a while
                if device not in self._device_copies:
                    copier = self._copier_factory(device, self._client)
                    copies = AsyncCopies(copier, self._max_held) if copier is not None else None
                    self._device_copies[device] = copies
        copies = self._device_copies[device]
        return copies if copies is not None and copies.copier.handles(target) else None

    def _run_pool(self, tasks: List[_Task], workers: int) -> None:
        with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="s3torch-dcp-load") as pool:
            futures: List[Future] = [pool.submit(self._run_task, t) for t in tasks]
            try:
                done, _ = wait(futures, return_when=FIRST_EXCEPTION)
            except BaseException:  # e.g. KeyboardInterrupt: stop the workers before leaving
                self._cancel.set()
                for f in futures:
                    f.cancel()
                raise
            failed = [f for f in done if not f.cancelled() and f.exception() is not None]
            if failed:
                self._cancel.set()
                for f in futures:
                    f.cancel()
                raise cast(BaseException, failed[0].exception())

    def _plan_holes(self, task: _Task) -> List[_Hole]:
        """The task's tensor items large enough to scatter their middle into CPU memory."""
        holes: List[_Hole] = []
        if self._direct_min <= 0:
            return holes
        for rng in task.ranges:
            start, end = rng.start + HEAD_WINDOW, rng.end - TAIL_WINDOW
            if end - start < self._direct_min or len(rng.reqs) != 1:
                continue
            req = rng.reqs[0]
            transforms = self._storage_data[req.storage_index].transform_descriptors
            if req.type == LoadItemType.BYTE_IO or transforms:
                continue
            with self._planner_lock:
                target = self._planner.resolve_tensor(req).detach()
            if target.device.type != "cpu" or not target.is_contiguous() or self._copies_for(target):
                continue
            dest = _byte_view(target)
            base = rng.start + self._data_offset
            saved = self._saved_dtype(req)
            if dest is not None and saved in (None, target.dtype) and start >= base:
                # The middle lands at the guessed offset and may have to move once the head is
                # parsed: it must fit the tensor where it lands (a longer head than guessed, e.g.
                # another storage alignment, leaves more of the item's end to the stream).
                in_place_end = min(end, base + len(dest))
                if in_place_end - start >= self._direct_min:
                    holes.append(_Hole(rng, start, in_place_end, target, dest, base))
                    continue
            # A dtype cast or a narrowed read: scatter into a staging copy of the item.
            staged = bytearray(rng.end - rng.start)
            holes.append(_Hole(rng, start, end, target, memoryview(staged), rng.start, staged))
        return holes

    def _saved_dtype(self, req: ReadItem) -> Optional[torch.dtype]:
        """The dtype the checkpoint's metadata gives the item's tensor, if the planner has it."""
        try:
            md = self._planner.metadata.state_dict_metadata[req.storage_index.fqn]  # type: ignore[attr-defined]
            return cast(torch.dtype, md.properties.dtype)
        except (AttributeError, KeyError, TypeError):
            return None

    def _run_task(self, task: _Task) -> None:
        if self._cancel.is_set():
            return
        holes = self._plan_holes(task)
        # Destination tensors are often fresh memory (torch.empty, to_empty): a thread maps their pages
        # in while the GETs run, instead of a page fault at a time on the threads receiving the bytes.
        in_place = [h.dest for h in holes if h.staged is None]
        prefault = _core.Prefault(in_place) if in_place else None
        # Every stream starts now, so the aligned bulk downloads while the heads are consumed.
        streams: List[Tuple[Any, int]] = []
        try:
            for a, b in _segments(task.start, task.end, self._align_bytes):
                pairs = [p for p in (h.scatter(a, b) for h in holes) if p is not None]
                stream = self._client.get_object_stream(
                    task.bucket, task.key, a, b, scatter=pairs or None, pin=task.pin
                )
                streams.append((stream, b))
            with self._stats_lock:
                self.stats.get_requests += len(streams)
                self._open_streams += 1
                self.stats.max_streams = max(self.stats.max_streams, self._open_streams)
            try:
                cursor = _Cursor(streams, task.start, task.bucket, task.key)
                by_start = {hole.rng.start: hole for hole in holes}
                for rng in task.ranges:
                    if self._cancel.is_set():
                        return
                    cursor.skip_to(rng.start)
                    hole = by_start.get(rng.start)
                    if hole is None:
                        self._load_range(task, cursor, rng)
                    else:
                        self._load_hole(task, cursor, hole)
                    if self._progress is not None:
                        self._progress(rng.end - rng.start)
            finally:
                with self._stats_lock:
                    self._open_streams -= 1
        finally:
            try:
                # Failed or cancelled: closing stops every write into the tensors at once.
                for stream, _ in streams:
                    stream.close()
            finally:
                if prefault is not None:
                    prefault.close()
                    with self._stats_lock:
                        self.stats.prefaulted_bytes += prefault.mapped

    def _parse_head(self, task: _Task, cursor: _Cursor, rng: _Range, limit: int) -> Optional[ArchiveHead]:
        """The item's archive head from at most ``limit`` peeked bytes; None: use torch.load."""
        length = rng.end - rng.start
        n = min(length, _FIRST_PEEK, limit)
        while True:
            view = cursor.peek(n)
            if len(view) < n:
                raise truncated(task.bucket, task.key, cursor.pos + len(view), n - len(view))
            try:
                head = parse_head(memoryview(view), length)
            except NeedMoreBytes as e:
                if e.n > limit:
                    return None
                n = e.n
                continue
            except UnsupportedArchive as e:
                log.debug("item at %s of %s read with torch.load: %s", rng.start, task.key, e)
                return None
            if head.data_end > length or not _fits_storage(head.meta, head.nbytes):
                return None
            return head

    def _load_hole(self, task: _Task, cursor: _Cursor, hole: _Hole) -> None:
        """Completes a large tensor item whose middle the stream scatters into ``hole.dest``."""
        rng = hole.rng
        req = rng.reqs[0]
        target = hole.target
        head = self._parse_head(task, cursor, rng, hole.start - rng.start)
        if head is not None and hole.staged is None:
            meta = head.meta
            src = _source(req, meta, target)
            data_start = rng.start + head.data_offset + src.storage_offset() * meta.element_size()
            data_end = data_start + len(hole.dest)
            raw = target.dtype == meta.dtype and src.is_contiguous()
            if raw and data_start <= hole.start <= hole.end <= data_end:
                self._data_offset = head.data_offset
                self._finish_in_place(task, cursor, hole, head, data_start, data_end)
                return
        # Not a layout to finish in place (a strided or cast tensor, an archive we cannot parse, a
        # head longer than the window): assemble the whole item from the stream and its scattered
        # middle, and let torch.load read it. Each byte is still fetched once.
        staged = hole.staged if hole.staged is not None else bytearray(rng.end - rng.start)
        view = memoryview(staged)
        cursor.read_into(view[: hole.start - rng.start])
        cursor.skip_to(hole.end)  # past the middle: nothing writes into hole.dest any more
        cursor.read_into(view[hole.end - rng.start :])
        if hole.staged is None:  # the middle landed in the tensor's memory: copy it out first
            view[hole.start - rng.start : hole.end - rng.start] = hole.dest[
                hole.start - hole.base : hole.end - hole.base
            ]
        with self._stats_lock:
            self.stats.fallback_items += 1
        self._load_generic(rng.reqs, staged, target)

    def _finish_in_place(
        self, task: _Task, cursor: _Cursor, hole: _Hole, head: ArchiveHead, data_start: int, data_end: int
    ) -> None:
        rng = hole.rng
        # The tensor bytes either side of the hole: kept aside until the stream is past the item,
        # as the scattered middle may still be landing where a wrong guess put it.
        cursor.skip_to(data_start)
        before = cursor.read_bytes(hole.start - data_start)
        cursor.skip_to(hole.end)
        after = cursor.read_bytes(data_end - hole.end)
        cursor.skip_to(rng.start + head.data_end)
        tail = cursor.read_bytes(rng.end - cursor.pos)
        # Every part of the item has arrived now.
        dest = hole.dest
        if hole.base != data_start:  # guessed the data offset wrong: move the middle into place once
            flat = torch.frombuffer(dest, dtype=torch.uint8)
            moved = flat[hole.start - hole.base : hole.end - hole.base].clone()
            flat[hole.start - data_start : hole.end - data_start] = moved
            with self._stats_lock:
                self.stats.relocated_items += 1
        dest[: len(before)] = before
        dest[hole.end - data_start :] = after
        self._commit(task, rng, rng.reqs[0], head, tail, hole.target)

    def _load_range(self, task: _Task, cursor: _Cursor, rng: _Range) -> None:
        reqs = rng.reqs
        req = reqs[0]
        md = self._storage_data[req.storage_index]
        simple_tensor = len(reqs) == 1 and req.type != LoadItemType.BYTE_IO and not md.transform_descriptors
        if simple_tensor and self._load_tensor_in_place(task, cursor, rng, req):
            return
        data = cursor.read_bytes(rng.end - cursor.pos)
        if simple_tensor:
            with self._stats_lock:
                self.stats.fallback_items += 1
        self._load_generic(reqs, data, None)

    def _load_tensor_in_place(self, task: _Task, cursor: _Cursor, rng: _Range, req: ReadItem) -> bool:
        """Copies the tensor bytes straight into the destination; False: use the torch.load path."""
        head = self._parse_head(task, cursor, rng, _MAX_HEAD)
        if head is None:
            return False
        meta = head.meta
        with self._planner_lock:
            target = self._planner.resolve_tensor(req).detach()
        src = _source(req, meta, target)

        dest = None
        last_copy: Any = None  # the event of the last copy to a device destination
        raw = target.dtype == meta.dtype and src.is_contiguous() and target.is_contiguous()
        copies = self._copies_for(target) if raw else None
        if raw and copies is None and target.device.type == "cpu":
            dest = _byte_view(target)
        itemsize = meta.element_size()
        if copies is not None:
            # To a device: each part buffer's bytes are copied asynchronously straight from it.
            cursor.skip_to(rng.start + head.data_offset + src.storage_offset() * itemsize)
            flat = target.reshape(-1).view(torch.uint8)

            def submit(at: int, chunk: Any) -> None:
                nonlocal last_copy
                last_copy = copies.submit(flat[at : at + len(chunk)], chunk)

            cursor.each_chunk(flat.numel(), submit)
        elif dest is not None:
            # One copy: part buffers -> destination tensor.
            cursor.skip_to(rng.start + head.data_offset + src.storage_offset() * itemsize)
            cursor.read_into(dest)
        else:
            # dtype cast, strided source or destination, other device: stage the storage once and
            # let copy_ do what FileSystemReader's copy_ does.
            cursor.skip_to(rng.start + head.data_offset)
            staged = torch.empty(head.nbytes, dtype=torch.uint8)
            if head.nbytes:
                cursor.read_into(memoryview(staged.numpy()))
            full = staged.view(meta.dtype).as_strided(meta.size(), meta.stride(), meta.storage_offset())
            target.copy_(narrow_tensor_by_index(full, req.storage_offsets, req.lengths))

        cursor.skip_to(rng.start + head.data_end)
        self._commit(task, rng, req, head, cursor.read_bytes(rng.end - cursor.pos), target, copies, last_copy)
        return True

    def _commit(
        self,
        task: _Task,
        rng: _Range,
        req: ReadItem,
        head: ArchiveHead,
        tail: bytearray,
        target: torch.Tensor,
        copies: Optional[AsyncCopies] = None,
        last_copy: Any = None,
    ) -> None:
        """Commits a tensor copied in place once the archive's end confirms the layout it trusted.

        With ``copies`` (a device destination) the commit waits for the load's end, when every copy
        has completed."""
        try:
            check_tail(head, memoryview(tail))
        except UnsupportedArchive as e:
            # The in-place copy trusted a layout the archive's end contradicts: use torch.load.
            log.warning(
                "s3://%s/%s item at %s: %s; re-reading it with torch.load",
                task.bucket,
                task.key,
                rng.start,
                e,
            )
            if copies is not None and last_copy is not None:  # its copies must not land after torch's
                copies.copier.wait(last_copy)
            self._refetch_generic(task, rng, target)
            return
        with self._planner_lock:
            if copies is not None:
                self._deferred.append((req, target))
            else:
                self._planner.commit_tensor(req, target)

    def _refetch_generic(self, task: _Task, rng: _Range, target: torch.Tensor) -> None:
        # Straight into memory of our own, not through the pool: the task's streams are still open
        # and may hold all of it, and the pool grants in order, so a pooled GET here could wait forever.
        data = bytearray(rng.end - rng.start)
        self._client.get_object_into(task.bucket, task.key, rng.start, data, pin=task.pin).wait()
        with self._stats_lock:
            self.stats.get_requests += 1
            self.stats.bytes_fetched += rng.end - rng.start
            self.stats.fallback_items += 1
        self._load_generic(rng.reqs, data, target)

    def load_from_bytes(self, reqs: List[ReadItem], data: Any) -> None:
        """Completes ``reqs`` (items of one stored item) from its bytes, fetched elsewhere."""
        self._load_generic(reqs, data, None)

    def _load_generic(self, reqs: List[ReadItem], data: Any, target: Optional[torch.Tensor]) -> None:
        """torch's FileSystemReader.read_data for items whose bytes are in ``data``."""
        for req in reqs:
            md = self._storage_data[req.storage_index]
            raw = io.BytesIO(data)
            transform_from = self._transforms.transform_load_stream(req, md.transform_descriptors or (), raw)
            if req.type == LoadItemType.BYTE_IO:
                read_bytes = io.BytesIO(transform_from.read(-1))
                read_bytes.seek(0)
                with self._planner_lock:
                    self._planner.load_bytes(req, read_bytes)
                continue
            if transform_from.seekable():
                seekable = transform_from
            else:
                seekable = io.BytesIO(transform_from.read(-1))
                seekable.seek(0)
            tensor = cast(torch.Tensor, torch.load(seekable, map_location="cpu", weights_only=True))
            tensor = narrow_tensor_by_index(tensor, req.storage_offsets, req.lengths)
            dest = target
            if dest is None:
                with self._planner_lock:
                    dest = self._planner.resolve_tensor(req).detach()
            if dest.size() != tensor.size():
                raise AssertionError(
                    f"req {req.storage_index} mismatch sizes {dest.size()} vs {tensor.size()}"
                )
            dest.copy_(tensor)
            with self._planner_lock:
                self._planner.commit_tensor(req, dest)
