"""Checks that run before any expensive step, so a bad input fails in seconds, not after an hour.

`SNACS.validate` checks the option values; the functions here check the inputs against each other
(model vs data, target vs fixed limits, disk space vs the size of the run, a resumable training
state vs the model) and raise a `SnacsError` whose message says what is wrong and how to fix it.
`SNACS.fit` calls `preflight` after drawing the calibration indices and before the activation
pass; `train` calls `check_resume_state` before loading a `last.pt`.

Rules decided here (the README's options table states the clamping; the errors state the rest):

* `groups` must be a positive integer; a value above a layer's channel count is clamped per layer
  (SPEC §1: G = min(n, groups)), so `groups=10**6` means one filter per group.
* A `target` must be in (0, 1); with a fixed cap (`limits=<number>` or `"none"`) a target above
  the most the capped plan can remove is refused before scoring. With probe limits the reachable
  maximum is only known after the probe; `make_plan` then raises the same error.
"""

from __future__ import annotations

import logging
import math
import shutil
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from snacs.errors import CheckpointError, ConfigError, DataError, TargetError

log = logging.getLogger(__name__)

__all__ = ["check_disk_space", "check_finite_weights", "check_model_fits_data", "check_ranks_agree",
           "check_resume_state", "check_target_reachable", "estimate_run_bytes", "preflight"]

# Headroom on top of the estimate: temporary files of atomic writes and the report's plots.
_DISK_MARGIN = 2
_MIN_FREE = 16 * 2**20


def check_finite_weights(model: nn.Module) -> None:
    """Refuse a model with NaN or infinite parameters or buffers (a diverged or corrupt model)."""
    bad = [n for n, t in list(model.named_parameters()) + list(model.named_buffers())
           if t.is_floating_point() and not bool(torch.isfinite(t).all())]
    if bad:
        shown = ", ".join(bad[:5]) + (f" (and {len(bad) - 5} more)" if len(bad) > 5 else "")
        raise DataError(
            f"the model has non-finite (NaN or inf) values in {shown}: it has diverged or its "
            "checkpoint is corrupt; retrain it with a lower learning rate or load another "
            "checkpoint (check it with `snacs evaluate`)")


def check_model_fits_data(model: nn.Module, input_shape: tuple[int, ...],
                          num_classes: int | None) -> None:
    """One forward pass on a zero input: the model must accept the data and have enough logits."""
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            out = model(torch.zeros(1, *input_shape))
    except Exception as e:  # noqa: BLE001 - any failure here means model and data disagree
        msg = str(e).splitlines()[0] if str(e) else type(e).__name__
        raise ConfigError(
            f"the model cannot run on the data's inputs of shape {tuple(input_shape)} ({msg}); "
            "was it built for another dataset (--model/--width, input channels, image size)? "
            "Use the dataset the model was trained on") from None
    finally:
        model.train(was_training)
    if not isinstance(out, torch.Tensor) or out.dim() != 2:
        raise ConfigError(
            f"the model must return a batch of logits (N x classes), got "
            f"{tuple(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__}")
    if num_classes is not None and out.shape[1] < num_classes:
        raise ConfigError(
            f"the model has {out.shape[1]} outputs but the data has {num_classes} classes; "
            "use the dataset the model was trained on or rebuild its classifier")


def estimate_run_bytes(n_samples: int, topology, model: nn.Module | None = None) -> int:
    """Bytes a pruning run may write: N x Σ channels float32 activations x 2, plus model files.

    The activation matrices (parents and children of every pair) bound what the score cache and
    the worker hand-off hold; the model is written up to three times (model.pt and a fine-tune's
    last.pt with momentum buffers).
    """
    channels = sum(p.n_parent + p.n_child for p in topology.pairs)
    need = int(n_samples) * channels * 4 * 2
    if model is not None:
        need += 3 * sum(t.numel() * t.element_size() for t in model.state_dict().values())
    return need


def check_disk_space(path: str | Path, need: int) -> None:
    """Refuse to start when the file system holding `path` has less than `need` bytes free."""
    p = Path(path)
    probe = p
    while not probe.exists() and probe != probe.parent:
        probe = probe.parent
    free = shutil.disk_usage(probe).free
    need = max(int(need) * _DISK_MARGIN, _MIN_FREE)
    if free < need:
        raise ConfigError(
            f"not enough free disk space for the run in {p}: about {need / 2**20:.0f} MiB needed "
            f"(activation cache and outputs), {free / 2**20:.0f} MiB free; free some space, "
            "choose another --out directory, or lower --samples-per-class")


def check_target_reachable(model: nn.Module, topology, limits: float, sens: Mapping, *,
                           granularity: str, target: float, target_metric: str,
                           groups: int) -> None:
    """With one fixed cap for every layer, refuse a target no plan under that cap can reach.

    The bound is the plan that removes, in every layer, the largest groups allowed by the cap
    (never protected ones): for filter granularity it is exactly the most any scores can remove.
    For connection granularity ties in ρ can remove more, so only protected rows are kept.
    """
    from snacs.limits import group_index
    from snacs.plan import make_plan
    from snacs.scores import _child_groups, n_groups

    metric = "weights_removed" if target_metric == "params" else "macs_removed"
    if granularity == "connection":
        cap = 1.0  # ties make any share removable except protected (and classifier) rows
    else:
        cap = float(limits)
    scores = {}
    for p in topology.pairs:
        gp = n_groups(p.n_parent, groups)
        sizes = np.bincount(group_index(p.n_parent, gp), minlength=gp).astype(np.float64)
        # larger groups get smaller scores, so the bound removes the largest groups first
        scores[p.name] = np.tile(1.0 / np.maximum(sizes, 1.0), (_child_groups(p, groups), 1))
    lim = {p.name: cap for p in topology.pairs}
    plan = make_plan(model, topology, scores, lim, sens, granularity=granularity, mode="ul",
                     groups=groups)
    most = plan.predicted[metric]
    if target > most + 1e-9:
        raise TargetError(
            f"target {target:.1%} of {target_metric} is beyond what the per-layer limits allow "
            f"(a fixed cap of {float(limits):.0%} per layer removes at most {most:.1%} with "
            f"granularity {granularity}); lower --target or raise --limits")


def preflight(pruner, model: nn.Module, input_shape: tuple[int, ...], n_samples: int,
              num_classes: int | None) -> Any:
    """Every check `SNACS.fit` runs between drawing the calibration set and the activation pass.

    Returns the topology, which the checks need anyway (fit reuses it).
    """
    from snacs.pairs import find_topology

    check_finite_weights(model)
    check_model_fits_data(model, input_shape, num_classes)
    topology = find_topology(model, input_shape)
    if pruner.cache_dir is not None:
        check_disk_space(pruner.cache_dir, estimate_run_bytes(n_samples, topology, model))
    if pruner.mode == "target" and pruner.limits != "probe":
        from snacs.sensitivity import sensitivity

        cap = 0.99 if pruner.limits == "none" else float(pruner.limits)
        sens = sensitivity(model, topology, groups=pruner.groups, rule=pruner.sensitivity,
                           k=pruner.sensitivity_k, fraction=pruner.protect_fraction)
        check_target_reachable(model, topology, cap, sens, granularity=pruner.granularity,
                               target=float(pruner.target), target_metric=pruner.target_metric,
                               groups=pruner.groups)
    return topology


def check_resume_state(model: nn.Module, state: Mapping, path: str | Path) -> None:
    """A `last.pt` must come from this architecture: same parameter names and shapes."""
    if not isinstance(state, Mapping) or not {"model", "optimizer", "epoch"} <= set(state):
        raise CheckpointError(
            f"{path} is not a snacs training state (no model/optimizer/epoch); delete it to "
            "start over, or give another --out")
    saved = state["model"]
    expected = model.state_dict()
    missing = [k for k in expected if k not in saved]
    unexpected = [k for k in saved if k not in expected]
    shapes = [f"{k} ({tuple(saved[k].shape)} vs {tuple(v.shape)})" for k, v in expected.items()
              if k in saved and tuple(saved[k].shape) != tuple(v.shape)]
    if missing or unexpected or shapes:
        parts = []
        for what, items in (("missing", missing), ("unexpected", unexpected),
                            ("shape mismatch", shapes)):
            if items:
                parts.append(f"{what}: {', '.join(items[:5])}"
                             + (f" (and {len(items) - 5} more)" if len(items) > 5 else ""))
        raise CheckpointError(
            f"--resume: {path} was written for a different model ({'; '.join(parts)}); "
            "resume with the same --model/--width/--checkpoint, or delete it (or choose another "
            "--out) to start over")
    if not isinstance(state["epoch"], int) or state["epoch"] < 0 or math.isnan(float(state["epoch"])):
        raise CheckpointError(f"{path} holds an invalid epoch {state['epoch']!r}; delete it")


def check_ranks_agree(value: str, what: str) -> None:
    """Under torch.distributed, every rank must hold the same `value` (e.g. a plan checksum)."""
    import torch.distributed as dist

    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() < 2:
        return
    values: list = [None] * dist.get_world_size()
    dist.all_gather_object(values, value)
    if len(set(values)) != 1:
        from snacs.errors import SnacsError

        raise SnacsError(
            f"the ranks computed different {what}s ({', '.join(str(v)[:12] for v in values)}); "
            "run with the same data, checkpoint, options and seed on every rank")
    log.info("%s identical on %d ranks (%s)", what, len(values), value[:12])
