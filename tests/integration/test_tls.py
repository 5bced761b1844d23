"""HTTPS endpoints: TLS through a loopback proxy with a throwaway CA, trusted via AWS_CA_BUNDLE.

The proxy terminates TLS in front of SeaweedFS (which still checks every SigV4 signature), so these
exercise the CRT's TLS path (s2n, certificate and host verification) end to end on 127.0.0.1.
"""

from __future__ import annotations

import os
import time

import pytest

from s3torch import S3Exception
from s3torch.testing import S3Proxy, make_tls_files, server_context

MiB = 1024 * 1024


@pytest.fixture(scope="module")
def tls_files(tmp_path_factory):
    return make_tls_files(tmp_path_factory.mktemp("tls"))


@pytest.fixture
def tls_proxy(seaweed_server, tls_files):
    with S3Proxy(seaweed_server.endpoint, tls=server_context(tls_files)) as proxy:
        yield proxy


def test_https_round_trip_with_ca_bundle(
    seaweed_server, seaweed_bucket, tls_proxy, tls_files, make_client, monkeypatch
):
    assert tls_proxy.endpoint.startswith("https://127.0.0.1:")
    monkeypatch.setenv("AWS_CA_BUNDLE", str(tls_files.ca_file))
    client = make_client(seaweed_server, endpoint=tls_proxy.endpoint, part_size=5 * MiB)
    data = os.urandom(13 * MiB + 12345)  # a multipart upload and a multi-part GET
    with client.put_object(seaweed_bucket, "over/tls") as writer:
        writer.write(data)

    assert client.get_object(seaweed_bucket, "over/tls").read() == data
    ranged = client.get_object_stream(seaweed_bucket, "over/tls", 4 * MiB + 7, 11 * MiB)
    assert b"".join(bytes(c) for c in ranged) == data[4 * MiB + 7 : 11 * MiB]
    assert client.head_object(seaweed_bucket, "over/tls").size == len(data)

    assert tls_proxy.tls_failures == []
    assert tls_proxy.count("PUT") >= 3  # parts went through the TLS proxy, not around it
    assert tls_proxy.count("GET") >= 4
    # The same bytes, read back over plain HTTP straight from the server.
    assert make_client(seaweed_server).get_object(seaweed_bucket, "over/tls").read() == data


def test_https_untrusted_certificate_is_refused(
    seaweed_server, seaweed_bucket, tls_proxy, make_client, monkeypatch
):
    with make_client(seaweed_server).put_object(seaweed_bucket, "secret") as writer:
        writer.write(b"x")
    monkeypatch.delenv("AWS_CA_BUNDLE", raising=False)  # system store: our CA is not in it
    client = make_client(seaweed_server, endpoint=tls_proxy.endpoint, max_attempts=1)
    t0 = time.monotonic()
    with pytest.raises(S3Exception) as info:
        client.get_object(seaweed_bucket, "secret").read()
    # One attempt; s2n holds a connection whose handshake failed for 10-30 s before reporting it.
    assert time.monotonic() - t0 < 60
    assert "TLS" in str(info.value)
    # The proxy's handshake thread may record the failure just after the client reported it.
    deadline = time.monotonic() + 10
    while not tls_proxy.tls_failures and time.monotonic() < deadline:
        time.sleep(0.05)
    assert tls_proxy.tls_failures, "the handshake should have failed at the proxy"
    assert tls_proxy.count() == 0  # no request was ever sent over an unverified connection


def test_ca_bundle_that_cannot_be_loaded_is_a_clear_error(seaweed_server, make_client, tmp_path, monkeypatch):
    missing = tmp_path / "missing-ca.pem"
    monkeypatch.setenv("AWS_CA_BUNDLE", str(missing))
    client = make_client(seaweed_server, endpoint="https://127.0.0.1:9")  # never contacted
    with pytest.raises(ValueError) as info:
        client.head_object("any-bucket", "any-key")
    assert str(missing) in str(info.value) and "AWS_CA_BUNDLE" in str(info.value)
