"""INT8 / FP16 variants of a small trained classifier: built, listed with their sha256, loadable, and judged.

The classifier is MobileNetV2-CSRA fine-tuned briefly from the ImageNet trunk on embedded scenes (the shared
``fine_tuned`` fixture), so the guard judges a model that has learnt something (its mAP is checked against the
chance level). The guard's figures are
recomputed here with scikit-learn from direct ONNX Runtime runs on the test split.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from sklearn.metrics import average_precision_score

from common.datasets import evaluation_set, read_rgb, training_images
from export.pipeline import VariantRequest, add_variants
from export.variants import calibration_files, kept_in_float, parse_variants
from model_store.manifest import load_manifest, sha256_file
from robustness.evaluation.conditions import InputBuilder
from tests.conftest import FineTuned

ROOT = Path(__file__).resolve().parents[2]
TEST_IMAGES = 64


def run(module: str, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", module, *args], capture_output=True, text=True, cwd=ROOT)


@pytest.fixture(scope="module")
def scenes(fine_tuned: FineTuned) -> Path:
    """Embedded classification scenes: 192 training images (calibration) and 64 test images (the guard)."""
    return fine_tuned.data


@pytest.fixture(scope="module")
def quantised(fine_tuned: FineTuned, scenes: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The entry exported through the CLI with int8 and fp16 variants (calibration: the train split)."""
    store = tmp_path_factory.mktemp("variant-store")
    result = run("export", str(fine_tuned.checkpoint), "--name", "tiny", "--store", str(store), "--formats", "onnx",
                 "--variants", "int8,fp16", "--calib", str(scenes), "--calib-images", "64", "--calib-method",
                 "percentile", "--guard-data", str(scenes), "--speed-seconds", "0.2")
    assert result.returncode == 0, result.stderr[-2000:]
    assert "int8: " in result.stdout and "fp16: " in result.stdout
    return store / "tiny" / "1"


def direct_logits(model: Path, inputs: np.ndarray) -> np.ndarray:
    session = ort.InferenceSession(str(model), providers=["CPUExecutionProvider"])
    return np.concatenate([session.run(None, {"images": inputs[i:i + 16]})[0] for i in range(0, len(inputs), 16)])


def test_variants_are_listed_with_their_sha256_and_load(quantised: Path) -> None:
    manifest = load_manifest(quantised)  # verifies every listed file's size and sha256
    assert [v.precision for v in manifest.variants] == ["int8", "fp16"]
    for variant in manifest.variants:
        path = quantised / variant.file
        assert manifest.files[variant.file].sha256 == sha256_file(path)
        session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        out = session.run(None, {"images": np.zeros((2, 3, 128, 128), np.float32)})[0]
        assert out.shape == (2, 10) and out.dtype == np.float32  # fp32 IO for both
    graph = onnx.load(str(quantised / "model.int8.onnx")).graph
    ops = {node.op_type for node in graph.node}
    assert {"QuantizeLinear", "DequantizeLinear"} <= ops
    assert graph.input[0].type.tensor_type.elem_type == onnx.TensorProto.FLOAT
    fp16_weights = [t for t in onnx.load(str(quantised / "model.fp16.onnx")).graph.initializer
                    if t.data_type == onnx.TensorProto.FLOAT16]
    assert len(fp16_weights) > 50


def test_guard_figures_match_an_independent_scikit_learn_oracle(quantised: Path, scenes: Path) -> None:
    manifest = load_manifest(quantised)
    int8 = manifest.variant("int8")
    assert int8.setup["calibration_method"] == "percentile" and int8.setup["calibration_images"] == 64
    assert int8.setup["guard_images"] == TEST_IMAGES and int8.setup["guard_split"] == "test"
    test_set = evaluation_set(scenes, "classification")
    builder = InputBuilder((128, 128), manifest.input.mean, manifest.input.std)
    inputs = np.stack([builder.normalise(builder.resize(read_rgb(item.image))) for item in test_set.items])
    targets = test_set.targets
    present = (targets == 1).any(axis=0)

    def oracle_map(model: Path) -> float:
        scores = direct_logits(model, inputs)
        aps = []
        for c in np.flatnonzero(present):
            decided = targets[:, c] != 0  # 0 marks a difficult-only label, which VOC ignores
            aps.append(average_precision_score(targets[decided, c] == 1, scores[decided, c]))
        return 100 * float(np.mean(aps))

    fp32_map, int8_map = oracle_map(quantised / "model.onnx"), oracle_map(quantised / "model.int8.onnx")
    m = int8.measures
    assert m["mAP_fp32"] == pytest.approx(fp32_map, abs=1e-6)
    assert m["mAP"] == pytest.approx(int8_map, abs=1e-6)
    assert m["mAP_delta"] == pytest.approx(int8_map - fp32_map, abs=1e-6)
    chance = 100 * float(np.mean([(targets[targets[:, c] != 0, c] == 1).mean() for c in np.flatnonzero(present)]))
    assert fp32_map > 1.5 * chance, (fp32_map, chance)  # the guard judges a model that knows something
    assert m["mAP_delta_ci_low"] <= m["mAP_delta"] <= m["mAP_delta_ci_high"]
    assert m["masked_mAP_fp32"] < m["mAP_fp32"]  # b6 masks hide most of each image
    assert 0.5 < m["top_label_agreement"] <= 1.0
    assert m["images_per_s"] > 0 and m["speedup"] == pytest.approx(m["images_per_s"] / m["fp32_images_per_s"])
    assert int8.setup["speed_provider"] == "CPUExecutionProvider" and int8.setup["speed_seconds"] == 0.2
    assert (int8.status == "accepted") == (-m["mAP_delta"] <= 0.5)
    assert manifest.variant("fp16").measures["top_label_agreement"] > 0.97  # fp16 barely changes the logits


def test_an_impossible_tolerance_rejects_with_the_reason(quantised: Path, scenes: Path, tmp_path: Path) -> None:
    entry = tmp_path / "tiny" / "1"
    entry.mkdir(parents=True)
    for name in ("manifest.json", "model.onnx"):
        (entry / name).write_bytes((quantised / name).read_bytes())
    document = json.loads((entry / "manifest.json").read_text())
    document["files"] = {"model.onnx": document["files"]["model.onnx"]}
    document["variants"] = []
    (entry / "manifest.json").write_text(json.dumps(document))
    request = VariantRequest(("int8",), scenes, scenes, tolerance=-100.0, calib_images=32, calib_method="minmax",
                             guard_images=24, speed_seconds=0.1)
    manifest = add_variants(entry, request, progress=False)
    int8 = manifest.variant("int8")
    assert int8.status == "rejected"
    assert "mAP changes by" in int8.reason and "tolerance -100" in int8.reason
    assert "model.int8.onnx" in load_manifest(entry).files  # kept and listed, so it can still be inspected


def test_calibration_never_touches_the_guard_split(scenes: Path, tmp_path: Path) -> None:
    files = calibration_files(scenes, "classification", limit=500)
    assert len(files) == 192 and set(files) == set(training_images(scenes, "classification"))
    assert not {f.name for f in files} & {item.image.name for item in evaluation_set(scenes, "classification").items}
    sampled = calibration_files(scenes, "classification", limit=20, seed=3)
    assert len(sampled) == 20 and sampled == calibration_files(scenes, "classification", limit=20, seed=3)
    folder = tmp_path / "photos"
    folder.mkdir()
    for path in files[:3]:
        (folder / path.name).write_bytes(path.read_bytes())
    with pytest.raises(ValueError, match="3 calibration images found, at least 8"):
        calibration_files(folder, "classification")


def test_the_first_and_last_convolutions_stay_in_float(quantised: Path) -> None:
    first, last = kept_in_float(quantised / "model.onnx")
    graph = onnx.load(str(quantised / "model.int8.onnx")).graph
    convs = [n for n in graph.node if n.op_type == "Conv"]
    producers = {o: n.op_type for n in graph.node for o in n.output}
    weight_is_dequantised = [producers.get(c.input[1]) == "DequantizeLinear" for c in convs]
    assert not weight_is_dequantised[0] and not weight_is_dequantised[-1]
    assert all(weight_is_dequantised[1:-1])
    assert first != last


@pytest.mark.parametrize(("argv", "message"), [
    (["--variants", "int4"], "unknown variant(s) int4"),
    (["--variants", "int8", "--guard-data", "."], "the int8 variant needs --calib DIR"),
    (["--variants", "fp16"], "variants need --guard-data DIR"),
    (["--variants", "int8", "--calib", "/nonexistent/calib"], "--calib /nonexistent/calib: not found"),
    (["--variants", "fp16", "--guard-data", ".", "--speed-seconds", "0"], "--speed-seconds must lie in (0, 60]"),
    (["--variants", "fp16", "--guard-data", ".", "--speed-seconds", "inf"], "--speed-seconds must lie in (0, 60]"),
])
def test_bad_variant_flags_are_one_line_errors(r18_checkpoint: Path, tmp_path: Path, argv: list[str],
                                               message: str) -> None:
    result = run("export", str(r18_checkpoint), "--name", "x", "--store", str(tmp_path), "--formats", "onnx", *argv)
    assert result.returncode == 2
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith("error: ") and message in last and "Traceback" not in result.stderr
    assert not (tmp_path / "x" / "1").exists()  # nothing half-written


def test_parse_variants_and_request_validation() -> None:
    assert parse_variants("fp16, int8,fp16") == ("fp16", "int8")
    with pytest.raises(ValueError, match="calibration method 'kl'"):
        VariantRequest(("int8",), Path("."), calib_method="kl")
