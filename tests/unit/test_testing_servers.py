"""The local S3 servers behind the test suite, checked with boto3 (not with s3torch)."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import botocore  # noqa: E402
import pytest
from botocore.exceptions import ClientError  # noqa: E402

import s3torch.testing
from s3torch.testing import S3Server, parse_range, start_moto, unique_bucket_name

MiB = 1 << 20


def _group_pids(pgid: int) -> list[int]:
    pids = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        # Fields after the parenthesised command name: state, ppid, pgrp, ...
        fields = stat.rsplit(")", 1)[1].split()
        if int(fields[2]) == pgid:
            pids.append(int(entry.name))
    return pids


def _listening_addresses(pgid: int) -> list[tuple[str, str]]:
    """(family, hex local address) of every listening TCP socket of a process group."""
    inodes = set()
    for pid in _group_pids(pgid):
        fd_dir = Path(f"/proc/{pid}/fd")
        try:
            for fd in fd_dir.iterdir():
                target = os.readlink(fd)
                if target.startswith("socket:["):
                    inodes.add(target[8:-1])
        except OSError:
            continue
    found = []
    for family in ("tcp", "tcp6"):
        for line in Path(f"/proc/net/{family}").read_text().splitlines()[1:]:
            fields = line.split()
            if fields[3] == "0A" and fields[9] in inodes:  # 0A: LISTEN
                found.append((family, fields[1].rsplit(":", 1)[0]))
    return found


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")
def test_servers_listen_on_loopback_only(moto_server: S3Server, seaweed_server: S3Server) -> None:
    for srv in (moto_server, seaweed_server):
        assert srv.endpoint.startswith("http://127.0.0.1:")
        addresses = _listening_addresses(srv.pid)
        assert addresses, f"{srv.kind}: no listening sockets found"
        # 0100007F is 127.0.0.1 in /proc/net/tcp's little-endian hex.
        assert all(a == ("tcp", "0100007F") for a in addresses), (srv.kind, addresses)
    # weed mini runs master, volume, filer, S3 and admin, each with an HTTP and a gRPC port.
    assert len(_listening_addresses(seaweed_server.pid)) >= 9


def test_put_get_range_list(server: S3Server, bucket: str) -> None:
    client = server.boto3_client(max_attempts=1)
    data = os.urandom(3 * MiB + 123)
    client.put_object(Bucket=bucket, Key="dir/a.bin", Body=data)
    client.put_object(Bucket=bucket, Key="dir/sub/b.bin", Body=b"b")
    client.put_object(Bucket=bucket, Key="top.bin", Body=b"")

    assert client.get_object(Bucket=bucket, Key="dir/a.bin")["Body"].read() == data
    head = client.head_object(Bucket=bucket, Key="dir/a.bin")
    assert head["ContentLength"] == len(data)

    size = len(data)
    for header in (
        "bytes=0-0",
        "bytes=5-1048580",
        f"bytes={size - 10}-",
        "bytes=-7",
        f"bytes={size - 3}-{size + 100}",
    ):
        response = client.get_object(Bucket=bucket, Key="dir/a.bin", Range=header)
        start, end = parse_range(header)  # type: ignore[misc]
        assert response["ResponseMetadata"]["HTTPStatusCode"] == 206
        assert response["Body"].read() == data[start:end], header
    with pytest.raises(ClientError) as info:
        client.get_object(Bucket=bucket, Key="dir/a.bin", Range=f"bytes={size + 10}-")
    assert info.value.response["Error"]["Code"] == "InvalidRange"

    listing = client.list_objects_v2(Bucket=bucket, Prefix="dir/", Delimiter="/")
    assert [o["Key"] for o in listing["Contents"]] == ["dir/a.bin"]
    assert [p["Prefix"] for p in listing["CommonPrefixes"]] == ["dir/sub/"]
    everything = client.list_objects_v2(Bucket=bucket)
    assert sorted(o["Key"] for o in everything["Contents"]) == [
        "dir/a.bin",
        "dir/sub/b.bin",
        "top.bin",
    ]

    with pytest.raises(ClientError) as info:
        client.get_object(Bucket=bucket, Key="missing")
    assert info.value.response["Error"]["Code"] == "NoSuchKey"
    with pytest.raises(ClientError) as info:
        client.put_object(Bucket=unique_bucket_name("missing"), Key="k", Body=b"x")
    assert info.value.response["Error"]["Code"] == "NoSuchBucket"


def test_multipart_minimum_part_size(server: S3Server, bucket: str) -> None:
    # Both servers enforce S3's 5 MiB minimum for every part but the last.
    client = server.boto3_client(max_attempts=1)

    def upload(sizes: list[int]) -> None:
        upload_id = client.create_multipart_upload(Bucket=bucket, Key="mp")["UploadId"]
        parts = []
        for number, size in enumerate(sizes, 1):
            etag = client.upload_part(
                Bucket=bucket,
                Key="mp",
                UploadId=upload_id,
                PartNumber=number,
                Body=bytes([number]) * size,
            )["ETag"]
            parts.append({"PartNumber": number, "ETag": etag})
        client.complete_multipart_upload(
            Bucket=bucket, Key="mp", UploadId=upload_id, MultipartUpload={"Parts": parts}
        )

    with pytest.raises(ClientError) as info:
        upload([5 * MiB - 1, 10])
    assert info.value.response["Error"]["Code"] == "EntityTooSmall"
    upload([5 * MiB, 10])
    body = client.get_object(Bucket=bucket, Key="mp")["Body"].read()
    assert body == b"\x01" * (5 * MiB) + b"\x02" * 10
    assert client.head_object(Bucket=bucket, Key="mp")["ETag"].endswith('-2"')


def test_seaweedfs_verifies_signatures(seaweed_server: S3Server, seaweed_bucket: str) -> None:
    good = seaweed_server.boto3_client(max_attempts=1)
    good.put_object(Bucket=seaweed_bucket, Key="k", Body=b"secret data")

    wrong_secret = seaweed_server.boto3_client(max_attempts=1, secret_key="not-the-secret")
    for call in (
        lambda: wrong_secret.list_buckets(),
        lambda: wrong_secret.get_object(Bucket=seaweed_bucket, Key="k"),
        lambda: wrong_secret.put_object(Bucket=seaweed_bucket, Key="k2", Body=b"x"),
    ):
        with pytest.raises(ClientError) as info:
            call()
        assert info.value.response["ResponseMetadata"]["HTTPStatusCode"] == 403
        assert info.value.response["Error"]["Code"] in ("SignatureDoesNotMatch", "AccessDenied")

    unsigned = seaweed_server.boto3_client(max_attempts=1, signature_version=botocore.UNSIGNED)
    with pytest.raises(ClientError) as info:
        unsigned.get_object(Bucket=seaweed_bucket, Key="k")
    assert info.value.response["Error"]["Code"] == "AccessDenied"
    # Nothing was written by the rejected requests.
    keys = [o["Key"] for o in good.list_objects_v2(Bucket=seaweed_bucket)["Contents"]]
    assert keys == ["k"]


def test_seaweedfs_large_object(seaweed_server: S3Server, seaweed_bucket: str) -> None:
    client = seaweed_server.boto3_client(max_attempts=1)
    data = os.urandom(64 * MiB)
    client.put_object(Bucket=seaweed_bucket, Key="big", Body=data)
    assert client.get_object(Bucket=seaweed_bucket, Key="big")["Body"].read() == data
    # Ranges across SeaweedFS's 4 MiB storage chunks.
    for start, end in ((4 * MiB - 5, 4 * MiB + 5), (10 * MiB + 1, 30 * MiB + 7)):
        got = client.get_object(Bucket=seaweed_bucket, Key="big", Range=f"bytes={start}-{end - 1}")
        assert got["ContentRange"] == f"bytes {start}-{end - 1}/{64 * MiB}"
        assert got["Body"].read() == data[start:end]


def test_stop_kills_the_process_group_and_removes_files() -> None:
    srv = start_moto()
    with srv:
        assert srv.running
        port, workdir, pgid = srv.port, srv.workdir, srv.pid
        assert workdir.is_dir()
    assert not srv.running
    assert not workdir.exists()
    assert _group_pids(pgid) == []
    with pytest.raises(OSError):
        socket.create_connection(("127.0.0.1", port), timeout=1).close()
    srv.stop()  # idempotent


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")
def test_server_dies_with_a_killed_test_process(tmp_path: Path) -> None:
    # A test process killed by SIGKILL runs no cleanup; the watchdog must still end the server.
    script = (
        "import sys, time\n"
        f"sys.path.insert(0, {str(Path(s3torch.testing.__file__).parents[2])!r})\n"
        "from s3torch.testing import start_moto\n"
        "s = start_moto()\n"
        "print(s.pid, s.workdir, flush=True)\n"
        "time.sleep(60)\n"
    )
    parent = subprocess.Popen(
        [sys.executable, "-c", script], stdout=subprocess.PIPE, text=True, cwd=tmp_path
    )
    try:
        assert parent.stdout is not None
        pgid_text, workdir_text = parent.stdout.readline().split()
    finally:
        parent.kill()
        parent.wait()
    pgid, workdir = int(pgid_text), Path(workdir_text)
    deadline = time.monotonic() + 10
    while (_group_pids(pgid) or workdir.exists()) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert _group_pids(pgid) == []
    assert not workdir.exists()


def test_unique_bucket_names_are_valid_and_distinct() -> None:
    names = {unique_bucket_name() for _ in range(100)}
    assert len(names) == 100
    assert all(3 <= len(n) <= 63 and n.startswith("s3torch-") and n.islower() for n in names)
