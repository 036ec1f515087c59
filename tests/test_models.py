"""Model zoo: registry, published sizes, forward/backward, names, checkpoints, tracing."""

from __future__ import annotations

import argparse
import copy
import re

import pytest
import torch
import torch.nn.functional as F
import torch_pruning as tp
from torch import nn

from snacs import modelfile as snacs_io
from snacs.errors import CheckpointError, ConfigError
from snacs.metrics import conv_linear_weights, count_macs, count_parameters
from snacs.models import (
    PadShortcut,
    create_model,
    customized_pruners,
    list_models,
    load_weights,
    register_model,
)

ALL_MODELS = [
    "mobilenetv2",
    "resnet110",
    "resnet20",
    "resnet32",
    "resnet44",
    "resnet50",
    "resnet56",
    "simplecnn",
    "vgg16",
]


# The ImageNet network's per-model cases (forward/backward, tracing) run with `-m slow` only.
ZOO = [pytest.param(n, marks=pytest.mark.slow) if n == "resnet50" else n for n in ALL_MODELS]


def _input(name: str, in_channels: int = 3, batch: int = 2) -> torch.Tensor:
    size = 64 if name == "resnet50" else 32
    return torch.randn(batch, in_channels, size, size)


# --- registry -------------------------------------------------------------------------------


def test_list_models_is_the_whole_zoo() -> None:
    assert list_models() == ALL_MODELS


def test_unknown_model_lists_available_names() -> None:
    with pytest.raises(ConfigError) as err:
        create_model("resnet57")
    msg = str(err.value)
    assert "resnet57" in msg
    for name in ALL_MODELS:
        assert name in msg


@pytest.mark.parametrize(
    "kwargs",
    [{"width": 0}, {"width": -1.0}, {"num_classes": 0}, {"in_channels": 0}, {"depth": 3}],
)
def test_bad_arguments_raise_config_error(kwargs: dict) -> None:
    with pytest.raises(ConfigError):
        create_model("simplecnn", **kwargs)


def test_spec_is_recorded_and_rebuilds_the_same_architecture() -> None:
    model = create_model("ResNet20", num_classes=7, width=0.5, in_channels=1)
    assert model.snacs_spec == {
        "name": "resnet20",
        "num_classes": 7,
        "width": 0.5,
        "in_channels": 1,
    }
    rebuilt = create_model(**model.snacs_spec)
    shapes = {k: v.shape for k, v in model.state_dict().items()}
    assert shapes == {k: v.shape for k, v in rebuilt.state_dict().items()}


def test_register_model_rejects_a_different_function_with_a_taken_name() -> None:
    def simplecnn(num_classes: int = 10, width: float = 1.0, in_channels: int = 3) -> nn.Module:
        return nn.Linear(1, 1)

    with pytest.raises(ValueError, match="already registered"):
        register_model(simplecnn)
    assert list_models() == ALL_MODELS


# --- published sizes ------------------------------------------------------------------------


def test_vgg16_weights_and_macs() -> None:
    model = create_model("vgg16")
    # by hand: 13 bias-free 3x3 convs (64, 64, M, 128, 128, M, 256 x3, M, 512 x3, M, 512 x3, M)
    # on 32, 32, 16, 16, 8, 8, 8, 4, 4, 4, 2, 2, 2 pixels a side, then Linear 512-512-10
    cfg = [(64, 32), (64, 32), (128, 16), (128, 16), (256, 8), (256, 8), (256, 8),
           (512, 4), (512, 4), (512, 4), (512, 2), (512, 2), (512, 2)]
    weights = macs = 0
    c_in = 3
    for c, side in cfg:
        weights += 9 * c_in * c
        macs += 9 * c_in * c * side * side
        c_in = c
    weights += 512 * 512 + 512 * 10
    macs += 512 * 512 + 512 * 10
    assert conv_linear_weights(model) == weights == 14_977_728
    assert count_macs(model, (3, 32, 32)) == macs
    assert macs == pytest.approx(313.7e6, rel=0.005)  # the usual "313 M" of CIFAR VGG16


def test_vgg16_layer_sizes_reproduce_mint_overall_compression() -> None:
    # SPEC §8: MINT's per-layer VGG16 compression weighted by layer sizes gives 83.46 %.
    model = create_model("vgg16")
    sizes = [m.weight.numel() for m in model.modules() if isinstance(m, (nn.Conv2d, nn.Linear))]
    pct = [0, 0, 0, 0, 67.08, 51.80, 58.39, 61.18, 89.91, 93.72, 92.04, 86.25, 91.01, 93.28, 0]
    assert len(sizes) == len(pct) == 15
    overall = sum(p * s for p, s in zip(pct, sizes, strict=True)) / sum(sizes)
    assert overall == pytest.approx(83.46, abs=0.005)


def cifar_resnet_counts(n: int, classes: int = 10) -> tuple[int, int]:
    """(parameters, MACs at 32x32) of ResNet-(6n+2) with option-A shortcuts, by hand.

    A 3x3 conv c_in -> c_out costs 9 c_in c_out weights (no bias), each BN 2 c parameters;
    stages of 16, 32, 64 channels at 32x32, 16x16 and 8x8; option-A shortcuts are free.
    """
    params = 9 * 3 * 16 + 2 * 16
    macs = 9 * 3 * 16 * 32 * 32
    c_in = 16
    for c, side in ((16, 32), (32, 16), (64, 8)):
        for _ in range(n):
            w = 9 * c_in * c + 9 * c * c
            params += w + 4 * c
            macs += w * side * side
            c_in = c
    params += 64 * classes + classes
    macs += 64 * classes
    return params, macs


def test_resnet56_parameters_and_macs() -> None:
    model = create_model("resnet56")
    n = count_parameters(model)
    # He et al. report 0.85 M; 855,770 counts 1x1 projection shortcuts (option B), which
    # option A does not have.
    assert n == pytest.approx(855_770, rel=0.01)
    assert (n, count_macs(model, (3, 32, 32))) == cifar_resnet_counts(9)
    assert count_macs(model, (3, 32, 32)) == pytest.approx(125.5e6, rel=0.01)


@pytest.mark.parametrize(
    ("name", "blocks", "published"),
    [("resnet20", 3, 0.27e6), ("resnet32", 5, 0.46e6), ("resnet44", 7, 0.66e6), ("resnet110", 18, 1.7e6)],
)
def test_cifar_resnet_parameters(name: str, blocks: int, published: float) -> None:
    model = create_model(name)
    params, macs = cifar_resnet_counts(blocks)
    assert count_parameters(model) == params
    assert count_macs(model, (3, 32, 32)) == macs
    assert params == pytest.approx(published, rel=0.03)  # He et al. 2016, Table 6


@pytest.mark.slow
def test_resnet50_parameters_and_macs() -> None:
    model = create_model("resnet50", num_classes=1000)
    assert count_parameters(model) == 25_557_032
    assert count_macs(model, (3, 224, 224)) == pytest.approx(4.09e9, rel=0.01)


def test_mobilenetv2_structure() -> None:
    model = create_model("mobilenetv2")
    blocks = list(model.layers)
    assert len(blocks) == 17
    depthwise = [b.conv2 for b in blocks]
    assert all(c.groups == c.in_channels == c.out_channels for c in depthwise)
    assert [c.stride[0] for c in depthwise].count(2) == 3
    assert sum(b.use_residual for b in blocks) == 10
    assert model.conv2.out_channels == 1280
    # by hand from the block table (expansion, out, blocks, stride), expand conv kept at
    # expansion 1: 1x1 in->h, 3x3 depthwise h, 1x1 h->out, a BN (2 per channel) after each
    cfg = [(1, 16, 1), (6, 24, 2), (6, 32, 3), (6, 64, 4), (6, 96, 3), (6, 160, 3), (6, 320, 1)]
    params, c_in = 9 * 3 * 32 + 2 * 32, 32
    for e, out, n in cfg:
        for _ in range(n):
            h = e * c_in
            params += c_in * h + 2 * h + 9 * h + 2 * h + h * out + 2 * out
            c_in = out
    params += 320 * 1280 + 2 * 1280 + 1280 * 10 + 10
    assert count_parameters(model) == params
    assert params == pytest.approx(2.24e6, rel=0.01)  # the usual CIFAR MobileNetV2 size


@pytest.mark.parametrize(
    ("name", "first", "last_in"),
    [("vgg16", 16, 128), ("resnet56", 4, 16), ("mobilenetv2", 8, 320), ("resnet50", 16, 512)],
)
def test_width_scales_channels(name: str, first: int, last_in: int) -> None:
    model = create_model(name, width=0.25)
    convs = [m for m in model.modules() if isinstance(m, nn.Conv2d)]
    linears = [m for m in model.modules() if isinstance(m, nn.Linear)]
    assert convs[0].out_channels == first
    assert linears[-1].in_features == last_in


# --- forward and backward -------------------------------------------------------------------


@pytest.mark.parametrize("name", ZOO)
def test_forward_backward(name: str) -> None:
    torch.manual_seed(0)
    model = create_model(name, num_classes=5, width=0.25)
    x = _input(name)
    out = model(x)
    assert out.shape == (2, 5)
    F.cross_entropy(out, torch.tensor([0, 4])).backward()
    grads = [p.grad for p in model.parameters()]
    assert all(g is not None and torch.isfinite(g).all() for g in grads)
    assert any(g.abs().sum() > 0 for g in grads)


@pytest.mark.parametrize("name", ZOO)
def test_single_input_channel(name: str) -> None:
    model = create_model(name, num_classes=3, width=0.25, in_channels=1).eval()
    first = next(m for m in model.modules() if isinstance(m, nn.Conv2d))
    assert first.in_channels == 1
    with torch.no_grad():
        assert model(_input(name, in_channels=1)).shape == (2, 3)


# --- parameter names ------------------------------------------------------------------------


def test_resnet56_state_dict_names() -> None:
    keys = create_model("resnet56").state_dict().keys()
    for key in (
        "conv1.weight",
        "bn1.running_mean",
        "layer1.0.conv1.weight",
        "layer2.4.bn1.bias",
        "layer3.8.conv2.weight",
        "layer3.8.bn2.running_var",
        "linear.weight",
        "linear.bias",
    ):
        assert key in keys
    assert "layer3.9.conv1.weight" not in keys
    assert not [k for k in keys if "shortcut" in k]  # option A is parameter-free


def test_resnet50_state_dict_names_match_torchvision() -> None:
    model = create_model("resnet50", num_classes=1000)
    state = model.state_dict()
    keys = set(state)
    assert len(keys) == 320
    assert len(list(model.parameters())) == 161
    for key in (
        "conv1.weight",
        "bn1.num_batches_tracked",
        "layer1.0.downsample.0.weight",
        "layer4.0.downsample.1.weight",
        "layer4.0.downsample.1.running_mean",
        "layer3.5.conv3.weight",
        "layer4.2.bn3.running_var",
        "fc.weight",
        "fc.bias",
    ):
        assert key in keys
    assert not [k for k in keys if k.startswith("layer4.2.downsample")]
    assert not [k for k in keys if k.startswith("layer1.1.downsample")]
    # v1.5: the stride sits on the 3x3 conv, not on the first 1x1.
    assert model.layer2[0].conv1.stride == (1, 1)
    assert model.layer2[0].conv2.stride == (2, 2)
    assert state["fc.weight"].shape == (1000, 2048)
    names = {n for n, _ in model.named_modules()}
    assert {"relu", "maxpool", "avgpool", "layer4.2.relu"} <= names


# --- option-A shortcut and torch-pruning ----------------------------------------------------


def test_pad_shortcut_equals_zero_padding() -> None:
    x = torch.randn(2, 16, 8, 8)
    expected = F.pad(x[:, :, ::2, ::2], (0, 0, 0, 0, 8, 8))
    assert torch.equal(PadShortcut(16, 32, stride=2)(x), expected)
    assert PadShortcut(16, 32).state_dict() == {}


@pytest.mark.parametrize("name", ZOO)
def test_dependency_graph_builds(name: str) -> None:
    model = create_model(name, width=0.25)
    x = _input(name, batch=1)
    dg = tp.DependencyGraph().build_dependency(
        model, example_inputs=x, customized_pruners=customized_pruners()
    )
    groups = list(dg.get_all_groups(root_module_types=[nn.Conv2d, nn.Linear]))
    assert groups
    # Plain tracing (no customized pruners) must work too.
    tp.DependencyGraph().build_dependency(model, example_inputs=x)


def test_resnet_trunk_slimming_matches_masking() -> None:
    torch.manual_seed(0)
    model = create_model("resnet20", width=0.5).eval()
    for m in model.modules():  # non-trivial BN statistics
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.uniform_(-0.5, 0.5)
            m.running_var.uniform_(0.5, 2.0)
            m.bias.data.uniform_(-0.2, 0.2)
    x = torch.randn(2, 3, 32, 32)
    masked, slimmed = copy.deepcopy(model), copy.deepcopy(model)

    # Zero stage-1 trunk channels 1 and 5 and stage-2 trunk channel 3 (its BN outputs are 0).
    stage1 = [masked.bn1] + [b.bn2 for b in masked.layer1]
    stage2 = [b.bn2 for b in masked.layer2]
    for bns, idx in ((stage1, [1, 5]), (stage2, [3])):
        for bn in bns:
            bn.weight.data[idx] = 0
            bn.bias.data[idx] = 0
    with torch.no_grad():
        expected = masked(x)

    dg = tp.DependencyGraph().build_dependency(
        slimmed, example_inputs=x, customized_pruners=customized_pruners()
    )
    dg.get_pruning_group(slimmed.conv1, tp.prune_conv_out_channels, idxs=[1, 5]).prune()
    group = dg.get_pruning_group(slimmed.layer2[1].conv2, tp.prune_conv_out_channels, idxs=[3])
    group.prune()
    assert slimmed.conv1.out_channels == 6
    assert slimmed.layer2[2].conv2.out_channels == 15
    assert slimmed.layer3[0].shortcut.in_channels == 15
    with torch.no_grad():
        torch.testing.assert_close(slimmed(x), expected, rtol=1e-4, atol=1e-5)


def test_pruned_shortcut_map_travels_with_the_state_dict() -> None:
    model = create_model("resnet20", width=0.5)
    assert not [k for k in model.state_dict() if "shortcut" in k]
    sc = model.layer2[0].shortcut
    pruner = customized_pruners()[PadShortcut]
    pruner.prune_in_channels(sc, [0, 3])
    pruner.prune_out_channels(sc, [1, 5, 8])
    assert (sc.in_channels, sc.out_channels) == (6, 13)
    state = model.state_dict()
    assert state["layer2.0.shortcut.channels"].tolist() == [6, 13]
    fresh = create_model("resnet20", width=0.5)
    fresh.load_state_dict(state, strict=True)
    new = fresh.layer2[0].shortcut
    assert (new.in_channels, new.out_channels) == (6, 13)
    assert torch.equal(new.src, sc.src) and torch.equal(new.dst, sc.dst)
    x = torch.randn(1, 6, 8, 8)
    torch.testing.assert_close(new(x), sc(x))


def test_resnet_one_shot_pruning_runs(tmp_path) -> None:
    model = create_model("resnet20", width=0.5)
    x = torch.randn(1, 3, 32, 32)
    pruner = tp.pruner.MetaPruner(
        model,
        x,
        importance=tp.importance.MagnitudeImportance(p=2),
        pruning_ratio=0.5,
        ignored_layers=[model.linear],
        customized_pruners=customized_pruners(),
    )
    pruner.step()
    assert model.layer3[2].conv2.out_channels == 16
    assert model(x).shape == (1, 10)
    # The slimmed shortcuts survive snacs' own model format (spec + shapes + state_dict).
    model.eval()
    snacs_io.save(model, tmp_path / "model.pt")
    again = snacs_io.load(tmp_path / "model.pt")
    with torch.no_grad():
        torch.testing.assert_close(again(x), model(x))


# --- checkpoints ----------------------------------------------------------------------------


def _same_weights(a: nn.Module, b: nn.Module) -> bool:
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


@pytest.mark.parametrize("wrapper", [None, "state_dict", "model", "model_state"])
def test_checkpoint_round_trip_with_wrapper_and_module_prefix(tmp_path, wrapper) -> None:
    src = create_model("resnet20", width=0.25)
    state = {f"module.{k}": v for k, v in src.state_dict().items()}
    obj = state if wrapper is None else {wrapper: state, "epoch": 3, "best_acc": 91.2}
    path = tmp_path / "ckpt.pth"
    torch.save(obj, path)
    dst = create_model("resnet20", width=0.25)
    assert not _same_weights(src, dst)
    assert load_weights(dst, path) is dst
    assert _same_weights(src, dst)
    # The same from an in-memory dict.
    dst2 = load_weights(create_model("resnet20", width=0.25), obj)
    assert _same_weights(src, dst2)


def test_checkpoint_without_num_batches_tracked_loads() -> None:
    src = create_model("simplecnn")
    state = {k: v for k, v in src.state_dict().items() if "num_batches_tracked" not in k}
    dst = load_weights(create_model("simplecnn"), state)
    assert torch.equal(dst.features[0].weight, src.features[0].weight)


def test_mismatch_error_names_path_keys_and_fix(tmp_path) -> None:
    path = tmp_path / "r20.pt"
    torch.save({"state_dict": create_model("resnet20", width=0.25).state_dict()}, path)
    with pytest.raises(CheckpointError) as err:
        load_weights(create_model("resnet32", width=0.25), path)
    msg = str(err.value)
    assert str(path) in msg
    assert "missing key(s)" in msg
    assert "layer1.3.conv1.weight" in msg
    assert re.search(r"and \d+ more", msg)  # the list is capped
    assert "--model resnet32 --width 0.25" in msg
    assert "strict=False" in msg


def test_shape_mismatch_names_both_shapes() -> None:
    state = create_model("resnet20", num_classes=100, width=0.25).state_dict()
    state["extra.weight"] = torch.zeros(1)
    model = create_model("resnet20", width=0.25)
    with pytest.raises(CheckpointError) as err:
        load_weights(model, state)
    msg = str(err.value)
    assert "linear.weight (checkpoint (100, 16) vs model (10, 16))" in msg
    assert "unexpected key(s): extra.weight" in msg
    assert "10 classes" in msg and "--model resnet20" in msg


def test_non_strict_skips_a_new_classifier_head() -> None:
    src = create_model("resnet20", num_classes=100, width=0.25)
    dst = load_weights(create_model("resnet20", width=0.25), src.state_dict(), strict=False)
    assert torch.equal(dst.conv1.weight, src.conv1.weight)
    assert dst.linear.weight.shape == (10, 16)


def test_non_strict_loads_the_matching_tensors() -> None:
    src = create_model("resnet20", width=0.25)
    state = {k: v for k, v in src.state_dict().items() if not k.startswith("linear")}
    state["extra.weight"] = torch.zeros(1)
    dst = load_weights(create_model("resnet20", width=0.25), state, strict=False)
    assert torch.equal(dst.layer3[2].conv2.weight, src.layer3[2].conv2.weight)
    assert not torch.equal(dst.linear.weight, src.linear.weight)


def test_missing_and_unreadable_files(tmp_path) -> None:
    model = create_model("simplecnn")
    missing = tmp_path / "nope.pth"
    with pytest.raises(CheckpointError, match="not found") as err:
        load_weights(model, missing)
    assert str(missing) in str(err.value)
    garbage = tmp_path / "garbage.pth"
    garbage.write_bytes(b"this is not a checkpoint")
    with pytest.raises(CheckpointError, match="cannot read checkpoint") as err:
        load_weights(model, garbage)
    assert str(garbage) in str(err.value)
    with pytest.raises(CheckpointError, match="no state_dict"):
        load_weights(model, {})
    with pytest.raises(CheckpointError, match="not tensors"):
        load_weights(model, {"epoch": 3, "conv.weight": torch.zeros(1)})


def test_pickled_extras_need_trust(tmp_path) -> None:
    src = create_model("simplecnn")
    path = tmp_path / "old.pth"
    torch.save({"state_dict": src.state_dict(), "args": argparse.Namespace(lr=0.1)}, path)
    with pytest.raises(CheckpointError, match="weights_only"):
        load_weights(create_model("simplecnn"), path, trusted=False)
    assert _same_weights(src, load_weights(create_model("simplecnn"), path))


def test_channels_last_training_resumes_and_hands_back_the_usual_layout(tmp_path):
    """`TrainConfig(channels_last=True)` (`snacs train --channels-last`): trains, resumes from
    last.pt, and leaves a model in the standard layout whose outputs match a fresh NCHW copy."""
    import snacs
    from snacs.data import synthetic
    from snacs.train import TrainConfig, train

    data = synthetic("train", n_per_class=8, shape=(3, 32, 32), seed=0)
    cfg = dict(lr=0.01, batch_size=16, val_fraction=0.25, channels_last=True, augment=False)
    torch.manual_seed(0)
    model = snacs.create_model("mobilenetv2", width=0.25)
    train(model, data, TrainConfig(epochs=1, **cfg), out_dir=tmp_path)
    res = train(model, data, TrainConfig(epochs=2, **cfg), out_dir=tmp_path, resume=True)
    assert res.epochs_run == 2 and res.resumed_from_epoch == 1
    for name, p in model.named_parameters():
        assert p.is_contiguous(), name  # the usual layout again
    fresh = snacs.create_model("mobilenetv2", width=0.25)
    fresh.load_state_dict(model.state_dict())
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        assert torch.allclose(model.eval()(x), fresh.eval()(x), atol=1e-5)
    # the same training in the usual layout lands close (the kernels sum in another order)
    torch.manual_seed(0)
    ref = snacs.create_model("mobilenetv2", width=0.25)
    train(ref, data, TrainConfig(epochs=2, **{**cfg, "channels_last": False}))
    with torch.no_grad():
        assert torch.allclose(model(x), ref.eval()(x), atol=1e-2, rtol=1e-2)
