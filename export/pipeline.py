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
from export.store import (
    SCHEMA_VERSION,
    Manifest,
    ManifestError,
    file_record,
    load_manifest,
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


def output_spec(task: str, activation: str = "sigmoid") -> dict[str, Any]:
    """What the exported graph returns; segmenters return per-class logits at the input resolution."""
    if task == "classification":
        return {"name": OUTPUT_NAME, "kind": "class_logits", "activation": activation, "shape": ["batch", "classes"]}
    return {"name": OUTPUT_NAME, "kind": "pixel_logits", "activation": "softmax",
            "shape": ["batch", "classes", "height", "width"],
            "note": "logits at the input resolution; take argmax, then resize the class map to the image size"}


def build_manifest(src: ExportSource, name: str, version: str, files: dict[str, dict[str, Any]],
                   parity: dict[str, Any], opset: int, fp16: bool) -> dict[str, Any]:
    """The manifest: everything a server needs to feed the model and read its answer."""
    p = src.preset
    return {
        "schema": SCHEMA_VERSION,
        "name": name,
        "version": version,
        "task": p.task,
        "class_names": list(p.class_names),
        "threshold": p.threshold,
        "input": {"name": INPUT_NAME, "layout": "NCHW", "dtype": "float32", "channels": "RGB",
                  "size": [p.image_size, p.image_size], "dynamic_size": p.dynamic_size, "resize": p.resize,
                  "scale": "divide by 255 to [0, 1]", "mean": list(p.mean), "std": list(p.std)},
        "output": output_spec(p.task, p.activation),
        "architecture": {"preset": p.name, "arch": p.arch, **p.arch_args, "heads": p.heads, "lam": p.lam},
        "preset": p.to_dict(),
        "opset": opset,
        "precision": "fp16" if fp16 else "fp32",
        "files": files,
        "parity": parity,
        "source": {"checkpoint": str(src.checkpoint), "sha256": sha256_file(src.checkpoint), "origin": src.origin},
        "tools": tool_versions(),
        "created": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
    }


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
        files = {f: file_record(staging / f) for f in ("model.onnx", "model.pt") if (staging / f).exists()}
        write_manifest(staging, build_manifest(src, name, str(version), files, parity, opset, fp16))
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

            write_triton_entry(store / "triton", name, final / "model.onnx", preset.task, preset.num_classes,
                               preset.image_size, preset.dynamic_size)
            bar.update()
        return manifest
    finally:
        bar.close()
        shutil.rmtree(staging, ignore_errors=True)
