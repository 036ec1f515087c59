"""Datasets by name, so the CLI, configs, tests and benchmarks enumerate the same set."""

from __future__ import annotations

import inspect
import logging
import os
from collections.abc import Callable
from typing import Any, TypeVar

from snacs.data.base import ImageDataset
from snacs.data.cifar import cifar10
from snacs.data.cifar_jpeg import cifar10_jpeg
from snacs.data.fashion_mnist import fashion_mnist
from snacs.data.folder import image_folder
from snacs.data.synthetic import synthetic
from snacs.errors import ConfigError

__all__ = ["get_dataset", "list_datasets", "register_dataset"]

logger = logging.getLogger(__name__)

Loader = Callable[..., ImageDataset]
F = TypeVar("F", bound=Loader)

_REGISTRY: dict[str, Loader] = {}


def _canonical(name: str) -> str:
    return name.strip().lower().replace("_", "-")


def register_dataset(name: str) -> Callable[[F], F]:
    """Decorator registering ``loader(split, root=None, **opts)`` under ``name``."""

    def wrap(fn: F) -> F:
        key = _canonical(name)
        if key in _REGISTRY and _REGISTRY[key] is not fn:
            raise ConfigError(f"dataset {key!r} is already registered")
        _REGISTRY[key] = fn
        return fn

    return wrap


def list_datasets() -> list[str]:
    """Registered dataset names, sorted."""
    return sorted(_REGISTRY)


def get_dataset(
    name: str, split: str = "train", root: str | os.PathLike[str] | None = None, **opts: Any
) -> ImageDataset:
    """Load dataset ``name`` (see :func:`list_datasets`) with loader-specific options.

    Args:
        name: e.g. ``"cifar10"``; case and ``_``/``-`` do not matter.
        split: split name, passed to the loader.
        root: data directory; ignored by loaders that read none (``synthetic``).
        **opts: loader options, e.g. ``pad_to=32`` for Fashion-MNIST.

    Raises:
        ConfigError: unknown name or option.
    """
    key = _canonical(name)
    if key not in _REGISTRY:
        raise ConfigError(f"unknown dataset {name!r}; available: {', '.join(list_datasets())}")
    fn = _REGISTRY[key]
    params = inspect.signature(fn).parameters
    kwargs: dict[str, Any] = dict(opts)
    if "root" in params:
        kwargs["root"] = root
    elif root is not None:
        logger.debug("dataset %s reads no files; ignoring root=%s", key, root)
    accepted = [p for p in params if p not in ("split", "root")]
    unknown = sorted(set(opts) - set(accepted))
    if unknown:
        raise ConfigError(
            f"dataset {key!r} has no option(s) {', '.join(unknown)}; "
            f"valid options: {', '.join(accepted) or 'none'}"
        )
    return fn(split, **kwargs)


register_dataset("fashion-mnist")(fashion_mnist)
register_dataset("cifar10")(cifar10)
register_dataset("cifar10-jpeg")(cifar10_jpeg)
register_dataset("image-folder")(image_folder)
register_dataset("synthetic")(synthetic)
