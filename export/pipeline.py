"""Checkpoint -> verified store entry: export, parity against eager, then write the manifest."""

from __future__ import annotations

import datetime as dt
import logging
import os
import platform
import shutil
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import onnxruntime as ort
import timm
import torch
from tqdm import tqdm

from common.datasets import evaluation_set
from export.artifact_formats import DEFAULT_FORMATS, parse_formats
from export.formats import DEFAULT_OPSET, INPUT_NAME, OUTPUT_NAME, export_onnx, export_torchscript, load_torchscript
from export.guard import guard_variants
from export.parity import FP16_TOL, FP32_TOL, check_parity, parity_cases
from export.probes import variant_probe_figures, write_probes
from export.source import ExportSource
from export.variant_request import VariantRequest
from export.variants import (
    INT8_RECIPES,
    VARIANT_FILES,
    build_int8,
    calibration_files,
    convert_fp16,
    prepared_inputs,
)
from model_store.manifest import (
    ONNX_FILE,
    REJECTED,
    TORCHSCRIPT_FILE,
    FileRecord,
    InputSpec,
    Manifest,
    ManifestError,
    Parity,
    ParityCheck,
    PresetRecord,
    SourceRecord,
    Variant,
    load_manifest,
    output_spec,
    sha256_file,
    validate_name,
    write_manifest,
)

log = logging.getLogger("export")


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
        threshold_source=src.threshold_source,
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


def _build_variant(entry: Path, manifest: Manifest, precision: str, request: VariantRequest,
                   progress: bool) -> dict[str, Any]:
    """Write one variant file into ``entry``; how it was made (calibration data, images and method)."""
    out, model = entry / VARIANT_FILES[precision], entry / ONNX_FILE
    if precision == "fp16":
        convert_fp16(model, out)
        return {"io": "float32"}
    assert request.calib is not None
    files = calibration_files(request.calib, manifest.task, request.calib_images)
    inputs = prepared_inputs(manifest, files, progress)
    method, scores = build_int8(manifest, model, out, inputs, request.calib_method, request.int8_recipe)
    return {"calibration_data": str(request.calib), "calibration_images": len(files),
            "calibration_method": method, "calibration_requested": request.calib_method,
            "calibration_score_mae": scores, "format": INT8_RECIPES[request.int8_recipe].format,
            "int8_recipe": request.int8_recipe, "calibration_files": sorted(str(f) for f in files)}


def add_variants(entry: Path, request: VariantRequest, progress: bool = True) -> Manifest:
    """Build each requested variant next to ``model.onnx``, judge it with the accuracy guard and list it (with its
    sha256) in the manifest, accepted or rejected with the reason and the machine it was judged on; the entry keeps
    a probe set (``request.probe_images`` guard images with their fp32 outputs) and each variant its figures on it."""
    manifest = load_manifest(entry)
    guard_source = request.guard_data or request.calib
    try:
        eval_set = evaluation_set(guard_source, manifest.task, limit=request.guard_images)
    except (ValueError, FileNotFoundError) as exc:
        raise ValueError(f"guard data {guard_source}: {exc} (the guard needs a labelled dataset; pass --guard-data)"
                         ) from None
    held_out = {item.image.resolve() for item in eval_set.items}
    files, variants = dict(manifest.files), {v.precision: v for v in manifest.variants}
    built: dict[str, dict[str, Any]] = {}  # precision -> how it was made
    for precision in request.precisions:
        filename = VARIANT_FILES[precision]
        try:
            setup = _build_variant(entry, manifest, precision, request, progress)
        except (ValueError, FileNotFoundError):
            raise
        except Exception as exc:  # a converter failing on this graph rejects the variant, not the export
            log.error("%s variant could not be built: %s", precision, exc)
            variants[precision] = Variant(filename, precision, REJECTED, f"could not be built: {exc}")
            continue
        calibrated = {Path(f).resolve() for f in setup.pop("calibration_files", ())}
        if calibrated & held_out:
            raise ValueError(f"{len(calibrated & held_out)} calibration images are also guard images; calibrate on "
                             "a training split or another folder")
        files[filename] = FileRecord.of(entry / filename)
        built[precision] = setup
    probe = manifest.probe
    if built and request.probe_images:
        probe, records = write_probes(entry, manifest, eval_set, request.probe_images)
        files |= records
    if built:
        manifest = write_manifest(entry, replace(manifest, files=files, probe=probe))  # the guard opens verified files
        with tqdm(total=len(eval_set), desc=f"guard {','.join(built)}", unit="img", disable=not progress) as bar:
            verdicts = guard_variants(manifest, {p: VARIANT_FILES[p] for p in built}, eval_set, request.tolerance,
                                      request.guard_images, progress=lambda done, _total: bar.update(done - bar.n),
                                      gate_masked=request.gate_masked, speed_seconds=request.speed_seconds)
        for precision, verdict in verdicts.items():
            figures = variant_probe_figures(manifest, VARIANT_FILES[precision]) if probe is not None else {}
            variants[precision] = Variant(VARIANT_FILES[precision], precision, verdict.status, verdict.reason,
                                          verdict.measures, {**built[precision], **verdict.setup}, verdict.machine,
                                          figures)
    return write_manifest(entry, replace(manifest, files=files, variants=tuple(variants.values()), probe=probe))


def export_entry(src: ExportSource, name: str, version: str = "1", store: str | Path = "model_store",
                 formats: Sequence[str] = DEFAULT_FORMATS, fp16: bool = False, opset: int = DEFAULT_OPSET,
                 force: bool = False, progress: bool = True, variants: VariantRequest | None = None) -> Manifest:
    """Export ``src`` to ``store/name/version``; nothing is written unless parity passes."""
    validate_name(name)
    formats = parse_formats(formats)
    if fp16 and variants is not None and variants.precisions:
        raise ValueError("--fp16 makes the entry itself float16; variants are built from a float32 entry")
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
        export_onnx(model, staging / ONNX_FILE, example, preset.dynamic_size, opset=opset, fp16=fp16)
        bar.update()
        runners = {"onnxruntime": _ort_runner(staging / ONNX_FILE)}
        if "torchscript" in formats:
            bar.set_postfix_str("torchscript")
            export_torchscript(model, staging / TORCHSCRIPT_FILE, example, fp16=fp16)
            runners["torchscript"] = _torchscript_runner(staging / TORCHSCRIPT_FILE)
            bar.update()
        bar.set_postfix_str("parity")
        cases = parity_cases(preset.image_size, preset.dynamic_size)
        parity = check_parity(model, runners, cases, preset.task, preset.threshold, FP16_TOL if fp16 else FP32_TOL,
                              activation=preset.activation)
        bar.update()
        files = {f: FileRecord.of(staging / f) for f in (ONNX_FILE, TORCHSCRIPT_FILE) if (staging / f).exists()}
        write_manifest(staging, build_manifest(src, name, str(version), files, parity_record(parity), opset, fp16))
        if variants is not None and variants.precisions:
            bar.set_postfix_str("variants")
            add_variants(staging, variants, progress)
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
