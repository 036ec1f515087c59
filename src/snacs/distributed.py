"""Splitting SNACS's work across the ranks of a torch.distributed process group.

Under `torchrun` (or any process group the caller initialised) the three expensive stages split
their work: the activation pass takes a contiguous share of the calibration batches per rank,
the scores and limits stages a share of the layer pairs. Every stage then gathers the results so
that every rank holds exactly what one process would have computed (same order, same bits), and
the plan made from them is the same on every rank.

Without an initialised process group (or with a world of one) every helper here is a no-op, and
this module never imports torch.distributed itself: it looks the module up in `sys.modules`
(a caller who initialised a process group has imported it).
"""

from __future__ import annotations

import logging
import math
import pickle
import sys
from collections.abc import Callable, Iterable, Sequence
from itertools import islice
from typing import Any, TypeVar

import torch

from snacs.errors import ConfigError, SnacsError

log = logging.getLogger(__name__)

__all__ = ["world", "is_distributed", "shard", "shard_range", "shard_batches", "gather_objects",
           "call_and_gather", "gather_rows", "from_rank0"]

T = TypeVar("T")


def _dist():
    """torch.distributed when a process group is initialised, else None (never imports it)."""
    dist = sys.modules.get("torch.distributed")
    if dist is None or not dist.is_available() or not dist.is_initialized():
        return None
    return dist


def world() -> tuple[int, int]:
    """(rank, world size) of the default process group; (0, 1) when there is none."""
    dist = _dist()
    if dist is None:
        return 0, 1
    return dist.get_rank(), dist.get_world_size()


def is_distributed() -> bool:
    """True when a process group of more than one rank is initialised."""
    return world()[1] > 1


def _check_rank(rank: int, size: int) -> None:
    if not isinstance(size, int) or size < 1 or not isinstance(rank, int) \
            or not 0 <= rank < size:
        raise ConfigError(f"need integers 0 <= rank < world size, got rank={rank!r}, "
                          f"world size={size!r}")


def shard_range(n: int, rank: int, size: int) -> range:
    """The contiguous block of `range(n)` that `rank` of `size` takes (sizes differ by <= 1).

    Blocks concatenated in rank order are `range(n)` again, so results gathered in rank order
    are in the original order.
    """
    _check_rank(rank, size)
    if n < 0:
        raise ConfigError(f"cannot split a negative number of items ({n})")
    return range(n * rank // size, n * (rank + 1) // size)


def shard(items: Sequence[T], rank: int, size: int,
          cost: Sequence[float] | None = None) -> list[T]:
    """The items `rank` of `size` handles, in their original order.

    Items are dealt greedily, the most costly first, each to the rank with the least total cost
    so far (ties: the lower rank, then the earlier item), so the split depends only on the costs
    and every rank computes the same one. Without `cost` every item costs 1, which deals them
    round-robin. Every item goes to exactly one rank.
    """
    _check_rank(rank, size)
    n = len(items)
    if cost is None:
        cost = [1.0] * n
    if len(cost) != n:
        raise ConfigError(f"shard: {len(cost)} costs for {n} items")
    if any(not math.isfinite(c) or c < 0 for c in cost):
        raise ConfigError("shard: costs must be finite and non-negative")
    load = [0.0] * size
    mine: list[int] = []
    for i in sorted(range(n), key=lambda i: (-cost[i], i)):
        r = min(range(size), key=lambda r: (load[r], r))
        load[r] += cost[i]
        if r == rank:
            mine.append(i)
    return [items[i] for i in sorted(mine)]


def shard_batches(batches: Iterable, rank: int, size: int) -> Iterable:
    """This rank's contiguous block of `batches` (see `shard_range`).

    A list or tuple is sliced. A snacs `BatchLoader` without augmentation becomes a loader over
    the indices of this rank's batches only (the same batches, and nothing else is loaded). Any
    other iterable with a length is iterated lazily and the other ranks' batches skipped (they
    are still loaded). An iterable without a length cannot be split the same way on every rank.
    """
    from snacs.data.loader import BatchLoader

    if isinstance(batches, BatchLoader) and not batches.augment:
        block = shard_range(len(batches), rank, size)
        if not block:  # (a loader over no indices would still yield one empty batch)
            return []
        bs = batches.batch_size
        order = batches.epoch_indices()[block.start * bs:block.stop * bs]
        return BatchLoader(batches.dataset, bs, indices=order, num_workers=batches.num_workers)
    if isinstance(batches, (list, tuple)):
        block = shard_range(len(batches), rank, size)
        return list(batches[block.start:block.stop])
    if not hasattr(batches, "__len__"):
        raise ConfigError(
            f"cannot split {type(batches).__name__} calibration batches across ranks: it has no "
            "length; pass a list of (inputs, labels) batches, an (inputs, labels) pair of "
            "tensors or a snacs dataset")
    return _Block(batches, shard_range(len(batches), rank, size))  # type: ignore[arg-type]


class _Block:
    """Batches `block` of a sized iterable, read lazily (a rank's share is never all held)."""

    def __init__(self, batches: Iterable, block: range) -> None:
        self.batches, self.block = batches, block

    def __len__(self) -> int:
        return len(self.block)

    def __iter__(self):
        return islice(iter(self.batches), self.block.start, self.block.stop)


def gather_objects(obj: Any) -> list[Any]:
    """`obj` of every rank, in rank order (`[obj]` without a process group)."""
    dist = _dist()
    if dist is None or dist.get_world_size() == 1:
        return [obj]
    out: list[Any] = [None] * dist.get_world_size()
    dist.all_gather_object(out, obj)
    return out


def _portable(exc: BaseException) -> bytes:
    """`exc` pickled so that it unpickles on another rank; a SnacsError with its text if not."""
    try:
        data = pickle.dumps(exc)
        pickle.loads(data)
        return data
    except Exception:  # an exception whose class cannot be rebuilt from its args
        return pickle.dumps(SnacsError(f"{type(exc).__name__}: {exc}"))


def from_rank0(fn: Callable[[], T]) -> T:
    """`fn()` run on rank 0 only, its result handed to every rank (a measurement such as a
    latency, which would differ from rank to rank and so give the ranks different plans)."""
    rank, size = world()
    if size == 1:
        return fn()
    return call_and_gather(lambda: fn() if rank == 0 else None)[0]


def call_and_gather(fn: Callable[[], T]) -> list[T]:
    """Run `fn` on this rank and return every rank's result, in rank order.

    When `fn` raises on any rank, every rank raises (the failing rank its own exception, the
    others the exception of the lowest failing rank) instead of leaving the others waiting in
    the next collective.
    """
    dist = _dist()
    if dist is None or dist.get_world_size() == 1:
        return [fn()]
    error: BaseException | None = None
    try:
        payload: tuple = (True, fn())
    except Exception as e:
        error = e
        payload = (False, _portable(e))
    results = gather_objects(payload)
    if error is not None:
        raise error
    for r, (ok, value) in enumerate(results):
        if not ok:
            exc = pickle.loads(value)
            log.error("rank %d failed: %s", r, exc)
            raise exc
    return [value for _, value in results]


def _cpu_collectives(dist) -> None:
    backend = str(dist.get_backend())
    if not any(b in backend for b in ("gloo", "mpi", "ucc")):
        raise ConfigError(
            f"the process group's backend {backend!r} cannot exchange CPU tensors, which SNACS "
            "gathers its activations in; initialise it with backend 'gloo' or "
            "'cpu:gloo,cuda:nccl'")


def gather_rows(local: torch.Tensor, counts: Sequence[int]) -> torch.Tensor:
    """Every rank's `local` (counts[r] x ...) concatenated along dim 0 in rank order.

    Each rank broadcasts its rows straight into its slice of the result, so a rank holds the
    result and its own rows, never every rank's rows twice. Bits are copied unchanged.
    """
    dist = _dist()
    size = 1 if dist is None else dist.get_world_size()
    rank = 0 if dist is None else dist.get_rank()
    if len(counts) != size:
        raise ConfigError(f"gather_rows: {len(counts)} row counts for {size} ranks")
    if local.shape[0] != counts[rank]:
        raise ConfigError(f"gather_rows: rank {rank} holds {local.shape[0]} rows, "
                          f"expected {counts[rank]}")
    if size == 1:
        return local
    _cpu_collectives(dist)
    out = torch.empty((sum(counts), *local.shape[1:]), dtype=local.dtype)
    start = 0
    for r, n in enumerate(counts):
        if n:
            part = out[start:start + n]  # a contiguous view: dim 0 is the outermost
            if r == rank:
                part.copy_(local)
            dist.broadcast(part, src=r)
        start += n
    return out
