"""Channel selections of every compared method, in one harness (SPEC §9).

Every method returns the same thing: ``remove[group id] = channel indices`` over the prunable
channel groups of :func:`snacs.pairs.find_topology`. The harness (``benchmarks.compare``) then
applies it with :func:`snacs.apply.remove_channels`, fine-tunes and evaluates, identically for all.

* ``snacs``: ``SNACS(mode="target", relax_limits=True).fit(...)``; the plan of another budget is
  rebuilt from the same fitted scores, probe curves and protection with
  :func:`snacs.plan.relax_limits` and :func:`snacs.plan.make_plan` (the plan is a pure function
  of those, so this equals a fresh ``fit`` at that target, minus the scoring). Within the
  limits the limit fraction stays 0.7; above them it is raised just enough.
* ``snacs-ul``: the fully automatic mode, at whatever budget its limits give.
* ``snacs-global``: the same fitted scores and protection, the budget spread across layers by
  ``SNACS(allocation="global")`` (:func:`snacs.allocation.plan_global`): layer-mean-normalised
  ACMI ranked across all layers, the rule every non-SNACS method below is given too.
* ``snacs-select``: both of the above plans of the budget, the one whose pruned model (BN
  re-estimated on the fit's calibration images) is more accurate on those images
  (``SNACS(allocation="select")``, :func:`snacs.allocation.select_allocation`).
* ``snacs-nolimits``: the same fitted scores and protection with the per-layer limits lifted
  (the cap of ``limits="none"``), so budgets above what the limits allow can be compared; it is
  not the paper's method, it isolates how good the ACMI ranking is.
* ``mint``: the same pipeline with MINT's settings: geometric CMI (``gmi``), φ = 1, one fixed cap
  for every layer, no sensitivity. GMI is O(N²) per (child group, parent group) cell, so MINT
  runs with fewer calibration samples and coarser groups (see ``MINT_PARAMS``).
* ``l1``: Li et al. (ICLR 2017) filter L1 norms, ranked **globally**: a channel's score is the
  sum over the coupled group's producers of Σ|W| of its filter.
* ``random``: uniform random scores (seeded).
* ``tp-magnitude`` / ``tp-taylor``: torch-pruning's ``GroupMagnitudeImportance`` (group L2) and
  ``GroupTaylorImportance`` (|w·∂L/∂w|, gradient summed over calibration batches), computed on
  each coupled group of a DependencyGraph built with ``snacs.models.customized_pruners()``.
* ``hrank`` (Lin et al., CVPR 2020): the average rank of each channel's H x W feature map over
  the calibration images; a channel whose maps carry little information (low rank) goes first.
* ``chip`` (Sui et al., NeurIPS 2021): channel independence, the drop in the nuclear norm of a
  layer's C x HW feature-map matrix when one channel's row is zeroed, averaged over images.
* ``dense``: nothing removed; the base gets the same BN recalibration and fine-tune, so no pruned
  model is credited for the fine-tune itself.

HRank and CHIP read the feature map the next layer consumes (after BN, ReLU and any residual
addition: the same tensor SNACS's activations are taken from, before the spatial mean), caught
with a forward pre-hook on one consumer of each channel group, on the same class-balanced
calibration images as SNACS (``samples_per_class`` and seed of the cell).

Non-SNACS methods reach a budget the same way: each group's scores are divided by their mean
(torch-pruning's default "mean" normaliser, so groups of different size and scale compare),
every prunable channel except the best of its group (≥ 1 channel always stays) is ranked
globally, and the number of lowest-ranked channels removed is bisected until the removal
predicted by :func:`snacs.plan.count_plan` meets the budget.
"""

from __future__ import annotations

import copy
import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
import torch_pruning as tp
from torch import nn

from snacs.allocation import global_allocation
from snacs.pairs import Topology
from snacs.plan import Plan, count_plan

__all__ = [
    "METHODS",
    "BUDGET_METHODS",
    "MINT_PARAMS",
    "Selection",
    "prunable_groups",
    "select_to_budget",
    "l1_importance",
    "random_importance",
    "tp_importance",
    "fit_snacs",
    "state_key",
    "snacs_remove",
    "select",
]

# methods pruned to a budget, then the automatic one
BUDGET_METHODS = ("snacs", "snacs-global", "snacs-select", "snacs-nolimits", "snacs-hash",
                  "snacs-hash-global", "mint", "l1", "random", "tp-magnitude", "tp-taylor", "hrank", "chip")
# SNACS with the hash CMI estimator instead of the default (issue 14: the default is chosen by
# the pruning suites); "snacs-hash" plans like "snacs", "snacs-hash-global" like "snacs-global"
HASH_METHODS = {"snacs-hash": "snacs", "snacs-hash-global": "snacs-global"}


def state_key(method: str) -> str:
    """The scoring state a method's cells share: one SNACS fit per estimator, one per baseline."""
    if method in HASH_METHODS:
        return "snacs-hash"
    return "snacs" if method.startswith("snacs") else method
METHODS = BUDGET_METHODS + ("snacs-ul", "dense")
IMPORTANCE_METHODS = ("l1", "random", "tp-magnitude", "tp-taylor", "hrank", "chip")

# MINT (SPEC §9): φ = 1, one fixed cap, no sensitivity, the geometric estimator. The O(N²) GMI
# calls are kept affordable with 50 samples per class and at most 16 groups per layer side.
MINT_PARAMS: dict[str, Any] = {"estimator": "gmi", "phi": "none", "limits": 0.9,
                               "sensitivity": "none", "groups": 16, "samples_per_class": 50}
# calibration for torch-pruning's Taylor importance: a class-balanced set, gradient summed
TAYLOR_SAMPLES_PER_CLASS = 50
TAYLOR_BATCH = 100


@dataclass
class Selection:
    """What a method chose and what it cost."""

    method: str
    remove: dict[int, list[int]]
    predicted: dict[str, float]
    score_seconds: float  # scoring / importance (shared by every budget of one seed)
    select_seconds: float  # plan or budget search for this budget
    info: dict[str, Any] = field(default_factory=dict)

    @property
    def prune_seconds(self) -> float:
        return self.score_seconds + self.select_seconds


def prunable_groups(topology: Topology) -> list[int]:
    """Ids of the channel groups any method may prune (the ones SNACS scores)."""
    read = {p.group for p in topology.pairs}
    return [g.id for g in topology.groups if g.prunable and g.id in read]


def _plan(remove: dict[int, list[int]]) -> Plan:
    return Plan(granularity="filter", mode="target", remove=remove)


def select_to_budget(
    model: nn.Module,
    topology: Topology,
    importance: dict[int, np.ndarray],
    target: float,
    metric: str = "params",
    latency_table=None,
) -> tuple[dict[int, list[int]], dict[str, float]]:
    """Remove the globally lowest mean-normalised scores until `target` of `metric` is removed
    (:func:`snacs.allocation.global_allocation`, the rule SNACS's allocation="global" uses; a
    latency budget is priced by `latency_table`).

    Returns the removal and the predicted counts. Raises TargetError when even removing all but
    one channel of every group falls short.
    """
    return global_allocation(model, topology, importance, target, metric,
                             latency_table=latency_table)


# --------------------------------------------------------------------------- importances

def _modules(model: nn.Module) -> dict[str, nn.Module]:
    return dict(model.named_modules())


@torch.no_grad()
def l1_importance(model: nn.Module, topology: Topology) -> dict[int, np.ndarray]:
    """Li et al.'s filter L1 norm, summed over the producers of each coupled group."""
    mods = _modules(model)
    out = {}
    for gid in prunable_groups(topology):
        g = topology.groups[gid]
        imp = np.zeros(g.channels)
        for name in g.producers + g.depthwise:
            w = mods[name].weight.detach().abs()
            imp += w.reshape(w.shape[0], -1).sum(1).double().numpy()
        out[gid] = imp
    return out


def random_importance(topology: Topology, seed: int) -> dict[int, np.ndarray]:
    """Uniform random scores, one stream per seed."""
    rng = np.random.default_rng([int(seed), 7])
    return {gid: rng.random(topology.groups[gid].channels) for gid in prunable_groups(topology)}


def _out_fn(m: nn.Module):
    return tp.prune_conv_out_channels if isinstance(m, nn.Conv2d) else tp.prune_linear_out_channels


def _calibration_batches(data, seed: int, per_class: int, batch: int):
    from snacs.data import BatchLoader, class_balanced_indices

    counts = torch.bincount(torch.as_tensor(data.labels))
    per_class = max(1, min(per_class, int(counts[counts > 0].min())))
    idx = class_balanced_indices(data.labels, per_class, seed=seed)
    return BatchLoader(data, batch, indices=idx, shuffle=True, seed=seed)


def tp_importance(
    model: nn.Module,
    topology: Topology,
    kind: str,
    *,
    data=None,
    seed: int = 0,
) -> dict[int, np.ndarray]:
    """torch-pruning's group importance of every channel of every prunable group.

    Args:
        kind: "magnitude" (GroupMagnitudeImportance, p=2) or "taylor" (GroupTaylorImportance).
        data: training split for the Taylor gradient (class-balanced calibration batches).
    """
    from snacs.models import customized_pruners

    model = copy.deepcopy(model)
    model.eval()
    # normalizer=None: the budget search normalises every method's scores the same way
    if kind == "magnitude":
        imp_fn = tp.importance.GroupMagnitudeImportance(p=2, normalizer=None)
    elif kind == "taylor":
        imp_fn = tp.importance.GroupTaylorImportance(normalizer=None)
        if data is None:
            raise ValueError("Taylor importance needs calibration data")
        model.zero_grad(set_to_none=True)
        with torch.enable_grad():
            for x, y in _calibration_batches(data, seed, TAYLOR_SAMPLES_PER_CLASS, TAYLOR_BATCH):
                nn.functional.cross_entropy(model(x), y, reduction="sum").backward()
    else:
        raise ValueError(f"unknown torch-pruning importance {kind!r}")
    dg = tp.DependencyGraph().build_dependency(
        model, example_inputs=torch.zeros(1, *topology.input_shape), verbose=False,
        customized_pruners=customized_pruners())
    mods = _modules(model)
    out = {}
    for gid in prunable_groups(topology):
        g = topology.groups[gid]
        prod = mods[g.producers[0]]
        group = dg.get_pruning_group(prod, _out_fn(prod), idxs=list(range(g.channels)))
        v = imp_fn(group)
        if v is None:
            raise RuntimeError(f"torch-pruning gave no importance for group {gid}")
        out[gid] = v.detach().double().cpu().numpy()
    return out


# --------------------------------------------------------------------------- HRank and CHIP

def _feature_map_readers(topology: Topology) -> dict[int, tuple[str, int]]:
    """For each prunable group, one consumer that reads it and that consumer's channel count."""
    out: dict[int, tuple[str, int]] = {}
    for p in topology.pairs:
        if p.group in out or not topology.groups[p.group].prunable:
            continue
        out[p.group] = (p.child, p.n_parent)
    return {g: out[g] for g in prunable_groups(topology) if g in out}


CHIP_CHUNK = 1 << 24  # float64 elements of one batch of masked Gram matrices (128 MiB)


def chip_drop(x: torch.Tensor) -> torch.Tensor:
    """CHIP's channel independence, summed over the batch: for each channel c, the drop of the
    nuclear norm of the C x S feature-map matrix A of an image when row c is zeroed.

    ||A||_* = Σ sqrt(eig(A Aᵀ)) = Σ sqrt(eig(Aᵀ A)). With C ≤ S, zeroing row c zeroes row and
    column c of the C x C Gram matrix A Aᵀ; with C > S (deep layers: many channels, a small
    map), it subtracts a_c a_cᵀ from the S x S Gram matrix Aᵀ A. Either way each channel costs
    one min(C, S)-sized eigenproblem, not a C x S SVD; channels are done in chunks so memory
    stays bounded (`CHIP_CHUNK`).

    Args:
        x: B x C x S feature maps.
    Returns:
        C drops (float64), summed over the B images.
    """
    x = x.double()
    b, c, s = x.shape
    small_side = c <= s
    gram = (torch.einsum("bcs,bds->bcd", x, x) if small_side
            else torch.einsum("bcs,bct->bst", x, x))  # B x k x k, k = min(C, S)
    k = gram.shape[-1]
    full = torch.linalg.eigvalsh(gram).clamp_min(0).sqrt().sum(-1)  # B
    out = torch.zeros(c, dtype=torch.float64)
    step = max(1, CHIP_CHUNK // max(1, b * k * k))
    for lo in range(0, c, step):
        idx = torch.arange(lo, min(c, lo + step))
        if small_side:  # row and column c zeroed
            keep = torch.ones(idx.numel(), k, dtype=x.dtype)
            keep[torch.arange(idx.numel()), idx] = 0.0
            masked = gram.unsqueeze(1) * (keep[:, :, None] * keep[:, None, :])[None]
        else:  # Aᵀ A − a_c a_cᵀ
            rows = x[:, idx, :]  # B x n x S
            masked = gram.unsqueeze(1) - rows[..., :, None] * rows[..., None, :]
        nuc = torch.linalg.eigvalsh(masked).clamp_min(0).sqrt().sum(-1)  # B x n
        out[idx] = (full[:, None] - nuc).sum(0)
    return out


@torch.no_grad()
def feature_map_importance(
    model: nn.Module,
    topology: Topology,
    data,
    kind: str,
    *,
    seed: int = 0,
    per_class: int = 250,
    batch: int = 100,
) -> dict[int, np.ndarray]:
    """HRank or CHIP score of every channel of every prunable group (higher = keep).

    Args:
        kind: "hrank" (mean matrix rank of each channel's H x W map) or "chip" (mean drop of the
            nuclear norm of the C x HW map matrix when the channel's row is zeroed).
        data: training split; the class-balanced calibration images (`per_class`, `seed`).
    """
    if kind not in ("hrank", "chip"):
        raise ValueError(f"unknown feature-map criterion {kind!r}")
    from snacs.data import BatchLoader, class_balanced_indices

    readers = _feature_map_readers(topology)
    mods = _modules(model)
    sums = {g: torch.zeros(topology.groups[g].channels, dtype=torch.float64) for g in readers}
    count = 0

    def score(x: torch.Tensor, channels: int) -> torch.Tensor:
        x = x.float()
        if x.dim() == 2:  # a Linear reader: a C x HW flatten, or one value per channel
            x = x.reshape(x.shape[0], channels, -1)
        else:
            x = x.flatten(2)  # B x C x HW
        if kind == "hrank":
            if x.dim() == 3 and x.shape[-1] == 1:
                return (x[..., 0].abs() > 0).double().sum(0)
            side = int(round(x.shape[-1] ** 0.5))
            maps = x.reshape(x.shape[0] * channels, side, -1)
            return torch.linalg.matrix_rank(maps).reshape(x.shape[0], channels).double().sum(0)
        return chip_drop(x)

    captured: dict[int, torch.Tensor] = {}
    hooks = []
    for gid, (child, _n) in readers.items():
        def pre(_m, inp, gid=gid):
            captured[gid] = inp[0].detach()
        hooks.append(mods[child].register_forward_pre_hook(pre))
    was_training = model.training
    model.eval()
    idx = class_balanced_indices(data.labels, per_class, seed=seed,
                                 num_classes=getattr(data, "num_classes", None))
    try:
        for x, _ in BatchLoader(data, batch, indices=idx):
            captured.clear()
            model(x)
            for gid, (_child, n) in readers.items():
                t = captured[gid]
                if t.dim() == 4 and t.shape[1] != n:
                    raise RuntimeError(f"group {gid}: reader sees {t.shape[1]} channels, not {n}")
                sums[gid] += score(t, n)
            count += int(x.shape[0])
    finally:
        for h in hooks:
            h.remove()
        model.train(was_training)
    return {g: (v / max(count, 1)).numpy() for g, v in sums.items()}


# --------------------------------------------------------------------------- SNACS and MINT

def fit_snacs(model: nn.Module, data, *, seed: int, **params: Any):
    """A fitted SNACS (scores, limits, protection); `timings_` holds the stage times."""
    from snacs import SNACS

    # fitted in mode "ul" (always feasible); `snacs_remove` rebuilds the plan of each budget
    p = SNACS(granularity="filter", seed=seed, **{**params, "mode": "ul", "target": None})
    return p.fit(model, data)


NO_LIMIT = 0.99  # what SNACS(limits="none") uses as the cap of every pair


def snacs_remove(pruner, model: nn.Module, *, mode: str, target: float | None = None,
                 metric: str = "params", lift_limits: bool = False, relax: bool = False,
                 normalise: str = "readers", latency_table=None
                 ) -> tuple[dict[int, list[int]], dict[str, float]]:
    """The plan of a fitted pruner at another mode/target, without rescoring.

    `relax`: in mode "target", raise the limit fraction just enough when the target is above
    the limits (`SNACS(relax_limits=True)`); the fraction used is returned as
    predicted["limit_fraction"]. `normalise`: see `snacs.plan.make_plan`. `latency_table` prices
    a latency budget (metric "latency").
    """
    from snacs.plan import plan_within_limits

    limits = ({k: NO_LIMIT for k in pruner.limits_} if lift_limits else pruner.limits_)
    relaxing = relax and bool(getattr(pruner, "limit_curves_", None))
    plan, fraction, _ = plan_within_limits(
        model, pruner.topology_, pruner.scores_, limits, pruner.sensitivity_, mode=mode,
        target=target, target_metric=metric, groups=pruner.groups, normalise=normalise,
        latency_table=latency_table, curves=pruner.limit_curves_ if relaxing else None,
        fraction=pruner.limit_fraction if relaxing else None)
    pred = dict(plan.predicted)
    if fraction is not None:
        pred["limit_fraction"] = float(fraction)
    return {int(k): list(v) for k, v in plan.remove.items()}, pred


def score_method(method: str, model: nn.Module, topology: Topology, data, *, seed: int,
                 snacs_params: dict | None = None, mint_params: dict | None = None):
    """The per-seed scoring state of a method: a fitted pruner or an importance dict."""
    if method in ("snacs", "snacs-ul", "snacs-nolimits", "snacs-global", "snacs-select"):
        return fit_snacs(model, data, seed=seed, **(snacs_params or {}))
    if method in HASH_METHODS:
        return fit_snacs(model, data, seed=seed, **{**(snacs_params or {}), "estimator": "hash"})
    if method == "mint":
        return fit_snacs(model, data, seed=seed, **(mint_params or MINT_PARAMS))
    if method == "l1":
        return l1_importance(model, topology)
    if method == "random":
        return random_importance(topology, seed)
    if method == "tp-magnitude":
        return tp_importance(model, topology, "magnitude")
    if method == "tp-taylor":
        return tp_importance(model, topology, "taylor", data=data, seed=seed)
    if method in ("hrank", "chip"):
        per_class = (snacs_params or {}).get("samples_per_class", 250)
        return feature_map_importance(model, topology, data, method, seed=seed,
                                      per_class=per_class)
    if method == "dense":
        return {}
    raise ValueError(f"unknown method {method!r}; choose one of {', '.join(METHODS)}")


# methods whose budget is spread by the global allocation, so a latency table can price it
LATENCY_METHODS = ("snacs", "snacs-global", "snacs-select", "snacs-hash", "snacs-hash-global", "l1", "random", "tp-magnitude", "tp-taylor", "hrank", "chip")


def select_from_state(method: str, state, model: nn.Module, topology: Topology, *,
                      target: float | None, metric: str = "params", latency_table=None,
                      data=None) -> tuple[dict[int, list[int]], dict[str, float]]:
    """Removal at one budget from a method's scoring state (see `score_method`). A latency
    budget (metric "latency", priced by `latency_table`) applies to `LATENCY_METHODS` only.
    `data`: the training split the state was fitted on ("snacs-select" compares its two plans
    on the fit's calibration images)."""
    if method == "snacs-ul":
        return snacs_remove(state, model, mode="ul")
    if method == "dense":
        return {}, count_plan(model, topology, _plan({}))
    if target is None:
        raise ValueError(f"{method} needs a budget")
    method = HASH_METHODS.get(method, method)  # same plan rule, other scores
    if metric == "latency" and method not in LATENCY_METHODS:
        raise ValueError(f"{method} has no latency allocation; latency budgets take "
                         f"{', '.join(LATENCY_METHODS)}")
    if method == "snacs":
        return snacs_remove(state, model, mode="target", target=target, metric=metric, relax=True,
                            latency_table=latency_table)
    if method == "snacs-select":
        return _select_allocation(state, model, target=target, metric=metric, data=data,
                                  latency_table=latency_table)
    if method == "mint":
        return snacs_remove(state, model, mode="target", target=target, metric=metric)
    if method == "snacs-global":
        from snacs.allocation import plan_global

        plan = plan_global(model, state.topology_, state.scores_, state.sensitivity_,
                           target=target, metric=metric, groups=state.groups,
                           latency_table=latency_table)
        return {int(k): list(v) for k, v in plan.remove.items()}, dict(plan.predicted)
    if method == "snacs-nolimits":
        return snacs_remove(state, model, mode="target", target=target, metric=metric,
                            lift_limits=True)
    return select_to_budget(model, topology, state, target, metric, latency_table)


def _select_allocation(state, model: nn.Module, *, target: float, metric: str, data,
                       latency_table=None) -> tuple[dict[int, list[int]], dict[str, float]]:
    """``SNACS(allocation="select", relax_limits=True)`` from a fitted state: the "snacs" and
    the "snacs-global" plan of the budget, the one more accurate on the fit's calibration images
    after BatchNorm re-estimation (:func:`snacs.allocation.select_allocation`, the library's own
    choice). The predicted counts carry both proxies and the choice (``allocation_limits`` 1 or 0)."""
    from snacs.allocation import select_allocation
    from snacs.data import BatchLoader
    from snacs.errors import TargetError

    if data is None or getattr(state, "calibration_indices_", None) is None:
        raise ValueError("snacs-select compares its plans on the fit's calibration images: pass "
                         "the training split the state was fitted on as `data`")
    cands = {}
    try:
        cands["limits"] = snacs_remove(state, model, mode="target", target=target, metric=metric,
                                       relax=True, latency_table=latency_table)
    except TargetError:
        pass
    cands["global"] = select_from_state("snacs-global", state, model, state.topology_,
                                        target=target, metric=metric, latency_table=latency_table)
    batches = BatchLoader(data, state.batch_size, indices=state.calibration_indices_)
    name, trials = select_allocation(model, state.topology_,
                                     {k: _plan(v[0]) for k, v in cands.items()}, batches)
    remove, pred = cands[name]
    pred = {k: v for k, v in pred.items() if not (name == "global" and k == "limit_fraction")}
    pred.update({f"proxy_accuracy_{k}": t["accuracy"] for k, t in trials.items()})
    pred["allocation_limits"] = 1.0 if name == "limits" else 0.0
    return remove, pred


def select(method: str, model: nn.Module, topology: Topology, data, *, target: float | None,
           metric: str = "params", seed: int = 0, snacs_params: dict | None = None,
           mint_params: dict | None = None) -> Selection:
    """Score and select in one call (the compare harness reuses the scoring across budgets)."""
    t = time.perf_counter()
    state = score_method(method, model, topology, data, seed=seed, snacs_params=snacs_params,
                         mint_params=mint_params)
    t_score = time.perf_counter() - t
    t = time.perf_counter()
    remove, pred = select_from_state(method, state, model, topology, target=target, metric=metric,
                                     data=data)
    return Selection(method=method, remove=remove, predicted=pred, score_seconds=t_score,
                     select_seconds=time.perf_counter() - t,
                     info={"timings": dict(getattr(state, "timings_", {}))})
