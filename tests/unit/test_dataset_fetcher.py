"""The datasets' concurrent fetching (pure logic, no server): order kept, bytes in flight bounded by
the listed sizes, failures name their object, and a forked child gets a working pool."""

from __future__ import annotations

import os
import threading
import time
from types import SimpleNamespace

import pytest

from s3torch._dataset_common import Fetcher, S3BucketKeyData


def _items(sizes):
    return [S3BucketKeyData("b", f"k{i}", SimpleNamespace(size=s)) for i, s in enumerate(sizes)]


class Probe:
    """fn for the fetcher: records the most items and listed bytes running at once."""

    def __init__(self, fail_key: str = "") -> None:
        self.lock = threading.Lock()
        self.running = self.bytes = self.most = self.most_bytes = 0
        self.fail_key = fail_key

    def __call__(self, item):
        with self.lock:
            self.running += 1
            self.bytes += item.object_info.size
            self.most = max(self.most, self.running)
            self.most_bytes = max(self.most_bytes, self.bytes)
        time.sleep(0.01)
        with self.lock:
            self.running -= 1
            self.bytes -= item.object_info.size
        if item.key == self.fail_key:
            raise KeyError("broken sample")
        return item.key


def test_order_is_kept_and_small_objects_run_together():
    probe = Probe()
    items = _items([100] * 40)
    assert list(Fetcher(8).ordered(probe, items, 8, 1 << 20)) == [i.key for i in items]
    assert probe.most >= 4


@pytest.mark.parametrize("size", [6, 10, 16, 40])
def test_listed_bytes_in_flight_stay_within_the_budget(size):
    probe = Probe()
    items = _items([size] * 12)
    budget = 16
    assert Fetcher(8).map_all(probe, items, budget) == [i.key for i in items]
    assert probe.most_bytes <= max(budget, size), "never more than the budget, or one object over it"
    if size <= budget // 2:
        assert probe.most >= 2


def test_the_first_failure_in_order_raises_naming_its_object():
    probe = Probe(fail_key="k5")
    with pytest.raises(KeyError) as err:
        list(Fetcher(4).ordered(probe, _items([1] * 10), 4, 1 << 20))
    assert "s3://b/k5" in " ".join(getattr(err.value, "__notes__", [])) or "s3://b/k5" in str(err.value)


def test_one_thread_runs_inline():
    seen = []

    def fn(item):
        seen.append(threading.current_thread() is threading.main_thread())
        return item.key

    assert Fetcher(1).map_all(fn, _items([1, 2, 3]), 1) == ["k0", "k1", "k2"]
    assert all(seen)


def test_a_forked_child_makes_its_own_pool():
    fetcher = Fetcher(4)
    assert fetcher.map_all(Probe(), _items([1] * 8), 100) == [f"k{i}" for i in range(8)]  # pool made here
    pid = os.fork()
    if pid == 0:  # the child: the parent's pool has no threads here; a new one must be made
        ok = False
        try:
            ok = fetcher.map_all(Probe(), _items([1] * 8), 100) == [f"k{i}" for i in range(8)]
        finally:
            os._exit(0 if ok else 1)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
