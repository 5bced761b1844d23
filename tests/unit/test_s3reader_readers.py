"""Sequential and range-based readers: laziness, request counts, buffers, errors, closing."""

from __future__ import annotations

import io
from typing import Any, Callable, Optional

import numpy as np
import pytest

from s3torch.s3reader import RangedS3Reader, S3Reader, SequentialS3Reader, _chunks

try:
    from .test_s3reader_support import FakeObject, pattern
except ImportError:
    from test_s3reader_support import FakeObject, pattern

MiB = 1024 * 1024


def sequential(obj: FakeObject) -> SequentialS3Reader:
    return SequentialS3Reader("bucket", "key", obj.get_object_info, obj.get_stream)


def ranged(obj: FakeObject, buffer_size: Optional[int] = None) -> RangedS3Reader:
    return RangedS3Reader("bucket", "key", obj.get_object_info, obj.get_stream, buffer_size=buffer_size)


READERS = [sequential, ranged, lambda obj: ranged(obj, 0)]
READER_IDS = ["sequential", "range_based", "range_based_unbuffered"]


# --- common file behaviour ----------------------------------------------------------------------


def test_s3reader_is_abstract() -> None:
    with pytest.raises(TypeError):
        S3Reader()  # type: ignore[abstract]


@pytest.mark.parametrize("make", READERS, ids=READER_IDS)
def test_creation_and_position_queries_fetch_nothing(
    make: Callable[[FakeObject], S3Reader],
) -> None:
    obj = FakeObject(pattern(100))
    reader = make(obj)
    assert (reader.bucket, reader.key) == ("bucket", "key")
    assert reader.tell() == 0
    assert reader.seek(0) == 0
    assert reader.seek(0, io.SEEK_CUR) == 0
    assert reader.read(0) == b"" and reader.readinto(bytearray(0)) == 0
    assert reader.readable() and reader.seekable() and not reader.writable()
    assert obj.gets == [] and obj.info_calls == 0


@pytest.mark.parametrize("make", READERS, ids=READER_IDS)
def test_empty_bucket_is_rejected(make: Callable[[FakeObject], S3Reader]) -> None:
    obj = FakeObject(b"x")
    with pytest.raises(ValueError, match="Bucket"):
        if make is sequential:
            SequentialS3Reader("", "key", obj.get_object_info, obj.get_stream)
        else:
            RangedS3Reader("", "key", obj.get_object_info, obj.get_stream)


@pytest.mark.parametrize("make", READERS, ids=READER_IDS)
@pytest.mark.parametrize("bad", [b"abcd", "text", 3, memoryview(b"ro")])
def test_readinto_rejects_read_only_or_non_buffers(make: Callable[[FakeObject], S3Reader], bad: Any) -> None:
    reader = make(FakeObject(pattern(10)))
    with pytest.raises(TypeError, match="writable bytes-like"):
        reader.readinto(bad)


@pytest.mark.parametrize("make", READERS, ids=READER_IDS)
def test_readinto_accepts_numpy_of_any_dtype(make: Callable[[FakeObject], S3Reader]) -> None:
    data = pattern(64)
    reader = make(FakeObject(data, chunk_size=5))
    out = np.zeros(8, dtype=np.float32)  # 32 bytes
    assert reader.readinto(out) == 32
    assert out.tobytes() == data[:32]
    grid = np.zeros((4, 8), dtype=np.uint8)  # 2-D, C-contiguous
    assert reader.readinto(grid) == 32
    assert grid.tobytes() == data[32:]


@pytest.mark.parametrize("make", READERS, ids=READER_IDS)
def test_argument_errors(make: Callable[[FakeObject], S3Reader]) -> None:
    reader = make(FakeObject(pattern(10)))
    with pytest.raises(TypeError):
        reader.read("3")  # type: ignore[arg-type]
    with pytest.raises(TypeError):
        reader.seek("3")  # type: ignore[arg-type]
    with pytest.raises(TypeError):
        reader.seek(0, "end")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="whence"):
        reader.seek(0, 3)
    with pytest.raises(ValueError, match="negative seek value -1"):
        reader.seek(-1)
    assert reader.read(np.int64(3)) == pattern(10)[:3]  # index-like sizes are fine


@pytest.mark.parametrize("make", READERS, ids=READER_IDS)
def test_closed_reader_raises_value_error(make: Callable[[FakeObject], S3Reader]) -> None:
    obj = FakeObject(pattern(100), chunk_size=10)
    with make(obj) as reader:
        assert reader.read(15) == pattern(100)[:15]
    assert reader.closed
    for call in (
        lambda: reader.read(1),
        lambda: reader.read(),
        lambda: reader.readinto(bytearray(1)),
        lambda: reader.seek(0),
        lambda: reader.tell(),
        lambda: reader.readable(),
        lambda: reader.seekable(),
    ):
        with pytest.raises(ValueError, match="closed file"):
            call()
    reader.close()  # idempotent
    assert all(s.closed for s in obj.streams)  # the GET is cancelled, not left running


@pytest.mark.parametrize("make", READERS, ids=READER_IDS)
def test_stream_errors_propagate(make: Callable[[FakeObject], S3Reader]) -> None:
    class Boom(OSError):
        pass

    def failing_stream(start: Optional[int] = None, end: Optional[int] = None) -> Any:
        raise Boom("GET failed")

    obj = FakeObject(pattern(10))
    reader: S3Reader
    if make is sequential:
        reader = SequentialS3Reader("b", "k", obj.get_object_info, failing_stream)
    else:
        reader = RangedS3Reader("b", "k", obj.get_object_info, failing_stream)
    with pytest.raises(Boom):
        reader.read(3)


@pytest.mark.parametrize("make", READERS, ids=READER_IDS)
def test_iteration_and_readline(make: Callable[[FakeObject], S3Reader]) -> None:
    data = b"first\nsecond\n\nlast"
    reader = make(FakeObject(data, chunk_size=4))
    assert list(reader) == [b"first\n", b"second\n", b"\n", b"last"]


@pytest.mark.parametrize("make", READERS, ids=READER_IDS)
def test_stats_count_requests_and_bytes(make: Callable[[FakeObject], S3Reader]) -> None:
    obj = FakeObject(pattern(1000), chunk_size=100)
    reader = make(obj)
    reader.read(10)
    reader.seek(500)
    reader.readinto(bytearray(20))
    stats = reader.stats  # type: ignore[attr-defined]
    assert stats.bytes_returned == 30
    assert stats.get_requests == len(obj.gets)
    assert stats["get_requests"] == stats.get_requests
    assert stats.as_dict() == {
        "get_requests": stats.get_requests,
        "bytes_fetched": stats.bytes_fetched,
        "bytes_returned": 30,
    }


# --- sequential -----------------------------------------------------------------------------------


def test_sequential_one_get_serves_any_access_pattern() -> None:
    data = pattern(1000)
    obj = FakeObject(data, chunk_size=64)
    reader = sequential(obj)
    assert reader.read(10) == data[:10]
    reader.seek(900)
    assert reader.read(50) == data[900:950]
    reader.seek(5)  # backwards: served from the chunks held
    buf = bytearray(300)
    assert reader.readinto(buf) == 300 and bytes(buf) == data[5:305]
    assert reader.read() == data[305:]
    assert obj.gets == [(None, None)]
    assert obj.info_calls == 0  # never a HEAD: the stream told the size


def test_sequential_keeps_chunks_without_concatenating() -> None:
    data = pattern(1000)
    obj = FakeObject(data, chunk_size=100)
    reader = sequential(obj)
    assert reader.read() == data
    # All ten chunks are still referenced (as views), none was merged into a larger buffer.
    assert obj.live_chunks() == 10
    assert [len(v) for v in reader._spans.views] == [100] * 10
    reader.close()
    assert obj.live_chunks() == 0


def test_sequential_pulls_only_what_reads_need() -> None:
    obj = FakeObject(pattern(1000), chunk_size=100)
    reader = sequential(obj)
    reader.read(150)
    assert obj.next_calls == 2
    reader.seek(0)
    reader.read(200)
    assert obj.next_calls == 2


def test_sequential_seek_end_looks_up_size_once() -> None:
    data = pattern(300)
    obj = FakeObject(data, chunk_size=64)
    reader = sequential(obj)
    assert reader.seek(-10, io.SEEK_END) == 290
    assert obj.gets == []  # the size came from object info; nothing fetched yet
    assert reader.seek(0, io.SEEK_END) == 300
    assert reader.seek(5, io.SEEK_END) == 300  # clamped
    assert obj.info_calls == 1
    reader.seek(-10, io.SEEK_END)
    assert reader.read() == data[-10:]


def test_sequential_seek_past_end_clamps_without_head() -> None:
    obj = FakeObject(pattern(300), chunk_size=64)
    reader = sequential(obj)
    assert reader.seek(10_000) == 300
    assert reader.tell() == 300 and reader.read() == b""
    assert obj.info_calls == 0
    # After the stream ended, SEEK_END needs no lookup either.
    assert reader.seek(-1, io.SEEK_END) == 299
    assert obj.info_calls == 0


def test_sequential_uses_the_size_from_the_get_response() -> None:
    obj = FakeObject(pattern(1000), chunk_size=100)
    reader = sequential(obj)
    reader.read(1)
    assert reader.seek(-5, io.SEEK_END) == 995
    assert reader.seek(10**6) == 1000  # clamped without pulling the rest
    assert obj.info_calls == 0 and obj.next_calls == 1
    assert reader.read() == pattern(1000)[1000:]
    reader.seek(-5, io.SEEK_END)
    assert reader.read() == pattern(1000)[995:]


def test_sequential_spills_to_heap_beyond_pinned_budget(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(_chunks, "PINNED_LIMIT_BYTES", 250)
    data = pattern(1000)
    obj = FakeObject(data, chunk_size=100)
    reader = sequential(obj)
    assert reader.read(1000) == data
    assert obj.live_chunks() <= 3  # never more pool memory than the budget
    reader.seek(17)
    assert reader.read(900) == data[17:917]


def test_sequential_prefetch_starts_the_get_once() -> None:
    obj = FakeObject(pattern(10))
    reader = sequential(obj)
    reader.prefetch()
    reader.prefetch()
    assert obj.gets == [(None, None)]
    assert reader.read() == pattern(10)


def test_sequential_empty_and_one_byte_objects() -> None:
    for size in (0, 1):
        obj = FakeObject(pattern(size))
        reader = sequential(obj)
        assert reader.read(5) == pattern(size)
        assert reader.read() == b""
        assert reader.seek(3) == size


# --- range-based ----------------------------------------------------------------------------------


def test_ranged_default_buffer_serves_small_sequential_reads() -> None:
    data = pattern(200_000)
    obj = FakeObject(data, chunk_size=8 * MiB)
    reader = ranged(obj)
    assert reader.buffer_size == 8 * MiB
    for i in range(200):
        assert reader.read(1000) == data[i * 1000 : (i + 1) * 1000]
    assert len(obj.gets) <= 2
    assert obj.gets == [(0, 200_000)]  # the buffer is clamped to the object


def test_ranged_small_reads_fill_buffer_size_bytes() -> None:
    data = pattern(10_000)
    obj = FakeObject(data, chunk_size=300)
    reader = ranged(obj, 1000)
    for i in range(30):
        assert reader.read(100) == data[i * 100 : (i + 1) * 100]
    assert obj.gets == [(0, 1000), (1000, 2000), (2000, 3000)]


def test_ranged_unbuffered_makes_one_exact_get_per_read() -> None:
    data = pattern(200_000)
    obj = FakeObject(data, chunk_size=4096)
    reader = ranged(obj, 0)
    for i in range(200):
        assert reader.read(1000) == data[i * 1000 : (i + 1) * 1000]
    assert obj.gets == [(i * 1000, (i + 1) * 1000) for i in range(200)]
    buf = bytearray(10)
    reader.seek(5)
    reader.readinto(buf)
    assert obj.gets[-1] == (5, 15) and bytes(buf) == data[5:15]


def test_ranged_large_reads_bypass_the_buffer() -> None:
    data = pattern(10_000)
    obj = FakeObject(data, chunk_size=64)
    reader = ranged(obj, 1000)
    assert reader.read(1000) == data[:1000]  # >= buffer_size: exact range, buffer untouched
    assert obj.gets == [(0, 1000)]
    assert reader._buffer is None
    buf = bytearray(2500)
    reader.seek(3000)
    assert reader.readinto(buf) == 2500 and bytes(buf) == data[3000:5500]
    assert obj.gets[-1] == (3000, 5500)
    assert obj.read_into_calls == 1  # landed straight in the caller's buffer
    assert reader._buffer is None
    assert reader.read(10) == data[5500:5510]  # small: now the buffer is filled
    assert obj.gets[-1] == (5500, 6500)


def test_ranged_forward_overlap_reuses_the_buffer() -> None:
    data = pattern(10_000)
    obj = FakeObject(data, chunk_size=64)
    reader = ranged(obj, 100)
    assert reader.read(10) == data[:10]
    assert obj.gets == [(0, 100)]
    reader.seek(95)
    assert reader.read(10) == data[95:105]  # 5 buffered + small remainder -> refill at 100
    assert obj.gets[-1] == (100, 200)
    reader.seek(195)
    assert reader.read(150) == data[195:345]  # 5 buffered + large remainder -> exact GET
    assert obj.gets[-1] == (200, 345)
    reader.seek(150)
    buf = bytearray(60)
    assert reader.readinto(buf) == 60 and bytes(buf) == data[150:210]  # readinto: same rules
    assert obj.gets[-1] == (200, 300)
    reader.seek(250)
    assert reader.read(20) == data[250:270]  # fully inside the buffer: no request
    assert obj.gets[-1] == (200, 300) and len(obj.gets) == 4


def test_ranged_backward_read_refetches() -> None:
    data = pattern(1000)
    obj = FakeObject(data, chunk_size=64)
    reader = ranged(obj, 100)
    reader.seek(500)
    reader.read(10)
    reader.seek(450)
    assert reader.read(10) == data[450:460]
    assert obj.gets == [(500, 600), (450, 550)]


def test_ranged_needs_size_once_and_clamps() -> None:
    obj = FakeObject(pattern(300))
    reader = ranged(obj)
    assert reader.seek(1000) == 300 and reader.read() == b""
    assert reader.seek(-3, io.SEEK_END) == 297
    assert reader.read() == pattern(300)[-3:]
    assert obj.info_calls == 1
    assert obj.gets == [(297, 300)]


def test_ranged_buffer_is_allocated_lazily_and_small_for_small_objects() -> None:
    obj = FakeObject(pattern(50))
    reader = ranged(obj)
    assert reader._buffer is None
    reader.read(1)
    assert reader._buffer is not None and len(reader._buffer) == 50


def test_ranged_huge_read_avoids_pinning_the_whole_range(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(_chunks, "PINNED_LIMIT_BYTES", 100)
    data = pattern(1000)
    obj = FakeObject(data, chunk_size=10)
    reader = ranged(obj, 50)
    reader.seek(40)
    reader.read(1)  # buffer holds [40, 90)
    reader.seek(60)
    assert reader.read(500) == data[60:560]  # head from the buffer, rest via read_into
    assert obj.gets[-1] == (90, 560)
    assert obj.read_into_calls == 2


@pytest.mark.parametrize("buffer_size", [-1, -8 * MiB])
def test_ranged_rejects_negative_buffer(buffer_size: int) -> None:
    obj = FakeObject(b"x")
    with pytest.raises(ValueError, match="buffer_size"):
        ranged(obj, buffer_size)
    with pytest.raises(TypeError, match="buffer_size"):
        ranged(obj, 1.5)  # type: ignore[arg-type]


@pytest.mark.parametrize("make", READERS, ids=READER_IDS)
def test_readinto_rejects_non_contiguous_buffers(make: Callable[[FakeObject], S3Reader]) -> None:
    reader = make(FakeObject(pattern(10)))
    with pytest.raises(TypeError, match="contiguous"):
        reader.readinto(np.zeros(8, np.uint8)[::2])


class _NoTotalObject(FakeObject):
    """An opener like S3Client's (part_size, read_bytes) whose responses never tell the object's
    total size (Content-Range ``bytes a-b/*``), and which answers 416 to a range past the end."""

    part_size = 16

    def __call__(self, start: Optional[int] = None, end: Optional[int] = None) -> Any:
        return self.get_stream(start, end)

    def get_stream(self, start: Optional[int] = None, end: Optional[int] = None) -> Any:
        if start is not None and start >= self.size:
            from s3torch import S3Exception

            raise S3Exception("range not satisfiable", status=416)
        stream = super().get_stream(start, end)
        stream.__class__ = _NoTotalStream
        return stream

    def read_bytes(self, start: int, end: int, prefix: Any = None) -> bytes:
        self.gets.append((start, end))
        if end > self.size:
            from s3torch import S3Exception

            raise S3Exception("range not satisfiable", status=416)
        return self.data[start:end]


class _NoTotalStream(type(FakeObject(b"x").get_stream())):  # type: ignore[misc]
    @property
    def object_size(self) -> Optional[int]:
        return None


@pytest.mark.parametrize("size", [16, 40])
def test_small_first_read_when_responses_tell_no_size(size: int) -> None:
    """The first part alone cannot tell an object of exactly one part from a longer one: a jump past
    it then meets a 416, which means the object ends where the held bytes do."""
    obj = _NoTotalObject(pattern(size))
    reader = SequentialS3Reader("bucket", "key", obj.get_object_info, obj)
    assert reader.read(3) == obj.data[:3]
    assert obj.gets == [(0, 16)]
    # Past everything held, the size not known yet: reading up to there finds the end (a 416 right
    # after the held bytes for the one-part object) and the position clamps to it.
    assert reader.seek(100 * MiB) == size
    assert reader.read(5) == b""
    assert reader.seek(0, io.SEEK_END) == size
    reader.seek(1)
    assert reader.read() == obj.data[1:]
