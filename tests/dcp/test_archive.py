"""The torch.save archive head/tail parser against torch's own writer (pure, no server)."""

from __future__ import annotations

import io
import struct
import zipfile
import zlib

import pytest
import torch

from s3torch.dcp._archive import NeedMoreBytes, UnsupportedArchive, check_tail, parse_head


def _saved(obj: object) -> bytes:
    buf = io.BytesIO()
    torch.save(obj, buf)
    return buf.getvalue()


def _parse_growing(data: bytes, first: int = 16):
    """Feeds parse_head growing prefixes as a stream reader would; returns (head, bytes used)."""
    n = first
    while True:
        try:
            return parse_head(memoryview(data)[:n], len(data)), n
        except NeedMoreBytes as e:
            assert n < e.n <= len(data), (n, e.n)
            n = e.n


TENSORS = {
    "fp32": torch.randn(7, 5),
    "bf16": torch.randn(64, 3).to(torch.bfloat16),
    "fp16": torch.randn(9).half(),
    "int64": torch.arange(-50, 50),
    "int8": torch.arange(-5, 5, dtype=torch.int8),
    "uint16": torch.arange(5).to(torch.uint16),
    "bool": torch.tensor([True, False, True]),
    "complex64": torch.randn(4, dtype=torch.complex64),
    "float8": torch.randn(16).to(torch.float8_e4m3fn),
    "scalar": torch.tensor(3.5),
    "empty": torch.empty(0),
    "empty2d": torch.empty(3, 0),
    "transposed": torch.arange(12.0).reshape(3, 4).t(),
    "view_with_offset": torch.arange(24.0).reshape(2, 3, 4)[:, 1],
    "big": torch.randn(300_000),
}


@pytest.mark.parametrize("name", sorted(TENSORS))
def test_head_matches_torch_load(name: str) -> None:
    tensor = TENSORS[name]
    data = _saved(tensor)
    head, used = _parse_growing(data)
    assert used < 4096, "the head of a tensor archive is small"

    info = zipfile.ZipFile(io.BytesIO(data)).getinfo(head.record_name)
    assert info.header_offset == head.header_offset
    assert data[head.data_offset : head.data_end] == zipfile.ZipFile(io.BytesIO(data)).read(head.record_name)
    assert head.data_offset % 64 == 0, "torch aligns storages to 64 bytes"

    ref = torch.load(io.BytesIO(data), weights_only=True)
    assert head.meta.device.type == "meta"
    assert head.meta.dtype == ref.dtype
    assert head.meta.shape == ref.shape
    assert head.meta.stride() == ref.stride()
    assert head.meta.storage_offset() == ref.storage_offset()
    check_tail(head, memoryview(data)[head.data_end :])


def test_rebuilding_from_raw_bytes_is_bit_identical() -> None:
    tensor = torch.randn(33, 17).to(torch.bfloat16)
    data = _saved(tensor)
    head, _ = _parse_growing(data)
    raw = torch.frombuffer(bytearray(data[head.data_offset : head.data_end]), dtype=torch.uint8)
    rebuilt = raw.view(head.meta.dtype).as_strided(
        head.meta.shape, head.meta.stride(), head.meta.storage_offset()
    )
    assert torch.equal(rebuilt, tensor)


def test_need_more_bytes_then_unsupported_at_item_end() -> None:
    data = _saved(torch.randn(10))
    with pytest.raises(NeedMoreBytes):
        parse_head(memoryview(data)[:20], len(data))
    # A truncated item (the whole "item" is only a prefix of an archive) is not readable in place.
    with pytest.raises(UnsupportedArchive):
        parse_head(memoryview(data)[:200], 200)


def test_non_tensor_payloads_are_unsupported() -> None:
    for obj in ({"a": torch.ones(2)}, [1, 2, 3], torch.ones(3).to_sparse()):
        data = _saved(obj)
        with pytest.raises(UnsupportedArchive):
            _parse_growing(data)


def test_not_a_zip_is_unsupported() -> None:
    data = b"\x80\x02" + b"x" * 500
    with pytest.raises(UnsupportedArchive):
        parse_head(memoryview(data), len(data))


def _stream_zip(records: list[tuple[str, bytes]], method: int = zipfile.ZIP_STORED) -> bytes:
    """A zip written like a streaming writer (sizes in data descriptors), with zipfile's help."""
    buf = io.BytesIO()

    class Unseekable(io.RawIOBase):
        def writable(self) -> bool:
            return True

        def write(self, b) -> int:  # type: ignore[override]
            return buf.write(b)

    with zipfile.ZipFile(Unseekable(), "w", compression=method) as zf:
        for name, payload in records:
            with zf.open(name, "w") as f:
                f.write(payload)
    return buf.getvalue()


def _torch_records(tensor: torch.Tensor) -> list[tuple[str, bytes]]:
    data = _saved(tensor)
    zf = zipfile.ZipFile(io.BytesIO(data))
    return [(i.filename, zf.read(i.filename)) for i in zf.infolist()]


def test_compressed_archive_is_unsupported() -> None:
    data = _stream_zip(_torch_records(torch.randn(100)), method=zipfile.ZIP_DEFLATED)
    with pytest.raises(UnsupportedArchive):
        _parse_growing(data)


def test_foreign_byteorder_is_unsupported() -> None:
    records = [(n, b"big" if n.endswith("/byteorder") else p) for n, p in _torch_records(torch.ones(4))]
    data = _stream_zip(records)
    with pytest.raises(UnsupportedArchive, match="byteorder"):
        _parse_growing(data)


def test_same_records_from_another_zip_writer_parse() -> None:
    # The parser relies on the zip format and record order, not on miniz's exact padding.
    tensor = torch.randn(5, 6)
    data = _stream_zip(_torch_records(tensor))
    head, _ = _parse_growing(data)
    raw = bytearray(data[head.data_offset : head.data_end])
    assert torch.equal(torch.frombuffer(raw, dtype=torch.float32).view(5, 6), tensor)
    check_tail(head, memoryview(data)[head.data_end :])


def test_tail_checks_catch_a_wrong_layout() -> None:
    data = _saved(torch.randn(64))
    head, _ = _parse_growing(data)
    tail = bytearray(data[head.data_end :])
    # Corrupt the descriptor's size field.
    struct.pack_into("<I", tail, 8, head.nbytes + 1)
    with pytest.raises(UnsupportedArchive):
        check_tail(head, memoryview(tail))
    # Or drop the central directory.
    with pytest.raises(UnsupportedArchive):
        check_tail(head, memoryview(data)[head.data_end : head.data_end + 16])


def test_small_record_descriptor_search_needs_crc_match() -> None:
    # A fake descriptor signature inside a record's payload must not end the record early.
    records = _torch_records(torch.ones(3))
    fake = b"PK\x07\x08" + struct.pack("<III", zlib.crc32(b"x"), 1, 1)
    records.insert(1, ("archive/.extra_record", b"ab" + fake + b"cd"))
    data = _stream_zip(records)
    head, _ = _parse_growing(data)
    assert data[head.data_offset : head.data_end] == dict(records)[head.record_name]
