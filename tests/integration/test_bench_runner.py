"""The benchmark suite's case runner (bench/run.py): each case in a process of its own, forked from a
server that imported the libraries once; results, wrong results and failures come back as such."""

from __future__ import annotations

import hashlib
import importlib.util
import os
from pathlib import Path
from typing import Any, Dict, Iterator

import pytest

ROOT = Path(__file__).resolve().parents[2]
_spec_of = importlib.util.spec_from_file_location("bench_run", ROOT / "bench" / "run.py")
assert _spec_of is not None and _spec_of.loader is not None
bench = importlib.util.module_from_spec(_spec_of)
_spec_of.loader.exec_module(bench)


@pytest.fixture
def runner(seaweed_server: Any) -> Iterator[Any]:
    r = bench.CaseRunner(dict(os.environ, **seaweed_server.env()), timeout=300)
    yield r
    r.close()


def _spec(server: Any, bucket: str, key: str, blob: bytes) -> Dict[str, Any]:
    return {
        "op": "read",
        "tool": "s3torch",
        "region": server.region,
        "endpoint": server.endpoint,
        "access": server.access_key,
        "secret": server.secret_key,
        "bucket": bucket,
        "key": key,
        "size": len(blob),
        "sha256": hashlib.sha256(blob).hexdigest(),
    }


def test_each_case_runs_alone_and_is_checked(
    runner: Any, seaweed_server: Any, seaweed_bucket: str, make_client: Any
) -> None:
    blob = os.urandom(3 * 1024 * 1024 + 5)
    client = make_client(seaweed_server)
    with client.put_object(seaweed_bucket, "obj") as w:
        w.write(blob)
    spec = _spec(seaweed_server, seaweed_bucket, "obj", blob)
    first, second = runner.run(spec), runner.run(spec)
    for r in (first, second):
        assert r["ok"] is True
        assert r["bytes"] == len(blob)
        assert r["seconds"] > 0 and r["cpu"] >= 0 and r["rss_above"] >= 0
    # A fresh process per case, neither of them the server.
    assert len({first["pid"], second["pid"], runner.proc.pid}) == 3

    wrong = runner.run(dict(spec, sha256="0" * 64))
    assert wrong["ok"] is False

    with pytest.raises(RuntimeError, match="(?s)read s3torch failed.*missing"):
        runner.run(dict(spec, key="missing"))
    # The failed case took only its own process down.
    assert runner.run(spec)["ok"] is True

    runner.close()
    assert runner.proc.returncode == 0


def test_the_checkpoint_cases_save_then_load_and_check_the_values(
    runner: Any, seaweed_server: Any, seaweed_bucket: str
) -> None:
    """ckpt/torch.save writes through S3Checkpoint; ckpt/torch.load reads it back and compares every
    tensor with the state_dict built from the seed (a different seed must fail the check)."""
    common = {
        "tool": "s3torch",
        "region": seaweed_server.region,
        "endpoint": seaweed_server.endpoint,
        "bucket": seaweed_bucket,
        "shape": "mixed",
        "size_gb": 0.004,
        "seed": 3,
        "uri": f"s3://{seaweed_bucket}/ckpt.pt",
    }
    saved = runner.run(dict(common, op="torch.save"))
    assert saved["ok"] is True and saved["bytes"] > 3_000_000
    loaded = runner.run(dict(common, op="torch.load"))
    assert loaded["ok"] is True and loaded["bytes"] == saved["bytes"] and loaded["seconds"] > 0
    assert runner.run(dict(common, op="torch.load", seed=4))["ok"] is False


def test_quick_mode_keeps_every_case_and_tool_but_loads_only_our_checkpoints() -> None:
    """--quick (about a minute) runs every case with every tool; only the loads of checkpoints written
    by s3torchconnector are left to the full run, which has both writers' for every load but the fresh one."""
    import argparse

    full = bench.plan(argparse.Namespace(quick=False), True)
    quick = bench.plan(argparse.Namespace(quick=True), True)
    assert {(c, t) for c, _, t, _ in quick} == {(c, t) for c, _, t, _ in full}
    assert not [d for c, d, _, _ in quick if "saved by s3torchconnector" in d]
    by_them = {(c, d) for c, d, _, _ in full if "saved by s3torchconnector" in d}
    assert {c for c, _ in by_them} == {"dcp/full", "dcp/partial-10%", "dcp/spread"}
    assert len(quick) == len(full) - sum(1 for _, d, _, _ in full if "saved by s3torchconnector" in d)
