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


def _share(model_modules: dict[str, nn.Module], consumer: str, channels: int) -> np.ndarray:
    w = model_modules[consumer].weight.detach().abs().float()
    w = w.reshape(w.shape[0], channels, -1).sum(-1).numpy()  # readers x channels
    return w / np.maximum(w.sum(1, keepdims=True), 1e-30)


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
        r = np.concatenate([_share(modules, c, cg.channels) for c in cg.consumers], axis=0)
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
