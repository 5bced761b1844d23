"""C++ microbenchmarks: builds bench/cpp (bench/cpp/build.sh), starts SeaweedFS on 127.0.0.1, uploads one
object and runs every benchmark against it; prints Google Benchmark's table and writes its JSON.

Usage: python bench/cpp/run.py [--size-mib 256] [--min-time 0.5] [--json bench/results/microbench.json]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
MiB = 1024 * 1024


def build() -> str:
    out = subprocess.run([str(ROOT / "bench/cpp/build.sh")], check=True, capture_output=True, text=True)
    return out.stdout.strip().splitlines()[-1]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--size-mib", type=int, default=256, help="object size for the GET benchmarks")
    parser.add_argument("--min-time", type=float, default=0.5, help="seconds each benchmark runs at least")
    parser.add_argument("--json", type=Path, default=None, help="also write Google Benchmark's JSON here")
    args = parser.parse_args(argv)

    binary = build()
    from s3torch.testing import helpers, servers

    with servers.start_seaweedfs() as server:
        os.environ.update(server.env())  # the credentials our client's default chain reads
        bucket = server.create_bucket(helpers.unique_bucket_name("microbench"))
        key = "object.bin"
        writer = helpers.make_client(server).put_object(bucket, key)
        chunk = os.urandom(MiB)
        for _ in range(args.size_mib):
            writer.write(chunk)
        writer.close()
        env = dict(os.environ)
        env.update(S3TORCH_BENCH_ENDPOINT=server.endpoint, S3TORCH_BENCH_BUCKET=bucket, S3TORCH_BENCH_KEY=key)
        cmd = [binary, f"--benchmark_min_time={args.min_time}", "--benchmark_counters_tabular=false"]
        if args.json:
            args.json.parent.mkdir(parents=True, exist_ok=True)
            cmd += [f"--benchmark_out={args.json}", "--benchmark_out_format=json"]
        rc = subprocess.run(cmd, env=env, timeout=1800).returncode
    if rc == 0 and args.json:
        names = [b["name"] for b in json.loads(args.json.read_text())["benchmarks"]]
        print(f"wrote {args.json}: {', '.join(names)}")
    return rc


if __name__ == "__main__":
    sys.exit(main())
