"""S3Client: the Python face of the native client (mirrors s3torchconnector's S3Client, plus endpoint)."""

from __future__ import annotations

import logging
import os
import threading
from dataclasses import dataclass, field
from functools import partial
from typing import TYPE_CHECKING, Any, Dict, Iterator, List, Optional, Sequence, Tuple

from ._awsenv import resolve_endpoint, resolve_region
from ._config import S3ClientConfig
from ._exceptions import S3Exception
from ._user_agent import UserAgent
from ._writer import S3Writer

if TYPE_CHECKING:
    from . import _core
    from .s3reader import S3Reader
    from .s3reader.protocol import S3ReaderConstructorProtocol

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class HeadObjectResult:
    etag: str
    size: int
    last_modified: int
    storage_class: Optional[str] = None
    restore_status: Optional[str] = None


@dataclass(frozen=True)
class ObjectInfo:
    key: str
    etag: str
    size: int
    last_modified: int
    storage_class: Optional[str] = None
    restore_status: Optional[str] = None


@dataclass(frozen=True)
class ListObjectResult:
    object_info: List[ObjectInfo] = field(default_factory=list)
    common_prefixes: List[str] = field(default_factory=list)


class ListObjectStream:
    """Iterates ListObjectsV2 pages lazily; each page is a ListObjectResult."""

    def __init__(
        self, client: S3Client, bucket: str, prefix: str, delimiter: str, max_keys: int
    ) -> None:
        if max_keys < 1:
            raise ValueError(f"max_keys must be at least 1, got {max_keys}")
        self.bucket = bucket
        self.prefix = prefix
        self.delimiter = delimiter
        self.max_keys = max_keys
        self.continuation_token: Optional[str] = None
        self.complete = False
        self._client = client

    def __iter__(self) -> Iterator[ListObjectResult]:
        return self

    def __next__(self) -> ListObjectResult:
        if self.complete:
            raise StopIteration
        objects, prefixes, token, truncated = self._client._native.list(
            self.bucket, self.prefix, self.delimiter, self.max_keys, self.continuation_token or ""
        )
        self.continuation_token = token or None
        self.complete = not truncated or not token
        return ListObjectResult(
            object_info=[ObjectInfo(*o) for o in objects], common_prefixes=list(prefixes)
        )


def _identity(value: Any) -> Any:
    return value


class _StreamOpener:
    """``get_stream(start=None, end=None)`` for one object, as handed to reader constructors.

    ``memory_limit_bytes`` tells readers how much pinned part-buffer memory the client's pool has, so
    that a reader that keeps data (sequential) never holds so much of the pool that its own GET stalls.
    Every GET of one reader reads the same version of the object: the first response's ETag is
    pinned and sent as If-Match with the later ones (an overwrite in between raises S3Exception).
    """

    __slots__ = ("_client", "bucket", "key", "_pin", "object_size")

    def __init__(self, client: S3Client, bucket: str, key: str) -> None:
        self._client = client
        self.bucket = bucket
        self.key = key
        self._pin: Optional[_core.EtagPin] = None
        # The size the caller's object info gave (a listing's), known without a request; else None.
        self.object_size: Optional[int] = None

    def _the_pin(self) -> _core.EtagPin:
        if self._pin is None:
            from . import _core

            self._pin = _core.EtagPin()
        return self._pin

    def pin_version(self, etag: Optional[str]) -> None:
        """Pins the version the reader's size came from (HEAD or listing): its GETs must read that
        one. Raises S3Exception if a GET of this reader already met another version."""
        if etag and not self._the_pin().check(etag):
            raise S3Exception(
                f"s3://{self.bucket}/{self.key}: the object changed during the read (its size and "
                f"ETag {etag} came from before the version this reader read); reopen it",
                bucket=self.bucket,
                key=self.key,
                status=412,
                code="PreconditionFailed",
                operation="GetObject",
            )

    def __call__(self, start: Optional[int] = None, end: Optional[int] = None) -> _core.GetObjectStream:
        return self._client.get_object_stream(self.bucket, self.key, start, end, pin=self._the_pin())

    def read_bytes(self, start: int, end: int, prefix: Optional[Any] = None) -> bytes:
        """Bytes [start, end) as a new bytes object received in place: no part buffer, one copy.

        ``prefix``: bytes [start, start + len(prefix)) the caller already has (copied in; only the
        rest is requested)."""
        whole = prefix is None and start == 0 and end == self.object_size
        return self._client._native.get_bytes(
            self.bucket, self.key, start, end, pin=self._the_pin(), whole_object=whole, prefix=prefix
        )

    def read_into(self, start: int, dest: Any) -> int:
        """Bytes [start, start + len(dest)) received straight into the writable buffer ``dest``."""
        self._client.get_object_into(self.bucket, self.key, start, dest, pin=self._the_pin()).wait()
        return memoryview(dest).nbytes

    @property
    def memory_limit_bytes(self) -> int:
        return self._client.memory_limit_bytes

    @property
    def part_size(self) -> int:
        return int(self._client.s3client_config.part_size)


class S3Client:
    """A client for one region (and optionally one S3-compatible endpoint).

    ``region`` and ``endpoint`` left out are found as the AWS SDKs find them: ``AWS_REGION`` /
    ``AWS_DEFAULT_REGION`` / the profile's region, and ``AWS_ENDPOINT_URL_S3`` / ``AWS_ENDPOINT_URL`` /
    the profile's ``endpoint_url`` (``AWS_IGNORE_CONFIGURED_ENDPOINT_URLS=true`` ignores those).

    The native client is created lazily and re-created in a forked child, and the object pickles (only
    its settings travel), so it can be handed to DataLoader workers.
    """

    def __init__(
        self,
        region: Optional[str] = None,
        *,
        endpoint: Optional[str] = None,
        user_agent: Optional[Any] = None,
        s3client_config: Optional[S3ClientConfig] = None,
    ) -> None:
        self._s3client_config = s3client_config or S3ClientConfig()
        # As the AWS SDKs do: the arguments, else AWS_REGION / AWS_ENDPOINT_URL(_S3) / the profile's.
        profile = self._s3client_config.profile
        self._region = resolve_region(region, profile)
        self._endpoint = resolve_endpoint(endpoint, profile)
        self._user_agent = user_agent
        self._lock = threading.Lock()
        self._native_client: Optional[_core.Client] = None
        self._pid: Optional[int] = None

    # -- pickling: settings only; the native client is rebuilt on first use
    def __getstate__(self) -> Dict[str, Any]:
        return {
            "region": self._region,
            "endpoint": self._endpoint,
            "user_agent": self._user_agent,
            "s3client_config": self._s3client_config,
        }

    def __setstate__(self, state: Dict[str, Any]) -> None:
        self.__init__(  # type: ignore[misc]
            state["region"],
            endpoint=state["endpoint"],
            user_agent=state["user_agent"],
            s3client_config=state["s3client_config"],
        )

    @property
    def region(self) -> str:
        return self._region

    @property
    def endpoint(self) -> Optional[str]:
        """The endpoint requests go to (the argument, else the environment's or profile's); None: AWS."""
        return self._endpoint

    def request_url(self, bucket: str, key: str = "") -> str:
        """The URL a request for s3://bucket/key goes to: path style for an IP or localhost endpoint,
        ``force_path_style`` or a bucket name with dots; virtual-hosted otherwise."""
        return str(self._native.request_url(bucket, key))

    @property
    def s3client_config(self) -> S3ClientConfig:
        return self._s3client_config

    @property
    def memory_limit_bytes(self) -> int:
        """The part-buffer pool's hard limit (the configured one, else the CRT default)."""
        limit = self._s3client_config.memory_limit_bytes
        if limit:
            return int(limit)
        from . import _core

        return int(_core.default_memory_limit(float(self._s3client_config.throughput_target_gbps)))

    @property
    def user_agent_prefix(self) -> str:
        """The User-Agent header: ``UserAgent(...).prefix`` when given one (s3torch's own, with its
        comments), a string given is put in front of s3torch's own."""
        ua = self._user_agent
        if ua is None:
            return UserAgent().prefix
        if hasattr(ua, "prefix"):
            prefix = str(ua.prefix)
            return prefix if prefix.startswith("s3torch/") else f"{prefix} {UserAgent().prefix}"
        return f"{ua} {UserAgent().prefix}" if str(ua) else UserAgent().prefix

    @property
    def _native(self) -> _core.Client:
        pid = os.getpid()
        if self._native_client is None or self._pid != pid:
            with self._lock:
                if self._native_client is None or self._pid != pid:
                    from . import _core
                    from ._crtlog import configure_crt_logging

                    configure_crt_logging()
                    cfg = self._s3client_config
                    self._native_client = _core.Client(
                        self._region,
                        endpoint=self._endpoint or "",
                        user_agent_prefix=self.user_agent_prefix,
                        profile=cfg.profile or "",
                        throughput_target_gbps=float(cfg.throughput_target_gbps),
                        part_size=int(cfg.part_size),
                        unsigned=bool(cfg.unsigned),
                        force_path_style=bool(cfg.force_path_style),
                        max_attempts=int(cfg.max_attempts),
                        memory_limit_bytes=int(cfg.memory_limit_bytes or 0),
                        read_timeout_s=int(cfg.read_timeout_s or 0),
                        upload_checksum=bool(cfg.upload_checksum),
                        requester_pays=bool(cfg.requester_pays),
                        download_checksum=bool(cfg.download_checksum),
                    )
                    self._pid = pid
        return self._native_client

    # -- objects
    def get_object(
        self,
        bucket: str,
        key: str,
        *,
        object_info: Optional[Any] = None,
        reader_constructor: Optional[S3ReaderConstructorProtocol] = None,
    ) -> S3Reader:
        """A file-like reader over s3://bucket/key; nothing is fetched before the first read."""
        log.debug("GetObject s3://%s/%s (object_info given: %s)", bucket, key, object_info is not None)
        opener = _StreamOpener(self, bucket, key)
        if object_info is None:

            def get_object_info() -> Any:
                info = self.head_object(bucket, key)
                opener.pin_version(info.etag)  # the size the reader uses and the bytes it reads agree
                return info

        else:
            opener.pin_version(getattr(object_info, "etag", None))
            size = getattr(object_info, "size", None)
            opener.object_size = int(size) if size is not None else None
            get_object_info = partial(_identity, object_info)
        if reader_constructor is None:
            from .s3reader.constructor import S3ReaderConstructor

            reader_constructor = S3ReaderConstructor.default()
        return reader_constructor(
            bucket=bucket,
            key=key,
            get_object_info=get_object_info,
            get_stream=opener,
        )

    def get_object_stream(
        self,
        bucket: str,
        key: str,
        start: Optional[int] = None,
        end: Optional[int] = None,
        *,
        scatter: Optional[Sequence[Tuple[int, Any]]] = None,
        pin: Optional[_core.EtagPin] = None,
    ) -> _core.GetObjectStream:
        """A stream of zero-copy chunks of bytes [start, end) (end exclusive) of the object.

        ``scatter``: (object offset, writable buffer) pairs, disjoint and inside [start, end). The
        bytes of those ranges are written straight into the buffers as the parts arrive (one copy,
        from the socket's read buffer; no extra request), so a consumer that knows where they go
        skips them: what the stream yields at those offsets is unspecified. A buffer is complete
        once the stream has yielded the bytes past its range; closing the stream stops all writes
        at once. Needs the bundled AWS CRT (``scatter_supported``).

        ``pin``: an ``EtagPin`` shared by GETs that must read one version of the object; the first
        response pins its ETag, later GETs send it as If-Match, and a GET that meets another version
        raises S3Exception (code PreconditionFailed) instead of mixing bytes of both.
        """
        if start is not None and start < 0:
            raise ValueError(f"start must be >= 0, got {start}")
        if end is not None and end < 0:
            raise ValueError(f"end must be >= 0, got {end}")
        if scatter is None:
            return self._native.get(bucket, key, start, end, pin=pin)
        return self._native.get(bucket, key, start, end, list(scatter), pin=pin)

    @property
    def scatter_supported(self) -> bool:
        """Whether ``get_object_stream(scatter=...)`` works: it needs the bundled AWS CRT."""
        from . import _core

        return bool(_core.SCATTER)

    def get_object_into(
        self,
        bucket: str,
        key: str,
        start: int,
        buffer: Any,
        *,
        part_size: int = 0,
        pin: Optional[_core.EtagPin] = None,
    ) -> _core.DirectGet:
        """Starts a GET of bytes [start, start + len(buffer)) straight into ``buffer``.

        ``buffer`` is any writable C-contiguous buffer (bytearray, memoryview, a CPU tensor's
        numpy view). The part requests receive into it directly: one copy, from the socket's read
        buffer, and no part buffer of the pool is used. Call ``wait()`` on the result; until then
        (or until it is destroyed, which cancels it) the buffer must not be used. ``part_size``
        (0: the client's) splits the range into part requests of that size; the parts do not take
        pool memory, so larger ones are fine and mean fewer requests. ``pin``: as for
        ``get_object_stream``.
        """
        if start < 0:
            raise ValueError(f"start must be >= 0, got {start}")
        if part_size < 0:
            raise ValueError(f"part_size must be >= 0, got {part_size}")
        return self._native.get_into(bucket, key, start, buffer, part_size, pin=pin)

    def put_object(self, bucket: str, key: str, storage_class: Optional[str] = None) -> S3Writer:
        """A writer that streams a multipart upload; the object appears only on close()."""
        log.debug("PutObject s3://%s/%s", bucket, key)
        return S3Writer(self._native.put(bucket, key, storage_class or ""))

    def head_object(self, bucket: str, key: str) -> HeadObjectResult:
        _key, etag, size, last_modified, storage_class, restore = self._native.head(bucket, key)
        return HeadObjectResult(etag, size, last_modified, storage_class, restore)

    def list_objects(
        self, bucket: str, prefix: str = "", delimiter: str = "", max_keys: int = 1000
    ) -> ListObjectStream:
        return ListObjectStream(self, bucket, prefix, delimiter, max_keys)

    def delete_object(self, bucket: str, key: str) -> None:
        self._native.delete(bucket, key)

    def copy_object(self, src_bucket: str, src_key: str, dst_bucket: str, dst_key: str) -> None:
        self._native.copy(src_bucket, src_key, dst_bucket, dst_key)

    # -- observability
    def stats(self) -> Dict[str, Any]:
        """Part-buffer pool statistics and request counters of this process's native client."""
        native = self._native
        out: Dict[str, Any] = dict(native.pool_stats())
        out["read_window_bytes"] = native.read_window
        out.update(native.counters())
        return out
