"""coalesce_ranges: the pure function behind the DCP-optimized reader's GETs."""

from __future__ import annotations

import math
from typing import List

import pytest
from hypothesis import given
from hypothesis import strategies as st

from s3torch.s3reader.dcp_optimized import (
    DEFAULT_MAX_GAP_SIZE,
    ItemRange,
    RangeGroup,
    coalesce_ranges,
)

R = ItemRange


def test_empty_input_gives_no_groups() -> None:
    assert coalesce_ranges([], 0) == []
    assert coalesce_ranges([R(5, 5), R(9, 9)], math.inf) == []


def test_adjacent_ranges_merge_with_zero_gap() -> None:
    groups = coalesce_ranges([R(0, 10), R(10, 20), R(21, 30)], 0)
    assert groups == [
        RangeGroup(0, 20, (R(0, 10), R(10, 20))),
        RangeGroup(21, 30, (R(21, 30),)),
    ]


def test_gap_equal_to_max_merges_and_larger_splits() -> None:
    assert len(coalesce_ranges([R(0, 10), R(15, 20)], 5)) == 1
    assert len(coalesce_ranges([R(0, 10), R(16, 20)], 5)) == 2


def test_infinite_gap_gives_one_group() -> None:
    ranges = [R(0, 1), R(10**9, 10**9 + 1), R(10**12, 10**12 + 5)]
    assert coalesce_ranges(ranges, float("inf")) == [RangeGroup(0, 10**12 + 5, tuple(ranges))]


def test_default_gap_is_32_mib() -> None:
    assert DEFAULT_MAX_GAP_SIZE == 32 * 1024 * 1024
    mib = 1024 * 1024
    assert len(coalesce_ranges([R(0, 1), R(1 + 32 * mib, 2 + 32 * mib)], DEFAULT_MAX_GAP_SIZE)) == 1
    assert len(coalesce_ranges([R(0, 1), R(2 + 32 * mib, 3 + 32 * mib)], DEFAULT_MAX_GAP_SIZE)) == 2


def test_zero_length_ranges_are_dropped_even_inside_others() -> None:
    groups = coalesce_ranges([R(0, 0), R(0, 4), R(4, 4), R(2, 2), R(8, 9)], 0)
    # R(2, 2) lies inside R(0, 4) but holds no bytes: dropped, not "overlapping".
    assert groups == [RangeGroup(0, 4, (R(0, 4),)), RangeGroup(8, 9, (R(8, 9),))]


def test_unsorted_is_value_error() -> None:
    with pytest.raises(ValueError, match=r"Unsorted ranges: 10-20 .* 0-5"):
        coalesce_ranges([R(10, 20), R(0, 5)], 0)


def test_overlapping_is_value_error() -> None:
    with pytest.raises(ValueError, match=r"Overlapping ranges: 0-10 and 5-15"):
        coalesce_ranges([R(0, 10), R(5, 15)], 0)
    with pytest.raises(ValueError, match="Overlapping"):
        coalesce_ranges([R(0, 10), R(0, 10)], 0)


@pytest.mark.parametrize("bad", [R(-1, 5), R(5, 4)])
def test_invalid_range_is_value_error(bad: ItemRange) -> None:
    with pytest.raises(ValueError, match="Invalid range"):
        coalesce_ranges([R(0, 1), bad] if bad.start >= 1 else [bad], 0)


@pytest.mark.parametrize("gap", [-1, -0.5, float("nan"), float("-inf")])
def test_bad_max_gap_size_is_value_error(gap: float) -> None:
    with pytest.raises(ValueError, match="max_gap_size"):
        coalesce_ranges([R(0, 1)], gap)


@pytest.mark.parametrize("gap", ["1", None, True])
def test_non_numeric_max_gap_size_is_type_error(gap: object) -> None:
    with pytest.raises(TypeError, match="max_gap_size"):
        coalesce_ranges([R(0, 1)], gap)  # type: ignore[arg-type]


def test_value_types_are_frozen_and_hashable() -> None:
    group = coalesce_ranges([R(0, 1)], 0)[0]
    with pytest.raises(AttributeError):
        group.start = 3  # type: ignore[misc]
    with pytest.raises(AttributeError):
        R(0, 1).end = 2  # type: ignore[misc]
    assert {R(0, 1), R(0, 1)} == {R(0, 1)}
    assert hash(group) == hash(RangeGroup(0, 1, (R(0, 1),)))
    assert R(3, 10).length == 7


@st.composite
def sorted_ranges(draw: st.DrawFn) -> List[ItemRange]:
    out = []
    pos = draw(st.integers(0, 50))
    for _ in range(draw(st.integers(0, 20))):
        pos += draw(st.integers(0, 40))  # gap (0: adjacent)
        length = draw(st.integers(0, 30))  # 0: zero-length item
        out.append(R(pos, pos + length))
        pos += length
    return out


@given(sorted_ranges(), st.one_of(st.integers(0, 60), st.just(float("inf"))))
def test_groups_partition_the_nonempty_ranges(ranges: List[ItemRange], gap: float) -> None:
    groups = coalesce_ranges(ranges, gap)
    nonempty = [r for r in ranges if r.end > r.start]
    # Every non-empty range appears once, in order, in exactly one group.
    assert [r for g in groups for r in g.item_ranges] == nonempty
    for g in groups:
        assert g.start == g.item_ranges[0].start and g.end == g.item_ranges[-1].end
        for a, b in zip(g.item_ranges, g.item_ranges[1:]):
            assert 0 <= b.start - a.end <= gap  # merged only when the gap allows
    for a, b in zip(groups, groups[1:]):
        assert b.start - a.end > gap  # split only when it does not
    if gap == float("inf") and nonempty:
        assert len(groups) == 1


@given(sorted_ranges(), st.data())
def test_any_disorder_or_overlap_is_rejected(ranges: List[ItemRange], data: st.DataObject) -> None:
    nonempty = [r for r in ranges if r.end > r.start]
    if len(nonempty) < 2:
        return
    i = data.draw(st.integers(0, len(nonempty) - 2))
    swapped = nonempty[:i] + [nonempty[i + 1], nonempty[i]] + nonempty[i + 2 :]
    with pytest.raises(ValueError, match="Unsorted|Overlapping"):
        coalesce_ranges(swapped, float("inf"))
    a = nonempty[i]
    overlapping = nonempty[: i + 1] + [R(a.end - 1, a.end + 1)]
    with pytest.raises(ValueError, match="Overlapping"):
        coalesce_ranges(overlapping, 0)


# The C++ library's coalesce (cpp/include/s3torch/coalesce.hpp, what bench/cpp measures) groups
# exactly as coalesce_ranges does, and refuses the same inputs at the same range.
@given(
    st.lists(st.tuples(st.integers(0, 50), st.integers(0, 30)), max_size=40),
    st.sampled_from([0, 1, 7, 40, math.inf]),
    st.booleans(),
)
def test_native_coalesce_agrees_with_python(steps: List[tuple], gap: float, shuffle: bool) -> None:
    from s3torch import _core

    ranges, pos = [], 0
    for skip, length in steps:
        pos += skip
        ranges.append(R(pos, pos + length))
        pos += length
    if shuffle and len(ranges) > 2:
        ranges[0], ranges[-1] = ranges[-1], ranges[0]
    starts, ends = [r.start for r in ranges], [r.end for r in ranges]
    spans, issue, at, previous = _core._coalesce(starts, ends, float(gap))
    try:
        expected = coalesce_ranges(ranges, gap)
    except ValueError as e:
        assert issue != 0 and spans == []
        bad = ranges[at]
        assert f"{bad.start}-{bad.end}" in str(e)
        return
    assert issue == 0
    got = [RangeGroup(s, e, tuple(r for r in ranges[a:b] if r.start != r.end)) for s, e, a, b in spans]
    assert got == expected


def test_native_coalesce_refuses_mismatched_lengths() -> None:
    from s3torch import _core

    with pytest.raises(ValueError, match="differ in length"):
        _core._coalesce([0, 1], [1], 0.0)
