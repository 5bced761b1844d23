"""One rank of a multi-process DCP test (started by test_multirank.py, gloo on loopback).

    python multirank_worker.py ACTION RANK WORLD_SIZE STORE_FILE ENDPOINT REGION URI

ACTION: "save" (DTensors sharded over a CPU mesh plus replicated entries), "load" (into DTensors
sharded over this world size, then checks full values), "save_fail_rank1" (rank 1 raises while its
data is being written), "load_replicated" / "_plain" / "_fail" (every rank loads the whole
replicated state: deduplicated, not, or with rank 1's data GETs failing; prints STATS json),
"load_replicated_partial" (every rank loads the same ten of its tensors).
Exit code 0 means the rank did what the action expects.
"""

from __future__ import annotations

import datetime
import json
import os
import sys
import traceback
import warnings
from typing import Any, Callable, Dict, Optional

import torch
import torch.distributed as dist
import torch.distributed.checkpoint as dcp
from torch.distributed.checkpoint import DefaultSavePlanner
from torch.distributed.checkpoint.api import CheckpointException
from torch.distributed.device_mesh import init_device_mesh
from torch.distributed.tensor import DTensor, Shard, distribute_tensor

warnings.filterwarnings("ignore", category=UserWarning)


def global_values() -> Dict[str, torch.Tensor]:
    """The full (unsharded) values: identical on every rank and in the test process."""
    g = torch.Generator().manual_seed(42)
    return {
        "w": torch.randn(16, 6, generator=g),
        "odd": torch.randn(7, 3, generator=g),  # 7 rows: uneven shards on 2 and 4 ranks
        "emb": torch.randn(12, 4, generator=g).to(torch.bfloat16),
        "ids": torch.arange(40, dtype=torch.int64).reshape(10, 4),
        "bias": torch.randn(5, generator=g),
    }


SHARDED = ("w", "odd", "emb", "ids")


def replicated_values() -> Dict[str, Any]:
    """A state_dict every rank loads whole (data parallelism): 24 tensors, about 12 MB."""
    g = torch.Generator().manual_seed(7)
    tensors = {f"layer{i}": torch.randn(64 * 1024 + 1000 * i, generator=g) for i in range(20)}
    tensors.update({f"half{i}": torch.randn(128, 1024, generator=g).to(torch.bfloat16) for i in range(4)})
    return {"model": tensors, "step": torch.tensor(77), "note": "replicated"}


def zeros_like_values(values: Dict[str, Any]) -> Dict[str, Any]:
    return {
        "model": {k: torch.zeros_like(v) for k, v in values["model"].items()},
        "step": torch.tensor(0),
        "note": None,
    }


def build_state(mesh: Any, zeros: bool) -> Dict[str, Any]:
    values = global_values()
    sharded = {}
    for name in SHARDED:
        full = torch.zeros_like(values[name]) if zeros else values[name]
        sharded[name] = distribute_tensor(full, mesh, [Shard(0)])
    bias = torch.zeros(5) if zeros else values["bias"]
    return {
        "model": sharded,
        "replicated": {"bias": bias, "step": torch.tensor(0 if zeros else 123)},
        "extra": {"epoch": None if zeros else 3},
    }


class FailingPlanner(DefaultSavePlanner):
    """Raises on rank 1 when DCP asks for the data to write (i.e. in the middle of a save)."""

    def resolve_data(self, write_item: Any) -> Any:
        if dist.get_rank() == 1:
            raise RuntimeError("injected failure on rank 1")
        return super().resolve_data(write_item)


def run_expecting(action: str, failing: str, rank: str, what: str, fn: Callable[[], Any]) -> Optional[int]:
    """Runs ``fn``. For the ``failing`` action: 0 if it raised (as it must), 1 if not; for any
    other action None, and its exception propagates."""
    try:
        fn()
    except (Exception, CheckpointException) as e:  # CheckpointException: BaseException
        if action != failing:
            raise
        print(f"rank {rank}: {what} failed as expected: {type(e).__name__}: {e}")
        return 0
    if action == failing:
        print(f"rank {rank}: {what} unexpectedly succeeded", file=sys.stderr)
        return 1
    return None


def main() -> int:
    action, rank, world, store, endpoint, region, uri = sys.argv[1:8]
    rank_i, world_i = int(rank), int(world)
    dist.init_process_group(
        "gloo",
        init_method=f"file://{store}",
        rank=rank_i,
        world_size=world_i,
        timeout=datetime.timedelta(seconds=60),
    )
    try:
        from s3torch import S3ClientConfig
        from s3torch.dcp import S3StorageReader, S3StorageWriter

        config = S3ClientConfig(force_path_style=True, max_attempts=2)
        mesh = init_device_mesh("cpu", (world_i,))
        if action in ("save", "save_fail_rank1"):
            state = build_state(mesh, zeros=False)
            writer = S3StorageWriter(region, uri, s3client_config=config, endpoint=endpoint)
            planner = FailingPlanner() if action == "save_fail_rank1" else None
            verdict = run_expecting(
                action,
                "save_fail_rank1",
                rank,
                "save",
                lambda: dcp.save(state, storage_writer=writer, planner=planner),
            )
            return 0 if verdict is None else verdict
        if action == "load":
            state = build_state(mesh, zeros=True)
            reader = S3StorageReader(region, uri, s3client_config=config, endpoint=endpoint)
            dcp.load(state, storage_reader=reader)
            values = global_values()
            for name in SHARDED:
                got = state["model"][name]
                assert isinstance(got, DTensor)
                full = got.full_tensor()
                assert full.dtype == values[name].dtype, name
                assert torch.equal(full, values[name]), f"{name} differs on rank {rank}"
            assert torch.equal(state["replicated"]["bias"], values["bias"])
            assert state["replicated"]["step"].item() == 123
            assert state["extra"]["epoch"] == 3
            stats = reader.last_load_stats
            assert stats is not None and stats.fallback_items == 0
            print(f"rank {rank}: loaded {stats.items} items, {stats.bytes_fetched} bytes")
            print("STATS " + json.dumps({"rank": rank_i, "from_peers": stats.bytes_from_peers}))
            return 0
        if action.startswith("load_replicated"):
            # Every rank needs every byte. "_plain": dedupe off; "_fail": rank 1 reads through the
            # failing endpoint of S3TORCH_TEST_FAIL_ENDPOINT (its ranged GETs of data files fail).
            if action == "load_replicated_fail" and rank_i == 1:
                endpoint = os.environ["S3TORCH_TEST_FAIL_ENDPOINT"]
                config = S3ClientConfig(force_path_style=True, max_attempts=1)
            values = replicated_values()
            state = zeros_like_values(values)
            if action == "load_replicated_partial":  # half the layers: a partial load
                values["model"] = {k: v for k, v in values["model"].items() if k.startswith("layer1")}
                state["model"] = {k: torch.zeros_like(v) for k, v in values["model"].items()}
            dedupe = action != "load_replicated_plain"
            reader = S3StorageReader(region, uri, s3client_config=config, endpoint=endpoint, dedupe=dedupe)
            verdict = run_expecting(
                action, "load_replicated_fail", rank, "load", lambda: dcp.load(state, storage_reader=reader)
            )
            if verdict is not None:
                return verdict
            for k, v in values["model"].items():
                assert torch.equal(state["model"][k], v), f"{k} differs on rank {rank}"
            assert state["step"].item() == 77 and state["note"] == "replicated"
            stats = reader.last_load_stats
            print(
                "STATS "
                + json.dumps(
                    {
                        "rank": rank_i,
                        "fetched": stats.bytes_fetched,
                        "needed": stats.bytes_needed,
                        "from_peers": stats.bytes_from_peers,
                        "items": stats.items,
                    }
                )
            )
            return 0
        raise ValueError(f"unknown action {action!r}")
    except (Exception, CheckpointException):
        traceback.print_exc()
        return 1
    finally:
        dist.destroy_process_group()


if __name__ == "__main__":
    code = main()
    sys.stdout.flush()
    sys.stderr.flush()
    # Skip C++ static destruction: gloo's teardown at process exit occasionally aborts ("terminate
    # called without an active exception", main thread, no Python frame) after everything passed
    # and the process group was destroyed; the exit code must be the worker's verdict.
    os._exit(code)
