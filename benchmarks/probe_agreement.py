"""The dense SVM probe against libsvm's own predict: same limits, and how much faster.

    python -m benchmarks.probe_agreement

Fits SNACS (mode ul, one filter per group, 250 samples per class of the synthetic set) on a
randomly initialised ResNet-20 twice: with `snacs.limits.svm_predict` (the default) and with
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


def markdown(r: dict) -> str:
    """The BENCHMARKS.md section (called by benchmarks.report)."""
    return (f"{r['model']}, {r['pairs']} layer pairs, N = {r['N']}, {r['threads']} thread(s): "
            f"largest difference of a probe accuracy between `svm_predict` and `SVC.predict` "
            f"{r['max_accuracy_difference_points']:.2f} points; pairs whose limit differs: "
            f"{r['pairs_with_different_limit']}; limits stage {r['limits_seconds_dense']:.1f} s "
            f"dense vs {r['limits_seconds_libsvm']:.1f} s libsvm (×{r['speedup']:.1f}).\n")


def main() -> int:
    import snacs
    from snacs import SNACS
    from snacs.data import synthetic

    data = synthetic("train", num_classes=10, n_per_class=250, shape=(3, 32, 32), seed=0)
    torch.manual_seed(0)
    model = snacs.create_model("resnet20").eval()
    runs = {}
    for name, patch in (("dense", None), ("libsvm", lambda clf, x: clf.predict(x))):
        ctx = mock.patch("snacs.limits._predict", patch) if patch else mock.MagicMock()
        with ctx:
            p = SNACS(mode="ul", groups=10**6, samples_per_class=250, seed=0).fit(model, data)
        runs[name] = (p.limit_curves_, p.timings_["limits"])
    dense, lib = runs["dense"][0], runs["libsvm"][0]
    diffs = [float(np.abs(np.subtract(dense[k].accuracy, lib[k].accuracy)).max()) for k in dense]
    result = {
        "benchmark": "probe_agreement",
        "measured": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "environment": environment(), "threads": torch.get_num_threads(),
        "model": "resnet20, random weights (seed 0)", "pairs": len(dense),
        "N": 2500, "max_accuracy_difference_points": max(diffs),
        "pairs_with_different_limit": sum(dense[k].limit != lib[k].limit for k in dense),
        "limits_seconds_dense": runs["dense"][1], "limits_seconds_libsvm": runs["libsvm"][1],
        "speedup": runs["libsvm"][1] / runs["dense"][1],
    }
    write_json("probe_agreement", result)
    print(result)
    return 0


if __name__ == "__main__":
    sys.exit(main())
