"""``python -m benchmarks lab-speed`` with tiny settings: both paths agree and the table has its rows (not speed)."""

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

from benchmarks.lab_speed import main as bench_main
from tests.conftest import CLASSIFIER, SEGMENTER
from training.datasets import make_dataset

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def scenes(tmp_path_factory) -> Path:
    data = tmp_path_factory.mktemp("lab-speed") / "classification"
    make_dataset(data, n_train=1, n_test=2, image_size=96, seed=0, scenes="classification", progress=False)
    return data


def test_lab_speed_measures_both_paths_and_finds_the_same_inputs_and_figures(store, scenes, tmp_path, capsys):
    out = tmp_path / "lab.json"
    argv = ["--model", str(store / CLASSIFIER), "--data", str(scenes), "--images", "2", "--perturb-images", "1",
            "--full-images", "40", "--reference-conditions", "1", "--bootstrap", "20", "--full-reference",
            "--json", str(out)]
    assert bench_main(argv) == 0
    text = capsys.readouterr().out
    assert "identical inputs: yes" in text
    assert "identical figures (report.json less created/timings): yes" in text
    assert re.search(r"reference .* s \(timed on 1 conditions, scaled\); identical: yes", text)
    assert [line.split("|")[1].strip() for line in text.splitlines() if line.startswith("| reference |")
            or line.startswith("| fast |")] == ["reference", "fast"] * 3
    measured = json.loads(out.read_text())
    assert measured["perturbation"]["conditions"] == 1 + 6 + 15 * 5
    assert measured["evaluation"]["differing_keys"] == []
    estimate = measured["estimate_full_s"]
    assert measured["estimate_ratio"] == pytest.approx(estimate["reference"] / estimate["fast"])
    assert "estimated full default evaluation of 40 images " in text
    full = measured["full"]  # the set has 2 test images: the full runs evaluate both, one path after the other
    assert full["images"] == 2 and full["identical_figures"] and full["differing_keys"] == []
    assert full["fast"]["timings"]["model_inputs"] == full["reference"]["timings"]["model_inputs"] > 2 * 82
    assert full["ratio"] == pytest.approx(full["reference"]["timings"]["total_s"] / full["fast"]["timings"]["total_s"])
    assert len(full["fast"]["load_average"]) == 2 and measured["onnx_threads"]["reference"] == "ONNX Runtime default"
    assert re.fullmatch(r"measured ratio: \d+\.\dx; identical figures: yes", text.splitlines()[-1])


def test_lab_speed_refuses_bad_flags_and_segmenters_in_one_line(store, scenes, capsys):
    assert bench_main(["--images", "0"]) == 2
    assert capsys.readouterr().err.strip().splitlines() == [
        "python -m benchmarks lab-speed: error: --images, --perturb-images, --full-images and "
        "--reference-conditions must be >= 1"]
    assert bench_main(["--model", str(store / SEGMENTER), "--data", str(scenes)]) == 2
    assert "this benchmark times a classifier" in capsys.readouterr().err


def test_python_m_benchmarks_lists_lab_speed():
    listing = subprocess.run([sys.executable, "-m", "benchmarks", "--help"], capture_output=True, text=True, cwd=ROOT)
    assert "lab-speed" in listing.stdout
