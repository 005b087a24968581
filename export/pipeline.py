"""Checkpoint -> verified store entry: export, parity against eager, then write the manifest."""

from __future__ import annotations

import datetime as dt
import os
import platform
import shutil
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import onnxruntime as ort
import timm
import torch
from tqdm import tqdm

from export.formats import DEFAULT_OPSET, INPUT_NAME, OUTPUT_NAME, export_onnx, export_torchscript, load_torchscript
from export.parity import FP16_TOL, FP32_TOL, check_parity, parity_cases
from export.source import ExportSource
from model_store.manifest import (
    FileRecord,
    InputSpec,
    Manifest,
    ManifestError,
    Parity,
    ParityCheck,
    PresetRecord,
    SourceRecord,
    load_manifest,
    output_spec,
    sha256_file,
    validate_name,
    write_manifest,
)

FORMATS = ("onnx", "torchscript", "mar", "triton")
DEFAULT_FORMATS = ("onnx", "torchscript")


def parse_formats(spec: str | Sequence[str]) -> tuple[str, ...]:
    """Validate a comma list of formats; ONNX is always included (parity and the server need it)."""
    items = [s.strip() for s in (spec.split(",") if isinstance(spec, str) else spec) if s.strip()]
    unknown = [s for s in items if s not in FORMATS]
    if unknown:
        raise ValueError(f"unknown format(s) {', '.join(unknown)}; choose from {', '.join(FORMATS)}")
    return tuple(dict.fromkeys(["onnx", *items]))


def tool_versions() -> dict[str, str]:
    """Versions of the tools that produced an artifact."""
    return {"python": platform.python_version(), "torch": torch.__version__, "onnx": onnx.__version__,
            "onnxruntime": ort.__version__, "timm": timm.__version__}


def parity_record(report: dict[str, Any]) -> Parity:
    """The typed form of ``check_parity``'s report."""
    checks = tuple(ParityCheck(c["runtime"], tuple(c["input"]), c["max_abs_diff"], c["bound"], c["decision_mismatches"])
                   for c in report["checks"])
    return Parity(report["tolerance"], report["rule"], checks, report["max_abs_diff"], report["passed"])


def build_manifest(src: ExportSource, name: str, version: str, files: dict[str, FileRecord],
                   parity: Parity, opset: int, fp16: bool) -> Manifest:
    """The manifest: everything a server needs to feed the model and read its answer."""
    p = src.preset
    return Manifest(
        name=name, version=version, task=p.task, class_names=tuple(p.class_names), threshold=p.threshold,
        input=InputSpec(INPUT_NAME, (p.image_size, p.image_size), tuple(p.mean), tuple(p.std),
                        dynamic_size=p.dynamic_size, resize=p.resize),
        output=output_spec(OUTPUT_NAME, p.task, p.activation),
        preset=PresetRecord(p.name, p.arch, dict(p.arch_args), p.heads, p.lam, p.pretrained, p.description),
        files=files, parity=parity, opset=opset, precision="fp16" if fp16 else "fp32",
        source=SourceRecord(str(src.checkpoint), sha256_file(src.checkpoint), src.origin),
        tools=tool_versions(), created=dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
    )


def _ort_runner(path: Path):
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return lambda x: session.run([OUTPUT_NAME], {INPUT_NAME: x})[0]


def _torchscript_runner(path: Path):
    module = load_torchscript(path)

    def run(x: np.ndarray) -> np.ndarray:
        with torch.no_grad():
            return module(torch.from_numpy(x)).numpy()

    return run


def export_entry(src: ExportSource, name: str, version: str = "1", store: str | Path = "model_store",
                 formats: Sequence[str] = DEFAULT_FORMATS, fp16: bool = False, opset: int = DEFAULT_OPSET,
                 force: bool = False, progress: bool = True) -> Manifest:
    """Export ``src`` to ``store/name/version``; nothing is written unless parity passes."""
    validate_name(name)
    formats = parse_formats(formats)
    store = Path(store)
    final = store / name / str(version)
    if final.exists() and not force:
        raise ManifestError(f"{final} already exists (pass --force to replace it, or a new --version)")
    staging = store / name / f".{version}.staging-{os.getpid()}"
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)
    model, preset = src.model.eval(), src.preset
    example = torch.rand(2, 3, preset.image_size, preset.image_size, generator=torch.Generator().manual_seed(0))
    steps = ["onnx", *(["torchscript"] if "torchscript" in formats else []), "parity", "manifest",
             *(f for f in ("mar", "triton") if f in formats)]
    bar = tqdm(total=len(steps), desc=f"export {name}", unit="step", disable=not progress)
    try:
        bar.set_postfix_str("onnx")
        export_onnx(model, staging / "model.onnx", example, preset.dynamic_size, opset=opset, fp16=fp16)
        bar.update()
        runners = {"onnxruntime": _ort_runner(staging / "model.onnx")}
        if "torchscript" in formats:
            bar.set_postfix_str("torchscript")
            export_torchscript(model, staging / "model.pt", example, fp16=fp16)
            runners["torchscript"] = _torchscript_runner(staging / "model.pt")
            bar.update()
        bar.set_postfix_str("parity")
        cases = parity_cases(preset.image_size, preset.dynamic_size)
        parity = check_parity(model, runners, cases, preset.task, preset.threshold, FP16_TOL if fp16 else FP32_TOL,
                              activation=preset.activation)
        bar.update()
        files = {f: FileRecord.of(staging / f) for f in ("model.onnx", "model.pt") if (staging / f).exists()}
        write_manifest(staging, build_manifest(src, name, str(version), files, parity_record(parity), opset, fp16))
        if final.exists():
            shutil.rmtree(final)
        staging.rename(final)
        bar.update()
        manifest = load_manifest(final)
        if "mar" in formats:
            bar.set_postfix_str("mar")
            from export.torchserve import write_mar

            write_mar(manifest, store)
            bar.update()
        if "triton" in formats:
            bar.set_postfix_str("triton")
            from export.triton import write_triton_entry

            write_triton_entry(store / "triton", manifest)
            bar.update()
        return manifest
    finally:
        bar.close()
        shutil.rmtree(staging, ignore_errors=True)
