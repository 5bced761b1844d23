"""How many concurrent GET streams a client's part-buffer pool can feed, and its part size."""

from __future__ import annotations

import logging
from typing import Any, Optional, Tuple

log = logging.getLogger(__name__)

MiB = 1024 * 1024
DEFAULT_MAX_STREAMS = 8
# Pool budget per consuming stream (parts in flight plus the ones being read): see default_max_streams.
_PARTS_PER_STREAM = 3


def _pool_limit(client: Any) -> Tuple[int, int]:
    """(part-buffer pool limit in bytes or 0 if unknown, part size) of ``client``."""
    config = getattr(client, "s3client_config", None)
    part_size = getattr(config, "part_size", 8 * MiB) or 8 * MiB
    limit = getattr(config, "memory_limit_bytes", None)
    if not limit:
        try:
            limit = int(client.stats().get("limit_bytes", 0))
        except Exception:  # stats are optional
            limit = 0
    return int(limit or 0), int(part_size)


def part_size_of(client: Any) -> int:
    """The client's part size: how it splits GETs, and the upload part size it writes with."""
    return _pool_limit(client)[1]


def default_max_streams(client: Any, requested: Optional[int] = None) -> int:
    """K: how many streams the part-buffer pool can feed.

    By default at most DEFAULT_MAX_STREAMS; a requested K is honoured up to _PARTS_PER_STREAM parts
    of the pool each: every consumer may hold a part or two (a chunk it is reading, one it peeked
    at) while its stream needs another to make progress, so more streams than that could exhaust the
    pool with nobody able to finish.
    """
    limit, part_size = _pool_limit(client)
    if requested is None:
        if not limit:
            return DEFAULT_MAX_STREAMS
        return max(1, min(DEFAULT_MAX_STREAMS, limit // (_PARTS_PER_STREAM * part_size)))
    if not limit:
        return max(1, requested)
    cap = max(1, limit // (_PARTS_PER_STREAM * part_size))
    if requested > cap:
        log.warning(
            "max_streams=%d lowered to %d: the client's memory limit (%d bytes) feeds at most "
            "%d streams of %d-byte parts",
            requested,
            cap,
            limit,
            cap,
            part_size,
        )
    return max(1, min(requested, cap))
