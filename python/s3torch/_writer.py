"""S3Writer: a write-only file object over a streaming multipart upload."""

from __future__ import annotations

import io
import threading
from typing import Any, List, Optional, Tuple

_held: List[Tuple[Any, Any]] = []  # (loan, owner) of ended uploads whose parts the CRT still held
_held_lock = threading.Lock()


def _prune_held() -> None:
    """Drops the owners in ``_held`` whose memory the CRT gave back (called as lent writes start or end)."""
    with _held_lock:
        _held[:] = [held for held in _held if not held[0].returned]


class S3Writer(io.BufferedIOBase):
    """Bytes written are uploaded in parts while you write; ``close()`` completes the upload.

    An exception inside ``with`` (or dropping the writer without closing it) aborts the upload: no
    partial object ever appears.
    """

    def __init__(self, stream: Any) -> None:
        self.stream = stream
        self._position = 0
        self._closed = False
        self._lock = threading.Lock()  # close/abort from two threads: one of them finishes the upload
        self._lent: List[Tuple[Any, Any]] = []  # (loan, owner) of _write_lent, until the loan is back

    @property
    def bucket(self) -> str:
        return self.stream.bucket

    @property
    def key(self) -> str:
        return self.stream.key

    def __enter__(self) -> S3Writer:
        return self

    def __exit__(self, exc_type: Any, exc: Any, tb: Any) -> None:
        if exc_type is None:
            self.close()
        else:
            self.abort()

    def write(self, data: Any) -> int:  # type: ignore[override]
        if self._closed:
            raise ValueError(f"write to a closed S3Writer (s3://{self.bucket}/{self.key})")
        n = self.stream.write(data)
        self._position += n
        return n

    def _write_lent(self, data: Any, owner: Any, start: int, end: int) -> int:
        """write() of bytes inside the memory [start, end) that ``owner`` keeps alive and that stays
        unchanged until the upload ends (a tensor's storage during a save): each whole part inside them
        is sent from that memory in place instead of being copied. ``owner`` is held until the upload
        let go of those parts. Bytes outside [start, end) are written as write() writes them."""
        if self._closed:
            raise ValueError(f"write to a closed S3Writer (s3://{self.bucket}/{self.key})")
        _prune_held()
        loan = self.stream.new_loan()
        self._lent.append((loan, owner))  # held whatever happens: a failed write may keep a part
        try:
            n = self.stream.write_lent(data, loan, start, end)
        finally:
            self._lent = [held for held in self._lent if not held[0].returned]
        self._position += n
        return n

    def _let_go(self) -> None:
        """Drops the owners of lent memory once the upload ended. The CRT returns a part as its request
        ends; after a failure it may keep one until the native stream is gone: such owners stay in a
        list of this module, dropped as their loans come back (checked whenever a writer ends)."""
        with _held_lock:
            _held.extend(held for held in self._lent if not held[0].returned)
        self._lent = []
        _prune_held()

    def tell(self) -> int:
        return self._position

    def flush(self) -> None:
        """Nothing to do: parts upload as they fill, the object appears at close(). A no-op on a closed
        writer too (as s3torchconnector's), so wrappers that flush after closing do not fail."""

    def close(self) -> None:
        """Completes the upload; the object appears now. Safe to call again, and from two threads: the
        second returns once the first has finished."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
            try:
                self.stream.close()
            finally:
                self._let_go()

    def abort(self) -> None:
        """Abandon the upload; nothing is written to the bucket."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
            try:
                self.stream.abort()
            finally:
                self._let_go()

    @property
    def closed(self) -> bool:  # type: ignore[override]
        return self._closed

    def readable(self) -> bool:
        return False

    def seekable(self) -> bool:
        return False

    def writable(self) -> bool:
        return not self._closed

    def __del__(self) -> None:
        # Garbage collection of an unclosed writer aborts (the native stream does so too).
        if not getattr(self, "_closed", True):
            try:
                self.abort()
            except Exception:
                pass

    def fileno(self) -> int:
        raise io.UnsupportedOperation("S3Writer has no file descriptor")

    def detach(self) -> Optional[Any]:  # type: ignore[override]
        raise io.UnsupportedOperation("S3Writer cannot be detached")
