"""The `snacs` command line: train, evaluate, prune, finetune, export.

The CLI owns logging handlers and progress bars; errors a user can cause are printed as one line
(`snacs: error: ...`) with exit status 2, never a traceback.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from pathlib import Path
from typing import Any

from snacs.errors import ConfigError, SnacsError

log = logging.getLogger("snacs")

DEFAULT_DATASET_OPTS = {"fashion-mnist": {"pad_to": 32, "channels": 1}}
# training recipe defaults per dataset, used where the user gave no value. Fashion-MNIST learns
# fastest without crop/flip augmentation and with smaller batches (>= 90 % test in 2 epochs).
DATASET_TRAIN_DEFAULTS = {"fashion-mnist": {"augment": False, "batch_size": 64},
                          "cifar10": {"augment": True, "batch_size": 128}}


# --------------------------------------------------------------------------- helpers

def _progress_enabled(args) -> bool:
    if getattr(args, "no_progress", False):
        return False
    return sys.stderr.isatty()


def _setup_logging(verbose: int) -> None:
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
        if isinstance(v, dict):  # sections (model:, data:, prune:, finetune:) are flattened
            for k2, v2 in v.items():
                flat[str(k2).replace("-", "_")] = v2
        else:
            flat[str(k).replace("-", "_")] = v
    return flat


def _apply_config(parser: argparse.ArgumentParser, args: argparse.Namespace) -> argparse.Namespace:
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


def _dataset_extra(args) -> dict:
    extra = {}
    if getattr(args, "download", False):
        extra["download"] = True
    if getattr(args, "image_size", None) and getattr(args, "dataset", "") == "image-folder":
        extra["crop"] = args.image_size
    return extra


def _build_model(args, dataset):
    """The model named on the command line, or the one stored in a snacs model file."""
    import snacs.io
    from snacs.models import create_model, load_weights

    ckpt = getattr(args, "checkpoint", None)
    if ckpt and _is_snacs_file(ckpt):
        return snacs.io.load(ckpt)
    if not args.model:
        raise ConfigError("--model is required unless --checkpoint is a snacs model file")
    c, _, _ = dataset.image_shape
    import torch

    torch.manual_seed(getattr(args, "seed", 0))  # the same --seed gives the same initial weights
    model = create_model(args.model, num_classes=dataset.num_classes, width=args.width,
                         in_channels=c)
    if ckpt:
        load_weights(model, ckpt)
    return model


def _is_snacs_file(path: str) -> bool:
    import torch

    p = Path(path)
    if not p.is_file():
        from snacs.errors import CheckpointError

        raise CheckpointError(f"checkpoint {p} does not exist; give the path of a .pt file")
    try:
        obj = torch.load(p, map_location="cpu", weights_only=False)
    except Exception:  # noqa: BLE001 - load_weights reports unreadable files properly
        return False
    return isinstance(obj, dict) and obj.get("format") == "snacs-model"


def _init_distributed() -> None:
    if int(os.environ.get("WORLD_SIZE", "1")) > 1:
        import torch.distributed as dist

        if not dist.is_initialized():
            dist.init_process_group("gloo")


def _set_threads(args) -> None:
    if getattr(args, "threads", None):
        import torch

        torch.set_num_threads(args.threads)


def _train_config(args, **over):
    from snacs.train import TrainConfig

    rec = DATASET_TRAIN_DEFAULTS.get(getattr(args, "dataset", ""), {})
    kw = dict(epochs=args.epochs, lr=args.lr, weight_decay=args.weight_decay,
              schedule=args.schedule, milestones=tuple(args.milestones or ()), gamma=args.gamma,
              batch_size=args.batch_size or rec.get("batch_size", 128),
              augment=args.augment if args.augment is not None else rec.get("augment", True),
              bf16=args.bf16,
              val_fraction=args.val_fraction, seed=args.seed, momentum=args.momentum,
              steps_per_epoch=args.steps_per_epoch,
              track_test=getattr(args, "track_test", False))
    kw.update(over)
    return TrainConfig(**kw)


# --------------------------------------------------------------------------- commands

def cmd_train(args) -> int:
    import snacs.io
    from snacs.io import atomic_write_json, ensure_writable_dir
    from snacs.train import is_main_process, train

    _init_distributed()
    out = ensure_writable_dir(args.out)
    train_set = build_dataset(args.dataset, "train", args.data_root, **_dataset_extra(args))
    test_set = build_dataset(args.dataset, "test", args.data_root, **_dataset_extra(args))
    model = _build_model(args, train_set)
    cfg = _train_config(args)
    res = train(model, train_set, cfg, out_dir=out, resume=args.resume, test_set=test_set,
                progress=_progress_enabled(args))
    if is_main_process():
        snacs.io.save(model, out / "model.pt", extra={"train": res.to_dict()})
        summary = {"command": "train", "model": getattr(model, "snacs_spec", None),
                   "dataset": args.dataset, "config": vars(cfg) | {"milestones": list(cfg.milestones)},
                   "test_accuracy": res.test_accuracy, "best_val_accuracy": res.best_val_accuracy,
                   "best_epoch": res.best_epoch, "epochs_run": res.epochs_run,
                   "seconds": res.seconds, "history": res.history}
        atomic_write_json(out / "result.json", summary)
        print(f"test accuracy {res.test_accuracy:.2f} % (epoch {res.best_epoch + 1} selected on "
              f"validation); model saved to {out / 'model.pt'}")
    return 0


def cmd_evaluate(args) -> int:
    from snacs.metrics import conv_linear_weights, count_macs, count_parameters
    from snacs.train import evaluate

    test_set = build_dataset(args.dataset, args.split, args.data_root, **_dataset_extra(args))
    model = _build_model(args, test_set)
    res = evaluate(model, test_set, progress=_progress_enabled(args))
    res.update(parameters=count_parameters(model), conv_linear_weights=conv_linear_weights(model),
               macs=count_macs(model, test_set.image_shape))
    print(json.dumps(res, indent=2))
    return 0


def _add_data_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--dataset", default="fashion-mnist",
                   help="dataset name: fashion-mnist, cifar10, image-folder, synthetic "
                        "(default: %(default)s)")
    p.add_argument("--data-root", default=None,
                   help="dataset directory (default: the dataset's standard location)")
    p.add_argument("--download", action="store_true",
                   help="download CIFAR-10 when it is missing (needs internet)")
    p.add_argument("--image-size", type=int, default=None,
                   help="center-crop size for image-folder datasets (default: 224)")


def _add_model_args(p: argparse.ArgumentParser, checkpoint_help: str) -> None:
    p.add_argument("--model", default=None,
                   help="architecture name, see `snacs models` (default: taken from the checkpoint)")
    p.add_argument("--width", type=float, default=1.0,
                   help="channel width multiplier of the architecture (default: %(default)s)")
    p.add_argument("--checkpoint", default=None, help=checkpoint_help)


def _add_train_args(p: argparse.ArgumentParser, *, epochs: int, lr: float, wd: float) -> None:
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
    p.add_argument("--val-fraction", type=float, default=0.1,
                   help="share of the training split held out for model selection (default: %(default)s)")
    p.add_argument("--steps-per-epoch", type=int, default=None,
                   help="stop each epoch after this many batches (quick checks; default: all)")
    p.add_argument("--resume", action="store_true", help="continue from OUT/last.pt after an interruption")
    p.add_argument("--track-test", action="store_true",
                   help="also record test accuracy after every epoch (a record only: the "
                        "checkpoint is still selected on the validation split)")


def _add_common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--seed", type=int, default=0, help="random seed (default: %(default)s)")
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: all cores)")
    p.add_argument("--config", default=None, help="YAML file of options; flags given on the command line win")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    p.add_argument("-v", "--verbose", action="count", default=0, help="more log output (-v, -vv)")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="snacs",
        description="Slim convolutional networks with SNACS: adaptive connectivity scores, "
                    "automatic per-layer limits, one-shot structured pruning.")
    from snacs import __version__

    parser.add_argument("--version", action="version", version=f"snacs {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    p = sub.add_parser("train", help="train a model from the zoo",
                       description="Train a zoo model; writes OUT/model.pt, OUT/result.json and resumable OUT/last.pt.")
    _add_model_args(p, "start from these weights (state_dict or snacs model file)")
    _add_data_args(p)
    _add_train_args(p, epochs=10, lr=0.05, wd=5e-4)
    p.add_argument("--out", default="runs/train", help="output directory (default: %(default)s)")
    _add_common(p)
    p.set_defaults(func=cmd_train)

    p = sub.add_parser("evaluate", help="test accuracy, parameters and MACs of a model",
                       description="Evaluate a model on a dataset split.")
    _add_model_args(p, "weights to evaluate (state_dict or snacs model file)")
    _add_data_args(p)
    p.add_argument("--split", default="test", help="split to evaluate (default: %(default)s)")
    _add_common(p)
    p.set_defaults(func=cmd_evaluate)

    p = sub.add_parser("models", help="list the model zoo")
    p.set_defaults(func=lambda a: print("\n".join(__import__("snacs.models").models.list_models())) or 0)

    from snacs import cli_prune

    cli_prune.add_commands(sub, _add_model_args, _add_data_args, _add_train_args, _add_common)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    # the command as given (also when called from Python, e.g. by `make demo`), for the report
    args.argv = list(sys.argv[1:] if argv is None else argv)
    if not getattr(args, "command", None):
        parser.print_help()
        return 2
    _setup_logging(getattr(args, "verbose", 0))
    try:
        args = _apply_config(parser._subparsers._group_actions[0].choices[args.command], args)
        _set_threads(args)
        return int(args.func(args) or 0)
    except SnacsError as e:
        print(f"snacs: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("snacs: interrupted; rerun the same command with --resume to continue",
              file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
