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
    """Channels that are pruned together. `channels` is their count in the producers' space.

    `index[layer]` gives, for every channel of the group (in the first producer's order), the
    input channel of a consumer, or the feature of a norm / depthwise conv that carries it there
    (-1 where the layer does not see that channel): a concatenation places a producer's channels
    at an offset of its reader's input. `units`, when set, lists channel sets that can only be
    removed together (a grouped convolution keeps the same channels in each of its groups);
    otherwise every channel can be removed on its own.
    """

    id: int
    channels: int
    producers: list[str]
    consumers: list[str]
    depthwise: list[str] = field(default_factory=list)
    norms: list[str] = field(default_factory=list)
    others: list[str] = field(default_factory=list)  # custom layers that also read the channels
    prunable: bool = True
    reason: str = ""
    index: dict[str, list[int]] = field(default_factory=dict)
    units: list[list[int]] | None = None

    @property
    def residual(self) -> bool:
        return len(self.producers) > 1

    def where(self, layer: str) -> list[int]:
        """The channel of `layer` carrying each group channel (identity when not recorded)."""
        return self.index.get(layer) or list(range(self.channels))


@dataclass
class LayerPair:
    """A child layer and the channel group it reads.

    `spatial` is how many input features of a Linear child belong to one channel (a flatten of a
    C x H x W map gives H*W); it is 1 for convolutions. `in_index` lists the child input channel
    of each parent channel when the child reads more than this group (a concatenation: one pair
    per concatenated producer, named ``child<producer``) or reads it in another order; None means
    the child's whole input, in order.
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
    in_index: list[int] | None = None
    conv_groups: int = 1  # groups of a grouped-conv child (its weight is block diagonal)

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

    def pairs_of(self, child: str) -> list[LayerPair]:
        """Every pair whose child is `child` (several when it reads a concatenation)."""
        return [p for p in self.pairs if p.child == child]

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


def _reorders(node) -> bool:
    """A view/reshape whose result reaches anything but a Linear layer (or the output): a
    channel shuffle or a channel-to-space reshape, whose channel order torch-pruning's index
    mapping does not follow. A flatten in front of a classifier is fine."""
    seen, todo = set(), list(node.outputs)
    while todo:
        n = todo.pop()
        if id(n) in seen:
            continue
        seen.add(id(n))
        if n.type == tp.ops.OPTYPE.ELEMENTWISE:
            todo.extend(n.outputs)
        elif n.type not in (tp.ops.OPTYPE.LINEAR, tp.ops.OPTYPE.OUTPUT):
            return True
    return False


def _record(index: dict, spans: dict, name: str, item, n: int) -> None:
    """Per group channel (root index), the first index of `name` that carries it."""
    arr = index.setdefault(name, [-1] * n)
    cnt = spans.setdefault(name, [0] * n)
    for i, r in zip(item.idxs, item.root_idxs, strict=True):
        if r is None or not 0 <= int(r) < n:
            continue
        r, i = int(r), int(i)
        cnt[r] += 1
        if arr[r] < 0 or i < arr[r]:
            arr[r] = i


def _lcm_units(cg: ChannelGroup, modules: dict[str, nn.Module]) -> str:
    """Channel sets a grouped convolution forces to be removed together (sets cg.units).

    A grouped conv's weight holds one kernel per (output, local input) position shared by all
    its groups, so its inputs can only lose the same local positions in every group, and its
    outputs only the same number per group: channels at the same local position are tied.
    Returns a reason when the layout cannot be pruned at all, else "".
    """
    n = cg.channels
    parent = list(range(n))

    def find(a: int) -> int:
        while parent[a] != a:
            parent[a] = parent[parent[a]]
            a = parent[a]
        return a

    tied = False
    for name in cg.producers + cg.consumers:
        m = modules[name]
        if not isinstance(m, nn.Conv2d) or m.groups == 1:
            continue
        tied = True
        if name in cg.producers:
            per, where = m.out_channels // m.groups, list(range(n))
        else:
            where = cg.where(name)
            if sorted(where) != list(range(m.in_channels)):
                return (f"{name} is a grouped convolution ({m.groups} groups) that reads these "
                        "channels together with others; its groups would lose different channels")
            per = m.in_channels // m.groups
        first: dict[int, int] = {}
        for c, w in enumerate(where):
            k = w % per
            if k in first:
                parent[find(c)] = find(first[k])
            else:
                first[k] = c
    if tied:
        comp: dict[int, list[int]] = {}
        for c in range(n):
            comp.setdefault(find(c), []).append(c)
        cg.units = sorted(comp.values())
        if len(cg.units) < 2:
            return "grouped convolutions tie all these channels together"
    return ""


def _make_group(g, dg, names, modules, mod_name) -> list[ChannelGroup]:
    """One ChannelGroup from a torch-pruning group (or one per width, see _split_by_width)."""
    producers, consumers, dws, norms, others = [], [], [], [], []
    index: dict[str, list[int]] = {}
    spans: dict[str, list[int]] = {}
    root = g[0].dep.target.module
    n = _out_width(root) if root in names else len(g[0].idxs)
    reorder = None
    for item in g.items:
        dep = item.dep
        mod = dep.target.module
        is_out = dg.is_out_channel_pruning_fn(dep.handler)
        if dep.target.type == tp.ops.OPTYPE.RESHAPE and reorder is None and _reorders(dep.target):
            reorder = dep.target
        if mod in names:
            nm = names[mod]
            if is_depthwise(mod):
                if nm not in dws:
                    dws.append(nm)
            elif is_out:
                if nm not in producers:
                    producers.append(nm)
            elif nm not in consumers:
                consumers.append(nm)
            _record(index, spans, nm, item, n)
        elif isinstance(mod, nn.modules.batchnorm._BatchNorm):
            bn = mod_name.get(mod)
            if bn is not None:
                if bn not in norms:
                    norms.append(bn)
                _record(index, spans, bn, item, n)
        elif isinstance(mod, nn.Module) and type(mod).__module__.split(".")[0] != "torch":
            other = mod_name.get(mod)
            if other is not None and other not in others:
                others.append(other)
    if not producers or not consumers:
        return []
    widths = sorted({_out_width(modules[p]) for p in producers})
    if len(widths) > 1:
        reason = ("the channel order is changed by a view/reshape (a channel shuffle) that "
                  "torch-pruning does not follow") if reorder is not None else None
        return _split_by_width(producers, consumers, dws, norms, others, modules, reason)
    cg = ChannelGroup(id=-1, channels=n, producers=producers, consumers=consumers, depthwise=dws,
                      norms=norms, others=list(others))
    # channel-level index (a Linear after a flatten reads `spatial` features per channel)
    for name, arr in index.items():
        m = modules[name]
        span = max(spans[name]) if isinstance(m, nn.Linear) else 1
        if span > 1:
            arr = [a // span if a >= 0 else -1 for a in arr]
        cg.index[name] = arr
    partial = [c for c in consumers if min(cg.index.get(c, [-1])) < 0]
    if reorder is not None:
        cg.prunable = False
        cg.reason = ("the channel order is changed by a view/reshape (a channel shuffle) that "
                     "torch-pruning does not follow")
    elif partial:
        cg.prunable = False
        cg.reason = (f"the channels are split between layers ({', '.join(partial)} read only "
                     "part of them: torch.split/chunk or slicing with fixed sizes)")
    else:
        reason = _lcm_units(cg, modules)
        if reason:
            cg.prunable, cg.reason = False, reason
    # identity maps are implied; keep only the informative ones
    ident = list(range(n))
    cg.index = {k: v for k, v in cg.index.items() if v != ident}
    return [cg]


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
        mod_name = {m: n for n, m in modules.items()}
        bn_after = _bn_after(model, example)
        from snacs.models import customized_pruners

        dg = tp.DependencyGraph().build_dependency(
            model, example_inputs=example, verbose=False, customized_pruners=customized_pruners())
        raw_groups = dg.get_all_groups(ignored_layers=[modules[classifier]])
        groups: list[ChannelGroup] = []
        seen_roots: set[tuple[str, ...]] = set()
        for g in raw_groups:
            made = _make_group(g, dg, names, modules, mod_name)
            if not made:
                continue
            key = tuple(sorted(p for cg in made for p in cg.producers))
            if key in seen_roots:
                continue
            seen_roots.add(key)
            for cg in made:
                cg.id = len(groups)
                groups.append(cg)
        for cg in groups:
            if not cg.prunable:
                log.info("channels of %s are kept whole: %s", ", ".join(cg.producers), cg.reason)

        pairs: list[LayerPair] = []
        for mod, name in names.items():
            if is_depthwise(mod):
                continue
            reads = [grp for grp in groups
                     if name in grp.consumers and min(grp.where(name)) >= 0]
            if not reads:
                continue
            n_in = _in_width(mod)
            n_out = _out_width(mod)
            several = len(reads) > 1
            for grp in reads:
                where = grp.where(name)
                spatial = 1
                if isinstance(mod, nn.Linear):
                    covered = sum(g2.channels for g2 in reads)
                    spatial = n_in // covered if covered and n_in % covered == 0 else 0
                    if spatial == 0:
                        grp.prunable = False
                        grp.reason = f"{name} reads {n_in} features from {covered} channels"
                        spatial = 1
                        continue
                width = n_in // spatial
                in_index = None if (not several and where == list(range(width))) else where
                pairs.append(LayerPair(
                    name=f"{name}<{grp.producers[0]}" if several else name, child=name,
                    group=grp.id, n_parent=grp.channels, n_child=n_out,
                    kind="conv" if isinstance(mod, nn.Conv2d) else "linear", spatial=spatial,
                    is_classifier=(name == classifier), in_index=in_index,
                    conv_groups=mod.groups if isinstance(mod, nn.Conv2d) else 1))
        # next layers of each child: the consumers of the group it produces (looking through
        # depthwise convs, which pass channels one to one)
        for p in pairs:
            grp = next((g for g in groups if p.child in g.producers), None)
            p.next_layers = list(grp.consumers) if grp is not None else []
        order = {n: i for i, n in enumerate(names.values())}
        pairs.sort(key=lambda p: (order[p.child], min(p.in_index) if p.in_index else 0))
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


def _split_by_width(producers, consumers, dws, norms, others, modules, reason=None
                    ) -> list[ChannelGroup]:
    """One group per channel count, none of them prunable.

    torch-pruning chains the residual streams of successive stages together when a zero-padded
    (option-A) shortcut links them; their channel counts differ (16, 32, 64). Such channels
    would have to be cut together across stages with a re-indexed padding, so they are kept
    whole ("pruned together or not at all", SPEC §6) and split here into one group per stage.
    """
    widths = sorted({_out_width(modules[n]) for n in producers})
    out = []
    for w in widths:
        prod = [n for n in producers if _out_width(modules[n]) == w]
        cons = [n for n in consumers if _consumer_width(modules[n], widths) == w]
        if not cons:
            continue
        out.append(ChannelGroup(
            id=-1, channels=w, producers=prod, consumers=cons,
            depthwise=[d for d in dws if modules[d].out_channels == w],
            norms=[b for b in norms if modules[b].num_features == w], others=list(others),
            prunable=False,
            reason=reason or "residual channels coupled across stages by a zero-padded shortcut"))
    return out
