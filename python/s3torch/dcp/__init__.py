"""PyTorch Distributed Checkpoint (DCP) storage on S3: ``S3StorageWriter``, ``S3StorageReader``.

Usage (same as s3torchconnector.dcp, plus ``endpoint`` for S3-compatible stores)::

    import torch.distributed.checkpoint as dcp
    from s3torch.dcp import S3StorageReader, S3StorageWriter

    dcp.save(state_dict, storage_writer=S3StorageWriter("us-east-1", "s3://bucket/ckpt"))
    dcp.load(state_dict, storage_reader=S3StorageReader("us-east-1", "s3://bucket/ckpt"))
"""

from ._stats import LoadStats, SaveStats
from .s3_file_system import S3FileSystem, S3StorageReader, S3StorageWriter, StorageMetadata
from .s3_prefix_strategy import (
    BinaryPrefixStrategy,
    DefaultPrefixStrategy,
    HexPrefixStrategy,
    NumericPrefixStrategy,
    RoundRobinPrefixStrategy,
    S3PrefixStrategyBase,
)

__all__ = [
    "S3FileSystem",
    "S3StorageReader",
    "S3StorageWriter",
    "StorageMetadata",
    "S3PrefixStrategyBase",
    "DefaultPrefixStrategy",
    "NumericPrefixStrategy",
    "BinaryPrefixStrategy",
    "HexPrefixStrategy",
    "RoundRobinPrefixStrategy",
    "LoadStats",
    "SaveStats",
]
