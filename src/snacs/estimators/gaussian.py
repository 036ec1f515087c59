"""Gaussian (log-determinant) conditional mutual information.

For jointly Gaussian variables I(X; Y | Z) = 1/2 log det(Σ_{X|Z}) / det(Σ_{X|Y,Z}). With P = [Y, Z]
the parents, Ω = Σ_PP^{-1}, U = Ω Σ_PX (the regression coefficients of X on P) and
S = Σ_XX − Σ_XP Ω Σ_PX (the residual covariance of X given P):

    Σ_{X|Z} = S + U_Yᵀ (Ω_YY)^{-1} U_Y,   so   I = 1/2 logdet(I + S^{-1} U_Yᵀ Ω_YY^{-1} U_Y).

One inverse of Σ_PP serves every parent group, and each (child group, parent group) cell costs a
d_x x d_x determinant. Columns are standardised first (scale invariance) and a small ridge keeps
constant or collinear columns harmless. Only the parent block Σ_PP is shrunk towards the
identity, by the Ledoit–Wolf intensity of the parents (about 0 when N is far above the channel
count and the parents are correlated, close to 1 when they are independent): a regularised
regression of the children on the parents. The parent-child cross terms are left alone (shrinking
them too would pull every CMI to 0 exactly when the parents are independent), and S is the
covariance of the regression residuals C − P U, positive definite whatever the shrinkage.

So the estimate is exactly the CMI of a proper Gaussian model, the one the shrunk regression
fits: P ~ N(0, Σ^s_PP) and C | P ~ N(Uᵀ P, S). The alternative, the Schur complement
Σ_CC − Σ_CP (Σ^s_PP)⁻¹ Σ_PC of the shrunk joint matrix, need not be positive definite (shrinking
lowers the top eigenvalues of strongly correlated parents) and was not chosen (issue 14; both
definitions are tested in tests/test_estimators.py).
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass

import numpy as np
import torch
from scipy.special import ndtri
from scipy.stats import rankdata
from sklearn.covariance import ledoit_wolf_shrinkage

from snacs.errors import ConfigError
from snacs.estimators._common import ArrayLike, one_cell, standardize

__all__ = ["JointCorrelation", "gaussian_cmi", "gaussian_cmi_matrix", "joint_correlation", "normal_scores"]

_LN2 = math.log(2.0)
logger = logging.getLogger(__name__)


def _check_ridge(ridge: float) -> float:
    ridge = float(ridge)
    if not ridge >= 0 or not math.isfinite(ridge):
        raise ConfigError(f"ridge must be a finite number >= 0; got {ridge}.")
    return ridge


def _shrinkage(parent_block: torch.Tensor, shrinkage: float | str) -> float:
    """Ledoit–Wolf intensity of the standardised parents ("auto"), or a fixed value in [0, 1].

    Constant columns (all 0 after standardising) carry no information and are left out, so
    adding one does not change the intensity.
    """
    if isinstance(shrinkage, str):
        if shrinkage != "auto":
            raise ConfigError(f"shrinkage must be 'auto' or a number in [0, 1]; got {shrinkage!r}.")
        a = parent_block.numpy()
        a = a[:, np.any(a != 0.0, axis=0)]
        if a.shape[1] < 2:
            return 0.0
        return float(ledoit_wolf_shrinkage(a, assume_centered=True))
    value = float(shrinkage)
    if not 0.0 <= value <= 1.0:
        raise ConfigError(f"shrinkage must be 'auto' or a number in [0, 1]; got {shrinkage}.")
    return value


def normal_scores(t: torch.Tensor) -> torch.Tensor:
    """Each column replaced by Φ^{-1}(rank / (N + 1)), ties sharing their average rank."""
    ranks = rankdata(np.ascontiguousarray(t.numpy().T), axis=1, method="average").T  # rows: fast axis
    return torch.from_numpy(np.ascontiguousarray(ndtri(ranks / (t.shape[0] + 1.0))))


@dataclass(frozen=True)
class JointCorrelation:
    """The joint correlation of [parents, children] with only the parent block shrunk.

    Attributes:
        data: N x (n_p + n_c) standardised columns (normal scores first when copula=True).
        n_parent: n_p.
        delta: Ledoit–Wolf (or fixed) shrinkage intensity applied to Σ_PP.
        omega: (Σ_PP)^{-1}, Σ_PP = (1 − δ) R_PP + (δ + ridge) I.
        u: Ω R_PC, the regularised regression coefficients of the children on the parents.
        s_res: covariance of the residuals C − P U, plus ridge on the diagonal (n_c x n_c).
    """

    data: torch.Tensor
    n_parent: int
    delta: float
    omega: torch.Tensor
    u: torch.Tensor
    s_res: torch.Tensor


def joint_correlation(
    parent: torch.Tensor,
    child: torch.Tensor,
    *,
    ridge: float = 1e-6,
    shrinkage: float | str = "auto",
    copula: bool = False,
) -> JointCorrelation:
    """Standardise [P, C], shrink only Σ_PP, regress C on P (see `JointCorrelation`)."""
    ridge = _check_ridge(ridge)
    n, n_p = parent.shape
    data = torch.cat([parent, child], dim=1)
    if copula:
        data = normal_scores(data)
    data = standardize(data)
    delta = _shrinkage(data[:, :n_p], shrinkage)
    if n < n_p:
        logger.warning(
            "Gaussian CMI with N = %d samples for %d parent channels (shrinkage %.2f): estimates "
            "are strongly regularised; use more calibration samples.", n, n_p, delta,
        )
    r = data.T @ data / n
    rpp, rpc, rcc = r[:n_p, :n_p], r[:n_p, n_p:], r[n_p:, n_p:]
    spp = (1.0 - delta) * rpp + (delta + ridge) * torch.eye(n_p, dtype=r.dtype)
    omega = torch.cholesky_inverse(torch.linalg.cholesky(spp))
    u = omega @ rpc  # (n_p, n_c)
    cu = rpc.T @ u
    s_res = rcc - cu - cu.T + u.T @ (rpp @ u)  # Cov(C − P U), PSD by construction
    s_res = 0.5 * (s_res + s_res.T) + ridge * torch.eye(rcc.shape[0], dtype=r.dtype)
    return JointCorrelation(data=data, n_parent=n_p, delta=delta, omega=omega, u=u, s_res=s_res)


def gaussian_cmi(
    x: ArrayLike,
    y: ArrayLike,
    z: ArrayLike | None,
    *,
    ridge: float = 1e-6,
    shrinkage: float | str = "auto",
    copula: bool = False,
) -> float:
    """Gaussian estimate of I(X; Y | Z) in bits (Z may be None: then I(X; Y)).

    Args:
        x, y, z: N x d samples.
        ridge: added to the diagonal of the correlation matrix (units of variance).
        shrinkage: weight of the identity in (1 - s) * R_PP + s * I for the parent block
            P = [Y, Z] only (cross terms untouched); "auto" is the Ledoit–Wolf intensity of P.
        copula: replace every column by its normal scores (ranks) first: a Gaussian-copula
            estimate, invariant to any increasing transform of a column.
    """
    return one_cell(gaussian_cmi_matrix, x, y, z, ridge=ridge, shrinkage=shrinkage,
                    copula=copula)


def gaussian_cmi_matrix(
    parent: torch.Tensor,
    child: torch.Tensor,
    parent_groups: list[np.ndarray],
    child_groups: list[np.ndarray],
    *,
    ridge: float = 1e-6,
    shrinkage: float | str = "auto",
    copula: bool = False,
) -> np.ndarray:
    """Gaussian CMI (bits) of every (child group, parent group) cell, G_c x G_p, non-negative.

    The shrinkage intensity depends on the parents only, so a cell computed alone (same parents,
    one child group) gives the same value as the batched matrix.
    """
    jc = joint_correlation(parent, child, ridge=ridge, shrinkage=shrinkage, copula=copula)
    omega, u, sxx = jc.omega, jc.u, jc.s_res
    gmax = max(len(g) for g in parent_groups)
    gp = len(parent_groups)
    # Pad every group block to gmax: identity rows in Ω_gg and zero rows in U leave the
    # quadratic form U_gᵀ Ω_gg^{-1} U_g unchanged.
    o_blocks = torch.eye(gmax, dtype=omega.dtype).repeat(gp, 1, 1)
    u_blocks = torch.zeros((gp, gmax, u.shape[1]), dtype=omega.dtype)
    for i, g in enumerate(parent_groups):
        gi = torch.from_numpy(g)
        o_blocks[i, : len(g), : len(g)] = omega[gi][:, gi]
        u_blocks[i, : len(g)] = u[gi]
    t_blocks = torch.linalg.solve(o_blocks, u_blocks)  # Ω_gg^{-1} U_g
    out = np.zeros((len(child_groups), gp), dtype=np.float64)
    for j, cg in enumerate(child_groups):
        ci = torch.from_numpy(cg)
        s = sxx[ci][:, ci]
        q = torch.einsum("gad,gae->gde", u_blocks[:, :, ci], t_blocks[:, :, ci])  # (G_p, d, d)
        m = torch.linalg.solve(s, q)  # S^{-1} Q per group
        eye = torch.eye(len(cg), dtype=omega.dtype)
        logdet = torch.linalg.slogdet(eye + m).logabsdet
        out[j] = (0.5 * logdet / _LN2).clamp(min=0.0).numpy()
    return out
