"""Issue 15's done-when: a user's own class, pruned and saved, is loaded again in another Python
process that only has the class's source (from Python with `model=`, and through the CLI with
`--model-file`), and reproduces the pruned model's outputs to 1e-5."""

from __future__ import annotations

import inspect
import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch
from torch import nn

import snacs
from snacs.cli import main

FAST = dict(estimator="gaussian", samples_per_class=6, groups=8, limits=0.5,
            measure_latency=False)
SRC = str(Path(snacs.__file__).parents[1])


def _python(code: str, cwd: Path) -> subprocess.CompletedProcess:
    env = dict(os.environ, PYTHONPATH=SRC, OMP_NUM_THREADS="1")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=cwd,
                       env=env)
    assert r.returncode == 0, r.stderr[-3000:]
    return r


def test_a_class_defined_in_the_test_loads_elsewhere_with_model(tmp_path, synth, synth_test):
    class HandMade(nn.Module):  # not importable: exists only inside this test function
        def __init__(self, num_classes=10):
            super().__init__()
            self.conv1 = nn.Conv2d(3, 12, 3, padding=1, bias=False)
            self.bn1 = nn.BatchNorm2d(12)
            self.conv2 = nn.Conv2d(12, 12, 3, padding=1, bias=False)
            self.bn2 = nn.BatchNorm2d(12)
            self.conv3 = nn.Conv2d(12, 16, 3, padding=1)
            self.fc = nn.Linear(16, num_classes)

        def forward(self, x):
            x = torch.relu(self.bn1(self.conv1(x)))
            x = torch.relu(x + self.bn2(self.conv2(x)))  # residual: conv1 and conv2 coupled
            return self.fc(torch.relu(self.conv3(x)).mean((2, 3)))

    torch.manual_seed(0)
    pruned, _ = snacs.prune(HandMade().eval(), synth, **FAST)
    pruned.eval()
    assert pruned.conv3.out_channels < 16 and pruned.conv1.out_channels < 12
    snacs.save(pruned, tmp_path / "model.pt")
    images = torch.stack([synth_test[i][0] for i in range(16)])
    torch.save(images, tmp_path / "images.pt")
    with torch.no_grad():
        ref = pruned(images)

    # the other process has the class's source, as a user re-running their notebook would
    code = "import torch\nfrom torch import nn\nimport snacs\n\n"
    code += textwrap.dedent(inspect.getsource(HandMade))
    code += textwrap.dedent("""
        try:
            snacs.load("model.pt")
        except snacs.CheckpointError as e:
            assert "model=HandMade(...)" in str(e), e
        else:
            raise AssertionError("loading without model= should say how to load")
        model = snacs.load("model.pt", model=HandMade())
        with torch.no_grad():
            torch.save(model(torch.load("images.pt")), "out.pt")
    """)
    _python(code, tmp_path)
    got = torch.load(tmp_path / "out.pt")
    diff = (got - ref).abs().max().item()
    print(f"max abs difference after loading in another process: {diff:.2e}")
    assert diff <= 1e-5


from user_net import USER_NET  # noqa: E402  (the shared user-model source)


@pytest.mark.slow
def test_cli_model_file_prune_then_load_elsewhere(tmp_path, synth_test, capsys):
    user = tmp_path / "user"
    user.mkdir()
    (user / "net.py").write_text(USER_NET)
    args = '{"num_classes": 10, "width": 8}'
    out = tmp_path / "p"
    code = main(["prune", "--model-file", f"{user / 'net.py'}:UserNet", "--model-args", args,
                 "--dataset", "synthetic", "--samples-per-class", "10", "--estimator",
                 "gaussian", "--groups", "8", "--limits", "0.5", "--out", str(out),
                 "--no-progress", "--no-latency"])
    assert code == 0, capsys.readouterr().err
    res = json.loads((out / "result.json").read_text())
    reference = snacs.load(out / "model.pt")
    # the recorded net.py is gone; the user has the class in another file
    moved = tmp_path / "elsewhere"
    moved.mkdir()
    (user / "net.py").rename(moved / "mynet.py")
    with pytest.raises(snacs.CheckpointError, match=r"model=UserNet\(\.\.\.\)"):
        snacs.load(out / "model.pt")

    r = _python(
        "import sys\nfrom snacs.cli import main\n"
        f"assert main(['evaluate', '--checkpoint', {str(out / 'model.pt')!r}, '--model-file', "
        f"{str(moved / 'mynet.py') + ':UserNet'!r}, '--model-args', {args!r}, "
        "'--dataset', 'synthetic', '--no-progress']) == 0\n"
        f"assert main(['export', '--load', {str(out / 'model.pt')!r}, '--model-file', "
        f"{str(moved / 'mynet.py') + ':UserNet'!r}, '--model-args', {args!r}, "
        f"'--dataset', 'synthetic', '--output', 'm.pt2']) == 0\n", tmp_path)
    evaluated = json.loads(r.stdout[: r.stdout.rindex("}") + 1])
    assert evaluated["accuracy"] == pytest.approx(res["accuracy_pruned"], abs=1e-9)
    assert evaluated["parameters"] == res["params_after"]
    images = torch.stack([synth_test[i][0] for i in range(16)])
    got = torch.export.load(str(tmp_path / "m.pt2")).module()(images)
    with torch.no_grad():
        diff = (got - reference(images)).abs().max().item()
    print(f"max abs difference of the CLI-loaded export: {diff:.2e}")
    assert diff <= 1e-5
