"""``python -m benchmarks lab-speed``: the robustness lab before and after its speed-up, measured in one run.

Three measurements, each taking the reference path (``robustness.evaluation.reference``: imagecorruptions' own
code for every corruption, perturbation and inference in turn, bootstrap figures one resample at a time) and the
fast path in the same process:

1. perturbation: every condition's model input for each of the first ``--perturb-images`` test images, built by
   both paths image by image in turn (so load from other processes falls on both alike); the inputs must be
   equal, and the table gives seconds per image (wall and this thread's CPU) and the ratio;
2. the default evaluation (every occlusion bucket, the 15 corruptions at severities 1-5, checks, 1000 bootstrap
   resamples) of the first ``--images`` test images by both paths: wall seconds, their split, and whether the two
   reports hold the same figures (everything but ``created`` and ``timings``);
3. bootstrap figures for a full split of ``--full-images`` images, on synthetic scores of the same shape (the
   figures' cost depends on the number of images, not on their values): the fast path for all conditions, the
   reference path for ``--reference-conditions`` of them, scaled to all by the number of conditions.

The full-split estimate for each path is its stream seconds per image (2.) times ``--full-images`` plus its
figures time (3.); the before/after ratio of the estimates is printed.

4. ``--full``: the fast path's default evaluation of the first ``--full-images`` test images, measured;
5. ``--full-reference``: the reference path's too, after it (a quarter of an hour or more on two CPUs), and
   whether the two full reports hold the same figures; the measured ratio is printed last.

Each measurement notes the load average before and after it, and ``--json`` is rewritten after each one, so
an interrupted run keeps what it measured.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
from tqdm import tqdm

from common.datasets import evaluation_set
from common.kinds import Task
from robustness.evaluation import EvaluationConfig, evaluate, open_model
from robustness.evaluation.accumulators import ClassificationScores
from robustness.evaluation.conditions import condition_grid
from robustness.evaluation.onnx_model import evaluation_threads
from robustness.evaluation.reference import reference_path
from robustness.evaluation.report import build_results
from robustness.evaluation.statistics import bootstrap_indices
from robustness.evaluation.streaming import StreamResult, input_groups, prepared_inputs

VARYING = ("created", "timings")


def perturbation(model: Any, eval_set: Any, config: EvaluationConfig, images: int) -> dict[str, Any]:
    """Seconds per image (wall, CPU) of building every condition's inputs on each path, and whether they agree."""
    groups = input_groups({"model": model})
    conditions = condition_grid(config.occlusion, config.corruptions, config.severities)
    spent = {path: {"wall": 0.0, "cpu": 0.0} for path in ("reference", "fast")}
    identical = True
    for index in tqdm(range(images), desc="perturbation", unit="img", file=sys.stderr):
        one = _OneImage(eval_set, index)
        built = {}
        for path in ("reference", "fast") if index % 2 == 0 else ("fast", "reference"):
            seconds = {"read": 0.0, "perturb": 0.0}
            wall, cpu = time.perf_counter(), time.thread_time()
            built[path] = list(prepared_inputs(one, groups, conditions, config.seed, 1, seconds,
                                               reference=path == "reference"))
            spent[path]["wall"] += time.perf_counter() - wall
            spent[path]["cpu"] += time.thread_time() - cpu
        for old, new in zip(built["reference"][1:], built["fast"][1:], strict=True):
            identical &= all(np.array_equal(a, b) for a, b in zip(old, new, strict=True))
    per_image = {path: {kind: value / images for kind, value in kinds.items()} for path, kinds in spent.items()}
    return {"images": images, "conditions": len(conditions), "per_image_s": per_image, "identical_inputs": identical,
            "ratio_wall": per_image["reference"]["wall"] / per_image["fast"]["wall"],
            "ratio_cpu": per_image["reference"]["cpu"] / per_image["fast"]["cpu"]}


class _OneImage:
    """Image ``index`` of a set as a one-image set (``prepared_inputs`` reads item 0 and seeds as for image 0)."""

    def __init__(self, eval_set: Any, index: int) -> None:
        self.sample = eval_set.read(index)

    def read(self, _: int) -> Any:
        return self.sample


def evaluation(model_path: Path, eval_set: Any, config: EvaluationConfig, path: str) -> dict[str, Any]:
    """One path's evaluation (``reference`` or ``fast``) of the set's first ``config.limit`` images: the report."""
    with tqdm(total=config.limit, desc=f"evaluate ({path})", unit="img", file=sys.stderr) as bar:
        def progress(done: int, _: int) -> None:
            bar.update(done - bar.n)

        with reference_path() if path == "reference" else contextlib.nullcontext():
            return evaluate([open_model(model_path)], eval_set, config, progress=progress)


def same_figures(reference: dict[str, Any], fast: dict[str, Any]) -> dict[str, Any]:
    """Whether two reports agree in everything but ``created`` and ``timings``, and the keys where they do not."""
    differing = [key for key in fast if key not in VARYING and reference.get(key) != fast[key]]
    return {"identical_figures": not differing, "differing_keys": differing}


def evaluations(model_path: Path, eval_set: Any, config: EvaluationConfig) -> dict[str, Any]:
    """Both paths' default evaluation of the subset: timings, and whether the reports' figures are equal."""
    reports = {path: evaluation(model_path, eval_set, config, path) for path in ("reference", "fast")}
    return {"images": config.limit, "timings": {path: report["timings"] for path, report in reports.items()},
            **same_figures(reports["reference"], reports["fast"])}


def loaded(measure: Any, *args: Any) -> dict[str, Any]:
    """``measure(*args)`` with the 1-minute load average before and after it."""
    before = os.getloadavg()[0]
    result = measure(*args)
    return {**result, "load_average": [before, os.getloadavg()[0]]}


def figures(classes: int, config: EvaluationConfig, images: int, reference_conditions: int,
            threshold: float) -> dict[str, Any]:
    """Seconds of all bootstrap figures of ``images`` synthetic images: fast measured, reference scaled."""
    conditions = condition_grid(config.occlusion, config.corruptions, config.severities)
    rng = np.random.default_rng(config.seed)
    targets = np.where(rng.random((images, classes)) < 0.3, 1, -1).astype(np.int8)
    stats = {}
    for condition in conditions:
        scores = ClassificationScores(images, classes)
        scores.scores[:] = np.clip(0.6 * rng.random((images, classes)) + 0.4 * (targets > 0), 0.0, 1.0)
        stats[condition.key] = scores
    result = StreamResult(images, [str(i) for i in range(images)], targets, {"model": stats}, None, 0)
    indices = bootstrap_indices(images, config.bootstrap, config.seed)
    names = [f"class {c}" for c in range(classes)]
    start = time.perf_counter()
    fast, _ = build_results(Task.CLASSIFICATION, result, conditions, ["model"], names, indices, {"model": threshold})
    fast_s = time.perf_counter() - start
    subset = conditions[:reference_conditions]
    start = time.perf_counter()
    with reference_path():
        reference, _ = build_results(Task.CLASSIFICATION, result, subset, ["model"], names, indices,
                                     {"model": threshold})
    reference_s = (time.perf_counter() - start) * len(conditions) / len(subset)
    same = all(reference["model"][c.key] == fast["model"][c.key] for c in subset)
    return {"images": images, "conditions": len(conditions), "reference_conditions_timed": len(subset),
            "fast_s": fast_s, "reference_s_scaled": reference_s, "identical_figures": same}


def main(argv: list[str] | None = None, prog: str = "python -m benchmarks lab-speed") -> int:
    """Measure both paths, print the table and the before/after ratio (and write --json)."""
    parser = argparse.ArgumentParser(prog=prog, description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", type=Path, default=Path("model_store/demo-classifier"), help="store entry")
    parser.add_argument("--data", type=Path, default=Path("data/classification"), help="dataset (its test split)")
    parser.add_argument("--images", type=int, default=20, help="test images evaluated by both paths")
    parser.add_argument("--perturb-images", type=int, default=10, help="images perturbed by both paths")
    parser.add_argument("--full-images", type=int, default=300, help="split size the estimate is made for")
    parser.add_argument("--reference-conditions", type=int, default=6,
                        help="conditions whose reference figures are timed for --full-images")
    parser.add_argument("--bootstrap", type=int, default=1000, help="bootstrap resamples (default as evaluate)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--full", action="store_true", help="also measure the fast path's full evaluation")
    parser.add_argument("--full-reference", action="store_true",
                        help="also measure the reference path's full evaluation (implies --full)")
    parser.add_argument("--json", type=Path, help="also write the measurements here (after each one)")
    args = parser.parse_args(argv)
    try:
        if min(args.images, args.perturb_images, args.full_images, args.reference_conditions) < 1:
            raise ValueError("--images, --perturb-images, --full-images and --reference-conditions must be >= 1")
        config = EvaluationConfig.parse(seed=args.seed, bootstrap=args.bootstrap, limit=args.images)
        config.validate()
        model = open_model(args.model)
        eval_set = evaluation_set(args.data, model.manifest.task, args.images)
        if model.manifest.task != Task.CLASSIFICATION:
            raise ValueError(f"{args.model} is a {model.manifest.task} model; this benchmark times a classifier")
    except (ValueError, OSError) as err:
        print(f"{prog}: error: {err}", file=sys.stderr)
        return 2
    m: dict[str, Any] = {"model": str(args.model), "data": str(args.data), "cpus": os.cpu_count(),
                         "onnx_threads": {"fast": evaluation_threads(), "reference": "ONNX Runtime default"},
                         "load_average_at_start": list(os.getloadavg())}

    def save() -> None:
        if args.json:
            args.json.write_text(json.dumps({**m, "load_average_at_end": list(os.getloadavg())}, indent=1) + "\n")

    m["perturbation"] = loaded(perturbation, model, eval_set, config, min(args.perturb_images, len(eval_set)))
    save()
    m["evaluation"] = loaded(evaluations, args.model, eval_set, config)
    save()
    m["figures"] = loaded(figures, len(model.manifest.class_names), config, args.full_images,
                          args.reference_conditions, model.manifest.threshold)
    estimate = {}
    for path, figures_s in (("reference", m["figures"]["reference_s_scaled"]), ("fast", m["figures"]["fast_s"])):
        timings = m["evaluation"]["timings"][path]
        estimate[path] = timings["stream_s"] / m["evaluation"]["images"] * args.full_images + figures_s
    m |= {"estimate_full_s": estimate, "estimate_ratio": estimate["reference"] / estimate["fast"]}
    save()
    if args.full or args.full_reference:
        full_config = dataclasses.replace(config, limit=args.full_images)
        full_set = evaluation_set(args.data, model.manifest.task, args.full_images)
        m["full"] = {"images": len(full_set)}
        reports = {}
        for path in ("fast", "reference") if args.full_reference else ("fast",):
            before = os.getloadavg()[0]
            reports[path] = evaluation(args.model, full_set, full_config, path)
            m["full"][path] = {"timings": reports[path]["timings"], "load_average": [before, os.getloadavg()[0]]}
            save()
        if args.full_reference:
            m["full"] |= same_figures(reports["reference"], reports["fast"])
            m["full"]["ratio"] = m["full"]["reference"]["timings"]["total_s"] / m["full"]["fast"]["timings"]["total_s"]
    m["load_average_at_end"] = list(os.getloadavg())
    save()
    print(report_text(m, args.full_images))
    return 0


def report_text(m: dict[str, Any], full: int) -> str:
    """The printed table."""
    p, e, f = m["perturbation"], m["evaluation"], m["figures"]
    ref, fast = e["timings"]["reference"], e["timings"]["fast"]
    lines = [
        f"{m['model']} on {m['data']}, {m['cpus']} CPUs, load average {m['load_average_at_start'][0]:.1f} at start, "
        f"{m['load_average_at_end'][0]:.1f} at end",
        "",
        f"perturbation, {p['conditions']} conditions per image, {p['images']} images, both paths in turn:",
        "| path | wall s/img | CPU s/img |",
        "|---|---|---|",
        *(f"| {path} | {p['per_image_s'][path]['wall']:.3f} | {p['per_image_s'][path]['cpu']:.3f} |"
          for path in ("reference", "fast")),
        f"perturbation ratio: {p['ratio_wall']:.1f}x wall, {p['ratio_cpu']:.1f}x CPU; identical inputs: "
        f"{'yes' if p['identical_inputs'] else 'NO'}",
        "",
        f"default evaluation of {e['images']} images (wall seconds):",
        "| path | total | stream | figures | read | perturb | inference | images/s |",
        "|---|---|---|---|---|---|---|---|",
        *(f"| {path} | {t['total_s']:.1f} | {t['stream_s']:.1f} | {t['figures_s']:.1f} | {t['read_s']:.1f} | "
          f"{t['perturb_s']:.1f} | {t['inference_s']:.1f} | {t['images_per_s']:.2f} |"
          for path, t in (("reference", ref), ("fast", fast))),
        f"subset ratio: {ref['total_s'] / fast['total_s']:.1f}x total, {ref['stream_s'] / fast['stream_s']:.1f}x "
        f"stream; identical figures (report.json less created/timings): "
        f"{'yes' if e['identical_figures'] else 'NO: ' + ', '.join(e['differing_keys'])}",
        "",
        f"bootstrap figures for {f['images']} images x {f['conditions']} conditions (synthetic scores): fast "
        f"{f['fast_s']:.1f} s; reference {f['reference_s_scaled']:.1f} s (timed on {f['reference_conditions_timed']} "
        f"conditions, scaled); identical: {'yes' if f['identical_figures'] else 'NO'}",
        "",
        f"estimated full default evaluation of {full} images (stream s/img x {full} + figures): reference "
        f"{m['estimate_full_s']['reference'] / 60:.1f} min, fast {m['estimate_full_s']['fast'] / 60:.1f} min, "
        f"ratio {m['estimate_ratio']:.1f}x",
    ]
    if "full" in m:
        lines += ["", f"measured full default evaluation of {m['full']['images']} images (wall seconds):",
                  "| path | total | stream | figures | perturb | inference | load average before, after |",
                  "|---|---|---|---|---|---|---|"]
        for path in ("reference", "fast"):
            if path in m["full"]:
                t, load = m["full"][path]["timings"], m["full"][path]["load_average"]
                lines.append(f"| {path} | {t['total_s']:.1f} | {t['stream_s']:.1f} | {t['figures_s']:.1f} | "
                             f"{t['perturb_s']:.1f} | {t['inference_s']:.1f} | {load[0]:.1f}, {load[1]:.1f} |")
        if "ratio" in m["full"]:
            same = "yes" if m["full"]["identical_figures"] else "NO: " + ", ".join(m["full"]["differing_keys"])
            lines.append(f"measured ratio: {m['full']['ratio']:.1f}x; identical figures: {same}")
        else:
            fast_s = m["full"]["fast"]["timings"]["total_s"]
            lines.append(f"reference estimate / fast measured: {m['estimate_full_s']['reference'] / fast_s:.1f}x")
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main(prog="python -m benchmarks.lab_speed"))
