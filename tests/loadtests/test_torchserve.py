"""A real TorchServe 0.12 serves the exported .mar on 127.0.0.1 and answers like the ONNX path."""

import io
from pathlib import Path

import httpx
import numpy as np
import onnxruntime as ort
from PIL import Image

from loadtests.processes import TorchServeProcess
from model_store.manifest import load_manifest


def onnx_scores(entry_path: Path, image: Image.Image) -> np.ndarray:
    """The ONNX path by hand: stretch-resize bilinear to the manifest size, /255, run, sigmoid."""
    entry = load_manifest(entry_path)
    h, w = entry.input.size
    x = np.asarray(image.convert("RGB").resize((w, h), Image.BILINEAR), dtype=np.float32).transpose(2, 0, 1) / 255
    session = ort.InferenceSession(str(entry.artifact("model.onnx")), providers=["CPUExecutionProvider"])
    logits = session.run(None, {entry.input.name: x[None]})[0][0]
    return 1 / (1 + np.exp(-logits.astype(np.float64)))


def test_torchserve_serves_the_mar_like_onnx(r18_store: Path, tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    image = Image.fromarray(rng.integers(0, 256, (150, 220, 3), dtype=np.uint8))
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    expected = onnx_scores(r18_store / "r18" / "1", image)
    names = load_manifest(r18_store / "r18" / "1").class_names
    assert (r18_store / "r18.mar").is_file()
    with TorchServeProcess(r18_store, "r18", workdir=tmp_path) as server:
        response = httpx.post(f"{server.url}/predictions/r18", content=buffer.getvalue(), timeout=60)
    assert response.status_code == 200, response.text
    body = response.json()
    got = np.array([body["scores"][n] for n in names])
    np.testing.assert_allclose(got, expected, atol=1e-5)
    assert [label["name"] for label in body["labels"]] == [names[i] for i in np.argsort(-expected) if expected[i] > 0.5]
