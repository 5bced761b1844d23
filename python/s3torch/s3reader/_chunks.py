"""`ChunkSpans`: bytes of an object held as the chunk views a GET delivered, never concatenated.

Readers keep the memoryviews of the chunks they received (views of pinned part buffers) and copy
out of them only when the caller asks: ``to_bytes`` makes exactly one copy (a slice of one chunk, or
one ``b"".join`` across several) and ``copy_into`` one memcpy per chunk into the caller's buffer.
"""

from __future__ import annotations

from bisect import bisect_right
from typing import Any, List

MiB = 1024 * 1024

# Most bytes of part buffers a reader keeps referenced at once. Part buffers come from the client's
# bounded pool and a GET stalls while the pool is exhausted, so a reader that pinned a whole large
# object could wait forever on itself. Past this budget readers copy into ordinary memory instead.
PINNED_LIMIT_BYTES = 256 * MiB


def pinned_budget(get_stream: Any) -> int:
    """The pinned budget for a reader whose streams come from ``get_stream``.

    A quarter of the pool's limit when ``get_stream`` tells it (S3Client's opener has
    ``memory_limit_bytes``): the rest of the pool stays free for the GET's in-flight parts and for
    other readers. ``PINNED_LIMIT_BYTES`` for any other callable.
    """
    limit = getattr(get_stream, "memory_limit_bytes", None)
    if isinstance(limit, int) and limit > 0:
        return max(limit // 4, 1)
    return PINNED_LIMIT_BYTES


class ChunkSpans:
    """Contiguous object bytes [start, end) as a list of memoryviews."""

    __slots__ = ("views", "starts", "start", "end", "_last")

    def __init__(self, start: int = 0) -> None:
        self.views: List[memoryview] = []
        self.starts: List[int] = []  # object offset of each view's first byte
        self.start = start
        self.end = start
        self._last = 0  # index of the view used last: sequential access rarely needs bisect

    def __len__(self) -> int:
        return self.end - self.start

    def append(self, view: memoryview) -> None:
        n = len(view)
        if n:
            self.views.append(view)
            self.starts.append(self.end)
            self.end += n

    def _index(self, pos: int) -> int:
        i = self._last
        starts = self.starts
        if i < len(starts) and starts[i] <= pos and (i + 1 == len(starts) or pos < starts[i + 1]):
            return i
        i = bisect_right(starts, pos) - 1
        self._last = i
        return i

    def to_bytes(self, pos: int, stop: int) -> bytes:
        """bytes of [pos, stop), both inside the spans; one copy."""
        if pos >= stop:
            return b""
        views = self.views
        starts = self.starts
        i = self._index(pos)
        base = starts[i]
        view = views[i]
        if stop - base <= len(view):
            return view[pos - base : stop - base].tobytes()
        parts = [view[pos - base :]]
        i += 1
        while True:
            base = starts[i]
            view = views[i]
            if stop - base <= len(view):
                parts.append(view[: stop - base])
                break
            parts.append(view)
            i += 1
        self._last = i
        return b"".join(parts)

    def copy_into(self, dest: memoryview, pos: int) -> int:
        """Copy from ``pos`` into ``dest`` (a flat byte view) up to its length or the spans' end."""
        total = min(len(dest), self.end - pos)
        if total <= 0:
            return 0
        views = self.views
        starts = self.starts
        i = self._index(pos)
        written = 0
        while written < total:
            view = views[i]
            offset = pos + written - starts[i]
            n = min(len(view) - offset, total - written)
            dest[written : written + n] = view[offset : offset + n]
            written += n
            i += 1
        self._last = i - 1
        return written
