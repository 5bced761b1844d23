"""Native core against real local servers: round trips, ranges, listing, copy, delete."""

from __future__ import annotations

import hashlib
import os

import pytest

MiB = 1024 * 1024
PART = 8 * MiB


def _put(client, bucket: str, key: str, data: bytes, piece: int = 3 * MiB + 17) -> None:
    with client.put_object(bucket, key) as writer:
        for i in range(0, len(data), piece):
            writer.write(memoryview(data)[i : i + piece])
    assert writer.tell() == len(data)


def _get(client, bucket: str, key: str, start=None, end=None) -> bytes:
    return b"".join(bytes(chunk) for chunk in client.get_object_stream(bucket, key, start, end))


@pytest.mark.parametrize("size", [0, 1, PART - 1, PART + 1])
def test_round_trip_sizes(server, bucket, make_client, size):
    client = make_client(server)
    data = os.urandom(size)
    _put(client, bucket, f"obj-{size}", data)
    assert _get(client, bucket, f"obj-{size}") == data
    assert client.head_object(bucket, f"obj-{size}").size == size
    # Cross-check with an independent client: the object really is what we wrote.
    body = server.boto3_client().get_object(Bucket=bucket, Key=f"obj-{size}")["Body"].read()
    assert body == data


def test_round_trip_64mib_odd(seaweed_server, seaweed_bucket, make_client):
    client = make_client(seaweed_server)
    data = os.urandom(64 * MiB + 12345)
    _put(client, seaweed_bucket, "big", data, piece=5 * MiB + 3)
    chunks = list(client.get_object_stream(seaweed_bucket, "big"))
    assert [c.offset for c in chunks] == sorted(c.offset for c in chunks)
    assert sum(len(c) for c in chunks) == len(data)
    digest = hashlib.sha256()
    for c in chunks:
        digest.update(c)
    assert digest.digest() == hashlib.sha256(data).digest()
    # read_into one preallocated buffer across all parts
    buf = bytearray(len(data))
    stream = client.get_object_stream(seaweed_bucket, "big")
    assert stream.read_into(buf) == len(data)
    assert stream.read_into(bytearray(10)) == 0
    assert buf == data
    assert client.stats()["chunk_copies"] == 0


def test_ranges_at_the_edges(server, bucket, make_client):
    client = make_client(server)
    size = 2 * PART + 3
    data = os.urandom(size)
    _put(client, bucket, "r", data)
    cases = [
        (0, 1),
        (size - 1, size),
        (PART - 1, PART + 1),
        (0, PART),
        (PART, 2 * PART),
        (5, None),
        (None, 7),
        (size - 3, size + 1000),  # past the end: the server clamps
    ]
    for start, end in cases:
        lo = 0 if start is None else start
        hi = size if end is None else min(end, size)
        assert _get(client, bucket, "r", start, end) == data[lo:hi], (start, end)
    # An empty range is an empty stream (no request).
    assert _get(client, bucket, "r", 10, 10) == b""
    stream = client.get_object_stream(bucket, "r", PART - 1, PART + 1)
    first = next(iter(stream))
    assert first.offset == PART - 1


def test_range_validation(moto_server, moto_bucket, make_client):
    client = make_client(moto_server)
    _put(client, moto_bucket, "v", b"0123456789")
    with pytest.raises(ValueError):
        client.get_object_stream(moto_bucket, "v", 5, 2)
    with pytest.raises(ValueError):
        client.get_object_stream(moto_bucket, "v", -1, 2)
    from s3torch import S3Exception

    with pytest.raises(S3Exception) as info:
        _get(client, moto_bucket, "v", 50, 60)
    assert info.value.status == 416


def test_read_into_partial_chunks_and_tell(moto_server, moto_bucket, make_client):
    client = make_client(moto_server)
    data = os.urandom(3 * MiB + 5)
    _put(client, moto_bucket, "p", data)
    stream = client.get_object_stream(moto_bucket, "p")
    out = bytearray()
    sizes = [1, 1000, MiB - 1, 7, 2 * MiB]
    for n in sizes:
        buf = bytearray(n)
        got = stream.read_into(buf)
        out += buf[:got]
        assert stream.tell() == len(out)
    # the rest of a partially consumed chunk comes next as a chunk
    rest = list(stream)
    if rest:
        assert rest[0].offset == len(out)
    out += b"".join(bytes(c) for c in rest)
    assert bytes(out) == data


def test_peek_and_skip_consume_nothing_or_exactly_n(seaweed_server, seaweed_bucket, make_client):
    client = make_client(seaweed_server, part_size=5 * MiB)
    data = os.urandom(11 * MiB + 3)
    _put(client, seaweed_bucket, "pk", data)
    stream = client.get_object_stream(seaweed_bucket, "pk", 100, len(data))
    assert stream.peek(10) == data[100:110]
    assert stream.peek(10) == data[100:110] and stream.tell() == 100  # a peek consumes nothing
    # A peek across the first part's end (5 MiB into the range) waits for the next part.
    assert stream.peek(5 * MiB + 50) == data[100 : 100 + 5 * MiB + 50]
    assert stream.skip(5 * MiB) == 5 * MiB and stream.tell() == 100 + 5 * MiB
    assert stream.read(4) == data[100 + 5 * MiB : 104 + 5 * MiB]
    left = len(data) - 104 - 5 * MiB
    assert stream.skip(left - 3) == left - 3
    assert stream.peek(10) == data[-3:]  # short only at the end of the stream
    assert stream.skip(10) == 3 and stream.peek(1) == b""
    stream.close()
    with pytest.raises(ValueError):
        stream.peek(1)


def test_read_into_rejects_read_only_buffers(moto_server, moto_bucket, make_client):
    client = make_client(moto_server)
    _put(client, moto_bucket, "ro", b"abc")
    stream = client.get_object_stream(moto_bucket, "ro")
    with pytest.raises((TypeError, BufferError)):
        stream.read_into(b"xyz")


def test_list_prefix_delimiter_pagination(server, bucket, make_client):
    client = make_client(server)
    keys = [f"a/{i:02d}" for i in range(7)] + ["b/x", "b/y/z", "c", "d e+f&g.txt"]
    for k in keys:
        _put(client, bucket, k, k.encode())
    pages = list(client.list_objects(bucket, max_keys=3))
    assert len(pages) == 4
    listed = [o.key for p in pages for o in p.object_info]
    assert listed == sorted(keys)
    sizes = {o.key: o.size for p in pages for o in p.object_info}
    assert sizes["d e+f&g.txt"] == len("d e+f&g.txt")
    assert all(o.last_modified > 1_600_000_000 for p in pages for o in p.object_info)
    a = [o.key for p in client.list_objects(bucket, prefix="a/") for o in p.object_info]
    assert a == [f"a/{i:02d}" for i in range(7)]
    top = list(client.list_objects(bucket, delimiter="/"))
    assert sorted(pr for p in top for pr in p.common_prefixes) == ["a/", "b/"]
    assert sorted(o.key for p in top for o in p.object_info) == ["c", "d e+f&g.txt"]
    nested = list(client.list_objects(bucket, prefix="b/", delimiter="/"))
    assert [pr for p in nested for pr in p.common_prefixes] == ["b/y/"]
    assert [o.key for p in nested for o in p.object_info] == ["b/x"]
    with pytest.raises(ValueError):
        client.list_objects(bucket, max_keys=0)


def test_copy_and_delete(server, bucket, make_client):
    client = make_client(server)
    data = os.urandom(PART + 99)
    _put(client, bucket, "src key", data)
    client.copy_object(bucket, "src key", bucket, "dst/key")
    assert _get(client, bucket, "dst/key") == data
    client.delete_object(bucket, "dst/key")
    with pytest.raises(FileNotFoundError):
        client.head_object(bucket, "dst/key")
    assert _get(client, bucket, "src key") == data


def test_special_characters_in_keys(server, bucket, make_client):
    client = make_client(server)
    for key in ["sp ace", "uni-ü-€", "q?x=1&y", "plus+sign", "deep/ly/nested/k", "tilde~"]:
        _put(client, bucket, key, key.encode() * 3)
        assert _get(client, bucket, key) == key.encode() * 3
        assert client.head_object(bucket, key).size == len(key.encode()) * 3


def test_stream_read_fills_bytes(seaweed_server, seaweed_bucket, make_client):
    client = make_client(seaweed_server)
    data = os.urandom(2 * PART + 11)
    _put(client, seaweed_bucket, "rb", data)
    stream = client.get_object_stream(seaweed_bucket, "rb")
    head = stream.read(1000)
    assert head == data[:1000]
    assert stream.remaining() == len(data) - 1000
    rest = stream.read()
    assert isinstance(rest, bytes) and rest == data[1000:]
    assert stream.read() == b"" and stream.read(5) == b""
    ranged = client.get_object_stream(seaweed_bucket, "rb", PART - 3, PART + 4)
    assert ranged.remaining() == 7
    assert ranged.read(100) == data[PART - 3 : PART + 4]


def test_sequential_large_read_holds_no_part_buffers(seaweed_server, seaweed_bucket, make_client):
    client = make_client(seaweed_server)
    data = os.urandom(3 * PART + 5)
    _put(client, seaweed_bucket, "seq", data)
    reader = client.get_object(seaweed_bucket, "seq")
    assert reader.read() == data
    assert client.stats()["reserved_bytes"] == 0  # kept as one bytes object, not as pinned parts
    reader.seek(PART - 1)
    assert reader.read(10) == data[PART - 1 : PART + 9]
    reader.seek(0)
    assert reader.read(2 * PART) == data[: 2 * PART]
    # The first part's GET tells the size, the rest is one GET into the bytes; re-reads cost none.
    assert reader.stats.get_requests == 2
