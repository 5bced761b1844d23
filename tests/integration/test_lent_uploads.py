"""Uploads sent from the caller's own memory (``S3Writer._write_lent``, what a DCP save does with each
tensor's storage): every whole part inside the lent bytes goes out from them in place as the part's
buffer (our CRT patch 0007), the lent bytes before and after them share part buffers with bytes written
by write() and are sent from the caller's memory too (patch 0008), and the memory's owner is held until
the CRT let go of the parts. A lent slice that is not where the written bytes continue fails the upload
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


def _mixed_part_upload(writer, owner) -> bytes:
    """1 MiB written, then ``owner``'s bytes lent: the first part mixes the two, the rest is lent."""
    header = os.urandom(MiB)
    writer.write(header)
    writer._write_lent(owner.view(), owner, owner.start, owner.end)
    return header + owner.data()


def _assert_let_go(watch: weakref.ref) -> None:
    """The watched owner is dropped once its memory came back: after a failed upload the CRT releases
    the meta request's last buffer on one of its threads, so this waits for it (up to 10 s)."""
    from s3torch import _writer

    for _ in range(100):
        gc.collect()
        _writer._prune_held()
        if watch() is None:
            return
        time.sleep(0.1)
    raise AssertionError("the owner is dropped once its memory came back")


def _still_held(owner) -> bool:
    """Whether the writers' module still holds ``owner`` for a part the CRT has not given back."""
    from s3torch import _writer

    return any(held is owner for _, held in _writer._held)


@pytest.mark.parametrize("before", [0, 3 * MiB + 5], ids=["at-a-part-start", "mid-part"])
def test_every_lent_byte_goes_out_in_place(server, bucket, make_client, before):
    """Whole parts and the pieces around them (sharing their parts with written bytes)."""
    client = make_client(server)
    owner = Owner(40 * MiB + 123)
    head = os.urandom(before)
    with client.put_object(bucket, "obj") as writer:
        writer.write(head)
        assert writer._write_lent(owner.view(), owner, owner.start, owner.end) == 40 * MiB + 123
        writer.write(b"tail")
        assert writer.tell() == before + 40 * MiB + 123 + 4
    assert _in_place(client) == 40 * MiB + 123
    assert not _still_held(owner), "every lent part came back once the upload ended"
    assert client.get_object(bucket, "obj").read() == head + owner.data() + b"tail"


def test_small_lent_pieces_share_parts_with_written_bytes(server, bucket, make_client):
    """Many lent pieces smaller than a part, from several owners, between written headers (a DCP save
    of small tensors): every part mixes the two kinds, and the object is byte for byte what was written."""
    client = make_client(server)
    owners = [Owner(size) for size in (MiB + 7, 3 * MiB, 5, 2 * MiB + 1, 6 * MiB + 11, 4 * MiB, 9 * MiB + 3)]
    expected = []
    with client.put_object(bucket, "obj") as writer:
        for i, owner in enumerate(owners):
            header = os.urandom(37 + i)
            writer.write(header)
            writer._write_lent(owner.view(), owner, owner.start, owner.end)
            expected += [header, owner.data()]
    lent = sum(o.end - o.start for o in owners)
    assert _in_place(client) == lent
    assert not any(_still_held(o) for o in owners)
    assert client.get_object(bucket, "obj").read() == b"".join(expected)


@pytest.mark.parametrize("shared", [False, True], ids=["whole-parts", "shared-parts"])
def test_the_owner_is_held_until_its_parts_are_uploaded(
    seaweed_server, seaweed_bucket, make_client, proxy_factory, shared
):
    """Parts held up on their way: the write returns while they are in flight, and the owner of the
    memory they are sent from stays alive until close() has seen the CRT give them back. Whole parts
    lent as buffers, or (shared) lent bytes in parts with written ones: 7 MiB of the owner's complete
    the first part after 1 MiB written, and its last 1 MiB waits in the second part for close()."""
    from s3torch import _writer
    from s3torch.testing import Fault, delay

    proxy = proxy_factory(seaweed_server)
    slow = proxy.add_fault(
        Fault(delay(1.0), method="PUT", when=lambda r: "partNumber" in r.query, times=None)
    )
    client = make_client(seaweed_server, endpoint=proxy.endpoint)
    owner = Owner(PART if shared else 3 * PART)
    watch = weakref.ref(owner)
    writer = client.put_object(seaweed_bucket, "obj")
    if shared:
        expected = _mixed_part_upload(writer, owner)
    else:
        expected = owner.data()
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
    assert slow.fired >= (2 if shared else 3)
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
    _assert_let_go(watch)
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


def test_a_part_with_lent_bytes_damaged_in_transit_is_resent(
    seaweed_server, seaweed_bucket, make_client, proxy_factory
):
    """SeaweedFS checks each part's CRC32C trailer: a byte flipped on the way in a part made of written
    and lent bytes is refused, and the part is sent again from the same memory (a new body stream from
    its start, patch 0008): the upload completes with the right bytes."""
    from s3torch.testing import Fault, corrupt

    proxy = proxy_factory(seaweed_server)
    damage = proxy.add_fault(
        Fault(corrupt(3 * MiB + 17), method="PUT", when=lambda r: "partNumber" in r.query)
    )
    client = make_client(seaweed_server, endpoint=proxy.endpoint)
    owner = Owner(10 * MiB)
    with client.put_object(seaweed_bucket, "obj") as writer:
        expected = _mixed_part_upload(writer, owner)
    assert damage.fired == 1
    assert client.stats()["failed_attempts"] >= 1
    part_puts = [r for r in proxy.requests if r.method == "PUT" and "partNumber" in r.query]
    assert [r.status for r in part_puts].count(400) == 1 and len(part_puts) == 3  # 2 parts + 1 resend
    assert _in_place(client) == 10 * MiB
    assert make_client(seaweed_server).get_object(seaweed_bucket, "obj").read() == expected


def test_a_part_whose_lent_body_cannot_be_made_fails_and_nothing_lands(
    seaweed_server, seaweed_bucket, make_client
):
    """Should a part with lent bytes ever be unable to make its body, the part fails (the CRT never
    sends its buffer, which does not hold those bytes): the upload fails, no object appears, the lent
    memory is left as it was and its owner is let go."""
    from s3torch import _core

    client = make_client(seaweed_server, max_attempts=2)
    owner = Owner(10 * MiB)
    before = owner.data()
    watch = weakref.ref(owner)
    _core._set_lent_body_fault(True)
    try:
        writer = client.put_object(seaweed_bucket, "obj")
        with pytest.raises(S3Exception):
            _mixed_part_upload(writer, owner)
            writer.close()
        writer.abort()
    finally:
        _core._set_lent_body_fault(False)
    assert owner.data() == before
    del owner, writer
    _assert_let_go(watch)
    with pytest.raises(S3Exception):
        client.head_object(seaweed_bucket, "obj")
