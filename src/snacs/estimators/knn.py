"""k-nearest-neighbour (KSG type) conditional mutual information.

Frenzel & Pompe (2007), the conditional form of Kraskov, Stögbauer & Grassberger (2004):
with ε_i the max-norm distance from sample i to its k-th neighbour in the joint (X, Y, Z) space,

    I(X; Y | Z) = ψ(k) − < ψ(n_xz + 1) + ψ(n_yz + 1) − ψ(n_z + 1) >,

n_· = the number of other samples strictly closer than ε_i in that marginal space. Columns are
standardised first, so the estimate does not depend on the units of a column. Result in bits.
"""

from __future__ import annotations

import math

import numpy as np
import torch
from scipy.spatial import cKDTree
from scipy.special import digamma

from snacs.errors import ConfigError
from snacs.estimators._common import ArrayLike, as_matrix, check_same_rows, standardize

__all__ = ["knn_cmi", "knn_cmi_matrix"]

_LN2 = math.log(2.0)


def _check_k(k: int, n: int) -> int:
    k = int(k)
    if k < 1:
        raise ConfigError(f"k must be >= 1; got {k}.")
    if k > n - 1:
        raise ConfigError(f"k = {k} needs at least k + 1 = {k + 1} samples; got N = {n}. Use a smaller k.")
    return k


def _count_within(points: np.ndarray, eps: np.ndarray) -> np.ndarray:
    """Samples (including itself) strictly closer than eps_i to sample i, max-norm."""
    if points.shape[1] == 0:
        return np.full(points.shape[0], points.shape[0], dtype=np.int64)
    tree = cKDTree(points)
    radius = np.nextafter(eps, 0.0)
    counts = tree.query_ball_point(points, np.maximum(radius, 0.0), p=np.inf, return_length=True)
    return np.where(eps > 0, counts, 1).astype(np.int64)


def knn_cmi(x: ArrayLike, y: ArrayLike, z: ArrayLike | None, k: int = 5) -> float:
    """KSG/Frenzel–Pompe estimate of I(X; Y | Z) in bits (Z may be None: then I(X; Y)).

    Not clamped: small negative values are estimation noise around zero.

    Args:
        x, y, z: N x d samples.
        k: neighbours in the joint space (larger k: lower variance, more bias).
    """
    xt, yt = as_matrix(x, "x"), as_matrix(y, "y")
    zt = as_matrix(z, "z") if z is not None else torch.zeros((xt.shape[0], 0), dtype=torch.float64)
    n = check_same_rows(x=xt, y=yt, z=zt)
    k = _check_k(k, n)
    xs, ys = standardize(xt).numpy(), standardize(yt).numpy()
    zs = standardize(zt).numpy() if zt.shape[1] else zt.numpy()
    joint = np.hstack([xs, ys, zs])
    dist, _ = cKDTree(joint).query(joint, k=k + 1, p=np.inf)
    eps = dist[:, k]
    m_xz = _count_within(np.hstack([xs, zs]), eps)
    m_yz = _count_within(np.hstack([ys, zs]), eps)
    m_z = _count_within(zs, eps)
    val = digamma(k) - np.mean(digamma(m_xz) + digamma(m_yz) - digamma(m_z))
    return float(val / _LN2)


def _cheb(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Max-norm distances between the rows of a (r, d) and b (N, d): (r, N); zeros if d == 0."""
    if a.shape[1] == 0:
        return torch.zeros((a.shape[0], b.shape[0]), dtype=a.dtype)
    return (a[:, None, :] - b[None, :, :]).abs_().amax(dim=-1)


def knn_cmi_matrix(
    parent: torch.Tensor,
    child: torch.Tensor,
    parent_groups: list[np.ndarray],
    child_groups: list[np.ndarray],
    *,
    k: int = 5,
    max_batch_elements: int = 2**23,
) -> np.ndarray:
    """KSG CMI (bits, clamped at 0) of every (child group, parent group) cell, G_c x G_p.

    The joint space (X_j, all parents) is the same for every parent group, so ε_i and n_yz are
    computed once per child group; the per-group max-norm distances are combined with prefix and
    suffix maxima to give the distances in every Z_g = "all parents but group g" at once.
    Quadratic in N: meant for N up to a few thousand.
    """
    n, n_p = parent.shape
    k = _check_k(k, n)
    ps, cs = standardize(parent), standardize(child)
    gp = len(parent_groups)
    covered = np.concatenate(parent_groups)
    disjoint = np.unique(covered).size == covered.size
    leftover = np.setdiff1d(np.arange(n_p), covered)
    atoms = list(parent_groups) + ([leftover] if leftover.size else [])
    sums = np.zeros((len(child_groups), gp), dtype=np.float64)
    per_row = n * max(1, n_p) * 2
    rows = max(1, min(n, int(max_batch_elements) // per_row))
    for start in range(0, n, rows):
        sl = slice(start, min(n, start + rows))
        d_atoms = torch.stack([_cheb(ps[sl][:, a], ps[:, a]) for a in map(torch.from_numpy, atoms)])
        d_all = d_atoms.amax(dim=0)
        if disjoint:
            # Distance without group g = max over the other atoms: prefix/suffix maxima.
            lo = torch.cat([torch.zeros_like(d_atoms[:1]), torch.cummax(d_atoms, dim=0).values[:-1]])
            hi = torch.flip(torch.cummax(torch.flip(d_atoms, [0]), dim=0).values, [0])
            hi = torch.cat([hi[1:], torch.zeros_like(hi[:1])])
            d_z = torch.maximum(lo, hi)[:gp]
        else:
            d_z = torch.stack(
                [_cheb(ps[sl][:, r], ps[:, r]) for r in (torch.from_numpy(np.setdiff1d(np.arange(n_p), g)) for g in parent_groups)]
            )
        for j, cg in enumerate(child_groups):
            d_x = _cheb(cs[sl][:, torch.from_numpy(cg)], cs[:, torch.from_numpy(cg)])
            d_joint = torch.maximum(d_x, d_all)
            eps = torch.kthvalue(d_joint, k + 1, dim=1).values  # self is the 1st (distance 0)
            zero = (eps == 0).to(torch.int64)
            e = eps[:, None]
            m_yz = (d_all < e).sum(dim=1) + zero
            m_z = (d_z < e[None]).sum(dim=2) + zero[None]
            m_xz = (torch.maximum(d_z, d_x[None]) < e[None]).sum(dim=2) + zero[None]
            term = (
                torch.special.digamma(m_xz.double())
                + torch.special.digamma(m_yz.double())[None]
                - torch.special.digamma(m_z.double())
            )
            sums[j] += term.sum(dim=1).numpy()
    val = (digamma(k) - sums / n) / _LN2
    return np.maximum(val, 0.0)
