"""Reading a task's bytes in object order over one or more GET streams (the concurrent loader's
cursor), and how a range is cut into GETs that line up with the stored object's parts."""

from __future__ import annotations

from typing import Any, Callable, List, Sequence, Tuple, cast

from .._exceptions import S3Exception


def truncated(bucket: str, key: str, offset: int, missing: int) -> S3Exception:
    """The public error for a response that ended early (an object shorter than its metadata says,
    or a body cut off): never a silent shift of the bytes that follow."""
    return S3Exception(
        f"s3://{bucket}/{key}: the object's data ended at offset {offset}, {missing} bytes short of "
        "what the checkpoint needs (truncated or overwritten object?)",
        bucket=bucket,
        key=key,
        code="IncompleteBody",
        operation="GetObject",
    )


class _Cursor:
    """Forward-only reader over consecutive GetObjectStreams, with peeks that consume nothing.

    ``segments`` are (stream, end offset) in object order, each stream starting where the previous
    one ends. Everything runs in the native streams with the GIL released: ``peek`` copies a few
    header bytes, ``skip_to`` drops bytes (scattered ones too), ``read_into`` is the one copy from
    the part buffers into the caller's memory.
    """

    __slots__ = ("_segments", "_index", "pos", "_bucket", "_key")

    def __init__(self, segments: Sequence[Tuple[Any, int]], start: int, bucket: str, key: str) -> None:
        self._segments = list(segments)
        self._index = 0
        self.pos = start  # object offset of the next byte we hand out
        self._bucket = bucket
        self._key = key

    def _ended(self, need: int) -> S3Exception:
        return truncated(self._bucket, self._key, self.pos, need)

    def _stream(self) -> Tuple[Any, int]:
        """The stream holding ``pos`` and how many of its bytes are left (0: no stream left)."""
        while self._index < len(self._segments) - 1 and self.pos >= self._segments[self._index][1]:
            self._index += 1
        stream, end = self._segments[self._index]
        return stream, end - self.pos

    def peek(self, n: int) -> bytes:
        """The next ``n`` bytes without consuming them (fewer only at the end of the stream)."""
        stream, left = self._stream()
        if n <= left or self._index == len(self._segments) - 1:
            return cast(bytes, stream.peek(n))
        out = bytearray(stream.peek(left))  # a header across a segment boundary: rare, small
        for nxt, _ in self._segments[self._index + 1 :]:
            if len(out) >= n:
                break
            out += nxt.peek(n - len(out))
        return bytes(out)

    def skip_to(self, offset: int) -> None:
        n = offset - self.pos
        if n < 0:
            where = f"s3://{self._bucket}/{self._key}"
            raise AssertionError(f"{where}: cannot seek back from {self.pos} to {offset}")
        while n:
            stream, left = self._stream()
            want = min(n, left) if left > 0 else n
            got = stream.skip(want)
            self.pos += got
            n -= got
            if got < want:
                raise self._ended(n)

    def read_into(self, dest: memoryview) -> None:
        """Fills ``dest`` completely with the next bytes."""
        total = len(dest)
        done = 0
        while done < total:
            stream, left = self._stream()
            want = min(total - done, left) if left > 0 else total - done
            got = stream.read_into(dest[done : done + want])
            self.pos += got
            done += got
            if got < want:
                raise self._ended(total - done)

    def each_chunk(self, n: int, take: Callable[[int, Any], None]) -> None:
        """Hands the next ``n`` bytes to ``take(offset into the n, chunk)`` as zero-copy chunks of
        the part buffers (a chunk keeps its buffer out of the pool while it is referenced)."""
        done = 0
        while done < n:
            stream, left = self._stream()
            want = min(n - done, left) if left > 0 else n - done
            chunk = stream.next_chunk(want)
            if chunk is None:
                raise self._ended(n - done)
            take(done, chunk)
            self.pos += len(chunk)
            done += len(chunk)

    def read_bytes(self, n: int) -> bytearray:
        out = bytearray(n)
        if n:
            self.read_into(memoryview(out))
        return out


def _segments(start: int, end: int, align: int) -> List[Tuple[int, int]]:
    """[start, end) as GETs whose part requests line up with ``align``-byte object offsets.

    The client splits a GET into part-sized requests counted from its start, so a long GET from an
    unaligned offset makes every one of them straddle two parts of the stored object. S3's guidance
    is to align ranged GETs with the upload's parts; SeaweedFS spends about a quarter more CPU per
    byte on straddling reads. A range longer than one part that starts off a boundary therefore
    becomes a short GET up to the next boundary and an aligned one for the rest (at most one more
    HTTP request); a range of one part or less stays one request.
    """
    if align <= 0 or start % align == 0 or end - start <= align:
        return [(start, end)]
    boundary = start + align - start % align
    return [(start, boundary), (boundary, end)]
