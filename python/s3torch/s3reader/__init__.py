"""File-like readers of S3 objects and the constructors that choose between them."""

from .constructor import DCPOptimizedConstructor, S3ReaderConstructor
from .dcp_optimized import DCPOptimizedS3Reader, ItemRange, RangeGroup, coalesce_ranges
from .protocol import (
    DCPS3ReaderConstructorProtocol,
    GetStreamCallable,
    S3ReaderConstructorProtocol,
)
from .ranged import RangedS3Reader
from .s3reader import ReaderStats, S3Reader
from .sequential import SequentialS3Reader

__all__ = [
    "S3Reader",
    "S3ReaderConstructor",
    "DCPOptimizedConstructor",
    "SequentialS3Reader",
    "RangedS3Reader",
    "DCPOptimizedS3Reader",
    "ItemRange",
    "RangeGroup",
    "coalesce_ranges",
    "ReaderStats",
    "GetStreamCallable",
    "S3ReaderConstructorProtocol",
    "DCPS3ReaderConstructorProtocol",
]
