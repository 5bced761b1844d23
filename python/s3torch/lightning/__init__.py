"""Lightning integration: ``S3LightningCheckpoint``, a ``CheckpointIO`` that saves to S3.

Needs the optional ``lightning`` package (``pip install s3torch[lightning]``); importing this module
without it fails with Lightning's own ImportError.
"""

import lightning  # noqa: F401  (a clear ImportError here when lightning is missing)

from .s3_lightning_checkpoint import S3LightningCheckpoint

__all__ = ["S3LightningCheckpoint"]
