"""DCP-optimized reader and constructor: coalesced GETs, item-by-item access, torch's calls."""

from __future__ import annotations

import io
import logging
import os
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Dict, Iterator, List, Optional, Tuple

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from s3torch.s3reader import (
    DCPOptimizedConstructor,
    DCPOptimizedS3Reader,
    ItemRange,
    S3ReaderConstructor,
    SequentialS3Reader,
    _chunks,
    coalesce_ranges,
)
from s3torch.s3reader.dcp_optimized import DEFAULT_MAX_GAP_SIZE

try:
    from .test_s3reader_support import FakeObject, pattern
except ImportError:
    from test_s3reader_support import FakeObject, pattern

R = ItemRange
INF = float("inf")


def dcp_reader(
    obj: FakeObject, ranges: List[ItemRange], max_gap_size: float = DEFAULT_MAX_GAP_SIZE
) -> DCPOptimizedS3Reader:
    return DCPOptimizedS3Reader(
        "bucket",
        "ckpt/__0_0.distcp",
        item_ranges=ranges,
        get_object_info=obj.get_object_info,
        get_stream=obj.get_stream,
        max_gap_size=max_gap_size,
    )


def read_items(reader: DCPOptimizedS3Reader, ranges: List[ItemRange]) -> List[bytes]:
    out = []
    for r in ranges:
        reader.seek(r.start)
        out.append(reader.read(r.end - r.start))
    return out


# --- GETs -----------------------------------------------------------------------------------------

RANGES = [R(0, 10), R(10, 25), R(40, 50), R(200, 260), R(265, 300), R(900, 1000)]


@pytest.mark.parametrize(
    "gap, groups",
    [
        (0, [(0, 25), (40, 50), (200, 260), (265, 300), (900, 1000)]),
        (5, [(0, 25), (40, 50), (200, 300), (900, 1000)]),
        (DEFAULT_MAX_GAP_SIZE, [(0, 1000)]),
        (INF, [(0, 1000)]),
    ],
)
@pytest.mark.parametrize("chunk", [1, 7, 64, 4096])
def test_one_get_per_group_and_nothing_outside(gap: float, groups: List[Tuple[int, int]], chunk: int) -> None:
    data = pattern(1200)
    obj = FakeObject(data, chunk_size=chunk)
    reader = dcp_reader(obj, RANGES, gap)
    assert [(g.start, g.end) for g in reader.range_groups] == groups
    assert obj.gets == []  # lazy: nothing before the first read
    assert read_items(reader, RANGES) == [data[r.start : r.end] for r in RANGES]
    assert obj.gets == groups
    assert reader.stats.get_requests == len(groups)
    assert reader.stats.bytes_fetched == sum(e - s for s, e in groups)
    assert reader.stats.bytes_returned == sum(r.end - r.start for r in RANGES)
    assert obj.bytes_served <= reader.stats.bytes_fetched


def test_groups_open_when_their_first_item_is_read() -> None:
    obj = FakeObject(pattern(1200), chunk_size=16)
    reader = dcp_reader(obj, RANGES, 0)
    reader.seek(0)
    reader.read(10)
    assert obj.gets == [(0, 25)]
    reader.read(15)
    assert obj.gets == [(0, 25)]
    reader.seek(40)
    reader.read(1)
    assert obj.gets == [(0, 25), (40, 50)]
    assert obj.streams[0].closed  # the previous group's GET is let go


def test_previous_item_chunks_are_released() -> None:
    # 16 items of 1000 bytes in 100-byte chunks, one GET: at most the current item's chunks (plus
    # one shared boundary chunk) stay referenced.
    ranges = [R(i * 1000, (i + 1) * 1000) for i in range(16)]
    obj = FakeObject(pattern(16_000), chunk_size=100)
    reader = dcp_reader(obj, ranges, INF)
    for r in ranges:
        reader.seek(r.start)
        assert len(reader.read(r.end - r.start)) == 1000
        assert obj.live_chunks() <= 11
    reader.close()
    assert obj.live_chunks() == 0


def test_unaligned_items_share_boundary_chunks() -> None:
    ranges = [R(3, 10), R(10, 11), R(11, 30), R(33, 34), R(50, 95)]
    data = pattern(100)
    for chunk in (1, 4, 10, 13, 100):
        obj = FakeObject(data, chunk_size=chunk)
        reader = dcp_reader(obj, ranges, INF)
        assert read_items(reader, ranges) == [data[r.start : r.end] for r in ranges]
        assert obj.gets == [(3, 95)]


def test_zero_length_items_are_skipped() -> None:
    data = pattern(100)
    obj = FakeObject(data, chunk_size=8)
    reader = dcp_reader(obj, [R(0, 0), R(5, 20), R(20, 20), R(30, 40)], 0)
    assert reader.item_ranges == [R(5, 20), R(30, 40)]
    reader.seek(20)
    assert reader.read(0) == b""  # zero-length reads need no item
    assert read_items(reader, [R(5, 20), R(30, 40)]) == [data[5:20], data[30:40]]


# --- access pattern rules -------------------------------------------------------------------------


def test_out_of_pattern_reads_name_the_range_and_the_fallback() -> None:
    obj = FakeObject(pattern(1200), chunk_size=16)
    reader = dcp_reader(obj, RANGES)
    reader.seek(40)  # skipping item 0 and 1
    with pytest.raises(ValueError) as e:
        reader.read(10)
    message = str(e.value)
    assert "40-50" in message and "0-10" in message  # the range, and the item expected next
    assert "S3ReaderConstructor.default()" in message
    assert obj.gets == []

    reader.seek(0)
    reader.read(10)
    reader.seek(5)
    with pytest.raises(ValueError, match=r"range 5-15 .*current item \(0-10\).*next item \(10-25\)"):
        reader.read(10)  # spans two items
    reader.seek(10)
    reader.read(15)
    reader.seek(0)
    with pytest.raises(ValueError, match="0-4"):
        reader.read(4)  # an item already passed
    reader.seek(30)
    with pytest.raises(ValueError, match="30-31"):
        reader.readinto(bytearray(1))  # a gap between items
    # Errors leave the reader usable.
    reader.seek(40)
    assert reader.read(10) == pattern(1200)[40:50]


def test_reads_after_the_last_item_are_errors() -> None:
    obj = FakeObject(pattern(100), chunk_size=16)
    reader = dcp_reader(obj, [R(0, 10)])
    reader.read(10)
    with pytest.raises(ValueError, match="last item"):
        reader.read(1)


@pytest.mark.parametrize("size", [None, -1])
def test_read_to_end_is_not_supported(size: Optional[int]) -> None:
    reader = dcp_reader(FakeObject(pattern(100)), [R(0, 10)])
    with pytest.raises(ValueError, match="S3ReaderConstructor.default()"):
        reader.read(size)


def test_random_access_inside_the_current_item() -> None:
    data = pattern(500)
    obj = FakeObject(data, chunk_size=9)
    reader = dcp_reader(obj, [R(100, 300), R(300, 400)])
    reader.seek(290)
    assert reader.read(10) == data[290:300]  # end of the item first (like a zip directory)
    reader.seek(100)
    assert reader.read(4) == data[100:104]
    buf = bytearray(150)
    reader.seek(120)
    assert reader.readinto(buf) == 150 and bytes(buf) == data[120:270]
    assert reader.seek(300) == 300 and reader.tell() == 300  # parked at the item's end
    assert reader.read(100) == data[300:400]
    assert len(obj.gets) == 1


def test_seek_semantics() -> None:
    obj = FakeObject(pattern(100))
    reader = dcp_reader(obj, [R(0, 10)])
    with pytest.raises(ValueError, match="negative seek value"):
        reader.seek(-1)
    with pytest.raises(ValueError, match="whence"):
        reader.seek(0, 7)
    assert reader.seek(5000) == 5000  # size unknown: nothing is fetched to clamp
    assert obj.info_calls == 0 and obj.gets == []
    assert reader.seek(-10, io.SEEK_END) == 90
    assert reader.seek(5000) == 100  # clamped now that the size is known
    assert reader.read(3) == b""
    assert obj.info_calls == 1


def test_constructor_arguments_are_validated() -> None:
    obj = FakeObject(pattern(10))
    args: Dict[str, Any] = dict(get_object_info=obj.get_object_info, get_stream=obj.get_stream)
    with pytest.raises(ValueError, match="Bucket"):
        DCPOptimizedS3Reader("", "k", [R(0, 1)], **args)
    with pytest.raises(ValueError, match="Key"):
        DCPOptimizedS3Reader("b", "", [R(0, 1)], **args)
    with pytest.raises(ValueError, match="No non-empty"):
        DCPOptimizedS3Reader("b", "k", [R(3, 3)], **args)
    with pytest.raises(ValueError, match="Overlapping"):
        DCPOptimizedS3Reader("b", "k", [R(0, 5), R(4, 8)], **args)
    with pytest.raises(ValueError, match="Unsorted"):
        DCPOptimizedS3Reader("b", "k", [R(4, 8), R(0, 2)], **args)
    with pytest.raises(ValueError, match="max_gap_size"):
        DCPOptimizedS3Reader("b", "k", [R(0, 1)], max_gap_size=-1, **args)


def test_readinto_and_close() -> None:
    data = pattern(100)
    obj = FakeObject(data, chunk_size=7)
    reader = dcp_reader(obj, [R(0, 50)])
    with pytest.raises(TypeError, match="writable"):
        reader.readinto(b"read-only")
    buf = bytearray(20)
    assert reader.readinto(buf) == 20 and bytes(buf) == data[:20]
    assert reader.readinto(bytearray(0)) == 0
    reader.close()
    assert obj.streams[0].closed and obj.live_chunks() == 0
    with pytest.raises(ValueError, match="closed file"):
        reader.read(1)
    with pytest.raises(ValueError, match="closed file"):
        reader.seek(0)


def test_short_object_is_a_clear_error() -> None:
    obj = FakeObject(pattern(50), chunk_size=8)
    reader = dcp_reader(obj, [R(0, 10), R(40, 80)])
    reader.read(10)
    reader.seek(40)
    with pytest.raises(ValueError, match="ended at byte 50"):
        reader.read(40)


def test_failed_get_fails_later_reads_too() -> None:
    class Boom(OSError):
        pass

    obj = FakeObject(pattern(100), chunk_size=8)
    calls = []

    def flaky(start: Optional[int] = None, end: Optional[int] = None) -> Any:
        stream = obj.get_stream(start, end)
        original = stream._next_chunk

        def next_chunk() -> memoryview:
            calls.append(1)
            if len(calls) == 3:
                raise Boom("connection reset")
            return original()

        stream._next_chunk = next_chunk  # type: ignore[method-assign]
        return stream

    reader = DCPOptimizedS3Reader("b", "k", [R(0, 10), R(10, 40)], obj.get_object_info, flaky)
    assert reader.read(10) == pattern(100)[:10]
    with pytest.raises(Boom):
        reader.read(30)
    with pytest.raises(Boom):
        reader.read(30)


def test_large_items_are_not_held_as_part_buffers(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(_chunks, "PINNED_LIMIT_BYTES", 100)
    data = pattern(2000)
    ranges = [R(5, 50), R(53, 1000), R(1000, 1003), R(1010, 1900)]
    obj = FakeObject(data, chunk_size=64)
    reader = dcp_reader(obj, ranges, INF)
    for r in ranges:
        reader.seek(r.start)
        assert reader.read(r.end - r.start) == data[r.start : r.end]
        assert obj.live_chunks() <= 2
        # Random access inside the (heap-held) item still works.
        reader.seek(r.end - 2)
        assert reader.read(2) == data[r.end - 2 : r.end]
    assert obj.gets == [(5, 1900)]


# --- hypothesis: valid plans read item after item, plus one out-of-pattern access ----------------


@dataclass
class Plan:
    size: int
    ranges: List[ItemRange]
    chunk: int
    gap: float


@st.composite
def plans(draw: st.DrawFn) -> Plan:
    ranges = []
    pos = draw(st.integers(0, 20))
    for _ in range(draw(st.integers(1, 8))):
        pos += draw(st.sampled_from([0, 0, 1, 3, 10, 40]))
        length = draw(st.integers(0, 60))
        ranges.append(R(pos, pos + length))
        pos += length
    if all(r.end == r.start for r in ranges):
        ranges.append(R(pos, pos + draw(st.integers(1, 30))))
        pos = ranges[-1].end
    size = pos + draw(st.integers(0, 20))
    return Plan(
        size,
        ranges,
        draw(st.integers(1, 70)),
        draw(st.sampled_from([0, 1, 5, 32, DEFAULT_MAX_GAP_SIZE, INF])),
    )


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(plan=plans(), data=st.data())
def test_item_sequential_access_matches_bytes(plan: Plan, data: st.DataObject) -> None:
    content = pattern(plan.size, seed=plan.size)
    obj = FakeObject(content, chunk_size=plan.chunk)
    reader = dcp_reader(obj, plan.ranges, plan.gap)
    items = [r for r in plan.ranges if r.end > r.start]
    for r in items:
        # Inside an item: any number of reads of any sub-range, in any order.
        for _ in range(data.draw(st.integers(0, 3))):
            a = data.draw(st.integers(r.start, r.end))
            b = data.draw(st.integers(a, r.end))
            reader.seek(a)
            if data.draw(st.booleans()):
                assert reader.read(b - a) == content[a:b]
            else:
                buf = bytearray(b - a)
                assert reader.readinto(buf) == b - a and bytes(buf) == content[a:b]
        # Then the whole item, in one or several pieces.
        reader.seek(r.start)
        cuts = sorted(data.draw(st.lists(st.integers(r.start, r.end), max_size=3)))
        bounds = [r.start, *cuts, r.end]
        got = b"".join(reader.read(b - a) for a, b in zip(bounds, bounds[1:]))
        assert got == content[r.start : r.end]
        assert reader.tell() == r.end
    groups = coalesce_ranges(plan.ranges, plan.gap)
    assert obj.gets == [(g.start, g.end) for g in groups]
    # Every byte requested belongs to a group (never the whole object "just in case").
    assert obj.bytes_served <= sum(g.end - g.start for g in groups)

    # Out of pattern: before the last item, inside a gap, or spanning past the last item.
    last = items[-1]
    choices = [(last.start - 1, 2), (last.end - 1, 2), (last.end, 1)]
    if len(items) > 1:
        choices.append((items[-2].start, 1))
    start, length = data.draw(st.sampled_from(choices))
    if start < 0:
        return
    reader.seek(start)
    with pytest.raises(ValueError, match=r"S3ReaderConstructor\.default\(\)"):
        reader.read(length)
    # The current item is still served after the error.
    reader.seek(last.start)
    assert reader.read(last.end - last.start) == content[last.start : last.end]


# --- the calls torch makes ------------------------------------------------------------------------


def _saved(obj: Any) -> bytes:
    buf = io.BytesIO()
    torch.save(obj, buf)
    return buf.getvalue()


def test_torch_load_through_dcp_reader_view() -> None:
    """torch's FileSystemReader: _create_file_view(stream, offset, length) then torch.load or
    read(-1) for bytes items, one item after the other."""
    from torch.distributed.checkpoint.utils import _create_file_view

    tensors = [torch.arange(n, dtype=torch.float32) * (i + 1) for i, n in enumerate([5, 70_000, 1])]
    blobs = [_saved(t) for t in tensors] + [b"opaque bytes item"]
    layout, content, pos = [], b"", 0
    for blob in blobs:
        content += b"\x00" * 13  # gaps between items (other ranks' data)
        pos += 13
        layout.append(R(pos, pos + len(blob)))
        content += blob
        pos += len(blob)
    for gap, chunk in [(0, 4096), (INF, 1000), (DEFAULT_MAX_GAP_SIZE, 8 * 1024 * 1024)]:
        obj = FakeObject(content, chunk_size=chunk)
        reader = dcp_reader(obj, layout, gap)
        for r, expected in zip(layout[:3], tensors):
            view = _create_file_view(reader, r.start, r.end - r.start)
            loaded = torch.load(view, map_location="cpu", weights_only=True)
            assert torch.equal(loaded, expected)
        view = _create_file_view(reader, layout[3].start, layout[3].end - layout[3].start)
        assert view.read(-1) == b"opaque bytes item"
        assert len(obj.gets) == len(coalesce_ranges(layout, gap))


class _FakeS3FileSystem:
    """Stands in for S3FileSystem: opens objects of a dict through a reader constructor."""

    def __init__(self, objects: Dict[str, FakeObject], constructor: Any) -> None:
        self.objects = objects
        self.constructor = constructor
        self.readers: List[Any] = []

    def init_path(self, path: Any) -> str:
        return str(path)

    def concat_path(self, path: Any, suffix: str) -> str:
        return str(path).rstrip("/") + "/" + suffix

    @contextmanager
    def create_stream(self, path: Any, mode: str) -> Iterator[Any]:
        bucket, key = str(path)[len("s3://") :].split("/", 1)
        obj = self.objects[key]
        reader = self.constructor(bucket, key, obj.get_object_info, obj.get_stream)
        self.readers.append(reader)
        with reader:
            yield reader


@pytest.mark.filterwarnings("ignore:torch.distributed is disabled")
@pytest.mark.parametrize("gap", [0, DEFAULT_MAX_GAP_SIZE, INF])
def test_dcp_load_with_torch_filesystem_reader(tmp_path: Any, gap: float) -> None:
    """A real DCP checkpoint (saved by torch to a local dir) loads through torch's own
    FileSystemReader.read_data with the DCP-optimized constructor behind it."""
    import torch.distributed.checkpoint as dcp
    from torch.distributed.checkpoint import FileSystemReader, FileSystemWriter
    from torch.distributed.checkpoint.planner import LoadPlan

    state = {
        "a": torch.randn(64, 33),
        "b": torch.arange(1000, dtype=torch.int64),
        "nested": {"c": torch.ones(3, dtype=torch.bfloat16), "d": torch.zeros(0)},
        "step": 7,
        "blob": io.BytesIO(b"xyz" * 100),
    }
    dcp.save(state, storage_writer=FileSystemWriter(str(tmp_path), thread_count=1))
    objects = {
        f"ckpt/{name}": FakeObject((tmp_path / name).read_bytes(), chunk_size=512)
        for name in os.listdir(tmp_path)
    }
    constructor = S3ReaderConstructor.dcp_optimized(gap)

    class Reader(FileSystemReader):
        def prepare_local_plan(self, plan: LoadPlan) -> LoadPlan:
            # What S3StorageReader does: sort by file and offset, then inject the ranges.
            def order(item: Any) -> Tuple[str, int]:
                info = self.storage_data[item.storage_index]
                return info.relative_path, info.offset

            plan = LoadPlan(sorted(plan.items, key=order), plan.storage_data, plan.planner_data)
            constructor.set_item_ranges_by_file(plan.items, self.storage_data, self.path)
            return plan

    reader = Reader("s3://bucket/ckpt")
    reader.path = "s3://bucket/ckpt"  # torch made it a Path ("s3:/bucket/ckpt"); S3 keeps a str
    reader.fs = _FakeS3FileSystem(objects, constructor)
    target = {
        "a": torch.empty(64, 33),
        "b": torch.empty(1000, dtype=torch.int64),
        "nested": {"c": torch.empty(3, dtype=torch.bfloat16), "d": torch.empty(0)},
        "step": 0,
        "blob": io.BytesIO(),
    }
    dcp.load(target, storage_reader=reader)
    assert torch.equal(target["a"], state["a"]) and torch.equal(target["b"], state["b"])
    assert torch.equal(target["nested"]["c"], state["nested"]["c"])
    assert target["step"] == 7
    assert target["blob"].getvalue() == b"xyz" * 100
    kinds = {type(r).__name__ for r in reader.fs.readers}
    assert kinds == {"SequentialS3Reader", "DCPOptimizedS3Reader"}  # .metadata + data files


# --- DCPOptimizedConstructor ---------------------------------------------------------------------


@dataclass
class StorageInfo:
    relative_path: str
    offset: int
    length: int


@dataclass
class ReadItem:
    storage_index: str


def _plan(entries: List[Tuple[str, int, int]]) -> Tuple[List[ReadItem], Dict[str, StorageInfo]]:
    items, storage = [], {}
    for i, (path, offset, length) in enumerate(entries):
        storage[f"idx{i}"] = StorageInfo(path, offset, length)
        items.append(ReadItem(f"idx{i}"))
    return items, storage


@pytest.mark.parametrize("base", ["s3://bucket/prefix", "s3://bucket/prefix/"])
def test_set_item_ranges_by_file_builds_s3_uris(base: str) -> None:
    constructor = DCPOptimizedConstructor()
    items, storage = _plan([("__0_0.distcp", 0, 10), ("__1_0.distcp", 5, 5), ("__0_0.distcp", 20, 4)])
    constructor.set_item_ranges_by_file(items, storage, base)  # type: ignore[arg-type]
    assert constructor._item_ranges_by_file == {
        "s3://bucket/prefix/__0_0.distcp": [R(0, 10), R(20, 24)],
        "s3://bucket/prefix/__1_0.distcp": [R(5, 10)],
    }
    # A second call replaces the first.
    items, storage = _plan([("__2_0.distcp", 0, 1)])
    constructor.set_item_ranges_by_file(items, storage, base)  # type: ignore[arg-type]
    assert list(constructor._item_ranges_by_file) == ["s3://bucket/prefix/__2_0.distcp"]


def test_set_item_ranges_by_file_edge_cases() -> None:
    constructor = DCPOptimizedConstructor()
    constructor.set_item_ranges_by_file([], {}, "s3://b/p")  # a rank with nothing to load
    assert constructor._item_ranges_by_file == {}
    items, _ = _plan([("f", 0, 1)])
    with pytest.raises(ValueError, match="storage_data"):
        constructor.set_item_ranges_by_file(items, {}, "s3://b/p")  # type: ignore[arg-type]
    # Several read items on the same stored bytes: fetched and served once.
    items = [ReadItem("x"), ReadItem("x")]
    storage = {"x": StorageInfo("f", 4, 6)}
    constructor.set_item_ranges_by_file(items, storage, "s3://b/p")  # type: ignore[arg-type]
    assert constructor._item_ranges_by_file == {"s3://b/p/f": [R(4, 10)]}


def test_constructor_picks_the_reader_per_key(caplog: pytest.LogCaptureFixture) -> None:
    constructor = S3ReaderConstructor.dcp_optimized(max_gap_size=0)
    assert isinstance(constructor, DCPOptimizedConstructor)
    assert constructor.max_gap_size == 0
    items, storage = _plan([("__0_0.distcp", 0, 10), ("__0_0.distcp", 20, 5)])
    constructor.set_item_ranges_by_file(items, storage, "s3://bucket/ckpt")  # type: ignore[arg-type]
    obj = FakeObject(pattern(100))

    def make(key: str) -> Any:
        return constructor("bucket", key, obj.get_object_info, obj.get_stream)

    reader = make("ckpt/__0_0.distcp")
    assert isinstance(reader, DCPOptimizedS3Reader)
    assert reader.item_ranges == [R(0, 10), R(20, 25)] and len(reader.range_groups) == 2
    assert isinstance(make("ckpt/.metadata"), SequentialS3Reader)
    assert isinstance(make("ckpt/__3.metadata"), SequentialS3Reader)
    with caplog.at_level(logging.INFO):
        fallback = make("ckpt/__9_0.distcp")  # no ranges for this file
    assert isinstance(fallback, SequentialS3Reader)
    assert "No DCP item ranges" in caplog.text
    assert obj.gets == [] and obj.info_calls == 0  # constructing readers fetches nothing


@pytest.mark.parametrize("gap", [-1, -0.1, float("nan")])
def test_dcp_optimized_rejects_negative_gap(gap: float) -> None:
    with pytest.raises(ValueError, match="max_gap_size"):
        S3ReaderConstructor.dcp_optimized(gap)
    with pytest.raises(TypeError, match="max_gap_size"):
        S3ReaderConstructor.dcp_optimized("32")  # type: ignore[arg-type]
