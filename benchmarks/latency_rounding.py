"""Does rounding the kept channel counts to a multiple of R make a pruned model faster per MAC?

    python -m benchmarks.latency_rounding --suite fmnist-resnet20 --cell snacs__params70__seed0

Takes one finished cell of `benchmarks.compare` (its recorded removal), and for R in 1, 4, 8, 16
keeps ceil(kept / R)·R channels per group (removing fewer), then times base and pruned model back
to back (eager and frozen TorchScript, batch 1 and 64, one thread). Records the ratio of the
latency cut to the MACs cut for each. Writes benchmarks/results/latency_rounding.json.
"""

from __future__ import annotations

import argparse
import copy
import json
import sys
from datetime import datetime, timezone

import numpy as np

from benchmarks import RESULTS, environment, write_json
from benchmarks import compare as C

SETTINGS = {"bs1": {"batch_size": 1, "repeats": 40}, "bs64": {"batch_size": 64, "repeats": 10},
            "bs1_ts": {"batch_size": 1, "repeats": 40, "frozen": True},
            "bs64_ts": {"batch_size": 64, "repeats": 10, "frozen": True}}


def markdown(r: dict) -> str:
    """The BENCHMARKS.md section (called by benchmarks.report)."""
    names = {"bs1": "batch 1", "bs64": "batch 64", "bs1_ts": "batch 1 TorchScript",
             "bs64_ts": "batch 64 TorchScript"}
    head = ["kept channels rounded up to", "MACs cut (%)"] + [f"ratio {names[k]}" for k in names]
    lines = [f"Cell `{r['cell']}` of {r['suite']}; ratio = latency cut / MACs cut (target ≥ 0.7), "
             f"one thread, base and pruned timed back to back; median (range) of {r['repeats']} "
             "repeats.", "",
             "| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for row in r["rows"]:
        cells = [f"×{row['round_to']}", f"{row['macs_cut_pct']:.1f}"] + [
            f"{row[f'{k}_ratio']:.2f} ({row[f'{k}_ratio_range'][0]:.2f} to "
            f"{row[f'{k}_ratio_range'][1]:.2f})" for k in names]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    from snacs.apply import remove_channels
    from snacs.metrics import count_macs

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--suite", default="fmnist-resnet20", choices=sorted(C.SUITES))
    ap.add_argument("--cell", default="snacs__params70__seed0")
    ap.add_argument("--repeats", type=int, default=5, help="whole timings per setting")
    args = ap.parse_args(argv)
    h = C.Harness(C.SUITES[args.suite], results_dir=C.BENCH_RUNS / "latency_rounding")
    rec = json.loads((RESULTS / f"compare_{args.suite}.json").read_text())["cells"][args.cell]
    m0 = count_macs(h.model, h.shape)
    rows = []
    for r in (1, 4, 8, 16):
        remove = {}
        for k, v in rec["remove"].items():
            n = h.topology.groups[int(k)].channels
            keep = min(n, -(-(n - len(v)) // r) * r)
            remove[int(k)] = v[:n - keep]
        pruned = copy.deepcopy(h.model)
        remove_channels(pruned, h.topology, remove)
        macs_cut = 100.0 * (1 - count_macs(pruned, h.shape) / m0)
        row = {"round_to": r, "macs_cut_pct": macs_cut}
        ratios = {k: [] for k in SETTINGS}
        for _ in range(args.repeats):  # one timing is noisier than the effect looked for
            base = C._latency(h.model, h.shape, SETTINGS)
            slim = C._latency(pruned.eval(), h.shape, SETTINGS)
            for k in SETTINGS:
                ratios[k].append((100.0 * (1 - slim[k] / base[k])) / macs_cut)
        for k in SETTINGS:
            row[f"{k}_ratios"] = ratios[k]
            row[f"{k}_ratio"] = float(np.median(ratios[k]))
            row[f"{k}_ratio_range"] = [min(ratios[k]), max(ratios[k])]
        rows.append(row)
        print(row, flush=True)
    write_json("latency_rounding", {
        "benchmark": "latency_rounding", "suite": args.suite, "cell": args.cell,
        "measured": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "environment": environment(), "threads": 1, "settings": SETTINGS,
        "repeats": args.repeats, "rows": rows})
    return 0


if __name__ == "__main__":
    sys.exit(main())
