"""Helpers for the DCP tests: checkpoint targets, a mixed state_dict, blank destinations."""

from __future__ import annotations

import datetime
from dataclasses import dataclass
from typing import Any, Dict

import torch

from s3torch.demo import leaves

MiB = 1024 * 1024


@dataclass
class Target:
    """Where a test checkpoint lives and how to reach it."""

    server: Any
    bucket: str
    prefix: str

    @property
    def uri(self) -> str:
        return f"s3://{self.bucket}/{self.prefix}"

    def config(self, **kwargs: Any) -> Any:
        from s3torch import S3ClientConfig

        kwargs.setdefault("force_path_style", True)
        return S3ClientConfig(**kwargs)

    def writer(self, endpoint: str | None = None, config: Any = None, **kwargs: Any) -> Any:
        from s3torch.dcp import S3StorageWriter

        return S3StorageWriter(
            self.server.region,
            self.uri,
            s3client_config=config or self.config(),
            endpoint=endpoint or self.server.endpoint,
            **kwargs,
        )

    def reader(self, reader_constructor: Any = None, endpoint: str | None = None, **kw: Any) -> Any:
        from s3torch.dcp import S3StorageReader

        return S3StorageReader(
            self.server.region,
            self.uri,
            s3client_config=kw.pop("config", None) or self.config(),
            reader_constructor=reader_constructor,
            endpoint=endpoint or self.server.endpoint,
            **kw,
        )

    def keys(self) -> list[str]:
        client = self.server.boto3_client()
        out = client.list_objects_v2(Bucket=self.bucket, Prefix=self.prefix + "/")
        return sorted(o["Key"] for o in out.get("Contents", []))

    def has_metadata(self) -> bool:
        return f"{self.prefix}/.metadata" in self.keys()


def mixed_state(big: int = 0) -> Dict[str, Any]:
    """fp32, bf16, int64, a 0-dim and an empty tensor, nested dicts, Python objects (as bytes);
    ``big`` adds an fp32 tensor of that many elements (to span several part buffers)."""
    g = torch.Generator().manual_seed(1234)
    state: Dict[str, Any] = {
        "fp32": torch.randn(64, 33, generator=g),
        "bf16": torch.randn(128, 7, generator=g).to(torch.bfloat16),
        "int64": torch.arange(-1000, 1000, dtype=torch.int64),
        "scalar": torch.tensor(2.75),
        "empty": torch.empty(0, 4),
        "bool": torch.rand(17, generator=g) > 0.5,
        "nested": {
            "layer": {"w": torch.randn(3, 5, generator=g), "b": torch.ones(5, dtype=torch.float16)},
            "step": torch.tensor(7, dtype=torch.int64),
        },
        "py": {
            "date": datetime.date(2024, 1, 2),
            "tags": ["alpha", "beta"],
            "lr": 0.125,
            "note": "hello",
        },
    }
    if big:
        state["big"] = torch.randn(big, generator=g)
    return state


def blank_like(obj: Any) -> Any:
    """Same structure; tensors zeroed (same dtype/shape), other leaves replaced by placeholders."""
    if isinstance(obj, dict):
        return {k: blank_like(v) for k, v in obj.items()}
    if isinstance(obj, torch.Tensor):
        return torch.zeros_like(obj)
    return None


def assert_same(expected: Any, got: Any) -> None:
    want = dict(leaves(expected))
    have = dict(leaves(got))
    assert want.keys() == have.keys()
    for name, ref in want.items():
        value = have[name]
        if isinstance(ref, torch.Tensor):
            assert isinstance(value, torch.Tensor), name
            assert value.dtype == ref.dtype and value.shape == ref.shape, name
            assert torch.equal(value, ref), name
        else:
            assert value == ref, name
