"""GETs straight into caller memory: S3Client.get_object_into, and GET streams with scatter=
(bytes, errors, retries, cancel)."""

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


@pytest.fixture
def behind_fault(seaweed_server, seaweed_bucket, make_client, proxy_factory):
    """``behind_fault(payload, fault, **config) -> (client, fault)``: "obj" in ``seaweed_bucket``
    holds ``payload``; the client's requests pass a proxy that injects ``fault``."""

    def make(payload: bytes, fault: Fault, **config):
        _put(make_client(seaweed_server), seaweed_bucket, "obj", payload)
        proxy = proxy_factory(seaweed_server)
        fault = proxy.add_fault(fault)
        return make_client(seaweed_server, endpoint=proxy.endpoint, **config), fault

    return make


@pytest.mark.parametrize(
    ("start", "length", "part_size"),
    [
        (0, None, 0),  # whole object, client part size: 3 parts
        (7, 13 * MiB + 3, 0),  # unaligned start, partial last part
        (5 * MiB, 2 * MiB, 0),  # one part
        (123, 21 * MiB, 5 * MiB),  # 5 parts of a per-request part size
        (1, 21 * MiB, 64 * MiB),  # one large part
        (21 * MiB + 12340, 5, 0),  # the last bytes
    ],
)
def test_bytes_land_in_place(server, bucket, make_client, data, start, length, part_size):
    client = make_client(server)
    _put(client, bucket, "obj", data)
    length = len(data) - start if length is None else length
    before = client.stats()
    buf = bytearray(length)
    client.get_object_into(bucket, "obj", start, buf, part_size=part_size).wait()
    assert buf == data[start : start + length]
    after = client.stats()
    # Every byte arrived in the caller's buffer: no pool buffer was taken for it.
    assert after["direct_bytes"] - before["direct_bytes"] == length
    assert after["tickets_granted"] == before["tickets_granted"]
    assert after["direct_tickets"] > before["direct_tickets"]
    assert after["direct_fallbacks"] == before["direct_fallbacks"]


def test_into_a_tensor_and_an_empty_range(seaweed_server, seaweed_bucket, make_client, data):
    client = make_client(seaweed_server)
    _put(client, seaweed_bucket, "obj", data)
    dest = torch.zeros(4 * MiB, dtype=torch.float32)
    view = dest.view(torch.uint8).numpy()
    client.get_object_into(seaweed_bucket, "obj", 100, view).wait()
    assert dest.view(torch.uint8).numpy().tobytes() == data[100 : 100 + 16 * MiB]
    client.get_object_into(seaweed_bucket, "obj", 0, bytearray()).wait()  # nothing to fetch


def test_misplaced_parts_are_detected_and_refetched(seaweed_server, seaweed_bucket, make_client, data):
    """If parts ever landed out of order, the GET must notice and redo the range as a stream."""
    from s3torch import _core

    client = make_client(seaweed_server)
    _put(client, seaweed_bucket, "obj", data)
    buf = bytearray(len(data) - 3)
    _core._set_direct_placement_fault(True)
    try:
        client.get_object_into(seaweed_bucket, "obj", 3, buf).wait()
    finally:
        _core._set_direct_placement_fault(False)
    assert buf == data[3:]
    assert client.stats()["direct_fallbacks"] == 1


def test_errors_are_clear(server, bucket, make_client, data):
    client = make_client(server)
    _put(client, bucket, "obj", data[: 2 * MiB])
    with pytest.raises(FileNotFoundError) as info:
        client.get_object_into(bucket, "no/such/key", 0, bytearray(10)).wait()
    assert info.value.status == 404 and f"s3://{bucket}/no/such/key" in str(info.value)
    # A range running past the end: the buffer cannot be filled, which is an error, not a short read.
    with pytest.raises(S3Exception, match=r"ended after 5 of 10 bytes"):
        client.get_object_into(bucket, "obj", 2 * MiB - 5, bytearray(10)).wait()
    with pytest.raises(S3Exception) as info:
        client.get_object_into(bucket, "obj", 2 * MiB + 5, bytearray(10)).wait()
    assert info.value.status == 416
    with pytest.raises(ValueError, match="start must be >= 0"):
        client.get_object_into(bucket, "obj", -1, bytearray(10))
    with pytest.raises(BufferError):
        client.get_object_into(bucket, "obj", 0, b"read-only")  # bytes cannot be written into


def test_cancel_and_drop_while_running(seaweed_server, seaweed_bucket, make_client, data):
    client = make_client(seaweed_server)
    _put(client, seaweed_bucket, "obj", data)
    buf = bytearray(len(data))
    get = client.get_object_into(seaweed_bucket, "obj", 0, buf)
    get.cancel()
    assert get.done
    with pytest.raises(S3Exception):
        get.wait()  # cancelled before the end (or, if it was already over, nothing was lost)
    # Dropping a running GET cancels it and waits: the buffer it held may then go at once.
    for _ in range(3):
        client.get_object_into(seaweed_bucket, "obj", 0, bytearray(len(data)))
        gc.collect()
    buf = bytearray(len(data))
    client.get_object_into(seaweed_bucket, "obj", 0, buf).wait()  # the client is still fine
    assert buf == data


@pytest.mark.parametrize("action", [respond(500), reset(after_bytes=3 * MiB)], ids=["500", "reset-mid-body"])
def test_a_failed_part_is_retried_in_place(seaweed_bucket, behind_fault, data, action):
    # The second part request fails once; its retry must rewrite the same bytes of the buffer.
    client, fault = behind_fault(data, Fault(action, method="GET", path="/obj", nth=2, times=1))
    buf = bytearray(len(data))
    client.get_object_into(seaweed_bucket, "obj", 0, buf).wait()
    assert fault.fired == 1
    assert buf == data
    stats = client.stats()
    assert stats["failed_attempts"] >= 1
    assert stats["direct_fallbacks"] == 0


def test_a_server_that_keeps_failing_gives_its_status(seaweed_bucket, behind_fault, data):
    client, _ = behind_fault(
        data[:MiB], Fault(respond(503), method="GET", path="/obj", times=None), max_attempts=2
    )
    with pytest.raises(S3Exception) as info:
        client.get_object_into(seaweed_bucket, "obj", 0, bytearray(MiB)).wait()
    assert info.value.status == 503


# ---- scattered GET streams ------------------------------------------------------------------------


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


def test_pool_pages_fault_in_only_where_written(server, bucket, make_client, data):
    """Slabs are locked on fault, not up front: a part buffer whose bytes were all scattered never
    becomes resident, one that a plain stream filled does."""
    _put(make_client(server), bucket, "obj", data)  # uploads fill part buffers: another client's
    client = make_client(server)
    assert client.stats()["resident_bytes"] == 0
    dest = bytearray(len(data))
    stream = client.get_object_stream(bucket, "obj", 0, len(data), scatter=[(0, dest)])
    assert stream.skip(len(data)) == len(data)
    assert dest == data
    stats = client.stats()
    assert stats["mapped_bytes"] >= 8 * MiB  # part buffers were taken from a slab...
    assert stats["resident_bytes"] == 0  # ...and not one of their pages was touched
    if stats["mlock_ok"]:
        assert stats["locked_bytes"] == stats["mapped_bytes"]
    assert client.get_object_stream(bucket, "obj", 0, len(data)).read() == data
    stats = client.stats()
    # Each part buffer the plain stream filled is now resident: 8 MiB parts, the last one 5 MiB.
    assert 8 * MiB <= stats["resident_bytes"] <= stats["mapped_bytes"]


def test_scatter_into_a_tensor(seaweed_server, seaweed_bucket, make_client, data):
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


def test_closing_a_scatter_stream_stops_writes_at_once(seaweed_server, seaweed_bucket, make_client, data):
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
def test_a_failed_part_is_retried_into_the_same_memory(seaweed_bucket, behind_fault, data, action):
    client, fault = behind_fault(data, Fault(action, method="GET", path="/obj", nth=2, times=1))
    buf = bytearray(18 * MiB)
    stream = client.get_object_stream(seaweed_bucket, "obj", 0, len(data), scatter=[(MiB, buf)])
    assert _read_around(stream, 0, len(data), [(MiB, 19 * MiB)]) == data[:MiB] + data[19 * MiB :]
    assert fault.fired == 1
    assert buf == data[MiB : 19 * MiB]
    assert client.stats()["failed_attempts"] >= 1


def test_a_scatter_stream_from_a_failing_server_gives_its_status(seaweed_bucket, behind_fault, data):
    client, _ = behind_fault(
        data[: 2 * MiB], Fault(respond(503), method="GET", path="/obj", times=None), max_attempts=2
    )
    stream = client.get_object_stream(seaweed_bucket, "obj", 0, 2 * MiB, scatter=[(10, bytearray(MiB))])
    with pytest.raises(S3Exception) as info:
        stream.skip(2 * MiB)
    assert info.value.status == 503
