"""Which artifact serves a model: ``model.onnx`` (fp32) or a lower-precision variant the accuracy guard accepted.

``auto`` picks the accepted variant that should speed up the provider that will run it: INT8 on the CPU, FP16 on
CUDA or TensorRT. ``settle`` then decides with what was measured on a machine like this one: the guard's own timing
when the verdict was measured here, else the re-check made at load (``server.recheck``). Under auto the variant is
served only if it holds and is at least ``MIN_SPEEDUP`` times as fast as fp32; an explicit precision that fails the
re-check is refused.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any

from model_store.manifest import TORCHSCRIPT_FILE, Manifest, Precision, Variant
from server.recheck import MIN_SPEEDUP, Recheck
from server.runtimes import CPU
from server.settings import AUTO

FP32_FILE = Precision.FP32.onnx_file


class PrecisionError(ValueError):
    """A requested precision the entry cannot serve (no such variant, or one the guard rejected)."""


@dataclass(frozen=True)
class Selection:
    """The precision and file a model is served from, and why."""

    precision: Precision
    file: str
    reason: str
    variant: Variant | None = None
    checks: dict[str, Any] | None = None  # the re-check on this machine of the variant considered (Recheck.describe)

    def describe(self, requested: Precision | str) -> dict[str, Any]:
        """The selection as /models shows it, with the guard's figures of the served variant and the checks made
        on this machine."""
        out: dict[str, Any] = {"requested": requested, "served": self.precision, "file": self.file,
                               "reason": self.reason}
        if self.variant is not None:
            out |= {"status": self.variant.status, "measures": dict(self.variant.measures),
                    "measured_on": dict(self.variant.machine)}
        if self.checks is not None:
            out["checks"] = self.checks
        return out


def preferred_variant(provider: str) -> Precision:
    """The variant that speeds up this provider: int8 on the CPU, fp16 on CUDA and TensorRT."""
    return Precision.INT8 if provider == CPU else Precision.FP16


def variant_precisions(manifest: Manifest) -> list[str]:
    """Precisions an entry can be run at: fp32 and every variant it lists (accepted or rejected)."""
    return [Precision.FP32, *(v.precision for v in manifest.variants)]


def listed_variant(manifest: Manifest, precision: Precision) -> Selection:
    """Any listed variant, accepted or not (for comparisons such as ``/robustness?precision=``)."""
    if precision == Precision.FP32:
        return Selection(Precision.FP32, FP32_FILE, "requested")
    variant = manifest.variant(precision)
    if variant is None:
        raise PrecisionError(f"model {manifest.name!r} has no {precision} variant (it has "
                             f"{', '.join(variant_precisions(manifest))}); build one with `python -m export ... "
                             f"--variants {precision}`")
    return Selection(precision, variant.file, "requested", variant)


def select_precision(manifest: Manifest, requested: Precision | str, provider: str,
                     backend: str = "onnx") -> Selection:
    """The artifact to serve for ``--precision`` (a Precision, or AUTO) on ``provider``; PrecisionError for an
    explicit precision the entry lacks or whose variant the guard rejected."""
    if backend != "onnx":
        if requested in (Precision.INT8, Precision.FP16):
            raise PrecisionError(f"the {backend} backend serves {TORCHSCRIPT_FILE} as exported; {requested} variants "
                                 "are ONNX")
        return Selection(Precision(manifest.precision), TORCHSCRIPT_FILE,
                         f"the {backend} backend serves {TORCHSCRIPT_FILE} as exported")
    if requested == Precision.FP32:
        return Selection(Precision.FP32, FP32_FILE, "requested")
    if requested != AUTO:
        selection = listed_variant(manifest, requested)
        if not selection.variant.accepted:
            raise PrecisionError(f"the {requested} variant of {manifest.name!r} was rejected by the accuracy guard "
                                 f"({selection.variant.reason}); serve fp32 or re-export with another calibration")
        return selection
    wanted = preferred_variant(provider)
    variant = manifest.variant(wanted)
    if variant is None:
        return Selection(Precision.FP32, FP32_FILE, f"auto: the entry has no {wanted} variant for {provider}")
    if not variant.accepted:
        return Selection(Precision.FP32, FP32_FILE,
                         f"auto: the {wanted} variant was rejected by the guard ({variant.reason})")
    speedup = variant.measures.get("speedup")
    gain = f", {speedup:.2f}x fp32" if speedup is not None else ""
    return Selection(wanted, variant.file, f"auto: guard-accepted {wanted} variant for {provider}{gain}", variant)


def settle(manifest: Manifest, selection: Selection, requested: Precision | str, check: Recheck) -> Selection:
    """The selection once the variant was re-checked on this machine: unchanged when its verdict was measured on
    one like it; under auto, fp32 when it fails here or is under MIN_SPEEDUP here (by the guard's timing when that
    was made on a machine like this one); PrecisionError for an explicit precision that fails here."""
    variant = selection.variant
    assert variant is not None
    checks = check.describe()
    name, precision = manifest.name, variant.precision
    if not check.needed:
        speed = variant.measures.get("speedup")
        if requested == AUTO and speed is not None and speed < MIN_SPEEDUP:
            return Selection(Precision.FP32, FP32_FILE, f"auto: the guard timed the {precision} variant at "
                             f"{speed:.2f}x fp32 on a machine like this one, under the {MIN_SPEEDUP:g}x a variant "
                             "must earn", checks=checks)
        return replace(selection, checks=checks)
    speed = check.figures.get("speedup")
    if requested != AUTO:
        if check.ran and not check.holds:
            raise PrecisionError(f"the {precision} variant of {name!r} {check.summary()}; serve fp32 or re-export "
                                 "on a machine like this one")
        return replace(selection, reason=f"requested; the verdict {check.summary()}", checks=checks)
    if not check.holds:
        return Selection(Precision.FP32, FP32_FILE, f"auto: the {precision} variant {check.summary()}",
                         checks=checks)
    if not check.faster:
        return Selection(Precision.FP32, FP32_FILE, f"auto: the {precision} variant holds on this machine but measured "
                         f"{speed:.2f}x fp32 here, under the {MIN_SPEEDUP:g}x a variant must earn", checks=checks)
    return replace(selection, reason=f"{selection.reason}; {check.summary()}", checks=checks)
