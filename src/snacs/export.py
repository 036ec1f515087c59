"""Export a snacs model to TorchScript or ONNX, checking outputs against PyTorch."""

from __future__ import annotations

import os
from pathlib import Path

import torch

from snacs.errors import ConfigError

__all__ = ["export_model", "TOLERANCE"]

TOLERANCE = 1e-4  # max abs difference of logits between PyTorch and the exported model


def _input_shape(model, given):
    if given:
        return tuple(given)
    stored = (getattr(model, "snacs_data", None) or {}).get("image_shape")
    if stored:  # the data the model was trained or pruned on (snacs.io.saved_data)
        return tuple(int(v) for v in stored)
    spec = getattr(model, "snacs_spec", None) or {}
    c = spec.get("in_channels", 3)
    side = 224 if spec.get("name") == "resnet50" else 32
    return (c, side, side)


def frozen_torchscript(model: torch.nn.Module, example: torch.Tensor) -> torch.jit.ScriptModule:
    """`model` traced on `example` and frozen: what `export --format torchscript` writes.

    Freezing makes the weights constants and folds BatchNorm into the convolutions, which removes
    a good part of the per-layer overhead of a small model at batch 1.
    """
    with torch.no_grad():
        return torch.jit.freeze(torch.jit.trace(model.eval(), example))


def export_model(source, output: str | os.PathLike, *, fmt: str = "torchscript",
                 input_shape: tuple[int, int, int] | None = None) -> dict:
    """Export `source` (a model or a snacs model file) and verify it on a random batch.

    Returns a dict with `max_abs_diff` and `tolerance`; raises ConfigError when the exported
    model disagrees with PyTorch beyond the tolerance.
    """
    import snacs.io

    model = snacs.io.load(source) if not isinstance(source, torch.nn.Module) else source
    model.eval()
    shape = _input_shape(model, input_shape)
    x = torch.randn(2, *shape, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        ref = model(x)
    output = Path(output)
    output.parent.mkdir(parents=True, exist_ok=True)
    tmp = output.with_name(f".{output.name}.tmp")
    data = getattr(model, "snacs_data", None) or {}
    if fmt == "torchscript":
        import json

        # the input normalisation travels with the deployed file (torch.jit.load(_extra_files=))
        frozen_torchscript(model, x).save(str(tmp), _extra_files={"snacs_data.json":
                                                                  json.dumps(data)})
        with torch.no_grad():
            got = torch.jit.load(str(tmp))(x)
    elif fmt == "onnx":
        try:
            import onnx  # noqa: F401
        except ImportError:
            raise ConfigError("ONNX export needs the onnx extra: pip install 'snacs[onnx]'") from None
        torch.onnx.export(model, (x,), str(tmp), input_names=["input"], output_names=["logits"],
                          dynamic_axes={"input": {0: "batch"}, "logits": {0: "batch"}},
                          dynamo=False)
        try:
            import onnxruntime as ort
        except ImportError:
            got = None
        else:
            sess = ort.InferenceSession(str(tmp), providers=["CPUExecutionProvider"])
            got = torch.as_tensor(sess.run(None, {"input": x.numpy()})[0])
    else:
        raise ConfigError(f"unknown export format {fmt!r}; choose torchscript or onnx")
    diff = float((got - ref).abs().max()) if got is not None else float("nan")
    if got is not None and diff > TOLERANCE:
        tmp.unlink(missing_ok=True)
        raise ConfigError(f"exported model differs from PyTorch by {diff:.2e} (> {TOLERANCE:.0e})")
    os.replace(tmp, output)
    return {"max_abs_diff": diff, "tolerance": TOLERANCE, "input_shape": list(shape),
            "format": fmt, "data": data}
