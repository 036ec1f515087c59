"""The SNACS pipeline end to end on tiny models and data: pairs, plan, apply, export, modes."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch
from torch import nn

import snacs
from snacs.apply import export_slim
from snacs.errors import ConfigError, TargetError
from snacs.metrics import conv_linear_weights, count_macs, count_parameters
from snacs.models import create_model
from snacs.pairs import find_topology
from snacs.pruner import SNACS, prune

FAST = dict(estimator="gaussian", samples_per_class=10, groups=8, grid_step=10)


def _x(shape=(3, 32, 32), n=4, seed=0):
    return torch.randn(n, *shape, generator=torch.Generator().manual_seed(seed))


from nets import TinyResidual  # noqa: E402  (shared test network)


def test_pairs_custom_network():
    topo = find_topology(TinyResidual().eval(), (3, 32, 32))
    names = {p.child: p for p in topo.pairs}
    assert set(names) == {"a", "b", "fc1", "fc2"}  # every consumer of a weight layer, once
    assert names["fc1"].spatial == 4 and names["fc1"].n_parent == 8
    assert names["fc2"].is_classifier and topo.classifier == "fc2"
    stream = topo.groups[names["a"].group]
    assert sorted(stream.producers) == ["b", "stem"]  # residual addition couples them
    assert sorted(stream.consumers) == ["a", "fc1"]


@pytest.mark.parametrize("name", ["simplecnn", "vgg16", "resnet20", "mobilenetv2",
                                  pytest.param("resnet50", marks=pytest.mark.slow)])
@pytest.mark.parametrize("granularity", ["filter", "connection"])
def test_every_registry_model_prunes(name, granularity):
    from snacs.data import synthetic

    shape = (3, 64, 64) if name == "resnet50" else (3, 32, 32)
    data = synthetic("train", n_per_class=12, shape=shape, seed=1)
    width = 1.0 if name == "simplecnn" else 0.25
    torch.manual_seed(0)
    model = create_model(name, width=width).eval()
    # connection pruning only slims a channel that every reader drops: prune hard enough
    opts = {"samples_per_class": 6, "limits": 0.5} if granularity == "filter" else \
        {"samples_per_class": 6, "limits": "none", "mode": "global", "q": 0.9}
    pruned, res = prune(model, data, granularity=granularity, measure_latency=False,
                        **(FAST | opts))
    x = _x(shape)
    out = pruned(x)
    assert out.shape == (4, 10)
    out.sum().backward()  # still trainable
    assert res.weights_after < res.weights_before
    slim = export_slim(pruned, shape) if granularity == "connection" else pruned
    assert count_parameters(slim) < count_parameters(model)
    assert count_macs(slim, shape) < count_macs(model, shape)
    # the input model is untouched
    assert conv_linear_weights(model) == res.weights_before


@pytest.mark.parametrize("name", ["simplecnn", "vgg16", "resnet20", "mobilenetv2"])
def test_connection_masks_equal_slim_export(name, synth):
    model = create_model(name, width=1.0 if name == "simplecnn" else 0.25).eval()
    # non-trivial BN statistics so dead-filter handling matters
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.running_mean.uniform_(-0.5, 0.5)
                m.bias.uniform_(-0.2, 0.2)
    pruned, _ = prune(model, synth, granularity="connection", measure_latency=False,
                      **(FAST | {"limits": "none", "mode": "global", "q": 0.7}))
    slim = export_slim(pruned, (3, 32, 32)).eval()
    pruned.eval()
    x = _x()
    with torch.no_grad():
        diff = (slim(x) - pruned(x)).abs().max().item()
    assert diff <= 1e-5
    assert count_parameters(slim) < count_parameters(model)


def test_masked_weights_stay_zero_under_sgd_with_weight_decay(synth):
    model = create_model("simplecnn").eval()
    pruned, _ = prune(model, synth, granularity="connection", measure_latency=False,
                      **(FAST | {"limits": 0.6}))
    zero = {n: (m.weight == 0).clone() for n, m in pruned.named_modules()
            if isinstance(m, (nn.Conv2d, nn.Linear))}
    assert sum(int(z.sum()) for z in zero.values()) > 0
    opt = torch.optim.SGD(pruned.parameters(), lr=0.5, momentum=0.9, weight_decay=1e-2)
    pruned.train()
    for _ in range(3):
        opt.zero_grad()
        nn.functional.cross_entropy(pruned(_x(n=8)), torch.arange(8) % 10).backward()
        opt.step()
    for n, m in pruned.named_modules():
        if n in zero:
            assert (m.weight[zero[n]] == 0).all(), n


def test_same_seed_same_plan_and_resume_from_cache(tmp_path, synth, monkeypatch):
    model = create_model("simplecnn").eval()
    a = SNACS(**FAST, cache_dir=str(tmp_path / "c")).fit(model, synth)
    b = SNACS(**FAST).fit(model, synth)
    assert a.plan_.checksum() == b.plan_.checksum()
    for k in a.scores_:
        np.testing.assert_array_equal(a.scores_[k], b.scores_[k])
    # a run killed halfway: only part of the cache exists; the rerun fills the rest
    files = sorted((tmp_path / "c").glob("*.npy"))
    assert len(files) == len(a.pairs_)
    files[0].unlink()
    import snacs.scores as scores_mod

    calls = []
    real = scores_mod._score_one
    monkeypatch.setattr(scores_mod, "_score_one", lambda job: calls.append(job[0]) or real(job))
    c = SNACS(**FAST, cache_dir=str(tmp_path / "c")).fit(model, synth)
    assert len(calls) == 1
    assert c.plan_.checksum() == a.plan_.checksum()


def test_target_mode_meets_params_and_macs(synth):
    model = create_model("vgg16", width=0.25).eval()
    for metric in ("params", "macs"):
        pruned, res = prune(model, synth, target=0.5, target_metric=metric,
                            measure_latency=False, **(FAST | {"limits": "none"}))
        if metric == "params":
            assert res.weights_pruned_pct >= 50.0
            assert res.weights_pruned_pct < 65.0  # the bisection stops near the target
        else:
            assert 1 - res.macs_after / res.macs_before >= 0.5
        assert pruned.snacs_pruner.plan_.predicted["weights_after"] == conv_linear_weights(pruned) \
            or metric == "macs"


def test_target_beyond_limits_is_a_clear_error(synth):
    model = create_model("simplecnn").eval()
    with pytest.raises(TargetError, match="beyond what the per-layer limits allow"):
        SNACS(**(FAST | {"limits": 0.1}), target=0.9).fit(model, synth)
    with pytest.raises(TargetError, match="between 0 and 1"):
        SNACS(target=1.5).fit(model, synth)


def test_global_mode_monotone_in_q(synth):
    model = create_model("simplecnn").eval()
    base = SNACS(**FAST, mode="global", q=0.0).fit(model, synth)
    removed = []
    from snacs.plan import make_plan

    for q in (0.0, 0.3, 0.6, 0.9):
        plan = make_plan(model, base.topology_, base.scores_, base.limits_, base.sensitivity_,
                         mode="global", q=q, groups=8)
        removed.append(plan.predicted["weights_removed"])
    assert removed[0] == 0.0
    assert all(b >= a for a, b in zip(removed, removed[1:], strict=False))
    assert removed[-1] > 0


def test_filter_plan_respects_limits_and_protection(synth):
    model = create_model("vgg16", width=0.25).eval()
    p = SNACS(**FAST).fit(model, synth)
    from snacs.limits import group_index
    from snacs.scores import n_groups

    for gid, idx in p.plan_.remove.items():
        cg = p.topology_.groups[gid]
        g = n_groups(cg.channels, 8)
        gi = group_index(cg.channels, g)
        removed_groups = set(gi[idx].tolist())
        assert not removed_groups & set(p.protected_[gid])
        limit = min(p.limits_[q.name] for q in p.topology_.pairs if q.group == gid)
        assert len(removed_groups) <= round(limit * g)
        assert len(removed_groups) < g


def test_accounting_reproduces_mint_vgg16():
    """SPEC §8: MINT's per-layer VGG16 compression weighted by layer sizes gives 83.46 %."""
    model = create_model("vgg16")
    layers = [m for m in model.modules() if isinstance(m, (nn.Conv2d, nn.Linear))]
    mint = [0, 0, 0, 0, 67.08, 51.80, 58.39, 61.18, 89.91, 93.72, 92.04, 86.25, 91.01, 93.28, 0]
    assert len(layers) == len(mint)
    # zero out exactly that share of each layer's weights, then count like the result does
    with torch.no_grad():
        for m, pct in zip(layers, mint, strict=False):
            w = m.weight.view(-1)
            w.fill_(1.0)
            w[: int(round(w.numel() * pct / 100))] = 0
    from snacs.metrics import nonzero_conv_linear_weights

    pruned_pct = 100 * (1 - nonzero_conv_linear_weights(model) / conv_linear_weights(model))
    assert round(pruned_pct, 2) == 83.46


def test_sensitivity_protects_the_strongest_contributor():
    from snacs.sensitivity import sensitivity

    model = create_model("simplecnn").eval()
    topo = find_topology(model, (3, 32, 32))
    cls = dict(model.named_modules())["classifier"]
    with torch.no_grad():
        cls.weight.mul_(0.01)
        cls.weight[:, 5] = 10.0  # channel 5 dominates every reader
    s = sensitivity(model, topo, groups=64)
    gid = topo.group_of_producer("features.8").id
    assert s[gid].protected == [5]
    assert max(range(len(s[gid].scores)), key=s[gid].scores.__getitem__) == 5
    assert sensitivity(model, topo, rule="none")[gid].protected == []


def test_limits_curve_and_threshold(synth):
    p = SNACS(**FAST).fit(create_model("simplecnn").eval(), synth)
    for _name, cur in p.limit_curves_.items():
        acc = np.array(cur.accuracy)
        assert cur.threshold == pytest.approx(acc.max() - 0.7 * (acc.max() - acc.min()))
        i = cur.rates.index(cur.limit)
        assert acc[i] >= cur.threshold - 1e-9
        assert all(a < cur.threshold for a in acc[i + 1:])


def test_options_validated_before_work(synth):
    model = create_model("simplecnn")
    with pytest.raises(ConfigError, match="granularity"):
        SNACS(granularity="channel").fit(model, synth)
    with pytest.raises(ConfigError, match="estimator"):
        SNACS(estimator="mine").fit(model, synth)
    with pytest.raises(ConfigError, match="unknown SNACS option"):
        SNACS().set_params(group=3)


def test_sklearn_contract(synth):
    est = SNACS(groups=4, seed=3)
    assert est.get_params()["groups"] == 4 and not hasattr(est, "plan_")
    assert SNACS(**est.get_params()).get_params() == est.get_params()
    fitted = SNACS(**FAST).fit(create_model("simplecnn").eval(), synth)
    for attr in ("pairs_", "scores_", "limits_", "protected_", "plan_"):
        assert hasattr(fitted, attr)


def test_result_serialises_and_model_reloads(tmp_path, synth):
    model = create_model("vgg16", width=0.25).eval()
    pruned, res = prune(model, synth, measure_latency=False, **FAST)
    res.save(tmp_path / "r.json")
    import json

    back = json.loads((tmp_path / "r.json").read_text())
    assert back["weights_after"] == res.weights_after and back["layers"]
    snacs.save(pruned, tmp_path / "m.pt")
    again = snacs.load(tmp_path / "m.pt")
    x = _x()
    pruned.eval()
    with torch.no_grad():
        assert torch.allclose(again(x), pruned(x), atol=1e-6)
    assert copy.deepcopy(again) is not None


def test_bn_statistics_recalibrated_after_pruning(synth):
    model = create_model("simplecnn").eval()
    p = SNACS(**(FAST | {"limits": 0.6})).fit(model, synth)
    pruned = p.apply(model)
    conv, bn = pruned.features[4], pruned.features[5]
    assert isinstance(bn, nn.BatchNorm2d) and conv.out_channels == bn.num_features
    feats = []
    h = conv.register_forward_hook(lambda m, i, o: feats.append(o))
    with torch.no_grad():
        for x, _ in p._calibration_batches:
            pruned.eval()
            pruned(x)
    h.remove()
    f = torch.cat(feats)
    torch.testing.assert_close(bn.running_mean, f.mean((0, 2, 3)), atol=1e-4, rtol=1e-4)
    raw = SNACS(**(FAST | {"limits": 0.6}), recalibrate_bn=False).fit(model, synth).apply(model)
    assert not torch.allclose(raw.features[5].running_mean, bn.running_mean)


def test_relax_limits_reaches_a_target_above_the_limits(synth):
    from snacs.limits import limit_at

    model = create_model("vgg16", width=0.25).eval()
    base = SNACS(**FAST).fit(model, synth)  # mode ul: every layer to its limit
    reach = base.plan_.predicted["weights_removed"]
    target = min(reach + 0.15, 0.9)
    with pytest.raises(TargetError, match="--relax-limits"):
        SNACS(**FAST, target=target).fit(model, synth)
    p = SNACS(**FAST, target=target, relax_limits=True).fit(model, synth)
    assert p.plan_.predicted["weights_removed"] >= target
    assert 0.7 < p.limit_fraction_ <= 1.0
    for name, curve in p.limit_curves_.items():
        # the limits used are the probe curves read at the relaxed fraction, never below ul's
        assert p.limits_[name] == limit_at(curve.rates, curve.accuracy, p.limit_fraction_)[0]
        assert p.limits_[name] >= base.limits_[name]
    # the smallest such fraction: a little less does not reach the target
    from snacs.plan import make_plan

    lower = {k: limit_at(c.rates, c.accuracy, p.limit_fraction_ - 2e-3)[0]
             for k, c in p.limit_curves_.items()}
    plan = make_plan(model, p.topology_, p.scores_, lower, p.sensitivity_, mode="global", q=1.0,
                     groups=8)
    assert plan.predicted["weights_removed"] < target
    # a target within the limits leaves the fraction alone
    q = SNACS(**FAST, target=reach / 2, relax_limits=True).fit(model, synth)
    assert q.limit_fraction_ == 0.7 and q.limits_ == base.limits_
    with pytest.raises(ConfigError, match="relax_limits"):
        SNACS(**FAST, target=0.5, relax_limits=True, limits=0.5).fit(model, synth)
