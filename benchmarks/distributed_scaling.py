"""Scaling of SNACS across torch.distributed ranks: wall time and memory (issue 16, part 4).

    python -m benchmarks.distributed_scaling            # the measurement
    python -m benchmarks.distributed_scaling --quick    # a smoke run of the same code paths

Time: the whole `SNACS.fit` of ResNet-56 with one filter per group on 250 synthetic samples per
class of 10 classes (N = 2500, 3x32x32, probe "svm", mode "ul": the setting of
`benchmarks.scoring_time`, whose `time_one` is reused), on 1 rank x 1 thread and on 2 ranks x 1
thread (gloo). Under a process group `fit` splits the activation pass, the scores and the limits
across the ranks (`snacs.distributed`). A stage's wall time is the slowest rank's entry of
`timings_` (each split stage ends by gathering, so the ranks leave it together); the speed-up of
a stage is its 1-rank time over its 2-rank time. The plan checksum of every rank is recorded:
all ranks and both rank counts must give the same plan.

Memory: the activation pass of `benchmarks.memory_resnet50` (its `_measure`, reused) on ResNet-50
at 224x224 with 1,000 classes and one synthetic sample per class (N = 1000, batch 25), on 1 and
on 2 ranks: the peak resident set size of every rank, and a digest of the gathered statistics
(equal for every rank count when the gather is exact).

Every rank is a fresh process (torch.multiprocessing, spawn), so `ru_maxrss` is its own and no
run inherits another's warm caches. Writes benchmarks/results/distributed_scaling.json after
every run, one record per run; a rerun skips runs already recorded with the same settings
(`--force` reruns them). `--quick` (ResNet-20 at width 0.25, 10 samples per class; the small
memory setting of memory_resnet50) writes no file unless `--out` is given.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import tempfile
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

from benchmarks import RESULTS, environment

log = logging.getLogger("benchmarks.distributed_scaling")

NAME = "distributed_scaling"
SHARDED = ("activations", "scores", "limits")  # the stages split across ranks
CLASSES = 10
SHAPE = (3, 32, 32)
TIME_NETWORKS = {"resnet56": {"model": "resnet56", "width": 1.0, "groups": 10**6,
                              "samples_per_class": 250}}
QUICK_NETWORKS = {"resnet20-w0.25": {"model": "resnet20", "width": 0.25, "groups": 8,
                                     "samples_per_class": 10}}
MEMORY = {"classes": 1000, "per_class": 1}  # over memory_resnet50.TASK: 224x224, batch 25


# --------------------------------------------------------------------------- one rank

def _time_job(task: dict[str, Any]) -> dict[str, Any]:
    """One rank of the timing run: build the data and the model, fit once, time the stages."""
    import torch

    import snacs
    from benchmarks.scoring_time import time_one
    from snacs.data import synthetic
    from snacs.distributed import gather_objects

    data = synthetic("train", num_classes=CLASSES, n_per_class=task["samples_per_class"],
                     shape=SHAPE, seed=0)
    if task["checkpoint"]:
        model = snacs.load(task["checkpoint"])
    else:
        torch.manual_seed(0)
        model = snacs.create_model(task["model"], width=task["width"], in_channels=SHAPE[0],
                                   num_classes=CLASSES)
    model.eval()
    # what `fit` imports on first use, imported before the clock starts: on a busy machine the
    # ranks' import times differ, and the first gather would count the difference as work
    import sklearn.svm  # noqa: F401

    import snacs.estimators  # noqa: F401
    import snacs.limits  # noqa: F401
    import snacs.plan  # noqa: F401

    gather_objects(None)  # a barrier: the ranks start `fit` together (no-op on one rank)
    return time_one(model, data, groups=task["groups"], samples_per_class=task["samples_per_class"],
                    probe=task["probe"])


def _memory_job(task: dict[str, Any]) -> dict[str, Any]:
    from benchmarks.memory_resnet50 import _measure

    return _measure(task)


JOBS = {"time": _time_job, "memory": _memory_job}


def _rank_main(rank: int, ranks: int, threads: int, job: str, task: dict[str, Any],
               tmp: str) -> None:
    """Entry point of one spawned rank: join the gloo group (when ranks > 1) and run `job`."""
    import torch

    torch.set_num_threads(threads)
    os.environ.setdefault("GLOO_SOCKET_IFNAME", "lo")
    import torch.distributed as dist

    if ranks > 1:
        dist.init_process_group("gloo", init_method=f"file://{tmp}/store", rank=rank,
                                world_size=ranks, timeout=timedelta(minutes=60))
    try:
        res = JOBS[job](task)
        Path(tmp, f"rank{rank}.json").write_text(json.dumps(res | {"rank": rank}))
    finally:
        if ranks > 1:
            dist.destroy_process_group()


def launch(job: str, task: dict[str, Any], ranks: int, threads: int) -> list[dict[str, Any]]:
    """Run `job` on `ranks` fresh processes of `threads` threads each; their results by rank."""
    import torch.multiprocessing as mp

    with tempfile.TemporaryDirectory(prefix="snacs-dist-") as tmp:
        mp.spawn(_rank_main, args=(ranks, threads, job, task, tmp), nprocs=ranks, join=True)
        return [json.loads(Path(tmp, f"rank{r}.json").read_text()) for r in range(ranks)]


# --------------------------------------------------------------------------- records

def _key(r: dict[str, Any]) -> tuple:
    if r["part"] == "time":
        return ("time", r["network"], r["weights"], r["probe"], r["ranks"], r["threads_per_rank"])
    return ("memory", r["ranks"], r["threads_per_rank"], r["classes"], r["samples_per_class"],
            r["input_shape"][-1])


def _time_record(spec: dict, net: str, kind: str, how: str, probe: str, ranks: int,
                 threads: int, per_rank: list[dict]) -> dict[str, Any]:
    stages = {k: max(r["stages"][k] for r in per_rank) for k in per_rank[0]["stages"]}
    first = per_rank[0]
    return {
        "part": "time", "network": net, "model": spec["model"], "width": spec["width"],
        "groups": spec["groups"], "weights": kind, "weights_source": how, "probe": probe,
        "ranks": ranks, "threads_per_rank": threads,
        "samples_per_class": first["samples_per_class"], "N": first["N"], "pairs": first["pairs"],
        "estimator": first["estimator"],
        "stages": stages, "total_seconds": max(r["total_seconds"] for r in per_rank),
        "plan_checksum": first["plan_checksum"],
        "ranks_agree": len({r["plan_checksum"] for r in per_rank}) == 1,
        "per_rank": [{k: r[k] for k in ("rank", "stages", "total_seconds", "loadavg_1min_before",
                                        "loadavg_1min_after")} for r in per_rank],
    }


def _memory_record(ranks: int, threads: int, per_rank: list[dict]) -> dict[str, Any]:
    first = per_rank[0]
    return {
        "part": "memory", "model": "resnet50", "ranks": ranks, "threads_per_rank": threads,
        **{k: first[k] for k in ("N", "classes", "samples_per_class", "batch_size", "input_shape",
                                 "pairs", "sum_channels", "activations_mib")},
        "peak_rss_mib": [r["peak_rss_mib"] for r in per_rank],
        "peak_rss_mib_max": max(r["peak_rss_mib"] for r in per_rank),
        "rss_after_model_mib": [r["rss_after_model_mib"] for r in per_rank],
        "seconds": max(r["seconds"] for r in per_rank),
        "activations_sha256": first["activations_sha256"],
        "ranks_agree": len({r["activations_sha256"] for r in per_rank}) == 1,
    }


def summarise(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """Speed-ups and plan agreement of every recorded rank count against 1 rank."""
    out: dict[str, Any] = {"time": [], "memory": []}
    one = {_key(r)[:-2] + (r["threads_per_rank"],): r for r in runs
           if r["part"] == "time" and r["ranks"] == 1}
    for r in runs:
        if r["part"] != "time" or r["ranks"] == 1:
            continue
        base = one.get(_key(r)[:-2] + (r["threads_per_rank"],))
        if base is None:
            continue
        out["time"].append({
            "network": r["network"], "weights": r["weights"], "probe": r["probe"],
            "ranks": r["ranks"], "threads_per_rank": r["threads_per_rank"],
            "speedup": {k: base["stages"][k] / r["stages"][k] if r["stages"][k] > 0 else None
                        for k in SHARDED}
            | {"total": base["total_seconds"] / r["total_seconds"]},
            "same_plan_as_1_rank": base["plan_checksum"] == r["plan_checksum"]
            and r["ranks_agree"],
        })
    mem = [r for r in runs if r["part"] == "memory"]
    base_m = {(r["threads_per_rank"], r["classes"], r["samples_per_class"]): r for r in mem
              if r["ranks"] == 1}
    for r in sorted(mem, key=lambda r: r["ranks"]):
        b = base_m.get((r["threads_per_rank"], r["classes"], r["samples_per_class"]))
        out["memory"].append({
            "ranks": r["ranks"], "peak_rss_mib_max": r["peak_rss_mib_max"],
            "vs_1_rank": r["peak_rss_mib_max"] / b["peak_rss_mib_max"] if b else None,
            "same_activations_as_1_rank": (b["activations_sha256"] == r["activations_sha256"]
                                           and r["ranks_agree"]) if b else None,
        })
    return out


def markdown(result: dict[str, Any]) -> str:
    """Tables for BENCHMARKS.md: stage times and speed-ups, peak RSS per rank."""
    lines = ["| network | weights | ranks x threads | activations | scores | limits | total | "
             "same plan |", "|---|---|---|---|---|---|---|---|"]
    for r in sorted((r for r in result["runs"] if r["part"] == "time"), key=_key):
        s = r["stages"]
        lines.append(f"| {r['network']} | {r['weights']} | {r['ranks']} x {r['threads_per_rank']} "
                     f"| {s['activations']:.1f} s | {s['scores']:.1f} s | {s['limits']:.1f} s | "
                     f"{r['total_seconds']:.1f} s | {'yes' if r['ranks_agree'] else 'NO'} |")
    for sp in result.get("summary", {}).get("time", []):
        f = {k: "-" if v is None else f"{v:.2f}x" for k, v in sp["speedup"].items()}
        lines.append(f"| {sp['network']} | {sp['weights']} | speed-up {sp['ranks']} ranks | "
                     f"{f['activations']} | {f['scores']} | {f['limits']} | {f['total']} | "
                     f"{'yes' if sp['same_plan_as_1_rank'] else 'NO'} |")
    lines += ["", "| model | input | N | ranks x threads | peak RSS per rank | same statistics |",
              "|---|---|---|---|---|---|"]
    for r in sorted((r for r in result["runs"] if r["part"] == "memory"), key=_key):
        rss = ", ".join(f"{v / 1024:.2f}" for v in r["peak_rss_mib"])
        lines.append(f"| ResNet-50, {r['classes']} classes | {'x'.join(map(str, r['input_shape']))}"
                     f" | {r['N']} | {r['ranks']} x {r['threads_per_rank']} | {rss} GiB | "
                     f"{'yes' if r['ranks_agree'] else 'NO'} |")
    return "\n".join(lines)


# --------------------------------------------------------------------------- driver

def _write(path: Path, result: dict[str, Any]) -> None:
    from snacs.io import atomic_write_json

    result["summary"] = summarise(result["runs"])
    atomic_write_json(path, result)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--parts", default="time,memory", help="time,memory (default: both)")
    ap.add_argument("--ranks", default="1,2", help="comma list of rank counts (default: 1,2)")
    ap.add_argument("--threads", type=int, default=1, help="torch threads per rank (default: 1)")
    ap.add_argument("--weights", default="random,trained",
                    help="time part: random and/or trained (3 epochs on the synthetic set, as "
                         "benchmarks.scoring_time; trained once, reused)")
    ap.add_argument("--probe", default="svm", help="the limits' probe (default: svm)")
    ap.add_argument("--quick", action="store_true",
                    help="tiny settings, a smoke run; writes no file unless --out is given")
    ap.add_argument("--out", default=None, help="result file (default: benchmarks/results/"
                                                f"{NAME}.json; none with --quick)")
    ap.add_argument("--force", action="store_true", help="rerun runs already recorded")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s",
                        stream=sys.stdout)
    parts = args.parts.split(",")
    ranks_list = [int(r) for r in args.ranks.split(",")]
    weights = args.weights.split(",")
    if bad := [p for p in parts if p not in JOBS]:
        ap.error(f"unknown part(s) {', '.join(bad)}; choose from time, memory")
    if bad := [w for w in weights if w not in ("random", "trained")]:
        ap.error(f"unknown weights {', '.join(bad)}; choose from random, trained")
    if any(r < 1 for r in ranks_list) or args.threads < 1:
        ap.error("--ranks and --threads must be positive")
    if args.quick and "trained" in weights:
        weights = [w for w in weights if w != "trained"] or ["random"]
        log.info("--quick: random weights only")
    path = Path(args.out) if args.out else (None if args.quick else RESULTS / f"{NAME}.json")
    old = json.loads(path.read_text()) if path is not None and path.is_file() else {}
    result: dict[str, Any] = {
        "benchmark": NAME,
        "created": old.get("created") or datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "environment": environment(),
        "quick": args.quick,
        "runs": list(old.get("runs", [])),
    }

    def record(r: dict[str, Any]) -> None:
        r["measured"] = datetime.now(timezone.utc).isoformat(timespec="seconds")
        result["runs"] = [x for x in result["runs"] if _key(x) != _key(r)] + [r]
        result["updated"] = r["measured"]
        if path is not None:
            _write(path, result)

    def recorded(probe: dict[str, Any]) -> bool:
        if args.force or not any(_key(x) == _key(probe) for x in result["runs"]):
            return False
        log.info("skip %s (recorded)", _key(probe))
        return True

    if "time" in parts:
        networks = QUICK_NETWORKS if args.quick else TIME_NETWORKS
        for net, spec in networks.items():
            for kind in weights:
                ckpt, how = None, "random initialisation (seed 0)"
                for ranks in ranks_list:
                    probe = {"part": "time", "network": net, "weights": kind,
                             "probe": args.probe, "ranks": ranks,
                             "threads_per_rank": args.threads}
                    if recorded(probe):
                        continue
                    if kind == "trained" and ckpt is None:
                        ckpt, how = _trained_checkpoint(net, spec)
                    task = {**spec, "checkpoint": ckpt, "probe": args.probe}
                    log.info("timing %s (%s) on %d rank(s) x %d thread(s)", net, kind, ranks,
                             args.threads)
                    r = _time_record(spec, net, kind, how, args.probe, ranks, args.threads,
                                     launch("time", task, ranks, args.threads))
                    record(r)
                    log.info("%s, %d rank(s): %.1f s total %s, plan %s", net, ranks,
                             r["total_seconds"], {k: round(v, 1) for k, v in r["stages"].items()},
                             r["plan_checksum"][:12])
    if "memory" in parts:
        from benchmarks.memory_resnet50 import QUICK, TASK

        task = TASK | (QUICK if args.quick else MEMORY) | {"threads": args.threads}
        for ranks in ranks_list:
            probe = {"part": "memory", "ranks": ranks, "threads_per_rank": args.threads,
                     "classes": task["classes"], "samples_per_class": task["per_class"],
                     "input_shape": [3, task["size"], task["size"]]}
            if recorded(probe):
                continue
            log.info("memory: ResNet-50, %d classes, %dx%d, %d rank(s) x %d thread(s)",
                     task["classes"], task["size"], task["size"], ranks, args.threads)
            r = _memory_record(ranks, args.threads, launch("memory", task, ranks, args.threads))
            record(r)
            log.info("memory, %d rank(s): peak RSS %s MiB per rank", ranks,
                     [round(v) for v in r["peak_rss_mib"]])
    result["summary"] = summarise(result["runs"])
    print(json.dumps(result["summary"], indent=1))
    if path is not None:
        _write(path, result)
        print(f"wrote {path}")
    return 0


def _trained_checkpoint(net: str, spec: dict) -> tuple[str, str]:
    """The trained variant of benchmarks.scoring_time, trained once here (not in every rank)."""
    from benchmarks import scoring_time
    from snacs.data import synthetic

    if net not in scoring_time.NETWORKS:
        raise SystemExit(f"no trained variant of {net}; use --weights random")
    data = synthetic("train", num_classes=CLASSES, n_per_class=spec["samples_per_class"],
                     shape=SHAPE, seed=0)
    _, how = scoring_time._trained(net, data)
    return str(scoring_time.RUNS / f"{net}-synthetic.pt"), how


if __name__ == "__main__":
    sys.exit(main())
