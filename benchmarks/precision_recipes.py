"""INT8 recipes (``export.variants.INT8_RECIPES``) of store entries, judged by the accuracy guard on this CPU and,
under QEMU's user-mode emulation of an AVX2-only CPU (``qemu-x86_64 -cpu Haswell``), with the numerics of ONNX
Runtime's AVX2 kernels.

ONNX Runtime has no switch to choose its kernels: it reads CPUID. QEMU answers CPUID as a Haswell would (AVX2, FMA,
no AVX-512, no VNNI), so ONNX Runtime runs its AVX2 kernels, and QEMU executes their instructions exactly, 16-bit
saturation of ``vpmaddubsw`` included. Accuracy figures from the emulation are therefore those of an AVX2 CPU;
its speed figures are those of an emulator and are not reported. Each entry's probe set is written once, natively,
and read by both runs, as a server would read it.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

import onnxruntime as ort

from common.datasets import evaluation_set
from export.guard import DEFAULT_TOLERANCE, guard_variants
from export.probes import variant_probe_figures, write_probes
from export.variants import INT8_RECIPES, calibration_files, prepared_inputs, quantize_int8
from model_store.machine import AVX2_ONLY_FLAGS, isa_record, machine_record, unlike
from model_store.manifest import ONNX_FILE, FileRecord, Variant, entry_dir, load_manifest, write_manifest
from robustness.probe_check import DEFAULT_PROBE_IMAGES
from server.recheck import Recheck, recheck
from server.runtimes import OnnxBackend

EMULATED_CPU = "Haswell"
HASWELL_FLAGS = AVX2_ONLY_FLAGS  # the kernel-relevant flags QEMU's Haswell model reports (model_store.machine)


def recipe_file(recipe: str) -> str:
    """The file one recipe's INT8 graph is written to."""
    return f"model.int8.{recipe}.onnx"


def prepare_entry(source: Path, folder: Path, recipes: Sequence[str], calib: Path, calib_images: int,
                  guard_data: Path, guard_images: int, probe_images: int) -> Path:
    """Copy an entry's fp32 graph, quantise it with every recipe (MinMax calibration, as ``make model-store``) and
    write its probe set; the new entry's folder."""
    manifest = load_manifest(source)
    entry = folder / manifest.name / manifest.version
    entry.mkdir(parents=True)
    shutil.copy2(source / ONNX_FILE, entry / ONNX_FILE)
    files = {ONNX_FILE: manifest.files[ONNX_FILE]}
    manifest = write_manifest(entry, replace(manifest, files=files, variants=(), probe=None))
    inputs = prepared_inputs(manifest, calibration_files(calib, manifest.task, calib_images))
    for recipe in recipes:
        quantize_int8(entry / ONNX_FILE, entry / recipe_file(recipe), manifest.input.name, inputs, "minmax", recipe)
        files[recipe_file(recipe)] = FileRecord.of(entry / recipe_file(recipe))
    eval_set = evaluation_set(guard_data, manifest.task, limit=guard_images)
    probe, records = write_probes(entry, manifest, eval_set, probe_images)
    write_manifest(entry, replace(manifest, files=files | records, probe=probe))
    return entry


def judge(entry: Path, recipes: Sequence[str], guard_data: Path, guard_images: int,
          isa_flags: Sequence[str] | None = None) -> dict[str, Any]:
    """The guard's verdict and the probe figures of every recipe on this CPU (or the one QEMU emulates)."""
    manifest = load_manifest(entry)
    eval_set = evaluation_set(guard_data, manifest.task, limit=guard_images)
    start = time.perf_counter()
    verdicts = guard_variants(manifest, {r: recipe_file(r) for r in recipes}, eval_set, DEFAULT_TOLERANCE,
                              guard_images)
    machine = machine_record(ort.__version__, "CPUExecutionProvider")
    if isa_flags is not None:
        machine |= isa_record(isa_flags) | {"cpu": f"QEMU -cpu {EMULATED_CPU} on {machine['cpu']}"}
    return {"machine": machine, "seconds": time.perf_counter() - start,
            "recipes": {r: {"status": v.status, "reason": v.reason, "measures": v.measures,
                            "probe": variant_probe_figures(manifest, recipe_file(r))} for r, v in verdicts.items()}}


def judge_emulated(entry: Path, recipes: Sequence[str], guard_data: Path, guard_images: int,
                   qemu: str = "qemu-x86_64") -> dict[str, Any]:
    """``judge`` in a Python run by QEMU as an AVX2-only CPU; RuntimeError when QEMU is missing or the run fails."""
    if shutil.which(qemu) is None:
        raise RuntimeError(f"{qemu} not found (Debian: apt-get install qemu-user); it emulates the AVX2-only CPU")
    with_json = entry.parent.parent / f"emulated-{entry.parent.name}.json"
    result = subprocess.run([qemu, "-cpu", EMULATED_CPU, sys.executable, "-m", "benchmarks.precision_recipes",
                             str(entry), "--recipes", ",".join(recipes), "--guard-data", str(guard_data),
                             "--guard-images", str(guard_images), "--isa-flags", ",".join(HASWELL_FLAGS),
                             "--json", str(with_json)], capture_output=True, text=True)
    if result.returncode != 0:
        raise RuntimeError(f"the emulated run failed: {result.stderr.strip().splitlines()[-1:]}")
    return json.loads(with_json.read_text())


def measure(store: Path, models: Sequence[str], recipes: Sequence[str], data: dict[str, tuple[Path, Path]],
            folder: Path, calib_images: int, guard_images: int, probe_images: int,
            emulate: Sequence[str]) -> dict[str, dict[str, Any]]:
    """For every model: the recipes' entry, judged natively and (the models in ``emulate``) as an AVX2-only CPU."""
    results = {}
    for model in models:
        calib, guard = data[model]
        entry = prepare_entry(entry_dir(store, model), folder, recipes, calib, calib_images, guard, guard_images,
                              probe_images)
        results[model] = {"entry": entry, "native": judge(entry, recipes, guard, guard_images)}
        if model in emulate:
            results[model]["avx2"] = judge_emulated(entry, recipes, guard, guard_images)
    return results


def startup_check(entry: Path, recipe: str, native: dict[str, Any], claimed: dict[str, Any],
                  threads: int) -> Recheck:
    """What a server with ``threads`` intra-op threads pays and decides at load for this recipe's variant when its
    verdict claims the ``claimed`` machine: the full ``server.recheck`` (probe files read, both sessions opened)."""
    manifest = load_manifest(entry)
    figures = native["recipes"][recipe]
    variant = Variant(recipe_file(recipe), "int8", figures["status"], figures["reason"], figures["measures"],
                      {"tolerance": DEFAULT_TOLERANCE}, {**native["machine"], **claimed}, figures["probe"])

    def opener(filename: str):
        return lambda: OnnxBackend(entry / filename, manifest.input.name, manifest.output.name, threads=threads)

    return recheck(manifest, variant, "CPUExecutionProvider", opener(ONNX_FILE), opener(recipe_file(recipe)))


def _f(value: float | None, spec: str = "+.2f") -> str:
    return "-" if value is None else format(value, spec)


def markdown(command: str, results: dict[str, dict[str, Any]], recipes: Sequence[str],
             checks: dict[tuple[str, str], Recheck], claimed: dict[str, Any], threads: int) -> str:
    """The section's tables: the guard per recipe and ISA, then the probe re-check as a server would make it for a
    verdict that claims the ``claimed`` machine."""
    native = next(iter(results.values()))["native"]["machine"]
    avx2 = next((r["avx2"]["machine"] for r in results.values() if "avx2" in r), None)
    lines = [f"Command: `{command}`", "",
             f"This CPU: {native['cpu']}, ISA level `{native['isa']}` ({', '.join(native['isa_flags'])}), ONNX Runtime "
             f"{native['onnxruntime']}, {native['provider']}."]
    if avx2:
        lines.append(f"AVX2 rows: the same run's guard under `{avx2['cpu']}` (ISA level `{avx2['isa']}`): ONNX "
                     "Runtime's AVX2 kernels, executed exactly by the emulator. Their accuracy figures are an AVX2 "
                     "CPU's; an emulator's speed means nothing, so the AVX2 speed column is empty.")
    lines += ["", "| model | recipe | ISA | fp32 | INT8 | delta [95% CI] | agreement | verdict | raw speed vs fp32 |",
              "|---|---|---|---:|---:|---:|---:|---|---:|"]
    for model, result in results.items():
        for recipe in recipes:
            for label, run in (("native", result["native"]), ("avx2", result.get("avx2"))):
                if run is None:
                    continue
                m = run["recipes"][recipe]["measures"]
                metric = "mAP" if "mAP" in m else "mIoU"
                agree = m.get("top_label_agreement", m.get("pixel_agreement"))
                speed = _f(m["speedup"], ".2f") + "x" if label == "native" else "-"
                lines.append(f"| {model} | {recipe} | {run['machine']['isa']} | {metric} {m[metric + '_fp32']:.2f} | "
                             f"{m[metric]:.2f} | {_f(m[metric + '_delta'])} [{_f(m[metric + '_delta_ci_low'])}, "
                             f"{_f(m[metric + '_delta_ci_high'])}] | {agree:.3f} | "
                             f"{run['recipes'][recipe]['status']} | {speed} |")
    lines += ["", "The start-up re-check (`server/recheck.py`) on this CPU, for a verdict that claims "
              f"{claimed['cpu']} (ISA level `{claimed['isa']}`); {threads} intra-op threads, probe files read and both "
              "sessions opened inside the time. "
              "`AVX2 estimate` is what the same check computes from the emulated AVX2 probe outputs (the guard's "
              "delta shifted by the probe delta's move), next to the AVX2 guard's own delta.", "",
              "| model | recipe | probe delta here | probe delta AVX2 | AVX2 estimate | AVX2 guard | check here | "
              "speed here (probes) | check time |", "|---|---|---:|---:|---:|---:|---|---:|---:|"]
    for (model, recipe), check in checks.items():
        result = results[model]
        metric = "mAP" if "mAP_delta" in check.figures else "mIoU"
        native_run = result["native"]["recipes"][recipe]
        emulated = result.get("avx2", {}).get("recipes", {}).get(recipe)
        estimate = guard = probe_avx2 = None
        if emulated is not None:
            probe_avx2 = emulated["probe"][f"{metric}_delta"]
            estimate = native_run["measures"][f"{metric}_delta"] + probe_avx2 - native_run["probe"][f"{metric}_delta"]
            guard = emulated["measures"][f"{metric}_delta"]
        verdict = "holds" if check.holds and check.faster else ("fails: " + "; ".join(check.failures) if
                                                               check.failures else "holds, not faster")
        lines.append(f"| {model} | {recipe} | {_f(check.figures[metric + '_delta'])} | {_f(probe_avx2)} | "
                     f"{_f(estimate)} | {_f(guard)} | {verdict} | {check.figures['speedup']:.2f}x | "
                     f"{check.seconds:.2f} s |")
    return "\n".join(lines)


def claimed_machine(here: dict[str, Any]) -> dict[str, Any]:
    """The machine the start-up checks' verdicts claim: an AVX2-only CPU, or a VNNI one where this CPU is AVX2-only
    (a verdict claiming this machine's own record would need no check)."""
    other = unlike(here)
    return {**other, "cpu": f"{'an AVX2-only' if other['isa'] == 'avx2' else 'an AVX-512 VNNI'} CPU (claimed)"}


def run(store: Path, models: Sequence[str], recipes: Sequence[str], data: dict[str, tuple[Path, Path]],
        calib_images: int, guard_images: int, probe_images: int, emulate: Sequence[str], threads: int,
        command: str) -> str:
    """The whole measurement in one run, as Markdown."""
    with tempfile.TemporaryDirectory(prefix="bench-recipes-") as tmp:
        results = measure(store, models, recipes, data, Path(tmp), calib_images, guard_images, probe_images, emulate)
        claimed = claimed_machine(machine_record(ort.__version__, "CPUExecutionProvider"))
        checks = {(model, recipe): startup_check(result["entry"], recipe, result["native"], claimed, threads)
                  for model, result in results.items() for recipe in recipes}
    return markdown(command, results, recipes, checks, claimed, threads)


def main(argv: list[str] | None = None) -> int:
    """The emulated half of a run: judge an entry's recipes and write the figures as JSON."""
    parser = argparse.ArgumentParser(prog="python -m benchmarks.precision_recipes", description=__doc__)
    parser.add_argument("entry", type=Path)
    parser.add_argument("--recipes", required=True)
    parser.add_argument("--guard-data", type=Path, required=True)
    parser.add_argument("--guard-images", type=int, default=300)
    parser.add_argument("--isa-flags", help="the emulated CPU's flags, recorded instead of /proc/cpuinfo's")
    parser.add_argument("--json", type=Path, required=True)
    args = parser.parse_args(argv)
    flags = args.isa_flags.split(",") if args.isa_flags else None
    figures = judge(args.entry, args.recipes.split(","), args.guard_data, args.guard_images, flags)
    args.json.write_text(json.dumps(figures, indent=1))
    return 0


__all__ = ["DEFAULT_PROBE_IMAGES", "INT8_RECIPES", "run"]

if __name__ == "__main__":
    sys.exit(main())
