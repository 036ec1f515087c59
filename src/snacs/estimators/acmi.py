"""Adaptive conditional mutual information of one layer pair (SPEC §3).

ρ[j, g] = φ[j, g] · Î(child group j; parent group g | all other parents), a G_c x G_p matrix.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

from snacs.errors import ConfigError
from snacs.estimators._common import (
    ArrayLike,
    as_matrix,
    check_same_rows,
    make_groups,
    normalize_groups,
    torch_threads,
)
from snacs.estimators.edge import edge_cmi_matrix, edge_options
from snacs.estimators.gaussian import gaussian_cmi_matrix
from snacs.estimators.gmi import gmi_cmi_matrix
from snacs.estimators.hashcmi import hash_cmi_matrix
from snacs.estimators.knn import knn_cmi_matrix

__all__ = ["ESTIMATORS", "PHI_KINDS", "DEFAULT_ESTIMATOR", "acmi_matrix", "cmi_matrix", "phi_matrix", "make_groups"]

logger = logging.getLogger(__name__)

ESTIMATORS = ("edge", "edge_faithful", "gaussian", "gaussian_copula", "hash", "knn", "gmi")
PHI_KINDS = ("none", "weight", "weight_sq", "exp_weight")

#: Chosen by measured ranking quality (benchmarks/estimator_quality.py) and speed
#: (benchmarks/estimator_speed.py). On layers with known CMI the chain-rule EDGE estimators rank
#: parent groups no better than chance (mean within-child Spearman about 0, CRN or faithful): the
#: random projection to r = log2(N/10) dimensions discards the ranking (the exact CMI of the
#: projected data ranks at 0.12). The Gaussian-copula estimator reaches 0.98 (0.97 on non-Gaussian
#: marginals) and is the fastest on the 512 x 512, 64-group pair (about 1 s vs 7 s for EDGE).
DEFAULT_ESTIMATOR = "gaussian_copula"

Groups = int | Sequence[Sequence[int]] | Sequence[np.ndarray]


def phi_matrix(
    child_weight: ArrayLike | None,
    parent_groups: Groups,
    child_groups: Groups,
    kind: str = "weight",
    *,
    n_parent: int | None = None,
    n_child: int | None = None,
) -> np.ndarray:
    """The weight-based scaling φ (G_c x G_p) of SPEC §3.

    With ŵ = |W| / max|W| over the child layer and w̄[j, g] the mean of ŵ over every
    (child filter in group j, parent channel in group g, kernel position):
    "weight" → w̄ (default), "weight_sq" → w̄², "exp_weight" → exp(−w̄²/2), "none" → 1.

    Args:
        child_weight: (n_c, n_p, kh, kw), (n_c, n_p) or (n_c, n_p, k...); None gives φ = 1.
        parent_groups, child_groups: a group count or explicit index arrays.
        kind: one of PHI_KINDS.
        n_parent, n_child: channel counts, needed when child_weight is None.
    """
    if kind not in PHI_KINDS:
        raise ConfigError(f"unknown phi {kind!r}; choose one of {list(PHI_KINDS)} or pass an explicit G_c x G_p array.")
    if child_weight is None:
        if n_parent is None or n_child is None:
            raise ConfigError("phi_matrix without child_weight needs n_parent and n_child.")
        pg = normalize_groups(parent_groups, n_parent, "parent_groups")
        cg = normalize_groups(child_groups, n_child, "child_groups")
        return np.ones((len(cg), len(pg)), dtype=np.float64)
    w = child_weight.detach().cpu().double().numpy() if isinstance(child_weight, torch.Tensor) else np.asarray(child_weight, dtype=np.float64)
    if w.ndim < 2:
        raise ConfigError(f"child_weight must have shape (n_c, n_p, kh, kw) or (n_c, n_p); got {w.shape}.")
    w = w.reshape(w.shape[0], w.shape[1], -1)  # kernel positions flattened (any kernel rank)
    if not np.isfinite(w).all():
        raise ConfigError("child_weight contains non-finite values; check the checkpoint.")
    n_c, n_p = w.shape[:2]
    if n_parent is not None and n_p != n_parent:
        raise ConfigError(
            f"child_weight has {n_p} input channels but the parent activations have {n_parent} columns "
            "(grouped/depthwise conv?). Pass phi as an explicit G_c x G_p array for such layers."
        )
    if n_child is not None and n_c != n_child:
        raise ConfigError(f"child_weight has {n_c} output channels but the child activations have {n_child} columns.")
    pg = normalize_groups(parent_groups, n_p, "parent_groups")
    cg = normalize_groups(child_groups, n_c, "child_groups")
    if kind == "none":
        return np.ones((len(cg), len(pg)), dtype=np.float64)
    a = np.abs(w)
    top = a.max()
    a = a / top if top > 0 else a
    per_conn = a.sum(axis=2)  # (n_c, n_p)
    kernel = w.shape[2]
    mc = np.zeros((len(cg), n_c))
    for j, g in enumerate(cg):
        mc[j, g] = 1.0
    mp = np.zeros((n_p, len(pg)))
    for i, g in enumerate(pg):
        mp[g, i] = 1.0
    sizes = np.outer([len(g) for g in cg], [len(g) for g in pg]) * kernel
    wbar = (mc @ per_conn @ mp) / sizes
    if kind == "weight":
        return wbar
    if kind == "weight_sq":
        return wbar**2
    return np.exp(-(wbar**2) / 2.0)


_OPTION_NAMES = {
    "edge": None,  # EdgeOptions fields, checked by edge_options
    "edge_faithful": None,
    "gaussian": {"ridge", "shrinkage", "copula"},
    "gaussian_copula": {"ridge", "shrinkage"},
    "hash": {"ridge", "shrinkage"},
    "knn": {"k", "max_batch_elements"},
    "gmi": set(),
}


def cmi_matrix(
    parent_act: ArrayLike,
    child_act: ArrayLike,
    parent_groups: Groups,
    child_groups: Groups,
    *,
    estimator: str = DEFAULT_ESTIMATOR,
    seed: int = 0,
    **options: Any,
) -> np.ndarray:
    """Î(child group j; parent group g | other parents) for every cell (G_c x G_p, >= 0).

    Same arguments as `acmi_matrix`, without the φ scaling.
    """
    faithful = bool(options.pop("faithful", False))
    threads = options.pop("threads", 1)
    if estimator not in ESTIMATORS:
        raise ConfigError(f"unknown estimator {estimator!r}; choose one of {list(ESTIMATORS)}.")
    if estimator == "edge_faithful":
        estimator, faithful = "edge", True
    if faithful and estimator != "edge":
        raise ConfigError("faithful=True applies to the EDGE estimator only (estimator='edge').")
    p = as_matrix(parent_act, "parent_act")
    c = as_matrix(child_act, "child_act")
    check_same_rows(parent_act=p, child_act=c)
    pg = normalize_groups(parent_groups, p.shape[1], "parent_groups")
    cg = normalize_groups(child_groups, c.shape[1], "child_groups")
    allowed = _OPTION_NAMES[estimator]
    if allowed is not None and set(options) - allowed:
        raise ConfigError(
            f"unknown option(s) {sorted(set(options) - allowed)} for estimator {estimator!r}; "
            f"valid: {sorted(allowed) or 'none'}."
        )
    t0 = time.perf_counter()
    with torch_threads(threads):
        if estimator == "edge":
            out = edge_cmi_matrix(p, c, pg, cg, seed=seed, faithful=faithful, options=edge_options(**options))
        elif estimator == "gaussian":
            out = gaussian_cmi_matrix(p, c, pg, cg, **options)
        elif estimator == "gaussian_copula":
            out = gaussian_cmi_matrix(p, c, pg, cg, copula=True, **options)
        elif estimator == "hash":
            out = hash_cmi_matrix(p, c, pg, cg, **options)
        elif estimator == "knn":
            out = knn_cmi_matrix(p, c, pg, cg, **options)
        else:
            out = gmi_cmi_matrix(p, c, pg, cg, seed=seed)
    logger.debug(
        "cmi_matrix %s%s: N=%d, %dx%d cells in %.3fs",
        estimator, " (faithful)" if faithful else "", p.shape[0], len(cg), len(pg), time.perf_counter() - t0,
    )
    return np.ascontiguousarray(out, dtype=np.float64)


def acmi_matrix(
    parent_act: ArrayLike,
    child_act: ArrayLike,
    child_weight: ArrayLike | None,
    parent_groups: Groups,
    child_groups: Groups,
    *,
    phi: str | np.ndarray = "weight",
    estimator: str = DEFAULT_ESTIMATOR,
    seed: int = 0,
    **options: Any,
) -> np.ndarray:
    """ACMI ρ (G_c x G_p, float64, >= 0) of one layer pair (SPEC §3).

    Args:
        parent_act: N x n_p activations the child consumes (spatially averaged).
        child_act: N x n_c child outputs (spatially averaged).
        child_weight: child weight (n_c, n_p, kh, kw) or (n_c, n_p); None means φ = 1.
        parent_groups, child_groups: a group count G (contiguous split, ragged last group) or
            explicit lists of channel index arrays.
        phi: "none", "weight" (default), "weight_sq", "exp_weight", or an explicit G_c x G_p
            array (e.g. for depthwise convs).
        estimator: "edge" (CRN chain rule), "edge_faithful" (literal SPEC §2 per term),
            "gaussian" (log-determinant), "gaussian_copula" (the same on normal scores),
            "hash" (canonical-pair hash CMI: 1-D hash MI of at most two canonical pairs per
            cell, sees non-monotone dependence), "knn" (KSG type) or "gmi" (MINT's geometric
            estimator; slow).
        seed: seed of every random choice; the same inputs and seed give the same matrix.
        **options: `threads` (torch intra-op threads while estimating, default 1, None = leave
            the global setting), `faithful` and the `EdgeOptions` fields for EDGE, `ridge` and
            `shrinkage` for gaussian, gaussian_copula and hash, `k` for knn.
    """
    cmi = cmi_matrix(parent_act, child_act, parent_groups, child_groups, estimator=estimator, seed=seed, **options)
    gc, gp = cmi.shape
    if isinstance(phi, str):
        n_p = int(np.shape(parent_act)[1]) if np.ndim(parent_act) == 2 else 1
        n_c = int(np.shape(child_act)[1]) if np.ndim(child_act) == 2 else 1
        if child_weight is None:
            if phi not in PHI_KINDS:
                raise ConfigError(f"unknown phi {phi!r}; choose one of {list(PHI_KINDS)} or pass an explicit array.")
            f = np.ones((gc, gp))
        else:
            f = phi_matrix(child_weight, parent_groups, child_groups, phi, n_parent=n_p, n_child=n_c)
    else:
        f = np.asarray(phi, dtype=np.float64)
        if f.shape != (gc, gp):
            raise ConfigError(f"explicit phi must have shape (G_c, G_p) = {(gc, gp)}; got {f.shape}.")
        if not np.isfinite(f).all() or (f < 0).any():
            raise ConfigError("explicit phi must be finite and non-negative.")
    return cmi * f
