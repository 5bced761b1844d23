"""Multi-rank DCP with torch.distributed (gloo) in separate processes on this machine.

Each rank saves its DTensor shards (sharded over a CPU device mesh) plus replicated entries; a load
on a different world size (or in one process, into full tensors) must give the same values.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Dict, List, Optional

import pytest
import torch
import torch.distributed.checkpoint as dcp
from dcp_helpers import Target

WORKER = Path(__file__).with_name("multirank_worker.py")
TIMEOUT_S = 180


def run_ranks(
    action: str, world: int, target: Target, tmp_path: Path, extra_env: Optional[Dict[str, str]] = None
) -> List[str]:
    """Runs ``world`` worker processes; returns their outputs, fails the test if any rank fails."""
    import s3torch

    store = tmp_path / f"store-{action}-{world}-{os.urandom(4).hex()}"
    env = dict(os.environ, **(extra_env or {}))
    env["PYTHONPATH"] = os.pathsep.join(
        [str(Path(s3torch.__file__).parents[1]), str(WORKER.parent), env.get("PYTHONPATH", "")]
    )
    env["GLOO_SOCKET_IFNAME"] = "lo"  # keep gloo on loopback
    env["OMP_NUM_THREADS"] = "1"  # 2 cores shared by all ranks and the server
    args = [target.server.endpoint, target.server.region, target.uri]
    procs = [
        subprocess.Popen(
            [sys.executable, str(WORKER), action, str(r), str(world), str(store), *args],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        for r in range(world)
    ]
    outputs = []
    try:
        for p in procs:
            out, _ = p.communicate(timeout=TIMEOUT_S)
            outputs.append(out)
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait()
    codes = [p.returncode for p in procs]
    assert codes == [0] * world, "\n".join(f"--- rank {r}:\n{o}" for r, o in enumerate(outputs))
    return outputs


@pytest.mark.parametrize(("save_world", "load_world"), [(2, 4), (4, 2)])
def test_save_and_load_on_another_world_size(
    seaweed_target: Target, tmp_path: Path, save_world: int, load_world: int
) -> None:
    run_ranks("save", save_world, seaweed_target, tmp_path)
    keys = seaweed_target.keys()
    assert f"{seaweed_target.prefix}/.metadata" in keys
    assert sum(k.endswith(".distcp") for k in keys) == save_world
    outputs = run_ranks("load", load_world, seaweed_target, tmp_path)
    # Stored items that several loading ranks need (the replicated entries, and on 4 ranks the saved
    # shards that two new shards narrow) were read by one rank and broadcast to the others.
    lines = [ln for o in outputs for ln in o.splitlines() if ln.startswith("STATS ")]
    peers = [json.loads(ln[6:])["from_peers"] for ln in lines]
    assert len(peers) == load_world and sum(peers) > 0

    # And in this process, without torch.distributed, into full plain tensors.
    from multirank_worker import SHARDED, global_values

    values = global_values()
    dest = {
        "model": {n: torch.zeros_like(values[n]) for n in SHARDED},
        "replicated": {"bias": torch.zeros(5), "step": torch.tensor(0)},
        "extra": {"epoch": None},
    }
    reader = seaweed_target.reader()
    dcp.load(dest, storage_reader=reader)
    for n in SHARDED:
        assert torch.equal(dest["model"][n], values[n]), n
    assert torch.equal(dest["replicated"]["bias"], values["bias"])
    assert dest["replicated"]["step"].item() == 123 and dest["extra"]["epoch"] == 3
    # Shards of one tensor sit in different rank files: several GETs in flight.
    assert reader.last_load_stats.files == save_world


def test_exception_on_one_rank_leaves_no_metadata(seaweed_target: Target, tmp_path: Path) -> None:
    outputs = run_ranks("save_fail_rank1", 2, seaweed_target, tmp_path)
    assert all("failed as expected" in o for o in outputs)
    assert not seaweed_target.has_metadata()
