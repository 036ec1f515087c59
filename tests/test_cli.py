"""The command line as a user runs it: train → prune → reload → export, and one-line errors."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
import torch

import snacs
from snacs.cli import main
from snacs.metrics import conv_linear_weights, count_macs, count_parameters
from snacs.train import evaluate


def _test_split():
    from snacs.cli import build_dataset

    return build_dataset("synthetic", "test", None)


def run(argv, capsys):
    code = main(argv)
    out = capsys.readouterr()
    return code, out.out, out.err


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    out = tmp_path_factory.mktemp("train")
    code = main(["train", "--model", "simplecnn", "--dataset", "synthetic", "--epochs", "4",
                 "--lr", "0.1", "--batch-size", "32", "--out", str(out), "--no-progress"])
    assert code == 0
    return out


def test_train_writes_model_and_result(trained):
    res = json.loads((trained / "result.json").read_text())
    assert res["epochs_run"] == 4 and 30.0 < res["test_accuracy"] <= 100.0
    m = snacs.load(trained / "model.pt")
    assert m(torch.randn(2, 3, 32, 32)).shape == (2, 10)
    # the recorded accuracy is the saved model's on the split the CLI opens
    assert res["test_accuracy"] == pytest.approx(evaluate(m, _test_split())["accuracy"])
    assert (trained / "last.pt").is_file() and (trained / "best.pt").is_file()


def test_prune_end_to_end_outputs(trained, tmp_path, capsys):
    out = tmp_path / "p"
    code, stdout, err = run(["prune", "--checkpoint", str(trained / "model.pt"),
                             "--dataset", "synthetic", "--samples-per-class", "10",
                             "--estimator", "gaussian", "--groups", "8", "--out", str(out),
                             "--finetune-epochs", "1", "--no-progress"], capsys)
    assert code == 0, err
    for f in ("model.pt", "result.json", "report.md", "limits.png", "scores.png", "summary.png",
              "settings.json"):
        assert (out / f).is_file(), f
    res = json.loads((out / "result.json").read_text())
    base = snacs.load(trained / "model.pt")
    slim = snacs.load(out / "model.pt")
    # counts are those of the two models, measured here
    assert res["weights_before"] == conv_linear_weights(base)
    assert res["weights_after"] == conv_linear_weights(slim) < res["weights_before"]
    assert res["params_before"] == count_parameters(base)
    assert res["params_after"] == count_parameters(slim)
    assert res["macs_before"] == count_macs(base, (3, 32, 32))
    assert res["macs_after"] == count_macs(slim, (3, 32, 32)) < res["macs_before"]
    assert res["weights_pruned_pct"] == pytest.approx(100 * (1 - res["weights_after"] / res["weights_before"]))
    # accuracies: before = the trained model's; fine-tuned = the saved model's (same split)
    test = _test_split()
    assert res["accuracy_before"] == pytest.approx(evaluate(base, test)["accuracy"])
    assert res["accuracy_finetuned"] == pytest.approx(evaluate(slim, test)["accuracy"])
    for k in ("accuracy_before", "accuracy_pruned", "accuracy_finetuned"):
        assert 0.0 <= res[k] <= 100.0, k
    assert res["latency_before_ms"] > 0 and res["latency_after_ms"] > 0
    assert "report:" in stdout and "MACs" in stdout
    # the report names the command as given, also when the CLI is called from Python
    assert "snacs prune --checkpoint " in (out / "report.md").read_text()
    # same --out with other settings is refused; the user's outputs stay
    code, _, err = run(["prune", "--checkpoint", str(trained / "model.pt"), "--dataset",
                        "synthetic", "--groups", "4", "--out", str(out), "--no-progress"], capsys)
    assert code == 2 and "other settings" in err and "--overwrite" in err
    assert err.count("\n") == 1
    # export to TorchScript loads in another process
    ts = tmp_path / "m.ts"
    code, stdout, err = run(["export", "--load", str(out / "model.pt"), "--format", "torchscript",
                             "--output", str(ts)], capsys)
    assert code == 0, err
    r = subprocess.run([sys.executable, "-c",
                        f"import torch; m=torch.jit.load({str(ts)!r}); "
                        "print(m(torch.randn(1,3,32,32)).shape)"],
                       capture_output=True, text=True, check=True)
    assert "torch.Size([1, 10])" in r.stdout


def test_connection_prune_and_finetune_keeps_zeros(trained, tmp_path, capsys):
    out = tmp_path / "c"
    code, _, err = run(["prune", "--checkpoint", str(trained / "model.pt"), "--dataset",
                        "synthetic", "--samples-per-class", "10", "--estimator", "gaussian",
                        "--granularity", "connection", "--groups", "8", "--out", str(out),
                        "--no-progress", "--no-latency"], capsys)
    assert code == 0, err
    ft = tmp_path / "ft"
    code, _, err = run(["finetune", "--load", str(out / "model.pt"), "--dataset", "synthetic",
                        "--epochs", "1", "--out", str(ft), "--no-progress"], capsys)
    assert code == 0, err
    before = snacs.load(out / "model.pt")
    after = snacs.load(ft / "model.pt")
    for (n, a), (_, b) in zip(before.named_parameters(), after.named_parameters(), strict=False):
        if n.endswith("weight") and a.dim() > 1:
            assert (b[a == 0] == 0).all(), n


@pytest.mark.parametrize("argv, needle", [
    (["train", "--model", "resnet9000", "--dataset", "synthetic", "--epochs", "0"], "unknown model"),
    (["train", "--model", "simplecnn", "--dataset", "mnist-x", "--epochs", "0"], "unknown dataset"),
    (["train", "--model", "simplecnn", "--dataset", "fashion-mnist", "--data-root",
      "/nonexistent/fm", "--epochs", "0"], "/nonexistent/fm"),
    (["prune", "--model", "simplecnn", "--dataset", "synthetic", "--granularity", "filter",
      "--target", "1.5"], "between 0 and 1"),
    (["prune", "--model", "simplecnn", "--dataset", "synthetic", "--estimator", "mine"],
     "unknown estimator"),
])
def test_errors_are_one_line(argv, needle, capsys, tmp_path):
    code, _, err = run(argv + ["--out", str(tmp_path / "o"), "--no-progress"], capsys)
    assert code == 2
    assert needle in err and "Traceback" not in err
    assert err.startswith("snacs: error:") and err.count("\n") == 1


def test_mismatched_checkpoint_names_keys(trained, tmp_path, capsys):
    sd = tmp_path / "sd.pt"
    torch.save(snacs.create_model("vgg16", width=0.25).state_dict(), sd)
    code, _, err = run(["evaluate", "--model", "simplecnn", "--checkpoint", str(sd),
                        "--dataset", "synthetic"], capsys)
    assert code == 2 and "features" in err and "Traceback" not in err


def test_unwritable_output_dir(tmp_path, capsys):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    code, _, err = run(["train", "--model", "simplecnn", "--dataset", "synthetic", "--epochs",
                        "0", "--out", str(blocker / "sub"), "--no-progress"], capsys)
    assert code == 2 and "not writable" in err


def test_help_lists_defaults(capsys):
    with pytest.raises(SystemExit):
        main(["prune", "--help"])
    out = capsys.readouterr().out
    for opt in ("--target", "--granularity", "--samples-per-class", "--groups", "--phi",
                "--limits", "--sensitivity"):
        assert opt in out
    assert "default: filter" in out and "default: 250" in out


# --------------------------------------------------------------------------- --model-file

from user_net import USER_NET  # noqa: E402  (the shared user-model source)

PRUNE_FAST = ["--dataset", "synthetic", "--samples-per-class", "10", "--estimator", "gaussian",
              "--groups", "8", "--limits", "0.5", "--no-progress", "--no-latency"]


@pytest.fixture
def user_files(tmp_path):
    """net.py with UserNet, and weights.pt: a state_dict of UserNet(num_classes=10, width=8)."""
    net = tmp_path / "net.py"
    net.write_text(USER_NET)
    from snacs.models.registry import build_user_model

    torch.manual_seed(0)
    model = build_user_model(f"{net}:UserNet", {"num_classes": 10, "width": 8})
    torch.save({"state_dict": model.state_dict()}, tmp_path / "weights.pt")
    return net, tmp_path / "weights.pt", model


def test_prune_a_model_file_class(user_files, tmp_path, capsys):
    net, weights, model = user_files
    out = tmp_path / "p"
    # random weights: --force past the base check, which would (rightly) stop at chance accuracy
    code, _, err = run(["prune", "--model-file", f"{net}:UserNet", "--model-args",
                        '{"num_classes": 10, "width": 8}', "--checkpoint", str(weights),
                        "--out", str(out), "--force"] + PRUNE_FAST, capsys)
    assert code == 0, err
    res = json.loads((out / "result.json").read_text())
    payload = torch.load(out / "model.pt", weights_only=True)
    assert payload["architecture"] == {"kind": "file", "target": f"{net.resolve()}:UserNet",
                                       "args": {"num_classes": 10, "width": 8}}
    slim = snacs.load(out / "model.pt")  # rebuilt from net.py, no pickled class
    assert type(slim).__name__ == "UserNet"
    assert sum(p.numel() for p in slim.parameters()) == res["params_after"]
    assert res["params_after"] < sum(p.numel() for p in model.parameters())
    # the weights came from --checkpoint: a kept stem filter is the checkpoint's filter
    kept = payload["kept"]["stem"]
    assert kept == payload["kept"]["b"]  # one residual stream: both writers keep the same
    assert torch.equal(slim.stem.weight, model.stem.weight[kept])
    # export and finetune take the file's model too (rebuilt from the record, or --model-file)
    code, stdout, err = run(["export", "--load", str(out / "model.pt"), "--output",
                             str(tmp_path / "m.pt2"), "--dataset", "synthetic"], capsys)
    assert code == 0, err
    assert "on 16 synthetic test images" in stdout
    code, _, err = run(["finetune", "--load", str(out / "model.pt"), "--model-file",
                        f"{net}:UserNet", "--model-args", '{"num_classes": 10, "width": 8}',
                        "--dataset", "synthetic", "--epochs", "1", "--steps-per-epoch", "2",
                        "--out", str(tmp_path / "ft"), "--no-progress"], capsys)
    assert code == 0, err
    tuned = torch.load(tmp_path / "ft" / "model.pt", weights_only=True)
    assert tuned["architecture"] == payload["architecture"] and tuned["kept"] == payload["kept"]
    assert tuned["layers"] == payload["layers"]


def test_model_file_keys_in_a_config(user_files, tmp_path, capsys):
    net, weights, _ = user_files
    cfg = tmp_path / "c.yaml"
    cfg.write_text(f"model:\n  model_file: {net}:UserNet\n  model_args:\n    num_classes: 10\n"
                   f"    width: 8\n  checkpoint: {weights}\n")
    code, stdout, err = run(["evaluate", "--config", str(cfg), "--dataset", "synthetic"], capsys)
    assert code == 0, err
    params = json.loads(stdout)["parameters"]
    assert params == sum(p.numel() for p in user_files[2].parameters())
    # a mapping at the top level is the option's value too, not a section
    cfg.write_text(f"model_file: {net}:UserNet\nmodel_args: {{num_classes: 10, width: 4}}\n")
    code, stdout, err = run(["evaluate", "--config", str(cfg), "--dataset", "synthetic"], capsys)
    assert code == 0, err
    assert json.loads(stdout)["parameters"] < params


@pytest.mark.parametrize("target, args, needles", [
    ("{d}/missing.py:UserNet", "{{}}", ["model file", "missing.py does not exist"]),
    ("{d}/net.py:ResNet56", "{{}}", ["has no class 'ResNet56'", "it defines NeedsGPU, UserNet"]),
    ("{d}/net.py:UserNet", '{{"depth": 3}}', ["UserNet(**{{'depth': 3}}) failed", "TypeError",
                                             "depth", "--model-args"]),
    ("{d}/net.py:NeedsGPU", "{{}}", ["NeedsGPU(**{{}}) failed: RuntimeError: no GPU found"]),
    ("{d}/net.py:UserNet", "{{num_classes: 10}}", ["--model-args must be a JSON object"]),
    ("{d}/net.py", "{{}}", ["path/to/file.py:ClassName"]),
])
def test_model_file_errors_are_one_line(user_files, target, args, needles, capsys):
    d = user_files[0].parent
    code, _, err = run(["evaluate", "--model-file", target.format(d=d), "--model-args",
                        args.format(), "--dataset", "synthetic"], capsys)
    assert code == 2 and err.startswith("snacs: error:") and err.count("\n") == 1, err
    for n in needles:
        assert n.format() in err, err


def test_model_file_checkpoint_that_does_not_fit_names_keys(user_files, tmp_path, capsys):
    net, weights, _ = user_files
    code, _, err = run(["evaluate", "--model-file", f"{net}:UserNet", "--model-args",
                        '{"width": 4}', "--checkpoint", str(weights), "--dataset", "synthetic"],
                       capsys)
    assert code == 2 and err.count("\n") == 1
    assert "shape mismatch" in err and "stem.weight (checkpoint (8, 3, 3, 3) vs model (4, 3, 3, 3))" in err
    assert "--model-args" in err
    torch.save({"other.weight": torch.zeros(1)}, tmp_path / "bad.pt")
    code, _, err = run(["evaluate", "--model-file", f"{net}:UserNet", "--checkpoint",
                        str(tmp_path / "bad.pt"), "--dataset", "synthetic"], capsys)
    assert code == 2 and "missing key(s): stem.weight" in err and "unexpected key(s): other.weight" in err


def test_no_import_cycle_in_the_package():
    """Every import in src/snacs (module level or inside functions) forms no cycle."""
    import ast
    from pathlib import Path

    root = Path(snacs.__file__).parents[1]
    mods = {}
    for p in (root / "snacs").rglob("*.py"):
        name = ".".join(p.relative_to(root).with_suffix("").parts).removesuffix(".__init__")
        mods[name] = p
    graph: dict[str, set[str]] = {m: set() for m in mods}
    for m, p in mods.items():
        for node in ast.walk(ast.parse(p.read_text())):
            if isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module:
                targets = [node.module] + [f"{node.module}.{a.name}" for a in node.names]
            else:
                continue
            graph[m] |= {t for t in targets if t in mods and t != m}

    def cycle_from(start):
        stack, seen = [(start, [start])], set()
        while stack:
            node, path = stack.pop()
            for nxt in graph[node]:
                if nxt == start:
                    return path + [start]
                if nxt not in seen:
                    seen.add(nxt)
                    stack.append((nxt, path + [nxt]))
        return None

    assert "snacs.cli_common" in graph["snacs.cli_prune"]  # the graph sees function-level imports
    cycles = [c for m in graph if (c := cycle_from(m))]
    assert not cycles, " -> ".join(cycles[0])
