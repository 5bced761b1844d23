"""What the datasets share: S3 URIs, the objects of a prefix or a URI list, and concurrent fetching.

Small objects are latency-bound: one GET after another leaves the network idle between them. The
datasets therefore run the user's transform (which reads the object through its reader) for several
objects at once on a small thread pool: the GETs overlap while each thread waits with the GIL released.
Each object in flight holds its bytes (and a part buffer while it downloads), so what is in flight is
bounded by the objects' listed sizes (FETCH_BUDGET_BYTES): many small objects at once, few large ones
(whose GETs already move data at full speed).
"""

from __future__ import annotations

import collections
import logging
import os
import threading
from concurrent.futures import Future, ThreadPoolExecutor
from typing import (
    TYPE_CHECKING,
    Any,
    Callable,
    Deque,
    Dict,
    Iterable,
    Iterator,
    List,
    NamedTuple,
    Optional,
    Tuple,
    Union,
)

if TYPE_CHECKING:
    from ._client import ObjectInfo, S3Client
    from ._config import S3ClientConfig
    from .s3reader import S3Reader
    from .s3reader.protocol import S3ReaderConstructorProtocol

log = logging.getLogger(__name__)

# Listed bytes a dataset's concurrent fetches may have in flight (at least one object): 160 objects of
# 100 KiB, two of 8 MiB. More does not make large objects faster here and costs resident memory.
FETCH_BUDGET_BYTES = 16 * 1024 * 1024


class S3BucketKeyData(NamedTuple):
    """One object of a dataset; ``object_info`` comes from the listing (None for a URI given)."""

    bucket: str
    key: str
    object_info: Optional[ObjectInfo] = None


def identity(obj: S3Reader) -> S3Reader:
    return obj


def parse_s3_uri(uri: str) -> Tuple[str, str]:
    """``s3://bucket/key`` -> ``(bucket, key)``; the key may be empty. ValueError otherwise."""
    if not isinstance(uri, str) or not uri.startswith("s3://"):
        raise ValueError(f"Only s3:// URIs are supported, got {uri!r}")
    bucket, _, key = uri[len("s3://") :].partition("/")
    if not bucket:
        raise ValueError(f"Bucket name must be non-empty in {uri!r}")
    return bucket, key


def get_objects_from_uris(
    object_uris: Union[str, Iterable[str]], client: S3Client
) -> Iterator[S3BucketKeyData]:
    if isinstance(object_uris, str):
        object_uris = [object_uris]
    pairs = [parse_s3_uri(uri) for uri in object_uris]  # every URI checked before the first GET
    return (S3BucketKeyData(bucket, key) for bucket, key in pairs)


def get_objects_from_prefix(s3_uri: str, client: S3Client) -> Iterator[S3BucketKeyData]:
    """The objects under the prefix, page by page (ListObjectsV2, 1,000 keys a page) as iteration goes;
    each carries its listing's ObjectInfo (size, ETag), so no reader needs a HEAD."""
    bucket, prefix = parse_s3_uri(s3_uri)
    for page in client.list_objects(bucket, prefix):
        for info in page.object_info:
            yield S3BucketKeyData(bucket, info.key, info)


def transform_error(exc: BaseException, item: S3BucketKeyData) -> BaseException:
    """The exception a failed transform (or read) raises, naming the object it failed on."""
    where = f"while loading s3://{item.bucket}/{item.key}"
    if hasattr(exc, "add_note"):  # Python 3.11+: keep the type and traceback, add the key
        exc.add_note(where)
        return exc
    try:
        exc.args = (f"{exc.args[0] if exc.args else exc} ({where})", *exc.args[1:])
    except Exception:  # an exception type whose args cannot be set: raise it as it is
        pass
    return exc


class Fetcher:
    """A thread pool for running transforms concurrently, made lazily and re-made in a forked child
    (a pool inherited through fork has no threads). Not pickled: each DataLoader worker makes its own."""

    def __init__(self, threads: int) -> None:
        self.threads = max(1, int(threads))
        self._pool: Optional[ThreadPoolExecutor] = None
        self._pid = 0
        self._lock = threading.Lock()

    def pool(self) -> ThreadPoolExecutor:
        pid = os.getpid()
        if self._pool is None or self._pid != pid:
            with self._lock:
                if self._pool is None or self._pid != pid:
                    self._pool = ThreadPoolExecutor(self.threads, thread_name_prefix="s3torch-dataset")
                    self._pid = pid
        return self._pool

    def map_all(
        self, fn: Callable[[S3BucketKeyData], Any], items: List[S3BucketKeyData], max_bytes: int
    ) -> List[Any]:
        """``[fn(item) for item in items]``, run concurrently within ``max_bytes`` of listed object sizes
        in flight; the first failure (in item order) raises, naming its object."""
        return list(self.ordered(fn, items, self.threads, max_bytes))

    def ordered(
        self,
        fn: Callable[[S3BucketKeyData], Any],
        items: Iterable[S3BucketKeyData],
        ahead: int,
        max_bytes: int,
    ) -> Iterator[Any]:
        """``fn(item)`` for each item, in order, with up to ``ahead`` items in flight whose listed sizes
        add up to at most ``max_bytes`` (one at least): the objects read ahead stay bounded in memory."""
        if ahead <= 1 or self.threads == 1:
            for item in items:
                yield _call(fn, item)
            return
        pending: Deque[Tuple[S3BucketKeyData, Future, int]] = collections.deque()
        in_flight = 0
        source = iter(items)
        waiting: Optional[S3BucketKeyData] = None  # the next item, taken from the source, not started
        try:
            while True:
                while len(pending) < ahead:
                    if waiting is None:
                        waiting = next(source, None)
                        if waiting is None:
                            break
                    size = int(getattr(waiting.object_info, "size", 0) or 0)
                    if pending and in_flight + size > max_bytes:
                        break  # it starts once enough of what is in flight has been consumed
                    pending.append((waiting, self.pool().submit(fn, waiting), size))
                    in_flight += size
                    waiting = None
                if not pending:
                    return
                item, future, size = pending.popleft()
                in_flight -= size
                try:
                    result = future.result()
                except BaseException as exc:
                    raise transform_error(exc, item) from None
                yield result
        finally:
            for _, future, _ in pending:
                future.cancel()


def _call(fn: Callable[[S3BucketKeyData], Any], item: S3BucketKeyData) -> Any:
    try:
        return fn(item)
    except BaseException as exc:
        raise transform_error(exc, item) from None


class DatasetBase:
    """What S3MapDataset and S3IterableDataset share: their settings, a client made on first use in each
    process (it pickles as its settings), loading one object through the user's transform, and a thread
    pool that does not travel to DataLoader workers (each makes its own)."""

    _kind = ""  # "map" or "iterable": the User-Agent's md/dataset#

    def _init_common(
        self,
        region: Optional[str],
        get_dataset_objects: Callable[[S3Client], Iterable[S3BucketKeyData]],
        endpoint: Optional[str],
        transform: Callable[[S3Reader], Any],
        s3client_config: Optional[S3ClientConfig],
        reader_constructor: Optional[S3ReaderConstructorProtocol],
        threads: int,
    ) -> None:
        from .s3reader import S3ReaderConstructor

        self._get_dataset_objects = get_dataset_objects
        self._transform = transform
        self._region = region
        self._endpoint = endpoint
        self._s3client_config = s3client_config
        self._reader_constructor = reader_constructor or S3ReaderConstructor.default()
        self._client: Optional[S3Client] = None
        self._fetcher = Fetcher(threads)

    @property
    def region(self) -> Optional[str]:
        return self._region

    @property
    def endpoint(self) -> Optional[str]:
        return self._endpoint

    def _get_client(self) -> S3Client:
        if self._client is None:
            from ._client import S3Client
            from ._user_agent import UserAgent
            from .s3reader import S3ReaderConstructor

            kind = S3ReaderConstructor.get_reader_type_string(self._reader_constructor)
            self._client = S3Client(
                self._region,
                endpoint=self._endpoint,
                user_agent=UserAgent([f"md/dataset#{self._kind} md/reader_type#{kind}"]),
                s3client_config=self._s3client_config,
            )
        return self._client

    def _reader(self, item: S3BucketKeyData) -> S3Reader:
        return self._get_client().get_object(
            item.bucket, item.key, object_info=item.object_info, reader_constructor=self._reader_constructor
        )

    def _load(self, item: S3BucketKeyData) -> Any:
        """``transform(reader)`` of one object."""
        reader = self._reader(item)
        if self._transform is identity:
            # The reader goes to the consumer unread: start its GET now, so that reading ahead overlaps.
            start = getattr(reader, "prefetch", None)
            if start is not None:
                start()
        return self._transform(reader)

    def __getstate__(self) -> Dict[str, Any]:
        state = dict(self.__dict__)
        state["_fetcher"] = self._fetcher.threads
        return state

    def __setstate__(self, state: Dict[str, Any]) -> None:
        state["_fetcher"] = Fetcher(state["_fetcher"])
        self.__dict__.update(state)
