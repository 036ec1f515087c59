"""MINT's geometric conditional mutual information estimator (SPEC §9), the speed baseline.

Ganesh, Corso, Sekeh, "MINT: Deep Network Compression via Mutual Information-based Neuron
Trimming" (ICPR 2020). The rows of [X Y Z] are shuffled (seeded) and split into thirds A, B, C.
Each row of A gets the Y of its nearest neighbour in Z among the rows of B, a sample from
p(x, z) p(y | z); the Euclidean minimum spanning tree over C (original rows) plus the
bootstrapped A is built, R = the number of MST edges joining the two sets, and

    D = 1 − R (m + n) / (2 m n)     (m = n = N // 3),

a Friedman–Rafsky estimate of the divergence between p(x, y, z) and p(x, z) p(y | z), which is
zero when X ⟂ Y | Z. It is O(N²) per call (dense distances + MST); values are not in bits.
Like the reference code, raw (unstandardised) coordinates are used.
"""

from __future__ import annotations

import numpy as np
import torch
from scipy.sparse.csgraph import minimum_spanning_tree

from snacs.estimators._common import ArrayLike, as_matrix, check_same_rows

__all__ = ["gmi_cmi", "gmi_cmi_matrix"]


def _nearest(query: torch.Tensor, ref: torch.Tensor) -> torch.Tensor:
    """Index of the Euclidean nearest row of `ref` for every row of `query`."""
    if query.shape[1] == 0:  # empty Z: every donor row is equally near
        return torch.arange(query.shape[0]) % ref.shape[0]
    return torch.cdist(query, ref).argmin(dim=1)


def gmi_cmi(x: ArrayLike, y: ArrayLike, z: ArrayLike | None, *, seed: int = 0) -> float:
    """MINT's geometric estimate of the dependence of X and Y given Z (not clamped, not bits).

    Args:
        x, y, z: N x d samples (N >= 6); z may be None (then plain dependence of X and Y).
        seed: seed of the row shuffle that forms the three parts.
    """
    xt, yt = as_matrix(x, "x"), as_matrix(y, "y")
    zt = as_matrix(z, "z") if z is not None else torch.zeros((xt.shape[0], 0), dtype=torch.float64)
    n = check_same_rows(x=xt, y=yt, z=zt)
    m = n // 3
    if m < 2:
        from snacs.errors import ConfigError

        raise ConfigError(f"the geometric estimator needs at least 6 samples; got N = {n}.")
    perm = torch.from_numpy(np.random.default_rng([int(seed), 3]).permutation(n))
    a, b, c = perm[:m], perm[m : 2 * m], perm[2 * m : 3 * m]
    donor = _nearest(zt[a], zt[b])
    boot = torch.cat([xt[a], yt[b][donor], zt[a]], dim=1)
    orig = torch.cat([xt[c], yt[c], zt[c]], dim=1)
    pts = torch.cat([orig, boot])
    dist = torch.cdist(pts, pts).numpy()
    # csgraph treats zeros as missing edges; a constant offset keeps duplicate points connected
    # without changing which spanning tree is minimal (every tree has 2m - 1 edges).
    offset = 1e-12 * (float(dist.max()) + 1.0)
    tree = minimum_spanning_tree(np.triu(dist + offset, k=1)).tocoo()
    crossing = int(np.count_nonzero((tree.row < m) != (tree.col < m)))
    crossing = min(crossing, m)
    return 1.0 - crossing * (2 * m) / (2.0 * m * m)


def gmi_cmi_matrix(
    parent: torch.Tensor,
    child: torch.Tensor,
    parent_groups: list[np.ndarray],
    child_groups: list[np.ndarray],
    *,
    seed: int = 0,
) -> np.ndarray:
    """Geometric CMI of every (child group, parent group) cell, clamped at 0; one call per cell
    (this is the slow baseline, kept as the reference does it)."""
    n_p = parent.shape[1]
    out = np.zeros((len(child_groups), len(parent_groups)), dtype=np.float64)
    for j, cg in enumerate(child_groups):
        x = child[:, torch.from_numpy(cg)]
        for g, pg in enumerate(parent_groups):
            rest = torch.from_numpy(np.setdiff1d(np.arange(n_p), pg))
            out[j, g] = max(0.0, gmi_cmi(x, parent[:, torch.from_numpy(pg)], parent[:, rest], seed=seed))
    return out
