"""Operating constraints: per-pair upper pruning limits from a probe classifier (SPEC §4).

For each pair independently, a classifier is fitted on the unpruned child representation
ReLU(A_c); the pair alone is then pruned at every rate of a grid and the classifier's accuracy
recorded. The limit UL is the largest rate whose accuracy stays above
τ = max(acc) − fraction·(max(acc) − min(acc)).

The child representation under pruning is recomputed from the cached parent means, not by
re-running the network: A_c ≈ A_p · (Σ_kernel W ∘ M)ᵀ + b. This is exact for linear layers and
1x1 convolutions and, for k x k convolutions, differs from the true spatial mean only by the
zero-padding border terms; the unpruned probe features use the same formula, so rate 0 is the
fitted baseline. A child that reads a concatenation has one pair per producer; the other
producers' contribution to its output is then held at its measured value (A_c minus this slice's
share), so the probe sees the whole child output with only this slice pruned.
"""

from __future__ import annotations

import logging
import time
from contextlib import contextmanager
from dataclasses import dataclass, field, fields

import numpy as np
import torch
from torch import nn

import snacs.distributed as ddp
from snacs.activations import Activations
from snacs.errors import ConfigError, DataError
from snacs.pairs import LayerPair, Topology
from snacs.scores import child_weight

log = logging.getLogger(__name__)

__all__ = ["LimitResult", "upper_limits", "limit_at", "rate_grid", "expand_groups", "group_index",
           "connection_keep", "filter_removed_groups", "PROBES"]

PROBES = ("svm", "linear", "ncm")


@dataclass
class LimitResult:
    """The probe curve of one pair and the limit read from it."""

    pair: str
    limit: float
    rates: list[float]
    accuracy: list[float]
    threshold: float
    probe: str
    # what the curve cost: wall and process-CPU seconds of the probe's fit and of its
    # predictions, and how many samples it predicted (distinct masks x N), so a user sees where
    # the limits stage spends its time (benchmarks.scoring_time). Not part of the result:
    # excluded from equality and from to_dict, so runs on other machines or ranks compare equal.
    cost: dict[str, float] = field(default_factory=dict, compare=False, repr=False)

    def to_dict(self) -> dict:
        return {f.name: getattr(self, f.name) for f in fields(self) if f.compare}


def limit_at(rates, accuracy, fraction: float) -> tuple[float, float]:
    """(UL, τ) of one probe curve: the largest rate whose accuracy is ≥ τ = max − f·(max − min)."""
    acc = np.asarray(accuracy, dtype=np.float64)
    tau = acc.max() - fraction * (acc.max() - acc.min())
    ok = np.nonzero(acc >= tau - 1e-12)[0]
    return (float(rates[ok.max()]) if len(ok) else 0.0), float(tau)


def rate_grid(step: int = 5) -> np.ndarray:
    """Pruning rates {1, 1+step, ...} % below 100 %, as fractions."""
    if not 1 <= step <= 50:
        raise ConfigError(f"grid step must be between 1 and 50 percent, got {step}")
    return np.arange(1, 100, step) / 100.0


def group_index(n: int, g: int) -> np.ndarray:
    """Group id of each of n channels split into g contiguous groups (ragged last group)."""
    from snacs.estimators import make_groups

    idx = np.empty(n, dtype=np.int64)
    for j, members in enumerate(make_groups(n, g)):
        idx[np.asarray(members)] = j
    return idx


def expand_groups(keep: np.ndarray, n_child: int, n_parent: int) -> np.ndarray:
    """A G_c x G_p keep matrix as an n_child x n_parent channel mask."""
    ci = group_index(n_child, keep.shape[0])
    pi = group_index(n_parent, keep.shape[1])
    return keep[np.ix_(ci, pi)]


def connection_keep(rho: np.ndarray, rate: float) -> np.ndarray:
    """Keep mask at `rate`: cut-off = sorted unique ρ at index round(rate·|V|); drop ρ ≤ cut-off."""
    if rate <= 0:
        return np.ones_like(rho, dtype=bool)
    v = np.unique(rho)
    cut = v[min(int(round(rate * len(v))), len(v) - 1)]
    return rho > cut


def filter_removed_groups(importance: np.ndarray, rate: float,
                          protected: set[int] | None = None) -> np.ndarray:
    """Indices of the round(rate·G) least important parent groups (never all, never protected)."""
    g = len(importance)
    k = min(int(round(rate * g)), g - 1)
    order = [i for i in np.argsort(importance, kind="stable") if i not in (protected or set())]
    return np.sort(np.asarray(order[:max(k, 0)], dtype=np.int64))


def _make_probe(kind: str, n_classes: int, seed: int):
    if kind == "svm" and n_classes > 100:
        kind = "ncm"
    if kind == "svm":
        from sklearn.svm import SVC

        return SVC(C=1.0, gamma="scale", random_state=seed)
    if kind == "linear":
        from sklearn.linear_model import LogisticRegression

        return LogisticRegression(max_iter=300)
    if kind == "ncm":
        from sklearn.neighbors import NearestCentroid

        return NearestCentroid()
    raise ConfigError(f"unknown probe {kind!r}; choose one of {', '.join(PROBES)}")


def _ovo_blocks(clf) -> tuple[list[np.ndarray], np.ndarray, np.ndarray, np.ndarray]:
    """A fitted SVC's one-vs-one decision functions, per class.

    libsvm's layout: the decision of pair (i, j), i < j, is
    Σ_{s ∈ SV(i)} dual[j − 1, s] K(x, s) + Σ_{s ∈ SV(j)} dual[i, s] K(x, s) + b_ij, so one
    product of the kernel against each class's own rows of the dual coefficients,
    P_c = K[:, SV(c)] · dual[:, SV(c)]ᵀ (N x (k − 1)), holds every term: k − 1 columns per
    support vector instead of the k(k − 1)/2 of a dense coefficient matrix (5x fewer for 10
    classes). Returns the per-class blocks (n_SV(c) x (k − 1)), the SV offsets, and the
    class pairs (first, second).
    """
    # sklearn negates the public dual_coef_/intercept_ of binary problems; the private copies
    # keep libsvm's signs, which the voting follows.
    dual = np.asarray(getattr(clf, "_dual_coef_", clf.dual_coef_), dtype=np.float64)
    start = np.concatenate([[0], np.cumsum(clf.n_support_)])
    k = len(clf.n_support_)
    blocks = [np.ascontiguousarray(dual[:, start[c]:start[c + 1]].T) for c in range(k)]
    first = np.asarray([i for i in range(k) for _ in range(i + 1, k)], dtype=np.int64)
    second = np.asarray([j for i in range(k) for j in range(i + 1, k)], dtype=np.int64)
    return blocks, start, first, second


def svm_predict(clf, x: np.ndarray, chunk: int = 256, dtype: torch.dtype = torch.float32
                ) -> np.ndarray:
    """`clf.predict(x)` for a fitted RBF `SVC`, as dense matrix products.

    libsvm evaluates the kernel one sample and one support vector at a time; here the kernel
    of a block of samples against all support vectors is one matrix product, the one-vs-one
    decisions come from one small product per class (`_ovo_blocks`), and the votes are counted
    as libsvm counts them (ties go to the lower class index). The probe predicts ~20 rates x N
    samples per pair, which made libsvm's loop most of the whole pruning time. Blocks of
    `chunk` samples keep the kernel block in cache for the in-place clamp/scale/exp and the
    products that read it. In float32 (the default) it agrees with `clf.predict` except for
    samples within rounding of a decision boundary; pass `dtype=torch.float64` for closer
    agreement at twice the cost. Agreement (probe accuracies, limits) and speed-up on a whole
    network: `python -m benchmarks.probe_agreement`.
    """
    sv64 = np.asarray(clf.support_vectors_, dtype=np.float64)
    centre = sv64.mean(0)  # distances do not change; smaller magnitudes round less in float32
    sv = torch.as_tensor(sv64 - centre).to(dtype)
    blocks, start, first_np, second_np = _ovo_blocks(clf)
    # transposed layout: the kernel block is SVs x samples, so each class's SVs are a
    # contiguous row slice and its decision terms one product (k − 1) x n_SV(c) · n_SV(c) x n
    blocks_t = [torch.as_tensor(b.T).to(dtype).contiguous() for b in blocks]
    icpt = torch.as_tensor(np.asarray(getattr(clf, "_intercept_", clf.intercept_),
                                      dtype=np.float64)).to(dtype)[:, None]
    gamma = float(clf._gamma)
    # ‖x − s‖² = ‖x‖² + ‖s‖² − 2x·s as ONE matrix product of augmented vectors
    # [−2s, 1, ‖s‖²]·[x, ‖x‖², 1]ᵀ, then clamp, scale and exp in place: the separate
    # broadcast sums and temporaries cost more than the product itself
    sv_aug = torch.cat([-2.0 * sv, torch.ones(len(sv), 1, dtype=dtype),
                        (sv * sv).sum(1, keepdim=True)], 1).contiguous()
    first, second = torch.as_tensor(first_np), torch.as_tensor(second_np)
    k = len(clf.classes_)
    out = np.empty(len(x), dtype=np.int64)
    xt = torch.as_tensor(np.asarray(x, dtype=np.float64) - centre).to(dtype)
    x_aug = torch.cat([xt, (xt * xt).sum(1, keepdim=True), torch.ones(len(xt), 1, dtype=dtype)],
                      1).T.contiguous()
    per_class = torch.empty(k, k - 1, min(chunk, max(x_aug.shape[1], 1)), dtype=dtype)
    for s in range(0, x_aug.shape[1], chunk):
        xb = x_aug[:, s:s + chunk]
        n = xb.shape[1]
        kern = (sv_aug @ xb).clamp_min_(0.0).mul_(-gamma).exp_()  # n_SV x n
        pc = per_class[:, :, :n]
        for c in range(k):
            torch.mm(blocks_t[c], kern[start[c]:start[c + 1]], out=pc[c])
        # pair (i, j): class i's SVs use row j − 1 of the duals, class j's SVs row i
        dec = pc[first, second - 1] + pc[second, first] + icpt  # pairs x n
        win = torch.where(dec > 0, first[:, None], second[:, None])
        votes = torch.zeros(k, n, dtype=torch.int64)
        votes.scatter_add_(0, win, torch.ones_like(win))
        out[s:s + n] = votes.argmax(0).numpy()
    return np.asarray(clf.classes_)[out]


def _predict(clf, x: np.ndarray) -> np.ndarray:
    from sklearn.svm import SVC

    if isinstance(clf, SVC) and clf.kernel == "rbf" and clf.decision_function_shape == "ovr" \
            and not clf.break_ties and len(clf.classes_) > 1:
        return svm_predict(clf, x)
    return clf.predict(x)


def _pair_limit(pair: LayerPair, rho: np.ndarray, a_p: torch.Tensor, w: torch.Tensor,
                bias: torch.Tensor | None, labels: np.ndarray, *, granularity: str,
                rates: np.ndarray, fraction: float, probe: str, seed: int,
                cpu_clock=time.process_time) -> LimitResult:
    w_sum = w.reshape(w.shape[0], w.shape[1], -1).sum(-1)  # n_c x n_p
    masks = []
    for r in rates:
        if granularity == "connection":
            keep = connection_keep(rho, r)
            masks.append(expand_groups(keep, pair.n_child, pair.n_parent))
        else:
            removed = filter_removed_groups(rho.sum(0), r)
            keep_p = np.ones(rho.shape[1], dtype=bool)
            keep_p[removed] = False
            pi = group_index(pair.n_parent, rho.shape[1])
            masks.append(np.broadcast_to(keep_p[pi][None, :], (pair.n_child, pair.n_parent)))
    m = torch.as_tensor(np.stack(masks), dtype=torch.float32)  # R x n_c x n_p
    b = bias if bias is not None else torch.zeros(pair.n_child)
    base = torch.relu(a_p @ w_sum.T + b).numpy()
    # Rates that give the same mask (few groups, fine grid) need one prediction, not several.
    _, first, which = np.unique(m.reshape(len(rates), -1).numpy(), axis=0, return_index=True,
                                return_inverse=True)
    reps, which = torch.as_tensor(first), which.ravel()
    feats = torch.relu(torch.einsum("nq,rcq->rnc", a_p, w_sum * m[reps]) + b)
    n_classes = len(np.unique(labels))
    clf = _make_probe(probe, n_classes, seed)
    t, c = time.perf_counter(), cpu_clock()
    clf.fit(base, labels)
    t1, c1 = time.perf_counter(), cpu_clock()
    pred = _predict(clf, feats.reshape(-1, pair.n_child).numpy()).reshape(len(reps), -1)[which]
    t2, c2 = time.perf_counter(), cpu_clock()
    acc = (pred == labels[None, :]).mean(1) * 100.0
    limit, tau = limit_at(rates, acc, fraction)
    return LimitResult(pair=pair.name, limit=limit, rates=[float(r) for r in rates],
                       accuracy=[float(a) for a in acc], threshold=tau,
                       probe=type(clf).__name__,
                       cost={"fit_seconds": t1 - t, "fit_cpu_seconds": c1 - c,
                             "predict_seconds": t2 - t1, "predict_cpu_seconds": c2 - c1,
                             "predicted_samples": len(reps) * len(labels)})


def upper_limits(
    model: nn.Module,
    topology: Topology,
    acts: Activations,
    scores: dict[str, np.ndarray],
    *,
    granularity: str = "filter",
    grid_step: int = 5,
    fraction: float = 0.7,
    probe: str = "svm",
    seed: int = 0,
    progress: bool = False,
    distributed: bool = False,
) -> dict[str, LimitResult]:
    """UL for every pair. `granularity` decides what the probe prunes (connections or groups).

    Args:
        distributed: under an initialised torch.distributed process group of several ranks,
            probe this rank's share of the pairs (`snacs.distributed.shard`) and gather every
            rank's results, so that every rank returns all of them. Each pair's result depends
            only on its own inputs and `seed`, so it is the same as in one process. Without a
            process group this changes nothing.
    """
    if not 0.0 < fraction < 1.0:
        raise ConfigError(f"limit fraction must be in (0, 1), got {fraction}")
    if probe not in PROBES:
        raise ConfigError(f"unknown probe {probe!r}; choose one of {', '.join(PROBES)}")
    labels = acts.labels.numpy()
    if len(np.unique(labels)) < 2:
        raise DataError("the calibration set has a single class; the probe needs at least two")
    rates = rate_grid(grid_step)
    rank, size = ddp.world() if distributed else (0, 1)
    kw = dict(granularity=granularity, rates=rates, fraction=fraction, probe=probe, seed=seed,
              progress=progress)
    if size == 1:
        return _limits_local(model, topology.pairs, acts, scores, labels, **kw)
    # per pair: the probe's fit and predictions scale with N x children, the masked
    # features with N x children x parents
    mine = ddp.shard(topology.pairs, rank, size,
                     cost=[p.n_child * (p.n_parent + acts.n) for p in topology.pairs])
    parts = ddp.call_and_gather(lambda: _limits_local(model, mine, acts, scores, labels, **kw))
    gathered = {k: v for part in parts for k, v in part.items()}
    return {p.name: gathered[p.name] for p in topology.pairs}


def _limits_local(model: nn.Module, pairs: list[LayerPair], acts: Activations,
                  scores: dict[str, np.ndarray], labels: np.ndarray, *, granularity: str,
                  rates: np.ndarray, fraction: float, probe: str, seed: int, progress: bool
                  ) -> dict[str, LimitResult]:
    """The limits of `pairs`, in this process.

    With several torch threads, the pairs run side by side, one per thread, each on one torch
    thread: the probe's fit (libsvm) is single-threaded and releases the GIL, and the
    predictions are many small products that lose more to splitting each of them across
    threads than they gain. Each pair's result depends only on its own inputs and `seed`.
    """
    modules = dict(model.named_modules())

    def one(p: LayerPair, cpu_clock=time.process_time) -> LimitResult:
        mod = modules[p.child]
        bias = mod.bias.detach().float() if getattr(mod, "bias", None) is not None else None
        w = child_weight(model, p)
        if p.in_index is not None:
            # a child that also reads other producers (a concatenation): their share of its
            # output is held at its measured value, A_c − A_p·Wᵀ of this slice, per sample
            w_sum = w.reshape(w.shape[0], w.shape[1], -1).sum(-1)
            bias = acts.children[p.name] - acts.parents[p.name] @ w_sum.T
        return _pair_limit(p, scores[p.name], acts.parents[p.name], w, bias, labels,
                           granularity=granularity, rates=rates, fraction=fraction,
                           probe=probe, seed=seed, cpu_clock=cpu_clock)

    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=len(pairs), desc="limits", leave=False, dynamic_ncols=True)
    out: dict[str, LimitResult] = {}
    workers = min(torch.get_num_threads(), len(pairs))
    try:
        if workers <= 1:
            for p in pairs:
                out[p.name] = one(p)
                if bar is not None:
                    bar.update(1)
        else:
            from concurrent.futures import ThreadPoolExecutor, as_completed

            # the largest pairs first (fit and predictions grow with N x children), so that
            # the threads finish together
            order = sorted(pairs, key=lambda p: -p.n_child)
            with _one_torch_thread():
                pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="snacs-limits")
                try:
                    # a pair's CPU seconds: its own thread's (the process's would count
                    # the other pairs running beside it)
                    futures = {pool.submit(one, p, time.thread_time): p.name for p in order}
                    for f in as_completed(futures):
                        out[futures[f]] = f.result()
                        if bar is not None:
                            bar.update(1)
                finally:  # an error or an interrupt: drop the pairs not started yet
                    pool.shutdown(wait=True, cancel_futures=True)
    finally:
        if bar is not None:
            bar.close()
    return {p.name: out[p.name] for p in pairs}


@contextmanager
def _one_torch_thread():
    """Torch runs each op on one thread inside (threads started inside take that setting);
    the caller's setting is restored on the way out."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)
