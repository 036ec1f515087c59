"""Sensitivity: filters the next layer depends on are protected from pruning (SPEC §5).

For the channels a layer produces and the weights W' of the layers that read them, the share of
channel c in reader k's input is R[k,c] = Σ|W'[k,c]| / Σ_c' Σ|W'[k,c']|; a group's sensitivity
is s_j = mean_k Σ_(c∈j) R[k,c]. Groups whose share is an outlier are protected.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np
from torch import nn

from snacs.errors import ConfigError
from snacs.limits import group_index
from snacs.pairs import Topology
from snacs.scores import n_groups

__all__ = ["GroupSensitivity", "sensitivity", "RULES"]

RULES = ("auto", "fraction", "none")


@dataclass
class GroupSensitivity:
    """Sensitivity of each group of one channel group, and which groups are protected."""

    group: int
    scores: list[float]
    protected: list[int]

    def to_dict(self) -> dict:
        return asdict(self)


def _share(model_modules: dict[str, nn.Module], consumer: str, cg, spatial: int = 1
           ) -> np.ndarray:
    """R[k, c]: share of group channel c in reader k's whole input (readers x channels).

    A reader of a concatenation sees the channel at its own offset (`cg.where`); a grouped conv
    is read through its block-diagonal weight; a Linear after a flatten has `spatial` features
    per channel.
    """
    from snacs.scores import block_diagonal

    m = model_modules[consumer]
    w = m.weight.detach().abs().float()
    if w.dim() > 2 and getattr(m, "groups", 1) > 1:
        w = block_diagonal(w, m.groups)
    w = w.reshape(w.shape[0], w.shape[1] // spatial if w.dim() == 2 else w.shape[1], -1)
    w = w.sum(-1).numpy()  # readers x input channels
    share = w / np.maximum(w.sum(1, keepdims=True), 1e-30)
    idx = np.asarray(cg.where(consumer))
    out = share[:, np.maximum(idx, 0)]
    out[:, idx < 0] = 0.0  # channels this reader does not see (a split)
    return out


def sensitivity(
    model: nn.Module,
    topology: Topology,
    *,
    groups: int = 64,
    rule: str = "auto",
    k: float = 2.0,
    fraction: float = 0.1,
) -> dict[int, GroupSensitivity]:
    """Protected groups per channel group (keyed by ChannelGroup.id).

    Args:
        rule: "auto" protects s_j > mean(s) + k·std(s); "fraction" protects the top
            ceil(fraction·G) groups; "none" protects nothing.
    """
    if rule not in RULES:
        raise ConfigError(f"unknown sensitivity rule {rule!r}; choose one of {', '.join(RULES)}")
    modules = dict(model.named_modules())
    out: dict[int, GroupSensitivity] = {}
    for cg in topology.groups:
        g = n_groups(cg.channels, groups)
        spatial = {p.child: p.spatial for p in topology.pairs if p.group == cg.id}
        r = np.concatenate([_share(modules, c, cg, spatial.get(c, 1)) for c in cg.consumers],
                           axis=0)
        per_channel = r.mean(0)
        s = np.bincount(group_index(cg.channels, g), weights=per_channel, minlength=g)
        if rule == "auto":
            prot = np.nonzero(s > s.mean() + k * s.std())[0] if g > 1 else np.array([], int)
        elif rule == "fraction":
            m = int(np.ceil(fraction * g))
            prot = np.argsort(-s, kind="stable")[:m]
        else:
            prot = np.array([], dtype=int)
        out[cg.id] = GroupSensitivity(group=cg.id, scores=[float(v) for v in s],
                                      protected=sorted(int(i) for i in prot))
    return out
