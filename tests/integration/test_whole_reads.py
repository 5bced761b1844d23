"""Whole-object reads whose size is known from a listing: one GET straight into a new bytes object,
no part buffer of the pool (the common dataset sample), and still one version of the object."""

from __future__ import annotations

import os

import pytest

from s3torch import S3Exception, _core


def _stored(client, bucket, key, size):
    """Uploads ``size`` random bytes as ``key``; returns them."""
    payload = os.urandom(size)
    with client.put_object(bucket, key) as writer:
        writer.write(payload)
    return payload


def _listed(client, bucket, key):
    return next(o for page in client.list_objects(bucket, key) for o in page.object_info if o.key == key)


@pytest.mark.parametrize("size", [1, 100 * 1024, 9 * 1024 * 1024 + 3])
def test_a_listed_object_is_read_in_one_get_without_pool_memory(
    seaweed_server, seaweed_bucket, make_client, proxy_factory, size
):
    proxy = proxy_factory(seaweed_server)
    client = make_client(seaweed_server, endpoint=proxy.endpoint, part_size=5 * 1024 * 1024)
    payload = _stored(client, seaweed_bucket, "whole", size)
    info = _listed(client, seaweed_bucket, "whole")
    proxy.reset()
    before = client.stats()
    reader = client.get_object(seaweed_bucket, "whole", object_info=info)
    data = reader.read()
    assert isinstance(data, bytes) and data == payload
    after = client.stats()
    assert after["direct_gets"] == before["direct_gets"] + 1
    assert after["get_streams"] == before["get_streams"], "no stream, so no part buffer"
    assert after["tickets_granted"] == before["tickets_granted"], "no pool buffer was granted"
    assert after["validated_gets"] == before["validated_gets"] + 1, "checked against the object's CRC32C"
    assert reader.stats.get_requests == 1 and reader.stats.bytes_fetched == size
    proxy.wait_idle()
    gets = [r for r in proxy.requests if r.method == "GET"]
    assert gets and all(r.headers.get("if-match") for r in gets), "pinned to the listing's version"
    if size <= 5 * 1024 * 1024:
        # Up to a part: one GET without a Range, so that the store sends the object's checksum.
        assert proxy.count("HEAD") == 0 and len(gets) == 1 and gets[0].range is None
    else:
        # Larger: the parts are slices of the bytes object, checked as a whole against the checksum
        # the CRT learns with one HeadObject.
        assert after["direct_tickets"] > before["direct_tickets"], "the parts were slices of the bytes"
        assert proxy.count("HEAD") == 1
    # The reader keeps what it read: seeks and re-reads cost no request.
    reader.seek(0)
    assert reader.read(10) == payload[:10] and reader.read() == payload[10:]
    assert proxy.count("GET") == -(-size // (5 * 1024 * 1024))


def test_an_object_overwritten_after_the_listing_raises(seaweed_server, seaweed_bucket, make_client):
    client = make_client(seaweed_server)
    with client.put_object(seaweed_bucket, "changes") as writer:
        writer.write(b"a" * 1000)
    info = _listed(client, seaweed_bucket, "changes")
    with client.put_object(seaweed_bucket, "changes") as writer:
        writer.write(b"b" * 2000)
    with pytest.raises(S3Exception) as err:
        client.get_object(seaweed_bucket, "changes", object_info=info).read()
    assert err.value.status == 412


def test_get_bytes_ranges_and_errors(seaweed_server, seaweed_bucket, make_client):
    client = make_client(seaweed_server)
    payload = _stored(client, seaweed_bucket, "b", 300_000)
    native = client._native
    assert native.get_bytes(seaweed_bucket, "b", 0, len(payload)) == payload
    assert native.get_bytes(seaweed_bucket, "b", 1000, 2000) == payload[1000:2000]
    assert native.get_bytes(seaweed_bucket, "b", 5, 5) == b""
    with pytest.raises(ValueError):
        native.get_bytes(seaweed_bucket, "b", 10, 5)
    with pytest.raises(FileNotFoundError):
        native.get_bytes(seaweed_bucket, "missing", 0, 10)
    with pytest.raises(S3Exception):
        native.get_bytes(seaweed_bucket, "b", 0, len(payload) + 10)  # past the end: never a short bytes
    # prefix: bytes the caller already has; only the rest is requested.
    got = native.get_bytes(seaweed_bucket, "b", 100, 250_000, prefix=payload[100:1100])
    assert got == payload[100:250_000]
    # The prefix is trusted, not re-read: what it says is what comes back.
    assert native.get_bytes(seaweed_bucket, "b", 0, 10, prefix=b"x" * 10) == b"x" * 10
    with pytest.raises(ValueError):
        native.get_bytes(seaweed_bucket, "b", 0, 5, prefix=b"x" * 6)
    with pytest.raises(ValueError):
        native.get_bytes(seaweed_bucket, "b", 0, 10, whole_object=True, prefix=b"x")


PART = 5 * 1024 * 1024


@pytest.mark.parametrize("size", [1, 3000, PART, PART + 7, 3 * PART + 3])
@pytest.mark.parametrize("call", ["read", "readinto"])
def test_an_unlisted_object_is_read_in_place_after_its_first_part(
    seaweed_server, seaweed_bucket, make_client, proxy_factory, size, call
):
    """read() (or a large readinto) of an object of unknown size: a ranged GET of the first part
    tells the size, the rest is received straight into the result (no part buffer, no copy out of
    the pool), every GET pinned to the first one's version; as many GETs as a streamed read."""
    proxy = proxy_factory(seaweed_server)
    client = make_client(seaweed_server, endpoint=proxy.endpoint, part_size=PART)
    payload = _stored(client, seaweed_bucket, "unlisted", size)
    proxy.reset()
    before = client.stats()
    reader = client.get_object(seaweed_bucket, "unlisted")
    if call == "read":
        assert reader.read() == payload
    else:
        # At least 16 MiB (smaller reads stream) and larger than the object: it stops at the end.
        dest = bytearray(max(size + 100, 16 * 1024 * 1024))
        assert reader.readinto(dest) == size and dest[:size] == payload
    after = client.stats()
    parts = -(-size // PART)
    assert reader.stats.get_requests == min(parts, 2)
    assert after["tickets_granted"] - before["tickets_granted"] == 1, "only the first part used the pool"
    assert after["direct_tickets"] - before["direct_tickets"] == parts - 1, "the rest landed in place"
    proxy.wait_idle()
    gets = [r for r in proxy.requests if r.method == "GET"]
    assert len(gets) == parts and proxy.count("HEAD") == 0
    assert gets[0].range == (0, PART)
    assert all(r.headers.get("if-match") for r in gets[1:]), "the rest is pinned to the first part's version"
    # The reader keeps what it read: seeks and re-reads cost no request; the end is known.
    reader.seek(size // 2)
    assert reader.read() == payload[size // 2 :] and reader.read() == b""
    assert reader.seek(0, 2) == size and proxy.count("GET") == parts


def test_a_large_read_in_place_then_streams_the_rest(
    seaweed_server, seaweed_bucket, make_client, proxy_factory
):
    proxy = proxy_factory(seaweed_server)
    client = make_client(seaweed_server, endpoint=proxy.endpoint, part_size=PART)
    payload = _stored(client, seaweed_bucket, "big", 8 * PART + 11)
    reader = client.get_object(seaweed_bucket, "big")
    first = reader.read(4 * PART)  # >= 16 MiB with no GET in flight: first part, then in place
    assert first == payload[: 4 * PART] and reader.stats.get_requests == 2
    assert reader.read(1000) == payload[4 * PART : 4 * PART + 1000]  # a stream from where it stopped
    assert reader.stats.get_requests == 3
    assert reader.read() == payload[4 * PART + 1000 :]
    reader.seek(10)
    assert reader.read(20) == payload[10:30]
    proxy.wait_idle()
    starts = [r.range[0] for r in proxy.requests if r.method == "GET" and r.range]
    assert 4 * PART in starts, starts


def test_reading_an_empty_unlisted_object(seaweed_server, seaweed_bucket, make_client):
    client = make_client(seaweed_server, part_size=PART)
    with client.put_object(seaweed_bucket, "empty") as writer:
        writer.write(b"")
    assert client.get_object(seaweed_bucket, "empty").read() == b""
    dest = bytearray(32 * 1024 * 1024)
    assert client.get_object(seaweed_bucket, "empty").readinto(dest) == 0


def test_an_object_overwritten_between_its_first_part_and_the_rest_raises(
    seaweed_server, seaweed_bucket, make_client, monkeypatch
):
    client = make_client(seaweed_server, part_size=PART)
    with client.put_object(seaweed_bucket, "moving") as writer:
        writer.write(os.urandom(3 * PART))
    reader = client.get_object(seaweed_bucket, "moving")
    opener_type = type(reader._get_stream)
    real = opener_type.read_bytes

    def overwrite_then_read(self, *args, **kwargs):
        with client.put_object(seaweed_bucket, "moving") as writer:
            writer.write(os.urandom(3 * PART))
        return real(self, *args, **kwargs)

    monkeypatch.setattr(opener_type, "read_bytes", overwrite_then_read)
    with pytest.raises(S3Exception) as err:
        reader.read()
    assert err.value.status == 412


def test_a_large_read_maps_its_pages_in_ahead_of_the_transfer(seaweed_server, seaweed_bucket, make_client):
    """The bytes object a large read() returns is fresh memory: a thread maps its pages in while the
    parts arrive (cheaper than each first write faulting on an event-loop thread). Small reads start
    no thread; the bytes are the object's either way."""
    client = make_client(seaweed_server, part_size=PART)
    # Larger than the free heap top malloc keeps (64 MiB at most), so the bytes object is new pages.
    large, small = os.urandom(17 * PART + 5), os.urandom(3 * PART)
    for key, payload in (("large", large), ("small", small)):
        with client.put_object(seaweed_bucket, key) as writer:
            writer.write(payload)
    before = client.stats()["prefaulted_bytes"]
    assert client.get_object(seaweed_bucket, "large").read() == large
    mapped = client.stats()["prefaulted_bytes"] - before
    if _core.Prefault.supported():
        # Whole pages of what follows the first part, up to all of them (it stops once the GET is done).
        assert 0 < mapped <= len(large) - PART and mapped % 4096 == 0
    else:
        assert mapped == 0
    before = client.stats()["prefaulted_bytes"]
    assert client.get_object(seaweed_bucket, "small").read() == small
    assert client.stats()["prefaulted_bytes"] == before, "under 32 MiB to receive: no thread"


def _zip_reader_pattern(reader, size):
    """What torch.load does to a file object (traced): the magic at the start, the size, then the
    directory at the end; it reads the records only after that."""
    assert reader.read(4) is not None
    assert reader.seek(0, 2) == size
    reader.seek(size - 4096)
    tail = bytearray(4096)
    assert reader.readinto(tail) == 4096
    return bytes(tail)


def test_a_zip_reader_gets_the_first_part_then_the_rest_in_place(
    seaweed_server, seaweed_bucket, make_client, proxy_factory
):
    """A small first read fetches only the first part; the jump to the end that follows receives the
    bytes up to there straight into memory the reader keeps: every byte fetched once, no whole-object
    stream read ahead through part buffers, no HEAD."""
    proxy = proxy_factory(seaweed_server)
    client = make_client(seaweed_server, endpoint=proxy.endpoint, part_size=PART)
    size = 8 * PART + 123
    payload = _stored(client, seaweed_bucket, "zip", size)
    proxy.reset()
    before = client.stats()
    reader = client.get_object(seaweed_bucket, "zip")
    assert _zip_reader_pattern(reader, size) == payload[-4096:]
    after = client.stats()
    assert after["get_streams"] - before["get_streams"] == 1, "the first part only"
    assert after["direct_gets"] - before["direct_gets"] == 1, "the rest in place"
    assert after["bytes_downloaded"] - before["bytes_downloaded"] == size, "each byte once"
    assert after["tickets_granted"] - before["tickets_granted"] == 1, "one part buffer: the first part"
    proxy.wait_idle()
    assert proxy.count("HEAD") == 0 and proxy.count("GET") == -(-size // PART)
    # Everything is held: the records read next cost no request.
    reader.seek(100)
    assert reader.read(1000) == payload[100:1100]
    reader.seek(0)
    assert reader.read() == payload and reader.stats.bytes_fetched == size
    assert proxy.count("GET") == -(-size // PART)


def test_small_reads_that_go_on_start_the_stream_after_the_first_part(
    seaweed_server, seaweed_bucket, make_client, proxy_factory
):
    proxy = proxy_factory(seaweed_server)
    client = make_client(seaweed_server, endpoint=proxy.endpoint, part_size=PART)
    size = 4 * PART + 5
    payload = _stored(client, seaweed_bucket, "tar", size)
    before = client.stats()
    reader = client.get_object(seaweed_bucket, "tar")
    got = [reader.read(512)]
    assert client.stats()["get_streams"] - before["get_streams"] == 1  # the first part
    while True:
        piece = reader.read(64 * 1024)
        if not piece:
            break
        got.append(piece)
    assert b"".join(got) == payload
    after = client.stats()
    assert after["get_streams"] - before["get_streams"] == 2, "the rest came as one stream"
    assert after["bytes_downloaded"] - before["bytes_downloaded"] == size
    assert reader.stats.get_requests == 2


def test_a_header_read_fetches_only_the_first_part(seaweed_server, seaweed_bucket, make_client):
    """Reading a few header bytes and closing (safetensors, a zip's magic) fetches one part, not
    what a whole-object GET would have read ahead by then."""
    client = make_client(seaweed_server, part_size=PART)
    payload = _stored(client, seaweed_bucket, "head", 6 * PART)
    before = client.stats()
    with client.get_object(seaweed_bucket, "head") as reader:
        assert reader.read(8) == payload[:8]
        reader.seek(4 * PART)  # not where the last read ended: nothing starts yet
        reader.seek(50)
        assert reader.read(8) == payload[50:58]
    after = client.stats()
    assert after["bytes_downloaded"] - before["bytes_downloaded"] == PART
    assert after["get_streams"] - before["get_streams"] == 1 and reader.stats.get_requests == 1


@pytest.mark.parametrize("size", [0, 1, 4, PART - 1, PART, PART + 1, 5 * PART])
@pytest.mark.parametrize("limit", [None, 2 * PART])  # 2 parts: the reader holds half a part of them
def test_small_first_reads_at_every_size_boundary(seaweed_server, seaweed_bucket, make_client, size, limit):
    config = {} if limit is None else {"memory_limit_bytes": limit}
    client = make_client(seaweed_server, part_size=PART, **config)
    payload = _stored(client, seaweed_bucket, "edge", size)
    reader = client.get_object(seaweed_bucket, "edge")
    assert reader.read(3) == payload[:3]
    assert reader.read(2) == payload[3:5]
    reader.seek(1)
    assert reader.read() == payload[1:]
    assert reader.seek(0, 2) == size
    assert reader.stats.bytes_fetched == size
    # A small pool: the first part is copied out of it at once, so the stream of the rest can run.
    assert client._native.pool_stats()["in_use_bytes"] <= (PART if limit else size + PART)


@pytest.mark.timeout(120)
def test_bytes_received_in_place_are_not_counted_as_pool_memory(seaweed_server, seaweed_bucket, make_client):
    """A jump receives 4 parts in place (memory of the reader's own); the small reads after it stream
    through the pool. Spilling must skip the in-place bytes: counting them as pool memory given back
    would let the reader keep the whole pool, and its own GET would stall."""
    limit = 8 * PART  # the reader may keep a quarter: 2 parts; its stream reads ahead 2 more
    client = make_client(seaweed_server, part_size=PART, memory_limit_bytes=limit)
    size = 14 * PART + 9
    payload = _stored(client, seaweed_bucket, "spill", size)
    reader = client.get_object(seaweed_bucket, "spill")
    reader.seek(4 * PART)  # size unknown: the bytes up to there are received in place
    assert client.stats()["direct_gets"] >= 1
    got, most = [], 0
    while True:
        piece = reader.read(256 * 1024)
        if not piece:
            break
        got.append(piece)
        most = max(most, client._native.pool_stats()["reserved_bytes"])
    assert b"".join(got) == payload[4 * PART :]
    assert most <= 5 * PART, f"the pool reached {most / PART:.1f} parts"
    reader.seek(0)
    assert reader.read() == payload
