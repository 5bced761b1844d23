"""The abstract `S3Reader` and the small pieces every reader shares.

Readers are file-like (``io.BufferedIOBase``) views of one S3 object. They are created by a reader
constructor (see ``constructor.py``) that ``S3Client.get_object`` completes with ``bucket``,
``key``, ``get_object_info`` and ``get_stream``.
"""

from __future__ import annotations

import io
import operator
from abc import ABC, abstractmethod
from dataclasses import asdict, dataclass
from io import SEEK_CUR, SEEK_END, SEEK_SET
from typing import Any, Callable, Dict, Optional

CLOSED_FILE_MESSAGE = "I/O operation on closed file."


@dataclass
class ReaderStats:
    """Request accounting for one reader.

    ``get_requests``: GET streams opened. ``bytes_fetched``: bytes asked of S3 (the length of each
    ranged GET; for an open-ended GET, the bytes received so far). ``bytes_returned``: bytes handed
    to the caller by ``read``/``readinto``.
    """

    get_requests: int = 0
    bytes_fetched: int = 0
    bytes_returned: int = 0

    def as_dict(self) -> Dict[str, int]:
        return asdict(self)

    def __getitem__(self, name: str) -> int:
        # Dict-style access, so callers may treat stats as a mapping.
        if name not in self.__dataclass_fields__:
            raise KeyError(name)
        return int(getattr(self, name))


class S3Reader(ABC, io.BufferedIOBase):
    """Read-only, seekable file-like view of one S3 object.

    Concrete readers: ``SequentialS3Reader`` (buffers the object, any access pattern),
    ``RangedS3Reader`` (ranged GETs per read) and ``DCPOptimizedS3Reader`` (coalesced ranges of a
    DCP load plan).
    """

    def __new__(cls, *args: Any, **kwargs: Any) -> S3Reader:
        # io's C base class skips ABCMeta's abstract-method check: enforce it here.
        if cls.__abstractmethods__:
            missing = ", ".join(sorted(cls.__abstractmethods__))
            raise TypeError(f"Can't instantiate abstract class {cls.__name__} ({missing})")
        return super().__new__(cls)

    @property
    @abstractmethod
    def bucket(self) -> str: ...

    @property
    @abstractmethod
    def key(self) -> str: ...

    @abstractmethod
    def read(self, size: Optional[int] = None) -> bytes: ...

    @abstractmethod
    def seek(self, offset: int, whence: int = SEEK_SET, /) -> int: ...

    @abstractmethod
    def tell(self) -> int: ...

    @abstractmethod
    def readinto(self, buf: Any) -> int: ...

    def read1(self, size: Optional[int] = -1) -> bytes:
        # Every read already returns as soon as it has the bytes: read1 is read.
        return self.read(size)

    def readinto1(self, buf: Any) -> int:
        return self.readinto(buf)

    def readable(self) -> bool:
        self._check_open()
        return True

    def seekable(self) -> bool:
        self._check_open()
        return True

    def writable(self) -> bool:
        self._check_open()
        return False

    def _check_open(self) -> None:
        if self.closed:
            raise ValueError(CLOSED_FILE_MESSAGE)


class _ObjectReader(S3Reader):
    """What every concrete reader shares: it reads one object, from a position it tracks.

    Subclasses set ``_bucket``, ``_key`` and ``_position`` in ``__init__``.
    """

    _bucket: str
    _key: str
    _position: int

    @property
    def bucket(self) -> str:
        return self._bucket

    @property
    def key(self) -> str:
        return self._key

    def tell(self) -> int:
        """Current position in the object."""
        self._check_open()
        return self._position


# --- helpers shared by the concrete readers ------------------------------------------------------


def read_size(size: Any) -> Optional[int]:
    """Normalise ``read``'s argument: None for "to the end", else a non-negative int."""
    if size is None:
        return None
    if isinstance(size, bool) or not isinstance(size, int):
        try:
            size = operator.index(size)
        except TypeError:
            raise TypeError(f"argument should be integer or None, not {type(size)!r}") from None
    return None if size < 0 else size


def writable_view(buf: Any) -> memoryview:
    """A flat, writable, byte-formatted memoryview of ``buf`` (TypeError otherwise).

    Casting to 'B' lets numpy arrays or tensors of any dtype receive raw bytes; ``nbytes`` of the
    result is the number of bytes the caller's buffer can take.
    """
    try:
        view = memoryview(buf)
    except TypeError:
        raise TypeError(
            f"readinto() argument must be a writable bytes-like object, not {type(buf).__name__}"
        ) from None
    if view.readonly:
        raise TypeError(
            f"readinto() argument must be a writable bytes-like object, not {type(buf).__name__} "
            "(read-only buffer)"
        )
    if not view.c_contiguous:
        raise TypeError("readinto() needs a C-contiguous buffer")
    if view.format != "B" or view.ndim != 1:
        view = view.cast("B")
    return view


def byte_view(chunk: Any) -> memoryview:
    """A flat byte memoryview of a stream chunk (no copy; keeps the chunk alive)."""
    view = memoryview(chunk)
    if view.format != "B" or view.ndim != 1:
        view = view.cast("B")
    return view


def seek_target(offset: Any, whence: Any, position: int, get_size: Callable[[], int]) -> int:
    """Absolute position for ``seek(offset, whence)``; the size is looked up only for SEEK_END."""
    if isinstance(offset, bool) or not isinstance(offset, int):
        try:
            offset = operator.index(offset)
        except TypeError:
            raise TypeError(f"integer argument expected, got {type(offset)!r}") from None
    if whence == SEEK_SET:
        target = offset
    elif whence == SEEK_CUR:
        target = position + offset
    elif whence == SEEK_END:
        target = get_size() + offset
    elif isinstance(whence, int):
        raise ValueError(f"invalid whence ({whence}, should be SEEK_SET (0), SEEK_CUR (1) or SEEK_END (2))")
    else:
        raise TypeError(f"integer argument expected for whence, got {type(whence)!r}")
    if target < 0:
        raise ValueError(f"negative seek value {target}")
    return target
