"""`make demo` from a fresh clone, timed end to end (target: ≤ 10 minutes on 2 cores).

    python -m benchmarks.demo_time

Clones the current commit of this repository into a temporary directory, runs `make demo`
there (venv creation, package install, data check, training, pruning, fine-tuning, report) and
writes benchmarks/results/demo_time.json with the wall time, the demo's own time and its
result. Needs the machine's package index for the install, like `make demo` itself.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

from benchmarks import environment, write_json

ROOT = Path(__file__).resolve().parent.parent
TARGET_SECONDS = 600.0


def main() -> int:
    with tempfile.TemporaryDirectory(prefix="snacs-demo-") as d:
        clone = Path(d) / "snacs"
        subprocess.run(["git", "clone", "-q", str(ROOT), str(clone)], check=True)
        commit = subprocess.run(["git", "rev-parse", "HEAD"], cwd=clone, capture_output=True,
                                text=True, check=True).stdout.strip()
        load = os.getloadavg()[0]
        t = time.perf_counter()
        proc = subprocess.run(["make", "demo"], cwd=clone, capture_output=True, text=True)
        wall = time.perf_counter() - t
        out = proc.stdout + proc.stderr
        if proc.returncode:
            print(out[-3000:], file=sys.stderr)
            return proc.returncode
        res = json.loads((clone / "runs" / "demo" / "result.json").read_text())
        m = re.search(r"finished in (\d+) s", out)
        present = sorted(p.name for p in (clone / "runs" / "demo").iterdir())
    result = {
        "benchmark": "demo_time", "measured": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "environment": environment(), "commit": commit, "command": "git clone … && make demo",
        "target_seconds": TARGET_SECONDS, "wall_seconds": wall,
        "demo_seconds": float(m.group(1)) if m else None,
        "setup_seconds": wall - float(m.group(1)) if m else None,
        "meets_target": wall <= TARGET_SECONDS, "loadavg_1min_before": load,
        "outputs": present,
        "accuracy_before": res["accuracy_before"], "accuracy_pruned": res["accuracy_pruned"],
        "accuracy_finetuned": res["accuracy_finetuned"],
        "weights_pruned_pct": res["weights_pruned_pct"], "macs_reduction": res["macs_reduction"],
        "latency_before_ms": res["latency_before_ms"], "latency_after_ms": res["latency_after_ms"],
    }
    write_json("demo_time", result)
    print(f"make demo from a fresh clone: {wall:.0f} s (target ≤ {TARGET_SECONDS:.0f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
