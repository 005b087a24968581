"""Re-checking a variant on the machine that serves it, when the guard judged it on another one.

The guard's verdict records where it was measured (``model_store.machine``). When this machine's record differs
(ISA flags, ONNX Runtime version or provider), the variant runs on the entry's probe set next to fp32 here, and is
served only if it holds and is faster here:

- the task metric (mAP or mIoU on the probes): the guard's delta, shifted by how much the probe delta moved between
  the guard's machine and this one, must stay within the guard's tolerance;
- top-label (pixel) agreement with fp32 on the probes may fall at most ``AGREEMENT_DROP`` below the guard machine's;
- the score MAE against fp32 may grow at most to ``MAE_GROWTH`` times the guard machine's plus ``MAE_SLACK``;
- the variant's best probe pass must be at least ``MIN_SPEEDUP`` times as fast as fp32's (both timed here,
  alternating, on the serving threads): a variant barely faster than fp32 is not worth its accuracy cost.

The check costs two session loads, one pass of the probes through each graph, then timed passes over the first
``TIMING_IMAGES`` probes until ``TIMING_ROUNDS`` alternating rounds are done or another round would end past
``TIMING_BUDGET_S`` (at least one round).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import onnxruntime as ort

from model_store.machine import machine_differences, machine_record
from model_store.manifest import Manifest, ModelKind, Variant
from robustness.probe_check import Probes, probe_figures, read_probes, task_metric
from server.runtimes import Backend

AGREEMENT_DROP = 0.05
MAE_GROWTH, MAE_SLACK = 2.0, 0.002
TIMING_ROUNDS = 3
TIMING_BUDGET_S = 2.0
TIMING_IMAGES = 32  # the speed ratio is per batch of PROBE_BATCH; fewer batches keep a large model's check short
MIN_SPEEDUP = 1.5  # the speed a variant must earn here to be served under auto (issue 25's bar)
PROBE_BATCH = 8
DEFAULT_TOLERANCE = 0.5  # the guard's, for verdicts that do not record theirs


@dataclass(frozen=True)
class Recheck:
    """Whether a variant's verdict needed checking here, and what the check found."""

    machine: dict[str, Any]  # this machine's record
    differences: list[str]  # how the guard's machine differs (empty: the verdict was measured on one like this)
    ran: list[str] = field(default_factory=list)  # the checks that ran
    failures: list[str] = field(default_factory=list)  # why the variant does not hold here (accuracy)
    faster: bool | None = None
    figures: dict[str, float | None] = field(default_factory=dict)
    seconds: float = 0.0
    probes: int = 0

    @property
    def needed(self) -> bool:
        """True when the verdict was measured on a machine unlike this one."""
        return bool(self.differences)

    @property
    def holds(self) -> bool:
        """True when the variant met every accuracy check here (or needed none)."""
        return not self.failures

    def summary(self) -> str:
        """One phrase for the selection's reason."""
        where = self.machine.get("isa", "?")
        if not self.needed:
            return f"verdict measured on a machine like this one ({where})"
        if not self.ran:
            return f"was measured on another machine ({'; '.join(self.differences)}): {'; '.join(self.failures)}"
        speed = self.figures.get("speedup")
        shown = f", {speed:.2f}x fp32 here" if speed is not None else ""
        if self.failures:
            return f"fails its probe check on this machine ({where}): {'; '.join(self.failures)}"
        return f"holds on this machine ({where}) on {self.probes} probes{shown}"

    def describe(self) -> dict[str, Any]:
        """The checks as /models shows them."""
        return {"machine": self.machine, "needed": self.needed, "why": self.differences or
                ["the verdict was measured on a machine with this record"], "ran": self.ran,
                "failures": self.failures, "faster": self.faster, "figures": self.figures,
                "probes": self.probes, "seconds": round(self.seconds, 3),
                "budget": {"timing_rounds": TIMING_ROUNDS, "timing_budget_s": TIMING_BUDGET_S,
                           "timing_images": TIMING_IMAGES}}


def this_machine(provider: str) -> dict[str, Any]:
    """The record of this machine with ``provider`` running the graphs."""
    return machine_record(ort.__version__, provider)


def _outputs(backend: Backend, inputs: np.ndarray) -> np.ndarray:
    return np.concatenate([backend.run(inputs[i:i + PROBE_BATCH]) for i in range(0, len(inputs), PROBE_BATCH)])


def _timed_pass(backend: Backend, inputs: np.ndarray) -> float:
    start = time.perf_counter()
    _outputs(backend, inputs)
    return time.perf_counter() - start


def accuracy_failures(manifest: Manifest, variant: Variant, here: dict[str, float | None]) -> list[str]:
    """Why the variant's probe figures here break the rules above (empty when they hold)."""
    metric, there = task_metric(manifest.task), variant.probe
    tolerance = float(variant.setup.get("tolerance", DEFAULT_TOLERANCE))
    failures = []
    delta_here, delta_there = here.get(f"{metric}_delta"), there.get(f"{metric}_delta")
    guard_delta = variant.measures.get(f"{metric}_delta")
    if delta_here is None:
        failures.append(f"{metric} is undefined on the probes")
    else:
        estimate = delta_here if guard_delta is None or delta_there is None else guard_delta + delta_here - delta_there
        here[f"{metric}_delta_estimate"] = estimate
        if -estimate > tolerance:
            failures.append(f"{metric} changes by an estimated {estimate:+.2f} points here (probe delta "
                            f"{delta_here:+.2f}, {_signed(delta_there)} on the guard's machine; tolerance "
                            f"{tolerance:g})")
    key = "pixel_agreement" if manifest.kind is ModelKind.SEGMENTER else "top_label_agreement"
    if there.get(key) is not None and here[key] < there[key] - AGREEMENT_DROP:
        failures.append(f"{key.replace('_', ' ')} {here[key]:.3f} here, {there[key]:.3f} on the guard's machine")
    mae_there = there.get("score_mae")
    if mae_there is not None and here["score_mae"] > MAE_GROWTH * mae_there + MAE_SLACK:
        failures.append(f"score MAE {here['score_mae']:.4f} here, {mae_there:.4f} on the guard's machine")
    return failures


def _signed(value: float | None) -> str:
    return "unknown" if value is None else f"{value:+.2f}"


def run_probe_check(manifest: Manifest, variant: Variant, probes: Probes, fp32: Backend,
                    candidate: Backend) -> tuple[list[str], bool, dict[str, float | None]]:
    """Accuracy failures, whether the variant is at least MIN_SPEEDUP times as fast, and the figures, from both
    backends on the probes."""
    fp32_out = _outputs(fp32, probes.inputs)  # also the warm-up pass of each session
    figures = probe_figures(manifest.task, manifest.activation, probes.outputs, _outputs(candidate, probes.inputs),
                            probes.labels, probes.ternary)
    figures["fp32_max_abs_drift"] = float(np.max(np.abs(fp32_out - probes.outputs)))
    failures = accuracy_failures(manifest, variant, figures)
    timed = probes.inputs[:TIMING_IMAGES]
    best = {"fp32": np.inf, "variant": np.inf}
    start = time.perf_counter()
    for _ in range(TIMING_ROUNDS):
        round_start = time.perf_counter()
        best["fp32"] = min(best["fp32"], _timed_pass(fp32, timed))
        best["variant"] = min(best["variant"], _timed_pass(candidate, timed))
        now = time.perf_counter()
        if now - start + (now - round_start) > TIMING_BUDGET_S:
            break
    figures |= {"fp32_images_per_s": len(timed) / best["fp32"], "images_per_s": len(timed) / best["variant"],
                "speedup": best["fp32"] / best["variant"]}
    return failures, figures["speedup"] >= MIN_SPEEDUP, figures


def recheck(manifest: Manifest, variant: Variant, provider: str, fp32: Any, candidate: Any) -> Recheck:
    """Compare where the verdict was measured with this machine and, when they differ and the entry has a probe
    set, run the probe check with the two backends (callables opening them, so nothing loads unless needed)."""
    start = time.perf_counter()
    here = this_machine(provider)
    differences = machine_differences(variant.machine, here)
    if not differences:
        return Recheck(here, [])
    probes = read_probes(manifest)
    if probes is None:
        return Recheck(here, differences, failures=["no probe set to re-check on this machine"])
    failures, faster, figures = run_probe_check(manifest, variant, probes, fp32(), candidate())
    ran = [f"{task_metric(manifest.task)} against fp32 on the probes",
           "pixel agreement" if manifest.kind is ModelKind.SEGMENTER else "top-label agreement",
           "score agreement (MAE)", "speed against fp32"]
    return Recheck(here, differences, ran, failures, faster, figures, time.perf_counter() - start, len(probes.inputs))
