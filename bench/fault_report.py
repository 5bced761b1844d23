"""Integrity report: reads, range reads, DCP loads and saves through a proxy that fails about 5% of
requests at random (resets before the response, bodies cut half way, 500, 503, delays), repeated;
then whole-object reads with 5% of response bodies damaged, and uploads with 5% of parts damaged.

For each run it records the faults the proxy injected, the failed HTTP attempts the client counted
(its retries) and the outcome, and compares every byte with what was written: "bytes lost" counts
bytes that differ or are missing in a result that was returned as good (must be 0). A save that
raises must leave no .metadata behind.

    python bench/fault_report.py [--runs 3] [--read-mib 1024] [--json report.json]
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import random
import time
from pathlib import Path
from typing import Any, Dict, List

import torch
import torch.distributed.checkpoint as dcp

from s3torch import S3ReaderConstructor
from s3torch.dcp import S3StorageReader, S3StorageWriter
from s3torch.demo import leaves
from s3torch.testing import (
    Chance,
    Fault,
    S3Proxy,
    corrupt,
    corrupt_response,
    make_client,
    random_faults,
    start_seaweedfs,
    unique_bucket_name,
)

MiB = 1024 * 1024


def _lost(expected: bytes, got: bytes) -> int:
    n = min(len(expected), len(got))
    if expected[:n] == got[:n]:
        return abs(len(expected) - len(got))
    return sum(1 for a, b in zip(expected[:n], got[:n]) if a != b) + abs(len(expected) - len(got))


def _state(seed: int) -> Dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    out = {f"w{i}": torch.randn(250_000 * (1 + i % 4), generator=g) for i in range(24)}
    out["big"] = torch.randn(6 * MiB, generator=g)
    return out


def _tensor_bytes_lost(want: Dict[str, torch.Tensor], got: Dict[str, torch.Tensor]) -> int:
    lost = 0
    for (_, a), (_, b) in zip(sorted(leaves(want)), sorted(leaves(got))):
        if not torch.equal(a, b):
            lost += int((a.view(torch.uint8) != b.view(torch.uint8)).sum())
    return lost


def _row(
    case: str, run: int, faults: List[Fault], retries: Any, lost: int, t0: float, outcome: str = ""
) -> Dict[str, Any]:
    return dict(
        case=case,
        run=run,
        faults=sum(f.fired for f in faults),
        retries=retries,
        outcome=outcome or ("identical" if not lost else "DIFFERENT"),
        bytes_lost=lost,
        seconds=round(time.monotonic() - t0, 2),
    )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--read-mib", type=int, default=1024)
    ap.add_argument("--json", type=Path, default=None)
    args = ap.parse_args()

    server = start_seaweedfs()
    rows: List[Dict[str, Any]] = []
    try:
        os.environ.update(server.env())
        bucket = server.create_bucket(unique_bucket_name("faults"))
        plain = make_client(server)
        block = os.urandom(16 * MiB)
        big = hashlib.sha256()
        with plain.put_object(bucket, "big") as w:
            for i in range(args.read_mib // 16):
                piece = i.to_bytes(8, "little") + block[8:]
                w.write(piece)
                big.update(piece)
        big_digest = big.digest()
        obj = os.urandom(24 * MiB + 77)
        with plain.put_object(bucket, "obj") as w:
            w.write(obj)
        smalls = {f"small/{i:03d}": os.urandom(256 * 1024 + i) for i in range(200)}
        for key, body in smalls.items():
            with plain.put_object(bucket, key) as w:
                w.write(body)
        state = _state(1)
        writer = S3StorageWriter(server.region, f"s3://{bucket}/ckpt", endpoint=server.endpoint)
        dcp.save(state, storage_writer=writer)

        for run in range(args.runs):
            # 1. the large object, read whole
            proxy = S3Proxy(server.endpoint).start()
            faults = random_faults(proxy, "GET", 100 + run)
            client = make_client(server, endpoint=proxy.endpoint, memory_limit_bytes=256 * MiB)
            t0 = time.monotonic()
            digest = hashlib.sha256()
            buf = bytearray(8 * MiB)
            view = memoryview(buf)
            stream = client.get_object_stream(bucket, "big")
            total = 0
            while n := stream.read_into(buf):
                digest.update(view[:n])
                total += n
            ok = digest.digest() == big_digest and total == args.read_mib * MiB
            retries = client.stats()["failed_attempts"]
            rows.append(_row(f"{args.read_mib} MiB read", run, faults, retries, 0 if ok else -1, t0))
            proxy.stop()

            # 2. random range reads, unbuffered and buffered
            proxy = S3Proxy(server.endpoint).start()
            faults = random_faults(proxy, "GET", 200 + run)
            client = make_client(server, endpoint=proxy.endpoint)
            rng = random.Random(run)
            lost = 0
            t0 = time.monotonic()
            reads = 0
            for buffer_size in (0, 4 * MiB):
                ranged = S3ReaderConstructor.range_based(buffer_size=buffer_size)
                reader = client.get_object(bucket, "obj", reader_constructor=ranged)
                for _ in range(100):
                    start = rng.randrange(len(obj))
                    size = rng.choice([1, 4096, 300_000, 3 * MiB])
                    reader.seek(start)
                    lost += _lost(obj[start : start + size], reader.read(size))
                    reads += 1
            retries = client.stats()["failed_attempts"]
            rows.append(_row(f"{reads} range reads", run, faults, retries, lost, t0))
            proxy.stop()

            # 3. DCP load
            proxy = S3Proxy(server.endpoint).start()
            faults = random_faults(proxy, "GET", 300 + run)
            reader = S3StorageReader(server.region, f"s3://{bucket}/ckpt", endpoint=proxy.endpoint)
            reader.split_bytes = 2 * MiB
            dest = {k: torch.zeros_like(v) for k, v in state.items()}
            t0 = time.monotonic()
            dcp.load(dest, storage_reader=reader)
            lost = _tensor_bytes_lost(state, dest)
            retries = reader.last_load_stats.retries
            rows.append(_row("DCP load (25 tensors)", run, faults, retries, lost, t0))
            proxy.stop()

            # 4. DCP save: completes and loads identical, or raises and leaves no .metadata
            proxy = S3Proxy(server.endpoint).start()
            faults = random_faults(proxy, "PUT", 400 + run)
            uri = f"s3://{bucket}/saved{run}"
            t0 = time.monotonic()
            try:
                dcp.save(state, storage_writer=S3StorageWriter(server.region, uri, endpoint=proxy.endpoint))
                dest = {k: torch.zeros_like(v) for k, v in state.items()}
                dcp.load(dest, storage_reader=S3StorageReader(server.region, uri, endpoint=server.endpoint))
                lost = _tensor_bytes_lost(state, dest)
                outcome = "saved, loads identical" if not lost else "DIFFERENT"
            except BaseException as e:  # noqa: B036 - CheckpointException is a BaseException
                pages = plain.list_objects(bucket, f"saved{run}/")
                keys = [o.key for page in pages for o in page.object_info]
                left = any(k.endswith(".metadata") for k in keys)
                lost = 0
                outcome = f"raised {type(e).__name__}; .metadata left: {left}"
            rows.append(_row("DCP save", run, faults, None, lost, t0, outcome))
            proxy.stop()

            # 5. whole objects from a listing while 5% of GET bodies arrive with one byte damaged:
            # checked against the stored CRC32C, retried, never returned damaged
            proxy = S3Proxy(server.endpoint).start()
            chance = Chance(0.05, 500 + run)
            damage = proxy.add_fault(
                Fault(corrupt_response(1000), method="GET", path="/small/", times=None, when=chance)
            )
            client = make_client(server, endpoint=proxy.endpoint)
            t0 = time.monotonic()
            lost = 0
            for page in client.list_objects(bucket, "small/"):
                for info in page.object_info:
                    got = client.get_object(bucket, info.key, object_info=info).read()
                    lost += _lost(smalls[info.key], got)
            c = client.stats()
            rows.append(
                _row(f"{len(smalls)} listed whole reads", run, [damage], c["checksum_mismatches"], lost, t0)
            )
            proxy.stop()

            # 6. uploads while 5% of part bodies arrive damaged: the server refuses them, the CRT
            # resends the part it holds
            proxy = S3Proxy(server.endpoint).start()
            chance = Chance(0.05, 600 + run)
            part = Fault(
                corrupt(2 * MiB),
                method="PUT",
                times=None,
                when=lambda r, chance=chance: "partNumber" in r.query and chance(r),
            )
            damage = proxy.add_fault(part)
            client = make_client(server, endpoint=proxy.endpoint)
            t0 = time.monotonic()
            lost = 0
            for i in range(10):
                body = os.urandom(20 * MiB)
                with client.put_object(bucket, f"up{run}/{i}") as w:
                    w.write(body)
                lost += _lost(body, plain.get_object_stream(bucket, f"up{run}/{i}").read())
            retries = client.stats()["failed_attempts"]
            rows.append(_row("10 uploads of 20 MiB", run, [damage], retries, lost, t0))
            proxy.stop()
    finally:
        server.stop()

    print(f"{'case':24} {'run':>3} {'faults':>6} {'retries':>7} {'seconds':>7} {'bytes lost':>10}  outcome")
    for r in rows:
        retries = "-" if r["retries"] is None else r["retries"]
        cells = f"{r['case']:24} {r['run']:>3} {r['faults']:>6} {retries:>7} {r['seconds']:>7}"
        print(f"{cells} {r['bytes_lost']:>10}  {r['outcome']}")
    if args.json:
        args.json.write_text(json.dumps(rows, indent=2))


if __name__ == "__main__":
    main()
