"""S3ClientConfig: mirrors s3torchconnector's, plus memory_limit_bytes."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

MiB = 1024 * 1024
GiB = 1024 * MiB
_MIN_PART_SIZE = 5 * MiB
_MAX_PART_SIZE = 5 * GiB


@dataclass(frozen=True)
class S3ClientConfig:
    """Client settings.

    ``throughput_target_gbps`` sizes the connection pool; ``part_size`` is the size of each ranged GET /
    upload part (5 MiB to 5 GiB); ``memory_limit_bytes`` caps the part-buffer pool (None: the CRT's
    default for the throughput target). A slow consumer stalls downloads at that limit instead of growing
    memory. ``read_timeout_s``: a connection that moves no byte for this many seconds (a server that
    stops answering mid-body) is dropped and the request retried while ``max_attempts`` allow, then it
    raises S3Exception (None: the CRT's 30 s). ``upload_checksum``: every uploaded part carries its
    CRC32C (an aws-chunked trailer) for the server to verify; turn it off for a store that does not
    accept checksum trailers. ``requester_pays``: every request carries ``x-amz-request-payer:
    requester``, for buckets whose owner makes the reader pay (needs signed requests).
    ``download_checksum``: GETs ask for the checksum the server stored and check every response that
    carries one before its bytes are handed on (a mismatch is retried while ``max_attempts`` allow);
    whole-object reads of up to a part, whose size a listing gave, use one GET without a Range so that
    the object's own checksum comes back. Ranged responses carry none on S3 and most stores.
    """

    throughput_target_gbps: float = 10.0
    part_size: int = 8 * MiB
    unsigned: bool = False
    force_path_style: bool = False
    max_attempts: int = 10
    profile: Optional[str] = None
    memory_limit_bytes: Optional[int] = None
    read_timeout_s: Optional[int] = None
    upload_checksum: bool = True
    requester_pays: bool = False
    download_checksum: bool = True

    def __post_init__(self) -> None:
        if not isinstance(self.part_size, int) or isinstance(self.part_size, bool):
            raise TypeError(f"part_size must be an int, got {type(self.part_size).__name__}")
        if not (_MIN_PART_SIZE <= self.part_size <= _MAX_PART_SIZE):
            raise ValueError(
                f"part_size must be between 5 MiB and 5 GiB ({_MIN_PART_SIZE} to {_MAX_PART_SIZE} "
                f"bytes), got {self.part_size}"
            )
        if self.max_attempts < 1:
            raise ValueError(f"max_attempts must be at least 1, got {self.max_attempts}")
        if self.throughput_target_gbps <= 0:
            raise ValueError(
                f"throughput_target_gbps must be positive, got {self.throughput_target_gbps}"
            )
        if self.requester_pays and self.unsigned:
            raise ValueError(
                "requester_pays=True needs signed requests: S3 does not charge an anonymous requester, "
                "so it cannot be combined with unsigned=True"
            )
        timeout = self.read_timeout_s
        if timeout is not None and (not isinstance(timeout, int) or isinstance(timeout, bool) or timeout < 1):
            raise ValueError(f"read_timeout_s must be a whole number of seconds >= 1, got {timeout!r}")
        if self.memory_limit_bytes is not None and self.memory_limit_bytes < self.part_size:
            raise ValueError(
                f"memory_limit_bytes ({self.memory_limit_bytes}) must be at least part_size "
                f"({self.part_size})"
            )
