"""s3torch: fast, memory-bounded S3 access for PyTorch on the AWS Common Runtime."""

from typing import Any

from ._client import HeadObjectResult, ListObjectResult, ObjectInfo, S3Client
from ._config import S3ClientConfig
from ._crtlog import configure_crt_logging
from ._exceptions import S3Exception, S3NotFoundError, S3PermissionError
from ._user_agent import package_version
from ._writer import S3Writer
from .s3reader import S3Reader
from .s3reader.constructor import S3ReaderConstructor

__version__: str = package_version("s3torch") or "0.0.0+unknown"

# These need torch; imported on first use so that the client works without it.
_NEEDS_TORCH = {
    "S3IterableDataset": ".s3iterable_dataset",
    "S3MapDataset": ".s3map_dataset",
    "S3Checkpoint": ".s3checkpoint",
}


def __getattr__(name: str) -> Any:
    if name in _NEEDS_TORCH:
        import importlib

        value = getattr(importlib.import_module(_NEEDS_TORCH[name], __name__), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = [
    "HeadObjectResult",
    "ListObjectResult",
    "ObjectInfo",
    "S3Checkpoint",
    "S3Client",
    "S3ClientConfig",
    "S3Exception",
    "S3IterableDataset",
    "S3MapDataset",
    "S3NotFoundError",
    "S3PermissionError",
    "S3Reader",
    "S3ReaderConstructor",
    "S3Writer",
    "__version__",
    "configure_crt_logging",
]
