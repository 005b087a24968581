"""The model store: ``<store>/<name>/<version>/`` entries with a verified ``manifest.json``."""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

MANIFEST = "manifest.json"
SCHEMA_VERSION = 1
NAME_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")


class ManifestError(ValueError):
    """A store entry that is missing, malformed, or whose artifacts fail verification."""


def sha256_file(path: Path, chunk: int = 1 << 20) -> str:
    """Hex sha256 of a file, read in chunks."""
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def file_record(path: Path) -> dict[str, Any]:
    """The ``{"sha256", "bytes"}`` record a manifest keeps for one artifact."""
    return {"sha256": sha256_file(path), "bytes": path.stat().st_size}


def validate_name(name: str) -> str:
    """Return ``name`` if it is a safe store name (letters, digits, ``_.-``), else raise."""
    if not NAME_PATTERN.match(name):
        raise ManifestError(f"model name {name!r} must match {NAME_PATTERN.pattern}")
    return name


@dataclass(frozen=True)
class Manifest:
    """A verified store entry: the parsed manifest plus the folder it lives in."""

    path: Path
    data: dict[str, Any]

    @property
    def name(self) -> str:
        """Model name."""
        return self.data["name"]

    @property
    def version(self) -> str:
        """Entry version (a folder name, usually an integer)."""
        return str(self.data["version"])

    @property
    def task(self) -> str:
        """``classification`` or ``segmentation``."""
        return self.data["task"]

    @property
    def class_names(self) -> list[str]:
        """Output class names in logit order."""
        return list(self.data["class_names"])

    @property
    def input(self) -> dict[str, Any]:
        """Input spec: name, size [H, W], dynamic_size, resize, mean, std."""
        return self.data["input"]

    @property
    def output(self) -> dict[str, Any]:
        """Output spec: name and kind."""
        return self.data["output"]

    @property
    def activation(self) -> str:
        """How logits become scores: ``sigmoid`` (multi-label), ``softmax`` (single-label or per pixel)."""
        return str(self.output.get("activation", "sigmoid" if self.task == "classification" else "softmax"))

    @property
    def threshold(self) -> float:
        """Decision threshold on sigmoid scores (classification)."""
        return float(self.data.get("threshold", 0.5))

    def artifact(self, filename: str) -> Path:
        """Path of a verified artifact in this entry, or a clear error if the entry has none."""
        if filename not in self.data["files"]:
            raise ManifestError(f"{self.path}: entry has no {filename} (it has {', '.join(self.data['files'])})")
        return self.path / filename


REQUIRED_KEYS = ("schema", "name", "version", "task", "class_names", "input", "output", "files")


def load_manifest(entry: str | Path, verify: bool = True) -> Manifest:
    """Read ``entry/manifest.json`` and verify the sha256 and size of every artifact it lists."""
    entry = Path(entry)
    path = entry / MANIFEST
    if not path.is_file():
        raise ManifestError(f"{path}: manifest not found")
    try:
        data = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ManifestError(f"{path}: not valid JSON ({exc})") from None
    missing = [k for k in REQUIRED_KEYS if k not in data]
    if missing:
        raise ManifestError(f"{path}: missing field(s) {', '.join(missing)}")
    if data["schema"] != SCHEMA_VERSION:
        raise ManifestError(f"{path}: schema {data['schema']!r}, this version reads schema {SCHEMA_VERSION}")
    if verify:
        for filename, record in data["files"].items():
            artifact = entry / filename
            if not artifact.is_file():
                raise ManifestError(f"{artifact}: listed in the manifest but missing")
            size = artifact.stat().st_size
            if size != record["bytes"]:
                raise ManifestError(f"{artifact}: {size} bytes, manifest says {record['bytes']} (truncated or altered)")
            if sha256_file(artifact) != record["sha256"]:
                raise ManifestError(f"{artifact}: sha256 differs from the manifest (altered)")
    return Manifest(entry, data)


def write_manifest(entry: Path, data: dict[str, Any]) -> Path:
    """Write ``manifest.json`` atomically (temp file then rename)."""
    path = entry / MANIFEST
    tmp = entry / (MANIFEST + ".tmp")
    tmp.write_text(json.dumps(data, indent=2, sort_keys=False) + "\n")
    tmp.replace(path)
    return path


def _version_key(version: str) -> tuple[int, int | str]:
    return (0, int(version)) if version.isdigit() else (1, version)


def entry_dir(store: str | Path, name: str, version: str | None = None) -> Path:
    """Folder of ``name`` at ``version`` (default: the highest version present)."""
    model_dir = Path(store) / validate_name(name)
    if version is not None:
        return model_dir / str(version)
    versions = sorted((p.name for p in model_dir.iterdir() if (p / MANIFEST).is_file()), key=_version_key) \
        if model_dir.is_dir() else []
    if not versions:
        raise ManifestError(f"{model_dir}: no exported versions")
    return model_dir / versions[-1]


def list_entries(store: str | Path) -> list[Path]:
    """The latest-version folder of every model in the store, sorted by name."""
    store = Path(store)
    if not store.is_dir():
        raise ManifestError(f"{store}: model store folder not found")
    names = sorted(p.name for p in store.iterdir() if p.is_dir() and NAME_PATTERN.match(p.name))
    entries = []
    for name in names:
        try:
            entries.append(entry_dir(store, name))
        except ManifestError:
            continue
    return entries
