"""Bad input fails early with a one-line message that says what is wrong and how to fix it.

Every case in `CASES` runs the command line in-process (or the Python API where the CLI restricts
the value with argparse choices) and asserts exit status 2, a single `snacs: error:` line without
a traceback, and the message fragments. Cases marked `early` must fail before the activation pass
(the first expensive step): the pass is replaced by a function that fails the test if reached.

`python tests/test_reliability.py` regenerates `benchmarks/results/reliability.json` (the
reliability section of BENCHMARKS.md) from `CASES` and `CHECKS`; a test keeps the file in sync.
"""

from __future__ import annotations

import collections
import contextlib
import gzip
import io
import json
import struct
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from unittest import mock

import pytest
import torch

import snacs
from snacs.cli import main
from snacs.errors import SnacsError
from snacs.models import create_model
from snacs.pruner import SNACS

ROOT = Path(__file__).resolve().parent.parent
RESULT = ROOT / "benchmarks" / "results" / "reliability.json"
FAST = dict(estimator="gaussian", samples_per_class=5, groups=4, grid_step=25)


def prune_argv(tmp: Path, *extra: str, model: str | None = "simplecnn") -> list[str]:
    argv = ["prune", "--dataset", "synthetic", "--samples-per-class", "5", "--estimator",
            "gaussian", "--groups", "4", "--grid-step", "25", "--no-progress", "--no-latency",
            "--out", str(tmp / "out")]
    if model:
        argv += ["--model", model]
    return argv + list(extra)


def _save_model_file(tmp: Path, name: str, **kw) -> str:
    path = tmp / f"{name}.pt"
    snacs.save(create_model("simplecnn", **kw), path)
    return str(path)


def _idx_gz(path: Path, array: torch.Tensor, truncate: int | None = None) -> None:
    a = array.to(torch.uint8).numpy()
    raw = struct.pack(">HBB", 0, 8, a.ndim) + struct.pack(f">{a.ndim}I", *a.shape) + a.tobytes()
    data = gzip.compress(raw)
    path.write_bytes(data[:truncate] if truncate else data)


# --------------------------------------------------------------------------- case builders
# Each returns CLI argv (a list) or a zero-argument callable that must raise a SnacsError.

def _corrupt_fashion_mnist(tmp: Path) -> list[str]:
    root = tmp / "fm"
    root.mkdir()
    for split, n in (("train", 20), ("t10k", 10)):
        _idx_gz(root / f"{split}-images-idx3-ubyte.gz", torch.zeros(n, 28, 28), truncate=40)
        _idx_gz(root / f"{split}-labels-idx1-ubyte.gz", torch.arange(n) % 10)
    return prune_argv(tmp, "--dataset", "fashion-mnist", "--data-root", str(root))


def _corrupt_checkpoint(tmp: Path) -> list[str]:
    bad = tmp / "bad.pt"
    bad.write_bytes(b"PK\x03\x04 this is not a checkpoint" * 3)
    return prune_argv(tmp, "--checkpoint", str(bad))


def _mismatched_checkpoint(tmp: Path) -> list[str]:
    sd = tmp / "vgg.pt"
    torch.save(create_model("vgg16", width=0.25).state_dict(), sd)
    return prune_argv(tmp, "--checkpoint", str(sd))


def _nan_checkpoint(tmp: Path) -> list[str]:
    m = create_model("simplecnn")
    with torch.no_grad():
        m.features[4].weight[0, 0, 0, 0] = float("nan")
    sd = tmp / "nan.pt"
    torch.save(m.state_dict(), sd)
    return prune_argv(tmp, "--checkpoint", str(sd))


def _exploding_activations(tmp: Path) -> Callable[[], object]:
    from snacs.data import synthetic

    m = create_model("simplecnn").eval()
    with torch.no_grad():  # finite weights whose activations overflow float32 (a diverged model)
        for conv in (m.features[0], m.features[4], m.features[8]):
            conv.weight.mul_(1e15)
    data = synthetic("train", n_per_class=6, seed=0)
    return lambda: SNACS(**FAST).fit(m, data)


def _missing_class(last: bool) -> Callable[[Path], Callable[[], object]]:
    def build(tmp: Path):
        from snacs.data import synthetic

        data = synthetic("train", n_per_class=10, seed=0)
        gone = 9 if last else 3
        data = data.subset(torch.nonzero(data.labels != gone).flatten())
        return lambda: SNACS(**FAST).fit(create_model("simplecnn"), data)
    return build


def _settings_differ(tmp: Path) -> list[str]:
    out = tmp / "out"
    out.mkdir()
    (out / "settings.json").write_text(json.dumps({"model": "simplecnn", "groups": 8}))
    return prune_argv(tmp)


def _settings_differ_overwrite(tmp: Path) -> list[str]:
    # --overwrite passes the settings check: the run goes on to the next (deliberate) error
    _settings_differ(tmp)
    return prune_argv(tmp, "--overwrite", "--samples-per-class", "500")


def _resume_other_model(tmp: Path) -> list[str]:
    out = tmp / "out"
    out.mkdir()
    torch.save({"model": create_model("vgg16", width=0.25).state_dict(), "optimizer": {},
                "epoch": 0, "result": {}}, out / "last.pt")
    return ["train", "--model", "simplecnn", "--dataset", "synthetic", "--epochs", "2",
            "--resume", "--out", str(out), "--no-progress"]


def _resume_truncated(tmp: Path) -> list[str]:
    out = tmp / "out"
    out.mkdir()
    buf = io.BytesIO()
    torch.save({"model": create_model("simplecnn").state_dict(), "epoch": 0}, buf)
    (out / "last.pt").write_bytes(buf.getvalue()[: len(buf.getvalue()) // 2])
    return ["train", "--model", "simplecnn", "--dataset", "synthetic", "--epochs", "2",
            "--resume", "--out", str(out), "--no-progress"]


def _config(tmp: Path, text: str) -> list[str]:
    cfg = tmp / "c.yaml"
    cfg.write_text(text)
    argv = prune_argv(tmp, "--config", str(cfg))
    i = argv.index("--groups")  # flags on the command line win over the file
    return argv[:i] + argv[i + 2:]


_Usage = collections.namedtuple("_Usage", "total used free")


@dataclass
class Case:
    """One bad input: how to produce it and the fragments its message must contain."""

    name: str
    build: Callable[[Path], list[str] | Callable[[], object]]
    fragments: tuple[str, ...]
    early: bool = True  # must fail before the activation pass
    patches: tuple[tuple[str, object], ...] = ()


CASES: list[Case] = [
    Case("unknown model name", lambda t: prune_argv(t, model="resnet9000"),
         ("unknown model 'resnet9000'", "available models", "simplecnn")),
    Case("unknown dataset name", lambda t: prune_argv(t, "--dataset", "mnist-x"),
         ("unknown dataset 'mnist-x'", "available:", "synthetic")),
    Case("unknown estimator name", lambda t: prune_argv(t, "--estimator", "mine"),
         ("unknown estimator 'mine'", "choose one of", "edge")),
    Case("unknown phi (Python API)", lambda t: lambda: SNACS(phi="cos").fit(None, None),
         ("unknown phi 'cos'", "choose weight")),
    Case("unknown granularity (Python API)",
         lambda t: lambda: SNACS(granularity="channel").fit(None, None),
         ("unknown granularity 'channel'", "choose filter or connection")),
    Case("unknown probe (Python API)", lambda t: lambda: SNACS(probe="tree").fit(None, None),
         ("unknown probe 'tree'", "choose one of")),
    Case("unknown sensitivity rule (Python API)",
         lambda t: lambda: SNACS(sensitivity="max").fit(None, None),
         ("unknown sensitivity 'max'", "choose one of")),
    Case("unknown config-file key", lambda t: _config(t, "prune:\n  granulrity: filter\n"),
         ("unknown option(s) granulrity", "valid options")),
    Case("missing data directory",
         lambda t: prune_argv(t, "--dataset", "fashion-mnist", "--data-root", str(t / "nowhere")),
         ("not found in", "nowhere", "--data-root")),
    Case("data directory is a file",
         lambda t: (t / "f").write_text("x") and prune_argv(t, "--dataset", "fashion-mnist",
                                                             "--data-root", str(t / "f")),
         ("not found in", "--data-root")),
    Case("corrupt (truncated) data file", _corrupt_fashion_mnist,
         ("train-images-idx3-ubyte.gz", "corrupt or truncated", "reinstall the dataset")),
    Case("checkpoint file missing",
         lambda t: prune_argv(t, "--checkpoint", str(t / "missing.pt")),
         ("missing.pt does not exist", "give the path")),
    Case("corrupt checkpoint file", _corrupt_checkpoint,
         ("cannot read checkpoint", "bad.pt")),
    Case("checkpoint of another architecture", _mismatched_checkpoint,
         ("does not match the model", "missing key(s): features.5.weight",
          "unexpected key(s)", "Pass the --model and --width")),
    Case("model built for other inputs (1-channel model, 3-channel data)",
         lambda t: prune_argv(t, "--checkpoint", _save_model_file(t, "gray", in_channels=1),
                              model=None),
         ("cannot run on the data's inputs of shape (3, 32, 32)",
          "Use the dataset the model was trained on")),
    Case("model with fewer outputs than the data's classes",
         lambda t: prune_argv(t, "--checkpoint", _save_model_file(t, "five", num_classes=5),
                              model=None),
         ("5 outputs but the data has 10 classes",)),
    Case("fewer samples per class than requested",
         lambda t: prune_argv(t, "--samples-per-class", "500"),
         ("10 class(es) have fewer than 500 samples", "lower --samples-per-class to at most 100")),
    Case("a class missing from the calibration data", _missing_class(last=False),
         ("class 3 (class3): 0 available", "every class has samples")),
    Case("the last class missing from the calibration data", _missing_class(last=True),
         ("class 9 (class9): 0 available",)),
    Case("groups < 1", lambda t: prune_argv(t, "--groups", "0"),
         ("groups must be a positive integer, got 0", "G = min(channels, groups)")),
    Case("non-integer groups (config file)", lambda t: _config(t, "groups: 2.5\n"),
         ("groups must be a positive integer, got 2.5",)),
    Case("samples per class < 2", lambda t: prune_argv(t, "--samples-per-class", "1"),
         ("samples_per_class must be an integer >= 2", "--samples-per-class 250")),
    Case("target above 1", lambda t: prune_argv(t, "--target", "1.5"),
         ("strictly between 0 and 1", "got 1.5")),
    Case("target of 0", lambda t: prune_argv(t, "--target", "0"),
         ("strictly between 0 and 1", "got 0.0")),
    Case("target beyond a fixed per-layer cap",
         lambda t: prune_argv(t, "--limits", "0.1", "--target", "0.9"),
         ("beyond what the per-layer limits allow", "fixed cap of 10%", "lower --target")),
    Case("global mode without q", lambda t: prune_argv(t, "--mode", "global"),
         ("mode 'global' needs q in [0, 1]", "--q 0.5")),
    Case("limit fraction outside (0, 1)", lambda t: prune_argv(t, "--limit-fraction", "1.5"),
         ("limit_fraction must be in (0, 1)",)),
    Case("workers < 1", lambda t: prune_argv(t, "--workers", "0"),
         ("workers must be a positive integer", "--workers 1")),
    Case("non-finite weights (NaN in the checkpoint)", _nan_checkpoint,
         ("non-finite (NaN or inf) values in features.4.weight", "lower learning rate")),
    Case("non-finite activations (a diverged model)", _exploding_activations,
         ("non-finite activations", "diverged"), early=False),
    Case("output directory holds a run with other settings", _settings_differ,
         ("holds a run with other settings", "choose another --out or pass --overwrite")),
    Case("--overwrite accepts a directory with other settings", _settings_differ_overwrite,
         ("fewer than 500 samples",)),
    Case("unwritable output directory",
         lambda t: (t / "file").write_text("x") and prune_argv(t) + ["--out", str(t / "file/o")],
         ("is not writable", "choose another --out")),
    Case("not enough disk space for the activation cache", lambda t: prune_argv(t),
         ("not enough free disk space", "MiB needed", "choose another --out"),
         patches=(("shutil.disk_usage", lambda p: _Usage(10**9, 10**9, 1024)),)),
    Case("--resume with a last.pt of another model", _resume_other_model,
         ("was written for a different model", "missing: features.5.weight",
          "delete it (or choose another --out) to start over")),
    Case("--resume with a truncated last.pt", _resume_truncated,
         ("cannot read training state", "last.pt", "delete it to start over")),
]


def _no_activation_pass(*a, **k):
    raise AssertionError("validation let a bad input reach the activation pass")


def run_case(case: Case, tmp: Path) -> str:
    """Produce the bad input, run it, check the failure and return the error message."""
    tmp.mkdir(parents=True, exist_ok=True)
    with contextlib.ExitStack() as stack:
        for target, value in case.patches:
            stack.enter_context(mock.patch(target, value))
        if case.early:
            stack.enter_context(mock.patch("snacs.activations.collect_activations",
                                           _no_activation_pass))
        what = case.build(tmp)
        if isinstance(what, list):
            err = io.StringIO()
            with contextlib.redirect_stderr(err):
                code = main(what)
            text = err.getvalue()
            lines = [ln for ln in text.splitlines() if ln.startswith("snacs: error:")]
            assert code == 2, (code, text)
            assert len(lines) == 1 and "Traceback" not in text, text
            message = lines[0][len("snacs: error: "):]
        else:
            try:
                what()
            except SnacsError as e:
                message = str(e)
            else:
                raise AssertionError(f"{case.name}: no error raised")
    for fragment in case.fragments:
        assert fragment in message, (fragment, message)
    return message


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_bad_input(case, tmp_path):
    run_case(case, tmp_path)


def test_at_least_fifteen_cases():
    assert len(CASES) >= 15 and len({c.name for c in CASES}) == len(CASES)


# --------------------------------------------------------------------------- rules and bounds

def test_groups_above_channels_are_clamped(synth):
    """--groups larger than a layer's channel count means one filter per group (SPEC §1)."""
    model = create_model("simplecnn").eval()
    p = SNACS(**(FAST | {"groups": 10**6, "limits": 0.5})).fit(model, synth)
    for pair in p.topology_.pairs:
        assert p.scores_[pair.name].shape == (pair.n_child, pair.n_parent)


@pytest.mark.parametrize("granularity", ["filter", "connection"])
def test_target_bound_never_refuses_a_reachable_target(granularity, synth):
    """The early check's bound is at least what the real scores can remove under the cap."""
    from snacs.plan import make_plan
    from snacs.validate import check_target_reachable

    model = create_model("vgg16", width=0.25).eval()
    p = SNACS(**(FAST | {"limits": 0.4, "granularity": granularity})).fit(model, synth)
    best = make_plan(model, p.topology_, p.scores_, p.limits_, p.sensitivity_,
                     granularity=granularity, mode="global", q=1.0, groups=4)
    most = best.predicted["weights_removed"]
    assert most > 0
    check_target_reachable(model, p.topology_, 0.4, p.sensitivity_, granularity=granularity,
                           target=most, target_metric="params", groups=4)


def test_disk_estimate_scales_with_samples_and_channels():
    from snacs.pairs import find_topology
    from snacs.validate import estimate_run_bytes

    model = create_model("simplecnn")
    topo = find_topology(model, (3, 32, 32))
    channels = sum(p.n_parent + p.n_child for p in topo.pairs)
    assert estimate_run_bytes(1000, topo) == 1000 * channels * 4 * 2
    assert estimate_run_bytes(1000, topo, model) > estimate_run_bytes(1000, topo)


def test_truncated_cache_entry_is_recomputed_not_trusted(tmp_path, synth, caplog):
    """A cache file cut short (or empty, or of the wrong shape) is ignored and rewritten."""
    import numpy as np

    model = create_model("simplecnn").eval()
    cache = tmp_path / "cache"
    a = SNACS(**FAST, cache_dir=str(cache)).fit(model, synth)
    files = sorted(cache.glob("*.npy"))
    assert len(files) == len(a.pairs_)
    files[0].write_bytes(files[0].read_bytes()[:-7])  # truncated data
    files[1].write_bytes(b"")  # empty file (np.load raises EOFError)
    np.save(files[2], np.zeros((1, 1)))  # readable but the wrong shape
    with caplog.at_level("WARNING", logger="snacs.scores"):
        b = SNACS(**FAST, cache_dir=str(cache)).fit(model, synth)
    assert sum("ignoring" in r.getMessage() for r in caplog.records) == 3
    assert b.plan_.checksum() == a.plan_.checksum()
    for k in a.scores_:
        np.testing.assert_array_equal(a.scores_[k], b.scores_[k])
    for f in files[:3]:  # rewritten whole, with the right matrix
        assert any(np.array_equal(np.load(f), m) for m in a.scores_.values()), f


def test_outputs_are_written_atomically(tmp_path, monkeypatch):
    """A write that dies midway leaves the old file intact and no partial file under its name."""
    import snacs.io as sio

    target = tmp_path / "result.json"
    sio.atomic_write_json(target, {"v": 1})

    def dying_dumps(*a, **k):
        raise KeyboardInterrupt  # as a signal would, in the middle of the write

    monkeypatch.setattr(sio.json, "dumps", dying_dumps)
    with pytest.raises(KeyboardInterrupt):
        sio.atomic_write_json(target, {"v": 2})
    monkeypatch.undo()
    assert json.loads(target.read_text()) == {"v": 1}
    assert [p.name for p in tmp_path.iterdir()] == ["result.json"]

    def dying_save(obj, f, *a, **k):
        Path(f).write_bytes(b"partial")
        raise KeyboardInterrupt

    monkeypatch.setattr(sio.torch, "save", dying_save)
    with pytest.raises(KeyboardInterrupt):
        sio.atomic_torch_save({"x": 1}, tmp_path / "last.pt")
    assert not (tmp_path / "last.pt").exists()
    assert [p.name for p in tmp_path.iterdir()] == ["result.json"]


# --------------------------------------------------------------------------- determinism

def test_same_inputs_bit_identical_scores_limits_plan(synth):
    """Two fits in one process, probe limits on: identical scores, limits and plan, bit for bit."""
    import numpy as np

    model = create_model("simplecnn").eval()
    params = FAST | {"grid_step": 10}
    a = SNACS(**params).fit(model, synth)
    b = SNACS(**params).fit(model, synth)
    for k in a.scores_:
        assert a.scores_[k].tobytes() == b.scores_[k].tobytes()
    assert a.limits_ == b.limits_
    for k in a.limit_curves_:
        assert np.array_equal(a.limit_curves_[k].accuracy, b.limit_curves_[k].accuracy)
    assert a.protected_ == b.protected_
    assert a.plan_.checksum() == b.plan_.checksum()


@pytest.mark.slow
@pytest.mark.parametrize("estimator", ["gaussian_copula", "edge"])
def test_one_vs_two_workers_bit_identical(estimator, synth):
    """Scores from a 2-process pool equal those of the serial path, bit for bit."""
    model = create_model("simplecnn").eval()
    params = FAST | {"estimator": estimator, "grid_step": 10}
    a = SNACS(**params, workers=1).fit(model, synth)
    b = SNACS(**params, workers=2).fit(model, synth)
    for k in a.scores_:
        assert a.scores_[k].tobytes() == b.scores_[k].tobytes(), k
    assert a.limits_ == b.limits_
    assert a.plan_.checksum() == b.plan_.checksum()


# --------------------------------------------------------------------------- the report file

CHECKS = [
    {"check": "the same inputs and seed give bit-identical scores, limits, protection and plan "
              "(two fits)", "test": "tests/test_reliability.py::test_same_inputs_bit_identical_scores_limits_plan"},
    {"check": "1 vs 2 scoring worker processes give bit-identical scores, limits and plan "
              "(the default gaussian_copula and edge estimators)", "test": "tests/test_reliability.py::test_one_vs_two_workers_bit_identical"},
    {"check": "a scoring run (separate process) killed with SIGKILL once two pairs are cached "
              "resumes from the cache, recomputes a damaged entry, and gives the plan checksum "
              "of an uninterrupted run", "test": "tests/test_interrupt.py::test_prune_killed_midway_resumes_to_the_same_plan"},
    {"check": "`snacs train` killed after epoch 1 and rerun with --resume gives weights "
              "bit-identical to an uninterrupted run", "test": "tests/test_interrupt.py::test_train_killed_and_resumed_is_bit_identical"},
    {"check": "a truncated, empty or wrong-shaped score cache entry is recomputed, never trusted",
     "test": "tests/test_reliability.py::test_truncated_cache_entry_is_recomputed_not_trusted"},
    {"check": "a truncated last.pt is reported (not loaded) on --resume",
     "test": "tests/test_interrupt.py::test_truncated_last_pt_is_reported"},
    {"check": "outputs are written atomically: an interrupted write leaves the old file and no "
              "partial file", "test": "tests/test_reliability.py::test_outputs_are_written_atomically"},
    {"check": "under torchrun (2 ranks, gloo) every rank computes the same plan checksum, rank 0 "
              "alone writes, and the fine-tuned weights are identical on both ranks",
     "test": "tests/test_distributed.py::test_torchrun_prune_and_finetune_agree"},
    {"check": "any finite input (N 5..200, dims 1..12, constant or duplicated columns) gives "
              "finite, non-negative CMI from edge, gaussian and acmi_matrix (every estimator)",
     "test": "tests/test_properties.py"},
    {"check": "random scores, limits and protected sets give plans that respect the limits and "
              "never remove protected groups", "test": "tests/test_properties.py::test_plan_respects_limits_and_protection"},
    {"check": "ResNet-50 activations, 224x224, 10 samples x 100 classes: peak RSS <= 4 GiB",
     "test": "benchmarks/memory_resnet50.py"},
]


def build_report(tmp: Path) -> dict:
    bad = []
    for i, case in enumerate(CASES):
        message = run_case(case, tmp / f"case{i}").replace(str(tmp / f"case{i}"), "<dir>")
        bad.append({"case": case.name, "message": message, "asserts": list(case.fragments),
                    "early": case.early,
                    "test": f"tests/test_reliability.py::test_bad_input[{case.name}]"})
    return {"bad_input": bad, "checks": CHECKS}


def test_report_file_is_current():
    """benchmarks/results/reliability.json lists exactly these cases and checks."""
    data = json.loads(RESULT.read_text())
    assert [b["case"] for b in data["bad_input"]] == [c.name for c in CASES]
    assert [b["asserts"] for b in data["bad_input"]] == [list(c.fragments) for c in CASES]
    assert data["checks"] == CHECKS
    for c in CHECKS:  # every named test exists
        path, _, name = c["test"].partition("::")
        text = (ROOT / path).read_text()
        assert not name or f"def {name}(" in text, c["test"]


if __name__ == "__main__":
    import tempfile

    from snacs.io import atomic_write_json

    torch.set_num_threads(2)
    with tempfile.TemporaryDirectory() as d:
        report = build_report(Path(d))
    atomic_write_json(RESULT, report)
    print(f"wrote {RESULT} ({len(report['bad_input'])} bad-input cases, "
          f"{len(report['checks'])} checks)", file=sys.stderr)
