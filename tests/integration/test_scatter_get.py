"""GET streams that write chosen object ranges straight into caller memory (``scatter=``)."""

from __future__ import annotations

import gc
import os
from typing import List, Tuple

import pytest
import torch

from s3torch import S3Exception
from s3torch.testing import Fault, reset, respond

MiB = 1024 * 1024


@pytest.fixture
def data() -> bytes:
    return os.urandom(21 * MiB + 12345)


def _put(client, bucket: str, key: str, payload: bytes) -> None:
    with client.put_object(bucket, key) as writer:
        writer.write(payload)


def _read_around(stream, start: int, end: int, holes: List[Tuple[int, int]]) -> bytes:
    """The stream's bytes outside ``holes`` (sorted), skipping the scattered ones."""
    out = bytearray()
    pos = start
    for a, b in holes + [(end, end)]:
        if a > pos:
            out += stream.read(a - pos)
        got = stream.skip(b - a)
        assert got == b - a
        pos = b
    assert stream.read() == b""  # nothing after the range
    return bytes(out)


@pytest.mark.parametrize(
    ("start", "end", "holes"),
    [
        # across part boundaries (8 MiB parts), unaligned start, a hole spanning two whole parts
        (7, 21 * MiB, [(100, 3 * MiB), (5 * MiB - 1, 18 * MiB + 5)]),
        # holes touching the range's ends and each other
        (0, 21 * MiB + 12345, [(0, 4096), (4096, 9 * MiB), (21 * MiB, 21 * MiB + 12345)]),
        # a one-part GET with many small holes
        (MiB, 2 * MiB, [(MiB + i * 65536, MiB + i * 65536 + 1000) for i in range(16)]),
    ],
)
def test_scattered_bytes_land_and_the_rest_streams(server, bucket, make_client, data, start, end, holes):
    client = make_client(server)
    if not client.scatter_supported:
        pytest.fail("this build has no scatter support: the bundled CRT is expected in tests")
    _put(client, bucket, "obj", data)
    before = client.stats()
    bufs = [bytearray(b - a) for a, b in holes]
    stream = client.get_object_stream(
        bucket, "obj", start, end, scatter=list(zip([a for a, _ in holes], bufs))
    )
    rest = _read_around(stream, start, end, holes)
    # Once the stream went past them, the scattered ranges are complete.
    for (a, b), buf in zip(holes, bufs):
        assert buf == data[a:b], (a, b)
    expected_rest = b"".join(
        data[p:q] for p, q in zip([start] + [b for _, b in holes], [a for a, _ in holes] + [end]) if q > p
    )
    assert rest == expected_rest
    after = client.stats()
    assert after["scatter_bytes"] - before["scatter_bytes"] == sum(b - a for a, b in holes)
    assert after["scatter_tickets"] > before["scatter_tickets"]


def test_into_a_tensor(seaweed_server, seaweed_bucket, make_client, data):
    client = make_client(seaweed_server)
    _put(client, seaweed_bucket, "obj", data)
    dest = torch.zeros(3 * MiB, dtype=torch.float32)
    view = dest.view(torch.uint8).numpy()
    stream = client.get_object_stream(seaweed_bucket, "obj", 10, 20 * MiB, scatter=[(1000, view)])
    stream.skip(20 * MiB - 10)
    assert view.tobytes() == data[1000 : 1000 + 12 * MiB]


def test_bad_scatter_is_refused(server, bucket, make_client, data):
    client = make_client(server)
    _put(client, bucket, "obj", data[:MiB])
    with pytest.raises(ValueError, match="inside the GET's range"):
        client.get_object_stream(bucket, "obj", 100, 200, scatter=[(150, bytearray(100))])
    with pytest.raises(ValueError, match="disjoint"):
        client.get_object_stream(bucket, "obj", 0, 1000, scatter=[(10, bytearray(20)), (20, bytearray(5))])
    with pytest.raises(ValueError, match="explicit start and end"):
        client.get_object_stream(bucket, "obj", scatter=[(10, bytearray(20))])
    with pytest.raises(BufferError):
        client.get_object_stream(bucket, "obj", 0, 100, scatter=[(0, b"read-only")])
    # A missing object fails like any stream, and an empty scatter is a plain stream.
    with pytest.raises(FileNotFoundError):
        client.get_object_stream(bucket, "nope", 0, 100, scatter=[(0, bytearray(10))]).read()
    assert client.get_object_stream(bucket, "obj", 0, 100, scatter=[]).read() == data[:100]


def test_closing_stops_writes_at_once(seaweed_server, seaweed_bucket, make_client, data):
    """After close() (or dropping the stream) no byte may land in the caller's memory any more."""
    client = make_client(seaweed_server)
    _put(client, seaweed_bucket, "obj", data)
    for _ in range(3):
        buf = bytearray(len(data) - 10)
        stream = client.get_object_stream(seaweed_bucket, "obj", 0, len(data), scatter=[(5, buf)])
        stream.close()
        snapshot = bytes(buf)
        gc.collect()
        # Whatever had landed stays; nothing arrives after the close.
        for _ in range(20):
            assert bytes(buf) == snapshot
        del stream
        gc.collect()
    buf = bytearray(MiB)
    stream = client.get_object_stream(seaweed_bucket, "obj", 0, 2 * MiB, scatter=[(MiB, buf)])
    assert stream.read(MiB) == data[:MiB]
    stream.skip(MiB)
    assert buf == data[MiB : 2 * MiB]  # the client is still fine


@pytest.mark.parametrize("action", [respond(500), reset(after_bytes=3 * MiB)], ids=["500", "reset-mid-body"])
def test_a_failed_part_is_retried_into_the_same_memory(
    seaweed_server, seaweed_bucket, make_client, proxy_factory, data, action
):
    setup = make_client(seaweed_server)
    _put(setup, seaweed_bucket, "obj", data)
    proxy = proxy_factory(seaweed_server)
    fault = proxy.add_fault(Fault(action, method="GET", path="/obj", nth=2, times=1))
    client = make_client(seaweed_server, endpoint=proxy.endpoint)
    buf = bytearray(18 * MiB)
    stream = client.get_object_stream(seaweed_bucket, "obj", 0, len(data), scatter=[(MiB, buf)])
    assert _read_around(stream, 0, len(data), [(MiB, 19 * MiB)]) == data[:MiB] + data[19 * MiB :]
    assert fault.fired == 1
    assert buf == data[MiB : 19 * MiB]
    assert client.stats()["failed_attempts"] >= 1


def test_a_server_that_keeps_failing_gives_its_status(
    seaweed_server, seaweed_bucket, make_client, proxy_factory, data
):
    setup = make_client(seaweed_server)
    _put(setup, seaweed_bucket, "obj", data[: 2 * MiB])
    proxy = proxy_factory(seaweed_server)
    proxy.add_fault(Fault(respond(503), method="GET", path="/obj", times=None))
    client = make_client(seaweed_server, endpoint=proxy.endpoint, max_attempts=2)
    stream = client.get_object_stream(seaweed_bucket, "obj", 0, 2 * MiB, scatter=[(10, bytearray(MiB))])
    with pytest.raises(S3Exception) as info:
        stream.skip(2 * MiB)
    assert info.value.status == 503
