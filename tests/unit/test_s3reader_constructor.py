"""S3ReaderConstructor factories, get_reader_type_string and the protocols."""

from __future__ import annotations

import pickle
from functools import partial
from typing import Any

import pytest

import s3torch.s3reader.constructor as constructor_module
from s3torch.s3reader import (
    DCPOptimizedConstructor,
    DCPOptimizedS3Reader,
    RangedS3Reader,
    S3ReaderConstructor,
    SequentialS3Reader,
)
from s3torch.s3reader.protocol import (
    DCPS3ReaderConstructorProtocol,
    GetStreamCallable,
    S3ReaderConstructorProtocol,
)

try:
    from .test_s3reader_support import FakeObject, pattern
except ImportError:
    from test_s3reader_support import FakeObject, pattern


def build(constructor: Any, obj: FakeObject, key: str = "k") -> Any:
    # Exactly how S3Client.get_object calls a constructor: keyword arguments.
    return constructor(bucket="b", key=key, get_object_info=obj.get_object_info, get_stream=obj.get_stream)


def test_sequential_and_default() -> None:
    obj = FakeObject(pattern(10))
    for factory in (S3ReaderConstructor.sequential, S3ReaderConstructor.default):
        reader = build(factory(), obj)
        assert type(reader) is SequentialS3Reader
        assert reader.read() == pattern(10)


@pytest.mark.parametrize("buffer_size, effective", [(None, 8 * 1024 * 1024), (0, 0), (1234, 1234)])
def test_range_based(buffer_size: Any, effective: int) -> None:
    reader = build(S3ReaderConstructor.range_based(buffer_size), FakeObject(pattern(10)))
    assert type(reader) is RangedS3Reader
    assert reader.buffer_size == effective


def test_range_based_validates_eagerly() -> None:
    with pytest.raises(ValueError, match="buffer_size"):
        S3ReaderConstructor.range_based(-5)
    with pytest.raises(TypeError, match="buffer_size"):
        S3ReaderConstructor.range_based("8MB")  # type: ignore[arg-type]


def test_dcp_optimized() -> None:
    constructor = S3ReaderConstructor.dcp_optimized()
    assert isinstance(constructor, DCPOptimizedConstructor)
    assert constructor.max_gap_size == 32 * 1024 * 1024
    assert S3ReaderConstructor.dcp_optimized(float("inf")).max_gap_size == float("inf")
    assert S3ReaderConstructor.dcp_optimized(0).max_gap_size == 0
    with pytest.raises(ValueError, match="max_gap_size"):
        S3ReaderConstructor.dcp_optimized(-1)


def test_get_reader_type_string() -> None:
    get = S3ReaderConstructor.get_reader_type_string
    assert get(S3ReaderConstructor.sequential()) == "sequential"
    assert get(S3ReaderConstructor.default()) == "sequential"
    assert get(None) == "sequential"
    assert get(S3ReaderConstructor.range_based()) == "range_based"
    assert get(S3ReaderConstructor.range_based(0)) == "range_based"
    assert get(S3ReaderConstructor.dcp_optimized()) == "dcp_optimized"
    assert get(partial(DCPOptimizedS3Reader)) == "unknown"
    assert get(lambda **kwargs: None) == "unknown"  # type: ignore[arg-type,return-value]
    assert get(partial(print)) == "unknown"  # type: ignore[arg-type]


def test_constructors_satisfy_protocols_and_pickle() -> None:
    for constructor in (
        S3ReaderConstructor.sequential(),
        S3ReaderConstructor.range_based(4096),
        S3ReaderConstructor.dcp_optimized(7),
    ):
        assert isinstance(constructor, S3ReaderConstructorProtocol)
        clone = pickle.loads(pickle.dumps(constructor))  # DataLoader workers get a copy
        assert S3ReaderConstructor.get_reader_type_string(
            clone
        ) == S3ReaderConstructor.get_reader_type_string(constructor)
    dcp = S3ReaderConstructor.dcp_optimized()
    assert isinstance(dcp, DCPS3ReaderConstructorProtocol)
    assert not isinstance(S3ReaderConstructor.sequential(), DCPS3ReaderConstructorProtocol)
    assert pickle.loads(pickle.dumps(S3ReaderConstructor.range_based(4096))).keywords == {"buffer_size": 4096}


def test_module_surface() -> None:
    import s3torch.s3reader as package

    assert constructor_module.log.name == "s3torch.s3reader.constructor"
    assert constructor_module.DCPOptimizedConstructor is DCPOptimizedConstructor
    for name in (
        "S3Reader",
        "SequentialS3Reader",
        "RangedS3Reader",
        "DCPOptimizedS3Reader",
        "ItemRange",
        "S3ReaderConstructor",
    ):
        assert hasattr(package, name)
    assert GetStreamCallable is not None
