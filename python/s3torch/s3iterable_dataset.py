"""S3IterableDataset: an iterable-style dataset over S3 objects (s3torchconnector's API, plus a
deterministic per-epoch shuffle and reading ahead)."""

from __future__ import annotations

import logging
import random
from functools import partial
from typing import Any, Callable, Dict, Iterable, Iterator, List, Optional, Tuple, Union

import torch
import torch.utils.data

from ._client import S3Client
from ._config import S3ClientConfig
from ._dataset_common import (
    FETCH_BUDGET_BYTES,
    Fetcher,
    S3BucketKeyData,
    get_objects_from_prefix,
    get_objects_from_uris,
    identity,
)
from ._user_agent import UserAgent
from .s3reader import S3Reader, S3ReaderConstructor
from .s3reader.protocol import S3ReaderConstructorProtocol

log = logging.getLogger(__name__)

_DEFAULT_PREFETCH = 8


class S3IterableDataset(torch.utils.data.IterableDataset):
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
        self._get_dataset_objects = get_dataset_objects
        self._transform = transform
        self._region = region
        self._endpoint = endpoint
        self._s3client_config = s3client_config
        self._enable_sharding = enable_sharding
        self._reader_constructor = reader_constructor or S3ReaderConstructor.default()
        self._shuffle = shuffle
        self._seed = seed
        self._epoch = 0
        self._prefetch = prefetch
        self._client: Optional[S3Client] = None
        self._fetcher = Fetcher(prefetch)

    @property
    def region(self) -> Optional[str]:
        return self._region

    @property
    def endpoint(self) -> Optional[str]:
        return self._endpoint

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

    def _get_client(self) -> S3Client:
        if self._client is None:
            kind = S3ReaderConstructor.get_reader_type_string(self._reader_constructor)
            self._client = S3Client(
                self._region,
                endpoint=self._endpoint,
                user_agent=UserAgent([f"md/dataset#iterable md/reader_type#{kind}"]),
                s3client_config=self._s3client_config,
            )
        return self._client

    def _get_transformed_object(self, item: S3BucketKeyData) -> Any:
        reader = self._get_client().get_object(
            item.bucket, item.key, object_info=item.object_info, reader_constructor=self._reader_constructor
        )
        if self._transform is identity:
            # The reader goes to the consumer unread: start its GET now, so that reading ahead overlaps.
            start = getattr(reader, "prefetch", None)
            if start is not None:
                start()
        return self._transform(reader)

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
        return self._fetcher.ordered(self._get_transformed_object, objects, self._prefetch, budget)

    def __getstate__(self) -> Dict[str, Any]:
        state = dict(self.__dict__)
        state["_fetcher"] = self._fetcher.threads
        return state

    def __setstate__(self, state: Dict[str, Any]) -> None:
        state["_fetcher"] = Fetcher(state["_fetcher"])
        self.__dict__.update(state)
