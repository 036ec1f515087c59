"""Latency as a pruning budget: a per-layer cost table timed on the deployment machine.

``target_metric="latency"`` removes a fraction of the measured inference time instead of a
fraction of the parameters or MACs. What a channel costs in time is not proportional to its MACs
on a CPU (small layers are dominated by overheads, wide ones by memory traffic), so snacs times
it: :func:`measure_table` runs every convolution and linear layer of the model on its own, as a
traced and frozen TorchScript module (what ``snacs export --format torchscript`` deploys), at the
batch size and thread count given, over a small grid of kept input and output channel counts.
Layers of identical shape are timed once. The table is JSON (:meth:`LatencyTable.save`), so it
can be measured on the machine the model is deployed to (``snacs latency-table``) and used
where the pruning runs (``snacs prune --target-metric latency --latency-table table.json``).

:meth:`LatencyTable.predict_ms` prices a pruned network as the sum of its layers' interpolated
times plus what the layers do not account for (activations, pooling, additions: the measured
whole-model time minus the layers' sum, kept constant, so the prediction errs on the slow side).
The allocation (:mod:`snacs.allocation`) ranks channel groups by their ACMI and stops where the
predicted latency meets the target; when the table was measured in the same process,
:class:`snacs.SNACS` then times the pruned network itself and corrects the target by the
measured shortfall (:func:`measured_removal`).
"""

from __future__ import annotations

import json
import math
import platform
import statistics
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch import nn

from snacs.errors import ConfigError
from snacs.estimators._common import torch_threads
from snacs.metrics import timed_calls

__all__ = ["LatencyTable", "measure_table", "kept_channels", "measured_removal", "channel_grid"]

TABLE_FORMAT = "snacs-latency-table"
TABLE_VERSION = 1


def channel_grid(c: int) -> list[int]:
    """Kept channel counts a layer of `c` channels is timed at: 1, c/4, c/2, 3c/4 and c."""
    return sorted({1, max(1, math.ceil(c / 4)), max(1, math.ceil(c / 2)),
                   max(1, math.ceil(3 * c / 4)), c})


def _signature(m: nn.Module, in_shape: Sequence[int]) -> str:
    if isinstance(m, nn.Conv2d):
        dw = m.groups == m.in_channels == m.out_channels and m.groups > 1
        return (f"conv{'-dw' if dw else ''}:{m.in_channels}>{m.out_channels}:k{tuple(m.kernel_size)}"
                f":s{tuple(m.stride)}:p{m.padding}:d{tuple(m.dilation)}:g{m.groups}"
                f":b{m.bias is not None}:hw{tuple(in_shape[-2:])}")
    return f"linear:{m.in_features}>{m.out_features}:b{m.bias is not None}:x{tuple(in_shape[1:-1])}"


def _layer_at(m: nn.Module, cin: int, cout: int) -> nn.Module:
    if isinstance(m, nn.Conv2d):
        dw = m.groups == m.in_channels == m.out_channels and m.groups > 1
        groups = cin if dw else (m.groups if cin % m.groups == 0 and cout % m.groups == 0 else 1)
        return nn.Conv2d(cin, cout, m.kernel_size, m.stride, m.padding, m.dilation, groups,
                         bias=m.bias is not None, padding_mode=m.padding_mode)
    return nn.Linear(cin, cout, bias=m.bias is not None)


def _time_ms(fn, x: torch.Tensor, *, min_seconds: float, max_repeats: int, warmup: int = 3) -> float:
    """Median of repeated calls, as many as fit in `min_seconds` (at least 5, at most max_repeats)."""
    return statistics.median(timed_calls(fn, x, warmup=warmup, min_repeats=5,
                                         max_repeats=max_repeats, min_seconds=min_seconds))


def frozen_ms(model: nn.Module, input_shape: Sequence[int], *, batch_size: int = 1,
              threads: int | None = 1, min_seconds: float = 0.2, max_repeats: int = 200) -> float:
    """Median latency (ms) of `model` traced and frozen, as `snacs export --format torchscript`."""
    from snacs.export import frozen_torchscript

    with torch_threads(threads):
        x = torch.randn(batch_size, *input_shape)
        was = model.training
        ts = frozen_torchscript(model, x)
        model.train(was)
        return _time_ms(ts, x, min_seconds=min_seconds, max_repeats=max_repeats)


@dataclass
class LatencyTable:
    """Per-layer latency (ms) on a grid of kept (input, output) channel counts.

    ``layers[name] = {"signature", "in", "out", "grid_in", "grid_out", "ms"}`` with ``ms`` a
    ``len(grid_in) x len(grid_out)`` list (a depthwise layer's input and output move together:
    its grid is the diagonal, ``grid_in == grid_out`` and ``ms`` has one row). ``base_ms`` is the
    whole unpruned model, frozen, at the same batch size and threads.
    """

    input_shape: list[int]
    batch_size: int
    threads: int | None
    base_ms: float
    layers: dict[str, dict] = field(default_factory=dict)
    machine: dict = field(default_factory=dict)
    not_run: list[str] = field(default_factory=list)  # built but skipped by forward: no cost
    format: str = TABLE_FORMAT
    version: int = TABLE_VERSION

    # -- prediction
    def layer_ms(self, name: str, cin: int, cout: int) -> float:
        row = self.layers[name]
        gi, go = np.asarray(row["grid_in"], float), np.asarray(row["grid_out"], float)
        ms = np.asarray(row["ms"], float)
        if row.get("depthwise"):
            return float(np.interp(cout, go, ms[0]))
        # bilinear on the irregular grid: along the outputs for each timed input count, then
        # along the inputs
        along_out = np.array([np.interp(cout, go, ms[i]) for i in range(len(gi))])
        return float(np.interp(cin, gi, along_out))

    @property
    def layers_full_ms(self) -> float:
        return sum(self.layer_ms(n, r["in"], r["out"]) for n, r in self.layers.items())

    @property
    def other_ms(self) -> float:
        """What the timed layers do not account for (never negative)."""
        return max(0.0, self.base_ms - self.layers_full_ms)

    def predict_ms(self, kept: Mapping[str, tuple[int, int]]) -> float:
        """Predicted latency with ``kept[layer] = (input channels, output channels)``; layers not
        in `kept` stay whole."""
        total = self.other_ms
        for n, r in self.layers.items():
            cin, cout = kept.get(n, (r["in"], r["out"]))
            total += self.layer_ms(n, cin, cout)
        return total

    def predicted_removal(self, kept: Mapping[str, tuple[int, int]]) -> float:
        full = self.other_ms + self.layers_full_ms
        return 1.0 - self.predict_ms(kept) / full if full > 0 else 0.0

    def price(self, model: nn.Module, topology, plan) -> dict[str, float]:
        """The predicted latency before and after a filter plan, and the share removed."""
        kept = kept_channels(model, topology, plan)
        return {"latency_before_ms": self.predict_ms({}), "latency_after_ms": self.predict_ms(kept),
                "latency_removed": self.predicted_removal(kept)}

    # -- files
    def check_model(self, model: nn.Module, input_shape: Sequence[int]) -> None:
        """The table must describe this model: the same layers with the same channels."""
        mods = {n: m for n, m in model.named_modules() if isinstance(m, (nn.Conv2d, nn.Linear))}
        if list(self.input_shape) != list(input_shape):
            raise ConfigError(f"the latency table was measured for input shape {self.input_shape}, "
                              f"the data has {list(input_shape)}; measure it again with "
                              "`snacs latency-table` for this model and input size")
        missing = sorted(set(mods) - set(self.layers) - set(self.not_run))
        extra = sorted(set(self.layers) - set(mods))
        if missing or extra:
            raise ConfigError(f"the latency table does not describe this model (layers missing "
                              f"from it: {missing[:3]}, unknown layers in it: {extra[:3]}); "
                              "measure it again with `snacs latency-table` for this model")
        for n, m in mods.items():
            if n in self.not_run:
                continue
            cin, cout = ((m.in_channels, m.out_channels) if isinstance(m, nn.Conv2d)
                         else (m.in_features, m.out_features))
            r = self.layers[n]
            if (r["in"], r["out"]) != (cin, cout):
                raise ConfigError(f"layer {n} has {cin}->{cout} channels but the latency table "
                                  f"has {r['in']}->{r['out']}; was it measured on another "
                                  "checkpoint? Measure it again with `snacs latency-table`")

    def to_dict(self) -> dict:
        return asdict(self)

    def save(self, path: str | Path) -> None:
        from snacs.io import atomic_write_json

        atomic_write_json(path, self.to_dict())

    @classmethod
    def load(cls, path: str | Path) -> LatencyTable:
        p = Path(path)
        if not p.is_file():
            raise ConfigError(f"latency table {p} does not exist; measure one with "
                              "`snacs latency-table --out FILE` on the deployment machine")
        try:
            d = json.loads(p.read_text())
        except (OSError, ValueError) as e:
            raise ConfigError(f"cannot read latency table {p}: {e}") from None
        if not isinstance(d, dict) or d.get("format") != TABLE_FORMAT:
            raise ConfigError(f"{p} is not a snacs latency table (written by `snacs latency-table`)")
        if d.get("version", 0) > TABLE_VERSION:
            raise ConfigError(f"{p} is a version-{d['version']} latency table; this snacs reads "
                              f"up to version {TABLE_VERSION}: upgrade snacs")
        return cls(**d)


def _machine() -> dict:
    return {"platform": platform.platform(), "processor": platform.processor() or platform.machine(),
            "torch": torch.__version__, "cpu_count": torch.get_num_threads()}


def measure_table(
    model: nn.Module,
    input_shape: Sequence[int],
    *,
    batch_size: int = 1,
    threads: int | None = 1,
    min_seconds: float = 0.05,
    max_repeats: int = 200,
) -> LatencyTable:
    """Time every conv and linear layer of `model` on its own over a grid of channel counts.

    Each layer sees an input of the shape it sees inside the model (captured with one forward
    pass at batch 1), scaled to `batch_size`; layers of identical shape share their timings.
    """
    from snacs.export import frozen_torchscript

    if not isinstance(batch_size, int) or batch_size < 1:
        raise ConfigError(f"latency batch size must be a positive integer, got {batch_size!r}")
    shapes: dict[str, tuple[int, ...]] = {}
    mods = {n: m for n, m in model.named_modules() if isinstance(m, (nn.Conv2d, nn.Linear))}

    def hook(name: str):
        def record(mod, inp, out) -> None:  # a forward hook returning a value replaces the output
            shapes.setdefault(name, tuple(inp[0].shape))
        return record

    hooks = [m.register_forward_hook(hook(n)) for n, m in mods.items()]
    was = model.training
    try:
        model.eval()
        with torch.inference_mode():
            model(torch.zeros(1, *input_shape))
    finally:
        for h in hooks:
            h.remove()
        model.train(was)
    base = frozen_ms(model, input_shape, batch_size=batch_size, threads=threads,
                     min_seconds=max(min_seconds, 0.2), max_repeats=max_repeats)
    cache: dict[tuple, float] = {}
    layers: dict[str, dict] = {}
    with torch_threads(threads):
        for n, m in mods.items():
            if n not in shapes:  # never run by forward: costs nothing
                continue
            shp = shapes[n]
            sig = _signature(m, shp)
            conv = isinstance(m, nn.Conv2d)
            cin, cout = (m.in_channels, m.out_channels) if conv else (m.in_features, m.out_features)
            dw = conv and m.groups == m.in_channels == m.out_channels and m.groups > 1
            gi, go = channel_grid(cin), channel_grid(cout)
            pairs = [(c, c) for c in go] if dw else [(a, b) for a in gi for b in go]
            ms = []
            for a, b in pairs:
                key = (sig, a, b)
                if key not in cache:
                    layer = _layer_at(m, a, b).eval()
                    x = torch.randn(batch_size, a, *shp[2:]) if conv else torch.randn(batch_size, *shp[1:-1], a)
                    ts = frozen_torchscript(layer, x)
                    cache[key] = _time_ms(ts, x, min_seconds=min_seconds, max_repeats=max_repeats)
                ms.append(cache[key])
            grid = [ms] if dw else [ms[i * len(go):(i + 1) * len(go)] for i in range(len(gi))]
            layers[n] = {"signature": sig, "in": cin, "out": cout, "depthwise": dw,
                         "grid_in": go if dw else gi, "grid_out": go, "ms": grid}
    return LatencyTable(input_shape=list(input_shape), batch_size=batch_size, threads=threads,
                        base_ms=base, layers=layers, machine=_machine(),
                        not_run=sorted(set(mods) - set(shapes)))


def kept_channels(model: nn.Module, topology, plan) -> dict[str, tuple[int, int]]:
    """Per conv/linear layer, the (input, output) channel counts a filter plan leaves."""
    from snacs.plan import kept_filter_channels

    kin, kout = kept_filter_channels(model, topology, plan)
    return {n: (kin[n], kout[n]) for n in kin}


def measured_removal(model: nn.Module, pruned: nn.Module, input_shape: Sequence[int], *,
                     batch_size: int, threads: int | None, rounds: int = 3,
                     min_seconds: float = 0.2, max_repeats: int = 200) -> dict:
    """Latency of the base and the pruned model, each traced and frozen once, timed alternately
    `rounds` times (medians), so a change in machine load hits both alike."""
    from snacs.export import frozen_torchscript

    with torch_threads(threads):
        x = torch.randn(batch_size, *input_shape)
        frozen = []
        for m in (model, pruned):
            was = m.training
            frozen.append(frozen_torchscript(m, x))
            m.train(was)
        base, after = [], []
        for _ in range(rounds):
            base.append(_time_ms(frozen[0], x, min_seconds=min_seconds, max_repeats=max_repeats))
            after.append(_time_ms(frozen[1], x, min_seconds=min_seconds, max_repeats=max_repeats))
    b, a = statistics.median(base), statistics.median(after)
    return {"base_ms": b, "pruned_ms": a, "removed": 1.0 - a / b if b > 0 else 0.0,
            "batch_size": batch_size, "threads": threads}
