"""Download checksums: a body damaged on its way back (the proxy flips one byte) is detected, retried
and never returned.

What the stores send (probed): a plain GET of the whole object returns the checksum the object was
stored with; ranged GETs return none. Our uploads store a FULL_OBJECT CRC32C (not a composite "-N"
one), so whole-object reads of what we write can be checked. SeaweedFS does all of this (its header
names are capitalised, which the CRT missed until our patch 0003). moto cannot check anything here: it
answers `x-amz-checksum-mode` only when the value is upper case (the CRT sends "enabled"), and the
FULL_OBJECT value it reports for our multipart uploads is not the CRC32C of the bytes. So the
detection tests run on SeaweedFS; what does not depend on the store runs on both.
"""

from __future__ import annotations

import base64
import os

import pytest

from s3torch import S3Exception

MiB = 1024 * 1024


def _crc32c(data: bytes) -> int:
    """CRC32C (Castagnoli, reflected 0x82F63B78), computed independently of the native code."""
    table = []
    for i in range(256):
        c = i
        for _ in range(8):
            c = (c >> 1) ^ 0x82F63B78 if c & 1 else c >> 1
        table.append(c)
    crc = 0xFFFFFFFF
    for byte in data:
        crc = table[(crc ^ byte) & 0xFF] ^ (crc >> 8)
    return crc ^ 0xFFFFFFFF


def _put(client, bucket: str, key: str, data: bytes) -> None:
    with client.put_object(bucket, key) as writer:
        writer.write(data)


def _listed(client, bucket: str, key: str):
    return next(o for page in client.list_objects(bucket, key) for o in page.object_info if o.key == key)


def _read_whole(client, bucket: str, key: str) -> bytes:
    """What a dataset does: a reader given the listing's object info, read to the end."""
    return client.get_object(bucket, key, object_info=_listed(client, bucket, key)).read()


@pytest.mark.parametrize("size", [96 * 1024, 9 * MiB + 12345], ids=["one-part", "two-parts"])
def test_our_uploads_store_a_full_object_crc32c(seaweed_server, seaweed_bucket, make_client, size):
    """Whatever its size, an object we write carries the CRC32C of all its bytes (FULL_OBJECT), not a
    checksum of part checksums: any reader, ours or an SDK, can check a whole-object GET against it.
    A multipart upload's is combined from its parts' CRC32Cs (no pass of its own over the bytes):
    written in uneven pieces, it must still be the CRC32C of the whole."""
    data = os.urandom(size)
    with make_client(seaweed_server).put_object(seaweed_bucket, "obj") as writer:
        for at in range(0, size, 3 * MiB + 7):
            writer.write(data[at : at + 3 * MiB + 7])
    head = seaweed_server.boto3_client().get_object(Bucket=seaweed_bucket, Key="obj", ChecksumMode="ENABLED")
    headers = head["ResponseMetadata"]["HTTPHeaders"]
    assert headers["x-amz-checksum-crc32c"] == base64.b64encode(_crc32c(data).to_bytes(4, "big")).decode()
    assert headers["x-amz-checksum-type"].upper() == "FULL_OBJECT"
    assert head["Body"].read() == data


@pytest.mark.parametrize("size", [3 * MiB, 20 * MiB], ids=["one-part", "three-parts"])
def test_a_damaged_body_is_detected_retried_and_never_returned(
    seaweed_server, seaweed_bucket, make_client, proxy_factory, size
):
    """One plain GET for an object of up to a part (checked as it comes), parallel part GETs after a
    HeadObject for a larger one (checked as a whole): either way the damaged response is refused and
    the read returns the stored bytes from a second attempt."""
    from s3torch.testing import Fault, corrupt_response

    data = os.urandom(size)
    _put(make_client(seaweed_server), seaweed_bucket, "obj", data)
    proxy = proxy_factory(seaweed_server)
    damage = proxy.add_fault(Fault(corrupt_response(MiB + 5), method="GET", path="/obj"))
    client = make_client(seaweed_server, endpoint=proxy.endpoint)
    assert _read_whole(client, seaweed_bucket, "obj") == data
    counters = client._native.counters()
    assert damage.fired == 1
    assert counters["checksum_mismatches"] == 1 and counters["validated_gets"] == 1
    gets = [r for r in proxy.requests if r.method == "GET" and r.path.endswith("/obj")]
    if size <= 8 * MiB:
        assert len(gets) == 2 and all(r.range is None for r in gets)  # no Range: the object's checksum
    else:
        assert any(r.method == "HEAD" for r in proxy.requests)


def test_a_body_damaged_on_every_attempt_raises(seaweed_server, seaweed_bucket, make_client, proxy_factory):
    """Damaged every time: after max_attempts the read raises an S3Exception that says so; no byte of
    a damaged body is handed out."""
    from s3torch.testing import Fault, corrupt_response

    data = os.urandom(2 * MiB)
    _put(make_client(seaweed_server), seaweed_bucket, "obj", data)
    proxy = proxy_factory(seaweed_server)
    damage = proxy.add_fault(Fault(corrupt_response(17), method="GET", path="/obj", times=None))
    client = make_client(seaweed_server, endpoint=proxy.endpoint, max_attempts=3)
    with pytest.raises(S3Exception, match="checksum") as caught:
        _read_whole(client, seaweed_bucket, "obj")
    assert damage.fired == 3
    assert "s3://" + seaweed_bucket + "/obj" in str(caught.value)
    assert client._native.counters()["checksum_mismatches"] == 3


def test_without_download_checksum_the_damage_goes_through(server, bucket, make_client, proxy_factory):
    """The check is what catches it: turned off, the same damaged body is returned as it came."""
    from s3torch.testing import Fault, corrupt_response

    data = os.urandom(MiB)
    _put(make_client(server), bucket, "obj", data)
    proxy = proxy_factory(server)
    proxy.add_fault(Fault(corrupt_response(100), method="GET", path="/obj"))
    client = make_client(server, endpoint=proxy.endpoint, download_checksum=False)
    got = _read_whole(client, bucket, "obj")
    assert len(got) == len(data) and got != data
    assert got[100] == data[100] ^ 0xFF and got[:100] == data[:100]
    assert client._native.counters()["validated_gets"] == 0
    # Nothing to check, so the read takes the in-place ranged path (no plain GET, no HeadObject).
    gets = [r for r in proxy.requests if r.method == "GET" and r.path.endswith("/obj")]
    assert gets and all(r.range is not None for r in gets) and proxy.count("HEAD") == 0


def test_an_object_of_another_size_than_listed_is_refused(server, bucket, make_client):
    """A listing older than the object (and no ETag to pin: some stores list none that match) must
    not give a short or overlong read: the whole-object GET checks the size it was promised."""
    client = make_client(server)
    _put(client, bucket, "obj", b"x" * 5000)
    with pytest.raises(S3Exception, match="larger than the 4000 bytes"):
        client._native.get_bytes(bucket, "obj", 0, 4000, whole_object=True)
    with pytest.raises(S3Exception, match="smaller"):
        client._native.get_bytes(bucket, "obj", 0, 6000, whole_object=True)
    assert client._native.get_bytes(bucket, "obj", 0, 5000, whole_object=True) == b"x" * 5000
