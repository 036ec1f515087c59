"""Accuracy at matched compression: SNACS against its peers on one trained model per suite.

    python -m benchmarks.compare --suite fmnist-vgg16
    python -m benchmarks.compare --suite fmnist-resnet20 --seeds 0 --metrics params

Every cell (method, budget metric, budget, seed) prunes the same trained base model with the
same physical channel removal (`snacs.apply.remove_channels`), fine-tunes with the same schedule
and seed (`snacs.train.train`) and is evaluated on the same test split. Results go to
`benchmarks/results/compare_<suite>.json`, rewritten atomically after every cell; a rerun skips
the cells already there (same base model, same fine-tuning schedule), so an interrupted run
resumes. Base models live under `runs/bench/<suite>/` (gitignored): an existing trained model is
copied there on first use, otherwise one is trained (seeded) with the suite's recipe.

The fine-tune is deliberately short (CPU): one epoch over a class-balanced subset of the training
split, the schedule is written into the JSON. Cells run in priority order (parameter budgets
first, seed by seed), so a partial run is a complete smaller grid.
"""

from __future__ import annotations

import argparse
import copy
import hashlib
import logging
import sys
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import torch

from benchmarks import RESULTS, environment, priced_by, table_key, write_json
from benchmarks import baselines as B
from snacs.io import file_sha256

log = logging.getLogger("benchmarks.compare")

ROOT = Path(__file__).resolve().parent.parent
BENCH_RUNS = ROOT / "runs" / "bench"

BUDGETS = (0.5, 0.7, 0.85)
SEEDS = (0, 1)
METRICS = ("params", "macs", "latency")

# Same recipe as `snacs train` for fashion-mnist (cli_common.DATASET_TRAIN_DEFAULTS): batch 64, no
# augmentation, lr 0.05 cosine, 2 epochs.
BASE_TRAIN = {"epochs": 2, "lr": 0.05, "schedule": "cosine", "batch_size": 64, "augment": False,
              "weight_decay": 5e-4, "val_fraction": 0.1, "seed": 0}
# The short fine-tune of every cell. With one epoch the per-epoch cosine schedule is a constant
# rate (lr_at(epoch 0) = lr).
FINETUNE = {"epochs": 1, "lr": 0.01, "schedule": "cosine", "batch_size": 64, "augment": False,
            "weight_decay": 5e-4, "val_fraction": 0.1}
FINETUNE_PER_CLASS = 1200  # a 12,000-image class-balanced subset of the train split, seeded
LATENCY = {"bs1": {"batch_size": 1, "repeats": 30}, "bs64": {"batch_size": 64, "repeats": 8},
           # as `snacs export --format torchscript` writes it: traced and frozen (BN folded)
           "bs1_ts": {"batch_size": 1, "repeats": 30, "frozen": True}}


@dataclass(frozen=True)
class Suite:
    """One benchmark suite.

    `base_file` names a base committed under benchmarks/bases/ (its sha256 and training record
    in the .json beside it): every cell starts from that file. `finetune`/`finetune_per_class`
    override the Fashion-MNIST fine-tune (None per class = the whole training split).
    `recalibrate_bn`: every method's pruned model gets its BatchNorm statistics re-estimated on
    the same calibration images (SNACS's: `samples_per_class` per class, the cell's seed) before
    it is evaluated and fine-tuned. `budgets`: (metric, fraction) cells in priority order; None
    is the full METRICS x BUDGETS grid.
    """

    name: str
    model: str
    width: float
    dataset: str
    base_sources: tuple[str, ...] = ()
    methods: tuple[str, ...] = B.METHODS
    snacs_params: dict = field(default_factory=dict)
    mint_params: dict = field(default_factory=lambda: dict(B.MINT_PARAMS))
    base_file: str | None = None
    finetune: dict | None = None
    finetune_per_class: int | None = FINETUNE_PER_CLASS
    recalibrate_bn: bool = False
    budgets: tuple[tuple[str, float], ...] | None = None
    latency: dict | None = None


BASES = Path(__file__).resolve().parent / "bases"
# CIFAR-10 (JPEG copy): one full epoch over all 50,000 training images for every cell, per-batch
# cosine from 0.01 to 0 so the fine-tuned weights are not the noisy iterate of a constant rate;
# crop+flip augmentation. Model selection is moot with one epoch, so nothing is held out.
CIFAR_FINETUNE = {"epochs": 1, "lr": 0.01, "schedule": "cosine-step", "batch_size": 128,
                  "augment": True, "weight_decay": 5e-4, "val_fraction": 0.0}
CIFAR_METHODS = ("snacs", "snacs-global", "l1", "random", "tp-magnitude", "tp-taylor", "hrank", "chip",
                 "snacs-ul", "dense")
# equal compute first (50 % of MACs: what makes a model faster), then 50 % of parameters, then
# 70 % of each, then 85 % of parameters
CIFAR_BUDGETS = (("macs", 0.5), ("params", 0.5), ("macs", 0.7), ("params", 0.7),
                 ("params", 0.85), ("latency", 0.5))
# a latency budget: the frozen TorchScript model at batch 1 on 1 thread (the "bs1_ts" column),
# priced for every method by one per-layer table timed on this machine (snacs.latency)
LATENCY_BUDGET = {"batch_size": 1, "threads": 1, "column": "bs1_ts"}
CIFAR_LATENCY = {"bs1": {"batch_size": 1, "repeats": 20}, "bs64": {"batch_size": 64, "repeats": 5},
                 "bs1_ts": {"batch_size": 1, "repeats": 20, "frozen": True},
                 "bs64_ts": {"batch_size": 64, "repeats": 5, "frozen": True}}


def _cifar(name: str, model: str, width: float = 1.0, finetune: dict | None = None) -> Suite:
    return Suite(name, model, width, "cifar10-jpeg", methods=CIFAR_METHODS,
                 base_file=f"{name}.pt", finetune=finetune or CIFAR_FINETUNE, finetune_per_class=None,
                 recalibrate_bn=True, budgets=CIFAR_BUDGETS, latency=CIFAR_LATENCY)


SUITES = {
    # the base trained by the harness (BASE_TRAIN) on 2026-12-03 and committed, so every
    # machine starts from the same weights (the cells before it used an uncommitted base)
    "fmnist-vgg16": Suite("fmnist-vgg16", "vgg16", 0.25, "fashion-mnist",
                          base_file="fmnist-vgg16.pt"),
    "fmnist-resnet20": Suite("fmnist-resnet20", "resnet20", 1.0, "fashion-mnist",
                             base_file="fmnist-resnet20.pt"),  # likewise, trained on 2026-12-04
    "cifar10-resnet56": _cifar("cifar10-resnet56", "resnet56"),
    "cifar10-vgg16": _cifar("cifar10-vgg16", "vgg16", width=0.5),  # width 0.5: width 1 measured 12.5 min/epoch here
    # width 0.5, NHWC fine-tune: width 1 measured 18.6 min per training epoch here even in NHWC
    # (3.2 s per batch of 128; depthwise convs are slow on CPU), so its base (~40 epochs) and
    # 49 one-epoch cells would take ~1.5 days of machine time; width 0.5: 6.8 min per epoch
    "cifar10-mobilenetv2": _cifar("cifar10-mobilenetv2", "mobilenetv2", width=0.5,
                                  finetune={**CIFAR_FINETUNE, "channels_last": True}),
}


def results_path(suite: str, results_dir: Path = RESULTS) -> Path:
    return results_dir / f"compare_{suite}.json"


UNBUDGETED = ("snacs-ul", "dense")  # methods run once per seed, at no budget


def cell_id(method: str, metric: str | None, budget: float | None, seed: int) -> str:
    if method == "snacs-ul":
        return f"snacs-ul__auto__seed{seed}"
    if method == "dense":
        return f"dense__none__seed{seed}"
    return f"{method}__{metric}{round(budget * 100)}__seed{seed}"


def grid(methods, metrics, budgets, seeds, pairs=None) -> list[dict]:
    """Cells in priority order.

    Without `pairs` (the Fashion-MNIST suites): every seed's parameter budgets first, then MAC
    budgets. With `pairs`, (metric, budget) cells in that order (restricted to `metrics` and
    `budgets`), seed by seed. The unbudgeted cells of a seed (`snacs-ul`, `dense`) come first.
    """
    if pairs is None:
        chunks = [[(metric, b) for b in budgets] for metric in metrics]
    else:
        chunks = [[(m, b) for m, b in pairs if m in metrics and b in budgets]]
    cells = []
    for k, chunk in enumerate(chunks):
        for seed in seeds:
            if k == 0:
                cells += [{"method": m, "metric": None, "budget": None, "seed": seed}
                          for m in UNBUDGETED if m in methods]
            cells += [{"method": m, "metric": metric, "budget": budget, "seed": seed}
                      for metric, budget in chunk for m in methods if m not in UNBUDGETED
                      and (metric != "latency" or m in B.LATENCY_METHODS)]
    for c in cells:
        c["id"] = cell_id(c["method"], c["metric"], c["budget"], c["seed"])
    return cells


def state_digest(model: torch.nn.Module) -> str:
    """A content hash of the model's weights (the base-model identity of every cell)."""
    h = hashlib.sha256()
    for k, v in sorted(model.state_dict().items()):
        h.update(k.encode())
        h.update(str(tuple(v.shape)).encode())
        h.update(v.detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()[:16]


def _datasets(suite: Suite):
    from snacs.data import fashion_mnist, get_dataset

    if suite.dataset == "fashion-mnist":
        return fashion_mnist("train"), fashion_mnist("test")
    return get_dataset(suite.dataset, "train"), get_dataset(suite.dataset, "test")


def latency_table_file(suite: Suite, bases: Path | None = None) -> Path:
    """Where a suite's committed latency table lives (copy a timed one there to keep it)."""
    return (bases or BASES) / f"{suite.name}.latency-table.json"


def committed_base(suite: Suite, bases: Path = BASES) -> tuple[torch.nn.Module, dict]:
    """The suite's base committed under benchmarks/bases/, checked against its recorded sha256."""
    import json

    import snacs

    path = bases / str(suite.base_file)
    meta_path = path.with_suffix(".json")
    if not path.is_file() or not meta_path.is_file():
        raise FileNotFoundError(
            f"{suite.name}: base {path} (and its .json record) is not committed yet; make it with "
            f"`python -m benchmarks.bases --suite {suite.name} --run <training run dir>`")
    meta = json.loads(meta_path.read_text())
    digest = file_sha256(path)
    if digest != meta.get("sha256"):
        raise RuntimeError(f"{path} has sha256 {digest[:16]}, its record says "
                           f"{str(meta.get('sha256'))[:16]}: the base changed")
    return snacs.load(path), {**meta, "source": f"benchmarks/bases/{path.name}"}


def base_model(suite: Suite, train, test, runs: Path = BENCH_RUNS) -> tuple[torch.nn.Module, dict]:
    """The suite's trained base model: runs/bench/<suite>/base.pt, else copied from a known
    trained run, else trained here with BASE_TRAIN (seeded, resumable)."""
    import snacs
    from snacs.io import atomic_write_json
    from snacs.train import TrainConfig, evaluate
    from snacs.train import train as train_fn

    d = runs / suite.name
    path = d / "base.pt"
    meta_path = d / "base.json"
    if path.is_file():
        import json

        meta = json.loads(meta_path.read_text()) if meta_path.is_file() else {"source": str(path)}
        return snacs.load(path), meta
    d.mkdir(parents=True, exist_ok=True)
    meta: dict[str, Any] = {}
    for src in suite.base_sources:
        p = ROOT / src
        if p.is_file():
            model = snacs.load(p)
            meta = {"source": src, "trained_here": False}
            break
    else:
        c = train.image_shape[0]
        model = snacs.create_model(suite.model, num_classes=train.num_classes, width=suite.width,
                                   in_channels=c)
        cfg = TrainConfig(**BASE_TRAIN)
        log.info("training the %s base model (%s)", suite.name, BASE_TRAIN)
        res = train_fn(model, train, cfg, out_dir=d / "train", resume=True)
        meta = {"source": f"trained here: {suite.model} width {suite.width}", "trained_here": True,
                "train_config": BASE_TRAIN, "train_seconds": res.seconds,
                "best_val_accuracy": res.best_val_accuracy}
    meta["test_accuracy"] = evaluate(model, test)["accuracy"]
    snacs.save(model, path)
    atomic_write_json(meta_path, meta)
    return snacs.load(path), meta


def _latency(model, shape, settings: dict) -> dict[str, float]:
    from snacs.export import frozen_torchscript
    from snacs.metrics import measure_latency

    out = {}
    for k, v in settings.items():
        v = dict(v)
        m = model
        if v.pop("frozen", False):
            m = frozen_torchscript(model, torch.randn(v.get("batch_size", 1), *shape))
        out[k] = measure_latency(m, shape, threads=1, **v)["median_ms"]
    return out


def _fit_cache(suite: Suite, method: str, seed: int, base_sha: str, runs: Path) -> Path:
    key = B.state_key(method)
    return runs / suite.name / "fits" / f"{key}-seed{seed}-{base_sha}.pt"


def recalibration(suite: Suite) -> dict | None:
    """BN re-estimation applied to every pruned model (and the dense one) before evaluation."""
    if not suite.recalibrate_bn:
        return None
    spc = suite.snacs_params.get("samples_per_class", 250)
    return {"samples_per_class": spc, "batch_size": 250,
            "description": f"BatchNorm running statistics re-estimated (cumulative average) "
                           f"on SNACS's calibration images: {spc} per class from the training "
                           "split, drawn with the cell's seed"}


def fingerprint(suite: Suite, base_sha: str, finetune: dict | None = None,
                finetune_per_class: int | None | str = "suite") -> str:
    """What a cell's result depends on besides its method, budget and seed: the base's weights,
    the fine-tune, SNACS's and MINT's settings and the BN recalibration. A recorded cell whose
    fingerprint differs is stale (rerun by the next run, listed as such by ``--dry-run``)."""
    import json

    per_class = suite.finetune_per_class if finetune_per_class == "suite" else finetune_per_class
    key = {"base": base_sha, "finetune": dict(finetune or suite.finetune or FINETUNE),
           "per_class": per_class, "snacs": suite.snacs_params, "mint": suite.mint_params}
    if suite.recalibrate_bn:
        key["recalibrate_bn"] = recalibration(suite)
    return hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:16]


class Harness:
    """One suite: base model, data, and the per-seed scoring state of every method."""

    def __init__(self, suite: Suite, *, results_dir: Path = RESULTS, runs: Path = BENCH_RUNS,
                 finetune: dict | None = None, finetune_per_class: int | None | str = "suite",
                 latency: dict | None = None, data=None) -> None:
        from snacs.metrics import conv_linear_weights, count_macs, count_parameters
        from snacs.pairs import find_topology

        self.suite = suite
        self.results_dir = Path(results_dir)
        self.runs = Path(runs)
        self.finetune = dict(finetune or suite.finetune or FINETUNE)
        self.finetune_per_class = (suite.finetune_per_class if finetune_per_class == "suite"
                                   else finetune_per_class)
        self.latency = dict(latency or suite.latency or LATENCY)
        if data is None:
            self.train, self.test = _datasets(suite)
            if suite.base_file:
                self.model, self.base_meta = committed_base(suite)
            else:
                self.model, self.base_meta = base_model(suite, self.train, self.test, self.runs)
        else:  # tests: (train, test, model)
            self.train, self.test, self.model = data
            from snacs.train import evaluate

            self.base_meta = {"source": "given", "test_accuracy": evaluate(self.model, self.test)["accuracy"]}
        self.model.eval()
        self.shape = tuple(self.train.image_shape)
        self.topology = find_topology(self.model, self.shape)
        self.base_sha = state_digest(self.model)
        self.base = {
            **self.base_meta, "sha": self.base_sha,
            "weights": conv_linear_weights(self.model), "params": count_parameters(self.model),
            "macs": count_macs(self.model, self.shape),
            "prunable_groups": len(B.prunable_groups(self.topology)),
        }
        self.states: dict[tuple[str, int], tuple[Any, float]] = {}
        self.path = results_path(suite.name, self.results_dir)
        self.result = self._load()

    # -- results file
    def _header(self) -> dict:
        from snacs.pruner import _default_estimator

        return {
            "benchmark": "compare",
            "suite": self.suite.name,
            "model": {"name": self.suite.model, "width": self.suite.width,
                      "in_channels": self.shape[0]},
            "dataset": self.suite.dataset,
            "base": self.base,
            "finetune": {**self.finetune, "samples_per_class": self.finetune_per_class,
                         "description": self._finetune_description()},
            "recalibrate_bn": self._recalibration(),
            "snacs_params": {"estimator": _default_estimator(), **self.suite.snacs_params},
            "mint_params": self.suite.mint_params,
            "budget_search": ("non-SNACS methods: per-group scores divided by their mean, channels "
                              "ranked globally (the best of each group always kept), the number "
                              "removed bisected until snacs.plan.count_plan meets the budget"),
            "latency": {k: {**v, "threads": 1} for k, v in self.latency.items()},
            "environment": environment(),
            "torch_threads": torch.get_num_threads(),
        }

    def _finetune_description(self) -> str:
        f = self.finetune
        sched = {"cosine": f"cosine per epoch{'; constant within one epoch' if f['epochs'] == 1 else ''}",
                 "cosine-step": "cosine per batch, down to 0 at the last batch"}.get(
                     f["schedule"], f["schedule"])
        data = ("the whole training split" if self.finetune_per_class is None else
                f"a class-balanced subset of {self.finetune_per_class} training images per class "
                "(seeded by the cell's seed)")
        held = (f", {f['val_fraction']:.0%} of it held out for selection" if f["val_fraction"]
                else ", nothing held out (the last epoch's weights are kept)")
        return (f"{f['epochs']} epoch(s) of SGD (momentum 0.9, Nesterov, wd {f['weight_decay']}) "
                f"at lr {f['lr']} ({sched}), batch {f['batch_size']}, "
                f"{'crop+flip augmentation' if f['augment'] else 'no augmentation'}, on {data}{held}")

    def _recalibration(self) -> dict | None:
        """BN re-estimation applied to every pruned model (and the dense one) before evaluation."""
        return recalibration(self.suite)

    def _fingerprint(self) -> str:
        return fingerprint(self.suite, self.base_sha, self.finetune, self.finetune_per_class)

    def _load(self) -> dict:
        import json

        res = self._header()
        res["fingerprint"] = self._fingerprint()
        res["cells"] = {}
        if self.path.is_file():
            old = json.loads(self.path.read_text())
            kept = {k: v for k, v in old.get("cells", {}).items()
                    if v.get("fingerprint") == res["fingerprint"] and v.get("status") != "error"}
            if len(kept) < len(old.get("cells", {})):
                log.info("%d stale or failed cell(s) of %s will be rerun",
                         len(old.get("cells", {})) - len(kept), self.path.name)
            res["cells"] = kept
            res["created"] = old.get("created")
        res["created"] = res.get("created") or datetime.now(timezone.utc).isoformat(timespec="seconds")
        return res

    def save(self) -> None:
        self.result["updated"] = datetime.now(timezone.utc).isoformat(timespec="seconds")
        self.result["torch_threads"] = torch.get_num_threads()
        self.results_dir.mkdir(parents=True, exist_ok=True)
        if self.results_dir == RESULTS:
            write_json(self.path.stem, self.result)
        else:
            from snacs.io import atomic_write_json

            atomic_write_json(self.path, self.result)

    def done(self, cid: str) -> bool:
        """A cell is done once recorded; a latency cell only if it was priced by the table in
        use now (a table timed on another machine prices the layers differently)."""
        rec = self.result["cells"].get(cid)
        if rec is None:
            return False
        priced = priced_by(rec)
        return priced is None or priced == table_key(self.latency_table().base_ms)

    # -- scoring state (fitted pruners are cached on disk: an interrupted run does not refit)
    def state(self, method: str, seed: int) -> tuple[Any, float]:
        key = (B.state_key(method), seed)
        if key in self.states:
            return self.states[key]
        cache = _fit_cache(self.suite, method, seed, self._fingerprint(), self.runs)
        fitted = method.startswith("snacs") or method == "mint"
        if fitted and cache.is_file():
            st = torch.load(cache, map_location="cpu", weights_only=False)
            self.states[key] = (st, float(sum(st.timings_.values())))
            return self.states[key]
        t = time.perf_counter()
        st = B.score_method(key[0], self.model, self.topology, self.train, seed=seed,
                            snacs_params=self.suite.snacs_params,
                            mint_params=self.suite.mint_params)
        secs = time.perf_counter() - t
        if fitted:
            self._check_topology(st.topology_)
            cache.parent.mkdir(parents=True, exist_ok=True)
            from snacs.io import atomic_torch_save

            atomic_torch_save(st, cache)
        self.states[key] = (st, secs)
        return self.states[key]

    def _check_topology(self, topo) -> None:
        mine = [(g.id, tuple(g.producers)) for g in self.topology.groups]
        theirs = [(g.id, tuple(g.producers)) for g in topo.groups]
        if mine != theirs:
            raise RuntimeError("SNACS traced different channel groups than the harness")

    # -- one cell
    def run_cell(self, cell: dict) -> dict:
        from snacs.apply import remove_channels
        from snacs.data import class_balanced_indices
        from snacs.errors import TargetError
        from snacs.metrics import conv_linear_weights, count_macs, count_parameters
        from snacs.train import TrainConfig, evaluate, train

        method, metric, budget, seed = cell["method"], cell["metric"], cell["budget"], cell["seed"]
        rec: dict[str, Any] = {"method": method, "metric": metric, "budget": budget, "seed": seed,
                               "fingerprint": self._fingerprint()}
        state, score_s = self.state(method, seed)
        table = self.latency_table() if metric == "latency" else None
        t = time.perf_counter()
        try:
            remove, pred = B.select_from_state(method, state, self.model, self.topology,
                                               target=budget, metric=metric or "params",
                                               latency_table=table, data=self.train)
        except TargetError as e:
            rec.update(status="unreachable", error=str(e))
            return rec
        select_s = time.perf_counter() - t
        pruned = copy.deepcopy(self.model)
        remove_channels(pruned, self.topology, remove)
        pruned.eval()
        w0, w1 = self.base["weights"], conv_linear_weights(pruned)
        m0, m1 = self.base["macs"], count_macs(pruned, self.shape)
        rec.update(
            status="ok",
            channels_removed=sum(len(v) for v in remove.values()),
            channels_removed_per_group={str(k): len(v) for k, v in sorted(remove.items())},
            predicted={k: float(v) for k, v in pred.items()},
            weights_before=w0, weights_after=w1, weights_removed_pct=100.0 * (1 - w1 / w0),
            params_before=self.base["params"], params_after=count_parameters(pruned),
            macs_before=m0, macs_after=m1, macs_removed_pct=100.0 * (1 - m1 / m0),
            score_seconds=score_s, select_seconds=select_s, prune_seconds=score_s + select_s,
            score_timings={k: float(v) for k, v in getattr(state, "timings_", {}).items()},
        )
        if abs(pred["weights_after"] - w1) > 0 or abs(pred["macs_after"] - m1) > 0:
            rec["accounting_mismatch"] = {"predicted_weights": pred["weights_after"],
                                          "predicted_macs": pred["macs_after"]}
        # latency of base and pruned measured back to back (a ratio holds on a busy machine)
        rec["remove"] = {str(k): v for k, v in sorted(remove.items())}
        rec.update(self._measure_latency(pruned))
        if table is not None:
            col = rec["latency_ms"].get(LATENCY_BUDGET["column"])
            rec["latency_target"] = {
                "budget": budget, "predicted_removed": pred["latency_removed"],
                "measured_removed": (1 - col["pruned"] / col["base"]) if col else None,
                "column": LATENCY_BUDGET["column"], "table_base_ms": table.base_ms}
        rec["accuracy_base"] = self.base_meta["test_accuracy"]
        recal = self._recalibration()
        if recal is not None:
            from snacs.apply import recalibrate_bn
            from snacs.data import BatchLoader

            t = time.perf_counter()
            calib = class_balanced_indices(self.train.labels, recal["samples_per_class"],
                                           seed=seed, num_classes=self.train.num_classes)
            recalibrate_bn(pruned, BatchLoader(self.train, recal["batch_size"], indices=calib))
            pruned.eval()
            rec["recalibrate_seconds"] = time.perf_counter() - t
            rec["prune_seconds"] += rec["recalibrate_seconds"]
        rec["accuracy_pruned"] = evaluate(pruned, self.test)["accuracy"]
        train_set = self.train
        if self.finetune_per_class is not None:
            idx = class_balanced_indices(self.train.labels, self.finetune_per_class, seed=seed)
            train_set = self.train.subset(idx)
        cfg = TrainConfig(**self.finetune, seed=seed)
        t = time.perf_counter()
        res = train(pruned, train_set, cfg, test_set=self.test)
        rec.update(accuracy_finetuned=res.test_accuracy, finetune_val_accuracy=res.best_val_accuracy,
                   finetune_seconds=time.perf_counter() - t)
        return rec

    def latency_table(self):
        """The base's per-layer latency table, timed once on this machine and kept beside the
        fits (the results file records its summary)."""
        from snacs.latency import LatencyTable, measure_table

        if getattr(self, "_latency_table", None) is not None:
            return self._latency_table
        committed = latency_table_file(self.suite)
        path = self.runs / self.suite.name / f"latency-table-{self._fingerprint()}.json"
        if committed.is_file():
            # the suite's own table, committed beside its base so that every machine prices
            # the latency cells alike
            path = committed
            tab = LatencyTable.load(path)
            tab.check_model(self.model, self.shape)
        elif path.is_file():
            tab = LatencyTable.load(path)
        else:
            t = time.perf_counter()
            tab = measure_table(self.model, self.shape, batch_size=LATENCY_BUDGET["batch_size"],
                                threads=LATENCY_BUDGET["threads"])
            path.parent.mkdir(parents=True, exist_ok=True)
            tab.save(path)
            log.info("latency table timed in %.1f s: base %.3f ms, layers %.3f ms",
                     time.perf_counter() - t, tab.base_ms, tab.layers_full_ms)
        self.result["latency_table"] = {"batch_size": tab.batch_size, "threads": tab.threads,
                                        "base_ms": tab.base_ms, "layers_ms": tab.layers_full_ms,
                                        "machine": tab.machine, "file": path.name}
        self._latency_table = tab
        return tab

    def _measure_latency(self, pruned) -> dict:
        """Base and pruned latency, back to back (a ratio holds on a busy machine)."""
        import os

        load = os.getloadavg()[0]
        lat_b = _latency(self.model, self.shape, self.latency)
        lat_p = _latency(pruned, self.shape, self.latency)
        return {"latency_ms": {k: {"base": lat_b[k], "pruned": lat_p[k]} for k in self.latency},
                "latency_loadavg": load,
                "latency_measured": datetime.now(timezone.utc).isoformat(timespec="seconds")}

    def remeasure_latency(self, ids: set[str] | None = None) -> None:
        """Time every finished cell again (e.g. on a quieter machine), or those of `ids`;
        nothing else changes.

        The removal is rebuilt from the method's (cached, deterministic) scoring state and
        checked against the recorded channel counts before timing.
        """
        from snacs.apply import remove_channels

        for cid, rec in sorted(self.result["cells"].items()):
            if rec.get("status") != "ok" or (ids is not None and cid not in ids):
                continue
            if "remove" in rec:
                remove = {int(k): list(v) for k, v in rec["remove"].items()}
            else:
                state, _ = self.state(rec["method"], rec["seed"])
                remove, _ = B.select_from_state(
                    rec["method"], state, self.model, self.topology, target=rec["budget"],
                    metric=rec["metric"] or "params", data=self.train,
                    latency_table=self.latency_table() if rec["metric"] == "latency" else None)
            counts = {str(k): len(v) for k, v in sorted(remove.items())}
            if counts != rec["channels_removed_per_group"]:
                log.warning("%s: rebuilt removal differs from the recorded one; skipped", cid)
                continue
            pruned = copy.deepcopy(self.model)
            remove_channels(pruned, self.topology, remove)
            rec.update(self._measure_latency(pruned.eval()))
            rec["remove"] = {str(k): v for k, v in sorted(remove.items())}
            if "latency_target" in rec:
                col = rec["latency_ms"].get(rec["latency_target"]["column"])
                rec["latency_target"]["measured_removed"] = (1 - col["pruned"] / col["base"]
                                                             if col else None)
            self.save()
            lat = rec["latency_ms"]
            log.info("%s: latency bs1 %.2f -> %.2f ms, bs64 %.1f -> %.1f ms (load %.1f)", cid,
                     lat["bs1"]["base"], lat["bs1"]["pruned"], lat["bs64"]["base"],
                     lat["bs64"]["pruned"], rec["latency_loadavg"])

    def forget(self, methods, seeds, ids=None) -> None:
        """Drop the finished cells and cached scoring state of `methods` for `seeds` (only the
        cells named in `ids`, when given: a --redo of some budgets keeps the others)."""
        drop = [k for k, c in self.result["cells"].items()
                if c["method"] in methods and c["seed"] in seeds and (ids is None or k in ids)]
        for k in drop:
            del self.result["cells"][k]
        for m in methods:
            for seed in seeds:
                self.states.pop((B.state_key(m), seed), None)
                _fit_cache(self.suite, m, seed, self._fingerprint(), self.runs).unlink(
                    missing_ok=True)
        log.info("dropped %d cell(s) of %s", len(drop), ", ".join(methods))
        self.save()

    def retry_unreachable(self, methods) -> None:
        """Drop the cells of `methods` recorded as unreachable, so the next run retries them."""
        drop = [k for k, c in self.result["cells"].items()
                if c["method"] in methods and c.get("status") == "unreachable"]
        for k in drop:
            del self.result["cells"][k]
        log.info("retrying %d unreachable cell(s) of %s", len(drop), ", ".join(methods))
        self.save()

    def run(self, cells: list[dict], *, max_cells: int | None = None) -> None:
        todo = [c for c in cells if not self.done(c["id"])]
        log.info("%s: %d of %d cells to run", self.suite.name, len(todo), len(cells))
        self.save()
        for i, cell in enumerate(todo[:max_cells]):
            t = time.perf_counter()
            try:
                rec = self.run_cell(cell)
            except Exception as e:  # noqa: BLE001 - record and go on; a rerun retries it
                log.exception("cell %s failed", cell["id"])
                rec = {**{k: cell[k] for k in ("method", "metric", "budget", "seed")},
                       "status": "error", "error": f"{type(e).__name__}: {e}",
                       "fingerprint": self._fingerprint()}
            rec["cell_seconds"] = time.perf_counter() - t
            self.result["cells"][cell["id"]] = rec
            self.save()
            log.info("[%d/%d] %s: %s", i + 1, len(todo), cell["id"], _summary(rec))


def _summary(rec: dict) -> str:
    if rec.get("status") != "ok":
        return f"{rec.get('status')}: {rec.get('error')}"
    return (f"weights -{rec['weights_removed_pct']:.1f} % MACs -{rec['macs_removed_pct']:.1f} % "
            f"acc {rec['accuracy_pruned']:.2f} -> {rec['accuracy_finetuned']:.2f} "
            f"({rec['cell_seconds']:.0f} s)")


def _floats(s: str) -> tuple[float, ...]:
    return tuple(float(x) for x in s.split(",") if x)


def cell_status(suite: Suite, cells: list[dict], results_dir: Path = RESULTS,
                bases: Path | None = None) -> list[tuple[str, str]]:
    """(status, cell id) per cell for ``--dry-run``: "todo" (not recorded), "stale" (recorded
    from another base or settings, failed, or priced by another latency table: the next run redoes
    it) or "done". A leading ("# ...", "") row says when staleness cannot be told (no committed
    base: the run trains or loads one first)."""
    import json

    bases = bases or BASES
    recorded = {}
    p = results_path(suite.name, results_dir)
    if p.is_file():
        recorded = json.loads(p.read_text()).get("cells", {})
    tab = latency_table_file(suite, bases)
    table_ms = table_key(json.loads(tab.read_text())["base_ms"]) if tab.is_file() else None
    out: list[tuple[str, str]] = []
    fp = None  # the fingerprint a cell must carry: known without training only for a committed base
    if suite.base_file:
        fp = fingerprint(suite, state_digest(committed_base(suite, bases)[0]))
    else:
        out.append((f"# {suite.name} has no committed base: cells recorded from another base are "
                    "found stale only when the run loads it", ""))
    for c in cells:
        rec = recorded.get(c["id"])
        priced = priced_by(rec or {})
        stale = rec is not None and (
            (priced is not None and table_ms is not None and priced != table_ms)
            or rec.get("status") == "error" or (fp is not None and rec.get("fingerprint") != fp))
        out.append(("todo" if rec is None else "stale" if stale else "done", c["id"]))
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--suite", required=True, choices=sorted(SUITES))
    ap.add_argument("--methods", default=None,
                    help=f"comma list (default: all: {','.join(B.METHODS)})")
    ap.add_argument("--metrics", default=",".join(METRICS), help="budget metrics: params,macs")
    ap.add_argument("--budgets", default=None,
                    help="fractions removed (default: the suite's, else "
                         f"{','.join(str(b) for b in BUDGETS)})")
    ap.add_argument("--seeds", default=",".join(str(s) for s in SEEDS))
    ap.add_argument("--max-cells", type=int, default=None, help="stop after this many new cells")
    ap.add_argument("--threads", type=int, default=None,
                    help="torch threads for scoring/fine-tuning (latency always uses 1)")
    ap.add_argument("--dry-run", action="store_true", help="list the cells still to run")
    ap.add_argument("--remeasure-latency", action="store_true",
                    help="only time the finished cells again (for a quieter machine); with "
                         "--methods, --metrics, --budgets or --seeds, only those cells")
    ap.add_argument("--redo", action="store_true",
                    help="drop the finished cells of the selected methods, metrics, budgets and "
                         "seeds and those methods' cached fits first (e.g. after a library "
                         "change), then run them again")
    ap.add_argument("--retry-unreachable", action="store_true",
                    help="run again the cells of the selected methods recorded as unreachable "
                         "(e.g. after SNACS learnt to relax its limits for a target)")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s",
                        stream=sys.stdout)
    if args.threads:
        torch.set_num_threads(args.threads)
    suite = SUITES[args.suite]
    methods = tuple(args.methods.split(",")) if args.methods else suite.methods
    bad = [m for m in methods if m not in B.METHODS]
    if bad:
        ap.error(f"unknown method(s) {', '.join(bad)}; choose from {', '.join(B.METHODS)}")
    metrics = tuple(args.metrics.split(","))
    budgets = (_floats(args.budgets) if args.budgets else
               tuple(sorted({b for _, b in suite.budgets})) if suite.budgets else BUDGETS)
    cells = grid(methods, metrics, budgets, tuple(int(s) for s in args.seeds.split(",")),
                 pairs=suite.budgets)
    if args.dry_run:
        for status, cid in cell_status(suite, cells):
            print(f"{status:<5} {cid}" if cid else status)
        return 0
    h = Harness(suite)
    log.info("base model %s: %.2f %% test accuracy, %d weights, %d MACs", h.base["source"],
             h.base["test_accuracy"], h.base["weights"], h.base["macs"])
    if args.remeasure_latency:
        chosen = args.methods or args.budgets or args.metrics != ",".join(METRICS) \
            or args.seeds != ",".join(str(s) for s in SEEDS)
        h.remeasure_latency(ids={c["id"] for c in cells} if chosen else None)
        return 0
    if args.redo:
        h.forget(methods, {int(x) for x in args.seeds.split(",")}, ids={c["id"] for c in cells})
    if args.retry_unreachable:
        h.retry_unreachable(methods)
    h.run(cells, max_cells=args.max_cells)
    return 0


if __name__ == "__main__":
    sys.exit(main())
