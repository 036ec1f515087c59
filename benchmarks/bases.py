"""Commit a trained base of a benchmark suite: ``benchmarks/bases/<suite>.pt`` and its record.

    python -m benchmarks.bases --suite cifar10-resnet56 --run /work/runs/base-resnet56

``--run`` is the output directory of ``snacs train`` (``model.pt``, ``result.json``). The model
file is copied (never moved or rewritten), its sha256 and the training record (command, recipe,
per-epoch history, selected epoch, test accuracy) go to ``<suite>.json`` beside it, and every
later cell of the suite starts from that file (``benchmarks.compare.committed_base`` checks the
hash). The test accuracy is measured again here on the suite's test split.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
from pathlib import Path

from benchmarks.compare import BASES, SUITES, _datasets, file_sha256


def commit_base(suite_name: str, run: Path, *, source: str = "", bases: Path = BASES) -> dict:
    """Copy ``run/model.pt`` to ``bases/<suite>.pt`` and write its record; returns the record."""
    import snacs
    from snacs.io import atomic_write_json
    from snacs.metrics import conv_linear_weights, count_macs, count_parameters
    from snacs.train import evaluate

    suite = SUITES[suite_name]
    # a `snacs train --out` directory (model.pt, result.json) or a harness base directory
    # (runs/bench/<suite>/: base.pt, base.json)
    model_file = run / "model.pt" if (run / "model.pt").is_file() else run / "base.pt"
    if not model_file.is_file():
        raise FileNotFoundError(f"{run} holds neither model.pt nor base.pt; give the `snacs train "
                                "--out` dir or the harness's runs/bench/<suite> dir")
    bases.mkdir(parents=True, exist_ok=True)
    dest = bases / str(suite.base_file)
    fd, tmp = tempfile.mkstemp(dir=bases, prefix=f".{dest.name}.", suffix=".tmp")
    Path(tmp).unlink()
    shutil.copyfile(model_file, tmp)
    Path(tmp).replace(dest)
    model = snacs.load(dest)
    _, test = _datasets(suite)
    rec_file = next((run / f for f in ("result.json", "base.json") if (run / f).is_file()), None)
    train_record = json.loads(rec_file.read_text()) if rec_file is not None else {}
    record = {
        "suite": suite_name,
        "file": dest.name,
        "sha256": file_sha256(dest),
        "source": source or f"snacs train --out {run}",
        "model": {"name": suite.model, "width": suite.width},
        "dataset": suite.dataset,
        "test_accuracy": evaluate(model, test)["accuracy"],
        "weights": conv_linear_weights(model),
        "params": count_parameters(model),
        "macs": count_macs(model, tuple(test.image_shape)),
        "training": train_record,
    }
    atomic_write_json(dest.with_suffix(".json"), record)
    return record


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--suite", required=True, choices=sorted(k for k, s in SUITES.items() if s.base_file))
    ap.add_argument("--run", required=True, type=Path, help="`snacs train --out` directory")
    ap.add_argument("--source", default="", help="how the base was made (free text)")
    args = ap.parse_args(argv)
    rec = commit_base(args.suite, args.run, source=args.source)
    print(json.dumps({k: v for k, v in rec.items() if k != "training"}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
