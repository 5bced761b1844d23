"""Zero-copy chunks and bounded memory."""

from __future__ import annotations

import ctypes
import os
import time
import warnings

import numpy as np

MiB = 1024 * 1024


def _upload(client, bucket, key, size, piece=16 * MiB):
    block = os.urandom(piece)
    with client.put_object(bucket, key) as w:
        left = size
        while left:
            n = min(left, piece)
            w.write(memoryview(block)[:n])
            left -= n
    return block


def test_chunks_are_zero_copy_views(moto_server, moto_bucket, make_client):
    import torch
    client = make_client(moto_server)
    data = os.urandom(10 * MiB + 1)
    with client.put_object(moto_bucket, "z") as w:
        w.write(data)
    chunks = list(client.get_object_stream(moto_bucket, "z"))
    assert len(chunks) >= 2
    for chunk in chunks:
        view = memoryview(chunk)
        assert view.readonly
        view_addr = ctypes.addressof(ctypes.c_char.from_buffer_copy(b"\0"))  # noqa: F841 (warm ctypes)
        arr = np.frombuffer(chunk, np.uint8)
        assert arr.ctypes.data == chunk.address
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)  # torch warns that the buffer is read-only
            tensor = torch.frombuffer(chunk, dtype=torch.uint8)
        assert tensor.data_ptr() == chunk.address
        assert np.frombuffer(view, np.uint8).ctypes.data == chunk.address
        assert bytes(view[:16]) == data[chunk.offset : chunk.offset + 16]
    # Views keep the part buffer alive after the stream and chunk objects are gone.
    arr = np.frombuffer(chunks[0], np.uint8)
    del chunks
    assert arr[:32].tobytes() == data[:32]
    stats = client.stats()
    assert stats["chunk_copies"] == 0


def test_chunks_release_pool_memory(moto_server, moto_bucket, make_client):
    client = make_client(moto_server, memory_limit_bytes=64 * MiB)
    with client.put_object(moto_bucket, "m") as w:
        w.write(os.urandom(20 * MiB))
    chunks = list(client.get_object_stream(moto_bucket, "m"))
    held = client.stats()["reserved_bytes"]
    assert held >= 20 * MiB
    del chunks
    assert client.stats()["reserved_bytes"] <= held - 20 * MiB


def _rss_bytes() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def test_bounded_memory_slow_consumer(seaweed_server, seaweed_bucket, make_client):
    size = 512 * MiB
    limit = 64 * MiB
    writer_client = make_client(seaweed_server)
    _upload(writer_client, seaweed_bucket, "huge", size)
    del writer_client

    client = make_client(seaweed_server, memory_limit_bytes=limit)
    rss_before = _rss_bytes()
    stream = client.get_object_stream(seaweed_bucket, "huge")
    buf = bytearray(4 * MiB)
    total = 0
    peak_rss = rss_before
    slow_until = 64 * MiB
    while True:
        n = stream.read_into(buf)
        if n == 0:
            break
        total += n
        if total < slow_until:
            time.sleep(0.02)  # a slow consumer: the download must stall, not buffer ahead
        peak_rss = max(peak_rss, _rss_bytes())
    assert total == size
    stats = client.stats()
    assert stats["peak_bytes"] <= limit, stats
    # The stream's read window held the download back: it never ran further ahead of the consumer
    # than its window (plus the part being delivered), far less than the pool would have allowed.
    assert stats["read_window_bytes"] < limit
    assert stats["peak_bytes"] <= stats["read_window_bytes"] + stats["part_size"], stats
    growth = peak_rss - rss_before
    assert growth < 160 * MiB, f"RSS grew by {growth / MiB:.0f} MiB streaming {size // MiB} MiB"


def test_dropping_a_stream_cancels_and_frees(seaweed_server, seaweed_bucket, make_client):
    import gc

    client = make_client(seaweed_server, memory_limit_bytes=32 * MiB)
    _upload(client, seaweed_bucket, "cancel-me", 128 * MiB)
    stream = client.get_object_stream(seaweed_bucket, "cancel-me")
    first = next(iter(stream))
    assert first.offset == 0
    del first, stream
    gc.collect()
    deadline = time.monotonic() + 10
    while client.stats()["reserved_bytes"] and time.monotonic() < deadline:
        time.sleep(0.05)
    assert client.stats()["reserved_bytes"] == 0
    downloaded = client.stats()["bytes_downloaded"]
    assert downloaded < 128 * MiB, "the whole object was fetched although the stream was dropped"
    # the client still works afterwards
    buf = bytearray(MiB)
    assert client.get_object_stream(seaweed_bucket, "cancel-me", 0, MiB).read_into(buf) == MiB


def test_blocking_reads_release_the_gil(seaweed_server, seaweed_bucket, make_client):
    import threading

    client = make_client(seaweed_server)
    _upload(client, seaweed_bucket, "gil", 256 * MiB)
    ticks = 0
    stop = threading.Event()

    def spin() -> None:
        nonlocal ticks
        while not stop.is_set():
            ticks += 1
            time.sleep(0.001)

    t = threading.Thread(target=spin)
    t.start()
    buf = bytearray(256 * MiB)
    t0 = time.monotonic()
    n = client.get_object_stream(seaweed_bucket, "gil").read_into(buf)
    elapsed = time.monotonic() - t0
    stop.set()
    t.join()
    assert n == 256 * MiB
    # With the GIL held for the whole read the other thread could not tick at all.
    assert ticks >= max(5, int(elapsed * 100)), (ticks, elapsed)


def test_unsigned_requests(moto_server, moto_bucket, make_client):
    signed = make_client(moto_server)
    with signed.put_object(moto_bucket, "public") as w:
        w.write(b"open data")
    anon = make_client(moto_server, unsigned=True)
    got = b"".join(bytes(c) for c in anon.get_object_stream(moto_bucket, "public"))
    assert got == b"open data"
