"""Layer pairs and coupled channel groups, found by data flow (SPEC §1, §6).

torch-pruning's DependencyGraph traces the network once. Each of its channel groups is a set of
channels that must be pruned together: the producers that write them (conv/linear out-channels,
several of them when residual additions couple the channels), the pass-through layers (BN,
depthwise convs, activations) and the consumers that read them (conv/linear in-channels).
A *layer pair* is one consumer (the child) together with the channel group it reads (its
parents). Depthwise convolutions connect channel c only to channel c, so they are treated as part
of the channel group they pass through, not as a child of their own.
"""

from __future__ import annotations

import logging
from dataclasses import asdict, dataclass, field

import torch
import torch_pruning as tp
from torch import nn

from snacs.errors import ConfigError

log = logging.getLogger(__name__)

__all__ = ["ChannelGroup", "LayerPair", "Topology", "find_topology", "is_depthwise"]


def is_depthwise(m: nn.Module) -> bool:
    return isinstance(m, nn.Conv2d) and m.groups > 1 and m.groups == m.in_channels == m.out_channels


@dataclass
class ChannelGroup:
    """Channels that are pruned together. `channels` is their count in the producers' space."""

    id: int
    channels: int
    producers: list[str]
    consumers: list[str]
    depthwise: list[str] = field(default_factory=list)
    norms: list[str] = field(default_factory=list)
    others: list[str] = field(default_factory=list)  # custom layers that also read the channels
    prunable: bool = True
    reason: str = ""

    @property
    def residual(self) -> bool:
        return len(self.producers) > 1


@dataclass
class LayerPair:
    """A child layer and the channel group it reads.

    `spatial` is how many input features of a Linear child belong to one channel (a flatten of a
    C x H x W map gives H*W); it is 1 for convolutions.
    """

    name: str
    child: str
    group: int
    n_parent: int
    n_child: int
    kind: str  # "conv" or "linear"
    spatial: int = 1
    next_layers: list[str] = field(default_factory=list)
    is_classifier: bool = False

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass
class Topology:
    """Everything the later stages need to know about the network's structure."""

    pairs: list[LayerPair]
    groups: list[ChannelGroup]
    input_shape: tuple[int, ...]
    classifier: str
    out_positions: dict[str, int]  # output spatial positions per weight layer (for MACs)
    bn_after: dict[str, str] = field(default_factory=dict)  # weight layer -> the BN reading it

    def pair(self, name: str) -> LayerPair:
        for p in self.pairs:
            if p.name == name:
                return p
        raise KeyError(name)

    def group_of_producer(self, module_name: str) -> ChannelGroup | None:
        for g in self.groups:
            if module_name in g.producers:
                return g
        return None

    def to_dict(self) -> dict:
        return {
            "pairs": [p.to_dict() for p in self.pairs],
            "groups": [asdict(g) for g in self.groups],
            "input_shape": list(self.input_shape),
            "classifier": self.classifier,
        }


def _weight_layers(model: nn.Module) -> dict[nn.Module, str]:
    return {m: n for n, m in model.named_modules() if isinstance(m, (nn.Conv2d, nn.Linear))}


def _find_classifier(model: nn.Module, example: torch.Tensor) -> str:
    """The weight layer whose output is the network output (the last one executed)."""
    order: list[str] = []
    hooks = [m.register_forward_hook(lambda mod, i, o, n=n: order.append(n))
             for m, n in _weight_layers(model).items()]
    try:
        with torch.no_grad():
            model.eval()
            model(example)
    finally:
        for h in hooks:
            h.remove()
    if not order:
        raise ConfigError("the model has no Conv2d or Linear layer; nothing to prune")
    return order[-1]


def _bn_after(model: nn.Module, example: torch.Tensor) -> dict[str, str]:
    """Which BatchNorm reads each weight layer's output directly (by tensor identity)."""
    produced: dict[int, str] = {}
    found: dict[str, str] = {}
    names = _weight_layers(model)
    hooks = [m.register_forward_hook(lambda mod, i, o, n=n: produced.__setitem__(id(o), n))
             for m, n in names.items()]
    def pre(mod, inp, n):
        src = produced.get(id(inp[0]))
        if src is not None:
            found.setdefault(src, n)

    for n, m in model.named_modules():
        if isinstance(m, nn.modules.batchnorm._BatchNorm):
            hooks.append(m.register_forward_pre_hook(lambda mod, i, n=n: pre(mod, i, n)))
    try:
        with torch.no_grad():
            model(example)
    finally:
        for h in hooks:
            h.remove()
    return found


def _out_positions(model: nn.Module, example: torch.Tensor) -> dict[str, int]:
    pos: dict[str, int] = {}

    def hook(mod, inp, out, n):
        pos[n] = int(out[0].numel() // out.shape[1]) if out.dim() > 2 else 1

    hooks = [m.register_forward_hook(lambda mod, i, o, n=n: hook(mod, i, o, n))
             for m, n in _weight_layers(model).items()]
    try:
        with torch.no_grad():
            model(example)
    finally:
        for h in hooks:
            h.remove()
    return pos


def find_topology(model: nn.Module, input_shape: tuple[int, ...]) -> Topology:
    """Trace `model` on one input of `input_shape` (C, H, W) and return its pairs and groups."""
    was_training = model.training
    model.eval()
    example = torch.zeros(1, *input_shape)
    try:
        classifier = _find_classifier(model, example)
        out_positions = _out_positions(model, example)
        names = _weight_layers(model)
        modules = dict(model.named_modules())
        bn_after = _bn_after(model, example)
        from snacs.models import customized_pruners

        dg = tp.DependencyGraph().build_dependency(
            model, example_inputs=example, verbose=False, customized_pruners=customized_pruners())
        raw_groups = dg.get_all_groups(ignored_layers=[modules[classifier]])
        groups: list[ChannelGroup] = []
        seen_roots: set[tuple[str, ...]] = set()
        for g in raw_groups:
            producers, consumers, dws, norms, others = [], [], [], [], []
            n_channels = None
            for dep, idxs in g:
                mod = dep.target.module
                is_out = dg.is_out_channel_pruning_fn(dep.handler)
                if mod in names:
                    n = names[mod]
                    if is_depthwise(mod):
                        if n not in dws:
                            dws.append(n)
                    elif is_out and n not in producers:
                        producers.append(n)
                        if n_channels is None:
                            n_channels = len(idxs)
                    elif not is_out and n not in consumers:
                        consumers.append(n)
                elif isinstance(mod, nn.modules.batchnorm._BatchNorm):
                    bn = next((k for k, v in modules.items() if v is mod), None)
                    if bn is not None and bn not in norms:
                        norms.append(bn)
                elif isinstance(mod, nn.Module) and type(mod).__module__.split(".")[0] != "torch":
                    other = next((k for k, v in modules.items() if v is mod), None)
                    if other is not None and other not in others:
                        others.append(other)
            if not producers or not consumers:
                continue
            key = tuple(sorted(producers))
            if key in seen_roots:
                continue
            seen_roots.add(key)
            for cg in _split_by_width(producers, consumers, dws, norms, modules):
                cg.id = len(groups)
                cg.others = list(others)
                groups.append(cg)

        consumer_group = {c: grp for grp in groups for c in grp.consumers}
        pairs: list[LayerPair] = []
        for mod, name in names.items():
            if is_depthwise(mod) or name not in consumer_group:
                continue
            grp = consumer_group[name]
            n_in = mod.in_channels if isinstance(mod, nn.Conv2d) else mod.in_features
            spatial = n_in // grp.channels if isinstance(mod, nn.Linear) else 1
            if spatial * grp.channels != n_in:
                grp.prunable = False
                grp.reason = f"{name} reads {n_in} features from {grp.channels} channels"
                spatial = 1
            n_out = mod.out_channels if isinstance(mod, nn.Conv2d) else mod.out_features
            pairs.append(LayerPair(
                name=name, child=name, group=grp.id, n_parent=grp.channels, n_child=n_out,
                kind="conv" if isinstance(mod, nn.Conv2d) else "linear", spatial=spatial,
                is_classifier=(name == classifier)))
        # next layers of each child: the consumers of the group it produces (looking through
        # depthwise convs, which pass channels one to one)
        for p in pairs:
            grp = next((g for g in groups if p.child in g.producers), None)
            p.next_layers = list(grp.consumers) if grp is not None else []
        order = {n: i for i, n in enumerate(names.values())}
        pairs.sort(key=lambda p: order[p.child])
    finally:
        model.train(was_training)
    if not pairs:
        raise ConfigError(
            "found no layer pairs: the model needs at least two conv/linear layers in sequence"
        )
    return Topology(pairs=pairs, groups=groups, input_shape=tuple(input_shape),
                    classifier=classifier, out_positions=out_positions, bn_after=bn_after)


def _out_width(m: nn.Module) -> int:
    return m.out_channels if isinstance(m, nn.Conv2d) else m.out_features


def _in_width(m: nn.Module) -> int:
    return m.in_channels if isinstance(m, nn.Conv2d) else m.in_features


def _consumer_width(m: nn.Module, widths: list[int]) -> int | None:
    """The producer width a consumer reads: exact match, else the largest that divides it."""
    n = _in_width(m)
    if n in widths:
        return n
    div = [w for w in widths if n % w == 0]
    return max(div) if div else None


def _split_by_width(producers, consumers, dws, norms, modules) -> list[ChannelGroup]:
    """One group per channel count.

    torch-pruning chains the residual streams of successive stages together when a zero-padded
    (option-A) shortcut links them; their channel counts differ (16, 32, 64). Such channels
    would have to be cut together across stages with a re-indexed padding, so they are kept
    whole ("pruned together or not at all", SPEC §6) and split here into one group per stage.
    """
    widths = sorted({_out_width(modules[n]) for n in producers})
    mixed = len(widths) > 1
    out = []
    for w in widths:
        prod = [n for n in producers if _out_width(modules[n]) == w]
        cons = [n for n in consumers if _consumer_width(modules[n], widths) == w]
        if not cons:
            continue
        cg = ChannelGroup(id=-1, channels=w, producers=prod, consumers=cons,
                          depthwise=[d for d in dws if modules[d].out_channels == w],
                          norms=[b for b in norms if modules[b].num_features == w])
        if mixed:
            cg.prunable = False
            cg.reason = "residual channels coupled across stages by a zero-padded shortcut"
        out.append(cg)
    return out
