"""The snacs model file: `snacs.save` and `snacs.load`.

A pruned model is its original architecture plus, per channel group, the channels it kept. A
snacs model file (format version 2) stores exactly that, never the user's class:

* ``architecture``: how to build the unpruned network: a registry spec, an importable
  ``package.module:Class`` or a ``path/to/file.py:Class`` with its constructor arguments, or only
  the class name when it cannot be imported elsewhere (defined in ``__main__``, a notebook or a
  function; then load with ``snacs.load(path, model=MyNet(...))``);
* ``layers``: the shape of every conv, linear and BN layer of the saved (slimmed) model;
* ``kept``: per conv/linear layer whose outputs were cut, the indices of its original output
  channels that remain, where known (the layers writing one residual stream share a list);
* ``input_shape``: the (C, H, W) the channel groups are traced on;
* ``state_dict`` (pruning masks folded in), ``settings`` (the pruner's options) and ``extra``.

Loading builds the unpruned network, removes channels with the same code that pruning uses
(`snacs.apply.remove_channels`), checks every layer's shape and loads the weights. Everything is
plain data and tensors, so files load with ``weights_only=True``. Version-1 files (spec + shapes,
or a pickled module) still load.
"""

from __future__ import annotations

import importlib
import logging
import os
from pathlib import Path
from typing import Any

import torch
from torch import nn

from snacs.errors import CheckpointError, ConfigError
from snacs.io import atomic_torch_save

__all__ = ["save", "load", "saved_data", "plain_state_dict", "FORMAT", "FORMAT_VERSION"]

FORMAT = "snacs-model"
FORMAT_VERSION = 2

log = logging.getLogger(__name__)


def _structure(model: nn.Module) -> dict[str, dict]:
    """Shapes of every conv/linear/BN layer, in module order."""
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


def _describe(s: dict) -> str:
    if s["type"] == "conv2d":
        return f"Conv2d({s['in']} -> {s['out']}, groups {s['groups']})"
    if s["type"] == "linear":
        return f"Linear({s['in']} -> {s['out']})"
    return f"BatchNorm({s['num_features']})"


def _out_width(m: nn.Module) -> int | None:
    if isinstance(m, nn.Conv2d):
        return m.out_channels
    if isinstance(m, nn.Linear):
        return m.out_features
    return None


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


def _architecture(model: nn.Module) -> dict[str, Any]:
    """How to build the unpruned network again, without pickling its class."""
    spec = getattr(model, "snacs_spec", None)
    if spec is not None:
        return {"kind": "registry", "spec": dict(spec)}
    source = getattr(model, "snacs_source", None)  # set by build_user_model (CLI --model-file)
    if isinstance(source, dict) and source.get("kind") in ("class", "file"):
        return {"kind": source["kind"], "target": str(source["target"]),
                "args": dict(source.get("args") or {})}
    cls = type(model)
    module, qual = cls.__module__, cls.__qualname__
    if module != "__main__" and "<locals>" not in qual:
        try:
            obj: Any = importlib.import_module(module)
            for part in qual.split("."):
                obj = getattr(obj, part)
        except Exception:  # noqa: BLE001 - not importable: recorded by name only
            obj = None
        if obj is cls:
            return {"kind": "class", "target": f"{module}:{qual}", "args": {}}
    return {"kind": "unrecorded", "class": f"{module}.{qual}"}


def _kept_channels(model: nn.Module) -> dict[str, list[int]]:
    """Per producer layer whose outputs were cut: the original output channels that remain.

    Known from the filter plan of `snacs.prune` (composed with the record of a model that was
    itself loaded from a snacs file); a record that no longer matches the layer's width (the
    model was slimmed some other way since) is dropped.
    """
    kept = {k: list(v) for k, v in (getattr(model, "snacs_kept_", None) or {}).items()}
    pruner = getattr(model, "snacs_pruner", None)
    plan = getattr(pruner, "plan_", None)
    if plan is not None and plan.granularity == "filter":
        for gid, removed in plan.remove.items():
            cg = pruner.topology_.groups[gid]
            gone = set(removed)
            local = [i for i in range(cg.channels) if i not in gone]
            prev = next((kept[p] for p in cg.producers if p in kept), None)
            now = [prev[i] for i in local] if prev is not None else local
            for p in cg.producers:  # every layer writing the group (residual streams: several)
                kept[p] = now
    modules = dict(model.named_modules())
    return {p: [int(i) for i in k] for p, k in kept.items()
            if p in modules and _out_width(modules[p]) == len(k)}


def _input_shape_of(model: nn.Module, given) -> list[int] | None:
    if given is not None:
        return [int(v) for v in given]
    pruner = getattr(model, "snacs_pruner", None)
    for shape in (getattr(pruner, "input_shape_", None), getattr(model, "snacs_input_shape_", None)):
        if shape is not None:
            return [int(v) for v in shape]
    spec = getattr(model, "snacs_spec", None)
    if spec:
        side = 224 if spec.get("name") == "resnet50" else 32
        return [int(spec.get("in_channels", 3)), side, side]
    return None


def save(model: nn.Module, path: str | os.PathLike, *, extra: dict | None = None,
         input_shape: tuple[int, int, int] | None = None) -> None:
    """Save a (possibly slimmed or masked) model without pickling its class.

    The file records the architecture, the kept channels, every layer's shape and the weights
    (masks folded in). `snacs.load(path)` rebuilds registry models, importable classes and
    `--model-file` classes on its own; a class it cannot import (defined in `__main__`, a
    notebook or a function) is saved all the same and loads with
    `snacs.load(path, model=MyNet(...))`. `model` itself is not modified.

    Args:
        model: The model to save.
        path: The file to write (atomically).
        extra: JSON-like data stored beside the model (results, training history).
        input_shape: (C, H, W) of one input; taken from the pruner when the model comes from
            `snacs.prune`. Needed only to slim a fresh instance at load time.
    """
    arch = _architecture(model)
    pruner = getattr(model, "snacs_pruner", None)
    settings = {}
    if pruner is not None and hasattr(pruner, "get_params"):
        settings = {k: v for k, v in pruner.get_params().items() if k != "progress"}
    payload: dict[str, Any] = {
        "format": FORMAT, "version": FORMAT_VERSION, "architecture": arch,
        "input_shape": _input_shape_of(model, input_shape), "layers": _structure(model),
        "kept": _kept_channels(model), "state_dict": plain_state_dict(model),
        "settings": settings, "extra": _with_data(model, extra) or {}}
    atomic_torch_save(payload, path)
    if arch["kind"] == "unrecorded":
        name = arch["class"].rpartition(".")[2]
        log.warning("saved %s: class %s cannot be imported by another process (defined in "
                    "__main__, a notebook or a function), so load it with "
                    "snacs.load(%r, model=%s(...)) and the same constructor arguments",
                    path, arch["class"], str(path), name)


def _read_payload(path: Path) -> dict:
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except Exception:
        # version-1 files of non-registry models hold a pickled module
        try:
            payload = torch.load(path, map_location="cpu", weights_only=False)
        except Exception as e:  # noqa: BLE001 - report any unreadable file the same way
            raise CheckpointError(f"cannot read {path}: {e}") from None
    if not isinstance(payload, dict) or payload.get("format") != FORMAT:
        raise CheckpointError(
            f"{path} is not a snacs model file (no '{FORMAT}' header); for a plain state_dict "
            "build the model with snacs.models.create_model and use snacs.models.load_weights"
        )
    version = payload.get("version", 1)
    if version > FORMAT_VERSION:
        raise CheckpointError(f"{path} is a snacs model file of format version {version}, newer "
                              f"than this snacs reads ({FORMAT_VERSION}); upgrade snacs")
    return payload


def load(path: str | os.PathLike, model: nn.Module | None = None, *,
         input_shape: tuple[int, int, int] | None = None) -> nn.Module:
    """Load a model written by `snacs.save` (or the CLI) and return it in eval mode.

    Args:
        path: A snacs model file, or a directory holding `model.pt`.
        model: A freshly built, unpruned instance of the saved architecture. Required when the
            file's class could not be recorded; otherwise it replaces the recorded architecture.
            It is slimmed in place to the saved channels and returned.
        input_shape: (C, H, W) to trace the channel groups on, when the file does not record it.

    Raises:
        CheckpointError: The file is missing, unreadable or not a snacs model file; the
            architecture cannot be rebuilt; or a layer's shape or a weight does not fit (the
            message names the first layer that differs).
    """
    path = Path(path)
    if path.is_dir():
        path = path / "model.pt"
    if not path.is_file():
        raise CheckpointError(f"no saved model at {path}; pass the model.pt a snacs command wrote")
    payload = _read_payload(path)
    if payload.get("version", 1) == 1:
        model = _load_v1(path, payload, model)
    else:
        arch = payload["architecture"]
        rebuilt = model is None
        if rebuilt:
            model = _build(path, arch)
        shape = input_shape if input_shape is not None else payload.get("input_shape")
        try:
            kept = _slim_to(model, payload["layers"], payload.get("kept") or {}, shape, path)
            _check_layers(model, payload["layers"], path)
            _load_state(model, payload["state_dict"], path)
        except CheckpointError as e:
            if rebuilt and arch["kind"] in ("class", "file"):
                name = arch["target"].rpartition(":")[2]
                raise CheckpointError(
                    f"{e}. {arch['target']} was rebuilt with arguments {arch.get('args') or {}}; "
                    f"if it needs others, pass an unpruned instance: "
                    f"snacs.load({str(path)!r}, model={name}(...))") from None
            raise
        model.snacs_kept_ = kept
        if shape is not None:
            model.snacs_input_shape_ = tuple(int(v) for v in shape)
        if arch["kind"] in ("class", "file"):
            model.snacs_source = dict(arch)
    model.eval()
    _attach_data(model, payload.get("extra"))
    return model


# --------------------------------------------------------------------------- data settings
# The data a model was trained/pruned on (normalisation, preprocessing, classes; see
# snacs.data.normalization.data_record) travels in extra["data"]; a model carries it in Python as
# `model.snacs_data`, so `snacs.save(snacs.load(p), q)` keeps it.

def _with_data(model: nn.Module, extra: dict | None) -> dict | None:
    data = getattr(model, "snacs_data", None)
    if data and "data" not in (extra or {}):
        return dict(extra or {}) | {"data": dict(data)}
    return extra


def _attach_data(model: nn.Module, extra: Any) -> None:
    if isinstance(extra, dict) and isinstance(extra.get("data"), dict):
        model.snacs_data = extra["data"]  # type: ignore[attr-defined]


def saved_data(path: str | os.PathLike) -> dict:
    """The data settings stored in a snacs model file (``mean``, ``std``, ``classes``,
    ``image_shape``, ``preprocessing``); ``{}`` for files without them or other checkpoints."""
    try:
        payload = _read_payload(Path(path))
    except CheckpointError:
        return {}
    data = (payload.get("extra") or {}).get("data")
    return dict(data) if isinstance(data, dict) else {}


def _build(path: Path, arch: dict) -> nn.Module:
    from snacs.models import create_model
    from snacs.models.registry import build_user_model

    if arch["kind"] == "registry":
        return create_model(**arch["spec"])
    if arch["kind"] in ("class", "file"):
        name = arch["target"].rpartition(":")[2]
        try:
            return build_user_model(arch["target"], arch.get("args"))
        except ConfigError as e:
            raise CheckpointError(
                f"{path}: cannot rebuild {arch['target']} ({e}); build an unpruned instance "
                f"yourself and pass it: snacs.load({str(path)!r}, model={name}(...))") from None
    name = arch["class"].rpartition(".")[2]
    raise CheckpointError(
        f"{path} holds a {arch['class']}, a class that could not be recorded at save time "
        f"(defined in __main__, a notebook or a function); build an unpruned instance with the "
        f"same constructor arguments and pass it: snacs.load({str(path)!r}, model={name}(...))")


def _slim_to(model: nn.Module, layers: dict[str, dict], kept: dict[str, list[int]],
             input_shape, path: Path) -> dict[str, list[int]]:
    """Remove channels of `model` (in place) until its producers have the recorded widths.

    Channels are removed with `snacs.apply.remove_channels`, the code that pruning uses; which
    ones is read from `kept` where recorded, else the last ones go (every tensor is overwritten
    by the saved weights, so only the count matters for the result). Returns the kept channels
    per reduced group.
    """
    from snacs.apply import remove_channels
    from snacs.pairs import find_topology

    current = _structure(model)
    if all(current.get(n) == s for n, s in layers.items()):
        return {}
    if input_shape is None:
        first = next((m for m in model.modules() if isinstance(m, nn.Conv2d)), None)
        input_shape = (first.in_channels if first is not None else 3, 32, 32)
    try:
        with torch.enable_grad():  # torch-pruning traces through autograd (load may run in no_grad)
            topo = find_topology(model, tuple(int(v) for v in input_shape))
    except Exception as e:  # noqa: BLE001 - a model the tracer cannot handle, or a wrong shape
        raise CheckpointError(
            f"{path}: cannot trace the given model on inputs of shape {tuple(input_shape)} to "
            f"slim it to the saved channels ({type(e).__name__}: {e}); pass input_shape=(C, H, W)"
        ) from None
    modules = dict(model.named_modules())
    remove: dict[int, list[int]] = {}
    record: dict[str, list[int]] = {}
    for cg in topo.groups:
        p0 = next((p for p in cg.producers if p in layers), None)
        if p0 is None or _out_width(modules[p0]) is None:
            continue
        n, k = cg.channels, layers[p0]["out"]
        if k >= n:
            continue  # nothing removed (or a mismatch that _check_layers reports)
        keep = next((kept[p] for p in cg.producers if p in kept), None)
        if keep is None or len(keep) != k or len(set(keep)) != k or not all(0 <= i < n for i in keep):
            keep = list(range(k))
        gone = sorted(set(range(n)) - set(keep))
        remove[cg.id] = gone
        for p in cg.producers:
            record[p] = sorted(keep)
    try:
        with torch.enable_grad():
            remove_channels(model, topo, remove)
    except Exception as e:  # noqa: BLE001 - torch-pruning refuses: the model is not the saved one
        raise CheckpointError(f"{path}: cannot slim the given model to the saved channels "
                              f"({type(e).__name__}: {e}); is it the saved architecture?") from None
    return record


def _check_layers(model: nn.Module, layers: dict[str, dict], path: Path) -> None:
    """Every recorded layer exists with its recorded shape, and the model has no others."""
    current = _structure(model)
    hint = ("build the model with the same class and constructor arguments as the saved one "
            "(unpruned: snacs.load removes the pruned channels itself)")
    for name, s in layers.items():
        if name not in current:
            raise CheckpointError(f"{path}: saved layer {name!r} ({_describe(s)}) does not exist "
                                  f"in the model; {hint}")
        if current[name] != s:
            raise CheckpointError(f"{path}: layer {name!r} is {_describe(current[name])} in the "
                                  f"model but {_describe(s)} in the file; {hint}")
    extra = [n for n in current if n not in layers]
    if extra:
        raise CheckpointError(f"{path}: the model has layer {extra[0]!r} "
                              f"({_describe(current[extra[0]])}) that the file lacks; {hint}")


def _load_state(model: nn.Module, state: dict[str, torch.Tensor], path: Path) -> None:
    # torch's strict loading (not load_weights' shape pre-check): custom layers such as the
    # slimmed option-A shortcut restore their own channel maps from the state dict
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as e:
        msg = " ".join(str(e).split())
        raise CheckpointError(f"{path}: weights do not fit the model: {msg}") from None


def _load_v1(path: Path, payload: dict, model: nn.Module | None) -> nn.Module:
    """Version-1 files: a registry spec + layer shapes + state_dict, or a pickled module."""
    from snacs.models import create_model

    if payload["kind"] == "pickle":
        return payload["module"]
    if model is None:
        model = create_model(**payload["spec"])
    _resize(model, payload["structure"])
    try:
        model.load_state_dict(payload["state_dict"], strict=True)
    except RuntimeError as e:
        raise CheckpointError(f"{path}: weights do not fit the saved structure: {e}") from None
    return model


def _resize(model: nn.Module, structure: dict[str, dict]) -> None:
    """Replace layers whose recorded shape differs from the freshly built model's (version 1)."""
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
