"""Model registry in the style of timm: `register_model`, `create_model`, `list_models`.

The CLI, the tests and the benchmarks enumerate the same zoo through this registry.
"""

from __future__ import annotations

import inspect
import logging
from collections.abc import Callable
from typing import Any, TypeVar

from torch import nn

from snacs.errors import ConfigError

__all__ = ["register_model", "create_model", "list_models", "is_model", "scale_channels"]

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
