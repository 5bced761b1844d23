"""DCP loads into device tensors, on a fake device (no GPU here): the loader copies each part buffer's
bytes asynchronously, releases a buffer only after its copy completed, synchronizes once at the end,
and commits device tensors to the planner only after that."""

from __future__ import annotations

from typing import Any, List

import pytest
import torch
import torch.distributed.checkpoint as dcp
from dcp_helpers import MiB, Target, assert_same, blank_like, mixed_state
from torch.distributed.checkpoint import DefaultLoadPlanner
from torch.distributed.checkpoint.api import CheckpointException

from s3torch.demo import leaves
from s3torch.testing import proxy as faults
from s3torch.testing.fake_device import FakeDevice


class CommitOrder(DefaultLoadPlanner):
    """Records, for each committed tensor, whether the device had synchronized by then."""

    def __init__(self, device: FakeDevice) -> None:
        super().__init__()
        self.device = device
        self.commits: List[tuple] = []

    def commit_tensor(self, read_item: Any, tensor: torch.Tensor) -> None:
        self.commits.append(
            (read_item.dest_index.fqn, self.device.handles(tensor), self.device.synchronizations)
        )
        super().commit_tensor(read_item, tensor)


def device_tensors(state: Any, device: FakeDevice, skip: tuple = ()) -> int:
    """Claims the state's tensors for the device; returns their bytes."""
    claimed = [t for name, t in leaves(state) if isinstance(t, torch.Tensor) and name not in skip]
    device.claim(claimed)
    return sum(t.numel() * t.element_size() for t in claimed)


def test_load_into_device_tensors(seaweed_target: Target) -> None:
    state = mixed_state(big=9 * MiB)  # 36 MiB across 5 parts
    dcp.save(state, storage_writer=seaweed_target.writer())
    dest = blank_like(state)
    # A dtype cast keeps torch's path: the destination takes float64 values of the saved float32.
    dest["nested"]["layer"]["w"] = torch.zeros(3, 5, dtype=torch.float64)
    device = FakeDevice(delay_s=0.005)
    try:
        expected_bytes = device_tensors(dest, device, skip=("nested.layer.w",))
        device.claim([dest["nested"]["layer"]["w"]])
        # 4 part buffers: a buffer released before its late copy ran would be reused at once.
        reader = seaweed_target.reader(config=seaweed_target.config(memory_limit_bytes=32 * MiB))
        reader._device_copier = device.factory
        planner = CommitOrder(device)
        dcp.load(dest, storage_reader=reader, planner=planner)
        expected = dict(state)
        expected["nested"] = {**state["nested"], "layer": dict(state["nested"]["layer"])}
        expected["nested"]["layer"]["w"] = state["nested"]["layer"]["w"].double()
        assert_same(expected, dest)
        assert device.violations == []
        assert device.synchronizations == 1
        assert device.completed == device.queued >= 5
        stats = reader.last_load_stats
        assert stats.device_bytes == expected_bytes  # every claimed byte went by the asynchronous copies
        assert stats.bytes_needed <= stats.bytes_fetched <= stats.bytes_needed * 1.01
        device_commits = [c for c in planner.commits if c[1]]
        assert {c[0] for c in device_commits} >= {"big", "fp32", "bf16", "scalar"}
        # Raw copies are committed after the one synchronization; the cast went torch's synchronous way.
        assert all(synced == 1 for fqn, _, synced in device_commits if fqn != "nested.layer.w")
        assert ("nested.layer.w", True, 0) in device_commits
    finally:
        device.close()


def test_a_failed_device_load_waits_for_its_copies_and_raises(
    seaweed_target: Target, proxy_factory: Any
) -> None:
    state = {"a": torch.randn(6 * MiB), "b": torch.randn(6 * MiB)}
    dcp.save(state, storage_writer=seaweed_target.writer())
    proxy = proxy_factory(seaweed_target.server)
    # From the second part request of the data file on, every response is cut after 5 MiB.
    proxy.add_fault(
        faults.Fault(
            action=faults.reset(after_bytes=5 * MiB), method="GET", path=".distcp", nth=2, times=None
        )
    )
    dest = blank_like(state)
    device = FakeDevice(delay_s=0.005)
    try:
        device_tensors(dest, device)
        reader = seaweed_target.reader(
            endpoint=proxy.endpoint, config=seaweed_target.config(max_attempts=1), max_streams=1
        )
        reader._device_copier = device.factory
        with pytest.raises((Exception, CheckpointException)) as info:
            dcp.load(dest, storage_reader=reader)
        assert "s3://" in str(info.value)
        assert device.queued >= 1  # the first part went to the device before the cut one failed
        assert device.synchronizations == 1  # every queued copy had finished when load returned
        assert device.completed == device.queued
        assert device.violations == []
    finally:
        device.close()


def test_a_device_error_fails_the_load_and_commits_nothing(seaweed_target: Target) -> None:
    state = {"a": torch.randn(6 * MiB), "b": torch.randn(6 * MiB)}
    dcp.save(state, storage_writer=seaweed_target.writer())
    dest = blank_like(state)
    device = FakeDevice(delay_s=0.002, fail_at=1)
    try:
        device_tensors(dest, device)
        reader = seaweed_target.reader(config=seaweed_target.config(memory_limit_bytes=32 * MiB))
        reader._device_copier = device.factory
        planner = CommitOrder(device)
        with pytest.raises((Exception, CheckpointException), match="fake device: copy 1 failed"):
            dcp.load(dest, storage_reader=reader, planner=planner)
        assert planner.commits == []
        assert device.completed + 1 == device.queued  # every copy but the failed one ran; none hangs
    finally:
        device.close()
