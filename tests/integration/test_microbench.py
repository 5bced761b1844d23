"""The C++ microbenchmarks (bench/cpp) build against the public headers and measure what they claim."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_microbenchmarks_build_and_run(tmp_path: Path) -> None:
    out = tmp_path / "microbench.json"
    proc = subprocess.run(
        [
            sys.executable,
            str(ROOT / "bench/cpp/run.py"),
            "--size-mib",
            "16",
            "--min-time",
            "0.01",
            "--json",
            str(out),
        ],
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    runs = {b["run_name"]: b for b in json.loads(out.read_text())["benchmarks"]}
    assert set(runs) == {
        "GetDrain/real_time",
        "GetInto/real_time",
        "ChunkHandoff/real_time",
        "Memcpy",
        "PoolReserveRelease/1",
        "PoolReserveRelease/16",
        "Coalesce/100000",
    }
    for name in ("GetDrain/real_time", "GetInto/real_time", "Memcpy"):
        assert runs[name]["bytes_per_second"] > 1e6, name
    handoff = runs["ChunkHandoff/real_time"]
    # 16 MiB in 8 MiB parts: two chunks per GET, each handed over after it was queued.
    assert handoff["chunks"] == 2 * handoff["iterations"]
    assert 0 < handoff["handoff_us_mean"] <= handoff["handoff_us_max"]
    assert runs["PoolReserveRelease/16"]["items_per_second"] > 0
    assert runs["PoolReserveRelease/16"]["mapped_MiB"] == 128  # 16 buffers of 8 MiB, mapped once
    assert 1 < runs["Coalesce/100000"]["groups"] < 100000
