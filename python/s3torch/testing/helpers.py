"""Small helpers shared by tests and benchmarks."""

from __future__ import annotations

import uuid
from typing import TYPE_CHECKING, Any, Optional

if TYPE_CHECKING:
    from .servers import S3Server


def unique_bucket_name(prefix: str = "s3torch") -> str:
    """A fresh, valid S3 bucket name: ``<prefix>-<12 hex digits>``."""
    return f"{prefix}-{uuid.uuid4().hex[:12]}"


def make_client(server: S3Server, *, endpoint: Optional[str] = None, **config_kwargs: Any) -> Any:
    """An ``s3torch.S3Client`` for ``server`` (or ``endpoint``, e.g. a proxy in front of it), with
    path-style addressing; keyword arguments go to ``S3ClientConfig``.

    s3torch itself is imported here, not at module import, so that the testing package works
    without the native core.
    """
    from s3torch import S3Client, S3ClientConfig

    config_kwargs.setdefault("force_path_style", True)
    return S3Client(
        server.region,
        endpoint=endpoint or server.endpoint,
        s3client_config=S3ClientConfig(**config_kwargs),
    )
