"""Benchmarks: each module runs as `python -m benchmarks.<name>`, writes
`benchmarks/results/<name>.json` atomically and exposes `markdown(result) -> str` for the report."""

from __future__ import annotations

import json
import os
import platform
import subprocess
from pathlib import Path
from typing import Any

RESULTS = Path(__file__).resolve().parent / "results"


def write_json(name: str, result: dict[str, Any]) -> Path:
    """Write `result` to benchmarks/results/<name>.json via a temporary file and a rename."""
    from snacs.io import atomic_write_text

    path = RESULTS / f"{name}.json"
    atomic_write_text(path, json.dumps(result, indent=1, sort_keys=False) + "\n")
    return path


def environment() -> dict[str, Any]:
    """Versions, CPU count and git commit, recorded with every result."""
    import numpy
    import scipy
    import torch

    try:
        commit = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, check=False,
            cwd=Path(__file__).resolve().parent,
        ).stdout.strip()
    except OSError:
        commit = ""
    return {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "numpy": numpy.__version__,
        "scipy": scipy.__version__,
        "cpu_count": os.cpu_count(),
        "machine": platform.machine(),
        "cpu": cpu_model(),
        "git_commit": commit,
    }


def cpu_model() -> str:
    """The CPU's model name and instruction-set level, so timings from different machines can be
    told apart (machines of one kind here differed 2x in speed)."""
    info = {}
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            key, _, val = line.partition(":")
            info.setdefault(key.strip(), val.strip())
    except OSError:
        pass
    name, flags = info.get("model name") or platform.processor(), set(info.get("flags", "").split())
    level = next((f for f in ("avx512f", "avx2", "avx") if f in flags), "")
    return f"{name} ({level})" if level else name


def table_key(base_ms: float | None) -> float | None:
    """A latency table's identity for comparisons: its base latency (ms), rounded so that equal
    tables compare equal."""
    return round(base_ms, 9) if base_ms else None


def priced_by(cell: dict) -> float | None:
    """`table_key` of the per-layer table that priced a latency-budget cell (None for a cell with
    no latency target). Cells priced by different tables (timed on different machines) are not
    comparable."""
    return table_key((cell.get("latency_target") or {}).get("table_base_ms"))
