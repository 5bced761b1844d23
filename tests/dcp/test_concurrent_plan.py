"""Pure logic of the concurrent loader: stream cursor and how a plan becomes ranged GETs."""

from __future__ import annotations

from typing import Any, List

import pytest
import torch
from torch.distributed.checkpoint.filesystem import _StorageInfo
from torch.distributed.checkpoint.metadata import MetadataIndex
from torch.distributed.checkpoint.planner import LoadItemType, LoadPlan, ReadItem

from s3torch import S3Exception
from s3torch.dcp._concurrent import ConcurrentPlanLoader
from s3torch.dcp._cursor import _Cursor, _segments
from s3torch.dcp._sizing import default_max_streams
from s3torch.dcp._tasks import _Hole, _Range
from s3torch.s3reader import ItemRange, coalesce_ranges

MiB = 1024 * 1024


class ChunkStream:
    """Stand-in for GetObjectStream's consumer interface (peek, skip, read_into) over in-memory
    chunks, for the cursor's pure logic; the loader itself and the native stream run against real
    servers in test_dcp_roundtrip and tests/integration."""

    def __init__(self, chunks: List[bytes]) -> None:
        self._chunks = [memoryview(c) for c in chunks if c]

    def _take(self, n: int, dest: Any = None) -> int:
        done = 0
        while done < n and self._chunks:
            head = self._chunks[0]
            k = min(len(head), n - done)
            if dest is not None:
                dest[done : done + k] = head[:k]
            done += k
            if k == len(head):
                self._chunks.pop(0)
            else:
                self._chunks[0] = head[k:]
        return done

    def peek(self, n: int) -> bytes:
        return b"".join(bytes(c) for c in self._chunks)[:n]

    def skip(self, n: int) -> int:
        return self._take(n)

    def read_into(self, buf: Any) -> int:
        dest = memoryview(buf).cast("B")
        return self._take(len(dest), dest)


DATA = bytes(range(256)) * 40


def _stream(sizes: List[int], first: int = 0) -> ChunkStream:
    chunks, pos = [], first
    for s in sizes:
        chunks.append(DATA[pos : pos + s])
        pos += s
    return ChunkStream(chunks)


def _cursor(sizes: List[int], start: int = 1000) -> _Cursor:
    return _Cursor([(_stream(sizes), start + sum(sizes))], start, "bkt", "obj")


def _split_cursor(cut: int, total: int, start: int = 1000) -> _Cursor:
    """DATA[:total] served by two streams, the second from offset ``cut`` on (as _segments splits)."""
    return _Cursor(
        [(_stream([3, cut - 3]), start + cut), (_stream([7, total - cut - 7], cut), start + total)],
        start,
        "bkt",
        "obj",
    )


def test_peek_does_not_consume_and_spans_chunks() -> None:
    cur = _cursor([3, 5, 100])
    assert bytes(cur.peek(2)) == DATA[:2]
    assert bytes(cur.peek(7)) == DATA[:7]
    assert cur.pos == 1000
    assert bytes(cur.read_bytes(4)) == DATA[:4]
    assert cur.pos == 1004
    assert bytes(cur.peek(10)) == DATA[4:14]


def test_skip_and_read_into() -> None:
    cur = _cursor([10, 10, 10, 10, 10])
    cur.peek(15)
    cur.skip_to(1003)
    out = bytearray(30)
    cur.read_into(memoryview(out))
    assert bytes(out) == DATA[3:33]
    cur.skip_to(1045)
    assert bytes(cur.read_bytes(5)) == DATA[45:50]


def test_cursor_moves_across_segments() -> None:
    cur = _split_cursor(20, 60)
    assert cur.peek(30) == DATA[:30]  # a peek across the boundary joins both streams
    assert bytes(cur.read_bytes(15)) == DATA[:15]
    out = bytearray(10)
    cur.read_into(memoryview(out))  # 5 bytes from each stream
    assert bytes(out) == DATA[15:25] and cur.pos == 1025
    cur = _split_cursor(20, 60)
    cur.skip_to(1030)  # a skip across the boundary
    assert bytes(cur.read_bytes(30)) == DATA[30:60]
    with pytest.raises(S3Exception, match="obj"):
        cur.read_bytes(1)


def test_a_short_first_segment_is_an_error_not_a_shift() -> None:
    # The first stream ends 5 bytes early: the cursor must not read the second stream's bytes as if
    # they were the missing ones.
    cur = _Cursor([(_stream([15]), 1020), (_stream([40], 20), 1060)], 1000, "bkt", "obj")
    with pytest.raises(S3Exception, match="obj"):
        cur.read_bytes(30)


def test_end_of_stream_is_an_error() -> None:
    cur = _cursor([10])
    with pytest.raises(S3Exception, match="obj") as caught:
        cur.read_bytes(11)
    # A public error that says where the data ended and how much is missing.
    assert caught.value.key == "obj" and caught.value.code == "IncompleteBody"
    assert "offset 1010" in str(caught.value) and "1 bytes short" in str(caught.value)
    cur = _cursor([10])
    with pytest.raises(S3Exception, match="obj"):
        cur.skip_to(1011)
    assert len(_cursor([10]).peek(50)) == 10  # a short peek only says how much there is


def test_cannot_seek_backwards() -> None:
    cur = _cursor([10])
    cur.skip_to(1005)
    with pytest.raises(AssertionError):
        cur.skip_to(1004)


@pytest.mark.parametrize(
    ("start", "end", "align", "expected"),
    [
        (32, 100, 16, [(32, 100)]),  # aligned start
        (10, 40, 16, [(10, 16), (16, 40)]),  # off a boundary and longer than a part
        (5, 22, 16, [(5, 16), (16, 22)]),
        (5, 21, 16, [(5, 21)]),  # one part or less: one request anyway
        (5, 100, 0, [(5, 100)]),  # no alignment known
    ],
)
def test_segments_align_part_requests(start: int, end: int, align: int, expected: list) -> None:
    assert _segments(start, end, align) == expected


def test_a_hole_splits_across_the_streams_of_a_task() -> None:
    """Each stream gets the part of a hole inside its range, aimed at the matching bytes of dest."""
    dest = memoryview(bytearray(range(256)) * 4)  # object byte base + i goes to dest[i]
    hole = _Hole(_Range(1000, 2100, []), start=1100, end=2000, target=torch.empty(0), dest=dest, base=1050)
    assert hole.scatter(0, 1100) is None  # ends where the hole starts
    assert hole.scatter(2000, 3000) is None
    lo = hole.scatter(1000, 1536)
    hi = hole.scatter(1536, 4000)
    assert lo is not None and hi is not None
    assert lo[0] == 1100 and bytes(lo[1]) == bytes(dest[50:486])
    assert hi[0] == 1536 and bytes(hi[1]) == bytes(dest[486:950])
    whole = hole.scatter(0, 10_000)
    assert whole is not None and whole[0] == 1100 and len(whole[1]) == 900


def _item(fqn: str, kind: LoadItemType = LoadItemType.TENSOR) -> ReadItem:
    idx = MetadataIndex(fqn, torch.Size([0]) if kind == LoadItemType.TENSOR else None)
    return ReadItem(
        type=kind,
        dest_index=idx,
        dest_offsets=torch.Size([0]),
        storage_index=idx,
        storage_offsets=torch.Size([0]),
        lengths=torch.Size([1]),
    )


def _loader(storage: dict, **kw: Any) -> ConcurrentPlanLoader:
    return ConcurrentPlanLoader(
        client=None,
        storage_data=storage,
        resolve_uri=lambda rel: ("bkt", f"ck/{rel}"),
        transforms=None,
        planner=None,  # type: ignore[arg-type]
        coalesce=coalesce_ranges,
        item_range=ItemRange,
        max_gap_size=kw.pop("max_gap_size", 32 * MiB),
        max_streams=4,
        **kw,
    )


def test_plan_becomes_coalesced_split_gets() -> None:
    items, storage = [], {}
    # File A: 10 contiguous 8 MiB items; file B: two items 100 MiB apart.
    for i in range(10):
        it = _item(f"a{i}")
        storage[it.storage_index] = _StorageInfo("__0_0.distcp", i * 8 * MiB, 8 * MiB)
        items.append(it)
    for j, off in enumerate((0, 100 * MiB)):
        it = _item(f"b{j}")
        storage[it.storage_index] = _StorageInfo("__1_0.distcp", off, MiB)
        items.append(it)
    loader = _loader(storage, split_bytes=32 * MiB)
    tasks, empty = loader.build_tasks(LoadPlan(items))
    assert not empty
    a = [t for t in tasks if t.key.endswith("__0_0.distcp")]
    b = [t for t in tasks if t.key.endswith("__1_0.distcp")]
    # 80 MiB split at item boundaries once a GET reaches 32 MiB: 32 + 32 + 16.
    assert [(t.start, t.end) for t in a] == [
        (0, 32 * MiB),
        (32 * MiB, 64 * MiB),
        (64 * MiB, 80 * MiB),
    ]
    assert [(t.start, t.end) for t in b] == [(0, MiB), (100 * MiB, 101 * MiB)]
    assert sum(len(t.ranges) for t in tasks) == 12
    assert loader.stats.bytes_needed == 82 * MiB
    assert loader.stats.bytes_fetched == 82 * MiB
    assert loader.stats.files == 2 and loader.stats.items == 12


def test_gaps_within_max_gap_are_fetched_in_one_get() -> None:
    items, storage = [], {}
    for i, off in enumerate((0, 2 * MiB, 10 * MiB)):
        it = _item(f"x{i}")
        storage[it.storage_index] = _StorageInfo("f.distcp", off, MiB)
        items.append(it)
    tasks, _ = _loader(storage, max_gap_size=MiB).build_tasks(LoadPlan(items))
    assert [(t.start, t.end) for t in tasks] == [(0, 3 * MiB), (10 * MiB, 11 * MiB)]
    tasks, _ = _loader(storage, max_gap_size=float("inf")).build_tasks(LoadPlan(items))
    assert [(t.start, t.end) for t in tasks] == [(0, 11 * MiB)]


def test_items_sharing_stored_bytes_are_fetched_once() -> None:
    a = _item("w")
    b = ReadItem(
        type=LoadItemType.TENSOR,
        dest_index=MetadataIndex("w", torch.Size([1])),
        dest_offsets=torch.Size([0]),
        storage_index=a.storage_index,
        storage_offsets=torch.Size([1]),
        lengths=torch.Size([1]),
    )
    storage = {a.storage_index: _StorageInfo("f.distcp", 0, 100)}
    tasks, _ = _loader(storage).build_tasks(LoadPlan([a, b]))
    assert len(tasks) == 1 and len(tasks[0].ranges) == 1
    assert tasks[0].ranges[0].reqs == [a, b]


def test_overlapping_items_are_rejected() -> None:
    a, b = _item("a"), _item("b")
    storage = {
        a.storage_index: _StorageInfo("f.distcp", 0, 100),
        b.storage_index: _StorageInfo("f.distcp", 50, 100),
    }
    with pytest.raises(ValueError, match="Overlapping"):
        _loader(storage).build_tasks(LoadPlan([a, b]))


def test_default_max_streams_follows_memory_limit() -> None:
    class Cfg:
        part_size = 8 * MiB
        memory_limit_bytes = 128 * MiB

    class Client:
        s3client_config = Cfg()

    assert default_max_streams(Client()) == 5  # 3 parts of the pool per stream
    assert default_max_streams(Client(), requested=3) == 3
    Cfg.memory_limit_bytes = 96 * MiB  # S3StorageReader's default for concurrent loads
    assert default_max_streams(Client()) == 4
    Cfg.memory_limit_bytes = 128 * MiB
    assert default_max_streams(Client(), requested=16) == 5  # at least 3 parts per stream
    Cfg.memory_limit_bytes = 8 * MiB
    assert default_max_streams(Client()) == 1
    assert default_max_streams(Client(), requested=4) == 1
    Cfg.memory_limit_bytes = 100 * 1024 * MiB
    assert default_max_streams(Client()) == 8
    assert default_max_streams(Client(), requested=32) == 32


def test_concurrent_reader_defaults_to_a_small_pool() -> None:
    from s3torch import S3ClientConfig, S3ReaderConstructor
    from s3torch.dcp import S3StorageReader

    reader = S3StorageReader("us-east-1", "s3://b/p", endpoint="http://127.0.0.1:9")
    assert reader.fs.client.s3client_config.memory_limit_bytes == 12 * 8 * MiB
    fast = S3StorageReader(
        "us-east-1", "s3://b/p", S3ClientConfig(throughput_target_gbps=40.0), endpoint="http://127.0.0.1:9"
    )
    assert fast.fs.client.s3client_config.memory_limit_bytes == 4 * 12 * 8 * MiB
    mine = S3StorageReader("us-east-1", "s3://b/p", S3ClientConfig(memory_limit_bytes=1 << 30))
    assert mine.fs.client.s3client_config.memory_limit_bytes == 1 << 30
    seq = S3StorageReader("us-east-1", "s3://b/p", reader_constructor=S3ReaderConstructor.sequential())
    assert seq.fs.client.s3client_config.memory_limit_bytes is None


def test_the_default_gap_is_the_concurrent_loaders_own_and_an_explicit_one_is_honoured() -> None:
    """The reference's default (32 MiB) would fetch the 7 MiB gap below; K concurrent streams skip any
    gap over DEFAULT_CONCURRENT_GAP instead. A value the user passes, 32 MiB included, is kept."""
    from s3torch.dcp._concurrent import DEFAULT_CONCURRENT_GAP
    from s3torch.s3reader.dcp_optimized import DEFAULT_MAX_GAP_SIZE

    items, storage = [], {}
    for i, off in enumerate((0, MiB + DEFAULT_CONCURRENT_GAP, 10 * MiB)):
        it = _item(f"g{i}")
        storage[it.storage_index] = _StorageInfo("f.distcp", off, MiB)
        items.append(it)
    assert DEFAULT_MAX_GAP_SIZE == 32 * MiB
    tasks, _ = _loader(storage, max_gap_size=DEFAULT_MAX_GAP_SIZE).build_tasks(LoadPlan(items))
    assert [(t.start, t.end) for t in tasks] == [(0, 2 * MiB + DEFAULT_CONCURRENT_GAP), (10 * MiB, 11 * MiB)]
    tasks, _ = _loader(storage, max_gap_size=32 * MiB).build_tasks(LoadPlan(items))
    assert [(t.start, t.end) for t in tasks] == [(0, 11 * MiB)]
