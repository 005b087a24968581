"""``export_onnx`` on a model with in-place activations: the graph equals eager, and the model is left as it was."""

from pathlib import Path

import numpy as np
import onnxruntime as ort
import torch
from torch import nn

from export.formats import INPUT_NAME, export_onnx


def test_in_place_activations_export_out_of_place_and_are_restored(tmp_path: Path) -> None:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.BatchNorm2d(4), nn.ReLU6(inplace=True),
                          nn.Conv2d(4, 2, 1), nn.ReLU(inplace=True), nn.Hardtanh(-0.5, 0.5)).eval()
    x = torch.randn(2, 3, 16, 16)
    path = export_onnx(model, tmp_path / "model.onnx", x, dynamic_size=False)
    assert [m.inplace for m in model if hasattr(m, "inplace")] == [True, True, False]  # as the caller built it
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    y = torch.randn(3, 3, 16, 16)  # another batch size: the batch axis stays dynamic
    with torch.no_grad():
        expected = model(y).numpy()
    np.testing.assert_allclose(session.run(None, {INPUT_NAME: y.numpy()})[0], expected, atol=1e-5, rtol=0)
    assert 0.0 < expected.max() <= 0.5 and expected.min() == 0.0  # the clamps are in the graph
