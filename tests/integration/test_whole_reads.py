"""Whole-object reads whose size is known from a listing: one GET straight into a new bytes object,
no part buffer of the pool (the common dataset sample), and still one version of the object."""

from __future__ import annotations

import os

import pytest

from s3torch import S3Exception


def _listed(client, bucket, key):
    return next(o for page in client.list_objects(bucket, key) for o in page.object_info if o.key == key)


@pytest.mark.parametrize("size", [1, 100 * 1024, 9 * 1024 * 1024 + 3])
def test_a_listed_object_is_read_in_one_get_without_pool_memory(
    seaweed_server, seaweed_bucket, make_client, proxy_factory, size
):
    proxy = proxy_factory(seaweed_server)
    client = make_client(seaweed_server, endpoint=proxy.endpoint, part_size=5 * 1024 * 1024)
    payload = os.urandom(size)
    with client.put_object(seaweed_bucket, "whole") as writer:
        writer.write(payload)
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
    payload = os.urandom(300_000)
    with client.put_object(seaweed_bucket, "b") as writer:
        writer.write(payload)
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
