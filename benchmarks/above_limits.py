"""Ablation: routes for SNACS to reach budgets above its own per-layer limits.

    python -m benchmarks.above_limits --suite fmnist-vgg16 --budgets 0.7,0.85 --seeds 0,1

Runs in the compare harness (same base model, cached SNACS fit, physical removal, fine-tune
and evaluation as `benchmarks.compare`), one cell per (variant, budget, seed), and writes
`benchmarks/results/above_limits_<suite>.json` after every cell (a rerun skips finished cells).

Variants (filter granularity, parameter budgets):
* ``relax``: the shipped route, `SNACS(mode="target", relax_limits=True)`: the limit fraction
  of τ = max − f·(max − min) is raised just enough, then q is bisected (importance per reader).
* ``relax-mean``: the same limits, importance divided by its layer's mean before pooling.
* ``scaled``: every layer pruned to s·UL (capped at 96 %), s bisected: the automatic ul
  allocation, scaled.
* ``relax-cost``: the relaxed limits, importance ÷ layer mean ÷ what one channel of the layer
  saves in the budget's metric (a cost-aware importance, meant for MAC budgets).
* ``nolimits-mean``: no per-layer limit (≥ 1 group kept), mean-normalised importance ranked
  globally: the allocation rule of the L1 / torch-pruning baselines with SNACS's scores.
"""

from __future__ import annotations

import argparse
import logging
import sys

from benchmarks import RESULTS, environment, write_json
from benchmarks import baselines as B
from benchmarks import compare as C

log = logging.getLogger("benchmarks.above_limits")
VARIANTS = ("relax", "relax-mean", "scaled", "nolimits-mean", "relax-cost")


def removal(variant: str, pr, model, target: float, metric: str = "params"):
    """(remove, predicted) of one variant from a fitted SNACS state."""
    from snacs.plan import make_plan

    normalise = {"relax-mean": "mean", "relax-cost": "cost", "nolimits-mean": "mean"}
    if variant in ("relax", "relax-mean", "relax-cost", "nolimits-mean"):
        return B.snacs_remove(pr, model, mode="target", target=target, metric=metric,
                              relax=variant != "nolimits-mean",
                              lift_limits=variant == "nolimits-mean",
                              normalise=normalise.get(variant, "readers"))
    topo = pr.topology_
    common = dict(groups=pr.groups)
    if variant == "scaled":
        key = "weights_removed" if metric == "params" else "macs_removed"

        def lims(s):
            return {k: min(s * v, 0.96) for k, v in pr.limits_.items()}

        def reach(s):
            return make_plan(model, topo, pr.scores_, lims(s), pr.sensitivity_, mode="ul",
                             **common).predicted[key]

        lo, hi = 0.0, 1.0 / max(min(v for v in pr.limits_.values() if v > 0), 1e-3)
        for _ in range(30):
            mid = (lo + hi) / 2
            lo, hi = (lo, mid) if reach(mid) >= target else (mid, hi)
        plan = make_plan(model, topo, pr.scores_, lims(hi), pr.sensitivity_, mode="ul", **common)
    else:
        raise ValueError(f"unknown variant {variant!r}; choose one of {', '.join(VARIANTS)}")
    return {int(k): list(v) for k, v in plan.remove.items()}, dict(plan.predicted)


def main(argv: list[str] | None = None) -> int:
    import json

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--suite", required=True, choices=sorted(C.SUITES))
    ap.add_argument("--variants", default=",".join(VARIANTS))
    ap.add_argument("--budgets", default="0.7,0.85")
    ap.add_argument("--seeds", default="0,1")
    ap.add_argument("--metric", default="params", choices=["params", "macs"])
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s",
                        stream=sys.stdout)
    suite = C.SUITES[args.suite]
    name = f"above_limits_{suite.name}"
    path = RESULTS / f"{name}.json"
    old = json.loads(path.read_text()) if path.is_file() else {}
    h = C.Harness(suite, results_dir=C.BENCH_RUNS / "above_limits")
    result = {"benchmark": "above_limits", "suite": suite.name, "environment": environment(),
              "base": h.base, "finetune": h.finetune, "finetune_per_class": h.finetune_per_class,
              "cells": {k: v for k, v in old.get("cells", {}).items()
                        if v.get("fingerprint") == h._fingerprint()}}
    for seed in (int(s) for s in args.seeds.split(",")):
        for b in (float(x) for x in args.budgets.split(",")):
            for v in args.variants.split(","):
                cid = f"{v}__{args.metric}{round(b * 100)}__seed{seed}"
                if cid in result["cells"]:
                    continue
                orig = B.select_from_state
                B.select_from_state = (lambda method, state, model, topo, *, target, metric,
                                       v=v, **_: removal(v, state, model, target, metric))
                try:
                    rec = h.run_cell({"method": "snacs", "metric": args.metric, "budget": b,
                                      "seed": seed, "id": cid})
                finally:
                    B.select_from_state = orig
                rec["variant"] = rec.pop("method") and v
                rec.pop("remove", None)
                result["cells"][cid] = rec
                write_json(name, result)
                log.info("%s: %.2f %% fine-tuned, MACs -%.1f %%", cid,
                         rec.get("accuracy_finetuned", float("nan")),
                         rec.get("macs_removed_pct", float("nan")))
    return 0


if __name__ == "__main__":
    sys.exit(main())
