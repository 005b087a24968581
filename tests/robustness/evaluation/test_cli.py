"""``python -m robustness evaluate`` end to end on the embedded test set, and its one-line errors (status 2)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from robustness.__main__ import main
from tests.robustness.evaluation.conftest import (
    CLASSIFICATION_DATA,
    CLASSIFIER,
    ROOT,
    SEGMENTER,
    copy_entry,
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
