"""Work split across torch.distributed ranks (`snacs.distributed`) and `snacs prune` under
torchrun (2 processes, gloo on CPU).

The helpers (shard a list, gather in rank order) are tested in one process and in a 2-rank gloo
group started with `torch.multiprocessing.spawn`, where the activation pass, the scores and the
limits split their work and must give every rank what one process computes, bit for bit.

Under torchrun (slow tests) the ranks also compare the plan checksum with `all_gather_object`
before fine-tuning (`snacs.validate.check_ranks_agree`); fine-tuning runs
DistributedDataParallel; rank 0 alone writes the outputs. A small driver wraps the library to
record, per rank, the plan checksum, every file written and a hash of the fine-tuned
state_dict, and the test compares them.
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import textwrap
from datetime import timedelta
from pathlib import Path

import numpy as np
import pytest
import torch

import snacs
from snacs import distributed as ddp
from snacs.errors import ConfigError, DataError, SnacsError

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


@pytest.mark.slow
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


# --------------------------------------------------------------------------- helpers, one process

@pytest.mark.parametrize("n", [0, 1, 2, 7, 10])
@pytest.mark.parametrize("size", [1, 2, 3])
def test_shard_range_blocks_cover_everything_in_order(n, size):
    blocks = [ddp.shard_range(n, r, size) for r in range(size)]
    assert [i for b in blocks for i in b] == list(range(n))
    assert max(len(b) for b in blocks) - min(len(b) for b in blocks) <= 1


def test_shard_deals_each_item_to_one_rank_by_cost():
    items = [f"p{i}" for i in range(9)]
    cost = [1, 9, 1, 1, 8, 1, 1, 1, 3]
    parts = [ddp.shard(items, r, 2, cost) for r in range(2)]
    assert sorted(parts[0] + parts[1]) == sorted(items)
    assert all(part == sorted(part, key=items.index) for part in parts)  # original order
    loads = [sum(cost[items.index(x)] for x in part) for part in parts]
    assert loads == [13, 13]  # p1 (9) + four of cost 1 / p4 (8) + p8 (3) + two of cost 1
    assert ddp.shard(items, 1, 2, cost) == parts[1]  # deterministic
    # without costs: round robin
    assert ddp.shard(items, 0, 2) == items[0::2] and ddp.shard(items, 1, 2) == items[1::2]
    # one rank holds everything; more ranks than items leaves some empty
    assert ddp.shard(items, 0, 1, cost) == items
    assert [len(ddp.shard(items[:2], r, 4)) for r in range(4)] == [1, 1, 0, 0]


@pytest.mark.parametrize("call, match", [
    (lambda: ddp.shard([1, 2], 2, 2), "0 <= rank < world size"),
    (lambda: ddp.shard([1, 2], 0, 0), "0 <= rank < world size"),
    (lambda: ddp.shard([1, 2], 0, 2, cost=[1.0]), "1 costs for 2 items"),
    (lambda: ddp.shard([1, 2], 0, 2, cost=[1.0, float("nan")]), "finite and non-negative"),
    (lambda: ddp.shard_range(-1, 0, 1), "negative"),
    (lambda: ddp.shard_batches(iter([(1, 2)]), 0, 2), "it has no length"),
    (lambda: ddp.gather_rows(torch.zeros(3, 2), [2]), "holds 3 rows, expected 2"),
    (lambda: ddp.gather_rows(torch.zeros(2, 2), [2, 0]), "2 row counts for 1 ranks"),
])
def test_helpers_reject_bad_input(call, match):
    with pytest.raises(ConfigError, match=match):
        call()


def test_without_a_process_group_nothing_changes(monkeypatch):
    assert ddp.world() == (0, 1) and not ddp.is_distributed()
    assert ddp.gather_objects({"a": 1}) == [{"a": 1}]
    assert ddp.call_and_gather(lambda: 5) == [5]
    with pytest.raises(DataError, match="boom"):
        ddp.call_and_gather(lambda: (_ for _ in ()).throw(DataError("boom")))
    t = torch.arange(6.0).reshape(3, 2)
    assert ddp.gather_rows(t, [3]) is t
    # torch.distributed is only looked up, never imported
    monkeypatch.delitem(sys.modules, "torch.distributed")
    assert ddp.world() == (0, 1) and "torch.distributed" not in sys.modules


def test_shard_batches_gives_the_same_batches(synth):
    from snacs.data import BatchLoader

    loader = BatchLoader(synth, 32, indices=np.arange(0, 300, 3))  # 100 samples: 32, 32, 32, 4
    whole = list(loader)
    for size in (2, 3, 5):
        parts = [list(ddp.shard_batches(loader, r, size)) for r in range(size)]
        got = [b for part in parts for b in part]
        assert len(got) == len(whole) == 4
        for (x, y), (x0, y0) in zip(got, whole, strict=True):
            assert torch.equal(x, x0) and torch.equal(y, y0)
    as_list = [(x, y) for x, y in whole]
    assert ddp.shard_batches(as_list, 1, 2) == as_list[2:]
    assert ddp.shard_batches(tuple(as_list), 0, 3) == as_list[:1]

    class Sized:  # a length but no indexing: iterated, other ranks' batches skipped
        def __len__(self):
            return len(as_list)

        def __iter__(self):
            return iter(as_list)

    block = ddp.shard_batches(Sized(), 1, 2)
    assert len(block) == 2 and list(block) == as_list[2:] and list(block) == as_list[2:]


# --------------------------------------------------------------------------- two gloo ranks

FIT = dict(samples_per_class=10, groups=8, grid_step=20, batch_size=32, seed=0)


class _Unpicklable(Exception):
    def __init__(self, message: str, *, code: int) -> None:  # pickle cannot rebuild it
        super().__init__(message)
        self.code = code


def _tiny():
    from snacs.data import synthetic

    torch.manual_seed(0)
    model = snacs.create_model("resnet20", width=0.25, num_classes=10).eval()
    return model, synthetic("train", n_per_class=30, seed=0)


def _fit_record(p) -> dict:
    return {
        "scores": {k: (v.shape, v.tobytes()) for k, v in p.scores_.items()},
        "limits": {k: v.to_dict() for k, v in p.limit_curves_.items()},
        "plan": p.plan_.checksum(),
        "n": p.n_samples_,
    }


def _acts_record(acts) -> dict:
    return {"parents": {k: (tuple(v.shape), v.numpy().tobytes()) for k, v in acts.parents.items()},
            "children": {k: (tuple(v.shape), v.numpy().tobytes())
                         for k, v in acts.children.items()},
            "labels": acts.labels.numpy().tobytes(),
            "shared": [k for k in acts.children
                       if any(acts.children[k] is acts.children[j] for j in acts.children
                              if j != k)]}


def _two_rank_worker(rank: int, tmp: str) -> None:
    torch.set_num_threads(1)
    import torch.distributed as dist

    from snacs import SNACS
    from snacs.activations import collect_activations
    from snacs.pairs import find_topology

    model, data = _tiny()
    topo = find_topology(model, (3, 32, 32))
    x = torch.stack([data[i][0] for i in range(70)])
    y = torch.as_tensor([data[i][1] for i in range(70)])
    cases = {"3 batches": [(x[i:i + 32], y[i:i + 32]) for i in range(0, 70, 32)],
             "1 batch (rank 1 idle)": [(x[:20], y[:20])]}
    # the single-process references, computed before the process group exists
    ref_acts = {k: _acts_record(collect_activations(model, topo, b, distributed=True))
                for k, b in cases.items()}
    ref_fit = {est: _fit_record(SNACS(estimator=est, **FIT).fit(model, data))
               for est in ("gaussian", "gaussian_copula")}
    ref_tensors = _fit_record(SNACS(estimator="gaussian", **FIT).fit(model, (x, y)))

    dist.init_process_group("gloo", init_method=f"file://{tmp}/store", rank=rank,
                            world_size=2, timeout=timedelta(seconds=120))
    try:
        assert ddp.world() == (rank, 2) and ddp.is_distributed()
        assert ddp.gather_objects({"rank": rank}) == [{"rank": 0}, {"rank": 1}]
        # rows in rank order, a rank without rows, dtypes kept
        local = torch.arange(6.0, dtype=torch.float32).reshape(3, 2) + 10 * rank
        got = ddp.gather_rows(local if rank == 0 else local[:1], [3, 1])
        assert torch.equal(got, torch.cat([torch.arange(6.0).reshape(3, 2),
                                           torch.tensor([[10.0, 11.0]])]))
        ids = ddp.gather_rows(torch.arange(2) if rank == 1 else torch.empty(0, dtype=torch.long),
                              [0, 2])
        assert ids.dtype == torch.long and ids.tolist() == [0, 1]
        # an error on one rank is raised on both, not left hanging in the next collective
        def fail_on_1():
            if rank == 1:
                raise DataError("rank 1 has a bad batch")
            return rank

        with pytest.raises(DataError, match="rank 1 has a bad batch"):
            ddp.call_and_gather(fail_on_1)

        def odd():
            if rank == 1:
                raise _Unpicklable("odd failure", code=3)
            return rank

        with pytest.raises(_Unpicklable if rank == 1 else SnacsError, match="odd failure"):
            ddp.call_and_gather(odd)
        assert ddp.call_and_gather(lambda: rank * 2) == [0, 2]  # the group still works
        assert ddp.from_rank0(lambda: rank + 5) == 5  # rank 0's value on every rank
        # a latency target: timings differ per rank, so rank 0 times and every rank plans alike
        lat = SNACS(target=0.2, target_metric="latency", latency_rounds=2, relax_limits=True,
                    **FIT).fit(model, data)  # the limits allocation: the probe split across ranks
        checks = ddp.gather_objects((lat.plan_.checksum(), lat.latency_["rounds"]))
        assert checks[0] == checks[1]

        # the stages split their work and every rank ends with what one process computes
        for k, b in cases.items():
            assert _acts_record(collect_activations(model, topo, b, distributed=True)) \
                == ref_acts[k], k
        for est, ref in ref_fit.items():
            assert _fit_record(SNACS(estimator=est, **FIT).fit(model, data)) == ref, est
        assert _fit_record(SNACS(estimator="gaussian", **FIT).fit(model, (x, y))) == ref_tensors
        # each rank scored only its share (the cache holds what each rank wrote)
        cache = Path(tmp) / f"cache{rank}"
        SNACS(estimator="gaussian", cache_dir=str(cache), **FIT).fit(model, data)
        mine = len(list(cache.glob("*.npy")))
        counts = ddp.gather_objects(mine)
        assert sum(counts) == len(topo.pairs) and min(counts) > 0, counts
        # bad data fails on every rank with the single-process message
        with pytest.raises(DataError, match="calibration data is empty"):
            collect_activations(model, topo, [], distributed=True)
        Path(tmp, f"done{rank}").write_text(ref_fit["gaussian"]["plan"])
    finally:
        dist.destroy_process_group()


def test_two_gloo_ranks_split_the_work_and_match_one_process(tmp_path, monkeypatch):
    import torch.multiprocessing as mp

    monkeypatch.setenv("GLOO_SOCKET_IFNAME", "lo")
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    mp.spawn(_two_rank_worker, args=(str(tmp_path),), nprocs=2, join=True)
    plans = {(tmp_path / f"done{r}").read_text() for r in (0, 1)}
    assert len(plans) == 1


# --------------------------------------------------------------------------- torchrun, zoo model

@pytest.mark.slow
def test_torchrun_plan_equals_one_process_bit_for_bit(tmp_path):
    """`snacs prune` on resnet20 (width 0.25): one process and 2 torchrun ranks give the same
    plan checksum and the same score matrices (cache entries: names hash the activations, the
    bytes are the scores); the ranks scored disjoint shares of the pairs."""
    driver = tmp_path / "driver.py"
    driver.write_text(DRIVER)
    args = ["prune", "--model", "resnet20", "--width", "0.25", "--dataset", "synthetic",
            "--samples-per-class", "20", "--grid-step", "10", "--finetune-epochs", "0",
            "--no-latency", "--no-progress", "--threads", "1"]
    env = dict(os.environ, OMP_NUM_THREADS="1", GLOO_SOCKET_IFNAME="lo", PYTHONUNBUFFERED="1")
    runs = {}
    for name, launcher in (("single", []),
                           ("torchrun", ["-m", "torch.distributed.run", "--standalone",
                                         "--nproc_per_node", "2"])):
        out, logs = tmp_path / name, tmp_path / f"{name}-logs"
        logs.mkdir()
        cmd = [sys.executable, *launcher, str(driver), str(logs), *args, "--out", str(out)]
        r = subprocess.run(cmd, capture_output=True, text=True, timeout=900,
                           env=dict(env, RANK="0") if not launcher else env)
        assert r.returncode == 0, (name, r.stdout[-2000:], r.stderr[-4000:])
        runs[name] = out
    single = json.loads((runs["single"] / "result.json").read_text())
    multi = json.loads((runs["torchrun"] / "result.json").read_text())
    assert single["plan_checksum"] == multi["plan_checksum"]
    assert single["layers"] == multi["layers"]

    def cache(out):
        return {f.name: f.read_bytes() for f in (out / "cache").glob("*.npy")}

    assert cache(runs["single"]) == cache(runs["torchrun"])
    rank_writes = [{Path(w).name for w in json.loads(
        (tmp_path / f"torchrun-logs/rank{r}.json").read_text())["writes"] if "/cache/" in w}
        for r in (0, 1)]
    assert rank_writes[0] and rank_writes[1] and not rank_writes[0] & rank_writes[1]
    assert rank_writes[0] | rank_writes[1] == set(cache(runs["single"]))


@pytest.mark.slow
def test_scaling_benchmark_quick_run(tmp_path):
    """`benchmarks.distributed_scaling --quick` runs both parts on 1 and 2 ranks, records one
    run each, finds the same plan and the same activation statistics, and resumes."""
    out = tmp_path / "scaling.json"
    root = Path(__file__).resolve().parent.parent
    env = dict(os.environ, OMP_NUM_THREADS="1", GLOO_SOCKET_IFNAME="lo",
               PYTHONPATH=os.pathsep.join([str(root / "src"), str(root),
                                           os.environ.get("PYTHONPATH", "")]))
    cmd = [sys.executable, "-m", "benchmarks.distributed_scaling", "--quick", "--out", str(out)]
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=900, env=env, cwd=root)
    assert r.returncode == 0, (r.stdout[-2000:], r.stderr[-4000:])
    res = json.loads(out.read_text())
    assert sorted((x["part"], x["ranks"]) for x in res["runs"]) == \
        [("memory", 1), ("memory", 2), ("time", 1), ("time", 2)]
    assert all(x["ranks_agree"] for x in res["runs"])
    (sp,) = res["summary"]["time"]
    assert sp["same_plan_as_1_rank"] and set(sp["speedup"]) == {"activations", "scores",
                                                                 "limits", "total"}
    assert [m["same_activations_as_1_rank"] for m in res["summary"]["memory"]] == [True, True]
    two = next(x for x in res["runs"] if x["part"] == "memory" and x["ranks"] == 2)
    assert len(two["peak_rss_mib"]) == 2 and min(two["peak_rss_mib"]) > 0
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=300, env=env, cwd=root)
    assert r.returncode == 0 and r.stdout.count("(recorded)") == 4, r.stdout[-2000:]
    assert json.loads(out.read_text())["runs"] == res["runs"]
