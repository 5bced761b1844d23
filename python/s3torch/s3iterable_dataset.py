"""S3IterableDataset: an iterable-style dataset over S3 objects (s3torchconnector's API, plus a
deterministic per-epoch shuffle and reading ahead)."""

from __future__ import annotations

import logging
import random
from functools import partial
from typing import Any, Callable, Iterable, Iterator, List, Optional, Tuple, Union

import torch
import torch.utils.data

from ._client import S3Client
from ._config import S3ClientConfig
from ._dataset_common import (
    FETCH_BUDGET_BYTES,
    DatasetBase,
    S3BucketKeyData,
    get_objects_from_prefix,
    get_objects_from_uris,
    identity,
)
from .s3reader import S3Reader
from .s3reader.protocol import S3ReaderConstructorProtocol

log = logging.getLogger(__name__)

_DEFAULT_PREFETCH = 8


class S3IterableDataset(DatasetBase, torch.utils.data.IterableDataset):
    """An iterable-style dataset of S3 objects, yielding ``transform(reader)`` for each.

    Make one with ``from_prefix`` or ``from_objects``. The listing is streamed page by page. With
    ``enable_sharding``, objects are split over torch.distributed ranks and then over DataLoader workers:
    every object exactly once per epoch.

    Beyond the reference (keyword-only): ``shuffle=True`` orders the objects by a permutation of
    ``seed`` and the epoch (``set_epoch(n)`` before each epoch, as with DistributedSampler), the same on
    every rank, so sharded shuffled epochs still read each object once (it lists the whole prefix
    first). ``prefetch=N`` runs the transforms of up to N objects ahead of the consumer on threads
    (their listed sizes bounded by 16 MiB, at least one object); 1 reads one object after another.
    """

    _kind = "iterable"

    def __init__(
        self,
        region: Optional[str],
        get_dataset_objects: Callable[[S3Client], Iterable[S3BucketKeyData]],
        endpoint: Optional[str] = None,
        transform: Callable[[S3Reader], Any] = identity,
        s3client_config: Optional[S3ClientConfig] = None,
        enable_sharding: bool = False,
        reader_constructor: Optional[S3ReaderConstructorProtocol] = None,
        *,
        shuffle: bool = False,
        seed: int = 0,
        prefetch: int = _DEFAULT_PREFETCH,
    ) -> None:
        if prefetch < 1:
            raise ValueError(f"prefetch must be at least 1, got {prefetch}")
        self._init_common(
            region, get_dataset_objects, endpoint, transform, s3client_config, reader_constructor, prefetch
        )
        self._enable_sharding = enable_sharding
        self._shuffle = shuffle
        self._seed = seed
        self._epoch = 0
        self._prefetch = prefetch

    @classmethod
    def from_objects(
        cls,
        object_uris: Union[str, Iterable[str]],
        *,
        region: Optional[str],
        endpoint: Optional[str] = None,
        transform: Callable[[S3Reader], Any] = identity,
        s3client_config: Optional[S3ClientConfig] = None,
        enable_sharding: bool = False,
        reader_constructor: Optional[S3ReaderConstructorProtocol] = None,
        shuffle: bool = False,
        seed: int = 0,
        prefetch: int = _DEFAULT_PREFETCH,
    ) -> S3IterableDataset:
        """A dataset of the objects named by ``object_uris`` (``s3://bucket/key``, one or many)."""
        log.info("Building %s from_objects", cls.__name__)
        return cls(
            region,
            partial(get_objects_from_uris, object_uris),
            endpoint,
            transform=transform,
            s3client_config=s3client_config,
            enable_sharding=enable_sharding,
            reader_constructor=reader_constructor,
            shuffle=shuffle,
            seed=seed,
            prefetch=prefetch,
        )

    @classmethod
    def from_prefix(
        cls,
        s3_uri: str,
        *,
        region: Optional[str],
        endpoint: Optional[str] = None,
        transform: Callable[[S3Reader], Any] = identity,
        s3client_config: Optional[S3ClientConfig] = None,
        enable_sharding: bool = False,
        reader_constructor: Optional[S3ReaderConstructorProtocol] = None,
        shuffle: bool = False,
        seed: int = 0,
        prefetch: int = _DEFAULT_PREFETCH,
    ) -> S3IterableDataset:
        """A dataset of every object whose key starts with the prefix of ``s3_uri``, in key order
        (or shuffled). A missing bucket raises FileNotFoundError when iteration starts."""
        log.info("Building %s from_prefix %s", cls.__name__, s3_uri)
        return cls(
            region,
            partial(get_objects_from_prefix, s3_uri),
            endpoint,
            transform=transform,
            s3client_config=s3client_config,
            enable_sharding=enable_sharding,
            reader_constructor=reader_constructor,
            shuffle=shuffle,
            seed=seed,
            prefetch=prefetch,
        )

    def set_epoch(self, epoch: int) -> None:
        """The epoch the next iteration is for: with ``shuffle``, each epoch has its own order."""
        self._epoch = int(epoch)

    def _objects(self) -> Iterable[S3BucketKeyData]:
        objects = self._get_dataset_objects(self._get_client())
        if not self._shuffle:
            return objects
        ordered: List[S3BucketKeyData] = list(objects)
        # Every rank and worker computes the same permutation: the listing is in key order.
        random.Random(f"{self._seed}/{self._epoch}").shuffle(ordered)
        return ordered

    def _shard(self) -> Tuple[int, int, int, int]:
        """(rank, world size, worker, workers); all 0/1 without sharding."""
        if not self._enable_sharding:
            return 0, 1, 0, 1
        rank, world = 0, 1
        if torch.distributed.is_available() and torch.distributed.is_initialized():
            rank, world = torch.distributed.get_rank(), torch.distributed.get_world_size()
        worker, workers = 0, 1
        info = torch.utils.data.get_worker_info()
        if info is not None:
            worker, workers = info.id, info.num_workers
        return rank, world, worker, workers

    def __iter__(self) -> Iterator[Any]:
        rank, world, worker, workers = self._shard()
        objects: Iterable[S3BucketKeyData] = self._objects()
        if world * workers > 1:
            # As the reference splits: object i goes to rank i % world, and that rank's k-th object to
            # worker k % workers. Every object exactly once per epoch.
            objects = (
                obj for i, obj in enumerate(objects) if i % world == rank and (i // world) % workers == worker
            )
        budget = min(FETCH_BUDGET_BYTES, self._get_client().memory_limit_bytes // 2)
        return self._fetcher.ordered(self._load, objects, self._prefetch, budget)
