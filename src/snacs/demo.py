"""`make demo`: train VGG16 (width 0.25) on Fashion-MNIST, prune it with SNACS, fine-tune, report.

Everything goes through the same command-line entry points a user would call. A previous demo's
base checkpoint is reused, and so are its cached scores.
"""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path

from snacs.cli import main as cli

OUT = Path(os.environ.get("SNACS_DEMO_OUT", "runs/demo"))
EPOCHS = os.environ.get("SNACS_DEMO_EPOCHS", "2")
FINETUNE = os.environ.get("SNACS_DEMO_FINETUNE", "1")


def run() -> int:
    t0 = time.perf_counter()
    base = OUT / "base"
    progress = [] if sys.stderr.isatty() else ["--no-progress"]
    if (base / "model.pt").is_file():
        print(f"[1/2] reusing the trained model {base / 'model.pt'}")
    else:
        print(f"[1/2] training VGG16 (width 0.25) on Fashion-MNIST for {EPOCHS} epochs ...")
        code = cli(["train", "--model", "vgg16", "--width", "0.25", "--dataset", "fashion-mnist",
                    "--epochs", EPOCHS, "--out", str(base), *progress])
        if code:
            return code
    print("[2/2] pruning with SNACS (fully automatic: per-layer limits, protected filters), "
          f"then {FINETUNE} epoch(s) of fine-tuning ...")
    code = cli(["prune", "--checkpoint", str(base / "model.pt"), "--dataset", "fashion-mnist",
                "--finetune-epochs", FINETUNE, "--out", str(OUT), *progress])
    if code:
        return code
    res = json.loads((OUT / "result.json").read_text())
    print(f"\nfinished in {time.perf_counter() - t0:.0f} s; "
          f"{res['weights_pruned_pct']:.1f} % of conv+linear weights removed, "
          f"MACs x{res['macs_reduction']:.2f} fewer.")
    print(f"open {OUT / 'report.md'} (plots: limits.png, scores.png, summary.png)")
    return 0


if __name__ == "__main__":
    sys.exit(run())
