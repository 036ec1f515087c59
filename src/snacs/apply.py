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
    for p in topology.pairs:
        keep = np.asarray(plan.keep.get(p.name, []), dtype=bool)
        if keep.size == 0 or keep.all():
            continue
        m = modules[p.child]
        cmask = torch.as_tensor(expand_groups(keep, p.n_child, p.n_parent))
        if m.weight.dim() == 4:
            wmask = cmask[:, :, None, None].expand_as(m.weight).float()
        else:
            wmask = cmask.repeat_interleave(p.spatial, dim=1).float()
        prune.custom_from_mask(m, "weight", wmask.contiguous())
        dead = ~cmask.any(1)
        if dead.any() and not p.is_classifier:
            _silence_filters(model, topology, p.child, dead)
    return model


def _silence_filters(model: nn.Module, topology: Topology, child: str, dead: torch.Tensor) -> None:
    """A filter with no remaining input outputs a constant; mask its bias and the BN after it so
    the constant is zero and the channel becomes exactly removable."""
    modules = dict(model.named_modules())
    keep = (~dead).float()
    m = modules[child]
    if m.bias is not None:
        prune.custom_from_mask(m, "bias", keep.clone())
    cg = topology.group_of_producer(child)
    norms = []
    if cg is not None and len(cg.producers) == 1:
        norms = cg.norms  # the whole chain, depthwise BN included
    elif child in topology.bn_after:
        norms = [topology.bn_after[child]]
    for bn_name in norms:
        bn = modules[bn_name]
        if bn.num_features != keep.numel():
            continue
        for attr in ("weight", "bias"):
            if getattr(bn, attr, None) is not None:
                old = getattr(bn, attr + "_mask", None)
                mask = keep.clone() if old is None else old * keep
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


def _zero_in(m: nn.Module, channels: int) -> torch.Tensor:
    """Per input channel: True when every weight reading it is zero."""
    w = m.weight.detach()
    w = w.reshape(w.shape[0], channels, -1)
    return (w == 0).all(dim=2).all(dim=0)


def export_slim(model: nn.Module, input_shape: tuple[int, ...]) -> nn.Module:
    """Physically remove what connection masks fully disconnect; outputs are unchanged.

    A channel goes when every (non-depthwise) layer reading it has only zero weights for it, or
    when its single producer's filter is dead (zero weights, zero bias, zero BN affine).
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
        for c in cg.consumers:
            unread &= _zero_in(modules[c], n)
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
                if bn.num_features == n and bn.affine:
                    dead &= (bn.weight.detach() == 0) & (bn.bias.detach() == 0)
            for d in cg.depthwise:
                if modules[d].bias is not None:
                    dead &= modules[d].bias.detach() == 0
        idx = torch.nonzero(unread | dead).flatten().tolist()
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
