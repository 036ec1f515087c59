"""The dense SVM probe against libsvm's own predict: same limits, and how much faster.

    python -m benchmarks.probe_agreement                            # synthetic ResNet-20
    python -m benchmarks.probe_agreement --suite cifar10-resnet56   # a committed CIFAR-10 base

Fits SNACS (mode ul, 250 samples per class) twice, on a randomly initialised ResNet-20 with
synthetic data (one filter per group) or on a suite's committed base with its training split: with `snacs.limits.svm_predict` (the default) and with
`SVC.predict`. Records the largest difference of any probe accuracy, the number of pairs whose
limit differs, and the limits-stage time of each. Writes benchmarks/results/probe_agreement.json.
"""

from __future__ import annotations

import sys
from datetime import datetime, timezone
from unittest import mock

import numpy as np
import torch

from benchmarks import environment, write_json


def _line(r: dict) -> str:
    return (f"{r['model']}, {r['pairs']} layer pairs, N = {r['N']}, {r['threads']} thread(s): "
            f"largest difference of a probe accuracy between `svm_predict` and `SVC.predict` "
            f"{r['max_accuracy_difference_points']:.2f} points; pairs whose limit differs: "
            f"{r['pairs_with_different_limit']}; limits stage {r['limits_seconds_dense']:.1f} s "
            f"dense vs {r['limits_seconds_libsvm']:.1f} s libsvm (×{r['speedup']:.1f}).")


def _runs(d: dict) -> dict:
    """The recorded runs by name (a file of the first version holds one synthetic run)."""
    if "runs" in d:
        return dict(d["runs"])
    return {"synthetic-resnet20": d} if "max_accuracy_difference_points" in d else {}


def markdown(r: dict) -> str:
    """The BENCHMARKS.md section (called by benchmarks.report)."""
    return "\n".join(f"* {_line(v)}" for _, v in sorted(_runs(r).items())) + "\n"


def _model_and_data(suite: str | None):
    import snacs
    from snacs.data import synthetic

    if suite is None:
        torch.manual_seed(0)
        return (snacs.create_model("resnet20").eval(),
                synthetic("train", num_classes=10, n_per_class=250, shape=(3, 32, 32), seed=0),
                "resnet20, random weights (seed 0), synthetic data", 10**6)
    from benchmarks.compare import SUITES, _datasets, committed_base

    s = SUITES[suite]
    model, meta = committed_base(s)
    train, _ = _datasets(s)
    # the suite's own SNACS settings (one filter per group on ResNet-56 via groups=64)
    return model.eval(), train, f"{suite} committed base ({meta.get('sha256', '')[:12]})", 64


def main(argv: list[str] | None = None) -> int:
    import argparse
    import json

    from benchmarks import RESULTS
    from snacs import SNACS

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--suite", default=None,
                    help="a CIFAR-10 suite with a committed base (e.g. cifar10-resnet56); "
                         "default: random ResNet-20 on synthetic data")
    ap.add_argument("--threads", type=int, default=None)
    args = ap.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    model, data, what, groups = _model_and_data(args.suite)
    runs = {}
    for name, patch in (("dense", None), ("libsvm", lambda clf, x: clf.predict(x))):
        ctx = mock.patch("snacs.limits._predict", patch) if patch else mock.MagicMock()
        with ctx:
            p = SNACS(mode="ul", groups=groups, samples_per_class=250, seed=0).fit(model, data)
        runs[name] = (p.limit_curves_, p.timings_["limits"])
    dense, lib = runs["dense"][0], runs["libsvm"][0]
    diffs = [float(np.abs(np.subtract(dense[k].accuracy, lib[k].accuracy)).max()) for k in dense]
    record = {
        "measured": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "environment": environment(), "threads": torch.get_num_threads(),
        "model": what, "pairs": len(dense),
        "N": 2500, "max_accuracy_difference_points": max(diffs),
        "pairs_with_different_limit": sum(dense[k].limit != lib[k].limit for k in dense),
        "different_limits": {k: [dense[k].limit, lib[k].limit] for k in dense
                             if dense[k].limit != lib[k].limit},
        "limits_seconds_dense": runs["dense"][1], "limits_seconds_libsvm": runs["libsvm"][1],
        "speedup": runs["libsvm"][1] / runs["dense"][1],
    }
    path = RESULTS / "probe_agreement.json"
    old = json.loads(path.read_text()) if path.is_file() else {}
    all_runs = _runs(old)
    all_runs[args.suite or "synthetic-resnet20"] = record
    write_json("probe_agreement", {"benchmark": "probe_agreement", "runs": all_runs})
    print(json.dumps(record, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
