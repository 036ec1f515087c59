"""Measurement: parameter counts, MACs of conv+linear layers, CPU latency (SPEC §8)."""

from __future__ import annotations

import contextlib
import statistics
import time
from collections.abc import Iterator, Sequence

import torch
from torch import nn

from snacs.estimators._common import torch_threads

__all__ = [
    "count_parameters",
    "weight_layers",
    "conv_linear_weights",
    "nonzero_conv_linear_weights",
    "count_macs",
    "measure_latency",
]


def count_parameters(model: nn.Module) -> int:
    """All parameters (weights, biases, BN affine), as `sum(p.numel())`."""
    return sum(p.numel() for p in model.parameters())


def weight_layers(model: nn.Module) -> list[tuple[str, nn.Module]]:
    """The conv and linear layers of a model, in registration order."""
    return [(n, m) for n, m in model.named_modules() if isinstance(m, (nn.Conv2d, nn.Linear))]


def _weight(m: nn.Module) -> torch.Tensor:
    # torch.nn.utils.prune keeps the dense tensor in weight_orig and the product in weight.
    return m.weight


def conv_linear_weights(model: nn.Module) -> int:
    """Number of conv+linear weights (biases and BN excluded): the paper's parameter unit."""
    return sum(_weight(m).numel() for _, m in weight_layers(model))


def nonzero_conv_linear_weights(model: nn.Module) -> int:
    """Conv+linear weights that are not exactly zero (masked connections count as removed)."""
    return sum(int(torch.count_nonzero(_weight(m).detach())) for _, m in weight_layers(model))


@contextlib.contextmanager
def _evaluating(model) -> Iterator[torch.device]:
    """Eval mode for the block (restored after) and the device of the model's parameters.

    Also takes a frozen TorchScript module, which has neither `training` nor parameters.
    """
    was_training = getattr(model, "training", False)
    if was_training:
        model.eval()
    first = next(model.parameters(), None)
    try:
        yield first.device if first is not None else torch.device("cpu")
    finally:
        if was_training:
            model.train(True)


@torch.no_grad()
def count_macs(
    model: nn.Module,
    input_shape: Sequence[int],
    *,
    sparse: bool = False,
) -> int:
    """Multiply-accumulates of conv and linear layers for one input of `input_shape` (C, H, W).

    With `sparse=True`, count only non-zero weights times output positions (the convention for
    connection masks); otherwise the dense count of the (possibly slimmed) architecture.
    FLOPs are about 2 x MACs.
    """
    total = 0
    hooks = []

    def hook(m: nn.Module, inp: tuple, out: torch.Tensor) -> None:
        nonlocal total
        w = _weight(m)
        per_out = int(torch.count_nonzero(w)) if sparse else w.numel()
        if isinstance(m, nn.Conv2d):
            positions = out.shape[-1] * out.shape[-2]
        else:
            positions = out.numel() // out.shape[-1] // out.shape[0]
        total += per_out * positions

    for _, m in weight_layers(model):
        hooks.append(m.register_forward_hook(hook))
    try:
        with _evaluating(model) as device:
            model(torch.zeros(1, *input_shape, device=device))
    finally:
        for h in hooks:
            h.remove()
    return total


@torch.no_grad()
def timed_calls(fn, x: torch.Tensor, *, warmup: int, min_repeats: int, max_repeats: int,
                min_seconds: float = 0.0) -> list[float]:
    """Wall times (ms) of `fn(x)` under `torch.inference_mode` (as deployed: no autograd
    bookkeeping), after `warmup` calls: at least `min_repeats`, then more while `min_seconds`
    have not passed, never more than `max_repeats`."""
    times: list[float] = []
    with torch.inference_mode():
        for _ in range(warmup):
            fn(x)
        start = time.perf_counter()
        while len(times) < max_repeats and (len(times) < min_repeats
                                            or time.perf_counter() - start < min_seconds):
            t0 = time.perf_counter()
            fn(x)
            times.append((time.perf_counter() - t0) * 1e3)
    return times


def measure_latency(
    model: nn.Module,
    input_shape: Sequence[int],
    *,
    batch_size: int = 1,
    threads: int | None = 1,
    warmup: int = 5,
    repeats: int = 30,
) -> dict:
    """Median wall time of a forward pass in milliseconds (eval and inference mode, fixed threads,
    after warm-up).

    Returns a dict with `median_ms`, `p10_ms`, `p90_ms`, `batch_size`, `threads`, `repeats`.
    """
    with torch_threads(threads), _evaluating(model) as device:
        x = torch.randn(batch_size, *input_shape, device=device)
        times = timed_calls(model, x, warmup=warmup, min_repeats=repeats, max_repeats=repeats)
    times.sort()
    q = statistics.quantiles(times, n=10) if len(times) >= 2 else [times[0]] * 9
    return {
        "median_ms": statistics.median(times),
        "p10_ms": q[0],
        "p90_ms": q[-1],
        "batch_size": batch_size,
        "threads": threads if threads is not None else torch.get_num_threads(),
        "repeats": repeats,
    }
