"""Reliability of the core: a hard memory limit, no hangs (read windows, forked children, cancel),
clear errors for bad ranges and failed mappings."""

from __future__ import annotations

import os
import threading
import time
from typing import Any, Callable, List

import pytest

from s3torch import S3Exception

MiB = 1024 * 1024


def _put(client: Any, bucket: str, key: str, payload: bytes) -> None:
    with client.put_object(bucket, key) as writer:
        writer.write(payload)


def _in_thread(fn: Callable[[], Any], timeout: float) -> Any:
    """Runs fn in a thread; fails the test (instead of hanging it) if it has not returned in time."""
    out: List[Any] = []
    errors: List[BaseException] = []

    def run() -> None:
        try:
            out.append(fn())
        except BaseException as e:  # noqa: B036 - re-raised in the test's thread
            errors.append(e)

    t = threading.Thread(target=run, daemon=True)
    t.start()
    t.join(timeout)
    assert not t.is_alive(), f"still running after {timeout} s: a hang"
    if errors:
        raise errors[0]
    return out[0]


# -- bad ranges ------------------------------------------------------------------------------------


def test_empty_and_inverted_ranges(server, bucket, make_client):
    client = make_client(server)
    _put(client, bucket, "obj", b"0123456789")
    before = client.stats()["meta_requests"]
    for start, end in ((None, 0), (0, 0), (4, 4)):
        stream = client.get_object_stream(bucket, "obj", start, end)
        assert stream.remaining() == 0
        assert stream.read() == b""
        assert list(stream) == []
    assert client.stats()["meta_requests"] == before, "an empty range sends no request"
    with pytest.raises(ValueError, match="before start"):
        client.get_object_stream(bucket, "obj", 5, 3)
    with pytest.raises(ValueError, match="before start"):
        client.get_object_stream(bucket, "obj", 5, 0)
    assert client.get_object_stream(bucket, "obj", None, 4).read() == b"0123"


# -- the memory limit ------------------------------------------------------------------------------


def test_mid_size_ranges_stay_under_the_limit(seaweed_server, seaweed_bucket, make_client):
    """Ranges of 4-8 MiB with 8 MiB parts each take a whole part buffer: they are charged one, so
    neither what is reserved nor what is mapped or resident ever passes the limit."""
    limit = 32 * MiB
    client = make_client(seaweed_server, memory_limit_bytes=limit, part_size=8 * MiB)
    payload = os.urandom(48 * MiB)
    _put(client, seaweed_bucket, "obj", payload)
    ranges = [(i * 6 * MiB, i * 6 * MiB + 5 * MiB + 4096 * i) for i in range(7)]
    peak_resident = 0
    peak_mapped = 0
    stop = threading.Event()

    def watch() -> None:
        nonlocal peak_resident, peak_mapped
        while not stop.is_set():
            stats = client.stats()
            peak_resident = max(peak_resident, stats["resident_bytes"])
            peak_mapped = max(peak_mapped, stats["mapped_bytes"])
            time.sleep(0.002)

    def read_all() -> List[bytes]:
        # Every range read by a thread of its own: their parts compete for the pool at once.
        from concurrent.futures import ThreadPoolExecutor

        with ThreadPoolExecutor(len(ranges)) as ex:
            return list(ex.map(lambda r: client.get_object_stream(seaweed_bucket, "obj", *r).read(), ranges))

    watcher = threading.Thread(target=watch, daemon=True)
    watcher.start()
    try:
        got = _in_thread(read_all, 120)
    finally:
        stop.set()
        watcher.join()
    assert got == [payload[a:b] for a, b in ranges]
    stats = client.stats()
    assert stats["peak_bytes"] <= limit
    assert peak_mapped <= limit and stats["mapped_bytes"] <= limit
    assert peak_resident <= limit


def test_second_stream_read_first_does_not_deadlock(server, bucket, make_client):
    """Two whole-object streams open at once, the second read to its end before the first: the
    first one's read window keeps it from filling the pool, so the second can finish."""
    part = 5 * MiB
    client = make_client(server, memory_limit_bytes=3 * part, part_size=part)
    payload = os.urandom(6 * part + 1234)
    _put(client, bucket, "obj", payload)
    first = client.get_object_stream(bucket, "obj")
    time.sleep(0.5)  # let the first stream take what its window allows
    second = client.get_object_stream(bucket, "obj")
    try:
        assert _in_thread(second.read, 60) == payload
        assert _in_thread(first.read, 60) == payload
    finally:
        first.close()  # unblocks a hung read, so that a failure does not hang the suite
        second.close()
    assert client.stats()["peak_bytes"] <= 3 * part


def test_uploads_wait_for_memory_instead_of_passing_the_limit(seaweed_server, seaweed_bucket, make_client):
    limit = 15 * MiB
    client = make_client(seaweed_server, memory_limit_bytes=limit, part_size=5 * MiB)
    payloads = {f"up{i}": os.urandom(17 * MiB + i) for i in range(3)}

    def upload(key: str) -> None:
        _put(client, seaweed_bucket, key, payloads[key])

    threads = [threading.Thread(target=upload, args=(k,)) for k in payloads]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
        assert not t.is_alive()
    assert client.stats()["peak_bytes"] <= limit
    for key, data in payloads.items():
        assert client.get_object_stream(seaweed_bucket, key).read() == data


def test_failed_mapping_fails_the_request_not_the_process(server, bucket, make_client):
    from s3torch import _core

    payload = os.urandom(11 * MiB)
    _put(make_client(server), bucket, "obj", payload)
    client = make_client(server, memory_limit_bytes=64 * MiB)  # a fresh pool: nothing mapped yet
    _core._set_map_failures(1000)
    try:
        with pytest.raises(S3Exception):
            _in_thread(client.get_object_stream(bucket, "obj").read, 60)
    finally:
        _core._set_map_failures(0)
    assert client.stats()["map_failures"] >= 1
    assert client.stats()["reserved_bytes"] == 0, "a failed mapping gives its charge back"
    assert client.get_object_stream(bucket, "obj").read() == payload


# -- forked children -------------------------------------------------------------------------------


def _child_verdict(fn: Callable[[], None], timeout: float = 30.0) -> int:
    """Forks; the child runs fn and exits 0 if it raised S3Exception about the fork at once, 1 if it
    raised something else, 2 if it returned. The parent kills a child that hangs (exit code -9)."""
    pid = os.fork()
    if pid == 0:  # the child: never return into pytest
        code = 2
        try:
            fn()
        except S3Exception as e:
            code = 0 if "forked child" in str(e) else 1
        except BaseException:
            code = 1
        os._exit(code)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            return os.waitstatus_to_exitcode(status)
        time.sleep(0.05)
    os.kill(pid, 9)
    os.waitpid(pid, 0)
    return -9


def test_parent_streams_raise_in_a_forked_child(server, bucket, make_client):
    client = make_client(server, memory_limit_bytes=16 * MiB, part_size=8 * MiB)
    payload = os.urandom(40 * MiB)
    _put(client, bucket, "obj", payload)
    stream = client.get_object_stream(bucket, "obj")
    stream.remaining()  # started: headers arrived, parts are coming
    buf = bytearray(4 * MiB)
    direct = client.get_object_into(bucket, "obj", 0, buf)
    writer = client.put_object(bucket, "other")
    writer.write(b"x" * 100)

    assert _child_verdict(lambda: [stream.read() for _ in range(3)]) == 0
    assert _child_verdict(direct.wait) == 0
    assert _child_verdict(lambda: writer.write(b"more")) == 0
    assert _child_verdict(writer.close) == 0
    # The child may use the client itself: it gets a native client of its own.
    assert _child_verdict(lambda: [client.get_object_stream(bucket, "obj").read(), os._exit(0)]) == 0

    # The parent's objects are untouched by what the children did.
    assert stream.read() == payload
    direct.wait()
    assert bytes(buf) == payload[: 4 * MiB]
    writer.close()
    assert client.get_object_stream(bucket, "other").read() == b"x" * 100


# -- cancel ----------------------------------------------------------------------------------------


def test_cancel_stops_the_fallback_before_returning(
    seaweed_server, seaweed_bucket, make_client, proxy_factory
):
    """A direct GET whose parts landed out of place is redone as a stream; cancel() during that
    re-download returns only once nothing writes into the buffer any more."""
    from s3torch import _core
    from s3torch.testing import Fault, delay

    payload = os.urandom(24 * MiB)
    _put(make_client(seaweed_server), seaweed_bucket, "obj", payload)
    proxy = proxy_factory(seaweed_server)
    client = make_client(seaweed_server, endpoint=proxy.endpoint, part_size=8 * MiB)
    buf = bytearray(len(payload))
    _core._set_direct_placement_fault(True)
    try:
        direct = client.get_object_into(seaweed_bucket, "obj", 0, buf)
        # The direct parts fail at once; the fallback's GETs stall half way through their bodies.
        proxy.add_fault(Fault(delay(1.0, after_bytes=MiB), method="GET", times=None))
        outcome: List[Any] = []

        def wait() -> None:
            try:
                direct.wait()
                outcome.append("returned")
            except BaseException as e:  # noqa: B036 - checked below
                outcome.append(e)

        waiter = threading.Thread(target=wait, daemon=True)
        waiter.start()
        deadline = time.monotonic() + 30
        while client.stats()["direct_fallbacks"] == 0 and time.monotonic() < deadline:
            time.sleep(0.01)
        assert client.stats()["direct_fallbacks"] == 1, "the fallback re-download started"
        _in_thread(direct.cancel, 30)
        snapshot = bytes(buf)
        time.sleep(1.5)  # past the proxy's stall: a still-running copy would change the buffer now
        assert bytes(buf) == snapshot
        waiter.join(30)
        assert not waiter.is_alive()
        assert isinstance(outcome[0], S3Exception) and "cancelled" in str(outcome[0])
    finally:
        _core._set_direct_placement_fault(False)
        proxy.clear_faults()


# -- one version per reader or load ----------------------------------------------------------------


def test_range_reader_refuses_an_object_overwritten_between_its_gets(server, bucket, make_client):
    from s3torch import S3ReaderConstructor

    client = make_client(server)
    old, new = os.urandom(3 * MiB), os.urandom(3 * MiB)
    _put(client, bucket, "obj", old)
    ranged = S3ReaderConstructor.range_based(buffer_size=0)
    reader = client.get_object(bucket, "obj", reader_constructor=ranged)
    assert reader.read(MiB) == old[:MiB]
    _put(client, bucket, "obj", new)  # overwritten between two GETs of one reader
    with pytest.raises(S3Exception, match="changed during the read") as caught:
        reader.read(MiB)
    assert caught.value.status == 412 and caught.value.code == "PreconditionFailed"
    # A new reader reads the new version.
    fresh = client.get_object(bucket, "obj", reader_constructor=ranged)
    assert fresh.read() == new


def test_get_under_way_when_the_version_was_pinned_is_checked(
    seaweed_server, seaweed_bucket, make_client, proxy_factory
):
    """Two GETs of one pin start before either has a response (so neither sends If-Match); the
    object is overwritten before the second one reaches the server: its ETag differs from the
    pinned one and it fails instead of handing out bytes of the new version."""
    from s3torch import _core
    from s3torch.testing import Fault, delay

    old, new = os.urandom(2 * MiB), os.urandom(2 * MiB)
    _put(make_client(seaweed_server), seaweed_bucket, "obj", old)
    proxy = proxy_factory(seaweed_server)
    proxy.add_fault(Fault(delay(1.5), method="GET", when=lambda r: r.range is not None and r.range[0] == MiB))
    client = make_client(seaweed_server, endpoint=proxy.endpoint)
    pin = _core.EtagPin()
    first = client.get_object_stream(seaweed_bucket, "obj", 0, MiB, pin=pin)
    second = client.get_object_stream(seaweed_bucket, "obj", MiB, 2 * MiB, pin=pin)
    assert first.read() == old[:MiB]
    assert pin.etag is not None
    _put(make_client(seaweed_server), seaweed_bucket, "obj", new)
    with pytest.raises(S3Exception, match="changed during the read"):
        second.read()


# -- a server that stops answering ------------------------------------------------------------------


def test_stalled_body_times_out_then_retries_or_raises(
    seaweed_server, seaweed_bucket, make_client, proxy_factory
):
    from s3torch.testing import Fault, delay

    payload = os.urandom(3 * MiB)
    _put(make_client(seaweed_server), seaweed_bucket, "obj", payload)
    proxy = proxy_factory(seaweed_server)
    # The server sends the head and 1 MiB of the body, then nothing for 20 s.
    stall = proxy.add_fault(Fault(delay(20, after_bytes=MiB), method="GET", times=1))
    client = make_client(seaweed_server, endpoint=proxy.endpoint, read_timeout_s=2, part_size=8 * MiB)
    t0 = time.monotonic()
    assert _in_thread(client.get_object_stream(seaweed_bucket, "obj").read, 60) == payload
    assert stall.fired == 1 and time.monotonic() - t0 < 15, "dropped after the timeout and retried"

    proxy.clear_faults()
    proxy.add_fault(Fault(delay(20, after_bytes=MiB), method="GET", times=None))
    once = make_client(seaweed_server, endpoint=proxy.endpoint, read_timeout_s=2, max_attempts=1)
    t0 = time.monotonic()
    with pytest.raises(S3Exception, match="GetObject"):
        _in_thread(once.get_object_stream(seaweed_bucket, "obj").read, 60)
    assert time.monotonic() - t0 < 15


# -- concurrency, processes, memory ----------------------------------------------------------------


def test_one_client_shared_by_16_threads(seaweed_server, seaweed_bucket, make_client):
    from concurrent.futures import ThreadPoolExecutor

    client = make_client(seaweed_server, memory_limit_bytes=64 * MiB)
    objects = {f"o{i}": os.urandom(MiB * (1 + i % 5) + 1000 * i) for i in range(8)}
    for key, data in objects.items():
        _put(client, seaweed_bucket, key, data)

    def work(i: int) -> int:
        import random

        rng = random.Random(i)
        checked = 0
        for _ in range(12):
            key = rng.choice(sorted(objects))
            data = objects[key]
            a = rng.randrange(len(data))
            b = rng.randrange(a, len(data) + 1)
            kind = rng.randrange(3)
            if kind == 0:
                got = client.get_object_stream(seaweed_bucket, key, a, b).read()
            elif kind == 1:
                buf = bytearray(b - a)
                client.get_object_into(seaweed_bucket, key, a, buf).wait()
                got = bytes(buf)
            else:
                got = client.get_object(seaweed_bucket, key).read()
                a, b = 0, len(data)
            assert got == data[a:b], (key, a, b, kind)
            checked += 1
        return checked

    with ThreadPoolExecutor(16) as ex:
        assert sum(_in_thread(lambda: list(ex.map(work, range(16))), 180)) == 16 * 12
    assert client.stats()["peak_bytes"] <= 64 * MiB


class _Objects:
    """A map-style dataset over objects, reading through one pickled S3Client."""

    def __init__(self, client: Any, bucket: str, keys: List[str]) -> None:
        self.client, self.bucket, self.keys = client, bucket, keys

    def __len__(self) -> int:
        return len(self.keys)

    def __getitem__(self, i: int) -> bytes:
        return self.client.get_object(self.bucket, self.keys[i]).read()


@pytest.mark.parametrize("method", ["fork", "spawn"])
def test_dataloader_workers_after_the_parent_used_the_client(moto_server, moto_bucket, make_client, method):
    import torch.utils.data

    client = make_client(moto_server)
    objects = {f"s{i}": os.urandom(10_000 + i) for i in range(12)}
    for key, data in objects.items():
        _put(client, moto_bucket, key, data)
    keys = sorted(objects)
    stream = client.get_object_stream(moto_bucket, keys[0])  # the parent's own, open across the fork
    assert stream.read(100) == objects[keys[0]][:100]
    loader = torch.utils.data.DataLoader(
        _Objects(client, moto_bucket, keys),
        batch_size=None,
        num_workers=2,
        multiprocessing_context=method,
        timeout=60,
    )
    assert _in_thread(lambda: list(loader), 120) == [objects[k] for k in keys]
    assert stream.read() == objects[keys[0]][100:]


def _rss() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def test_streaming_2gib_with_a_128mib_pool_keeps_rss_flat(seaweed_server, seaweed_bucket, make_client):
    import hashlib

    block = os.urandom(16 * MiB)
    blocks = 128  # 2 GiB, uploaded block by block: neither side holds it whole
    writer_client = make_client(seaweed_server)
    digest = hashlib.sha256()
    with writer_client.put_object(seaweed_bucket, "two-gib") as writer:
        for i in range(blocks):
            piece = i.to_bytes(8, "little") + block[8:]
            writer.write(piece)
            digest.update(piece)
    del writer_client

    client = make_client(seaweed_server, memory_limit_bytes=128 * MiB)
    before = peak = _rss()
    got = hashlib.sha256()
    buf = bytearray(8 * MiB)
    view = memoryview(buf)
    stream = client.get_object_stream(seaweed_bucket, "two-gib")
    total = 0
    while n := stream.read_into(buf):
        got.update(view[:n])
        total += n
        peak = max(peak, _rss())
    assert total == blocks * len(block) and got.digest() == digest.digest()
    assert peak - before < 300 * MiB, f"RSS grew by {(peak - before) / MiB:.0f} MiB"
    assert client.stats()["peak_bytes"] <= 128 * MiB


# -- upload checksums ------------------------------------------------------------------------------


def test_every_uploaded_part_carries_a_crc32c(server, bucket, make_client, proxy_factory):
    proxy = proxy_factory(server)
    client = make_client(server, endpoint=proxy.endpoint)
    payload = os.urandom(20 * MiB)
    _put(client, bucket, "obj", payload)
    proxy.wait_idle()
    parts = [r for r in proxy.requests if r.method == "PUT" and "partNumber" in r.query]
    assert len(parts) == 3
    for r in parts:
        assert r.headers.get("x-amz-trailer") == "x-amz-checksum-crc32c"
        assert r.headers.get("content-encoding") == "aws-chunked"
    head = server.boto3_client().head_object(Bucket=bucket, Key="obj", ChecksumMode="ENABLED")
    assert head.get("ChecksumCRC32C"), "the store kept the checksum"
    assert client.get_object_stream(bucket, "obj").read() == payload

    proxy.reset()
    plain = make_client(server, endpoint=proxy.endpoint, upload_checksum=False)
    _put(plain, bucket, "plain", b"z" * 1000)
    proxy.wait_idle()
    assert all("x-amz-trailer" not in r.headers for r in proxy.requests if r.method == "PUT")


def test_a_part_damaged_in_transit_is_resent(seaweed_server, seaweed_bucket, make_client, proxy_factory):
    """SeaweedFS checks the trailer's CRC32C (moto does not): a flipped byte in an upload part is
    refused with 400 InvalidDigest, and the CRT, which still holds the part, sends it again (our
    patch 0004 makes the digest codes retryable): the upload completes with the right bytes."""
    from s3torch.testing import Fault, corrupt

    proxy = proxy_factory(seaweed_server)
    in_a_part = Fault(corrupt(3 * MiB + 17), method="PUT", when=lambda r: "partNumber" in r.query)
    damage = proxy.add_fault(in_a_part)
    client = make_client(seaweed_server, endpoint=proxy.endpoint)
    payload = os.urandom(12 * MiB)
    _put(client, seaweed_bucket, "obj", payload)
    assert damage.fired == 1
    assert client.stats()["failed_attempts"] >= 1
    part_puts = [r for r in proxy.requests if r.method == "PUT" and "partNumber" in r.query]
    assert [r.status for r in part_puts].count(400) == 1 and len(part_puts) == 3  # 2 parts + 1 resend
    assert make_client(seaweed_server).get_object_stream(seaweed_bucket, "obj").read() == payload


def test_a_part_damaged_on_every_attempt_fails_and_nothing_lands(
    seaweed_server, seaweed_bucket, make_client, proxy_factory
):
    """Damaged on every attempt: after max_attempts the upload fails with the server's verdict and
    aborts: the earlier version of the object stays, never a damaged one."""
    from s3torch.testing import Fault, corrupt

    earlier = os.urandom(MiB)
    _put(make_client(seaweed_server), seaweed_bucket, "obj", earlier)
    proxy = proxy_factory(seaweed_server)
    always = Fault(corrupt(3 * MiB + 17), method="PUT", when=lambda r: "partNumber" in r.query, times=None)
    damage = proxy.add_fault(always)
    client = make_client(seaweed_server, endpoint=proxy.endpoint, max_attempts=3)
    with pytest.raises(S3Exception, match="Digest") as caught:
        _put(client, seaweed_bucket, "obj", os.urandom(12 * MiB))
    assert damage.fired >= 3 and caught.value.status == 400
    assert make_client(seaweed_server).get_object_stream(seaweed_bucket, "obj").read() == earlier


def test_a_scatter_that_cannot_place_its_bytes_fails_the_stream(seaweed_server, seaweed_bucket, make_client):
    """Should the CRT ever hand our append a buffer that is not the ticket's, the bytes for the
    caller's memory would be skipped by the consumer and stale: the GET fails instead."""
    from s3torch import _core

    payload = os.urandom(10 * MiB)
    client = make_client(seaweed_server, max_attempts=2)  # the CRT retries the failed part once
    _put(client, seaweed_bucket, "obj", payload)
    dest = bytearray(4 * MiB)
    _core._set_scatter_append_fault(True)
    try:
        stream = client.get_object_stream(seaweed_bucket, "obj", 0, len(payload), scatter=[(MiB, dest)])
        with pytest.raises(S3Exception):
            _in_thread(stream.read, 60)
    finally:
        _core._set_scatter_append_fault(False)
    stream = client.get_object_stream(seaweed_bucket, "obj", 0, len(payload), scatter=[(MiB, dest)])
    stream.read()
    assert bytes(dest) == payload[MiB : 5 * MiB]


def test_a_reader_reads_the_version_its_listing_described(server, bucket, make_client):
    """A reader given a listing's object info (its size) reads that version or raises: an object
    overwritten after the listing is never read with the old size."""
    from s3torch import S3ReaderConstructor

    client = make_client(server)
    _put(client, bucket, "obj", b"a" * 3000)
    _put(client, bucket, "other", b"b" * 5000)
    infos = {o.key: o for page in client.list_objects(bucket) for o in page.object_info}
    ranged = S3ReaderConstructor.range_based(buffer_size=0)
    unchanged = client.get_object(bucket, "other", object_info=infos["other"], reader_constructor=ranged)
    assert unchanged.read() == b"b" * 5000
    _put(client, bucket, "obj", b"c" * 7000)  # overwritten after the listing
    reader = client.get_object(bucket, "obj", object_info=infos["obj"], reader_constructor=ranged)
    with pytest.raises(S3Exception, match="changed during the read") as caught:
        reader.read()
    assert caught.value.status == 412
    assert client.get_object(bucket, "obj", reader_constructor=ranged).read() == b"c" * 7000
