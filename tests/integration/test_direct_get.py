"""GETs straight into caller memory (S3Client.get_object_into): bytes, errors, retries, cancel."""

from __future__ import annotations

import gc
import os

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
def test_a_failed_part_is_retried_in_place(
    seaweed_server, seaweed_bucket, make_client, proxy_factory, data, action
):
    setup = make_client(seaweed_server)
    _put(setup, seaweed_bucket, "obj", data)
    proxy = proxy_factory(seaweed_server)
    # The second part request fails once; its retry must rewrite the same bytes of the buffer.
    fault = proxy.add_fault(Fault(action, method="GET", path="/obj", nth=2, times=1))
    client = make_client(seaweed_server, endpoint=proxy.endpoint)
    buf = bytearray(len(data))
    client.get_object_into(seaweed_bucket, "obj", 0, buf).wait()
    assert fault.fired == 1
    assert buf == data
    stats = client.stats()
    assert stats["failed_attempts"] >= 1
    assert stats["direct_fallbacks"] == 0


def test_a_server_that_keeps_failing_gives_its_status(
    seaweed_server, seaweed_bucket, make_client, proxy_factory, data
):
    setup = make_client(seaweed_server)
    _put(setup, seaweed_bucket, "obj", data[:MiB])
    proxy = proxy_factory(seaweed_server)
    proxy.add_fault(Fault(respond(503), method="GET", path="/obj", times=None))
    client = make_client(seaweed_server, endpoint=proxy.endpoint, max_attempts=2)
    with pytest.raises(S3Exception) as info:
        client.get_object_into(seaweed_bucket, "obj", 0, bytearray(MiB)).wait()
    assert info.value.status == 503
