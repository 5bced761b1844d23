"""Fixtures of the DCP tests (helpers live in dcp_helpers.py)."""

from __future__ import annotations

from typing import Any

import pytest
from dcp_helpers import Target


def pytest_configure(config: pytest.Config) -> None:
    # Single-process DCP calls warn that torch.distributed is not initialized: intended here.
    config.addinivalue_line("filterwarnings", "ignore:torch.distributed is disabled:UserWarning")
    config.addinivalue_line("filterwarnings", "ignore:Detected an existing checkpoint:UserWarning")


@pytest.fixture
def target(server: Any, bucket: str) -> Target:
    return Target(server, bucket, "ckpt/step-1")


@pytest.fixture
def seaweed_target(seaweed_server: Any, seaweed_bucket: str) -> Target:
    return Target(seaweed_server, seaweed_bucket, "ckpt/step-1")


@pytest.fixture
def moto_target(moto_server: Any, moto_bucket: str) -> Target:
    return Target(moto_server, moto_bucket, "ckpt/step-1")
