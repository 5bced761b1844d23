"""What a concurrent DCP load fetches: the item ranges it needs, the ranged GETs (tasks) that serve
them, and the holes of large tensor items that those GETs scatter straight into destinations."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, List, Optional, Tuple

import torch
from torch.distributed.checkpoint.planner import ReadItem


@dataclass
class _Range:
    start: int
    end: int
    reqs: List[ReadItem]


@dataclass
class _Task:
    """One ranged GET and the item ranges it serves, in object order."""

    bucket: str
    key: str
    start: int
    end: int
    ranges: List[_Range] = field(default_factory=list)
    pin: Any = None  # the file's EtagPin: every GET of one file in a load reads one version


@dataclass
class _Hole:
    """The middle [start, end) of a large tensor item, scattered into ``dest`` as it arrives.

    ``dest[i]`` receives object byte ``base + i``. In place, ``dest`` is the target tensor's bytes
    and ``base`` the item's start plus the guessed data offset; otherwise (``staged``) ``dest`` is a
    copy of the whole item and ``base`` its start.
    """

    rng: _Range
    start: int
    end: int
    target: torch.Tensor
    dest: memoryview
    base: int
    staged: Optional[bytearray] = None

    def scatter(self, lo: int, hi: int) -> Optional[Tuple[int, memoryview]]:
        """The part of the hole inside object range [lo, hi), as a scatter pair (or None)."""
        a, b = max(lo, self.start), min(hi, self.end)
        if a >= b:
            return None
        return a, self.dest[a - self.base : b - self.base]
