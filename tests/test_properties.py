"""Property-based tests (hypothesis): estimators on any finite input, plans under any limits.

Inputs are drawn as a shape (N 5..200, dimensions 1..12) and a recipe (scale over twelve orders of
magnitude, continuous / heavily tied / heavy-tailed values, constant and duplicated columns,
dependence between X, Y and Z) that numpy turns into arrays: hypothesis explores the recipes and
shrinks a failure to the smallest one, without generating thousands of floats one by one.
"""

from __future__ import annotations

import functools

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from snacs.estimators import ESTIMATORS, acmi_matrix, edge_cmi, gaussian_cmi, knn_cmi

SETTINGS = settings(max_examples=30, deadline=None, derandomize=True,
                    suppress_health_check=[HealthCheck.too_slow])


@st.composite
def recipes(draw, max_dim: int = 12):
    n = draw(st.integers(5, 200))
    dx, dy = draw(st.integers(1, max_dim)), draw(st.integers(1, max_dim))
    dz = draw(st.integers(0, max_dim))
    return {
        "n": n, "dims": (dx, dy, dz),
        "seed": draw(st.integers(0, 2**31 - 1)),
        "scale": 10.0 ** draw(st.integers(-6, 6)),
        "kind": draw(st.sampled_from(["normal", "ties", "heavy", "binary"])),
        "constant": draw(st.lists(st.integers(0, 3 * max_dim - 1), max_size=4)),
        "duplicate": draw(st.lists(st.tuples(st.integers(0, 3 * max_dim - 1),
                                             st.integers(0, 3 * max_dim - 1)), max_size=4)),
        "coupling": draw(st.sampled_from([0.0, 0.5, 1.0])),
    }


def make_xyz(r) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    rng = np.random.default_rng(r["seed"])
    n, (dx, dy, dz) = r["n"], r["dims"]
    d = dx + dy + dz
    if r["kind"] == "normal":
        a = rng.standard_normal((n, d))
    elif r["kind"] == "ties":
        a = rng.integers(0, 3, (n, d)).astype(float)
    elif r["kind"] == "heavy":
        a = rng.standard_cauchy((n, d))
    else:
        a = (rng.random((n, d)) < 0.1).astype(float)
    # X depends on Y and Z (a sum of their columns), so dependence is present too
    a[:, :dx] += r["coupling"] * a[:, dx:].sum(1, keepdims=True)
    for c in r["constant"]:
        a[:, c % d] = 3.0
    for i, j in r["duplicate"]:
        a[:, i % d] = a[:, j % d]
    a *= r["scale"]
    assert np.isfinite(a).all()
    x, y, z = a[:, :dx], a[:, dx:dx + dy], a[:, dx + dy:]
    return x, y, (z if dz else None)


def _ok(v: float) -> None:
    assert np.isfinite(v) and v >= 0.0, v


@SETTINGS
@given(recipes())
def test_edge_cmi_finite_non_negative(r):
    x, y, z = make_xyz(r)
    _ok(edge_cmi(x, y, z, seed=1))
    _ok(edge_cmi(x, y, z, seed=1, faithful=True))


@SETTINGS
@given(recipes())
def test_gaussian_cmi_finite_non_negative(r):
    x, y, z = make_xyz(r)
    _ok(gaussian_cmi(x, y, z))
    _ok(gaussian_cmi(x, y, z, copula=True))


@SETTINGS
@given(recipes())
def test_knn_cmi_finite(r):
    """KSG is documented as unclamped (noise around 0 can be negative): finite is the property;
    the clamped matrix used for scores is checked non-negative below."""
    x, y, z = make_xyz(r)
    assert np.isfinite(knn_cmi(x, y, z, k=min(5, r["n"] - 1)))


@SETTINGS
@given(recipes(), st.sampled_from(ESTIMATORS), st.sampled_from(["weight", "weight_sq",
                                                                  "exp_weight", "none"]),
       st.data())
def test_acmi_matrix_finite_non_negative(r, estimator, phi, data):
    x, y, z = make_xyz(r)
    parents = y if z is None else np.hstack([y, z])
    n_c, n_p = x.shape[1], parents.shape[1]
    gp, gc = data.draw(st.integers(1, n_p)), data.draw(st.integers(1, n_c))
    w = np.random.default_rng(r["seed"]).standard_normal((n_c, n_p, 3, 3))
    opts = {"k": min(5, r["n"] - 1)} if estimator == "knn" else {}
    rho = acmi_matrix(parents, x, w, gp, gc, phi=phi, estimator=estimator, seed=2, **opts)
    assert rho.shape == (gc, gp)
    assert np.isfinite(rho).all() and (rho >= 0).all()


@pytest.mark.parametrize("estimator", ESTIMATORS)
def test_all_constant_and_all_duplicated_inputs(estimator):
    n = 40
    const = np.full((n, 4), 2.0)
    col = np.random.default_rng(0).standard_normal((n, 1))
    dup = np.repeat(col, 4, axis=1)
    opts = {"k": 5} if estimator == "knn" else {}
    for parents, child in ((const, const), (dup, dup), (dup, const), (const, dup)):
        rho = acmi_matrix(parents, child, np.ones((4, 4)), 2, 2, estimator=estimator, **opts)
        assert np.isfinite(rho).all() and (rho >= 0).all()


# --------------------------------------------------------------------------- plans

@functools.cache
def fitted(name: str):
    """A fitted SNACS (fast settings) whose topology and score shapes the plans reuse."""
    from snacs.data import synthetic
    from snacs.models import create_model
    from snacs.pruner import SNACS

    model = create_model(name, width=1.0 if name == "simplecnn" else 0.25).eval()
    data = synthetic("train", n_per_class=6, seed=0)
    p = SNACS(estimator="gaussian", samples_per_class=5, groups=4, limits="none").fit(model, data)
    return model, p


@settings(max_examples=25, deadline=None, derandomize=True,
          suppress_health_check=[HealthCheck.too_slow])
@given(st.sampled_from(["simplecnn", "resnet20"]), st.sampled_from(["filter", "connection"]),
       st.sampled_from(["ul", "global"]), st.floats(0.0, 1.0), st.integers(0, 2**31 - 1),
       st.sampled_from([0.0, 0.5, 1.0]))
def test_plan_respects_limits_and_protection(name, granularity, mode, q, seed, tie_share):
    """Random scores (with ties), limits and protected sets: the plan never removes a protected
    group, never more than the limit allows, never a whole layer."""
    from snacs.limits import group_index
    from snacs.plan import make_plan
    from snacs.scores import n_groups
    from snacs.sensitivity import GroupSensitivity

    model, p = fitted(name)
    topo = p.topology_
    rng = np.random.default_rng(seed)
    scores = {}
    for k, s in p.scores_.items():
        v = rng.random(s.shape)
        if tie_share:  # round a share of the scores to a few values: ties
            m = rng.random(s.shape) < tie_share
            v[m] = np.round(v[m], 1)
        scores[k] = v
    limits = {pair.name: float(rng.choice([0.0, rng.random() * 0.99, 0.99]))
              for pair in topo.pairs}
    sens = {}
    for cg in topo.groups:
        g = n_groups(cg.channels, 4)
        prot = sorted(int(i) for i in np.nonzero(rng.random(g) < 0.3)[0])
        sens[cg.id] = GroupSensitivity(group=cg.id, scores=[0.0] * g, protected=prot)
    plan = make_plan(model, topo, scores, limits, sens, granularity=granularity, mode=mode,
                     q=q if mode == "global" else None, groups=4)
    assert 0.0 <= plan.predicted["weights_removed"] < 1.0
    if granularity == "filter":
        for gid, idx in plan.remove.items():
            cg = topo.groups[gid]
            g = n_groups(cg.channels, 4)
            removed = set(group_index(cg.channels, g)[idx].tolist())
            assert not removed & set(sens[gid].protected)
            limit = min(limits[pr.name] for pr in topo.pairs if pr.group == gid)
            assert len(removed) <= round(limit * g) and len(removed) < g
            # whole groups only
            assert len(idx) == int(np.isin(group_index(cg.channels, g), list(removed)).sum())
    else:
        for pair in topo.pairs:
            keep = np.asarray(plan.keep[pair.name], dtype=bool)
            rho = scores[pair.name]
            v = np.unique(rho)
            if limits[pair.name] <= 0:
                assert keep.all()
                continue
            cut = v[min(int(round(limits[pair.name] * len(v))), len(v) - 1)]
            assert (rho[~keep] <= cut).all()  # nothing above the limit's cut-off is removed
            if pair.is_classifier:
                assert keep.all()  # the classes have no next layer: protected
            else:
                cg = topo.group_of_producer(pair.child)
                if cg is not None:
                    assert keep[sens[cg.id].protected, :].all()
