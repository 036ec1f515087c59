"""Spreading a budget across layers: one global ranking of layer-normalised importances.

Every layer's channel-group scores are divided by that layer's mean score, so layers of
different width and scale compare by the *shape* of their distribution (torch-pruning's default
"mean" normaliser); the units (filter groups) of all layers are then ranked together and the
lowest are removed until the budget is met, counted with :func:`snacs.plan.count_plan` in the
budget's own metric (conv+linear weights or MACs). The best unit of every layer always stays, so
no layer disappears, and protected units (sensitivity) are never candidates.

Where the per-layer budget comes from is the one thing that differs from SNACS's limit-based
plan: there, each layer's share is decided by its own probe curve; here, by how the layer's
ACMI scores compare with every other layer's. The benchmark harness uses the same function for
every baseline criterion (L1 norm, Taylor, HRank, CHIP, ...), so methods differ only in their
scores.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
from torch import nn

from snacs.errors import TargetError
from snacs.pairs import Topology

__all__ = ["global_allocation", "budget_key", "predicted_counts", "calibration_accuracy",
           "select_allocation", "BUDGET_METRICS"]


BUDGET_METRICS = ("params", "macs", "latency")


def budget_key(metric: str) -> str:
    """The key of the predicted counts (:func:`snacs.plan.count_plan`, plus ``latency_removed``
    from a latency table) that a budget metric is measured by."""
    if metric not in BUDGET_METRICS:
        raise TargetError(f"budget metric must be 'params', 'macs' or 'latency', got {metric!r}")
    from snacs.plan import BUDGET_KEYS

    return BUDGET_KEYS[metric]


def predicted_counts(model: nn.Module, topology: Topology, plan, latency_table=None) -> dict[str, float]:
    """Weights and MACs after a filter plan, and with a latency table its predicted latency."""
    from snacs.plan import count_plan

    counts = count_plan(model, topology, plan)
    if latency_table is not None:
        counts.update(latency_table.price(model, topology, plan))
    return counts


def global_allocation(
    model: nn.Module,
    topology: Topology,
    importance: Mapping[int, np.ndarray],
    target: float,
    metric: str = "params",
    *,
    units: Mapping[int, np.ndarray] | None = None,
    protected: Mapping[int, set[int] | list[int]] | None = None,
    caps: Mapping[int, float] | None = None,
    latency_table=None,
) -> tuple[dict[int, list[int]], dict[str, float]]:
    """Remove the globally lowest mean-normalised units until `target` of `metric` is removed.

    Args:
        importance: per channel group id, one score per unit (higher = keep).
        target: fraction of conv+linear weights (``"params"``), MACs (``"macs"``) or predicted
            latency (``"latency"``, priced by `latency_table`) to remove.
        units: per group, the unit index of each channel (default: one channel per unit).
        protected: per group, units that are never removed.
        caps: per group, the largest fraction of its units that may go (default: all but one).
        latency_table: a :class:`snacs.latency.LatencyTable` of the model (metric "latency").

    Returns:
        ``remove[group id]`` = sorted channel indices, and the predicted counts.

    Raises:
        TargetError: even removing every candidate falls short of the target.
    """
    from snacs.plan import Plan

    key = budget_key(metric)
    if metric == "latency" and latency_table is None:
        raise TargetError("a latency budget needs a latency table (snacs.latency.measure_table)")
    cand_score, cand_gid, cand_unit = [], [], []
    for gid in sorted(importance):
        imp = np.asarray(importance[gid], dtype=np.float64)
        if imp.size < 2:
            continue
        mean = float(np.mean(np.abs(imp)))
        norm = imp / mean if mean > 0 else imp
        order = np.argsort(-norm, kind="stable")  # best first
        rest = order[1:][::-1]  # the best unit always stays; lowest first
        prot = set(protected.get(gid, ())) if protected else set()
        if prot:
            rest = rest[~np.isin(rest, list(prot))]
        if caps is not None and gid in caps:
            rest = rest[: max(0, min(int(np.floor(caps[gid] * imp.size)), imp.size - 1))]
        cand_score.append(norm[rest])
        cand_gid.append(np.full(rest.size, gid))
        cand_unit.append(rest)
    if not cand_score or not sum(c.size for c in cand_score):
        raise TargetError("no prunable channel group")
    score = np.concatenate(cand_score)
    gids = np.concatenate(cand_gid)
    unit = np.concatenate(cand_unit)
    order = np.lexsort((unit, gids, score))  # ascending score, ties by group then unit

    def removal(k: int) -> dict[int, list[int]]:
        chosen: dict[int, list[int]] = {}
        for i in order[:k]:
            chosen.setdefault(int(gids[i]), []).append(int(unit[i]))
        out = {}
        for g, us in sorted(chosen.items()):
            if units is None:
                out[g] = sorted(us)
            else:
                out[g] = sorted(int(c) for c in np.nonzero(np.isin(units[g], us))[0])
        return out

    def predicted(k: int) -> dict[str, float]:
        return predicted_counts(model, topology, Plan(granularity="filter", mode="target",
                                                      remove=removal(k)), latency_table)

    top = predicted(len(order))
    if top[key] < target:
        raise TargetError(f"{metric} budget {target:.0%} is out of reach: removing every candidate "
                          f"channel (all but the best of each layer, never protected ones) "
                          f"removes {top[key]:.1%}"
                          + ("; the rest of the latency (activations, pooling, each layer's cost "
                             "at one channel) does not shrink with channels: ask for less, or "
                             "measure at a larger batch size" if metric == "latency" else ""))
    lo, hi = 0, len(order)  # predicted(hi) meets the target; find the smallest such k
    while lo < hi:
        mid = (lo + hi) // 2
        if predicted(mid)[key] >= target:
            hi = mid
        else:
            lo = mid + 1
    return removal(hi), predicted(hi)


def plan_global(
    model: nn.Module,
    topology: Topology,
    scores: Mapping[str, np.ndarray],
    sens: Mapping,
    *,
    target: float,
    metric: str = "params",
    groups: int = 64,
    caps: Mapping[int, float] | None = None,
    latency_table=None,
):
    """A filter plan from ACMI scores by :func:`global_allocation`.

    A parent group's importance is its total connectivity to the layers reading it,
    Σ_readers Σ_j ρ[j, g] (as in SNACS's limit-based filter plan); protected groups stay.
    """
    from snacs.limits import group_index
    from snacs.plan import Plan, _importance
    from snacs.scores import n_groups

    importance, units, protected = {}, {}, {}
    for cg in topology.groups:
        if not cg.prunable or not any(p.group == cg.id for p in topology.pairs):
            continue
        importance[cg.id] = np.asarray(_importance(topology, scores, cg.id), dtype=np.float64)
        units[cg.id] = group_index(cg.channels, n_groups(cg.channels, groups))
        if cg.id in sens:
            protected[cg.id] = set(sens[cg.id].protected)
    remove, pred = global_allocation(model, topology, importance, target, metric, units=units,
                                     protected=protected, caps=caps, latency_table=latency_table)
    return Plan(granularity="filter", mode="target", remove=remove, predicted=pred)


def calibration_accuracy(model: nn.Module, topology: Topology, plan, batches) -> dict[str, float]:
    """Top-1 accuracy (%) and mean cross-entropy on the calibration `batches` of `model` pruned
    by `plan`, its BatchNorm statistics first re-estimated on the same batches (the state
    ``SNACS.apply`` hands back). `model` is not modified."""
    import torch

    from snacs.apply import apply_plan, recalibrate_bn

    pruned = apply_plan(model, topology, plan)
    recalibrate_bn(pruned, batches)
    pruned.eval()
    correct, total, loss = 0, 0, 0.0
    with torch.inference_mode():
        for x, y in batches:
            out = pruned(x)
            y = torch.as_tensor(y).reshape(-1)
            loss += float(torch.nn.functional.cross_entropy(out, y, reduction="sum"))
            correct += int((out.argmax(1) == y).sum())
            total += int(y.numel())
    if total == 0:
        raise TargetError("no calibration images to compare the allocations on")
    return {"accuracy": 100.0 * correct / total, "loss": loss / total, "samples": total}


def select_allocation(model: nn.Module, topology: Topology, candidates: Mapping[str, object],
                      batches) -> tuple[str, dict[str, dict[str, float]]]:
    """The candidate plan (name -> filter plan, all meeting one target) whose pruned model,
    BatchNorm re-estimated on the calibration images, is the most accurate on them; ties go to
    the lower cross-entropy, then to the first candidate. Returns (name, every candidate's
    :func:`calibration_accuracy`).

    The proxy is the accuracy the pruned model has before any fine-tuning, a cheap stand-in for
    the accuracy after it; how often it picks the plan that is better after the fine-tune is
    measured by the harness method ``snacs-select`` against ``snacs`` and ``snacs-global``
    (BENCHMARKS.md, "SNACS designs side by side").
    """
    if not candidates:
        raise TargetError("no allocation to choose from")
    trials = {name: calibration_accuracy(model, topology, plan, batches)
              for name, plan in candidates.items()}
    names = list(trials)
    best = max(names, key=lambda n: (trials[n]["accuracy"], -trials[n]["loss"], -names.index(n)))
    return best, trials
