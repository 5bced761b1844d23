"""Integrity under faults: reads, range reads, DCP loads and saves through a proxy that fails about
5% of requests at random (resets before the response, bodies cut half way, 500 InternalError, 503
SlowDown, delays). Every result is bit-identical or a clear error; nothing is lost or mixed."""

from __future__ import annotations

import hashlib
import os
import random
import time
from typing import Any, List

import pytest
import torch
import torch.distributed.checkpoint as dcp
from dcp_helpers import Target, assert_same, blank_like, mixed_state

from s3torch import S3Exception, S3ReaderConstructor
from s3torch.testing import Fault, random_faults, reset, respond

MiB = 1024 * 1024


def _random_faults(proxy: Any, method: str, seed: int) -> List[Fault]:
    faults = random_faults(proxy, method, seed)  # about 5% of requests, five kinds in equal shares
    # And one certain fault early on, so that every run exercises a retry.
    faults.append(proxy.add_fault(Fault(reset(after_bytes=MiB, abortive=False), method=method, nth=2)))
    return faults


def _fired(faults: List[Fault]) -> int:
    return sum(f.fired for f in faults)


def _put(client: Any, bucket: str, key: str, payload: bytes) -> None:
    with client.put_object(bucket, key) as writer:
        writer.write(payload)


def test_large_read_under_faults(seaweed_server, seaweed_bucket, make_client, proxy_factory):
    payload = os.urandom(256 * MiB)
    _put(make_client(seaweed_server), seaweed_bucket, "big", payload)
    proxy = proxy_factory(seaweed_server)
    faults = _random_faults(proxy, "GET", seed=1)
    client = make_client(seaweed_server, endpoint=proxy.endpoint, memory_limit_bytes=128 * MiB)
    digest = hashlib.sha256()
    stream = client.get_object_stream(seaweed_bucket, "big")
    buf = bytearray(8 * MiB)
    view = memoryview(buf)
    total = 0
    while n := stream.read_into(buf):
        digest.update(view[:n])
        total += n
    assert total == len(payload)
    assert digest.digest() == hashlib.sha256(payload).digest()
    assert _fired(faults) >= 1
    assert client.stats()["failed_attempts"] >= 1  # the stats count the retries


def test_range_reads_under_faults(seaweed_server, seaweed_bucket, make_client, proxy_factory):
    payload = os.urandom(24 * MiB + 77)
    _put(make_client(seaweed_server), seaweed_bucket, "obj", payload)
    proxy = proxy_factory(seaweed_server)
    faults = _random_faults(proxy, "GET", seed=2)
    client = make_client(seaweed_server, endpoint=proxy.endpoint)
    rng = random.Random(5)
    for buffer_size in (0, 4 * MiB):
        reader = client.get_object(
            seaweed_bucket, "obj", reader_constructor=S3ReaderConstructor.range_based(buffer_size=buffer_size)
        )
        for _ in range(40):
            start = rng.randrange(len(payload))
            size = rng.choice([1, 4096, 300_000, 3 * MiB])
            reader.seek(start)
            assert reader.read(size) == payload[start : start + size]
    assert _fired(faults) >= 1


def _target(server: Any, bucket: str, name: str) -> Target:
    return Target(server, bucket, name)


def test_dcp_load_under_faults(seaweed_server, seaweed_bucket, proxy_factory):
    target = _target(seaweed_server, seaweed_bucket, "ckpt")
    state = mixed_state(big=6 * MiB)
    state["more"] = {f"t{i}": torch.randn(100_000 + i) for i in range(20)}
    dcp.save(state, storage_writer=target.writer())
    proxy = proxy_factory(seaweed_server)
    faults = _random_faults(proxy, "GET", seed=3)
    for _ in range(3):
        reader = target.reader(endpoint=proxy.endpoint)
        reader.split_bytes = 2 * MiB  # many concurrent GETs
        dest = blank_like(state)
        dcp.load(dest, storage_reader=reader)
        assert_same(state, dest)
    assert _fired(faults) >= 1


def test_dcp_save_under_faults_completes_or_leaves_no_metadata(
    seaweed_server, seaweed_bucket, proxy_factory
):
    state = mixed_state(big=5 * MiB)
    proxy = proxy_factory(seaweed_server)
    faults = _random_faults(proxy, "PUT", seed=4)
    outcomes = []
    for i in range(3):
        target = _target(seaweed_server, seaweed_bucket, f"saved{i}")
        try:
            dcp.save(state, storage_writer=target.writer(endpoint=proxy.endpoint))
        except BaseException as e:  # noqa: B036 - CheckpointException derives from BaseException
            outcomes.append("raised")
            assert not target.has_metadata(), f"a failed save left .metadata behind: {e!r}"
            continue
        outcomes.append("saved")
        dest = blank_like(state)
        dcp.load(dest, storage_reader=target.reader())
        assert_same(state, dest)
    assert _fired(faults) >= 1
    assert "saved" in outcomes  # with ten attempts per request, 5% faults do not stop a save


def test_single_attempt_raises_promptly_with_the_cause(
    seaweed_server, seaweed_bucket, make_client, proxy_factory
):
    _put(make_client(seaweed_server), seaweed_bucket, "obj", os.urandom(3 * MiB))
    proxy = proxy_factory(seaweed_server)
    client = make_client(seaweed_server, endpoint=proxy.endpoint, max_attempts=1)
    for action, cause in ((respond(503), "HTTP 503"), (respond(500), "HTTP 500"), (reset(), "SOCKET_CLOSED")):
        proxy.clear_faults()
        proxy.add_fault(Fault(action, method="GET", times=None))
        t0 = time.monotonic()
        with pytest.raises(S3Exception) as caught:
            client.get_object_stream(seaweed_bucket, "obj").read()
        assert time.monotonic() - t0 < 5, "one attempt, no retries"
        assert "GetObject" in str(caught.value) and "s3://" in str(caught.value)
        assert cause in str(caught.value)
