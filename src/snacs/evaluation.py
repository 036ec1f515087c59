"""Top-1 accuracy and loss of a model on a dataset (eval mode, no gradient).

Its own module so that checks run before any work (`snacs.validate`) and training
(`snacs.train`, which re-exports `evaluate`) both use it without importing each other.
"""

from __future__ import annotations

import torch
from torch import nn

from snacs.errors import ConfigError

__all__ = ["evaluate"]


@torch.no_grad()
def evaluate(
    model: nn.Module,
    dataset,
    *,
    indices: torch.Tensor | None = None,
    batch_size: int = 512,
    progress: bool = False,
) -> dict[str, float]:
    """Top-1 accuracy (%) and mean cross-entropy of `model` on `dataset` (eval mode)."""
    from snacs.data import BatchLoader

    loader = BatchLoader(dataset, batch_size, indices=indices, shuffle=False, augment=False)
    was_training = model.training
    model.eval()
    correct, total, loss_sum = 0, 0, 0.0
    it = _progress(loader, progress, "evaluate")
    for x, y in it:
        out = model(x)
        loss_sum += float(nn.functional.cross_entropy(out, y, reduction="sum"))
        correct += int((out.argmax(1) == y).sum())
        total += int(y.numel())
    model.train(was_training)
    if total == 0:
        raise ConfigError("evaluation set is empty")
    return {"accuracy": 100.0 * correct / total, "loss": loss_sum / total, "samples": total}


def _progress(iterable, enabled: bool, desc: str, **kw):
    if not enabled:
        return iterable
    from tqdm.auto import tqdm

    return tqdm(iterable, desc=desc, leave=False, dynamic_ncols=True, **kw)


