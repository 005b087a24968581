"""``python -m benchmarks gpu``: refuses without a GPU, and its CPU smoke run writes the page with consistent figures.

The GPU figures themselves come only from a GPU machine; this checks the command that produces them.
"""

import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def run_gpu_benchmark(*flags: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "benchmarks", "gpu", *flags], capture_output=True, text=True,
                          cwd=ROOT, timeout=600)


def test_without_a_cuda_provider_it_refuses_in_one_line():
    done = run_gpu_benchmark("--providers", "cuda")
    assert done.returncode == 2
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(
        "python -m benchmarks gpu: ONNX Runtime provider 'cuda' is not available here; available: ")


def test_a_cpu_smoke_run_writes_every_table_and_names_no_gpu(tmp_path):
    page = tmp_path / "gpu.md"
    done = run_gpu_benchmark("--models", "resnet18-csra-128", "--providers", "cpu", "--batch", "4", "--concurrency",
                             "4", "--seconds", "1", "--warmup", "0.5", "--repeats", "2", "--robustness-n", "4",
                             "--output", str(page))
    assert done.returncode == 0, done.stderr[-2000:]
    text = page.read_text()
    assert "Device: **no GPU: a CPU smoke run, not a GPU figure**" in text
    served = re.search(r"^\| resnet18-csra-128 \| 128x128 \| ([\d,]+) \| ([\d,.]+) \| ([\d.]+) \| - \|$", text, re.M)
    assert served, text
    raw, rate, ratio = (float(group.replace(",", "")) for group in served.groups())
    assert raw > 0 and rate > 0 and abs(ratio - rate / raw) < 0.05 * ratio + 0.002  # ratio of the printed figures
    number = r"([\d.]+)"
    first = re.search(rf"^\| resnet18-csra-128 \| 1, 2, 3, 4 \| (\d) \| {number} \| {number} \| {number} "
                      r"\| (met|missed) \|$", text, re.M)
    assert first, text  # on a CPU there are no buckets: every size 1..batch is timed
    first_ms, steady_ms, first_ratio = (float(g) for g in first.groups()[1:4])
    assert abs(first_ratio - first_ms / steady_ms) < 0.01 + 0.01 * first_ratio
    assert first.group(5) == ("met" if first_ratio <= 2 else "missed")
    robustness = re.search(rf"^\| resnet18-csra-128 \| {number} \| {number} \| {number} \| {number} \| {number} \|",
                           text, re.M)
    assert robustness, text
    batch, repeated, ratio = (float(g) for g in robustness.groups()[:3])
    assert batch > 0 and abs(ratio - repeated / batch) < 0.01 + 0.01 * ratio
