"""Ranking quality of the CMI estimators on layers whose true CMI is known in closed form.

Pruning needs, for every child group, the ranking of the parent groups by
I(child group; parent group | other parents). This benchmark builds linear-Gaussian layer pairs
(correlated parents through shared latent factors, child = B·parents + noise, with per-(child,
parent group) strengths spread over 1.5 decades), computes the true CMI of every cell from the
covariance, and reports for each estimator option the mean within-child Spearman correlation and
the top-k overlap (k = G_p / 4) between estimate and truth.

A second data model, "monotone", applies increasing per-channel maps (softplus to parents, like
rectified activations, and x + x³/3 to children). CMI is invariant under such maps, so the truth
is unchanged while the data is no longer Gaussian: it tests the Gaussian estimator off its model.

Further suites (`SUITES`, child groups of one channel unless said otherwise):

* "ranking bar": the linear-Gaussian model with 12 parent groups of 4 channels, 8 children in
  groups of 2, N = 3000 (the layout of the ranking target for the `hash` estimator).
* "abs 1ch": non-monotone: child_k = Σ_g s_kg |u_g| + noise over 16 independent one-channel
  parent groups. Given the other parents, I(child; u_g | rest) = h(s|u| + σe) − h(σe), computed by
  1-D numerical integration (`nonmonotone_truth`). A Gaussian estimator sees no correlation here.
* "abs 4ch": the same with parent groups of 4 channels, the child driven by |w_kgᵀ u_g| (unit w).
* "mixed 1ch": child_k = Σ_g (l_kg u_g + s_kg |u_g|) + noise, truth h(l u + s|u| + σe) − h(σe).

Also recorded: the bias of each MI estimator on bivariate Gaussians (r = 0, 0.3, 0.6, 0.9), and a
diagnostic ("projection ceiling"): the ranking obtained from the *exact* Gaussian MI of the
p-stable-projected variables that the chain-rule EDGE estimator works with, i.e. the best any
estimator could do after that projection, with unlimited samples.

Run: `python -m benchmarks.estimator_quality [--quick]`.
"""

from __future__ import annotations

import argparse
import itertools
import logging
import math
import time
from typing import Any

import numpy as np
import torch
from scipy.stats import spearmanr

from benchmarks import environment, write_json
from snacs.estimators import (
    DEFAULT_ESTIMATOR,
    cmi_matrix,
    edge_mi,
    gaussian_cmi,
    gmi_cmi,
    knn_cmi,
    make_groups,
)
from snacs.estimators.edge import projection_dim

NAME = "estimator_quality"
TARGET = 0.8
#: suite -> minimum mean within-child Spearman for the `hash` estimator (issue 14)
HASH_TARGETS = {"ranking bar": 0.99, "linear": 0.95, "abs 1ch": 0.9}
#: the extra suites: parent groups, channels per group, children, child group size, N, model
SUITES: dict[str, dict[str, Any]] = {
    "ranking bar": {"groups": 12, "per_group": 4, "n_child": 8, "child_group": 2, "n": 3000, "model": "linear"},
    "abs 1ch": {"groups": 16, "per_group": 1, "n_child": 8, "child_group": 1, "n": 2000, "model": "abs"},
    "abs 4ch": {"groups": 16, "per_group": 4, "n_child": 8, "child_group": 1, "n": 2000, "model": "abs"},
    "mixed 1ch": {"groups": 16, "per_group": 1, "n_child": 8, "child_group": 1, "n": 2000, "model": "mixed"},
}
NOISE_SD = 0.5
log = logging.getLogger("benchmarks.estimator_quality")

#: label -> (estimator name, options)
VARIANTS: dict[str, tuple[str, dict[str, Any]]] = {
    "edge (CRN)": ("edge", {}),
    "edge faithful": ("edge_faithful", {}),
    "gaussian": ("gaussian", {}),
    "gaussian copula": ("gaussian_copula", {}),
    "hash": ("hash", {}),
    "knn (k=5)": ("knn", {}),
    "gmi (MINT)": ("gmi", {}),
}


# --------------------------------------------------------------------------- data with known CMI


def layer_covariance(seed: int, n_groups: int, per_group: int, n_child: int) -> tuple[np.ndarray, list[np.ndarray]]:
    """Joint covariance of [parents, children] of a random linear-Gaussian layer, and the groups."""
    rng = np.random.default_rng([seed, 11])
    n_p = n_groups * per_group
    load = rng.standard_normal((n_p, 4)) * 0.7  # 4 shared latent factors: correlated parents
    s_pp = load @ load.T + np.eye(n_p)
    groups = make_groups(n_p, n_groups)
    strength = np.exp(rng.uniform(math.log(0.03), 0.0, size=(n_child, n_groups)))
    b = np.zeros((n_child, n_p))
    for g, idx in enumerate(groups):
        b[:, idx] = rng.standard_normal((n_child, len(idx))) * strength[:, [g]]
    b /= math.sqrt(n_p / 8.0)
    noise = 0.5**2 * np.eye(n_child)
    cov = np.block([[s_pp, s_pp @ b.T], [b @ s_pp, b @ s_pp @ b.T + noise]])
    return cov, groups


def sample(cov: np.ndarray, n: int, seed: int, n_p: int, model: str) -> tuple[np.ndarray, np.ndarray]:
    """N samples of (parents, children); `model` "monotone" maps each channel by an increasing map."""
    rng = np.random.default_rng([seed, 12, n])
    a = rng.standard_normal((n, cov.shape[0])) @ np.linalg.cholesky(cov).T
    p, c = a[:, :n_p], a[:, n_p:]
    if model == "monotone":
        p = np.logaddexp(0.0, 2.0 * p / p.std(axis=0))  # softplus: skewed, rectifier-like
        c = c / c.std(axis=0)
        c = c + c**3 / 3.0
    return p, c


def true_cmi(cov: np.ndarray, n_p: int, parent_groups: list[np.ndarray], child_groups: list[np.ndarray]) -> np.ndarray:
    """I(child group j; parent group g | other parents) in bits, from the covariance."""
    inv_p = np.linalg.inv(cov[:n_p, :n_p])
    out = np.zeros((len(child_groups), len(parent_groups)))
    for j, cg in enumerate(child_groups):
        idx = np.r_[np.arange(n_p), n_p + cg]
        inv_xp = np.linalg.inv(cov[np.ix_(idx, idx)])
        for g, pg in enumerate(parent_groups):
            # 1/2 [log det (Σ_XP^-1)_gg − log det (Σ_P^-1)_gg]: the Schur-complement form.
            a = np.linalg.slogdet(inv_xp[np.ix_(pg, pg)])[1]
            b = np.linalg.slogdet(inv_p[np.ix_(pg, pg)])[1]
            out[j, g] = 0.5 * (a - b) / math.log(2.0)
    return out


def _gauss_mi(sxx: np.ndarray, sxy: np.ndarray, syy: np.ndarray) -> float:
    joint = np.block([[sxx, sxy], [sxy.T, syy]])
    return 0.5 * (np.linalg.slogdet(sxx)[1] + np.linalg.slogdet(syy)[1] - np.linalg.slogdet(joint)[1]) / math.log(2.0)


def projection_ceiling(
    cov: np.ndarray, n_p: int, parent_groups: list[np.ndarray], child_groups: list[np.ndarray], n: int, seed: int = 0
) -> np.ndarray:
    """Chain-rule CMI computed exactly (Gaussian, infinite data) on the p-stable projection of the
    parents used by CRN-EDGE: I(X; W'P) − I(X; W'P − W_g'P_g)."""
    r = projection_dim(n_p, n)
    std = np.sqrt(np.diag(cov[:n_p, :n_p]))
    # The same draw as snacs.estimators.edge.projection_matrix (stream 1), population std.
    w = np.random.default_rng([seed, 1]).standard_normal((n_p, r)) / (std[:, None] * math.sqrt(n_p))
    out = np.zeros((len(child_groups), len(parent_groups)))
    spp = cov[:n_p, :n_p]
    for j, cg in enumerate(child_groups):
        ci = n_p + cg
        sxx, sxp = cov[np.ix_(ci, ci)], cov[np.ix_(ci, np.arange(n_p))]
        full = _gauss_mi(sxx, sxp @ w, w.T @ spp @ w)
        for g, pg in enumerate(parent_groups):
            wz = w.copy()
            wz[pg] = 0.0
            out[j, g] = full - _gauss_mi(sxx, sxp @ wz, wz.T @ spp @ wz)
    return out


def nonmonotone_truth(lin: float, mag: float, sigma: float = NOISE_SD) -> float:
    """I(Y; u) in bits for Y = lin·u + mag·|u| + σe, u, e independent N(0, 1): h(Y) − h(σe).

    The density of Y is ∫ φ(u) φ_σ(y − lin·u − mag·|u|) du (1-D quadrature on a fine grid),
    and h(Y) = −∫ f log2 f dy by the trapezoid rule.
    """
    u = np.linspace(-7.0, 7.0, 1401)
    wu = np.exp(-0.5 * u * u) / math.sqrt(2 * math.pi) * (u[1] - u[0])
    m = lin * u + mag * np.abs(u)
    core = np.abs(u) <= 5.0
    y = np.linspace(m[core].min() - 7 * sigma, m[core].max() + 7 * sigma, 2001)
    z = (y[:, None] - m[None, :]) / sigma
    f = (np.exp(-0.5 * z * z) @ wu) / (sigma * math.sqrt(2 * math.pi))
    integrand = np.where(f > 0, -f * np.log2(np.where(f > 0, f, 1.0)), 0.0)
    h_y = float(np.trapezoid(integrand, y))
    return h_y - 0.5 * math.log2(2 * math.pi * math.e * sigma * sigma)


def nonmonotone_layer(seed: int, n: int, n_groups: int, per_group: int, n_child: int, model: str
                      ) -> tuple[np.ndarray, np.ndarray, list[np.ndarray], np.ndarray]:
    """Independent N(0, 1) parents in groups; child_k = Σ_g (l_kg z_kg + s_kg |z_kg|) + σe with
    z_kg = w_kgᵀ u_g (unit w_kg: z_kg ~ N(0, 1)). Returns parents, children, groups, truth."""
    rng = np.random.default_rng([seed, 13, per_group, 0 if model == "abs" else 1])
    mag = np.exp(rng.uniform(math.log(0.03), 0.0, size=(n_child, n_groups)))
    if model == "mixed":
        lin = np.exp(rng.uniform(math.log(0.03), 0.0, size=(n_child, n_groups))) * rng.choice([-1.0, 1.0], (n_child, n_groups))
    else:
        lin = np.zeros((n_child, n_groups))
    w = rng.standard_normal((n_child, n_groups, per_group))
    w /= np.linalg.norm(w, axis=2, keepdims=True)
    srng = np.random.default_rng([seed, 14, n])
    p = srng.standard_normal((n, n_groups * per_group))
    z = np.einsum("ngd,kgd->nkg", p.reshape(n, n_groups, per_group), w)
    c = (lin[None] * z + mag[None] * np.abs(z)).sum(axis=2) + NOISE_SD * srng.standard_normal((n, n_child))
    truth = np.array([[nonmonotone_truth(lin[k, g], mag[k, g]) for g in range(n_groups)] for k in range(n_child)])
    return p, c, make_groups(n_groups * per_group, n_groups), truth


def suite_rows(quick: bool, only: tuple[str, ...] | None = None) -> list[dict[str, Any]]:
    """Every estimator (but the quadratic knn and gmi; with `only`, those labels) on the extra
    suites."""
    rows = []
    seeds = [0] if quick else [0, 1, 2]
    for suite, cfg in SUITES.items():
        for seed in seeds:
            if cfg["model"] == "linear":
                cov, pgroups = layer_covariance(seed, cfg["groups"], cfg["per_group"], cfg["n_child"])
                n_p = cfg["groups"] * cfg["per_group"]
                cgroups = make_groups(cfg["n_child"], cfg["n_child"] // cfg["child_group"])
                truth = true_cmi(cov, n_p, pgroups, cgroups)
                p, c = sample(cov, cfg["n"], seed, n_p, "linear")
            else:
                p, c, pgroups, truth = nonmonotone_layer(seed, cfg["n"], cfg["groups"], cfg["per_group"],
                                                         cfg["n_child"], cfg["model"])
                cgroups = make_groups(cfg["n_child"], cfg["n_child"])
            for label, (est, opts) in VARIANTS.items():
                if label.startswith(("knn", "gmi")) or (only and label not in only):
                    continue
                t0 = time.perf_counter()
                m = cmi_matrix(p, c, pgroups, cgroups, estimator=est, seed=seed, **opts)
                dt = time.perf_counter() - t0
                rho, top = within_child(m, truth)
                rows.append({"suite": suite, "variant": label, "estimator": est, "seed": seed, "n": cfg["n"],
                             "spearman": rho, "topk": top, "seconds": dt,
                             "true_cmi_range": [float(truth.min()), float(truth.max())]})
                log.info("%-16s %-12s s%d  rho=%+.3f top=%.2f  %.1fs", label, suite, seed, rho, top, dt)
    return rows


# --------------------------------------------------------------------------- scores


def within_child(est: np.ndarray, truth: np.ndarray) -> tuple[float, float]:
    """Mean over child groups of Spearman(est row, truth row) and of the top-k overlap."""
    k = max(1, truth.shape[1] // 4)
    rhos, overlaps = [], []
    for e, t in zip(est, truth, strict=True):
        rho = spearmanr(e, t)[0] if np.ptp(e) > 0 else 0.0
        rhos.append(0.0 if not np.isfinite(rho) else float(rho))
        top_e = set(np.argsort(-e, kind="stable")[:k].tolist())
        top_t = set(np.argsort(-t, kind="stable")[:k].tolist())
        overlaps.append(len(top_e & top_t) / k)
    return float(np.mean(rhos)), float(np.mean(overlaps))


def _runs_variant(label: str, layout: tuple[int, int], child_size: int, n: int, seed: int, model: str, quick: bool) -> bool:
    """The reduced grid of the slow estimators (quadratic in N)."""
    if label.startswith("knn"):
        return n <= 2000
    if label.startswith("gmi"):
        if n > 2000 or model != "linear":
            return False
        return layout[0] <= 8 or (seed == 0 and child_size == 4)
    return True


def bias_table(ns: list[int], seeds: list[int]) -> list[dict[str, Any]]:
    """Bivariate Gaussian MI: mean estimate over seeds against −½ log2(1 − r²)."""
    rows = []
    fns = {
        "edge": lambda x, y, s: edge_mi(x, y, seed=s),
        "gaussian": lambda x, y, s: gaussian_cmi(x, y, None),
        "gaussian copula": lambda x, y, s: gaussian_cmi(x, y, None, copula=True),
        "knn (k=5)": lambda x, y, s: knn_cmi(x, y, None),
        "gmi (MINT, not bits)": lambda x, y, s: gmi_cmi(x, y, None, seed=s),
    }
    for label, fn in fns.items():
        for n in ns:
            if label.startswith("gmi") and n > 2000:
                continue
            for r in (0.0, 0.3, 0.6, 0.9):
                vals = []
                for s in seeds:
                    rng = np.random.default_rng([s, 21, n])
                    x = rng.standard_normal(n)
                    y = r * x + math.sqrt(1 - r * r) * rng.standard_normal(n)
                    vals.append(fn(x, y, s))
                truth = abs(-0.5 * math.log2(1 - r * r))  # abs: no "-0.000" for r = 0
                est = float(np.mean(vals))
                rows.append({"estimator": label, "n": n, "r": r, "true_bits": truth, "estimate": est,
                             "bias": est - truth, "sd": float(np.std(vals))})
    return rows


def run(quick: bool = False, only: tuple[str, ...] | None = None,
        previous: dict[str, Any] | None = None) -> dict[str, Any]:
    """The whole benchmark; with `only` (variant labels) and the `previous` result, only those
    variants are measured again and every other variant's rows are kept from `previous`."""
    if only:
        bad = [v for v in only if v not in VARIANTS]
        if bad:
            raise SystemExit(f"unknown variant(s) {bad}; choose from {list(VARIANTS)}")
        if previous is None or previous.get("quick") != quick:
            raise SystemExit("--variants reruns part of a recorded result: run the whole "
                             "benchmark first (with the same --quick)")
    torch.set_num_threads(1)
    layouts = [(8, 8), (64, 8)]
    child_sizes = [1, 4]
    ns = [2000] if quick else [2000, 10000]
    seeds = [0] if quick else [0, 1, 2]
    models = ["linear", "monotone"]
    n_child = 8
    rows: list[dict[str, Any]] = []
    ceiling: list[dict[str, Any]] = []
    for (gp, per), child_size, n, seed, model in itertools.product(layouts, child_sizes, ns, seeds, models):
        if model == "monotone" and n > 2000:
            continue
        cov, pgroups = layer_covariance(seed, gp, per, n_child)
        n_p = gp * per
        cgroups = make_groups(n_child, n_child // child_size)
        truth = true_cmi(cov, n_p, pgroups, cgroups)
        p, c = sample(cov, n, seed, n_p, model)
        if model == "linear":
            ceil = within_child(projection_ceiling(cov, n_p, pgroups, cgroups, n, seed=seed), truth)
            ceiling.append({"layout": f"{gp}x{per}", "child_group": child_size, "n": n, "seed": seed,
                            "spearman": ceil[0], "topk": ceil[1]})
        for label, (est, opts) in VARIANTS.items():
            if not _runs_variant(label, (gp, per), child_size, n, seed, model, quick):
                continue
            if only and label not in only:
                continue
            t0 = time.perf_counter()
            m = cmi_matrix(p, c, pgroups, cgroups, estimator=est, seed=seed, **opts)
            dt = time.perf_counter() - t0
            rho, top = within_child(m, truth)
            rows.append({"variant": label, "estimator": est, "options": opts, "model": model,
                         "layout": f"{gp}x{per}", "child_group": child_size, "n": n, "seed": seed,
                         "spearman": rho, "topk": top, "seconds": dt,
                         "true_cmi_range": [float(truth.min()), float(truth.max())]})
            log.info("%-16s %-8s %5s c%d N=%-5d s%d  rho=%+.3f top=%.2f  %.1fs", label, model, f"{gp}x{per}",
                     child_size, n, seed, rho, top, dt)
    if only:
        rows += [r for r in previous["rows"] if r["variant"] not in only]
    summary: dict[str, Any] = {}
    for label in VARIANTS:
        sel = [r for r in rows if r["variant"] == label]
        lin = [r for r in sel if r["model"] == "linear"]
        mono = [r for r in sel if r["model"] == "monotone"]
        summary[label] = {
            "spearman_linear": float(np.mean([r["spearman"] for r in lin])) if lin else None,
            "topk_linear": float(np.mean([r["topk"] for r in lin])) if lin else None,
            "spearman_monotone": float(np.mean([r["spearman"] for r in mono])) if mono else None,
            "topk_monotone": float(np.mean([r["topk"] for r in mono])) if mono else None,
            "cells": len(sel),
            "seconds": float(sum(r["seconds"] for r in sel)),
        }
    extra = suite_rows(quick, only)
    if only:
        extra += [r for r in previous["suites"]["rows"] if r["variant"] not in only]
    for label in VARIANTS:
        for suite in SUITES:
            sel = [r["spearman"] for r in extra if r["variant"] == label and r["suite"] == suite]
            summary[label][f"spearman {suite}"] = float(np.mean(sel)) if sel else None
        summary[label]["seconds_suites"] = float(sum(r["seconds"] for r in extra if r["variant"] == label))
    hs = summary["hash"]
    hash_checks = {
        "ranking bar": hs["spearman ranking bar"],
        "linear": hs["spearman_linear"],
        "abs 1ch": hs["spearman abs 1ch"],
    }
    default_label = next(k for k, (e, o) in VARIANTS.items() if e == DEFAULT_ESTIMATOR and not o)
    return {
        "benchmark": NAME,
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "environment": environment(),
        "torch_threads": torch.get_num_threads(),
        "quick": quick,
        "grid": {
            "layouts_parent_groups_x_channels": [f"{a}x{b}" for a, b in layouts],
            "child_channels": n_child,
            "child_group_sizes": child_sizes,
            "n": ns,
            "seeds": seeds,
            "models": models,
            "topk": "k = G_p // 4 (2 of 8, 16 of 64)",
        },
        "reduced_grid": [
            "model 'monotone' only at N = 2000",
            "knn only at N = 2000 (quadratic distance matrices)",
            "gmi only at N = 2000, model 'linear': all 8x8 layers, and for 64x8 only seed 0 with "
            "child groups of 4 (one call per cell, O(N^2) each)",
        ],
        "target_spearman": TARGET,
        "default_estimator": DEFAULT_ESTIMATOR,
        "default_variant": default_label,
        "default_meets_target": bool((summary[default_label]["spearman_linear"] or 0) >= TARGET),
        "summary": summary,
        "rows": rows,
        "suites": {"definitions": SUITES, "noise_sd": NOISE_SD, "seeds": [0] if quick else [0, 1, 2],
                   "rows": extra},
        "hash_targets": {k: {"target": HASH_TARGETS[k], "spearman": v, "met": v is not None and v >= HASH_TARGETS[k]}
                         for k, v in hash_checks.items()},
        "projection_ceiling": {
            "what": "within-child Spearman of the exact Gaussian chain-rule CMI after the p-stable "
                    "projection of the parents to r = min(n_p, floor(log2(N/10))) dimensions "
                    "(unlimited samples): an upper bound for any estimator working on that projection",
            "mean_spearman": float(np.mean([c["spearman"] for c in ceiling])) if ceiling else None,
            "rows": ceiling,
        },
        "bias": (previous["bias"] if only else
                 bias_table([2000] if quick else [2000, 10000], [0, 1] if quick else [0, 1, 2])),
        "rerun": ({"variants": list(only), "others_from": previous.get("created")} if only
                  else None),
    }


# --------------------------------------------------------------------------- report


def _fmt(v: float | None, spec: str = "+.2f") -> str:
    return "–" if v is None else format(v, spec)


def markdown(result: dict[str, Any]) -> str:
    """Tables of the result: Spearman/top-k per estimator and configuration, ceiling, bias."""
    rows = result["rows"]
    configs = sorted({(r["layout"], r["child_group"], r["n"]) for r in rows if r["model"] == "linear"},
                     key=lambda c: (int(c[0].split("x")[0]), c[1], c[2]))
    out = [
        f"Mean within-child Spearman correlation between estimated and true CMI (linear-Gaussian "
        f"layers, {len(result['grid']['seeds'])} seed(s); target for the default: ≥ {result['target_spearman']}). "
        f"Columns: parent groups × channels, child group size, N."
        + (f" Measured again on {result['created'][:10]} after a change to them: "
           f"{', '.join(result['rerun']['variants'])}; the other rows are from the run of "
           f"{str(result['rerun']['others_from'])[:10]}." if result.get("rerun") else ""),
        "",
        "| estimator | " + " | ".join(f"{a} c{b} N={n}" for a, b, n in configs) + " | mean | top-k | monotone data | time (s) |",
        "|---|" + "---|" * (len(configs) + 4),
    ]
    for label, s in result["summary"].items():
        cells = []
        for cfg in configs:
            sel = [r["spearman"] for r in rows if r["variant"] == label and r["model"] == "linear"
                   and (r["layout"], r["child_group"], r["n"]) == cfg]
            cells.append(_fmt(float(np.mean(sel))) if sel else "–")
        name = f"**{label}** (default)" if label == result["default_variant"] else label
        out.append(f"| {name} | " + " | ".join(cells)
                   + f" | {_fmt(s['spearman_linear'])} | {_fmt(s['topk_linear'], '.2f')}"
                   + f" | {_fmt(s['spearman_monotone'])} | {s['seconds']:.0f} |")
    if result.get("suites"):
        suites = list(result["suites"]["definitions"])
        out += [
            "",
            f"Further suites (mean within-child Spearman, {len(result['suites']['seeds'])} seed(s); "
            "knn and gmi not run): 'ranking bar' = linear-Gaussian, 12 parent groups × 4, child groups "
            "of 2, N = 3000; 'abs' = child = Σ s·|u| + noise over independent parents (groups of 1 or "
            "4 channels), 'mixed' = Σ (l·u + s·|u|) + noise; truth by 1-D numerical integration; N = 2000.",
            "",
            "| estimator | " + " | ".join(suites) + " | time (s) |",
            "|---|" + "---|" * (len(suites) + 1),
        ]
        for label, sm in result["summary"].items():
            if all(sm.get(f"spearman {x}") is None for x in suites):
                continue
            name = f"**{label}** (default)" if label == result["default_variant"] else label
            out.append(f"| {name} | " + " | ".join(_fmt(sm.get(f"spearman {x}")) for x in suites)
                       + f" | {sm.get('seconds_suites', 0.0):.1f} |")
        ht = result.get("hash_targets", {})
        if ht:
            out += ["", "Targets for `hash`: " + "; ".join(
                f"{k} ≥ {v['target']}: {_fmt(v['spearman'])} ({'met' if v['met'] else 'MISSED'})"
                for k, v in ht.items()) + "."]
    ceil = result["projection_ceiling"]
    out += [
        "",
        f"Projection ceiling (exact Gaussian CMI after EDGE's random projection, unlimited samples): "
        f"mean Spearman {_fmt(ceil['mean_spearman'])}. Top-k: overlap of the true and estimated top "
        f"G_p/4 parent groups. 'monotone data': same truth, channels passed through increasing maps "
        f"(N = 2000). Reduced grid: " + "; ".join(result["reduced_grid"]) + ".",
        "",
        "Bias of the MI estimators on bivariate Gaussians (mean over seeds; bits except GMI):",
        "",
        "| estimator | N | r | true | estimate | bias | sd |",
        "|---|---|---|---|---|---|---|",
    ]
    for b in result["bias"]:
        out.append(f"| {b['estimator']} | {b['n']} | {b['r']} | {b['true_bits'] + 0.0:.3f} | {b['estimate']:.3f} "
                   f"| {b['bias']:+.3f} | {b['sd']:.3f} |")
    return "\n".join(out) + "\n"


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="one seed, N = 2000 only (smoke test)")
    ap.add_argument("--variants", default=None,
                    help="comma list of variant labels (e.g. 'hash') to measure again after a "
                         "change to them; the others are kept from the recorded result")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    only = tuple(v.strip() for v in args.variants.split(",")) if args.variants else None
    previous = None
    if only:
        import json

        from benchmarks import RESULTS

        path = RESULTS / f"{NAME}.json"
        previous = json.loads(path.read_text()) if path.is_file() else None
    result = run(quick=args.quick, only=only, previous=previous)
    path = write_json(NAME, result)
    print(markdown(result))
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
