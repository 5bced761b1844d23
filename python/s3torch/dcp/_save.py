"""The data files of a DCP save: torch's layout and file naming, tensor items written by
``_torch_save.save_tensor`` (torch.save's bytes, checksummed as they stream out).

The plan is split into files as torch's FileSystemWriter splits it (one per writer thread by size
and type, or one per item), each file is one upload, and ``thread_count`` threads write them. Tensors
reach the CPU through torch's own loaders (the overlapping one for accelerator tensors on one
thread), so what is saved, and where, is what torch's writer would save.
"""

from __future__ import annotations

import queue
import threading
from typing import Any, Callable, List, Tuple

import torch
from torch.distributed.checkpoint.filesystem import (
    DEFAULT_SUFFIX,
    _item_size,
    _OverlappingCpuLoader,
    _SerialCpuLoader,
    _split_by_size_and_type,
    _StorageInfo,
)
from torch.distributed.checkpoint.planner import SavePlan, SavePlanner, WriteItemType
from torch.distributed.checkpoint.storage import WriteResult

from ._torch_save import save_tensor


def _accelerator_available() -> bool:
    backend = getattr(torch, torch._C._get_privateuse1_backend_name(), None)
    return bool(torch.cuda.is_available() or (backend is not None and backend.is_available()))


def write_files(
    plan: SavePlan,
    planner: SavePlanner,
    create_stream: Callable[[str, str], Any],
    concat_path: Callable[[Any, str], Any],
    base_path: Any,
    thread_count: int,
    single_file_per_rank: bool,
    copy_ahead: int,
) -> List[WriteResult]:
    """Writes every item of ``plan`` and returns their results; raises the first writer error."""
    prefix = plan.storage_data.prefix
    if single_file_per_rank:
        buckets = _split_by_size_and_type(thread_count, plan.items)
    else:
        buckets = [[item] for item in plan.items]
    files: queue.Queue[Tuple[str, List[Any]]] = queue.Queue()
    for index, bucket in enumerate(buckets):
        files.put((f"{prefix}{index}{DEFAULT_SUFFIX}", bucket))
    results: List[WriteResult] = []
    errors: List[BaseException] = []
    lock = threading.Lock()
    overlap = thread_count == 1 and copy_ahead > 0 and _accelerator_available()

    def worker() -> None:
        while not errors:
            try:
                name, items = files.get_nowait()
            except queue.Empty:
                return
            try:
                written = _write_file(
                    planner, create_stream, concat_path(base_path, name), name, items, overlap, copy_ahead
                )
            except BaseException as e:  # noqa: BLE001 - handed to the caller's thread
                with lock:
                    errors.append(e)
                return
            with lock:
                results.extend(written)

    threads = [threading.Thread(target=worker, name=f"s3torch-save-{i}") for i in range(1, thread_count)]
    for t in threads:
        t.start()
    worker()
    for t in threads:
        t.join()
    if errors:
        raise errors[0]
    return results


def _write_file(
    planner: SavePlanner,
    create_stream: Callable[[str, str], Any],
    path: Any,
    name: str,
    items: List[Any],
    overlap: bool,
    copy_ahead: int,
) -> List[WriteResult]:
    loader: Any
    if overlap:
        loader = _OverlappingCpuLoader(planner.resolve_data, inflight_threshhold=copy_ahead)
    else:
        loader = _SerialCpuLoader(planner.resolve_data)
    for item in items:
        if item.type != WriteItemType.BYTE_IO:
            loader.add(_item_size(item), item)
    loader.start_loading()
    results: List[WriteResult] = []

    def result(item: Any, offset: int, length: int) -> WriteResult:
        return WriteResult(
            index=item.index, size_in_bytes=length, storage_data=_StorageInfo(name, offset, length)
        )

    with create_stream(path, "wb") as stream:
        for item in items:
            if item.type == WriteItemType.BYTE_IO:
                offset = stream.tell()
                stream.write(planner.resolve_data(item).getbuffer())
                results.append(result(item, offset, stream.tell() - offset))
        for tensor, item in loader.values():
            offset = stream.tell()
            save_tensor(tensor, stream)
            results.append(result(item, offset, stream.tell() - offset))
    return results
