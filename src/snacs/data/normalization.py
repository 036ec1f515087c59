"""Per-channel normalisation: presets, user values, and the record a saved model carries.

A model only works on inputs normalised the way it was trained, so every image dataset takes
``mean``/``std`` as numbers or a preset name, and :func:`data_record` describes a dataset (name,
normalisation, preprocessing, classes, input shape) in a JSON-able dict that the CLI stores in the
model file (``extra["data"]``) and reads back with :func:`snacs.modelfile.saved_data`.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from snacs.errors import ConfigError

__all__ = ["STATS_PRESETS", "data_record", "parse_stats", "resolve_stats"]

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
CIFAR10_MEAN = (0.4914, 0.4822, 0.4465)
CIFAR10_STD = (0.2470, 0.2435, 0.2616)

# name -> (mean, std) for three channels; "none" keeps pixels in [0, 1] (x / 255).
STATS_PRESETS: dict[str, tuple[tuple[float, ...], tuple[float, ...]]] = {
    "imagenet": (IMAGENET_MEAN, IMAGENET_STD),
    "cifar10": (CIFAR10_MEAN, CIFAR10_STD),
    "none": ((0.0, 0.0, 0.0), (1.0, 1.0, 1.0)),
}

Stats = str | float | Sequence[float] | Sequence[str]


def parse_stats(value: Any) -> str | tuple[float, ...] | None:
    """A preset name or a tuple of floats from a CLI/YAML value.

    Accepts ``None``, a preset name, one number, ``"0.5,0.5,0.5"``, ``["0.5", "0.5", "0.5"]``
    (argparse ``nargs="+"``) or a list of numbers (YAML).

    Raises:
        ConfigError: neither a preset name nor numbers.
    """
    if value is None:
        return None
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return (float(value),)
    items = [value] if isinstance(value, str) else list(value)
    tokens = [t for item in items for t in (str(item).replace(",", " ").split())]
    if len(tokens) == 1 and tokens[0].lower() in STATS_PRESETS:
        return tokens[0].lower()
    try:
        return tuple(float(t) for t in tokens)
    except ValueError:
        raise ConfigError(
            f"mean/std must be a preset ({', '.join(STATS_PRESETS)}) or numbers such as "
            f"'0.5 0.5 0.5', got {value!r}"
        ) from None


def resolve_stats(
    mean: Stats | None,
    std: Stats | None,
    channels: int,
    name: str,
    default: tuple[Sequence[float], Sequence[float]],
) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Per-channel (mean, std) tuples from presets, numbers or ``None`` (the dataset's default).

    One number is repeated for every channel; the three-channel presets need three channels,
    except ``"none"``, which fits any count.

    Raises:
        ConfigError: unknown preset, wrong count, or a non-positive std.
    """

    def one(value: Stats | None, which: int, label: str) -> tuple[float, ...]:
        if value is None:
            return tuple(float(v) for v in default[which])
        v = parse_stats(value)
        if isinstance(v, str):
            if v == "none":
                return (0.0, 1.0)[which:which + 1] * channels
            if channels != 3:
                raise ConfigError(
                    f"{name}: the {v!r} {label} preset is for three-channel (RGB) images, but "
                    f"these have {channels} channel(s); give {channels} number(s) or 'none'")
            return STATS_PRESETS[v][which]
        assert v is not None
        if len(v) == 1:
            v = v * channels
        if len(v) != channels:
            raise ConfigError(
                f"{name}: {label} has {len(v)} values but the images have {channels} channels; "
                f"give one value per channel, one value for all, or a preset "
                f"({', '.join(STATS_PRESETS)})")
        return v

    m, s = one(mean, 0, "mean"), one(std, 1, "std")
    if min(s) <= 0:
        raise ConfigError(f"{name}: every channel std must be positive, got {s}")
    return m, s


def data_record(dataset: Any) -> dict[str, Any]:
    """What a model file should remember about the data it was trained or pruned on.

    Keys: ``dataset``, ``mean``, ``std``, ``classes``, ``image_shape`` and ``preprocessing``
    (the dataset's own record of resizing, cropping and splitting, when it has one).
    """
    rec: dict[str, Any] = {
        "dataset": getattr(dataset, "name", None),
        "mean": [float(v) for v in getattr(dataset, "mean", ())],
        "std": [float(v) for v in getattr(dataset, "std", ())],
    }
    classes = getattr(dataset, "classes", None)
    if classes is not None:
        rec["classes"] = [str(c) for c in classes]
    shape = getattr(dataset, "image_shape", None)
    if shape is not None:
        rec["image_shape"] = [int(v) for v in shape]
    pre = getattr(dataset, "preprocessing", None)
    if pre:
        rec["preprocessing"] = dict(pre)
    return rec
