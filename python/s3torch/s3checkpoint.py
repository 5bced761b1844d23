"""S3Checkpoint: ``torch.save`` to and ``torch.load`` from S3 objects (s3torchconnector's API)."""

from __future__ import annotations

from typing import Optional

from ._client import S3Client
from ._config import S3ClientConfig
from ._dataset_common import parse_s3_uri
from ._writer import S3Writer
from .s3reader import S3Reader


class S3Checkpoint:
    """``torch.save(obj, checkpoint.writer("s3://bucket/key"))`` uploads while torch writes (the
    object appears only when the writer closes); ``torch.load(checkpoint.reader(uri))`` reads it back.
    """

    def __init__(
        self,
        region: Optional[str],
        endpoint: Optional[str] = None,
        s3client_config: Optional[S3ClientConfig] = None,
    ) -> None:
        self._client = S3Client(region, endpoint=endpoint, s3client_config=s3client_config)
        self.region = self._client.region
        self.endpoint = endpoint

    def reader(self, s3_uri: str) -> S3Reader:
        """A read-only, seekable binary stream of the object at ``s3_uri`` (``s3://bucket/key``)."""
        bucket, key = parse_s3_uri(s3_uri)
        return self._client.get_object(bucket, key)

    def writer(self, s3_uri: str) -> S3Writer:
        """A write-only binary stream; the object at ``s3_uri`` appears when it is closed."""
        bucket, key = parse_s3_uri(s3_uri)
        return self._client.put_object(bucket, key)
