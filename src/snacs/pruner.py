"""The SNACS pruner (scikit-learn contract) and the one-verb `snacs.prune`.

Data flows one way: calibration data → activations → scores → limits and sensitivity → plan →
apply. `SNACS(**params)` only stores hyperparameters; `fit(model, data)` does the work and sets
`topology_`, `pairs_`, `scores_`, `limits_`, `sensitivity_`, `protected_`, `plan_`, `timings_`
(wall seconds per stage), `cpu_timings_` (process CPU seconds per stage);
`apply(model)` returns a pruned copy.
"""

from __future__ import annotations

import inspect
import logging
import time
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from snacs.errors import ConfigError, DataError
from snacs.plan import GRANULARITIES, MODES

ALLOCATIONS = ("auto", "limits", "global", "select")

log = logging.getLogger(__name__)

__all__ = ["SNACS", "PruneResult", "prune"]


def _default_estimator() -> str:
    try:
        from snacs.estimators import DEFAULT_ESTIMATOR

        return DEFAULT_ESTIMATOR
    except ImportError:  # pragma: no cover
        return "edge"


class SNACS:
    """Single-shot, automatic structured pruning with adaptive connectivity scores.

    Args:
        granularity: "filter" (physically removes channels; the default) or "connection"
            (the paper's unit: masks (child group, parent group) kernel slices).
        mode: "ul" prunes every pair to its automatic limit; "global" uses quantile `q` of the
            pooled scores capped by the limits; "target" searches q to remove `target`.
        target: fraction of parameters (or MACs or latency, see `target_metric`) to remove, in
            (0, 1).
        target_metric: "params" (conv+linear weights), "macs", or "latency": the measured
            inference time of the traced, frozen TorchScript model at `latency_batch_size` and
            `latency_threads` (`snacs.latency`). The latency is priced by a per-layer cost table
            (`latency_table`, or timed on this machine during `fit`); when it is timed here, the
            pruned model is timed too and the target corrected by the measured shortfall (at
            most `latency_rounds` plans). The result is in `latency_`. Filter granularity only.
        q: quantile for mode "global".
        groups: G, groups per side (G = min(n, groups)); a value >= channels means one filter
            per group.
        samples_per_class: s, calibration samples per class drawn from the training split.
        estimator: CMI estimator; None uses `snacs.estimators.DEFAULT_ESTIMATOR`
            ("gaussian_copula"); also "edge", "edge_faithful", "gaussian", "knn", "gmi".
        phi: weight scaling φ ("weight", "weight_sq", "exp_weight", "none").
        limits: "probe" (operating constraints, SPEC §4), "none" (no limit), or a number in
            [0, 1): one fixed cap for every layer (MINT's setting).
        limit_fraction: the 0.7 of τ = max − fraction·(max − min).
        relax_limits: in mode "target", when the target is above what the limits allow, raise
            the limit fraction just enough (bisection) instead of refusing; each layer's limit
            then grows by how flat its own probe curve is. The fraction used is
            `limit_fraction_`. Only with limits="probe".
        allocation: how a target is spread across layers (filter granularity). "auto" (the
            default): "limits" for a parameter or latency target and for modes "ul" and
            "global", "global" for a MAC target (chosen by the CIFAR-10 suites, BENCHMARKS.md:
            the limit-based plan wins at equal parameters and at equal latency on ResNet-56 and
            VGG16, the global ranking at equal MACs on ResNet-56); the choice made is
            `allocation_`. "limits": each
            layer pruned within its probe limit, one score quantile for all (SPEC §6);
            "global": the layer-mean-normalised ACMI of every filter group ranked across all
            layers, the lowest removed until the target is met (`snacs.allocation`), the best
            group of each layer and protected groups kept, no probe limit involved. In mode
            "ul" with "global", the budget is what the limit-based plan removes (in
            `target_metric`) and only where it is taken from changes. In mode "target" the
            global allocation does not use the probe limits, so they are not computed.
            A latency target works with every allocation: the limit-based plan is then bisected
            on the latency table's prediction, as the global one is.
            "select" (mode "target", any target metric): both plans are made and the one
            whose pruned model, BatchNorm re-estimated on the calibration images, is more
            accurate on them is kept (`allocation_` names it, `allocation_trials_` holds both
            accuracies); it costs the probe limits and two passes over the calibration images
            per plan.
        grid_step: step of the rate grid, in percent.
        probe: the limits' classifier: "svm", "linear" or "ncm".
        sensitivity: "auto" (outliers above mean + k·std), "fraction", or "none".
        sensitivity_k: k of the automatic rule.
        protect_fraction: share of top groups protected with sensitivity="fraction".
        workers: processes that score pairs in parallel.
        cache_dir: where scores are cached so an interrupted run resumes (None: no cache).
        batch_size: batch size of the activation pass.
        seed: seed of the calibration sample and the estimators.
        recalibrate_bn: after pruning, re-estimate BatchNorm statistics on the calibration set
            (weights unchanged), so the pruned model is usable before fine-tuning.
        latency_batch_size: batch size the latency target is measured at.
        latency_threads: CPU threads the latency target is measured with (None: torch's).
        latency_table: a `snacs.latency.LatencyTable` or the path of one written by
            `snacs latency-table` on the deployment machine (None: time it here).
        latency_rounds: with a table timed here, the most plans made to meet the measured target.
        progress: show progress bars.

    Under torch.distributed: when the caller has initialised a process group of several ranks
    (e.g. the script runs under `torchrun` and calls `torch.distributed.init_process_group`
    with backend "gloo") and every rank calls `fit` with the same model, data and options, the
    work is split: each rank runs a contiguous block of the calibration batches and scores and
    probes a share of the layer pairs, and the results are gathered (`snacs.distributed`). Every
    rank ends with the same `scores_`, `limits_` and `plan_`, bit for bit those of one process
    with the same number of threads per process. `timings_` are this rank's. Without a process
    group nothing changes.
    """

    def __init__(
        self,
        *,
        granularity: str = "filter",
        mode: str = "ul",
        target: float | None = None,
        target_metric: str = "params",
        q: float | None = None,
        groups: int = 64,
        samples_per_class: int = 250,
        estimator: str | None = None,
        phi: str = "weight",
        limits: str | float = "probe",
        limit_fraction: float = 0.7,
        relax_limits: bool = False,
        allocation: str = "auto",
        grid_step: int = 5,
        probe: str = "svm",
        sensitivity: str = "auto",
        sensitivity_k: float = 2.0,
        protect_fraction: float = 0.1,
        workers: int = 1,
        cache_dir: str | None = None,
        batch_size: int = 256,
        seed: int = 0,
        recalibrate_bn: bool = True,
        latency_batch_size: int = 1,
        latency_threads: int | None = 1,
        latency_table=None,
        latency_rounds: int = 3,
        progress: bool = False,
    ) -> None:
        self.granularity = granularity
        self.mode = mode
        self.target = target
        self.target_metric = target_metric
        self.q = q
        self.groups = groups
        self.samples_per_class = samples_per_class
        self.estimator = estimator
        self.phi = phi
        self.limits = limits
        self.limit_fraction = limit_fraction
        self.relax_limits = relax_limits
        self.allocation = allocation
        self.grid_step = grid_step
        self.probe = probe
        self.sensitivity = sensitivity
        self.sensitivity_k = sensitivity_k
        self.protect_fraction = protect_fraction
        self.workers = workers
        self.cache_dir = cache_dir
        self.batch_size = batch_size
        self.seed = seed
        self.recalibrate_bn = recalibrate_bn
        self.latency_batch_size = latency_batch_size
        self.latency_threads = latency_threads
        self.latency_table = latency_table
        self.latency_rounds = latency_rounds
        self.progress = progress

    # -- scikit-learn contract
    @classmethod
    def _param_names(cls) -> list[str]:
        sig = inspect.signature(cls.__init__)
        return [p for p in sig.parameters if p != "self"]

    def get_params(self, deep: bool = True) -> dict[str, Any]:
        return {k: getattr(self, k) for k in self._param_names()}

    def set_params(self, **params: Any) -> SNACS:
        for k, v in params.items():
            if k not in self._param_names():
                raise ConfigError(f"unknown SNACS option {k!r}; valid: {', '.join(self._param_names())}")
            setattr(self, k, v)
        return self

    def __repr__(self) -> str:
        changed = {k: v for k, v in self.get_params().items()
                   if v != inspect.signature(type(self).__init__).parameters[k].default}
        return f"SNACS({', '.join(f'{k}={v!r}' for k, v in changed.items())})"

    def validate(self) -> None:
        """Check every option before any expensive step; raise ConfigError/TargetError."""
        from snacs.errors import TargetError
        from snacs.limits import PROBES
        from snacs.sensitivity import RULES

        if self.granularity not in GRANULARITIES:
            raise ConfigError(f"unknown granularity {self.granularity!r}; choose filter or connection")
        if self.mode not in MODES:
            raise ConfigError(f"unknown mode {self.mode!r}; choose one of {', '.join(MODES)}")
        if self.target is not None and self.mode == "ul":
            self.mode = "target"
        if self.mode == "target":
            if self.target is None or not 0.0 < float(self.target) < 1.0:
                raise TargetError(
                    f"target must be a fraction strictly between 0 and 1 (e.g. 0.5 removes half), "
                    f"got {self.target}")
        if self.target_metric not in ("params", "macs", "latency"):
            raise ConfigError(f"target_metric must be 'params', 'macs' or 'latency', got "
                              f"{self.target_metric!r}")
        if self.mode == "global" and (self.q is None or not 0.0 <= float(self.q) <= 1.0):
            raise ConfigError(f"mode 'global' needs q in [0, 1], got {self.q}; pass e.g. --q 0.5")
        # G > channels is clamped per layer (G = min(n, groups), SPEC §1); G < 1 is an error
        if not isinstance(self.groups, int) or isinstance(self.groups, bool) or self.groups < 1:
            raise ConfigError(
                f"groups must be a positive integer, got {self.groups!r}; each layer uses "
                "G = min(channels, groups) groups, e.g. --groups 64 (a value above a layer's "
                "channel count means one filter per group)")
        if not isinstance(self.samples_per_class, int) or self.samples_per_class < 2:
            raise ConfigError(f"samples_per_class must be an integer >= 2, got "
                              f"{self.samples_per_class!r}; e.g. --samples-per-class 250")
        est = self.estimator or _default_estimator()
        from snacs.estimators import ESTIMATORS

        if est not in ESTIMATORS:
            raise ConfigError(f"unknown estimator {est!r}; choose one of {', '.join(ESTIMATORS)}")
        if self.phi not in ("weight", "weight_sq", "exp_weight", "none"):
            raise ConfigError(f"unknown phi {self.phi!r}; choose weight, weight_sq, exp_weight or none")
        if isinstance(self.limits, str):
            if self.limits not in ("probe", "none"):
                raise ConfigError(f"limits must be 'probe', 'none' or a fixed cap in [0, 1), got {self.limits!r}")
        elif not 0.0 <= float(self.limits) < 1.0:
            raise ConfigError(f"a fixed limit must be in [0, 1), got {self.limits}")
        if not 0.0 < self.limit_fraction < 1.0:
            raise ConfigError(f"limit_fraction must be in (0, 1), got {self.limit_fraction}")
        if self.relax_limits and self.limits != "probe":
            raise ConfigError(
                f"relax_limits raises the probe's limit fraction, but limits={self.limits!r}; "
                "use limits='probe' (the default) or drop --relax-limits")
        if self.allocation not in ALLOCATIONS:
            raise ConfigError(f"unknown allocation {self.allocation!r}; choose auto, limits, "
                              "global or select")
        if self.allocation == "select" and (self.granularity != "filter" or self.mode != "target"):
            raise ConfigError("allocation='select' chooses between two plans of one target: use "
                              "mode='target' with granularity='filter' (or allocation='limits')")
        if self.target_metric == "latency":
            self._validate_latency()
        if self.allocation == "global":
            if self.granularity != "filter":
                raise ConfigError("allocation='global' removes filter groups; use "
                                  "granularity='filter' (or allocation='limits')")
            if self.mode == "global":
                raise ConfigError("allocation='global' takes a target (mode 'target') or the "
                                  "limits' budget (mode 'ul'), not a quantile q")
            if self.mode == "ul" and self.limits != "probe":
                raise ConfigError("allocation='global' in mode 'ul' takes its budget from the "
                                  "probe limits; give a --target or use limits='probe'")
        if self.probe not in PROBES:
            raise ConfigError(f"unknown probe {self.probe!r}; choose one of {', '.join(PROBES)}")
        if self.sensitivity not in RULES:
            raise ConfigError(f"unknown sensitivity {self.sensitivity!r}; choose one of {', '.join(RULES)}")
        if not isinstance(self.workers, int) or self.workers < 1:
            raise ConfigError(f"workers must be a positive integer, got {self.workers!r}; "
                              "e.g. --workers 1 (one process per CPU core at most)")

    def _validate_latency(self) -> None:
        from snacs.latency import LatencyTable

        if self.mode != "target":
            raise ConfigError("target_metric='latency' needs a target: pass e.g. --target 0.5 "
                              "(half the measured latency removed)")
        if self.granularity != "filter":
            raise ConfigError("a latency target removes whole filters; use granularity='filter' "
                              "(masked connections do not make the model faster)")
        for name in ("latency_batch_size", "latency_rounds"):
            v = getattr(self, name)
            if not isinstance(v, int) or isinstance(v, bool) or v < 1:
                raise ConfigError(f"{name} must be a positive integer, got {v!r}")
        t = self.latency_threads
        if t is not None and (not isinstance(t, int) or isinstance(t, bool) or t < 1):
            raise ConfigError(f"latency_threads must be a positive integer or None, got {t!r}")
        if self.latency_table is not None and not isinstance(self.latency_table, (str, Path,
                                                                                  LatencyTable)):
            raise ConfigError("latency_table must be a snacs.latency.LatencyTable or the path of "
                              f"one, got {type(self.latency_table).__name__}")

    def resolved_allocation(self) -> str:
        """The allocation `fit` uses: `allocation`, with "auto" decided by mode and metric."""
        if self.allocation != "auto":
            return self.allocation
        if self.granularity == "filter" and self.mode == "target" and self.target_metric == "macs":
            return "global"
        return "limits"

    # -- the work
    def _calibration(self, data, input_shape_hint=None):
        """Batches of the calibration set from a snacs dataset, (x, y) tensors or batches."""
        from snacs.data import BatchLoader, class_balanced_indices

        if hasattr(data, "labels") and hasattr(data, "__getitem__") and hasattr(data, "image_shape"):
            idx = class_balanced_indices(data.labels, self.samples_per_class, seed=self.seed,
                                         class_names=getattr(data, "classes", None),
                                         num_classes=getattr(data, "num_classes", None))
            self.calibration_indices_ = idx
            loader = BatchLoader(data, self.batch_size, indices=idx)
            return loader, tuple(data.image_shape), len(loader)
        if isinstance(data, (tuple, list)) and len(data) == 2 and isinstance(data[0], torch.Tensor):
            x, y = data
            if x.shape[0] != torch.as_tensor(y).shape[0]:
                raise DataError(f"calibration inputs and labels differ in length ({x.shape[0]} vs {len(y)})")
            self.calibration_indices_ = None
            batches = [(x[i:i + self.batch_size], torch.as_tensor(y)[i:i + self.batch_size])
                       for i in range(0, x.shape[0], self.batch_size)]
            return batches, tuple(x.shape[1:]), len(batches)
        if isinstance(data, Iterable):
            batches = list(data)
            if not batches:
                raise DataError("the calibration data is empty")
            self.calibration_indices_ = None
            return batches, tuple(batches[0][0].shape[1:]), len(batches)
        raise DataError(
            f"cannot use {type(data).__name__} as data; pass a snacs dataset, an (inputs, labels) "
            "pair of tensors, or an iterable of (inputs, labels) batches")

    def fit(self, model: nn.Module, data) -> SNACS:
        """Score, limit, protect and plan. `model` is not modified."""
        from snacs.activations import collect_activations
        from snacs.limits import upper_limits
        from snacs.plan import make_plan
        from snacs.scores import ScoreSettings, score_pairs
        from snacs.sensitivity import sensitivity
        from snacs.validate import preflight

        self.validate()
        timings: dict[str, float] = {}
        cpu: dict[str, float] = {}  # process CPU seconds (all threads of this process)
        t = time.perf_counter()
        c = time.process_time()
        batches, input_shape, n_batches = self._calibration(data)
        self._calibration_batches = batches
        self.input_shape_ = input_shape
        # model vs data, non-finite weights, disk space, target vs fixed limits: before the
        # activation pass, the first expensive step
        self.topology_ = preflight(self, model, input_shape, *self._calibration_size(data, batches))
        self.pairs_ = [p.name for p in self.topology_.pairs]
        for p in self.topology_.pairs:
            if self.groups > max(p.n_parent, 1) and self.groups != 64 and self.groups < 10**6:
                log.debug("groups=%d exceeds %d channels of %s: one channel per group",
                          self.groups, p.n_parent, p.name)
        timings["topology"] = time.perf_counter() - t
        cpu["topology"] = time.process_time() - c
        log.info("%s: %.1f s", "topology", timings["topology"])

        self.latency_ = None
        if self.target_metric == "latency":  # timed, and checked for reach, before the scoring
            t = time.perf_counter()
            c = time.process_time()
            self._latency_table_, self._latency_here = self._get_latency_table(model, input_shape)
            self._check_latency_reach(model)
            timings["latency_table"] = time.perf_counter() - t
            cpu["latency_table"] = time.process_time() - c
            log.info("%s: %.1f s", "latency_table", timings["latency_table"])

        t = time.perf_counter()
        c = time.process_time()
        acts = collect_activations(model, self.topology_, batches, progress=self.progress,
                                   total=n_batches, distributed=True)
        self._check_classes(acts.labels)
        timings["activations"] = time.perf_counter() - t
        cpu["activations"] = time.process_time() - c
        log.info("%s: %.1f s", "activations", timings["activations"])

        t = time.perf_counter()
        c = time.process_time()
        settings = ScoreSettings(groups=self.groups, estimator=self.estimator or _default_estimator(),
                                 phi=self.phi, seed=self.seed)
        self.scores_ = score_pairs(model, self.topology_, acts, settings, workers=self.workers,
                                   cache_dir=self.cache_dir, progress=self.progress,
                                   distributed=True)
        timings["scores"] = time.perf_counter() - t
        cpu["scores"] = time.process_time() - c
        log.info("%s: %.1f s", "scores", timings["scores"])

        self.allocation_ = self.resolved_allocation()
        self.allocation_trials_ = None  # allocation="select": each candidate's calibration accuracy
        t = time.perf_counter()
        c = time.process_time()
        if self.allocation_ == "global" and self.mode == "target":
            # the global ranking does not read the limits: not computed (issue 16)
            self.limit_curves_, self.limits_ = {}, {}
        elif self.limits == "probe":
            self.limit_curves_ = upper_limits(
                model, self.topology_, acts, self.scores_, granularity=self.granularity,
                grid_step=self.grid_step, fraction=self.limit_fraction, probe=self.probe,
                seed=self.seed, progress=self.progress, distributed=True)
            self.limits_ = {k: v.limit for k, v in self.limit_curves_.items()}
        else:
            cap = 0.99 if self.limits == "none" else float(self.limits)
            self.limit_curves_ = {}
            self.limits_ = {p.name: cap for p in self.topology_.pairs}
        timings["limits"] = time.perf_counter() - t
        cpu["limits"] = time.process_time() - c
        log.info("%s: %.1f s", "limits", timings["limits"])

        t = time.perf_counter()
        c = time.process_time()
        self.sensitivity_ = sensitivity(model, self.topology_, groups=self.groups,
                                        rule=self.sensitivity, k=self.sensitivity_k,
                                        fraction=self.protect_fraction)
        self.protected_ = {g: s.protected for g, s in self.sensitivity_.items()}
        timings["sensitivity"] = time.perf_counter() - t
        cpu["sensitivity"] = time.process_time() - c
        log.info("%s: %.1f s", "sensitivity", timings["sensitivity"])

        t = time.perf_counter()
        c = time.process_time()
        self.limit_fraction_ = self.limit_fraction if self.limits_ and self.limits == "probe" else None
        if (self.mode == "target" and self.relax_limits and self.limit_curves_
                and self.allocation_ in ("limits", "select") and self.target_metric != "latency"):
            from snacs.plan import relax_limits

            self.limit_fraction_, self.limits_ = relax_limits(
                model, self.topology_, self.scores_, self.limit_curves_, self.sensitivity_,
                target=float(self.target), fraction=self.limit_fraction,
                granularity=self.granularity, target_metric=self.target_metric,
                groups=self.groups)
        if self.target_metric == "latency":  # relaxed per aimed latency, in the plan makers
            self.plan_ = self._latency_plan(model)
        elif self.allocation_ == "global":
            self.plan_ = self._global_plan(model)
        elif self.allocation_ == "select":
            self.plan_ = self._select_plan(model)
        else:
            self.plan_ = make_plan(model, self.topology_, self.scores_, self.limits_,
                                   self.sensitivity_, granularity=self.granularity,
                                   mode=self.mode, q=self.q, target=self.target,
                                   target_metric=self.target_metric, groups=self.groups)
        timings["plan"] = time.perf_counter() - t
        cpu["plan"] = time.process_time() - c
        log.info("%s: %.1f s", "plan", timings["plan"])
        self.timings_ = timings
        self.cpu_timings_ = cpu
        self.n_samples_ = acts.n
        return self

    def _get_latency_table(self, model: nn.Module, input_shape):
        """(table, timed here?): the given table checked against the model, or one timed now."""
        from snacs.latency import LatencyTable, measure_table

        tab = self.latency_table
        if tab is None:
            log.info("timing a latency table (batch %d, %s threads)", self.latency_batch_size,
                     self.latency_threads)
            from snacs.distributed import from_rank0

            # timed once, on rank 0, under torch.distributed: every rank plans from one table
            return from_rank0(lambda: measure_table(model, input_shape,
                                                    batch_size=self.latency_batch_size,
                                                    threads=self.latency_threads)), True
        if not isinstance(tab, LatencyTable):
            tab = LatencyTable.load(tab)
        tab.check_model(model, input_shape)
        if tab.batch_size != self.latency_batch_size or tab.threads != self.latency_threads:
            log.warning("the latency table was timed at batch %d with %s threads, not batch %d "
                        "with %s threads as asked; the table's setting is used",
                        tab.batch_size, tab.threads, self.latency_batch_size, self.latency_threads)
        return tab, False

    def _check_latency_reach(self, model: nn.Module) -> None:
        """Stop before the scoring when even one channel per layer cannot meet the target."""
        from snacs.errors import TargetError
        from snacs.latency import kept_channels
        from snacs.plan import Plan

        remove = {cg.id: list(range(1, cg.channels)) for cg in self.topology_.groups
                  if cg.prunable and cg.channels > 1 and any(p.group == cg.id for p in self.topology_.pairs)}
        kept = kept_channels(model, self.topology_, Plan(granularity="filter", mode="target", remove=remove))
        best = self._latency_table_.predicted_removal(kept)
        if best < float(self.target):
            raise TargetError(
                f"latency target {float(self.target):.0%} is out of reach: with one channel left in "
                f"every prunable layer the latency table predicts {best:.1%} removed; the rest "
                "(activations, pooling, each layer's cost at one channel) does not shrink with "
                "channels: ask for less, or measure at a larger batch size")

    def _latency_plan(self, model: nn.Module):
        """A latency target, spread by the resolved allocation and priced by the latency table.

        "global" and "limits" make their plan by :meth:`_latency_rounds`; "select" makes both and
        keeps the one more accurate on the calibration images, as for the other metrics."""
        from snacs.errors import TargetError

        makers = {"global": self._global_latency_maker, "limits": self._limits_latency_maker}
        if self.allocation_ != "select":
            plan, self.latency_, extra = self._latency_rounds(model, makers[self.allocation_])
            self._keep_limits(extra)
            return plan
        cands, records, why = {}, {}, None
        for name in ("limits", "global"):
            try:
                plan, record, extra = self._latency_rounds(model, makers[name])
            except TargetError as e:
                if name == "global":
                    raise
                why = str(e)
                continue
            cands[name], records[name] = plan, (record, extra)
        name = self._choose(model, cands, why)
        self.latency_, extra = records[name]
        self._keep_limits(extra)
        return cands[name]

    def _keep_limits(self, extra: dict) -> None:
        """The limit fraction and limits the kept latency plan was made with (relaxed per aim
        with `relax_limits`), stored as `fit` stores them for the other metrics, so
        `limits_` and the report's per-layer limits are the ones the plan kept to."""
        self.limit_fraction_ = extra.get("limit_fraction")
        if "limits" in extra:
            self.limits_ = dict(extra["limits"])

    def _global_latency_maker(self, model: nn.Module, aim: float):
        from snacs.allocation import plan_global

        plan = plan_global(model, self.topology_, self.scores_, self.sensitivity_, target=aim,
                           metric="latency", groups=self.groups, latency_table=self._latency_table_)
        plan.limits = {}
        return plan, {}

    def _limits_latency_maker(self, model: nn.Module, aim: float):
        """The limit-based plan of an aimed latency removal; with `relax_limits`, the limit
        fraction raised just enough for that aim (as for a parameter or MAC target)."""
        from snacs.plan import plan_within_limits

        plan, fraction, limits = plan_within_limits(
            model, self.topology_, self.scores_, self.limits_, self.sensitivity_, target=aim,
            target_metric="latency", groups=self.groups, latency_table=self._latency_table_,
            curves=self.limit_curves_ if self.relax_limits else None,
            fraction=self.limit_fraction_)  # as fit set them, unrelaxed
        return plan, {"limit_fraction": fraction, "limits": limits}

    def _latency_rounds(self, model: nn.Module, maker):
        """(plan, record, extra) for the latency target: `maker(model, aim)` makes the plan of
        an aimed predicted removal; when the table was timed here, each plan's pruned model is
        timed and the aim raised (or lowered) by the measured miss, keeping the plan closest to
        the target among those that meet it."""
        from snacs.apply import apply_plan
        from snacs.distributed import from_rank0
        from snacs.errors import TargetError
        from snacs.latency import measured_removal

        table, here = self._latency_table_, self._latency_here
        target, tol = float(self.target), 0.02
        aim, tried = target, []  # (plan, record, extra) per round
        for _ in range(self.latency_rounds if here else 1):
            try:
                plan, extra = maker(model, aim)
            except TargetError:
                if not tried:
                    raise
                break  # a corrected aim beyond what the table allows: keep the plans so far
            plan.mode = self.mode
            row = {"aimed": aim, "predicted_removed": plan.predicted["latency_removed"]}
            tried.append((plan, row, extra))
            if not here:
                break
            pruned = apply_plan(model, self.topology_, plan)
            m = from_rank0(lambda pruned=pruned: measured_removal(
                model, pruned, self.input_shape_, batch_size=table.batch_size,
                threads=table.threads))
            row.update(measured_removed=m["removed"], base_ms=m["base_ms"], pruned_ms=m["pruned_ms"])
            miss = target - m["removed"]
            nxt = min(0.99, max(0.01, aim + miss))
            if abs(miss) <= tol or abs(nxt - aim) < 1e-3:
                break
            aim = nxt
        if here:  # closest among the plans that meet the target (within tol), else the most removed
            meets = [t for t in tried if t[1]["measured_removed"] >= target - tol]
            plan, chosen, extra = (min(meets, key=lambda t: abs(t[1]["measured_removed"] - target))
                                   if meets else max(tried, key=lambda t: t[1]["measured_removed"]))
        else:
            plan, chosen, extra = tried[0]
        record = {"target": target, "batch_size": table.batch_size, "threads": table.threads,
                  "table": "timed here" if here else "given", "base_ms_table": table.base_ms,
                  "predicted_removed": chosen["predicted_removed"],
                  "measured_removed": chosen.get("measured_removed"),
                  "base_ms": chosen.get("base_ms"), "pruned_ms": chosen.get("pruned_ms"),
                  "rounds": [r for _, r, _ in tried]}
        if here and chosen["measured_removed"] < target - tol:
            log.warning("latency target %.0f%%: the best plan removes %.1f%% of the measured "
                        "latency (predicted %.1f%%)", 100 * target, 100 * chosen["measured_removed"],
                        100 * chosen["predicted_removed"])
        return plan, record, extra

    def _global_plan(self, model: nn.Module):
        """allocation='global': the target (or, in mode 'ul', the limits' budget) spread by
        one ranking of layer-normalised ACMI across all layers."""
        from snacs.allocation import budget_key, plan_global
        from snacs.plan import make_plan

        target = self.target
        if self.mode == "ul":
            ul = make_plan(model, self.topology_, self.scores_, self.limits_, self.sensitivity_,
                           granularity="filter", mode="ul", groups=self.groups)
            target = ul.predicted[budget_key(self.target_metric)]
            if target <= 0:
                from snacs.plan import Plan

                return Plan(granularity="filter", mode="ul", predicted=ul.predicted)
        plan = plan_global(model, self.topology_, self.scores_, self.sensitivity_,
                           target=float(target), metric=self.target_metric, groups=self.groups)
        plan.mode = self.mode
        plan.limits = dict(self.limits_)
        return plan

    def _select_plan(self, model: nn.Module):
        """allocation='select': the limit-based and the global plan of the target, the one whose
        pruned model (BatchNorm re-estimated on the calibration images) is more accurate on
        them. A target above the limits (without relax_limits) leaves the global plan alone."""
        from snacs.errors import TargetError
        from snacs.plan import make_plan

        cands, why = {}, None
        try:
            cands["limits"] = make_plan(model, self.topology_, self.scores_, self.limits_,
                                        self.sensitivity_, granularity="filter", mode="target",
                                        target=self.target, target_metric=self.target_metric,
                                        groups=self.groups)
        except TargetError as e:
            why = str(e)
        cands["global"] = self._global_plan(model)
        name = self._choose(model, cands, why)
        if name != "limits":
            self.limit_fraction_ = None  # the limits did not decide the plan
        return cands[name]

    def _choose(self, model: nn.Module, cands: dict, why: str | None) -> str:
        """allocation='select': the candidate plan whose pruned model, BatchNorm re-estimated on
        the calibration images, is more accurate on them; `why` says why "limits" is missing."""
        from snacs.allocation import select_allocation
        from snacs.distributed import from_rank0

        batches = self._calibration_batches
        # compared on rank 0 and shared, so every rank of a torchrun keeps the same plan
        name, trials = from_rank0(lambda: select_allocation(model, self.topology_, cands, batches))
        self.allocation_, self.allocation_trials_ = name, trials
        if why is not None:
            self.allocation_trials_["limits"] = {"unreachable": why}
        log.info("allocation: %s (%s)", name, ", ".join(
            f"{k} {v['accuracy']:.2f} %" if "accuracy" in v else f"{k} unreachable"
            for k, v in self.allocation_trials_.items()))
        return name

    def _calibration_size(self, data, batches) -> tuple[int, int | None]:
        """(N, number of classes) of the calibration set, without loading a lazy dataset."""
        if getattr(self, "calibration_indices_", None) is not None:
            return len(self.calibration_indices_), getattr(data, "num_classes", None)
        labels = torch.cat([torch.as_tensor(y).reshape(-1) for _, y in batches])
        return labels.numel(), (int(labels.max()) + 1 if labels.numel() else None)

    def _check_classes(self, labels: torch.Tensor) -> None:
        counts = torch.bincount(labels)
        if (counts > 0).sum() < 2:
            raise DataError("the calibration set holds a single class; SNACS needs labelled data "
                            "from at least two classes")

    def apply(self, model: nn.Module) -> nn.Module:
        """A pruned copy of `model` following `plan_` (call `fit` first)."""
        from snacs.apply import apply_plan, recalibrate_bn

        if not hasattr(self, "plan_"):
            raise ConfigError("call fit(model, data) before apply(model)")
        pruned = apply_plan(model, self.topology_, self.plan_)
        if self.recalibrate_bn and getattr(self, "_calibration_batches", None) is not None:
            recalibrate_bn(pruned, self._calibration_batches)
        return pruned


@dataclass
class PruneResult:
    """Everything SPEC §8 asks a pruning run to report; serialises to JSON."""

    settings: dict
    granularity: str
    mode: str
    samples: int
    weights_before: int
    weights_after: int
    weights_pruned_pct: float
    params_before: int
    params_after: int
    macs_before: int
    macs_after: int
    macs_reduction: float
    layers: list[dict] = field(default_factory=list)
    latency_before_ms: float | None = None
    latency_after_ms: float | None = None
    accuracy_before: float | None = None
    accuracy_pruned: float | None = None
    accuracy_finetuned: float | None = None
    timings: dict = field(default_factory=dict)
    plan_checksum: str = ""
    limit_fraction_used: float | None = None
    allocation_used: str | None = None
    allocation_trials: dict | None = None
    latency_target: dict | None = None
    finetune: dict | None = None
    base_check: dict | None = None
    data: dict | None = None

    def to_dict(self) -> dict:
        return asdict(self)

    def save(self, path: str | Path) -> None:
        from snacs.io import atomic_write_json

        atomic_write_json(path, self.to_dict())


def _layer_table(model: nn.Module, pruned: nn.Module, pruner: SNACS) -> list[dict]:
    from snacs.pairs import is_depthwise

    before = {n: m for n, m in model.named_modules() if isinstance(m, (nn.Conv2d, nn.Linear))}
    after = dict(pruned.named_modules())
    pair_of: dict[str, list] = {}  # a child reading a concatenation has one pair per producer
    for p in pruner.topology_.pairs:
        pair_of.setdefault(p.child, []).append(p)
    rows = []
    for n, m in before.items():
        a = after[n]
        w0 = m.weight.numel()
        w1 = int(torch.count_nonzero(a.weight.detach()))
        out0 = m.out_channels if isinstance(m, nn.Conv2d) else m.out_features
        out1 = a.out_channels if isinstance(a, nn.Conv2d) else a.out_features
        in0 = m.in_channels if isinstance(m, nn.Conv2d) else m.in_features
        in1 = a.in_channels if isinstance(a, nn.Conv2d) else a.in_features
        p = pair_of.get(n)
        inputs_cut = 100.0 * (1 - in1 / in0)
        if pruner.granularity == "connection" and p is not None:
            wt = a.weight.detach()  # (filters, inputs it holds, kernel or spatial)
            cols = wt.shape[1] if wt.dim() > 2 else wt.shape[1] // p[0].spatial
            w = wt.reshape(wt.shape[0], cols, -1)
            # share of (child filter, parent channel) connections removed: what the limit caps
            inputs_cut = 100.0 * float((w == 0).all(-1).float().mean())
        sens_prot = 0
        cg = pruner.topology_.group_of_producer(n)
        if cg is not None:
            sens_prot = len(pruner.protected_.get(cg.id, []))
        rows.append({
            "layer": n, "type": "depthwise" if is_depthwise(m) else type(m).__name__,
            "weights_before": w0, "weights_after": w1,
            "pruned_pct": 100.0 * (1 - w1 / w0),
            "limited_unit_pruned_pct": inputs_cut,
            "out_channels_before": out0, "out_channels_after": out1,
            "channels_removed": out0 - out1,
            "limit_pct": (100.0 * min(pruner.limits_[q.name] for q in p)
                          if p and all(q.name in pruner.limits_ for q in p) else None),
            "protected_groups": sens_prot,
        })
    return rows


def prune(
    model: nn.Module,
    data,
    *,
    eval_data=None,
    measure_latency: bool = True,
    base_check: bool = True,
    expect_accuracy: float | None = None,
    expect_classes: list[str] | None = None,
    force: bool = False,
    **params: Any,
) -> tuple[nn.Module, PruneResult]:
    """Prune `model` with SNACS in one call and report what was done.

    Args:
        model: a trained network (not modified).
        data: calibration data: a snacs dataset (class-balanced samples are drawn from it), an
            (inputs, labels) pair of tensors, or an iterable of (inputs, labels) batches.
        eval_data: optional held-out dataset; accuracy before and after pruning is measured on it.
        measure_latency: time a batch-1 forward pass before and after (1 thread).
        base_check: with `eval_data`, first measure the unpruned model on a few hundred of its
            images and stop when it does not fit the data (`snacs.validate.check_base_model`).
        expect_accuracy: accuracy (%) the unpruned model should reach on `eval_data`.
        expect_classes: class names in the model's label order, compared with the data's.
        force: go on (with a warning) when the base check fails.
        **params: SNACS options (see `SNACS`).

    Returns:
        The pruned model (masks held, for granularity "connection") and a `PruneResult`.
    """
    from snacs.metrics import (
        conv_linear_weights,
        count_macs,
        count_parameters,
        nonzero_conv_linear_weights,
    )
    from snacs.metrics import measure_latency as latency
    from snacs.train import evaluate

    pruner = SNACS(**params)
    pruner.validate()
    base = None
    if eval_data is not None and base_check:  # before any pruning work (issue 17)
        from snacs.validate import check_base_model

        base = check_base_model(model, eval_data, seed=pruner.seed, expect_accuracy=expect_accuracy,
                                expect_classes=expect_classes, force=force)
    pruner.fit(model, data)
    pruned = pruner.apply(model)
    shape = pruner.input_shape_
    sparse = pruner.granularity == "connection"
    w0 = conv_linear_weights(model)
    w1 = nonzero_conv_linear_weights(pruned) if sparse else conv_linear_weights(pruned)
    m0 = count_macs(model, shape)
    m1 = count_macs(pruned, shape, sparse=sparse)
    res = PruneResult(
        settings={k: (v if k != "latency_table" or v is None or isinstance(v, str)
                      else str(v) if isinstance(v, Path) else "LatencyTable (given)")
                  for k, v in pruner.get_params().items() if k != "progress"}
        | {"estimator": pruner.estimator or _default_estimator()},
        granularity=pruner.granularity, mode=pruner.mode, samples=pruner.n_samples_,
        weights_before=w0, weights_after=w1, weights_pruned_pct=100.0 * (1 - w1 / w0),
        params_before=count_parameters(model), params_after=count_parameters(pruned),
        macs_before=m0, macs_after=m1, macs_reduction=m0 / max(m1, 1),
        layers=_layer_table(model, pruned, pruner), timings=dict(pruner.timings_),
        plan_checksum=pruner.plan_.checksum(),
        limit_fraction_used=pruner.limit_fraction_,
        allocation_used=pruner.allocation_, latency_target=pruner.latency_,
        allocation_trials=getattr(pruner, "allocation_trials_", None),
        base_check=base,
    )
    if hasattr(data, "mean") and hasattr(data, "classes"):
        from snacs.data.normalization import data_record

        res.data = data_record(data)
        pruned.snacs_data = res.data  # type: ignore[attr-defined] # saved with snacs.save
    if measure_latency:
        lat_model = pruned
        if sparse:
            from snacs.apply import export_slim

            lat_model = export_slim(pruned, shape)
        res.latency_before_ms = latency(model, shape)["median_ms"]
        res.latency_after_ms = latency(lat_model, shape)["median_ms"]
    if eval_data is not None:
        res.accuracy_before = evaluate(model, eval_data)["accuracy"]
        res.accuracy_pruned = evaluate(pruned, eval_data)["accuracy"]
    pruned.snacs_result = res  # type: ignore[attr-defined]
    pruned.snacs_pruner = pruner  # type: ignore[attr-defined]
    return pruned, res


def summary_table(res: PruneResult) -> str:
    """A short before/after table for terminals and reports."""
    def f(v, fmt):
        return "-" if v is None else format(v, fmt)

    lines = [
        f"{'':22}{'before':>14}{'after':>14}",
        f"{'accuracy (%)':22}{f(res.accuracy_before, '.2f'):>14}"
        f"{f(res.accuracy_finetuned if res.accuracy_finetuned is not None else res.accuracy_pruned, '.2f'):>14}",
        f"{'parameters':22}{res.params_before:>14,}{res.params_after:>14,}",
        f"{'conv+linear weights':22}{res.weights_before:>14,}{res.weights_after:>14,}",
        f"{'MACs':22}{res.macs_before:>14,}{res.macs_after:>14,}",
        f"{'latency (ms, bs 1)':22}{f(res.latency_before_ms, '.2f'):>14}{f(res.latency_after_ms, '.2f'):>14}",
    ]
    return "\n".join(lines)


