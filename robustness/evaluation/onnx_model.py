"""The model side of an evaluation: the ``EvalModel`` protocol and an ONNX Runtime implementation of it.

The server plugs its own runtime in through the same protocol, so it stays minimal: a name, the store
manifest (input size, normalisation, task, classes, threshold) and ``predict`` on a float32 NCHW batch.
"""

from __future__ import annotations

from pathlib import Path
from typing import Protocol, runtime_checkable

import numpy as np
import onnxruntime as ort

from common.compute import available_cores, onnx_providers
from model_store.manifest import (
    MANIFEST,
    ONNX_FILE,
    Manifest,
    ManifestError,
    entry_dir,
    load_manifest,
    verified_artifact,
)
from robustness.evaluation.reference import on_reference_path

MODEL_FILE = ONNX_FILE


@runtime_checkable
class EvalModel(Protocol):
    """What the evaluator needs from a model: its manifest and raw outputs (logits) for a batch."""

    name: str
    manifest: Manifest

    def predict(self, batch: np.ndarray) -> np.ndarray:
        """Logits for a float32 (N, 3, H, W) batch: (N, C) for classifiers, (N, C, H, W) for segmenters."""
        ...


def resolve_entry(path: str | Path) -> Path:
    """A store version folder from a version folder or an entry folder (its highest version)."""
    path = Path(path)
    if (path / MANIFEST).is_file():
        return path
    if not path.is_dir():
        raise ManifestError(f"{path}: model folder not found")
    return entry_dir(path.parent, path.name)


def evaluation_threads() -> int:
    """ONNX Runtime's intra-op threads in an evaluation: every usable CPU but one, which the thread that perturbs
    the next inputs keeps busy (on two CPUs: one thread, so inference and perturbation each hold one core)."""
    return max(1, available_cores() - 1)


def session_options(threads: int | None) -> ort.SessionOptions:
    """ONNX Runtime's defaults (``threads`` None), or ``threads`` intra-op threads that sleep instead of spinning
    between operators, so they leave the CPU to the perturbing thread."""
    options = ort.SessionOptions()
    if threads is not None:
        options.intra_op_num_threads = threads
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    return options


class OnnxModel:
    """A store entry's ``model.onnx`` (or another ONNX file it lists, e.g. a variant) run by ONNX Runtime (an
    ``EvalModel``); ``threads`` None keeps ONNX Runtime's own thread settings."""

    def __init__(self, manifest: Manifest, name: str | None = None, filename: str = MODEL_FILE,
                 precision: str = "fp32", threads: int | None = None) -> None:
        self.manifest, self.precision = manifest, precision
        self.name = name or manifest.name
        artifact = verified_artifact(manifest, filename)
        self.session = ort.InferenceSession(str(artifact), session_options(threads), providers=onnx_providers())
        self.input_name = self.session.get_inputs()[0].name
        self.providers = self.session.get_providers()

    def predict(self, batch: np.ndarray) -> np.ndarray:
        """Logits of the graph's first output for a float32 NCHW batch."""
        return self.session.run(None, {self.input_name: np.ascontiguousarray(batch, dtype=np.float32)})[0]


FP32 = "fp32"


def open_model(path: str | Path, precision: str = FP32) -> OnnxModel:
    """Load a store entry (entry folder = newest version, or a version folder) as an ``OnnxModel``, at fp32 or one
    of its exported variants (``int8``, ``fp16``: named ``<model>@<precision>``, so both can be compared).

    Only the ONNX artifact is verified (size and sha256): it is the one file the evaluation reads. The session runs
    ``evaluation_threads()`` intra-op threads, or ONNX Runtime's defaults when opened inside
    ``reference.reference_path()`` (as the lab ran before); the logits are the same bit for bit either way
    (tests/robustness/evaluation/test_fast_path.py).
    """
    manifest = load_manifest(resolve_entry(path), verify=False)
    threads = None if on_reference_path() else evaluation_threads()
    if precision == FP32:
        return OnnxModel(manifest, threads=threads)
    variant = manifest.variant(precision)
    if variant is None:
        listed = ", ".join([FP32, *(v.precision for v in manifest.variants)])
        raise ValueError(f"{manifest.name} has no {precision} variant (it has: {listed}); export one with "
                         f"python -m export ... --variants {precision}")
    return OnnxModel(manifest, name=f"{manifest.name}@{precision}", filename=variant.file, precision=precision,
                     threads=threads)
