"""Seeded, vectorised index selection: class-balanced calibration sets and stratified splits."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

from snacs.errors import ConfigError, DataError

__all__ = ["class_balanced_indices", "train_val_split"]

IndexLike = torch.Tensor | np.ndarray | Sequence[int]


def _as_labels(labels: IndexLike) -> torch.Tensor:
    t = torch.as_tensor(np.asarray(labels) if not isinstance(labels, torch.Tensor) else labels)
    t = t.to(torch.int64).reshape(-1)
    if t.numel() and int(t.min()) < 0:
        raise DataError(f"labels must be non-negative class indices, found {int(t.min())}")
    return t


def _rank_within_class(
    candidates: torch.Tensor, labels: torch.Tensor, num_classes: int, gen: torch.Generator
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Shuffle ``candidates`` and group them by class.

    Returns the shuffled-then-grouped indices, their labels, and each one's rank (0, 1, …) inside
    its class: a uniformly random order within every class, with no Python loop over classes.
    """
    shuffled = candidates[torch.randperm(candidates.numel(), generator=gen)]
    lab = labels[shuffled]
    order = torch.argsort(lab, stable=True)
    grouped, lab = shuffled[order], lab[order]
    counts = torch.bincount(lab, minlength=num_classes)
    starts = torch.cumsum(counts, 0) - counts
    rank = torch.arange(grouped.numel()) - starts[lab]
    return grouped, lab, rank


def class_balanced_indices(
    labels: IndexLike,
    per_class: int,
    seed: int = 0,
    exclude: IndexLike | None = None,
    *,
    num_classes: int | None = None,
    class_names: Sequence[str] | None = None,
) -> torch.Tensor:
    """Draw ``per_class`` indices of every class, without replacement.

    Args:
        labels: class index of every sample.
        per_class: samples to draw from each class (``s`` in the spec).
        seed: the same seed gives the same indices.
        exclude: indices that must not be drawn (e.g. the validation split).
        num_classes: number of classes K; default ``max(label) + 1``. Give it so that a class
            absent from ``labels`` is reported rather than silently skipped.
        class_names: names used in error messages.

    Returns:
        int64 tensor of ``per_class * K`` indices, sorted by class, then by index.

    Raises:
        DataError: a class has fewer than ``per_class`` samples (or none) outside ``exclude``.
        ConfigError: ``per_class`` is not positive.
    """
    if per_class < 1:
        raise ConfigError(f"samples per class must be at least 1, got {per_class}")
    lab = _as_labels(labels)
    n = lab.numel()
    k = int(num_classes) if num_classes is not None else (int(lab.max()) + 1 if n else 0)
    if k == 0:
        raise DataError("cannot draw a calibration set from an empty dataset")
    if n and int(lab.max()) >= k:
        raise DataError(f"label {int(lab.max())} is out of range for {k} classes")
    keep = torch.ones(n, dtype=torch.bool)
    if exclude is not None:
        ex = torch.as_tensor(
            np.asarray(exclude) if not isinstance(exclude, torch.Tensor) else exclude
        )
        keep[ex.to(torch.int64).reshape(-1)] = False
    candidates = torch.nonzero(keep).flatten()
    available = torch.bincount(lab[candidates], minlength=k)
    short = torch.nonzero(available < per_class).flatten().tolist()
    if short:

        def describe(c: int) -> str:
            name = (
                f" ({class_names[c]})" if class_names is not None and c < len(class_names) else ""
            )
            return f"class {c}{name}: {int(available[c])} available"

        worst = int(available[short].min())
        listed = "; ".join(describe(c) for c in short[:10])
        more = f"; and {len(short) - 10} more" if len(short) > 10 else ""
        fix = (
            f"lower --samples-per-class to at most {worst}"
            if worst > 0
            else "use a dataset/split in which every class has samples, or lower "
            "--samples-per-class"
        )
        raise DataError(
            f"{len(short)} class(es) have fewer than {per_class} samples"
            f"{' outside the excluded indices' if exclude is not None else ''}: "
            f"{listed}{more}. Fix: {fix}"
        )
    gen = torch.Generator().manual_seed(int(seed))
    grouped, glab, rank = _rank_within_class(candidates, lab, k, gen)
    chosen, clab = grouped[rank < per_class], glab[rank < per_class]
    return chosen[torch.argsort(clab * max(n, 1) + chosen)]


def train_val_split(
    labels: IndexLike, val_fraction: float = 0.1, seed: int = 0
) -> tuple[torch.Tensor, torch.Tensor]:
    """Split indices into train and validation parts, stratified by class.

    Each class contributes ``round(count * val_fraction)`` samples to validation, but always keeps
    at least one for training.

    Args:
        labels: class index of every sample.
        val_fraction: share of each class held out, in [0, 1).
        seed: the same seed gives the same split.

    Returns:
        ``(train_idx, val_idx)``: disjoint, sorted int64 tensors covering every index.
    """
    if not 0.0 <= val_fraction < 1.0:
        raise ConfigError(f"val_fraction must be in [0, 1), got {val_fraction}")
    lab = _as_labels(labels)
    n = lab.numel()
    k = int(lab.max()) + 1 if n else 0
    counts = torch.bincount(lab, minlength=k)
    n_val = torch.floor(counts.double() * val_fraction + 0.5).long()
    n_val = torch.minimum(n_val, (counts - 1).clamp(min=0))
    gen = torch.Generator().manual_seed(int(seed))
    grouped, glab, rank = _rank_within_class(torch.arange(n), lab, k, gen)
    is_val = rank < n_val[glab]
    return grouped[~is_val].sort().values, grouped[is_val].sort().values
