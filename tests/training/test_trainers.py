"""The trainers run end to end on a tiny embedded dataset and do what they promise."""

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from training.datasets import make_dataset

ROOT = Path(__file__).resolve().parents[2]


def run_training(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "training", *args], capture_output=True, text=True, cwd=ROOT)


@pytest.fixture(scope="module")
def tiny_data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_dataset(tmp_path_factory.mktemp("data") / "embedded", n_train=96, n_test=48, image_size=96,
                        seed=3, progress=False)


def test_quick_msl_run_improves_map_over_its_first_epoch(tiny_data: Path, tmp_path: Path) -> None:
    result = run_training("classify", "--data", str(tiny_data), "--out", str(tmp_path), "--method", "msl",
                          "--preset", "resnet18-csra", "--image-size", "96", "--epochs", "4", "--batch-size", "16",
                          "--warmup-epochs", "1", "--decay-epochs", "--eval-mask-ratio", "high", "--seed", "0")
    assert result.returncode == 0, result.stderr[-2000:]
    log = json.loads((tmp_path / "log.json").read_text())
    assert [r["epoch"] for r in log] == [1, 2, 3, 4]
    assert set(log[0]["train"]) == {"loss", "bce_clean", "bce_masked", "mse"}
    best = max(r["clean"]["mAP"] for r in log)
    assert best > log[0]["clean"]["mAP"]
    checkpoint = torch.load(tmp_path / "best.pth", weights_only=True)
    assert checkpoint["preset"]["image_size"] == 96 and checkpoint["method"] == "msl"
    assert checkpoint["metrics"]["clean"]["mAP"] == pytest.approx(best)
    assert set(log[0]["masked"]) == {"mAP", "CP", "CR", "CF1", "OP", "OR", "OF1"}


def test_classify_resumes_from_last_checkpoint(tiny_data: Path, tmp_path: Path) -> None:
    common = ["classify", "--data", str(tiny_data), "--out", str(tmp_path), "--method", "baseline",
              "--image-size", "64", "--batch-size", "16", "--limit", "32", "--eval-mask-ratio", "", "--seed", "1",
              "--warmup-epochs", "1", "--decay-epochs"]
    assert run_training(*common, "--epochs", "1").returncode == 0
    result = run_training(*common, "--epochs", "2", "--resume")
    assert result.returncode == 0, result.stderr[-2000:]
    assert "resumed from" in result.stdout
    assert [r["epoch"] for r in json.loads((tmp_path / "log.json").read_text())] == [1, 2]


def test_segment_sb_run_switches_phase_and_logs_ia_miou(tiny_data: Path, tmp_path: Path) -> None:
    result = run_training("segment", "--data", str(tiny_data), "--out", str(tmp_path), "--loss", "sb",
                          "--image-size", "64", "--iters", "6", "--switch-iter", "3", "--fisher-iters", "2",
                          "--eval-every", "3", "--batch-size", "4")
    assert result.returncode == 0, result.stderr[-2000:]
    log = json.loads((tmp_path / "log.json").read_text())
    assert [r["phase"] for r in log] == ["ce", "sb"]
    assert "ewc" in log[1]["train"] and log[1]["train"]["ewc"] >= 0
    assert {"mIoU", "IA-mIoU", "IA_S", "IA_M", "IA_L"} <= set(log[-1])
    state = torch.load(tmp_path / "switch.pth", weights_only=True)
    assert state["step"] == 3 and state["ewc"]["steps"] == 2


@pytest.mark.parametrize("command", ["make-dataset", "classify", "segment", "reproduce"])
def test_every_cli_has_help(command: str) -> None:
    result = run_training(command, "--help")
    assert result.returncode == 0 and "usage: python -m training" in result.stdout


def test_bad_dataset_path_is_a_one_line_error(tmp_path: Path) -> None:
    result = run_training("classify", "--data", str(tmp_path / "nope"), "--out", str(tmp_path / "o"))
    assert result.returncode == 2
    assert result.stderr.strip().count("\n") == 0 and "dataset folder not found" in result.stderr
    assert "Traceback" not in result.stderr
