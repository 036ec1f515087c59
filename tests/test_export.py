"""Export: TorchScript always, ONNX when the optional extra is installed; outputs are checked."""

from __future__ import annotations

import subprocess
import sys

import pytest
import torch

import snacs
from snacs.errors import ConfigError
from snacs.export import TOLERANCE, export_model


@pytest.fixture
def slim_file(tmp_path, synth):
    model = snacs.create_model("simplecnn").eval()
    pruned, _ = snacs.prune(model, synth, samples_per_class=10, groups=8, limits=0.5,
                            measure_latency=False)
    path = tmp_path / "model.pt"
    snacs.save(pruned, path)
    return path


def test_torchscript_export_runs_in_another_process(slim_file, tmp_path):
    info = export_model(slim_file, tmp_path / "m.ts", fmt="torchscript")
    assert info["max_abs_diff"] <= TOLERANCE
    code = (f"import torch; m = torch.jit.load({str(tmp_path / 'm.ts')!r}); "
            "print(tuple(m(torch.randn(3, 3, 32, 32)).shape))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert "(3, 10)" in out.stdout


def test_onnx_export_matches_pytorch(slim_file, tmp_path):
    pytest.importorskip("onnx")
    ort = pytest.importorskip("onnxruntime")
    info = export_model(slim_file, tmp_path / "m.onnx", fmt="onnx")
    assert info["max_abs_diff"] <= TOLERANCE
    sess = ort.InferenceSession(str(tmp_path / "m.onnx"), providers=["CPUExecutionProvider"])
    x = torch.randn(5, 3, 32, 32)
    got = sess.run(None, {"input": x.numpy()})[0]
    ref = snacs.load(slim_file)(x).detach().numpy()
    assert abs(got - ref).max() <= TOLERANCE


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
