"""s3torch: fast, memory-bounded S3 access for PyTorch on the AWS Common Runtime."""

from ._client import HeadObjectResult, ListObjectResult, ObjectInfo, S3Client
from ._config import S3ClientConfig
from ._crtlog import configure_crt_logging
from ._exceptions import S3Exception, S3NotFoundError, S3PermissionError
from ._writer import S3Writer
from .s3reader import S3Reader
from .s3reader.constructor import S3ReaderConstructor

__version__ = "0.1.0"

__all__ = [
    "HeadObjectResult",
    "ListObjectResult",
    "ObjectInfo",
    "S3Client",
    "S3ClientConfig",
    "S3Exception",
    "S3NotFoundError",
    "S3PermissionError",
    "S3Reader",
    "S3ReaderConstructor",
    "S3Writer",
    "__version__",
    "configure_crt_logging",
]
