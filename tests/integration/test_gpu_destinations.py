"""GPU destinations without a GPU: slab registration with a fake runtime, chunks of bounded size, and
copy_stream_to_tensor over a fake device that copies late (s3torch.testing.fake_device)."""

from __future__ import annotations

import gc
import os
import time
from typing import Any, Callable

import pytest
import torch

from s3torch import S3Exception, gpu
from s3torch.testing.fake_device import FakeDevice

MiB = 1024 * 1024


def put(client: Any, bucket: str, key: str, data: bytes) -> None:
    writer = client.put_object(bucket, key)
    writer.write(data)
    writer.close()


def test_slabs_are_registered_once_and_unregistered_before_unmapping(
    seaweed_server: Any, seaweed_bucket: str, make_client: Callable[..., Any]
) -> None:
    client = make_client(seaweed_server, memory_limit_bytes=256 * MiB)
    data = os.urandom(40 * MiB)
    put(client, seaweed_bucket, "k", data)
    assert client.get_object_stream(seaweed_bucket, "k").read() == data  # slabs mapped before
    native = client._native
    before = native.pool_stats()
    assert before["mapped_bytes"] > 0 and before["registered_bytes"] == 0
    registrar = native._register_host_memory_fake()
    stats = native.pool_stats()
    assert stats["registered_bytes"] == stats["mapped_bytes"] == registrar.live_bytes
    assert native._register_host_memory_fake().registrations == 0  # the first registrar stays
    # Slabs mapped later (a larger read window's worth) are registered as they are mapped.
    streams = [client.get_object_stream(seaweed_bucket, "k") for _ in range(4)]
    assert all(s.read() == data for s in streams)
    stats = native.pool_stats()
    assert stats["mapped_bytes"] > before["mapped_bytes"]
    assert stats["registered_bytes"] == stats["mapped_bytes"] == registrar.live_bytes
    assert stats["registration_failures"] == 0
    del streams, native, client
    gc.collect()
    deadline = time.monotonic() + 10  # the CRT client shuts down (and drops its pool) on its own thread
    while registrar.live_bytes and time.monotonic() < deadline:
        time.sleep(0.05)
    assert registrar.live_bytes == 0
    assert registrar.unregistrations == registrar.registrations > 0
    assert registrar.bad_unregistrations == 0


def test_a_missing_cuda_runtime_is_a_clear_error(
    moto_server: Any, moto_bucket: str, make_client: Callable[..., Any]
) -> None:
    client = make_client(moto_server)
    with pytest.raises(ValueError, match="cannot load the CUDA runtime /nonexistent/libcudart.so"):
        client._native.register_host_memory("/nonexistent/libcudart.so", 0)
    with pytest.raises(ValueError, match="not a CUDA runtime"):
        client._native.register_host_memory("libc.so.6", 0)
    assert client._native.pool_stats()["registered_bytes"] == 0


def test_next_chunk_hands_out_at_most_what_is_asked(
    moto_server: Any, moto_bucket: str, make_client: Callable[..., Any]
) -> None:
    client = make_client(moto_server, part_size=5 * MiB)
    data = os.urandom(12 * MiB + 3)
    put(client, moto_bucket, "k", data)
    stream = client.get_object_stream(moto_bucket, "k")
    got, sizes = bytearray(), []
    for want in (1000, 7 * MiB, 1, 5 * MiB, 99 * MiB):
        chunk = stream.next_chunk(want)
        assert chunk is not None and chunk.offset == len(got)
        assert 0 < len(chunk) <= want
        sizes.append(len(chunk))
        got += memoryview(chunk)
    while (chunk := stream.next_chunk(MiB)) is not None:
        got += memoryview(chunk)
    assert bytes(got) == data
    assert sizes[0] == 1000 and sizes[1] == 5 * MiB - 1000  # the rest of the first part, no more
    with pytest.raises(ValueError, match="0 bytes"):
        stream.next_chunk(0)


def test_copy_stream_to_tensor_over_a_late_device(
    seaweed_server: Any, seaweed_bucket: str, make_client: Callable[..., Any]
) -> None:
    # 4 part buffers in all for 9 parts: a part released before its late copy ran is reused by the
    # download at once (an AsyncCopies that dropped chunks on submit was caught here, 3 violations).
    client = make_client(seaweed_server, memory_limit_bytes=32 * MiB)
    values = torch.randn(64 * MiB // 4 + 7)
    data = values.numpy().tobytes()
    put(client, seaweed_bucket, "w", data)
    device = FakeDevice(delay_s=0.01)
    try:
        out = torch.zeros_like(values)
        device.claim([out])
        n = gpu.copy_stream_to_tensor(
            client.get_object_stream(seaweed_bucket, "w"),
            out,
            client=client,
            copier=device,
            max_held_bytes=16 * MiB,
        )
        assert n == len(data)
        assert torch.equal(out, values)
        assert device.violations == []
        assert device.synchronizations == 1
        assert device.completed == device.queued >= 9
        # Too short a stream: a clear error, after every queued copy finished. (Its copies may hold more
        # than the pool: a version that released parts only on the next submit hung here.)
        short = torch.zeros(len(data) // 4 + 100)
        device.claim([short])
        with pytest.raises(S3Exception, match="ended 400 bytes before"):
            gpu.copy_stream_to_tensor(client.get_object_stream(seaweed_bucket, "w"), short, copier=device)
        assert device.completed == device.queued and device.synchronizations == 2
        # A tensor the device does not hold.
        with pytest.raises(ValueError, match="does not handle"):
            gpu.copy_stream_to_tensor(
                client.get_object_stream(seaweed_bucket, "w"), torch.zeros(4), copier=device
            )
    finally:
        device.close()
