"""In-memory stand-ins for the client's ``get_stream`` / ``get_object_info`` (no tests here).

``FakeObject`` serves one bytes object the way the native ``GetObjectStream`` does: chunks in object
order (read-only, buffer-protocol objects), ``read_into`` across chunks keeping a partly consumed
chunk for the next ``__next__``, ``tell`` and ``close``. Each chunk is a memoryview of a numpy array
sharing the data, so a weak reference to the array tells whether a reader still holds the chunk.
"""

from __future__ import annotations

import weakref
from typing import Any, List, Optional, Tuple

import numpy as np


class ObjectInfo:
    def __init__(self, size: int) -> None:
        self.size = size


class FakeStream:
    def __init__(self, owner: FakeObject, start: int, end: int) -> None:
        self._owner = owner
        self.start = start
        self.end = end
        self._pos = start
        self._pending: Optional[memoryview] = None  # rest of a chunk read_into stopped inside
        self.closed = False

    def __iter__(self) -> FakeStream:
        return self

    def _check(self) -> None:
        if self.closed:
            raise RuntimeError("stream used after close()")

    def _next_chunk(self) -> memoryview:
        if self._pending is not None:
            view, self._pending = self._pending, None
            return view
        if self._pos >= self.end:
            raise StopIteration
        size = min(self._owner.chunk_size, self.end - self._pos)
        array = np.frombuffer(self._owner.data, dtype=np.uint8, count=size, offset=self._pos)
        self._owner.chunk_refs.append(weakref.ref(array))
        self._pos += size
        self._owner.bytes_served += size
        return memoryview(array)

    def __next__(self) -> memoryview:
        self._check()
        view = self._next_chunk()
        self._owner.next_calls += 1
        return view

    def read_into(self, buffer: Any) -> int:
        self._check()
        dest = memoryview(buffer).cast("B")
        written = 0
        while written < len(dest):
            try:
                view = self._next_chunk()
            except StopIteration:
                break
            n = min(len(view), len(dest) - written)
            dest[written : written + n] = view[:n]
            written += n
            if n < len(view):
                self._pending = view[n:]
        self._owner.read_into_calls += 1
        return written

    def tell(self) -> int:
        return self._pos - (len(self._pending) if self._pending is not None else 0)

    @property
    def object_size(self) -> Optional[int]:
        # Like the native stream: known once the response headers (first chunk) arrived.
        return self._owner.size if self._owner.next_calls or self._owner.read_into_calls else None

    def close(self) -> None:
        self.closed = True
        self._pending = None


class FakeObject:
    """One object; records every GET range and size lookup."""

    def __init__(self, data: bytes, chunk_size: int = 7, info_given: bool = False) -> None:
        self.data = bytes(data)
        self.chunk_size = chunk_size
        self.gets: List[Tuple[Optional[int], Optional[int]]] = []
        self.streams: List[FakeStream] = []
        self.info_calls = 0
        self.next_calls = 0
        self.read_into_calls = 0
        self.bytes_served = 0
        self.chunk_refs: List[weakref.ref] = []

    @property
    def size(self) -> int:
        return len(self.data)

    def get_stream(self, start: Optional[int] = None, end: Optional[int] = None) -> FakeStream:
        self.gets.append((start, end))
        s = 0 if start is None else start
        e = self.size if end is None else min(end, self.size)
        if s > e or (start is not None and start >= self.size and self.size > 0):
            raise AssertionError(f"unsatisfiable range {start}-{end} of a {self.size}-byte object")
        stream = FakeStream(self, s, e)
        self.streams.append(stream)
        return stream

    def get_object_info(self) -> ObjectInfo:
        self.info_calls += 1
        return ObjectInfo(self.size)

    def live_chunks(self) -> int:
        return sum(1 for r in self.chunk_refs if r() is not None)

    def requested_ranges(self) -> List[Tuple[int, int]]:
        return [(0 if s is None else s, self.size if e is None else min(e, self.size)) for s, e in self.gets]


def pattern(size: int, seed: int = 0) -> bytes:
    """Deterministic, position-dependent bytes (catches off-by-one copies)."""
    rng = np.random.default_rng(seed)
    return rng.integers(0, 256, size=size, dtype=np.uint8).tobytes()
