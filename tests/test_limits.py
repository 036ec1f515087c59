"""The probe classifier of the operating constraints (SPEC §4): the dense SVM predict."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from sklearn.svm import SVC

from snacs.limits import svm_predict


def _blobs(n_classes: int, n: int, dims: int, seed: int, spread: float = 1.0):
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(n_classes, dims)) * 2.0
    y = rng.integers(0, n_classes, size=n)
    x = centres[y] + rng.normal(size=(n, dims)) * spread
    return np.maximum(x, 0.0), y  # the probe sees ReLU features


@pytest.mark.parametrize("n_classes,dims", [(2, 5), (3, 16), (10, 37)])
def test_svm_predict_matches_libsvm(n_classes, dims):
    x, y = _blobs(n_classes, 600, dims, seed=n_classes, spread=2.5)  # overlapping: many SVs
    clf = SVC(C=1.0, gamma="scale", random_state=0).fit(x[:300], y[:300])
    test = x[300:] * np.random.default_rng(1).uniform(0.0, 1.5, size=x[300:].shape)
    ref = clf.predict(test)
    exact = svm_predict(clf, test, dtype=torch.float64, chunk=97)  # ragged chunks too
    assert (exact == ref).all()
    fast = svm_predict(clf, test)
    assert (fast == ref).mean() >= 0.995


def test_svm_predict_keeps_label_values_and_ties_like_libsvm():
    x, y = _blobs(4, 400, 6, seed=3, spread=3.0)
    labels = np.array([7, -1, 3, 20])[y]  # arbitrary, unsorted label values
    clf = SVC(gamma="scale").fit(x, labels)
    out = svm_predict(clf, x, dtype=torch.float64)
    assert set(np.unique(out)) <= set(labels)
    assert (out == clf.predict(x)).all()


def test_limit_result_cost_is_recorded_but_not_part_of_the_result():
    """Each curve records what its probe cost (fit, predictions, samples predicted); two runs
    on other machines or ranks still compare equal and serialise the same."""
    import dataclasses

    from snacs.limits import LimitResult

    a = LimitResult(pair="p", limit=0.5, rates=[0.01, 0.5], accuracy=[90.0, 80.0],
                    threshold=83.0, probe="SVC", cost={"fit_seconds": 1.0})
    b = dataclasses.replace(a, cost={"fit_seconds": 2.0})
    assert a == b and a.to_dict() == b.to_dict() and "cost" not in a.to_dict()
    assert a != dataclasses.replace(a, limit=0.4)


def _fit_limits(model, data, threads: int):
    import snacs

    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        p = snacs.SNACS(mode="ul", estimator="gaussian", samples_per_class=20, groups=4,
                        seed=0).fit(model, data)
        assert torch.get_num_threads() == threads  # the caller's setting, given back
        return p
    finally:
        torch.set_num_threads(before)


def test_pairs_probed_side_by_side_give_the_limits_of_one_thread(synth, monkeypatch):
    """With two torch threads the pairs are probed two at a time, each in its own thread on
    one torch thread; the curves and limits are those of one thread, pair for pair."""
    import threading

    import snacs
    import snacs.limits as L

    model = snacs.create_model("resnet20", width=0.25).eval()
    one = _fit_limits(model, synth, 1)
    seen, real = [], L._pair_limit

    def spy(*a, **kw):
        seen.append((threading.current_thread().name, torch.get_num_threads()))
        return real(*a, **kw)

    monkeypatch.setattr(L, "_pair_limit", spy)
    two = _fit_limits(model, synth, 2)
    assert len(seen) == len(one.limit_curves_) > 2
    assert all(name.startswith("snacs-limits") and n == 1 for name, n in seen)
    assert len({name for name, _ in seen}) == 2  # both threads took pairs
    assert list(two.limit_curves_) == list(one.limit_curves_)  # the topology's order
    assert two.limit_curves_ == one.limit_curves_ and two.limits_ == one.limits_
    # each pair's CPU seconds are its own thread's, not the process's (which would count the
    # pair running beside it too, about twice the pair's wall time)
    costs = [c.cost for c in two.limit_curves_.values()]
    cpu = sum(c["fit_cpu_seconds"] + c["predict_cpu_seconds"] for c in costs)
    wall = sum(c["fit_seconds"] + c["predict_seconds"] for c in costs)
    assert cpu <= 1.25 * wall + 0.02


def test_a_failing_pair_stops_the_threads_and_gives_back_the_torch_threads(synth, monkeypatch):
    import snacs
    import snacs.limits as L

    model = snacs.create_model("resnet20", width=0.25).eval()
    calls, real = [], L._pair_limit

    def fail(pair, *a, **kw):
        calls.append(pair.name)
        if len(calls) == 3:
            raise MemoryError(f"no room for {pair.name}")
        return real(pair, *a, **kw)

    monkeypatch.setattr(L, "_pair_limit", fail)
    with pytest.raises(MemoryError, match="no room"):
        _fit_limits(model, synth, 2)
    from snacs.pairs import find_topology

    # the pairs not started when the error came were dropped, not all probed
    assert len(calls) < len(find_topology(model, (3, 32, 32)).pairs)
