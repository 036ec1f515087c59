"""`snacs.save` / `snacs.load`: round trips of pruned models, without touching the caller's model."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from torch import nn

import snacs
from snacs.data import synthetic
from snacs.models import create_model

FAST = dict(estimator="gaussian", samples_per_class=6, groups=8, grid_step=10,
            measure_latency=False)
# connection pruning hard enough that whole filters lose every input: silencing them adds
# bias masks to the conv/BN biases (the case the old save got wrong)
PRUNE_OPTS = {"filter": {"limits": 0.5},
              "connection": {"limits": "none", "mode": "global", "q": 0.95}}
BIG = {"resnet50", "resnet110"}  # several seconds each: behind `slow`


def _shape(name: str) -> tuple[int, int, int]:
    return (3, 64, 64) if name == "resnet50" else (3, 32, 32)


def _masks(model: nn.Module) -> set[str]:
    return {f"{n}.{b}" for n, m in model.named_modules() for b, _ in m.named_buffers(recurse=False)
            if b.endswith("_mask")}


def _round_trip(name: str, granularity: str, tmp_path) -> None:
    shape = _shape(name)
    data = synthetic("train", n_per_class=12, shape=shape, seed=1)
    width = 0.5 if name == "simplecnn" else 0.25
    torch.manual_seed(0)
    model = create_model(name, width=width).eval()
    with torch.no_grad():  # non-trivial BN so a wrongly kept or dropped bias shows in the outputs
        for m in model.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.running_mean.uniform_(-0.5, 0.5)
                m.bias.uniform_(-0.2, 0.2)
    pruned, _ = snacs.prune(model, data, granularity=granularity,
                            **(FAST | PRUNE_OPTS[granularity]))
    pruned.eval()
    masks = _masks(pruned)
    if granularity == "connection":
        assert any(k.endswith("bias_mask") for k in masks), "no filter was silenced"
    x = torch.randn(3, *shape, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        ref = pruned(x)
    snacs.save(pruned, tmp_path / "m.pt")
    # the caller's model is untouched: same masks, same outputs
    assert _masks(pruned) == masks
    with torch.no_grad():
        assert torch.equal(pruned(x), ref)
    again = snacs.load(tmp_path / "m.pt")
    assert not _masks(again)
    with torch.no_grad():
        diff = (again(x) - ref).abs().max().item()
    print(f"{name} {granularity}: max abs diff after save/load {diff:.2e}")
    assert diff <= 1e-5


@pytest.mark.parametrize("granularity", ["filter", "connection"])
@pytest.mark.parametrize("name", [n for n in snacs.list_models() if n not in BIG])
def test_save_load_reproduces_outputs(name, granularity, tmp_path):
    _round_trip(name, granularity, tmp_path)


@pytest.mark.slow
@pytest.mark.parametrize("granularity", ["filter", "connection"])
@pytest.mark.parametrize("name", sorted(BIG))
def test_save_load_reproduces_outputs_big_models(name, granularity, tmp_path):
    _round_trip(name, granularity, tmp_path)


# --------------------------------------------------------------------------- the file format

DATA = Path(__file__).parent / "data"


class ImportableNet(nn.Module):
    """A user class at module level: importable as `<this module>:ImportableNet`."""

    def __init__(self, channels: int = 8):
        super().__init__()
        self.conv1 = nn.Conv2d(3, channels, 3, padding=1)
        self.bn1 = nn.BatchNorm2d(channels)
        self.conv2 = nn.Conv2d(channels, channels, 3, padding=1)
        self.bn2 = nn.BatchNorm2d(channels)
        self.fc = nn.Linear(channels, 10)

    def forward(self, x):
        x = torch.relu(self.bn1(self.conv1(x)))
        x = torch.relu(self.bn2(self.conv2(x)))
        return self.fc(x.mean((2, 3)))


def _filter_pruned(model, synth):
    pruned, _ = snacs.prune(model, synth, **(FAST | PRUNE_OPTS["filter"]))
    return pruned.eval()


def _x(n=3, seed=2):
    return torch.randn(n, 3, 32, 32, generator=torch.Generator().manual_seed(seed))


@pytest.mark.parametrize("name", ["legacy_v1_registry.pt", "legacy_v1_pickle.pt"])
def test_version_1_files_still_load(name):
    model = snacs.load(DATA / name)
    extra = torch.load(DATA / name, weights_only=False)["extra"]
    with torch.no_grad():
        torch.testing.assert_close(model(extra["check_input"]), extra["check_output"],
                                   atol=1e-6, rtol=0)
    if "registry" in name:  # a slimmed simplecnn: the saved widths, not the architecture's
        assert model.features[0].out_channels < 8


def test_file_holds_data_not_classes_and_the_kept_filters(tmp_path, synth):
    torch.manual_seed(0)
    model = create_model("simplecnn").eval()
    pruned = _filter_pruned(model, synth)
    snacs.save(pruned, tmp_path / "m.pt")
    payload = torch.load(tmp_path / "m.pt", weights_only=True)  # no pickled objects
    assert payload["version"] == 2
    assert payload["architecture"] == {"kind": "registry", "spec": dict(model.snacs_spec)}
    assert payload["input_shape"] == [3, 32, 32]
    assert payload["settings"]["limits"] == 0.5
    # the recorded indices name the original filters the pruned model still has
    plan, topo = pruned.snacs_pruner.plan_, pruned.snacs_pruner.topology_
    assert plan.remove, "nothing was removed"
    for gid, removed in plan.remove.items():
        for producer in topo.groups[gid].producers:
            kept = payload["kept"][producer]
            assert kept == sorted(set(range(topo.groups[gid].channels)) - set(removed))
    k0, k4 = payload["kept"]["features.0"], payload["kept"]["features.4"]
    assert torch.equal(pruned.features[0].weight, model.features[0].weight[k0])
    assert torch.equal(pruned.features[4].weight, model.features[4].weight[k4][:, k0])


def test_kept_channels_compose_over_two_prunings(tmp_path, synth):
    torch.manual_seed(0)
    model = create_model("simplecnn").eval()
    snacs.save(_filter_pruned(model, synth), tmp_path / "a.pt")
    once = snacs.load(tmp_path / "a.pt")
    twice = _filter_pruned(once, synth)
    snacs.save(twice, tmp_path / "b.pt")
    kept = torch.load(tmp_path / "b.pt", weights_only=True)["kept"]
    k0, k4 = kept["features.0"], kept["features.4"]
    assert len(k0) == twice.features[0].out_channels < once.features[0].out_channels
    # indices into the ORIGINAL model, not into the once-pruned one
    assert torch.equal(twice.features[0].weight, model.features[0].weight[k0])
    assert torch.equal(twice.features[4].weight, model.features[4].weight[k4][:, k0])
    with torch.no_grad():
        torch.testing.assert_close(snacs.load(tmp_path / "b.pt")(_x()), twice(_x()),
                                   atol=1e-5, rtol=0)


def test_importable_class_is_rebuilt_without_pickling(tmp_path, synth):
    torch.manual_seed(0)
    pruned = _filter_pruned(ImportableNet().eval(), synth)
    snacs.save(pruned, tmp_path / "m.pt")
    arch = torch.load(tmp_path / "m.pt", weights_only=True)["architecture"]
    assert arch == {"kind": "class", "target": f"{__name__}:ImportableNet", "args": {}}
    again = snacs.load(tmp_path / "m.pt")
    assert type(again) is ImportableNet and again.conv1.out_channels == pruned.conv1.out_channels
    with torch.no_grad():
        torch.testing.assert_close(again(_x()), pruned(_x()), atol=1e-5, rtol=0)


def test_unrecordable_class_saves_and_loads_with_model(tmp_path, synth, caplog):
    class LocalNet(ImportableNet):  # defined in a function: no other process can import it
        pass

    torch.manual_seed(0)
    pruned = _filter_pruned(LocalNet().eval(), synth)
    with caplog.at_level("WARNING", logger="snacs.io"):
        snacs.save(pruned, tmp_path / "m.pt")
    assert "model=LocalNet(...)" in caplog.text
    with pytest.raises(snacs.CheckpointError, match=r"could not be recorded.*model=LocalNet\(\.\.\.\)"):
        snacs.load(tmp_path / "m.pt")
    fresh = LocalNet()
    again = snacs.load(tmp_path / "m.pt", model=fresh)
    assert again is fresh and fresh.conv1.out_channels == pruned.conv1.out_channels < 8
    with torch.no_grad():
        diff = (again(_x()) - pruned(_x())).abs().max().item()
    assert diff <= 1e-5


def test_model_that_does_not_fit_names_the_first_layer(tmp_path, synth):
    torch.manual_seed(0)
    pruned = _filter_pruned(create_model("simplecnn", width=0.5).eval(), synth)
    snacs.save(pruned, tmp_path / "m.pt")
    from snacs.models import SimpleCNN

    with pytest.raises(snacs.CheckpointError, match=r"layer 'classifier' is Linear\(\d+ -> 5\) "
                                                    r"in the model but Linear\(\d+ -> 10\)"):
        snacs.load(tmp_path / "m.pt", model=SimpleCNN(num_classes=5, width=0.5))
    # narrower than the saved model: channels cannot be added back; the first conv is named
    with pytest.raises(snacs.CheckpointError, match=r"layer 'features.0' is Conv2d\(3 -> 2,"):
        snacs.load(tmp_path / "m.pt", model=SimpleCNN(width=0.125))


def test_newer_format_and_foreign_files_are_refused(tmp_path):
    snacs.save(create_model("simplecnn"), tmp_path / "m.pt")
    payload = torch.load(tmp_path / "m.pt", weights_only=True)
    torch.save(payload | {"version": 99}, tmp_path / "new.pt")
    with pytest.raises(snacs.CheckpointError, match="format version 99.*upgrade snacs"):
        snacs.load(tmp_path / "new.pt")
    torch.save({"weight": torch.zeros(1)}, tmp_path / "plain.pt")
    with pytest.raises(snacs.CheckpointError, match="not a snacs model file"):
        snacs.load(tmp_path / "plain.pt")


def test_atomic_writes_get_the_mode_of_a_plain_open(tmp_path):
    """The temporary file of an atomic write is private (mkstemp); the written file is not: it
    gets 0666 less the umask, as open() would give it, or keeps the mode of the file replaced."""
    import os
    import stat

    from snacs.io import atomic_write_json

    old = os.umask(0o022)
    try:
        atomic_write_json(tmp_path / "new.json", {"a": 1})
        assert stat.S_IMODE((tmp_path / "new.json").stat().st_mode) == 0o644
        kept = tmp_path / "kept.json"
        kept.write_text("{}")
        kept.chmod(0o600)
        atomic_write_json(kept, {"a": 2})
        assert stat.S_IMODE(kept.stat().st_mode) == 0o600
        assert kept.read_text().strip().endswith("}")
    finally:
        os.umask(old)
    assert not list(tmp_path.glob(".*.tmp"))
