"""The human-readable side of a pruning run: report.md and PNG plots (matplotlib, lazily)."""

from __future__ import annotations

import logging
import math
from pathlib import Path

import numpy as np

from snacs.errors import ConfigError
from snacs.io import atomic_write_text

log = logging.getLogger(__name__)

__all__ = ["write_report", "plot_limits", "plot_scores", "plot_summary"]


def _plt():
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:  # pragma: no cover
        raise ConfigError("plots need matplotlib: pip install matplotlib") from None
    return plt


def _save(fig, path: Path) -> None:
    tmp = path.with_name(f".{path.name}.tmp.png")
    fig.savefig(tmp, dpi=110, bbox_inches="tight")
    tmp.replace(path)


def plot_limits(result, path: Path) -> None:
    """Per layer: the automatic upper limit next to the fraction actually pruned."""
    plt = _plt()
    rows = [r for r in result.layers if r["limit_pct"] is not None or r["pruned_pct"] > 0]
    names = [r["layer"] for r in rows]
    x = np.arange(len(rows))
    fig, ax = plt.subplots(figsize=(max(6, 0.45 * len(rows) + 2), 4))
    lim = [r["limit_pct"] if r["limit_pct"] is not None else np.nan for r in rows]
    ax.bar(x - 0.2, lim, 0.4, label="upper limit (probe)", color="#9ecae1")
    unit = "input channels removed" if result.granularity == "filter" else "connections removed"
    ax.bar(x + 0.2, [r.get("limited_unit_pruned_pct") or 0.0 for r in rows], 0.4, label=unit,
           color="#3182bd")
    ax.plot(x, [r["pruned_pct"] for r in rows], "o", color="#e6550d", ms=4,
            label="weights pruned (in and out)")
    ax.set_xticks(x, names, rotation=70, ha="right", fontsize=7)
    ax.set_ylabel("% of the layer")
    ax.set_ylim(0, 100)
    ax.set_title(f"Per-layer limit vs pruned ({result.granularity}, mode {result.mode})")
    ax.legend(loc="upper left", fontsize=8)
    ax.grid(axis="y", alpha=0.3)
    _save(fig, path)
    plt.close(fig)


def plot_scores(scores: dict[str, np.ndarray], path: Path, max_pairs: int = 30) -> None:
    """A heat map of ρ (child groups x parent groups) for every pair."""
    plt = _plt()
    names = list(scores)[:max_pairs]
    cols = min(5, len(names))
    rows = math.ceil(len(names) / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(3.0 * cols, 2.6 * rows), squeeze=False)
    for ax in axes.flat:
        ax.axis("off")
    for ax, n in zip(axes.flat, names, strict=False):
        ax.axis("on")
        im = ax.imshow(scores[n], aspect="auto", cmap="viridis", interpolation="nearest")
        ax.set_title(n, fontsize=7)
        ax.set_xlabel("parent group", fontsize=6)
        ax.set_ylabel("child group", fontsize=6)
        ax.tick_params(labelsize=5)
        fig.colorbar(im, ax=ax, fraction=0.046, pad=0.02).ax.tick_params(labelsize=5)
    fig.suptitle("ACMI ρ per layer pair (brighter = more information passed)", fontsize=9)
    fig.tight_layout()
    _save(fig, path)
    plt.close(fig)


def plot_summary(result, path: Path) -> None:
    """Accuracy, parameters and MACs before and after."""
    plt = _plt()
    fig, axes = plt.subplots(1, 3, figsize=(10, 3.2))
    acc_after = result.accuracy_finetuned if result.accuracy_finetuned is not None \
        else result.accuracy_pruned
    panels = [
        ("test accuracy (%)", [result.accuracy_before, result.accuracy_pruned, result.accuracy_finetuned],
         ["before", "pruned", "fine-tuned"]),
        ("conv+linear weights (M)", [result.weights_before / 1e6, result.weights_after / 1e6],
         ["before", "after"]),
        ("MACs (M)", [result.macs_before / 1e6, result.macs_after / 1e6], ["before", "after"]),
    ]
    for ax, (title, vals, labels) in zip(axes, panels, strict=False):
        keep = [(lab, v) for lab, v in zip(labels, vals, strict=False) if v is not None]
        if not keep:
            ax.set_title(title + " (not measured)", fontsize=9)
            continue
        bars = ax.bar([k for k, _ in keep], [v for _, v in keep],
                      color=["#bdbdbd", "#6baed6", "#2171b5"][: len(keep)])
        for b, (_, v) in zip(bars, keep, strict=False):
            ax.text(b.get_x() + b.get_width() / 2, b.get_height(), f"{v:.2f}", ha="center",
                    va="bottom", fontsize=8)
        ax.set_title(title, fontsize=9)
        if "accuracy" in title:
            lo = min(v for _, v in keep)
            ax.set_ylim(max(0, lo - 10), 100)
    fig.suptitle(f"acc {result.accuracy_before} → {acc_after}; "
                 f"MACs ×{result.macs_reduction:.2f} fewer", fontsize=9)
    fig.tight_layout()
    _save(fig, path)
    plt.close(fig)


def write_report(out: Path, result, scores: dict[str, np.ndarray] | None = None,
                 command: str | None = None) -> Path:
    """Write report.md and the plots into `out`; return the report's path."""
    out = Path(out)
    plot_limits(result, out / "limits.png")
    if scores:
        plot_scores(scores, out / "scores.png")
    plot_summary(result, out / "summary.png")

    def f(v, fmt=".2f"):
        return "–" if v is None else format(v, fmt)

    lines = [
        "# SNACS pruning report", "",
        f"Granularity **{result.granularity}**, mode **{result.mode}**, "
        f"{result.samples} calibration samples, estimator `{result.settings.get('estimator')}`.",
        "",
    ]
    relaxed = result.settings.get("relax_limits") and result.limit_fraction_used is not None \
        and result.limit_fraction_used > result.settings.get("limit_fraction", 0.7) + 1e-12
    if relaxed:
        lines += [
            f"The target was above what the limits allow at limit fraction "
            f"{result.settings.get('limit_fraction')}; the limits were relaxed to fraction "
            f"**{result.limit_fraction_used:.3f}** (τ = max − f·(max − min) of each probe curve), "
            "the smallest that reaches it.", ""]
    alloc = getattr(result, "allocation_used", None)
    trials = getattr(result, "allocation_trials", None)
    if alloc and trials:
        def trial(name, t):
            if "accuracy" not in t:
                return f"{name}: out of reach ({t.get('unreachable', '')})"
            return f"{name}: {t['accuracy']:.2f} % (cross-entropy {t['loss']:.3f})"

        lines += [f"Allocation across layers: **{alloc}**, chosen by `allocation="
                  f"{result.settings.get('allocation')}` as the plan whose pruned model "
                  "(BatchNorm re-estimated on the calibration images) is the most accurate on "
                  "them, before any fine-tune: " + "; ".join(trial(k, v) for k, v in trials.items())
                  + ".", ""]
    elif alloc:
        lines += [f"Allocation across layers: **{alloc}**"
                  + (" (chosen by `allocation=auto`)" if result.settings.get("allocation") == "auto" else "")
                  + ("; the global ranking does not read the probe limits, so none were computed "
                     "(the limit column is empty)." if alloc == "global" and result.mode == "target"
                     else "."), ""]
    lat = getattr(result, "latency_target", None)
    if lat:
        def pct(v):
            return "–" if v is None else f"{100 * v:.1f} %"

        lines += [f"Latency target: remove **{100 * lat['target']:.0f} %** of the frozen "
                  f"TorchScript latency at batch {lat['batch_size']} with {lat['threads']} "
                  f"thread(s); per-layer table {lat['table']}. Predicted by the table "
                  f"{pct(lat['predicted_removed'])}, measured {pct(lat['measured_removed'])}"
                  + (f" ({lat['base_ms']:.3f} → {lat['pruned_ms']:.3f} ms)" if lat.get("base_ms") else
                     " (not measured: the table came from another machine; time the exported "
                     "model there)") + ".", ""]
        if len(lat.get("rounds", [])) > 1:
            lines += ["| plan | aimed at (table) | predicted | measured |", "|---:|---:|---:|---:|"]
            lines += [f"| {i + 1} | {pct(r['aimed'])} | {pct(r['predicted_removed'])} | "
                      f"{pct(r.get('measured_removed'))} |" for i, r in enumerate(lat["rounds"])]
            lines += [""]
    if command:
        lines += ["Command:", "", "```", command, "```", ""]
    data = getattr(result, "data", None) or {}
    if data:
        pre = data.get("preprocessing") or {}
        fmt3 = ", ".join
        lines += [f"Data: `{data.get('dataset')}`, input {'x'.join(map(str, data.get('image_shape', [])))}, "
                  f"{pre.get('transform') or 'as stored'}; normalised with mean "
                  f"({fmt3(f'{v:.4g}' for v in data.get('mean', []))}) and std "
                  f"({fmt3(f'{v:.4g}' for v in data.get('std', []))}).", ""]
    base = getattr(result, "base_check", None)
    if base:
        lines += [f"Base check: the unpruned model scored {base['accuracy']:.2f} % on "
                  f"{base['samples']} held-out images before pruning"
                  + (f" (expected {base['expected']:.2f} %)" if base.get("expected") else "")
                  + (" — **failed, pruned anyway (--force)**" if base.get("forced") else "")
                  + ".", ""]
    lines += [
        "| | before | after |", "|---|---:|---:|",
        f"| test accuracy (%) | {f(result.accuracy_before)} | pruned {f(result.accuracy_pruned)}"
        f"{'' if result.accuracy_finetuned is None else f', fine-tuned {result.accuracy_finetuned:.2f}'} |",
        f"| parameters (all) | {result.params_before:,} | {result.params_after:,} |",
        f"| conv+linear weights | {result.weights_before:,} | {result.weights_after:,} "
        f"({result.weights_pruned_pct:.2f} % pruned) |",
        f"| MACs | {result.macs_before:,} | {result.macs_after:,} (×{result.macs_reduction:.2f} fewer) |",
        f"| CPU latency, batch 1, 1 thread (ms) | {f(result.latency_before_ms)} | {f(result.latency_after_ms)} |",
        "",
        "Parameters pruned counts zeroed or removed conv+linear weights over all conv+linear "
        "weights of the original network (biases and BN excluded), as in the paper. "
        "MACs are conv+linear multiply-accumulates (FLOPs ≈ 2 × MACs).",
        "",
        "![summary](summary.png)", "",
        "## Per layer", "",
        "| layer | type | weights | weights pruned % | limit % | inputs cut % | out channels | removed | protected groups |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in result.layers:
        lines.append(
            f"| {r['layer']} | {r['type']} | {r['weights_before']:,} → {r['weights_after']:,} | "
            f"{r['pruned_pct']:.1f} | {f(r['limit_pct'], '.0f')} | "
            f"{f(r.get('limited_unit_pruned_pct'), '.1f')} | "
            f"{r['out_channels_before']} → {r['out_channels_after']} | {r['channels_removed']} | "
            f"{r['protected_groups']} |")
    lines += ["", "![limits](limits.png)", ""]
    if scores:
        lines += ["## Connectivity scores", "", "![scores](scores.png)", ""]
    lines += ["## Time per stage (s)", "", "| stage | seconds |", "|---|---:|"]
    lines += [f"| {k} | {v:.2f} |" for k, v in result.timings.items()]
    if result.finetune:
        lines += ["", "## Fine-tuning", "",
                  f"{result.finetune.get('epochs_run')} epochs, selected epoch "
                  f"{result.finetune.get('best_epoch', -1) + 1} on the validation split "
                  f"(val {f(result.finetune.get('best_val_accuracy'))} %)."]
    lines += ["", f"Plan checksum `{result.plan_checksum[:16]}`.", ""]
    path = out / "report.md"
    atomic_write_text(path, "\n".join(lines))
    return path
