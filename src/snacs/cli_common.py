"""Helpers every `snacs` command shares: options, configs, models, datasets, training settings.

`snacs.cli` (train, evaluate) and `snacs.cli_prune` (prune, finetune, export) both import this
module and nothing from each other.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from pathlib import Path
from typing import Any

from snacs.errors import ConfigError

log = logging.getLogger("snacs")

# options whose value is a mapping: in a config file they are values, not sections
MAPPING_OPTIONS = {"model_args"}

DEFAULT_DATASET_OPTS = {"fashion-mnist": {"pad_to": 32, "channels": 1}}
# training recipe defaults per dataset, used where the user gave no value. Fashion-MNIST learns
# fastest without crop/flip augmentation and with smaller batches (>= 90 % test in 2 epochs).
DATASET_TRAIN_DEFAULTS = {"fashion-mnist": {"augment": False, "batch_size": 64},
                          "cifar10": {"augment": True, "batch_size": 128}}


def progress_enabled(args) -> bool:
    if getattr(args, "no_progress", False):
        return False
    return sys.stderr.isatty()


def setup_logging(verbose: int) -> None:
    level = logging.WARNING if verbose == 0 else logging.INFO if verbose == 1 else logging.DEBUG
    logging.basicConfig(level=level, format="%(levelname)s %(name)s: %(message)s",
                        stream=sys.stderr)


def load_config_file(path: str | None) -> dict[str, Any]:
    """Read a YAML (or JSON) config; keys use the long option names with '-' or '_'."""
    if not path:
        return {}
    import yaml

    p = Path(path)
    if not p.is_file():
        raise ConfigError(f"config file {p} does not exist")
    try:
        data = yaml.safe_load(p.read_text()) or {}
    except yaml.YAMLError as e:
        raise ConfigError(f"config file {p} is not valid YAML: {e}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"config file {p} must hold a mapping of option: value")
    flat: dict[str, Any] = {}
    for k, v in data.items():
        if isinstance(v, dict) and str(k).replace("-", "_") in MAPPING_OPTIONS:
            flat[str(k).replace("-", "_")] = v
        elif isinstance(v, dict):  # sections (model:, data:, prune:, finetune:) are flattened
            for k2, v2 in v.items():
                flat[str(k2).replace("-", "_")] = v2
        else:
            flat[str(k).replace("-", "_")] = v
    return flat


def apply_config(parser: argparse.ArgumentParser, args: argparse.Namespace) -> argparse.Namespace:
    """Config values fill options the user did not give on the command line."""
    cfg = load_config_file(getattr(args, "config", None))
    if not cfg:
        return args
    defaults = {a.dest: a.default for a in parser._actions}
    known = set(defaults)
    unknown = sorted(set(cfg) - known)
    if unknown:
        raise ConfigError(
            f"config file {args.config} has unknown option(s) {', '.join(unknown)}; "
            f"valid options: {', '.join(sorted(k for k in known if k not in ('help', 'config')))}"
        )
    for k, v in cfg.items():
        if getattr(args, k) == defaults[k]:
            if isinstance(v, list):
                v = tuple(v)
            setattr(args, k, v)
    return args


def build_dataset(name: str, split: str, root: str | None, **extra):
    from snacs.data import get_dataset

    opts = dict(DEFAULT_DATASET_OPTS.get(name, {}))
    opts.update({k: v for k, v in extra.items() if v is not None})
    return get_dataset(name, split=split, root=root, **opts)


def _saved_data(args) -> dict:
    """Data settings stored in the snacs model file given with --checkpoint or --load ({})."""
    if not hasattr(args, "_saved_data"):
        import snacs.modelfile

        src = getattr(args, "load", None) or getattr(args, "checkpoint", None)
        args._saved_data = snacs.modelfile.saved_data(src) if src and Path(src).is_file() else {}
    return args._saved_data


# datasets whose loaders take mean/std (synthetic computes its own and takes none)
_NORMALISED = ("fashion-mnist", "cifar10", "cifar10-jpeg", "image-folder")


def dataset_extra(args) -> dict:
    """Loader options from the data flags; normalisation and image-folder sizes not given on the
    command line or in the config come from the model file (--checkpoint/--load) when it has
    them."""
    from snacs.data.normalization import parse_stats

    extra: dict[str, Any] = {}
    name = getattr(args, "dataset", "")
    if getattr(args, "download", False):
        extra["download"] = True
    saved = _saved_data(args)
    if name in _NORMALISED:
        for key in ("mean", "std"):
            value = parse_stats(getattr(args, key, None))
            if value is None and saved.get(key):
                value = tuple(saved[key])
                log.info("using the %s %s stored in the model file", key, list(value))
            if value is not None:
                extra[key] = value
    if name == "image-folder":
        sizes = {k: getattr(args, k, None) for k in ("image_size", "resize", "crop")}
        pre = saved.get("preprocessing") or {}
        if all(v is None for v in sizes.values()) and saved.get("dataset") == "image-folder":
            if pre.get("size"):
                sizes = {"size": tuple(pre["size"])}
            elif pre.get("crop"):
                sizes = {"resize": pre.get("resize"), "crop": pre["crop"]}
            log.info("using the image preprocessing stored in the model file: %s",
                     pre.get("transform"))
        extra.update({k: v for k, v in sizes.items() if v is not None})
        classes = getattr(args, "classes", None)
        if isinstance(classes, str):
            classes = [c.strip() for c in classes.split(",") if c.strip()]
        if classes:
            extra["classes"] = list(classes)
        if getattr(args, "skip_bad_images", False):
            extra["skip_bad_images"] = True
    else:
        given = [f"--{k.replace('_', '-')}" for k in ("image_size", "resize", "crop", "classes")
                 if getattr(args, k, None)]
        if given:
            log.warning("%s only apply to --dataset image-folder; ignored for %s",
                        ", ".join(given), name)
    return extra


def data_record(dataset) -> dict:
    from snacs.data.normalization import data_record

    return data_record(dataset)


def model_args(args) -> dict[str, Any]:
    """--model-args as a dict: a JSON object on the command line, a mapping in a config file."""
    raw = getattr(args, "model_args", None)
    if raw is None or raw == "":
        return {}
    if isinstance(raw, str):
        try:
            raw = json.loads(raw)
        except json.JSONDecodeError as e:
            raise ConfigError(f"--model-args must be a JSON object such as "
                              f"'{{\"num_classes\": 10}}', got {raw!r} ({e.msg})") from None
    if not isinstance(raw, dict):
        raise ConfigError(f"--model-args must be a JSON object (keyword: value), got {raw!r}")
    return raw


def user_model(args):
    """The --model-file class built with --model-args, or None without --model-file."""
    target = getattr(args, "model_file", None)
    if not target:
        return None
    if getattr(args, "model", None):
        raise ConfigError("give either --model (a zoo name) or --model-file, not both")
    if getattr(args, "width", 1.0) not in (None, 1.0):
        raise ConfigError("--width applies to zoo models; pass your class's own width "
                          "argument in --model-args")
    import torch

    from snacs.models.registry import build_user_model

    torch.manual_seed(getattr(args, "seed", 0))  # the same --seed gives the same initial weights
    return build_user_model(target, model_args(args))


def build_model(args, dataset):
    """The model named on the command line (zoo name or --model-file), or a snacs model file."""
    import snacs.modelfile
    from snacs.models import create_model, load_weights

    ckpt = getattr(args, "checkpoint", None)
    own = user_model(args)
    if ckpt and is_snacs_file(ckpt):
        return snacs.modelfile.load(ckpt, model=own)
    if own is not None:
        if ckpt:
            load_weights(own, ckpt)
        return own
    if not args.model:
        raise ConfigError("--model (a zoo name) or --model-file is required unless --checkpoint "
                          "is a snacs model file")
    c, _, _ = dataset.image_shape
    import torch

    torch.manual_seed(getattr(args, "seed", 0))  # the same --seed gives the same initial weights
    model = create_model(args.model, num_classes=dataset.num_classes, width=args.width,
                         in_channels=c)
    if ckpt:
        load_weights(model, ckpt)
    return model


def is_snacs_file(path: str) -> bool:
    """Whether `path` is a snacs model file (else a plain checkpoint for load_weights)."""
    import torch

    from snacs.modelfile import FORMAT

    p = Path(path)
    if not p.is_file():
        from snacs.errors import CheckpointError

        raise CheckpointError(f"checkpoint {p} does not exist; give the path of a .pt file")
    try:
        obj = torch.load(p, map_location="cpu", weights_only=True)
    except Exception:  # noqa: BLE001 - version-1 files of other classes hold a pickled module
        try:
            obj = torch.load(p, map_location="cpu", weights_only=False)
        except Exception:  # noqa: BLE001 - load_weights reports unreadable files properly
            return False
    return isinstance(obj, dict) and obj.get("format") == FORMAT


def init_distributed() -> None:
    if int(os.environ.get("WORLD_SIZE", "1")) > 1:
        import torch.distributed as dist

        if not dist.is_initialized():
            dist.init_process_group("gloo")


def set_threads(args) -> None:
    if getattr(args, "threads", None):
        import torch

        torch.set_num_threads(args.threads)


def train_config(args, **over):
    from snacs.train import TrainConfig

    rec = DATASET_TRAIN_DEFAULTS.get(getattr(args, "dataset", ""), {})
    kw = dict(epochs=args.epochs, lr=args.lr, weight_decay=args.weight_decay,
              schedule=args.schedule, milestones=tuple(args.milestones or ()), gamma=args.gamma,
              batch_size=args.batch_size or rec.get("batch_size", 128),
              augment=args.augment if args.augment is not None else rec.get("augment", True),
              bf16=args.bf16, channels_last=getattr(args, "channels_last", False),
              val_fraction=args.val_fraction, seed=args.seed, momentum=args.momentum,
              steps_per_epoch=args.steps_per_epoch,
              track_test=getattr(args, "track_test", False))
    kw.update(over)
    return TrainConfig(**kw)



# --------------------------------------------------------------------------- options

def add_data_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--dataset", default="fashion-mnist",
                   help="dataset name: fashion-mnist, cifar10, cifar10-jpeg, image-folder, "
                        "synthetic (default: %(default)s)")
    p.add_argument("--data-root", default=None,
                   help="dataset directory (default: the dataset's standard location). For "
                        "image-folder: ROOT/{train,test|val}/<class>/*.jpg, or ROOT/<class>/*.jpg "
                        "(then split 80/20 per class, seed 0)")
    p.add_argument("--download", action="store_true",
                   help="download CIFAR-10 when it is missing (needs internet)")
    g = p.add_argument_group("image preprocessing (image-folder; normalisation: every image "
                             "dataset)")
    g.add_argument("--image-size", type=int, default=None, metavar="S",
                   help="the model's input size S: images already SxS are used exactly as they "
                        "are; others get their shorter side resized to S and an SxS centre crop "
                        "(default without any size flag: --resize 256 --crop 224)")
    g.add_argument("--resize", type=int, default=None, metavar="R",
                   help="resize the shorter side of every image whose shorter side is not R to R "
                        "pixels (aspect kept, bilinear) before the centre crop, also images "
                        "already at the crop size (default: S with --image-size; round(C/0.875) "
                        "with --crop alone, sparing images already CxC)")
    g.add_argument("--crop", type=int, default=None, metavar="C",
                   help="centre-crop CxC after resizing: the size the model sees (same as "
                        "--image-size; default: R with only --resize); images already CxC are "
                        "not resized unless --resize is given")
    g.add_argument("--mean", nargs="+", default=None, metavar="M",
                   help="per-channel mean the model was trained with, in [0, 1] units: three "
                        "numbers or a preset (imagenet, cifar10, none = no normalisation). "
                        "Default: the one stored in a snacs model file, else the dataset's "
                        "(ImageNet's for image-folder and cifar10-jpeg, CIFAR-10's for cifar10)")
    g.add_argument("--std", nargs="+", default=None, metavar="S",
                   help="per-channel standard deviation, as --mean")
    g.add_argument("--classes", default=None,
                   help="image-folder: comma-separated class folder names in the model's label "
                        "order (default: sorted folder names)")
    g.add_argument("--skip-bad-images", action="store_true",
                   help="image-folder: check every image first and leave out unreadable ones "
                        "(counted in the log and result.json) instead of stopping at the first")


def add_model_args(p: argparse.ArgumentParser, checkpoint_help: str) -> None:
    p.add_argument("--model", default=None,
                   help="architecture name, see `snacs models` (default: taken from the checkpoint)")
    p.add_argument("--width", type=float, default=1.0,
                   help="channel width multiplier of the architecture (default: %(default)s)")
    p.add_argument("--checkpoint", default=None, help=checkpoint_help)
    add_model_file_args(p)


def add_model_file_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model-file", default=None, metavar="FILE.py:CLASS",
                   help="your own model class instead of a zoo model: path/to/net.py:ClassName "
                        "or package.module:ClassName")
    p.add_argument("--model-args", default=None, metavar="JSON",
                   help="keyword arguments of the --model-file class as a JSON object, e.g. "
                        "'{\"num_classes\": 10}' (default: none)")


def add_train_args(p: argparse.ArgumentParser, *, epochs: int, lr: float, wd: float) -> None:
    p.add_argument("--epochs", type=int, default=epochs, help="epochs (default: %(default)s)")
    p.add_argument("--lr", type=float, default=lr, help="initial learning rate (default: %(default)s)")
    p.add_argument("--momentum", type=float, default=0.9, help="SGD momentum, Nesterov (default: %(default)s)")
    p.add_argument("--weight-decay", type=float, default=wd, help="weight decay (default: %(default)s)")
    p.add_argument("--schedule", choices=["cosine", "cosine-step", "multistep", "constant"],
                   default="cosine",
                   help="learning-rate schedule: cosine per epoch, cosine-step per batch (ends "
                        "near 0 even for one epoch), multistep, constant (default: %(default)s)")
    p.add_argument("--milestones", type=int, nargs="*", default=None,
                   help="epochs where multistep multiplies the rate by --gamma")
    p.add_argument("--gamma", type=float, default=0.2, help="multistep factor (default: %(default)s)")
    p.add_argument("--batch-size", type=int, default=None,
                   help="batch size (default: 64 for fashion-mnist, else 128)")
    p.add_argument("--augment", dest="augment", action="store_true", default=None,
                   help="random crop (pad 4) and horizontal flip (default: on, off for fashion-mnist)")
    p.add_argument("--no-augment", dest="augment", action="store_false",
                   help="turn off random crop and flip")
    p.add_argument("--bf16", action="store_true", help="bfloat16 autocast on CPU")
    p.add_argument("--channels-last", action="store_true",
                   help="train in the NHWC memory layout (faster on CPU for depthwise convs, "
                        "e.g. MobileNetV2; the saved model is in the usual layout)")
    p.add_argument("--val-fraction", type=float, default=0.1,
                   help="share of the training split held out for model selection (default: %(default)s)")
    p.add_argument("--steps-per-epoch", type=int, default=None,
                   help="stop each epoch after this many batches (quick checks; default: all)")
    p.add_argument("--resume", action="store_true", help="continue from OUT/last.pt after an interruption")
    p.add_argument("--track-test", action="store_true",
                   help="also record test accuracy after every epoch (a record only: the "
                        "checkpoint is still selected on the validation split)")


def add_common_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--seed", type=int, default=0, help="random seed (default: %(default)s)")
    p.add_argument("--threads", type=int, default=None,
                   help="torch CPU threads (default: all cores); the limits stage probes that "
                        "many layer pairs side by side")
    p.add_argument("--config", default=None, help="YAML file of options; flags given on the command line win")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    p.add_argument("-v", "--verbose", action="count", default=0, help="more log output (-v, -vv)")
