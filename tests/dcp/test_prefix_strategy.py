"""Prefix strategies name rank objects as s3torchconnector 1.5.0's do (pure)."""

from __future__ import annotations

import pytest

from s3torch.dcp import (
    BinaryPrefixStrategy,
    DefaultPrefixStrategy,
    HexPrefixStrategy,
    RoundRobinPrefixStrategy,
    S3PrefixStrategyBase,
)


def test_default() -> None:
    s = DefaultPrefixStrategy()
    assert [s(r) for r in range(3)] == ["__0_", "__1_", "__2_"]
    assert s.generate_prefix(7) == "__7_"


def test_binary_reversed_digits_and_wraparound() -> None:
    s = BinaryPrefixStrategy(prefix_count=4, min_prefix_length=3)
    assert s.prefix_map == ["000", "100", "010", "110"]
    assert s(0) == "000/__0_"
    assert s(1) == "100/__1_"
    assert s(5) == "100/__5_"  # rank 5 shares rank 1's prefix (5 % 4)


def test_binary_grows_past_min_length() -> None:
    s = BinaryPrefixStrategy(prefix_count=9, min_prefix_length=1)
    assert all(len(p) == 4 for p in s.prefix_map)  # 9 values need 4 bits
    assert len(set(s.prefix_map)) == 9


def test_hex_with_epoch() -> None:
    s = HexPrefixStrategy(epoch_num=5, prefix_count=20, min_prefix_length=2)
    assert s(0) == "00/epoch_5/__0_"
    assert s(17) == "11/epoch_5/__17_"
    assert s(10) == "a0/epoch_5/__10_"


def test_numeric_default_count_is_one_without_process_group() -> None:
    s = HexPrefixStrategy()
    assert s.prefix_map == ["0" * 10]
    assert s(3) == "0000000000/__3_"


@pytest.mark.parametrize(
    "kwargs",
    [{"min_prefix_length": 0}, {"epoch_num": "1"}, {"prefix_count": 0}, {"prefix_count": 1.5}],
)
def test_numeric_validation(kwargs: dict) -> None:
    with pytest.raises(ValueError):
        BinaryPrefixStrategy(**kwargs)


def test_round_robin() -> None:
    s = RoundRobinPrefixStrategy(["a", "b/c"], epoch_num=2)
    assert [s(r) for r in range(3)] == ["a/epoch_2/__0_", "b/c/epoch_2/__1_", "a/epoch_2/__2_"]
    assert RoundRobinPrefixStrategy(["x"])(4) == "x/__4_"
    with pytest.raises(ValueError):
        RoundRobinPrefixStrategy([])


def test_custom_strategy() -> None:
    class Mine(S3PrefixStrategyBase):
        def generate_prefix(self, rank: int) -> str:
            return f"r{rank}-"

    assert Mine()(3) == "r3-"
    with pytest.raises(TypeError):
        S3PrefixStrategyBase()  # type: ignore[abstract]
