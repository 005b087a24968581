"""The model-store contract: the typed manifest that ``export`` writes and ``server`` and ``loadtests`` read.

An entry is ``<store>/<name>/<version>/`` holding ``manifest.json`` and the artifacts it lists with their
sha256. This module imports neither torch nor the exporter, so the server reads the store through it alone.
"""

from __future__ import annotations

import enum
import hashlib
import json
import re
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

from common.kinds import ACTIVATIONS, TASKS, Activation, ModelKind, Task, default_activation

MANIFEST = "manifest.json"
SCHEMA_VERSION = 2
READABLE_SCHEMAS = (1, 2)  # schema 1 also stored a partial copy of the preset as "architecture"
NAME_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
REEXPORT = "re-export it with `python -m export`"
ACCEPTED, REJECTED = "accepted", "rejected"


class ManifestError(ValueError):
    """A store entry that is missing, malformed, or whose artifacts fail verification."""


ONNX_FILE = "model.onnx"  # the fp32 ONNX model every entry has
TORCHSCRIPT_FILE = "model.pt"  # the TorchScript model, when the entry was exported with it


class Precision(enum.StrEnum):
    """The numeric precision of an entry's ONNX model; each owns its file name in the entry. A string enum: it
    compares equal to the word manifests, flags and query strings spell, and serialises as that word."""

    FP32 = "fp32"
    INT8 = "int8"
    FP16 = "fp16"

    @property
    def onnx_file(self) -> str:
        """The file of this precision's ONNX model: ``model.onnx`` for fp32, ``model.<precision>.onnx`` else."""
        return ONNX_FILE if self is Precision.FP32 else f"model.{self.value}.onnx"


PRECISION_NAMES = tuple(p.value for p in Precision)  # "fp32", "int8", "fp16"
VARIANT_PRECISIONS = tuple(p for p in Precision if p is not Precision.FP32)


def sha256_file(path: Path, chunk: int = 1 << 20) -> str:
    """Hex sha256 of a file, read in chunks."""
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def validate_name(name: str) -> str:
    """Return ``name`` if it is a safe store name (letters, digits, ``_.-``), else raise."""
    if not NAME_PATTERN.match(name):
        raise ManifestError(f"model name {name!r} must match {NAME_PATTERN.pattern}")
    return name


@dataclass(frozen=True)
class FileRecord:
    """One artifact's size and sha256, as the manifest lists it."""

    sha256: str
    bytes: int

    @classmethod
    def of(cls, path: Path) -> FileRecord:
        """The record of the file at ``path``."""
        return cls(sha256_file(path), path.stat().st_size)


@dataclass(frozen=True)
class InputSpec:
    """How an image becomes the model's input tensor."""

    name: str
    size: tuple[int, int]  # (height, width)
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    dynamic_size: bool = False
    resize: str = "stretch"
    layout: str = "NCHW"
    dtype: str = "float32"
    channels: str = "RGB"
    scale: str = "divide by 255 to [0, 1]"


@dataclass(frozen=True)
class OutputSpec:
    """What the graph returns and how its logits become scores."""

    name: str
    kind: str  # "class_logits" | "pixel_logits"
    activation: Activation
    shape: tuple[str, ...]
    note: str = ""


def output_spec(name: str, task: str, activation: str = Activation.SIGMOID) -> OutputSpec:
    """The output of a classifier (class logits) or a segmenter (pixel logits at the input resolution)."""
    if task == Task.CLASSIFICATION:
        return OutputSpec(name, "class_logits", Activation(activation), ("batch", "classes"))
    return OutputSpec(name, "pixel_logits", Activation.SOFTMAX, ("batch", "classes", "height", "width"),
                      "logits at the input resolution; take argmax, then resize the class map to the image size")


@dataclass(frozen=True)
class PresetRecord:
    """The architecture preset the model was built from."""

    name: str
    arch: str
    arch_args: Mapping[str, Any] = field(default_factory=dict)
    heads: int = 1
    lam: float = 0.1
    pretrained: str = ""
    description: str = ""

    def summary(self) -> dict[str, Any]:
        """Preset name, architecture, its arguments, heads and lambda in one flat mapping (for /models)."""
        return {"preset": self.name, "arch": self.arch, **self.arch_args, "heads": self.heads, "lam": self.lam}


@dataclass(frozen=True)
class ParityCheck:
    """One runtime against eager PyTorch at one input shape."""

    runtime: str
    input: tuple[int, ...]
    max_abs_diff: float
    bound: float
    decision_mismatches: int


@dataclass(frozen=True)
class Parity:
    """The export's parity gate: every runtime agreed with eager PyTorch within the tolerance."""

    tolerance: float
    rule: str
    checks: tuple[ParityCheck, ...]
    max_abs_diff: Mapping[str, float | None]
    passed: bool


@dataclass(frozen=True)
class Variant:
    """A lower-precision artifact next to ``model.onnx`` and the accuracy guard's verdict on it."""

    file: str
    precision: str  # "int8" | "fp16"
    status: str  # "accepted" | "rejected"
    reason: str = ""
    measures: Mapping[str, float | None] = field(default_factory=dict)
    setup: Mapping[str, Any] = field(default_factory=dict)  # calibration and guard settings: data, images, method
    machine: Mapping[str, Any] = field(default_factory=dict)  # where the figures were measured (model_store.machine)
    probe: Mapping[str, float | None] = field(default_factory=dict)  # its figures on the probe set, on that machine

    @property
    def accepted(self) -> bool:
        """True when the accuracy guard admitted this variant."""
        return self.status == ACCEPTED


@dataclass(frozen=True)
class ProbeSet:
    """A few guard images prepared as the model's input, their labels and the fp32 outputs on them: what a server
    re-checks a variant on when it runs on another machine than the one that judged it."""

    inputs: str  # (N, 3, H, W) float32 .npy
    outputs: str  # (N, C) or (N, C, H, W) float32 fp32 logits .npy
    labels: str  # (N, C) int8 targets, or (N, H, W) uint8 class maps at the input size (255 void) .npy
    images: int
    ternary: bool = False  # classification targets hold -1 for negatives and 0 for ignored
    source: str = ""  # the guard data and split the images come from


@dataclass(frozen=True)
class SourceRecord:
    """The checkpoint an entry was exported from."""

    checkpoint: str
    sha256: str
    origin: str  # "preset" | "checkpoint" | "inferred"


@dataclass(frozen=True)
class Manifest:
    """A store entry: everything a server needs to feed the model and read its answer."""

    name: str
    version: str
    task: Task
    class_names: tuple[str, ...]
    threshold: float
    input: InputSpec
    output: OutputSpec
    preset: PresetRecord
    files: Mapping[str, FileRecord]
    parity: Parity
    opset: int
    precision: str
    source: SourceRecord
    tools: Mapping[str, str] = field(default_factory=dict)
    created: str = ""
    variants: tuple[Variant, ...] = ()
    probe: ProbeSet | None = None
    threshold_source: str = ""  # how the threshold was chosen, where a trainer chose it
    path: Path | None = field(default=None, compare=False)  # the entry folder, once written or loaded

    @property
    def activation(self) -> str:
        """How logits become scores: ``sigmoid`` (multi-label), ``softmax`` (single-label or per pixel)."""
        return self.output.activation

    @property
    def kind(self) -> ModelKind:
        """What the model answers: multi-label classifier, single-label classifier or segmenter."""
        return ModelKind.of(self.task, self.activation)

    @property
    def num_classes(self) -> int:
        """Number of output classes."""
        return len(self.class_names)

    @property
    def input_size(self) -> tuple[int, int]:
        """(height, width) the model is fed at."""
        return self.input.size

    def tensor_shapes(self) -> tuple[list[int], list[int]]:
        """Input and output shapes with -1 for the batch (and for spatial axes of dynamic-size models)."""
        spatial = [-1, -1] if self.input.dynamic_size else list(self.input.size)
        return [-1, 3, *spatial], self.kind.output_shape(self.num_classes, spatial)

    def variant(self, precision: str) -> Variant | None:
        """The variant of that precision (``int8``, ``fp16``), or None."""
        return next((v for v in self.variants if v.precision == precision), None)

    def artifact(self, filename: str) -> Path:
        """Path of a verified artifact in this entry, or a clear error if the entry has none."""
        if self.path is None:
            raise ManifestError(f"manifest of {self.name!r} has not been written to a store entry")
        if filename not in self.files:
            raise ManifestError(f"{self.path}: entry has no {filename} (it has {', '.join(self.files)})")
        return self.path / filename

    def to_json(self) -> dict[str, Any]:
        """The ``manifest.json`` document."""
        data = asdict(self)
        del data["path"]
        return {"schema": SCHEMA_VERSION, **_lists(data)}

    @classmethod
    def from_json(cls, data: Mapping[str, Any], path: Path | None = None) -> Manifest:
        """Parse a ``manifest.json`` document; ManifestError names what is missing or wrong."""
        where = path / MANIFEST if path is not None else MANIFEST
        try:
            return _parse(data, path)
        except (KeyError, TypeError, ValueError) as exc:
            detail = f"missing field {exc.args[0]!r}" if isinstance(exc, KeyError) else str(exc)
            raise ManifestError(f"{where}: {detail}; {REEXPORT}") from None


def _lists(value: Any) -> Any:
    """Tuples -> lists and mappings -> dicts, recursively, for JSON."""
    if isinstance(value, Mapping):
        return {k: _lists(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_lists(v) for v in value]
    return value


REQUIRED_KEYS = ("schema", "name", "version", "task", "class_names", "input", "output", "files")


def entry_file_name(name: object) -> str:
    """A file name as a manifest may list it: one plain name inside the entry folder, never a path out of it."""
    if (not isinstance(name, str) or not name or name in (".", "..") or "/" in name or "\\" in name
            or "\x00" in name or Path(name).is_absolute()):
        raise ValueError(f"file name {name!r} must be a plain file name inside the entry folder")
    return name


def _parse(data: Mapping[str, Any], path: Path | None) -> Manifest:
    missing = [k for k in REQUIRED_KEYS if k not in data]
    if missing:
        raise ValueError(f"missing field(s) {', '.join(missing)}")
    if data["schema"] not in READABLE_SCHEMAS:
        readable = " or ".join(map(str, READABLE_SCHEMAS))
        raise ValueError(f"schema {data['schema']!r}, this version reads schema {readable}")
    if data["task"] not in TASKS:
        raise ValueError(f"task {data['task']!r} is not one of {', '.join(TASKS)}")
    spec, out = data["input"], data["output"]
    activation = out.get("activation", default_activation(data["task"]))
    if activation not in ACTIVATIONS:
        raise ValueError(f"activation {activation!r} is not one of {', '.join(ACTIVATIONS)}")
    preset = dict(data.get("preset") or {})
    parity = dict(data.get("parity") or {})
    return Manifest(
        name=str(data["name"]), version=str(data["version"]), task=Task(data["task"]),
        class_names=tuple(data["class_names"]), threshold=float(data.get("threshold", 0.5)),
        input=InputSpec(
            name=spec["name"], size=(int(spec["size"][0]), int(spec["size"][1])), mean=tuple(spec["mean"]),
            std=tuple(spec["std"]), dynamic_size=bool(spec.get("dynamic_size", False)),
            resize=spec.get("resize", "stretch"), layout=spec.get("layout", "NCHW"),
            dtype=spec.get("dtype", "float32"), channels=spec.get("channels", "RGB"),
            scale=spec.get("scale", InputSpec.scale)),
        output=OutputSpec(name=out["name"], kind=out.get("kind", ""), activation=Activation(activation),
                          shape=tuple(out.get("shape", ())), note=out.get("note", "")),
        preset=PresetRecord(
            name=preset.get("name", ""), arch=preset.get("arch", ""), arch_args=dict(preset.get("arch_args", {})),
            heads=int(preset.get("heads", 1)), lam=float(preset.get("lam", 0.1)),
            pretrained=preset.get("pretrained", ""), description=preset.get("description", "")),
        files={entry_file_name(name): FileRecord(str(r["sha256"]), int(r["bytes"]))
               for name, r in data["files"].items()},
        parity=Parity(
            tolerance=float(parity.get("tolerance", 0.0)), rule=parity.get("rule", ""),
            checks=tuple(ParityCheck(c["runtime"], tuple(c["input"]), float(c["max_abs_diff"]), float(c["bound"]),
                                     int(c["decision_mismatches"])) for c in parity.get("checks", ())),
            max_abs_diff=dict(parity.get("max_abs_diff", {})), passed=bool(parity.get("passed", False))),
        opset=int(data.get("opset", 0)), precision=data.get("precision", "fp32"),
        source=SourceRecord(**{k: str(v) for k, v in (data.get("source") or {"checkpoint": "", "sha256": "",
                                                                          "origin": ""}).items()}),
        tools=dict(data.get("tools", {})), created=str(data.get("created", "")),
        variants=tuple(Variant(entry_file_name(v["file"]), v["precision"], v["status"], v.get("reason", ""),
                               dict(v.get("measures", {})), dict(v.get("setup", {})), dict(v.get("machine") or {}),
                               dict(v.get("probe") or {}))
                       for v in data.get("variants", ())),
        probe=_probe_set(data.get("probe")),
        threshold_source=str(data.get("threshold_source", "")),
        path=path,
    )


def _probe_set(data: Mapping[str, Any] | None) -> ProbeSet | None:
    if not data:
        return None
    return ProbeSet(entry_file_name(data["inputs"]), entry_file_name(data["outputs"]), entry_file_name(data["labels"]),
                    int(data["images"]), bool(data.get("ternary", False)), str(data.get("source", "")))


def verified_artifact(manifest: Manifest, filename: str) -> Path:
    """The path of one artifact after checking its size and sha256 against the manifest (call it right before
    opening the file); ManifestError names the file."""
    artifact = manifest.artifact(filename)
    record = manifest.files[filename]
    if not artifact.is_file():
        raise ManifestError(f"{artifact}: listed in the manifest but missing")
    size = artifact.stat().st_size
    if size != record.bytes:
        raise ManifestError(f"{artifact}: {size} bytes, manifest says {record.bytes} (truncated or altered)")
    if sha256_file(artifact) != record.sha256:
        raise ManifestError(f"{artifact}: sha256 differs from the manifest (altered)")
    return artifact


def verify_files(manifest: Manifest) -> None:
    """Check the size and sha256 of every artifact the manifest lists; ManifestError names the file."""
    for filename in manifest.files:
        verified_artifact(manifest, filename)


def load_manifest(entry: str | Path, verify: bool = True) -> Manifest:
    """Read ``entry/manifest.json`` and (by default) verify the sha256 and size of every artifact it lists."""
    entry = Path(entry)
    path = entry / MANIFEST
    if not path.is_file():
        raise ManifestError(f"{path}: manifest not found")
    try:
        data = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ManifestError(f"{path}: not valid JSON ({exc})") from None
    if not isinstance(data, dict):
        raise ManifestError(f"{path}: not a JSON object; {REEXPORT}")
    manifest = Manifest.from_json(data, entry)
    if verify:
        verify_files(manifest)
    return manifest


def write_manifest(entry: Path, manifest: Manifest) -> Manifest:
    """Write ``manifest.json`` atomically (temp file then rename); returns the manifest bound to ``entry``."""
    path = entry / MANIFEST
    tmp = entry / (MANIFEST + ".tmp")
    tmp.write_text(json.dumps(manifest.to_json(), indent=2) + "\n")
    tmp.replace(path)
    return replace(manifest, path=entry)


def _version_key(version: str) -> tuple[int, int | str]:
    return (0, int(version)) if version.isdigit() else (1, version)


def entry_dir(store: str | Path, name: str, version: str | None = None) -> Path:
    """Folder of ``name`` at ``version`` (default: the highest version present; hidden folders never count)."""
    model_dir = Path(store) / validate_name(name)
    if version is not None:
        return model_dir / str(version)
    versions = sorted((p.name for p in model_dir.iterdir() if NAME_PATTERN.match(p.name)
                       and (p / MANIFEST).is_file()), key=_version_key) if model_dir.is_dir() else []
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
