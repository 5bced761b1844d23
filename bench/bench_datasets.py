"""Dataset benchmarks, side by side on one local SeaweedFS server: s3torch vs s3torchconnector 1.5.0.

Cases: 1,000 objects of 100 KiB and 200 objects of 8 MiB, read through a DataLoader with 2 worker
processes (fork, batch size 32, each sample's transform reads the whole object), for S3MapDataset and
S3IterableDataset (enable_sharding=True, so the two workers split the objects). Each library and case
runs in its own process (so peak RSS is its own): objects per second (median of --repeat epochs, each a
fresh DataLoader iterator: workers start, list and read), MB/s, and the peak RSS of the main process
and of its largest worker.

Usage: python bench/bench_datasets.py [--repeat 3] [--workers 2]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor

KiB = 1024
MiB = 1024 * KiB
CASES = {"100KiB": (1000, 100 * KiB), "8MiB": (200, 8 * MiB)}


def read_all(reader) -> int:
    return len(reader.read())


def as_list(batch):
    return batch


def run_one(lib: str, kind: str, case: str, repeat: int, workers: int) -> dict:
    """In its own process: epochs of one library / dataset kind / case; prints a JSON line."""
    from torch.utils.data import DataLoader

    if lib == "s3torch":
        from s3torch import S3ClientConfig, S3IterableDataset, S3MapDataset
    else:
        from s3torchconnector import S3ClientConfig, S3IterableDataset, S3MapDataset

    count, size = CASES[case]
    uri = f"s3://{os.environ['BENCH_BUCKET']}/{case}/"
    common = dict(
        region=os.environ["AWS_REGION"],
        endpoint=os.environ["BENCH_ENDPOINT"],
        transform=read_all,
        s3client_config=S3ClientConfig(force_path_style=True),
    )
    times = []
    for _ in range(repeat):
        if kind == "map":
            ds = S3MapDataset.from_prefix(uri, **common)
        else:
            ds = S3IterableDataset.from_prefix(uri, enable_sharding=True, **common)
        start = time.perf_counter()
        loader = DataLoader(ds, batch_size=32, num_workers=workers, collate_fn=as_list)
        n = total = 0
        for batch in loader:
            n += len(batch)
            total += sum(batch)
        times.append(time.perf_counter() - start)
        assert n == count and total == count * size, (n, total)
    med = statistics.median(times)
    return {
        "lib": lib,
        "kind": kind,
        "case": case,
        "seconds": med,
        "objects_per_s": count / med,
        "mb_per_s": count * size / med / 1e6,
        "rss_main_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "rss_worker_mb": resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024,
        "runs": times,
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--one", nargs=3, metavar=("LIB", "KIND", "CASE"), help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.one:
        print(json.dumps(run_one(*args.one, repeat=args.repeat, workers=args.workers)))
        return

    from s3torch.testing import make_client, start_seaweedfs, unique_bucket_name

    try:
        import s3torchconnector  # noqa: F401

        libs = ["s3torch", "s3torchconnector"]
    except ImportError:
        print("s3torchconnector not installed: s3torch only")
        libs = ["s3torch"]

    with start_seaweedfs() as server:
        os.environ.update(server.env())
        bucket = server.create_bucket(unique_bucket_name("bench-ds"))
        client = make_client(server)
        for case, (count, size) in CASES.items():
            body = os.urandom(size)

            def put(i: int, case: str = case, body: bytes = body) -> None:
                with client.put_object(bucket, f"{case}/{i:05d}") as w:
                    w.write(body)

            with ThreadPoolExecutor(8) as pool:
                list(pool.map(put, range(count)))
        env = dict(os.environ, **server.env(), BENCH_BUCKET=bucket, BENCH_ENDPOINT=server.endpoint)
        results = []
        base = [sys.executable, __file__, "--repeat", str(args.repeat), "--workers", str(args.workers)]
        for case in CASES:
            for kind in ("map", "iterable"):
                for lib in libs:
                    out = subprocess.run(
                        [*base, "--one", lib, kind, case],
                        env=env,
                        capture_output=True,
                        text=True,
                        timeout=1200,
                    )
                    if out.returncode != 0:
                        raise SystemExit(f"{lib} {kind} {case} failed:\n{out.stderr[-3000:]}")
                    r = json.loads(out.stdout.strip().splitlines()[-1])
                    results.append(r)
                    runs = [round(t, 2) for t in r["runs"]]
                    print(
                        f"{case:7s} {kind:8s} {lib:17s} {r['seconds']:6.2f} s "
                        f"{r['objects_per_s']:8.0f} obj/s {r['mb_per_s']:7.0f} MB/s  "
                        f"RSS main {r['rss_main_mb']:5.0f} MB, worker {r['rss_worker_mb']:5.0f} MB  "
                        f"runs {runs}",
                        flush=True,
                    )
        if len(libs) == 2:
            print("\nratio (s3torch objects/s over s3torchconnector's):")
            for case in CASES:
                for kind in ("map", "iterable"):
                    ours, theirs = (
                        next(r for r in results if (r["lib"], r["kind"], r["case"]) == (lib, kind, case))
                        for lib in libs
                    )
                    print(f"  {case:7s} {kind:8s} {ours['objects_per_s'] / theirs['objects_per_s']:.2f}x")


if __name__ == "__main__":
    main()
