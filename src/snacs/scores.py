"""ACMI scores for every layer pair (SPEC §3): parallel workers and a resumable on-disk cache.

Pairs are independent, so they are scored in worker processes. Each pair's matrix is written to
the cache as soon as it is done, under a key made of the child's weights, the activations (hence
the model's weights and the calibration indices) and the settings; an interrupted run reuses
every pair already scored.
"""

from __future__ import annotations

import hashlib
import io
import json
import logging
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

import snacs.distributed as ddp
from snacs.activations import Activations
from snacs.errors import ConfigError
from snacs.io import atomic_write_bytes
from snacs.pairs import LayerPair, Topology, is_depthwise

log = logging.getLogger(__name__)

__all__ = ["ScoreSettings", "block_diagonal", "child_weight", "score_pairs", "n_groups"]


@dataclass(frozen=True)
class ScoreSettings:
    """What changes a score matrix; part of the cache key."""

    groups: int = 64
    estimator: str = "gaussian_copula"  # the library default, snacs.estimators.DEFAULT_ESTIMATOR
    phi: str = "weight"
    seed: int = 0

    def key(self) -> dict:
        return {"groups": self.groups, "estimator": self.estimator, "phi": self.phi,
                "seed": self.seed, "version": 1}


def n_groups(channels: int, groups: int) -> int:
    """G = min(n, groups): `groups` >= n gives one channel per group."""
    return max(1, min(channels, groups))


def block_diagonal(w: torch.Tensor, groups: int) -> torch.Tensor:
    """A grouped conv's weight (n_out, n_in / groups, k...) as the dense (n_out, n_in, k...)
    weight it acts as: output group j reads input group j only, every other entry is zero."""
    n_out, per_in = w.shape[:2]
    per_out = n_out // groups
    full = w.new_zeros((n_out, per_in * groups, *w.shape[2:]))
    for j in range(groups):
        full[j * per_out:(j + 1) * per_out, j * per_in:(j + 1) * per_in] = \
            w[j * per_out:(j + 1) * per_out]
    return full


def child_weight(model: nn.Module, pair: LayerPair) -> torch.Tensor:
    """The child's weight as (n_child, n_parent, k...) for φ.

    A flattened Linear is unfolded to (n_child, channels, spatial), a grouped conv becomes its
    block-diagonal dense weight, and a child reading a concatenation keeps only the input slice
    of this pair's producer (`pair.in_index`).
    """
    m = dict(model.named_modules())[pair.child]
    w = m.weight.detach().float()
    if w.dim() > 2 and getattr(m, "groups", 1) > 1:
        w = block_diagonal(w, m.groups)
    if w.dim() == 2 and pair.spatial > 1:
        w = w.reshape(w.shape[0], -1, pair.spatial)
    if pair.in_index is not None:
        w = w[:, torch.as_tensor(pair.in_index)]
    return w


def _phi_scale(model: nn.Module, pair: LayerPair, w: torch.Tensor) -> float:
    """max|W| of this pair's slice over max|W| of the whole child layer (SPEC §3 normalises φ by
    the layer), 1 when the pair reads the whole layer."""
    if pair.in_index is None:
        return 1.0
    top = float(dict(model.named_modules())[pair.child].weight.detach().abs().max())
    part = float(w.abs().max()) if w.numel() else 0.0
    return part / top if top > 0 else 1.0


def _phi(w: np.ndarray, gp: int, gc: int, kind: str, scale: float) -> np.ndarray:
    """φ of a slice whose weights are normalised by the whole layer's max: w̄ of the slice
    (normalised by its own max) times `scale`, then the kind's transform."""
    from snacs.estimators import phi_matrix

    if kind == "none":
        return np.ones((gc, gp))
    wbar = phi_matrix(w, gp, gc, "weight") * scale
    if kind == "weight":
        return wbar
    if kind == "weight_sq":
        return wbar**2
    return np.exp(-(wbar**2) / 2.0)


def _child_groups(pair: LayerPair, groups: int) -> int:
    # The classifier's children are the K classes, one group per logit (SPEC §1).
    return pair.n_child if pair.is_classifier else n_groups(pair.n_child, groups)


def _score_one(args: tuple) -> tuple[str, np.ndarray]:
    name, a_p, a_c, w, gp, gc, settings, threads, scale = args
    if threads:
        torch.set_num_threads(threads)
    from snacs.estimators import acmi_matrix

    phi = settings.phi if scale == 1.0 else _phi(w, gp, gc, settings.phi, scale)
    rho = acmi_matrix(a_p, a_c, w, gp, gc, phi=phi, estimator=settings.estimator,
                      seed=settings.seed)
    return name, np.asarray(rho, dtype=np.float64)


def _digest(*arrays: torch.Tensor | np.ndarray, extra: dict) -> str:
    h = hashlib.sha256(json.dumps(extra, sort_keys=True).encode())
    for a in arrays:
        a = a.detach().cpu().numpy() if isinstance(a, torch.Tensor) else np.asarray(a)
        h.update(str(a.shape).encode())
        h.update(np.ascontiguousarray(a).tobytes())
    return h.hexdigest()[:32]


def score_pairs(
    model: nn.Module,
    topology: Topology,
    acts: Activations,
    settings: ScoreSettings,
    *,
    workers: int = 1,
    cache_dir: str | Path | None = None,
    progress: bool = False,
    distributed: bool = False,
) -> dict[str, np.ndarray]:
    """ρ (G_c x G_p) for every pair, from the cache where possible.

    Results do not depend on `workers` nor on the ranks: each pair is computed from its own
    inputs and seed.

    Args:
        distributed: under an initialised torch.distributed process group of several ranks,
            score this rank's share of the pairs (dealt by their size, `snacs.distributed.shard`)
            and gather every rank's matrices, so that every rank returns all of them. Each rank
            reads and writes the cache for its own pairs only. Without a process group this
            changes nothing.
    """
    modules = dict(model.named_modules())
    for p in topology.pairs:
        if is_depthwise(modules[p.child]):  # never happens: depthwise convs are not children
            raise ConfigError(f"{p.child} is depthwise and cannot be a child")
    rank, size = ddp.world() if distributed else (0, 1)
    if size == 1:
        return _score_local(model, topology.pairs, acts, settings, workers=workers,
                            cache_dir=cache_dir, progress=progress)
    # the cost of a pair grows with parents x children, as the worker pool's order assumes
    mine = ddp.shard(topology.pairs, rank, size, cost=[p.n_parent * p.n_child
                                                       for p in topology.pairs])
    parts = ddp.call_and_gather(lambda: _score_local(model, mine, acts, settings,
                                                     workers=workers, cache_dir=cache_dir,
                                                     progress=progress))
    gathered = {k: v for part in parts for k, v in part.items()}
    return {p.name: gathered[p.name] for p in topology.pairs}


def _score_local(model: nn.Module, pairs: list[LayerPair], acts: Activations,
                 settings: ScoreSettings, *, workers: int, cache_dir: str | Path | None,
                 progress: bool) -> dict[str, np.ndarray]:
    """ρ of `pairs`, in this process (and its worker pool)."""
    cache = Path(cache_dir) if cache_dir is not None else None
    if cache is not None:
        cache.mkdir(parents=True, exist_ok=True)
    jobs, keys, out = [], {}, {}
    threads = 1 if workers > 1 else 0
    for p in pairs:
        w = child_weight(model, p)
        gp = n_groups(p.n_parent, settings.groups)
        gc = _child_groups(p, settings.groups)
        scale = _phi_scale(model, p, w)
        extra = {**settings.key(), "gp": gp, "gc": gc, "pair": p.name}
        if scale != 1.0:
            extra["phi_scale"] = scale
        key = _digest(w, acts.parents[p.name], acts.children[p.name], extra=extra)
        keys[p.name] = key
        if cache is not None and (cache / f"{key}.npy").is_file():
            # writes are atomic, but a file truncated or altered by anything else must not be
            # trusted: it is recomputed (and overwritten) unless it is a finite gc x gp matrix
            try:
                rho = np.load(cache / f"{key}.npy", allow_pickle=False)
                if rho.shape == (gc, gp) and np.isfinite(rho).all():
                    out[p.name] = rho
                    continue
                log.warning("ignoring cache entry %s: shape %s or values wrong; recomputing",
                            cache / f"{key}.npy", rho.shape)
            except (OSError, ValueError, EOFError):
                log.warning("ignoring unreadable cache entry %s; recomputing", cache / f"{key}.npy")
        jobs.append((p.name, acts.parents[p.name].numpy(), acts.children[p.name].numpy(),
                     w.numpy(), gp, gc, settings, threads, scale))
    if out:
        log.info("scores: %d of %d pairs from cache", len(out), len(pairs))
    # big pairs first so the pool stays busy
    jobs.sort(key=lambda j: -(j[1].shape[1] * j[2].shape[1]))
    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=len(pairs), initial=len(out), desc="scores", leave=False,
                   dynamic_ncols=True)

    def done(name: str, rho: np.ndarray) -> None:
        out[name] = rho
        if cache is not None:
            buf = io.BytesIO()
            np.save(buf, rho)
            atomic_write_bytes(cache / f"{keys[name]}.npy", buf.getvalue())
        if bar is not None:
            bar.update(1)

    try:
        if workers > 1 and len(jobs) > 1:
            import multiprocessing as mp

            with ProcessPoolExecutor(max_workers=workers,
                                     mp_context=mp.get_context("spawn")) as pool:
                futures = [pool.submit(_score_one, j) for j in jobs]
                for f in as_completed(futures):
                    done(*f.result())
        else:
            for j in jobs:
                done(*_score_one(j))
    finally:
        if bar is not None:
            bar.close()
    return {p.name: out[p.name] for p in pairs}


def cache_size(cache_dir: str | Path) -> int:
    """Number of pair matrices in a cache directory."""
    p = Path(cache_dir)
    return len(list(p.glob("*.npy"))) if p.is_dir() else 0


