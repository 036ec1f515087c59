"""The canonical-pair hash CMI ("hash") and the parent-block-only shrinkage of the Gaussian ones.

The reference below recomputes every cell on its own with loops, dicts and scipy's generalised
symmetric eigensolver (Q a = λ S a), which shares no code with the batched implementation.
"""

from __future__ import annotations

import math
from collections import Counter

import numpy as np
import pytest
import scipy.linalg
from scipy.special import ndtri
from scipy.stats import rankdata, spearmanr
from sklearn.covariance import ledoit_wolf_shrinkage

from snacs.errors import ConfigError
from snacs.estimators import (
    ESTIMATORS,
    acmi_matrix,
    cmi_matrix,
    gaussian_cmi,
    hash_cmi,
    hash_mi_pairs,
    make_groups,
    phi_matrix,
)

# --------------------------------------------------------------------------- slow reference


def ref_hash_mi(u: np.ndarray, v: np.ndarray) -> float:
    """1-D hash MI in bits: clip ±2.5, width 1, 4 grids shifted by 1/4 bucket, plug-in, averaged."""
    n = len(u)

    def fine(x: float) -> int:  # cell of width 0.25 over [-2.5, 2.5], 0..19
        return min(19, math.floor((min(max(x, -2.5), 2.5) + 2.5) / 0.25))

    vals = []
    for s in range(4):  # grid s: buckets of 4 fine cells, edges shifted by s cells
        bu = [(fine(x) + s) // 4 for x in u]
        bv = [(fine(x) + s) // 4 for x in v]
        cu, cv, cuv = Counter(bu), Counter(bv), Counter(zip(bu, bv, strict=True))
        vals.append(sum(c / n * math.log2(c * n / (cu[a] * cv[b])) for (a, b), c in cuv.items()))
    return float(np.mean(vals))


def test_grid_is_the_documented_one():
    from snacs.estimators import hashcmi

    assert (hashcmi.WIDTH, hashcmi.CLIP, hashcmi.SHIFTS) == (1.0, 2.5, 4)


def _normal_scores_std(a: np.ndarray) -> np.ndarray:
    out = np.zeros_like(a, dtype=float)
    n = a.shape[0]
    for i in range(a.shape[1]):
        col = ndtri(rankdata(a[:, i]) / (n + 1.0))
        col = col - col.mean()
        sd = math.sqrt(float(np.mean(col * col)))
        out[:, i] = col / sd if sd > 1e-12 else 0.0
    return out


def ref_hash_cmi_matrix(p: np.ndarray, c: np.ndarray, pg: list, cg: list, ridge: float = 1e-6) -> np.ndarray:
    n, n_p = p.shape
    data = _normal_scores_std(np.column_stack([p, c]))
    pz, cz = data[:, :n_p], data[:, n_p:]
    informative = pz[:, np.any(pz != 0, axis=0)]
    delta = float(ledoit_wolf_shrinkage(informative, assume_centered=True)) if informative.shape[1] > 1 else 0.0
    r = data.T @ data / n
    spp = (1 - delta) * r[:n_p, :n_p] + (delta + ridge) * np.eye(n_p)
    om = np.linalg.inv(spp)
    u_all = om @ r[:n_p, n_p:]
    eps = cz - pz @ u_all
    out = np.zeros((len(cg), len(pg)))
    for j, cj in enumerate(cg):
        ej = eps[:, cj]
        s = ej.T @ ej / n + ridge * np.eye(len(cj))
        for g, gi in enumerate(pg):
            om_gg_inv = np.linalg.inv(om[np.ix_(gi, gi)])
            e_g = pz @ om[:, gi] @ om_gg_inv
            ugj = u_all[np.ix_(gi, cj)]
            q = ugj.T @ om_gg_inv @ ugj
            lam, vecs = scipy.linalg.eigh(q, s)  # Q a = λ S a, ascending
            total = 0.0
            for i in range(min(2, len(cj), len(gi))):
                li, a = lam[-1 - i], vecs[:, -1 - i]
                if li <= 0:
                    continue
                v = e_g @ (ugj @ a)
                uu = ej @ a + v
                v = v / math.sqrt(float(np.mean(v * v)))
                uu = uu / math.sqrt(float(np.mean(uu * uu)))
                total += ref_hash_mi(uu, v)
            out[j, g] = max(0.0, total)
    return out


def mixed_layer(n: int = 400, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """7 correlated parents, 5 children with linear and non-monotone (|p|) dependence."""
    rng = np.random.default_rng(seed)
    p = rng.standard_normal((n, 7)) + 0.4 * rng.standard_normal((n, 1))
    c = np.column_stack([
        p[:, 0] + 0.5 * p[:, 3],
        np.abs(p[:, 1]) + 0.3 * p[:, 5],
        p[:, 4] ** 2 - p[:, 6],
        0.2 * p[:, 2],
        np.abs(p[:, 0] - p[:, 6]),
    ]) + 0.5 * rng.standard_normal((n, 5))
    return p, c


PG = [np.array([0, 4]), np.array([1]), np.array([2, 5, 6]), np.array([3])]
CG = [np.array([0, 3]), np.array([1]), np.array([2, 4])]


# --------------------------------------------------------------------------- against the reference


def test_hash_mi_pairs_matches_reference() -> None:
    rng = np.random.default_rng(3)
    x = rng.standard_normal((500, 3))
    y = np.column_stack([0.6 * x[:, 0] + 0.8 * rng.standard_normal(500), np.abs(x[:, 1]) * 2 - 1.6,
                         rng.standard_normal(500)])
    x[0, 2], y[1, 2] = 9.0, -9.0  # clipped values
    got = hash_mi_pairs(x, y)
    want = [ref_hash_mi(x[:, m], y[:, m]) for m in range(3)]
    np.testing.assert_allclose(got, want, rtol=0, atol=1e-12)


@pytest.mark.parametrize(("n", "seed"), [(400, 0), (60, 1)])
def test_hash_matches_slow_reference(n: int, seed: int) -> None:
    p, c = mixed_layer(n, seed)
    want = ref_hash_cmi_matrix(p, c, PG, CG)
    got = cmi_matrix(p, c, PG, CG, estimator="hash")
    assert got.shape == (3, 4) and got.dtype == np.float64
    assert want.max() > 0.1  # the cells are not all trivial
    np.testing.assert_allclose(got, want, rtol=0, atol=1e-9)


def test_hash_deterministic() -> None:
    p, c = mixed_layer(300, 2)
    a = cmi_matrix(p, c, PG, CG, estimator="hash")
    b = cmi_matrix(p.copy(), c.copy(), PG, CG, estimator="hash", seed=7)  # no randomness: seed unused
    assert np.array_equal(a, b)


def test_hash_batched_equals_cell_by_cell() -> None:
    p, c = mixed_layer(300, 4)
    w = np.random.default_rng(1).standard_normal((5, 7, 3, 3))
    expected = np.zeros((len(CG), len(PG)))
    for j, cj in enumerate(CG):
        for g, gi in enumerate(PG):
            rest = np.setdiff1d(np.arange(7), gi)
            expected[j, g] = hash_cmi(c[:, cj], p[:, gi], p[:, rest])
    got = acmi_matrix(p, c, w, PG, CG, estimator="hash")
    np.testing.assert_allclose(got, expected * phi_matrix(w, PG, CG, "weight"), rtol=0, atol=1e-9)
    # contiguous integer groups, ragged last group, many pairs per chunk
    pg, cg = make_groups(7, 3), make_groups(5, 2)
    m = cmi_matrix(p, c, pg, cg, estimator="hash")
    for j, cj in enumerate(cg):
        for g, gi in enumerate(pg):
            rest = np.setdiff1d(np.arange(7), gi)
            assert m[j, g] == pytest.approx(hash_cmi(c[:, cj], p[:, gi], p[:, rest]), abs=1e-9)


# --------------------------------------------------------------------------- known answers


def _linear_layer(n: int, seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Independent parents in groups of 3 (4 groups), children in groups of 2: returns the
    samples and the true CMI (bits) of every (child group, parent group) cell."""
    rng = np.random.default_rng([seed, 5])
    b = rng.standard_normal((4, 12)) * np.repeat([0.1, 0.3, 0.6, 1.0], 3)[None, :]
    p = rng.standard_normal((n, 12))
    c = p @ b.T + 0.8 * rng.standard_normal((n, 4))
    truth = np.zeros((2, 4))
    noise = 0.64 * np.eye(2)
    for j in range(2):
        bj = b[2 * j : 2 * j + 2]
        for g in range(4):
            gi = np.arange(3 * g, 3 * g + 3)
            bg = bj[:, gi]
            # I(X; P_g | rest) = ½ log2 det(B_g B_gᵀ + Σ_noise) / det(Σ_noise), independent parents
            truth[j, g] = 0.5 * math.log2(np.linalg.det(bg @ bg.T + noise) / np.linalg.det(noise))
    return p, c, truth


def _within_compression(est: np.ndarray, truth: np.ndarray) -> bool:
    """The stated accuracy of the hash CMI: at most 0.06 bits above the truth (plug-in bias,
    about +0.01 bits per pair at N = 20000) and at least 65 % of it less 0.03 bits: five buckets
    a side cap a pair's MI near log2(5) bits, so large values are compressed (about 0.75x at
    1-2 bits per cell); the ranking, what the pruner reads, is kept."""
    return bool(((est <= truth + 0.06) & (est >= 0.65 * truth - 0.03)).all())


def test_hash_linear_gaussian_closed_form() -> None:
    p, c, truth = _linear_layer(20000, 0)
    est = cmi_matrix(p, c, 4, 2, estimator="hash")
    assert _within_compression(est, truth), (est, truth)
    for j in range(truth.shape[0]):  # the order within each child group is the true one
        assert list(np.argsort(est[j])) == list(np.argsort(truth[j]))
    assert truth.max() > 1.0  # two pairs per cell carry real information


def _independent_one_channel(n: int = 2000, seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    rng = np.random.default_rng([seed, 9])
    a = np.linspace(0.1, 1.0, 16)
    p = rng.standard_normal((n, 16))
    c = p @ a[:, None] + 0.7 * rng.standard_normal((n, 1))
    return p, c, 0.5 * np.log2((a**2 + 0.49) / 0.49)  # I(c; p_g | other p), independent parents


@pytest.mark.parametrize("estimator", ["gaussian", "gaussian_copula", "hash"])
def test_independent_parents_keep_their_cmi(estimator: str) -> None:
    """16 independent one-channel parent groups: the Ledoit-Wolf intensity is 1, and before the
    fix it shrank the cross terms as well, so every cell came out 0 (truth: 0.01 to 0.8 bits).
    Tolerance 0.05 bits at N = 20000 (hash: `_within_compression`); ranking at N = 2000."""
    from sklearn.covariance import ledoit_wolf_shrinkage as lw

    p, c, truth = _independent_one_channel(20000)
    ps = (p - p.mean(0)) / p.std(0)
    assert lw(ps, assume_centered=True) > 0.9  # the regime of the bug
    est = cmi_matrix(p, c, 16, 1, estimator=estimator)[0]
    if estimator == "hash":
        assert _within_compression(est, truth), (est, truth)
    else:
        np.testing.assert_allclose(est, truth, rtol=0, atol=0.05)
    if estimator != "hash":
        # one cell through the x, y, z interface: Y = the strongest parent, Z = the other 15
        one = gaussian_cmi(c, p[:, 15], p[:, :15], copula=estimator == "gaussian_copula")
        assert one == pytest.approx(truth[15], abs=0.05)
    p, c, truth = _independent_one_channel(2000, seed=1)
    est = cmi_matrix(p, c, 16, 1, estimator=estimator)[0]
    assert spearmanr(est, truth)[0] >= 0.95


def test_hash_sees_non_monotone_dependence() -> None:
    rng = np.random.default_rng(11)
    n = 3000
    p = rng.standard_normal((n, 8))
    s = np.array([1.0, 0.7, 0.4, 0.2, 0.0, 0.0, 0.0, 0.0])
    c = (np.abs(p) @ s)[:, None] + 0.3 * rng.standard_normal((n, 1))
    h = cmi_matrix(p, c, 8, 1, estimator="hash")[0]
    g = cmi_matrix(p, c, 8, 1, estimator="gaussian_copula")[0]
    assert list(np.argsort(-h)[:4]) == [0, 1, 2, 3]
    assert h[0] > 0.3 and h[4:].max() < 0.05
    assert g.max() < 0.05  # the Gaussian copula is blind to |u|


# --------------------------------------------------------------------------- edges and options


def test_hash_registered_and_options_checked() -> None:
    assert "hash" in ESTIMATORS
    p, c = mixed_layer(100, 0)
    with pytest.raises(ConfigError, match="unknown option"):
        cmi_matrix(p, c, 2, 2, estimator="hash", k=3)
    with pytest.raises(ConfigError, match="shrinkage"):
        cmi_matrix(p, c, 2, 2, estimator="hash", shrinkage=2.0)
    fixed = cmi_matrix(p, c, 2, 2, estimator="hash", shrinkage=0.0)
    assert np.isfinite(fixed).all() and (fixed >= 0).all()


def test_hash_constant_child_and_parent() -> None:
    p, c = mixed_layer(200, 3)
    c[:, 1] = 4.0  # a constant child group
    p[:, 3] = -1.0  # a constant parent group
    m = cmi_matrix(p, c, PG, CG, estimator="hash")
    assert np.isfinite(m).all()
    assert np.all(m[1] == 0.0)  # nothing to learn about a constant
    assert np.all(m[:, 3] == 0.0)  # nothing learnt from a constant
