"""The TorchServe archive: ``<store>/r18.mar`` holds the exported ONNX file, its manifest and the handler.

Serving it with a real TorchServe is a load-test check: tests/loadtests/test_torchserve.py.
"""

import json
import zipfile
from pathlib import Path

from model_store.manifest import load_manifest


def test_mar_archives_the_onnx_model_manifest_and_handler(r18_store: Path) -> None:
    assert (r18_store / "r18.mar").is_file()
    with zipfile.ZipFile(r18_store / "r18.mar") as mar:
        names = set(mar.namelist())
        assert {"model.onnx", "manifest.json", "handler.py", "MAR-INF/MANIFEST.json"} <= names
        entry = load_manifest(r18_store / "r18" / "1")
        assert mar.read("model.onnx") == entry.artifact("model.onnx").read_bytes()
        assert json.loads(mar.read("manifest.json"))["name"] == "r18"
        mar_manifest = json.loads(mar.read("MAR-INF/MANIFEST.json"))
    assert mar_manifest["model"]["modelName"] == "r18" and mar_manifest["model"]["modelVersion"] == "1"
    assert mar_manifest["model"]["serializedFile"] == "model.onnx"
