"""The CRT's log messages and the core's own failure paths in Python's logging (logger s3torch.crt);
secrets that never reach a log record, an exception or a repr; credentials from a named profile;
unsigned requests on a public-read and a private bucket."""

from __future__ import annotations

import logging
import os
from typing import Iterator

import pytest

from s3torch import S3Exception, S3PermissionError, configure_crt_logging
from s3torch._crtlog import TRACE, flush_crt_logging

MiB = 1024 * 1024


@pytest.fixture
def crt_logging(caplog: pytest.LogCaptureFixture) -> Iterator[pytest.LogCaptureFixture]:
    """Yields caplog; turns the CRT's logging back off afterwards."""
    yield caplog
    logging.getLogger("s3torch.crt").setLevel(logging.NOTSET)
    configure_crt_logging()
    flush_crt_logging()


def _put(client, bucket: str, key: str, payload: bytes) -> None:
    with client.put_object(bucket, key) as writer:
        writer.write(payload)


def test_off_by_default(moto_server, moto_bucket, make_client):
    from s3torch import _core

    assert logging.getLogger("s3torch.crt").level == logging.NOTSET
    client = make_client(moto_server)
    _put(client, moto_bucket, "obj", b"x" * 100)
    assert client.get_object_stream(moto_bucket, "obj").read() == b"x" * 100
    assert _core.crt_log_level() == 0


def test_crt_messages_and_retries_reach_logging(
    crt_logging, seaweed_server, seaweed_bucket, make_client, proxy_factory
):
    from s3torch.testing import Fault, respond

    payload = os.urandom(3 * MiB)
    _put(make_client(seaweed_server), seaweed_bucket, "obj", payload)
    proxy = proxy_factory(seaweed_server)
    proxy.add_fault(Fault(respond(500), method="GET", times=1))
    crt_logging.set_level(logging.DEBUG, logger="s3torch.crt")
    client = make_client(seaweed_server, endpoint=proxy.endpoint)
    assert client.get_object_stream(seaweed_bucket, "obj", 5, 2 * MiB).read() == payload[5 : 2 * MiB]
    flush_crt_logging()
    messages = [r.getMessage() for r in crt_logging.records if r.name == "s3torch.crt"]
    ours = [m for m in messages if m.startswith("[s3torch]")]
    assert any(
        "attempt failed" in m and f"s3://{seaweed_bucket}/obj" in m and "bytes=5-" in m and "HTTP 500" in m
        for m in ours
    ), ours
    assert len(messages) > len(ours), "the CRT's own messages arrive too"
    # Off again: nothing more is queued.
    logging.getLogger("s3torch.crt").setLevel(logging.NOTSET)
    configure_crt_logging()
    flush_crt_logging()
    crt_logging.clear()
    client.get_object_stream(seaweed_bucket, "obj").read()
    flush_crt_logging()
    assert not [r for r in crt_logging.records if r.name == "s3torch.crt"]


def test_secret_never_appears_in_logs_errors_or_reprs(
    crt_logging, seaweed_server, seaweed_bucket, make_client, monkeypatch
):
    from s3torch import _core

    secret = os.environ["AWS_SECRET_ACCESS_KEY"]
    crt_logging.set_level(TRACE, logger="s3torch.crt")
    dropped = _core.crt_log_dropped()
    client = make_client(seaweed_server)  # the right secret: signed requests succeed
    _put(client, seaweed_bucket, "obj", b"y" * 1000)
    assert client.get_object_stream(seaweed_bucket, "obj").read() == b"y" * 1000

    wrong = "wrong" + secret[::-1]
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", wrong)
    bad = make_client(seaweed_server)
    with pytest.raises(S3PermissionError) as caught:
        bad.get_object_stream(seaweed_bucket, "obj").read()
    flush_crt_logging()

    records = [r for r in crt_logging.records if r.name == "s3torch.crt"]
    assert any(r.levelno == TRACE for r in records), "TRACE level reached the CRT"
    assert _core.crt_log_dropped() == dropped, "every record was seen"
    texts = [r.getMessage() for r in records]
    texts += [str(caught.value), repr(caught.value), repr(client), repr(bad), repr(client.s3client_config)]
    for text in texts:
        assert secret not in text and wrong not in text
    assert isinstance(caught.value, S3Exception)


def test_credentials_from_a_named_profile(seaweed_server, seaweed_bucket, make_client, monkeypatch, tmp_path):
    """The SDKs' shared files: a named profile's keys sign requests (SigV4 checked by SeaweedFS);
    a profile with a wrong secret gets PermissionError without the secret in it."""
    key_id, secret = os.environ["AWS_ACCESS_KEY_ID"], os.environ["AWS_SECRET_ACCESS_KEY"]
    _put(make_client(seaweed_server), seaweed_bucket, "obj", b"profile")
    credentials = tmp_path / "credentials"
    credentials.write_text(
        f"[default]\naws_access_key_id = nobody\naws_secret_access_key = nothing\n\n"
        f"[train]\naws_access_key_id = {key_id}\naws_secret_access_key = {secret}\n\n"
        f"[broken]\naws_access_key_id = {key_id}\naws_secret_access_key = not-{secret}\n"
    )
    config = tmp_path / "config"
    config.write_text("[profile train]\nregion = us-east-1\n")
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(credentials))
    monkeypatch.setenv("AWS_CONFIG_FILE", str(config))
    monkeypatch.delenv("AWS_ACCESS_KEY_ID")
    monkeypatch.delenv("AWS_SECRET_ACCESS_KEY")
    train = make_client(seaweed_server, profile="train")
    assert train.get_object_stream(seaweed_bucket, "obj").read() == b"profile"
    with pytest.raises(S3PermissionError) as caught:
        make_client(seaweed_server, profile="broken").get_object_stream(seaweed_bucket, "obj").read()
    assert secret not in str(caught.value)
    monkeypatch.setenv("AWS_PROFILE", "train")  # the environment's choice, as the SDKs read it
    assert make_client(seaweed_server).get_object_stream(seaweed_bucket, "obj").read() == b"profile"


def test_unsigned_reads_a_public_bucket_and_is_refused_on_a_private_one(
    seaweed_server, seaweed_bucket, make_client
):
    from s3torch.testing.servers import PUBLIC_BUCKET

    signed = make_client(seaweed_server)
    _put(signed, seaweed_bucket, "obj", b"private")
    if PUBLIC_BUCKET not in [b["Name"] for b in seaweed_server.boto3_client().list_buckets()["Buckets"]]:
        seaweed_server.create_bucket(PUBLIC_BUCKET)
    try:
        _put(signed, PUBLIC_BUCKET, "obj", b"public")
        anonymous = make_client(seaweed_server, unsigned=True)
        assert anonymous.get_object_stream(PUBLIC_BUCKET, "obj").read() == b"public"
        with pytest.raises(S3PermissionError):
            anonymous.get_object_stream(seaweed_bucket, "obj").read()
        with pytest.raises(S3PermissionError):
            _put(anonymous, PUBLIC_BUCKET, "written", b"x")  # public-read, not public-write
    finally:
        seaweed_server.delete_bucket_recursive(PUBLIC_BUCKET)
