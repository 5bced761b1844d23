"""DCP-optimized reading: fetch only the byte ranges a DCP load plan needs.

``coalesce_ranges`` turns a file's item ranges into groups (one ranged GET each) by merging
neighbours whose gap is at most ``max_gap_size``. ``DCPOptimizedS3Reader`` opens a group's GET when
its first item is read, keeps each item's bytes as views of the chunks received and lets go of
them as soon as the next item is read, so memory stays around one item plus the GET's in-flight
parts.
``DCPOptimizedConstructor`` receives the plan's ranges (``set_item_ranges_by_file``) and builds the
reader per file.
"""

from __future__ import annotations

import logging
import math
import os
from dataclasses import dataclass
from typing import (
    TYPE_CHECKING,
    Any,
    Callable,
    Dict,
    Iterator,
    List,
    Optional,
    Sequence,
    Tuple,
    Union,
)

from . import _chunks
from ._chunks import ChunkSpans
from .protocol import GetStreamCallable, ObjectInfoLike
from .s3reader import (
    ReaderStats,
    S3Reader,
    _ObjectReader,
    byte_view,
    read_size,
    seek_target,
    writable_view,
)
from .sequential import SequentialS3Reader

if TYPE_CHECKING:
    from torch.distributed.checkpoint.filesystem import _StorageInfo
    from torch.distributed.checkpoint.metadata import MetadataIndex
    from torch.distributed.checkpoint.planner import ReadItem

log = logging.getLogger(__name__)

class _DefaultGap(int):
    """The reference's default gap (32 MiB, equal to it in every comparison), recognisable by identity:
    the concurrent DCP loader then chooses its own, smaller gap (see dcp/_concurrent.py); a value the
    user passes, 32 MiB included, is honoured exactly."""

    def __repr__(self) -> str:
        return "33554432"


DEFAULT_MAX_GAP_SIZE = _DefaultGap(32 * 1024 * 1024)


def is_default_gap(max_gap_size: object) -> bool:
    return max_gap_size is DEFAULT_MAX_GAP_SIZE

FALLBACK_GUIDANCE = (
    "The DCP-optimized reader only serves the byte ranges of the load plan, item after item, as "
    "S3StorageReader's prepare_local_plan arranges them. For any other access pattern use the "
    "generic reader: S3StorageReader(region, path, "
    "reader_constructor=S3ReaderConstructor.default())."
)


@dataclass(frozen=True)
class ItemRange:
    """Bytes [start, end) of one DCP read item: start inclusive, end exclusive."""

    start: int
    end: int

    @property
    def length(self) -> int:
        return self.end - self.start


@dataclass(frozen=True)
class RangeGroup:
    """Bytes [start, end) fetched by one ranged GET; ``item_ranges`` are sorted and non-overlapping."""

    start: int
    end: int
    item_ranges: Tuple[ItemRange, ...]


def _validate_max_gap_size(max_gap_size: Union[int, float]) -> None:
    if isinstance(max_gap_size, bool) or not isinstance(max_gap_size, (int, float)):
        raise TypeError(f"max_gap_size must be an int or float, got {type(max_gap_size).__name__}")
    if math.isnan(max_gap_size) or max_gap_size < 0:
        raise ValueError(
            f"max_gap_size must be non-negative (0 coalesces only adjacent ranges, "
            f"float('inf') fetches each file with one GET), got {max_gap_size}"
        )


def coalesce_ranges(ranges: Sequence[ItemRange], max_gap_size: Union[int, float]) -> List[RangeGroup]:
    """Group sorted, non-overlapping ranges whose gaps are at most ``max_gap_size``.

    Zero-length ranges are dropped (nothing to fetch). A negative start, an end before its start,
    or a range that starts before the previous one ends (unsorted or overlapping) is a ValueError.
    ``max_gap_size=0`` merges only adjacent ranges; ``float("inf")`` merges everything.
    """
    _validate_max_gap_size(max_gap_size)
    groups: List[RangeGroup] = []
    members: List[ItemRange] = []
    previous: Optional[ItemRange] = None
    for r in ranges:
        if r.start < 0 or r.end < r.start:
            raise ValueError(f"Invalid range {r.start}-{r.end}: need 0 <= start <= end")
        if r.end == r.start:
            continue
        if previous is not None:
            if r.start < previous.start:
                raise ValueError(
                    f"Unsorted ranges: {previous.start}-{previous.end} comes before "
                    f"{r.start}-{r.end}; ranges must be sorted by start offset"
                )
            if r.start < previous.end:
                raise ValueError(f"Overlapping ranges: {previous.start}-{previous.end} and {r.start}-{r.end}")
            if r.start - previous.end > max_gap_size:
                groups.append(RangeGroup(members[0].start, previous.end, tuple(members)))
                members = []
        members.append(r)
        previous = r
    if members:
        groups.append(RangeGroup(members[0].start, members[-1].end, tuple(members)))
    return groups


class DCPOptimizedS3Reader(_ObjectReader):
    """Reader for DCP loads: fetches only the plan's item ranges, coalesced per ``max_gap_size``.

    Access must follow the plan: any read lies inside the item being read or the next one (random
    access within an item is fine: ``torch.load`` jumps around inside an item). Reading the next
    item releases the previous one. Any other read raises ``ValueError`` naming the range; use
    ``S3ReaderConstructor.default()`` for such access patterns. ``read()`` to the end of the
    object is not supported. Seeks fetch nothing.
    """

    def __init__(
        self,
        bucket: str,
        key: str,
        item_ranges: Sequence[ItemRange],
        get_object_info: Callable[[], ObjectInfoLike],
        get_stream: GetStreamCallable,
        max_gap_size: Union[int, float] = DEFAULT_MAX_GAP_SIZE,
    ) -> None:
        if not bucket:
            raise ValueError("Bucket should be specified")
        if not key:
            raise ValueError("Key should be specified")
        _validate_max_gap_size(max_gap_size)
        try:
            self._groups = coalesce_ranges(item_ranges, max_gap_size)
        except ValueError as e:
            # Bad ranges come from whoever injected the plan: say which file, and the way out.
            raise ValueError(f"{e} (item ranges of s3://{bucket}/{key})\n{FALLBACK_GUIDANCE}") from None
        if not self._groups:
            raise ValueError(f"No non-empty item ranges for s3://{bucket}/{key}: nothing to read")
        self._bucket = bucket
        self._key = key
        self._get_object_info = get_object_info
        self._get_stream = get_stream
        self._max_gap_size = max_gap_size
        self._items: List[ItemRange] = [item for g in self._groups for item in g.item_ranges]
        # For each item, the group whose GET it opens (None when it continues the current GET).
        self._opens: List[Optional[RangeGroup]] = []
        for group in self._groups:
            self._opens.append(group)
            self._opens.extend([None] * (len(group.item_ranges) - 1))
        self._index = -1  # index of the item held in _spans; -1 before the first read
        self._spans = ChunkSpans(0)
        self._stream: Optional[Any] = None
        self._chunks: Optional[Iterator[Any]] = None
        self._received = 0  # object offset just past the last chunk taken from the stream
        self._leftover: Optional[memoryview] = None  # unused tail of that chunk
        self._position = 0
        self._size: Optional[int] = None
        self._pinned_budget = _chunks.pinned_budget(get_stream)
        self._error: Optional[BaseException] = None  # a failed load leaves the stream unusable
        self.stats = ReaderStats()

    @property
    def item_ranges(self) -> List[ItemRange]:
        """The non-empty item ranges, in order."""
        return list(self._items)

    @property
    def range_groups(self) -> List[RangeGroup]:
        """One entry per ranged GET this reader will make."""
        return list(self._groups)

    def _get_size(self) -> int:
        if self._size is None:
            self._size = int(self._get_object_info().size)
        return self._size

    # --- item selection and loading -------------------------------------------------------------

    def _locate(self, start: int, end: int) -> int:
        """Index of the item containing [start, end): the current one or the next one."""
        items = self._items
        index = self._index
        if index >= 0:
            item = items[index]
            if item.start <= start and end <= item.end:
                return index
        if index + 1 < len(items):
            item = items[index + 1]
            if item.start <= start and end <= item.end:
                return index + 1
        current = f"{items[index].start}-{items[index].end}" if index >= 0 else "none yet"
        following = (
            f"{items[index + 1].start}-{items[index + 1].end}"
            if index + 1 < len(items)
            else "none (that was the last item)"
        )
        raise ValueError(
            f"DCPOptimizedS3Reader cannot serve range {start}-{end} of s3://{self._bucket}/"
            f"{self._key}: it is not inside the current item ({current}) nor the next item "
            f"({following}).\n{FALLBACK_GUIDANCE}"
        )

    def _short_object(self, item: ItemRange) -> ValueError:
        return ValueError(
            f"s3://{self._bucket}/{self._key} ended at byte {self._received}, before the end of "
            f"item {item.start}-{item.end} (is the object shorter than the checkpoint metadata "
            "says?)"
        )

    def _next_chunk(self, item: ItemRange) -> memoryview:
        assert self._chunks is not None
        try:
            view = byte_view(next(self._chunks))
        except StopIteration:
            raise self._short_object(item) from None
        self._received += len(view)
        return view

    def _load(self, index: int) -> None:
        item = self._items[index]
        # Let go of the previous item's chunks before pulling more of the pool.
        self._spans = spans = ChunkSpans(item.start)
        group = self._opens[index]
        if group is not None:
            self._close_stream()
            self._stream = self._get_stream(group.start, group.end)
            self._chunks = iter(self._stream)
            self.stats.get_requests += 1
            self.stats.bytes_fetched += group.end - group.start
            self._received = group.start
        # Bytes left over from the chunk that ended the previous item.
        leftover, self._leftover = self._leftover, None
        if leftover is not None and item.start < self._received:
            begin = self._received - len(leftover)
            take = leftover[item.start - begin : min(item.end, self._received) - begin]
            spans.append(take)
            if item.end < self._received:
                self._leftover = leftover[item.end - begin :]
        # Skip the gap (whole chunks are dropped without a copy), then collect the item.
        while self._received <= item.start:
            view = self._next_chunk(item)
            if self._received > item.start:
                begin = self._received - len(view)
                spans.append(view[item.start - begin : min(item.end, self._received) - begin])
                if item.end < self._received:
                    self._leftover = view[item.end - begin :]
        if spans.end < item.end:
            if item.end - item.start > self._pinned_budget:
                self._load_rest_unpinned(item)
            else:
                while spans.end < item.end:
                    view = self._next_chunk(item)
                    if self._received > item.end:
                        self._leftover = view[len(view) - (self._received - item.end) :]
                        view = view[: len(view) - (self._received - item.end)]
                    spans.append(view)
        self._index = index

    def _load_rest_unpinned(self, item: ItemRange) -> None:
        # An item larger than the pinned budget cannot be held as part buffers without risking a
        # stall of its own GET: copy it into one ordinary buffer, the rest straight from the stream.
        old = self._spans
        out = memoryview(bytearray(item.end - item.start))
        have = old.copy_into(out, item.start)
        assert self._stream is not None
        got = int(self._stream.read_into(out[have:]))
        self._received += got
        if have + got < len(out):
            raise self._short_object(item)
        self._spans = ChunkSpans(item.start)
        self._spans.append(out)

    def _item_for(self, start: int, end: int) -> ChunkSpans:
        if self._error is not None:
            raise self._error
        index = self._locate(start, end)
        if index != self._index:
            try:
                self._load(index)
            except BaseException as e:
                # The GET is now at an unknown point: fail every later read the same way.
                self._error = e
                self._close_stream()
                self._spans = ChunkSpans(0)
                raise
        return self._spans

    # --- file interface ---------------------------------------------------------------------------

    def read(self, size: Optional[int] = None) -> bytes:
        """Read ``size`` bytes, which must lie inside the current or the next item.

        Raises:
            ValueError: the range is outside the current and next item, or ``size`` is None or
                negative.
            S3Exception: An error occurred accessing S3.
        """
        self._check_open()
        n = read_size(size)
        if n is None:
            raise ValueError(
                f"DCPOptimizedS3Reader does not support reading to the end (read({size!r})); "
                f"pass a size.\n{FALLBACK_GUIDANCE}"
            )
        pos = self._position
        if n == 0 or (self._size is not None and pos >= self._size):
            return b""
        data = self._item_for(pos, pos + n).to_bytes(pos, pos + n)
        self._position = pos + n
        self.stats.bytes_returned += n
        return data

    def readinto(self, buf: Any) -> int:
        """Fill ``buf`` from the current position; the range must lie inside the current or the
        next item.

        Raises:
            TypeError: ``buf`` is not a writable bytes-like object.
            ValueError: the range is outside the current and next item.
            S3Exception: An error occurred accessing S3.
        """
        self._check_open()
        dest = writable_view(buf)
        n = dest.nbytes
        pos = self._position
        if n == 0 or (self._size is not None and pos >= self._size):
            return 0
        written = self._item_for(pos, pos + n).copy_into(dest, pos)
        self._position = pos + written
        self.stats.bytes_returned += written
        return written

    def seek(self, offset: int, whence: int = 0, /) -> int:
        """Move to ``offset`` relative to ``whence``; fetches nothing (SEEK_END looks up the size).

        Raises:
            ValueError: negative position or invalid whence.
        """
        self._check_open()
        target = seek_target(offset, whence, self._position, self._get_size)
        if self._size is not None:
            target = min(target, self._size)
        self._position = target
        return target

    def _close_stream(self) -> None:
        stream, self._stream, self._chunks = self._stream, None, None
        self._leftover = None
        if stream is not None:
            stream.close()

    def close(self) -> None:
        """Cancel the GET in progress and drop held chunks."""
        if hasattr(self, "_spans"):
            self._close_stream()
            self._spans = ChunkSpans(0)
            self._index = -1
        super().close()


def _join_uri(base_path: Union[str, os.PathLike], relative_path: str) -> str:
    base = os.fspath(base_path)
    if not isinstance(base, str):
        base = base.decode()
    if not relative_path:
        return base
    return base.rstrip("/") + "/" + relative_path.lstrip("/")


class DCPOptimizedConstructor:
    """Reader constructor for DCP loads that knows the byte ranges of the load plan.

    ``S3ReaderConstructor.dcp_optimized()`` returns one; ``S3StorageReader.prepare_local_plan``
    calls ``set_item_ranges_by_file`` with the plan, then ``S3Client.get_object`` calls it per file:

    * keys ending in ``.metadata`` (read before any plan exists) get a ``SequentialS3Reader``;
    * files with item ranges get a ``DCPOptimizedS3Reader`` over them;
    * files without ranges fall back to a ``SequentialS3Reader``.

    Attributes:
        max_gap_size: largest gap between two ranges that still shares one GET.
        _item_ranges_by_file: ``{"s3://bucket/key": [ItemRange, ...]}`` from the last plan.
    """

    def __init__(self, max_gap_size: Union[int, float] = DEFAULT_MAX_GAP_SIZE) -> None:
        _validate_max_gap_size(max_gap_size)
        self.max_gap_size: Union[int, float] = max_gap_size
        self._item_ranges_by_file: Dict[str, List[ItemRange]] = {}

    def set_item_ranges_by_file(
        self,
        plan_items: List[ReadItem],
        storage_data: Dict[MetadataIndex, _StorageInfo],
        base_path: Union[str, os.PathLike],
    ) -> None:
        """Record each plan item's byte range under its file's ``s3://`` URI, in plan order.

        Replaces the ranges of any earlier call. ``base_path`` is the checkpoint location
        (``s3://bucket/prefix``, trailing slash optional).
        """
        ranges: Dict[str, List[ItemRange]] = {}
        if plan_items and not storage_data:
            raise ValueError("storage_data must not be empty: it maps the plan's read items to file ranges")
        for read_item in plan_items or ():
            info = storage_data[read_item.storage_index]
            uri = _join_uri(base_path, info.relative_path)
            item = ItemRange(info.offset, info.offset + info.length)
            file_ranges = ranges.setdefault(uri, [])
            # Several read items may load the same stored bytes (e.g. one saved shard feeding two
            # local shards); fetching and serving them once as the current item is enough.
            if not file_ranges or file_ranges[-1] != item:
                file_ranges.append(item)
        self._item_ranges_by_file = ranges
        log.debug("DCP item ranges set for %d file(s)", len(ranges))

    def __call__(
        self,
        bucket: str,
        key: str,
        get_object_info: Callable[[], ObjectInfoLike],
        get_stream: GetStreamCallable,
    ) -> S3Reader:
        if key.endswith(".metadata"):
            # The metadata file is read before any plan exists: no ranges can be known for it.
            log.debug("Reading %s with SequentialS3Reader", key)
            return SequentialS3Reader(bucket, key, get_object_info, get_stream)
        uri = f"s3://{bucket}/{key}"
        ranges = self._item_ranges_by_file.get(uri)
        if not ranges or all(r.end == r.start for r in ranges):
            log.info("No DCP item ranges known for %s; reading it with SequentialS3Reader", uri)
            return SequentialS3Reader(bucket, key, get_object_info, get_stream)
        return DCPOptimizedS3Reader(
            bucket,
            key,
            item_ranges=ranges,
            get_object_info=get_object_info,
            get_stream=get_stream,
            max_gap_size=self.max_gap_size,
        )
