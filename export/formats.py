"""Writers for the two runtime formats: ONNX (dynamo exporter) and frozen TorchScript."""

from __future__ import annotations

import contextlib
import copy
import io
import warnings
from pathlib import Path

import onnx
import torch
from torch import nn

INPUT_NAME = "images"
OUTPUT_NAME = "logits"
DEFAULT_OPSET = 18


@contextlib.contextmanager
def _out_of_place(model: nn.Module):
    """Run the model's in-place activations (``ReLU6(inplace=True)`` and the like) out of place while it is exported.

    The dynamo exporter lowers ``hardtanh_`` (ReLU6) through its slow reference decomposition, where the
    out-of-place op maps straight to an ONNX Clip; the graph is the same, and a MobileNetV2 exports in about half
    the time (a ResNet's ``relu_`` measured no different).
    """
    switched = [m for m in model.modules() if getattr(m, "inplace", None) is True]
    for module in switched:
        module.inplace = False
    try:
        yield model
    finally:
        for module in switched:
            module.inplace = True


@contextlib.contextmanager
def _quiet():
    """Silence exporter chatter (it prints progress and warnings we check ourselves via parity)."""
    with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
        warnings.simplefilter("ignore")
        yield


def export_onnx(model: nn.Module, path: Path, example: torch.Tensor, dynamic_size: bool,
                opset: int = DEFAULT_OPSET, fp16: bool = False) -> Path:
    """Export with the dynamo exporter; batch axis dynamic, spatial axes too when ``dynamic_size``."""
    if example.shape[0] < 2:
        raise ValueError("export from an example batch of 2 or more, or the batch axis is fixed at 1")
    auto = torch.export.Dim.AUTO
    axes = {0: auto, 2: auto, 3: auto} if dynamic_size else {0: auto}
    with _quiet(), _out_of_place(model):
        program = torch.onnx.export(model.eval(), (example,), dynamo=True, dynamic_shapes=(axes,),
                                    input_names=[INPUT_NAME], output_names=[OUTPUT_NAME],
                                    opset_version=opset, verbose=False)
        program.save(str(path))
    if fp16:
        from onnxruntime.transformers.float16 import convert_float_to_float16

        onnx.save(convert_float_to_float16(onnx.load(str(path)), keep_io_types=True), str(path))
    return path


def export_torchscript(model: nn.Module, path: Path, example: torch.Tensor, fp16: bool = False) -> Path:
    """Trace and freeze; fp16 keeps float32 inputs and outputs.

    ``optimize_for_inference`` folds weights into device-specific (MKLDNN) constants that TorchScript
    cannot serialise, so the saved file is frozen and portable, and ``load_torchscript`` optimises it
    for the device it is loaded on.
    """
    module: nn.Module = model.eval()
    if fp16:
        module = HalfPrecision(copy.deepcopy(module)).eval()
    with torch.no_grad(), _quiet():
        frozen = torch.jit.freeze(torch.jit.trace(module, example, check_trace=False))
    frozen.save(str(path))
    return path


def load_torchscript(path: Path, device: str = "cpu") -> torch.jit.ScriptModule:
    """Load a frozen TorchScript artifact and optimise it for inference on ``device``."""
    with _quiet():
        module = torch.jit.load(str(path), map_location=device).eval()
        return torch.jit.optimize_for_inference(module)


class HalfPrecision(nn.Module):
    """Run a model in float16 behind a float32 interface (inputs cast down, outputs cast up)."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model.half()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """float32 in, float16 compute, float32 out."""
        return self.model(x.half()).float()
