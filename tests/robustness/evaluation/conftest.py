"""Real exported models, an embedded test set, and independent ONNX Runtime oracles (no evaluator code).

The models (a ResNet-18 CSRA classifier at 128 px and a DeepLab-V2 R18 segmenter at 64 px, seeded random weights)
and the embedded dataset are built once per test session in a temporary folder of this process, so the suite
needs nothing that `make model-store` builds. Their paths are module constants because parametrize lists and
helpers use them at import time.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest
from PIL import Image

from common.datasets import evaluation_set
from export.random_weights import export_random
from robustness.evaluation import EvaluationConfig, evaluate, open_model
from training.datasets import make_dataset

ROOT = Path(__file__).resolve().parents[3]
WORK = Path(tempfile.gettempdir()) / f"occlusion-serve-evaluation-tests-{os.getpid()}"
CLASSIFIER = WORK / "model_store" / "demo-classifier"
SEGMENTER = WORK / "model_store" / "demo-segmenter"
CLASSIFICATION_DATA = WORK / "data" / "classification"
SEGMENTATION_DATA = WORK / "data" / "segmentation"
CLASSIFIER_IMAGES = 24
SEGMENTER_IMAGES = 5


@pytest.fixture(scope="session", autouse=True)
def models_and_data() -> Iterator[None]:
    """Build the two store entries and the two embedded datasets (both with ground-truth maps), then remove them."""
    shutil.rmtree(WORK, ignore_errors=True)
    export_random("resnet18-csra-128", CLASSIFIER.name, CLASSIFIER.parent, seed=0)
    export_random("deeplabv2-r18", SEGMENTER.name, SEGMENTER.parent, seed=1, image_size=64)
    make_dataset(CLASSIFICATION_DATA, n_train=2, n_test=CLASSIFIER_IMAGES, image_size=128, seed=0,
                 scenes="classification", progress=False)
    make_dataset(SEGMENTATION_DATA, n_train=2, n_test=SEGMENTER_IMAGES, image_size=96, seed=1,
                 scenes="segmentation", progress=False)
    yield
    shutil.rmtree(WORK, ignore_errors=True)


def copy_entry(source: Path, store: Path, name: str, **changes) -> Path:
    """A store entry folder whose manifest differs from ``source``'s newest version by ``changes`` (ONNX linked)."""
    version = max(p for p in source.iterdir() if (p / "manifest.json").is_file())
    target = store / name / "1"
    target.mkdir(parents=True)
    manifest = json.loads((version / "manifest.json").read_text())
    manifest.update({"name": name, **changes})
    (target / "manifest.json").write_text(json.dumps(manifest))
    (target / "model.onnx").symlink_to(version / "model.onnx")
    return store / name


def direct_inputs(image_path: Path, size: tuple[int, int], mean, std) -> np.ndarray:
    """The (3, H, W) input by the manifest's recipe, written out plainly: bilinear stretch, /255, -mean, /std."""
    with Image.open(image_path) as image:
        resized = image.convert("RGB").resize((size[1], size[0]), Image.BILINEAR)
    x = np.asarray(resized, dtype=np.float64) / 255.0
    return ((x - np.asarray(mean)) / np.asarray(std)).transpose(2, 0, 1).astype(np.float32)


def direct_outputs(entry: Path, inputs: np.ndarray) -> np.ndarray:
    """The ONNX graph's first output, one image at a time on the CPU."""
    version = max(p for p in entry.iterdir() if (p / "manifest.json").is_file())
    session = ort.InferenceSession(str(version / "model.onnx"), providers=["CPUExecutionProvider"])
    name = session.get_inputs()[0].name
    return np.concatenate([session.run(None, {name: x[None]})[0] for x in inputs])


def manifest_of(entry: Path) -> dict:
    """The raw manifest.json of an entry's newest version."""
    version = max(p for p in entry.iterdir() if (p / "manifest.json").is_file())
    return json.loads((version / "manifest.json").read_text())


@pytest.fixture(scope="session")
def classifier_set():
    return evaluation_set(CLASSIFICATION_DATA, "classification", limit=CLASSIFIER_IMAGES)


@pytest.fixture(scope="session")
def classifier_config() -> EvaluationConfig:
    return EvaluationConfig(("b6",), ("gaussian_noise",), (1, 5), seed=3, batch_size=16, bootstrap=200)


@pytest.fixture(scope="session")
def classifier_report(classifier_set, classifier_config) -> dict:
    """demo-classifier compared with a second session of itself on 24 embedded test images."""
    return evaluate([open_model(CLASSIFIER), open_model(CLASSIFIER)], classifier_set, classifier_config)


@pytest.fixture(scope="session")
def segmenter_set():
    return evaluation_set(SEGMENTATION_DATA, "segmentation", limit=SEGMENTER_IMAGES)


@pytest.fixture(scope="session")
def segmenter_report(segmenter_set) -> dict:
    """demo-segmenter compared with itself on 5 embedded test images, one bucket, one corruption."""
    config = EvaluationConfig(("b3",), ("contrast",), (2,), seed=1, batch_size=8, bootstrap=50)
    return evaluate([open_model(SEGMENTER), open_model(SEGMENTER)], segmenter_set, config)


@pytest.fixture()
def scratch_store(tmp_path: Path) -> Path:
    store = tmp_path / "store"
    store.mkdir()
    yield store
    shutil.rmtree(store, ignore_errors=True)
