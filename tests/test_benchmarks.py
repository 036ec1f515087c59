"""The comparison harness: every baseline meets a budget with a valid removal; the report renders
from a small fake results directory."""

from __future__ import annotations

import copy
import json
import sys
from pathlib import Path
from unittest import mock

import pytest
import torch

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:  # `pytest` (not `python -m pytest`) does not put the root on the path
    sys.path.insert(0, str(ROOT))

from benchmarks import baselines as B  # noqa: E402

SHAPE = (3, 16, 16)


@pytest.fixture(scope="module")
def tiny():
    import snacs
    from snacs.data import synthetic
    from snacs.pairs import find_topology

    torch.manual_seed(0)
    model = snacs.create_model("simplecnn").eval()
    data = synthetic("train", n_per_class=12, shape=SHAPE, seed=0)
    return model, find_topology(model, SHAPE), data


def _check_valid(model, topo, remove):
    groups = set(B.prunable_groups(topo))
    for gid, idx in remove.items():
        assert gid in groups
        n = topo.groups[gid].channels
        assert len(set(idx)) == len(idx) and all(0 <= i < n for i in idx)
        assert len(idx) <= n - 1  # at least one channel stays


@pytest.mark.parametrize("method", ["l1", "random", "tp-magnitude", "tp-taylor"])
@pytest.mark.parametrize("metric", ["params", "macs"])
def test_importance_baselines_meet_budget(tiny, method, metric):
    from snacs.apply import remove_channels
    from snacs.metrics import conv_linear_weights, count_macs

    model, topo, data = tiny
    sel = B.select(method, model, topo, data, target=0.6, metric=metric, seed=0)
    _check_valid(model, topo, sel.remove)
    key = "weights_removed" if metric == "params" else "macs_removed"
    assert 0.6 <= sel.predicted[key] < 0.63  # met, and not overshot by more than a few channels
    pruned = copy.deepcopy(model)
    remove_channels(pruned, topo, sel.remove)
    assert conv_linear_weights(pruned) == sel.predicted["weights_after"]
    assert count_macs(pruned, SHAPE) == sel.predicted["macs_after"]
    assert pruned(torch.zeros(2, *SHAPE)).shape == (2, 10)


def test_snacs_and_mint_selections(tiny):
    model, topo, data = tiny
    state = B.score_method("snacs", model, topo, data, seed=0,
                           snacs_params={"samples_per_class": 12, "limits": "none"})
    for metric in ("params", "macs"):
        remove, pred = B.select_from_state("snacs", state, model, topo, target=0.5, metric=metric)
        _check_valid(model, topo, remove)
        key = "weights_removed" if metric == "params" else "macs_removed"
        assert pred[key] >= 0.5
    remove, _ = B.select_from_state("snacs-ul", state, model, topo, target=None)
    _check_valid(model, topo, remove)
    remove, pred = B.select_from_state("snacs-nolimits", state, model, topo, target=0.8)
    _check_valid(model, topo, remove)
    assert pred["weights_removed"] >= 0.8
    # the re-plan equals a fresh fit at that target
    from snacs import SNACS

    fresh = SNACS(mode="target", target=0.5, samples_per_class=12, limits="none").fit(model, data)
    again, _ = B.select_from_state("snacs", state, model, topo, target=0.5)
    assert {int(k): list(v) for k, v in fresh.plan_.remove.items()} == again
    mint = B.score_method("mint", model, topo, data, seed=0,
                          mint_params={**B.MINT_PARAMS, "samples_per_class": 6, "groups": 4})
    assert mint.estimator == "gmi" and mint.phi == "none" and mint.sensitivity == "none"
    remove, pred = B.select_from_state("mint", mint, model, topo, target=0.5)
    _check_valid(model, topo, remove)
    assert pred["weights_removed"] >= 0.5


def test_snacs_select_cell_is_the_librarys_choice(tiny):
    """"snacs-select" keeps the "snacs" or the "snacs-global" plan, as the library's
    SNACS(allocation="select") fitted at that target does, and records both proxies."""
    from snacs import SNACS

    model, topo, data = tiny
    params = {"samples_per_class": 12, "estimator": "gaussian", "groups": 8}
    state = B.score_method("snacs-select", model, topo, data, seed=0, snacs_params=params)
    for metric, target in (("params", 0.5), ("macs", 0.4)):
        remove, pred = B.select_from_state("snacs-select", state, model, topo, target=target,
                                           metric=metric, data=data)
        name = "limits" if pred["allocation_limits"] == 1.0 else "global"
        same = "snacs" if name == "limits" else "snacs-global"
        assert remove == B.select_from_state(same, state, model, topo, target=target,
                                             metric=metric)[0]
        other = "global" if name == "limits" else "limits"
        assert pred[f"proxy_accuracy_{name}"] >= pred[f"proxy_accuracy_{other}"]
        fresh = SNACS(mode="target", target=target, target_metric=metric, allocation="select",
                      relax_limits=True, seed=0, granularity="filter", **params).fit(model, data)
        assert fresh.allocation_ == name
        assert {int(k): list(v) for k, v in fresh.plan_.remove.items()} == remove
        assert fresh.allocation_trials_[name]["accuracy"] == pred[f"proxy_accuracy_{name}"]
    with pytest.raises(ValueError, match="calibration images"):
        B.select_from_state("snacs-select", state, model, topo, target=0.5)


def test_random_is_seeded(tiny):
    _, topo, _ = tiny
    a, b, c = (B.random_importance(topo, s) for s in (0, 0, 1))
    assert all((a[g] == b[g]).all() for g in a) and any((a[g] != c[g]).any() for g in a)


def test_unreachable_budget_raises(tiny):
    from snacs.errors import TargetError

    model, topo, _ = tiny
    imp = B.l1_importance(model, topo)
    with pytest.raises(TargetError, match="out of reach"):
        B.select_to_budget(model, topo, imp, 0.9999)


def test_harness_cell_and_resume(tiny, tmp_path):
    from benchmarks import compare as C

    from snacs.data import synthetic

    model, _, data = tiny
    test = synthetic("test", n_per_class=5, shape=SHAPE, seed=0)
    suite = C.Suite("tiny", "simplecnn", 1.0, "synthetic")
    kw = dict(results_dir=tmp_path / "res", runs=tmp_path / "runs", finetune_per_class=10,
              data=(data, test, model), latency={"bs1": {"batch_size": 1, "repeats": 2},
                                                 "bs64": {"batch_size": 64, "repeats": 2}})
    h = C.Harness(suite, **kw)
    cells = C.grid(("l1", "random"), ("params",), (0.5,), (0,))
    h.run(cells)
    res = json.loads((tmp_path / "res" / "compare_tiny.json").read_text())
    assert set(res["cells"]) == {"l1__params50__seed0", "random__params50__seed0"}
    cell = res["cells"]["l1__params50__seed0"]
    assert cell["status"] == "ok" and 50.0 <= cell["weights_removed_pct"] < 53.0
    # the recorded counts and accuracy are those of the model its `remove` describes
    from snacs.apply import remove_channels
    from snacs.metrics import conv_linear_weights, count_macs, count_parameters
    from snacs.train import evaluate

    pruned = copy.deepcopy(model)
    remove_channels(pruned, tiny[1], {int(k): v for k, v in cell["remove"].items()})
    pruned.eval()
    assert cell["weights_after"] == conv_linear_weights(pruned)
    assert cell["params_after"] == count_parameters(pruned) < count_parameters(model)
    assert cell["macs_after"] == count_macs(pruned, SHAPE) < count_macs(model, SHAPE)
    assert cell["weights_removed_pct"] == pytest.approx(
        100 * (1 - conv_linear_weights(pruned) / conv_linear_weights(model)))
    assert "accounting_mismatch" not in cell  # the selection's prediction was exact
    assert cell["accuracy_pruned"] == pytest.approx(evaluate(pruned, test)["accuracy"])
    # 50 test images: accuracies are multiples of 2 %, in [0, 100]
    for k in ("accuracy_pruned", "accuracy_finetuned"):
        assert 0.0 <= cell[k] <= 100.0 and cell[k] / 2.0 == pytest.approx(round(cell[k] / 2.0)), k
    assert cell["prune_seconds"] > 0 and cell["finetune_seconds"] > 0
    assert set(cell["latency_ms"]) == {"bs1", "bs64"}
    assert all(v["base"] > 0 and v["pruned"] > 0 for v in cell["latency_ms"].values())
    assert res["finetune"]["epochs"] == 1 and "description" in res["finetune"]
    h2 = C.Harness(suite, **kw)
    assert all(h2.done(c["id"]) for c in cells)
    before = res["cells"]["random__params50__seed0"]
    del h2.result["cells"]["random__params50__seed0"]["remove"]  # rebuilt from the seeded state
    h2.result["cells"]["l1__params50__seed0"]["latency_loadavg"] = -1.0  # marks "not timed again"
    h2.remeasure_latency(ids={"random__params50__seed0"})  # only the cells asked for
    mid = json.loads((tmp_path / "res" / "compare_tiny.json").read_text())["cells"]
    assert mid["l1__params50__seed0"]["latency_loadavg"] == -1.0
    assert mid["random__params50__seed0"]["latency_loadavg"] >= 0.0
    h2.remeasure_latency()  # every finished cell
    after = json.loads((tmp_path / "res" / "compare_tiny.json").read_text())["cells"]
    assert after["l1__params50__seed0"]["latency_loadavg"] >= 0.0
    assert after["random__params50__seed0"]["remove"] == before["remove"]
    assert after["l1__params50__seed0"]["accuracy_finetuned"] == cell["accuracy_finetuned"]


def test_harness_latency_budget_prices_every_method_with_one_table(tiny, tmp_path):
    from benchmarks import compare as C

    from snacs.data import synthetic
    from snacs.latency import LatencyTable

    model, topo, data = tiny
    test = synthetic("test", n_per_class=5, shape=SHAPE, seed=0)
    suite = C.Suite("tinylat", "simplecnn", 1.0, "synthetic", snacs_params={"samples_per_class": 12})
    h = C.Harness(suite, results_dir=tmp_path / "res", runs=tmp_path / "runs", finetune_per_class=10,
                  data=(data, test, model),
                  latency={"bs1_ts": {"batch_size": 1, "repeats": 3, "frozen": True}})
    # SNACS's limits allocation is priced by the same table; MINT has no latency allocation
    cells = C.grid(("snacs", "mint", "l1", "random"), ("latency",), (0.2,), (0,))
    assert [c["id"] for c in cells] == ["snacs__latency20__seed0", "l1__latency20__seed0",
                                        "random__latency20__seed0"]
    h.run(cells)
    res = json.loads((tmp_path / "res" / "compare_tinylat.json").read_text())
    tab = LatencyTable.load(tmp_path / "runs" / "tinylat" / res["latency_table"]["file"])
    assert res["latency_table"]["base_ms"] == tab.base_ms
    for cid in ("snacs__latency20__seed0", "l1__latency20__seed0", "random__latency20__seed0"):
        cell = res["cells"][cid]
        assert cell["status"] == "ok", cell.get("error")
        lt = cell["latency_target"]
        assert lt["predicted_removed"] >= 0.2
        # the prediction is the table's price of the recorded removal
        from snacs.latency import kept_channels
        from snacs.plan import Plan

        plan = Plan(granularity="filter", mode="target",
                    remove={int(k): v for k, v in cell["remove"].items()})
        assert tab.predicted_removal(kept_channels(model, topo, plan)) == pytest.approx(lt["predicted_removed"])
        col = cell["latency_ms"]["bs1_ts"]
        assert lt["measured_removed"] == pytest.approx(1 - col["pruned"] / col["base"])
    from benchmarks import report

    md = "\n".join(report.compare_section(res, tmp_path, tmp_path, "compare_tinylat.json"))
    assert "#### tinylat: latency budgets" in md
    row = next(r for r in md.splitlines() if r.startswith("| 20% | L1-norm (global) |"))
    assert f"{100 * res['cells']['l1__latency20__seed0']['latency_target']['predicted_removed']:.1f} %" in row
    assert "Not yet comparable" not in md

    # a table committed beside the bases wins over the timed one; cells it did not price are
    # stale (rerun), the others stay done
    bases = tmp_path / "bases"
    bases.mkdir()
    other = LatencyTable.load(tmp_path / "runs" / "tinylat" / res["latency_table"]["file"])
    other.base_ms *= 2.0  # another machine, twice as slow everywhere: the same relative prices
    for row in other.layers.values():
        row["ms"] = [[2.0 * v for v in r] for r in row["ms"]]
    other.save(bases / "tinylat.latency-table.json")
    h2 = C.Harness(suite, results_dir=tmp_path / "res", runs=tmp_path / "runs",
                   finetune_per_class=10, data=(data, test, model),
                   latency={"bs1_ts": {"batch_size": 1, "repeats": 3, "frozen": True}})
    with mock.patch.object(C, "BASES", bases):
        assert C.latency_table_file(suite) == bases / "tinylat.latency-table.json"
        assert not h2.done("l1__latency20__seed0")
        assert h2.latency_table().base_ms == pytest.approx(other.base_ms)
        h2.run([c for c in cells if c["method"] == "l1"])
    res2 = json.loads((tmp_path / "res" / "compare_tinylat.json").read_text())
    assert res2["cells"]["l1__latency20__seed0"]["latency_target"]["table_base_ms"] == \
        pytest.approx(other.base_ms)
    md2 = "\n".join(report.compare_section(res2, tmp_path, tmp_path, "compare_tinylat.json"))
    assert "Not yet comparable" in md2  # random's cell is still priced by the first table


def test_harness_hash_methods_fit_their_own_estimator(tiny, tmp_path):
    from benchmarks import baselines as B
    from benchmarks import compare as C

    from snacs.data import synthetic

    assert B.state_key("snacs-hash") == B.state_key("snacs-hash-global") == "snacs-hash"
    assert B.state_key("snacs-global") == "snacs" and B.state_key("l1") == "l1"
    model, _, data = tiny
    test = synthetic("test", n_per_class=5, shape=SHAPE, seed=0)
    suite = C.Suite("tinyhash", "simplecnn", 1.0, "synthetic", snacs_params={"samples_per_class": 10,
                                                                            "groups": 8})
    h = C.Harness(suite, results_dir=tmp_path / "res", runs=tmp_path / "runs", finetune_per_class=10,
                  data=(data, test, model), latency={"bs1": {"batch_size": 1, "repeats": 2}})
    h.run(C.grid(("snacs", "snacs-hash", "snacs-hash-global"), ("params",), (0.3,), (0,)))
    res = json.loads((tmp_path / "res" / "compare_tinyhash.json").read_text())
    assert all(c["status"] == "ok" for c in res["cells"].values())
    st_hash, _ = h.state("snacs-hash", 0)
    st_def, _ = h.state("snacs", 0)
    assert st_hash.estimator == "hash" and st_def.estimator != "hash"
    assert h.state("snacs-hash-global", 0)[0] is st_hash  # one fit serves both plans
    fits = sorted(p.name.split("-seed")[0] for p in (tmp_path / "runs" / "tinyhash" / "fits").iterdir())
    assert fits == ["snacs", "snacs-hash"]


def _fake_cell(method, metric, budget, seed, acc, removed=None):
    removed = removed if removed is not None else 100 * (budget or 0.6)
    return {"method": method, "metric": metric, "budget": budget, "seed": seed, "status": "ok",
            "accuracy_pruned": acc - 20, "accuracy_finetuned": acc, "weights_removed_pct": removed,
            "macs_removed_pct": removed - 5, "params_after": 1000, "macs_after": 2_000_000,
            "latency_ms": {"bs1": {"base": 2.0, "pruned": 1.0}, "bs64": {"base": 50.0, "pruned": 40.0}},
            "prune_seconds": 1.0, "finetune_seconds": 3.0}


def test_readme_rows_show_the_default_allocation_at_both_metrics():
    from benchmarks.report import _both_metrics_rows

    cells = [_fake_cell("snacs", "params", 0.5, 0, 88.0), _fake_cell("snacs-global", "params", 0.5, 0, 86.0),
             _fake_cell("l1", "params", 0.5, 0, 87.0),
             _fake_cell("snacs", "macs", 0.5, 0, 80.0, removed=70), _fake_cell("snacs-global", "macs", 0.5, 0, 84.0, removed=45),
             _fake_cell("tp-taylor", "macs", 0.5, 0, 85.0), _fake_cell("dense", None, None, 0, 90.0)]
    rows = _both_metrics_rows({"suite": "s", "cells": {str(i): c for i, c in enumerate(cells)}})
    by = {r[1]: r for r in rows}
    # parameters: the default is the limits allocation (88 > 87: marked), MACs: the global one
    assert by["50% weights"][2:5] == ["**88.00 (45 % MACs)**", "88.00 (45 % MACs)", "86.00 (45 % MACs)"]
    assert by["50% MACs"][2:5] == ["84.00 (45 % w.)", "80.00 (70 % w.)", "84.00 (45 % w.)"]
    assert by["50% MACs"][5] == "TP group Taylor 85.00" and by["50% MACs"][8] == "90.00"
    # the verdicts judge what `snacs prune --target-metric <metric>` runs by default
    from benchmarks.report import _verdict_lines

    res = {"suite": "s", "cells": {str(i): c for i, c in enumerate(cells)}}
    assert _verdict_lines(res, "macs")[0].startswith(
        "* 50% of MACs removed: SNACS default (global allocation) 84.00 %")
    assert "SNACS is **below** TP group Taylor (85.00 %)" in _verdict_lines(res, "macs")[0]
    assert _verdict_lines(res, "params")[0].startswith(
        "* 50% of weights removed: SNACS default (limits allocation) 88.00 %")
    # the designs table: one row per SNACS design, one column per budget, the best baseline
    from benchmarks.report import _designs_section

    md = "\n".join(_designs_section({"suite": "s", "cells": {str(i): c for i, c in enumerate(cells)}}, "s"))
    assert "| design | 50% weights | 50% MACs |" in md
    assert "| `snacs-global`: global ranking" in md and "| 86.00 | 84.00 |" in md
    assert "| best baseline | 87.00 (L1-norm (global)) | 85.00 (TP group Taylor) |" in md
    # the estimator line compares hash with the copula at each budget's default allocation
    cells += [_fake_cell("snacs-hash", "params", 0.5, 0, 89.5), _fake_cell("snacs-hash", "macs", 0.5, 0, 99.0),
              _fake_cell("snacs-hash-global", "macs", 0.5, 0, 83.0)]
    md = "\n".join(_designs_section({"suite": "s", "cells": {str(i): c for i, c in enumerate(cells)}}, "s"))
    assert ("hash − Gaussian copula (points): 50% weights +1.50, 50% MACs -1.00; hash at least as "
            "accurate in 1 of 2.") in md


def test_report_renders_from_fake_results(tmp_path):
    from benchmarks import report

    res = tmp_path / "results"
    res.mkdir()
    cells = {}
    for seed in (0, 1):
        for b in (0.5, 0.85):
            for m, acc in (("snacs", 90.0), ("l1", 89.0), ("random", 85.0), ("tp-taylor", 91.0)):
                cells[f"{m}{b}{seed}"] = _fake_cell(m, "params", b, seed, acc + seed)
        cells[f"ul{seed}"] = _fake_cell("snacs-ul", None, None, seed, 88.0, 62.0)
        cells[f"snacs0.85{seed}"]["predicted"] = {"limit_fraction": 0.88 + 0.04 * seed}
    for seed in (0, 1):
        for m, acc in (("l1", 80.0 + 10 * seed), ("random", 70.0)):
            cells[f"{m}0.7{seed}"] = _fake_cell(m, "params", 0.7, seed, acc)
    cells["snacs0.70"] = {"method": "snacs", "metric": "params", "budget": 0.7, "seed": 0,
                          "status": "unreachable", "error": "at most 66.0% with granularity"}
    cells["snacs0.71"] = _fake_cell("snacs", "params", 0.7, 1, 91.0)
    cells["mint-unreach"] = {"method": "mint", "metric": "params", "budget": 0.85, "seed": 0,
                             "status": "unreachable", "error": "at most 80.0% with granularity"}
    (res / "compare_fake.json").write_text(json.dumps({
        "suite": "fake", "model": {"name": "vgg16", "width": 0.25}, "cells": cells,
        "base": {"test_accuracy": 92.0, "weights": 10, "params": 11, "macs": 12, "source": "x"},
        "finetune": {"description": "one short epoch"}}))
    (res / "scoring_time.json").write_text(json.dumps({"runs": [
        {"network": "resnet56", "weights": "random", "groups": 10**6, "N": 2500, "workers": 1,
         "threads": 2, "estimator": "e", "stages": {"scores": 40.0, "limits": 9.0},
         "total_seconds": 50.0, "target_seconds": 60.0, "meets_target": True}],
        "targets_seconds": {"resnet56": 60.0, "vgg16": 120.0}}))
    (res / "train_vgg16w025_fmnist.json").write_text(json.dumps({"test_accuracy": 90.27,
                                                                 "epochs": 2}))
    (res / "above_limits_fake.json").write_text(json.dumps({"suite": "fake", "cells": {
        f"relax{seed}": {**_fake_cell("snacs", "params", 0.85, seed, 86.0 + seed), "variant": "relax"}
        for seed in (0, 1)}}))
    readme = tmp_path / "README.md"
    readme.write_text("# x\n\n<!-- bench:start -->\nold\n<!-- bench:end -->\n\ntail\n")
    notes = tmp_path / "notes.md"
    notes.write_text("Prose analysis.")
    out = tmp_path / "BENCH.md"
    md = report.render(res, out, readme, notes=notes)
    assert out.read_text() == md
    assert "### fake" in md and "90.27" in md and "Prose analysis." in md
    assert (res / "compare_fake_params.png").is_file()
    assert "![fake params](results/compare_fake_params.png)" in md
    assert "SNACS is **below** TP group Taylor" in md  # said plainly where a baseline wins
    assert "No reliability results yet" in md
    # reached on one seed only: compared with the baselines on that seed, and not a pass
    assert ("its limits allow this budget on seed 1 only (1 of 2); on those seeds SNACS 91.00 %; "
            "L1-norm (global) 90.00 %") in md
    assert "| fake | 70% | 91.00 (1 of 2 seeds; baselines on the same) |" in readme.read_text()
    (res / "reliability.json").write_text(json.dumps({"checks": [{"check": "a | b", "test": "t"}]}))
    md = report.render(res, out, None, notes=None)
    assert "`checks` (1):" in md and "a \\| b" in md
    assert "unreachable (limits allow ≤ 80.0%)" in md
    text = readme.read_text()
    assert "old" not in text and "tail" in text and "[BENCHMARKS.md](BENCH.md)" in text
    assert "| fake | 50% | 90.50 | 0.70 | – | TP group Taylor 91.50 |" in text
    # budgets above the limits: SNACS relaxed its limit fraction, and both pages say by how much
    assert "| fake | 85% | 90.50 | 0.88–0.92 |" in text
    # the table at equal parameters and equal MACs: the default is the limits allocation at a
    # parameter budget, with the other metric removed beside it
    assert "| fake (width 0.25) | 50% weights | 90.50 (" in text and "SNACS default" in text
    assert "SNACS default (limits allocation) 90.50 % (limits relaxed to fraction 0.88–0.92)" in md
    assert "### Above the limits: fake" in md
    assert ("| relax the limit fraction (shipped: `--relax-limits`) | 86.50 ± 0.50 (MACs −80 %) |"
            in md)
    assert "| L1-norm (global) (from the matched table) | 89.50 ± 0.50 (MACs −80 %) |" in md
    # empty results directory: still renders
    empty = tmp_path / "empty"
    empty.mkdir()
    md = report.render(empty, tmp_path / "E.md", None, notes=None)
    assert "No comparison results yet" in md and "No reliability results yet" in md


def test_snacs_relaxes_its_limits_like_a_fresh_fit_and_the_ablation_variants(tiny):
    from benchmarks import above_limits as A

    from snacs import SNACS

    model, topo, data = tiny
    state = B.score_method("snacs", model, topo, data, seed=0,
                           snacs_params={"samples_per_class": 12, "groups": 4})
    reach = state.plan_.predicted["weights_removed"]  # mode ul: what the limits allow
    target = min(reach + 0.1, 0.9)
    remove, pred = B.select_from_state("snacs", state, model, topo, target=target)
    _check_valid(model, topo, remove)
    assert pred["weights_removed"] >= target and pred["limit_fraction"] > 0.7
    fresh = SNACS(mode="target", target=target, samples_per_class=12, groups=4,
                  relax_limits=True).fit(model, data)
    assert {int(k): list(v) for k, v in fresh.plan_.remove.items()} == remove
    assert fresh.limit_fraction_ == pytest.approx(pred["limit_fraction"])
    for v in A.VARIANTS:
        rem, p = A.removal(v, state, model, target)
        _check_valid(model, topo, rem)
        assert p["weights_removed"] >= target - 1e-9, v
    with pytest.raises(ValueError, match="unknown variant"):
        A.removal("nope", state, model, target)


def test_probe_agreement_and_rounding_sections_render():
    from benchmarks import latency_rounding, probe_agreement

    md = probe_agreement.markdown({
        "model": "m", "pairs": 3, "N": 20, "threads": 1, "max_accuracy_difference_points": 0.04,
        "pairs_with_different_limit": 0, "limits_seconds_dense": 1.0,
        "limits_seconds_libsvm": 5.0, "speedup": 5.0})
    assert "0.04 points" in md and "limit differs: 0" in md and "(×5.0)" in md
    row = {"round_to": 8, "macs_cut_pct": 30.0}
    for k in ("bs1", "bs64", "bs1_ts", "bs64_ts"):
        row |= {f"{k}_ratio": 0.5, f"{k}_ratio_range": [0.25, 0.75]}
    md = latency_rounding.markdown({"cell": "c", "suite": "s", "repeats": 5, "rows": [row]})
    assert "| ×8 | 30.0 | 0.50 (0.25 to 0.75) |" in md and "median (range) of 5 repeats" in md


# --------------------------------------------------------------------------- scoring_time, real runs

def test_scoring_time_real_run_records_stages_reference_and_ratios(tiny, monkeypatch):
    from benchmarks import scoring_time as ST

    model, _, data = tiny
    rec = ST.time_real(model, data, mode="ul", samples_per_class=6)
    assert rec["status"] == "ok" and rec["N"] == 6 * data.num_classes
    stages = ["topology", "activations", "scores", "limits", "sensitivity", "plan"]
    assert list(rec["stages"]) == stages and list(rec["cpu_stages"]) == stages
    assert all(v >= 0 for v in [*rec["stages"].values(), *rec["cpu_stages"].values()])
    # the fit is timed around SNACS.fit: at least the sum of its stages
    assert rec["total_seconds"] >= sum(rec["stages"].values())
    assert rec["settings"]["samples_per_class"] == 6 and rec["settings"]["mode"] == "ul"
    assert rec["settings"]["groups"] == 64 and rec["probe"] == "svm"  # SNACS's defaults
    l1 = rec["l1"]
    assert list(l1["steps"]) == ["topology", "importance", "select", "remove", "recalibrate_bn"]
    assert l1["seconds"] == pytest.approx(sum(s["seconds"] for s in l1["steps"].values()))
    assert l1["cpu_seconds"] == pytest.approx(sum(s["cpu_seconds"] for s in l1["steps"].values()))
    # mode ul: L1 is given the parameter budget the SNACS plan removes, and meets it
    assert l1["budget"] == {"metric": "params", "fraction": rec["predicted_weights_removed"]}
    assert l1["predicted_weights_removed"] >= rec["predicted_weights_removed"]
    assert rec["forward"]["batches"] == -(-rec["N"] // rec["forward"]["batch_size"])
    r = rec["ratios"]
    assert r["fit_to_l1"] == pytest.approx(rec["total_seconds"] / l1["seconds"])
    assert r["fit_to_l1_cpu"] == pytest.approx(rec["total_cpu_seconds"] / l1["cpu_seconds"])
    assert r["activations_to_forward"] == pytest.approx(
        rec["stages"]["activations"] / rec["forward"]["seconds"])
    assert r["activations_to_forward_cpu"] == pytest.approx(
        rec["cpu_stages"]["activations"] / rec["forward"]["cpu_seconds"])
    # the limits stage split into probe fits and predictions, summed over the pairs
    pc = rec["probe_cost"]
    assert pc["pairs"] == rec["pairs"] and pc["predicted_samples"] % rec["N"] == 0
    assert rec["N"] <= pc["predicted_samples"] / pc["pairs"] <= 20 * rec["N"]  # ≤ 20 rates
    assert 0 < pc["fit_seconds"] + pc["predict_seconds"] <= rec["stages"]["limits"]
    json.dumps(rec)  # the record serialises as it is
    target = ST.time_real(model, data, mode="target", samples_per_class=6)
    assert target["status"] == "ok"  # SNACS(target=0.5); L1 then prunes to the same 50 %
    assert target["settings"]["target"] == 0.5 and target["mode"] == "target"
    assert target["l1"]["budget"]["fraction"] == 0.5
    assert target["predicted_weights_removed"] >= 0.5
    assert target["l1"]["predicted_weights_removed"] >= 0.5
    # a target above the limits is recorded as such, not raised
    monkeypatch.setitem(ST.REAL_MODES, "target99", {"target": 0.99})
    high = ST.time_real(model, data, mode="target99", samples_per_class=6)
    assert high["status"] == "unreachable" and "at most" in high["error"] and "l1" not in high


def test_scoring_time_targets_judged_only_at_their_settings():
    from benchmarks import scoring_time as ST

    t = ST.real_targets("cifar10-resnet56", threads=2, samples_per_class=250)
    assert t["applies"] and t["fit_seconds"] == 12.0 and t["fit_to_l1"] == 2.5
    rec = {"status": "ok", "total_seconds": 11.0, "ratios": {"fit_to_l1": 2.6}}
    assert ST._meets(rec, t) == {"fit_seconds": True, "fit_to_l1": False}
    assert ST._meets({**rec, "total_seconds": 12.5, "ratios": {"fit_to_l1": 2.5}}, t) == {
        "fit_seconds": False, "fit_to_l1": True}
    v = ST.real_targets("cifar10-vgg16", threads=2, samples_per_class=250)
    assert ST._meets({**rec, "total_seconds": 24.0}, v) == {"fit_seconds": True}
    for off in (ST.real_targets("cifar10-resnet56", threads=1, samples_per_class=250),
                ST.real_targets("cifar10-resnet56", threads=2, samples_per_class=10)):
        assert not off["applies"]
        assert ST._meets(rec, off) == {"fit_seconds": None, "fit_to_l1": None}


def test_scoring_time_real_suite_recorded_resumed_and_skipped(tiny, tmp_path, monkeypatch):
    from benchmarks import compare as C
    from benchmarks import report
    from benchmarks import scoring_time as ST

    import snacs
    from snacs.errors import DataError
    from snacs.io import file_sha256

    model, _, data = tiny
    suite = C.Suite("tiny-real", "simplecnn", 1.0, "synthetic", base_file="tiny-real.pt")
    monkeypatch.setitem(C.SUITES, "tiny-real", suite)
    monkeypatch.setitem(ST.REAL, "tiny-real", {"fit_seconds": 1.0, "fit_to_l1": 2.5})
    bases = tmp_path / "bases"
    bases.mkdir()
    result = {"runs": [{"network": "resnet56", "weights": "random", "workers": 1, "threads": 1,
                        "groups": 10**6, "probe": "svm", "total_seconds": 40.0}]}
    saves = []
    save = lambda: saves.append(json.loads(json.dumps(result)))  # noqa: E731
    # no base committed: skipped with the reason, nothing measured, the old record kept
    ST.run_real(result, "tiny-real", modes=["ul"], save=save, bases=bases,
                load=lambda s: data)
    assert "not committed yet" in result["skipped"]["tiny-real"]
    assert "tiny-real.pt" in result["skipped"]["tiny-real"] and len(result["runs"]) == 1
    snacs.save(model, bases / "tiny-real.pt", input_shape=SHAPE)
    (bases / "tiny-real.json").write_text(json.dumps(
        {"sha256": file_sha256(bases / "tiny-real.pt"), "source": "test base"}))

    def no_data(s):
        raise DataError("archive cifar10-jpeg.tar.gz not found")
    ST.run_real(result, "tiny-real", modes=["ul"], save=save, bases=bases, load=no_data)
    assert result["skipped"]["tiny-real"].startswith("the synthetic data is not available")
    assert len(result["runs"]) == 1
    # base and data present: one record per mode, saved, the skip note gone
    ST.run_real(result, "tiny-real", modes=["ul"], save=save, bases=bases, samples_per_class=6,
                load=lambda s: data)
    assert "tiny-real" not in result["skipped"] and len(result["runs"]) == 2
    r = result["runs"][-1]
    assert saves[-1]["runs"][-1] == json.loads(json.dumps(r))
    assert (r["kind"], r["suite"], r["mode"], r["samples_per_class"]) == ("real", "tiny-real",
                                                                          "ul", 6)
    sha = file_sha256(bases / "tiny-real.pt")
    assert r["base_sha256"] == sha and r["weights_source"].endswith(f"(sha256 {sha[:16]})")
    assert r["environment"]["torch"] == torch.__version__
    # 6 per class is not the default 250: shown, not judged
    assert not r["targets"]["applies"] and r["meets_target"] is None
    n = len(saves)
    ST.run_real(result, "tiny-real", modes=["ul"], save=save, bases=bases, samples_per_class=6,
                load=lambda s: data)
    assert len(result["runs"]) == 2 and len(saves) == n  # recorded: not measured again
    # the report's real-data table comes from the record
    result["real"] = {"description": "d", "targets": {"tiny-real": {**ST.REAL["tiny-real"],
                                                                    "threads": 2}}}
    md = "\n".join(report.scoring_section(result))
    assert "### CIFAR-10 bases: real data and weights" in md
    assert "tiny-real fit ≤ 1 s wall and ≤ 2.5× the L1 + BN recalibration time on 2 threads" in md
    cpu = r["environment"]["cpu"]
    assert r["cpu"] == cpu  # real runs are recorded (and replaced) per CPU model
    row = next(x for x in md.splitlines() if x.startswith(f"| tiny-real | {cpu} | ul |"))
    assert f"**{r['ratios']['fit_to_l1']:.2f}** / {r['ratios']['fit_to_l1_cpu']:.2f} (≤ 2.5)" in row
    assert row.count("not judged") == 2
    # a judged run: met / missed from the recorded flags
    judged = {**r, "threads": 2, "targets": {**r["targets"], "applies": True},
              "meets": {"fit_seconds": False, "fit_to_l1": True}}
    row = next(x for x in "\n".join(report.scoring_section({**result, "runs": [judged]})
                                    ).splitlines() if x.startswith("| tiny-real |"))
    assert row.endswith(f"| **missed** | met | {r['loadavg_1min_before']:.1f} |")
    assert f"tiny-real (ul, 2 threads): fit {judged['total_seconds']:.1f} s on {cpu} (" in \
        report._real_summary([judged])
    # a run on another kind of CPU is kept beside this one, not replaced
    other = {**r, "cpu": "Other CPU (avx)", "environment": {**r["environment"],
                                                            "cpu": "Other CPU (avx)"}}
    assert ST._key(other) != ST._key(r)
    both = report._real_summary([judged, {**judged, "environment": other["environment"],
                                          "total_seconds": 99.0}])
    assert both.count("tiny-real (ul, 2 threads)") == 1
    assert f"s on {cpu} (" in both and "99.0 s on Other CPU (avx) (" in both
    assert ST._key({**r, "threads": r["threads"] + 1}) != ST._key(r)
    pc = r["probe_cost"]
    assert (f"* tiny-real on {cpu}, ul, {r['threads']} threads: limits {r['stages']['limits']:.1f} s wall; probe fits "
            f"{pc['fit_seconds']:.1f} / {pc['fit_cpu_seconds']:.1f} s") in md


def test_scoring_time_cli_skips_absent_bases_without_error(tmp_path):
    from benchmarks import scoring_time as ST

    out = tmp_path / "res"
    rc = ST.main(["--no-synthetic", "--bases", str(tmp_path / "none"), "--results", str(out),
                  "--threads", str(torch.get_num_threads())])
    res = json.loads((out / "scoring_time.json").read_text())
    assert rc == 0 and res["runs"] == []
    assert set(res["skipped"]) == set(ST.REAL)
    assert all("not committed yet" in v for v in res["skipped"].values())
    assert res["real"]["targets"]["cifar10-resnet56"] == {"fit_seconds": 12.0, "fit_to_l1": 2.5,
                                                          "threads": 2}


def test_dry_run_lists_cells_of_another_base_as_stale(tiny, tmp_path):
    """`--dry-run` tells the cells the next run would redo (recorded from another base, or
    failed) from those it keeps, before loading any data."""
    from benchmarks import compare as C

    import snacs

    model, _, _ = tiny
    bases, res = tmp_path / "bases", tmp_path / "res"
    bases.mkdir()
    res.mkdir()
    snacs.save(model, bases / "tinyb.pt")
    (bases / "tinyb.json").write_text(json.dumps({"sha256": C.file_sha256(bases / "tinyb.pt")}))
    suite = C.Suite("tinyb", "simplecnn", 1.0, "synthetic", base_file="tinyb.pt")
    fp = C.fingerprint(suite, C.state_digest(model))
    cells = C.grid(("l1", "random", "tp-magnitude", "tp-taylor"), ("params",), (0.5,), (0,))
    ids = [c["id"] for c in cells]
    (res / "compare_tinyb.json").write_text(json.dumps({"cells": {
        ids[0]: {"fingerprint": fp, "status": "ok"},
        ids[1]: {"fingerprint": "0123456789abcdef", "status": "ok"},  # another base
        ids[2]: {"fingerprint": fp, "status": "error"}}}))
    assert C.cell_status(suite, cells, res, bases) == [
        ("done", ids[0]), ("stale", ids[1]), ("stale", ids[2]), ("todo", ids[3])]
    # the fingerprint follows the base's weights and the fine-tune
    other = copy.deepcopy(model)
    with torch.no_grad():
        next(other.parameters()).add_(1.0)
    assert C.fingerprint(suite, C.state_digest(other)) != fp
    assert C.fingerprint(suite, C.state_digest(model), finetune={**C.FINETUNE, "lr": 0.5}) != fp
    # without a committed base staleness is unknown until the run loads the base: said first
    bare = C.Suite("tinyb", "simplecnn", 1.0, "synthetic")
    rows = C.cell_status(bare, cells, res, bases)
    assert rows[0][0].startswith("# tinyb has no committed base") and rows[0][1] == ""
    assert [r[0] for r in rows[1:]] == ["done", "done", "stale", "todo"]


def test_redo_drops_only_the_selected_cells(tiny, tmp_path):
    """--redo of some budgets keeps the method's other cells (a redo of the latency cell must
    not drop the parameter cells just rerun)."""
    from benchmarks import compare as C

    from snacs.data import synthetic

    model, _, data = tiny
    test = synthetic("test", n_per_class=5, shape=SHAPE, seed=0)
    h = C.Harness(C.Suite("tinyredo", "simplecnn", 1.0, "synthetic"), results_dir=tmp_path / "res",
                  runs=tmp_path / "runs", data=(data, test, model))
    ids = ["l1__params50__seed0", "l1__latency50__seed0", "random__params50__seed0",
           "l1__params50__seed1"]
    for cid in ids:
        m, b, s = cid.split("__")
        h.result["cells"][cid] = {"method": m, "seed": int(s[-1]), "status": "ok"}
    h.forget(("l1",), {0}, ids={"l1__latency50__seed0"})
    assert sorted(h.result["cells"]) == sorted(set(ids) - {"l1__latency50__seed0"})
    h.forget(("l1",), {0, 1})  # no ids: every cell of the method and seeds
    assert sorted(h.result["cells"]) == ["random__params50__seed0"]


def test_select_line_counts_the_proxys_choices():
    from benchmarks import report

    def cell(method, ft, chose=None, seed=0):
        c = {"method": method, "seed": seed, "status": "ok", "accuracy_finetuned": ft}
        if chose is not None:
            c["predicted"] = {"allocation_limits": chose}
        return c

    g = {("snacs", 0.5): [cell("snacs", 80.0)], ("snacs-global", 0.5): [cell("snacs-global", 82.0)],
         ("snacs-select", 0.5): [cell("snacs-select", 80.0, chose=1.0)],
         ("snacs", 0.7): [cell("snacs", 70.0)], ("snacs-global", 0.7): [cell("snacs-global", 60.0)],
         ("snacs-select", 0.7): [cell("snacs-select", 70.0, chose=1.0)]}
    line = report._select_line([("macs", 0.5, g), ("macs", 0.7, g)])[0]
    assert "in 1 of 2 budget(s)" in line
    assert "missed at 50% MACs (kept limits, 2.00 points below the other)" in line
    assert report._select_line([("macs", 0.5, {("snacs", 0.5): [cell("snacs", 1.0)]})]) == []


def test_verdict_needs_the_baseline_cells():
    """No L1 / random cell at a budget: no verdict, not "meets the target"."""
    from benchmarks import report

    cell = {"method": "snacs", "metric": "params", "budget": 0.5, "seed": 0, "status": "ok",
            "accuracy_finetuned": 90.0}
    res = {"cells": {"a": cell}}
    v = report.verdicts(res)[0]
    assert not v["beats_l1_random"] and v["no_baselines"]
    line = report._verdict_lines(res, "params")[0]
    assert "no verdict yet: no baseline cell" in line and "meets the target" not in line
    res["cells"]["b"] = {**cell, "method": "l1", "accuracy_finetuned": 80.0}
    assert "L1-norm or random not run" in report._verdict_lines(res, "params")[0]
    res["cells"]["c"] = {**cell, "method": "random", "accuracy_finetuned": 70.0}
    assert "meets the target" in report._verdict_lines(res, "params")[0]


def test_report_lists_the_planned_cells_not_run(monkeypatch, tmp_path):
    """Each suite's section names the planned cells with no record, per seed: a budget where
    nothing ran says 'every method', a partly run one names the missing methods."""
    from benchmarks import compare as C
    from benchmarks import report

    suite = C.Suite("tiny-plan", "simplecnn", 1.0, "synthetic",
                    methods=("snacs", "l1", "random", "snacs-ul", "dense"),
                    budgets=(("macs", 0.5), ("params", 0.5)))
    monkeypatch.setitem(C.SUITES, "tiny-plan", suite)
    monkeypatch.setattr(C, "SEEDS", (0, 1))
    planned = C.grid(suite.methods, ["macs", "params"], [0.5], [0], pairs=suite.budgets)
    assert len(planned) == 2 + 2 * 3
    done = {c["id"]: {"status": "ok"} for c in planned
            if c["method"] in ("snacs-ul", "dense") or c["metric"] == "macs"
            or c["method"] == "l1"}
    done["random__params50__seed0"] = {"status": "unreachable"}  # recorded: not missing
    lines = report.planned_not_run({"suite": "tiny-plan", "cells": done})
    assert lines == ["seed 0: 1 of 8 planned cells not run yet (50% weights: "
                     f"{report.METHOD_NAMES['snacs']})",
                     "seed 1: none of its 8 planned cells run yet"]
    full = {c["id"]: {} for s in (0, 1)
            for c in C.grid(suite.methods, ["macs", "params"], [0.5], [s], pairs=suite.budgets)}
    assert report.planned_not_run({"suite": "tiny-plan", "cells": full}) == []
    none0 = {k: v for k, v in full.items() if not (k.endswith("seed0") and "params" in k)}
    assert report.planned_not_run({"suite": "tiny-plan", "cells": none0}) == [
        "seed 0: 3 of 8 planned cells not run yet (50% weights: every method)"]
    assert report.planned_not_run({"suite": "not-a-suite", "cells": {}}) == []
    md = "\n".join(report.compare_section({"suite": "tiny-plan", "cells": {}}, tmp_path,
                                          tmp_path, "compare_tiny-plan.json"))
    assert "Planned cells not run yet" in md and "* seed 1: none of its 8" in md


def test_report_names_suites_with_no_cells_and_why(monkeypatch, tmp_path):
    from benchmarks import compare as C
    from benchmarks import report

    monkeypatch.setattr(C, "SUITES", {
        "a": C.Suite("a", "simplecnn", 1.0, "synthetic", base_file="a.pt"),
        "b": C.Suite("b", "simplecnn", 1.0, "synthetic", base_file="b.pt"),
        "c": C.Suite("c", "simplecnn", 1.0, "synthetic", base_file="c.pt")})
    (tmp_path / "b.pt").write_bytes(b"x")
    lines = report.suites_not_started({"c"}, bases=tmp_path)
    assert lines == ["### a", "", "No cells: its base (`benchmarks/bases/a.pt`) is not trained "
                     "and committed yet.", "", "### b", "", "No cells: no cell has run yet.", ""]
    # a committed, unfinished training of a's base: how far it got
    run = tmp_path / "training" / "a"
    run.mkdir(parents=True)
    torch.save({"epoch": 2, "config": {"epochs": 40},
                "result": {"history": [{"test_accuracy": 50.0}, {"test_accuracy": 61.25},
                                       {"test_accuracy": 66.5}]}}, run / "last.pt")
    line = report.suites_not_started({"b", "c"}, bases=tmp_path)[2]
    assert "not trained and committed yet; its training is under way: 3 of 40 epochs done, " \
           "test accuracy 66.50 % after the last" in line and "training/a/last.pt" in line


def test_ul_judged_against_the_best_baselines_curve():
    """ul against the best baseline's accuracy-vs-removal curve: interpolated between budgets,
    by dominance just outside them, no verdict where neither applies."""
    from benchmarks import report

    def res(ul_removed, ul_acc):
        cells = [_fake_cell("l1", "params", 0.5, 0, 80.0), _fake_cell("tp-taylor", "params", 0.5, 0, 82.0),
                 _fake_cell("l1", "params", 0.7, 0, 70.0), _fake_cell("hrank", "params", 0.7, 0, 72.0),
                 _fake_cell("snacs-ul", None, None, 0, ul_acc, removed=ul_removed)]
        return {"suite": "s", "cells": {str(i): c for i, c in enumerate(cells)}}

    v = report.ul_verdict(res(60.0, 78.0), "params")
    assert v["curve"] == pytest.approx(77.0)  # halfway between 82 (TP Taylor) and 72 (HRank)
    line = report._ul_line(res(60.0, 78.0), "params")[0]
    assert "77.00 %" in line and "**on or above**" in line and "HRank 72.00 % at 70%" in line
    assert "**below**" in report._ul_line(res(60.0, 76.0), "params")[0]
    # beyond the largest budget: ahead of the best there -> above; behind -> no verdict
    assert "**on or above**" in report._ul_line(res(75.0, 73.0), "params")[0]
    assert "no verdict" in report._ul_line(res(75.0, 71.0), "params")[0]
    # below the smallest budget and behind the best there -> below
    assert "**below**" in report._ul_line(res(40.0, 81.0), "params")[0]
    assert "no verdict" in report._ul_line(res(40.0, 83.0), "params")[0]
    # MACs: the share of MACs ul removed (the fake cell's MACs = weights - 5) and MAC budgets
    assert report.ul_verdict(res(60.0, 78.0), "macs")["points"] == []
    assert report._ul_line({"suite": "s", "cells": {}}, "params") == []
