"""Input checking and small helpers shared by the estimators."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import numpy as np
import torch

from snacs.errors import ConfigError

__all__ = ["as_matrix", "check_same_rows", "make_groups", "normalize_groups", "standardize", "torch_threads"]

ArrayLike = Any  # numpy array, torch tensor or nested sequence


def as_matrix(a: ArrayLike, name: str) -> torch.Tensor:
    """A float64, contiguous, CPU N x d tensor; 1-D input becomes N x 1.

    Raises:
        ConfigError: for a wrong number of dimensions, no samples or non-finite values.
    """
    if isinstance(a, torch.Tensor):
        t = a.detach().to(device="cpu", dtype=torch.float64)
    else:
        try:
            t = torch.as_tensor(np.asarray(a, dtype=np.float64))
        except (TypeError, ValueError) as exc:
            raise ConfigError(f"{name} must be a numeric array (N x d); got {type(a).__name__}: {exc}") from exc
    if t.ndim == 1:
        t = t[:, None]
    if t.ndim != 2:
        raise ConfigError(
            f"{name} must be 2-D (samples x features) or 1-D; got shape {tuple(t.shape)}. "
            "Average conv activations over their spatial dimensions first."
        )
    if t.shape[0] < 2:
        raise ConfigError(f"{name} has {t.shape[0]} sample(s); mutual information needs at least 2.")
    if t.shape[1] < 1:
        raise ConfigError(f"{name} has no columns.")
    if not bool(torch.isfinite(t).all()):
        bad = int((~torch.isfinite(t)).sum())
        raise ConfigError(
            f"{name} contains {bad} non-finite value(s) (NaN or inf). Remove or impute them "
            "(for activations: check for diverged weights or an unnormalised input)."
        )
    return t.contiguous()


def check_same_rows(**arrays: torch.Tensor) -> int:
    """The common number of samples; ConfigError when the arrays disagree."""
    sizes = {k: int(v.shape[0]) for k, v in arrays.items()}
    if len(set(sizes.values())) != 1:
        desc = ", ".join(f"{k}: {n}" for k, n in sizes.items())
        raise ConfigError(f"all inputs must have the same number of samples (rows); got {desc}.")
    return next(iter(sizes.values()))


def one_cell(matrix_fn, x: ArrayLike, y: ArrayLike, z: ArrayLike | None, **opts: Any) -> float:
    """I(X; Y | Z) as the single cell of a `*_cmi_matrix` estimator: parents [Y, Z], Y the one
    parent group, X the one child group (Z None: I(X; Y))."""
    xt, yt = as_matrix(x, "x"), as_matrix(y, "y")
    if z is None:
        parents = yt
        check_same_rows(x=xt, y=yt)
    else:
        zt = as_matrix(z, "z")
        check_same_rows(x=xt, y=yt, z=zt)
        parents = torch.cat([yt, zt], dim=1)
    out = matrix_fn(parents, xt, [np.arange(yt.shape[1])], [np.arange(xt.shape[1])], **opts)
    return float(out[0, 0])


def make_groups(n: int, groups: int) -> list[np.ndarray]:
    """Split channels 0..n-1 into `groups` contiguous groups (SPEC §1).

    Every group but the last has ceil(n / groups) channels; the last one holds the rest
    (ragged last group). If that would leave trailing groups empty, sizes are balanced instead
    so that exactly `groups` non-empty groups come back.
    """
    n, groups = int(n), int(groups)
    if n < 1:
        raise ConfigError(f"cannot group {n} channels; need at least one channel.")
    if groups < 1 or groups > n:
        raise ConfigError(
            f"number of groups must be between 1 and the number of channels ({n}); got {groups}. "
            f"Use at most {n} groups (G = n means one channel per group)."
        )
    size = -(-n // groups)
    if size * (groups - 1) < n:
        bounds = [min(i * size, n) for i in range(groups + 1)]
    else:  # e.g. n=10, G=4 -> sizes 3,3,3,1 works; n=9, G=4 -> 3,3,3,0 would not: balance.
        bounds = [round(i * n / groups) for i in range(groups + 1)]
    return [np.arange(bounds[i], bounds[i + 1], dtype=np.int64) for i in range(groups)]


def normalize_groups(groups: int | Sequence[Sequence[int]] | Sequence[np.ndarray], n: int, name: str) -> list[np.ndarray]:
    """Groups given as a count or as explicit index arrays, checked against `n` channels."""
    if isinstance(groups, (int, np.integer)):
        return make_groups(n, int(groups))
    out: list[np.ndarray] = []
    try:
        for g in groups:
            out.append(np.asarray(g, dtype=np.int64).reshape(-1))
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"{name} must be an int or a list of index arrays: {exc}") from exc
    if not out:
        raise ConfigError(f"{name} is empty; give at least one group.")
    for i, g in enumerate(out):
        if g.size == 0:
            raise ConfigError(f"{name}[{i}] is empty; every group needs at least one channel.")
        if g.min() < 0 or g.max() >= n:
            raise ConfigError(f"{name}[{i}] has channel indices outside 0..{n - 1}.")
        if np.unique(g).size != g.size:
            raise ConfigError(f"{name}[{i}] repeats a channel index.")
    return out


def standardize(t: torch.Tensor, tiny: float = 1e-12) -> torch.Tensor:
    """Columns centred and scaled to unit (population) std; constant columns become 0.

    Each column is processed on its own (numpy, 1-D), so a column gets bit-identical values
    whichever matrix it arrives in; batched and cell-by-cell estimates then agree exactly.
    """
    a = t.numpy()
    out = np.empty_like(a)
    for i in range(a.shape[1]):
        col = np.ascontiguousarray(a[:, i])
        c = col - col.mean()
        s = float(np.sqrt(np.mean(c * c)))
        out[:, i] = c / s if s > tiny else 0.0
    return torch.from_numpy(out)


@contextmanager
def torch_threads(n: int | None) -> Iterator[None]:
    """Run a block with `n` torch intra-op threads (None: leave the setting alone).

    The estimators issue many small, cache-sized tensor operations; with several threads each
    one pays a fork/join, and on a shared machine a descheduled worker thread stalls every
    operation (measured: 20x slower with 2 threads than with 1 on a loaded 2-core box).
    The previous setting is restored afterwards (it is process-wide, not per thread).
    """
    if n is None:
        yield
        return
    n = int(n)
    if n < 1:
        raise ConfigError(f"threads must be >= 1 or None; got {n}.")
    old = torch.get_num_threads()
    if old == n:
        yield
        return
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(old)
