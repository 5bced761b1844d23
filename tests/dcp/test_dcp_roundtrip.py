"""DCP save/load round trips through moto and SeaweedFS with every reader constructor."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Callable

import pytest
import torch
import torch.distributed.checkpoint as dcp
from dcp_helpers import MiB, Target, assert_same, blank_like, mixed_state
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from torch.distributed.checkpoint import FileSystemReader

from s3torch import S3ReaderConstructor
from s3torch.dcp import (
    BinaryPrefixStrategy,
    DefaultPrefixStrategy,
    HexPrefixStrategy,
    RoundRobinPrefixStrategy,
)

READERS: dict[str, Callable[[], Any]] = {
    "sequential": S3ReaderConstructor.sequential,
    "range_based": S3ReaderConstructor.range_based,
    "range_based_unbuffered": lambda: S3ReaderConstructor.range_based(buffer_size=0),
    "dcp_optimized_default": S3ReaderConstructor.dcp_optimized,
    "dcp_optimized_gap0": lambda: S3ReaderConstructor.dcp_optimized(0),
    "dcp_optimized_gap64k": lambda: S3ReaderConstructor.dcp_optimized(64 * 1024),
    "dcp_optimized_inf": lambda: S3ReaderConstructor.dcp_optimized(float("inf")),
    "default_reader": lambda: None,  # S3StorageReader's default: dcp_optimized()
}


@pytest.mark.parametrize("reader", sorted(READERS))
def test_round_trip(target: Target, reader: str) -> None:
    state = mixed_state()
    dcp.save(state, storage_writer=target.writer())
    assert target.has_metadata()

    dest = blank_like(state)
    storage_reader = target.reader(READERS[reader]())
    dcp.load(dest, storage_reader=storage_reader)
    assert_same(state, dest)

    stats = storage_reader.last_load_stats
    assert stats is not None and stats.items > 0 and stats.seconds > 0
    assert stats.bytes_fetched >= stats.bytes_needed > 0
    # Every GET counts, streamed or received straight into memory (range_based reads are the latter).
    assert stats.get_requests > 0
    if reader.startswith("dcp_optimized") or reader == "default_reader":
        assert stats.mode == "concurrent"
        assert stats.fallback_items == 0, "every tensor should be copied in place"
    else:
        assert stats.mode == "per_file"


@pytest.mark.parametrize("max_gap", [0, 64 * 1024, float("inf")])
def test_dcp_optimized_reader_through_torchs_per_file_loop(target: Target, max_gap: float) -> None:
    """concurrent=False: DCPOptimizedS3Reader under torch's FileSystemReader loop."""
    state = mixed_state()
    dcp.save(state, storage_writer=target.writer())
    dest = blank_like(state)
    reader = target.reader(S3ReaderConstructor.dcp_optimized(max_gap), concurrent=False)
    dcp.load(dest, storage_reader=reader)
    assert_same(state, dest)
    assert reader.last_load_stats.mode == "per_file"
    assert reader.last_load_stats.reader == "dcp_optimized"


def test_large_items_across_parts_and_many_streams(seaweed_target: Target) -> None:
    """Items bigger than a part, split into several concurrent GETs, thread_count=2 files."""
    state = mixed_state(big=5 * MiB)  # 20 MiB fp32 tensor: spans three 8 MiB parts
    state["big2"] = torch.arange(3 * MiB, dtype=torch.int64)
    dcp.save(state, storage_writer=seaweed_target.writer(thread_count=2))
    distcp = [k for k in seaweed_target.keys() if k.endswith(".distcp")]
    assert len(distcp) == 2

    for max_streams in (1, 3):
        dest = blank_like(state)
        reader = seaweed_target.reader(max_streams=max_streams, split_bytes=4 * MiB)  # several GETs a file
        dcp.load(dest, storage_reader=reader)
        assert_same(state, dest)
        stats = reader.last_load_stats
        assert stats.get_requests >= 3
        assert stats.max_streams <= max_streams
        assert stats.fallback_items == 0


def _download(target: Target, dest_dir: Path) -> None:
    client = target.server.boto3_client()
    for key in target.keys():
        path = dest_dir / key[len(target.prefix) + 1 :]
        path.parent.mkdir(parents=True, exist_ok=True)
        client.download_file(target.bucket, key, str(path))


def test_bit_identical_to_torch_filesystem_reader(target: Target, tmp_path: Path) -> None:
    """Same checkpoint bytes, same destinations (incl. strided and dtype-casting ones): our
    concurrent reader and torch's FileSystemReader must produce identical tensors."""
    state = mixed_state()
    state["wide"] = torch.randn(40, 24)
    dcp.save(state, storage_writer=target.writer())
    _download(target, tmp_path)

    def destinations() -> dict:
        dest = blank_like(state)
        dest["wide"] = torch.zeros(24, 40).t()  # non-contiguous destination view
        dest["fp32"] = torch.zeros(64, 33, dtype=torch.float64)  # copy_ casts, as torch does
        return dest

    ours = destinations()
    dcp.load(ours, storage_reader=target.reader())
    theirs = destinations()
    dcp.load(theirs, storage_reader=FileSystemReader(str(tmp_path)))
    assert_same(theirs, ours)
    assert torch.equal(ours["wide"], state["wide"])


def test_partial_load_of_a_subset_of_keys(target: Target) -> None:
    state = mixed_state()
    dcp.save(state, storage_writer=target.writer())
    dest = {"bf16": torch.zeros(128, 7, dtype=torch.bfloat16), "nested": {"step": torch.tensor(0)}}
    reader = target.reader()
    dcp.load(dest, storage_reader=reader)
    assert torch.equal(dest["bf16"], state["bf16"])
    assert dest["nested"]["step"].item() == 7
    assert reader.last_load_stats.items == 2


def test_save_overwrites_an_earlier_checkpoint(target: Target) -> None:
    dcp.save(mixed_state(), storage_writer=target.writer())
    newer = mixed_state()
    newer["fp32"] += 1
    dcp.save(newer, storage_writer=target.writer())
    dest = blank_like(newer)
    dcp.load(dest, storage_reader=target.reader())
    assert_same(newer, dest)


def test_save_stats(target: Target) -> None:
    writer = target.writer()
    dcp.save(mixed_state(), storage_writer=writer)
    stats = writer.last_save_stats
    assert stats is not None
    assert stats.items > 10 and stats.files == 1
    assert stats.bytes_written > 0 and stats.put_objects == 2  # data object + metadata
    assert stats.seconds > 0


def test_endpoint_from_client_config_and_env_credentials(target: Target) -> None:
    """Credentials come from the environment (conftest), the endpoint from the argument."""
    assert os.environ["AWS_ACCESS_KEY_ID"]
    reader = target.reader()
    assert reader.fs.client.endpoint == target.server.endpoint


@pytest.mark.parametrize(
    ("strategy", "expected_key"),
    [
        (DefaultPrefixStrategy(), "__0_0.distcp"),
        (BinaryPrefixStrategy(min_prefix_length=4), "0000/__0_0.distcp"),
        (HexPrefixStrategy(epoch_num=3, min_prefix_length=2), "00/epoch_3/__0_0.distcp"),
        (RoundRobinPrefixStrategy(["hot", "cold"]), "hot/__0_0.distcp"),
    ],
    ids=["default", "binary", "hex", "round_robin"],
)
def test_prefix_strategies(moto_target: Target, strategy: Any, expected_key: str) -> None:
    state = mixed_state()
    dcp.save(state, storage_writer=moto_target.writer(prefix_strategy=strategy))
    assert f"{moto_target.prefix}/{expected_key}" in moto_target.keys()
    dest = blank_like(state)
    dcp.load(dest, storage_reader=moto_target.reader())
    assert_same(state, dest)


def test_rank_local_metadata_without_collectives(moto_target: Target) -> None:
    """use_collectives=False: each rank names its own objects and writes __{rank}.metadata."""
    writer = moto_target.writer(prefix_strategy=HexPrefixStrategy(min_prefix_length=1))
    dcp.save(mixed_state(), storage_writer=writer, use_collectives=False)
    keys = moto_target.keys()
    assert f"{moto_target.prefix}/0/__0_0.distcp" in keys
    assert f"{moto_target.prefix}/__0.metadata" in keys
    assert f"{moto_target.prefix}/.metadata" not in keys


@pytest.mark.timeout(180)
@pytest.mark.parametrize(("limit_mib", "requested"), [(24, 8), (48, 8), (96, None)])
def test_load_within_a_small_memory_limit(
    seaweed_target: Target, limit_mib: int, requested: int | None
) -> None:
    """Concurrent loads stay inside the client's part-buffer pool (and never stall on it), even
    when more streams are asked for than the pool can feed."""
    state = mixed_state(big=5 * MiB)
    state["big2"] = torch.randn(3 * MiB)
    dcp.save(state, storage_writer=seaweed_target.writer())
    config = seaweed_target.config(memory_limit_bytes=limit_mib * MiB)
    reader = seaweed_target.reader(config=config, max_streams=requested)
    reader.split_bytes = 4 * MiB
    dest = blank_like(state)
    dcp.load(dest, storage_reader=reader)
    assert_same(state, dest)
    pool = reader.fs.client.stats()
    assert pool["peak_bytes"] <= limit_mib * MiB
    assert reader.last_load_stats.max_streams <= max(1, limit_mib // 24)


DTYPES = [
    torch.float32,
    torch.float64,
    torch.float16,
    torch.bfloat16,
    torch.int8,
    torch.uint8,
    torch.int32,
    torch.int64,
    torch.bool,
    torch.complex64,
]


@settings(
    max_examples=12,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(data=st.data())
def test_random_state_dicts_and_subsets(seaweed_target: Target, data: st.DataObject) -> None:
    """Random tensors (dtypes, shapes incl. 0-dim and empty), random key subsets, gap sizes,
    GET split sizes and stream counts: the concurrent load equals the saved values."""
    n = data.draw(st.integers(1, 12), label="tensors")
    gen = torch.Generator().manual_seed(data.draw(st.integers(0, 2**31), label="seed"))
    state = {}
    for i in range(n):
        dtype = data.draw(st.sampled_from(DTYPES), label=f"dtype{i}")
        shape = tuple(data.draw(st.lists(st.integers(0, 300), max_size=3), label=f"shape{i}"))
        t = torch.randint(0, 100, shape, generator=gen).to(dtype)
        if dtype.is_floating_point or dtype.is_complex:
            t = torch.randn(shape, generator=gen).to(dtype)
        state[f"t{i}"] = t
    prefix = f"hyp/{os.urandom(6).hex()}"
    target = Target(seaweed_target.server, seaweed_target.bucket, prefix)
    dcp.save(state, storage_writer=target.writer())

    keys = data.draw(st.lists(st.sampled_from(sorted(state)), min_size=1, unique=True), label="keys")
    gap = data.draw(st.sampled_from([0, 100, 4096, 1 << 20, float("inf")]), label="gap")
    reader = target.reader(
        S3ReaderConstructor.dcp_optimized(gap),
        max_streams=data.draw(st.integers(1, 4), label="streams"),
    )
    reader.split_bytes = data.draw(st.sampled_from([1, 1000, 64 * 1024, 64 * MiB]), label="split")
    dest = {k: torch.zeros_like(state[k]) for k in keys}
    dcp.load(dest, storage_reader=reader)
    for k in keys:
        assert torch.equal(dest[k], state[k]), k
    assert reader.last_load_stats.fallback_items == 0


def test_load_without_a_destination_state_dict(moto_target: Target) -> None:
    """torch's _EmptyStateDictLoadPlanner (as in dcp_to_torch_save) builds the state from metadata."""
    from torch.distributed.checkpoint.default_planner import _EmptyStateDictLoadPlanner
    from torch.distributed.checkpoint.state_dict_loader import _load_state_dict

    state = mixed_state()
    dcp.save(state, storage_writer=moto_target.writer())
    loaded: dict = {}
    reader = moto_target.reader()
    _load_state_dict(loaded, storage_reader=reader, planner=_EmptyStateDictLoadPlanner(), no_dist=True)
    assert_same(state, loaded)
    assert reader.last_load_stats.fallback_items == 0


def test_async_save(moto_target: Target) -> None:
    state = mixed_state()
    writer = moto_target.writer()
    dcp.async_save(state, storage_writer=writer).result()
    assert moto_target.has_metadata()
    dest = blank_like(state)
    dcp.load(dest, storage_reader=moto_target.reader())
    assert_same(state, dest)
    assert writer.last_save_stats is not None and writer.last_save_stats.put_objects == 2


def test_large_tensors_land_in_place_and_match_torch(seaweed_target: Target, tmp_path: Path) -> None:
    """Large items are received straight into their destination (their middle is scattered);
    destinations that cannot take the raw bytes (dtype cast, strided view) fall back, and every
    result is the one torch's FileSystemReader gives."""
    g = torch.Generator().manual_seed(7)
    state = {
        "w": torch.randn(3 * MiB, generator=g),  # 12 MiB fp32: in place
        "b": torch.randn(1024, 1100, generator=g).to(torch.bfloat16),  # ~2.1 MiB: in place
        "cast": torch.randn(MiB, generator=g),  # loaded into float64: torch.load + copy_
        "strided": torch.randn(600, 700, generator=g),  # into a transposed view: not a hole
        "small": torch.randn(10, generator=g),
    }
    dcp.save(state, storage_writer=seaweed_target.writer())
    _download(seaweed_target, tmp_path)

    def destinations() -> dict:
        dest = blank_like(state)
        dest["cast"] = torch.zeros(MiB, dtype=torch.float64)
        dest["strided"] = torch.zeros(700, 600).t()
        return dest

    ours = destinations()
    reader = seaweed_target.reader()
    dcp.load(ours, storage_reader=reader)
    theirs = destinations()
    dcp.load(theirs, storage_reader=FileSystemReader(str(tmp_path)))
    assert_same(theirs, ours)
    assert torch.equal(ours["w"], state["w"]) and torch.equal(ours["b"], state["b"])
    stats = reader.last_load_stats
    # The middles of w, b and cast (the last into its staging bytes): each item but the windows
    # at its ends, and an item is its tensor bytes plus under 4 KiB of archive records.
    from s3torch.dcp._concurrent import HEAD_WINDOW, TAIL_WINDOW

    ends = HEAD_WINDOW + TAIL_WINDOW
    middles = state["w"].nbytes + state["b"].nbytes + state["cast"].nbytes - 3 * ends
    assert middles <= stats.direct_bytes < middles + 3 * 4096
    assert stats.fallback_items == 1  # cast
    assert stats.bytes_fetched == stats.bytes_needed  # the holes are not fetched twice
    assert stats.relocated_items == 0  # the guessed data offset was right for every item
    # The middles cost no request of their own: as many GETs as with every byte streamed.
    plain = seaweed_target.reader()
    plain.direct_min_bytes = 0
    dcp.load(destinations(), storage_reader=plain)
    assert plain.last_load_stats.direct_bytes == 0
    assert stats.get_requests == plain.last_load_stats.get_requests


@pytest.mark.parametrize("guess", [704 - 64, 704 + 128, 64])
def test_a_wrong_data_offset_guess_is_moved_into_place(
    seaweed_target: Target, monkeypatch: pytest.MonkeyPatch, guess: int
) -> None:
    """The middles are scattered before the head says where the tensor bytes start; a wrong guess
    costs one move inside the tensor, never a wrong value."""
    from s3torch.dcp import _concurrent

    g = torch.Generator().manual_seed(11)
    state = {f"t{i}": torch.randn(300_000 + 1000 * i, generator=g) for i in range(4)}
    state["small"] = torch.arange(10)
    dcp.save(state, storage_writer=seaweed_target.writer())
    monkeypatch.setattr(_concurrent, "DEFAULT_DATA_OFFSET", guess)
    reader = seaweed_target.reader()
    reader.max_streams = 1
    reader.split_bytes = 1 << 40  # one task: every hole is planned with the first guess
    dest = blank_like(state)
    dcp.load(dest, storage_reader=reader)
    assert_same(state, dest)
    stats = reader.last_load_stats
    assert stats.relocated_items == 4
    assert stats.fallback_items == 0
    assert stats.direct_bytes >= 4 * (1_200_000 - 40 * 1024)


def test_an_unexpected_layout_is_assembled_from_what_was_streamed(
    seaweed_target: Target, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Without the saved dtype the loader guesses the item lands in place; a dtype-casting
    destination proves it wrong once the head is parsed. The item is then assembled from its
    streamed ends and its scattered middle and read with torch.load: fetched once, not twice."""
    from s3torch.dcp._concurrent import ConcurrentPlanLoader

    g = torch.Generator().manual_seed(5)
    state = {"w": torch.randn(2 * MiB, generator=g), "b": torch.randn(MiB, generator=g)}
    dcp.save(state, storage_writer=seaweed_target.writer())
    monkeypatch.setattr(ConcurrentPlanLoader, "_saved_dtype", lambda self, req: None)
    dest = {"w": torch.zeros(2 * MiB, dtype=torch.float64), "b": torch.zeros(MiB)}
    reader = seaweed_target.reader()
    dcp.load(dest, storage_reader=reader)
    assert torch.equal(dest["w"], state["w"].double()) and torch.equal(dest["b"], state["b"])
    stats = reader.last_load_stats
    assert stats.fallback_items == 1
    assert stats.bytes_fetched == stats.bytes_needed


@pytest.mark.parametrize("variant", ["transposed", "no_crc32", "align_4k", "align_64k"])
def test_other_archive_layouts_are_fetched_once(seaweed_target: Target, tmp_path: Path, variant: str) -> None:
    """Large items saved non-contiguous, without CRC32s or with another storage alignment load
    bit-identical to torch's reader, and every byte is fetched once (no item is read again)."""
    from torch.utils.serialization import config as ser_config

    g = torch.Generator().manual_seed(3)
    state = {
        "w": torch.randn(1024, 1536, generator=g),  # 6 MiB
        "t": torch.randn(1536, 1024, generator=g),
        "small": torch.arange(100),
    }
    if variant == "transposed":
        state["t"] = state["t"].t()  # saved with its transposed strides
    saved_crc, saved_alignment = ser_config.save.compute_crc32, ser_config.save.storage_alignment
    try:  # torch's own settings (its config object does not take monkeypatch's undo)
        if variant == "no_crc32":
            torch.serialization.set_crc32_options(False)
        elif variant.startswith("align"):
            ser_config.save.storage_alignment = 4096 if variant == "align_4k" else 65536
        dcp.save(state, storage_writer=seaweed_target.writer())
    finally:
        torch.serialization.set_crc32_options(saved_crc)
        ser_config.save.storage_alignment = saved_alignment
    _download(seaweed_target, tmp_path)
    ours = blank_like(state)
    reader = seaweed_target.reader()
    dcp.load(ours, storage_reader=reader)
    theirs = blank_like(state)
    dcp.load(theirs, storage_reader=FileSystemReader(str(tmp_path)))
    assert_same(theirs, ours)
    assert_same(state, ours)
    stats = reader.last_load_stats
    assert stats.bytes_fetched == stats.bytes_needed, "an item was fetched twice"
    if variant in ("no_crc32", "align_4k"):  # parsed: both large items land in place
        assert stats.fallback_items == 0 and stats.direct_bytes >= 2 * (6 * MiB - 64 * 1024)


def test_a_refetch_does_not_wait_on_the_pool_its_own_streams_hold(
    seaweed_target: Target, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An item whose archive end contradicts its head is read again while its task's streams are
    still open; with a pool of three parts those streams may hold all of it, so the refetch must
    not take pool memory (it used to wait forever)."""
    from s3torch.dcp import _concurrent
    from s3torch.dcp._archive import UnsupportedArchive

    g = torch.Generator().manual_seed(9)
    state = {f"t{i}": torch.randn(2 * MiB, generator=g).reshape(1024, 2048).t() for i in range(3)}
    state.update({f"w{i}": torch.randn(2 * MiB, generator=g) for i in range(3)})
    dcp.save(state, storage_writer=seaweed_target.writer())

    def contradicted(head: Any, tail: Any) -> None:
        raise UnsupportedArchive("injected: the archive's end disagrees")

    monkeypatch.setattr(_concurrent, "check_tail", contradicted)
    config = seaweed_target.config(memory_limit_bytes=24 * MiB)
    reader = seaweed_target.reader(config=config)
    reader.split_bytes = 1 << 40  # one task, one stream: it stays open across every refetch
    dest = blank_like(state)
    dcp.load(dest, storage_reader=reader)
    assert_same(state, dest)
    assert reader.fs.client.stats()["peak_bytes"] <= 24 * MiB


def test_a_save_reuses_a_bounded_set_of_part_buffers(seaweed_target: Target) -> None:
    """With no memory limit set, a writer's uploads may hold 16 parts per 10 Gbps of target: a save
    larger than that waits for parts to go out and reuses their buffers instead of mapping (and
    page-faulting) fresh ones up to the checkpoint's size. A limit the user sets is kept."""
    part = 5 * MiB
    gen = torch.Generator().manual_seed(3)
    state = {f"w{i}": torch.randn(6 * MiB, generator=gen) for i in range(6)}  # 144 MiB
    writer = seaweed_target.writer(config=seaweed_target.config(part_size=part))
    dcp.save(state, storage_writer=writer)
    limit = writer.fs.client.s3client_config.memory_limit_bytes
    assert limit == 16 * part
    stats = writer.fs.client.stats()
    assert 0 < stats["peak_bytes"] <= limit
    assert stats["mapped_bytes"] <= limit, "buffers were reused, not mapped up to the checkpoint's size"
    dest = blank_like(state)
    dcp.load(dest, storage_reader=seaweed_target.reader())
    assert_same(state, dest)
    mine = seaweed_target.writer(config=seaweed_target.config(memory_limit_bytes=1 << 30))
    assert mine.fs.client.s3client_config.memory_limit_bytes == 1 << 30


@pytest.mark.parametrize("thread_count", [1, 3])
def test_every_saved_tensor_item_is_a_zip_with_right_crc32s(
    seaweed_target: Target, thread_count: int
) -> None:
    """The writer checksums records as they stream out (not torch.save's own pass): every tensor
    item of every file is a torch.save archive whose CRC-32s a zip reader accepts, and torch's
    own loader reads it."""
    import io
    import zipfile

    from torch.distributed.checkpoint.metadata import TensorStorageMetadata

    state = mixed_state(big=3 * MiB)
    writer = seaweed_target.writer(thread_count=thread_count)
    dcp.save(state, storage_writer=writer)
    metadata = seaweed_target.reader().read_metadata()
    s3 = seaweed_target.server.boto3_client()
    files: dict[str, bytes] = {}
    tensors = 0
    for index, info in metadata.storage_data.items():
        if info.relative_path not in files:
            key = f"{seaweed_target.prefix}/{info.relative_path}"
            files[info.relative_path] = s3.get_object(Bucket=seaweed_target.bucket, Key=key)["Body"].read()
        item = files[info.relative_path][info.offset : info.offset + info.length]
        if not isinstance(metadata.state_dict_metadata[index.fqn], TensorStorageMetadata):
            continue  # a Python object, which DCP's planner serializes itself
        assert zipfile.ZipFile(io.BytesIO(item)).testzip() is None, index.fqn
        assert isinstance(torch.load(io.BytesIO(item), weights_only=True), torch.Tensor)
        tensors += 1
    assert tensors >= 5 and len(files) == thread_count


def test_fresh_destinations_are_mapped_in_ahead_of_the_gets(seaweed_target: Target) -> None:
    """Destination tensors straight from torch.empty are fresh memory: a thread maps their pages in
    while the GETs run (cheaper than a fault per page on the threads receiving the bytes).
    Destinations already written (an initialized model) are left alone. Same values either way."""
    import mmap

    from s3torch import _core

    if not _core.SCATTER:
        pytest.skip("in-place destinations need the bundled CRT's scatter")
    state = {"w": torch.randn(40 * MiB // 4, generator=torch.Generator().manual_seed(3)), "b": torch.ones(5)}
    dcp.save(state, storage_writer=seaweed_target.writer())

    # Memory no one has written yet, for sure (torch.empty's may be reused heap memory).
    region = mmap.mmap(-1, state["w"].nbytes)
    fresh = {"w": torch.frombuffer(region, dtype=torch.float32), "b": torch.empty(5)}
    reader = seaweed_target.reader()
    dcp.load(fresh, storage_reader=reader)
    assert torch.equal(fresh["w"], state["w"]) and torch.equal(fresh["b"], state["b"])
    mapped = reader.last_load_stats.prefaulted_bytes
    if _core.Prefault.supported():
        assert 0 < mapped <= state["w"].nbytes and mapped % 4096 == 0, reader.last_load_stats
    else:
        assert mapped == 0

    written = blank_like(state)  # zeroed: every page already mapped
    reader = seaweed_target.reader()
    dcp.load(written, storage_reader=reader)
    assert torch.equal(written["w"], state["w"])
    assert reader.last_load_stats.prefaulted_bytes == 0, reader.last_load_stats


def test_tensor_bytes_go_out_from_the_tensors_own_memory(seaweed_target: Target) -> None:
    """Each tensor's bytes are sent from the tensor's storage (lent, not copied into part buffers):
    whole parts as the parts' buffers, the pieces around them from parts shared with the archive's
    headers. Only the small tensor (torch.save into memory) and the few bytes held back until a
    record's data descriptor is known are copied. The tensors are left as they were and the
    checkpoint loads back (and reads with torch.load) to the same values."""
    import io

    gen = torch.Generator().manual_seed(5)
    state = {f"w{i}": torch.randn(6 * MiB + 17 * i, generator=gen) for i in range(3)}  # 24 MiB each
    state["small"] = torch.arange(1000)
    before = {k: v.clone() for k, v in state.items()}
    writer = seaweed_target.writer(thread_count=1)
    dcp.save(state, storage_writer=writer)
    counters = writer.fs.client._native.counters()
    big = sum(state[f"w{i}"].nbytes for i in range(3))
    held_back = 24  # per record, at most: where its data descriptor may begin
    assert big - 3 * held_back <= counters["bytes_uploaded_in_place"] <= big
    assert counters["bytes_uploaded"] > counters["bytes_uploaded_in_place"]
    assert_same(before, state)
    dest = blank_like(state)
    dcp.load(dest, storage_reader=seaweed_target.reader())
    assert_same(before, dest)
    metadata = seaweed_target.reader().read_metadata()
    s3 = seaweed_target.server.boto3_client()
    for index, info in metadata.storage_data.items():
        key = f"{seaweed_target.prefix}/{info.relative_path}"
        rng = f"bytes={info.offset}-{info.offset + info.length - 1}"
        item = s3.get_object(Bucket=seaweed_target.bucket, Key=key, Range=rng)["Body"].read()
        assert torch.equal(torch.load(io.BytesIO(item), weights_only=True), before[index.fqn])
