"""Destination tensors of a DCP load: their writable bytes, and the saved slice a read item takes."""

from __future__ import annotations

from typing import Optional, cast

import torch
from torch.distributed._shard._utils import narrow_tensor_by_index
from torch.distributed.checkpoint.planner import ReadItem


def _byte_view(t: torch.Tensor) -> Optional[memoryview]:
    """A writable flat byte view of a contiguous CPU tensor's memory, or None if it has none."""
    try:
        flat = t.reshape(-1)
        if flat.data_ptr() != t.data_ptr():
            return None
        arr = flat.view(torch.uint8).numpy()
        return memoryview(arr).cast("B")
    except (RuntimeError, TypeError, ValueError):
        return None


def _source(req: ReadItem, meta: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """The saved tensor's slice that ``req`` reads (as a meta tensor); it must fit ``target``."""
    src = narrow_tensor_by_index(meta, req.storage_offsets, req.lengths)
    if target.size() != src.size():
        raise AssertionError(f"req {req.storage_index} mismatch sizes {target.size()} vs {src.size()}")
    return cast(torch.Tensor, src)


def _fits_storage(meta: torch.Tensor, nbytes: int) -> bool:
    """Whether the saved view lies inside the storage payload (torch.load refuses otherwise)."""
    if meta.numel() == 0:
        return True
    last = meta.storage_offset() + sum((s - 1) * st for s, st in zip(meta.shape, meta.stride()))
    return meta.storage_offset() >= 0 and (last + 1) * meta.element_size() <= nbytes
