"""Uploads sent from the caller's own memory (``S3Writer._write_lent``, what a DCP save does with each
tensor's storage): every whole part inside the lent bytes goes out from them in place (our CRT patch
0007), the bytes around are copied as write() copies them, and the memory's owner is held until the CRT
let go of the parts. A lent slice that is not where the written bytes continue fails the upload
instead of being written into."""

from __future__ import annotations

import gc
import os
import time
import weakref

import pytest

from s3torch import S3Exception

MiB = 1024 * 1024
PART = 8 * MiB  # the client's default part size


class Owner:
    """Memory with an owner a test can watch (weakref) and whose address it knows."""

    def __init__(self, size: int) -> None:
        import torch

        self.tensor = torch.randint(0, 256, (size,), dtype=torch.uint8)
        storage = self.tensor.untyped_storage()
        self.start = storage.data_ptr()
        self.end = self.start + storage.nbytes()

    def view(self) -> memoryview:
        return memoryview(self.tensor.numpy())

    def data(self) -> bytes:
        return self.tensor.numpy().tobytes()


def _in_place(client) -> int:
    return client._native.counters()["bytes_uploaded_in_place"]


def _still_held(owner) -> bool:
    """Whether the writers' module still holds ``owner`` for a part the CRT has not given back."""
    from s3torch import _writer

    return any(held is owner for _, held in _writer._held)


@pytest.mark.parametrize("before", [0, 3 * MiB + 5], ids=["at-a-part-start", "mid-part"])
def test_whole_parts_of_lent_bytes_go_out_in_place(server, bucket, make_client, before):
    client = make_client(server)
    owner = Owner(40 * MiB + 123)
    head = b"h" * before
    with client.put_object(bucket, "obj") as writer:
        writer.write(head)
        assert writer._write_lent(owner.view(), owner, owner.start, owner.end) == 40 * MiB + 123
        writer.write(b"tail")
        assert writer.tell() == before + 40 * MiB + 123 + 4
    copied_first = -before % PART  # up to the end of the part being filled
    whole = (40 * MiB + 123 - copied_first) // PART * PART
    assert whole >= 4 * PART
    assert _in_place(client) == whole
    assert not _still_held(owner), "every lent part came back once the upload ended"
    assert client.get_object(bucket, "obj").read() == head + owner.data() + b"tail"


def test_the_owner_is_held_until_its_parts_are_uploaded(
    seaweed_server, seaweed_bucket, make_client, proxy_factory
):
    """Parts held up on their way: the write returns while they are in flight, and the owner of the
    memory they are sent from stays alive until close() has seen the CRT give them back."""
    from s3torch import _writer
    from s3torch.testing import Fault, delay

    proxy = proxy_factory(seaweed_server)
    slow = proxy.add_fault(
        Fault(delay(1.0), method="PUT", when=lambda r: "partNumber" in r.query, times=None)
    )
    client = make_client(seaweed_server, endpoint=proxy.endpoint)
    owner = Owner(3 * PART)
    expected = owner.data()
    watch = weakref.ref(owner)
    writer = client.put_object(seaweed_bucket, "obj")
    writer._write_lent(owner.view(), owner, owner.start, owner.end)
    loan, held = writer._lent[0]
    assert held is owner and not loan.returned  # parts still on their way, sent from owner's memory
    del owner, held
    gc.collect()
    assert watch() is not None, "the writer keeps the owner of lent memory alive"
    writer.close()
    assert loan.returned and writer._lent == [] and not _writer._held
    gc.collect()
    assert watch() is None, "released once the upload ended"
    assert slow.fired >= 3
    assert client.get_object(seaweed_bucket, "obj").read() == expected


def test_bytes_outside_the_owner_are_copied(server, bucket, make_client):
    """Memory that is not inside the owner's span cannot be held still by it: written as write() does."""
    client = make_client(server)
    owner = Owner(MiB)
    other = os.urandom(3 * PART)
    with client.put_object(bucket, "obj") as writer:
        writer._write_lent(other, owner, owner.start, owner.end)
    assert _in_place(client) == 0 and not _still_held(owner)
    assert client.get_object(bucket, "obj").read() == other


def test_a_lent_slice_out_of_place_fails_the_upload_and_writes_nothing(
    seaweed_server, seaweed_bucket, make_client
):
    """Should the pool ever lend a slice that is not where the written bytes continue, the CRT (our
    patch) fails the write: nothing is written into the caller's memory and no object appears."""
    from s3torch import _core

    client = make_client(seaweed_server)
    owner = Owner(4 * PART)
    before = owner.data()
    _core._set_direct_placement_fault(True)  # slices handed out from the end backwards
    try:
        writer = client.put_object(seaweed_bucket, "obj")
        with pytest.raises(S3Exception):
            writer._write_lent(owner.view(), owner, owner.start, owner.end)
            writer.close()
        writer.abort()
    finally:
        _core._set_direct_placement_fault(False)
    assert owner.data() == before
    with pytest.raises(S3Exception):
        client.head_object(seaweed_bucket, "obj")


def test_a_failing_upload_gives_the_lent_memory_back(
    seaweed_server, seaweed_bucket, make_client, proxy_factory
):
    """Every part refused: the write fails with the server's error, no object appears, and the owner is
    held until the CRT let go of its last lent part (at the latest when the native stream is gone)."""
    from s3torch import _writer
    from s3torch.testing import Fault, respond

    proxy = proxy_factory(seaweed_server)
    proxy.add_fault(Fault(respond(500), method="PUT", when=lambda r: "partNumber" in r.query, times=None))
    client = make_client(seaweed_server, endpoint=proxy.endpoint, max_attempts=2)
    owner = Owner(4 * PART)
    before = owner.data()
    watch = weakref.ref(owner)
    writer = client.put_object(seaweed_bucket, "obj")
    with pytest.raises(S3Exception, match="InternalError|500"):
        writer._write_lent(owner.view(), owner, owner.start, owner.end)
        writer.close()
    writer.abort()
    assert owner.data() == before
    del owner, writer
    for _ in range(100):  # the CRT releases the meta request's last buffer on one of its threads
        gc.collect()
        _writer._prune_held()
        if watch() is None:
            break
        time.sleep(0.1)
    assert watch() is None, "the owner is dropped once its memory came back"
    with pytest.raises(S3Exception):
        client.head_object(seaweed_bucket, "obj")


def test_lent_parts_wait_for_room_under_a_small_memory_limit(
    seaweed_server, seaweed_bucket, make_client, proxy_factory
):
    """With a limit of two parts, no more than two lent parts are out at once: the write waits for
    parts to be uploaded (slowed by the proxy) and the object is whole."""
    from s3torch.testing import Fault, delay

    proxy = proxy_factory(seaweed_server)
    proxy.add_fault(Fault(delay(0.3), method="PUT", when=lambda r: "partNumber" in r.query, times=None))
    client = make_client(seaweed_server, endpoint=proxy.endpoint, memory_limit_bytes=2 * PART)
    owner = Owner(6 * PART)
    start = time.monotonic()
    with client.put_object(seaweed_bucket, "obj") as writer:
        writer._write_lent(owner.view(), owner, owner.start, owner.end)
        lent_for = time.monotonic() - start
    assert _in_place(client) == 6 * PART
    assert lent_for >= 2 * 0.3, f"six parts through a window of two took only {lent_for:.2f} s"
    assert client.get_object(seaweed_bucket, "obj").read() == owner.data()
