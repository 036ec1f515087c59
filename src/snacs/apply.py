"""Apply a plan: physical channel removal (filter) or held masks (connection), and the exporter
that turns a masked model into a physically slimmed one (SPEC §6)."""

from __future__ import annotations

import copy
import logging

import numpy as np
import torch
import torch_pruning as tp
from torch import nn
from torch.nn.utils import prune

from snacs.limits import expand_groups
from snacs.pairs import Topology, find_topology
from snacs.plan import Plan

log = logging.getLogger(__name__)

__all__ = ["apply_plan", "remove_channels", "export_slim", "make_masks_permanent", "recalibrate_bn"]


def _out_fn(m: nn.Module):
    return tp.prune_conv_out_channels if isinstance(m, nn.Conv2d) else tp.prune_linear_out_channels


def _graph(model: nn.Module, input_shape) -> tp.DependencyGraph:
    from snacs.models import customized_pruners

    return tp.DependencyGraph().build_dependency(
        model, example_inputs=torch.zeros(1, *input_shape), verbose=False,
        customized_pruners=customized_pruners())


def remove_channels(model: nn.Module, topology: Topology, remove: dict[int, list[int]]) -> None:
    """Physically remove channels (in place) with torch-pruning, keeping BN and readers in step."""
    if not remove:
        return
    was_training = model.training
    model.eval()
    dg = _graph(model, topology.input_shape)
    modules = dict(model.named_modules())
    for gid, idx in sorted(remove.items()):
        if not idx:
            continue
        producer = modules[topology.groups[gid].producers[0]]
        group = dg.get_pruning_group(producer, _out_fn(producer), idxs=list(idx))
        if not dg.check_pruning_group(group):
            raise RuntimeError(f"torch-pruning refused to remove {len(idx)} channels of group {gid}")
        group.prune()
    model.train(was_training)


def apply_plan(model: nn.Module, topology: Topology, plan: Plan) -> nn.Module:
    """A pruned copy of `model` (the input is never modified)."""
    model = safe_deepcopy(model)
    if plan.granularity == "filter":
        remove_channels(model, topology, plan.remove)
        return model
    modules = dict(model.named_modules())
    by_child: dict[str, list] = {}
    for p in topology.pairs:
        keep = np.asarray(plan.keep.get(p.name, []), dtype=bool)
        if keep.size == 0 or keep.all():
            continue
        by_child.setdefault(p.child, []).append(
            (p, torch.as_tensor(expand_groups(keep, p.n_child, p.n_parent))))
    for child, items in by_child.items():
        m = modules[child]
        p0 = items[0][0]
        n_in = m.in_channels if isinstance(m, nn.Conv2d) else m.in_features // p0.spatial
        full = torch.ones(p0.n_child, n_in, dtype=torch.bool)  # filters x input channels
        for p, cmask in items:  # one slice per concatenated producer
            cols = torch.as_tensor(p.in_index if p.in_index is not None else range(p.n_parent))
            full[:, cols] &= cmask
        real = full
        if isinstance(m, nn.Conv2d) and m.groups > 1:  # the block diagonal the weight holds
            per_out, per_in = m.out_channels // m.groups, m.in_channels // m.groups
            idx = (torch.arange(m.out_channels) // per_out)[:, None] * per_in \
                + torch.arange(per_in)[None, :]
            real = torch.gather(full, 1, idx)
        if m.weight.dim() == 4:
            wmask = real[:, :, None, None].expand_as(m.weight).float()
        else:
            wmask = real.repeat_interleave(p0.spatial, dim=1).float()
        prune.custom_from_mask(m, "weight", wmask.contiguous())
        dead = ~real.any(1)
        if dead.any() and not p0.is_classifier:
            _silence_filters(model, topology, child, dead)
    return model


def _norm_index(cg, bn: nn.Module, name: str) -> list[int] | None:
    """Features of BatchNorm `name` that carry the group's channels, or None if not known."""
    if name in cg.index:
        return cg.index[name]
    return list(range(cg.channels)) if bn.num_features == cg.channels else None


def _silence_filters(model: nn.Module, topology: Topology, child: str, dead: torch.Tensor) -> None:
    """A filter with no remaining input outputs a constant; mask its bias and the BN after it so
    the constant is zero and the channel becomes exactly removable."""
    modules = dict(model.named_modules())
    keep = (~dead).float()
    m = modules[child]
    if m.bias is not None:
        prune.custom_from_mask(m, "bias", keep.clone())
    cg = topology.group_of_producer(child)
    norms: list[tuple[str, list[int] | None]] = []
    if cg is not None and len(cg.producers) == 1:
        # the whole chain, depthwise BN included, and BNs after a concatenation at their offset
        norms = [(b, _norm_index(cg, modules[b], b)) for b in cg.norms]
    elif child in topology.bn_after:
        norms = [(topology.bn_after[child], list(range(keep.numel())))]
    for bn_name, where in norms:
        bn = modules[bn_name]
        if where is None:
            continue
        bkeep = torch.ones(bn.num_features)
        for c, f in enumerate(where):
            if f >= 0 and dead[c]:
                bkeep[f] = 0.0
        for attr in ("weight", "bias"):
            if getattr(bn, attr, None) is not None:
                old = getattr(bn, attr + "_mask", None)
                mask = bkeep.clone() if old is None else old * bkeep
                if old is not None:
                    prune.remove(bn, attr)
                prune.custom_from_mask(bn, attr, mask)


def safe_deepcopy(model: nn.Module) -> nn.Module:
    """deepcopy that works on masked models (their `weight` is a computed, non-leaf tensor)."""
    for m in model.modules():
        for attr in ("weight", "bias"):
            if hasattr(m, attr + "_mask"):
                setattr(m, attr, (getattr(m, attr + "_orig") * getattr(m, attr + "_mask")).detach())
    return copy.deepcopy(model)


def make_masks_permanent(model: nn.Module) -> nn.Module:
    """Fold every mask into its tensor (removes the pruning re-parametrisation), in place."""
    for m in model.modules():
        for attr in ("weight", "bias"):
            if hasattr(m, attr + "_mask"):
                prune.remove(m, attr)
    return model


def _zero_in(m: nn.Module, spatial: int) -> torch.Tensor:
    """Per input channel of reader `m`: True when every weight reading it is zero."""
    from snacs.scores import block_diagonal

    w = m.weight.detach()
    if w.dim() > 2 and getattr(m, "groups", 1) > 1:
        w = block_diagonal(w, m.groups)
    w = w.reshape(w.shape[0], w.shape[1] // spatial if w.dim() == 2 else w.shape[1], -1)
    return (w == 0).all(dim=2).all(dim=0)


def export_slim(model: nn.Module, input_shape: tuple[int, ...]) -> nn.Module:
    """Physically remove what connection masks fully disconnect; outputs are unchanged.

    A channel goes when every (non-depthwise) layer reading it has only zero weights for it, or
    when its single producer's filter is dead (zero weights, zero bias, zero BN affine).
    Channels tied by a grouped convolution (`ChannelGroup.units`) go only all together.
    Returns a new model without masks; the input is not modified.
    """
    model = make_masks_permanent(safe_deepcopy(model))
    topo = find_topology(model, input_shape)
    modules = dict(model.named_modules())
    remove: dict[int, list[int]] = {}
    for cg in topo.groups:
        if not cg.prunable:
            continue
        n = cg.channels
        unread = torch.ones(n, dtype=torch.bool)
        spatial = {p.child: p.spatial for p in topo.pairs if p.group == cg.id}
        for c in cg.consumers:
            zero = _zero_in(modules[c], spatial.get(c, 1))
            unread &= zero[torch.as_tensor(cg.where(c))]
        if cg.others:  # a custom layer (e.g. a padded shortcut) reads them too: not provable
            unread[:] = False
        dead = torch.zeros(n, dtype=torch.bool)
        if len(cg.producers) == 1:
            p = modules[cg.producers[0]]
            w = p.weight.detach().reshape(p.weight.shape[0], -1)
            dead = (w == 0).all(1)
            if p.bias is not None:
                dead &= p.bias.detach() == 0
            for bn_name in cg.norms:
                bn = modules[bn_name]
                where = _norm_index(cg, bn, bn_name)
                if where is not None and bn.affine:
                    f = torch.as_tensor(where)
                    dead &= (bn.weight.detach()[f] == 0) & (bn.bias.detach()[f] == 0)
            for d in cg.depthwise:
                if modules[d].bias is not None:
                    dead &= modules[d].bias.detach()[torch.as_tensor(cg.where(d))] == 0
        gone = unread | dead
        if cg.units:
            whole = [u for u in cg.units if bool(gone[torch.as_tensor(u)].all())]
            whole = whole[: len(cg.units) - 1]  # keep one unit so every layer still exists
            idx = sorted(c for u in whole for c in u)
        else:
            idx = torch.nonzero(gone).flatten().tolist()
            if len(idx) >= n:
                idx = idx[: n - 1]  # keep one channel so every layer still exists
        if idx:
            remove[cg.id] = idx
    remove_channels(model, topo, remove)
    return model


@torch.no_grad()
def recalibrate_bn(model: nn.Module, batches) -> None:
    """Re-estimate BatchNorm running statistics on `batches` (in place, no gradient).

    Removing a layer's inputs shifts its output distribution, so the BN statistics recorded on the
    unpruned network no longer match and the pruned network's accuracy collapses before
    fine-tuning. A forward pass over the calibration set in train mode, with a cumulative average
    (momentum None), puts them back; weights are not touched.
    """
    bns = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)
           and m.track_running_stats]
    if not bns:
        return
    momentum = {m: m.momentum for m in bns}
    for m in bns:
        m.reset_running_stats()
        m.momentum = None
    was_training = model.training
    model.train()
    try:
        for x, _ in batches:
            model(x)
    finally:
        for m in bns:
            m.momentum = momentum[m]
        model.train(was_training)
