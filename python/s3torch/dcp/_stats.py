"""Statistics of the last DCP load / save, kept on the storage reader / writer, logged at INFO."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Dict, Mapping, Optional


@dataclass
class LoadStats:
    """What one ``read_data`` call cost.

    ``bytes_needed`` is the sum of the plan's item sizes; ``bytes_fetched`` what came from S3 (item
    bytes plus coalesced gaps, or whole objects for the sequential reader). ``get_requests`` counts
    the GETs opened (the client may split each into part-sized HTTP requests).
    """

    reader: str  # reader constructor type ("dcp_optimized", "sequential", ...)
    mode: str  # "concurrent" (all range GETs of the plan at once) or "per_file" (torch's loop)
    files: int = 0
    items: int = 0
    bytes_needed: int = 0
    bytes_fetched: int = 0
    get_requests: int = 0
    http_requests: Optional[int] = None  # every HTTP request the client sent (parts, HEADs, ...)
    max_streams: int = 0  # most range GETs in flight at once
    retries: Optional[int] = None  # failed attempts the client retried
    fallback_items: int = 0  # tensor items read through torch.load instead of in place
    direct_bytes: int = 0  # bytes received straight into destination memory (no part buffer)
    relocated_items: int = 0  # items whose scattered middle had to be moved once (offset guessed wrong)
    bytes_from_peers: int = 0  # item bytes other ranks fetched and broadcast to this one (dedupe)
    device_bytes: int = 0  # bytes copied to GPU tensors asynchronously, straight from part buffers
    prefaulted_bytes: int = 0  # destination memory mapped in by a thread ahead of the GETs
    seconds: float = 0.0

    @property
    def gbps(self) -> float:
        """Fetched gigabytes (1e9) per second."""
        return self.bytes_fetched / self.seconds / 1e9 if self.seconds > 0 else 0.0

    @property
    def overfetch(self) -> float:
        """bytes_fetched / bytes_needed (1.0 is perfect)."""
        return self.bytes_fetched / self.bytes_needed if self.bytes_needed else 0.0

    def summary(self) -> str:
        return (
            f"DCP load ({self.reader}, {self.mode}): {self.items} items from {self.files} files, "
            f"needed {self.bytes_needed} B, fetched {self.bytes_fetched} B ({self.overfetch:.3f}x) "
            f"in {self.get_requests} GETs (<= {self.max_streams} at once, "
            f"{self.http_requests} HTTP requests, {self.direct_bytes} B straight into tensors), "
            f"retries {self.retries}, "
            f"{self.fallback_items} via torch.load, {self.relocated_items} relocated, "
            f"{self.bytes_from_peers} B from other ranks, {self.device_bytes} B to devices, "
            f"{self.seconds:.3f} s, {self.gbps:.2f} GB/s"
        )


@dataclass
class SaveStats:
    """What one save cost on this rank (``finish`` adds the metadata object on the coordinator)."""

    files: int = 0
    items: int = 0
    bytes_written: int = 0
    put_objects: int = 0  # objects uploaded (each may be a multipart upload of several parts)
    put_requests: Optional[int] = None  # HTTP requests, from the client's counters when reported
    retries: Optional[int] = None
    seconds: float = 0.0

    @property
    def gbps(self) -> float:
        return self.bytes_written / self.seconds / 1e9 if self.seconds > 0 else 0.0

    def summary(self) -> str:
        return (
            f"DCP save: {self.items} items in {self.files} files, {self.bytes_written} B in "
            f"{self.put_objects} objects (requests {self.put_requests}, retries {self.retries}), "
            f"{self.seconds:.3f} s, {self.gbps:.2f} GB/s"
        )


# Counters of S3Client.stats() (native client, per S3Client).
RETRIES = "failed_attempts"
GET_STREAMS = "get_streams"
DIRECT_GETS = "direct_gets"  # GETs received straight into caller memory (no stream)
SCATTER_BYTES = "scatter_bytes"
PUT_STREAMS = "put_streams"
HTTP_REQUESTS = "http_requests"
BYTES_DOWNLOADED = "bytes_downloaded"
BYTES_UPLOADED = "bytes_uploaded"


def client_counters(client: Any) -> Dict[str, int]:
    """Integer counters from ``client.stats()``, or {} when the client has none."""
    stats = getattr(client, "stats", None)
    if stats is None:
        return {}
    try:
        values = stats()
    except Exception:  # stats are informative only; never fail a load for them
        return {}
    if not isinstance(values, Mapping):
        return {}
    return {k: int(v) for k, v in values.items() if isinstance(v, (int, float)) and not isinstance(v, bool)}


def counter_delta(before: Mapping[str, int], after: Mapping[str, int], key: str) -> Optional[int]:
    if key in before and key in after:
        return after[key] - before[key]
    return None
