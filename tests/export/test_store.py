"""``load_manifest`` verifies every artifact before use and names the file that fails."""

import shutil
from pathlib import Path

import pytest

from export.store import ManifestError, entry_dir, list_entries, load_manifest


@pytest.fixture
def entry(tmp_path: Path, r18_store: Path) -> Path:
    copy = tmp_path / "r18" / "1"
    shutil.copytree(r18_store / "r18" / "1", copy)
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
