"""Each stored byte read from S3 once per load across ranks (``S3StorageReader(dedupe=...)``): the
owner assignment as pure logic, then real gloo ranks in separate processes against SeaweedFS."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any, Dict, List

import pytest
import torch.distributed.checkpoint as dcp
from dcp_helpers import Target
from test_multirank import run_ranks

from s3torch.dcp._dedupe import assign_owners, rounds


def test_every_shared_span_gets_one_owner_among_the_ranks_that_need_it() -> None:
    a, b, c, d = ("f0", 0, 100), ("f0", 100, 50), ("f1", 0, 80), ("f1", 80, 0)
    needs = [[a, b, c, d], [a, b, c, d], [a, c], [("f2", 0, 10)]]
    owners = assign_owners(needs)
    assert set(owners) == {a, b, c}, "a span one rank needs, or an empty one, is not shared"
    assert owners[a][1] == (0, 1, 2) and owners[b][1] == (0, 1) and owners[c][1] == (0, 1, 2)
    assert all(owner in ranks for owner, ranks in owners.values())
    # Balanced by bytes (largest first): a to rank 0, c to rank 1, b to the least loaded of 0 and 1.
    assert owners[a][0] == 0 and owners[c][0] == 1 and owners[b][0] == 1
    assert assign_owners([list(reversed(n)) for n in needs]) == owners, "order of needs does not matter"


def test_rounds_keep_to_the_budget() -> None:
    spans = [("f", i * 10, 10) for i in range(10)] + [("g", 0, 35)]
    groups = rounds(spans, 30)
    assert [sum(s[2] for s in g) for g in groups] == [30, 30, 30, 10, 35]
    assert [s for g in groups for s in g] == spans


def _stats(outputs: List[str]) -> List[Dict[str, Any]]:
    return [json.loads(line[6:]) for out in outputs for line in out.splitlines() if line.startswith("STATS ")]


def _save_replicated(target: Target) -> int:
    from multirank_worker import replicated_values

    from s3torch.demo import tensor_bytes

    values = replicated_values()
    dcp.save(values, storage_writer=target.writer())
    return tensor_bytes(values)


@pytest.mark.parametrize("world", [2, 4])
def test_a_replicated_load_reads_each_byte_once(seaweed_target: Target, tmp_path: Path, world: int) -> None:
    """Every rank loads the whole state: with dedupe (the default) the ranks together fetch about
    the checkpoint once and receive the rest from each other; without it, world-size copies."""
    total = _save_replicated(seaweed_target)
    deduped = _stats(run_ranks("load_replicated", world, seaweed_target, tmp_path))
    plain = _stats(run_ranks("load_replicated_plain", world, seaweed_target, tmp_path))
    assert len(deduped) == len(plain) == world
    fetched = sum(s["fetched"] for s in deduped)
    assert total <= fetched <= 1.05 * total + 64 * 1024, (fetched, total)
    assert all(s["needed"] >= total and s["items"] == plain[0]["items"] for s in deduped)
    # What a rank did not fetch it received from the others.
    assert sum(s["from_peers"] for s in deduped) >= (world - 1) * total * 0.95
    assert all(s["from_peers"] > 0 for s in deduped), "the work is spread over the ranks"
    assert sum(s["fetched"] for s in plain) >= world * total
    assert all(s["from_peers"] == 0 for s in plain)


def test_a_partial_replicated_load_reads_only_what_it_needs_once(
    seaweed_target: Target, tmp_path: Path
) -> None:
    from multirank_worker import replicated_values

    from s3torch.demo import tensor_bytes

    _save_replicated(seaweed_target)
    needed = tensor_bytes({k: v for k, v in replicated_values()["model"].items() if k.startswith("layer1")})
    stats = _stats(run_ranks("load_replicated_partial", 2, seaweed_target, tmp_path))
    assert len(stats) == 2 and all(s["needed"] >= needed for s in stats)
    assert needed <= sum(s["fetched"] for s in stats) <= 1.05 * needed + 64 * 1024
    assert sum(s["from_peers"] for s in stats) >= 0.95 * needed


def test_a_rank_that_fails_fails_every_rank_promptly(
    seaweed_target: Target, tmp_path: Path, proxy_factory: Any
) -> None:
    """Rank 1's ranged GETs of the data files fail (HTTP 500, one attempt): every rank raises, with
    the error, and none waits in a collective for it."""
    from s3torch.testing import Fault, respond

    _save_replicated(seaweed_target)
    proxy = proxy_factory(seaweed_target.server)
    proxy.add_fault(Fault(respond(500), method="GET", path=".distcp", times=None))
    t0 = time.monotonic()
    outputs = run_ranks(
        "load_replicated_fail", 2, seaweed_target, tmp_path, {"S3TORCH_TEST_FAIL_ENDPOINT": proxy.endpoint}
    )
    assert time.monotonic() - t0 < 60
    assert all("failed as expected" in o for o in outputs)
    assert "HTTP 500" in outputs[0] and "on rank 1" in outputs[0], outputs[0]
