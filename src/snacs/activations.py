"""One pass over the calibration set, keeping the N x channels spatial means (SPEC §1).

For every layer pair the tensor the child actually consumes (after BN, ReLU, pooling and residual
additions) is caught with a forward pre-hook on the child, and the child's own output with a
forward hook; both are averaged over space batch by batch, so memory is N x channels per tensor
whatever the input resolution.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from dataclasses import dataclass

import torch
from torch import nn

import snacs.distributed as ddp
from snacs.errors import DataError
from snacs.pairs import Topology

log = logging.getLogger(__name__)

__all__ = ["Activations", "collect_activations"]


@dataclass
class Activations:
    """Spatial means per pair: `parents[name]` (N x n_parent), `children[name]` (N x n_child)."""

    parents: dict[str, torch.Tensor]
    children: dict[str, torch.Tensor]
    labels: torch.Tensor

    @property
    def n(self) -> int:
        return int(self.labels.numel())

    def nbytes(self) -> int:
        seen: set[int] = set()  # the pairs of one child share its output tensor
        total = 0
        for d in (self.parents, self.children):
            for t in d.values():
                if id(t) not in seen:
                    seen.add(id(t))
                    total += t.numel() * t.element_size()
        return total


def _spatial_mean(t: torch.Tensor, channels: int) -> torch.Tensor:
    if t.dim() > 2:
        return t.flatten(2).mean(-1)
    if t.shape[1] != channels:  # a Linear reading a flattened C x H x W map
        return t.reshape(t.shape[0], channels, -1).mean(-1)
    return t


def _trimmer():
    try:
        import ctypes

        return ctypes.CDLL("libc.so.6").malloc_trim
    except (OSError, AttributeError):  # not glibc: nothing to do
        return None


_MALLOC_TRIM = _trimmer()


def _release_free_memory() -> None:
    """Give freed heap pages back to the OS (glibc).

    The small per-batch means kept between batches pin the heap around the freed forward-pass
    buffers, so without this the resident set grows by ~100 MiB per ResNet-50 batch at 224x224
    (measured: 7 GiB peak for 40 batches, 0.8 GiB with it; benchmarks/memory_resnet50.py).
    """
    if _MALLOC_TRIM is not None:
        _MALLOC_TRIM(0)


def _gather(topology: Topology, by_child: dict[str, list], parents: dict[str, list],
            children: dict[str, list], labels: list, counts: list[int], widths: dict[str, int]
            ) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor], torch.Tensor]:
    """Every rank's per-batch means concatenated in rank order: the batches' original order,
    since each rank ran a contiguous block of them. A rank with no batches contributes 0 rows.

    Each tensor is gathered on its own (and this rank's copy dropped once it is), so a rank
    holds the gathered statistics plus at most one of its own tensors, not two copies of all.
    """
    def local(chunks: list, width: int) -> torch.Tensor:
        out = torch.cat(chunks) if chunks else torch.empty((0, width), dtype=torch.float32)
        chunks.clear()
        return out

    parent_of = {}
    for p in topology.pairs:
        parent_of[p.name] = ddp.gather_rows(local(parents[p.name], widths[f"p:{p.name}"]), counts)
    child_of = {}
    for child, ps in by_child.items():
        first = ps[0].name
        child_of[child] = ddp.gather_rows(local(children[first], widths[f"c:{first}"]), counts)
        for p in ps[1:]:
            children[p.name].clear()
    label_of = ddp.gather_rows(torch.cat(labels) if labels else torch.empty(0, dtype=torch.long),
                               counts)
    return parent_of, child_of, label_of


@torch.no_grad()
def collect_activations(
    model: nn.Module,
    topology: Topology,
    batches: Iterable[tuple[torch.Tensor, torch.Tensor]],
    *,
    progress: bool = False,
    total: int | None = None,
    distributed: bool = False,
) -> Activations:
    """Run `model` (eval mode) over `batches` and return the spatial means of every pair.

    Args:
        distributed: under an initialised torch.distributed process group of several ranks,
            run this rank's contiguous block of the batches only and gather every rank's means
            (`snacs.distributed`), so that every rank returns what one process returns over all
            the batches: same order, same bits. `batches` must then have a length (a list, a
            tuple, a snacs `BatchLoader`) and every rank must pass the same ones. Without a
            process group this changes nothing.
    """
    rank, size = ddp.world() if distributed else (0, 1)
    if size > 1:
        batches = ddp.shard_batches(batches, rank, size)
        total = len(batches)  # type: ignore[arg-type]
    modules = dict(model.named_modules())
    parents: dict[str, list[torch.Tensor]] = {p.name: [] for p in topology.pairs}
    children: dict[str, list[torch.Tensor]] = {p.name: [] for p in topology.pairs}
    hooks = []
    by_child: dict[str, list] = {}
    for p in topology.pairs:
        by_child.setdefault(p.child, []).append(p)
    for child, ps in by_child.items():
        m = modules[child]
        width = (m.in_features if isinstance(m, nn.Linear) else m.in_channels) // ps[0].spatial
        index = [None if p.in_index is None else torch.as_tensor(p.in_index) for p in ps]

        def pre(mod, inp, ps=ps, width=width, index=index):
            a = _spatial_mean(inp[0].detach(), width).float()
            for p, idx in zip(ps, index, strict=True):  # a concatenation: each producer's own slice
                parents[p.name].append(a if idx is None else a[:, idx])

        def post(mod, inp, out, ps=ps):
            c = _spatial_mean(out.detach(), ps[0].n_child).float()
            for p in ps:  # one tensor shared by the pairs of one child
                children[p.name].append(c)

        hooks.append(m.register_forward_pre_hook(pre))
        hooks.append(m.register_forward_hook(post))
    labels = []
    was_training = model.training
    model.eval()
    it = batches
    if progress:
        from tqdm.auto import tqdm

        it = tqdm(batches, desc="activations", total=total, leave=False, dynamic_ncols=True)

    def run() -> None:
        try:
            for x, y in it:
                model(x)
                labels.append(torch.as_tensor(y).long().reshape(-1))
                del x
                _release_free_memory()
        finally:
            for h in hooks:
                h.remove()
            model.train(was_training)

    if size > 1:
        def local_pass() -> tuple[int, dict[str, int] | None]:
            run()
            n = sum(t.numel() for t in labels)
            widths = None
            if labels:
                widths = {}
                for kind, d in (("p", parents), ("c", children)):
                    for k, chunks in d.items():
                        if sum(len(c) for c in chunks) != n:
                            raise DataError(
                                f"the calibration batches hold {n} labels but "
                                f"{sum(len(c) for c in chunks)} inputs; give one label per input")
                        widths[f"{kind}:{k}"] = int(chunks[0].shape[1])
            return n, widths

        # an error on one rank (a bad batch, a failing forward pass) is raised on every rank
        meta = ddp.call_and_gather(local_pass)
        counts = [n for n, _ in meta]
        if not sum(counts):
            raise DataError("the calibration data is empty; give at least one batch")
        widths = next(w for n, w in meta if n)
        parent_of, child_of, label_of = _gather(topology, by_child, parents, children, labels,
                                                counts, widths)
    else:
        run()
        if not labels:
            raise DataError("the calibration data is empty; give at least one batch")
        child_of = {child: torch.cat(children[ps[0].name]) for child, ps in by_child.items()}
        parent_of = {k: torch.cat(v) for k, v in parents.items()}
        label_of = torch.cat(labels)
    acts = Activations(
        parents=parent_of,
        children={p.name: child_of[p.child] for p in topology.pairs},
        labels=label_of,
    )
    for kind, d in (("input of", acts.parents), ("output of", acts.children)):
        for k, t in d.items():
            if not torch.isfinite(t).all():
                raise DataError(
                    f"non-finite activations at the {kind} {k!r}: the model has diverged or its "
                    "weights are corrupt; check the checkpoint with `snacs evaluate` first"
                )
    log.info("activations: %d samples, %.1f MiB", acts.n, acts.nbytes() / 2**20)
    return acts
