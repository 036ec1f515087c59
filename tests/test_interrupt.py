"""A real signal kills scoring or training midway; the rerun resumes and ends where an
uninterrupted run ends, bit for bit. Nothing a killed run leaves behind is trusted when broken.

Each test runs `python -m snacs ...` in a subprocess (one torch thread, so both runs compute in
the same order), polls the output directory until the run has saved some of its work, and sends
the signal while it is still working.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
import torch

import snacs
from snacs.cli import main

pytestmark = pytest.mark.slow

PRUNE = ["prune", "--model", "vgg16", "--width", "0.25", "--dataset", "synthetic",
         "--samples-per-class", "60", "--estimator", "edge", "--groups", "32", "--workers", "1",
         "--limits", "0.5", "--no-latency", "--no-progress", "--threads", "1", "-v"]
TRAIN = ["train", "--model", "simplecnn", "--dataset", "synthetic", "--epochs", "4",
         "--batch-size", "32", "--lr", "0.05", "--no-progress", "--threads", "1"]


def _snacs(args: list[str], **kw) -> subprocess.Popen:
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONUNBUFFERED="1")
    return subprocess.Popen([sys.executable, "-m", "snacs", *args], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=env, **kw)


def _finish(proc: subprocess.Popen, timeout: float = 900) -> str:
    out, err = proc.communicate(timeout=timeout)
    assert proc.returncode == 0, err[-3000:]
    return err


def _kill_when(proc: subprocess.Popen, ready, sig: int, timeout: float = 600) -> None:
    """Send `sig` as soon as `ready()` holds; fail if the run ends first."""
    t0 = time.monotonic()
    while not ready():
        assert proc.poll() is None, "the run finished before it could be interrupted"
        assert time.monotonic() - t0 < timeout, "the run never reached the interruption point"
        time.sleep(0.05)
    proc.send_signal(sig)
    proc.communicate(timeout=120)
    assert proc.returncode == -sig


def test_prune_killed_midway_resumes_to_the_same_plan(tmp_path):
    ref, run = tmp_path / "ref", tmp_path / "run"
    _finish(_snacs(PRUNE + ["--out", str(ref)]))
    n_pairs = len(list((ref / "cache").glob("*.npy")))
    assert n_pairs == 14  # VGG16: 13 convs + 2 linear layers read by another layer

    cache = run / "cache"
    proc = _snacs(PRUNE + ["--out", str(run)])
    _kill_when(proc, lambda: cache.is_dir() and len(list(cache.glob("*.npy"))) >= 2,
               signal.SIGKILL)
    done = sorted(cache.glob("*.npy"))
    assert 2 <= len(done) < n_pairs, "killed before scoring ended"
    assert not (run / "result.json").exists()
    for f in done:  # atomic writes: whatever the killed run left under a real name is whole
        assert np.isfinite(np.load(f)).all()
    # leftovers of a write in progress are temporaries, never read as cache entries
    assert all(p.suffix == ".npy" or p.name.endswith(".tmp") for p in cache.iterdir())

    # one entry damaged after the fact (not by snacs): it must be recomputed, not trusted
    done[0].write_bytes(done[0].read_bytes()[:-16])

    err = _finish(_snacs(PRUNE + ["--out", str(run)]))  # the same command again
    assert f"ignoring unreadable cache entry {done[0]}" in err
    assert f"scores: {len(done) - 1} of {n_pairs} pairs from cache" in err
    a = json.loads((ref / "result.json").read_text())
    b = json.loads((run / "result.json").read_text())
    assert a["plan_checksum"] == b["plan_checksum"]
    assert a["layers"] == b["layers"]


def test_train_killed_and_resumed_is_bit_identical(tmp_path):
    ref, run = tmp_path / "ref", tmp_path / "run"
    _finish(_snacs(TRAIN + ["--out", str(ref)]))

    def epoch_saved() -> bool:
        last = run / "last.pt"
        if not last.is_file():
            return False
        return torch.load(last, map_location="cpu", weights_only=False)["epoch"] >= 0

    proc = _snacs(TRAIN + ["--out", str(run)])
    _kill_when(proc, epoch_saved, signal.SIGTERM)
    state = torch.load(run / "last.pt", map_location="cpu", weights_only=False)
    assert state["epoch"] < 3 and not (run / "model.pt").exists()

    _finish(_snacs(TRAIN + ["--out", str(run), "--resume"]))
    res = json.loads((run / "result.json").read_text())
    assert res["epochs_run"] == 4
    a, b = snacs.load(ref / "model.pt").state_dict(), snacs.load(run / "model.pt").state_dict()
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k
    ref_res = json.loads((ref / "result.json").read_text())
    assert ref_res["best_epoch"] == res["best_epoch"]
    assert [h["val_accuracy"] for h in ref_res["history"]] == [h["val_accuracy"] for h in res["history"]]


def test_truncated_last_pt_is_reported(tmp_path, capsys):
    out = tmp_path / "t"
    args = ["train", "--model", "simplecnn", "--dataset", "synthetic", "--batch-size", "64",
            "--no-progress", "--out", str(out)]
    assert main(args + ["--epochs", "1"]) == 0
    last = out / "last.pt"
    data = last.read_bytes()
    last.write_bytes(data[: len(data) // 3])  # what a non-atomic writer killed midway leaves
    capsys.readouterr()
    assert main(args + ["--epochs", "2", "--resume"]) == 2
    err = capsys.readouterr().err
    assert "cannot read training state" in err and str(last) in err
    assert "delete it to start over" in err and "Traceback" not in err
    assert last.read_bytes() == data[: len(data) // 3]  # the input is not overwritten
    # the user's fix (delete it) works
    last.unlink()
    assert main(args + ["--epochs", "1", "--resume"]) == 0


def test_atomic_write_leaves_no_partial_file_under_signal(tmp_path):
    """SIGKILL a process in the middle of many atomic writes: every result.json that exists
    parses, i.e. no reader ever sees a truncated file."""
    script = (
        "import sys\n"
        "from snacs.io import atomic_write_json\n"
        "big = {'x': list(range(200000))}\n"
        "for i in range(10**6):\n"
        "    big['i'] = i\n"
        f"    atomic_write_json({str(tmp_path / 'result.json')!r}, big)\n"
    )
    proc = subprocess.Popen([sys.executable, "-c", script])
    target = tmp_path / "result.json"
    t0 = []
    _kill_when(proc, lambda: target.is_file() and (t0.append(time.monotonic()) or
                                                   time.monotonic() - t0[0] > 1.0),
               signal.SIGKILL)
    assert json.loads(target.read_text())["x"][-1] == 199999
    leftovers = [p.name for p in tmp_path.iterdir() if p.name != "result.json"]
    assert all(n.startswith(".result.json.") and n.endswith(".tmp") for n in leftovers)
