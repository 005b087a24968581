"""``python -m benchmarks masks``: a table of ms per mask by bucket, one-line errors."""

import subprocess
import sys
from pathlib import Path

from benchmarks.masks import main as bench_main

ROOT = Path(__file__).resolve().parents[2]


def test_bench_masks_prints_ms_per_mask_by_bucket(capsys):
    assert bench_main(["--n", "3", "--sizes", "32", "--buckets", "b1", "b6"]) == 0
    lines = capsys.readouterr().out.splitlines()
    rows = [line.split() for line in lines if line.strip().startswith("32x32")]
    assert [row[1] for row in rows] == ["b1", "b6"]
    assert all(float(row[3]) > 0 for row in rows)


def test_bench_masks_reports_bad_buckets_in_one_line(capsys):
    assert bench_main(["--buckets", "b9"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == ["python -m benchmarks masks: error: mask ratio 'b9' is not understood; expected one of "
                   "low|medium|high|b1..b6|a-b (e.g. 0.2-0.35)"]  # fmt: skip


def test_python_m_benchmarks_dispatches_to_the_subcommand():
    run = subprocess.run([sys.executable, "-m", "benchmarks", "masks", "--n", "2", "--sizes", "32", "--buckets", "b1"],
                         capture_output=True, text=True, cwd=ROOT)
    assert run.returncode == 0, run.stderr
    assert any(line.split()[:2] == ["32x32", "b1"] for line in run.stdout.splitlines())
    unknown = subprocess.run([sys.executable, "-m", "benchmarks", "nope"], capture_output=True, text=True, cwd=ROOT)
    assert unknown.returncode == 2 and "invalid choice: 'nope'" in unknown.stderr
