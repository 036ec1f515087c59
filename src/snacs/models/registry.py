"""Model registry in the style of timm: `register_model`, `create_model`, `list_models`.

The CLI, the tests and the benchmarks enumerate the same zoo through this registry.
"""

from __future__ import annotations

import hashlib
import importlib
import importlib.util
import inspect
import logging
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

from torch import nn

from snacs.errors import ConfigError

__all__ = ["register_model", "create_model", "list_models", "is_model", "scale_channels",
           "import_model_class", "build_user_model"]

logger = logging.getLogger(__name__)

ModelFn = TypeVar("ModelFn", bound=Callable[..., nn.Module])

_MODELS: dict[str, Callable[..., nn.Module]] = {}


def register_model(fn: ModelFn) -> ModelFn:
    """Register a model constructor under its function name (lower case).

    The constructor must accept `num_classes`, `width` and `in_channels` keyword arguments.
    """
    name = fn.__name__.lower()
    if name in _MODELS and _MODELS[name] is not fn:
        raise ValueError(f"model {name!r} is already registered")
    _MODELS[name] = fn
    return fn


def list_models() -> list[str]:
    """Names of all registered models, sorted."""
    return sorted(_MODELS)


def is_model(name: str) -> bool:
    """Whether `name` is a registered model."""
    return name.lower() in _MODELS


def create_model(
    name: str,
    num_classes: int = 10,
    width: float = 1.0,
    in_channels: int = 3,
    **kwargs: Any,
) -> nn.Module:
    """Build a registered model.

    The arguments are recorded on the result as `model.snacs_spec`, a JSON-ready dict such that
    `create_model(**model.snacs_spec)` rebuilds the same architecture.

    Args:
        name: A name from `list_models()` (case-insensitive).
        num_classes: Outputs of the last linear layer.
        width: Channel multiplier; 1.0 is the published architecture.
        in_channels: Channels of the input images (3 for RGB, 1 for grey scale).
        **kwargs: Extra model-specific options.

    Raises:
        ConfigError: The name is unknown or an argument is out of range.
    """
    key = str(name).lower()
    if key not in _MODELS:
        raise ConfigError(f"unknown model {name!r}; available models: {', '.join(list_models())}")
    if isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 1:
        raise ConfigError(f"num_classes must be a positive integer, got {num_classes!r}")
    if isinstance(in_channels, bool) or not isinstance(in_channels, int) or in_channels < 1:
        raise ConfigError(f"in_channels must be a positive integer, got {in_channels!r}")
    if isinstance(width, bool) or not isinstance(width, (int, float)) or not width > 0:
        raise ConfigError(f"width must be a positive number, got {width!r}")
    fn = _MODELS[key]
    call = {"num_classes": num_classes, "width": float(width), "in_channels": in_channels}
    call.update(kwargs)
    try:
        inspect.signature(fn).bind(**call)
    except TypeError as exc:
        raise ConfigError(f"invalid options for model {key!r}: {exc}") from exc
    model = fn(**call)
    model.snacs_spec = {"name": key, **call}
    logger.debug("created model %s", model.snacs_spec)
    return model


def scale_channels(channels: int, width: float) -> int:
    """Channels after a width multiplier: `round(channels * width)`, at least 1.

    Every model in the zoo uses this one rule, so width 1.0 is exactly the published network.
    """
    return max(1, int(round(channels * width)))


# --------------------------------------------------------------------------- the user's own classes

def import_model_class(target: str) -> type:
    """The class named by `path/to/file.py:ClassName` or `package.module:ClassName`.

    A file is imported as a module of its own (its folder is on `sys.path` while it runs, so it
    may import its neighbours); the same file is imported once per process.

    Raises:
        ConfigError: The target is malformed, the file or module is missing or fails to import,
            or it has no such class.
    """
    where, sep, name = str(target).rpartition(":")
    if not sep or not where or not name:
        raise ConfigError(f"model class {target!r} must be path/to/file.py:ClassName or "
                          "package.module:ClassName")
    if where.endswith(".py") or "/" in where or "\\" in where:
        module = _import_file(Path(where))
        label = f"model file {where}"
    else:
        try:
            module = importlib.import_module(where)
        except Exception as exc:  # noqa: BLE001 - any import failure is the user's module
            raise ConfigError(f"cannot import module {where!r} for model class {name}: "
                              f"{type(exc).__name__}: {_one_line(exc)}") from None
        label = f"module {where}"
    obj: Any = module
    for part in name.split("."):
        obj = getattr(obj, part, None)
        if obj is None:
            found = sorted(k for k, v in vars(module).items()
                           if isinstance(v, type) and issubclass(v, nn.Module)
                           and getattr(v, "__module__", None) == module.__name__)
            raise ConfigError(f"{label} has no class {name!r}; it defines "
                              f"{', '.join(found) if found else 'no nn.Module classes'}")
    if not callable(obj):
        raise ConfigError(f"{name!r} in {label} is a {type(obj).__name__}, not a class")
    return obj


def _import_file(path: Path):
    path = path.expanduser()
    if not path.is_file():
        raise ConfigError(f"model file {path} does not exist; give path/to/file.py:ClassName")
    path = path.resolve()
    key = "snacs_user_model_" + hashlib.sha1(str(path).encode()).hexdigest()[:12]
    if key in sys.modules:
        return sys.modules[key]
    spec = importlib.util.spec_from_file_location(key, path)
    if spec is None or spec.loader is None:
        raise ConfigError(f"model file {path} is not a Python file")
    module = importlib.util.module_from_spec(spec)
    sys.modules[key] = module  # dataclasses and pickling look classes up here
    sys.path.insert(0, str(path.parent))
    try:
        spec.loader.exec_module(module)
    except Exception as exc:  # noqa: BLE001 - report any error of the user's file in one line
        del sys.modules[key]
        raise ConfigError(f"model file {path} fails to import: {type(exc).__name__}: "
                          f"{_one_line(exc)}") from None
    finally:
        sys.path.remove(str(path.parent))
    return module


def build_user_model(target: str, args: dict[str, Any] | None = None) -> nn.Module:
    """`ClassName(**args)` from `import_model_class(target)`, recorded as `model.snacs_source`.

    `snacs.save` stores the record, so `snacs.load` rebuilds the model from the same file or
    module without pickling the class.

    Raises:
        ConfigError: The class cannot be imported, its constructor fails, or it does not build
            an `nn.Module`.
    """
    args = dict(args or {})
    cls = import_model_class(target)
    name = target.rpartition(":")[2]
    try:
        model = cls(**args)
    except Exception as exc:  # noqa: BLE001 - the user's constructor
        raise ConfigError(f"{name}(**{args!r}) failed: {type(exc).__name__}: {_one_line(exc)}; check "
                          "--model-args against the class's constructor") from None
    if not isinstance(model, nn.Module):
        raise ConfigError(f"{name}(**{args!r}) returned a {type(model).__name__}, not an "
                          "nn.Module")
    where = target.rpartition(":")[0]
    if where.endswith(".py") or "/" in where:
        target = f"{Path(where).expanduser().resolve()}:{name}"
        kind = "file"
    else:
        kind = "class"
    model.snacs_source = {"kind": kind, "target": target, "args": args}
    return model


def _one_line(exc: BaseException) -> str:
    return " ".join(str(exc).split())
