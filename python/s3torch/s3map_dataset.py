"""S3MapDataset: a map-style dataset over S3 objects (s3torchconnector's API)."""

from __future__ import annotations

import logging
from functools import partial
from typing import Any, Callable, Iterable, List, Optional, Sequence, Union

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
    transform_error,
)
from .s3reader import S3Reader
from .s3reader.protocol import S3ReaderConstructorProtocol

log = logging.getLogger(__name__)

_DEFAULT_BATCH_THREADS = 32


class S3MapDataset(DatasetBase, torch.utils.data.Dataset):
    """A map-style dataset of S3 objects: ``dataset[i]`` is ``transform(reader of object i)``.

    Make one with ``from_prefix`` or ``from_objects``. Nothing is listed before the first ``len`` or
    index; the listing is paginated and kept (one small record per object, reused every epoch), and its
    sizes and ETags spare every reader a HEAD. A DataLoader batch (``__getitems__``) is fetched
    concurrently on up to ``batch_threads`` threads (1: one object after another, as the reference).
    """

    _kind = "map"

    def __init__(
        self,
        region: Optional[str],
        get_dataset_objects: Callable[[S3Client], Iterable[S3BucketKeyData]],
        endpoint: Optional[str] = None,
        transform: Callable[[S3Reader], Any] = identity,
        s3client_config: Optional[S3ClientConfig] = None,
        reader_constructor: Optional[S3ReaderConstructorProtocol] = None,
        *,
        batch_threads: int = _DEFAULT_BATCH_THREADS,
    ) -> None:
        if batch_threads < 1:
            raise ValueError(f"batch_threads must be at least 1, got {batch_threads}")
        self._init_common(
            region,
            get_dataset_objects,
            endpoint,
            transform,
            s3client_config,
            reader_constructor,
            batch_threads,
        )
        self._bucket_key_pairs: Optional[List[S3BucketKeyData]] = None

    @classmethod
    def from_objects(
        cls,
        object_uris: Union[str, Iterable[str]],
        *,
        region: Optional[str],
        endpoint: Optional[str] = None,
        transform: Callable[[S3Reader], Any] = identity,
        s3client_config: Optional[S3ClientConfig] = None,
        reader_constructor: Optional[S3ReaderConstructorProtocol] = None,
        batch_threads: int = _DEFAULT_BATCH_THREADS,
    ) -> S3MapDataset:
        """A dataset of the objects named by ``object_uris`` (``s3://bucket/key``, one or many)."""
        log.info("Building %s from_objects", cls.__name__)
        return cls(
            region,
            partial(get_objects_from_uris, object_uris),
            endpoint,
            transform=transform,
            s3client_config=s3client_config,
            reader_constructor=reader_constructor,
            batch_threads=batch_threads,
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
        reader_constructor: Optional[S3ReaderConstructorProtocol] = None,
        batch_threads: int = _DEFAULT_BATCH_THREADS,
    ) -> S3MapDataset:
        """A dataset of every object whose key starts with the prefix of ``s3_uri``
        (``s3://bucket/prefix``), in key order. A missing bucket raises FileNotFoundError on first use."""
        log.info("Building %s from_prefix %s", cls.__name__, s3_uri)
        return cls(
            region,
            partial(get_objects_from_prefix, s3_uri),
            endpoint,
            transform=transform,
            s3client_config=s3client_config,
            reader_constructor=reader_constructor,
            batch_threads=batch_threads,
        )

    @property
    def _dataset_bucket_key_pairs(self) -> List[S3BucketKeyData]:
        if self._bucket_key_pairs is None:
            self._bucket_key_pairs = list(self._get_dataset_objects(self._get_client()))
        return self._bucket_key_pairs

    def _get_object(self, i: int) -> S3Reader:
        return self._reader(self._dataset_bucket_key_pairs[i])

    def __getitem__(self, i: int) -> Any:
        item = self._dataset_bucket_key_pairs[i]
        try:
            return self._load(item)
        except BaseException as exc:
            raise transform_error(exc, item) from None

    def __getitems__(self, indices: Sequence[int]) -> List[Any]:
        """A batch, its objects fetched concurrently (DataLoader calls this with a batch's indices)."""
        pairs = self._dataset_bucket_key_pairs
        return self._fetcher.map_all(self._load, [pairs[i] for i in indices], FETCH_BUDGET_BYTES)

    def __len__(self) -> int:
        return len(self._dataset_bucket_key_pairs)
