"""S3MapDataset and S3IterableDataset against a real server, through DataLoaders with real worker
processes (fork and spawn), with the client used in the parent first."""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

torch = pytest.importorskip("torch")
from torch.utils.data import DataLoader  # noqa: E402

from s3torch import S3ClientConfig, S3IterableDataset, S3MapDataset  # noqa: E402
from s3torch.testing import free_port  # noqa: E402

N_OBJECTS = 1100  # more than one listing page (1,000 keys)
PREFIX = "data/"


def payload(i: int) -> bytes:
    """Object i's bytes: 1-3 KiB, different for every object."""
    seed = hashlib.sha256(str(i).encode()).digest()
    return (seed * 100)[: 1024 + (i * 37) % 2048]


def key_and_bytes(reader) -> tuple:
    """The transform: what a training loop would do with a sample."""
    return reader.key, reader.read()


def as_list(batch):
    return batch


def failing_transform(reader):
    if reader.key.endswith("0007"):
        raise ValueError("bad sample")
    return reader.key


@pytest.fixture(scope="module")
def dataset_bucket(seaweed_server):
    from s3torch.testing import make_client, unique_bucket_name

    bucket = seaweed_server.create_bucket(unique_bucket_name("datasets"))
    client = make_client(seaweed_server)

    def put(i: int) -> None:
        with client.put_object(bucket, f"{PREFIX}{i:04d}") as writer:
            writer.write(payload(i))

    with ThreadPoolExecutor(8) as pool:
        list(pool.map(put, range(N_OBJECTS)))
    with client.put_object(bucket, "elsewhere/x") as writer:
        writer.write(b"not in the prefix")
    yield bucket
    seaweed_server.delete_bucket_recursive(bucket)


@pytest.fixture
def config():
    return S3ClientConfig(force_path_style=True)


def _listings(proxy) -> int:
    return sum(1 for r in proxy.requests if r.method == "GET" and "list-type" in r.query)


def _check_every_object_once(samples) -> None:
    keys = [key for key, _ in samples]
    assert len(keys) == N_OBJECTS and len(set(keys)) == N_OBJECTS
    for key, data in samples:
        assert data == payload(int(key[len(PREFIX) :])), key


def test_map_dataset_lists_lazily_once_and_never_heads(seaweed_server, dataset_bucket, proxy_factory, config):
    proxy = proxy_factory(seaweed_server)
    ds = S3MapDataset.from_prefix(
        f"s3://{dataset_bucket}/{PREFIX}",
        region=seaweed_server.region,
        endpoint=proxy.endpoint,
        transform=key_and_bytes,
        s3client_config=config,
    )
    assert proxy.count() == 0, "nothing is listed before the first len or index"
    assert len(ds) == N_OBJECTS
    lists = _listings(proxy)
    assert lists == 2, "1,100 keys: two pages"
    key, data = ds[5]
    assert key == f"{PREFIX}0005" and data == payload(5)
    assert ds.__getitems__([1, 2, 3]) == [(f"{PREFIX}{i:04d}", payload(i)) for i in (1, 2, 3)]
    for _ in range(2):  # a second "epoch" lists nothing again
        assert len(ds) == N_OBJECTS
    proxy.wait_idle()
    assert proxy.count("HEAD") == 0, "the listing's sizes and ETags are reused"
    assert _listings(proxy) == lists
    agents = {r.headers.get("user-agent", "") for r in proxy.requests}
    assert agents and all(
        a.startswith("s3torch/")
        and "md/pytorch#" in a
        and "(md/dataset#map md/reader_type#sequential)" in a
        for a in agents
    ), agents


@pytest.mark.parametrize("workers,context", [(0, None), (2, "fork"), (2, "spawn")])
def test_map_dataset_through_a_dataloader(seaweed_server, dataset_bucket, config, workers, context):
    ds = S3MapDataset.from_prefix(
        f"s3://{dataset_bucket}/{PREFIX}",
        region=seaweed_server.region,
        endpoint=seaweed_server.endpoint,
        transform=key_and_bytes,
        s3client_config=config,
    )
    assert ds[0][1] == payload(0)  # the client is used in the parent before the workers start
    loader = DataLoader(
        ds,
        batch_size=32,
        num_workers=workers,
        collate_fn=as_list,
        multiprocessing_context=context,
        shuffle=True,
    )
    _check_every_object_once([sample for batch in loader for sample in batch])


@pytest.mark.parametrize("workers,context", [(0, None), (2, "fork"), (2, "spawn")])
def test_iterable_dataset_through_a_dataloader_with_sharding(
    seaweed_server, dataset_bucket, config, workers, context
):
    ds = S3IterableDataset.from_prefix(
        f"s3://{dataset_bucket}/{PREFIX}",
        region=seaweed_server.region,
        endpoint=seaweed_server.endpoint,
        transform=key_and_bytes,
        s3client_config=config,
        enable_sharding=True,
    )
    first = next(iter(ds))  # the client is used in the parent first
    assert first == (f"{PREFIX}0000", payload(0))
    loader = DataLoader(
        ds, batch_size=32, num_workers=workers, collate_fn=as_list, multiprocessing_context=context
    )
    samples = [sample for batch in loader for sample in batch]
    _check_every_object_once(samples)
    if workers == 0:
        assert [k for k, _ in samples] == sorted(k for k, _ in samples), "key order without shuffle"


def test_iterable_dataset_without_sharding_gives_every_worker_everything(
    seaweed_server, dataset_bucket, config
):
    ds = S3IterableDataset.from_objects(
        [f"s3://{dataset_bucket}/{PREFIX}{i:04d}" for i in range(10)],
        region=seaweed_server.region,
        endpoint=seaweed_server.endpoint,
        transform=key_and_bytes,
        s3client_config=config,
    )
    loader = DataLoader(ds, batch_size=4, num_workers=2, collate_fn=as_list, multiprocessing_context="fork")
    keys = [k for batch in loader for k, _ in batch]
    assert len(keys) == 20 and len(set(keys)) == 10


def test_shuffle_is_deterministic_per_seed_and_epoch(seaweed_server, dataset_bucket, config):
    def order(seed: int, epoch: int) -> list:
        ds = S3IterableDataset.from_prefix(
            f"s3://{dataset_bucket}/{PREFIX}",
            region=seaweed_server.region,
            endpoint=seaweed_server.endpoint,
            transform=lambda r: r.key,
            s3client_config=config,
            shuffle=True,
            seed=seed,
        )
        ds.set_epoch(epoch)
        return list(ds)

    first = order(7, 0)
    assert sorted(first) == [f"{PREFIX}{i:04d}" for i in range(N_OBJECTS)]
    assert first != sorted(first)
    assert order(7, 0) == first
    assert order(7, 1) != first
    assert order(8, 0) != first


def test_sharded_shuffled_epochs_over_two_ranks_and_two_workers(seaweed_server, dataset_bucket, tmp_path):
    """Two real torch.distributed ranks (gloo), each with a DataLoader of two worker processes."""
    worker = Path(__file__).with_name("dataset_rank_worker.py")
    port = free_port()
    env = dict(os.environ, MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), WORLD_SIZE="2")
    env.update(
        ENDPOINT=seaweed_server.endpoint, REGION=seaweed_server.region, URI=f"s3://{dataset_bucket}/{PREFIX}"
    )
    procs = [
        subprocess.Popen(
            [sys.executable, str(worker), str(rank), str(tmp_path / f"rank{rank}")],
            env=dict(env, RANK=str(rank)),
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        for rank in range(2)
    ]
    for proc in procs:
        out, _ = proc.communicate(timeout=300)
        assert proc.returncode == 0, out[-3000:]
    everything = sorted(f"{PREFIX}{i:04d}" for i in range(N_OBJECTS))
    epochs = []
    for epoch in range(2):
        per_rank = [(tmp_path / f"rank{r}.{epoch}").read_text().split() for r in range(2)]
        assert not set(per_rank[0]) & set(per_rank[1]), "no object read by both ranks"
        assert sorted(per_rank[0] + per_rank[1]) == everything, "every object exactly once per epoch"
        assert abs(len(per_rank[0]) - len(per_rank[1])) <= 1
        epochs.append(per_rank)
    assert epochs[0][0] != epochs[1][0], "each epoch has its own order"


def test_transform_errors_name_the_object(seaweed_server, dataset_bucket, config):
    common = dict(region=seaweed_server.region, endpoint=seaweed_server.endpoint, s3client_config=config)
    uri = f"s3://{dataset_bucket}/{PREFIX}"
    ds = S3MapDataset.from_prefix(uri, transform=failing_transform, **common)
    with pytest.raises(ValueError, match="bad sample") as err:
        ds[7]
    assert f"s3://{dataset_bucket}/{PREFIX}0007" in str(err.value.__notes__)
    with pytest.raises(ValueError) as err:
        ds.__getitems__([5, 6, 7, 8])
    assert f"{PREFIX}0007" in str(err.value.__notes__)
    it = S3IterableDataset.from_prefix(uri, transform=failing_transform, **common)
    with pytest.raises(ValueError) as err:
        list(it)
    assert f"{PREFIX}0007" in str(err.value.__notes__)
    loader = DataLoader(it, batch_size=4, num_workers=1, multiprocessing_context="fork")
    with pytest.raises(ValueError) as err:
        list(loader)
    assert f"{PREFIX}0007" in str(err.value)  # the worker's traceback, notes included


def test_a_missing_prefix_is_empty_and_a_missing_bucket_names_itself(seaweed_server, dataset_bucket, config):
    common = dict(region=seaweed_server.region, endpoint=seaweed_server.endpoint, s3client_config=config)
    assert len(S3MapDataset.from_prefix(f"s3://{dataset_bucket}/nothing-here/", **common)) == 0
    assert list(S3IterableDataset.from_prefix(f"s3://{dataset_bucket}/nothing-here/", **common)) == []
    with pytest.raises(FileNotFoundError, match="no-such-bucket-s3torch"):
        len(S3MapDataset.from_prefix("s3://no-such-bucket-s3torch/x", **common))
    with pytest.raises(FileNotFoundError, match="no-such-bucket-s3torch"):
        list(S3IterableDataset.from_prefix("s3://no-such-bucket-s3torch/x", **common))
    with pytest.raises(ValueError, match="Only s3:// URIs"):
        S3MapDataset.from_objects(["http://x/y"], **common)[0]


def _most_at_once(requests) -> int:
    """The largest number of the recorded requests that were in flight at one moment."""
    events = sorted([(r.started, 1) for r in requests] + [(r.finished, -1) for r in requests])
    most = now = 0
    for _, step in events:
        now += step
        most = max(most, now)
    return most


@pytest.mark.parametrize("kind", ["iterable", "map"])
def test_datasets_fetch_concurrently(seaweed_server, dataset_bucket, config, proxy_factory, kind):
    """The iterable dataset reads ahead of its consumer and a map dataset's batch is fetched at once:
    GETs overlap (the proxy slows each one so that overlap, not chance, decides)."""
    from s3torch.testing import Fault, delay

    proxy = proxy_factory(seaweed_server)
    proxy.add_fault(Fault(delay(0.2), method="GET", times=None))
    common = dict(
        region=seaweed_server.region,
        endpoint=proxy.endpoint,
        transform=key_and_bytes,
        s3client_config=config,
    )
    uris = [f"s3://{dataset_bucket}/{PREFIX}{i:04d}" for i in range(16)]
    if kind == "iterable":
        samples = list(S3IterableDataset.from_objects(uris, prefetch=8, **common))
    else:
        samples = S3MapDataset.from_objects(uris, batch_threads=8, **common).__getitems__(list(range(16)))
    assert [k for k, _ in samples] == [f"{PREFIX}{i:04d}" for i in range(16)]
    assert all(data == payload(i) for i, (_, data) in enumerate(samples))
    proxy.wait_idle()
    gets = [r for r in proxy.requests if r.method == "GET"]
    assert len(gets) == 16
    assert _most_at_once(gets) >= 4, "GETs one after another"


def test_map_dataset_memory_does_not_grow_from_epoch_to_epoch(seaweed_server, dataset_bucket, config):
    import tracemalloc

    ds = S3MapDataset.from_prefix(
        f"s3://{dataset_bucket}/{PREFIX}",
        region=seaweed_server.region,
        endpoint=seaweed_server.endpoint,
        transform=lambda r: len(r.read()),
        s3client_config=config,
    )
    loader = DataLoader(ds, batch_size=32, num_workers=0, collate_fn=as_list)
    tracemalloc.start()
    try:
        sizes = []
        for _ in range(3):
            assert sum(n for batch in loader for n in batch) == sum(len(payload(i)) for i in range(N_OBJECTS))
            sizes.append(tracemalloc.get_traced_memory()[0])
    finally:
        tracemalloc.stop()
    assert sizes[2] - sizes[0] < 256 * 1024, sizes  # the listing is kept once; nothing per epoch stays
