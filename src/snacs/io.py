"""Atomic file output and the self-describing pruned-model format (`snacs.save` / `snacs.load`)."""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
from pathlib import Path
from typing import Any

import torch
from torch import nn

from snacs.errors import CheckpointError, ConfigError

__all__ = ["atomic_write_bytes", "atomic_write_text", "atomic_torch_save", "save", "load",
           "ensure_writable_dir", "plain_state_dict"]

FORMAT = "snacs-model"
FORMAT_VERSION = 1


@contextlib.contextmanager
def _atomic_path(path: str | os.PathLike):
    """Yield a temporary path in the target's directory; rename it over the target on success."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        yield Path(tmp)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> None:
    """Write bytes so a reader never sees a truncated file (temp file + fsync + rename)."""
    with _atomic_path(path) as tmp, open(tmp, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    atomic_write_bytes(path, text.encode("utf-8"))


def atomic_write_json(path: str | os.PathLike, obj: Any) -> None:
    atomic_write_text(path, json.dumps(obj, indent=2, sort_keys=False, default=_json_default) + "\n")


def _json_default(o: Any) -> Any:
    import numpy as np

    if isinstance(o, (np.integer,)):
        return int(o)
    if isinstance(o, (np.floating,)):
        return float(o)
    if isinstance(o, np.ndarray):
        return o.tolist()
    if isinstance(o, torch.Tensor):
        return o.tolist()
    if isinstance(o, Path):
        return str(o)
    raise TypeError(f"not JSON serialisable: {type(o).__name__}")


def atomic_torch_save(obj: Any, path: str | os.PathLike) -> None:
    """`torch.save` that never leaves a truncated file behind."""
    with _atomic_path(path) as tmp:
        torch.save(obj, tmp)


def ensure_writable_dir(path: str | os.PathLike) -> Path:
    """Create `path` if needed and check we can write into it; raise ConfigError otherwise."""
    p = Path(path)
    try:
        p.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=p, prefix=".write-test-")
        os.close(fd)
        os.unlink(tmp)
    except OSError as e:
        raise ConfigError(
            f"output directory {p} is not writable ({e.strerror or e}); "
            "choose another --out directory or fix its permissions"
        ) from None
    return p


# --------------------------------------------------------------------------- model format

def _structure(model: nn.Module) -> dict[str, dict]:
    """Shapes of every conv/linear/BN layer: enough to rebuild a slimmed registry model."""
    out: dict[str, dict] = {}
    for name, m in model.named_modules():
        if isinstance(m, nn.Conv2d):
            out[name] = {"type": "conv2d", "in": m.in_channels, "out": m.out_channels,
                         "groups": m.groups}
        elif isinstance(m, nn.Linear):
            out[name] = {"type": "linear", "in": m.in_features, "out": m.out_features}
        elif isinstance(m, nn.modules.batchnorm._BatchNorm):
            out[name] = {"type": "bn", "num_features": m.num_features}
    return out


def _resize(model: nn.Module, structure: dict[str, dict]) -> None:
    """Replace layers whose recorded shape differs from the freshly built model's."""
    modules = dict(model.named_modules())
    for name, s in structure.items():
        m = modules.get(name)
        if m is None:
            raise CheckpointError(f"saved model has layer {name!r} that the architecture lacks")
        if s["type"] == "conv2d":
            if (m.in_channels, m.out_channels, m.groups) == (s["in"], s["out"], s["groups"]):
                continue
            new = nn.Conv2d(s["in"], s["out"], m.kernel_size, m.stride, m.padding, m.dilation,
                            s["groups"], m.bias is not None, m.padding_mode)
        elif s["type"] == "linear":
            if (m.in_features, m.out_features) == (s["in"], s["out"]):
                continue
            new = nn.Linear(s["in"], s["out"], m.bias is not None)
        else:
            if m.num_features == s["num_features"]:
                continue
            new = type(m)(s["num_features"], m.eps, m.momentum, m.affine, m.track_running_stats)
        parent_name, _, attr = name.rpartition(".")
        parent = modules[parent_name] if parent_name else model
        setattr(parent, attr, new)


def save(model: nn.Module, path: str | os.PathLike, *, extra: dict | None = None) -> None:
    """Save a (possibly slimmed or masked) model so that `snacs.load(path)` rebuilds it.

    Registry models (those with a `snacs_spec`) are stored as spec + layer shapes + state_dict,
    which loads with `weights_only=True`. Other models are pickled whole, which needs their class
    importable at load time. Pruning masks (weight and bias) are folded into the saved tensors;
    `model` itself is not modified.
    """
    spec = getattr(model, "snacs_spec", None)
    payload: dict[str, Any] = {"format": FORMAT, "version": FORMAT_VERSION, "extra": extra or {}}
    if spec is not None:
        payload.update(kind="registry", spec=dict(spec), structure=_structure(model),
                       state_dict=plain_state_dict(model))
    else:
        from snacs.apply import make_masks_permanent, safe_deepcopy

        payload.update(kind="pickle", module=make_masks_permanent(safe_deepcopy(model)))
    atomic_torch_save(payload, path)


def plain_state_dict(model: nn.Module) -> dict[str, torch.Tensor]:
    """`model.state_dict()` with every pruning mask folded in (`x_orig * x_mask` saved as `x`).

    `torch.nn.utils.prune` stores a masked tensor as `x_orig` plus a `x_mask` buffer, for weights
    and, after a filter is silenced, for conv and BN biases too; an unpruned model of the same
    shapes expects plain `x`. The tensors are copies: the model is not touched.
    """
    state = model.state_dict()
    out: dict[str, torch.Tensor] = {}
    for k, v in state.items():
        if k.endswith("_orig") and k[: -len("_orig")] + "_mask" in state:
            base = k[: -len("_orig")]
            out[base] = (v * state[base + "_mask"]).detach().clone()
        elif k.endswith("_mask") and k[: -len("_mask")] + "_orig" in state:
            continue
        else:
            out[k] = v.detach().clone()
    return out


def load(path: str | os.PathLike) -> nn.Module:
    """Load a model written by `snacs.save` (or the CLI) and return it in eval mode."""
    from snacs.models import create_model

    path = Path(path)
    if path.is_dir():
        path = path / "model.pt"
    if not path.is_file():
        raise CheckpointError(f"no saved model at {path}; pass the model.pt a snacs command wrote")
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except Exception:
        try:
            payload = torch.load(path, map_location="cpu", weights_only=False)
        except Exception as e:  # noqa: BLE001 - report any unreadable file the same way
            raise CheckpointError(f"cannot read {path}: {e}") from None
    if not isinstance(payload, dict) or payload.get("format") != FORMAT:
        raise CheckpointError(
            f"{path} is not a snacs model file (no '{FORMAT}' header); for a plain state_dict "
            "build the model with snacs.models.create_model and use snacs.models.load_weights"
        )
    if payload["kind"] == "pickle":
        model = payload["module"]
    else:
        spec = payload["spec"]
        model = create_model(**spec)
        _resize(model, payload["structure"])
        try:
            model.load_state_dict(payload["state_dict"], strict=True)
        except RuntimeError as e:
            raise CheckpointError(f"{path}: weights do not fit the saved structure: {e}") from None
    model.eval()
    return model
