"""Readers through the real client against local S3 servers.

Request counts are taken by the recording proxy (``s3torch.testing.S3Proxy``) between client and
server, so they are what the server saw, not what the readers believe they did.
"""

from __future__ import annotations

import hashlib
import io
import os
from typing import Any, Callable, List, Optional, Tuple

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

MiB = 1024 * 1024

import s3torch._core  # noqa: E402,F401  (a broken build must fail here, not skip)
from s3torch import S3ReaderConstructor  # noqa: E402
from s3torch.s3reader import (  # noqa: E402
    DCPOptimizedS3Reader,
    ItemRange,
    RangedS3Reader,
    SequentialS3Reader,
    coalesce_ranges,
)


def upload(client: Any, bucket: str, key: str, data: bytes) -> None:
    with client.put_object(bucket, key) as writer:
        writer.write(data)


def gets(proxy: Any) -> List[Optional[Tuple[int, Optional[int]]]]:
    """The Range of every GET the server received, in order."""
    proxy.wait_idle()
    return [r.range for r in proxy.requests if r.method == "GET" and "list-type" not in r.query]


def heads(proxy: Any) -> int:
    proxy.wait_idle()
    return proxy.count("HEAD")


def object_info(client: Any, bucket: str, key: str) -> Any:
    for page in client.list_objects(bucket, prefix=key):
        for info in page.object_info:
            if info.key == key:
                return info
    raise AssertionError(f"{key} not listed")


CONSTRUCTORS = {
    "sequential": S3ReaderConstructor.sequential,
    "range_based": S3ReaderConstructor.range_based,
    "range_based_small": lambda: S3ReaderConstructor.range_based(64 * 1024),
    "range_based_unbuffered": lambda: S3ReaderConstructor.range_based(0),
}


@pytest.mark.parametrize("kind", list(CONSTRUCTORS))
@pytest.mark.parametrize("size", [0, 1, 300_000, 9 * MiB + 3])
def test_whole_object_and_pieces(
    server: Any, bucket: str, make_client: Callable[..., Any], kind: str, size: int
) -> None:
    client = make_client(server)
    data = os.urandom(size)
    upload(client, bucket, "obj", data)
    reader = client.get_object(bucket, "obj", reader_constructor=CONSTRUCTORS[kind]())
    assert reader.read() == data
    reader.seek(size // 3)
    buf = bytearray(size // 2 + 1)
    n = reader.readinto(buf)
    assert bytes(buf[:n]) == data[size // 3 : size // 3 + size // 2 + 1]
    if size:
        assert reader.seek(-1, io.SEEK_END) == size - 1
        assert reader.read(10) == data[-1:]
    else:
        with pytest.raises(ValueError, match="negative seek value"):
            reader.seek(-1, io.SEEK_END)
    assert reader.read(10) == b""


def test_sequential_requests(
    seaweed_server: Any,
    seaweed_bucket: str,
    make_client: Callable[..., Any],
    proxy_factory: Callable[..., Any],
) -> None:
    data = os.urandom(300_000)
    upload(make_client(seaweed_server), seaweed_bucket, "seq", data)
    proxy = proxy_factory(seaweed_server)
    client = make_client(seaweed_server, endpoint=proxy.endpoint)

    reader = client.get_object(seaweed_bucket, "seq")
    assert isinstance(reader, SequentialS3Reader)
    reader.seek(0)
    assert gets(proxy) == [] and heads(proxy) == 0  # lazy: nothing before the first read
    for i in range(300):
        assert reader.read(1000) == data[i * 1000 : (i + 1) * 1000]
    reader.seek(12345)
    assert reader.read(10) == data[12345:12355]
    assert reader.seek(0, io.SEEK_END) == len(data)  # size from the GET response: no HEAD
    assert len(gets(proxy)) == 1 and heads(proxy) == 0

    proxy.reset()
    fresh = client.get_object(seaweed_bucket, "seq")
    assert fresh.seek(-10, io.SEEK_END) == len(data) - 10  # before any GET: one HEAD
    assert fresh.seek(-20, io.SEEK_END) == len(data) - 20
    assert heads(proxy) == 1 and gets(proxy) == []

    proxy.reset()
    info = object_info(client, seaweed_bucket, "seq")
    proxy.reset()
    listed = client.get_object(seaweed_bucket, "seq", object_info=info)
    assert listed.seek(-10, io.SEEK_END) == len(data) - 10
    assert listed.read() == data[-10:]
    assert heads(proxy) == 0  # object info from a listing: never a HEAD


def test_range_based_requests(
    seaweed_server: Any,
    seaweed_bucket: str,
    make_client: Callable[..., Any],
    proxy_factory: Callable[..., Any],
) -> None:
    data = os.urandom(200_000)
    upload(make_client(seaweed_server), seaweed_bucket, "ranged", data)
    proxy = proxy_factory(seaweed_server)
    client = make_client(seaweed_server, endpoint=proxy.endpoint)
    info = object_info(client, seaweed_bucket, "ranged")
    proxy.reset()

    reader = client.get_object(
        seaweed_bucket, "ranged", object_info=info, reader_constructor=S3ReaderConstructor.range_based()
    )
    for i in range(200):
        assert reader.read(1000) == data[i * 1000 : (i + 1) * 1000]
    assert len(gets(proxy)) <= 2 and heads(proxy) == 0

    proxy.reset()
    unbuffered = client.get_object(
        seaweed_bucket, "ranged", object_info=info, reader_constructor=S3ReaderConstructor.range_based(0)
    )
    for i in range(0, 200_000, 10_000):
        unbuffered.seek(i)
        assert unbuffered.read(1000) == data[i : i + 1000]
    assert gets(proxy) == [(i, i + 1000) for i in range(0, 200_000, 10_000)]

    proxy.reset()
    small_buffer = client.get_object(
        seaweed_bucket,
        "ranged",
        object_info=info,
        reader_constructor=S3ReaderConstructor.range_based(10_000),
    )
    assert isinstance(small_buffer, RangedS3Reader)
    small_buffer.seek(50_000)
    buf = bytearray(30_000)
    assert small_buffer.readinto(buf) == 30_000 and bytes(buf) == data[50_000:80_000]
    assert small_buffer.read(100) == data[80_000:80_100]
    assert gets(proxy) == [(50_000, 80_000), (80_000, 90_000)]  # bypass, then buffer fill

    proxy.reset()
    headed = client.get_object(seaweed_bucket, "ranged", reader_constructor=S3ReaderConstructor.range_based())
    headed.read(10)
    headed.read(10)
    assert heads(proxy) == 1  # no object info: one HEAD for the size, cached


@pytest.mark.parametrize("gap", [0, 32 * MiB, float("inf")])
def test_dcp_optimized_requests(
    seaweed_server: Any,
    seaweed_bucket: str,
    make_client: Callable[..., Any],
    proxy_factory: Callable[..., Any],
    gap: float,
) -> None:
    data = os.urandom(400_000)
    upload(make_client(seaweed_server), seaweed_bucket, "ckpt/__0_0.distcp", data)
    ranges = [
        ItemRange(100, 5000),
        ItemRange(5000, 90_000),
        ItemRange(120_000, 120_010),
        ItemRange(300_000, 399_000),
    ]
    proxy = proxy_factory(seaweed_server)
    client = make_client(seaweed_server, endpoint=proxy.endpoint)
    constructor = S3ReaderConstructor.dcp_optimized(gap)
    constructor._item_ranges_by_file = {f"s3://{seaweed_bucket}/ckpt/__0_0.distcp": ranges}
    reader = client.get_object(seaweed_bucket, "ckpt/__0_0.distcp", reader_constructor=constructor)
    assert isinstance(reader, DCPOptimizedS3Reader)
    for r in ranges:
        reader.seek(r.start)
        assert reader.read(r.end - r.start) == data[r.start : r.end]
    expected = [(g.start, g.end) for g in coalesce_ranges(ranges, gap)]
    assert gets(proxy) == expected and heads(proxy) == 0
    reader.seek(0)
    with pytest.raises(ValueError, match=r"S3ReaderConstructor\.default\(\)"):
        reader.read(10)


def test_readers_match_model_on_real_objects(
    seaweed_server: Any, seaweed_bucket: str, make_client: Callable[..., Any]
) -> None:
    client = make_client(seaweed_server)
    objects = {size: os.urandom(size) for size in (0, 1, 70_000)}
    for size, data in objects.items():
        upload(client, seaweed_bucket, f"model/{size}", data)

    ops = st.lists(
        st.one_of(
            st.tuples(st.just("read"), st.one_of(st.none(), st.integers(-1, 30_000))),
            st.tuples(st.just("readinto"), st.integers(0, 30_000)),
            st.tuples(st.just("seek"), st.integers(-80_000, 80_000), st.sampled_from([0, 1, 2])),
        ),
        max_size=8,
    )

    @settings(
        max_examples=25,
        deadline=None,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
    )
    @given(size=st.sampled_from(sorted(objects)), kind=st.sampled_from(list(CONSTRUCTORS)), ops=ops)
    def check(size: int, kind: str, ops: List[Tuple[Any, ...]]) -> None:
        data = objects[size]
        reader = client.get_object(seaweed_bucket, f"model/{size}", reader_constructor=CONSTRUCTORS[kind]())
        pos = 0
        for op in ops:
            if op[0] == "read":
                n = op[1]
                expected = data[pos:] if n is None or n < 0 else data[pos : pos + n]
                assert reader.read(n) == expected
                pos += len(expected)
            elif op[0] == "readinto":
                buf = bytearray(op[1])
                expected = data[pos : pos + op[1]]
                assert reader.readinto(buf) == len(expected)
                assert bytes(buf[: len(expected)]) == expected
                pos += len(expected)
            else:
                base = {0: 0, 1: pos, 2: size}[op[2]]
                if base + op[1] < 0:
                    with pytest.raises(ValueError):
                        reader.seek(op[1], op[2])
                else:
                    pos = min(base + op[1], size)
                    assert reader.seek(op[1], op[2]) == pos
            assert reader.tell() == pos
        assert reader.read() == data[pos:]

    check()


def _digest(view: Any) -> str:
    return hashlib.blake2b(view, digest_size=16).hexdigest()


@pytest.mark.timeout(300)
def test_dcp_reader_memory_stays_bounded(
    seaweed_server: Any, seaweed_bucket: str, make_client: Callable[..., Any]
) -> None:
    """Walking a 256 MiB file of items (one GET, max_gap inf) with a 64 MiB pool: the pool never
    grows past its limit, the load does not stall, and every item is right."""
    size = 256 * MiB
    limit = 64 * MiB
    item = 3 * MiB + 12_345  # not aligned with the 8 MiB parts
    gap = 100_000
    block = os.urandom(16 * MiB)
    writer = make_client(seaweed_server)
    with writer.put_object(seaweed_bucket, "big.distcp") as w:
        for _ in range(size // len(block)):
            w.write(block)
    ranges = []
    pos = 0
    while pos + item <= size:
        ranges.append(ItemRange(pos, pos + item))
        pos += item + gap

    def expected(r: ItemRange) -> str:
        h = hashlib.blake2b(digest_size=16)
        offset = r.start
        while offset < r.end:
            a = offset % len(block)
            n = min(len(block) - a, r.end - offset)
            h.update(memoryview(block)[a : a + n])
            offset += n
        return h.hexdigest()

    client = make_client(seaweed_server, memory_limit_bytes=limit)
    constructor = S3ReaderConstructor.dcp_optimized(float("inf"))
    constructor._item_ranges_by_file = {f"s3://{seaweed_bucket}/big.distcp": ranges}
    reader = client.get_object(seaweed_bucket, "big.distcp", reader_constructor=constructor)
    out = bytearray(item)
    for r in ranges:
        reader.seek(r.start)
        assert reader.readinto(out) == item
        assert _digest(out) == expected(r)
    stats = client.stats()
    assert reader.stats.get_requests == 1
    assert stats["peak_bytes"] <= limit
    reader.close()

    # The sequential reader over the same object with the same pool does not stall either.
    sequential = client.get_object(seaweed_bucket, "big.distcp")
    total = 0
    while chunk := sequential.read(32 * MiB):
        total += len(chunk)
    assert total == size
    assert client.stats()["peak_bytes"] <= limit


@pytest.mark.filterwarnings("ignore:torch.distributed is disabled")
@pytest.mark.parametrize("gap", [0, float("inf")])
def test_torch_filesystem_reader_loads_through_dcp_reader(
    seaweed_server: Any,
    seaweed_bucket: str,
    make_client: Callable[..., Any],
    proxy_factory: Callable[..., Any],
    tmp_path: Any,
    gap: float,
) -> None:
    """torch's own FileSystemReader.read_data (seek, _ReaderView, torch.load) over real chunks."""
    from contextlib import contextmanager

    import torch
    import torch.distributed.checkpoint as dcp
    from torch.distributed.checkpoint import FileSystemReader, FileSystemWriter
    from torch.distributed.checkpoint.planner import LoadPlan

    state = {
        "w": torch.randn(1024, 1024),  # 4 MiB: items cross 8 MiB part boundaries
        "b": torch.randn(3_000_000),
        "i": torch.arange(10, dtype=torch.int32),
        "blob": io.BytesIO(b"payload" * 1000),
    }
    dcp.save(state, storage_writer=FileSystemWriter(str(tmp_path), thread_count=1))
    uploader = make_client(seaweed_server)
    for name in os.listdir(tmp_path):
        upload(uploader, seaweed_bucket, f"ckpt/{name}", (tmp_path / name).read_bytes())
    proxy = proxy_factory(seaweed_server)
    client = make_client(seaweed_server, endpoint=proxy.endpoint)
    constructor = S3ReaderConstructor.dcp_optimized(gap)
    base = f"s3://{seaweed_bucket}/ckpt"

    class FS:
        def init_path(self, path: Any) -> str:
            return str(path)

        def concat_path(self, path: Any, suffix: str) -> str:
            return f"{path}/{suffix}"

        @contextmanager
        def create_stream(self, path: Any, mode: str) -> Any:
            key = str(path)[len(f"s3://{seaweed_bucket}/") :]
            with client.get_object(seaweed_bucket, key, reader_constructor=constructor) as r:
                yield r

    class Reader(FileSystemReader):
        def prepare_local_plan(self, plan: LoadPlan) -> LoadPlan:
            def order(item: Any) -> Tuple[str, int]:
                info = self.storage_data[item.storage_index]
                return info.relative_path, info.offset

            plan = LoadPlan(sorted(plan.items, key=order), plan.storage_data, plan.planner_data)
            constructor.set_item_ranges_by_file(plan.items, self.storage_data, base)
            return plan

    reader = Reader(base)
    reader.path = base
    reader.fs = FS()
    target = {
        "w": torch.empty(1024, 1024),
        "b": torch.empty(3_000_000),
        "i": torch.empty(10, dtype=torch.int32),
        "blob": io.BytesIO(),
    }
    dcp.load(target, storage_reader=reader)
    for name in ("w", "b", "i"):
        assert torch.equal(target[name], state[name])
    assert target["blob"].getvalue() == b"payload" * 1000
    # The CRT splits a GET longer than a part into part-sized requests: join them back up.
    proxy.wait_idle()
    fetched: List[List[int]] = []
    for request in proxy.requests:
        if request.method == "GET" and request.path.endswith("__0_0.distcp"):
            assert request.range is not None and request.range[1] is not None
            start, end = request.range
            if fetched and fetched[-1][1] == start:
                fetched[-1][1] = end
            else:
                fetched.append([start, end])
    ranges = constructor._item_ranges_by_file[f"{base}/__0_0.distcp"]
    assert [tuple(f) for f in fetched] == [(g.start, g.end) for g in coalesce_ranges(ranges, gap)]
