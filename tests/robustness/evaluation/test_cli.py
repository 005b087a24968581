"""``python -m robustness evaluate`` end to end on the embedded test set, and its one-line errors (status 2)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest
from PIL import Image
from sklearn.metrics import average_precision_score

from export.pipeline import VariantRequest, add_variants
from robustness.__main__ import main
from tests.robustness.evaluation.conftest import (
    CLASSIFICATION_DATA,
    CLASSIFIER,
    ROOT,
    SEGMENTER,
    copy_entry,
    direct_inputs,
)

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def test_cli_writes_the_report_tables_and_plots(tmp_path):
    out = tmp_path / "run"
    command = [sys.executable, "-m", "robustness", "evaluate", "--model", str(CLASSIFIER), "--data",
               str(CLASSIFICATION_DATA), "--limit", "6", "--corruptions", "gaussian_noise,contrast", "--severities",
               "1,5", "--occlusion", "b1,b6", "--bootstrap", "50", "--out", str(out), "--explain", "1"]
    done = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    printed = [Path(line) for line in done.stdout.split()]
    assert printed[:2] == [out / "report.json", out / "report.md"]
    report = json.loads((out / "report.json").read_text())
    assert report["dataset"]["images"] == 6
    assert [c["key"] for c in report["conditions"]] == [
        "clean", "occlusion/b1", "occlusion/b6", "corruption/gaussian_noise/1", "corruption/gaussian_noise/5",
        "corruption/contrast/1", "corruption/contrast/5"]
    assert report["config"]["bootstrap"] == 50 and report["comparisons"] == []
    assert all(e["file"].startswith("explain/") and "png_base64" not in e for e in report["explanations"])
    markdown = (out / "report.md").read_text()
    assert "| demo-classifier | clean |" in markdown and "mPC" in markdown
    pngs = [p for p in printed if p.suffix == ".png"]
    assert {p.name for p in pngs} >= {"occlusion.png", "corruptions-mAP.png", "corruptions-ECE.png"}
    for png in pngs:
        data = png.read_bytes()
        assert data.startswith(PNG_SIGNATURE) and len(data) > 1024, png
    assert not list(out.rglob(".*.tmp-*"))  # no temporary file left behind


def run_cli(capsys, *args: str) -> tuple[int, str]:
    code = main(["evaluate", *args])
    return code, capsys.readouterr().err


def assert_one_line(err: str, *fragments: str) -> None:
    assert err.count("\n") == 1 and "Traceback" not in err, err
    for fragment in fragments:
        assert fragment in err, err


@pytest.mark.parametrize(("args", "fragments"), [
    (("--model", "model_store/no-such-model", "--data", str(CLASSIFICATION_DATA)), ("model folder not found",)),
    (("--model", str(CLASSIFIER), "--data", "no/such/data"), ("dataset not found",)),
    (("--model", str(CLASSIFIER), "--data", str(CLASSIFICATION_DATA), "--corruptions", "fog,rain"),
     ("unknown corruption rain",)),
    (("--model", str(CLASSIFIER), "--data", str(CLASSIFICATION_DATA), "--occlusion", "b7"),
     ("unknown occlusion bucket 'b7'",)),
    (("--model", str(CLASSIFIER), "--data", str(CLASSIFICATION_DATA), "--severities", "0-2"), ("severities",)),
    (("--model", str(SEGMENTER), "--data", str(CLASSIFICATION_DATA / "test.json")), ("not a dataset layout",)),
])
def test_bad_input_is_one_line_and_status_2(capsys, args, fragments):
    code, err = run_cli(capsys, *args)
    assert code == 2
    assert_one_line(err, *fragments)


def test_class_mismatches_are_one_line_and_status_2(capsys, scratch_store):
    nine = copy_entry(CLASSIFIER, scratch_store, "nine", class_names=[f"c{i}" for i in range(9)])
    code, err = run_cli(capsys, "--model", str(nine), "--data", str(CLASSIFICATION_DATA), "--limit", "2")
    assert code == 2
    assert_one_line(err, "has 9 classes but the data has 10")
    renamed = copy_entry(CLASSIFIER, scratch_store, "renamed", class_names=[f"c{i}" for i in range(10)])
    code, err = run_cli(capsys, "--model", str(CLASSIFIER), "--compare", str(renamed), "--data",
                        str(CLASSIFICATION_DATA), "--limit", "2")
    assert code == 2
    assert_one_line(err, "different classes")


def test_argument_errors_are_one_line_and_status_2(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["evaluate", "--model", str(CLASSIFIER)])
    assert exit_info.value.code == 2
    assert_one_line(capsys.readouterr().err, "the following arguments are required: --data")


def test_the_cli_runs_from_the_repository_root_only_with_relative_paths(monkeypatch, capsys):
    monkeypatch.chdir(ROOT)
    code, err = run_cli(capsys, "--model", str(CLASSIFIER), "--data", str(CLASSIFICATION_DATA),
                        "--corruptions", "nope")
    assert code == 2
    assert_one_line(err, "unknown corruption nope")


def test_compare_precision_evaluates_the_entry_beside_its_int8_variant(capsys, scratch_store, tmp_path):
    """``--compare-precision int8``: the same entry at fp32 and at INT8, paired; the INT8 cells are what its own
    ONNX file gives (scikit-learn's AP on a direct ONNX Runtime run of model.int8.onnx)."""
    entry = copy_entry(CLASSIFIER, scratch_store, "quantised")
    calib = tmp_path / "calib"  # images the guard never sees
    calib.mkdir()
    for seed in range(8):
        noise = np.random.default_rng(seed).integers(0, 256, (128, 128, 3), dtype=np.uint8)
        Image.fromarray(noise).save(calib / f"{seed}.png")
    add_variants(entry / "1", VariantRequest(("int8",), calib=calib, guard_data=CLASSIFICATION_DATA,
                                             tolerance=100.0, calib_images=8, calib_method="minmax", guard_images=6,
                                             probe_images=0, speed_seconds=0.1), progress=False)
    out = tmp_path / "run"
    code, err = run_cli(capsys, "--model", str(entry), "--data", str(CLASSIFICATION_DATA), "--limit", "6",
                        "--occlusion", "none", "--corruptions", "contrast", "--severities", "1", "--bootstrap", "20",
                        "--no-checks", "--compare-precision", "int8", "--out", str(out))
    assert code == 0, err
    report = json.loads((out / "report.json").read_text())
    assert [(m["label"], m["precision"]) for m in report["models"]] == [("quantised", "fp32"),
                                                                       ("quantised@int8", "int8")]
    assert [(c["model"], c["other"]) for c in report["comparisons"]] == [("quantised", "quantised@int8")]

    records = json.loads((CLASSIFICATION_DATA / "test.json").read_text())[:6]
    targets = np.array([r["target"] for r in records])
    m = json.loads((entry / "1" / "manifest.json").read_text())
    inputs = np.stack([direct_inputs(CLASSIFICATION_DATA / r["img_path"], tuple(m["input"]["size"]),
                                     m["input"]["mean"], m["input"]["std"]) for r in records])
    session = ort.InferenceSession(str(entry / "1" / "model.int8.onnx"), providers=["CPUExecutionProvider"])
    scores = np.concatenate([session.run(None, {session.get_inputs()[0].name: x[None]})[0] for x in inputs])
    cell = report["results"]["quantised@int8"]["clean"]["per_class"]["AP"]
    for c, name in enumerate(report["dataset"]["class_names"]):
        keep = targets[:, c] != 0
        positives = targets[keep, c] == 1
        if positives.any():
            assert cell[name]["value"] == pytest.approx(100 * average_precision_score(positives, scores[keep, c]),
                                                        abs=1e-6), name


def test_a_precision_the_entry_lacks_is_one_line_and_status_2(capsys):
    code, err = run_cli(capsys, "--model", str(CLASSIFIER), "--data", str(CLASSIFICATION_DATA),
                        "--precision", "int8")
    assert code == 2
    assert_one_line(err, "demo-classifier has no int8 variant (it has: fp32)")
    code, err = run_cli(capsys, "--model", str(CLASSIFIER), "--data", str(CLASSIFICATION_DATA),
                        "--compare-precision", "fp32")
    assert code == 2
    assert_one_line(err, "--compare-precision fp32 is the precision already evaluated")
