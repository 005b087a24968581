"""Lower-precision ONNX variants of a store entry: INT8 (static QDQ, per-channel weights) and FP16 (fp32 IO).

INT8 follows ONNX Runtime's recipe for CNNs on x86: ``quant_pre_process`` (graph optimisation and shape
inference), then ``quantize_static`` in QDQ format with per-channel weights and uint8 activations. The recipe
(``INT8_RECIPES``) chooses the weights: int8 (U8S8, the kernels VNNI accelerates), int8 with ``reduce_range`` (7-bit
weights, so that AVX2's U8S8 kernels cannot saturate their 16-bit sums) or uint8 (U8U8). Activations are
calibrated on images prepared exactly as the server prepares them; MinMax takes the moving average of the
per-batch ranges rather than the extremes, which measured closer to fp32.
With ``--calib-method auto`` every method is tried; the one whose outputs stay closest to fp32 on calibration
images held out of the calibration itself is kept. The guard (``export.guard``) then judges the result on the
test split, which no calibration step has seen.
"""

from __future__ import annotations

import random
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
from onnxruntime.quantization import CalibrationDataReader, CalibrationMethod, QuantFormat, QuantType, quantize_static
from onnxruntime.quantization.shape_inference import quant_pre_process
from onnxruntime.transformers.float16 import convert_float_to_float16
from tqdm import tqdm

from common.datasets import read_rgb, training_images
from common.kinds import Activation, Task
from common.scores import class_scores
from model_store.manifest import VARIANT_PRECISIONS, Manifest
from robustness.evaluation.conditions import InputBuilder

VARIANT_FILES = {p.value: p.onnx_file for p in VARIANT_PRECISIONS}
CALIBRATION_METHODS = {"minmax": CalibrationMethod.MinMax, "entropy": CalibrationMethod.Entropy,
                       "percentile": CalibrationMethod.Percentile}
CALIBRATION_CHOICES = ("auto", *CALIBRATION_METHODS)
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff")
DEFAULT_CALIBRATION_IMAGES = 200
MIN_CALIBRATION_IMAGES = 8
SELECTION_SHARE = 0.2  # of the calibration images, held out to choose the method under ``auto``


@dataclass(frozen=True)
class Int8Recipe:
    """How ``quantize_static`` stores weights: their type, whether they use 7 of 8 bits, and a description."""

    weight_type: QuantType
    reduce_range: bool
    format: str


INT8_RECIPES = {
    "u8s8": Int8Recipe(QuantType.QInt8, False, "QDQ, per-channel int8 weights, uint8 activations"),
    "u8s8-reduce-range": Int8Recipe(QuantType.QInt8, True, "QDQ, per-channel int8 weights in 7 bits "
                                    "(reduce_range), uint8 activations"),
    "u8u8": Int8Recipe(QuantType.QUInt8, False, "QDQ, per-channel uint8 weights, uint8 activations"),
}
# 7-bit weights: the same figures on AVX2 and AVX-512 VNNI kernels, at U8S8's speed on VNNI (docs/benchmarks.md)
DEFAULT_INT8_RECIPE = "u8s8-reduce-range"


def parse_variants(spec: str | Sequence[str]) -> tuple[str, ...]:
    """Validate a comma list of variants (``int8``, ``fp16``)."""
    items = [s.strip().lower() for s in (spec.split(",") if isinstance(spec, str) else spec) if s.strip()]
    unknown = [s for s in items if s not in VARIANT_FILES]
    if unknown:
        raise ValueError(f"unknown variant(s) {', '.join(unknown)}; choose from {', '.join(VARIANT_FILES)}")
    return tuple(dict.fromkeys(items))


def calibration_files(source: str | Path, task: str, limit: int = DEFAULT_CALIBRATION_IMAGES,
                      seed: int = 0) -> list[Path]:
    """Up to ``limit`` images: a dataset's TRAIN split (any layout the trainers read), else every image file under
    a folder; a seeded sample when there are more."""
    source = Path(source)
    if not source.exists():
        raise FileNotFoundError(f"calibration source not found: {source}")
    try:
        files = training_images(source, task)
    except (ValueError, FileNotFoundError):
        if not source.is_dir():
            raise ValueError(f"{source}: not a dataset nor a folder of images") from None
        files = sorted(p for p in source.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())
    if len(files) < MIN_CALIBRATION_IMAGES:
        raise ValueError(f"{source}: {len(files)} calibration images found, at least {MIN_CALIBRATION_IMAGES} "
                         "are needed (100-500 is the usual range)")
    if len(files) > limit:
        files = sorted(random.Random(seed).sample(files, limit))
    return files


def prepared_inputs(manifest: Manifest, files: Sequence[Path], progress: bool = False) -> np.ndarray:
    """The (N, 3, H, W) float32 model inputs of image files, prepared as the server prepares uploads."""
    builder = InputBuilder(manifest.input_size, manifest.input.mean, manifest.input.std)
    rows = [builder.normalise(builder.resize(read_rgb(path)))
            for path in tqdm(files, desc="calibration images", unit="img", disable=not progress)]
    return np.stack(rows).astype(np.float32)


class ArrayFeed(CalibrationDataReader):
    """Feeds prepared inputs to the calibrator in small batches."""

    def __init__(self, input_name: str, inputs: np.ndarray, batch: int = 8) -> None:
        self.input_name, self.inputs, self.batch = input_name, inputs, batch
        self.start = 0

    def get_next(self) -> dict[str, np.ndarray] | None:
        """The next batch, or None when every input has been fed."""
        if self.start >= len(self.inputs):
            return None
        chunk = self.inputs[self.start:self.start + self.batch]
        self.start += self.batch
        return {self.input_name: chunk}


def kept_in_float(model: Path) -> list[str]:
    """The first and the last convolution: the stem sees raw pixels and the last one makes the logits, the two
    places where 8-bit rounding costs the most accuracy for the least time."""
    convs = [node.name for node in onnx.load(str(model), load_external_data=False).graph.node if node.op_type == "Conv"]
    return list(dict.fromkeys([convs[0], convs[-1]])) if convs else []


def quantize_int8(model: Path, out: Path, input_name: str, inputs: np.ndarray, method: str,
                  recipe: str = DEFAULT_INT8_RECIPE) -> Path:
    """Static INT8 quantisation (QDQ, per-channel weights as ``recipe`` says, uint8 activations) calibrated on
    ``inputs``; the first and last convolutions stay in float."""
    chosen = INT8_RECIPES[recipe]
    with tempfile.TemporaryDirectory(prefix="quant-") as tmp:
        prepared = Path(tmp) / "prepared.onnx"
        # Symbolic shape inference is for transformer graphs and fails on some CNN exports; ONNX's own runs.
        quant_pre_process(str(model), str(prepared), skip_symbolic_shape=True)
        quantize_static(str(prepared), str(out), ArrayFeed(input_name, inputs), quant_format=QuantFormat.QDQ,
                        per_channel=True, activation_type=QuantType.QUInt8, weight_type=chosen.weight_type,
                        reduce_range=chosen.reduce_range,
                        calibrate_method=CALIBRATION_METHODS[method], nodes_to_exclude=kept_in_float(prepared),
                        extra_options={"CalibMovingAverage": True} if method == "minmax" else {})
    return out


def convert_fp16(model: Path, out: Path) -> Path:
    """Float16 weights and compute with float32 inputs and outputs (ONNX Runtime's converter)."""
    converted = convert_float_to_float16(onnx.load(str(model)), keep_io_types=True)
    onnx.save(converted, str(out))
    return out


def cpu_outputs(model: Path, input_name: str, inputs: np.ndarray, batch: int = 16) -> np.ndarray:
    """Outputs of an ONNX file on the CPU for a stack of inputs."""
    session = ort.InferenceSession(str(model), providers=["CPUExecutionProvider"])
    return np.concatenate([session.run(None, {input_name: inputs[i:i + batch]})[0]
                           for i in range(0, len(inputs), batch)])


def fidelity(reference: np.ndarray, candidate: np.ndarray, activation: str) -> float:
    """Mean absolute difference of the scores, classes on axis 1 (lower is closer to fp32)."""
    def scores(logits: np.ndarray) -> np.ndarray:
        return class_scores(np.moveaxis(logits, 1, -1), activation)

    return float(np.mean(np.abs(scores(reference) - scores(candidate))))


def build_int8(manifest: Manifest, model: Path, out: Path, calibration: np.ndarray,
               method: str, recipe: str = DEFAULT_INT8_RECIPE) -> tuple[str, dict[str, float]]:
    """Quantise with ``method`` (or, for ``auto``, with each method, keeping the closest to fp32 on held-out
    calibration images); the method kept and each tried method's score MAE."""
    if method != "auto":
        quantize_int8(model, out, manifest.input.name, calibration, method, recipe)
        return method, {}
    held = max(2, round(len(calibration) * SELECTION_SHARE))
    fit, check = calibration[:-held], calibration[-held:]
    activation = Activation.SOFTMAX if manifest.task == Task.SEGMENTATION else manifest.activation
    reference = cpu_outputs(model, manifest.input.name, check)
    scores: dict[str, float] = {}
    best: tuple[float, str] | None = None
    with tempfile.TemporaryDirectory(prefix="calibrate-") as tmp:
        for name in CALIBRATION_METHODS:
            candidate = Path(tmp) / f"{name}.onnx"
            quantize_int8(model, candidate, manifest.input.name, fit, name, recipe)
            scores[name] = fidelity(reference, cpu_outputs(candidate, manifest.input.name, check), activation)
            if best is None or scores[name] < best[0]:
                best = (scores[name], name)
                candidate.replace(out)
    assert best is not None
    return best[1], scores
