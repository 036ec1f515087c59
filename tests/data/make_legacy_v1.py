"""Writes the version-1 snacs model files in this folder (run once, with snacs at commit 4ffcec1).

Version 1 is the format `snacs.save` wrote before the architecture-plus-kept-channels format:
`kind="registry"` (spec + layer shapes + state_dict) and `kind="pickle"` (the whole module).
Each file carries a fixed input and the output the saved model gave on it, in `extra`, so the
test that loads it checks the numbers, not only that it loads.

    PYTHONPATH=src python tests/data/make_legacy_v1.py
"""

from pathlib import Path

import torch
from torch import nn

import snacs
from snacs.data import synthetic

HERE = Path(__file__).parent


def main() -> None:
    torch.manual_seed(0)
    model = snacs.create_model("simplecnn", width=0.5).eval()
    data = synthetic("train", n_per_class=12, seed=0)
    pruned, _ = snacs.prune(model, data, estimator="gaussian", samples_per_class=6, groups=8,
                            grid_step=10, limits=0.5, measure_latency=False)
    pruned.eval()
    x = torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        y = pruned(x)
    snacs.save(pruned, HERE / "legacy_v1_registry.pt", extra={"check_input": x, "check_output": y})

    torch.manual_seed(0)
    seq = nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
                        nn.Linear(4, 3)).eval()
    with torch.no_grad():
        y2 = seq(x)
    snacs.save(seq, HERE / "legacy_v1_pickle.pt", extra={"check_input": x, "check_output": y2})


if __name__ == "__main__":
    main()
