"""Reader benchmarks, side by side on one local SeaweedFS server: s3torch vs s3torchconnector vs boto3.

Cases (the same object, the same random offsets for every library):
  random-1MiB/buf0      200 random 1 MiB reads, range_based(buffer_size=0)
  random-1MiB/default   200 random 1 MiB reads, range_based() (8 MiB buffer)
  full/read             read() of the whole object (default = sequential reader)
  full/readinto         readinto() of the whole object into a preallocated buffer

Reports seconds, GB/s and client CPU seconds per GB (user+sys of this process). Needs
`pip install 's3torchconnector[dcp]==1.5.0'` for the reference columns (skipped if absent).
Usage: python bench/bench_readers.py [--size-mib 1024] [--repeat 3]
"""

from __future__ import annotations

import argparse
import gc
import os
import random
import resource
import statistics
import time
from typing import Any, Callable, Dict, List, Tuple

MiB = 1024 * 1024


def _cpu() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--size-mib", type=int, default=1024)
    ap.add_argument("--reads", type=int, default=200)
    ap.add_argument("--repeat", type=int, default=3)
    args = ap.parse_args()

    import numpy as np

    import s3torch
    from s3torch.testing import start_seaweedfs, unique_bucket_name

    try:
        import s3torchconnector
        from s3torchconnector._s3client import S3Client as RefS3Client
    except ImportError:
        s3torchconnector = None

    size = args.size_mib * MiB
    rng = random.Random(1234)
    offsets = [rng.randrange(0, size - MiB) for _ in range(args.reads)]

    with start_seaweedfs() as server:
        os.environ.update(server.env())
        bucket = server.create_bucket(unique_bucket_name("bench"))
        key = "readers-object"
        mk = s3torch.S3Client(
            server.region,
            endpoint=server.endpoint,
            s3client_config=s3torch.S3ClientConfig(force_path_style=True),
        )
        block = os.urandom(64 * MiB)
        with mk.put_object(bucket, key) as w:
            for i in range(0, size, len(block)):
                w.write(memoryview(block)[: min(len(block), size - i)])

        libs: Dict[str, Any] = {}
        libs["s3torch"] = (s3torch, mk)
        if s3torchconnector is not None:
            ref = RefS3Client(
                server.region,
                endpoint=server.endpoint,
                s3client_config=s3torchconnector.S3ClientConfig(force_path_style=True),
            )
            libs["s3torchconnector"] = (s3torchconnector, ref)
        b3 = server.boto3_client()
        dest = np.zeros(size, dtype=np.uint8)

        def random_reads(lib: Any, client: Any, buffer_size: Any) -> int:
            ctor = lib.S3ReaderConstructor.range_based(buffer_size=buffer_size)
            reader = client.get_object(bucket, key, reader_constructor=ctor)
            total = 0
            for off in offsets:
                reader.seek(off)
                total += len(reader.read(MiB))
            return total

        def full_read(lib: Any, client: Any) -> int:
            reader = client.get_object(bucket, key)
            data = reader.read()
            assert data[:64] == block[:64]
            return len(data)

        def full_readinto(lib: Any, client: Any) -> int:
            reader = client.get_object(bucket, key)
            n = reader.readinto(memoryview(dest))
            return n

        def boto3_random() -> int:
            total = 0
            for off in offsets:
                body = b3.get_object(Bucket=bucket, Key=key, Range=f"bytes={off}-{off + MiB - 1}")
                total += len(body["Body"].read())
            return total

        def boto3_full() -> int:
            return len(b3.get_object(Bucket=bucket, Key=key)["Body"].read())

        cases: List[Tuple[str, str, Callable[[], int]]] = []
        for name, (lib, client) in libs.items():
            cases += [
                ("random-1MiB/buf0", name, lambda lib=lib, c=client: random_reads(lib, c, 0)),
                ("random-1MiB/default", name, lambda lib=lib, c=client: random_reads(lib, c, None)),
                ("full/read", name, lambda lib=lib, c=client: full_read(lib, c)),
                ("full/readinto", name, lambda lib=lib, c=client: full_readinto(lib, c)),
            ]
        cases += [("random-1MiB/buf0", "boto3", boto3_random), ("full/read", "boto3", boto3_full)]

        results: Dict[Tuple[str, str], List[Tuple[float, float, int]]] = {}
        for _case, _name, fn in cases:  # warm-up pass
            fn()
            gc.collect()
        for _ in range(args.repeat):
            for case, name, fn in cases:
                gc.collect()
                c0, t0 = _cpu(), time.perf_counter()
                n = fn()
                t1, c1 = time.perf_counter(), _cpu()
                results.setdefault((case, name), []).append((t1 - t0, c1 - c0, n))

    print(f"\nreaders on a {args.size_mib} MiB object, median of {args.repeat}, SeaweedFS on 127.0.0.1")
    print(f"{'case':<22}{'client':<18}{'seconds':>9}{'GB/s':>8}{'CPU s/GB':>10}{'speedup':>9}")
    for case in dict.fromkeys(c for c, _, _ in cases):
        base = None
        rows = [(name, results[(case, name)]) for (c, name) in results if c == case]
        for name, runs in rows:
            if name == "s3torchconnector":
                base = statistics.median(r[0] for r in runs)
        for name, runs in rows:
            secs = statistics.median(r[0] for r in runs)
            cpu = statistics.median(r[1] for r in runs)
            gb = runs[0][2] / 1e9
            speed = f"{base / secs:>8.2f}x" if base else f"{'':>9}"
            print(f"{case:<22}{name:<18}{secs:>9.3f}{gb / secs:>8.2f}{cpu / gb:>10.2f}{speed}")
    print("speedup: s3torchconnector's seconds / this row's seconds")


if __name__ == "__main__":
    main()
