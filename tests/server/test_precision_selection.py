"""select_precision: which file --precision picks for a provider, from the manifest's variants and verdicts."""

from __future__ import annotations

from dataclasses import replace

import pytest

from model_store.manifest import Manifest, Precision, Variant, load_manifest
from server.precision import PrecisionError, listed_variant, select_precision, settle
from server.recheck import MIN_SPEEDUP, Recheck
from server.runtimes import CPU, CUDA, TENSORRT
from server.settings import AUTO, Settings
from tests.conftest import CLASSIFIER


@pytest.fixture(scope="module")
def plain(store) -> Manifest:
    return load_manifest(store / CLASSIFIER / "1")


def with_variants(manifest: Manifest, *variants: Variant) -> Manifest:
    return replace(manifest, variants=variants)


INT8 = Variant("model.int8.onnx", "int8", "accepted", "", {"speedup": 2.4}, {"speed_provider": CPU})
FP16 = Variant("model.fp16.onnx", "fp16", "accepted", "", {"speedup": 0.7}, {"speed_provider": CPU})


def test_auto_picks_int8_on_the_cpu_and_fp16_on_gpus(plain: Manifest) -> None:
    both = with_variants(plain, INT8, FP16)
    assert select_precision(both, "auto", CPU).file == "model.int8.onnx"
    # fp16 was timed slower on the CPU, which says nothing about a GPU
    assert select_precision(both, "auto", CUDA).file == "model.fp16.onnx"
    assert select_precision(both, "auto", TENSORRT).precision == "fp16"


def test_auto_serves_fp32_without_a_usable_variant(plain: Manifest) -> None:
    assert select_precision(plain, "auto", CPU).reason == f"auto: the entry has no int8 variant for {CPU}"
    rejected = with_variants(plain, replace(INT8, status="rejected", reason="mAP changes by -0.90 points"))
    chosen = select_precision(rejected, "auto", CPU)
    assert chosen.file == "model.onnx" and "mAP changes by -0.90 points" in chosen.reason


def test_on_the_guards_machine_auto_needs_the_guards_timing_to_reach_min_speedup(plain: Manifest) -> None:
    """The guard's speed figure decides when no re-check was needed; a re-check's own timing decides otherwise."""
    same = Recheck({"isa": "avx2", "provider": CPU}, [])

    def settled(speedup: float, requested=AUTO, check: Recheck = same):
        manifest = with_variants(plain, replace(INT8, measures={"speedup": speedup}))
        return settle(manifest, select_precision(manifest, requested, CPU), requested, check)

    slower = settled(1.49)
    assert slower.file == "model.onnx" and slower.checks["needed"] is False
    assert slower.reason == ("auto: the guard timed the int8 variant at 1.49x fp32 on a machine like this one, "
                             "under the 1.5x a variant must earn")
    assert settled(MIN_SPEEDUP).file == "model.int8.onnx"
    assert settled(0.8, requested=Precision.INT8).file == "model.int8.onnx"  # asked for explicitly
    elsewhere = Recheck({"isa": "avx2", "provider": CPU}, ["isa avx512-vnni there"], ["speed against fp32"], [],
                        True, {"speedup": 1.9})
    assert settled(0.8, check=elsewhere).file == "model.int8.onnx"  # timed here, at 1.9x


def test_explicit_precisions_are_honoured_or_refused(plain: Manifest) -> None:
    assert select_precision(with_variants(plain, INT8), "int8", CPU).file == "model.int8.onnx"
    assert select_precision(with_variants(plain, INT8), "fp32", CPU).file == "model.onnx"
    with pytest.raises(PrecisionError, match="has no fp16 variant"):
        select_precision(with_variants(plain, INT8), "fp16", CUDA)
    with pytest.raises(PrecisionError, match="rejected by the accuracy guard"):
        select_precision(with_variants(plain, replace(INT8, status="rejected")), "int8", CPU)
    with pytest.raises(PrecisionError, match="variants are ONNX"):
        select_precision(with_variants(plain, INT8), "int8", "torchscript", backend="torchscript")
    assert select_precision(plain, "auto", "torchscript", backend="torchscript").file == "model.pt"


def test_comparisons_may_run_a_rejected_variant(plain: Manifest) -> None:
    rejected = with_variants(plain, replace(INT8, status="rejected"))
    assert listed_variant(rejected, "int8").variant.status == "rejected"
    with pytest.raises(PrecisionError, match="it has fp32, int8"):
        listed_variant(rejected, "fp16")


def test_a_precision_is_read_once_where_it_enters_and_passed_on_typed(plain: Manifest) -> None:
    assert Settings(precision="int8").precision is Precision.INT8 and Settings().precision == AUTO
    with pytest.raises(ValueError, match="precision 'int4' must be one of auto, fp32, int8, fp16"):
        Settings(precision="int4")
    chosen = select_precision(with_variants(plain, INT8), Settings().precision, CPU)
    assert chosen.precision is Precision.INT8 and chosen.precision == "int8"  # a string enum: JSON says "int8"
    assert select_precision(plain, Precision.FP32, CPU).precision is Precision.FP32
    assert listed_variant(with_variants(plain, INT8), Precision.INT8).file == "model.int8.onnx"
