"""PyTorch Distributed Checkpoint (DCP) storage on S3.

``S3StorageWriter`` / ``S3StorageReader`` are torch's ``FileSystemWriter`` / ``FileSystemReader``
with an S3 ``FileSystemBase`` underneath, so the checkpoint layout (``__{rank}_{n}.distcp`` objects
plus ``.metadata``) and the planning contract are torch's own. What changes:

* the writer only makes ``.metadata`` visible once every rank's data objects are complete (an old
  one is removed before any data is written), so a failed save never leaves a loadable checkpoint;
* the reader, with the default ``dcp_optimized()`` constructor, loads the whole plan concurrently
  (see ``_concurrent``) instead of one file and one item after another;
* both keep statistics of their last call (``last_save_stats`` / ``last_load_stats``).
"""

from __future__ import annotations

import dataclasses
import io
import logging
import os
import posixpath
import threading
import time
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Generator, List, Optional, Union

import torch
from torch.distributed.checkpoint.filesystem import (
    FileSystemBase,
    FileSystemReader,
    FileSystemWriter,
    SerializationFormat,
)
from torch.distributed.checkpoint.planner import LoadPlan, LoadPlanner, SavePlan, SavePlanner
from torch.distributed.checkpoint.storage import WriteResult
from torch.futures import Future

from .._client import S3Client
from .._config import S3ClientConfig
from .._dataset_common import parse_s3_uri
from .._exceptions import S3Exception, S3NotFoundError
from .._user_agent import UserAgent
from ..gpu import CopierFactory
from ..s3reader import (
    DCPOptimizedConstructor,
    DCPS3ReaderConstructorProtocol,
    ItemRange,
    S3ReaderConstructor,
    S3ReaderConstructorProtocol,
    coalesce_ranges,
)
from . import _dedupe, _stats
from ._concurrent import DEFAULT_DIRECT_MIN, DEFAULT_SPLIT_BYTES, ConcurrentPlanLoader
from ._save import write_files
from ._sizing import default_max_streams, part_size_of
from ._stats import LoadStats, SaveStats
from .s3_prefix_strategy import DefaultPrefixStrategy, S3PrefixStrategyBase

log = logging.getLogger(__name__)

__all__ = ["S3FileSystem", "S3StorageWriter", "S3StorageReader", "StorageMetadata", "parse_s3_uri"]

PathLike = Union[str, os.PathLike]
_DELETE_ATTEMPTS = 3


def _path_str(path: PathLike) -> str:
    return path if isinstance(path, str) else os.fspath(path)


def _user_agent(reader_constructor: Optional[Any]) -> UserAgent:
    kind = S3ReaderConstructor.get_reader_type_string(reader_constructor)
    return UserAgent(["dcp", torch.__version__, f"md/reader_type#{kind}"])


class S3FileSystem(FileSystemBase):
    """torch's ``FileSystemBase`` over S3: paths are ``s3://bucket/key`` URIs.

    Args:
        region: the bucket's region.
        s3_client: a client to use instead of creating one.
        s3client_config: settings of the client created here.
        reader_constructor: how ``create_stream(path, "rb")`` reads objects (default: sequential).
        endpoint: an S3-compatible endpoint URL (None: AWS).
    """

    def __init__(
        self,
        region: Optional[str],
        s3_client: Optional[S3Client] = None,
        s3client_config: Optional[S3ClientConfig] = None,
        reader_constructor: Optional[S3ReaderConstructorProtocol] = None,
        endpoint: Optional[str] = None,
    ) -> None:
        self._path: PathLike = ""
        self._reader_constructor = reader_constructor or S3ReaderConstructor.default()
        self._client = s3_client or S3Client(
            region,
            endpoint=endpoint,
            user_agent=_user_agent(self._reader_constructor),
            s3client_config=s3client_config,
        )
        # Exceptions raised inside write streams since the last reset (see S3StorageWriter).
        self._write_failures: List[BaseException] = []
        self._failures_lock = threading.Lock()

    @property
    def client(self) -> S3Client:
        return self._client

    @contextmanager
    def create_stream(self, path: PathLike, mode: str) -> Generator[io.IOBase, None, None]:
        """A writer ("wb": the object appears only if the block completes) or a reader ("rb")."""
        bucket, key = parse_s3_uri(_path_str(path))
        if mode == "wb":
            log.debug("create_stream wb s3://%s/%s", bucket, key)
            try:
                with self._client.put_object(bucket, key) as stream:
                    yield stream
            except BaseException as e:
                # torch's writer threads drop their exceptions; remember them for write_data.
                with self._failures_lock:
                    self._write_failures.append(e)
                raise
        elif mode == "rb":
            log.debug("create_stream rb s3://%s/%s", bucket, key)
            with self._client.get_object(bucket, key, reader_constructor=self._reader_constructor) as stream:
                yield stream
        else:
            raise ValueError(f"Invalid mode={mode!r}: create_stream supports 'rb' (read) and 'wb' (write)")

    def concat_path(self, path: PathLike, suffix: str) -> str:
        return posixpath.join(_path_str(path), suffix)

    def init_path(self, path: PathLike) -> PathLike:
        self._path = path
        return path

    def rename(self, old_path: PathLike, new_path: PathLike) -> None:
        """Copy then delete (S3 has no rename); the delete is retried."""
        path = old_path
        old_bucket, old_key = parse_s3_uri(_path_str(path))
        new_bucket, new_key = parse_s3_uri(_path_str(new_path))
        if old_bucket != new_bucket:
            raise ValueError(
                f"rename within one bucket only: {old_bucket!r} -> {new_bucket!r} "
                "(cross-bucket renames are not supported)"
            )
        self._client.copy_object(old_bucket, old_key, new_bucket, new_key)
        for attempt in range(1, _DELETE_ATTEMPTS + 1):
            try:
                self._client.delete_object(old_bucket, old_key)
                return
            except S3Exception:
                if attempt == _DELETE_ATTEMPTS:
                    raise
                log.warning("rename: deleting s3://%s/%s failed, retrying", old_bucket, old_key)
                time.sleep(0.2 * 2**attempt)

    def mkdir(self, path: PathLike) -> None:
        """S3 has no directories: nothing to do."""

    def exists(self, path: PathLike) -> bool:
        bucket, key = parse_s3_uri(_path_str(path))
        try:
            self._client.head_object(bucket, key)
        except S3NotFoundError:
            return False
        return True

    def rm_file(self, path: PathLike) -> None:
        """Deletes the object; a missing object is not an error."""
        bucket, key = parse_s3_uri(_path_str(path))
        try:
            self._client.delete_object(bucket, key)
        except S3NotFoundError:
            pass

    @classmethod
    def validate_checkpoint_id(cls, checkpoint_id: PathLike) -> bool:
        if isinstance(checkpoint_id, Path):
            return True  # as s3torchconnector: DCP may hand over Path objects it made from ours
        try:
            parse_s3_uri(_path_str(checkpoint_id))
        except (ValueError, TypeError):
            return False
        return True

    # ---- failure bookkeeping for S3StorageWriter ------------------------------------------------

    def _take_write_failures(self) -> List[BaseException]:
        with self._failures_lock:
            failures, self._write_failures = self._write_failures, []
        return failures


@dataclass
class StorageMetadata:
    """Per-rank storage data of a save plan: the key prefix of the rank's objects."""

    prefix: str


class _OnS3FileSystem:
    """What the storage writer and reader share: their ``fs`` is an S3FileSystem."""

    fs: Any

    @classmethod
    def validate_checkpoint_id(cls, checkpoint_id: PathLike) -> bool:
        return S3FileSystem.validate_checkpoint_id(checkpoint_id)

    @property
    def _s3fs(self) -> S3FileSystem:
        return self.fs  # type: ignore[no-any-return]


class S3StorageWriter(_OnS3FileSystem, FileSystemWriter):
    """Saves DCP checkpoints to ``s3://bucket/prefix``.

    Args:
        region: the bucket's region.
        path: the checkpoint location, ``s3://bucket/prefix``.
        s3client_config: client settings (part size, memory limit, ...).
        prefix_strategy: how ranks' object keys are prefixed (default ``__{rank}_``).
        thread_count: upload threads per rank (each writes its own object).
        endpoint: an S3-compatible endpoint URL (None: AWS).
        kwargs: passed to torch's ``FileSystemWriter`` (``single_file_per_rank``, ``overwrite``).

    ``.metadata`` becomes visible only after every data object of every rank is complete; an
    existing one is deleted before any data is written. ``last_save_stats`` describes the last save.
    """

    def __init__(
        self,
        region: Optional[str],
        path: str,
        s3client_config: Optional[S3ClientConfig] = None,
        prefix_strategy: Optional[S3PrefixStrategyBase] = None,
        thread_count: int = 1,
        endpoint: Optional[str] = None,
        **kwargs: Any,
    ) -> None:
        # fsync has no meaning for S3 objects; S3Writer.close is the durability point.
        kwargs.pop("sync_files", None)
        super().__init__(path=path, sync_files=False, thread_count=thread_count, **kwargs)
        s3client_config = _with_memory_limit(s3client_config or S3ClientConfig(), SAVE_PARTS_PER_10_GBPS)
        self.fs = S3FileSystem(region, s3client_config=s3client_config, endpoint=endpoint)  # type: ignore[assignment]
        self.path = self.fs.init_path(path)
        self.prefix_strategy = prefix_strategy or DefaultPrefixStrategy()
        self.last_save_stats: Optional[SaveStats] = None

    def prepare_local_plan(self, plan: SavePlan) -> SavePlan:
        plan = super().prepare_local_plan(plan)
        if self.rank is not None and not self.use_collectives:
            # No global plan step: every rank names its own objects.
            plan = dataclasses.replace(plan, storage_data=StorageMetadata(self.prefix_strategy(self.rank)))
        return plan

    def prepare_global_plan(self, plans: List[SavePlan]) -> List[SavePlan]:
        # Runs before any rank writes data: drop the metadata of an earlier checkpoint at this path,
        # so that a save failing halfway cannot leave old metadata pointing at half-new objects.
        self._remove_metadata()
        if self.rank is not None and not self.use_collectives:
            return plans  # prefixes set per rank in prepare_local_plan
        return [
            dataclasses.replace(plan, storage_data=StorageMetadata(self.prefix_strategy(idx)))
            for idx, plan in enumerate(plans)
        ]

    def _remove_metadata(self) -> None:
        rank = self.rank if (self.rank is not None and not self.use_collectives) else None
        path = self._get_metadata_path(rank)
        if self.fs.exists(path):
            log.info("Removing %s of an earlier checkpoint before saving", path)
            self.fs.rm_file(path)

    def write_data(self, plan: SavePlan, planner: SavePlanner) -> Future[List[WriteResult]]:
        t0 = time.perf_counter()
        before = _stats.client_counters(self._s3fs.client)
        self._s3fs._take_write_failures()
        if not self.transforms.extensions and self.serialization_format == SerializationFormat.TORCH_SAVE:
            fut: Future[List[WriteResult]] = Future()
            try:
                written = write_files(
                    plan,
                    planner,
                    self.fs.create_stream,
                    self.fs.concat_path,
                    self.path,
                    self.thread_count,
                    self.single_file_per_rank,
                    self.per_thread_copy_ahead,
                )
            except BaseException:
                self._s3fs._take_write_failures()  # raised here: keep no copy for the next save
                raise
            fut.set_result(written)
        else:  # stream extensions or another format: torch's own writer
            fut = super().write_data(plan, planner)
        results: List[WriteResult] = fut.wait()
        failures = self._s3fs._take_write_failures()
        if failures:
            # A writer thread failed (torch only logs those): the save must fail before finish.
            raise failures[0]
        written = {r.index for r in results}
        missing = [item.index for item in plan.items if item.index not in written]
        if missing:
            raise RuntimeError(
                f"DCP save to {self.path}: {len(missing)} of {len(plan.items)} items were not "
                f"written (first: {missing[0]}); a writer thread failed, see the log"
            )
        after = _stats.client_counters(self._s3fs.client)
        stats = SaveStats(
            files=len({r.storage_data.relative_path for r in results}),
            items=len(results),
            bytes_written=_stats.counter_delta(before, after, _stats.BYTES_UPLOADED)
            or sum(r.storage_data.length for r in results),
            put_objects=_stats.counter_delta(before, after, _stats.PUT_STREAMS) or 0,
            put_requests=_stats.counter_delta(before, after, _stats.HTTP_REQUESTS),
            retries=_stats.counter_delta(before, after, _stats.RETRIES),
            seconds=time.perf_counter() - t0,
        )
        self.last_save_stats = stats
        log.info("%s", stats.summary())
        return fut

    def finish(self, metadata: Any, results: List[List[WriteResult]]) -> None:
        t0 = time.perf_counter()
        before = _stats.client_counters(self._s3fs.client)
        super().finish(metadata, results)
        after = _stats.client_counters(self._s3fs.client)
        stats = self.last_save_stats or SaveStats()
        stats.bytes_written += _stats.counter_delta(before, after, _stats.BYTES_UPLOADED) or 0
        stats.put_objects += _stats.counter_delta(before, after, _stats.PUT_STREAMS) or 0
        requests = _stats.counter_delta(before, after, _stats.HTTP_REQUESTS)
        if requests is not None:
            stats.put_requests = (stats.put_requests or 0) + requests
        stats.seconds += time.perf_counter() - t0
        self.last_save_stats = stats
        log.info("DCP save finished: metadata written to %s", self._get_metadata_path())


# Part buffers a concurrent load keeps in flight per 10 Gbps of throughput target, when the user sets
# no memory limit. The CRT's default (GiBs) buys nothing for a DCP load: on this project's benchmark
# 12 parts (96 MiB) load as fast as 2 GiB, and every pool byte is resident memory beside the
# destination state_dict. Raise memory_limit_bytes for hosts with more network than that.
LOAD_PARTS_PER_10_GBPS = 12
# The same for a save's uploads. With the CRT's default (2 GiB) a save runs ahead of the network into
# fresh part buffers, up to the checkpoint's size: each one is page-faulted (and charged) once per
# writer. Bounded, the writer threads wait for parts to go out and reuse their buffers: a 0.5 GB
# save here took 0.75 CPU-s instead of 0.92 to 1.59 s, and 3.4 s instead of 3.8 to 4.2 s.
SAVE_PARTS_PER_10_GBPS = 16


def _with_memory_limit(config: S3ClientConfig, parts_per_10_gbps: int) -> S3ClientConfig:
    if config.memory_limit_bytes is not None:
        return config
    scale = max(1.0, config.throughput_target_gbps / 10.0)
    limit = int(parts_per_10_gbps * config.part_size * scale)
    return dataclasses.replace(config, memory_limit_bytes=limit)


class S3StorageReader(_OnS3FileSystem, FileSystemReader):
    """Loads DCP checkpoints from ``s3://bucket/prefix``.

    Args:
        region: the bucket's region.
        path: the checkpoint location, ``s3://bucket/prefix``.
        s3client_config: client settings (part size, memory limit, ...).
        reader_constructor: ``S3ReaderConstructor.dcp_optimized()`` (default), ``.sequential()`` or
            ``.range_based()``. With ``dcp_optimized`` the whole plan is loaded concurrently; the
            others go through torch's per-file loop.
        endpoint: an S3-compatible endpoint URL (None: AWS).
        max_streams: most range GETs in flight during a concurrent load (default: what the client's
            memory limit allows, at most 8; a larger request is capped to what the limit can feed).
        concurrent: False makes ``dcp_optimized`` go through torch's per-file loop with
            ``DCPOptimizedS3Reader`` (as s3torchconnector does), e.g. to compare the two.
        split_bytes: a concurrent load splits coalesced ranges longer than this at item
            boundaries, so that its streams share the work of one large file.
        direct_min_bytes: tensor items whose middle is at least this long are received straight
            into their destination (scattered GET streams, which need the bundled CRT); 0 copies
            every item from the part buffers.
        progress_callback: called with a byte count (from worker threads) as items complete during
            a concurrent load.
        dedupe: a concurrent load on every rank of the default process group (more than one)
            reads each stored item that several ranks need once (one owner per item, balanced by
            bytes) and broadcasts it to the others that need it; None (default): whenever that is
            the case, False: never. A load on one rank or on a subgroup never deduplicates.

    ``last_load_stats`` describes the last ``read_data``. The keyword settings are also attributes
    of the same names, which a later load reads.
    """

    def __init__(
        self,
        region: Optional[str],
        path: PathLike,
        s3client_config: Optional[S3ClientConfig] = None,
        reader_constructor: Optional[
            Union[S3ReaderConstructorProtocol, DCPS3ReaderConstructorProtocol]
        ] = None,
        endpoint: Optional[str] = None,
        *,
        max_streams: Optional[int] = None,
        concurrent: bool = True,
        split_bytes: int = DEFAULT_SPLIT_BYTES,
        direct_min_bytes: int = DEFAULT_DIRECT_MIN,
        progress_callback: Optional[Callable[[int], None]] = None,
        dedupe: Optional[bool] = None,
    ) -> None:
        super().__init__(path)
        self._reader_constructor = reader_constructor or S3ReaderConstructor.dcp_optimized()
        if concurrent and isinstance(self._reader_constructor, DCPOptimizedConstructor):
            s3client_config = _with_memory_limit(s3client_config or S3ClientConfig(), LOAD_PARTS_PER_10_GBPS)
        self.fs = S3FileSystem(  # type: ignore[assignment]
            region,
            s3client_config=s3client_config,
            reader_constructor=self._reader_constructor,
            endpoint=endpoint,
        )
        self.path = self.fs.init_path(path)
        self.sync_files = False
        if max_streams is not None and max_streams < 1:
            raise ValueError(f"max_streams must be at least 1, got {max_streams}")
        if split_bytes < 1:
            raise ValueError(f"split_bytes must be at least 1, got {split_bytes}")
        if direct_min_bytes < 0:
            raise ValueError(f"direct_min_bytes must not be negative, got {direct_min_bytes}")
        self.max_streams = max_streams
        self.concurrent = concurrent
        self.split_bytes = split_bytes
        self.direct_min_bytes = direct_min_bytes
        self.last_load_stats: Optional[LoadStats] = None
        self.progress_callback = progress_callback
        self.dedupe = dedupe
        # Who copies to device destinations: None is CUDA (s3torch.gpu.cuda_copier); tests set a fake device.
        self._device_copier: Optional[CopierFactory] = None

    def prepare_local_plan(self, plan: LoadPlan) -> LoadPlan:
        """Sorts the plan by storage offset; hands its byte ranges to a DCP reader constructor."""
        plan.items.sort(key=lambda item: self.storage_data[item.storage_index].offset)
        if isinstance(self._reader_constructor, DCPS3ReaderConstructorProtocol):
            self._reader_constructor.set_item_ranges_by_file(plan.items, self.storage_data, self.path)
        return plan

    def prepare_global_plan(self, plans: List[LoadPlan]) -> List[LoadPlan]:
        # Tells every rank (with its plan) how many ranks load together: deduplication runs only
        # when that is the whole default process group.
        plans = super().prepare_global_plan(plans)
        world = _dedupe.PlanWorld(len(plans))
        return [dataclasses.replace(p, storage_data=world) for p in plans]

    def read_data(self, plan: LoadPlan, planner: LoadPlanner) -> Future[None]:
        t0 = time.perf_counter()
        client = self._s3fs.client
        before = _stats.client_counters(client)
        if self.concurrent and isinstance(self._reader_constructor, DCPOptimizedConstructor):
            loader = ConcurrentPlanLoader(
                client=client,
                storage_data=self.storage_data,
                resolve_uri=lambda rel: parse_s3_uri(self.fs.concat_path(self.path, rel)),
                transforms=self.transforms,
                planner=planner,
                coalesce=coalesce_ranges,
                item_range=ItemRange,
                max_gap_size=self._reader_constructor.max_gap_size,
                max_streams=default_max_streams(client, self.max_streams),
                split_bytes=self.split_bytes,
                align_bytes=part_size_of(client),
                direct_min=self.direct_min_bytes,
                progress=self.progress_callback,
                device_copier=self._device_copier,
            )
            shared: Optional[_dedupe.SharedLoad] = None
            if _dedupe.enabled(self.dedupe, plan):
                shared = _dedupe.SharedLoad(
                    client=client,
                    storage_data=self.storage_data,
                    resolve_uri=lambda rel: parse_s3_uri(self.fs.concat_path(self.path, rel)),
                    apply=loader.load_from_bytes,
                )
                plan = shared.run(plan)  # what is left: the items only this rank needs
            stats = loader.run(plan)
            if shared is not None:
                stats.items += shared.stats.shared_items
                stats.bytes_needed += shared.stats.bytes_needed
                stats.bytes_from_peers = shared.stats.bytes_from_peers
        else:
            stats = self._plan_stats(plan)
            super().read_data(plan, planner)
        after = _stats.client_counters(client)
        fetched = _stats.counter_delta(before, after, _stats.BYTES_DOWNLOADED)
        if fetched is not None:
            stats.bytes_fetched = fetched
        gets = _stats.counter_delta(before, after, _stats.GET_STREAMS)
        if gets is not None:
            # Streams and GETs received straight into memory (range_based reads, large items) alike.
            stats.get_requests = gets + (_stats.counter_delta(before, after, _stats.DIRECT_GETS) or 0)
        stats.direct_bytes = _stats.counter_delta(before, after, _stats.SCATTER_BYTES) or 0
        stats.http_requests = _stats.counter_delta(before, after, _stats.HTTP_REQUESTS)
        stats.retries = _stats.counter_delta(before, after, _stats.RETRIES)
        stats.seconds = time.perf_counter() - t0
        self.last_load_stats = stats
        log.info("%s", stats.summary())
        fut: Future[None] = Future()
        fut.set_result(None)
        return fut

    def _plan_stats(self, plan: LoadPlan) -> LoadStats:
        stats = LoadStats(
            reader=S3ReaderConstructor.get_reader_type_string(self._reader_constructor),
            mode="per_file",
        )
        spans = {
            (md.relative_path, md.offset, md.length)
            for md in (self.storage_data[item.storage_index] for item in plan.items)
        }
        stats.files = len({s[0] for s in spans})
        stats.items = len(plan.items)
        stats.bytes_needed = sum(s[2] for s in spans)
        return stats
