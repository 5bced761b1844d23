"""`SequentialS3Reader`: one GET of the whole object, kept as the chunks it arrived in."""

from __future__ import annotations

from typing import Any, Callable, Iterator, List, Optional, Set, Tuple

from .._exceptions import S3Exception
from . import _chunks
from ._chunks import ChunkSpans
from .protocol import GetStreamCallable, ObjectInfoLike
from .s3reader import (
    ReaderStats,
    _ObjectReader,
    byte_view,
    read_size,
    seek_target,
    writable_view,
)

# Reads at least this large, at the download frontier, are filled straight from the stream.
_DIRECT_READ_BYTES = 1024 * 1024
# With no GET in flight and the object's size unknown, a read at least this large (or of everything
# left) is received in place, into its bytes object (see _receive_in_place).
_IN_PLACE_BYTES = 16 * 1024 * 1024


class SequentialS3Reader(_ObjectReader):
    """Generic reader: streams the object once and serves any access pattern from what it received.

    The GET starts on the first read (or on a seek past the bytes received so far) and is consumed
    only as far as reads need. Received chunks are kept as views of the client's part buffers, so
    repeated or backward reads cost no request; ``read`` copies once into the returned bytes and
    ``readinto`` copies straight into the caller's buffer. A read of everything left (or of at least
    16 MiB) while no GET is in flight is received in place instead: a ranged GET of the first part
    tells the size, and the rest lands straight in the new bytes object (no part buffer). A small
    first read at the start fetches only the first part; the stream of the rest starts when reads go
    on from where the last one ended. A read at least 16 MiB past what is held with no GET in flight
    (torch.load reads a zip's end right after its magic) receives the bytes up to its end in place
    and keeps them. The object size is looked up (``get_object_info``) only for ``SEEK_END`` before
    the stream has ended and when no response told it.
    """

    def __init__(
        self,
        bucket: str,
        key: str,
        get_object_info: Callable[[], ObjectInfoLike],
        get_stream: GetStreamCallable,
    ) -> None:
        if not bucket:
            raise ValueError("Bucket should be specified")
        self._bucket = bucket
        self._key = key
        self._get_object_info = get_object_info
        self._get_stream = get_stream
        self._stream: Optional[Iterator[Any]] = None
        self._spans = ChunkSpans(0)
        self._eof = False  # the stream has delivered its last chunk
        self._size: Optional[int] = None  # exact size, once known
        self._position = 0
        self._pinned = 0  # bytes of part buffers referenced by _spans
        self._pinned_budget = _chunks.pinned_budget(get_stream)
        self._spilled = 0  # views before this index are heap copies
        self._own: Set[int] = set()  # indexes of views received in place (our memory, not the pool)
        self._size_told = False  # _size came from a response of this reader (not a caller's object info)
        # Only the first part is held (a small first read, _first_part) and no GET has started since:
        # the stream starts when reads go on from where the last one ended (see _before_read).
        self._lazy = False
        self._last_end = 0  # where the last read ended
        self.stats = ReaderStats()

    def prefetch(self) -> None:
        """Start the GET now instead of at the first read.

        Raises:
            S3Exception: the request could not be started.
        """
        self._check_open()
        if self._stream is None and not self._eof:
            # From the first byte not yet held: earlier reads may have been received in place. With
            # the size known the range is whole, so its parts are all requested at once.
            self._lazy = False
            start = self._spans.end
            if not start:
                stream = self._get_stream()
            elif self._size is not None and self._size_told:
                # Not for a size from a caller's object info, which could be stale (the stream is
                # the authority on the size).
                stream = self._get_stream(start, self._size)
            else:
                stream = self._get_stream(start)
            self._stream = iter(stream)
            self.stats.get_requests += 1

    def _known_size(self) -> Optional[int]:
        if self._size is None and self._stream is not None:
            # The GET's response headers carry the object size: no HEAD needed once they arrived.
            reported = getattr(self._stream, "object_size", None)
            if reported is not None:
                self._size = int(reported)
        return self._size

    def _get_size(self) -> int:
        size = self._known_size()
        if size is None:
            size = self._size = int(self._get_object_info().size)
        return size

    def _fill_to(self, offset: int) -> None:
        """Pull chunks until the bytes before ``offset`` are held or the stream ends."""
        spans = self._spans
        if spans.end >= offset or self._eof:
            return
        if self._stream is None and offset - spans.end >= _IN_PLACE_BYTES:
            # Far past what is held, with no GET in flight (torch.load and other zip readers read the
            # directory at the end first): the bytes up to there are received in place, one copy into
            # memory the reader keeps, instead of streaming through part buffers that _spill copies
            # out again.
            if self._receive_in_place(spans.end, offset - spans.end, ahead=True) is not None:
                return
        self.prefetch()
        stream = self._stream
        assert stream is not None
        while spans.end < offset:
            try:
                chunk = next(stream)
            except StopIteration:
                self._finish()
                return
            self._hold_part(byte_view(chunk))

    def _hold_part(self, view: memoryview) -> None:
        """Keeps a view of a part buffer, spilling the oldest ones beyond the reader's pool budget."""
        self._spans.append(view)
        self.stats.bytes_fetched += len(view)
        self._pinned += len(view)
        if self._pinned > self._pinned_budget:
            self._spill(self._pinned_budget)

    def _ranged_views(self, pos: int, end: int) -> Optional[Tuple[List[memoryview], Optional[int]]]:
        """One ranged GET of [pos, end), ``pos`` the end of what is held, as views of its part
        buffers, with the object size its response tells (the reported total, or where a short
        response ends; else None). A 416 further on than 0 means the object ends at pos (no views);
        at 0 (an empty object, or a store that refuses the range) the result is None: stream it."""
        self.stats.get_requests += 1
        try:
            stream = self._get_stream(pos, end)
            views = [byte_view(chunk) for chunk in stream]
        except S3Exception as e:
            if e.status != 416:
                raise
            return None if pos == 0 else ([], pos)
        reported = getattr(stream, "object_size", None)
        if reported is not None:
            self._size_told = True
            return views, int(reported)
        got = sum(len(v) for v in views)
        return views, (pos + got if got < end - pos else None)

    def _finish(self) -> None:
        self._eof = True
        # The stream is the authority on the size (object info could be stale).
        self._size = self._spans.end
        stream, self._stream = self._stream, None
        close = getattr(stream, "close", None)
        if close is not None:
            close()

    def _spill(self, limit: int) -> None:
        # Copy the oldest chunks into ordinary memory so this reader never holds more pool memory
        # than the budget (otherwise an object larger than the pool would stall its own GET).
        views = self._spans.views
        while self._pinned > limit and self._spilled < len(views):
            if self._spilled not in self._own:  # bytes received in place hold no pool memory
                view = views[self._spilled]
                views[self._spilled] = memoryview(view.tobytes())
                self._pinned -= len(view)
            self._spilled += 1

    def read(self, size: Optional[int] = None) -> bytes:
        """Read up to ``size`` bytes (all remaining bytes if None or negative).

        Raises:
            S3Exception: An error occurred accessing S3.
        """
        self._check_open()
        n = read_size(size)
        if n == 0:
            return b""
        pos = self._position
        self._before_read(pos, n)
        if n is None or n >= _DIRECT_READ_BYTES:
            direct = self._read_direct(pos, n)
            if direct is not None:
                self._last_end = self._position
                return direct
        if n is None:
            self._fill_to(1 << 63)
            stop = self._spans.end
        else:
            self._fill_to(pos + n)
            stop = min(pos + n, self._spans.end)
        if pos >= stop:
            return b""
        data = self._spans.to_bytes(pos, stop)
        self._position = self._last_end = stop
        self.stats.bytes_returned += stop - pos
        return data

    def _before_read(self, pos: int, n: Optional[int]) -> None:
        """A small first read fetches only the first part (_first_part); after one, the stream
        starts once reads go on from where the last one ended."""
        if self._stream is not None or self._eof:
            return
        if self._lazy:
            if pos == self._last_end:
                self.prefetch()  # sequential: the rest streams while the held part is read
        elif not self._spans.end and pos == 0 and n is not None:
            self._first_part(n)

    def _first_part(self, n: int) -> None:
        """A first read of fewer bytes than a part, at the start: one ranged GET of the first part
        (the request a whole-object GET starts with, to learn the size) instead of the whole-object
        GET, which would read ahead up to its read window. What comes next decides: a read that goes
        on from there starts the stream (_before_read); one far past it (torch.load and other zip
        readers read the directory at the end next) receives the bytes up to it in place
        (_fill_to), with no part buffer and no GET to cancel."""
        opener = self._get_stream
        part = getattr(opener, "part_size", None)
        if getattr(opener, "read_bytes", None) is None or not part or n >= part:
            return
        size = self._size if self._size is not None else getattr(opener, "object_size", None)
        end = part if size is None else min(part, size)
        if end <= 0:
            return
        fetched = self._ranged_views(0, end)
        if fetched is None:
            return
        views, told = fetched
        for view in views:
            self._hold_part(view)
        got = self._spans.end
        self._size = told if told is not None else size
        if self._size is not None and got >= self._size:
            self._eof = True
            self._size = got
        else:
            self._lazy = True

    def _read_direct(self, pos: int, n: Optional[int]) -> Optional[bytes]:
        """A large read at the download frontier, as a new bytes object that the reader keeps a view of
        for later seeks (no part buffers held). With no GET in flight it is received in place
        (``_receive_in_place``); else the stream fills it (one copy out of the part buffers). None when
        neither applies (or the bytes at ``pos`` are already buffered)."""
        if self._eof or pos != self._spans.end:
            return None
        if self._stream is None:
            data = self._receive_in_place(pos, n)
            if data is not None:
                self._returned(pos, len(data))
                return data
        self.prefetch()
        read = getattr(self._stream, "read", None)
        if read is None:
            return None
        data = read(-1 if n is None else n)
        self._keep(pos, data)
        if n is None or len(data) < n:
            self._finish()
        return data

    def _keep(self, pos: int, data: bytes) -> None:
        self._hold(data)
        self._returned(pos, len(data))

    def _hold(self, data: bytes) -> None:
        if data:
            self._own.add(len(self._spans.views))
            self._spans.append(memoryview(data))
            self.stats.bytes_fetched += len(data)

    def _returned(self, pos: int, n: int) -> None:
        self._position = pos + n
        self.stats.bytes_returned += n

    def _receive_in_place(self, pos: int, n: Optional[int], ahead: bool = False) -> Optional[bytes]:
        """Bytes [pos, pos + n) (to the end if n is None), ``pos`` the end of what is held, when they
        are the rest of the object (or at least ``_IN_PLACE_BYTES``) and no GET is in flight: their
        part requests receive straight into a new bytes object that the reader keeps (one copy, from
        the socket's read buffer; no part buffer), so it costs no copy out of the pool. When the size
        is unknown, a ranged GET of the first part comes first (one request, as the first request of
        a whole-object GET is) and its response tells the size. ``ahead``: bytes a read past them
        needs (see _fill_to), received even when they end before the object does. None when this
        does not apply: the caller streams instead."""
        opener = self._get_stream
        read_bytes = getattr(opener, "read_bytes", None)
        if read_bytes is None:
            return None
        size = self._size if self._size is not None else getattr(opener, "object_size", None)
        prefix = None
        if size is None:
            if n is not None and n < _IN_PLACE_BYTES:
                return None  # a smaller read starts the stream, which reads ahead for the next ones
            first = getattr(opener, "part_size", _IN_PLACE_BYTES)
            if n is not None:
                first = min(first, n)
            fetched = self._ranged_views(pos, pos + first)
            if fetched is None:
                return None
            views, size = fetched
            if size is None:
                size = self._get_size()
            self._size = size
            prefix = views[0] if len(views) == 1 else b"".join(views)
        elif n is not None and pos + n < size and not ahead:
            return None  # part of a known object: the stream reads ahead for the reads after it
        end = size if n is None else min(size, pos + n)
        if end <= pos:
            data = b""
        elif prefix is not None and len(prefix) >= end - pos:
            data = bytes(prefix[: end - pos])
        else:
            self.stats.get_requests += 1
            data = read_bytes(pos, end, prefix) if prefix is not None else read_bytes(pos, end)
        self._hold(data)
        if end >= size:
            self._eof = True
            self._size = self._spans.end
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
        want = dest.nbytes
        self._before_read(pos, want)
        if pos == self._spans.end and not self._eof:
            # At the download frontier: the bytes arrive in place in a new bytes object (which the
            # reader keeps, as read() does) and are copied once into buf. Pulling them as chunks
            # instead would keep every part buffer of the object in the pool (growing it to the
            # object's size: new slabs, page faults) before copying.
            data = self._read_direct(pos, want)
            if data is not None:
                dest[: len(data)] = data
                self._last_end = self._position
                return len(data)
        n = 0
        spans = self._spans
        if pos > spans.end:
            # A jump past what is held: with no GET in flight, the bytes up to the end of this read
            # may be received in place (see _fill_to); else the stream catches up to pos first.
            self._fill_to(pos + want if self._stream is None else pos)
        while n < want:
            # Copy what has arrived, then pull the next chunk: the copy overlaps the download
            # instead of waiting for the whole range first.
            copied = spans.copy_into(dest[n:], pos + n)
            n += copied
            if n >= want or self._eof:
                break
            if not copied:
                self._fill_to(spans.end + 1)
        self._position = self._last_end = pos + n
        self.stats.bytes_returned += n
        return n

    def seek(self, offset: int, whence: int = 0, /) -> int:
        """Move to ``offset`` relative to ``whence``; a position past the end becomes the end.

        Raises:
            ValueError: negative position or invalid whence.
            S3Exception: An error occurred accessing S3.
        """
        self._check_open()
        target = seek_target(offset, whence, self._position, self._get_size)
        if target > self._spans.end and self._known_size() is None:
            # Clamping needs the size: reading up to the target either reaches it or finds the end
            # (those bytes would be read next anyway, and this avoids a HEAD request).
            self._fill_to(target)
        size = self._known_size()
        if size is not None:
            target = min(target, size)
        self._position = target
        return target

    def close(self) -> None:
        """Cancel the GET if still running and drop the buffered chunks."""
        stream = getattr(self, "_stream", None)
        self._stream = None
        if stream is not None:
            close = getattr(stream, "close", None)
            if close is not None:
                close()
        if hasattr(self, "_spans"):
            self._spans = ChunkSpans(0)
        super().close()
