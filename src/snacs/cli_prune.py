"""Pruning subcommands: `snacs prune`, `snacs finetune`, `snacs export`."""

from __future__ import annotations

import json
import logging
import shlex
import sys
from pathlib import Path

from snacs.cli_common import (
    add_common_args,
    add_data_args,
    add_model_args,
    add_model_file_args,
    add_train_args,
    build_dataset,
    build_model,
    data_record,
    dataset_extra,
    init_distributed,
    progress_enabled,
    train_config,
    user_model,
)
from snacs.errors import ConfigError

log = logging.getLogger("snacs")

# options whose values change the result of `snacs prune` (a rerun into the same --out with
# different values is refused unless --overwrite)
PRUNE_KEYS = ("model", "width", "checkpoint", "model_file", "model_args", "dataset", "data_root", "target", "target_metric",
              "granularity", "mode", "q", "groups", "samples_per_class", "estimator", "phi",
              "limits", "limit_fraction", "relax_limits", "allocation", "latency_batch_size",
              "latency_threads", "latency_table", "grid_step", "probe", "sensitivity",
              "sensitivity_k", "protect_fraction", "seed", "finetune_epochs", "lr", "weight_decay",
              "image_size", "resize", "crop", "mean", "std", "classes", "skip_bad_images")


def _limits_value(v: str):
    if v in ("probe", "none"):
        return v
    try:
        return float(v)
    except ValueError:
        raise ConfigError(f"--limits takes probe, none or a number in [0, 1), got {v!r}") from None


def add_commands(sub) -> None:
    """Add `prune`, `finetune` and `export` to the `snacs` subcommand parser `sub`."""
    p = sub.add_parser(
        "prune", help="prune a trained model with SNACS",
        description="Score every layer pair with ACMI, find per-layer limits, protect sensitive "
                    "filters, prune once and optionally fine-tune. Writes OUT/model.pt (reload "
                    "with snacs.load), OUT/result.json, OUT/report.md and PNG plots.")
    add_model_args(p, "trained weights: a snacs model file, or a state_dict (then give --model)")
    add_data_args(p)
    g = p.add_argument_group("SNACS options")
    g.add_argument("--granularity", choices=["filter", "connection"], default="filter",
                   help="filter: remove whole channels (faster model); connection: mask "
                        "(child, parent) kernel slices as in the paper (default: %(default)s)")
    g.add_argument("--mode", choices=["ul", "global", "target"], default="ul",
                   help="ul: every layer to its automatic limit; global: one quantile --q capped by "
                        "the limits; target: remove --target (default: %(default)s, or target "
                        "when --target is given)")
    g.add_argument("--target", type=float, default=None,
                   help="fraction in (0, 1) of parameters (or MACs, or latency) to remove")
    g.add_argument("--target-metric", choices=["params", "macs", "latency"], default="params",
                   help="what --target counts: conv+linear weights, MACs, or the measured latency "
                        "of the frozen TorchScript model (default: %(default)s)")
    g.add_argument("--latency-batch-size", type=int, default=1,
                   help="with --target-metric latency: batch size it is measured at "
                        "(default: %(default)s)")
    g.add_argument("--latency-threads", type=int, default=1,
                   help="with --target-metric latency: CPU threads it is measured with "
                        "(default: %(default)s)")
    g.add_argument("--latency-table", default=None, metavar="FILE",
                   help="with --target-metric latency: per-layer timings written by `snacs "
                        "latency-table` on the deployment machine (default: timed here, and the "
                        "pruned model timed to check the target)")
    g.add_argument("--q", type=float, default=None, help="quantile for --mode global")
    g.add_argument("--groups", type=int, default=64,
                   help="G, filter groups per layer side, G = min(channels, groups) "
                        "(default: %(default)s)")
    g.add_argument("--samples-per-class", type=int, default=250,
                   help="calibration samples per class from the training split (default: %(default)s)")
    g.add_argument("--estimator", default=None,
                   help="CMI estimator: gaussian_copula, edge, edge_faithful, gaussian, hash, knn, gmi "
                        "(default: gaussian_copula, chosen by measured ranking quality)")
    g.add_argument("--phi", choices=["weight", "weight_sq", "exp_weight", "none"], default="weight",
                   help="weight-based scaling of the CMI (default: %(default)s)")
    g.add_argument("--limits", type=_limits_value, default="probe",
                   help="probe (automatic upper limits), none, or one fixed cap in [0, 1) for every "
                        "layer (default: %(default)s)")
    g.add_argument("--limit-fraction", type=float, default=0.7,
                   help="τ = max − f·(max − min) of the probe accuracy curve (default: %(default)s)")
    g.add_argument("--relax-limits", action="store_true",
                   help="with --target above what the limits allow: raise --limit-fraction just "
                        "enough instead of stopping with an error")
    g.add_argument("--allocation", choices=["auto", "limits", "global", "select"], default="auto",
                   help="how a --target is spread across layers: limits (each layer within its "
                        "probe limit, one score quantile for all), global (layer-normalised ACMI "
                        "ranked across all layers, the lowest removed until the target is met; "
                        "filter granularity), select (both, keeping the one more accurate on the "
                        "calibration images after BatchNorm re-estimation; any target metric), "
                        "or auto: limits for a parameter or latency target, global for a "
                        "MAC target (default: %(default)s)")
    g.add_argument("--grid-step", type=int, default=5,
                   help="step of the probe's pruning-rate grid, percent (default: %(default)s)")
    g.add_argument("--probe", choices=["svm", "linear", "ncm"], default="svm",
                   help="classifier of the operating constraints (default: %(default)s)")
    g.add_argument("--sensitivity", choices=["auto", "fraction", "none"], default="auto",
                   help="protect outlier filters (auto: > mean + k·std), a top fraction, or none "
                        "(default: %(default)s)")
    g.add_argument("--sensitivity-k", type=float, default=2.0, help="k of the auto rule (default: %(default)s)")
    g.add_argument("--protect-fraction", type=float, default=0.1,
                   help="share protected with --sensitivity fraction (default: %(default)s)")
    g.add_argument("--workers", type=int, default=1,
                   help="processes scoring layer pairs in parallel (default: %(default)s)")
    g.add_argument("--batch-size-calib", dest="batch_size_calib", type=int, default=256,
                   help="batch size of the activation pass (default: %(default)s)")
    f = p.add_argument_group("fine-tuning after pruning")
    f.add_argument("--finetune-epochs", type=int, default=0,
                   help="epochs of fine-tuning after pruning (default: %(default)s)")
    add_train_args(f, epochs=0, lr=0.01, wd=5e-4)
    b = p.add_argument_group("base check (before any pruning work)")
    b.add_argument("--expect-accuracy", type=float, default=None, metavar="PCT",
                   help="test accuracy (%%) the unpruned model should reach on this data; the run "
                        "stops when it scores more than 20 points less on a few hundred held-out "
                        "images (default: the accuracy recorded in the checkpoint, if any; the "
                        "run always stops near chance)")
    b.add_argument("--force", action="store_true",
                   help="prune even when the base check fails (wrong normalisation, image size, "
                        "class order or channels are the usual causes)")
    p.add_argument("--out", default="runs/prune", help="output directory (default: %(default)s)")
    p.add_argument("--overwrite", action="store_true",
                   help="allow an output directory that holds a run with other settings")
    p.add_argument("--no-latency", action="store_true", help="skip the latency measurement")
    add_common_args(p)
    p.set_defaults(func=cmd_prune)

    p = sub.add_parser(
        "latency-table", help="time every layer on this machine, for --target-metric latency",
        description="Time every conv and linear layer of a model, traced and frozen, over a grid "
                    "of kept channel counts, on this machine (run it where the model will be "
                    "deployed). Writes a JSON table for `snacs prune --target-metric latency "
                    "--latency-table FILE`.")
    add_model_args(p, "the trained weights that will be pruned (state_dict or snacs model file)")
    add_data_args(p)
    p.add_argument("--batch-size", type=int, default=1, help="batch size (default: %(default)s)")
    p.add_argument("--latency-threads", type=int, default=1,
                   help="CPU threads (default: %(default)s)")
    p.add_argument("--out", required=True, help="the table to write (JSON)")
    add_common_args(p)
    p.set_defaults(func=cmd_latency_table)

    p = sub.add_parser("finetune", help="fine-tune a pruned model",
                       description="Fine-tune a model written by `snacs prune`; zero weights stay "
                                   "zero (connection pruning). Writes OUT/model.pt.")
    p.add_argument("--load", required=True, help="the pruned model (OUT/model.pt of snacs prune)")
    add_model_file_args(p)
    add_data_args(p)
    add_train_args(p, epochs=2, lr=0.01, wd=5e-4)
    p.add_argument("--out", default="runs/finetune", help="output directory (default: %(default)s)")
    add_common_args(p)
    p.set_defaults(func=cmd_finetune)

    p = sub.add_parser("export", help="export a model for deployment (torch.export, TorchScript, ONNX)",
                       description="Export a snacs model file. The written file is loaded back and "
                                   "its outputs compared with PyTorch's (max abs difference <= "
                                   "1e-4), on test images with --dataset, else on random inputs.")
    p.add_argument("--load", required=True, help="a snacs model file (model.pt)")
    add_model_file_args(p)
    p.add_argument("--format", choices=["export", "torchscript", "onnx"], default="export",
                   help="export: a torch.export program (torch.export.save), loads with no snacs "
                        "and no model code, recommended; torchscript: traced and frozen "
                        "(deprecated by torch); onnx: needs snacs[onnx] (default: %(default)s)")
    p.add_argument("--input-shape", type=int, nargs=3, default=None, metavar=("C", "H", "W"),
                   help="input shape (default: from the model file)")
    p.add_argument("--dataset", default=None,
                   help="check the export on images of this dataset's test split (default: "
                        "random inputs)")
    p.add_argument("--data-root", default=None, help="directory of --dataset")
    p.add_argument("--check-samples", type=int, default=16,
                   help="images the export is checked on with --dataset (default: %(default)s)")
    p.add_argument("--output", required=True, help="file to write")
    add_common_args(p)
    p.set_defaults(func=cmd_export)


def _settings(args) -> dict:
    return {k: getattr(args, k, None) for k in PRUNE_KEYS}


def _check_out_dir(out: Path, settings: dict, overwrite: bool) -> None:
    prev = out / "settings.json"
    if prev.is_file() and not overwrite:
        try:
            old = json.loads(prev.read_text())
        except (OSError, json.JSONDecodeError):
            old = None
        if old != json.loads(json.dumps(settings)):
            diff = sorted(k for k in settings if (old or {}).get(k) != json.loads(json.dumps(settings)).get(k))
            raise ConfigError(
                f"output directory {out} holds a run with other settings ({', '.join(diff)}); "
                "choose another --out or pass --overwrite")


def _finetune_config(args):
    epochs = args.finetune_epochs if hasattr(args, "finetune_epochs") else args.epochs
    return train_config(args, epochs=epochs)


def cmd_prune(args) -> int:
    import snacs.modelfile
    from snacs.io import atomic_write_json, ensure_writable_dir
    from snacs.pruner import SNACS, prune, summary_table
    from snacs.report import write_report
    from snacs.train import evaluate, is_main_process, train
    from snacs.validate import check_ranks_agree

    # under torchrun the ranks split the scoring work (snacs.distributed) and each makes the
    # same plan from the gathered results; they compare its checksum, fine-tune together with
    # DDP, and rank 0 alone writes the outputs
    init_distributed()
    main = is_main_process()
    out = Path(args.out)
    settings = _settings(args)
    _check_out_dir(out, settings, args.overwrite)
    ensure_writable_dir(out)
    mode = "target" if args.target is not None and args.mode == "ul" else args.mode
    params = dict(granularity=args.granularity, mode=mode, target=args.target,
                  target_metric=args.target_metric, q=args.q, groups=args.groups,
                  samples_per_class=args.samples_per_class, estimator=args.estimator,
                  phi=args.phi, limits=args.limits, limit_fraction=args.limit_fraction,
                  relax_limits=args.relax_limits, allocation=args.allocation,
                  latency_batch_size=args.latency_batch_size, latency_threads=args.latency_threads,
                  latency_table=args.latency_table,
                  grid_step=args.grid_step, probe=args.probe,
                  sensitivity=args.sensitivity, sensitivity_k=args.sensitivity_k,
                  protect_fraction=args.protect_fraction,
                  workers=args.workers, cache_dir=str(out / "cache"),
                  batch_size=args.batch_size_calib, seed=args.seed,
                  progress=progress_enabled(args))
    SNACS(**params).validate()  # every option checked before any expensive step
    ft_cfg = _finetune_config(args) if args.finetune_epochs > 0 else None
    train_set = build_dataset(args.dataset, "train", args.data_root, **dataset_extra(args))
    test_set = build_dataset(args.dataset, "test", args.data_root, **dataset_extra(args))
    model = build_model(args, train_set)
    if main:
        atomic_write_json(out / "settings.json", settings)

    record = _checkpoint_record(args)
    expect = args.expect_accuracy if args.expect_accuracy is not None else record["accuracy"]
    if not args.checkpoint:
        log.warning("no --checkpoint: the model has random weights; base check skipped")
    pruned, res = prune(model, train_set, eval_data=test_set,
                        measure_latency=not args.no_latency and main,
                        base_check=bool(args.checkpoint), expect_accuracy=expect,
                        expect_classes=record["classes"], force=args.force, **params)
    check_ranks_agree(res.plan_checksum, "pruning plan")
    if ft_cfg is not None:
        ft = train(pruned, train_set, ft_cfg, out_dir=out / "finetune", resume=args.resume,
                   test_set=test_set, progress=progress_enabled(args))
        res.accuracy_finetuned = ft.test_accuracy
        res.finetune = ft.to_dict() | {"config": {k: v for k, v in vars(ft_cfg).items()}}
    if not main:
        return 0
    final = pruned
    if args.granularity == "connection":
        from snacs.apply import export_slim

        final = export_slim(pruned, pruned.snacs_pruner.input_shape_)
        if not args.no_latency:
            from snacs.metrics import measure_latency

            res.latency_after_ms = measure_latency(final, pruned.snacs_pruner.input_shape_)["median_ms"]
    snacs.modelfile.save(final, out / "model.pt", extra={"result": res.to_dict(), "data": res.data})
    res.save(out / "result.json")
    write_report(out, res, pruned.snacs_pruner.scores_,
                 command="snacs " + " ".join(shlex.quote(a) for a in getattr(args, "argv", sys.argv[1:])))
    print(summary_table(res))
    print(f"\nreport: {out / 'report.md'}   model: {out / 'model.pt'}")
    _ = evaluate  # evaluation happens inside prune/train
    return 0


def cmd_latency_table(args) -> int:
    from snacs.latency import measure_table

    data = build_dataset(args.dataset, "test", args.data_root, **dataset_extra(args))
    model = build_model(args, data)
    out = Path(args.out)
    if out.suffix != ".json":
        raise ConfigError(f"--out {out}: the latency table is JSON; give a path ending in .json")
    if out.parent and not out.parent.exists():
        out.parent.mkdir(parents=True)
    tab = measure_table(model, tuple(data.image_shape), batch_size=args.batch_size,
                        threads=args.latency_threads)
    tab.save(out)
    uniq = len({r["signature"] for r in tab.layers.values()})
    print(f"wrote {out}: {len(tab.layers)} layers ({uniq} distinct shapes), whole model "
          f"{tab.base_ms:.3f} ms at batch {tab.batch_size} with {tab.threads} thread(s), the timed "
          f"layers {tab.layers_full_ms:.3f} ms of it")
    return 0


def _checkpoint_record(args) -> dict:
    """Accuracy and class names recorded in --checkpoint (None each when absent)."""
    from snacs.validate import checkpoint_record

    ckpt = getattr(args, "checkpoint", None)
    return checkpoint_record(ckpt) if ckpt else {"accuracy": None, "classes": None}


def cmd_finetune(args) -> int:
    import torch
    from torch.nn.utils import prune as tprune

    import snacs.modelfile
    from snacs.io import atomic_write_json, ensure_writable_dir
    from snacs.train import is_main_process, train

    init_distributed()
    out = ensure_writable_dir(args.out)
    if Path(args.load).resolve() == (out / "model.pt").resolve():
        raise ConfigError(f"--out {out} would overwrite the input model {args.load}; choose another --out")
    model = snacs.modelfile.load(args.load, model=user_model(args))
    for m in model.modules():  # zeros stay zero: hold them with masks
        if isinstance(m, (torch.nn.Conv2d, torch.nn.Linear)) and (m.weight == 0).any():
            tprune.custom_from_mask(m, "weight", (m.weight != 0).float())
    train_set = build_dataset(args.dataset, "train", args.data_root, **dataset_extra(args))
    test_set = build_dataset(args.dataset, "test", args.data_root, **dataset_extra(args))
    res = train(model, train_set, _finetune_config(args), out_dir=out, resume=args.resume,
                test_set=test_set, progress=progress_enabled(args))
    if not is_main_process():
        return 0
    snacs.modelfile.save(model, out / "model.pt",
                         extra={"finetune": res.to_dict(), "data": data_record(train_set)})
    atomic_write_json(out / "result.json", res.to_dict())
    print(f"test accuracy {res.test_accuracy:.2f} %; model saved to {out / 'model.pt'}")
    return 0


def cmd_export(args) -> int:
    import snacs.modelfile
    from snacs.export import export_model

    model = snacs.modelfile.load(args.load, model=user_model(args))
    inputs = None
    if args.dataset:
        import torch

        data = build_dataset(args.dataset, "test", args.data_root, **dataset_extra(args))
        n = max(2, min(args.check_samples, len(data)))
        inputs = torch.stack([data[i][0] for i in range(n)])
    info = export_model(model, args.output, fmt=args.format, inputs=inputs,
                        input_shape=tuple(args.input_shape) if args.input_shape else None)
    checked = f"{info['checked_on']} {args.dataset} test images" if args.dataset else \
        f"{info['checked_on']} random inputs"
    print(f"wrote {args.output} ({args.format}); max abs difference to PyTorch on {checked}: "
          f"{info['max_abs_diff']:.2e} (tolerance {info['tolerance']:.0e})")
    data = info.get("data") or {}
    if data.get("mean"):
        print(f"inputs: {'x'.join(str(v) for v in info['input_shape'])}, (pixel / 255 - mean) / "
              f"std with mean {data['mean']} and std {data['std']} (stored in the model file)")
    return 0
