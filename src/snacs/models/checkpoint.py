"""Load weights into a zoo model from a checkpoint file or dict, with actionable errors."""

from __future__ import annotations

import logging
import os
import pickle
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from torch import nn

from snacs.errors import CheckpointError

__all__ = ["load_weights", "extract_state_dict"]

logger = logging.getLogger(__name__)

# Keys under which training scripts commonly nest the weights, tried in this order.
_WRAPPER_KEYS = ("state_dict", "model_state_dict", "model_state", "model", "net")
# Prefixes added by DataParallel/DistributedDataParallel and torch.compile.
_PREFIXES = ("module.", "_orig_mod.")
_MAX_LISTED = 10


def _read(path: Path, trusted: bool) -> Any:
    """torch.load with weights_only=True; full unpickling only as a fallback for trusted files."""
    if not path.exists():
        raise CheckpointError(f"checkpoint {str(path)!r} not found; check the path")
    if path.is_dir():
        raise CheckpointError(f"checkpoint {str(path)!r} is a directory, not a file")
    unreadable = f"cannot read checkpoint {str(path)!r}; is it a file written by torch.save?"
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        # Either objects other than tensors (numpy scalars, argparse namespaces in older
        # checkpoints) or a corrupt file: torch raises the same error for both.
        first_error = exc
    except Exception as exc:  # zip, EOF and format errors all mean "not a readable checkpoint"
        raise CheckpointError(f"{unreadable} ({type(exc).__name__}: {exc})") from exc
    if not trusted:
        raise CheckpointError(
            f"checkpoint {str(path)!r} cannot be loaded with weights_only=True: it is corrupt or "
            "holds objects other than tensors; re-save its state_dict, or pass trusted=True if "
            "you trust the file"
        ) from first_error
    try:
        obj = torch.load(path, map_location="cpu", weights_only=False)
    except Exception as exc:
        raise CheckpointError(f"{unreadable} ({type(exc).__name__}: {exc})") from exc
    logger.warning(
        "checkpoint %s holds objects other than tensors and was fully unpickled; "
        "only do this for files you trust",
        path,
    )
    return obj


def extract_state_dict(obj: Any, label: str = "<dict>") -> dict[str, torch.Tensor]:
    """The tensor state_dict inside a loaded checkpoint.

    Unwraps `{"state_dict": ...}`, `{"model": ...}`, `{"model_state": ...}` (and a few other
    common wrappers) and whole pickled modules, then strips `module.`/`_orig_mod.` prefixes.

    Raises:
        CheckpointError: No state_dict of tensors can be found.
    """
    for _ in range(4):  # wrappers are rarely nested more than once or twice
        if isinstance(obj, nn.Module):
            obj = obj.state_dict()
            break
        if not isinstance(obj, Mapping):
            break
        inner = next(
            (obj[k] for k in _WRAPPER_KEYS if isinstance(obj.get(k), (Mapping, nn.Module))), None
        )
        if inner is None:
            break
        obj = inner
    if not isinstance(obj, Mapping) or not obj:
        raise CheckpointError(
            f"checkpoint {label!r} holds no state_dict (found {type(obj).__name__}); expected "
            f"a dict of tensors, optionally under one of the keys {', '.join(_WRAPPER_KEYS)}"
        )
    bad = [str(k) for k, v in obj.items() if not isinstance(v, torch.Tensor)]
    if bad:
        raise CheckpointError(
            f"checkpoint {label!r} is not a state_dict: entries {_listing(bad)} are not tensors; "
            f"expected a dict of tensors, optionally under one of the keys "
            f"{', '.join(_WRAPPER_KEYS)}"
        )
    state = {str(k): v for k, v in obj.items()}
    for prefix in _PREFIXES:
        if all(k.startswith(prefix) for k in state):
            state = {k[len(prefix) :]: v for k, v in state.items()}
    return state


def _listing(items: list[str]) -> str:
    shown = ", ".join(items[:_MAX_LISTED])
    more = len(items) - _MAX_LISTED
    return f"{shown} (and {more} more)" if more > 0 else shown


def _fix_hint(model: nn.Module) -> str:
    source = getattr(model, "snacs_source", None)
    if isinstance(source, Mapping) and "target" in source:
        name = str(source["target"]).rpartition(":")[2]
        return (
            f"The model was built as {name}(**{dict(source.get('args') or {})!r}) from "
            f"{source['target']}; was this checkpoint trained with these arguments? Pass the "
            "--model-args it was trained with."
        )
    spec = getattr(model, "snacs_spec", None)
    if isinstance(spec, Mapping) and "name" in spec:
        built = (
            f"--model {spec['name']} --width {spec.get('width')} "
            f"({spec.get('num_classes')} classes, {spec.get('in_channels')} input channels, "
            "both taken from the dataset)"
        )
        return (
            f"The model was built with {built}; was this checkpoint trained with these "
            "settings? Pass the --model and --width the checkpoint was trained with (in Python, "
            "load_weights(..., strict=False) loads only the tensors whose names and shapes match)."
        )
    return (
        "Was this checkpoint trained with the same --model and --width, and on data with the "
        "same classes and channels? Rebuild the model to match (in Python, "
        "load_weights(..., strict=False) loads only the tensors whose names and shapes match)."
    )


def load_weights(
    model: nn.Module,
    source: str | os.PathLike[str] | Mapping[str, Any],
    *,
    strict: bool = True,
    trusted: bool = True,
) -> nn.Module:
    """Copy the weights of a checkpoint into `model` (in place) and return `model`.

    Args:
        model: The architecture to fill, e.g. from `create_model`.
        source: A checkpoint path, or an already loaded dict (raw state_dict or a wrapper).
        strict: If True, any missing or unexpected key or shape mismatch is an error. If False,
            the tensors that match by name and shape are loaded and the rest is logged (e.g. to
            reuse a backbone under a new classifier).
        trusted: Allow full unpickling when `weights_only=True` loading fails (older
            checkpoints with numpy or argparse objects). Only for files you trust.

    Raises:
        CheckpointError: The file is missing or unreadable, or does not match the model; the
            message names the path, the offending keys and shapes, and how to fix it.
    """
    if isinstance(source, Mapping):
        label = "<in-memory checkpoint>"
        obj: Any = source
    else:
        path = Path(os.fspath(source))
        label = str(path)
        obj = _read(path, trusted)
    state = extract_state_dict(obj, label)

    expected = model.state_dict()
    # BN buffer added in PyTorch 0.4.1; older checkpoints lack it and BN fills it in.
    missing = [k for k in expected if k not in state and not k.endswith("num_batches_tracked")]
    unexpected = [k for k in state if k not in expected]
    shapes = [
        f"{k} (checkpoint {tuple(v.shape)} vs model {tuple(expected[k].shape)})"
        for k, v in state.items()
        if k in expected and v.shape != expected[k].shape
    ]
    if strict and (missing or unexpected or shapes):
        problems = []
        if missing:
            problems.append(f"{len(missing)} missing key(s): {_listing(missing)}")
        if unexpected:
            problems.append(f"{len(unexpected)} unexpected key(s): {_listing(unexpected)}")
        if shapes:
            problems.append(f"{len(shapes)} shape mismatch(es): {_listing(shapes)}")
        raise CheckpointError(
            f"checkpoint {label!r} does not match the model: "
            + "; ".join(problems)
            + ". "
            + _fix_hint(model)
        )
    if missing or unexpected or shapes:
        logger.warning(
            "loading %s with strict=False: skipped %d missing key(s) [%s], %d unexpected key(s) "
            "[%s], %d shape mismatch(es) [%s]",
            label,
            len(missing),
            _listing(missing),
            len(unexpected),
            _listing(unexpected),
            len(shapes),
            _listing(shapes),
        )
    matching = {k: v for k, v in state.items() if k in expected and v.shape == expected[k].shape}
    model.load_state_dict(matching, strict=False)
    logger.info("loaded %d tensors from %s", len(matching), label)
    return model
