"""The benchmark suite: s3torch beside s3torchconnector 1.5.0, boto3 and curl on one local SeaweedFS.

Every (case, tool) runs in a fresh process, forked from a case server that imported the libraries
once, and is measured there: wall seconds of the operation alone, client CPU seconds of the operation
(all threads of the process, and curl's processes), peak RSS above what the process held before it
(the destination state_dict is allocated and touched first).
Every result is checked: object bytes against their SHA-256, loaded tensors against the values
saved. Results: JSON, a markdown table and a PNG chart (matplotlib) in --out.

Cases
  read/read          read() of a whole object (sequential reader)        s3torch, s3torchconnector, boto3,
                                                                          curl (1 stream, 4 parallel ranges)
  read/readinto      readinto() of it into a preallocated buffer          s3torch, s3torchconnector
  read/random-1MiB   200 random 1 MiB reads, range_based(buffer_size=0)   s3torch, s3torchconnector, boto3
  dcp/save           dcp.save of a state_dict; "raw" is a plain upload   s3torch, s3torchconnector, fsspec,
                     of the same byte count through s3torch's client     raw
  dcp/full           dcp.load of every key                               s3torch, s3torchconnector, fsspec
  dcp/partial-10%    the first model weights up to 10% of the bytes      s3torch, s3torchconnector, fsspec
  dcp/spread         every 10th key: needed ranges spread over the file  s3torch, s3torchconnector, fsspec
  dcp/full-fresh     dcp.load of every key into untouched tensors        s3torch, s3torchconnector, fsspec
                     (torch.empty, as after to_empty): page faults count
  ckpt/torch.save    torch.save(state_dict, S3Checkpoint.writer(uri))    s3torch, s3torchconnector
                     ("mixed"; torch computes the zip CRC-32 itself)
  ckpt/torch.load    torch.load(S3Checkpoint.reader(uri)) of s3torch's   s3torch, s3torchconnector
                     file: the default (sequential) reader; torch reads
                     the zip's end first, then each record

DCP data: two state_dicts ("mixed": bf16 weights, fp32 Adam moments, int64 steps, the demo's GPT-like
model; "fp32": uniform fp32 tensors of 4 KiB up to 256 MiB), each saved by both libraries' writers (the
save cases), so every load case runs on checkpoints written by s3torch and by s3torchconnector.

s3torchconnector's DCP classes take no endpoint: their file system's client is replaced by the client
type it builds itself, with the endpoint set (force_path_style=True), as in its own tests. "fsspec" is
torch's own FsspecReader / FsspecWriter over s3fs (the checkpoint it saves is not loaded again).

    S3TORCH_EXTRAS=test,dcp,bench ./scripts/setup.sh      # adds s3fs and matplotlib (the chart)
    .venv/bin/python bench/run.py [--quick] [--size-gb 1.0] [--repeat 3] [--out bench/results]

--quick: 0.1 GB, one run each, loads of s3torch's checkpoints only (about a minute here). A run of the
full suite takes about 18 minutes here.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import platform
import random
import resource
import shutil
import statistics
import subprocess
import sys
import time
import warnings
from pathlib import Path
from typing import Any, Callable, Dict, List, Tuple

MiB = 1024 * 1024
GB = 1e9
REF = "s3torchconnector"


# ---- data --------------------------------------------------------------------------------------


def fp32_state(size: float, seed: int, meta: bool = False) -> Dict[str, Any]:
    """Uniform fp32 tensors from 4 KiB growing by 1.5x up to 256 MiB until ``size`` bytes (under
    "model", so that the partial case takes a prefix of them), values seeded."""
    import torch

    gen = torch.Generator().manual_seed(seed)
    tensors: Dict[str, Any] = {}
    total, n, i = 0, 1024, 0
    while total < size:
        n = min(n, 64 * MiB, max(1024, int((size - total) // 4)))
        if meta:
            tensors[f"t{i:04d}"] = torch.empty(n, device="meta")
        else:
            tensors[f"t{i:04d}"] = torch.randn(n, generator=gen)
        total += 4 * n
        n = int(n * 1.5)
        i += 1
    return {"model": tensors}


def build(shape: str, size: float, seed: int, meta: bool = False) -> Dict[str, Any]:
    from s3torch.demo import build_state_dict, plan_shape

    if shape == "fp32":
        return fp32_state(size, seed, meta)
    return build_state_dict(plan_shape(size), seed=seed, meta=meta)


def spread_keys(sd: Any, every: int) -> Callable[[str], bool]:
    import torch

    from s3torch.demo import leaves

    names = [name for name, value in leaves(sd, "") if isinstance(value, torch.Tensor)]
    chosen = set(names[::every])
    return lambda name: name in chosen


def random_offsets(size: int, count: int, seed: int) -> List[int]:
    rng = random.Random(seed)
    return [rng.randrange(0, size - MiB) for _ in range(count)]


# ---- child: one measured operation --------------------------------------------------------------


def _rss() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def _peak_rss() -> int:
    """This process's RSS high-water mark (VmHWM; ru_maxrss would carry the parent's from fork)."""
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    return 0


def _cpu() -> float:
    own = resource.getrusage(resource.RUSAGE_SELF)
    kids = resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + kids.ru_utime + kids.ru_stime


def _clients(spec: Dict[str, Any]) -> Tuple[Any, Any]:
    """(the library module, a client of it) for spec's tool, on spec's endpoint."""
    if spec["tool"] == REF:
        import s3torchconnector
        from s3torchconnector._s3client import S3Client

        cfg = s3torchconnector.S3ClientConfig(force_path_style=True)
        return s3torchconnector, S3Client(spec["region"], endpoint=spec["endpoint"], s3client_config=cfg)
    import s3torch

    cfg = s3torch.S3ClientConfig(force_path_style=True)
    return s3torch, s3torch.S3Client(spec["region"], endpoint=spec["endpoint"], s3client_config=cfg)


def _dcp_io(spec: Dict[str, Any], kind: str) -> Any:
    """An S3StorageWriter / S3StorageReader of spec's tool for spec's checkpoint."""
    region, endpoint, uri = spec["region"], spec["endpoint"], spec["uri"]
    if spec["tool"] == REF:
        import s3torchconnector.dcp as ref_dcp
        from s3torchconnector import S3ClientConfig
        from s3torchconnector._s3client import S3Client

        cls = ref_dcp.S3StorageWriter if kind == "writer" else ref_dcp.S3StorageReader
        io = cls(region, uri, s3client_config=S3ClientConfig(force_path_style=True))
        io.fs._client = S3Client(
            region, endpoint=endpoint, s3client_config=S3ClientConfig(force_path_style=True)
        )
        return io
    if spec["tool"] == "fsspec":
        from torch.distributed.checkpoint._fsspec_filesystem import FsspecReader, FsspecWriter

        # torch's own fsspec storage over s3fs, with the endpoint and keys given as s3fs takes them.
        opts = {
            "endpoint_url": endpoint,
            "key": spec["access"],
            "secret": spec["secret"],
            "client_kwargs": {"region_name": region},
        }
        if kind == "writer":
            return FsspecWriter(uri, **opts)
        return FsspecReader(uri, **opts)
    import s3torch.dcp as dcp_mod
    from s3torch import S3ClientConfig

    cls = dcp_mod.S3StorageWriter if kind == "writer" else dcp_mod.S3StorageReader
    return cls(region, uri, s3client_config=S3ClientConfig(force_path_style=True), endpoint=endpoint)


def _curl(spec: Dict[str, Any], streams: int) -> int:
    """The whole object through curl (SigV4), in ``streams`` parallel ranges, to /dev/null."""
    size = spec["size"]
    url = f"{spec['endpoint']}/{spec['bucket']}/{spec['key']}"
    sign = ["--aws-sigv4", f"aws:amz:{spec['region']}:s3", "--user", f"{spec['access']}:{spec['secret']}"]
    step = -(-size // streams)
    procs = []
    for i in range(streams):
        lo, hi = i * step, min(size, (i + 1) * step) - 1
        cmd = ["curl", "-sSf", *sign, "-o", "/dev/null", "-w", "%{size_download}", "-r", f"{lo}-{hi}", url]
        procs.append(subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True))
    got = 0
    for p in procs:
        out, _ = p.communicate(timeout=600)
        if p.returncode != 0:
            raise RuntimeError(f"curl failed ({p.returncode})")
        got += int(float(out.strip() or 0))
    return got


def child(spec: Dict[str, Any]) -> Dict[str, Any]:
    warnings.filterwarnings("ignore")
    op, tool = spec["op"], spec["tool"]
    result: Dict[str, Any] = {"pid": os.getpid()}
    run: Callable[[], Any]
    check: Callable[[Any], bool]
    if op in ("read", "readinto", "random"):
        size, bucket, key = spec["size"], spec["bucket"], spec["key"]
        if tool.startswith("curl"):
            streams = int(tool.split("-")[1])
            run = lambda: _curl(spec, streams)  # noqa: E731
            check = lambda n: n == size  # noqa: E731 - curl's bytes are counted, not hashed
            result["bytes"] = size
        elif tool == "boto3":
            import boto3
            from botocore.config import Config

            b3 = boto3.client(
                "s3",
                endpoint_url=spec["endpoint"],
                region_name=spec["region"],
                aws_access_key_id=spec["access"],
                aws_secret_access_key=spec["secret"],
                config=Config(s3={"addressing_style": "path"}),
            )
            if op == "read":
                run = lambda: b3.get_object(Bucket=bucket, Key=key)["Body"].read()  # noqa: E731
            else:

                def run() -> Any:
                    return [
                        b3.get_object(Bucket=bucket, Key=key, Range=f"bytes={o}-{o + MiB - 1}")["Body"].read()
                        for o in spec["offsets"]
                    ]

        else:
            lib, client = _clients(spec)
            if op == "read":
                run = lambda: client.get_object(bucket, key).read()  # noqa: E731
            elif op == "readinto":
                dest = bytearray(size)
                dest[::4096] = b"\1" * len(dest[::4096])  # pages touched before the clock starts

                def run() -> Any:
                    n = client.get_object(bucket, key).readinto(dest)
                    return dest if n == size else b""

            else:

                def run() -> Any:
                    ctor = lib.S3ReaderConstructor.range_based(buffer_size=0)
                    reader = client.get_object(bucket, key, reader_constructor=ctor)
                    out = []
                    for o in spec["offsets"]:
                        reader.seek(o)
                        out.append(reader.read(MiB))
                    return out

        if not tool.startswith("curl"):

            def check(got: Any) -> bool:
                h = hashlib.sha256()
                for piece in got if isinstance(got, list) else [got]:
                    h.update(piece)
                return h.hexdigest() == spec["sha256"]

            result["bytes"] = size if op != "random" else MiB * len(spec["offsets"])
    elif op == "save":
        import torch.distributed.checkpoint as dcp

        from s3torch.demo import tensor_bytes

        state = build(spec["shape"], spec["size_gb"] * GB, spec["seed"])
        result["bytes"] = tensor_bytes(state)
        if tool == "raw":
            lib, client = _clients(dict(spec, tool="s3torch"))
            block = os.urandom(64 * MiB)

            def run() -> Any:
                with client.put_object(spec["bucket"], spec["key"]) as w:
                    left = result["bytes"]
                    while left:
                        n = min(left, len(block))
                        w.write(memoryview(block)[:n])
                        left -= n
                return client.head_object(spec["bucket"], spec["key"]).size

            check = lambda n: n == result["bytes"]  # noqa: E731
        else:
            writer = _dcp_io(spec, "writer")
            run = lambda: dcp.save(state, storage_writer=writer)  # noqa: E731
            check = lambda _: True  # noqa: E731 - the load cases read (and check) what this wrote
            result["checked_by"] = "the load cases"
    elif op in ("torch.save", "torch.load"):
        import torch

        from s3torch.demo import tensor_bytes, verify

        lib = _clients(spec)[0]
        cfg = lib.S3ClientConfig(force_path_style=True)
        checkpoint = lib.S3Checkpoint(spec["region"], endpoint=spec["endpoint"], s3client_config=cfg)
        state = build(spec["shape"], spec["size_gb"] * GB, spec["seed"])
        result["bytes"] = tensor_bytes(state)
        if op == "torch.save":

            def run() -> Any:
                with checkpoint.writer(spec["uri"]) as w:
                    torch.save(state, w)

            check = lambda _: True  # noqa: E731 - ckpt/torch.load reads (and checks) s3torch's file
            result["checked_by"] = "ckpt/torch.load"
        else:

            def run() -> Any:
                with checkpoint.reader(spec["uri"]) as r:
                    return torch.load(r, weights_only=True)

            def check(got: Any) -> bool:
                try:
                    return verify(state, got) > 0
                except AssertionError:  # a value differs
                    return False

    else:  # load
        import torch.distributed.checkpoint as dcp

        from s3torch.demo import partial_keys, tensor_bytes, verify, zeros_like_state

        structure = build(spec["shape"], spec["size_gb"] * GB, spec["seed"], meta=True)
        keep = None
        if spec["scope"] == "partial-10%":
            keep = partial_keys(structure, 0.10)
        elif spec["scope"] == "spread":
            keep = spread_keys(structure, 10)

        from _common import materialize

        dest = materialize(zeros_like_state(structure, keep), touch=spec["scope"] != "full-fresh")
        result["bytes"] = tensor_bytes(dest)
        reader = _dcp_io(spec, "reader")
        run = lambda: dcp.load(dest, storage_reader=reader)  # noqa: E731

        def check(_: Any) -> bool:
            expected = build(spec["shape"], spec["size_gb"] * GB, spec["seed"])
            return verify(expected, dest) > 0

    base_rss = _rss()
    c0, t0 = _cpu(), time.perf_counter()
    got = run()
    seconds, cpu = time.perf_counter() - t0, _cpu() - c0
    peak = _peak_rss()
    stats = getattr(locals().get("reader"), "last_load_stats", None)
    if stats is not None and getattr(stats, "bytes_fetched", None) is not None:
        result["fetched"] = stats.bytes_fetched
    result.update(seconds=seconds, cpu=cpu, rss_above=max(0, peak - base_rss), ok=bool(check(got)))
    return result


# ---- parent ---------------------------------------------------------------------------------------


# Imported once by the case server, before it forks: a fresh interpreter per case spent some seconds
# importing these (torch alone 2 s), which made the whole quick run about importing.
PRELOAD = (
    "torch",
    "torch.distributed.checkpoint",
    "torch.distributed.checkpoint._fsspec_filesystem",
    "s3torch",
    "s3torch.dcp",
    "s3torch.demo",
    "s3torchconnector",
    "s3torchconnector.dcp",
    "s3torchconnector._s3client",
    "s3fs",
    "boto3",
    "_common",
)


def serve() -> None:
    """The case server: imports PRELOAD, then runs each spec read from stdin in a process of its own,
    forked from this one, so that every case still has a fresh process (its own clients, CPU time and
    RSS high-water mark). Writes exactly one "RESULT json" or "ERROR json" line per spec."""
    import gc
    import importlib
    import tempfile

    warnings.filterwarnings("ignore")
    # numpy's OpenBLAS starts a worker thread when loaded; the cases do no BLAS work.
    os.environ["OPENBLAS_NUM_THREADS"] = "1"
    # The answers get a descriptor of their own: what imports print goes to stderr, not into them.
    answers = os.fdopen(os.dup(1), "w", buffering=1)
    os.dup2(2, 1)
    for name in PRELOAD:
        try:
            importlib.import_module(name)
        except Exception:  # noqa: BLE001 - a tool that does not import is not measured (its cases fail)
            pass
    threads = len(os.listdir("/proc/self/task"))
    if threads != 1:  # a fork copies only the calling thread: another one's locks could never be released
        sys.exit(f"case server: {threads} threads after the imports, cannot fork safely")
    # What exists now is never collected again: a collection inside a case would write to every
    # page of this heap that the case shares, copying them in its measured time.
    gc.collect()
    gc.freeze()
    for line in sys.stdin:
        spec = json.loads(line)
        with tempfile.TemporaryFile() as log, tempfile.TemporaryFile() as result:
            pid = os.fork()
            if pid == 0:
                os.dup2(log.fileno(), 1)
                os.dup2(log.fileno(), 2)
                code = 1
                try:
                    result.write(json.dumps(child(spec)).encode())
                    result.flush()
                    code = 0
                except BaseException:
                    import traceback

                    traceback.print_exc()
                finally:
                    sys.stdout.flush()
                    sys.stderr.flush()
                    os._exit(code)
            _, status = os.waitpid(pid, 0)
            result.seek(0)
            got = result.read().decode()
            log.seek(0)
            text = log.read().decode(errors="replace")[-6000:]
        if status == 0 and got:
            answers.write(f"RESULT {got}\n")
        else:
            answers.write("ERROR " + json.dumps(f"exit status {status}\n{text}") + "\n")


class CaseRunner:
    """Runs specs through a case server (see serve), each with a time limit."""

    def __init__(self, env: Dict[str, str], timeout: float = 900) -> None:
        self.timeout = timeout
        self.proc = subprocess.Popen(
            [sys.executable, __file__, "--serve"],
            env=env,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
            start_new_session=True,  # its process group holds the case process too: one kill stops both
        )

    def run(self, spec: Dict[str, Any]) -> Dict[str, Any]:
        import select

        assert self.proc.stdin is not None and self.proc.stdout is not None
        self.proc.stdin.write(json.dumps(spec) + "\n")
        self.proc.stdin.flush()
        what = f"{spec['op']} {spec['tool']}"
        if not select.select([self.proc.stdout], [], [], self.timeout)[0]:
            self.close(kill=True)
            raise RuntimeError(f"{what}: no result within {self.timeout:.0f} s")
        line = self.proc.stdout.readline()  # the server's one answer to this spec
        if line.startswith("RESULT "):
            return dict(json.loads(line[len("RESULT ") :]))
        if line.startswith("ERROR "):
            raise RuntimeError(f"{what} failed: {json.loads(line[len('ERROR ') :])}")
        self.close(kill=True)
        raise RuntimeError(f"{what}: the case server exited or answered {line!r} ({self.proc.returncode})")

    def close(self, kill: bool = False) -> None:
        """Ends the server: at the end of its input, or (kill, a crash, or if that takes long) by
        killing its process group, which also holds a case process it may have left behind."""
        assert self.proc.stdin is not None
        if not kill:
            try:
                self.proc.stdin.close()
                if self.proc.wait(timeout=10) == 0:
                    return
            except (OSError, subprocess.TimeoutExpired):
                pass
        try:
            os.killpg(self.proc.pid, 9)
        except ProcessLookupError:
            pass
        self.proc.wait()


def have_fsspec() -> bool:
    try:
        import s3fs  # noqa: F401
    except ImportError:
        print("s3fs not installed: the fsspec columns are skipped", file=sys.stderr)
        return False
    return True


def plan(args: argparse.Namespace, have_ref: bool) -> List[Tuple[str, str, str, Dict[str, Any]]]:
    """(case, data, tool, spec) in run order: saves first, since the loads read what they wrote."""
    refs = [REF] if have_ref else []
    fsspec = ["fsspec"] if have_fsspec() else []
    have_curl = shutil.which("curl") is not None
    out: List[Tuple[str, str, str, Dict[str, Any]]] = []
    for shape in ("mixed", "fp32"):
        for tool in ["s3torch", *refs, *fsspec, "raw"]:
            prefix = f"ckpt-{shape}-by-{tool}"
            out.append(
                ("dcp/save", shape, tool, {"op": "save", "shape": shape, "prefix": prefix, "key": prefix})
            )
    for scope in ("full", "partial-10%", "spread", "full-fresh"):
        for shape in ("mixed", "fp32"):
            # Into untouched memory: which library wrote the checkpoint changes nothing there. --quick
            # loads only s3torch's checkpoints (every case and tool still runs, in about a minute).
            both = scope != "full-fresh" and not args.quick
            for writer in ["s3torch", *refs] if both else ["s3torch"]:
                data = f"{shape}, saved by {writer}"
                for tool in ["s3torch", *refs, *fsspec]:
                    spec = {
                        "op": "load",
                        "scope": scope,
                        "shape": shape,
                        "prefix": f"ckpt-{shape}-by-{writer}",
                    }
                    out.append((f"dcp/{scope}", data, tool, spec))
    for tool in ["s3torch", *refs]:
        spec = {"op": "torch.save", "shape": "mixed", "key": f"ckpt-by-{tool}.pt"}
        out.append(("ckpt/torch.save", "mixed", tool, spec))
    for tool in ["s3torch", *refs]:
        spec = {"op": "torch.load", "shape": "mixed", "key": "ckpt-by-s3torch.pt"}
        out.append(("ckpt/torch.load", "mixed, saved by s3torch", tool, spec))
    curls = ["curl-1", "curl-4"] if have_curl else []
    for tool in ["s3torch", *refs, "boto3", *curls]:
        out.append(("read/read", "object", tool, {"op": "read"}))
    for tool in ["s3torch", *refs]:
        out.append(("read/readinto", "object", tool, {"op": "readinto"}))
    for tool in ["s3torch", *refs, "boto3"]:
        out.append(("read/random-1MiB", "object", tool, {"op": "random"}))
    return out


def summarize(rows: List[Dict[str, Any]]) -> List[Dict[str, Any]]:
    """Medians per (case, data, tool), with the ratio to s3torchconnector's median."""
    groups: Dict[Tuple[str, str, str], List[Dict[str, Any]]] = {}
    for r in rows:
        groups.setdefault((r["case"], r["data"], r["tool"]), []).append(r)
    out = []
    for (case, data, tool), runs in groups.items():
        secs = statistics.median(r["seconds"] for r in runs)
        nbytes = runs[0]["bytes"]
        fetched = runs[0].get("fetched")
        out.append(
            {
                "case": case,
                "data": data,
                "tool": tool,
                "runs": len(runs),
                "seconds": secs,
                "all_seconds": [r["seconds"] for r in runs],
                "bytes": nbytes,
                "gbps": nbytes / secs / GB,
                "cpu_s": statistics.median(r["cpu"] for r in runs),
                "cpu_s_per_gb": statistics.median(r["cpu"] for r in runs) / (nbytes / GB),
                "rss_above_mb": max(r["rss_above"] for r in runs) / 1e6,
                "fetched_gb": None if fetched is None else fetched / GB,
                "ok": all(r["ok"] for r in runs),
            }
        )
    ref = {(s["case"], s["data"]): s["seconds"] for s in out if s["tool"] == REF}
    for s in out:
        base = ref.get((s["case"], s["data"]))
        s["vs_ref"] = None if base is None else base / s["seconds"]
    return out


def markdown(summary: List[Dict[str, Any]], machine: str) -> str:
    lines = [
        f"Machine: {machine}",
        "",
        "| case | data | tool | median s | GB/s | vs s3torchconnector | CPU s/GB | peak +RSS MB "
        "| fetched GB | check |",
        "| --- | --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | --- |",
    ]
    for s in summary:
        vs = "" if s["vs_ref"] is None else f"{s['vs_ref']:.2f}x"
        fetched = "" if s["fetched_gb"] is None else f"{s['fetched_gb']:.3f}"
        lines.append(
            f"| {s['case']} | {s['data']} | {s['tool']} | {s['seconds']:.3f} | {s['gbps']:.2f} | {vs} | "
            f"{s['cpu_s_per_gb']:.2f} | {s['rss_above_mb']:.0f} | {fetched} | "
            f"{'ok' if s['ok'] else 'WRONG'} |"
        )
    return "\n".join(lines) + "\n"


def chart(summary: List[Dict[str, Any]], path: Path, machine: str) -> bool:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print(
            "matplotlib not installed (S3TORCH_EXTRAS=test,dcp,bench ./scripts/setup.sh): no chart",
            file=sys.stderr,
        )
        return False
    groups = list(dict.fromkeys((s["case"], s["data"]) for s in summary))
    tools = list(dict.fromkeys(s["tool"] for s in summary))
    by = {(s["case"], s["data"], s["tool"]): s["gbps"] for s in summary}
    height = 0.8 / len(tools)
    fig, ax = plt.subplots(figsize=(12.5, 0.42 * len(groups) + 1.8))
    for i, tool in enumerate(tools):
        ys = [g - 0.4 + height * (i + 0.5) for g in range(len(groups))]
        xs = [by.get((c, d, tool), 0.0) for c, d in groups]
        ax.barh(ys, xs, height=height, label=tool)
    ax.set_yticks(range(len(groups)))
    ax.set_yticklabels([f"{c}  ({d})" for c, d in groups], fontsize=8)
    ax.invert_yaxis()
    ax.set_xlabel("GB/s (bytes the case needs / median seconds; higher is better)")
    ax.set_title(f"s3torch benchmark suite, one local SeaweedFS\n{machine}", fontsize=9)
    ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    ax.grid(axis="x", alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    return True


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument(
        "--quick", action="store_true", help="0.1 GB, one run each, loads of s3torch's checkpoints only"
    )
    ap.add_argument("--size-gb", type=float, default=None, help="object and checkpoint size (default 1.0)")
    ap.add_argument("--repeat", type=int, default=None, help="runs per case (default 3)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", type=Path, default=Path("bench/results"))
    ap.add_argument("--only", default=None, help="only cases whose name starts with this (read/: no DCP)")
    ap.add_argument("--replot", action="store_true", help="redraw the chart and table from --out's JSON")
    ap.add_argument("--serve", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.serve:
        serve()
        return
    if args.replot:
        saved = json.loads((args.out / "results.json").read_text())
        (args.out / "results.md").write_text(markdown(saved["summary"], saved["machine"]))
        chart(saved["summary"], args.out / "chart.png", saved["machine"])
        return
    size_gb = args.size_gb or (0.1 if args.quick else 1.0)
    repeat = args.repeat or (1 if args.quick else 3)

    from s3torch.testing import start_seaweedfs, unique_bucket_name

    try:
        import s3torchconnector  # noqa: F401

        have_ref = True
    except ImportError:
        have_ref = False
        print("s3torchconnector not installed: its columns are skipped", file=sys.stderr)
    machine = (
        f"{platform.machine()}, {os.cpu_count()} CPUs shared with the server, "
        f"Python {platform.python_version()}, "
        f"{size_gb:g} GB objects and checkpoints, median of {repeat}"
    )
    cases = [c for c in plan(args, have_ref) if not args.only or c[0].startswith(args.only)]
    args.out.mkdir(parents=True, exist_ok=True)
    rows: List[Dict[str, Any]] = []
    with start_seaweedfs() as server:
        env = dict(os.environ, **server.env())
        os.environ.update(server.env())
        bucket = server.create_bucket(unique_bucket_name("bench"))
        size = int(size_gb * GB)
        blob = os.urandom(size)
        key = "object"
        import s3torch

        ours = s3torch.S3Client(
            server.region,
            endpoint=server.endpoint,
            s3client_config=s3torch.S3ClientConfig(force_path_style=True),
        )
        with ours.put_object(bucket, key) as w:  # multipart, as the objects users read were written
            w.write(blob)
        offsets = random_offsets(size, 200, args.seed)
        common = {
            "region": server.region,
            "endpoint": server.endpoint,
            "access": server.access_key,
            "secret": server.secret_key,
            "bucket": bucket,
            "seed": args.seed,
            "size_gb": size_gb,
        }
        hashes = {
            "read": hashlib.sha256(blob).hexdigest(),
            "random": hashlib.sha256(b"".join(blob[o : o + MiB] for o in offsets)).hexdigest(),
        }
        hashes["readinto"] = hashes["read"]
        del blob
        runner = CaseRunner(env)
        try:
            for case, data, tool, spec in cases:
                spec = dict(common, **spec, tool=tool)
                if spec["op"] in hashes:
                    spec.update(key=key, size=size, sha256=hashes[spec["op"]])
                    if spec["op"] == "random":
                        spec["offsets"] = offsets
                if spec["op"] in ("save", "load"):
                    spec["uri"] = f"s3://{bucket}/{spec['prefix']}"
                elif spec["op"] in ("torch.save", "torch.load"):
                    spec["uri"] = f"s3://{bucket}/{spec['key']}"
                for i in range(repeat):
                    r = runner.run(spec)
                    r.update(case=case, data=data, tool=tool)
                    rows.append(r)
                    flag = "" if r["ok"] else "  WRONG RESULT"
                    print(
                        f"{case:<18} {data:<30} {tool:<17} run {i + 1}: {r['seconds']:.3f} s{flag}",
                        file=sys.stderr,
                    )
        finally:
            runner.close()
    summary = summarize(rows)
    (args.out / "results.json").write_text(
        json.dumps({"machine": machine, "summary": summary, "runs": rows}, indent=1)
    )
    table = markdown(summary, machine)
    (args.out / "results.md").write_text(table)
    drew = chart(summary, args.out / "chart.png", machine)
    print(table)
    print(f"written: {args.out}/results.json, results.md" + (", chart.png" if drew else ""))
    if not all(s["ok"] for s in summary):
        sys.exit("some results were wrong")


if __name__ == "__main__":
    main()
