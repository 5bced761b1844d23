"""save_tensor writes torch.save's archive with the CRC-32s computed as the bytes stream out."""

from __future__ import annotations

import io
import platform
import zipfile
import zlib
from typing import Any, List

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from s3torch import _core
from s3torch.dcp import _torch_save
from s3torch.dcp._torch_save import LayoutError, save_tensor


@settings(max_examples=300, deadline=None)
@given(st.binary(min_size=0, max_size=5000), st.integers(0, 2**32 - 1), st.integers(0, 15))
def test_crc32_is_zlibs(data: bytes, value: int, skip: int) -> None:
    view = memoryview(data)[min(skip, len(data)) :]
    assert _core.crc32(view, value) == zlib.crc32(view, value)


def test_crc32_of_a_large_buffer_in_pieces() -> None:
    data = torch.randint(0, 256, (3 * 1024 * 1024 + 13,), dtype=torch.uint8).numpy().tobytes()
    whole = _core.crc32(data)
    assert whole == zlib.crc32(data)
    pieces = 0
    for at in range(0, len(data), 100_003):
        pieces = _core.crc32(data[at : at + 100_003], pieces)
    assert pieces == whole


def test_the_crc32_kernels_offered_match_the_cpu_flags() -> None:
    # crc32 uses the last kernel listed; each kernel's results are checked against zlib below.
    kernels = _core._crc32_kernels()
    assert kernels[0] == "table" and set(kernels) <= {"table", "pclmul", "vpclmul"}
    with pytest.raises(ValueError, match="no CRC-32 kernel"):
        _core._crc32_with("nonesuch", b"x")
    flags = _cpu_flags()
    if platform.machine() == "x86_64" and {"pclmulqdq", "sse4_1"} <= flags:
        assert "pclmul" in kernels
    if {"vpclmulqdq", "avx512f"} <= flags:
        assert kernels[-1] == "vpclmul"


def _cpu_flags() -> set:
    try:
        with open("/proc/cpuinfo") as f:
            return {flag for line in f if line.startswith("flags") for flag in line.split(":", 1)[1].split()}
    except OSError:
        return set()


KERNELS = ["table", "pclmul", "vpclmul"]


def _need(kernel: str) -> None:
    if kernel not in _core._crc32_kernels():
        pytest.skip(f"this CPU lacks {kernel}")


@pytest.mark.parametrize("kernel", KERNELS)
@settings(max_examples=150, deadline=None)
@given(data=st.binary(min_size=0, max_size=3000), value=st.integers(0, 2**32 - 1), skip=st.integers(0, 15))
def test_each_crc32_kernel_is_zlibs(kernel: str, data: bytes, value: int, skip: int) -> None:
    _need(kernel)
    view = memoryview(data)[min(skip, len(data)) :]
    assert _core._crc32_with(kernel, view, value) == zlib.crc32(view, value)


@pytest.mark.parametrize("kernel", KERNELS)
def test_each_crc32_kernel_at_every_length_around_its_steps(kernel: str) -> None:
    _need(kernel)
    # Every length up to 600 bytes: each kernel's bulk step (16, 64, 256 bytes), the tails after it, and
    # where one kernel hands the rest to the next.
    data = bytes(range(256)) * 4 + b"tail"
    for n in range(600):
        for at in (0, 3):
            view = memoryview(data)[at : at + n]
            assert _core._crc32_with(kernel, view, 0xDEADBEEF) == zlib.crc32(view, 0xDEADBEEF), (n, at)


class Pieces(io.RawIOBase):
    """A write-only stream that records every write as a separate piece."""

    def __init__(self) -> None:
        self.pieces: List[bytes] = []

    def writable(self) -> bool:
        return True

    def write(self, b: Any) -> int:
        self.pieces.append(bytes(b))
        return len(self.pieces[-1])

    def value(self) -> bytes:
        return b"".join(self.pieces)


SAMPLES = {
    "fp32": lambda: torch.randn(1000),
    "bf16_transposed": lambda: torch.randn(64, 33, dtype=torch.bfloat16).t().contiguous(),
    "int64_scalar": lambda: torch.tensor(7),
    "empty": lambda: torch.empty(0, 4),
    "bool": lambda: torch.rand(300) > 0.5,
    "complex": lambda: torch.randn(17, dtype=torch.complex64),
    "two_parts_of_a_slice": lambda: torch.randn(600_000),  # more than one 256 KiB checksum slice
}


@pytest.mark.parametrize("writer", ["sink", "memory"])
@pytest.mark.parametrize("name", sorted(SAMPLES))
def test_the_archive_is_torch_saves(name: str, writer: str, monkeypatch: pytest.MonkeyPatch) -> None:
    # "sink": every sample through the checksumming sink; "memory": through torch.save into memory.
    monkeypatch.setattr(_torch_save, "_SMALL_ITEM", -1 if writer == "sink" else 1 << 40)
    tensor = SAMPLES[name]()
    ours, ref = Pieces(), io.BytesIO()
    save_tensor(tensor, ours)
    torch.save(tensor, ref)
    a, b = ours.value(), ref.getvalue()
    assert len(a) == len(b)
    za, zb = zipfile.ZipFile(io.BytesIO(a)), zipfile.ZipFile(io.BytesIO(b))
    assert za.testzip() is None, "every record's CRC-32 is right"
    infos = {i.filename: i for i in zb.infolist()}
    assert [i.filename for i in za.infolist()] == list(infos)
    for info in za.infolist():
        assert (info.header_offset, info.file_size, info.flag_bits) == (
            infos[info.filename].header_offset,
            infos[info.filename].file_size,
            infos[info.filename].flag_bits,
        )
        if not info.filename.endswith("serialization_id"):  # a random id per archive
            assert info.CRC == infos[info.filename].CRC and za.read(info) == zb.read(info)
    # Byte for byte up to the record torch fills with a random id.
    sid = next(i for i in za.infolist() if i.filename.endswith("serialization_id"))
    assert a[: sid.header_offset] == b[: sid.header_offset]
    loaded = torch.load(io.BytesIO(a), weights_only=True)
    assert loaded.dtype == tensor.dtype and torch.equal(loaded, tensor)


def test_the_writer_is_checked_against_torch_save_once() -> None:
    assert _torch_save.fast_save_available()


@pytest.mark.parametrize(
    "tensor, small",
    [
        (torch.tensor(7), True),  # an optimizer's step
        (torch.ones(768), True),  # a norm's weight
        (torch.ones(_torch_save._SMALL_ITEM // 4), True),  # exactly the limit
        (torch.ones(_torch_save._SMALL_ITEM // 4 + 1), False),
        (torch.ones(4096, 768)[:2], False),  # a small view of a large storage: torch.save writes it all
    ],
)
def test_small_items_go_out_in_one_write_and_larger_ones_stream(tensor: torch.Tensor, small: bool) -> None:
    out = Pieces()
    save_tensor(tensor, out)
    assert (len(out.pieces) == 1) == small, len(out.pieces)
    ref = io.BytesIO()
    torch.save(tensor, ref)
    assert len(out.value()) == len(ref.getvalue())
    loaded = torch.load(io.BytesIO(out.value()), weights_only=True)
    assert torch.equal(loaded, tensor)
    assert loaded.untyped_storage().nbytes() == tensor.untyped_storage().nbytes()


def test_a_layout_surprise_raises_and_the_process_survives(monkeypatch: pytest.MonkeyPatch) -> None:
    # A wrong descriptor size makes the sink miss the descriptor: the save raises a LayoutError
    # (never inside torch's C++ writer, which would abort the process) and writes nothing more.
    monkeypatch.setattr(_torch_save, "descriptor_size", lambda offset, nbytes: 24)
    monkeypatch.setattr(_torch_save, "_SMALL_ITEM", -1)  # a small tensor through the sink too
    out = Pieces()
    with pytest.raises(LayoutError):
        save_tensor(torch.randn(100), out)
    written = len(out.value())
    import gc

    gc.collect()  # torch's writer, destroyed now, finishes its archive into the discarding sink
    assert len(out.value()) == written


def test_an_archive_over_4_gib_uses_zip64_and_is_valid(tmp_path: Any) -> None:
    n = (4 << 30) + 100
    tensor = torch.zeros(n, dtype=torch.uint8)
    tensor[:: 1 << 28] = 7
    tensor[-1] = 9
    path = tmp_path / "big.pt"
    with open(path, "wb") as f:
        save_tensor(tensor, f)
    del tensor
    with zipfile.ZipFile(path) as z:
        info = next(i for i in z.infolist() if i.filename.endswith("data/0"))
        assert info.file_size == n
        later = [i for i in z.infolist() if i.header_offset > info.header_offset]
        assert later and all(i.header_offset >= 1 << 32 for i in later), "records past 4 GiB"
        assert z.testzip() is None
    loaded = torch.load(path, weights_only=True, mmap=True)
    assert loaded.numel() == n and int(loaded[1 << 28]) == 7 and int(loaded[-1]) == 9
    marks = loaded[:: 1 << 28]
    assert bool((marks == 7).all()) and int(loaded[1 : 1 << 20].count_nonzero()) == 0
    assert int(loaded[-99:-1].count_nonzero()) == 0  # past the last mark (at 4 GiB)


FAILING_UPLOAD = """
import gc, torch
from s3torch.dcp._torch_save import save_tensor

class Failing:
    def __init__(self, after):
        self.calls, self.after = 0, after
    def write(self, b):
        self.calls += 1
        if self.calls > self.after:
            raise OSError("upload failed")
        return len(memoryview(b))

for after in (0, 1, 3, 5, 9):
    try:
        save_tensor(torch.arange(100_000), Failing(after))
    except OSError as e:
        print("raised", after, e)
    gc.collect()
print("alive")
"""


def test_a_stream_that_fails_mid_archive_raises_and_the_process_survives() -> None:
    """An upload error inside torch's writer comes back as that error; torch's writer is finished
    into a discarding sink at once (its destructor would otherwise throw: std::terminate)."""
    import subprocess
    import sys

    out = subprocess.run([sys.executable, "-c", FAILING_UPLOAD], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.count("raised") == 5 and out.stdout.strip().endswith("alive")
