"""DCP load benchmark: s3torch.dcp vs s3torchconnector 1.5.0 on one local SeaweedFS server.

One ~1 GB checkpoint of ~540 tensors (bf16 weights, fp32 Adam moments, int64 steps; from KiB to
~94 MiB; the synthetic model of ``python -m s3torch.demo``), saved once with s3torch's
S3StorageWriter (the DCP format is torch's, so both libraries read the same objects). Then, each
case in a fresh subprocess (clean RSS; the destination state_dict is allocated and touched first):

  full      load every key
  partial   load the first model weights up to 10% of the bytes
  spread    load every 10th key (in checkpoint order): the needed ranges are spread over the file

with readers
  s3torch dcp_optimized      (default; the plan's coalesced GETs run concurrently)
  s3torch sequential         (torch's per-file loop, sequential reader)
  s3torchconnector dcp_optimized  (its default)
  s3torchconnector sequential

Reports the median seconds over --repeat runs, GB/s (of destination bytes), the speedups over both
s3torchconnector readers, the peak RSS above the destination state_dict, and the bytes fetched
(from s3torch's statistics; s3torchconnector has none). Every run checks the values.

s3torchconnector's S3StorageReader takes no endpoint: its S3FileSystem's client is replaced by
``s3torchconnector._s3client.S3Client(region, endpoint=..., s3client_config=...)`` (with
``force_path_style=True``): the same client type it would build, with the endpoint set.

    pip install 's3torchconnector[dcp]==1.5.0'
    python bench/bench_dcp.py [--size-gb 1.0] [--repeat 3] [--json results.json]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import threading
import time
import warnings
from pathlib import Path
from typing import Any, Dict, Optional

REPO = Path(__file__).resolve().parents[1]
# The installed s3torch (scripts/setup.sh); the source tree only where that is not importable.
try:
    import s3torch._core  # noqa: F401

    SOURCE_PATH = ""
except ImportError:
    SOURCE_PATH = str(REPO / "python")
    sys.path.insert(0, SOURCE_PATH)

GB = 1e9

CASES = [
    ("s3torch", "dcp_optimized"),
    ("s3torch", "sequential"),
    ("s3torchconnector", "dcp_optimized"),
    ("s3torchconnector", "sequential"),
]


# ---- child: one measured load ------------------------------------------------------------------


def _rss() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def _make_reader(lib: str, kind: str, region: str, endpoint: str, uri: str) -> Any:
    if lib == "s3torch":
        from s3torch import S3ClientConfig, S3ReaderConstructor
        from s3torch.dcp import S3StorageReader

        ctor = getattr(S3ReaderConstructor, kind)()
        return S3StorageReader(
            region,
            uri,
            s3client_config=S3ClientConfig(force_path_style=True),
            reader_constructor=ctor,
            endpoint=endpoint,
        )
    from s3torchconnector import S3ClientConfig, S3ReaderConstructor
    from s3torchconnector._s3client import S3Client
    from s3torchconnector.dcp import S3StorageReader

    ctor = getattr(S3ReaderConstructor, kind)()
    reader = S3StorageReader(
        region,
        uri,
        s3client_config=S3ClientConfig(force_path_style=True),
        reader_constructor=ctor,
    )
    # No endpoint parameter in its DCP API: give its file system the same client type, with one.
    reader.fs._client = S3Client(
        region, endpoint=endpoint, s3client_config=S3ClientConfig(force_path_style=True)
    )
    return reader


def spread_keys(sd: Any, every: int) -> Any:
    """Every ``every``-th tensor key of the state_dict, in its order."""
    import torch

    from s3torch.demo import leaves

    names = [name for name, value in leaves(sd, "") if isinstance(value, torch.Tensor)]
    chosen = set(names[::every])
    return lambda name: name in chosen


def child(args: argparse.Namespace) -> None:
    warnings.filterwarnings("ignore")
    import torch
    import torch.distributed.checkpoint as dcp

    from s3torch.demo import (
        build_state_dict,
        partial_keys,
        plan_shape,
        tensor_bytes,
        verify,
        zeros_like_state,
    )

    torch.set_num_threads(max(1, os.cpu_count() or 1))
    shape = plan_shape(args.size_gb * GB)
    # The destination is built from a meta-device copy of the structure: no 1 GB of source values
    # in this process while measuring.
    structure = build_state_dict(shape, seed=args.seed, meta=True)
    keep = None
    if args.scope == "partial":
        keep = partial_keys(structure, args.partial)
    elif args.scope == "spread":
        keep = spread_keys(structure, 10)

    from _common import materialize

    dest = materialize(zeros_like_state(structure, keep))
    needed = tensor_bytes(dest)
    reader = _make_reader(args.lib, args.kind, args.region, args.endpoint, args.uri)

    base = _rss()
    peak = [base]
    stop = threading.Event()

    def sample() -> None:
        while not stop.wait(0.005):
            peak[0] = max(peak[0], _rss())

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    t0 = time.perf_counter()
    dcp.load(dest, storage_reader=reader)
    seconds = time.perf_counter() - t0
    stop.set()
    sampler.join()
    peak[0] = max(peak[0], _rss())

    stats = getattr(reader, "last_load_stats", None)
    result: Dict[str, Any] = {
        "seconds": seconds,
        "needed": needed,
        "rss_above_dest": peak[0] - base,
        "fetched": stats.bytes_fetched if stats is not None else None,
        "gets": stats.get_requests if stats is not None else None,
    }
    del reader
    if not args.no_verify:
        expected = build_state_dict(shape, seed=args.seed)
        result["checked"] = verify(expected, dest)
    print("RESULT " + json.dumps(result), flush=True)


# ---- parent -------------------------------------------------------------------------------------


def run_case(
    args: argparse.Namespace, lib: str, kind: str, scope: str, server: Any, uri: str
) -> Dict[str, Any]:
    cmd = [
        sys.executable,
        __file__,
        "--child",
        "--lib",
        lib,
        "--kind",
        kind,
        "--scope",
        scope,
        "--size-gb",
        str(args.size_gb),
        "--partial",
        str(args.partial),
        "--seed",
        str(args.seed),
        "--endpoint",
        server.endpoint,
        "--region",
        server.region,
        "--uri",
        uri,
    ]
    if args.no_verify:
        cmd.append("--no-verify")
    env = dict(os.environ, **server.env())
    if SOURCE_PATH:
        env["PYTHONPATH"] = os.pathsep.join([SOURCE_PATH, env.get("PYTHONPATH", "")])
    out = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=900)
    if out.returncode != 0:
        raise RuntimeError(f"{lib} {kind} {scope} failed:\n{out.stdout[-2000:]}{out.stderr[-4000:]}")
    line = [ln for ln in out.stdout.splitlines() if ln.startswith("RESULT ")][-1]
    return json.loads(line[len("RESULT ") :])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--size-gb", type=float, default=1.0)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--partial", type=float, default=0.10)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--json", type=Path, default=None, help="also write the results here")
    ap.add_argument("--no-verify", action="store_true", help="skip the value checks")
    # child mode
    ap.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    for name in ("--lib", "--kind", "--scope", "--endpoint", "--region", "--uri"):
        ap.add_argument(name, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        child(args)
        return

    warnings.filterwarnings("ignore")
    import torch

    from s3torch.demo import build_state_dict, leaves, plan_shape, tensor_bytes
    from s3torch.testing import start_seaweedfs, unique_bucket_name

    try:
        import s3torchconnector

        ref_version: Optional[str] = getattr(s3torchconnector, "__version__", "installed")
    except ImportError:
        ref_version = None
        print("s3torchconnector not installed: reference columns skipped", file=sys.stderr)
    cases = [c for c in CASES if c[0] == "s3torch" or ref_version is not None]

    shape = plan_shape(args.size_gb * GB)
    with start_seaweedfs() as server:
        os.environ.update(server.env())
        bucket = server.create_bucket(unique_bucket_name("bench-dcp"))
        uri = f"s3://{bucket}/ckpt"
        state = build_state_dict(shape, seed=args.seed)
        n_tensors = sum(1 for _, v in leaves(state) if isinstance(v, torch.Tensor))
        total = tensor_bytes(state)
        t0 = time.perf_counter()
        from _common import save_with_s3torch

        save_with_s3torch(server, uri, state)
        save_s = time.perf_counter() - t0
        del state
        print(
            f"checkpoint: {n_tensors} tensors, {total / GB:.3f} GB, saved in {save_s:.2f} s "
            f"({total / save_s / GB:.2f} GB/s); SeaweedFS {server.endpoint}; "
            f"s3torchconnector {ref_version}; {os.cpu_count()} CPUs",
            file=sys.stderr,
        )

        results: Dict[str, Dict[str, Any]] = {}
        for scope in ("full", "partial", "spread"):
            for lib, kind in cases:
                runs = []
                for i in range(args.repeat):
                    r = run_case(args, lib, kind, scope, server, uri)
                    runs.append(r)
                    print(
                        f"  {scope:<7} {lib:<16} {kind:<13} run {i + 1}: {r['seconds']:.2f} s",
                        file=sys.stderr,
                    )
                secs = statistics.median(r["seconds"] for r in runs)
                results[f"{scope}/{lib}/{kind}"] = {
                    "scope": scope,
                    "lib": lib,
                    "kind": kind,
                    "seconds": secs,
                    "runs": [r["seconds"] for r in runs],
                    "needed": runs[0]["needed"],
                    "gbps": runs[0]["needed"] / secs / GB,
                    "rss_above_dest": max(r["rss_above_dest"] for r in runs),
                    "fetched": runs[0]["fetched"],
                    "gets": runs[0]["gets"],
                }

    print()
    head = (
        f"{'scope':<8}{'library':<18}{'reader':<15}{'median s':>9}{'GB/s':>7}"
        f"{'vs ref seq':>11}{'vs ref dcp':>11}{'+RSS MB':>9}{'fetched GB':>11}"
    )
    print(head)
    print("-" * len(head))
    for r in results.values():
        scope = r["scope"]
        ref_seq = results.get(f"{scope}/s3torchconnector/sequential")
        ref_dcp = results.get(f"{scope}/s3torchconnector/dcp_optimized")
        vs_seq = f"{ref_seq['seconds'] / r['seconds']:.2f}x" if ref_seq else "-"
        vs_dcp = f"{ref_dcp['seconds'] / r['seconds']:.2f}x" if ref_dcp else "-"
        fetched = f"{r['fetched'] / GB:.3f}" if r["fetched"] is not None else "-"
        print(
            f"{scope:<8}{r['lib']:<18}{r['kind']:<15}{r['seconds']:9.2f}{r['gbps']:7.2f}"
            f"{vs_seq:>11}{vs_dcp:>11}{r['rss_above_dest'] / 1e6:9.0f}{fetched:>11}"
        )
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
