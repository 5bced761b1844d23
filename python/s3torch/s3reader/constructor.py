"""`S3ReaderConstructor`: factories for the reader a client builds per object.

A constructor is a callable ``(bucket, key, get_object_info, get_stream) -> S3Reader``; the
factories return ``functools.partial`` objects (picklable, so they travel to DataLoader workers)
or a ``DCPOptimizedConstructor``.
"""

from __future__ import annotations

import logging
from functools import partial
from typing import Optional, Union

from .dcp_optimized import (
    DEFAULT_MAX_GAP_SIZE,
    DCPOptimizedConstructor,
)
from .protocol import DCPS3ReaderConstructorProtocol, S3ReaderConstructorProtocol
from .ranged import RangedS3Reader, validate_buffer_size
from .sequential import SequentialS3Reader

log = logging.getLogger(__name__)

__all__ = ["S3ReaderConstructor", "DCPOptimizedConstructor", "log"]


class S3ReaderConstructor:
    """Factories for reader constructors, passed as ``reader_constructor`` to clients, datasets,
    checkpoints and DCP storage readers.

    - ``sequential()``: stream the whole object once, any access pattern (the default).
    - ``range_based(buffer_size=None)``: ranged GETs per read, for sparse reads of large objects.
    - ``dcp_optimized(max_gap_size=32 MiB)``: only the byte ranges of a DCP load plan.
    """

    @staticmethod
    def sequential() -> S3ReaderConstructorProtocol:
        """Constructor for ``SequentialS3Reader``: buffers the object, serves any access pattern.

        Example::

            reader_constructor = S3ReaderConstructor.sequential()
        """
        return partial(SequentialS3Reader)

    @staticmethod
    def range_based(buffer_size: Optional[int] = None) -> S3ReaderConstructorProtocol:
        """Constructor for ``RangedS3Reader``: a ranged GET per read.

        Args:
            buffer_size: bytes fetched ahead for reads smaller than it (None: 8 MiB; 0: no buffer,
                every read fetches exactly its bytes). Reads of at least ``buffer_size`` bypass the
                buffer; a read that starts inside the buffer reuses the bytes it holds.

        Raises:
            TypeError, ValueError: ``buffer_size`` is not a non-negative int or None.

        Example::

            reader_constructor = S3ReaderConstructor.range_based(buffer_size=16 * 1024 * 1024)
        """
        validate_buffer_size(buffer_size)
        return partial(RangedS3Reader, buffer_size=buffer_size)

    @staticmethod
    def dcp_optimized(
        max_gap_size: Union[int, float] = DEFAULT_MAX_GAP_SIZE,
    ) -> DCPS3ReaderConstructorProtocol:
        """Constructor for DCP loads that fetches only the plan's byte ranges.

        Args:
            max_gap_size: ranges of a file whose gap is at most this many bytes share one GET
                (default 32 MiB; ``float("inf")``: one GET per file; 0: only adjacent ranges).

        Raises:
            ValueError: ``max_gap_size`` is negative.

        Use it with ``S3StorageReader``, whose ``prepare_local_plan`` sorts the plan by offset and
        injects the ranges::

            reader_constructor = S3ReaderConstructor.dcp_optimized()
            storage_reader = S3StorageReader(region, path, reader_constructor=reader_constructor)
            DCP.load(state_dict, storage_reader=storage_reader)
        """
        return DCPOptimizedConstructor(max_gap_size=max_gap_size)

    @staticmethod
    def default() -> S3ReaderConstructorProtocol:
        """The default constructor: ``sequential()``."""
        return S3ReaderConstructor.sequential()

    @staticmethod
    def get_reader_type_string(constructor: Optional[S3ReaderConstructorProtocol]) -> str:
        """ "sequential", "range_based", "dcp_optimized" or "unknown" (None: the default's type)."""
        if constructor is None:
            constructor = S3ReaderConstructor.default()
        if isinstance(constructor, DCPOptimizedConstructor):
            return "dcp_optimized"
        if isinstance(constructor, partial):
            if constructor.func is SequentialS3Reader:
                return "sequential"
            if constructor.func is RangedS3Reader:
                return "range_based"
        return "unknown"
