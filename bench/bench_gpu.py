"""DCP load into device tensors: s3torch (part buffers registered with CUDA, asynchronous copies),
s3torch with registration off (S3TORCH_REGISTER_HOST_MEMORY=0), and s3torchconnector 1.5.0, on one
local SeaweedFS server. Prepared for a machine with a GPU (issue #17's check); on one without, pass
``--device cpu`` to run the same flow into CPU tensors (no GPU figures then).

Each case runs in a fresh process: the destination state_dict (the demo's GPT-like model, bf16 weights
and fp32 Adam moments) is allocated on the device first, then loaded and checked against the saved
values. Reports seconds, GB/s of destination bytes, and the share of the load that a plain
host-to-device copy of the same bytes from page-locked memory takes (the H2D copy's share).

    python bench/bench_gpu.py [--size-gb 4] [--repeat 3] [--device cuda] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Dict, List

REPO = Path(__file__).resolve().parents[1]
GB = 1e9
CASES = ["s3torch", "s3torch-unregistered", "s3torchconnector"]


def _sync(device: str) -> None:
    import torch

    if device.startswith("cuda"):
        torch.cuda.synchronize()


def _to(obj: Any, device: str) -> Any:
    if isinstance(obj, dict):
        return {k: _to(v, device) for k, v in obj.items()}
    return obj.to(device) if hasattr(obj, "to") else obj


def worker(spec: Dict[str, Any]) -> Dict[str, Any]:
    """One load in this process; prints its result as JSON."""
    import torch
    import torch.distributed.checkpoint as dcp

    from s3torch import demo

    device, case = spec["device"], spec["case"]
    expected = demo.build_state_dict(demo.plan_shape(spec["size_bytes"]), seed=0)
    dest = _to(demo.zeros_like_state(expected), device)
    _sync(device)
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from _common import storage_reader

    reader = storage_reader("s3torchconnector" if case == "s3torchconnector" else "s3torch", spec)
    t0 = time.perf_counter()
    dcp.load(dest, storage_reader=reader)
    _sync(device)
    seconds = time.perf_counter() - t0
    demo.verify(expected, _to(dest, "cpu"))
    out: Dict[str, Any] = {"case": case, "seconds": seconds, "bytes": demo.tensor_bytes(expected)}
    stats = getattr(reader, "last_load_stats", None)
    if stats is not None:
        out["device_bytes"] = stats.device_bytes
        out["registered_bytes"] = reader.fs.client.stats().get("registered_bytes", 0)
    if device.startswith("cuda"):  # the same bytes, host to device, from page-locked memory
        host = torch.empty(out["bytes"], dtype=torch.uint8, pin_memory=True)
        target = torch.empty(out["bytes"], dtype=torch.uint8, device=device)
        target.copy_(host, non_blocking=True)
        _sync(device)
        t1 = time.perf_counter()
        target.copy_(host, non_blocking=True)
        _sync(device)
        out["h2d_seconds"] = time.perf_counter() - t1
    return out


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--size-gb", type=float, default=4.0)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--json", type=Path)
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        print(json.dumps(worker(json.loads(args.worker))))
        return 0

    import torch
    import torch.distributed.checkpoint as dcp

    if args.device.startswith("cuda") and not torch.cuda.is_available():
        print("no CUDA device here: run with --device cpu for the CPU flow (no GPU figures)", file=sys.stderr)
        return 2
    from s3torch import S3ClientConfig, demo
    from s3torch.dcp import S3StorageWriter
    from s3torch.testing import helpers, servers

    size_bytes = args.size_gb * GB
    with servers.start_seaweedfs() as server:
        os.environ.update(server.env())
        bucket = server.create_bucket(helpers.unique_bucket_name("gpu"))
        uri = f"s3://{bucket}/ckpt"
        state = demo.build_state_dict(demo.plan_shape(size_bytes), seed=0)
        cfg = S3ClientConfig(force_path_style=True)
        dcp.save(
            state,
            storage_writer=S3StorageWriter(server.region, uri, s3client_config=cfg, endpoint=server.endpoint),
        )
        del state
        results: Dict[str, List[Dict[str, Any]]] = {case: [] for case in CASES}
        for _ in range(args.repeat):
            for case in CASES:
                spec = {
                    "case": case,
                    "device": args.device,
                    "size_bytes": size_bytes,
                    "region": server.region,
                    "endpoint": server.endpoint,
                    "uri": uri,
                }
                env = dict(os.environ)
                if case == "s3torch-unregistered":
                    env["S3TORCH_REGISTER_HOST_MEMORY"] = "0"
                proc = subprocess.run(
                    [sys.executable, __file__, "--worker", json.dumps(spec)],
                    env=env,
                    capture_output=True,
                    text=True,
                )
                if proc.returncode != 0:
                    if case == "s3torchconnector" and "No module named 's3torchconnector'" in proc.stderr:
                        continue
                    raise RuntimeError(f"{case} failed:\n{proc.stderr[-3000:]}")
                results[case].append(json.loads(proc.stdout.strip().splitlines()[-1]))
    print(f"device {args.device}, {args.size_gb} GB checkpoint, medians of {args.repeat}")
    print("| case | seconds | GB/s | H2D copy share | device bytes | registered bytes |")
    print("| --- | ---: | ---: | ---: | ---: | ---: |")
    for case, runs in results.items():
        if not runs:
            continue
        sec = statistics.median(r["seconds"] for r in runs)
        h2d = [r["h2d_seconds"] for r in runs if "h2d_seconds" in r]
        share = f"{statistics.median(h2d) / sec:.0%}" if h2d else "-"
        last = runs[-1]
        print(
            f"| {case} | {sec:.2f} | {last['bytes'] / sec / GB:.2f} | {share} | "
            f"{last.get('device_bytes', '-')} | {last.get('registered_bytes', '-')} |"
        )
    if args.json:
        args.json.write_text(json.dumps(results, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
