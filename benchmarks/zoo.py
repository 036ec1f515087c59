"""Which structures snacs prunes, next to torch-pruning's own MagnitudePruner on the same blocks.

    python -m benchmarks.zoo

Every block of `benchmarks/zoo_blocks.py` (random weights, synthetic 3x16x16 data, 10 classes x
20 samples) is pruned by torch-pruning's `MagnitudePruner` (L1 group magnitude, pruning ratio
0.3, classifier ignored) and by `snacs.prune(target=0.3, relax_limits=True)` in both
granularities. Recorded per run: whether it pruned (or the one-line error), the share of
conv+linear weights removed, whether the result is exact (filter: the plan's predicted weights and
MACs equal the slimmed model's; connection: the exported slim model gives the masked model's
outputs within 1e-5), and which channel groups snacs kept whole and why. Writes
benchmarks/results/zoo.json.
"""

from __future__ import annotations

import argparse
import copy
import logging
import time

import torch
from torch import nn

from benchmarks import environment, write_json
from benchmarks.zoo_blocks import BLOCKS, build

NAME = "zoo"
SHAPE = (3, 16, 16)
RATIO = 0.3
TARGET = 0.3
SAMPLES_PER_CLASS = 20

log = logging.getLogger("benchmarks.zoo")


def _error(e: BaseException) -> str:
    return f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}"[:160]


def run_tp(name: str) -> dict:
    import torch_pruning as tp

    from snacs.metrics import conv_linear_weights

    model = build(name)
    w0 = conv_linear_weights(model)
    fc = [m for m in model.modules() if isinstance(m, nn.Linear)][-1]
    t = time.perf_counter()
    try:
        pruner = tp.pruner.MagnitudePruner(
            model, torch.zeros(1, *SHAPE), importance=tp.importance.MagnitudeImportance(p=1),
            pruning_ratio=RATIO, ignored_layers=[fc])
        pruner.step()
        with torch.no_grad():
            out = model.eval()(torch.randn(2, *SHAPE))
        if out.shape != (2, 10):
            raise RuntimeError(f"output shape {tuple(out.shape)}")
    except Exception as e:  # noqa: BLE001 - the failure is the result
        return {"ok": False, "error": _error(e), "seconds": time.perf_counter() - t}
    return {"ok": True, "weights_removed_pct": 100.0 * (1 - conv_linear_weights(model) / w0),
            "seconds": time.perf_counter() - t}


def run_snacs(name: str, granularity: str, data) -> dict:
    import snacs
    from snacs.apply import export_slim
    from snacs.metrics import conv_linear_weights, count_macs, nonzero_conv_linear_weights

    model = build(name)
    t = time.perf_counter()
    try:
        pruned, res = snacs.prune(model, data, granularity=granularity, target=TARGET,
                                  relax_limits=True, samples_per_class=SAMPLES_PER_CLASS,
                                  measure_latency=False, recalibrate_bn=False)
    except Exception as e:  # noqa: BLE001 - the failure is the result
        return {"ok": False, "error": _error(e), "seconds": time.perf_counter() - t}
    seconds = time.perf_counter() - t
    pruner = pruned.snacs_pruner
    plan = pruner.plan_
    pruned.eval()
    x = torch.randn(4, *SHAPE)
    if granularity == "filter":
        exact = (plan.predicted["weights_after"] == conv_linear_weights(pruned)
                 and plan.predicted["macs_after"] == count_macs(pruned, SHAPE))
        diff = None
    else:
        slim = export_slim(pruned, SHAPE).eval()
        with torch.no_grad():
            diff = float((slim(x) - pruned(x)).abs().max())
        exact = (diff <= 1e-5
                 and plan.predicted["weights_after"] == nonzero_conv_linear_weights(pruned)
                 and plan.predicted["macs_after"] == count_macs(pruned, SHAPE, sparse=True))
    kept = [{"producers": g.producers, "reason": g.reason}
            for g in pruner.topology_.groups if not g.prunable]
    return {"ok": True, "weights_removed_pct": res.weights_pruned_pct,
            "macs_removed_pct": 100.0 * (1 - res.macs_after / res.macs_before),
            "exact": bool(exact), "max_abs_diff_export": diff,
            "limit_fraction_used": res.limit_fraction_used, "kept_whole": kept,
            "pairs": len(pruner.topology_.pairs), "seconds": seconds}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--blocks", nargs="*", default=list(BLOCKS))
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    torch.set_num_threads(1)
    from snacs.data import synthetic

    data = synthetic("train", n_per_class=SAMPLES_PER_CLASS, shape=SHAPE, seed=0)
    rows = []
    for name in args.blocks:
        row = {"block": name, "doc": (BLOCKS[name].__doc__ or "").strip().splitlines()[0]
               if BLOCKS[name].__doc__ else "",
               "torch_pruning": run_tp(name),
               "snacs_filter": run_snacs(name, "filter", copy.deepcopy(data)),
               "snacs_connection": run_snacs(name, "connection", copy.deepcopy(data))}
        rows.append(row)
        print(name, {k: (v.get("ok"), v.get("weights_removed_pct"), v.get("error"))
                     for k, v in row.items() if isinstance(v, dict)}, flush=True)
    write_json(NAME, {"benchmark": NAME, "shape": list(SHAPE), "tp_ratio": RATIO,
                      "snacs_target": TARGET, "samples_per_class": SAMPLES_PER_CLASS,
                      "rows": rows, "environment": environment()})
    return 0


STRUCTURE = {
    "inception": "Inception block (4 branches concatenated)",
    "dense": "dense block (DenseNet concatenation)",
    "resnext": "ResNeXt block (grouped 3x3 conv, residual)",
    "se": "squeeze-and-excitation gating",
    "shuffle": "ShuffleNetV2 unit (chunk, concat, channel shuffle)",
    "split": "torch.split into two branches, concatenated",
    "mbconv_se": "EfficientNet MBConv (depthwise + SE, an unused expand conv)",
    "dla": "DLA-style aggregation (concatenating root)",
    "dwsep_mlp": "depthwise-separable stack, Identity, Flatten, 3-layer MLP head",
    "mixed": "all of the above in one network",
}


def _cell(r: dict, exact: bool = False) -> str:
    if not r.get("ok"):
        err = r.get("error", "")
        if err.startswith("TargetError"):  # a snacs refusal with its reason, not a crash
            import re

            most = re.search(r"at most ([\d.]+%)", err)
            return ("TargetError: the target is out of reach"
                    + (f" (at most {most.group(1)} with fully relaxed limits)" if most else ""))
        return f"fails: `{err}`"
    s = f"{r['weights_removed_pct']:.1f} %"
    if exact:
        s += ", exact" if r.get("exact") else ", **not exact**"
    return s


def markdown(result: dict) -> str:
    """The structure table of BENCHMARKS.md."""
    lines = [
        f"Each block (random weights, synthetic {'x'.join(map(str, result['shape']))} data) "
        f"pruned by torch-pruning's `MagnitudePruner` at ratio {result['tp_ratio']} and by "
        f"`snacs.prune(target={result['snacs_target']}, relax_limits=True)`; cells give the "
        "share of conv+linear weights removed. *exact*: the plan's predicted weights and MACs "
        "equal the slimmed model's (filter) and the exported slim model reproduces the masked "
        "outputs within 1e-5 (connection). Blocks: `benchmarks/zoo_blocks.py`; tests: "
        "`tests/test_zoo.py`.", "",
        "| structure | torch-pruning | snacs filter | snacs connection | kept whole by snacs |",
        "|---|---|---|---|---|"]
    for row in result["rows"]:
        kept = {k["reason"] for k in row["snacs_filter"].get("kept_whole", [])}
        lines.append(
            f"| {STRUCTURE.get(row['block'], row['block'])} | {_cell(row['torch_pruning'])} | "
            f"{_cell(row['snacs_filter'], True)} | {_cell(row['snacs_connection'], True)} | "
            f"{'; '.join(sorted(kept)) or '–'} |")
    n = len(result["rows"])
    tp_ok = sum(r["torch_pruning"]["ok"] for r in result["rows"])
    sn_ok = sum(r["snacs_filter"]["ok"] and r["snacs_connection"]["ok"] for r in result["rows"])
    lines += ["", f"torch-pruning prunes {tp_ok} of {n} blocks; snacs prunes {sn_ok} of {n} in "
              "both granularities."]
    return "\n".join(lines)


if __name__ == "__main__":
    raise SystemExit(main())
