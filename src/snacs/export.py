"""Deployment files of a snacs model: torch.export, TorchScript or ONNX, each checked on inputs.

* ``export`` (recommended): a `torch.export` program written with `torch.export.save`. It holds
  the graph of ATen operations and the weights, so `torch.export.load(path).module()` runs it in
  a process that has neither snacs nor the model's class; the batch size stays free.
* ``torchscript``: traced and frozen (`frozen_torchscript`). Still the fastest at batch 1 on CPU
  here, but torch 2.13 deprecates `torch.jit.trace` and `torch.jit.load`.
* ``onnx``: `torch.onnx.export` through torch.export (``dynamo=True``), checked with
  onnxruntime; needs the ``onnx`` extra.

Every export is reloaded from the written file and compared with the eager model on the given
inputs (a batch of real images when the caller passes them) before it replaces `output`.
"""

from __future__ import annotations

import contextlib
import io
import os
from pathlib import Path

import torch

from snacs.errors import ConfigError

__all__ = ["export_model", "frozen_torchscript", "FORMATS", "TOLERANCE"]

TOLERANCE = 1e-4  # max abs difference of logits between PyTorch and the exported model
FORMATS = ("export", "torchscript", "onnx")


def _input_shape(model, given):
    if given:
        return tuple(int(v) for v in given)
    recorded = getattr(model, "snacs_input_shape_", None)
    if recorded:
        return tuple(int(v) for v in recorded)
    stored = (getattr(model, "snacs_data", None) or {}).get("image_shape")
    if stored:  # the data the model was trained or pruned on (snacs.modelfile.saved_data)
        return tuple(int(v) for v in stored)
    spec = getattr(model, "snacs_spec", None) or {}
    if spec:
        side = 224 if spec.get("name") == "resnet50" else 32
        return (int(spec.get("in_channels", 3)), side, side)
    first = next((m for m in model.modules() if isinstance(m, torch.nn.Conv2d)), None)
    return (first.in_channels if first is not None else 3, 32, 32)


def frozen_torchscript(model: torch.nn.Module, example: torch.Tensor) -> torch.jit.ScriptModule:
    """`model` traced on `example` and frozen: what `export --format torchscript` writes.

    Freezing makes the weights constants and folds BatchNorm into the convolutions, which removes
    a good part of the per-layer overhead of a small model at batch 1.
    """
    import warnings

    with torch.no_grad(), warnings.catch_warnings():
        # torch 2.13 marks trace/freeze deprecated; TorchScript is still what this format is
        warnings.filterwarnings("ignore", message=r".*torch\.jit\.", category=DeprecationWarning)
        # a model's Python branches on shapes are constants of this one traced input size:
        # what freezing for deployment at that size means, not a problem to report each time
        warnings.filterwarnings("ignore", category=torch.jit.TracerWarning)
        return torch.jit.freeze(torch.jit.trace(model.eval(), example))


def _batch_dim():
    # a free batch size; the example batch must not be 1, or torch.export specialises on it
    return ({0: torch.export.Dim("batch", min=1, max=1 << 16)},)


def _write_export(model, example, path: Path):
    program = torch.export.export(model, (example,), dynamic_shapes=_batch_dim())
    torch.export.save(program, str(path))
    return torch.export.load(str(path)).module()


def _write_torchscript(model, example, path: Path):
    import json

    # the input normalisation travels with the deployed file (torch.jit.load(_extra_files=))
    data = getattr(model, "snacs_data", None) or {}
    frozen_torchscript(model, example).save(str(path), _extra_files={"snacs_data.json":
                                                                      json.dumps(data)})
    return torch.jit.load(str(path))


def _write_onnx(model, example, path: Path):
    try:
        import onnx  # noqa: F401
        import onnxruntime as ort
    except ImportError:
        raise ConfigError("ONNX export needs the onnx extra (onnx, onnxruntime, onnxscript): "
                          "pip install 'snacs[onnx]'") from None
    # the exporter reports its progress on stdout; the library never prints
    with contextlib.redirect_stdout(io.StringIO()):
        torch.onnx.export(model, (example,), str(path), input_names=["input"],
                          output_names=["logits"], dynamic_shapes=_batch_dim(), dynamo=True,
                          verbose=False)
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])

    def run(x: torch.Tensor) -> torch.Tensor:
        return torch.as_tensor(sess.run(None, {"input": x.numpy()})[0])

    return run


def export_model(source, output: str | os.PathLike, *, fmt: str = "export",
                 input_shape: tuple[int, int, int] | None = None,
                 inputs: torch.Tensor | None = None) -> dict:
    """Export `source` (a model or a snacs model file) and check the written file.

    Args:
        source: An `nn.Module` or the path of a snacs model file.
        output: The file to write; replaced only once the check has passed.
        fmt: ``export`` (torch.export program), ``torchscript`` or ``onnx``.
        input_shape: (C, H, W) of one input (default: recorded in the model file).
        inputs: The batch the exported model is checked on, ideally real images; default: 8
            standard-normal inputs of `input_shape`.

    Returns:
        ``max_abs_diff`` between the reloaded export and the eager model on `inputs`,
        ``tolerance``, ``input_shape``, ``format`` and ``checked_on`` (number of inputs).

    Raises:
        ConfigError: Unknown format, missing ONNX extra, or the exported model disagrees with
            PyTorch beyond the tolerance (nothing is written then).
    """
    import snacs.modelfile

    if fmt not in FORMATS:
        raise ConfigError(f"unknown export format {fmt!r}; choose one of {', '.join(FORMATS)}")
    model = source if isinstance(source, torch.nn.Module) else snacs.modelfile.load(source)
    model.eval()
    shape = _input_shape(model, input_shape)
    if inputs is None:
        inputs = torch.randn(8, *shape, generator=torch.Generator().manual_seed(0))
    inputs = inputs.float()
    if tuple(inputs.shape[1:]) != shape:
        raise ConfigError(f"check inputs have shape {tuple(inputs.shape[1:])}, the model "
                          f"expects {shape}; pass --input-shape to match the data")
    example = inputs[:2] if len(inputs) >= 2 else inputs.repeat(2, 1, 1, 1)
    output = Path(output)
    output.parent.mkdir(parents=True, exist_ok=True)
    tmp = output.with_name(f".{output.name}.tmp")
    write = {"export": _write_export, "torchscript": _write_torchscript, "onnx": _write_onnx}[fmt]
    try:
        with torch.no_grad():
            ref = model(inputs)
        reloaded = write(model, example, tmp)
        with torch.no_grad():
            got = reloaded(inputs)
        diff = float((got - ref).abs().max())
        if not diff <= TOLERANCE:
            raise ConfigError(f"exported model ({fmt}) differs from PyTorch by {diff:.2e} "
                              f"(> {TOLERANCE:.0e}); nothing written")
        os.replace(tmp, output)
    finally:
        tmp.unlink(missing_ok=True)
    return {"max_abs_diff": diff, "tolerance": TOLERANCE, "input_shape": list(shape),
            "format": fmt, "checked_on": len(inputs),
            "data": getattr(model, "snacs_data", None) or {}}
