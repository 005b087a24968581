"""The store contract: ``load_manifest`` verifies every artifact, old manifests load or say to re-export."""

import json
import shutil
from pathlib import Path

import pytest

from model_store.manifest import Manifest, ManifestError, entry_dir, list_entries, load_manifest


@pytest.fixture
def entry(tmp_path: Path, store: Path) -> Path:
    copy = tmp_path / "r18" / "1"
    shutil.copytree(store / "r18" / "1", copy)
    return copy


def test_intact_entry_loads(entry: Path) -> None:
    assert load_manifest(entry).name == "r18"


def test_altered_artifact_is_refused(entry: Path) -> None:
    data = bytearray((entry / "model.onnx").read_bytes())
    data[len(data) // 2] ^= 0xFF
    (entry / "model.onnx").write_bytes(bytes(data))
    with pytest.raises(ManifestError, match=r"model\.onnx: sha256 differs from the manifest \(altered\)"):
        load_manifest(entry)


def test_truncated_artifact_is_refused(entry: Path) -> None:
    data = (entry / "model.pt").read_bytes()
    (entry / "model.pt").write_bytes(data[: len(data) // 2])
    with pytest.raises(ManifestError, match=r"model\.pt: \d+ bytes, manifest says \d+ \(truncated or altered\)"):
        load_manifest(entry)


def test_missing_artifact_is_refused(entry: Path) -> None:
    (entry / "model.onnx").unlink()
    with pytest.raises(ManifestError, match=r"model\.onnx: listed in the manifest but missing"):
        load_manifest(entry)


def test_missing_or_broken_manifest_is_refused(entry: Path) -> None:
    (entry / "manifest.json").write_text("{not json")
    with pytest.raises(ManifestError, match="not valid JSON"):
        load_manifest(entry)
    (entry / "manifest.json").unlink()
    with pytest.raises(ManifestError, match="manifest not found"):
        load_manifest(entry)


def test_latest_version_is_found(tmp_path: Path, entry: Path) -> None:
    shutil.copytree(entry, tmp_path / "r18" / "10")
    shutil.copytree(entry, tmp_path / "r18" / "2")
    assert entry_dir(tmp_path, "r18").name == "10"
    assert list_entries(tmp_path) == [tmp_path / "r18" / "10"]
    with pytest.raises(ManifestError, match="must match"):
        entry_dir(tmp_path, "../etc")


def test_a_staging_folder_is_never_the_latest_version(tmp_path: Path, entry: Path) -> None:
    shutil.copytree(entry, tmp_path / "r18" / ".2.staging-123")
    assert entry_dir(tmp_path, "r18").name == "1"


def minimal(task: str, dynamic: bool) -> Manifest:
    return Manifest.from_json({
        "schema": 2, "name": "m", "version": "3", "task": task, "class_names": ["x", "y", "z"], "files": {},
        "input": {"name": "images", "size": [64, 48], "dynamic_size": dynamic, "mean": [0, 0, 0], "std": [1, 1, 1]},
        "output": {"name": "logits"},
    })


def test_tensor_shapes_use_minus_one_for_the_batch_and_dynamic_axes() -> None:
    assert minimal("classification", False).tensor_shapes() == ([-1, 3, 64, 48], [-1, 3])
    assert minimal("classification", True).tensor_shapes() == ([-1, 3, -1, -1], [-1, 3])
    assert minimal("segmentation", False).tensor_shapes() == ([-1, 3, 64, 48], [-1, 3, 64, 48])
    assert minimal("segmentation", True).tensor_shapes() == ([-1, 3, -1, -1], [-1, 3, -1, -1])


def test_written_manifest_reads_back_equal(entry: Path) -> None:
    manifest = load_manifest(entry)
    document = json.loads((entry / "manifest.json").read_text())
    assert document["schema"] == 2 and "architecture" not in document
    assert Manifest.from_json(manifest.to_json(), entry) == manifest
    assert manifest.preset.summary() == {"preset": "resnet18-csra-128", "arch": "resnet_csra", "depth": 18,
                                         "heads": 1, "lam": 0.1}


def test_schema_1_manifest_still_loads(entry: Path) -> None:
    """Schema 1 kept a partial copy of the preset as "architecture" and the whole preset under "preset"."""
    document = json.loads((entry / "manifest.json").read_text())
    document["schema"] = 1
    document["architecture"] = document["preset"]["name"]
    document["preset"] = {**document["preset"], "task": "classification", "class_names": ["circle"] * 10,
                          "image_size": 128}
    (entry / "manifest.json").write_text(json.dumps(document))
    old = load_manifest(entry)
    assert old.preset.arch_args == {"depth": 18} and old.input.size == (128, 128) and old.activation == "sigmoid"


def test_unreadable_old_manifest_says_to_re_export(entry: Path) -> None:
    document = json.loads((entry / "manifest.json").read_text())
    del document["input"]["mean"]
    (entry / "manifest.json").write_text(json.dumps(document))
    with pytest.raises(ManifestError, match=r"manifest\.json: missing field .mean.; re-export it with `python -m"):
        load_manifest(entry)
    document["schema"] = 7
    (entry / "manifest.json").write_text(json.dumps(document))
    with pytest.raises(ManifestError, match="schema 7, this version reads schema 1 or 2; re-export"):
        load_manifest(entry)


@pytest.mark.parametrize("name", ["../r18.onnx", "/etc/passwd", "..", "sub/model.onnx", "a\\b.onnx", "", "x\x00y"])
@pytest.mark.parametrize("where", ["files", "variants"])
def test_file_names_that_would_leave_the_entry_are_refused_before_anything_is_opened(entry: Path, name: str,
                                                                                      where: str) -> None:
    document = json.loads((entry / "manifest.json").read_text())
    if where == "files":
        document["files"][name] = document["files"].pop("model.onnx")
    else:
        document["variants"] = [{"file": name, "precision": "int8", "status": "accepted"}]
    (entry / "manifest.json").write_text(json.dumps(document))
    with pytest.raises(ManifestError, match=r"must be a plain file name inside the entry folder"):
        load_manifest(entry, verify=False)
