"""How S3StorageWriter names each rank's objects.

S3 scales request rates per key prefix, so large jobs spread ranks over several prefixes. A strategy
maps a rank to the prefix of its data objects' keys (inside the checkpoint path); the file name that
DCP appends is ``{prefix}{n}.distcp``.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import List, Optional, Sequence

import torch.distributed as dist

__all__ = [
    "S3PrefixStrategyBase",
    "DefaultPrefixStrategy",
    "NumericPrefixStrategy",
    "BinaryPrefixStrategy",
    "HexPrefixStrategy",
    "RoundRobinPrefixStrategy",
]


class S3PrefixStrategyBase(ABC):
    """Maps a rank to the key prefix of its checkpoint objects."""

    def __init__(self) -> None:
        super().__init__()

    def __call__(self, rank: int) -> str:
        return self.generate_prefix(rank)

    @abstractmethod
    def generate_prefix(self, rank: int) -> str:
        """Returns the prefix for ``rank``'s objects."""


class DefaultPrefixStrategy(S3PrefixStrategyBase):
    """``__{rank}_``: torch's own file naming, every rank under the checkpoint path."""

    def generate_prefix(self, rank: int) -> str:
        return f"__{rank}_"


def _epoch_part(epoch_num: Optional[int]) -> str:
    return "" if epoch_num is None else f"epoch_{epoch_num}/"


class NumericPrefixStrategy(S3PrefixStrategyBase):
    """``{digits}/[epoch_{n}/]__{rank}_``: the digits spread ranks over ``prefix_count`` prefixes.

    The digits are rank-mod-count written in ``base`` with at least ``min_prefix_length`` digits,
    then reversed, so that consecutive ranks differ in their first character (S3 partitions on the
    leading characters of keys).
    """

    def __init__(
        self,
        base: int,
        epoch_num: Optional[int] = None,
        min_prefix_length: int = 10,
        prefix_count: Optional[int] = None,
    ) -> None:
        if min_prefix_length < 1:
            raise ValueError(f"Minimum prefix length must be positive, got {min_prefix_length}")
        if epoch_num is not None and (not isinstance(epoch_num, int) or isinstance(epoch_num, bool)):
            raise ValueError(f"Epoch number must be None or an integer, got {epoch_num}")
        if prefix_count is not None and (
            not isinstance(prefix_count, int) or isinstance(prefix_count, bool) or prefix_count < 1
        ):
            raise ValueError(f"Prefix count must be a positive integer, got {prefix_count}")
        super().__init__()
        self.base = base
        self.epoch_num = epoch_num
        self.min_prefix_len = min_prefix_length
        if prefix_count is not None:
            self.prefix_count = prefix_count
        elif dist.is_available() and dist.is_initialized():
            self.prefix_count = dist.get_world_size()
        else:
            self.prefix_count = 1
        self.prefix_map: List[str] = self._generate_prefix_map()

    def generate_prefix(self, rank: int) -> str:
        digits = self.prefix_map[rank % len(self.prefix_map)]
        return f"{digits}/{_epoch_part(self.epoch_num)}__{rank}_"

    def _generate_prefix_map(self) -> List[str]:
        length = max(self._calculate_prefix_length(), self.min_prefix_len)
        return [self._format_number(i, length)[::-1] for i in range(self.prefix_count)]

    def _calculate_prefix_length(self) -> int:
        """Fewest digits that give ``prefix_count`` distinct values."""
        length, size = 1, self.base
        while size < self.prefix_count:
            length += 1
            size *= self.base
        return length

    @abstractmethod
    def _format_number(self, number: int, length: int) -> str:
        """``number`` in this strategy's base, zero-padded to ``length`` digits."""


class BinaryPrefixStrategy(NumericPrefixStrategy):
    """Numeric prefixes in base 2 (digits 0 and 1)."""

    def __init__(
        self,
        epoch_num: Optional[int] = None,
        min_prefix_length: int = 10,
        prefix_count: Optional[int] = None,
    ) -> None:
        super().__init__(2, epoch_num, min_prefix_length, prefix_count)

    def _format_number(self, number: int, length: int) -> str:
        return format(number, f"0{length}b")


class HexPrefixStrategy(NumericPrefixStrategy):
    """Numeric prefixes in base 16."""

    def __init__(
        self,
        epoch_num: Optional[int] = None,
        min_prefix_length: int = 10,
        prefix_count: Optional[int] = None,
    ) -> None:
        super().__init__(16, epoch_num, min_prefix_length, prefix_count)

    def _format_number(self, number: int, length: int) -> str:
        return format(number, f"0{length}x")


class RoundRobinPrefixStrategy(S3PrefixStrategyBase):
    """``{user_prefixes[rank % n]}/[epoch_{n}/]__{rank}_``: ranks dealt over the given prefixes."""

    def __init__(self, user_prefixes: Sequence[str], epoch_num: Optional[int] = None) -> None:
        super().__init__()
        if not user_prefixes:
            raise ValueError("user_prefixes must not be empty")
        self.user_prefixes = list(user_prefixes)
        self.epoch_num = epoch_num

    def generate_prefix(self, rank: int) -> str:
        prefix = self.user_prefixes[rank % len(self.user_prefixes)]
        return f"{prefix}/{_epoch_part(self.epoch_num)}__{rank}_"
