"""Partial loads: the DCP-optimized reader fetches about what the plan needs (SeaweedFS)."""

from __future__ import annotations

from typing import Any, Callable, Dict

import pytest
import torch
import torch.distributed.checkpoint as dcp
from dcp_helpers import MiB, Target

from s3torch import S3ReaderConstructor

N = 30


def _state() -> Dict[str, Any]:
    """Weights (bf16) then Adam moments (fp32) of N parameters of 64 KiB to 1 MiB."""
    g = torch.Generator().manual_seed(7)
    sizes = [16 * 1024 * (1 + i % 16) for i in range(N)]
    model = {f"p{i}": torch.randn(n, generator=g).to(torch.bfloat16) for i, n in enumerate(sizes)}
    optim = {
        f"p{i}": {"exp_avg": torch.randn(n, generator=g), "exp_avg_sq": torch.rand(n, generator=g)}
        for i, n in enumerate(sizes)
    }
    return {"model": model, "optim": optim, "step": torch.tensor(10)}


SUBSETS: Dict[str, Callable[[Dict[str, Any]], Dict[str, Any]]] = {
    # The model weights only (a contiguous run of items in the file).
    "weights": lambda s: {"model": {k: torch.zeros_like(v) for k, v in s["model"].items()}},
    # Every fifth parameter's moments: scattered items with gaps between them.
    "scattered": lambda s: {
        "optim": {
            k: {n: torch.zeros_like(t) for n, t in v.items()}
            for i, (k, v) in enumerate(s["optim"].items())
            if i % 5 == 0
        }
    },
    "one_tensor": lambda s: {
        "optim": {"p3": {"exp_avg_sq": torch.zeros_like(s["optim"]["p3"]["exp_avg_sq"])}}
    },
}


@pytest.fixture
def saved(seaweed_target: Target) -> Dict[str, Any]:
    state = _state()
    dcp.save(state, storage_writer=seaweed_target.writer())
    return state


def _nbytes(obj: Any) -> int:
    if isinstance(obj, dict):
        return sum(_nbytes(v) for v in obj.values())
    return obj.numel() * obj.element_size()


def _check(expected: Any, got: Any) -> None:
    if isinstance(got, dict):
        for k, v in got.items():
            _check(expected[k], v)
    else:
        assert torch.equal(got, expected)


@pytest.mark.parametrize("subset", sorted(SUBSETS))
@pytest.mark.parametrize("max_gap", [0, 256 * 1024, 32 * MiB, float("inf")])
def test_dcp_optimized_fetches_what_is_needed(
    seaweed_target: Target, saved: Dict[str, Any], subset: str, max_gap: float
) -> None:
    dest = SUBSETS[subset](saved)
    reader = seaweed_target.reader(S3ReaderConstructor.dcp_optimized(max_gap))
    dcp.load(dest, storage_reader=reader)
    _check(saved, dest)
    stats = reader.last_load_stats
    needed = stats.bytes_needed
    assert needed >= _nbytes(dest)  # items are torch.save archives: a little more than the data
    file_size = seaweed_target.server.boto3_client().head_object(
        Bucket=seaweed_target.bucket, Key=f"{seaweed_target.prefix}/__0_0.distcp"
    )["ContentLength"]
    if subset != "scattered" or max_gap == 0:
        # Contiguous items, or no coalescing: within 5% plus one gap of what is needed.
        assert stats.bytes_fetched <= 1.05 * needed + min(max_gap, file_size)
    if subset != "scattered" or max_gap == 0:
        # Gaps are only ever fetched between needed items.
        assert stats.bytes_fetched == needed
    assert needed <= stats.bytes_fetched < file_size


def test_scattered_items_with_small_gaps_stay_close_to_needed(
    seaweed_target: Target, saved: Dict[str, Any]
) -> None:
    dest = SUBSETS["scattered"](saved)
    reader = seaweed_target.reader(S3ReaderConstructor.dcp_optimized(64 * 1024))
    dcp.load(dest, storage_reader=reader)
    stats = reader.last_load_stats
    assert stats.bytes_fetched <= 1.05 * stats.bytes_needed + 64 * 1024


def test_sequential_reader_fetches_more_for_a_partial_load(
    seaweed_target: Target, saved: Dict[str, Any]
) -> None:
    fetched = {}
    for name, ctor in [
        ("sequential", S3ReaderConstructor.sequential()),
        ("dcp_optimized", S3ReaderConstructor.dcp_optimized()),
    ]:
        dest = SUBSETS["one_tensor"](saved)
        reader = seaweed_target.reader(ctor)
        dcp.load(dest, storage_reader=reader)
        _check(saved, dest)
        fetched[name] = reader.last_load_stats.bytes_fetched
    assert fetched["dcp_optimized"] * 5 < fetched["sequential"]
