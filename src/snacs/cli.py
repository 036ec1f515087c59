"""The `snacs` command line: train, evaluate, prune, finetune, export.

The CLI owns logging handlers and progress bars; errors a user can cause are printed as one line
(`snacs: error: ...`) with exit status 2, never a traceback.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys

from snacs import cli_prune
from snacs.cli_common import (
    add_common_args,
    add_data_args,
    add_model_args,
    add_train_args,
    apply_config,
    build_dataset,
    build_model,
    data_record,
    dataset_extra,
    init_distributed,
    load_config_file,
    progress_enabled,
    set_threads,
    setup_logging,
    train_config,
)
from snacs.errors import SnacsError

__all__ = ["main", "build_parser", "load_config_file"]

log = logging.getLogger("snacs")


# --------------------------------------------------------------------------- commands

def cmd_train(args) -> int:
    import snacs.modelfile
    from snacs.io import atomic_write_json, ensure_writable_dir
    from snacs.train import is_main_process, train

    init_distributed()
    out = ensure_writable_dir(args.out)
    train_set = build_dataset(args.dataset, "train", args.data_root, **dataset_extra(args))
    test_set = build_dataset(args.dataset, "test", args.data_root, **dataset_extra(args))
    model = build_model(args, train_set)
    cfg = train_config(args)
    res = train(model, train_set, cfg, out_dir=out, resume=args.resume, test_set=test_set,
                progress=progress_enabled(args))
    if is_main_process():
        snacs.modelfile.save(model, out / "model.pt",
                             extra={"train": res.to_dict(), "data": data_record(train_set)})
        summary = {"command": "train", "model": getattr(model, "snacs_spec", None),
                   "dataset": args.dataset, "data": data_record(train_set),
                   "config": vars(cfg) | {"milestones": list(cfg.milestones)},
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

    test_set = build_dataset(args.dataset, args.split, args.data_root, **dataset_extra(args))
    model = build_model(args, test_set)
    res = evaluate(model, test_set, progress=progress_enabled(args))
    res.update(parameters=count_parameters(model), conv_linear_weights=conv_linear_weights(model),
               macs=count_macs(model, test_set.image_shape), data=data_record(test_set))
    print(json.dumps(res, indent=2))
    return 0


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
    add_model_args(p, "start from these weights (state_dict or snacs model file)")
    add_data_args(p)
    add_train_args(p, epochs=10, lr=0.05, wd=5e-4)
    p.add_argument("--out", default="runs/train", help="output directory (default: %(default)s)")
    add_common_args(p)
    p.set_defaults(func=cmd_train)

    p = sub.add_parser("evaluate", help="test accuracy, parameters and MACs of a model",
                       description="Evaluate a model on a dataset split.")
    add_model_args(p, "weights to evaluate (state_dict or snacs model file)")
    add_data_args(p)
    p.add_argument("--split", default="test", help="split to evaluate (default: %(default)s)")
    add_common_args(p)
    p.set_defaults(func=cmd_evaluate)

    p = sub.add_parser("models", help="list the model zoo")
    p.set_defaults(func=lambda a: print("\n".join(__import__("snacs.models").models.list_models())) or 0)

    cli_prune.add_commands(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    # the command as given (also when called from Python, e.g. by `make demo`), for the report
    args.argv = list(sys.argv[1:] if argv is None else argv)
    if not getattr(args, "command", None):
        parser.print_help()
        return 2
    setup_logging(getattr(args, "verbose", 0))
    try:
        args = apply_config(parser._subparsers._group_actions[0].choices[args.command], args)
        set_threads(args)
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
