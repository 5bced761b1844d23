"""S3FileSystem: torch's FileSystemBase operations on real servers (moto and SeaweedFS)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from dcp_helpers import Target

from s3torch import S3ReaderConstructor
from s3torch.dcp import S3FileSystem, S3StorageReader, S3StorageWriter
from s3torch.dcp.s3_file_system import parse_s3_uri


def _fs(target: Target, **kw: Any) -> S3FileSystem:
    return S3FileSystem(
        target.server.region, s3client_config=target.config(), endpoint=target.server.endpoint, **kw
    )


def test_streams_exists_rename_rm(target: Target) -> None:
    fs = _fs(target)
    base = fs.init_path(target.uri)
    assert base == target.uri
    path = fs.concat_path(base, "dir/obj.bin")
    assert path == f"{target.uri}/dir/obj.bin"
    fs.mkdir(fs.concat_path(base, "dir"))  # a no-op, must not fail
    assert not fs.exists(path)

    with fs.create_stream(path, "wb") as f:
        f.write(b"hello ")
        f.write(b"world")
    assert fs.exists(path)
    with fs.create_stream(path, "rb") as f:
        assert f.read() == b"hello world"

    new_path = fs.concat_path(base, "renamed.bin")
    fs.rename(path, new_path)
    assert not fs.exists(path) and fs.exists(new_path)
    with fs.create_stream(new_path, "rb") as f:
        assert f.read() == b"hello world"

    fs.rm_file(new_path)
    assert not fs.exists(new_path)
    fs.rm_file(new_path)  # missing object: not an error


def test_failed_write_block_leaves_no_object(target: Target) -> None:
    fs = _fs(target)
    path = f"{target.uri}/partial.bin"
    with pytest.raises(RuntimeError):
        with fs.create_stream(path, "wb") as f:
            f.write(b"x" * 1000)
            raise RuntimeError("boom")
    assert not fs.exists(path)


def test_reader_constructor_is_used_for_rb(target: Target) -> None:
    fs = _fs(target, reader_constructor=S3ReaderConstructor.range_based(buffer_size=0))
    path = f"{target.uri}/r.bin"
    with fs.create_stream(path, "wb") as f:
        f.write(bytes(range(256)))
    with fs.create_stream(path, "rb") as f:
        f.seek(200)
        assert f.read(3) == bytes([200, 201, 202])


def test_invalid_mode_and_cross_bucket_rename(target: Target) -> None:
    fs = _fs(target)
    with pytest.raises(ValueError, match="mode"):
        with fs.create_stream(f"{target.uri}/x", "ab"):
            pass
    with pytest.raises(ValueError, match="bucket"):
        fs.rename(f"{target.uri}/a", "s3://other-bucket/b")


def test_missing_object_read_is_file_not_found(target: Target) -> None:
    fs = _fs(target)
    with pytest.raises(FileNotFoundError):
        with fs.create_stream(f"{target.uri}/nope", "rb") as f:
            f.read()


@pytest.mark.parametrize(
    ("checkpoint_id", "ok"),
    [
        ("s3://bucket/prefix", True),
        ("s3://bucket", True),
        ("s3://bucket/deep/er/prefix/", True),
        (Path("/some/path"), True),
        ("s3://", False),
        ("s3:///key", False),
        ("/local/dir", False),
        ("https://bucket/key", False),
        ("", False),
    ],
)
def test_validate_checkpoint_id(checkpoint_id: Any, ok: bool) -> None:
    assert S3FileSystem.validate_checkpoint_id(checkpoint_id) is ok
    assert S3StorageReader.validate_checkpoint_id(checkpoint_id) is ok
    assert S3StorageWriter.validate_checkpoint_id(checkpoint_id) is ok


def test_parse_s3_uri() -> None:
    assert parse_s3_uri("s3://b/k/e/y") == ("b", "k/e/y")
    assert parse_s3_uri("s3://b") == ("b", "")
    with pytest.raises(ValueError):
        parse_s3_uri("b/k")


def test_storage_classes_defaults() -> None:
    reader = S3StorageReader("us-east-1", "s3://b/p")
    assert S3ReaderConstructor.get_reader_type_string(reader._reader_constructor) == "dcp_optimized"
    assert reader.checkpoint_id == "s3://b/p"
    writer = S3StorageWriter("us-east-1", "s3://b/p", thread_count=3, sync_files=True)
    assert writer.thread_count == 3 and writer.sync_files is False
    assert writer.prefix_strategy(2) == "__2_"
    with pytest.raises(ValueError):
        S3StorageReader("us-east-1", "s3://b/p", max_streams=0)


def test_reader_knobs_are_keyword_arguments_checked_at_construction():
    """The concurrent loader's settings are keyword arguments (and attributes a later load reads);
    nonsense values fail at once, not in the middle of a load."""
    seen: list = []
    reader = S3StorageReader(
        "us-east-1", "s3://bucket/ckpt", split_bytes=3, direct_min_bytes=0, progress_callback=seen.append
    )
    assert (reader.split_bytes, reader.direct_min_bytes) == (3, 0)
    reader.progress_callback(5)
    assert seen == [5]
    for bad in ({"split_bytes": 0}, {"direct_min_bytes": -1}, {"max_streams": 0}):
        with pytest.raises(ValueError, match=next(iter(bad))):
            S3StorageReader("us-east-1", "s3://bucket/ckpt", **bad)
