"""Exported artifacts compute exactly the inference forward f(x), verified before they are written."""

import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
from torch import nn

import models
from export.parity import FP16_TOL, ParityError
from export.pipeline import export_entry
from export.source import ExportSource, resolve_source
from model_store.manifest import load_manifest
from models.presets import Preset
from tests.export.conftest import save_random

ROOT = Path(__file__).resolve().parents[2]


def run_export(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "export", *args], capture_output=True, text=True, cwd=ROOT)


def test_graph_has_one_image_input_and_equals_eager_forward(r18_store: Path, r18_checkpoint: Path) -> None:
    entry = load_manifest(r18_store / "r18" / "1")
    graph = onnx.load(str(entry.artifact("model.onnx"))).graph
    assert [i.name for i in graph.input] == ["images"]
    assert [o.name for o in graph.output] == ["logits"]
    dims = graph.input[0].type.tensor_type.shape.dim
    assert dims[0].dim_param and [d.dim_value for d in dims[1:]] == [3, 128, 128]

    model = models.load_checkpoint(models.create_model("resnet18-csra-128"), r18_checkpoint).eval()
    x = torch.rand(5, 3, 128, 128, generator=torch.Generator().manual_seed(3))
    session = ort.InferenceSession(str(entry.artifact("model.onnx")), providers=["CPUExecutionProvider"])
    with torch.no_grad():
        expected = model(x).numpy()
    np.testing.assert_allclose(session.run(None, {"images": x.numpy()})[0], expected, atol=1e-4, rtol=0)


def test_manifest_describes_the_entry(r18_store: Path, r18_checkpoint: Path) -> None:
    manifest = load_manifest(r18_store / "r18" / "1")
    assert manifest.task == "classification" and manifest.threshold == 0.5
    assert manifest.class_names[:3] == ("circle", "square", "triangle")
    assert manifest.input.size == (128, 128) and manifest.input.resize == "stretch"
    assert manifest.preset.arch_args["depth"] == 18 and manifest.opset >= 18
    assert set(manifest.files) == {"model.onnx", "model.pt"}
    assert manifest.source.origin == "preset"
    inputs = {c.input for c in manifest.parity.checks}
    assert inputs == {(1, 3, 128, 128), (3, 3, 128, 128)}
    assert all(c.max_abs_diff <= 1e-3 for c in manifest.parity.checks)
    assert {c.runtime for c in manifest.parity.checks} == {"onnxruntime", "torchscript"}


@pytest.mark.parametrize("size", [224, 448])
def test_tiny_vit_exports_with_dynamic_size(tmp_path: Path, size: int) -> None:
    ckpt = save_random("vit-tiny-csra", tmp_path / "vit.pth", seed=size)
    manifest = export_entry(resolve_source(ckpt, "vit-tiny-csra", image_size=size), "vit", "1", tmp_path / "store",
                            progress=False)
    sizes = {tuple(c.input[2:]) for c in manifest.parity.checks}
    assert len(sizes) >= 3 and (size, size) in sizes
    session = ort.InferenceSession(str(manifest.artifact("model.onnx")), providers=["CPUExecutionProvider"])
    model = models.load_checkpoint(models.create_model("vit-tiny-csra"), ckpt).eval()
    x = torch.rand(2, 3, 320, 160)
    with torch.no_grad():
        np.testing.assert_allclose(session.run(None, {"images": x.numpy()})[0], model(x).numpy(), atol=1e-4)


def test_reference_layout_resnet101_exports_with_msl_c_voc(tmp_path: Path) -> None:
    ckpt = save_random("msl-c-voc", tmp_path / "msl_c_voc.pth", prefix="module.")
    result = run_export(str(ckpt), "--preset", "msl-c-voc", "--name", "voc-resnet101", "--image-size", "96",
                        "--formats", "onnx", "--store", str(tmp_path / "store"))
    assert result.returncode == 0, result.stderr
    manifest = load_manifest(tmp_path / "store" / "voc-resnet101" / "1")
    assert manifest.preset.arch_args["depth"] == 101 and manifest.class_names[0] == "aeroplane"
    assert manifest.parity.passed and manifest.num_classes == 20


def test_wrong_keys_give_one_line_error_and_write_nothing(tmp_path: Path) -> None:
    state = models.create_model("resnet18-csra-128").state_dict()
    state["fc.weight"] = state.pop("classifier.multi_head.0.head.weight")
    torch.save(state, tmp_path / "bad.pth")
    result = run_export(str(tmp_path / "bad.pth"), "--preset", "resnet18-csra-128", "--name", "bad",
                        "--store", str(tmp_path / "store"))
    assert result.returncode == 2
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and "Traceback" not in result.stderr
    assert "missing key(s): classifier.multi_head.0.head.weight" in lines[0]
    assert "unexpected key(s): fc.weight" in lines[0]
    assert not (tmp_path / "store" / "bad").exists()


def test_fp16_variant_passes_its_tolerance(tmp_path: Path, r18_checkpoint: Path) -> None:
    manifest = export_entry(resolve_source(r18_checkpoint, "resnet18-csra-128"), "r18h", "1", tmp_path,
                            fp16=True, progress=False)
    assert manifest.precision == "fp16"
    assert manifest.parity.tolerance == FP16_TOL
    graph = onnx.load(str(manifest.artifact("model.onnx"))).graph
    assert graph.input[0].type.tensor_type.elem_type == onnx.TensorProto.FLOAT
    assert any(init.data_type == onnx.TensorProto.FLOAT16 for init in graph.initializer)
    worst = max(c.max_abs_diff for c in manifest.parity.checks)
    assert 0 < worst <= FP16_TOL * 10


class FixedGridPool(nn.Module):
    """Adaptive pooling to a fixed 2x2 grid: the exporter's known silent failure at other sizes."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 5, 3, padding=1)
        self.pool = nn.AdaptiveAvgPool2d((2, 2))
        self.head = nn.Linear(20, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.pool(self.conv(x)).flatten(1))


def test_parity_failure_fails_loudly_and_writes_nothing(tmp_path: Path) -> None:
    preset = Preset("pool-bug", "classification", "custom", {}, ("a", "b", "c", "d"), 64, dynamic_size=True)
    ckpt = tmp_path / "pool.pth"
    model = FixedGridPool().eval()
    torch.save(model.state_dict(), ckpt)
    src = ExportSource(model, preset, ckpt, "preset")
    with pytest.raises(ParityError, match="parity failed"):
        export_entry(src, "pool-bug", "1", tmp_path / "store", progress=False)
    assert list((tmp_path / "store" / "pool-bug").iterdir()) == []


def test_triton_entry_parses_as_model_config(r18_store: Path) -> None:
    from google.protobuf import text_format
    from tritonclient.grpc import model_config_pb2

    entry = r18_store / "triton" / "r18"
    config = text_format.Parse((entry / "config.pbtxt").read_text(), model_config_pb2.ModelConfig())
    assert config.platform == "onnxruntime_onnx" and config.max_batch_size == 8
    assert list(config.input[0].dims) == [3, 128, 128] and list(config.output[0].dims) == [10]
    assert config.dynamic_batching.max_queue_delay_microseconds > 0
    assert (entry / "1" / "model.onnx").read_bytes() == (r18_store / "r18" / "1" / "model.onnx").read_bytes()


def test_existing_version_is_not_overwritten_without_force(r18_store: Path, r18_checkpoint: Path) -> None:
    result = run_export(str(r18_checkpoint), "--preset", "resnet18-csra-128", "--name", "r18",
                        "--store", str(r18_store))
    assert result.returncode == 2 and "already exists" in result.stderr


def test_manifest_json_is_the_source_of_truth_for_classes(r18_store: Path) -> None:
    data = json.loads((r18_store / "r18" / "1" / "manifest.json").read_text())
    assert data["class_names"] == list(models.get_preset("resnet18-csra-128").class_names)
    assert shutil.which("java") is not None  # TorchServe needs it; the .mar test below relies on it


def test_deeplabv2_r18_exports_pixel_logits_at_any_size(tmp_path: Path) -> None:
    ckpt = save_random("deeplabv2-r18", tmp_path / "seg.pth", seed=5)
    manifest = export_entry(resolve_source(ckpt, "deeplabv2-r18", image_size=96), "seg", "1", tmp_path / "store",
                            formats=("onnx", "torchscript", "triton"), progress=False)
    assert manifest.task == "segmentation" and manifest.output.kind == "pixel_logits"
    assert manifest.class_names[0] == "background" and len(manifest.class_names) == 11
    sizes = {tuple(c.input[2:]) for c in manifest.parity.checks}
    assert len(sizes) >= 3
    session = ort.InferenceSession(str(manifest.artifact("model.onnx")), providers=["CPUExecutionProvider"])
    model = models.load_checkpoint(models.create_model("deeplabv2-r18"), ckpt).eval()
    x = torch.rand(2, 3, 72, 136)
    out = session.run(None, {"images": x.numpy()})[0]
    assert out.shape == (2, 11, 72, 136)
    with torch.no_grad():
        expected = model(x).numpy()
    np.testing.assert_allclose(out, expected, atol=1e-3 * max(1.0, float(np.abs(expected).max())))
    assert (out.argmax(1) == expected.argmax(1)).mean() > 0.999
    config = (tmp_path / "store" / "triton" / "seg" / "config.pbtxt").read_text()
    assert "dims: [ 3, -1, -1 ]" in config and "dims: [ 11, -1, -1 ]" in config


def test_a_threshold_set_at_export_is_written_with_its_source(tmp_path: Path, r18_checkpoint: Path) -> None:
    store = tmp_path / "store"
    done = run_export(str(r18_checkpoint), "--preset", "resnet18-csra-128", "--name", "r18", "--store", str(store),
                      "--formats", "onnx", "--threshold", "0.3")
    assert done.returncode == 0, done.stderr[-1000:]
    manifest = load_manifest(store / "r18" / "1")
    assert manifest.threshold == 0.3 and manifest.threshold_source == "set at export (--threshold)"

    for value, message in (("1.5", "must lie strictly between 0 and 1"), ("0", "must lie strictly between 0 and 1"),
                           ("half", "'half' is not a number")):
        done = run_export(str(r18_checkpoint), "--name", "bad", "--store", str(store), "--threshold", value)
        assert done.returncode == 2 and message in done.stderr and "Traceback" not in done.stderr
    segmenter = save_random("deeplabv2-r18", tmp_path / "seg.pth", seed=5)
    done = run_export(str(segmenter), "--preset", "deeplabv2-r18", "--name", "seg", "--store", str(store),
                      "--threshold", "0.3")
    assert done.returncode == 2 and "is not a multi-label (sigmoid) classifier" in done.stderr
    assert done.stderr.strip().count("\n") == 0 and not (store / "seg").exists()
