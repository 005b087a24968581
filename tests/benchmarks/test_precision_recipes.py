"""The recipe benchmark's start-up check claims a machine unlike the one it runs on, so the check always runs."""

from __future__ import annotations

import pytest

from benchmarks.precision_recipes import claimed_machine
from model_store.machine import AVX2_ONLY_FLAGS, AVX512_VNNI_FLAGS, isa_record, machine_differences

AVX2 = {**isa_record(AVX2_ONLY_FLAGS), "cpu": "AMD EPYC", "onnxruntime": "1.31.1", "provider": "CPUExecutionProvider"}
VNNI = {**AVX2, **isa_record(AVX512_VNNI_FLAGS)}


@pytest.mark.parametrize(("here", "claimed_isa"), [(AVX2, "avx512-vnni"), (VNNI, "avx2")])
def test_the_claimed_machine_differs_from_this_one(here: dict, claimed_isa: str) -> None:
    claimed = claimed_machine(here)
    assert claimed["isa"] == claimed_isa
    assert f"isa {claimed_isa} there" in machine_differences({**here, **claimed}, here)[0]
