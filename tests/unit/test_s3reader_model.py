"""Sequential and range-based readers behave like an in-memory file (clamped at the end).

Hypothesis drives random read / readinto / seek / tell sequences against both readers and a model
(io.BytesIO semantics, except that positions past the end become the end and a negative target is a
ValueError), over objects of several sizes (0 and 1 byte included) and chunk sizes.
"""

from __future__ import annotations

import io
from typing import Any, Callable, List, Optional, Tuple

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from s3torch.s3reader import RangedS3Reader, S3Reader, SequentialS3Reader

try:
    from .test_s3reader_support import FakeObject, pattern
except ImportError:
    from test_s3reader_support import FakeObject, pattern


class Model:
    """The expected behaviour: a bytes object with a position clamped to [0, size]."""

    def __init__(self, data: bytes) -> None:
        self.data = data
        self.pos = 0

    def read(self, n: Optional[int]) -> bytes:
        end = len(self.data) if n is None or n < 0 else self.pos + n
        out = self.data[self.pos : end]
        self.pos += len(out)
        return out

    def seek(self, offset: int, whence: int) -> int:
        base = {io.SEEK_SET: 0, io.SEEK_CUR: self.pos, io.SEEK_END: len(self.data)}.get(whence)
        if base is None:
            raise ValueError("bad whence")
        if base + offset < 0:
            raise ValueError("negative")
        self.pos = min(base + offset, len(self.data))
        return self.pos


Op = Tuple[Any, ...]

ops = st.lists(
    st.one_of(
        st.tuples(st.just("read"), st.one_of(st.none(), st.integers(-2, 300))),
        st.tuples(st.just("readinto"), st.integers(0, 300), st.sampled_from(["bytearray", "np", "mv"])),
        st.tuples(st.just("seek"), st.integers(-60, 400), st.sampled_from([0, 0, 1, 1, 2, 2, 3, -1])),
        st.tuples(st.just("tell")),
    ),
    max_size=25,
)

sizes = st.one_of(st.sampled_from([0, 1, 2, 17]), st.integers(0, 300))


def make_buffer(n: int, kind: str) -> Tuple[Any, Callable[[], bytes]]:
    if kind == "np":
        array = np.full(n, 0xAB, dtype=np.uint8)
        return array, array.tobytes
    raw = bytearray(b"\xab" * n)
    return (memoryview(raw) if kind == "mv" else raw), lambda: bytes(raw)


def run_against_model(reader: S3Reader, data: bytes, sequence: List[Op]) -> None:
    model = Model(data)
    for op in sequence:
        if op[0] == "read":
            assert reader.read(op[1]) == model.read(op[1]), op
        elif op[0] == "readinto":
            buf, contents = make_buffer(op[1], op[2])
            expected = model.read(op[1])
            n = reader.readinto(buf)
            assert n == len(expected), op
            assert contents()[:n] == expected, op
            assert contents()[n:] == b"\xab" * (op[1] - n), "wrote past what it returned"
        elif op[0] == "seek":
            try:
                expected_pos: Any = model.seek(op[1], op[2])
            except ValueError:
                expected_pos = ValueError
            if expected_pos is ValueError:
                before = reader.tell()
                with pytest.raises(ValueError):
                    reader.seek(op[1], op[2])
                assert reader.tell() == before, "a failed seek moved the position"
            else:
                assert reader.seek(op[1], op[2]) == expected_pos, op
        assert reader.tell() == model.pos, op
    # Whatever happened before, the rest of the object is still right.
    assert reader.read() == model.read(None)
    assert reader.read() == b"" and reader.read(5) == b"" and reader.readinto(bytearray(3)) == 0


COMMON = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@COMMON
@given(size=sizes, chunk=st.integers(1, 64), info_given=st.booleans(), sequence=ops)
def test_sequential_matches_model(size: int, chunk: int, info_given: bool, sequence: List[Op]) -> None:
    data = pattern(size, seed=size)
    obj = FakeObject(data, chunk_size=chunk)
    reader = SequentialS3Reader("bucket", "key", obj.get_object_info, obj.get_stream)
    run_against_model(reader, data, sequence)
    # One GET at most, whole object, never a second one.
    assert obj.gets in ([], [(None, None)])
    assert obj.info_calls <= 1
    assert reader.stats.get_requests == len(obj.gets)


@COMMON
@given(
    size=sizes,
    chunk=st.integers(1, 64),
    buffer_size=st.sampled_from([None, 0, 1, 3, 16, 50, 1000]),
    sequence=ops,
)
def test_range_based_matches_model(
    size: int, chunk: int, buffer_size: Optional[int], sequence: List[Op]
) -> None:
    data = pattern(size, seed=size + 1)
    obj = FakeObject(data, chunk_size=chunk)
    reader = RangedS3Reader("bucket", "key", obj.get_object_info, obj.get_stream, buffer_size=buffer_size)
    run_against_model(reader, data, sequence)
    assert obj.info_calls <= 1  # the size is looked up once and cached
    for start, end in obj.gets:  # only bounded, satisfiable ranges
        assert start is not None and end is not None and 0 <= start < end <= size
    assert reader.stats.get_requests == len(obj.gets)
    assert reader.stats.bytes_fetched == sum(e - s for s, e in obj.requested_ranges())
