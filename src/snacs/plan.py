"""From scores, limits and protection to a pruning plan (SPEC §6).

Granularities:
* ``filter``: a parent group's importance is its total connectivity to the next layer, Σ_j ρ[j,g],
  summed over every layer that reads the channel group (residual-coupled readers included). The
  least important groups are removed up to the limit, never protected ones.
* ``connection``: every (child group, parent group) connection with ρ ≤ c_ℓ is removed; protected
  child groups keep all their connections.

Modes: ``ul`` prunes every pair to its limit; ``global`` uses one quantile q of the pooled scores,
capped by each pair's limit; ``target`` bisects q until a fraction of parameters or MACs is removed.
"""

from __future__ import annotations

import logging
from dataclasses import asdict, dataclass, field

import numpy as np
from torch import nn

from snacs.errors import ConfigError, TargetError
from snacs.limits import LimitResult, connection_keep, expand_groups, group_index, limit_at
from snacs.pairs import Topology, is_depthwise
from snacs.scores import n_groups
from snacs.sensitivity import GroupSensitivity

log = logging.getLogger(__name__)

__all__ = ["Plan", "make_plan", "relax_limits", "plan_within_limits", "GRANULARITIES", "MODES",
           "count_plan", "kept_filter_channels"]

GRANULARITIES = ("filter", "connection")
MODES = ("ul", "global", "target")


@dataclass
class Plan:
    """What to remove. `keep[pair]` (connection) or `remove[group id]` channel indices (filter)."""

    granularity: str
    mode: str
    q: float | None = None
    keep: dict[str, list[list[bool]]] = field(default_factory=dict)
    remove: dict[int, list[int]] = field(default_factory=dict)
    limits: dict[str, float] = field(default_factory=dict)
    predicted: dict[str, float] = field(default_factory=dict)

    def to_dict(self) -> dict:
        d = asdict(self)
        d["remove"] = {str(k): v for k, v in self.remove.items()}
        return d

    def checksum(self) -> str:
        import hashlib
        import json

        return hashlib.sha256(json.dumps(self.to_dict(), sort_keys=True).encode()).hexdigest()


def _protected_rows(topology: Topology, sens: dict[int, GroupSensitivity], pair) -> set[int]:
    if pair.is_classifier:
        return set(range(pair.n_child))  # the classifier's outputs have no next layer
    cg = topology.group_of_producer(pair.child)
    if cg is None:
        return set()
    return set(sens[cg.id].protected) if cg.id in sens else set()


def _importance(topology: Topology, scores: dict[str, np.ndarray], gid: int) -> np.ndarray:
    pairs = [p for p in topology.pairs if p.group == gid]
    return sum(scores[p.name].sum(0) for p in pairs)


def _group_limit(topology: Topology, limits: dict[str, float], gid: int) -> float:
    return min(limits[p.name] for p in topology.pairs if p.group == gid)


NORMALISERS = ("readers", "mean", "cost")


def _filter_plan(topology, scores, limits, sens, groups, q, normalise="readers", cost=None
                 ) -> dict[int, list[int]]:
    """Channels to remove per prunable channel group; q=None means each group to its limit."""
    pooled, per = [], {}
    for cg in topology.groups:
        if not cg.prunable or not any(p.group == cg.id for p in topology.pairs):
            continue
        imp = _importance(topology, scores, cg.id)
        if normalise in ("mean", "cost"):  # relative to the layer's mean: compare by shape
            per[cg.id] = imp / max(float(np.mean(imp)), 1e-12)
            if normalise == "cost":  # per unit of what removing one channel saves
                per[cg.id] = per[cg.id] / max(cost[cg.id], 1e-12)
        else:
            readers = sum(scores[p.name].shape[0] for p in topology.pairs if p.group == cg.id)
            per[cg.id] = imp / max(readers, 1)  # mean connectivity per reader group
        pooled.append(per[cg.id])
    thr = None
    if q is not None:
        thr = -np.inf if q <= 0 else float(np.quantile(np.concatenate(pooled), min(q, 1.0)))
    out: dict[int, list[int]] = {}
    for cg in topology.groups:
        if cg.id not in per:
            continue
        imp = per[cg.id]
        g = len(imp)
        prot = set(sens[cg.id].protected) if cg.id in sens else set()
        gi = group_index(cg.channels, n_groups(cg.channels, groups))
        if cg.units:  # grouped convolutions: whole units (one channel per conv group) only
            units = [np.asarray(u, dtype=np.int64) for u in cg.units]
            uimp = np.array([float(imp[gi[u]].mean()) for u in units])
            uprot = {k for k, u in enumerate(units) if prot & set(gi[u].tolist())}
            cap = min(int(round(_group_limit(topology, limits, cg.id) * len(units))),
                      len(units) - 1)
            order = [k for k in np.argsort(uimp, kind="stable") if k not in uprot]
            if thr is not None:
                order = [k for k in order if uimp[k] <= thr]
            chosen = order[:max(cap, 0)]
            if chosen:
                out[cg.id] = sorted(int(c) for k in chosen for c in units[k])
            continue
        cap = min(int(round(_group_limit(topology, limits, cg.id) * g)), g - 1)
        order = [i for i in np.argsort(imp, kind="stable") if i not in prot]
        if thr is not None:
            order = [i for i in order if imp[i] <= thr]
        chosen = order[:max(cap, 0)]
        if chosen:
            out[cg.id] = sorted(int(c) for c in np.nonzero(np.isin(gi, chosen))[0])
    return out


def block_exists(pair, conv: nn.Module) -> np.ndarray | None:
    """For a grouped-conv child: which (child filter, parent channel) connections exist in its
    weight (filter and input in the same conv group); None when every connection exists."""
    if not isinstance(conv, nn.Conv2d) or conv.groups == 1:
        return None
    per_out = conv.out_channels // conv.groups
    per_in = conv.in_channels // conv.groups
    cols = np.asarray(pair.in_index if pair.in_index is not None else range(pair.n_parent))
    return (np.arange(pair.n_child)[:, None] // per_out) == (cols[None, :] // per_in)


def _connection_plan(topology, scores, limits, sens, q) -> dict[str, np.ndarray]:
    thr = None
    if q is not None:
        pooled = np.concatenate([np.unique(scores[p.name]) for p in topology.pairs])
        thr = -np.inf if q <= 0 else float(np.quantile(pooled, min(q, 1.0)))
    out = {}
    for p in topology.pairs:
        rho = scores[p.name]
        keep_ul = connection_keep(rho, limits[p.name])
        keep = keep_ul if thr is None else (keep_ul | (rho > thr))
        rows = sorted(_protected_rows(topology, sens, p))
        keep[rows, :] = True
        out[p.name] = keep
    return out


def kept_filter_channels(model: nn.Module, topology: Topology, plan: Plan
                         ) -> tuple[dict[str, int], dict[str, int]]:
    """(input, output) channel counts of every conv/linear layer after a filter plan; a linear
    layer after a flatten counts its input features (channels x spatial positions)."""
    weight_layers = {n: m for n, m in model.named_modules() if isinstance(m, (nn.Conv2d, nn.Linear))}
    kept_out = {n: (m.out_channels if isinstance(m, nn.Conv2d) else m.out_features)
                for n, m in weight_layers.items()}
    kept_in = {n: (m.in_channels if isinstance(m, nn.Conv2d) else m.in_features)
               for n, m in weight_layers.items()}
    for gid, idx in plan.remove.items():
        cg = topology.groups[gid]
        k = len(idx)
        for n in cg.producers + cg.depthwise:
            kept_out[n] -= k
        for n in cg.consumers:
            spatial = next((p.spatial for p in topology.pairs
                            if p.child == n and p.group == gid), 1)
            kept_in[n] -= k * spatial
        for n in cg.depthwise:
            kept_in[n] -= k
    return kept_in, kept_out


def count_plan(model: nn.Module, topology: Topology, plan: Plan) -> dict[str, float]:
    """Predicted conv+linear weights and MACs after the plan, without touching the model."""
    modules = dict(model.named_modules())
    weight_layers = {n: m for n, m in modules.items() if isinstance(m, (nn.Conv2d, nn.Linear))}
    w0 = sum(m.weight.numel() for m in weight_layers.values())
    # a layer that forward never runs (built but skipped) has weights but no MACs
    pos = {n: topology.out_positions.get(n, 0) for n in weight_layers}
    macs0 = sum(m.weight.numel() * pos[n] for n, m in weight_layers.items())
    if plan.granularity == "filter":
        kept_in, kept_out = kept_filter_channels(model, topology, plan)
        w1 = macs1 = 0
        for n, m in weight_layers.items():
            if isinstance(m, nn.Conv2d):
                ksz = m.kernel_size[0] * m.kernel_size[1]
                # depthwise: groups follow the channels; grouped: groups stay, inputs split
                per_group_in = 1 if is_depthwise(m) else kept_in[n] // m.groups
                w = kept_out[n] * per_group_in * ksz
            else:
                w = kept_out[n] * kept_in[n]
            w1 += w
            macs1 += w * pos[n]
    else:
        removed_w = removed_macs = 0
        for p in topology.pairs:
            if p.name not in plan.keep:
                continue
            keep = np.asarray(plan.keep[p.name], dtype=bool)
            m = modules[p.child]
            per_conn = m.weight[0, 0].numel() if m.weight.dim() == 4 else p.spatial
            mask = expand_groups(keep, p.n_child, p.n_parent)
            exists = block_exists(p, m)
            cut = ~mask if exists is None else (~mask & exists)
            r = int(cut.sum()) * per_conn
            removed_w += r
            removed_macs += r * pos[p.child]
        w1, macs1 = w0 - removed_w, macs0 - removed_macs
    return {"weights_before": w0, "weights_after": w1, "weights_removed": 1 - w1 / w0,
            "macs_before": macs0, "macs_after": macs1, "macs_removed": 1 - macs1 / macs0}


def make_plan(
    model: nn.Module,
    topology: Topology,
    scores: dict[str, np.ndarray],
    limits: dict[str, LimitResult] | dict[str, float],
    sens: dict[int, GroupSensitivity],
    *,
    granularity: str = "filter",
    mode: str = "ul",
    q: float | None = None,
    target: float | None = None,
    target_metric: str = "params",
    groups: int = 64,
    normalise: str = "readers",
    latency_table=None,
) -> Plan:
    """Build the plan for one granularity and mode (see module docstring).

    `normalise` (filter granularity) makes importances of different layers comparable before
    they are pooled for q: "readers" divides a group's Σ_j ρ by the number of child groups
    reading it (the default); "mean" by the layer's mean importance (torch-pruning's normaliser);
    "cost" additionally by what removing one of its channels saves in `target_metric` (weights
    or MACs). The latter two are used by the `benchmarks.above_limits` ablation.
    `latency_table` (a :class:`snacs.latency.LatencyTable`) prices a filter plan's latency, for
    ``target_metric="latency"``: q is then bisected on the predicted latency removed.
    """
    if granularity not in GRANULARITIES:
        raise ConfigError(f"unknown granularity {granularity!r}; choose filter or connection")
    if mode not in MODES:
        raise ConfigError(f"unknown mode {mode!r}; choose one of {', '.join(MODES)}")
    if normalise not in NORMALISERS:
        raise ConfigError(f"unknown normalise {normalise!r}; choose one of {', '.join(NORMALISERS)}")
    lim = {k: (v.limit if isinstance(v, LimitResult) else float(v)) for k, v in limits.items()}

    cost = None
    if normalise == "cost" and granularity == "filter":
        key0 = "macs" if target_metric == "macs" else "weights"
        cost = {}
        for cg in topology.groups:
            one = Plan(granularity="filter", mode=mode, remove={cg.id: [0]})
            c = count_plan(model, topology, one)
            cost[cg.id] = float(c[f"{key0}_before"] - c[f"{key0}_after"])
        mean_cost = float(np.mean(list(cost.values())))
        cost = {k: v / mean_cost for k, v in cost.items()}  # relative to the mean group

    def build(qv: float | None) -> Plan:
        plan = Plan(granularity=granularity, mode=mode, q=qv, limits=lim)
        if granularity == "filter":
            plan.remove = _filter_plan(topology, scores, lim, sens, groups, qv, normalise, cost)
        else:
            plan.keep = {k: v.tolist()
                         for k, v in _connection_plan(topology, scores, lim, sens, qv).items()}
        plan.predicted = count_plan(model, topology, plan)
        if latency_table is not None and granularity == "filter":
            plan.predicted.update(latency_table.price(model, topology, plan))
        return plan

    if mode == "ul":
        return build(None)
    if mode == "global":
        if q is None or not 0.0 <= q <= 1.0:
            raise ConfigError(f"mode 'global' needs a quantile q in [0, 1], got {q}")
        return build(q)
    # target
    key = _target_key(target_metric, latency_table, granularity)
    if target is None or not 0.0 < target < 1.0:
        raise TargetError(f"target must be a fraction in (0, 1) to remove, got {target}")
    best = build(1.0)
    if best.predicted[key] < target:
        raise TargetError(
            f"target {target:.1%} of {target_metric} is beyond what the per-layer limits allow "
            f"(at most {best.predicted[key]:.1%} with granularity {granularity}); lower --target "
            "or let SNACS relax its limits just enough (--relax-limits; in Python "
            "relax_limits=True), or raise --limit-fraction"
        )
    lo, hi = 0.0, 1.0
    for _ in range(40):
        mid = (lo + hi) / 2
        cand = build(mid)
        if cand.predicted[key] >= target:
            hi, best = mid, cand
        else:
            lo = mid
        if hi - lo < 1e-6:
            break
    return best


# the predicted count (count_plan, plus latency_removed from a latency table) each metric is met on
BUDGET_KEYS = {"params": "weights_removed", "macs": "macs_removed", "latency": "latency_removed"}


def _target_key(target_metric: str, latency_table, granularity: str) -> str:
    """The predicted count a target is met on; a latency target needs a table and filters."""
    if target_metric not in BUDGET_KEYS:
        raise ConfigError(f"target metric must be 'params', 'macs' or 'latency', got {target_metric!r}")
    if target_metric == "latency" and (latency_table is None or granularity != "filter"):
        raise ConfigError("a latency target needs filter granularity and a latency table "
                          "(snacs.latency.measure_table, or `snacs latency-table`)")
    return BUDGET_KEYS[target_metric]


def relax_limits(
    model: nn.Module,
    topology: Topology,
    scores: dict[str, np.ndarray],
    curves: dict[str, LimitResult],
    sens: dict[int, GroupSensitivity],
    *,
    target: float,
    fraction: float,
    granularity: str = "filter",
    target_metric: str = "params",
    groups: int = 64,
    tol: float = 1e-3,
    latency_table=None,
) -> tuple[float, dict[str, float]]:
    """The smallest limit fraction f ≥ `fraction` whose limits allow `target`, and those limits.

    The probe curves stay what they are; only τ = max − f·(max − min) is lowered, so every
    pair's limit grows by how flat its own curve is: layers whose probe accuracy holds up give
    way first, layers whose accuracy falls steeply stay protected. f is found by bisection
    (each pair's limit, and so the reachable share, only grows with f). At f = 1 every rate of
    the grid is allowed; a target beyond that raises TargetError. A latency target is priced by
    `latency_table`, as in :func:`make_plan`.
    """
    key = _target_key(target_metric, latency_table, granularity)

    def limits_at(f: float) -> dict[str, float]:
        return {k: limit_at(c.rates, c.accuracy, f)[0] for k, c in curves.items()}

    def reach(f: float) -> float:
        plan = make_plan(model, topology, scores, limits_at(f), sens, granularity=granularity,
                         mode="global", q=1.0, groups=groups, latency_table=latency_table)
        return plan.predicted[key]

    if reach(fraction) >= target:
        return fraction, limits_at(fraction)
    top = reach(1.0)
    if top < target:
        raise TargetError(
            f"target {target:.1%} of {target_metric} is beyond what SNACS can remove even with "
            f"fully relaxed limits (at most {top:.1%} with granularity {granularity}: the probe "
            "grid stops at its last rate and protected filters are kept); lower --target, or "
            "use --limits none --sensitivity none")
    lo, hi = fraction, 1.0
    while hi - lo > tol:
        mid = (lo + hi) / 2
        if reach(mid) >= target:
            hi = mid
        else:
            lo = mid
    log.warning("target %.1f%% of %s is above the limits at limit fraction %.2f; relaxed to %.3f",
                100 * target, target_metric, fraction, hi)
    return hi, limits_at(hi)


def plan_within_limits(
    model: nn.Module,
    topology: Topology,
    scores: dict[str, np.ndarray],
    limits: dict[str, float],
    sens: dict[int, GroupSensitivity],
    *,
    mode: str = "target",
    target: float | None = None,
    target_metric: str = "params",
    groups: int = 64,
    curves: dict[str, LimitResult] | None = None,
    fraction: float | None = None,
    normalise: str = "readers",
    latency_table=None,
) -> tuple[Plan, float | None, dict[str, float]]:
    """A filter plan within the per-pair limits, and the limits it kept to.

    With `curves` and the limit `fraction` they were read at, a target above what `limits`
    allow first raises the fraction just enough (:func:`relax_limits`, the `relax_limits`
    option). Returns (plan, the fraction used, or `fraction` when nothing was relaxed, the
    limits used).
    """
    if mode == "target" and curves and fraction is not None:
        fraction, limits = relax_limits(model, topology, scores, curves, sens, target=target,
                                        fraction=fraction, target_metric=target_metric,
                                        groups=groups, latency_table=latency_table)
    plan = make_plan(model, topology, scores, limits, sens, granularity="filter", mode=mode,
                     target=target, target_metric=target_metric, groups=groups,
                     normalise=normalise, latency_table=latency_table)
    return plan, fraction, limits
