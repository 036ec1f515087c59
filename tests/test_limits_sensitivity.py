"""Limits (SPEC §4) and sensitivity (SPEC §5) on hand-made curves, weights and activations whose
right answer is worked out here: τ, UL, the relaxed fraction, the probes (`svm`, `linear`,
`ncm`, the switch to NCM above 100 classes), and the `auto` / `fraction` / `none` rules."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from torch import nn

from snacs.limits import (
    LimitResult,
    _make_probe,
    _pair_limit,
    connection_keep,
    filter_removed_groups,
    limit_at,
    rate_grid,
)
from snacs.pairs import LayerPair, find_topology
from snacs.plan import make_plan, relax_limits
from snacs.sensitivity import sensitivity

GRID = [r / 100 for r in range(1, 100, 5)]  # 1, 6, ..., 96 %


# --------------------------------------------------------------------------- τ and UL


def test_rate_grid_is_the_spec_grid() -> None:
    np.testing.assert_allclose(rate_grid(5), GRID)
    assert len(rate_grid(5)) == 20 and rate_grid(10)[-1] == pytest.approx(0.91)


@pytest.mark.parametrize(
    ("acc", "fraction", "tau", "ul_index"),
    [
        # max 90, min 40: τ = 90 - 0.7·50 = 55; the largest rate at or above 55 is index 5 (70),
        # although index 3 (50) is below it already: UL is the *largest* such rate.
        ([90, 89, 85, 50, 60, 70, 40], 0.7, 55.0, 5),
        # same curve, f = 0.3: τ = 90 - 15 = 75 -> index 2 (85)
        ([90, 89, 85, 50, 60, 70, 40], 0.3, 75.0, 2),
        # the maximum need not be at rate 0: max 80 (index 1), min 20: τ = 80 - 0.5·60 = 50
        ([70, 80, 50, 49, 20, 30, 20], 0.5, 50.0, 2),
        # a flat curve: τ = max, every rate qualifies -> the last one
        ([61, 61, 61, 61, 61, 61, 61], 0.7, 61.0, 6),
        # exactly at τ counts (60 - 0.5·20 = 50)
        ([60, 55, 50, 45, 40, 40, 40], 0.5, 50.0, 2),
    ],
)
def test_limit_at_hand_made_curves(acc, fraction, tau, ul_index) -> None:
    rates = GRID[: len(acc)]
    ul, t = limit_at(rates, acc, fraction)
    assert t == pytest.approx(tau)
    assert ul == rates[ul_index]


def test_connection_keep_cut_off_index() -> None:
    # 10 distinct scores 0..9 (shuffled): at rate p the cut-off is V[round(10 p)] and every
    # score <= it goes. p = 0.26 -> index 3 -> scores 0..3 go (4 cells); p = 0.96 -> index 10,
    # clamped to 9: all go (the plan, not this helper, keeps one per layer).
    rho = np.array([[3, 7, 1, 9, 0], [5, 2, 8, 4, 6]], dtype=float)
    assert (~connection_keep(rho, 0.26)).sum() == 4
    assert set(rho[~connection_keep(rho, 0.26)]) == {0, 1, 2, 3}
    assert (~connection_keep(rho, 0.01)).sum() == 1  # index 0: the smallest score
    assert connection_keep(rho, 0.0).all()
    # ties share one unique value: V = {1, 2, 5}; p = 0.4 -> index 1 -> 1 and 2 go
    tied = np.array([[1, 1, 2], [5, 5, 2]], dtype=float)
    assert (connection_keep(tied, 0.4) == (tied > 2)).all()


def test_filter_removed_groups_never_all_never_protected() -> None:
    imp = np.array([5.0, 1.0, 4.0, 2.0, 3.0])
    assert filter_removed_groups(imp, 0.4).tolist() == [1, 3]  # round(2.0) = 2 least important
    assert filter_removed_groups(imp, 0.5).tolist() == [1, 3]  # round(2.5) = 2 (banker's)
    assert filter_removed_groups(imp, 0.96).tolist() == [1, 2, 3, 4]  # at most G - 1
    assert filter_removed_groups(imp, 0.4, protected={1}).tolist() == [3, 4]


# --------------------------------------------------------------------------- probes


def _pair(n_parent: int = 4, n_child: int = 4) -> LayerPair:
    return LayerPair(name="c", child="c", group=0, n_parent=n_parent, n_child=n_child, kind="conv")


def _separable(n_classes: int, per_class: int, seed: int = 0, gap: float = 3.0):
    """Parent means: class information only in channel 0; channels 1..3 are noise."""
    rng = np.random.default_rng(seed)
    labels = np.repeat(np.arange(n_classes), per_class)
    a = rng.normal(0.0, 0.2, size=(len(labels), 4))
    a[:, 0] += gap * labels + 1.0
    return torch.tensor(a, dtype=torch.float32), labels


@pytest.mark.parametrize(("probe", "kind"), [("svm", "SVC"), ("linear", "LogisticRegression"),
                                             ("ncm", "NearestCentroid")])
@pytest.mark.parametrize("granularity", ["filter", "connection"])
def test_probe_limit_on_a_pair_whose_answer_is_known(probe, kind, granularity) -> None:
    # Four 1x1 "identity" child filters over four parent channels; the class lives in channel 0
    # alone. Filter granularity, ρ making channel 0 the *least* important: round(4 p) groups go,
    # none at 1, 6, 11 %, channel 0 from 16 % on -> chance from there, UL = 11 %.
    # Connection granularity, ρ = 1 on filter 0's connection to channel 0 and 5 elsewhere
    # (V = {1, 5}): the cut-off index round(2 p) is 0 up to 25 % (that one connection goes) and
    # 1 above (everything goes), so filter 0 never sees channel 0 on the grid: the curve is flat
    # at chance, τ = max and UL = 96 % (the unpruned accuracy is not on the curve, SPEC §4).
    a_p, labels = _separable(2, 40)
    w = torch.eye(4)[:, :, None, None]
    if granularity == "filter":
        rho = np.tile([[0.1, 1.0, 2.0, 3.0]], (4, 1))
        expect_ul = 0.11
    else:
        rho = np.full((4, 4), 5.0)
        rho[0, 0] = 1.0
        expect_ul = 0.96
    res = _pair_limit(_pair(), rho, a_p, w, None, labels, granularity=granularity,
                      rates=np.array(GRID), fraction=0.7, probe=probe, seed=0)
    assert res.probe == kind
    acc = np.array(res.accuracy)
    if granularity == "filter":
        assert (acc[:3] == 100.0).all()  # channel 0 kept: separable
        assert (acc[3:] <= 60.0).all()  # channel 0 gone: chance for two balanced classes
    else:
        assert np.ptp(acc) == 0.0
    assert res.threshold == pytest.approx(acc.max() - 0.7 * (acc.max() - acc.min()))
    assert res.limit == pytest.approx(expect_ul)


def test_probe_switches_to_nearest_centroid_above_100_classes() -> None:
    from sklearn.neighbors import NearestCentroid
    from sklearn.svm import SVC

    assert isinstance(_make_probe("svm", 100, 0), SVC)
    assert isinstance(_make_probe("svm", 101, 0), NearestCentroid)
    assert type(_make_probe("linear", 101, 0)).__name__ == "LogisticRegression"  # asked for
    a_p, labels = _separable(101, 4, gap=1.0)
    rho = np.tile([[0.1, 1.0, 2.0, 3.0]], (4, 1))
    res = _pair_limit(_pair(), rho, a_p, torch.eye(4)[:, :, None, None], None, labels,
                      granularity="filter", rates=np.array(GRID), fraction=0.7, probe="svm",
                      seed=0)
    assert res.probe == "NearestCentroid"
    acc = np.array(res.accuracy)
    assert acc[0] >= 95.0 and acc[-1] <= 5.0  # 101 classes told apart by channel 0, then not
    assert res.limit == pytest.approx(0.11)


# --------------------------------------------------------------------------- relaxed fraction


def _tiny():
    class Tiny(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.c1 = nn.Conv2d(3, 8, 3, padding=1)
            self.c2 = nn.Conv2d(8, 8, 3, padding=1)
            self.fc = nn.Linear(8, 10)

        def forward(self, x):
            x = torch.relu(self.c2(torch.relu(self.c1(x))))
            return self.fc(x.mean((2, 3)))

    torch.manual_seed(0)
    return Tiny().eval()


def test_relaxed_fraction_is_the_smallest_that_reaches_the_target() -> None:
    # Every pair has the curve acc_k = 100 - 5k on the 20-rate grid: τ(f) = 100 - 95 f and
    # UL(f) = rate[floor(19 f)]. So the relaxed fraction is k*/19 (up to the bisection's 1e-3)
    # with k* the first grid index whose limits reach the target.
    model = _tiny()
    topo = find_topology(model, (3, 8, 8))
    rng = np.random.default_rng(0)
    scores = {p.name: rng.uniform(0.1, 1.0, size=(p.n_child, p.n_parent)) for p in topo.pairs}
    curves = {p.name: LimitResult(pair=p.name, limit=0.0, rates=GRID,
                                  accuracy=[100.0 - 5 * k for k in range(20)], threshold=0.0,
                                  probe="SVC") for p in topo.pairs}
    sens = sensitivity(model, topo, groups=8, rule="none")

    def reach(k: int) -> float:
        lim = {n: GRID[k] for n in curves}
        return make_plan(model, topo, scores, lim, sens, mode="global", q=1.0,
                         groups=8).predicted["weights_removed"]

    reaches = [reach(k) for k in range(20)]
    assert all(b >= a for a, b in zip(reaches, reaches[1:], strict=False))
    k_star = next(k for k in range(8, 20) if reaches[k] > reaches[k - 1])  # a step in reach
    target = (reaches[k_star - 1] + reaches[k_star]) / 2
    f, lim = relax_limits(model, topo, scores, curves, sens, target=target, fraction=0.3,
                          groups=8)
    assert k_star / 19 <= f <= k_star / 19 + 1e-3
    assert lim == {n: GRID[k_star] for n in curves}
    # a target already within the limits at f = 0.3 (k = floor(5.7) = 5) leaves f alone
    f2, lim2 = relax_limits(model, topo, scores, curves, sens, target=reaches[5], fraction=0.3,
                            groups=8)
    assert f2 == 0.3 and lim2 == {n: GRID[5] for n in curves}


# --------------------------------------------------------------------------- sensitivity


class Reader(nn.Module):
    """c1 makes 8 channels; c2 (4 filters) and fc2 (through a 2x2 flatten) both read them."""

    def __init__(self) -> None:
        super().__init__()
        self.c1 = nn.Conv2d(3, 8, 1)
        self.c2 = nn.Conv2d(8, 4, 1)
        self.pool = nn.AdaptiveAvgPool2d(2)
        self.fc1 = nn.Linear(4 * 4, 6)
        self.fc2 = nn.Linear(6, 10)

    def forward(self, x):
        x = torch.relu(self.c2(torch.relu(self.c1(x))))
        return self.fc2(torch.relu(self.fc1(self.pool(x).flatten(1))))


def _reader(col: np.ndarray) -> tuple[nn.Module, object]:
    """c2's |weights| per input channel c are col[c] (all four filters alike, sign alternating)."""
    model = Reader().eval()
    with torch.no_grad():
        w = torch.tensor(col, dtype=torch.float32)[None, :].repeat(4, 1)
        w[1::2] *= -1  # |W| counts, not W
        model.c2.weight.copy_(w[:, :, None, None])
    topo = find_topology(model, (3, 8, 8))
    return model, topo


def test_sensitivity_auto_rule_by_hand() -> None:
    # shares R = col / sum(col) in every filter; s = R. col = [1]*7 + [8]: s = 1/15 (x7), 8/15.
    # mean 1/8, std = sqrt((7 (1/15 - 1/8)^2 + (8/15 - 1/8)^2) / 8) = 0.1543:
    # k = 2: 0.125 + 0.309 = 0.434 < 0.533 -> channel 7 protected; k = 3: 0.588 > 0.533 -> none.
    model, topo = _reader(np.array([1.0] * 7 + [8.0]))
    gid = topo.group_of_producer("c1").id
    s = sensitivity(model, topo, groups=8, rule="auto", k=2.0)[gid]
    np.testing.assert_allclose(s.scores, [1 / 15] * 7 + [8 / 15], rtol=1e-6)
    std = math.sqrt((7 * (1 / 15 - 1 / 8) ** 2 + (8 / 15 - 1 / 8) ** 2) / 8)
    assert std == pytest.approx(0.1543, abs=1e-4)
    assert s.protected == [7]
    assert sensitivity(model, topo, groups=8, rule="auto", k=3.0)[gid].protected == []
    assert sensitivity(model, topo, groups=8, rule="none")[gid].protected == []
    # groups of two channels: s_j sums its channels' shares -> [2, 2, 2, 9] / 15
    s4 = sensitivity(model, topo, groups=4, rule="auto", k=1.5)[gid]
    np.testing.assert_allclose(s4.scores, np.array([2, 2, 2, 9]) / 15, rtol=1e-6)
    # mean 0.25, std = sqrt((3 (2/15 - 1/4)^2 + (9/15 - 1/4)^2) / 4) = 0.202; 0.25 + 1.5·0.202
    # = 0.553 < 0.6 -> group 3 protected
    assert s4.protected == [3]


def test_sensitivity_fraction_rule_and_two_readers() -> None:
    col = np.array([3.0, 1.0, 6.0, 2.0, 5.0, 4.0, 8.0, 7.0])
    model, topo = _reader(col)
    gid = topo.group_of_producer("c1").id
    # fraction: the top ceil(f G) groups by share: ceil(0.25·8) = 2 -> channels 6 (8) and 7 (7)
    assert sensitivity(model, topo, groups=8, rule="fraction", fraction=0.25)[gid].protected == [6, 7]
    # ceil(0.3·8) = 3 -> also channel 2 (6)
    assert sensitivity(model, topo, groups=8, rule="fraction", fraction=0.3)[gid].protected == [2, 6, 7]
    # fc1 reads c2's 4 channels through a 2 x 2 flatten: 4 columns per channel, summed.
    with torch.no_grad():
        w = torch.zeros(6, 16)
        w[:, 0:4] = torch.tensor([2.0, 1.0, 0.5, 0.5])     # channel 0: |.| sums to 4 per row
        w[:, 4:8] = torch.tensor([-1.0, -0.5, 0.5, 0.0])   # channel 1: 2
        w[:, 8:12] = torch.tensor([0.1, 0.4, -0.2, 0.3])   # channel 2: 1
        w[:, 12:16] = torch.tensor([1.0, 3.0, 2.0, -2.0])  # channel 3: 8
        model.fc1.weight.copy_(w)
    g2 = topo.group_of_producer("c2").id
    s = sensitivity(model, topo, groups=4, rule="fraction", fraction=0.25)[g2]
    np.testing.assert_allclose(s.scores, np.array([4, 2, 1, 8]) / 15, rtol=1e-6)
    assert s.protected == [3]


def test_protect_fraction_reaches_the_plan() -> None:
    """SNACS(sensitivity="fraction", protect_fraction=f) protects ceil(f G) groups per channel
    group, and a filter plan never removes them even when their scores are the lowest."""
    from snacs.pruner import SNACS
    from snacs.scores import n_groups

    model = _tiny()
    data = (torch.randn(40, 3, 8, 8, generator=torch.Generator().manual_seed(0)),
            torch.arange(40) % 4)
    p = SNACS(estimator="gaussian", groups=8, limits=0.9, sensitivity="fraction",
              protect_fraction=0.25).fit(model, data)
    for gid, prot in p.protected_.items():
        g = n_groups(p.topology_.groups[gid].channels, 8)
        assert len(prot) == math.ceil(0.25 * g)
    # scores that make the protected groups the least important: still kept
    scores = {k: v.copy() for k, v in p.scores_.items()}
    for pair in p.topology_.pairs:
        prot = p.protected_.get(pair.group, [])
        scores[pair.name][:, prot] = 0.0
    plan = make_plan(model, p.topology_, scores, p.limits_, p.sensitivity_, groups=8)
    assert plan.remove
    for gid, idx in plan.remove.items():
        assert not set(idx) & set(p.protected_[gid])
        # cap round(0.9·8) = 7 (never all 8), and only the unprotected groups are candidates
        assert len(idx) == min(7, 8 - len(p.protected_[gid]))
