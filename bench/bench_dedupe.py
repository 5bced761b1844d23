"""Replicated DCP load over N ranks (processes, gloo on loopback, one local SeaweedFS): every rank
loads the whole checkpoint, as data-parallel replicas do.

  s3torch dedupe    S3StorageReader() (default): each stored item read once, broadcast to the others
  s3torch plain     S3StorageReader(dedupe=False): every rank reads every byte
  s3torchconnector  its S3StorageReader on every rank (reads every byte; it has no statistics, so
                    its S3 bytes are N x the checkpoint by construction)

Reports the load's wall time (slowest rank, between two barriers), the S3 bytes all ranks fetched
together and the bytes received from peers; every rank checks its values afterwards.

    python bench/bench_dedupe.py [--ranks 4] [--size-gb 1.0] [--repeat 1]
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
import warnings
from pathlib import Path
from typing import Any, Dict, List

GB = 1e9
MODES = ("s3torch dedupe", "s3torch plain", "s3torchconnector")


def rank_main(spec: Dict[str, Any]) -> None:
    warnings.filterwarnings("ignore")
    import torch
    import torch.distributed as dist
    import torch.distributed.checkpoint as dcp

    from s3torch.demo import build_state_dict, plan_shape, verify, zeros_like_state

    torch.set_num_threads(1)
    dist.init_process_group(
        "gloo",
        init_method=f"file://{spec['store']}",
        rank=spec["rank"],
        world_size=spec["ranks"],
        timeout=datetime.timedelta(seconds=600),
    )
    shape = plan_shape(spec["size_gb"] * GB)
    dest = zeros_like_state(build_state_dict(shape, seed=0, meta=True))

    from _common import materialize, storage_reader

    dest = materialize(dest)
    if spec["mode"] == "s3torchconnector":
        reader = storage_reader("s3torchconnector", spec)
    else:
        reader = storage_reader("s3torch", spec, dedupe=spec["mode"] == "s3torch dedupe")
    dist.barrier()
    t0 = time.perf_counter()
    dcp.load(dest, storage_reader=reader)
    dist.barrier()
    seconds = time.perf_counter() - t0
    stats = getattr(reader, "last_load_stats", None)
    ok = verify(build_state_dict(shape, seed=0), dest) > 0
    out = {
        "seconds": seconds,
        "fetched": None if stats is None else stats.bytes_fetched,
        "from_peers": None if stats is None else stats.bytes_from_peers,
        "ok": ok,
    }
    dist.destroy_process_group()
    print("RESULT " + json.dumps(out), flush=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--ranks", type=int, default=4)
    ap.add_argument("--size-gb", type=float, default=1.0)
    ap.add_argument("--repeat", type=int, default=1)
    ap.add_argument("--rank", default=None, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.rank:
        rank_main(json.loads(args.rank))
        return
    warnings.filterwarnings("ignore")

    from s3torch.demo import build_state_dict, plan_shape, tensor_bytes
    from s3torch.testing import start_seaweedfs, unique_bucket_name

    shape = plan_shape(args.size_gb * GB)
    with start_seaweedfs() as server, tempfile.TemporaryDirectory() as tmp:
        os.environ.update(server.env())
        bucket = server.create_bucket(unique_bucket_name("bench-dedupe"))
        uri = f"s3://{bucket}/ckpt"
        state = build_state_dict(shape, seed=0)
        total = tensor_bytes(state)
        from _common import save_with_s3torch

        save_with_s3torch(server, uri, state)
        del state
        env = dict(os.environ, GLOO_SOCKET_IFNAME="lo", OMP_NUM_THREADS="1")
        results: Dict[str, List[Dict[str, Any]]] = {}
        for run in range(args.repeat):
            for mode in MODES:
                store = Path(tmp) / f"store-{run}-{mode.replace(' ', '-')}"
                procs = []
                for rank in range(args.ranks):
                    spec = dict(
                        rank=rank,
                        ranks=args.ranks,
                        store=str(store),
                        mode=mode,
                        size_gb=args.size_gb,
                        region=server.region,
                        endpoint=server.endpoint,
                        uri=uri,
                    )
                    cmd = [sys.executable, __file__, "--rank", json.dumps(spec)]
                    procs.append(
                        subprocess.Popen(
                            cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
                        )
                    )
                ranks = []
                for p in procs:
                    out, err = p.communicate(timeout=1200)
                    if p.returncode != 0:
                        raise RuntimeError(f"{mode}: a rank failed:\n{err[-3000:]}")
                    ranks.append(
                        json.loads([ln for ln in out.splitlines() if ln.startswith("RESULT ")][-1][7:])
                    )
                row = {
                    "seconds": max(r["seconds"] for r in ranks),
                    "fetched": None if ranks[0]["fetched"] is None else sum(r["fetched"] for r in ranks),
                    "from_peers": None
                    if ranks[0]["from_peers"] is None
                    else sum(r["from_peers"] for r in ranks),
                    "ok": all(r["ok"] for r in ranks),
                }
                results.setdefault(mode, []).append(row)
                print(f"{mode:<18} run {run + 1}: {row['seconds']:.2f} s, ok={row['ok']}", file=sys.stderr)
    print(
        f"\n{args.ranks} ranks (gloo, loopback), each loading a {total / GB:.2f} GB replicated checkpoint; "
    )
    print(f"{'mode':<18}{'wall s':>8}{'S3 GB (all ranks)':>19}{'x ckpt':>8}{'from peers GB':>15}  check")
    for mode, rows in results.items():
        secs = statistics.median(r["seconds"] for r in rows)
        fetched = rows[0]["fetched"]
        if fetched is None:
            fetched_s, ratio = f"{args.ranks * total / GB:.2f} (N x)", f"{args.ranks:.2f}"
        else:
            fetched_s, ratio = f"{fetched / GB:.2f}", f"{fetched / total:.2f}"
        peers = rows[0]["from_peers"]
        peers_s = "-" if peers is None else f"{peers / GB:.2f}"
        check = "ok" if all(r["ok"] for r in rows) else "WRONG"
        print(f"{mode:<18}{secs:>8.2f}{fetched_s:>19}{ratio:>8}{peers_s:>15}  {check}")


if __name__ == "__main__":
    main()
