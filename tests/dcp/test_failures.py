"""Failed saves leave no loadable checkpoint; transient server faults do not change loaded values.

Faults are injected by s3torch.testing's S3Proxy between our client and SeaweedFS.
"""

from __future__ import annotations

from typing import Any

import pytest
import torch
import torch.distributed.checkpoint as dcp
from dcp_helpers import MiB, Target, assert_same, blank_like, mixed_state
from torch.distributed.checkpoint import DefaultSavePlanner
from torch.distributed.checkpoint.api import CheckpointException

from s3torch.testing import Fault, reset, respond

# CheckpointException derives from BaseException, so list it explicitly.
SAVE_ERRORS = (Exception, CheckpointException)


def _data_keys(target: Target) -> list[str]:
    return [k for k in target.keys() if k.endswith(".distcp")]


def test_server_errors_halfway_through_upload(seaweed_target: Target, proxy_factory: Any) -> None:
    state = mixed_state(big=5 * MiB)  # 20 MiB: a multipart upload of three 8 MiB parts
    # An earlier, good checkpoint at the same path.
    dcp.save(state, storage_writer=seaweed_target.writer())
    assert seaweed_target.has_metadata()

    proxy = proxy_factory(seaweed_target.server)
    # The first data PUT (part 1) goes through; every later one gets 500 InternalError.
    fault = proxy.add_fault(Fault(respond(500), method="PUT", path=".distcp", nth=2, times=None))
    config = seaweed_target.config(max_attempts=2)
    with pytest.raises(SAVE_ERRORS):
        dcp.save(state, storage_writer=seaweed_target.writer(proxy.endpoint, config))
    assert fault.fired >= 1
    assert not seaweed_target.has_metadata(), "a failed save must not leave .metadata behind"

    # The checkpoint is not loadable (rather than silently mixing old and new objects) ...
    with pytest.raises(SAVE_ERRORS):
        dcp.load(blank_like(state), storage_reader=seaweed_target.reader())
    # ... and a later save to the same path works again.
    dcp.save(state, storage_writer=seaweed_target.writer())
    dest = blank_like(state)
    dcp.load(dest, storage_reader=seaweed_target.reader())
    assert_same(state, dest)


# The failing thread's exception escapes torch's writer thread (that is the case under test).
@pytest.mark.filterwarnings("ignore::pytest.PytestUnhandledThreadExceptionWarning")
def test_one_writer_thread_failing_fails_the_save(seaweed_target: Target, proxy_factory: Any) -> None:
    """torch's writer threads only log their exceptions; S3StorageWriter must still fail."""
    state = mixed_state(big=MiB)
    state["other"] = torch.randn(MiB)
    proxy = proxy_factory(seaweed_target.server)
    proxy.add_fault(Fault(respond(500), method="PUT", path="__0_1.distcp", times=None))
    config = seaweed_target.config(max_attempts=1)
    writer = seaweed_target.writer(proxy.endpoint, config, thread_count=2)
    with pytest.raises(SAVE_ERRORS):
        dcp.save(state, storage_writer=writer)
    assert not seaweed_target.has_metadata()
    keys = _data_keys(seaweed_target)
    assert not any(k.endswith("__0_1.distcp") for k in keys), "no partial object is visible"


class FailingPlanner(DefaultSavePlanner):
    """Raises on the third tensor DCP asks for: an application error in the middle of a save."""

    def __init__(self) -> None:
        super().__init__()
        self.calls = 0

    def resolve_data(self, write_item: Any) -> Any:
        self.calls += 1
        if self.calls == 3:
            raise RuntimeError("injected failure while saving")
        return super().resolve_data(write_item)


def test_exception_during_save_leaves_no_metadata(target: Target) -> None:
    state = mixed_state()
    dcp.save(state, storage_writer=target.writer())
    with pytest.raises(SAVE_ERRORS):
        dcp.save(state, storage_writer=target.writer(), planner=FailingPlanner())
    # Old data objects may remain, but without .metadata nothing is loadable.
    assert not target.has_metadata()
    with pytest.raises(SAVE_ERRORS):
        dcp.load(blank_like(state), storage_reader=target.reader())


@pytest.mark.parametrize(
    "action",
    [respond(503), respond(500), reset(after_bytes=100_000), reset()],
    ids=["503", "500", "reset-mid-body", "reset-before-response"],
)
def test_load_survives_transient_faults(seaweed_target: Target, proxy_factory: Any, action: Any) -> None:
    state = mixed_state(big=3 * MiB)
    dcp.save(state, storage_writer=seaweed_target.writer())
    proxy = proxy_factory(seaweed_target.server)
    # A GET of more than 1 MiB: part of the big tensor, received straight into its destination
    # (the small GETs around it are over before 100 kB, where a mid-body reset would cut).
    fault = proxy.add_fault(Fault(action, method="GET", path=".distcp", times=1, when=_long_range))
    reader = seaweed_target.reader(endpoint=proxy.endpoint)
    reader.split_bytes = 2 * MiB  # several concurrent GETs, one of which fails once
    dest = blank_like(state)
    dcp.load(dest, storage_reader=reader)
    assert fault.fired == 1
    assert_same(state, dest)
    stats = reader.last_load_stats
    assert stats.retries >= 1
    assert stats.direct_bytes > 8 * MiB  # the big tensor's middle, retried part included


def _long_range(request: Any) -> bool:
    rng = request.range
    return rng is not None and rng[1] is not None and rng[1] - rng[0] >= MiB


def test_load_fails_cleanly_when_the_server_keeps_failing(seaweed_target: Target, proxy_factory: Any) -> None:
    state = mixed_state(big=3 * MiB)
    dcp.save(state, storage_writer=seaweed_target.writer())
    proxy = proxy_factory(seaweed_target.server)
    proxy.add_fault(Fault(respond(500), method="GET", path=".distcp", times=None))
    reader = seaweed_target.reader(endpoint=proxy.endpoint, config=seaweed_target.config(max_attempts=2))
    reader.split_bytes = MiB
    with pytest.raises(SAVE_ERRORS):
        dcp.load(blank_like(state), storage_reader=reader)
