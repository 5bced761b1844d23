"""S3LightningCheckpoint: Lightning's CheckpointIO over S3 (s3torchconnector's API)."""

from __future__ import annotations

from typing import Any, Dict, Optional

import lightning
import torch
from lightning.pytorch.plugins.io import CheckpointIO

from .._client import S3Client
from .._config import S3ClientConfig
from .._dataset_common import parse_s3_uri
from .._user_agent import UserAgent


def _lightning_before_2_6() -> bool:
    try:
        major, minor = (int(p) for p in lightning.__version__.split(".")[:2])
    except ValueError:
        return False
    return (major, minor) < (2, 6)


class S3LightningCheckpoint(CheckpointIO):
    """Saves and loads Lightning checkpoints at ``s3://bucket/key`` paths:
    ``Trainer(plugins=[S3LightningCheckpoint("us-east-1")], default_root_dir="s3://bucket/run")``."""

    def __init__(
        self,
        region: Optional[str],
        s3client_config: Optional[S3ClientConfig] = None,
        endpoint: Optional[str] = None,
    ) -> None:
        self._client = S3Client(
            region,
            user_agent=UserAgent(["lightning", lightning.__version__]),
            s3client_config=s3client_config,
            endpoint=endpoint,
        )
        self.region = self._client.region

    def save_checkpoint(
        self,
        checkpoint: Dict[str, Any],
        path: str,  # type: ignore[override]  (S3 URIs only: a Path means a local file system)
        storage_options: Optional[Any] = None,
    ) -> None:
        """Uploads ``torch.save(checkpoint)`` to ``path`` while it is written; on failure nothing appears."""
        bucket, key = parse_s3_uri(self._validate_path(path))
        with self._client.put_object(bucket, key) as writer:
            torch.save(checkpoint, writer)

    def load_checkpoint(
        self,
        path: str,  # type: ignore[override]
        map_location: Optional[Any] = None,
        weights_only: Optional[bool] = None,
    ) -> Dict[str, Any]:
        """``torch.load`` of the checkpoint at ``path``. ``weights_only=None`` keeps Lightning's default
        (False before Lightning 2.6, torch's own from 2.6)."""
        bucket, key = parse_s3_uri(self._validate_path(path))
        reader = self._client.get_object(bucket, key)
        if weights_only is None and _lightning_before_2_6():
            weights_only = False
        return torch.load(reader, map_location, weights_only=weights_only)  # type: ignore[arg-type]

    def remove_checkpoint(self, path: str) -> None:  # type: ignore[override]
        """Deletes the checkpoint object at ``path``."""
        bucket, key = parse_s3_uri(self._validate_path(path))
        self._client.delete_object(bucket, key)

    def teardown(self) -> None:
        """Nothing to release: the client's connections close with it."""

    @staticmethod
    def _validate_path(path: Any) -> str:
        if not isinstance(path, str):
            raise TypeError(
                f"{type(path).__name__!r} is not a supported type for 'path'. Must be a string formatted "
                "as an S3 uri."
            )
        return path
