"""Where a precision verdict was measured: the CPU's instruction sets that INT8 kernels depend on, the ONNX Runtime
version and the provider.

ONNX Runtime picks its INT8 kernels from the CPU's features at run time (AMX, AVX-512 VNNI, AVX-VNNI, AVX-512BW,
AVX2 on x86; dot-product and i8mm on Arm), and U8S8 kernels without VNNI can saturate, so a verdict holds only for
machines with the same record. Plain functions over a flag set, so that hand-written flag sets test them.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

CPUINFO = Path("/proc/cpuinfo")
# The flags (as /proc/cpuinfo spells them) that change which INT8 or fp32 kernels ONNX Runtime runs.
ISA_FLAGS = ("avx2", "fma", "avx512f", "avx512bw", "avx512vl", "avx512_vnni", "avx_vnni", "avx512_bf16",
             "amx_tile", "amx_int8", "amx_bf16", "asimd", "asimddp", "i8mm")
# The level ONNX Runtime's INT8 kernels reach, best first: (name, flags it needs).
ISA_LEVELS = (("amx", ("amx_tile", "amx_int8")), ("avx512-vnni", ("avx512bw", "avx512_vnni")),
              ("avx-vnni", ("avx2", "avx_vnni")), ("avx512", ("avx512bw",)), ("avx2", ("avx2",)),
              ("neon-i8mm", ("asimd", "i8mm")), ("neon-dot", ("asimd", "asimddp")), ("neon", ("asimd",)))
BASELINE = "baseline"  # none of the above: SSE on x86, or a CPU this module does not know
COMPARED = ("isa", "isa_flags", "onnxruntime", "provider")


def isa_level(flags: Iterable[str]) -> str:
    """The best INT8 kernel level a CPU with these flags reaches: amx, avx512-vnni, avx-vnni, avx512, avx2, neon-i8mm,
    neon-dot, neon, else baseline."""
    have = set(flags)
    return next((name for name, needs in ISA_LEVELS if have.issuperset(needs)), BASELINE)


def isa_record(flags: Iterable[str]) -> dict[str, Any]:
    """The ISA part of a machine record: the level and the kernel-relevant flags present, sorted."""
    have = set(flags)
    return {"isa": isa_level(have), "isa_flags": sorted(f for f in ISA_FLAGS if f in have)}


def parse_cpuinfo(text: str) -> tuple[set[str], str]:
    """The feature flags (x86 ``flags``, Arm ``Features``) and the model name of the first CPU in cpuinfo text."""
    flags: set[str] = set()
    model = ""
    for line in text.splitlines():
        key, _, value = line.partition(":")
        key = key.strip().lower()
        if key in ("flags", "features") and not flags:
            flags = set(value.split())
        elif key in ("model name", "cpu model") and not model:
            model = value.strip()
    return flags, model


def machine_record(onnxruntime: str, provider: str, cpuinfo: str | None = None) -> dict[str, Any]:
    """This machine's record (or that of ``cpuinfo`` text): ISA level and flags, CPU model, ONNX Runtime version and
    the provider that runs the graph."""
    if cpuinfo is None:
        cpuinfo = CPUINFO.read_text() if CPUINFO.is_file() else ""
    flags, model = parse_cpuinfo(cpuinfo)
    return {**isa_record(flags), "cpu": model, "onnxruntime": onnxruntime, "provider": provider}


AVX2_ONLY_FLAGS = ("avx2", "fma")
AVX512_VNNI_FLAGS = ("avx2", "avx512bw", "avx512f", "avx512vl", "avx512_vnni", "fma")


def unlike(record: Mapping[str, Any]) -> dict[str, Any]:
    """The ISA part of a record for a CPU of another level than ``record``'s: AVX2-only, or AVX-512 VNNI where
    ``record`` is AVX2-only (a verdict claiming it is always re-checked on ``record``'s machine)."""
    other = isa_record(AVX2_ONLY_FLAGS)
    return other if other["isa"] != record["isa"] else isa_record(AVX512_VNNI_FLAGS)


def machine_differences(recorded: Mapping[str, Any], here: Mapping[str, Any]) -> list[str]:
    """What differs between the machine a verdict was measured on and this one (empty when nothing does)."""
    if not recorded:
        return ["the verdict does not say where it was measured"]
    differences = []
    for key in COMPARED:
        theirs, ours = recorded.get(key), here.get(key)
        if key == "isa_flags":
            theirs, ours = sorted(theirs or ()), sorted(ours or ())
            if theirs != ours:
                gone, new = sorted(set(theirs) - set(ours)), sorted(set(ours) - set(theirs))
                differences.append("ISA flags " + ", ".join([*(f"-{f}" for f in gone), *(f"+{f}" for f in new)]))
        elif theirs != ours:
            differences.append(f"{key} {theirs or 'unknown'} there, {ours or 'unknown'} here")
    return differences
