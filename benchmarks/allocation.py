"""Allocation ablation on a cheap proxy: every design, the same cells, short fine-tune.

    python -m benchmarks.allocation --base shared-resnet56       # the shared 83.2 % checkpoint
    python -m benchmarks.allocation --base cifar10-resnet56      # the committed suite base

The proxy of the full protocol (`benchmarks.compare`): the same removal, the same BN
recalibration on SNACS's calibration images, then test accuracy after the recalibration alone
("before fine-tune") and after a short fine-tune (one epoch over 500 class-balanced training
images per class, lr 0.01 cosine per batch). Designs are harness methods, so a design that wins
here runs unchanged in the full suite. Results: benchmarks/results/allocation/compare_<name>.json,
resumable cell by cell (the harness's own file format).
"""

from __future__ import annotations

import argparse
import logging
import sys

import torch

from benchmarks import RESULTS
from benchmarks import compare as C

PROXY_FINETUNE = {"epochs": 1, "lr": 0.01, "schedule": "cosine-step", "batch_size": 128,
                  "augment": True, "weight_decay": 5e-4, "val_fraction": 0.0}
PROXY_PER_CLASS = 500
DESIGNS = ("snacs", "snacs-global", "snacs-nolimits", "l1", "tp-taylor", "hrank", "chip")
PROXY_BUDGETS = (("macs", 0.5), ("params", 0.5), ("macs", 0.7), ("params", 0.7))
SHARED_CHECKPOINTS = {"shared-resnet56": ("resnet56", "cifar10-resnet56-4bfd9763.th"),
                      "shared-resnet20": ("resnet20", "cifar10-resnet20-12fca82f.th")}


def _base(name: str):
    """(suite, train, test, model) of a proxy base: a shared checkpoint or a committed base."""
    from snacs.data import get_dataset

    train, test = get_dataset("cifar10-jpeg", "train"), get_dataset("cifar10-jpeg", "test")
    if name in SHARED_CHECKPOINTS:
        from pathlib import Path

        import snacs
        from snacs.models import load_weights

        arch, file = SHARED_CHECKPOINTS[name]
        path = next((p / "shared" / "models" / file for p in Path(__file__).resolve().parents
                     if (p / "shared" / "models" / file).is_file()), None)
        if path is None:
            raise FileNotFoundError(f"shared/models/{file} is not on this machine")
        model = snacs.create_model(arch, num_classes=10)
        load_weights(model, path)
        base_suite = C.SUITES["cifar10-resnet56"] if arch == "resnet56" else None
    else:
        base_suite = C.SUITES[name]
        model, _ = C.committed_base(base_suite)
    suite = C.Suite(f"proxy-{name}", base_suite.model if base_suite else "resnet20", 1.0,
                    "cifar10-jpeg", methods=DESIGNS, finetune=PROXY_FINETUNE,
                    finetune_per_class=PROXY_PER_CLASS, recalibrate_bn=True,
                    budgets=PROXY_BUDGETS, latency={"bs1_ts": {"batch_size": 1, "repeats": 10,
                                                               "frozen": True}})
    return suite, train, test, model.eval()


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--base", required=True,
                    help=f"{', '.join(SHARED_CHECKPOINTS)} or a CIFAR suite with a committed base")
    ap.add_argument("--methods", default=",".join(DESIGNS))
    ap.add_argument("--seeds", default="0")
    ap.add_argument("--metrics", default="macs,params", help="budget metrics to run (default: both)")
    ap.add_argument("--budgets", default=None,
                    help="comma list of fractions (default: every proxy budget of the metrics)")
    ap.add_argument("--threads", type=int, default=None)
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s",
                        stream=sys.stdout)
    if args.threads:
        torch.set_num_threads(args.threads)
    suite, train, test, model = _base(args.base)
    h = C.Harness(suite, results_dir=RESULTS / "allocation", data=(train, test, model))
    h.base_meta["source"] = h.result["base"]["source"] = args.base
    methods = tuple(args.methods.split(","))
    metrics = tuple(args.metrics.split(","))
    budgets = (tuple(float(b) for b in args.budgets.split(",")) if args.budgets
               else tuple(sorted({b for _, b in PROXY_BUDGETS})))
    pairs = tuple((m, b) for m, b in PROXY_BUDGETS if m in metrics and b in budgets)
    if not pairs:
        ap.error(f"no proxy budget among metrics {args.metrics} and budgets {args.budgets}; "
                 f"the proxy budgets are {', '.join(f'{b:.0%} {m}' for m, b in PROXY_BUDGETS)}")
    cells = C.grid(methods, metrics, budgets, tuple(int(s) for s in args.seeds.split(",")),
                   pairs=pairs)
    h.run(cells)
    return 0


if __name__ == "__main__":
    sys.exit(main())
