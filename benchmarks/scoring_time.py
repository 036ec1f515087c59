"""Whole-network scoring time of SNACS, split by stage (`SNACS.fit` sets `timings_`).

    python -m benchmarks.scoring_time

ResNet-56 with one filter per group (`groups=10**6`) and VGG16 (width 1, 64 groups), 250
calibration samples per class of 10 classes (N = 2500) on 3×32×32 synthetic inputs, full
pipeline: activations, ACMI scores of every layer pair, operating-constraint limits (SVM probe),
sensitivity and the plan (mode "ul"). Each network is timed with random weights and with weights
trained briefly on the same synthetic task (stored under runs/bench/scoring/; a `--checkpoint`
of a really trained model can be given instead). Targets on this 2-core machine: ResNet-56
≤ 60 s, VGG16 ≤ 120 s. Writes benchmarks/results/scoring_time.json after every run; a rerun
skips runs already recorded with the same settings.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

import torch

from benchmarks import RESULTS, environment, write_json

log = logging.getLogger("benchmarks.scoring_time")

NAME = "scoring_time"
ROOT = Path(__file__).resolve().parent.parent
RUNS = ROOT / "runs" / "bench" / "scoring"
NETWORKS = {
    "resnet56": {"model": "resnet56", "width": 1.0, "groups": 10**6, "target_seconds": 60.0},
    "vgg16": {"model": "vgg16", "width": 1.0, "groups": 64, "target_seconds": 120.0},
}
SAMPLES_PER_CLASS = 250
CLASSES = 10
SHAPE = (3, 32, 32)
TRAIN_EPOCHS = 3  # the "trained" variant: a short fit to the synthetic task


def _trained(net: str, data, seed: int = 0) -> tuple[torch.nn.Module, str]:
    import snacs
    from snacs.train import TrainConfig, train

    spec = NETWORKS[net]
    path = RUNS / f"{net}-synthetic.pt"
    if path.is_file():
        return snacs.load(path), f"trained {TRAIN_EPOCHS} epochs on the synthetic set ({path.name})"
    torch.manual_seed(seed)
    model = snacs.create_model(spec["model"], width=spec["width"], in_channels=SHAPE[0],
                               num_classes=CLASSES)
    res = train(model, data, TrainConfig(epochs=TRAIN_EPOCHS, lr=0.05, batch_size=64,
                                         augment=False, seed=seed, val_fraction=0.1))
    RUNS.mkdir(parents=True, exist_ok=True)
    snacs.save(model, path, extra={"train": res.to_dict()})
    log.info("%s trained on synthetic data: val accuracy %.1f %%", net, res.best_val_accuracy)
    return snacs.load(path), f"trained {TRAIN_EPOCHS} epochs on the synthetic set ({path.name})"


def time_one(model: torch.nn.Module, data, *, groups: int, workers: int = 1, seed: int = 0,
             samples_per_class: int = SAMPLES_PER_CLASS, probe: str = "svm") -> dict:
    """Fit SNACS once on `model` and return the per-stage seconds and what was scored."""
    from snacs import SNACS
    from snacs.metrics import conv_linear_weights
    from snacs.pruner import _default_estimator

    p = SNACS(mode="ul", groups=groups, samples_per_class=samples_per_class, workers=workers,
              seed=seed, probe=probe)
    load0 = os.getloadavg()[0]
    t = time.perf_counter()
    p.fit(model, data)
    total = time.perf_counter() - t
    return {
        "estimator": p.estimator or _default_estimator(),
        "groups": groups,
        "samples_per_class": samples_per_class,
        "N": int(p.n_samples_),
        "pairs": len(p.pairs_),
        "conv_linear_weights": conv_linear_weights(model),
        "workers": workers,
        "threads": torch.get_num_threads(),
        "stages": {k: float(v) for k, v in p.timings_.items()},
        "total_seconds": total,
        "loadavg_1min_before": load0,
        "loadavg_1min_after": os.getloadavg()[0],
        "predicted_weights_removed": float(p.plan_.predicted["weights_removed"]),
        "plan_checksum": p.plan_.checksum(),
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--networks", default=",".join(NETWORKS))
    ap.add_argument("--weights", default="random,trained", help="random,trained")
    ap.add_argument("--workers", default="1", help="comma list of worker counts, e.g. 1,2")
    ap.add_argument("--probe", default="svm",
                    help="comma list of limit probes (svm is SNACS's default; linear, ncm)")
    ap.add_argument("--checkpoint", action="append", default=[],
                    help="NET=PATH: a really trained model for NET (snacs model file)")
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--force", action="store_true", help="rerun runs already recorded")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s",
                        stream=sys.stdout)
    if args.threads:
        torch.set_num_threads(args.threads)
    import json

    import snacs
    from snacs.data import synthetic

    data = synthetic("train", num_classes=CLASSES, n_per_class=SAMPLES_PER_CLASS, shape=SHAPE,
                     seed=0)
    ckpts = dict(c.split("=", 1) for c in args.checkpoint)
    path = RESULTS / f"{NAME}.json"
    old = json.loads(path.read_text()) if path.is_file() else {}
    result = {
        "benchmark": NAME,
        "created": old.get("created") or datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "environment": environment(),
        "data": f"synthetic, {CLASSES} classes x {SAMPLES_PER_CLASS} samples, {SHAPE}",
        "targets_seconds": {k: v["target_seconds"] for k, v in NETWORKS.items()},
        "runs": list(old.get("runs", [])),
    }

    def key(r: dict) -> tuple:
        return (r["network"], r["weights"], r["workers"], r["threads"], r["groups"],
                r.get("probe", "svm"))

    for net in args.networks.split(","):
        spec = NETWORKS[net]
        for kind in args.weights.split(","):
            for workers, kind_probe in ((int(w), pr) for w in args.workers.split(",")
                                        for pr in args.probe.split(",")):
                probe = {"network": net, "weights": kind, "workers": workers,
                         "threads": torch.get_num_threads(), "groups": spec["groups"],
                         "probe": kind_probe}
                done = [r for r in result["runs"] if key(r) == key(probe)]
                if done and not args.force:
                    log.info("skip %s (recorded)", key(probe))
                    continue
                if kind == "random":
                    torch.manual_seed(0)
                    model = snacs.create_model(spec["model"], width=spec["width"],
                                               in_channels=SHAPE[0], num_classes=CLASSES)
                    how = "random initialisation (seed 0)"
                elif net in ckpts:
                    model, how = snacs.load(ckpts[net]), f"checkpoint {ckpts[net]}"
                else:
                    model, how = _trained(net, data)
                model.eval()
                log.info("timing %s (%s, %d worker(s), %d thread(s), probe %s)", net, kind,
                         workers, torch.get_num_threads(), kind_probe)
                r = {**probe, "model": spec["model"], "width": spec["width"],
                     "weights_source": how, "target_seconds": spec["target_seconds"],
                     **time_one(model, data, groups=spec["groups"], workers=workers,
                                probe=kind_probe)}
                r["meets_target"] = r["total_seconds"] <= spec["target_seconds"]
                r["measured"] = datetime.now(timezone.utc).isoformat(timespec="seconds")
                result["runs"] = [x for x in result["runs"] if key(x) != key(probe)] + [r]
                result["updated"] = r["measured"]
                write_json(NAME, result)
                log.info("%s %s: %.1f s total %s", net, kind, r["total_seconds"],
                         {k: round(v, 1) for k, v in r["stages"].items()})
    return 0


if __name__ == "__main__":
    sys.exit(main())
