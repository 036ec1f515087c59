"""Regenerate BENCHMARKS.md (and the README's results block) from benchmarks/results/*.json.

    python -m benchmarks.report

Every number in the output comes from a result file; the only hand-written text is
`benchmarks/notes.md` (the analysis, prose without numbers), included verbatim. Sections whose
result file is missing are skipped with a note, so the report renders from any subset.
"""

from __future__ import annotations

import argparse
import json
import math
import re
import sys
from collections import defaultdict
from pathlib import Path
from typing import Any

from benchmarks import priced_by

ROOT = Path(__file__).resolve().parent.parent
RESULTS = Path(__file__).resolve().parent / "results"
NOTES = Path(__file__).resolve().parent / "notes.md"
README_START, README_END = "<!-- bench:start -->", "<!-- bench:end -->"

METHOD_NAMES = {
    "snacs": "SNACS (target, relaxes its limits only above them)",
    "snacs-ul": "SNACS (automatic, ul)",
    "snacs-nolimits": "SNACS (target, limits lifted)",
    "mint": "MINT (GMI)",
    "l1": "L1-norm (global)",
    "random": "random filters",
    "tp-magnitude": "TP group magnitude",
    "tp-taylor": "TP group Taylor",
    "hrank": "HRank",
    "chip": "CHIP",
    "snacs-global": "SNACS (target, global allocation)",
    "snacs-select": "SNACS (target, allocation chosen on the calibration images)",
    "snacs-hash": "SNACS, hash estimator (target)",
    "snacs-hash-global": "SNACS, hash estimator (target, global allocation)",
    "dense": "dense base + the same fine-tune",
}
METHOD_ORDER = ["snacs", "snacs-global", "snacs-select", "snacs-hash", "snacs-hash-global", "snacs-nolimits", "snacs-ul", "mint", "l1", "random",
                "tp-magnitude", "tp-taylor", "hrank", "chip"]
BASELINES = ["mint", "l1", "random", "tp-magnitude", "tp-taylor", "hrank", "chip"]
LATENCY_FACTOR = 0.7  # target: latency falls at least 0.7x as much as MACs do
LATENCY_KINDS = {"bs1": "batch 1", "bs64": "batch 64", "bs1_ts": "batch 1 TorchScript",
                 "bs64_ts": "batch 64 TorchScript"}
# Published one-shot results on the ORIGINAL CIFAR-10 with far longer fine-tunes (hundreds of
# epochs): anchors only, not comparable with the JPEG-copy numbers measured here.
PUBLISHED = {
    "cifar10-resnet56": [
        ("DepGraph (Fang et al. 2023)", "93.53 → 93.77", "53 % of FLOPs removed"),
        ("HRankPlus (Lin et al.)", "93.26 → 92.32", "74 % of FLOPs removed"),
    ],
    "cifar10-vgg16": [
        ("HRankPlus (Lin et al.)", "93.96 → 93.56", "83.3 % of parameters removed"),
        ("MINT (Ganesh et al. 2020)", "→ 93.43", "83.46 % of parameters removed"),
    ],
}
STAGES = ["topology", "activations", "scores", "limits", "sensitivity", "plan"]


# --------------------------------------------------------------------------- helpers

def _load(path: Path) -> Any | None:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def _num(v: Any, spec: str = ".2f") -> str:
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return "–"
    if isinstance(v, bool):
        return "yes" if v else "no"
    if isinstance(v, int):
        return f"{v:,}"
    if isinstance(v, float):
        return format(v, spec)
    return str(v)


def _stats(values: list[float]) -> tuple[float, float, int]:
    """Mean and spread (half the range) over seeds, and the count."""
    vals = [float(v) for v in values if v is not None]
    if not vals:
        return float("nan"), float("nan"), 0
    return sum(vals) / len(vals), (max(vals) - min(vals)) / 2, len(vals)


def _pm(values: list[float], spec: str = ".2f") -> str:
    m, s, n = _stats(values)
    if n == 0:
        return "–"
    return f"{m:{spec}}" if n == 1 else f"{m:{spec}} ± {s:{spec}}"


def _table(header: list[str], rows: list[list[str]]) -> list[str]:
    out = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    out += ["| " + " | ".join(r) + " |" for r in rows]
    return out


def _flat_scalars(d: dict, prefix: str = "") -> list[tuple[str, Any]]:
    """Scalar entries of a (mostly flat) dict, one level of nesting unfolded."""
    out = []
    for k, v in d.items():
        if isinstance(v, dict) and not prefix:
            out += _flat_scalars(v, f"{k}.")
        elif isinstance(v, (int, float, str, bool)) or v is None:
            out.append((prefix + str(k), v))
    return out


def _flat_section(title: str, d: dict, fname: str) -> list[str]:
    rows = [[f"`{k}`", _num(v, ".4g") if isinstance(v, float) else _num(v)]
            for k, v in _flat_scalars(d)]
    return [f"## {title}", "", f"From `{fname}`.", ""] + _table(["quantity", "value"], rows) + [""]


def _rel(path: Path, start: Path) -> str:
    try:
        return str(path.resolve().relative_to(start.resolve()))
    except ValueError:
        import os

        return os.path.relpath(path.resolve(), start.resolve())


# --------------------------------------------------------------------------- training / pruning

KEY_HINTS = ("accuracy", "weights", "params", "macs", "latency", "pruned", "reduction",
             "timings", "seconds", "time", "epochs")


def _lead_section(title: str, d: dict, fname: str) -> list[str]:
    """A flat result dict written by the lead: key numbers first (accuracy, weights, MACs,
    latency, timings), then everything else as recorded."""
    items = _flat_scalars(d)

    def rank(k: str) -> int:
        if k.startswith(("config.", "settings.")):
            return len(KEY_HINTS)
        return next((i for i, h in enumerate(KEY_HINTS) if h in k.lower()), len(KEY_HINTS))

    ordered = sorted(items, key=lambda kv: rank(kv[0]))  # stable: file order within a rank
    rows = [[f"`{k}`", _cell(v)] for k, v in ordered]
    return [f"## {title}", "", f"From `{fname}`.", ""] + _table(["quantity", "value"], rows) + [""]


# --------------------------------------------------------------------------- comparison

def _cells(res: dict) -> list[dict]:
    return [c for c in res.get("cells", {}).values()]


def _by_method_budget(res: dict, metric: str) -> dict[tuple[str, float], list[dict]]:
    out: dict[tuple[str, float], list[dict]] = defaultdict(list)
    for c in _cells(res):
        if c.get("metric") == metric and c.get("budget") is not None:
            out[(c["method"], float(c["budget"]))].append(c)
    return out


def _ok(cells: list[dict]) -> list[dict]:
    return [c for c in cells if c.get("status") == "ok"]


def _lat_cut(c: dict, bs: str) -> float | None:
    lat = c.get("latency_ms", {}).get(bs)
    if not lat or not lat.get("base"):
        return None
    return 100.0 * (1 - lat["pruned"] / lat["base"])


def _row(label: str, cells: list[dict], best: bool = False) -> list[str]:
    ok = _ok(cells)
    if not ok:
        err = next((c.get("error", "") for c in cells), "")
        m = re.search(r"at most ([\d.]+%)", err or "")
        why = f"unreachable (limits allow ≤ {m.group(1)})" if m else (
            "unreachable" if any(c.get("status") == "unreachable" for c in cells) else "failed")
        return [label, str(len(cells)), why] + ["–"] * (len(HEADER) - 3)
    acc_ft = _pm([c["accuracy_finetuned"] for c in ok])
    return [
        label, str(len(ok)),
        _pm([c["accuracy_pruned"] for c in ok]),
        f"**{acc_ft}**" if best else acc_ft,
        _pm([c["weights_removed_pct"] for c in ok], ".1f"),
        _num(int(round(_stats([c["params_after"] for c in ok])[0]))),
        _num(_stats([c["macs_after"] for c in ok])[0] / 1e6, ".2f"),
        _pm([c["macs_removed_pct"] for c in ok], ".1f"),
        _pm([_lat_cut(c, "bs1") for c in ok], ".0f"),
        _pm([_lat_cut(c, "bs64") for c in ok], ".0f"),
        _pm([_lat_cut(c, "bs1_ts") for c in ok], ".0f"),
        _pm([_lat_cut(c, "bs64_ts") for c in ok], ".0f"),
        _num(_stats([c["prune_seconds"] for c in ok])[0], ".1f"),
        _num(_stats([c.get("finetune_seconds") for c in ok])[0], ".0f"),
    ]


HEADER = ["method", "seeds", "acc. pruned (%)", "acc. fine-tuned (%)", "weights removed (%)",
          "params", "MACs (M)", "MACs removed (%)", "latency cut bs 1 (%)",
          "latency cut bs 64 (%)", "latency cut TorchScript bs 1 (%)",
          "latency cut TorchScript bs 64 (%)", "prune time (s)", "fine-tune (s)"]


def _fraction(cells: list[dict]) -> str:
    """The limit fraction SNACS used (0.7 unless a budget above its limits relaxed it)."""
    fs = [c.get("predicted", {}).get("limit_fraction", 0.7) for c in _ok(cells)]
    if not fs:
        return "–"
    lo, hi = min(fs), max(fs)
    return f"{lo:.2f}" if hi - lo < 5e-3 else f"{lo:.2f}–{hi:.2f}"


def _mean_ft(cells: list[dict]) -> float | None:
    ok = _ok(cells)
    return _stats([c["accuracy_finetuned"] for c in ok])[0] if ok else None


BUDGET_UNIT = {"params": "weights", "macs": "MACs", "latency": "latency"}


def default_method(metric: str) -> str:
    """The harness method that runs what `snacs prune --target-metric <metric>` does by default
    (the allocation "auto" resolves per metric)."""
    from snacs import SNACS

    alloc = SNACS(mode="target", target_metric=metric).resolved_allocation()
    return "snacs-global" if alloc == "global" else "snacs"


def verdicts(res: dict, metric: str = "params") -> list[dict]:
    """Per budget: SNACS's default (target) against L1, random and the best baseline (mean
    fine-tuned)."""
    groups = _by_method_budget(res, metric)
    budgets = sorted({b for (_, b) in groups})
    out = []
    default = default_method(metric)
    for b in budgets:
        s_cells = groups.get((default, b), [])
        snacs = _mean_ft(s_cells)
        ok_seeds = {c["seed"] for c in _ok(s_cells)}
        partial = bool(ok_seeds) and len(ok_seeds) < len({c["seed"] for c in s_cells})
        # where SNACS reached the budget on some seeds only, compare on those seeds
        base = {m: _mean_ft([c for c in groups.get((m, b), [])
                             if not partial or c["seed"] in ok_seeds]) for m in BASELINES}
        base = {m: v for m, v in base.items() if v is not None}
        best = max(base.items(), key=lambda kv: kv[1]) if base else (None, None)
        lifted = _mean_ft(groups.get(("snacs-nolimits", b), []))
        out.append({
            "budget": b, "method": default, "snacs": snacs, "snacs_cells": s_cells,
            "partial": partial,
            "snacs_seeds": sorted(ok_seeds), "n_seeds": len({c["seed"] for c in s_cells}),
            "snacs_nolimits": lifted,
            "nolimits_beats_l1_random": (lifted is not None and all(
                lifted >= base[m] for m in ("l1", "random") if m in base)),
            "l1": base.get("l1"), "random": base.get("random"), "best": best[0],
            "best_acc": best[1], "baselines": base,
            # judged only against cells that exist: without L1 and random there is no verdict
            "beats_l1_random": (snacs is not None and not partial
                                and all(m in base for m in ("l1", "random")) and all(
                                    snacs >= base[m] for m in ("l1", "random"))),
            "no_baselines": not base,
            "beats_all": snacs is not None and bool(base) and snacs >= best[1],
            "behind": sorted([m for m, v in base.items() if snacs is None or v > snacs],
                             key=lambda m: -base[m]),
        })
    return out


def _verdict_lines(res: dict, metric: str) -> list[str]:
    unit = "weights" if metric == "params" else "MACs"
    lines = []
    for v in verdicts(res, metric):
        b = f"{v['budget']:.0%} of {unit} removed"
        if v["snacs"] is None:
            err = next((c.get("error") for c in v["snacs_cells"] if c.get("error")), "") or ""
            cap = re.search(r"at most ([\d.]+%)", err)
            reason = (f" (the budget is above what its per-layer limits allow: at most "
                      f"{cap.group(1)})" if cap else (f" ({err})" if err else ""))
            line = f"* {b}: **SNACS has no result**{reason}; it does not meet the target here."
            if v["snacs_nolimits"] is not None:
                lo = v["snacs_nolimits"]
                have = [m for m in ("l1", "random") if v.get(m) is not None]
                below = [m for m in have if v[m] > lo]
                rel = ("**below** " + " and ".join(METHOD_NAMES[m] for m in below) if below else
                       "≥ " + " and ".join(METHOD_NAMES[m] for m in have) if have else
                       "L1-norm and random not run yet")
                best = (f"; best baseline {METHOD_NAMES[v['best']]} {v['best_acc']:.2f} %"
                        if v["best"] else "")
                line += (f" With its limits lifted, SNACS's ranking reaches {lo:.2f} % "
                         f"({rel}{best}).")
            lines.append(line)
            continue
        frac = _fraction(v["snacs_cells"])
        alloc = "global allocation" if v["method"] == "snacs-global" else "limits allocation"
        parts = [f"SNACS default ({alloc}) {v['snacs']:.2f} %"
                 + ("" if frac == "0.70" else f" (limits relaxed to fraction {frac})")]
        if v["partial"]:
            seeds = ", ".join(str(x) for x in v["snacs_seeds"])
            parts[0] = (f"its limits allow this budget on seed {seeds} only "
                        f"({len(v['snacs_seeds'])} of {v['n_seeds']}); on those seeds SNACS "
                        f"{v['snacs']:.2f} %")
        for m in ("l1", "random"):
            if v.get(m) is not None:
                parts.append(f"{METHOD_NAMES[m]} {v[m]:.2f} %")
        if v["best"] is not None:
            parts.append(f"best baseline {METHOD_NAMES[v['best']]} {v['best_acc']:.2f} %")
        if v["partial"]:
            status = ("**misses the target** (no result on every seed)")
        elif v["l1"] is None or v["random"] is None:
            status = ("no verdict yet: " + ("no baseline cell at this budget" if v["no_baselines"]
                                            else "L1-norm or random not run at this budget"))
        else:
            status = ("meets the target (≥ L1-norm and ≥ random)" if v["beats_l1_random"]
                      else "**misses the target** (below L1-norm or random)")
        if v["beats_all"] and status.startswith("no verdict"):
            status += "; ahead of the baselines run so far"
        elif v["beats_all"]:
            status += ("; on those seeds it beats every baseline" if v["partial"]
                       else " and beats every baseline")
        elif v["behind"]:
            status += "; SNACS is **below** " + ", ".join(
                f"{METHOD_NAMES[m]} ({v['baselines'][m]:.2f} %)" for m in v["behind"])
        lines.append(f"* {b}: " + "; ".join(parts) + f" → {status}.")
    return lines


def ul_verdict(res: dict, metric: str) -> dict | None:
    """The automatic mode (ul) against the best baseline's accuracy-against-`metric` curve:
    per budget the best baseline's mean fine-tuned accuracy, linearly interpolated at the share
    ul removed. None without a ul cell; 'curve' None where ul lies outside the budgets run."""
    ul = _ok([c for c in _cells(res) if c["method"] == "snacs-ul"])
    if not ul:
        return None
    key = "weights_removed_pct" if metric == "params" else "macs_removed_pct"
    x = sum(c[key] for c in ul) / len(ul) / 100.0
    acc = _mean_ft(ul)
    groups = _by_method_budget(res, metric)
    pts = []  # (budget, best baseline's accuracy, which)
    for b in sorted({b for (_, b) in groups}):
        base = {m: _mean_ft(groups.get((m, b), [])) for m in BASELINES}
        base = {m: v for m, v in base.items() if v is not None}
        if base:
            m = max(base, key=base.get)
            pts.append((b, base[m], m))
    out = {"removed": x, "accuracy": acc, "seeds": len({c["seed"] for c in ul}), "curve": None,
           "points": pts}
    for (b0, a0, m0), (b1, a1, m1) in zip(pts, pts[1:], strict=False):
        if b0 <= x <= b1:
            out["curve"] = a0 + (a1 - a0) * (x - b0) / (b1 - b0)
            out["between"] = ((b0, a0, m0), (b1, a1, m1))
    # outside the budgets, dominance still decides: removing more and still more accurate than
    # the best baseline at the largest budget is above its curve (accuracy falls with removal),
    # removing less and less accurate than it at the smallest budget is below
    if out["curve"] is None and pts:
        if x > pts[-1][0] and acc >= pts[-1][1]:
            out["dominates"] = pts[-1]
        elif x < pts[0][0] and acc < pts[0][1]:
            out["dominated"] = pts[0]
    return out


def _ul_line(res: dict, metric: str) -> list[str]:
    v = ul_verdict(res, metric)
    if v is None:
        return []
    unit = BUDGET_UNIT[metric]
    head = (f"* automatic mode (ul): {v['accuracy']:.2f} % at {v['removed']:.1%} of {unit} "
            "removed")
    if v.get("dominates") or v.get("dominated"):
        b, a, m = v.get("dominates") or v.get("dominated")
        more = "more" if v.get("dominates") else "less"
        side = "**on or above**" if v.get("dominates") else "**below**"
        rel = "ahead of" if v.get("dominates") else "behind"
        return [head + f": it removes {more} than the {b:.0%} budget and is {rel} the best "
                f"baseline there ({METHOD_NAMES[m]} {a:.2f} %) → {side} the best baseline's "
                "curve."]
    if v["curve"] is None:
        have = ", ".join(f"{b:.0%}" for b, _, _ in v["points"]) or "none"
        return [head + f" → no verdict: outside the {unit} budgets with baseline cells "
                f"({have}), so the best baseline's curve is not measured there."]
    (b0, a0, m0), (b1, a1, m1) = v["between"]
    side = ("**on or above**" if v["accuracy"] >= v["curve"] else "**below**")
    return [head + f"; the best baseline's curve there {v['curve']:.2f} % (interpolated "
            f"between {METHOD_NAMES[m0]} {a0:.2f} % at {b0:.0%} and {METHOD_NAMES[m1]} "
            f"{a1:.2f} % at {b1:.0%}) → {side} it."]


def _latency_check(res: dict) -> list[str]:
    """Latency cut against MACs cut, per (method, budget) averaged over seeds, and the tally."""
    agg: dict[tuple, list[dict]] = defaultdict(list)
    for c in _ok(_cells(res)):
        agg[(c["method"], c.get("metric") or "", c.get("budget") or 0.0)].append(c)
    rows, passed, total = [], defaultdict(int), defaultdict(int)
    kinds = [k for k in LATENCY_KINDS if any(k in c.get("latency_ms", {})
                                             for c in _ok(_cells(res)))]
    order = {m: i for i, m in enumerate(METHOD_ORDER)}
    for (m, metric, b), cells in sorted(agg.items(), key=lambda kv: (kv[0][1], kv[0][2],
                                                                      order.get(kv[0][0], 99))):
        mc = _stats([c["macs_removed_pct"] for c in cells])[0]
        row = [METHOD_NAMES.get(m, m), f"{metric} {b:.0%}" if metric else "auto", f"{mc:.1f}"]
        for bs in kinds:
            cuts = [x for x in (_lat_cut(c, bs) for c in cells) if x is not None]
            for c in cells:
                lc = _lat_cut(c, bs)
                if lc is not None and c["macs_removed_pct"] > 0:
                    total[bs] += 1
                    passed[bs] += lc >= LATENCY_FACTOR * c["macs_removed_pct"]
            lc = _stats(cuts)[0] if cuts else float("nan")
            ratio = lc / mc if mc > 0 and cuts else float("nan")
            row += [_num(lc, ".1f"), _num(ratio, ".2f") + ("" if ratio >= LATENCY_FACTOR
                                                         else " ✗")]
        rows.append(row)
    if not total:
        return []
    tally = ", ".join(f"{LATENCY_KINDS[k]} in {passed[k]} of {total[k]}" for k in kinds)
    out = [f"Latency against MACs (target: the measured CPU latency, 1 thread, falls at least "
           f"{LATENCY_FACTOR}× as much as the MACs; ratio = latency cut / MACs cut, ✗ below "
           f"target). Per pruned model it is met at {tally}. Base and pruned model are timed "
           "back to back in the same process (median of repeated forward passes, "
           "`torch.inference_mode`); \"TorchScript\" is the model as `snacs export --format "
           "torchscript` writes it (traced and frozen, BatchNorm folded); rows average the seeds.",
           ""]
    head = ["method", "budget", "MACs cut (%)"]
    for k in kinds:
        head += [f"latency cut {LATENCY_KINDS[k]} (%)", f"ratio {LATENCY_KINDS[k]}"]
    out += _table(head, rows)
    return out


def plot_suite(res: dict, metric: str, path: Path) -> bool:
    """Accuracy (after and before fine-tuning) against the share removed, one line per method."""
    groups = _by_method_budget(res, metric)
    if not any(_ok(v) for v in groups.values()):
        return False
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    xkey = "weights_removed_pct" if metric == "params" else "macs_removed_pct"
    xlabel = "conv+linear weights removed (%)" if metric == "params" else "MACs removed (%)"
    fig, axes = plt.subplots(1, 2, figsize=(14, 4.2), sharex=True)
    markers = dict(zip(METHOD_ORDER, "oPX*sD^vhp<>dH"[:len(METHOD_ORDER)], strict=True))
    colors = dict(zip(METHOD_ORDER, ["C3", "C6", "#d4a017", "#8c2d04", "#54278f", "C5", "C3", "C1", "C0",
                                     "C7", "C2", "C4", "C8", "C9"], strict=True))
    for ax, ykey, title in ((axes[0], "accuracy_finetuned", "after the short fine-tune"),
                            (axes[1], "accuracy_pruned", "pruned, before fine-tuning")):
        for m in METHOD_ORDER:
            pts = []
            for (meth, _b), cells in sorted(groups.items()):
                ok = _ok(cells)
                if meth != m or not ok:
                    continue
                xm = _stats([c[xkey] for c in ok])[0]
                ym, ys, _ = _stats([c[ykey] for c in ok])
                pts.append((xm, ym, ys))
            if m == "snacs-ul":
                ok = _ok([c for c in _cells(res) if c["method"] == "snacs-ul"])
                if ok:
                    ym, ys, _ = _stats([c[ykey] for c in ok])
                    pts = [(_stats([c[xkey] for c in ok])[0], ym, ys)]
            if not pts:
                continue
            xs, ys_, es = zip(*pts, strict=True)
            ax.errorbar(xs, ys_, yerr=es, marker=markers[m], color=colors[m], capsize=3,
                        linestyle="none" if m == "snacs-ul" else "-",
                        markersize=11 if m == "snacs-ul" else 6, label=METHOD_NAMES[m])
        base = res.get("base", {}).get("test_accuracy")
        if base is not None:
            ax.axhline(base, color="k", linestyle=":", linewidth=1, label="unpruned")
        dense = _ok([c for c in _cells(res) if c["method"] == "dense"])
        if dense and ykey == "accuracy_finetuned":
            ax.axhline(_stats([c[ykey] for c in dense])[0], color="k", linestyle="--",
                       linewidth=1, label=METHOD_NAMES["dense"])
        ax.set_title(title)
        ax.set_xlabel(xlabel)
        ax.set_ylabel("test accuracy (%)")
        ax.grid(alpha=0.3)
    # beside the axes, not over them: the points sit anywhere in the panel
    axes[1].legend(*axes[0].get_legend_handles_labels(), fontsize=8, loc="upper left",
                   bbox_to_anchor=(1.02, 1.0), borderaxespad=0.0)
    fig.suptitle(f"{res.get('suite')}: accuracy at matched {('parameter' if metric == 'params' else 'MAC')} budgets "
                 f"(mean ± half range over seeds)", fontsize=10)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return True


def planned_not_run(res: dict) -> list[str]:
    """The suite's planned cells (`benchmarks.compare.grid` over its methods, budgets and the
    harness's seeds) that have no finished, unreachable or failed record, one line per seed:
    budgets where nothing ran say "every method", the rest name the missing methods."""
    from benchmarks import compare as C

    suite = C.SUITES.get(res.get("suite"))
    if suite is None:
        return []
    pairs = suite.budgets
    metrics = sorted({m for m, _ in pairs}) if pairs else list(C.METRICS)
    budgets = sorted({b for _, b in pairs}) if pairs else list(C.BUDGETS)
    done = set(res.get("cells", {}))
    lines = []
    for seed in C.SEEDS:
        planned = C.grid(suite.methods, metrics, budgets, [seed], pairs=pairs)
        missing = [c for c in planned if c["id"] not in done]
        if not missing:
            continue
        if len(missing) == len(planned):
            lines.append(f"seed {seed}: none of its {len(planned)} planned cells run yet")
            continue
        by_budget: dict[tuple, list[str]] = defaultdict(list)
        for c in missing:
            by_budget[(c["metric"], c["budget"])].append(c["method"])
        parts = []
        for (metric, b), methods in by_budget.items():
            where = ("no budget" if metric is None
                     else f"{b:.0%} {BUDGET_UNIT.get(metric, metric)}")
            n_planned = sum(1 for c in planned if (c["metric"], c["budget"]) == (metric, b))
            who = ("every method" if len(methods) == n_planned and n_planned > 1
                   else ", ".join(METHOD_NAMES.get(m, m) for m in methods))
            parts.append(f"{where}: {who}")
        lines.append(f"seed {seed}: {len(missing)} of {len(planned)} planned cells not run yet "
                     f"({'; '.join(parts)})")
    return lines


def _base_training(run: Path) -> str:
    """Where a base's committed, unfinished training stands (its resumable last.pt)."""
    last = run / "last.pt"
    if not last.is_file():
        return ""
    import torch

    state = torch.load(last, map_location="cpu", weights_only=False)
    hist = (state.get("result") or {}).get("history") or []
    epochs = (state.get("config") or {}).get("epochs")
    acc = hist[-1].get("test_accuracy") if hist else None
    return (f"; its training is under way: {state.get('epoch', -1) + 1} of {epochs} epochs done"
            + (f", test accuracy {acc:.2f} % after the last" if acc is not None else "")
            + f" (resumable: `benchmarks/bases/training/{run.name}/last.pt`, see the README "
            "beside it)")


def suites_not_started(started: set, bases: Path | None = None) -> list[str]:
    """A line for every harness suite with no result file: why (its base is not committed yet,
    or it is and no cell has run)."""
    from benchmarks import compare as C

    bases = bases or C.BASES
    out = []
    for name, suite in C.SUITES.items():
        if name in started:
            continue
        if suite.base_file and not (bases / suite.base_file).is_file():
            why = (f"its base (`benchmarks/bases/{suite.base_file}`) is not trained and "
                   "committed yet") + _base_training(bases / "training" / name)
        else:
            why = "no cell has run yet"
        out += [f"### {name}", "", f"No cells: {why}.", ""]
    return out


def compare_section(res: dict, plots_dir: Path, md_dir: Path, fname: str) -> list[str]:
    suite = res.get("suite", "?")
    base = res.get("base", {})
    cells = _cells(res)
    ok = _ok(cells)
    out = [f"### {suite}", ""]
    model = res.get("model", {})
    out += [
        f"Base model: {model.get('name')} width {model.get('width')} "
        f"({base.get('source')}), test accuracy {_num(base.get('test_accuracy'))} %, "
        f"{_num(base.get('weights'))} conv+linear weights, {_num(base.get('params'))} parameters, "
        f"{_num((base.get('macs') or 0) / 1e6, '.2f')} M MACs, {_num(base.get('prunable_groups'))} "
        "prunable channel groups.",
        "",
        f"Fine-tune (every cell): {res.get('finetune', {}).get('description', '–')}.",
        "",
        f"SNACS settings: {json.dumps(res.get('snacs_params', {}))} (other options at their "
        f"defaults). MINT: {json.dumps(res.get('mint_params', {}))}. Budget search of the other "
        f"methods: {res.get('budget_search', '–')}.",
        "",
        f"Cells: {len(ok)} finished, {sum(c.get('status') == 'unreachable' for c in cells)} "
        f"unreachable, {sum(c.get('status') == 'error' for c in cells)} failed "
        f"(from `{fname}`, updated {res.get('updated', '–')}, {res.get('torch_threads')} torch "
        "thread(s)). Accuracy: mean ± half the range over seeds; latency cut = 1 − pruned/base "
        "median latency, 1 thread.",
        "",
    ]
    missing = planned_not_run(res)
    if missing:
        out += ["Planned cells not run yet (machine time: one CPU-heavy run at a time on 2 "
                "cores; the order the harness runs them in is equal compute first):", ""]
        out += [f"* {line}" for line in missing] + [""]
    for metric in ("params", "macs"):
        groups = _by_method_budget(res, metric)
        if not groups:
            continue
        what = "parameter (conv+linear weight)" if metric == "params" else "MAC"
        out += [f"#### {suite}: {what} budgets", ""]
        rows = []
        for b in sorted({b for (_, b) in groups}):
            best_acc = max((_mean_ft(v) for (m, bb), v in groups.items() if bb == b
                            and _mean_ft(v) is not None), default=None)
            rows.append([f"**{b:.0%}**"] + [""] * (len(HEADER) - 1))
            for m in METHOD_ORDER:
                if (m, b) in groups:
                    acc = _mean_ft(groups[(m, b)])
                    rows.append(_row(METHOD_NAMES[m], groups[(m, b)],
                                     best=acc is not None and acc == best_acc))
        if metric == "params":
            ul = [c for c in cells if c["method"] == "snacs-ul"]
            dense = [c for c in cells if c["method"] == "dense"]
            if ul or dense:
                rows.append(["**auto / none**"] + [""] * (len(HEADER) - 1))
            if ul:
                rows.append(_row(METHOD_NAMES["snacs-ul"], ul))
            if dense:
                rows.append(_row(METHOD_NAMES["dense"], dense))
        out += _table(HEADER, rows) + [""]
        out += _verdict_lines(res, metric) + _ul_line(res, metric) + [""]
        png = plots_dir / f"compare_{suite}_{metric}.png"
        if plot_suite(res, metric, png):
            out += [f"![{suite} {metric}]({_rel(png, md_dir)})", ""]
    out += _designs_section(res, suite)
    out += _latency_budget_section(res, suite)
    out += _latency_check(res) + [""]
    if suite in PUBLISHED:
        out += ["Published anchors, **measured on the original CIFAR-10 with far longer "
                "fine-tunes** (not comparable with the JPEG-copy numbers above; they show "
                "where the method family stands):", ""]
        out += _table(["method", "accuracy (base → pruned, %)", "compression"],
                      [list(r) for r in PUBLISHED[suite]]) + [""]
    return out


# --------------------------------------------------------------------------- scoring time

def _synthetic(r: dict) -> bool:
    return r.get("kind", "synthetic") == "synthetic"


def scoring_section(res: dict) -> list[str]:
    """Synthetic-input runs (stage seconds), then the runs on the committed CIFAR-10 bases."""
    out = ["## Whole-network scoring time", ""]
    out += _scoring_synthetic([r for r in res.get("runs", []) if _synthetic(r)], res)
    out += _scoring_real([r for r in res.get("runs", []) if not _synthetic(r)], res)
    return out


def _scoring_synthetic(runs: list[dict], res: dict) -> list[str]:
    runs = sorted(runs, key=lambda r: (r["network"], r["weights"], r["workers"],
                                       r.get("probe", "svm") != "svm", r.get("probe", "svm")))
    if not runs:
        return []
    rows = []
    for r in runs:
        st = r.get("stages", {})
        rows.append([r["network"], r["weights"], _num(r.get("groups")) if r.get("groups", 0) < 10**6
                     else "1 filter/group", _num(r.get("N")), str(r.get("workers")),
                     str(r.get("threads")), r.get("estimator", "–"), r.get("probe", "svm")]
                    + [_num(st.get(s), ".1f") for s in STAGES]
                    + [f"**{r['total_seconds']:.1f}**", _num(r.get("target_seconds"), ".0f"),
                       "yes" if r.get("meets_target") else "**no**",
                       _num(r.get("loadavg_1min_before"), ".1f")])
    out = ["### Synthetic inputs", "",
           f"`SNACS.fit` (mode ul: activations, ACMI scores of every layer pair, probe limits — "
           "the SVM probe is the default, other probes are shown for comparison — "
           f"sensitivity, plan) on {res.get('data', '–')}. Seconds per stage; targets on this "
           "2-core machine: " + ", ".join(f"{k} ≤ {v:.0f} s" for k, v in
                                          res.get("targets_seconds", {}).items())
           + ". The load average at the start of each run shows how busy the machine was "
           "(2 cores; other jobs were running).", ""]
    out += _table(["network", "weights", "groups", "N", "workers", "threads", "estimator", "probe"]
                  + STAGES + ["total (s)", "target (s)", "met", "load"], rows)
    srcs = sorted({f"{r['network']} {r['weights']}: {r.get('weights_source')}" for r in runs})
    out += ["", "Weights: " + "; ".join(srcs) + ".", ""]
    return out


def _wall_cpu(wall: float | None, cpu: float | None) -> str:
    return f"{_num(wall, '.1f')} / {_num(cpu, '.1f')}"


def _met(v: bool | None, applies: bool) -> str:
    if v is None:
        return "–" if applies else "not judged"
    return "met" if v else "**missed**"


def _mode_label(r: dict) -> str:
    st = r.get("settings") or {}
    if str(r.get("mode", "")).startswith("target") and st.get("target") is not None:
        return f"target {st['target']:.0%} of {st.get('target_metric', 'params')}"
    return str(r.get("mode", "–"))


def _real_targets_text(targets: dict) -> str:
    parts = []
    for suite, t in targets.items():
        txt = f"{suite} fit ≤ {t['fit_seconds']:.0f} s wall"
        if t.get("fit_to_l1") is not None:
            txt += f" and ≤ {t['fit_to_l1']:.1f}× the L1 + BN recalibration time"
        parts.append(txt)
    thr = {t.get("threads") for t in targets.values()} - {None}
    on = f" on {thr.pop()} threads" if len(thr) == 1 else ""
    return "; ".join(parts) + on


def _cpu(r: dict, missing: str = "CPU not recorded") -> str:
    """The CPU model a timing record was measured on (older records did not store it)."""
    return (r.get("environment") or {}).get("cpu") or missing


def _probe_split(r: dict) -> str:
    pr = r["probe_cost"]
    return (f"{r.get('suite', r.get('network'))} on {_cpu(r)}, {_mode_label(r)}, "
            f"{r.get('threads')} threads: "
            f"limits {_num(r.get('stages', {}).get('limits'), '.1f')} s wall; probe fits "
            f"{_wall_cpu(pr.get('fit_seconds'), pr.get('fit_cpu_seconds'))} s, predictions "
            f"{_wall_cpu(pr.get('predict_seconds'), pr.get('predict_cpu_seconds'))} s "
            f"({pr.get('predicted_samples', 0) / 1e6:.2f} M samples over {pr.get('pairs')} pairs)")


def _scoring_real(runs: list[dict], res: dict) -> list[str]:
    meta = res.get("real") or {}
    skipped = {k: v for k, v in (res.get("skipped") or {}).items()
               if not any(r.get("suite") == k for r in runs)}
    if not runs and not skipped:
        return []
    out = ["### CIFAR-10 bases: real data and weights", ""]
    if meta.get("description"):
        out += [f"From `scoring_time.json`: {meta['description']}.", ""]
    if meta.get("targets"):
        out += ["Targets (issue 16, SNACS defaults): " + _real_targets_text(meta["targets"])
                + ". Runs with other threads or calibration sizes are shown but not judged.", ""]
    rows = []
    order = {k: i for i, k in enumerate(meta.get("targets", {}))}
    for r in sorted(runs, key=lambda r: (order.get(r.get("suite"), 99), r.get("mode", ""),
                                         r.get("threads", 0), r.get("samples_per_class", 0),
                                         r.get("measured", ""))):
        head = [r.get("suite", r["network"]), _cpu(r, "not recorded"), _mode_label(r),
                _num(r.get("N")) if r.get("N") is not None else
                f"{r.get('samples_per_class')}/class", str(r.get("threads"))]
        if r.get("status") != "ok":
            rows.append(head + [f"{r.get('status')}: {r.get('error', '')}"]
                        + ["–"] * (len(STAGES) + 9))
            continue
        st, cpu, l1 = r.get("stages", {}), r.get("cpu_stages", {}), r.get("l1", {})
        ra, t, m = r.get("ratios", {}), r.get("targets", {}), r.get("meets", {})
        applies = bool(t.get("applies"))
        fit_t = f" (≤ {t['fit_seconds']:.0f})" if t.get("fit_seconds") is not None else ""
        l1_t = f" (≤ {t['fit_to_l1']:.1f})" if t.get("fit_to_l1") is not None else ""
        recal = l1.get("steps", {}).get("recalibrate_bn", {})
        rows.append(head + [_wall_cpu(st.get(s), cpu.get(s)) for s in STAGES] + [
            f"**{_num(r.get('total_seconds'), '.1f')}** / {_num(r.get('total_cpu_seconds'), '.1f')}"
            + fit_t,
            _wall_cpu(r.get("apply", {}).get("seconds"), r.get("apply", {}).get("cpu_seconds")),
            _wall_cpu(l1.get("seconds"), l1.get("cpu_seconds"))
            + f" (BN recal {_num(recal.get('seconds'), '.1f')})",
            f"**{_num(ra.get('fit_to_l1'), '.2f')}** / {_num(ra.get('fit_to_l1_cpu'), '.2f')}"
            + l1_t,
            _wall_cpu(r.get("forward", {}).get("seconds"), r.get("forward", {}).get("cpu_seconds")),
            f"{_num(ra.get('activations_to_forward'), '.2f')} / "
            f"{_num(ra.get('activations_to_forward_cpu'), '.2f')}",
            _met(m.get("fit_seconds"), applies and t.get("fit_seconds") is not None),
            _met(m.get("fit_to_l1"), applies and t.get("fit_to_l1") is not None),
            _num(r.get("loadavg_1min_before"), ".1f"),
        ])
    if rows:
        out += ["Seconds as wall / process CPU. \"SNACS fit\" is `SNACS.fit` (all stages); "
                "\"SNACS apply\" its channel removal and BN recalibration, not part of the fit; "
                "\"L1 + BN recal\" the reference (tracing, L1-norm importance, budget search, "
                "channel removal, BN recalibration) at the same parameter budget as the SNACS "
                "plan; \"forward\" a bare `model(x)` loop over the same calibration images.", ""]
        out += _table(["suite", "CPU", "mode", "N", "threads"] + [f"{s} (s)" for s in STAGES]
                      + ["SNACS fit (s)", "SNACS apply (s)", "L1 + BN recal (s)",
                         "fit ÷ (L1 + BN recal)", "forward (s)", "activations ÷ forward",
                         "fit time", "fit ÷ L1", "load"], rows) + [""]
        srcs = sorted({f"{r.get('suite')}: {r.get('weights_source')}" for r in runs})
        out += ["Weights: " + "; ".join(srcs) + ".", ""]
        split = [_probe_split(r) for r in runs if r.get("status") == "ok" and r.get("probe_cost")]
        if split:
            out += ["Where the limits stage goes (sums over the layer pairs, so with the pairs "
                    "probed side by side, one per torch thread, the sums exceed the stage's wall "
                    "time; each fit is libsvm on one thread; the predictions are "
                    "`snacs.limits.svm_predict`, every distinct pruning mask of the rate grid "
                    "times N samples):", ""]
            out += [f"* {s}" for s in split] + [""]
    for k, v in sorted(skipped.items()):
        out += [f"* {k}: not measured: {v}.", ""]
    return out


# --------------------------------------------------------------------------- reliability

def _cell(v: Any) -> str:
    if isinstance(v, list):
        v = "; ".join(str(x) for x in v)
    txt = _num(v, ".4g") if isinstance(v, float) else _num(v)
    return str(txt).replace("|", "\\|").replace("\n", " ")


def _dict_rows_table(rows: list[dict]) -> list[str]:
    keys: list[str] = []
    for r in rows:
        keys += [k for k, v in r.items() if k not in keys and not isinstance(v, dict)]
    return _table(keys, [[_cell(r.get(k)) for k in keys] for r in rows])


ABOVE_LIMITS_NAMES = {
    "relax": "relax the limit fraction (shipped: `--relax-limits`)",
    "relax-mean": "relax, importance ÷ layer mean",
    "scaled": "every layer to s·UL",
    "nolimits-mean": "no limits, importance ÷ layer mean",
    "relax-cost": "relax, importance ÷ layer mean ÷ saving per channel",
}


DESIGNS = {  # the allocation (and estimator) designs of SNACS tried in the harness (issue 13)
    "snacs": "per-layer probe limits, one score quantile (relaxed above the limits)",
    "snacs-global": "global ranking of layer-mean-normalised ACMI, no limits",
    "snacs-select": "both of the above, the one more accurate on the calibration images after "
                    "BN re-estimation",
    "snacs-nolimits": "one score quantile, limits lifted",
    "snacs-hash": "as `snacs`, hash CMI estimator",
    "snacs-hash-global": "as `snacs-global`, hash CMI estimator",
}


def _designs_section(res: dict, suite: str) -> list[str]:
    """Every SNACS design at every budget of the suite, beside the best baseline: the ablation
    table of issue 13, generated from the same cells as the tables above."""
    cols = []
    for metric in ("params", "macs", "latency"):
        groups = _by_method_budget(res, metric)
        cols += [(metric, b, groups) for b in sorted({b for (_, b) in groups})]
    present = [m for m in DESIGNS if any((m, b) in g for _, b, g in cols)]
    if len(present) < 2 or not cols:
        return []
    header = ["design"] + [f"{b:.0%} {BUDGET_UNIT[m]}" for m, b, _ in cols]
    rows = []
    for m in present:
        rows.append([f"`{m}`: {DESIGNS[m]}"] + [
            _num(_mean_ft(g.get((m, b), []))) if (m, b) in g else "–" for _, b, g in cols])
    best = []
    for _, b, g in cols:
        base = {k: _mean_ft(g.get((k, b), [])) for k in BASELINES}
        base = {k: v for k, v in base.items() if v is not None}
        best.append(f"{max(base.values()):.2f} ({METHOD_NAMES[max(base, key=base.get)]})"
                    if base else "–")
    rows.append(["best baseline"] + best)
    return [f"#### {suite}: SNACS designs side by side", "",
            "Test accuracy (%) after the shared fine-tune, mean over the seeds finished; the same "
            "cells as the tables above. Designs measured outside the harness are in the issue "
            "notes, not here.", ""] + _table(header, rows) + [""] + _estimator_line(cols) \
        + _select_line(cols)


def _estimator_line(cols) -> list[str]:
    """The estimator choice (issue 14) at SNACS's default allocation of each budget: the hash
    estimator against the Gaussian copula, cell by cell."""
    diffs = []
    for metric, b, g in cols:
        copula = default_method(metric)
        hashed = "snacs-hash" if copula == "snacs" else "snacs-hash-global"
        c, h = _mean_ft(g.get((copula, b), [])), _mean_ft(g.get((hashed, b), []))
        if c is None or h is None:
            continue
        tables = [{priced_by(x) for x in _ok(g.get((m, b), []))} for m in (copula, hashed)]
        diffs.append((f"{b:.0%} {BUDGET_UNIT[metric]}", h - c if tables[0] == tables[1] else None))
    if not diffs:
        return []
    done = [d for _, d in diffs if d is not None]
    return ["Estimator at the default allocation of each budget, hash − Gaussian copula "
            "(points): " + ", ".join(f"{k} {d:+.2f}" if d is not None else
                                     f"{k} not comparable yet (priced by different latency "
                                     "tables)" for k, d in diffs)
            + f"; hash at least as accurate in {sum(d >= 0 for d in done)} of {len(done)}.", ""]


def _select_line(cols) -> list[str]:
    """How often `snacs-select`'s proxy (accuracy on the calibration images after BN
    re-estimation, before any fine-tune) kept the allocation that is better after the fine-tune,
    seed by seed, from the snacs / snacs-global / snacs-select cells of the same budget."""
    hits, misses = 0, []
    for metric, b, g in cols:
        by_seed = {m: {c["seed"]: c for c in _ok(g.get((m, b), []))}
                   for m in ("snacs", "snacs-global", "snacs-select")}
        for seed, sel in sorted(by_seed["snacs-select"].items()):
            lim, glo = by_seed["snacs"].get(seed), by_seed["snacs-global"].get(seed)
            chose = (sel.get("predicted") or {}).get("allocation_limits")
            if lim is None or glo is None or chose is None:
                continue
            kept, other = (lim, glo) if chose == 1.0 else (glo, lim)
            loss = other["accuracy_finetuned"] - kept["accuracy_finetuned"]
            if loss > 0:
                misses.append(f"{b:.0%} {BUDGET_UNIT[metric]} (kept {'limits' if chose == 1.0 else 'global'}, "
                              f"{loss:.2f} points below the other)")
            else:
                hits += 1
    n = hits + len(misses)
    if not n:
        return []
    return [f"Allocation chosen on the calibration images (`snacs-select`): the one better after "
            f"the fine-tune in {hits} of {n} budget(s)"
            + (f"; missed at {', '.join(misses)}" if misses else "") + ".", ""]


def _latency_budget_section(res: dict, suite: str) -> list[str]:
    """Latency budgets: every method priced by the same per-layer table; the measured latency
    of each pruned model against the target."""
    groups = _by_method_budget(res, "latency")
    if not groups:
        return []
    tab = res.get("latency_table") or {}
    base = f", base {tab['base_ms']:.3f} ms" if tab.get("base_ms") else ""
    out = [f"#### {suite}: latency budgets", "",
           "Target: a share of the frozen TorchScript latency at batch "
           f"{tab.get('batch_size', 1)} on {tab.get('threads', 1)} thread removed. Every method's "
           "ranking is spread by the same global rule, stopped where one per-layer latency table "
           f"(timed once on this machine{base}) "
           "predicts the target; \"measured\" is the pruned model timed back to back with the "
           "base (median, `bs1_ts` column). The harness does not run SNACS's own correction "
           "rounds, so all methods are priced alike.", ""]
    header = ["budget", "method", "test acc. after FT (%)", "latency removed, predicted",
              "latency removed, measured", "weights removed", "MACs removed", "seeds",
              "priced by table (base ms)"]
    rows = []
    for b in sorted({b for (_, b) in groups}):
        for m in METHOD_ORDER:
            cells = _ok(groups.get((m, b), []))
            if not cells:
                continue
            lt = [c.get("latency_target") or {} for c in cells]
            pred = [x["predicted_removed"] for x in lt if x.get("predicted_removed") is not None]
            meas = [x["measured_removed"] for x in lt if x.get("measured_removed") is not None]
            rows.append([f"{b:.0%}", METHOD_NAMES[m], _pm([c["accuracy_finetuned"] for c in cells]),
                         f"{100 * _stats(pred)[0]:.1f} %" if pred else "–",
                         f"{100 * _stats(meas)[0]:.1f} %" if meas else "–",
                         f"{_stats([c['weights_removed_pct'] for c in cells])[0]:.1f} %",
                         f"{_stats([c['macs_removed_pct'] for c in cells])[0]:.1f} %",
                         str(len(cells)),
                         ", ".join(sorted({f"{x['table_base_ms']:.3f}" for x in lt
                                           if x.get("table_base_ms")})) or "–"])
    mixed = {priced_by(c) for v in groups.values() for c in _ok(v)} - {None}
    if len(mixed) > 1:
        out += ["**Not yet comparable:** these cells were priced by different latency tables "
                "(timed on different machines; last column). The harness reruns the cells that "
                "the committed table did not price (`--dry-run` lists them as stale).", ""]
    return out + _table(header, rows) + [""]


def above_limits_section(res: dict, compare: dict | None, fname: str) -> list[str]:
    """The ablation of SNACS routes above its limits, next to the shipped route and baselines."""
    allcells = [c for c in res["cells"].values() if c.get("status") == "ok"]
    out = [f"### Above the limits: {res.get('suite')}", "",
           f"From `{fname}` (`python -m benchmarks.above_limits --suite {res.get('suite')}`): "
           "the same harness, base model, fine-tune and seeds as the matched-compression table; "
           "fine-tuned test accuracy (%), mean ± spread over the seeds, and the share of MACs "
           "(parameter budgets) or weights (MAC budgets) removed.", ""]
    for metric in ("params", "macs"):
        cells = [c for c in allcells if (c.get("metric") or "params") == metric]
        if not cells:
            continue
        other, unit = (("macs_removed_pct", "MACs"), "weights") if metric == "params" else \
            (("weights_removed_pct", "weights"), "MACs")
        budgets = sorted({float(c["budget"]) for c in cells})
        seeds = sorted({c["seed"] for c in cells})

        def fmt(cs, other=other):
            return (f"{_pm([c['accuracy_finetuned'] for c in cs])} ({other[1]} −"
                    f"{_stats([c[other[0]] for c in cs])[0]:.0f} %)" if cs else "–")

        rows = []
        for v in ABOVE_LIMITS_NAMES:
            if not any(c["variant"] == v for c in cells):
                continue
            rows.append([ABOVE_LIMITS_NAMES[v]] + [
                fmt([c for c in cells if c["variant"] == v and float(c["budget"]) == b])
                for b in budgets])
        if compare:
            groups = _by_method_budget(compare, metric)
            for m in ("snacs", "l1", "tp-taylor", "tp-magnitude"):
                if m == "snacs" and any(c["variant"] == "relax" for c in cells):
                    continue
                rows.append([METHOD_NAMES[m] + " (from the matched table)"] + [
                    fmt([c for c in _ok(groups.get((m, b), [])) if c["seed"] in seeds])
                    for b in budgets])
        title = "Parameter budgets" if metric == "params" else "MAC budgets"
        out += [f"{title} (seeds {', '.join(map(str, seeds))}):", ""]
        out += _table(["route"] + [f"{b:.0%} of {unit} removed" for b in budgets], rows) + [""]
    return out


def reliability_section(res: Any) -> list[str]:
    """Rendered from whatever reliability.json holds: scalars, then one table per list."""
    out = ["## Reliability", ""]
    if not res:
        return out + ["No reliability results yet (`benchmarks/results/reliability.json`).", ""]
    if isinstance(res, list):
        res = {"results": res}
    if not isinstance(res, dict):
        return out + [f"`reliability.json` holds an unexpected {type(res).__name__}.", ""]
    scal = [(k, v) for k, v in _flat_scalars({k: v for k, v in res.items() if k != "environment"})]
    if scal:
        out += _table(["quantity", "value"], [[f"`{k}`", _cell(v)] for k, v in scal]) + [""]
    for k, v in res.items():
        if isinstance(v, list) and v and all(isinstance(r, dict) for r in v):
            out += [f"`{k}` ({len(v)}):", ""] + _dict_rows_table(v) + [""]
    return out


# --------------------------------------------------------------------------- estimator sections

def _other_markdown(module: str, result: dict) -> list[str]:
    try:
        import importlib

        mod = importlib.import_module(f"benchmarks.{module}")
        return [mod.markdown(result)]
    except Exception as e:  # noqa: BLE001 - the other benchmark's renderer may be in flux
        return [f"(could not render `{module}.json`: {type(e).__name__}: {e})", ""]


# --------------------------------------------------------------------------- zoo section

def zoo_section(res: dict) -> list[str]:
    """Which structures snacs prunes, with torch-pruning's MagnitudePruner beside it."""
    from benchmarks.zoo import markdown

    return ["## Structures: what snacs and torch-pruning prune", "",
            "From `zoo.json` (`python -m benchmarks.zoo`).", "", markdown(res), ""]


# --------------------------------------------------------------------------- README block

def readme_block(results_dir: Path, md_link: str = "BENCHMARKS.md") -> str:
    lines = [f"Generated by `python -m benchmarks.report` from `benchmarks/results/*.json`; "
             f"full tables, plots and analysis in [BENCHMARKS.md]({md_link}).", ""]
    rows = []
    for p in sorted(results_dir.glob("compare_*.json")):
        res = _load(p)
        if not res:
            continue
        for v in verdicts(res, "params"):
            snacs_txt = "no result (limits)" if v["snacs"] is None else _num(v["snacs"])
            if v["partial"]:
                snacs_txt += f" ({len(v['snacs_seeds'])} of {v['n_seeds']} seeds; baselines on the same)"
            rows.append([res.get("suite", p.stem), f"{v['budget']:.0%}", snacs_txt,
                         _fraction(v["snacs_cells"]), _num(v["snacs_nolimits"]),
                         f"{METHOD_NAMES[v['best']]} {v['best_acc']:.2f}" if v["best"] else "–",
                         _num(v["l1"]), _num(v["random"]),
                         "–" if v["l1"] is None or v["random"] is None
                         else "yes" if v["beats_l1_random"] else "**no**"])
        ul = _ok([c for c in _cells(res) if c["method"] == "snacs-ul"])
        if ul:
            rows.append([res.get("suite", p.stem),
                         f"auto: {_stats([c['weights_removed_pct'] for c in ul])[0]:.0f} %",
                         _pm([c["accuracy_finetuned"] for c in ul]), "0.70", "–", "–", "–", "–",
                         "–"])
    if rows:
        lines += ["Test accuracy (%) after pruning to a share of conv+linear weights and a short "
                  "fine-tune (mean over the seeds finished; BENCHMARKS.md gives the count per "
                  "row). SNACS runs in `target` mode with `--relax-limits`: within its "
                  "per-layer limits the limit fraction stays at the default 0.7; above them it "
                  "is raised just enough (column \"limit fraction\"). \"Limits lifted\" is an "
                  "ablation without any limit.", ""]
        lines += _table(["suite", "weights removed", "SNACS", "limit fraction",
                         "SNACS, limits lifted",
                         "best baseline", "L1-norm", "random", "SNACS ≥ L1 and random"],
                        rows) + [""]
    rows = []
    for p in sorted(results_dir.glob("compare_*.json")):
        res = _load(p)
        if res:
            rows += _both_metrics_rows(res)
    if rows:
        lines += ["At equal parameters and at equal MACs (what makes the model faster), test accuracy "
                  "(%) after the same fine-tune (mean over the seeds finished; BENCHMARKS.md gives "
                  "the count per cell), the other metric removed in brackets, in heavy type where SNACS's "
                  "default is at least the best baseline. \"SNACS default\" is what `snacs prune "
                  "--target` does (`--allocation auto`: the limits allocation for a parameter "
                  "or latency target, with `--relax-limits` above the limits, the global one for "
                  "a MAC target; latency: frozen TorchScript, batch 1, 1 thread, priced by "
                  "the suite's committed per-layer table); the two allocations are also shown alone. \"auto\" is the automatic "
                  "mode (`ul`), which picks its own budget.", ""]
        lines += _table(["suite", "budget", "SNACS default", "SNACS, limits alloc.",
                         "SNACS, global alloc.", "best baseline", "L1-norm", "random",
                         "dense + same fine-tune"], rows) + [""]
    st = _load(results_dir / "scoring_time.json")
    if st and st.get("runs"):
        parts = []
        for net in ("resnet56", "vgg16"):
            rs = [r for r in st["runs"] if r["network"] == net and r.get("probe", "svm") == "svm"
                  and _synthetic(r)]
            if not rs:
                continue
            # per kind of weights, the run that used the whole machine (most threads)
            pick = {}
            for r in sorted(rs, key=lambda r: (r["threads"], r.get("measured", ""))):
                pick[r["weights"]] = r
            each = ", ".join(f"{r['total_seconds']:.0f} s with {k} weights ("
                             f"{'met' if r['meets_target'] else '**missed**'})"
                             for k, r in sorted(pick.items()))
            thr = max(r["threads"] for r in pick.values())
            parts.append(f"{net} (target ≤ {rs[0]['target_seconds']:.0f} s, {thr} "
                         f"thread{'s' if thr > 1 else ''}): {each}")
        if parts:
            lines += ["Whole-network scoring time with the default SVM-probe limits "
                      "(synthetic inputs): " + "; ".join(parts)
                      + ". Most of it is the limits stage; see BENCHMARKS.md.", ""]
        real = _real_summary([r for r in st["runs"] if not _synthetic(r)])
        if real:
            lines += ["On the committed CIFAR-10 bases (real data, SNACS defaults): " + real
                      + ".", ""]
    dt = _load(results_dir / "demo_time.json")
    if isinstance(dt, dict) and dt.get("wall_seconds"):
        lines += [f"`make demo` from a fresh clone: {dt['wall_seconds'] / 60:.1f} min end to end "
                  f"(setup included; target ≤ {dt['target_seconds'] / 60:.0f} min), "
                  f"{dt['weights_pruned_pct']:.1f} % of weights removed, accuracy "
                  f"{dt['accuracy_before']:.2f} → {dt['accuracy_finetuned']:.2f} %.", ""]
    eq = _load(results_dir / "estimator_quality.json")
    if eq and eq.get("summary"):
        dv = eq.get("default_variant")
        s = eq["summary"].get(dv, {})
        if s:
            lines += [f"Estimator ranking quality (default `{dv}`): mean within-child Spearman "
                      f"{s.get('spearman_linear', float('nan')):.2f} against the true CMI (target "
                      f"≥ {eq.get('target_spearman')}).", ""]
    return "\n".join(lines).rstrip() + "\n"


def _both_metrics_rows(res: dict) -> list[list[str]]:
    """README rows per (metric, budget): the default, both allocations, the best baseline."""
    def cell(cells: list[dict], other: str) -> str:
        ok = _ok(cells)
        if not ok:
            return "–" if not cells else "no result"
        acc = _stats([c["accuracy_finetuned"] for c in ok])[0]
        rem = _stats([c[other] for c in ok])[0]
        tag = "w." if other == "weights_removed_pct" else "MACs"
        return f"{acc:.2f} ({rem:.0f} % {tag})"

    dense = _mean_ft([c for c in _cells(res) if c["method"] == "dense"])
    width = (res.get("model") or {}).get("width", 1.0)
    name = res.get("suite", "?") + ("" if width in (None, 1, 1.0) else f" (width {width:g})")
    rows = []
    for metric, unit, other in (("params", "weights", "macs_removed_pct"),
                                ("macs", "MACs", "weights_removed_pct"),
                                ("latency", "latency", "macs_removed_pct")):
        groups = _by_method_budget(res, metric)
        for b in sorted({b for (_, b) in groups}):
            lim, glo = groups.get(("snacs", b), []), groups.get(("snacs-global", b), [])
            default = lim if default_method(metric) == "snacs" else glo
            base = {m: _mean_ft(groups.get((m, b), [])) for m in BASELINES}
            base = {m: v for m, v in base.items() if v is not None}
            best = max(base.items(), key=lambda kv: kv[1]) if base else None
            d_acc = _mean_ft(default)
            txt = cell(default, other)
            if best and d_acc is not None:
                txt = (f"**{txt}**" if d_acc >= best[1] else txt)
            rows.append([name, f"{b:.0%} {unit}", txt, cell(lim, other),
                         cell(glo, other),
                         f"{METHOD_NAMES[best[0]]} {best[1]:.2f}" if best else "–",
                         _num(base.get("l1")), _num(base.get("random")), _num(dense)])
    ul = _ok([c for c in _cells(res) if c["method"] == "snacs-ul"])
    if ul:
        w = _stats([c["weights_removed_pct"] for c in ul])[0]
        m = _stats([c["macs_removed_pct"] for c in ul])[0]
        rows.append([name, f"auto: {w:.0f} % w., {m:.0f} % MACs",
                     _pm([c["accuracy_finetuned"] for c in ul]), "–", "–", "–", "–", "–",
                     _num(dense)])
    return rows


def _real_summary(runs: list[dict]) -> str:
    """One clause per judged (suite, mode): the latest run of each CPU model, so a slower or
    faster machine is shown beside the others rather than instead of them."""
    pick: dict[tuple, dict[str, dict]] = defaultdict(dict)
    for r in sorted(runs, key=lambda r: r.get("measured", "")):
        if r.get("status") == "ok" and (r.get("targets") or {}).get("applies"):
            pick[(r.get("suite"), r.get("mode"))][_cpu(r)] = r
    parts = []
    for (suite, _mode), by_cpu in sorted(pick.items()):
        first = next(iter(by_cpu.values()))
        runs_txt = []
        for cpu, r in by_cpu.items():
            t, m = r["targets"], r.get("meets", {})
            txt = (f"{r['total_seconds']:.1f} s on {cpu} "
                   f"(≤ {t['fit_seconds']:.0f} s: {_met(m.get('fit_seconds'), True)}")
            if t.get("fit_to_l1") is not None:
                txt += (f"; {r['ratios']['fit_to_l1']:.2f}× L1 + BN recal, ≤ "
                        f"{t['fit_to_l1']:.1f}×: {_met(m.get('fit_to_l1'), True)}")
            runs_txt.append(txt + ")")
        parts.append(f"{suite} ({_mode_label(first)}, {first['threads']} threads): fit "
                     + ", ".join(runs_txt))
    return "; ".join(parts)


def write_readme(readme: Path, block: str) -> bool:
    text = readme.read_text()
    if README_START not in text or README_END not in text:
        return False
    pre, rest = text.split(README_START, 1)
    _, post = rest.split(README_END, 1)
    new = pre + README_START + "\n" + block + README_END + post
    if new != text:
        from snacs.io import atomic_write_text

        atomic_write_text(readme, new)
    return True


# --------------------------------------------------------------------------- the report

def render(results_dir: Path = RESULTS, out_md: Path = ROOT / "BENCHMARKS.md",
           readme: Path | None = ROOT / "README.md", plots_dir: Path | None = None,
           notes: Path | None = NOTES) -> str:
    """Write BENCHMARKS.md (and the README block, when `readme` is given); return the markdown."""
    results_dir = Path(results_dir)
    out_md = Path(out_md)
    plots_dir = Path(plots_dir) if plots_dir is not None else results_dir
    md_dir = out_md.parent
    used: list[str] = []
    out = ["# Benchmarks", "",
           "Generated by `python -m benchmarks.report` from the JSON files in "
           f"`{_rel(results_dir, md_dir)}/`; do not edit by hand. Rerun the benchmarks "
           "(`python -m benchmarks.compare --suite …`, `python -m benchmarks.scoring_time`, "
           "`python -m benchmarks.estimator_quality`) and this script to refresh it.", ""]

    for fname, title in (("train_vgg16w025_fmnist.json",
                          "Training: VGG16 (width 0.25) on Fashion-MNIST"),
                         ("prune_vgg16w025_fmnist.json",
                          "Pruning with SNACS: VGG16 (width 0.25) on Fashion-MNIST"),
                         ("demo_time.json", "`make demo` from a fresh clone (target ≤ 10 min)")):
        d = _load(results_dir / fname)
        if isinstance(d, dict):
            out += _lead_section(title, d, fname)
            used.append(fname)

    comps = [(p, _load(p)) for p in sorted(results_dir.glob("compare_*.json"))]
    comps = [(p, r) for p, r in comps if isinstance(r, dict)]
    comps_by_suite = {r.get("suite"): r for _, r in comps}
    out += ["## Accuracy at matched compression", ""]
    if comps:
        out += ["Every method prunes the same trained model to the same budget, with the same "
                "physical channel removal, the same short fine-tune and seed, and the same test "
                "split (harness: `benchmarks/compare.py`, selections: `benchmarks/baselines.py`). "
                "The best fine-tuned accuracy of each budget is in bold.", ""]
        for p, r in comps:
            out += compare_section(r, plots_dir, md_dir, p.name)
            used.append(p.name)
    else:
        out += ["No comparison results yet (`python -m benchmarks.compare --suite …`).", ""]
    out += suites_not_started(set(comps_by_suite))

    for p in sorted(results_dir.glob("above_limits_*.json")):
        r = _load(p)
        if isinstance(r, dict) and r.get("cells"):
            out += above_limits_section(r, comps_by_suite.get(r.get("suite")), p.name)
            used.append(p.name)

    zoo = _load(results_dir / "zoo.json")
    if isinstance(zoo, dict) and zoo.get("rows"):
        out += zoo_section(zoo)
        used.append("zoo.json")

    st = _load(results_dir / "scoring_time.json")
    if isinstance(st, dict) and st.get("runs"):
        out += scoring_section(st)
        used.append("scoring_time.json")

    for module, title in (("estimator_quality", "Estimator ranking quality"),
                          ("estimator_speed", "Estimator speed"),
                          ("memory_resnet50", "Memory: ResNet-50 activations"),
                          ("distributed_scaling", "Scaling across torch.distributed ranks"),
                          ("probe_agreement", "Dense SVM probe against libsvm"),
                          ("latency_rounding", "Latency: rounding kept channels")):
        d = _load(results_dir / f"{module}.json")
        if isinstance(d, dict):
            out += [f"## {title}", "", f"From `{module}.json`.", ""] + _other_markdown(module, d) + [""]
            used.append(f"{module}.json")

    rel = _load(results_dir / "reliability.json")
    out += reliability_section(rel)
    if rel:
        used.append("reliability.json")

    if notes is not None and Path(notes).is_file():
        out += ["## Analysis", "", Path(notes).read_text().strip(), ""]
    out += ["---", "", "Result files used: " + ", ".join(f"`{u}`" for u in used) + "."
            if used else "No result files found.", ""]
    md = "\n".join(out).rstrip() + "\n"
    md = re.sub(r"\n{3,}", "\n\n", md)
    from snacs.io import atomic_write_text

    out_md.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(out_md, md)
    if readme is not None and Path(readme).is_file():
        write_readme(Path(readme), readme_block(results_dir, _rel(out_md, Path(readme).parent)))
    return md


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--results", default=str(RESULTS))
    ap.add_argument("--out", default=str(ROOT / "BENCHMARKS.md"))
    ap.add_argument("--readme", default=str(ROOT / "README.md"),
                    help="README whose bench block is rewritten ('' to skip)")
    args = ap.parse_args(argv)
    render(Path(args.results), Path(args.out), Path(args.readme) if args.readme else None)
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
