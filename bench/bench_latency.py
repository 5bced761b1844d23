"""Per-request latency, side by side on one local SeaweedFS server: s3torch vs s3torchconnector 1.5.0 vs
boto3 vs curl (one process fetching every URL over one kept-alive connection, SigV4-signed).

Cases, whole-object GETs of one object of 4 KiB, 64 KiB and 1 MiB:
  1 thread    GETs per second, one after another
  8 threads   GETs per second, eight threads at once (curl: eight processes, one connection each)
  TTFB        median time from the call to the first byte (1 thread)

s3torch is measured two ways: `get_object(b, k).read()` (the reader streams; what a plain user does) and
with the listing's object info (`get_object(b, k, object_info=info).read()`: what the datasets do, one
GET straight into the bytes). Prints medians of --repeat runs of --gets GETs each.

Usage: python bench/bench_latency.py [--gets 400] [--repeat 5]
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Callable, Dict, List

SIZES = {"4KiB": 4 * 1024, "64KiB": 64 * 1024, "1MiB": 1024 * 1024}


def rate(fn: Callable[[], int], gets: int, threads: int) -> float:
    """GETs per second of ``fn`` (one GET per call) over ``gets`` calls on ``threads`` threads."""
    if threads == 1:
        start = time.perf_counter()
        for _ in range(gets):
            fn()
        return gets / (time.perf_counter() - start)
    with ThreadPoolExecutor(threads) as pool:
        list(pool.map(lambda _: fn(), range(threads)))  # warm: one connection per thread
        start = time.perf_counter()
        list(pool.map(lambda _: fn(), range(gets)))
        return gets / (time.perf_counter() - start)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--gets", type=int, default=400)
    ap.add_argument("--repeat", type=int, default=5)
    args = ap.parse_args()

    import s3torch
    from s3torch.testing import start_seaweedfs, unique_bucket_name

    try:
        from s3torchconnector._s3client import S3Client as RefClient
    except ImportError:
        RefClient = None
        print("s3torchconnector not installed: its rows are left out")

    with start_seaweedfs() as server:
        os.environ.update(server.env())
        bucket = server.create_bucket(unique_bucket_name("bench-lat"))
        ours = s3torch.S3Client(
            server.region,
            endpoint=server.endpoint,
            s3client_config=s3torch.S3ClientConfig(force_path_style=True),
        )
        b3 = server.boto3_client()
        ref = RefClient(server.region, endpoint=server.endpoint) if RefClient else None
        curl = shutil.which("curl")
        rows: Dict[str, Dict[str, List[float]]] = {}

        for label, size in SIZES.items():
            key = f"obj-{label}"
            body = os.urandom(size)
            with ours.put_object(bucket, key) as w:
                w.write(body)
            info = next(o for page in ours.list_objects(bucket, key) for o in page.object_info)
            url = f"{server.endpoint}/{bucket}/{key}"
            clients: Dict[str, Callable[[], int]] = {
                "s3torch reader": lambda key=key: len(ours.get_object(bucket, key).read()),
                "s3torch listed": lambda key=key, info=info: len(
                    ours.get_object(bucket, key, object_info=info).read()
                ),
                "boto3": lambda key=key: len(b3.get_object(Bucket=bucket, Key=key)["Body"].read()),
            }
            if ref is not None:
                clients["s3torchconnector"] = lambda key=key: len(ref.get_object(bucket, key).read())
            for name, fn in clients.items():
                assert fn() == size, name
            sign = [
                "--aws-sigv4",
                f"aws:amz:{server.region}:s3",
                "--user",
                f"{server.access_key}:{server.secret_key}",
            ]

            def curl_rate(threads: int, url: str = url, sign: List[str] = sign) -> float:
                per = args.gets // threads
                cmd = [curl, "-sSf", *sign] + [a for _ in range(per) for a in ("-o", "/dev/null", url)]
                start = time.perf_counter()
                procs = [subprocess.Popen(cmd) for _ in range(threads)]
                for p in procs:
                    assert p.wait() == 0
                return per * threads / (time.perf_counter() - start)

            for _ in range(args.repeat):
                for threads in (1, 8):
                    for name, fn in clients.items():
                        rows.setdefault(f"{label} {threads}t {name}", {}).setdefault("r", []).append(
                            rate(fn, args.gets, threads)
                        )
                    if curl:
                        rows.setdefault(f"{label} {threads}t curl (1 connection each)", {}).setdefault(
                            "r", []
                        ).append(curl_rate(threads))
                # Time to first byte, one request at a time.
                ttfb: Dict[str, Callable[[], float]] = {
                    "s3torch stream": lambda key=key: _ttfb(
                        lambda: next(iter(ours.get_object_stream(bucket, key)))
                    ),
                    "boto3": lambda key=key: _ttfb(
                        lambda: b3.get_object(Bucket=bucket, Key=key)["Body"].read(1)
                    ),
                }
                if ref is not None:
                    ttfb["s3torchconnector"] = lambda key=key: _ttfb(
                        lambda: ref.get_object(bucket, key).read(1)
                    )
                for name, fn in ttfb.items():
                    samples = [fn() for _ in range(50)]
                    rows.setdefault(f"{label} TTFB {name}", {}).setdefault("r", []).append(
                        statistics.median(samples) * 1000
                    )

        print(f"\nmedian of {args.repeat} runs of {args.gets} GETs, SeaweedFS on 127.0.0.1")
        for name, data in rows.items():
            unit = "ms" if "TTFB" in name else "GETs/s"
            runs = data["r"]
            print(f"{name:<46}{statistics.median(runs):>10.1f} {unit:<7} runs {[round(r, 1) for r in runs]}")


def _ttfb(first: Callable[[], object]) -> float:
    start = time.perf_counter()
    first()
    return time.perf_counter() - start


if __name__ == "__main__":
    main()
