"""Peak memory of the activation pass on ResNet-50 at ImageNet resolution (issue 7, part 6).

The calibration set of the paper's ILSVRC2012-ResNet50 benchmark at a reduced size: 10 samples
of each of 100 classes (N = 1000), 224x224 RGB inputs, batch size 25. `collect_activations`
keeps only the spatial means (N x channels per tensor), so memory is bounded by one batch's
forward pass plus N x Σ channels floats, whatever the resolution. The target is a peak resident
set size of at most 4 GiB.

The measurement runs in a fresh subprocess so `ru_maxrss` (the peak RSS of that process, KiB on
Linux) belongs to this computation alone; the RSS after building the model is recorded too.
Inputs are generated batch by batch (seeded normal noise): the full 1000 x 3 x 224 x 224 float
tensor (574 MiB) is never held, as a real loader would not hold it either.

Run: `python -m benchmarks.memory_resnet50 [--quick]`.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import resource
import time
from typing import Any

NAME = "memory_resnet50"
LIMIT_GIB = 4.0


def _rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0  # KiB on Linux


def _digest(acts) -> str:
    """sha256 of every kept mean, in pair order: equal digests mean bit-identical statistics."""
    import hashlib

    h = hashlib.sha256(acts.labels.numpy().tobytes())
    for d in (acts.parents, acts.children):
        for k, t in d.items():
            h.update(k.encode())
            h.update(t.contiguous().numpy().tobytes())
    return h.hexdigest()


def _measure(task: dict[str, Any]) -> dict[str, Any]:
    """Runs in a fresh process: build ResNet-50, then one activation pass over N samples."""
    import torch

    from snacs.activations import collect_activations
    from snacs.distributed import gather_objects
    from snacs.models import create_model
    from snacs.pairs import find_topology

    torch.set_num_threads(int(task["threads"]))
    n_classes, per_class, bs, size = (task[k] for k in ("classes", "per_class", "batch", "size"))
    n = n_classes * per_class
    torch.manual_seed(0)  # the same weights in every process (torch seeds each one randomly)
    model = create_model("resnet50", num_classes=n_classes).eval()
    shape = (3, size, size)
    topo = find_topology(model, shape)
    rss_model = _rss_mib()

    class Batches:  # sized, so that under a process group each rank takes a block of it
        def __len__(self) -> int:
            return -(-n // bs)

        def __iter__(self):
            gen = torch.Generator().manual_seed(0)
            labels = torch.arange(n) % n_classes
            for i in range(0, n, bs):
                m = min(bs, n - i)
                yield torch.randn(m, *shape, generator=gen), labels[i:i + m]

    gather_objects(None)  # a barrier: under a process group the ranks start together
    t = time.perf_counter()
    # under an initialised process group (benchmarks.distributed_scaling) each rank runs its
    # block of the batches and gathers all the means; without one this changes nothing
    acts = collect_activations(model, topo, Batches(), distributed=True)
    seconds = time.perf_counter() - t
    peak = _rss_mib()  # before hashing the means below
    return {
        "N": acts.n, "classes": n_classes, "samples_per_class": per_class, "batch_size": bs,
        "input_shape": list(shape), "threads": task["threads"], "pairs": len(topo.pairs),
        "sum_channels": int(sum(p.n_parent + p.n_child for p in topo.pairs)),
        "activations_mib": acts.nbytes() / 2**20,
        "activations_sha256": _digest(acts),
        "rss_after_model_mib": rss_model,
        "peak_rss_mib": peak,
        "seconds": seconds,
    }


TASK = {"classes": 100, "per_class": 10, "batch": 25, "size": 224}
QUICK = {"classes": 10, "per_class": 2, "size": 64}  # a smoke run of the same code path


def run(quick: bool = False, threads: int = 2) -> dict[str, Any]:
    task = TASK | {"threads": threads}
    if quick:
        task |= QUICK
    with mp.get_context("spawn").Pool(1) as pool:
        res = pool.apply(_measure, (task,))
    res["peak_rss_gib"] = res["peak_rss_mib"] / 1024.0
    res["limit_gib"] = LIMIT_GIB
    res["within_limit"] = res["peak_rss_gib"] <= LIMIT_GIB
    res["quick"] = quick
    try:
        from benchmarks import environment

        res["environment"] = environment()
    except ImportError:  # pragma: no cover - run outside the repository
        pass
    return res


def markdown(result: dict[str, Any]) -> str:
    """A short table for BENCHMARKS.md."""
    return "\n".join([
        "| model | input | N (classes x per class) | batch | peak RSS | limit | activations kept | time |",
        "|---|---|---|---|---|---|---|---|",
        f"| ResNet-50 | {'x'.join(map(str, result['input_shape']))} | {result['N']} "
        f"({result['classes']} x {result['samples_per_class']}) | {result['batch_size']} | "
        f"{result['peak_rss_gib']:.2f} GiB | {result['limit_gib']:.0f} GiB | "
        f"{result['activations_mib']:.1f} MiB | {result['seconds']:.0f} s |",
    ])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="tiny smoke run; writes no result file")
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    res = run(args.quick, args.threads)
    print(json.dumps(res, indent=1))
    if not args.quick:
        from pathlib import Path

        from snacs.io import atomic_write_json

        out = Path(__file__).resolve().parent / "results" / f"{NAME}.json"
        atomic_write_json(out, res)
        print(f"wrote {out}")


if __name__ == "__main__":
    main()
