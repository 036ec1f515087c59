"""Training, fine-tuning and evaluation (SPEC §7).

One loop serves training from scratch and fine-tuning after pruning: SGD with momentum/Nesterov,
weight decay, multi-step or cosine schedule, CIFAR-style augmentation, optional bf16 autocast,
atomic per-epoch checkpoints with resume, model selection on a validation split carved from the
training set (never on the test set), and DistributedDataParallel when launched by `torchrun`.
Masks from `torch.nn.utils.prune` stay in force: gradients and weight decay reach `weight_orig`
while the effective `weight = weight_orig * mask` keeps its zeros.
"""

from __future__ import annotations

import logging
import math
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
from torch import nn

from snacs.errors import CheckpointError, ConfigError
from snacs.evaluation import _progress, evaluate
from snacs.io import atomic_torch_save, atomic_write_json

log = logging.getLogger(__name__)

__all__ = ["TrainConfig", "TrainResult", "train", "evaluate", "lr_at", "is_main_process"]


SCHEDULES = ("cosine", "cosine-step", "multistep", "constant")


@dataclass
class TrainConfig:
    """Hyperparameters of one training or fine-tuning run."""

    epochs: int = 10
    lr: float = 0.05
    momentum: float = 0.9
    nesterov: bool = True
    weight_decay: float = 5e-4
    # "cosine" (per epoch) | "cosine-step" (per batch, down to 0 at the last step: a one-epoch
    # fine-tune still ends on a small rate) | "multistep" | "constant"
    schedule: str = "cosine"
    milestones: tuple[int, ...] = ()
    gamma: float = 0.2
    batch_size: int = 128
    augment: bool = True
    bf16: bool = False
    # NHWC activations and weights while training: on CPU about 1.4-1.7x faster on MobileNetV2
    # (depthwise convs); the model is handed back in the standard layout
    channels_last: bool = False
    val_fraction: float = 0.1
    seed: int = 0
    eval_batch_size: int = 512
    steps_per_epoch: int | None = None  # cap on batches per epoch (smoke tests, quick checks)
    # record test accuracy after every epoch (for training records only; selection stays on val)
    track_test: bool = False

    def __post_init__(self) -> None:
        if self.epochs < 0:
            raise ConfigError(f"epochs must be >= 0, got {self.epochs}")
        if self.lr <= 0:
            raise ConfigError(f"lr must be > 0, got {self.lr}")
        if self.schedule not in SCHEDULES:
            raise ConfigError(
                f"unknown schedule {self.schedule!r}; use {', '.join(SCHEDULES)}"
            )
        if not 0.0 <= self.val_fraction < 1.0:
            raise ConfigError(f"val_fraction must be in [0, 1), got {self.val_fraction}")
        if self.batch_size < 1:
            raise ConfigError(f"batch_size must be >= 1, got {self.batch_size}")
        self.milestones = tuple(int(m) for m in self.milestones)


@dataclass
class TrainResult:
    """What a run did: per-epoch history, the selected epoch, and accuracies."""

    epochs_run: int = 0
    best_epoch: int = -1
    best_val_accuracy: float | None = None
    test_accuracy: float | None = None
    history: list[dict] = field(default_factory=list)
    seconds: float = 0.0
    resumed_from_epoch: int | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def lr_at(config: TrainConfig, epoch: float) -> float:
    """Learning rate at a (0-based, possibly fractional) epoch; a pure function so resumed runs
    match exactly. "cosine-step" is evaluated at epoch + step / steps, "cosine" at whole epochs."""
    if config.schedule == "constant":
        return config.lr
    if config.schedule == "multistep":
        return config.lr * config.gamma ** sum(epoch >= m for m in config.milestones)
    return 0.5 * config.lr * (1.0 + math.cos(math.pi * epoch / max(1, config.epochs)))


def is_main_process() -> bool:
    return not (dist.is_available() and dist.is_initialized()) or dist.get_rank() == 0


def _world() -> tuple[int, int]:
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def train(
    model: nn.Module,
    dataset,
    config: TrainConfig | None = None,
    *,
    out_dir: str | Path | None = None,
    resume: bool = False,
    test_set=None,
    progress: bool = False,
) -> TrainResult:
    """Train `model` in place and leave the validation-selected weights in it.

    Args:
        model: the network; masks from `torch.nn.utils.prune` are honoured.
        dataset: the training split (a snacs dataset); `config.val_fraction` of it is held out.
        config: hyperparameters.
        out_dir: where `last.pt` (resumable state) and `best.pt` (selected weights) go,
            each written atomically after every epoch. None keeps everything in memory.
        resume: continue from `out_dir/last.pt` if it exists.
        test_set: optional test split, evaluated once at the end on the selected weights.
        progress: show tqdm bars.
    """
    from snacs.data import BatchLoader, train_val_split

    config = config or TrainConfig()
    rank, world = _world()
    t_start = time.perf_counter()
    labels = dataset.labels
    if config.val_fraction > 0:
        train_idx, val_idx = train_val_split(labels, config.val_fraction, seed=config.seed)
    else:
        train_idx, val_idx = torch.arange(len(labels)), None

    if config.channels_last:
        model.to(memory_format=torch.channels_last)
    net: nn.Module = model
    if world > 1:
        net = nn.parallel.DistributedDataParallel(model)
    params_decay = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.SGD(params_decay, lr=config.lr, momentum=config.momentum,
                          nesterov=config.nesterov and config.momentum > 0,
                          weight_decay=config.weight_decay)
    loader = BatchLoader(dataset, config.batch_size, indices=train_idx, shuffle=True,
                         augment=config.augment, seed=config.seed, drop_last=False,
                         rank=rank, world_size=world)

    result = TrainResult()
    start_epoch = 0
    best_state: dict | None = None
    out = Path(out_dir) if out_dir is not None else None
    if out is not None and resume and (out / "last.pt").is_file():
        state = _load_state(out / "last.pt")
        from snacs.validate import check_resume_state

        check_resume_state(model, state, out / "last.pt")
        model.load_state_dict(state["model"])
        opt.load_state_dict(state["optimizer"])
        start_epoch = state["epoch"] + 1
        result = TrainResult(**state["result"])
        result.resumed_from_epoch = start_epoch
        if (out / "best.pt").is_file():
            best_state = _load_state(out / "best.pt")["model"]
        log.info("resumed from %s at epoch %d", out / "last.pt", start_epoch)

    for epoch in range(start_epoch, config.epochs):
        t0 = time.perf_counter()
        lr = lr_at(config, epoch)
        for g in opt.param_groups:
            g["lr"] = lr
        loader.set_epoch(epoch)
        net.train()
        loss_sum, correct, seen = 0.0, 0, 0
        bar = _progress(loader, progress and rank == 0, f"epoch {epoch + 1}/{config.epochs}")
        steps = len(loader) if config.steps_per_epoch is None else min(len(loader),
                                                                        config.steps_per_epoch)
        for step, (x, y) in enumerate(bar):
            if config.steps_per_epoch is not None and step >= config.steps_per_epoch:
                break
            if config.schedule == "cosine-step":
                for g in opt.param_groups:
                    g["lr"] = lr_at(config, epoch + step / max(steps, 1))
            if config.channels_last:
                x = x.contiguous(memory_format=torch.channels_last)
            with torch.autocast("cpu", dtype=torch.bfloat16, enabled=config.bf16):
                logits = net(x)
                loss = nn.functional.cross_entropy(logits.float(), y)
            if not torch.isfinite(loss):
                raise ConfigError(
                    f"training diverged at epoch {epoch + 1} (loss {float(loss)}); "
                    f"lower the learning rate (now {lr:g})"
                )
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            loss_sum += loss.item() * y.numel()
            correct += int((logits.argmax(1) == y).sum())
            seen += int(y.numel())
            if progress and rank == 0 and hasattr(bar, "set_postfix"):
                bar.set_postfix(loss=f"{loss_sum / seen:.3f}", acc=f"{100 * correct / seen:.1f}")
        if world > 1:
            # BN running statistics are updated from each rank's own batches; DDP only syncs
            # them at the next forward. Take rank 0's so validation, model selection and the
            # saved weights are identical on every rank.
            for b in model.buffers():
                dist.broadcast(b, 0)
        entry = {"epoch": epoch, "lr": lr, "train_loss": loss_sum / max(seen, 1),
                 "train_accuracy": 100.0 * correct / max(seen, 1)}
        if val_idx is not None:
            entry["val_accuracy"] = evaluate(model, dataset, indices=val_idx,
                                             batch_size=config.eval_batch_size)["accuracy"]
            better = result.best_val_accuracy is None or entry["val_accuracy"] > result.best_val_accuracy
        else:
            better = True
        if config.track_test and test_set is not None:
            entry["test_accuracy"] = evaluate(model, test_set,
                                              batch_size=config.eval_batch_size)["accuracy"]
        if better:
            result.best_epoch = epoch
            result.best_val_accuracy = entry.get("val_accuracy")
            best_state = {k: v.detach().clone() for k, v in model.state_dict().items()}
        entry["seconds"] = time.perf_counter() - t0
        result.history.append(entry)
        result.epochs_run = epoch + 1
        log.info("epoch %d: %s", epoch + 1, entry)
        if out is not None and rank == 0:
            if better:
                atomic_torch_save({"model": best_state, "epoch": epoch}, out / "best.pt")
            atomic_torch_save({"model": model.state_dict(), "optimizer": opt.state_dict(),
                               "epoch": epoch, "config": asdict(config),
                               "result": result.to_dict()}, out / "last.pt")
        if world > 1:
            dist.barrier()

    if best_state is not None:
        model.load_state_dict(best_state)
    if config.channels_last:
        model.to(memory_format=torch.contiguous_format)
    if test_set is not None:
        result.test_accuracy = evaluate(model, test_set, batch_size=config.eval_batch_size,
                                        progress=progress and rank == 0)["accuracy"]
    result.seconds += time.perf_counter() - t_start
    if out is not None and rank == 0:
        atomic_write_json(out / "train_result.json", result.to_dict())
    return result


def _load_state(path: Path) -> dict:
    try:
        return torch.load(path, map_location="cpu", weights_only=False)
    except Exception as e:  # noqa: BLE001
        raise CheckpointError(
            f"cannot read training state {path} ({e}); delete it to start over"
        ) from None
