"""Each stored byte read from S3 once per load, however many ranks need it.

With data parallelism every replica reads the same tensors: N ranks would pull N copies of them from
S3. Here the ranks first agree (one ``all_gather_object`` of what each needs) on one owner for every
stored item that more than one rank needs, balanced by bytes among the ranks that need it; the owner
fetches it straight into a buffer (one GET, in place) and the buffer reaches the other ranks that
need it by ``broadcast`` in a gloo process group of exactly those ranks (gloo whatever the default
group's backend: the buffers are CPU tensors; an NCCL path straight into GPU memory is future work).
Items only one rank needs are loaded by that rank with the concurrent loader, as without it.

Memory stays bounded: the shared items are handled in rounds of at most ``round_bytes``, each round
fetched, broadcast (in pieces of at most ``PIECE_BYTES``) and applied before the next starts.

No rank can hang in a collective when another fails: every round starts with an ``all_reduce`` of a
failure flag (fetch and apply errors are held until then), and when any rank failed, every rank
raises an ``S3Exception`` naming the failed rank and its error. Items one rank alone needs are loaded
after the last collective, so a failure there is reported through DCP's own result gathering.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

import torch
import torch.distributed as dist
from torch.distributed.checkpoint.planner import LoadPlan, ReadItem

from .._exceptions import S3Exception

log = logging.getLogger(__name__)

MiB = 1024 * 1024
DEFAULT_ROUND_BYTES = 256 * MiB
PIECE_BYTES = 64 * MiB

# A stored item: (relative path of its file, offset, length).
Span = Tuple[str, int, int]


@dataclass(frozen=True)
class PlanWorld:
    """Set by the coordinator on every rank's plan (``prepare_global_plan``): how many plans the
    global plan had. Every rank of the default group then knows that all of them load together."""

    ranks: int


def enabled(requested: Optional[bool], plan: LoadPlan) -> bool:
    """Deduplicate unless turned off (False), when this load runs on every rank of the default
    process group (more than one). A load on one rank of a distributed job (``no_dist``), on a
    subgroup, or without collective planning does not: the collectives here would wait for ranks
    that are not loading."""
    if requested is False:
        return False
    if not (dist.is_available() and dist.is_initialized()):
        return False
    world = dist.get_world_size()
    info = plan.storage_data
    return world > 1 and isinstance(info, PlanWorld) and info.ranks == world


def assign_owners(needs: Sequence[Sequence[Span]]) -> Dict[Span, Tuple[int, Tuple[int, ...]]]:
    """For every span more than one rank needs: (owner, the ranks that need it), the owner one of
    them with the fewest bytes owned so far (largest spans first). Every rank computes the same
    answer from the same ``needs`` (one list per rank)."""
    who: Dict[Span, List[int]] = {}
    for rank, spans in enumerate(needs):
        for span in set(spans):
            who.setdefault(span, []).append(rank)
    load = [0] * len(needs)
    out: Dict[Span, Tuple[int, Tuple[int, ...]]] = {}
    for span in sorted(who, key=lambda s: (-s[2], s[0], s[1])):
        ranks = tuple(sorted(who[span]))
        if len(ranks) < 2 or span[2] == 0:  # an empty item costs no GET: each rank does its own
            continue
        owner = min(ranks, key=lambda r: (load[r], r))
        load[owner] += span[2]
        out[span] = (owner, ranks)
    return out


def rounds(spans: Sequence[Span], budget: int) -> List[List[Span]]:
    """``spans`` (in file order) in consecutive groups of at most ``budget`` bytes (a larger span
    is a round of its own)."""
    out: List[List[Span]] = []
    size = 0
    for span in spans:
        if not out or (size + span[2] > budget and out[-1]):
            out.append([])
            size = 0
        out[-1].append(span)
        size += span[2]
    return out


@dataclass
class DedupeStats:
    shared_items: int = 0  # stored items this rank needed that other ranks needed too
    bytes_needed: int = 0  # their bytes
    bytes_owned: int = 0  # bytes of those this rank fetched for the others
    bytes_from_peers: int = 0  # bytes of those this rank received instead of fetching
    rounds: int = 0


class SharedLoad:
    """Loads the plan's items that other ranks need too; returns the rest as a plan of its own."""

    def __init__(
        self,
        *,
        client: Any,
        storage_data: Dict[Any, Any],
        resolve_uri: Callable[[str], Tuple[str, str]],
        apply: Callable[[List[ReadItem], memoryview], None],
        round_bytes: int = DEFAULT_ROUND_BYTES,
    ) -> None:
        self._client = client
        self._storage_data = storage_data
        self._resolve_uri = resolve_uri
        self._apply = apply
        self._round_bytes = max(1, round_bytes)
        self._groups: Dict[Tuple[int, ...], Any] = {}
        self._world_group: Any = None
        self.stats = DedupeStats()

    def _span(self, item: ReadItem) -> Span:
        md = self._storage_data[item.storage_index]
        return (md.relative_path, int(md.offset), int(md.length))

    def run(self, plan: LoadPlan) -> LoadPlan:
        """Loads the shared items (collectively, with every rank of the default group); returns the
        plan of the items only this rank needs."""
        rank, world = dist.get_rank(), dist.get_world_size()
        by_span: Dict[Span, List[ReadItem]] = {}
        for item in plan.items:
            by_span.setdefault(self._span(item), []).append(item)
        # Our own gloo groups: the buffers are CPU tensors, which an NCCL default group cannot move.
        # Every rank makes them, in the same order.
        self._world_group = dist.new_group(backend="gloo")
        self._groups[tuple(range(world))] = self._world_group
        needs: List[Any] = [None] * world
        dist.all_gather_object(needs, sorted(by_span), group=self._world_group)
        owners = assign_owners(needs)
        for ranks in sorted({r for _, r in owners.values()}):
            if len(ranks) < world:
                self._groups[ranks] = dist.new_group(list(ranks), backend="gloo")
        try:
            return self._load(plan, by_span, owners, rank, world)
        finally:
            for group in self._groups.values():
                if group is not None and group != dist.GroupMember.NON_GROUP_MEMBER:
                    dist.destroy_process_group(group)
            self._groups.clear()
            self._world_group = None

    def _load(
        self,
        plan: LoadPlan,
        by_span: Dict[Span, List[ReadItem]],
        owners: Dict[Span, Tuple[int, Tuple[int, ...]]],
        rank: int,
        world: int,
    ) -> LoadPlan:
        shared = sorted(owners, key=lambda s: (s[0], s[1]))
        mine = [s for s in shared if rank in owners[s][1]]
        self.stats.shared_items = sum(len(by_span[s]) for s in mine)
        self.stats.bytes_needed = sum(s[2] for s in mine)
        if rank == 0 and shared:
            once = sum(s[2] for s in shared)
            log.info(
                "DCP load over %d ranks: %d stored items needed by several ranks, %d B read from S3 once "
                "instead of %d B",
                world,
                len(shared),
                once,
                sum(s[2] * len(owners[s][1]) for s in shared),
            )
        err: Optional[BaseException] = None
        for group in rounds(shared, self._round_bytes):
            self.stats.rounds += 1
            buffers: Dict[Span, torch.Tensor] = {}
            if err is None:
                try:
                    buffers = self._fetch_owned(group, owners, rank)
                except Exception as e:  # held until every rank knows (below)
                    err = e
            self._check(err)
            for span in group:
                owner, ranks = owners[span]
                if rank not in ranks:
                    continue
                buf = buffers.get(span)
                if buf is None:
                    buf = torch.empty(span[2], dtype=torch.uint8)
                self._broadcast(buf, owner, ranks)
                if owner != rank:
                    self.stats.bytes_from_peers += span[2]
                buffers[span] = buf
            if err is None:
                try:
                    for span in group:
                        if span in by_span:
                            self._apply(by_span[span], memoryview(buffers[span].numpy()))
                except Exception as e:
                    err = e
        self._check(err)
        private = [item for span, items in by_span.items() if span not in owners for item in items]
        log.debug(
            "rank %d: %d shared items (%d B fetched for peers, %d B from peers) in %d rounds, %d private",
            rank,
            self.stats.shared_items,
            self.stats.bytes_owned,
            self.stats.bytes_from_peers,
            self.stats.rounds,
            len(private),
        )
        return LoadPlan(items=private, storage_data=plan.storage_data, planner_data=plan.planner_data)

    def _fetch_owned(
        self, group: List[Span], owners: Dict[Span, Tuple[int, Tuple[int, ...]]], rank: int
    ) -> Dict[Span, torch.Tensor]:
        """This rank's spans of the round, each with one GET straight into a new buffer, all at once."""
        mine = [s for s in group if owners[s][0] == rank]
        buffers = {s: torch.empty(s[2], dtype=torch.uint8) for s in mine}
        gets = []
        try:
            for span in mine:
                bucket, key = self._resolve_uri(span[0])
                gets.append(self._client.get_object_into(bucket, key, span[1], buffers[span].numpy()))
            for get in gets:
                get.wait()
        finally:
            for get in gets:  # an error leaves none running into a buffer
                get.cancel()
        self.stats.bytes_owned += sum(s[2] for s in mine)
        return buffers

    def _broadcast(self, buf: torch.Tensor, owner: int, ranks: Tuple[int, ...]) -> None:
        group = self._groups[ranks]
        for lo in range(0, max(1, buf.numel()), PIECE_BYTES):
            dist.broadcast(buf[lo : lo + PIECE_BYTES], src=owner, group=group)

    def _check(self, err: Optional[BaseException]) -> None:
        """Raises on every rank if any rank failed (a collective every rank joins)."""
        flag = torch.tensor([1 if err is not None else 0], dtype=torch.int32)
        dist.all_reduce(flag, op=dist.ReduceOp.MAX, group=self._world_group)
        if not int(flag.item()):
            return
        errors: List[Any] = [None] * dist.get_world_size()
        dist.all_gather_object(
            errors, None if err is None else f"{type(err).__name__}: {err}", group=self._world_group
        )
        if err is not None:
            raise err
        r, e = next((r, e) for r, e in enumerate(errors) if e is not None)
        raise S3Exception(f"DCP load failed on rank {r} while reading items shared with this rank: {e}")
