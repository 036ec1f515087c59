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
from snacs.estimators._common import ArrayLike, as_matrix, check_same_rows, torch_threads

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
        max_batch_elements: number of hash codes processed at once (small: cache-friendly).
    """

    n_ensemble: int = 10
    upper: float = 10.0
    lower: float = 0.001
    gamma: float = 0.9
    renormalize: bool = True
    n_bandwidth_points: int = 500
    eps_range: float = 0.1
    project_small: bool = True
    max_batch_elements: int = 2**19


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


def projection_dim(d: int, n: int) -> int:
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
    """A projected variable: values (B, N, r), eps0 (B, r), r (the scale 3r of SPEC §2), and
    the per-coordinate extremes (B, r) that bound the hash codes."""

    values: torch.Tensor
    eps0: torch.Tensor
    r: int
    vmin: torch.Tensor | None = None
    vmax: torch.Tensor | None = None

    def __post_init__(self) -> None:
        if self.vmin is None:
            self.vmin = self.values.amin(dim=1)
            self.vmax = self.values.amax(dim=1)

    def rows(self, sl: slice) -> _Projected:
        """The batch rows `sl` (eps0 broadcast when it has a single row)."""
        eps0 = self.eps0 if self.eps0.shape[0] == 1 else self.eps0[sl]
        return _Projected(self.values[sl], eps0, self.r, self.vmin[sl], self.vmax[sl])


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
    into one exact key per row, mixed radix over the code ranges; the ranges come from the
    coordinate extremes (floor and the affine map are monotone), not from a pass over the codes.
    """
    t, frac = _ensemble_scales(opts)
    eps = p.eps0[:, None, :] * (3.0 * p.r) * gamma[:, None, None] * t[None, :, None]  # (B, L, r)
    b = frac[None, :, None] * eps
    inv = 1.0 / eps  # (x' + b) * (1 / eps): same buckets as the division up to one rounding
    lo = torch.floor((p.vmin[:, None, :] + b) * inv)
    hi = torch.floor((p.vmax[:, None, :] + b) * inv)
    span = hi - lo + 1.0
    codes = p.values[:, None, :, :] + b[:, :, None, :]
    codes.mul_(inv[:, :, None, :]).floor_()  # integer-valued floats
    r = codes.shape[-1]
    strides = torch.cumprod(torch.cat([torch.ones_like(span[..., :1]), span[..., :-1]], dim=-1), dim=-1)
    # Exact in float64 while every partial sum stays below 2^52 in magnitude.
    bound = float(((lo.abs().maximum(hi.abs()) + 1.0) * strides).sum(dim=-1).max())
    if r == 1 or bound < 2.0**52:
        if r == 1:
            key = codes[..., 0] - lo[:, :, None, 0]
        else:
            offset = (lo * strides).sum(dim=-1)  # (B, L)
            key = torch.einsum("blnr,blr->bln", codes, strides.expand(codes.shape[0], -1, -1))
            key.sub_(offset[:, :, None])
        return key.to(torch.int64)
    # Rare (very fine buckets in many dimensions): fold coordinates one by one, compacting
    # the partial key to dense ids (< N) whenever the next fold could overflow.
    c = codes.sub_(lo[:, :, None, :]).to(torch.int64)
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
    k2 = keys.reshape(-1, shape[-1]).numpy()
    perm = np.argsort(k2, axis=1)
    srt = np.take_along_axis(k2, perm, axis=1)
    new = np.empty(srt.shape, dtype=bool)
    new[:, 0] = True
    np.not_equal(srt[:, 1:], srt[:, :-1], out=new[:, 1:])
    ids_sorted = np.cumsum(new, axis=1) - 1
    counts_sorted = _run_lengths(new.reshape(-1)).reshape(srt.shape)
    ids = np.empty_like(ids_sorted)
    counts = np.empty_like(counts_sorted)
    np.put_along_axis(ids, perm, ids_sorted, axis=1)
    np.put_along_axis(counts, perm, counts_sorted, axis=1)
    return torch.from_numpy(ids).reshape(shape), torch.from_numpy(counts).reshape(shape)


def _run_lengths(new: np.ndarray) -> np.ndarray:
    """Length of each element's run, given the flags marking the first element of every run."""
    starts = np.flatnonzero(new)
    lengths = np.diff(starts, append=new.size)
    return np.repeat(lengths, lengths)


@dataclass
class _XBuckets:
    """X bucket ids (Bx, L, N) and a (Bx * L, N) table of bucket sizes indexed by id."""

    ids: np.ndarray
    sizes: np.ndarray

    @classmethod
    def from_keys(cls, kx: torch.Tensor) -> _XBuckets:
        bx, L, n = kx.shape
        ids, counts = _dense_ids(kx)
        table = np.zeros((bx * L, n), dtype=np.int64)
        np.put_along_axis(table, ids.numpy().reshape(bx * L, n), counts.numpy().reshape(bx * L, n), axis=1)
        return cls(ids.numpy(), table)


def _mi_from_keys(xb: _XBuckets, ky: torch.Tensor, opts: EdgeOptions) -> torch.Tensor:
    """Hash MI (bits) per (batch, ensemble member) from X buckets (Bx, L, N) and Y keys (B, L, N).

    I = (1/N) sum_(i,k) N_ik clip(log2(N N_ik / (N_i M_k)), lower, U) over the occupied joint
    buckets. The joint key packs (Y key, X bucket id) into one int64; after one sort per row the
    joint buckets and the Y buckets are both runs, so no second sort or hash table is needed.
    numpy's sort is used because it is several times faster than torch's here (SIMD sort).
    """
    bx, L, n = xb.ids.shape
    bits = max(1, int(n - 1).bit_length())
    kyn = ky.numpy()
    if int(kyn.max()) >= (1 << (62 - bits)):
        kyn = _dense_ids(ky)[0].numpy()
    joint = np.left_shift(kyn, bits) | xb.ids  # (B, L, N), broadcast over the batch
    b = joint.shape[0]
    rows = b * L
    srt = np.sort(joint.reshape(rows, n), axis=1).reshape(-1)
    total = srt.size
    new_j = np.empty(total, dtype=bool)
    new_j[0] = True
    np.not_equal(srt[1:], srt[:-1], out=new_j[1:])
    new_j[::n] = True
    ys = np.right_shift(srt, bits)
    new_y = np.empty(total, dtype=bool)
    new_y[0] = True
    np.not_equal(ys[1:], ys[:-1], out=new_y[1:])
    new_y[::n] = True
    starts_j = np.flatnonzero(new_j)  # one entry per occupied joint bucket
    n_ij = np.diff(starts_j, append=total)
    starts_y = np.flatnonzero(new_y)
    len_y = np.diff(starts_y, append=total)
    m_k = len_y[np.searchsorted(starts_y, starts_j, side="right") - 1]
    row = starts_j // n
    # N_i: size of the cell's X bucket, looked up in a (Bx * L, N) table of bucket sizes.
    xrow = row if bx == b else row % L
    n_i = xb.sizes[xrow, srt[starts_j] & ((1 << bits) - 1)]
    pmi = np.log2((float(n) * n_ij) / (n_i * m_k).astype(np.float64))
    np.clip(pmi, opts.lower, opts.upper, out=pmi)
    sums = np.bincount(row, weights=n_ij * pmi, minlength=rows)
    return torch.from_numpy(sums / n).reshape(b, L)


def _median_last(v: torch.Tensor) -> torch.Tensor:
    """numpy-style median over the last dimension (mean of the two middle values when even)."""
    s = v.sort(dim=-1).values
    m = s.shape[-1]
    if m % 2:
        return s[..., m // 2]
    return 0.5 * (s[..., m // 2 - 1] + s[..., m // 2])


def _edge_pass(x: _Projected, y: _Projected, gamma: torch.Tensor, opts: EdgeOptions) -> torch.Tensor:
    """One ensemble estimate (median over L) per batch row; `gamma` (B,) or (1,).

    The batch is processed in cache-sized chunks; when X and gamma are shared by the whole
    batch (the CRN case), X is hashed and counted once.
    """
    bx, by, bg = x.values.shape[0], y.values.shape[0], gamma.shape[0]
    b = max(bx, by, bg)
    shared = bx == 1 and bg == 1
    xb = _XBuckets.from_keys(_hash_keys(x, gamma, opts)) if shared else None
    out = torch.empty(b, dtype=torch.float64)
    n = x.values.shape[1]
    for sl in _chunks(b, n, max(x.r, y.r), opts):
        g = gamma if bg == 1 else gamma[sl]
        ky = _hash_keys(y if by == 1 else y.rows(sl), g, opts)
        if not shared:
            xb = _XBuckets.from_keys(_hash_keys(x if bx == 1 else x.rows(sl), g, opts))
        out[sl] = _median_last(_mi_from_keys(xb, ky, opts))
    return out


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
    with torch_threads(1):
        pts = bandwidth_points(n, int(opts.n_bandwidth_points), seed)
        px = _project(xt, seed, _X_STREAM, pts, opts)
        py = _project(yt, seed, _Y_STREAM, pts, opts)
        mi, _ = _edge_full(px, py, opts)
    return float(mi[0])


def edge_cmi(
    x: ArrayLike, y: ArrayLike, z: ArrayLike | None, *, seed: int = 0, faithful: bool = False, **options: object
) -> float:
    """EDGE estimate of I(X; Y | Z) in bits by the chain rule, max(0, I(X;[Y,Z]) - I(X;Z)).

    Args:
        x, y, z: N x d samples (z None: no conditioning, the result is I(X; Y)).
        seed: seed of projections and bandwidth points.
        faithful: True = both terms by the literal SPEC §2 procedure with their own randomness
            (reproduces the paper); False (default) = common random numbers (see module doc).
        **options: fields of `EdgeOptions`.
    """
    yt = as_matrix(y, "y")
    if z is None:
        parents = yt
    else:
        zt = as_matrix(z, "z")
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
    with torch_threads(1):
        pts = bandwidth_points(n, int(opts.n_bandwidth_points), seed)
        px = _project(xt, seed, _X_STREAM, pts, opts)
        pall = _project(pt, seed, _Y_STREAM, pts, opts)
        mi_all, gamma = _edge_full(px, pall, opts)
        if rest.size == 0:  # no conditioning variables: I(X; Y | {}) = I(X; Y)
            mi_z = torch.zeros(1, dtype=torch.float64)
        elif faithful:
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
    # A parent group holding every channel leaves Z empty: then Î(X; Z) = 0.
    nonempty = [i for i, g in enumerate(parent_groups) if np.setdiff1d(np.arange(n_p), g).size]
    if faithful:
        zs = {}
        for i in nonempty:
            rest = np.setdiff1d(np.arange(n_p), parent_groups[i])
            zs[i] = _project(parent[:, torch.from_numpy(rest)], seed, _Y_STREAM, pts, opts)
        # Z variables of equal projected dimension share one batch.
        by_r: dict[int, list[int]] = {}
        for i, p in zs.items():
            by_r.setdefault(p.r, []).append(i)
        z_batches = [
            (torch.tensor(idx), _Projected(torch.cat([zs[i].values for i in idx]), torch.cat([zs[i].eps0 for i in idx]), r))
            for r, idx in by_r.items()
        ]
    else:
        w = projection_matrix(parent, pall.r, seed, _Y_STREAM)
        contrib = torch.stack([parent[:, torch.from_numpy(g)] @ w[torch.from_numpy(g)] for g in parent_groups])
        keep = torch.tensor(nonempty, dtype=torch.int64)
        pz_all = _Projected((pall.values - contrib)[keep], pall.eps0, pall.r)  # (G_p', N, r)
    out = np.zeros((len(child_groups), gp), dtype=np.float64)
    for j, cg in enumerate(child_groups):
        px = _project(child[:, torch.from_numpy(cg)], seed, _X_STREAM, pts, opts)
        mi_all, gamma = _edge_full(px, pall, opts)
        mi_z = torch.zeros(gp, dtype=torch.float64)
        if faithful:
            for idx, pz in z_batches:
                mi_z[idx] = _edge_full(px, pz, opts)[0]
        elif nonempty:
            mi_z[keep] = _edge_pass(px, pz_all, gamma, opts)
        out[j] = (mi_all - mi_z).clamp(min=0.0).numpy()
    logger.debug("EDGE %s: %d x %d cells, N = %d", "faithful" if faithful else "CRN", len(child_groups), gp, n)
    return out


def _chunks(b: int, n: int, r: int, opts: EdgeOptions) -> list[slice]:
    """Batch slices holding about `max_batch_elements` hash codes each."""
    per_row = max(1, n * max(r, 1) * int(opts.n_ensemble))
    step = max(1, int(opts.max_batch_elements) // per_row)
    return [slice(i, min(i + step, b)) for i in range(0, b, step)]
