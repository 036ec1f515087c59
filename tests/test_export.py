"""Export: torch.export, TorchScript and ONNX files reproduce the eager model's outputs on real
images in another process that can import neither snacs nor the model's code."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
import torch
from torch import nn

import snacs
from snacs.errors import ConfigError
from snacs.export import TOLERANCE, export_model

FAST = dict(estimator="gaussian", samples_per_class=6, groups=8, limits=0.5,
            measure_latency=False)

# Runs in a fresh interpreter: imports of snacs (and of any module named in BLOCK) fail, so the
# exported files must carry everything. For each (format, file) it runs every input batch and
# saves the outputs for the parent to compare.
RUNNER = r"""
import sys, json
jobs, io_path, block = json.loads(sys.argv[1]), sys.argv[2], set(json.loads(sys.argv[3]))

class _Blocker:
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in block:
            raise ImportError(f"{name} must not be needed to run the exported model")
        return None

sys.meta_path.insert(0, _Blocker())
import torch
batches = torch.load(io_path + ".in.pt")
outs = []
for fmt, path in jobs:
    if fmt == "export":
        run = torch.export.load(path).module()
    elif fmt == "torchscript":
        run = torch.jit.load(path)
    else:
        import onnxruntime as ort
        s = ort.InferenceSession(path, providers=["CPUExecutionProvider"])
        run = lambda x: torch.as_tensor(s.run(None, {"input": x.numpy()})[0])
    outs.append([run(x).detach() for x in batches])
torch.save(outs, io_path + ".out.pt")
print(json.dumps(sorted(m for m in sys.modules if m.split(".")[0] in block)))
"""


def run_elsewhere(jobs, batches, tmp_path, block=("snacs",)):
    """Outputs of each exported file on each batch, computed in one separate Python process."""
    io_path = str(tmp_path / "io")
    torch.save(list(batches), io_path + ".in.pt")
    r = subprocess.run([sys.executable, "-c", RUNNER, json.dumps([[f, str(p)] for f, p in jobs]),
                        io_path, json.dumps(list(block))], capture_output=True, text=True,
                       cwd=tmp_path, env={"PATH": "/usr/bin:/bin", "OMP_NUM_THREADS": "1"})
    assert r.returncode == 0, r.stderr[-2000:]
    assert json.loads(r.stdout.strip().splitlines()[-1]) == []  # nothing of snacs was imported
    return torch.load(io_path + ".out.pt")


def check_elsewhere(jobs, model, images, tmp_path, block=("snacs",)):
    """The files reproduce `model` on all images, on one image and on an odd batch of 5."""
    batches = [images, images[:1], images[:5]]
    outs = run_elsewhere(jobs, batches, tmp_path, block)
    model.eval()
    for (fmt, _), got in zip(jobs, outs, strict=True):
        for x, y in zip(batches, got, strict=True):
            with torch.no_grad():
                ref = model(x)
            diff = (y - ref).abs().max().item()
            print(f"{fmt}: max abs difference to the eager model on {len(x)} images: {diff:.2e}")
            assert y.shape == ref.shape
            assert diff <= TOLERANCE


@pytest.fixture
def images(synth_test):
    return torch.stack([synth_test[i][0] for i in range(16)])


@pytest.fixture
def slim_file(tmp_path, synth):
    model = snacs.create_model("simplecnn").eval()
    pruned, _ = snacs.prune(model, synth, **FAST)
    path = tmp_path / "model.pt"
    snacs.save(pruned, path)
    return path


@pytest.mark.slow  # three exports and an interpreter start: ~10 s of CPU
def test_exports_reproduce_outputs_in_another_process(slim_file, images, tmp_path):
    pytest.importorskip("onnxruntime")  # part of the dev extra: runs in `make test`
    model = snacs.load(slim_file)
    assert model.features[0].out_channels < 16  # a slimmed model is exported
    jobs = []
    for fmt in ("export", "torchscript", "onnx"):
        out = tmp_path / f"m.{fmt}"
        info = export_model(slim_file, out, fmt=fmt, inputs=images)
        assert info["max_abs_diff"] <= TOLERANCE and info["checked_on"] == 16
        jobs.append((fmt, out))
    check_elsewhere(jobs, model, images, tmp_path)


def test_export_of_a_users_class_needs_no_user_code(images, tmp_path, synth):
    class Mine(nn.Module):  # defined here: the other process cannot import it
        def __init__(self):
            super().__init__()
            self.conv1 = nn.Conv2d(3, 12, 3, padding=1)
            self.bn1 = nn.BatchNorm2d(12)
            self.conv2 = nn.Conv2d(12, 12, 3, padding=1, groups=12)  # depthwise
            self.bn2 = nn.BatchNorm2d(12)
            self.conv3 = nn.Conv2d(12, 16, 1)
            self.fc = nn.Linear(16, 10)

        def forward(self, x):
            x = torch.relu(self.bn1(self.conv1(x)))
            x = torch.relu(self.bn2(self.conv2(x)))
            return self.fc(torch.relu(self.conv3(x)).mean((2, 3)))

    pruned, _ = snacs.prune(Mine().eval(), synth, **FAST)
    pruned.eval()
    assert pruned.conv1.out_channels < 12
    export_model(pruned, tmp_path / "m.pt2", fmt="export", inputs=images)
    check_elsewhere([("export", tmp_path / "m.pt2")], pruned, images, tmp_path,
                    block=("snacs", __name__.split(".")[0]))


@pytest.mark.slow
@pytest.mark.parametrize("fmt", ["export", "onnx"])
@pytest.mark.parametrize("name", ["resnet20", "mobilenetv2"])
def test_export_of_slimmed_residual_and_depthwise_models(name, fmt, images, tmp_path, synth):
    if fmt == "onnx":
        pytest.importorskip("onnxruntime")
    torch.manual_seed(0)
    pruned, _ = snacs.prune(snacs.create_model(name, width=0.5).eval(), synth, **FAST)
    snacs.save(pruned, tmp_path / "model.pt")
    model = snacs.load(tmp_path / "model.pt")
    export_model(model, tmp_path / "m.out", fmt=fmt, inputs=images)
    check_elsewhere([(fmt, tmp_path / "m.out")], model, images, tmp_path)


def test_a_failed_check_writes_nothing(slim_file, images, tmp_path, monkeypatch):
    import snacs.export as ex

    def corrupt(model, example, path):
        path.write_bytes(b"x")
        return lambda x: model(x) + 1e-3  # 10x the tolerance

    monkeypatch.setattr(ex, "_write_torchscript", corrupt)
    with pytest.raises(ConfigError, match=r"differs from PyTorch by 1\.00e-03"):
        export_model(slim_file, tmp_path / "m.ts", fmt="torchscript", inputs=images)
    assert not (tmp_path / "m.ts").exists() and not (tmp_path / ".m.ts.tmp").exists()


def test_onnx_without_extra_says_what_to_install(slim_file, tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "onnx", None)
    with pytest.raises(ConfigError, match=r"pip install 'snacs\[onnx\]'"):
        export_model(slim_file, tmp_path / "m.onnx", fmt="onnx")
    assert not (tmp_path / "m.onnx").exists()


def test_latency_of_a_frozen_torchscript_model():
    from snacs.metrics import measure_latency

    model = snacs.create_model("simplecnn").eval()
    x = torch.randn(1, 3, 32, 32)
    with torch.inference_mode():
        frozen = torch.jit.freeze(torch.jit.trace(model, x))
    r = measure_latency(frozen, (3, 32, 32), repeats=3, warmup=1)
    assert r["median_ms"] > 0 and r["repeats"] == 3
    assert not model.training and measure_latency(model, (3, 32, 32), repeats=2)["median_ms"] > 0
