"""The concurrent loader's part requests line up with the object's parts (S3's guidance for ranged
GETs; SeaweedFS spends about a quarter more CPU per byte on reads that straddle two stored parts)."""

from __future__ import annotations

from typing import Any

import torch
import torch.distributed.checkpoint as dcp
from dcp_helpers import MiB, Target

PART = 5 * MiB


def test_full_part_requests_start_on_part_boundaries(seaweed_target: Target, proxy_factory: Any) -> None:
    g = torch.Generator().manual_seed(3)
    # Odd sizes: every item after the first starts off a part boundary.
    state = {f"w{i}": torch.randn(n, generator=g) for i, n in enumerate((777_777, 3_333_333, 4_444_444))}
    dcp.save(state, storage_writer=seaweed_target.writer(config=seaweed_target.config(part_size=PART)))
    proxy = proxy_factory(seaweed_target.server)
    # w1 and w2 only: the load starts inside the first stored part.
    dest = {k: torch.zeros_like(v) for k, v in state.items() if k != "w0"}
    # direct_min_bytes=0: every byte through the part-buffer streams, whose alignment this tests.
    reader = seaweed_target.reader(
        endpoint=proxy.endpoint, config=seaweed_target.config(part_size=PART), direct_min_bytes=0
    )
    dcp.load(dest, storage_reader=reader)
    for k, v in dest.items():
        assert torch.equal(v, state[k])
    assert proxy.wait_idle()
    ranges = [r.range for r in proxy.requests if r.method == "GET" and r.path.endswith(".distcp")]
    assert ranges and all(r is not None and r[1] is not None for r in ranges)
    starts = sorted(r[0] for r in ranges)  # type: ignore[index]
    assert starts[0] % PART != 0  # the test means something: the first needed byte is off a boundary
    full = [r for r in ranges if r[1] - r[0] == PART]  # (start, end) with end exclusive  # type: ignore[index,operator]
    assert full, ranges
    assert all(r[0] % PART == 0 for r in full), ranges  # type: ignore[index]
    # Fetched exactly the needed bytes: the alignment adds a request, never bytes.
    assert reader.last_load_stats.bytes_fetched == reader.last_load_stats.bytes_needed
