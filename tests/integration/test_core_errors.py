"""Errors: clear, typed, picklable, and nothing is lost or left behind."""

from __future__ import annotations

import os
import pickle

import pytest

from s3torch import S3Exception

MiB = 1024 * 1024


def test_missing_key(server, bucket, make_client):
    client = make_client(server)
    with pytest.raises(FileNotFoundError) as info:
        list(client.get_object_stream(bucket, "no/such/key"))
    err = info.value
    assert isinstance(err, S3Exception)
    assert err.status == 404
    assert err.bucket == bucket and err.key == "no/such/key"
    assert f"s3://{bucket}/no/such/key" in str(err)
    with pytest.raises(FileNotFoundError) as info:
        client.head_object(bucket, "no/such/key")
    assert info.value.status == 404


def test_missing_bucket(server, make_client):
    client = make_client(server)
    with pytest.raises(FileNotFoundError) as info:
        list(client.get_object_stream("s3torch-no-such-bucket", "k"))
    assert "s3torch-no-such-bucket" in str(info.value)
    with pytest.raises(FileNotFoundError):
        list(client.list_objects("s3torch-no-such-bucket"))


def test_wrong_secret_is_permission_error(seaweed_server, seaweed_bucket, make_client, monkeypatch):
    good = make_client(seaweed_server)
    with good.put_object(seaweed_bucket, "secret-test") as w:
        w.write(b"x")
    wrong_secret = "definitely-not-the-secret-123"
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", wrong_secret)
    bad = make_client(seaweed_server)
    with pytest.raises(PermissionError) as info:
        list(bad.get_object_stream(seaweed_bucket, "secret-test"))
    err = info.value
    assert isinstance(err, S3Exception)
    assert err.status == 403
    assert wrong_secret not in str(err) and "s3torchtestsecret" not in str(err)
    assert seaweed_bucket in str(err)
    with pytest.raises(PermissionError):
        bad.head_object(seaweed_bucket, "secret-test")


def test_writer_misuse(moto_server, moto_bucket, make_client):
    client = make_client(moto_server)
    writer = client.put_object(moto_bucket, "w")
    writer.write(b"abc")
    writer.close()
    assert writer.closed
    with pytest.raises(ValueError):
        writer.write(b"more")
    writer.close()  # idempotent
    assert client.head_object(moto_bucket, "w").size == 3


def test_exception_in_with_aborts_upload(server, bucket, make_client):
    client = make_client(server)
    with pytest.raises(RuntimeError, match="boom"):
        with client.put_object(bucket, "partial") as w:
            w.write(os.urandom(20 * MiB))  # several parts already uploading
            raise RuntimeError("boom")
    with pytest.raises(FileNotFoundError):
        client.head_object(bucket, "partial")
    keys = [o.key for p in client.list_objects(bucket) for o in p.object_info]
    assert "partial" not in keys


def test_dropped_writer_leaves_no_object(moto_server, moto_bucket, make_client):
    client = make_client(moto_server)
    w = client.put_object(moto_bucket, "dropped")
    w.write(os.urandom(9 * MiB))
    del w
    import gc

    gc.collect()
    with pytest.raises(FileNotFoundError):
        client.head_object(moto_bucket, "dropped")


def test_exceptions_and_client_pickle(moto_server, moto_bucket, make_client):
    client = make_client(moto_server)
    with pytest.raises(FileNotFoundError) as info:
        client.head_object(moto_bucket, "nope")
    err = pickle.loads(pickle.dumps(info.value))
    assert type(err) is type(info.value)
    assert (err.bucket, err.key, err.status, err.code) == (moto_bucket, "nope", 404, info.value.code)
    assert str(err) == str(info.value)
    clone = pickle.loads(pickle.dumps(client))
    assert clone.region == client.region and clone.endpoint == client.endpoint
    with clone.put_object(moto_bucket, "via-clone") as w:
        w.write(b"pickled")
    assert b"".join(bytes(c) for c in client.get_object_stream(moto_bucket, "via-clone")) == b"pickled"


def test_client_works_in_forked_child(moto_server, moto_bucket, make_client):
    client = make_client(moto_server)
    with client.put_object(moto_bucket, "fork") as w:
        w.write(b"before fork")
    assert b"".join(bytes(c) for c in client.get_object_stream(moto_bucket, "fork")) == b"before fork"
    pid = os.fork()
    if pid == 0:  # child: the native client and runtime are rebuilt
        code = 1
        try:
            got = b"".join(bytes(c) for c in client.get_object_stream(moto_bucket, "fork"))
            with client.put_object(moto_bucket, "from-child") as w:
                w.write(got + b" in child")
            code = 0
        finally:
            os._exit(code)
    _, status = os.waitpid(pid, 0)
    assert os.WEXITSTATUS(status) == 0
    got = b"".join(bytes(c) for c in client.get_object_stream(moto_bucket, "from-child"))
    assert got == b"before fork in child"


def test_config_validation():
    from s3torch import S3ClientConfig

    with pytest.raises(ValueError):
        S3ClientConfig(part_size=1024)
    with pytest.raises(ValueError):
        S3ClientConfig(part_size=6 * 1024**3)
    with pytest.raises(ValueError):
        S3ClientConfig(max_attempts=0)
    cfg = S3ClientConfig()
    assert (cfg.throughput_target_gbps, cfg.part_size, cfg.unsigned, cfg.force_path_style) == (
        10.0,
        8 * MiB,
        False,
        False,
    )
    assert cfg.max_attempts == 10 and cfg.profile is None and cfg.memory_limit_bytes is None
    import dataclasses

    with pytest.raises(dataclasses.FrozenInstanceError):
        cfg.part_size = 5  # type: ignore[misc]


def test_single_attempt_client_works_and_fails_on_the_first_error(
    seaweed_server, seaweed_bucket, make_client, proxy_factory
):
    from s3torch.testing import Fault, respond

    proxy = proxy_factory(seaweed_server)
    client = make_client(seaweed_server, endpoint=proxy.endpoint, max_attempts=1)
    data = os.urandom(3 * MiB)
    with client.put_object(seaweed_bucket, "one-try") as writer:
        writer.write(data)
    assert client.get_object(seaweed_bucket, "one-try").read() == data
    assert client.head_object(seaweed_bucket, "one-try").size == len(data)

    proxy.reset()
    proxy.add_fault(Fault(respond(500), method="GET"))
    with pytest.raises(S3Exception) as info:
        client.get_object(seaweed_bucket, "one-try").read()
    assert info.value.status == 500  # the server's answer, not the retry strategy's refusal
    assert proxy.count("GET") == 1, "max_attempts=1 must not retry"


def test_retries_stop_at_max_attempts(seaweed_server, seaweed_bucket, make_client, proxy_factory):
    from s3torch.testing import Fault, respond

    with make_client(seaweed_server).put_object(seaweed_bucket, "few-tries") as writer:
        writer.write(b"payload")
    proxy = proxy_factory(seaweed_server)
    client = make_client(seaweed_server, endpoint=proxy.endpoint, max_attempts=2)
    proxy.add_fault(Fault(respond(500), method="GET", times=1))
    assert client.get_object(seaweed_bucket, "few-tries").read() == b"payload"  # second attempt
    assert proxy.count("GET") == 2

    proxy.reset()
    proxy.add_fault(Fault(respond(500), method="GET", times=None))
    with pytest.raises(S3Exception) as info:
        client.get_object(seaweed_bucket, "few-tries").read()
    assert info.value.status == 500
    assert proxy.count("GET") == 2
