"""The machine record of a verdict: ISA levels from hand-written flag sets, cpuinfo parsing, and differences."""

from __future__ import annotations

import pytest

from model_store.machine import isa_level, isa_record, machine_differences, machine_record, parse_cpuinfo

HASWELL = {"fpu", "sse2", "ssse3", "sse4_1", "sse4_2", "avx", "avx2", "fma", "bmi2"}
SKYLAKE_X = HASWELL | {"avx512f", "avx512bw", "avx512vl", "avx512dq", "avx512cd"}
CASCADE_LAKE = SKYLAKE_X | {"avx512_vnni"}
SAPPHIRE_RAPIDS = CASCADE_LAKE | {"avx_vnni", "avx512_bf16", "amx_tile", "amx_int8", "amx_bf16"}
ALDER_LAKE = HASWELL | {"avx_vnni"}


@pytest.mark.parametrize(("flags", "level"), [
    (HASWELL, "avx2"),
    (SKYLAKE_X, "avx512"),
    (CASCADE_LAKE, "avx512-vnni"),
    (SAPPHIRE_RAPIDS, "amx"),
    (ALDER_LAKE, "avx-vnni"),
    ({"sse2", "sse4_2", "avx"}, "baseline"),
    ({"avx512_vnni", "avx2"}, "avx2"),  # VNNI without AVX-512BW is not the AVX-512 VNNI level
    ({"amx_int8", "avx2"}, "avx2"),  # AMX needs its tile flag too
    ({"fp", "asimd", "asimddp", "i8mm"}, "neon-i8mm"),
    ({"fp", "asimd", "asimddp"}, "neon-dot"),
    ({"fp", "asimd"}, "neon"),
    (set(), "baseline"),
])
def test_isa_level_of_hand_written_flag_sets(flags: set[str], level: str) -> None:
    assert isa_level(flags) == level


def test_the_record_keeps_only_kernel_relevant_flags_sorted() -> None:
    assert isa_record(CASCADE_LAKE) == {"isa": "avx512-vnni", "isa_flags": ["avx2", "avx512_vnni", "avx512bw",
                                                                           "avx512f", "avx512vl", "fma"]}
    assert isa_record({"sse2"}) == {"isa": "baseline", "isa_flags": []}


X86_CPUINFO = """processor\t: 0
vendor_id\t: AuthenticAMD
model name\t: AMD EPYC 7B13
flags\t\t: fpu sse2 avx avx2 fma bmi2
bugs\t\t: sysret_ss_attrs

processor\t: 1
model name\t: AMD EPYC 7B13
flags\t\t: fpu sse2 avx avx2 fma bmi2 avx512f
"""
ARM_CPUINFO = """processor\t: 0
BogoMIPS\t: 50.00
Features\t: fp asimd evtstrm aes pmull sha1 sha2 crc32 atomics fphp asimdhp cpuid asimdrdm lrcpc dcpop asimddp
CPU implementer\t: 0x41
"""


def test_cpuinfo_parsing_reads_the_first_cpu_on_x86_and_arm() -> None:
    flags, model = parse_cpuinfo(X86_CPUINFO)
    assert model == "AMD EPYC 7B13" and "avx2" in flags and "avx512f" not in flags  # the first processor only
    record = machine_record("1.31.1", "CPUExecutionProvider", X86_CPUINFO)
    assert record == {"isa": "avx2", "isa_flags": ["avx2", "fma"], "cpu": "AMD EPYC 7B13", "onnxruntime": "1.31.1",
                      "provider": "CPUExecutionProvider"}
    assert machine_record("1.31.1", "CPUExecutionProvider", ARM_CPUINFO)["isa"] == "neon-dot"
    assert machine_record("1.31.1", "CPUExecutionProvider", "")["isa"] == "baseline"


def test_differences_name_what_changed() -> None:
    avx2 = machine_record("1.31.1", "CPUExecutionProvider", X86_CPUINFO)
    vnni = {**avx2, **isa_record(CASCADE_LAKE), "cpu": "Intel Xeon"}
    assert machine_differences(avx2, {**avx2, "cpu": "another model name"}) == []  # same kernels
    assert machine_differences(vnni, avx2) == ["isa avx512-vnni there, avx2 here",
                                               "ISA flags -avx512_vnni, -avx512bw, -avx512f, -avx512vl"]
    assert machine_differences({**avx2, "onnxruntime": "1.20.0"}, avx2) == ["onnxruntime 1.20.0 there, 1.31.1 here"]
    assert machine_differences(avx2, {**avx2, "provider": "CUDAExecutionProvider"}) == [
        "provider CPUExecutionProvider there, CUDAExecutionProvider here"]
    assert machine_differences({}, avx2) == ["the verdict does not say where it was measured"]
