"""`snacs prune` with fine-tuning under torchrun: 2 processes, gloo on CPU.

Every rank computes the plan (deterministic: same data, weights and seed) and the ranks compare
its checksum with `all_gather_object` before fine-tuning (`snacs.validate.check_ranks_agree`);
fine-tuning runs DistributedDataParallel; rank 0 alone writes the outputs. A small driver wraps
the library to record, per rank, the plan checksum, every file written and a hash of the
fine-tuned state_dict, and the test compares them.
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import textwrap

import pytest

import snacs

pytestmark = pytest.mark.slow

DRIVER = textwrap.dedent("""
    import hashlib, json, os, sys
    import snacs.io, snacs.train, snacs.validate
    from snacs.cli import main

    rank, log_dir = os.environ["RANK"], sys.argv[1]
    record = {"writes": [], "plan": None, "weights": None}

    def state_hash(model):
        h = hashlib.sha256()
        for k, v in sorted(model.state_dict().items()):
            h.update(k.encode()); h.update(v.detach().contiguous().numpy().tobytes())
        return h.hexdigest()

    real_train, real_agree, real_path = (snacs.train.train, snacs.validate.check_ranks_agree,
                                         snacs.io._atomic_path)

    def train(model, *a, **k):
        res = real_train(model, *a, **k)
        record["weights"] = state_hash(model)
        return res

    def agree(value, what):
        record["plan"] = value
        return real_agree(value, what)

    def atomic_path(path):
        record["writes"].append(str(path))
        return real_path(path)

    snacs.train.train, snacs.validate.check_ranks_agree = train, agree
    snacs.io._atomic_path = atomic_path
    code = main(sys.argv[2:])
    with open(os.path.join(log_dir, f"rank{rank}.json"), "w") as f:
        json.dump(record, f)
    sys.exit(code)
""")


def _state_hash(sd: dict) -> str:
    h = hashlib.sha256()
    for k, v in sorted(sd.items()):
        h.update(k.encode())
        h.update(v.detach().contiguous().numpy().tobytes())
    return h.hexdigest()


@pytest.mark.parametrize("granularity", ["filter", "connection"])
def test_torchrun_prune_and_finetune_agree(granularity, tmp_path):
    driver = tmp_path / "driver.py"
    driver.write_text(DRIVER)
    out, logs = tmp_path / "out", tmp_path / "logs"
    logs.mkdir()
    args = ["prune", "--model", "simplecnn", "--dataset", "synthetic", "--samples-per-class",
            "10", "--estimator", "gaussian", "--groups", "8", "--grid-step", "20",
            "--granularity", granularity, "--finetune-epochs", "2", "--batch-size", "32",
            "--lr", "0.02", "--no-latency", "--no-progress", "--threads", "1", "--out", str(out)]
    env = dict(os.environ, OMP_NUM_THREADS="1", GLOO_SOCKET_IFNAME="lo", PYTHONUNBUFFERED="1")
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node",
           "2", str(driver), str(logs), *args]
    r = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=900)
    assert r.returncode == 0, (r.stdout[-2000:], r.stderr[-4000:])

    rec = [json.loads((logs / f"rank{i}.json").read_text()) for i in (0, 1)]
    result = json.loads((out / "result.json").read_text())
    # the same plan on both ranks, the one reported
    assert rec[0]["plan"] == rec[1]["plan"] == result["plan_checksum"]
    # DDP kept the replicas identical: weights and BN statistics, bit for bit
    assert rec[0]["weights"] is not None
    assert rec[0]["weights"] == rec[1]["weights"]
    # the model rank 0 saved is the fine-tuned one
    saved = snacs.load(out / "model.pt")
    assert result["finetune"]["epochs_run"] == 2 and result["accuracy_finetuned"] is not None
    if granularity == "filter":  # (connection: the saved model is the exported slim network)
        assert _state_hash(saved.state_dict()) == rec[0]["weights"]
    # rank 0 alone writes outputs; rank 1 writes nothing but (identical) score cache entries
    assert any(w.endswith("model.pt") for w in rec[0]["writes"])
    assert all("/cache/" in w and w.endswith(".npy") for w in rec[1]["writes"]), rec[1]["writes"]
