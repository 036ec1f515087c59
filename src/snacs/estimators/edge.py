"""EDGE: the ensemble dependency-graph (hash) estimator of mutual information (SPEC §2).

Noshad, Zeng, Hero, "Scalable Mutual Information Estimation using Dependence Graphs",
arXiv:1801.09125. Everything is vectorised in torch: bucket ids come from sorting integer keys,
counts from run lengths, so one call costs a few tensor operations whatever N is, and many
calls with the same N (one layer pair) run as one batch.

Randomness (all from the `seed` argument, numpy PCG64):

* projection of the first variable X: ``default_rng([seed, 0]).standard_normal((d_x, r_x))``;
* projection of the second variable Y: ``default_rng([seed, 1]).standard_normal((d_y, r_y))``;
* the 500 bandwidth points: ``default_rng([seed, 2]).integers(0, N, 500)``, shared by every
  coordinate.

The chain-rule CMI comes in two forms (SPEC §3):

* ``faithful=True``: each of Î(X;[Y,Z]) and Î(X;Z) is the literal §2 procedure (own projection,
  own bandwidth, own renormalisation), as in the paper and its reference code;
* default, common random numbers (CRN): [Y,Z] is projected once, Z's projection is that
  projection minus Y's columns' contribution, and both terms share the bandwidths, shifts and
  the renormalised gamma of the first term. Their difference then measures Y's contribution
  instead of the independent noise of two estimates.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from dataclasses import dataclass, fields

import numpy as np
import torch

from snacs.errors import ConfigError
from snacs.estimators._common import ArrayLike, as_matrix, check_same_rows

__all__ = ["EdgeOptions", "edge_options", "edge_mi", "edge_cmi", "edge_cmi_columns", "edge_cmi_matrix"]

logger = logging.getLogger(__name__)

_X_STREAM, _Y_STREAM, _BW_STREAM = 0, 1, 2
_KEY_LIMIT = 2**62  # keys stay below this so that key * N + id never overflows int64


@dataclass(frozen=True)
class EdgeOptions:
    """Settings of the EDGE estimator; the defaults are SPEC §2.

    Attributes:
        n_ensemble: L, the number of shifted hashes combined by the median.
        upper: U, upper clip of the pointwise log-ratio (bits).
        lower: lower clip of the pointwise log-ratio (bits).
        gamma: initial smoothness factor of the bandwidth.
        renormalize: apply the one-time bandwidth renormalisation (step 4).
        n_bandwidth_points: random points used for the k-NN bandwidth.
        eps_range: relative spread of the ensemble bandwidths, eps * (1 + eps_range * j/(L-1)).
        project_small: also project variables whose dimension is already <= r.
        max_batch_elements: memory cap (number of float64 codes) of one batched hash.
    """

    n_ensemble: int = 10
    upper: float = 10.0
    lower: float = 0.001
    gamma: float = 0.9
    renormalize: bool = True
    n_bandwidth_points: int = 500
    eps_range: float = 0.1
    project_small: bool = True
    max_batch_elements: int = 2**24


def edge_options(**options: object) -> EdgeOptions:
    """EdgeOptions from keyword arguments; ConfigError for unknown names or bad values."""
    known = {f.name for f in fields(EdgeOptions)}
    unknown = sorted(set(options) - known)
    if unknown:
        raise ConfigError(f"unknown EDGE option(s) {unknown}; valid options are {sorted(known)}.")
    try:
        opts = EdgeOptions(**options)  # type: ignore[arg-type]
    except TypeError as exc:  # pragma: no cover - dataclass signature mismatch
        raise ConfigError(str(exc)) from exc
    if int(opts.n_ensemble) < 1:
        raise ConfigError(f"n_ensemble must be >= 1; got {opts.n_ensemble}.")
    if not (opts.upper > opts.lower >= 0):
        raise ConfigError(f"need upper > lower >= 0; got upper={opts.upper}, lower={opts.lower}.")
    if not opts.gamma > 0:
        raise ConfigError(f"gamma must be > 0; got {opts.gamma}.")
    if int(opts.n_bandwidth_points) < 1:
        raise ConfigError(f"n_bandwidth_points must be >= 1; got {opts.n_bandwidth_points}.")
    if opts.eps_range < 0:
        raise ConfigError(f"eps_range must be >= 0; got {opts.eps_range}.")
    return opts


# --------------------------------------------------------------------------- building blocks


def projection_dim(d: int, n: int, project_small: bool = True) -> int:
    """r = min(d, floor(log2(N/10))), at least 1 (SPEC §2 step 1)."""
    target = max(1, math.floor(math.log2(n / 10.0))) if n > 0 else 1
    return min(d, target)


def knn_k(n: int, r: int) -> int:
    """k of the automatic bandwidth for an r-dimensional projection (SPEC §2 step 2)."""
    k = math.floor(0.43 * n ** (2.0 / 3.0 + 0.17 * r / (r + 1.0)) * math.exp(-1.0 / max(1e4, r**4)))
    return min(max(k, 1), n)


def projection_matrix(x: torch.Tensor, r: int, seed: int, stream: int) -> torch.Tensor:
    """p-stable projection W (d x r): W[i, m] ~ N(0, (1 / (s_i sqrt(d)))^2), s_i = std of column i."""
    d = x.shape[1]
    s = x.std(dim=0, unbiased=False)
    s = torch.where(s < 1e-4, torch.ones_like(s), s)
    g = torch.from_numpy(np.random.default_rng([int(seed), stream]).standard_normal((d, r)))
    return g / (s[:, None] * math.sqrt(d))


def bandwidth_points(n: int, count: int, seed: int) -> torch.Tensor:
    """Indices of the random points used for the k-NN bandwidth (with replacement)."""
    return torch.from_numpy(np.random.default_rng([int(seed), _BW_STREAM]).integers(0, n, count))


def knn_bandwidth(values: torch.Tensor, k: int, points: torch.Tensor) -> torch.Tensor:
    """eps0 per row of `values` (C x N): mean distance from the chosen points to their k-th
    nearest value (the point itself counts as the first), plus 1e-4.

    In 1-D the k nearest values are a window of the sorted values; the best window start is
    where s[lo] + s[lo+k-1] crosses 2a, found by searchsorted.
    """
    n = values.shape[1]
    s = values.sort(dim=1).values
    a = values[:, points]
    if k <= 1:
        return torch.full((values.shape[0],), 1e-4, dtype=values.dtype)
    g = s[:, : n - k + 1] + s[:, k - 1 :]
    lo = torch.searchsorted(g.contiguous(), (2.0 * a).contiguous())
    lo1 = lo.clamp(max=n - k)
    lo0 = (lo - 1).clamp(min=0)

    def width(start: torch.Tensor) -> torch.Tensor:
        return torch.maximum(a - s.gather(1, start), s.gather(1, start + (k - 1)) - a)

    return torch.minimum(width(lo0), width(lo1)).mean(dim=1) + 1e-4


@dataclass
class _Projected:
    """A projected variable: values (B, N, r), eps0 (B, r), and r (the scale 3r of SPEC §2)."""

    values: torch.Tensor
    eps0: torch.Tensor
    r: int


def _project(x: torch.Tensor, seed: int, stream: int, points: torch.Tensor, opts: EdgeOptions) -> _Projected:
    n, d = x.shape
    r = projection_dim(d, n)
    if not opts.project_small and d <= r:
        xp = x
    else:
        xp = x @ projection_matrix(x, r, seed, stream)
    eps0 = knn_bandwidth(xp.T.contiguous(), knn_k(n, r), points)
    return _Projected(xp[None], eps0[None], r)


def _ensemble_scales(opts: EdgeOptions) -> tuple[torch.Tensor, torch.Tensor]:
    L = int(opts.n_ensemble)
    j = torch.arange(L, dtype=torch.float64)
    t = 1.0 + opts.eps_range * j / (L - 1) if L > 1 else torch.ones(1, dtype=torch.float64)
    return t, j / L


def _hash_keys(p: _Projected, gamma: torch.Tensor, opts: EdgeOptions) -> torch.Tensor:
    """Integer bucket keys (B, L, N) of the L shifted hashes floor((x' + b) / eps).

    p.values (Bp, N, r), gamma (Bg,), B = max(Bp, Bg). The r integer coordinates are combined
    into one exact int64 key per row (mixed radix over the observed code ranges).
    """
    t, frac = _ensemble_scales(opts)
    eps = p.eps0[:, None, :] * (3.0 * p.r) * gamma[:, None, None] * t[None, :, None]  # (B, L, r)
    b = frac[None, :, None] * eps
    codes = torch.floor((p.values[:, None, :, :] + b[:, :, None, :]) / eps[:, :, None, :])
    return _combine_codes(codes)


def _combine_codes(codes: torch.Tensor) -> torch.Tensor:
    """Exact int64 key per row vector of `codes` (..., N, r), equal keys iff equal rows."""
    lo = codes.amin(dim=-2, keepdim=True)
    span = codes.amax(dim=-2, keepdim=True) - lo + 1.0  # (..., 1, r)
    c = (codes - lo).to(torch.int64)
    r = codes.shape[-1]
    if r == 1:
        return c[..., 0]
    bits = torch.log2(span).sum(dim=-1).max().item()
    if bits < 60:
        strides = torch.cumprod(torch.cat([torch.ones_like(span[..., :1]), span[..., :-1]], dim=-1), dim=-1)
        return (c * strides.to(torch.int64)).sum(dim=-1)
    # Rare (very fine buckets in many dimensions): fold coordinates one by one, compacting
    # the partial key to dense ids (< N) whenever the next fold could overflow.
    n = codes.shape[-2]
    key = c[..., 0]
    cur = float(span[..., 0].max())
    for m in range(1, r):
        sm = float(span[..., m].max())
        if cur * sm >= _KEY_LIMIT:
            key, _ = _dense_ids(key)
            cur = float(n)
        key = key * int(sm) + c[..., m]
        cur *= sm
    return key


def _dense_ids(keys: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per row of `keys` (..., N): dense bucket id (0..n_buckets-1) and bucket size of each sample."""
    shape = keys.shape
    k2 = keys.reshape(-1, shape[-1])
    s, perm = k2.sort(dim=-1)
    new = torch.ones_like(s, dtype=torch.bool)
    new[:, 1:] = s[:, 1:] != s[:, :-1]
    ids_sorted = new.cumsum(dim=-1) - 1
    counts_sorted = _run_lengths(ids_sorted)
    ids = torch.empty_like(ids_sorted).scatter_(1, perm, ids_sorted)
    counts = torch.empty_like(counts_sorted).scatter_(1, perm, counts_sorted)
    return ids.reshape(shape), counts.reshape(shape)


def _run_lengths(run_ids: torch.Tensor) -> torch.Tensor:
    """For rows of nondecreasing run ids (R, N) starting at 0: the length of each element's run."""
    rows, n = run_ids.shape
    flat = run_ids + torch.arange(rows, dtype=run_ids.dtype)[:, None] * n
    counts = torch.bincount(flat.reshape(-1), minlength=rows * n)
    return counts[flat]


def _mi_from_keys(kx: torch.Tensor, ky: torch.Tensor, opts: EdgeOptions) -> torch.Tensor:
    """Hash MI (bits) per (batch, ensemble member) from bucket keys kx (Bx, L, N), ky (By, L, N).

    I = (1/N) sum_(i,k) N_ik clip(log2(N N_ik / (N_i M_k)), lower, U), written as a mean over
    samples of the clipped log-ratio of the sample's own buckets.
    """
    n = kx.shape[-1]
    xid, cx = _dense_ids(kx)
    if int(ky.max()) >= _KEY_LIMIT // n:
        ky, _ = _dense_ids(ky)
    joint = ky * n + xid  # broadcast over the batch
    shape = joint.shape
    j2 = joint.reshape(-1, n)
    s, perm = j2.sort(dim=-1)
    new_j = torch.ones_like(s, dtype=torch.bool)
    new_j[:, 1:] = s[:, 1:] != s[:, :-1]
    ys = torch.div(s, n, rounding_mode="floor")
    new_y = torch.ones_like(new_j)
    new_y[:, 1:] = ys[:, 1:] != ys[:, :-1]
    c_joint = _run_lengths(new_j.cumsum(dim=-1) - 1)
    c_y = _run_lengths(new_y.cumsum(dim=-1) - 1)
    c_x = cx.expand(shape).reshape(-1, n).gather(1, perm)
    ratio = (float(n) * c_joint.to(torch.float64)) / (c_x.to(torch.float64) * c_y.to(torch.float64))
    pmi = torch.log2(ratio).clamp_(min=opts.lower, max=opts.upper)
    return pmi.mean(dim=-1).reshape(shape[:-1])


def _median_last(v: torch.Tensor) -> torch.Tensor:
    """numpy-style median over the last dimension (mean of the two middle values when even)."""
    s = v.sort(dim=-1).values
    m = s.shape[-1]
    if m % 2:
        return s[..., m // 2]
    return 0.5 * (s[..., m // 2 - 1] + s[..., m // 2])


def _edge_pass(x: _Projected, y: _Projected, gamma: torch.Tensor, opts: EdgeOptions) -> torch.Tensor:
    """One ensemble estimate (median over L) per batch row; `gamma` (B,) or (1,)."""
    kx = _hash_keys(x, gamma, opts)
    ky = _hash_keys(y, gamma, opts)
    return _median_last(_mi_from_keys(kx, ky, opts))


def _renormalized_gamma(gamma: float | torch.Tensor, mi: torch.Tensor) -> torch.Tensor:
    """gamma <- gamma * 2^(-sqrt(2 I) + 0.5 / I), followed by the 0.9 factor of the second call
    (SPEC §2 step 4; the reference multiplies the incoming gamma by 0.9 on every call)."""
    mi = mi.clamp(min=1e-12)
    expo = (-torch.sqrt(2.0 * mi) + 0.5 / mi).clamp(max=60.0)
    return 0.9 * gamma * torch.pow(2.0, expo)


def _edge_full(x: _Projected, y: _Projected, opts: EdgeOptions) -> tuple[torch.Tensor, torch.Tensor]:
    """EDGE with renormalisation for a batch: (estimate (B,), final gamma (B,))."""
    g0 = torch.full((1,), float(opts.gamma), dtype=torch.float64)
    mi = _edge_pass(x, y, g0, opts)
    if not opts.renormalize:
        return mi, g0
    g1 = _renormalized_gamma(float(opts.gamma), mi)
    return _edge_pass(x, y, g1, opts), g1


# --------------------------------------------------------------------------- public estimators


def edge_mi(x: ArrayLike, y: ArrayLike, *, seed: int = 0, **options: object) -> float:
    """EDGE estimate of I(X; Y) in bits, exactly as SPEC §2.

    Args:
        x: N x d_x samples (numpy or torch; 1-D means one column).
        y: N x d_y samples.
        seed: seed of the projections and bandwidth points.
        **options: fields of `EdgeOptions` (n_ensemble, upper, gamma, renormalize, ...).
    """
    opts = edge_options(**options)
    xt, yt = as_matrix(x, "x"), as_matrix(y, "y")
    n = check_same_rows(x=xt, y=yt)
    pts = bandwidth_points(n, int(opts.n_bandwidth_points), seed)
    px = _project(xt, seed, _X_STREAM, pts, opts)
    py = _project(yt, seed, _Y_STREAM, pts, opts)
    mi, _ = _edge_full(px, py, opts)
    return float(mi[0])


def edge_cmi(
    x: ArrayLike, y: ArrayLike, z: ArrayLike, *, seed: int = 0, faithful: bool = False, **options: object
) -> float:
    """EDGE estimate of I(X; Y | Z) in bits by the chain rule, max(0, I(X;[Y,Z]) - I(X;Z)).

    Args:
        x, y, z: N x d samples.
        seed: seed of projections and bandwidth points.
        faithful: True = both terms by the literal SPEC §2 procedure with their own randomness
            (reproduces the paper); False (default) = common random numbers (see module doc).
        **options: fields of `EdgeOptions`.
    """
    yt, zt = as_matrix(y, "y"), as_matrix(z, "z")
    check_same_rows(y=yt, z=zt)
    parents = torch.cat([yt, zt], dim=1)
    return edge_cmi_columns(x, parents, np.arange(yt.shape[1]), seed=seed, faithful=faithful, **options)


def edge_cmi_columns(
    x: ArrayLike,
    parents: ArrayLike,
    y_columns: Sequence[int] | np.ndarray,
    *,
    seed: int = 0,
    faithful: bool = False,
    **options: object,
) -> float:
    """I(X; parents[:, y_columns] | the other parent columns), one cell, computed directly.

    This is the cell-by-cell definition that `edge_cmi_matrix` batches; the order of the
    parent columns matters because it fixes which projection row belongs to which column.
    """
    opts = edge_options(**options)
    xt, pt = as_matrix(x, "x"), as_matrix(parents, "parents")
    n = check_same_rows(x=xt, parents=pt)
    ycols = np.asarray(y_columns, dtype=np.int64).reshape(-1)
    rest = np.setdiff1d(np.arange(pt.shape[1]), ycols)
    if rest.size == 0:
        raise ConfigError("Z is empty: the conditioning set needs at least one column besides Y.")
    pts = bandwidth_points(n, int(opts.n_bandwidth_points), seed)
    px = _project(xt, seed, _X_STREAM, pts, opts)
    pall = _project(pt, seed, _Y_STREAM, pts, opts)
    mi_all, gamma = _edge_full(px, pall, opts)
    if faithful:
        pz = _project(pt[:, torch.from_numpy(rest)], seed, _Y_STREAM, pts, opts)
        mi_z, _ = _edge_full(px, pz, opts)
    else:
        w = projection_matrix(pt, pall.r, seed, _Y_STREAM)
        yi = torch.from_numpy(ycols)
        zvals = pall.values[0] - pt[:, yi] @ w[yi]
        pz = _Projected(zvals[None], pall.eps0, pall.r)
        mi_z = _edge_pass(px, pz, gamma, opts)
    return max(0.0, float(mi_all[0]) - float(mi_z[0]))


def edge_cmi_matrix(
    parent: torch.Tensor,
    child: torch.Tensor,
    parent_groups: list[np.ndarray],
    child_groups: list[np.ndarray],
    *,
    seed: int = 0,
    faithful: bool = False,
    options: EdgeOptions | None = None,
) -> np.ndarray:
    """Chain-rule EDGE CMI for every (child group, parent group) cell, batched (G_c x G_p).

    Î(X_j; all parents) is computed once per child group; the Î(X_j; Z_g) of all parent groups
    g are hashed and counted as one batch per child group.
    """
    opts = options or EdgeOptions()
    n, n_p = parent.shape
    pts = bandwidth_points(n, int(opts.n_bandwidth_points), seed)
    pall = _project(parent, seed, _Y_STREAM, pts, opts)
    gp = len(parent_groups)
    if faithful:
        zs = []
        for g in parent_groups:
            rest = np.setdiff1d(np.arange(n_p), g)
            if rest.size == 0:
                raise ConfigError("a parent group holds every parent channel; Z would be empty.")
            zs.append(_project(parent[:, torch.from_numpy(rest)], seed, _Y_STREAM, pts, opts))
        # Z variables of equal projected dimension share one batch.
        by_r: dict[int, list[int]] = {}
        for i, p in enumerate(zs):
            by_r.setdefault(p.r, []).append(i)
        z_batches = [
            (torch.tensor(idx), _Projected(torch.cat([zs[i].values for i in idx]), torch.cat([zs[i].eps0 for i in idx]), r))
            for r, idx in by_r.items()
        ]
    else:
        w = projection_matrix(parent, pall.r, seed, _Y_STREAM)
        contrib = torch.stack([parent[:, torch.from_numpy(g)] @ w[torch.from_numpy(g)] for g in parent_groups])
        zvals = pall.values - contrib  # (G_p, N, r)
    out = np.zeros((len(child_groups), gp), dtype=np.float64)
    for j, cg in enumerate(child_groups):
        px = _project(child[:, torch.from_numpy(cg)], seed, _X_STREAM, pts, opts)
        mi_all, gamma = _edge_full(px, pall, opts)
        if faithful:
            mi_z = torch.empty(gp, dtype=torch.float64)
            for idx, pz in z_batches:
                for sl in _chunks(len(idx), n, pz.r, opts):
                    sub = _Projected(pz.values[sl], pz.eps0[sl], pz.r)
                    est, _ = _edge_full(px, sub, opts)
                    mi_z[idx[sl]] = est
        else:
            mi_z = torch.empty(gp, dtype=torch.float64)
            for sl in _chunks(gp, n, pall.r, opts):
                sub = _Projected(zvals[sl], pall.eps0.expand(zvals[sl].shape[0], -1), pall.r)
                mi_z[sl] = _edge_pass(px, sub, gamma, opts)
        out[j] = (mi_all - mi_z).clamp(min=0.0).numpy()
    return out


def _chunks(b: int, n: int, r: int, opts: EdgeOptions) -> list[slice]:
    per_row = max(1, n * max(r, 1) * int(opts.n_ensemble))
    step = max(1, int(opts.max_batch_elements) // per_row)
    return [slice(i, min(i + step, b)) for i in range(0, b, step)]
