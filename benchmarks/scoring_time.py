"""Whole-network scoring time of SNACS, split by stage (`SNACS.fit` sets `timings_`).

    python -m benchmarks.scoring_time                    # synthetic runs, then the CIFAR-10 bases
    python -m benchmarks.scoring_time --no-synthetic     # the CIFAR-10 bases only

Synthetic runs: ResNet-56 with one filter per group (`groups=10**6`) and VGG16 (width 1, 64
groups), 250 calibration samples per class of 10 classes (N = 2500) on 3×32×32 synthetic
inputs, full pipeline: activations, ACMI scores of every layer pair, operating-constraint limits
(SVM probe), sensitivity and the plan (mode "ul"). Each network is timed with random weights and
with weights trained briefly on the same synthetic task (stored under runs/bench/scoring/; a
`--checkpoint` of a really trained model can be given instead). Targets on this 2-core machine:
ResNet-56 ≤ 60 s, VGG16 ≤ 120 s.

Real runs (issue 16): the committed CIFAR-10 bases (`benchmarks/bases/<suite>.pt`, loaded and
sha256-checked by `benchmarks.compare.committed_base`) with calibration images from the JPEG
CIFAR-10 training split, SNACS with its defaults (`SNACS(target=0.5)`, i.e. 50 % of parameters,
and `SNACS()`, mode "ul"). In the same process and on the same images each run also times

* the reference: L1-norm filter selection at the same parameter budget plus the same BatchNorm
  recalibration (the compare harness's `l1` code path: `baselines.score_method` /
  `select_from_state`, `snacs.apply.remove_channels`, `snacs.apply.recalibrate_bn`), and
* a bare `model(x)` loop under `torch.inference_mode()` over SNACS's calibration batches,

each as wall and process CPU seconds, and records the ratios SNACS fit / (L1 + BN recal) and
activation pass / forward pass. Targets (at 2 threads, SNACS defaults): ResNet-56 fit ≤ 12 s and
≤ 2.5× L1 + BN recal; VGG16 (width 0.5) fit ≤ 25 s. A suite whose base is not committed, or whose
data (`cifar10-jpeg`) cannot be found, is skipped with a message.

Writes benchmarks/results/scoring_time.json after every run; a rerun skips runs already recorded
with the same settings (`--force` reruns them).
"""

from __future__ import annotations

import argparse
import copy
import json
import logging
import os
import sys
import time
from collections.abc import Callable
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import torch

from benchmarks import RESULTS, cpu_model, environment, write_json

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

# Real data and weights (issue 16): suites of benchmarks.compare with a committed base.
REAL = {
    "cifar10-resnet56": {"fit_seconds": 12.0, "fit_to_l1": 2.5},
    "cifar10-vgg16": {"fit_seconds": 25.0, "fit_to_l1": None},
}
TARGET_THREADS = 2  # the targets are for 2 threads
# SNACS defaults: SNACS(target=0.5) (50 % of parameters, the limits allocation),
# SNACS(target=0.5, target_metric="macs") (the global allocation: no probe limits) and SNACS()
REAL_MODES: dict[str, dict[str, Any]] = {"target": {"target": 0.5, "target_metric": "params"},
                                         "target-macs": {"target": 0.5, "target_metric": "macs"},
                                         "ul": {}}
L1_RECAL_BATCH = 250  # the batch of the compare harness's BN recalibration (Harness._recalibration)


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
        "cpu_stages": {k: float(v) for k, v in p.cpu_timings_.items()},
        "total_seconds": total,
        "loadavg_1min_before": load0,
        "loadavg_1min_after": os.getloadavg()[0],
        "predicted_weights_removed": float(p.plan_.predicted["weights_removed"]),
        "plan_checksum": p.plan_.checksum(),
    }


class _Clock:
    """Wall (`time.perf_counter`) and process CPU (`time.process_time`, every thread of this
    process, not child processes) seconds of a block."""

    def __enter__(self) -> _Clock:
        self._w, self._c = time.perf_counter(), time.process_time()
        return self

    def __exit__(self, *exc: object) -> None:
        self.seconds = time.perf_counter() - self._w
        self.cpu_seconds = time.process_time() - self._c

    def record(self) -> dict[str, float]:
        return {"seconds": self.seconds, "cpu_seconds": self.cpu_seconds}


def forward_pass(model: torch.nn.Module, batches) -> dict[str, float]:
    """A bare `model(x)` loop over `batches` under `torch.inference_mode()`, timed."""
    model.eval()
    with _Clock() as c, torch.inference_mode():
        n = 0
        for x, _ in batches:
            model(x)
            n += 1
    return {**c.record(), "batches": n}


def l1_reference(model: torch.nn.Module, train, *, target: float, seed: int,
                 samples_per_class: int, metric: str = "params") -> dict:
    """L1-norm filter selection to `target` of `metric`, channel removal and BN recalibration,
    as the compare harness prunes its `l1` cells; every step timed (wall and CPU)."""
    from benchmarks import baselines as B
    from snacs.apply import recalibrate_bn, remove_channels
    from snacs.data import BatchLoader, class_balanced_indices
    from snacs.pairs import find_topology

    steps = {}
    with _Clock() as c:  # the harness traces once per suite; a user's run traces too
        topology = find_topology(model, tuple(train.image_shape))
    steps["topology"] = c.record()
    with _Clock() as c:
        state = B.score_method("l1", model, topology, train, seed=seed)
    steps["importance"] = c.record()
    with _Clock() as c:
        remove, pred = B.select_from_state("l1", state, model, topology, target=target,
                                           metric=metric)
    steps["select"] = c.record()
    with _Clock() as c:
        pruned = copy.deepcopy(model)
        remove_channels(pruned, topology, remove)
    steps["remove"] = c.record()
    with _Clock() as c:  # as benchmarks.compare.Harness.run_cell
        calib = class_balanced_indices(train.labels, samples_per_class, seed=seed,
                                       num_classes=train.num_classes)
        recalibrate_bn(pruned, BatchLoader(train, L1_RECAL_BATCH, indices=calib))
    steps["recalibrate_bn"] = c.record()
    return {
        "budget": {"metric": metric, "fraction": float(target)},
        "steps": steps,
        "seconds": sum(v["seconds"] for v in steps.values()),
        "cpu_seconds": sum(v["cpu_seconds"] for v in steps.values()),
        "predicted_weights_removed": float(pred["weights_removed"]),
        "recalibration": {"samples_per_class": samples_per_class, "batch_size": L1_RECAL_BATCH,
                          "seed": seed},
    }


def _ratio(a: float, b: float) -> float | None:
    return a / b if b > 0 else None


def real_targets(suite: str, threads: int, samples_per_class: int) -> dict:
    """The issue's targets for `suite`, and whether this run's settings are the ones they are
    stated for (2 threads, SNACS's default calibration size)."""
    from snacs import SNACS

    default_spc = SNACS().samples_per_class
    return {**REAL[suite], "threads": TARGET_THREADS, "samples_per_class": default_spc,
            "applies": threads == TARGET_THREADS and samples_per_class == default_spc}


def time_real(model: torch.nn.Module, train, *, mode: str = "target",
              samples_per_class: int | None = None, seed: int = 0) -> dict:
    """Time SNACS with its defaults (`mode`: a key of REAL_MODES) on `model` and `train`, and in
    the same process the L1 + BN recalibration reference and a bare forward pass.

    Returns the record's measurements: per-stage wall and CPU seconds (`stages`,
    `cpu_stages`), the fit, SNACS's own apply (removal + BN recalibration), `l1`, `forward`
    and the `ratios` of those times. A target SNACS cannot reach gives status "unreachable".
    """
    from snacs import SNACS
    from snacs.data import BatchLoader
    from snacs.errors import TargetError
    from snacs.metrics import conv_linear_weights
    from snacs.pruner import _default_estimator

    params = dict(REAL_MODES[mode])
    if samples_per_class is not None:
        params["samples_per_class"] = samples_per_class
    p = SNACS(seed=seed, **params)
    model.eval()
    # one untimed batch first, so no measurement pays the first call's one-off allocations
    with torch.inference_mode():
        model(next(iter(BatchLoader(train, p.batch_size)))[0])
    rec: dict[str, Any] = {
        "mode": mode,
        "settings": {k: v for k, v in p.get_params().items() if k != "progress"}
        | {"estimator": p.estimator or _default_estimator()},
        "samples_per_class": p.samples_per_class, "groups": p.groups, "probe": p.probe,
        "workers": p.workers, "threads": torch.get_num_threads(),
        "estimator": p.estimator or _default_estimator(),
        "conv_linear_weights": conv_linear_weights(model),
        "loadavg_1min_before": os.getloadavg()[0],
    }
    try:
        with _Clock() as fit:
            p.fit(model, train)
    except TargetError as e:
        return {**rec, "status": "unreachable", "error": str(e)}
    with _Clock() as app:
        p.apply(model)
    # the same calibration batches the activation pass read
    fwd = forward_pass(model, BatchLoader(train, p.batch_size, indices=p.calibration_indices_))
    budget = (float(p.target) if p.mode == "target"
              else float(p.plan_.predicted["weights_removed"]))
    l1 = l1_reference(model, train, target=budget, seed=seed,
                      samples_per_class=p.samples_per_class,
                      metric=p.target_metric if p.mode == "target" else "params")
    stages = {k: float(v) for k, v in p.timings_.items()}
    cpu = {k: float(v) for k, v in p.cpu_timings_.items()}
    rec["probe_cost"] = probe_cost(p)
    rec.update(
        status="ok", N=int(p.n_samples_), pairs=len(p.pairs_),
        stages=stages, cpu_stages=cpu,
        total_seconds=fit.seconds, total_cpu_seconds=fit.cpu_seconds,
        apply=app.record(),
        predicted_weights_removed=float(p.plan_.predicted["weights_removed"]),
        l1=l1, forward={**fwd, "batch_size": p.batch_size},
        ratios={
            "fit_to_l1": _ratio(fit.seconds, l1["seconds"]),
            "fit_to_l1_cpu": _ratio(fit.cpu_seconds, l1["cpu_seconds"]),
            "activations_to_forward": _ratio(stages["activations"], fwd["seconds"]),
            "activations_to_forward_cpu": _ratio(cpu["activations"], fwd["cpu_seconds"]),
        },
        loadavg_1min_after=os.getloadavg()[0],
    )
    return rec


def probe_cost(pruner) -> dict[str, float] | None:
    """The limits stage split into the probe's fits and its predictions over the rate grid
    (sums over the pairs of `LimitResult.cost`), or None when no probe curve was made."""
    curves = getattr(pruner, "limit_curves_", None) or {}
    costs = [getattr(c, "cost", None) or {} for c in curves.values()]
    if not costs or not all(costs):
        return None
    keys = ("fit_seconds", "fit_cpu_seconds", "predict_seconds", "predict_cpu_seconds",
            "predicted_samples")
    return {"pairs": len(costs), **{k: float(sum(c.get(k, 0.0) for c in costs)) for k in keys}}


def _meets(rec: dict, targets: dict) -> dict[str, bool | None]:
    """Each target met or missed; None where the run's settings are not the targets' own."""
    if rec.get("status") != "ok" or not targets["applies"]:
        return {k: None for k in ("fit_seconds", "fit_to_l1") if targets.get(k) is not None}
    out: dict[str, bool | None] = {"fit_seconds": rec["total_seconds"] <= targets["fit_seconds"]}
    if targets.get("fit_to_l1") is not None:
        r = rec["ratios"]["fit_to_l1"]
        out["fit_to_l1"] = r is not None and r <= targets["fit_to_l1"]
    return out


def _default_load(suite) -> Any:
    from benchmarks.compare import _datasets

    return _datasets(suite)[0]


def real_inputs(suite_name: str, *, bases: Path | None = None,
                load: Callable[[Any], Any] | None = None) -> tuple[Any, dict, Any] | str:
    """(model, base record, training split) of a compare suite, or why it cannot run (a
    message: the base is not committed, or the data is missing)."""
    from benchmarks import compare as C
    from snacs.errors import DataError

    suite = C.SUITES[suite_name]
    bases = Path(bases) if bases is not None else C.BASES
    try:
        model, meta = C.committed_base(suite, bases)
    except FileNotFoundError as e:
        log.info("%s", e)
        path = bases / str(suite.base_file)
        shown = path.relative_to(ROOT) if path.is_relative_to(ROOT) else path
        return f"its base {shown} (with its .json record) is not committed yet"
    try:
        train = (load or _default_load)(suite)
    except DataError as e:  # e.g. no cifar10-jpeg archive and no unpacked copy
        return f"the {suite.dataset} data is not available: {e}"
    return model, meta, train


def run_real(result: dict, suite_name: str, *, modes: list[str], save: Callable[[], Any],
             samples_per_class: int | None = None, seed: int = 0, force: bool = False,
             bases: Path | None = None, load: Callable[[Any], Any] | None = None) -> None:
    """Time every mode on one suite's committed base into `result["runs"]` (calling `save`
    after each run); a suite that cannot run is noted in `result["skipped"]`."""
    from benchmarks import compare as C

    suite = C.SUITES[suite_name]
    got = real_inputs(suite_name, bases=bases, load=load)
    skipped = result.setdefault("skipped", {})
    if isinstance(got, str):
        log.warning("%s skipped: %s", suite_name, got)
        skipped[suite_name] = got
        save()
        return
    skipped.pop(suite_name, None)
    model, meta, train = got
    from snacs import SNACS

    d = SNACS()  # the defaults every real run uses (but the calibration size, when given)
    for mode in modes:
        probe = {"network": suite.model, "weights": f"{suite.dataset} base", "kind": "real",
                 "suite": suite_name, "mode": mode, "workers": d.workers,
                 "threads": torch.get_num_threads(), "groups": d.groups, "probe": d.probe,
                 "samples_per_class": samples_per_class or d.samples_per_class,
                 "base_sha256": meta.get("sha256"), "cpu": cpu_model()}
        if any(_key(r) == _key(probe) for r in result["runs"]) and not force:
            log.info("skip %s (recorded)", _key(probe))
            continue
        log.info("timing %s (%s, %d thread(s), %d per class)", suite_name, mode,
                 torch.get_num_threads(), probe["samples_per_class"])
        r = {**probe, "model": suite.model, "width": suite.width,
             "weights_source": f"{meta.get('source')} (sha256 {str(meta.get('sha256'))[:16]})",
             "base_test_accuracy": meta.get("test_accuracy"),
             "data": f"{suite.dataset} train split, class-balanced calibration sample",
             **time_real(model, train, mode=mode, samples_per_class=probe["samples_per_class"],
                         seed=seed)}
        targets = real_targets(suite_name, r["threads"], r["samples_per_class"])
        r["targets"] = targets
        r["target_seconds"] = targets["fit_seconds"]
        r["meets"] = _meets(r, targets)
        vals = list(r["meets"].values())
        r["meets_target"] = None if None in vals else all(vals)
        r["environment"] = environment()
        r["measured"] = datetime.now(timezone.utc).isoformat(timespec="seconds")
        result["runs"] = [x for x in result["runs"] if _key(x) != _key(r)] + [r]
        result["updated"] = r["measured"]
        save()
        if r["status"] == "ok":
            log.info("%s %s: fit %.1f s (CPU %.1f s) %s; L1 + BN recal %.1f s; fit / L1 %.2f; "
                     "activations / forward %.2f", suite_name, mode, r["total_seconds"],
                     r["total_cpu_seconds"], {k: round(v, 1) for k, v in r["stages"].items()},
                     r["l1"]["seconds"], r["ratios"]["fit_to_l1"] or float("nan"),
                     r["ratios"]["activations_to_forward"] or float("nan"))
        else:
            log.warning("%s %s: %s", suite_name, mode, r.get("error"))


def _key(r: dict) -> tuple:
    """What makes two runs the same measurement (records without a field: its old default)."""
    # real runs are kept per CPU model: a machine of another kind does not replace them
    cpu = r.get("cpu", (r.get("environment") or {}).get("cpu")) if r.get("kind") == "real" else None
    return (r["network"], r["weights"], r["workers"], r["threads"], r["groups"],
            r.get("probe", "svm"), r.get("mode", "ul"),
            r.get("samples_per_class", SAMPLES_PER_CLASS), r.get("base_sha256"), cpu)


def _saver(result: dict, results_dir: Path) -> Callable[[], Path]:
    def save() -> Path:
        if Path(results_dir).resolve() == RESULTS.resolve():
            return write_json(NAME, result)
        from snacs.io import atomic_write_json

        path = Path(results_dir) / f"{NAME}.json"
        path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_json(path, result)
        return path
    return save


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--synthetic", action=argparse.BooleanOptionalAction, default=True,
                    help="the synthetic-input runs (--no-synthetic: only the CIFAR-10 bases)")
    ap.add_argument("--networks", default=",".join(NETWORKS), help="synthetic runs' networks")
    ap.add_argument("--weights", default="random,trained", help="random,trained")
    ap.add_argument("--workers", default="1", help="comma list of worker counts, e.g. 1,2")
    ap.add_argument("--probe", default="svm",
                    help="comma list of limit probes (svm is SNACS's default; linear, ncm)")
    ap.add_argument("--checkpoint", action="append", default=[],
                    help="NET=PATH: a really trained model for NET (snacs model file)")
    ap.add_argument("--real", default=",".join(REAL),
                    help="comma list of compare suites timed on their committed base and real "
                         "data ('' for none)")
    ap.add_argument("--modes", default=",".join(REAL_MODES),
                    help="SNACS modes of the real runs: target (50 %% of parameters), "
                         "target-macs (50 %% of MACs), ul")
    ap.add_argument("--samples-per-class", type=int, default=None,
                    help="real runs' calibration samples per class (default: SNACS's, 250); "
                         "a smaller value is a quick check, its targets are not judged")
    ap.add_argument("--threads", type=int, default=TARGET_THREADS,
                    help="torch threads (default 2, the setting the real-data targets are for)")
    ap.add_argument("--results", default=str(RESULTS),
                    help="directory of scoring_time.json (default benchmarks/results)")
    ap.add_argument("--bases", default=None, help="directory of committed bases "
                                                  "(default benchmarks/bases)")
    ap.add_argument("--force", action="store_true", help="rerun runs already recorded")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s",
                        stream=sys.stdout)
    torch.set_num_threads(args.threads)
    real = [x for x in args.real.split(",") if x]
    modes = [x for x in args.modes.split(",") if x]
    bad = [x for x in real if x not in REAL] + [m for m in modes if m not in REAL_MODES]
    if bad:
        ap.error(f"unknown suite(s)/mode(s) {', '.join(bad)}; suites: {', '.join(REAL)}; "
                 f"modes: {', '.join(REAL_MODES)}")

    import snacs
    from snacs.data import synthetic

    results_dir = Path(args.results)
    path = results_dir / f"{NAME}.json"
    old = json.loads(path.read_text()) if path.is_file() else {}
    result = {
        "benchmark": NAME,
        "created": old.get("created") or datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "environment": environment(),
        "data": f"synthetic, {CLASSES} classes x {SAMPLES_PER_CLASS} samples, {SHAPE}",
        "targets_seconds": {k: v["target_seconds"] for k, v in NETWORKS.items()},
        "real": {
            "description": (
                "committed CIFAR-10 bases, calibration images from the cifar10-jpeg training "
                "split; SNACS defaults (target: SNACS(target=0.5), 50 % of parameters; ul: "
                "SNACS()); reference: L1-norm filter selection at the same parameter budget, "
                "channel removal and BN recalibration (the compare harness's l1 path); forward: "
                "a bare model(x) loop under torch.inference_mode() over SNACS's calibration "
                "batches; wall = time.perf_counter, CPU = time.process_time (this process)"),
            "targets": {k: {**v, "threads": TARGET_THREADS} for k, v in REAL.items()},
        },
        "runs": list(old.get("runs", [])),
        "skipped": dict(old.get("skipped", {})),
    }
    save = _saver(result, results_dir)

    data = None
    ckpts = dict(c.split("=", 1) for c in args.checkpoint)
    for net in args.networks.split(",") if args.synthetic else []:
        spec = NETWORKS[net]
        for kind in args.weights.split(","):
            for workers, kind_probe in ((int(w), pr) for w in args.workers.split(",")
                                        for pr in args.probe.split(",")):
                probe = {"network": net, "weights": kind, "workers": workers,
                         "threads": torch.get_num_threads(), "groups": spec["groups"],
                         "probe": kind_probe}
                done = [r for r in result["runs"] if _key(r) == _key(probe)]
                if done and not args.force:
                    log.info("skip %s (recorded)", _key(probe))
                    continue
                if data is None:
                    data = synthetic("train", num_classes=CLASSES, n_per_class=SAMPLES_PER_CLASS,
                                     shape=SHAPE, seed=0)
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
                r = {**probe, "kind": "synthetic", "model": spec["model"], "width": spec["width"],
                     "weights_source": how, "target_seconds": spec["target_seconds"],
                     **time_one(model, data, groups=spec["groups"], workers=workers,
                                probe=kind_probe)}
                r["meets_target"] = r["total_seconds"] <= spec["target_seconds"]
                r["measured"] = datetime.now(timezone.utc).isoformat(timespec="seconds")
                result["runs"] = [x for x in result["runs"] if _key(x) != _key(probe)] + [r]
                result["updated"] = r["measured"]
                save()
                log.info("%s %s: %.1f s total %s", net, kind, r["total_seconds"],
                         {k: round(v, 1) for k, v in r["stages"].items()})

    bases = Path(args.bases) if args.bases else None
    for suite in real:
        run_real(result, suite, modes=modes, save=save, samples_per_class=args.samples_per_class,
                 force=args.force, bases=bases)
    save()
    return 0


if __name__ == "__main__":
    sys.exit(main())
