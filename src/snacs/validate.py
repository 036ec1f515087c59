"""Checks that run before any expensive step, so a bad input fails in seconds, not after an hour.

`SNACS.validate` checks the option values; the functions here check the inputs against each other
(model vs data, target vs fixed limits, disk space vs the size of the run, a resumable training
state vs the model) and raise a `SnacsError` whose message says what is wrong and how to fix it.
`SNACS.fit` calls `preflight` after drawing the calibration indices and before the activation
pass; `train` calls `check_resume_state` before loading a `last.pt`; `snacs.prune` (given
evaluation data) and `snacs prune` call `check_base_model` before any pruning work.

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

__all__ = ["check_base_model", "check_disk_space", "check_finite_weights", "check_model_fits_data",
           "check_ranks_agree", "check_resume_state", "check_target_reachable", "checkpoint_record",
           "estimate_run_bytes", "preflight"]

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
    # only the limit-based plan is bound by a fixed cap ("global" ignores it, "select" falls
    # back on the global plan)
    if pruner.mode == "target" and pruner.limits != "probe" and pruner.resolved_allocation() == "limits":
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


# --------------------------------------------------------------------------- base-model check

# Accuracy keys that training scripts store next to the weights (akamaster's `best_prec1`, ...).
_ACCURACY_KEYS = ("best_prec1", "best_acc1", "best_acc", "best_accuracy", "acc1", "top1",
                  "test_accuracy", "accuracy", "acc")
_CLASS_KEYS = ("classes", "class_names")
BASE_CHECK_SAMPLES = 500
BASE_CHECK_TOLERANCE = 20.0  # points below the expected accuracy that count as "far below"
_BETTER_BY = 10.0  # points an alternative preprocessing must gain to be named as the likely fix


def checkpoint_record(path: str | Path) -> dict[str, Any]:
    """The accuracy and class names a checkpoint records about itself, where it does.

    Reads a snacs model file (the accuracy of its last training, fine-tuning or pruning run and
    the classes in ``extra["data"]``) or a plain checkpoint dict (``best_prec1``, ``best_acc``,
    ``accuracy``…; ``classes``, ``class_names`` or ``class_to_idx``). Accuracies at most 1 are
    taken as fractions. Returns ``{"accuracy": float | None, "classes": list | None}``.
    """
    rec: dict[str, Any] = {"accuracy": None, "classes": None}
    try:
        obj = torch.load(Path(path), map_location="cpu", weights_only=False)
    except Exception:  # noqa: BLE001 - load_weights reports unreadable files properly
        return rec
    if not isinstance(obj, Mapping):
        return rec
    if obj.get("format") == "snacs-model":
        extra = obj.get("extra") or {}
        data = extra.get("data") or {}
        rec["classes"] = list(data["classes"]) if data.get("classes") else None
        for section, key in (("result", "accuracy_finetuned"), ("finetune", "test_accuracy"),
                             ("result", "accuracy_pruned"), ("train", "test_accuracy")):
            v = (extra.get(section) or {}).get(key)
            if isinstance(v, (int, float)) and not isinstance(v, bool):
                rec["accuracy"] = float(v)
                break
        return rec
    for key in _ACCURACY_KEYS:
        v = obj.get(key)
        if isinstance(v, torch.Tensor) and v.numel() == 1:
            v = float(v)
        if isinstance(v, (int, float)) and not isinstance(v, bool) and 0 < v <= 100:
            rec["accuracy"] = float(v) * (100.0 if v <= 1.0 else 1.0)
            break
    for key in _CLASS_KEYS:
        if isinstance(obj.get(key), (list, tuple)) and obj[key]:
            rec["classes"] = [str(c) for c in obj[key]]
    c2i = obj.get("class_to_idx")
    if rec["classes"] is None and isinstance(c2i, Mapping) and c2i:
        rec["classes"] = [str(k) for k, _ in sorted(c2i.items(), key=lambda kv: kv[1])]
    return rec


def _uint8_subset(data, idx: torch.Tensor) -> torch.Tensor | None:
    """The raw uint8 images at ``idx`` of a snacs dataset, None for other datasets."""
    if isinstance(getattr(data, "images", None), torch.Tensor) and data.images.dtype == torch.uint8:
        return data.images[idx]
    if hasattr(data, "load_uint8"):
        return torch.stack([data.load_uint8(int(i)) for i in idx])  # files decode one by one
    return None


def _accuracy(model: nn.Module, x: torch.Tensor, y: torch.Tensor, batch_size: int) -> float:
    was_training = model.training
    model.eval()
    correct = 0
    with torch.no_grad():
        for i in range(0, x.shape[0], batch_size):
            correct += int((model(x[i:i + batch_size]).argmax(1) == y[i:i + batch_size]).sum())
    model.train(was_training)
    return 100.0 * correct / max(int(y.numel()), 1)


def _alternatives(model: nn.Module, data, idx: torch.Tensor, batch_size: int) -> dict[str, float]:
    """Accuracy on the same images under other normalisations and with BGR channel order."""
    from snacs.data.base import normalize_uint8
    from snacs.data.normalization import STATS_PRESETS

    u8 = _uint8_subset(data, idx)
    if u8 is None:
        return {}
    y = data.labels[idx]
    mean, std = tuple(data.mean), tuple(data.std)
    out: dict[str, float] = {}
    c = u8.shape[1]
    for name, (m, s) in STATS_PRESETS.items():
        if c != 3 and name != "none":
            continue
        m, s = (m[:1] * c, s[:1] * c) if c != 3 else (m, s)
        if np.allclose(m, mean, atol=5e-4) and np.allclose(s, std, atol=5e-4):
            continue
        out[f"--mean {name} --std {name}"] = _accuracy(model, normalize_uint8(u8, m, s), y,
                                                       batch_size)
    if c == 3:
        out["BGR channel order"] = _accuracy(
            model, normalize_uint8(u8.flip(1), mean[::-1], std[::-1]), y, batch_size)
    return out


def _class_agreement(found: list[str], recorded: list[str] | None) -> str | None:
    """None when the names agree (or none are recorded), else what differs."""
    if not recorded or list(recorded) == list(found):
        return None
    if sorted(recorded) == sorted(found):
        moved = [f"{n!r} is class {found.index(n)} here but {recorded.index(n)} in the checkpoint"
                 for n in found if found.index(n) != recorded.index(n)]
        return ("the class order differs from the checkpoint's: " + "; ".join(moved[:3])
                + (f" (and {len(moved) - 3} more)" if len(moved) > 3 else "")
                + f". Fix: --classes {','.join(recorded)} (classes=[...] in Python)")
    only_data = sorted(set(found) - set(recorded))
    only_ckpt = sorted(set(recorded) - set(found))
    return (f"the class names differ from the checkpoint's (only in the data: "
            f"{', '.join(only_data[:5]) or 'none'}; only in the checkpoint: "
            f"{', '.join(only_ckpt[:5]) or 'none'})")


def check_base_model(model: nn.Module, data, *, samples: int = BASE_CHECK_SAMPLES, seed: int = 0,
                     expect_accuracy: float | None = None, expect_classes: list[str] | None = None,
                     tolerance: float = BASE_CHECK_TOLERANCE, force: bool = False,
                     batch_size: int = 256) -> dict[str, Any]:
    """Measure the unpruned model on a few hundred held-out images; stop when it does not fit.

    The model fails the check when its accuracy is near chance (below chance plus the larger of
    5 points and a tenth of the way to 100 %), or more than ``tolerance`` points below
    ``expect_accuracy`` (given by the user or recorded in the checkpoint). The error names the
    likely causes (normalisation, image size, class order, channels) with the flags that fix
    them, and the accuracy of the same images under other normalisations and BGR order.

    Args:
        model: the trained model (not modified).
        data: a held-out snacs dataset (``labels``, ``classes``, ``image_shape``).
        samples: images measured (a seeded random subset; all when fewer).
        seed: seed of the subset.
        expect_accuracy: accuracy (%) the model should reach on this data.
        expect_classes: class names in the model's label order (e.g. from the checkpoint).
        tolerance: points below ``expect_accuracy`` still accepted (JPEG copies, other splits).
        force: log the failure as a warning instead of raising.
        batch_size: evaluation batch size.

    Returns:
        A JSON-able record: accuracy, samples, chance, threshold, expected, passed, forced,
        class disagreement and the alternatives tried (when the check failed).

    Raises:
        DataError: the check failed and ``force`` is false.
    """
    from snacs.evaluation import evaluate

    classes = list(getattr(data, "classes", []) or [])
    check_finite_weights(model)  # a NaN model scores at chance; say why
    check_model_fits_data(model, tuple(data.image_shape), len(classes) or None)
    n = len(data)
    gen = torch.Generator().manual_seed(int(seed))
    idx = torch.randperm(n, generator=gen)[: min(int(samples), n)].sort().values
    acc = float(evaluate(model, data, indices=idx, batch_size=batch_size)["accuracy"])
    k = max(len(classes), int(data.labels.max()) + 1 if n else 1)
    majority = 100.0 * float(torch.bincount(data.labels[idx], minlength=k).max()) / len(idx)
    chance = max(100.0 / k, majority)
    near = chance + max(5.0, 0.1 * (100.0 - chance))
    reasons = []
    if acc < near:
        reasons.append(f"near chance ({chance:.1f} % for {k} classes)")
    if expect_accuracy is not None and acc < float(expect_accuracy) - tolerance:
        reasons.append(f"far below the expected {float(expect_accuracy):.2f} %")
    classes_msg = _class_agreement(classes, expect_classes)
    record: dict[str, Any] = {
        "accuracy": acc, "samples": int(len(idx)), "seed": int(seed), "chance": chance,
        "near_chance_below": near, "expected": expect_accuracy, "tolerance": tolerance,
        "passed": not reasons, "forced": False, "classes": classes_msg, "alternatives": {}}
    if classes_msg:
        log.warning("base check: %s", classes_msg)
    if not reasons:
        log.info("base check: the unpruned model scores %.2f %% on %d held-out images", acc,
                 len(idx))
        return record
    alts = _alternatives(model, data, idx, batch_size)
    record["alternatives"] = alts
    msg = _base_message(data, acc, len(idx), reasons, alts, classes_msg, classes)
    if force:
        record["forced"] = True
        log.warning("%s (going on because of --force)", msg)
        return record
    raise DataError(msg + " If this accuracy is what you expect, pass --force (force=True) to "
                    "prune anyway.")


def _base_message(data, acc: float, n: int, reasons: list[str], alts: dict[str, float],
                  classes_msg: str | None, classes: list[str]) -> str:
    name = f"{getattr(data, 'name', 'data')}/{getattr(data, 'split', None) or '?'}"
    better = sorted(((a, v) for a, v in alts.items() if v >= acc + _BETTER_BY),
                    key=lambda kv: -kv[1])
    mean = ", ".join(f"{v:.4g}" for v in data.mean)
    std = ", ".join(f"{v:.4g}" for v in data.std)
    pre = getattr(data, "preprocessing", None) or {}
    size = pre.get("transform") or "x".join(str(v) for v in data.image_shape[1:])
    shown = ", ".join(classes[:10]) + (f" … ({len(classes)} in all)" if len(classes) > 10 else "")
    tried = "; ".join(f"{a}: {v:.1f} %" for a, v in alts.items())
    lines = [
        f"base check failed: the unpruned model scores {acc:.1f} % on {n} held-out images of "
        f"{name}, {' and '.join(reasons)}, so it does not fit the data as loaded and any pruning "
        "result would be measured on the wrong inputs."]
    if better:
        lines.append("Most likely fix: " + "; ".join(f"{a} gives {v:.1f} %" for a, v in better)
                     + ".")
    lines += [
        "Likely causes:",
        f"(1) normalisation: inputs use mean ({mean}) and std ({std}); give the model's with "
        "--mean/--std (three numbers or a preset: imagenet, cifar10, none)"
        + (f" [same images: {tried}]" if tried else "") + ";",
        f"(2) image size: {size}; --image-size S uses images of size S as they are, "
        "--resize R --crop C resizes the shorter side to R and centre-crops C;",
        f"(3) class order: labels follow {shown}"
        + (f"; {classes_msg}" if classes_msg else "; --classes a,b,c sets the model's order") + ";",
        "(4) channels: RGB order and channel count must match training (BGR-trained models need "
        "their channels swapped; one-channel data needs a one-channel model).",
    ]
    return " ".join(lines)
