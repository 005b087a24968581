"""``python -m benchmarks robustness`` with tiny settings: the shape of its output (not its speed), one-line errors."""

import subprocess
import sys
from pathlib import Path

from benchmarks.robustness import main as bench_main

ROOT = Path(__file__).resolve().parents[2]


def test_bench_robustness_prints_a_ratio_per_n_with_and_without_explain(store, capsys):
    argv = ["--store", str(store), "--model", "r18", "--ns", "1", "8", "--rounds", "2", "--repeats", "1", "--warmup",
            "0", "--payload", "64", "--mask-ratio", "b3"]
    assert bench_main(argv) == 0
    out = capsys.readouterr().out
    assert out.startswith("model r18 (128x128), mask_ratio b3, 64x64 scene ")
    rows = [[cell.strip() for cell in line.strip("|").split("|")] for line in out.splitlines()
            if line.startswith("| ") and not line.startswith("| n ")]
    assert [(row[0], row[1], row[2]) for row in rows] == [("1", "no", "2"), ("8", "no", "9"), ("8", "yes", "9")]
    for row in rows:  # fixed ms, then inference, latency and ratio for a repeated and for a fresh seed
        fixed, repeat_inference, repeat_ms, repeat_ratio, fresh_inference, fresh_ms, fresh_ratio = (
            float(cell) for cell in row[3:])
        # each request's latency includes its own batch's inference, so the medians over the same requests keep order
        assert fixed > 0 and 0 < repeat_inference < repeat_ms and 0 < fresh_inference < fresh_ms
        assert 0.5 < repeat_ratio < 20 and 0.5 < fresh_ratio < 20
    assert out.splitlines()[-1].startswith("worst ratio with a repeated seed ")


def test_bench_robustness_reports_bad_flags_in_one_line(tmp_path, capsys):
    assert bench_main(["--ns", "0"]) == 2
    assert capsys.readouterr().err.strip().splitlines() == [
        "python -m benchmarks robustness: error: --ns [0] must lie in 1..64; --rounds, --repeats, --payload and "
        "--max-batch must be positive"]
    assert bench_main(["--mask-ratio", "huge"]) == 2
    assert "mask ratio 'huge' is not understood" in capsys.readouterr().err
    assert bench_main(["--store", str(tmp_path), "--model", "absent"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("python -m benchmarks robustness: error:")


def test_python_m_benchmarks_lists_and_dispatches_robustness():
    run = subprocess.run([sys.executable, "-m", "benchmarks", "robustness", "--help"], capture_output=True, text=True,
                         cwd=ROOT)
    assert run.returncode == 0, run.stderr
    assert "usage: python -m benchmarks robustness" in run.stdout and "baseline" in run.stdout
    listing = subprocess.run([sys.executable, "-m", "benchmarks", "--help"], capture_output=True, text=True, cwd=ROOT)
    assert "robustness" in listing.stdout
