"""Core throughput: full read of a 1 GiB object, side by side, on one local SeaweedFS server.

  s3torch   get_object_into: the part requests receive straight into a preallocated buffer
  s3torch   get_object_stream + read_into the same buffer (part buffer -> buffer: one more copy)
  s3torchconnector 1.5.0  S3Client.get_object(...).readinto the same buffer (if installed)
  curl      curl -o /dev/null with SigV4 (a single-stream baseline that keeps nothing)
  boto3     get_object()["Body"].read()

Reports GB/s and client CPU seconds per GB (user+sys of the client process; curl's via
RUSAGE_CHILDREN). Usage: python bench/bench_core.py [--size-mib 1024] [--repeat 3]
"""

from __future__ import annotations

import argparse
import os
import resource
import shutil
import statistics
import subprocess
import sys
import time
from typing import Callable, Dict, List, Tuple

MiB = 1024 * 1024


def _cpu_self() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def _cpu_children() -> float:
    r = resource.getrusage(resource.RUSAGE_CHILDREN)
    return r.ru_utime + r.ru_stime


def measure(fn: Callable[[], int], cpu: Callable[[], float]) -> Tuple[float, float, int]:
    c0, t0 = cpu(), time.perf_counter()
    n = fn()
    t1, c1 = time.perf_counter(), cpu()
    return t1 - t0, c1 - c0, n


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--size-mib", type=int, default=1024)
    ap.add_argument("--repeat", type=int, default=3)
    args = ap.parse_args()

    import numpy as np

    from s3torch import S3Client, S3ClientConfig
    from s3torch.testing import start_seaweedfs, unique_bucket_name

    size = args.size_mib * MiB
    with start_seaweedfs() as server:
        os.environ.update(server.env())
        bucket = server.create_bucket(unique_bucket_name("bench"))
        key = "object-1g"
        client = S3Client(
            server.region,
            endpoint=server.endpoint,
            s3client_config=S3ClientConfig(force_path_style=True),
        )
        block = os.urandom(64 * MiB)
        with client.put_object(bucket, key) as w:
            for i in range(0, size, len(block)):
                w.write(memoryview(block)[: min(len(block), size - i)])

        dest = np.empty(size, dtype=np.uint8)
        dest.fill(0)  # fault the pages in before timing

        def s3torch_read() -> int:
            stream = client.get_object_stream(bucket, key)
            n = stream.read_into(dest)
            assert n == size
            return n

        def s3torch_direct() -> int:
            client.get_object_into(bucket, key, 0, dest).wait()
            return size

        connector_read = None
        try:
            from s3torchconnector import S3ClientConfig as RefConfig
            from s3torchconnector._s3client import S3Client as RefClient

            ref = RefClient(
                server.region,
                endpoint=server.endpoint,
                s3client_config=RefConfig(force_path_style=True),
            )

            def connector_read() -> int:
                return ref.get_object(bucket, key).readinto(memoryview(dest))

        except ImportError:
            print("s3torchconnector not installed: its row is left out", file=sys.stderr)

        curl = shutil.which("curl")
        url = f"{server.endpoint}/{bucket}/{key}"

        def curl_read() -> int:
            subprocess.run(
                [
                    curl,
                    "-sSf",
                    "-o",
                    "/dev/null",
                    "--aws-sigv4",
                    f"aws:amz:{server.region}:s3",
                    "--user",
                    f"{server.access_key}:{server.secret_key}",
                    url,
                ],
                check=True,
            )
            return size

        b3 = server.boto3_client()

        def boto3_read() -> int:
            return len(b3.get_object(Bucket=bucket, Key=key)["Body"].read())

        cases: List[Tuple[str, Callable[[], int], Callable[[], float]]] = [
            ("s3torch get_object_into", s3torch_direct, _cpu_self),
            ("s3torch read_into", s3torch_read, _cpu_self),
            ("curl -o /dev/null", curl_read, _cpu_children),
            ("boto3 get_object.read", boto3_read, _cpu_self),
        ]
        if connector_read is not None:
            cases.append(("s3torchconnector readinto", connector_read, _cpu_self))
        results: Dict[str, List[Tuple[float, float]]] = {name: [] for name, _, _ in cases}
        for _, fn, _ in cases:  # warm-up: the server's first read of fresh data is slower
            fn()
        for _ in range(args.repeat):
            for name, fn, cpu in cases:  # interleaved, so drift hits every case alike
                secs, cpu_s, n = measure(fn, cpu)
                assert n == size
                results[name].append((secs, cpu_s))
        assert bytes(dest[:1024]) == block[:1024]

    gb = size / 1e9
    print(f"\nfull read of a {args.size_mib} MiB object, median of {args.repeat}, SeaweedFS on 127.0.0.1")
    print(f"{'client':<28}{'seconds':>9}{'GB/s':>8}{'CPU s/GB':>10}{'vs curl':>9}")
    curl_secs = statistics.median(s for s, _ in results["curl -o /dev/null"])
    for name, _, _ in cases:
        secs = statistics.median(s for s, _ in results[name])
        cpu_s = statistics.median(c for _, c in results[name])
        print(f"{name:<28}{secs:>9.2f}{gb / secs:>8.2f}{cpu_s / gb:>10.2f}{curl_secs / secs:>8.2f}x")
    sys.stdout.flush()


if __name__ == "__main__":
    main()
