"""Typing protocols for reader constructors and the callables the client hands them."""

from __future__ import annotations

import os
from typing import (
    TYPE_CHECKING,
    Any,
    Callable,
    Dict,
    Iterator,
    List,
    Optional,
    Protocol,
    Union,
    runtime_checkable,
)

if TYPE_CHECKING:
    from torch.distributed.checkpoint.filesystem import _StorageInfo
    from torch.distributed.checkpoint.metadata import MetadataIndex
    from torch.distributed.checkpoint.planner import ReadItem

    from .dcp_optimized import ItemRange
    from .s3reader import S3Reader


class ObjectInfoLike(Protocol):
    """What readers need of ``ObjectInfo`` (from a listing) or ``HeadObjectResult``."""

    @property
    def size(self) -> int: ...


class GetObjectStreamLike(Protocol):
    """What readers need of the native ``GetObjectStream``: chunks in object order (each supports
    the buffer protocol), ``read_into`` across chunks, ``tell`` and ``close``."""

    def __iter__(self) -> Iterator[Any]: ...

    def __next__(self) -> Any: ...

    def read_into(self, buffer: Any) -> int: ...

    def tell(self) -> int: ...

    def close(self) -> None: ...


class GetStreamCallable(Protocol):
    """Opens a GET of bytes [start, end) (None: from the start / to the end of the object)."""

    def __call__(self, start: Optional[int] = None, end: Optional[int] = None) -> GetObjectStreamLike: ...


@runtime_checkable
class S3ReaderConstructorProtocol(Protocol):
    """Builds a reader for one object; ``S3Client.get_object`` supplies all four arguments."""

    def __call__(
        self,
        bucket: str,
        key: str,
        get_object_info: Callable[[], ObjectInfoLike],
        get_stream: GetStreamCallable,
    ) -> S3Reader: ...


@runtime_checkable
class DCPS3ReaderConstructorProtocol(Protocol):
    """A reader constructor that also accepts the byte ranges of a DCP load plan."""

    _item_ranges_by_file: Dict[str, List[ItemRange]]

    def __call__(
        self,
        bucket: str,
        key: str,
        get_object_info: Callable[[], ObjectInfoLike],
        get_stream: GetStreamCallable,
    ) -> S3Reader: ...

    def set_item_ranges_by_file(
        self,
        plan_items: List[ReadItem],
        storage_data: Dict[MetadataIndex, _StorageInfo],
        base_path: Union[str, os.PathLike],
    ) -> None: ...
