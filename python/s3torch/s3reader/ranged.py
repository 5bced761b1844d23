"""`RangedS3Reader`: a ranged GET per read, with an optional read-ahead buffer for small reads."""

from __future__ import annotations

from typing import Any, Callable, List, Optional, Union

from . import _chunks
from .protocol import GetStreamCallable, ObjectInfoLike
from .s3reader import (
    ReaderStats,
    _ObjectReader,
    byte_view,
    read_size,
    seek_target,
    writable_view,
)

DEFAULT_BUFFER_SIZE = 8 * 1024 * 1024


def validate_buffer_size(buffer_size: Optional[int]) -> int:
    """The effective buffer size: None means the 8 MiB default, 0 disables the buffer."""
    if buffer_size is None:
        return DEFAULT_BUFFER_SIZE
    if isinstance(buffer_size, bool) or not isinstance(buffer_size, int):
        raise TypeError(f"buffer_size must be an int or None, got {type(buffer_size).__name__}")
    if buffer_size < 0:
        raise ValueError(f"buffer_size must be non-negative (0 disables buffering), got {buffer_size}")
    return buffer_size


class RangedS3Reader(_ObjectReader):
    """Reads only the byte ranges asked for: suited to sparse reads of large objects.

    * reads smaller than ``buffer_size`` fetch ``buffer_size`` bytes from the position into an
      internal buffer (one ranged GET) and serve following small reads from it;
    * reads of at least ``buffer_size`` bypass the buffer: one ranged GET straight into the caller's
      buffer (``readinto``) or the returned bytes (``read``);
    * a read that starts inside the buffer and runs past it takes the buffered head, then fetches
      the rest by the two rules above;
    * ``buffer_size=0`` disables the buffer: every read is one GET of exactly the requested bytes.

    The object size (``get_object_info``, cached) clamps ranges; it is looked up at the first read
    or at the first seek to a non-zero position.
    """

    def __init__(
        self,
        bucket: str,
        key: str,
        get_object_info: Callable[[], ObjectInfoLike],
        get_stream: GetStreamCallable,
        buffer_size: Optional[int] = None,
    ) -> None:
        if not bucket:
            raise ValueError("Bucket should be specified")
        self._buffer_size = validate_buffer_size(buffer_size)
        self._bucket = bucket
        self._key = key
        self._get_object_info = get_object_info
        self._get_stream = get_stream
        self._size: Optional[int] = None
        self._position = 0
        # Allocated at the first small read, no larger than the object: idle readers cost nothing.
        self._buffer: Optional[memoryview] = None
        self._buffer_start = 0
        self._buffer_end = 0  # buffered bytes are [_buffer_start, _buffer_end)
        self._pinned_budget = _chunks.pinned_budget(get_stream)
        self.stats = ReaderStats()

    @property
    def buffer_size(self) -> int:
        return self._buffer_size

    def _get_size(self) -> int:
        if self._size is None:
            self._size = int(self._get_object_info().size)
        return self._size

    def _open(self, start: int, end: int) -> Any:
        stream = self._get_stream(start, end)
        self.stats.get_requests += 1
        self.stats.bytes_fetched += end - start
        return stream

    def _get_into(self, dest: memoryview, start: int) -> int:
        """One GET of [start, start + len(dest)) copied straight into ``dest``."""
        read_into = getattr(self._get_stream, "read_into", None)
        if read_into is not None:
            # The response lands in ``dest`` itself: one copy, no part buffer of the pool.
            self.stats.get_requests += 1
            self.stats.bytes_fetched += len(dest)
            return int(read_into(start, dest))
        stream = self._open(start, start + len(dest))
        try:
            return int(stream.read_into(dest))
        finally:
            stream.close()

    def _get_bytes(self, start: int, end: int) -> Optional[bytes]:
        """One GET of [start, end) received straight into a new bytes object; None if the opener
        cannot do that (a custom ``get_stream``)."""
        read_bytes = getattr(self._get_stream, "read_bytes", None)
        if read_bytes is None:
            return None
        self.stats.get_requests += 1
        self.stats.bytes_fetched += end - start
        return bytes(read_bytes(start, end))

    def _get_views(self, start: int, end: int) -> List[Union[memoryview, bytes]]:
        """One GET of [start, end) as chunk views (no copy), trimmed to the range."""
        stream = self._open(start, end)
        views: List[Union[memoryview, bytes]] = []
        remaining = end - start
        try:
            for chunk in stream:
                view = byte_view(chunk)
                if len(view) > remaining:
                    view = view[:remaining]
                views.append(view)
                remaining -= len(view)
                if not remaining:
                    break
        finally:
            stream.close()
        return views

    def _fill_buffer(self, start: int) -> None:
        end = min(start + self._buffer_size, self._get_size())
        if self._buffer is None:
            self._buffer = memoryview(bytearray(min(self._buffer_size, self._get_size())))
        # Mark empty first: if the GET fails the old contents are no longer valid.
        self._buffer_start = self._buffer_end = start
        n = self._get_into(self._buffer[: end - start], start)
        self._buffer_end = start + n

    def _buffered_head(self, pos: int, end: int) -> int:
        """How many bytes from ``pos`` (towards ``end``) the buffer holds."""
        if self._buffer_start <= pos < self._buffer_end:
            return min(end, self._buffer_end) - pos
        return 0

    def _bypass(self, remaining: int) -> bool:
        return remaining >= self._buffer_size or self._buffer_size == 0

    def read(self, size: Optional[int] = None) -> bytes:
        """Read up to ``size`` bytes (to the end of the object if None or negative).

        Raises:
            S3Exception: An error occurred accessing S3.
        """
        self._check_open()
        n = read_size(size)
        if n == 0:
            return b""
        pos = self._position
        total = self._get_size()
        end = total if n is None else min(pos + n, total)
        if pos >= end:
            return b""
        head = self._buffered_head(pos, end)
        buffer = self._buffer
        if head == end - pos:
            assert buffer is not None
            data = buffer[pos - self._buffer_start : end - self._buffer_start].tobytes()
        else:
            rest = pos + head
            parts: List[Union[memoryview, bytes]] = []
            if self._bypass(end - rest):
                if head:
                    assert buffer is not None
                    # The buffer is not refilled on this path: a view of it is enough.
                    parts.append(buffer[pos - self._buffer_start : rest - self._buffer_start])
                direct = None if head else self._get_bytes(rest, end)
                if direct is not None:
                    data = direct
                elif end - rest <= self._pinned_budget:
                    parts.extend(self._get_views(rest, end))
                    data = b"".join(parts)
                else:
                    # Too large to hold as part buffers at once: land it in ordinary memory.
                    out = bytearray(end - pos)
                    out_view = memoryview(out)
                    if head:
                        out_view[:head] = parts[0]
                    got = head + self._get_into(out_view[head:], rest)
                    data = bytes(out_view[:got])
            else:
                if head:
                    assert buffer is not None
                    # The refill below overwrites the buffer: copy the (small) head out first.
                    parts.append(buffer[pos - self._buffer_start : rest - self._buffer_start].tobytes())
                self._fill_buffer(rest)
                buffer = self._buffer
                assert buffer is not None
                stop = min(end, self._buffer_end) - self._buffer_start
                if parts:
                    parts.append(buffer[:stop])
                    data = b"".join(parts)
                else:
                    data = buffer[:stop].tobytes()
        self._position = pos + len(data)
        self.stats.bytes_returned += len(data)
        return data

    def readinto(self, buf: Any) -> int:
        """Read up to ``len(buf)`` bytes into the writable buffer ``buf``; 0 at the end.

        Raises:
            TypeError: ``buf`` is not a writable bytes-like object.
            S3Exception: An error occurred accessing S3.
        """
        self._check_open()
        dest = writable_view(buf)
        if not dest.nbytes:
            return 0
        pos = self._position
        end = min(pos + dest.nbytes, self._get_size())
        if pos >= end:
            return 0
        written = self._buffered_head(pos, end)
        if written:
            assert self._buffer is not None
            offset = pos - self._buffer_start
            dest[:written] = self._buffer[offset : offset + written]
        rest = pos + written
        if rest < end:
            if self._bypass(end - rest):
                written += self._get_into(dest[written : end - pos], rest)
            else:
                self._fill_buffer(rest)
                assert self._buffer is not None
                n = min(end, self._buffer_end) - rest
                dest[written : written + n] = self._buffer[:n]
                written += n
        self._position = pos + written
        self.stats.bytes_returned += written
        return written

    def seek(self, offset: int, whence: int = 0, /) -> int:
        """Move to ``offset`` relative to ``whence``; fetches nothing. Past the end means the end.

        Raises:
            ValueError: negative position or invalid whence.
            S3Exception: the size lookup failed.
        """
        self._check_open()
        target = seek_target(offset, whence, self._position, self._get_size)
        if target:
            target = min(target, self._get_size())
        self._position = target
        return target

    def close(self) -> None:
        """Drop the internal buffer."""
        self._buffer = None
        self._buffer_start = self._buffer_end = 0
        super().close()
