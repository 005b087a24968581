"""The reproduction's budgets, its verdicts against hand-computed figures, and a page generated whole from JSON."""

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from training.budgets import BUDGETS, budget_of
from training.reproduce import classify_args, msl_finding, run_description, sb_finding

ROOT = Path(__file__).resolve().parents[2]


def occlusion(clean: float, high_visible: float, high_original: float) -> dict:
    return {"occlusion": {"clean": {"mAP": clean}, "b6": {"visible": {"mAP": high_visible},
                                                          "original": {"mAP": high_original}}}}


def test_budgets_and_overrides() -> None:
    assert set(BUDGETS) == {"tiny", "cpu", "gpu"}
    for budget in BUDGETS.values():
        assert 0 < budget["switch"] < budget["iters"]
    b = budget_of("cpu", ["iters=1400", "decay=2,3", "lr=0.02"])
    assert b["iters"] == 1400 and isinstance(b["iters"], int) and b["decay"] == [2, 3] and b["lr"] == 0.02
    assert BUDGETS["cpu"]["iters"] == 1000 and BUDGETS["cpu"]["lr"] == 0.05  # the named budget itself is untouched
    assert budget_of("cpu", ["difficult=negative"])["difficult"] == "negative"
    with pytest.raises(ValueError, match="difficult='maybe': choose one of negative, ignore"):
        budget_of("cpu", ["difficult=maybe"])
    with pytest.raises(ValueError, match="KEY=VALUE"):
        budget_of("cpu", ["nope=1"])
    with pytest.raises(ValueError, match="--set 'msl_lr=abc': msl_lr takes a number"):
        budget_of("cpu", ["msl_lr=abc"])
    with pytest.raises(ValueError, match="--set 'decay=9,x': decay takes comma-separated integers"):
        budget_of("cpu", ["decay=9,x"])
    with pytest.raises(ValueError, match="switch"):
        budget_of("cpu", ["switch=1000"])
    with pytest.raises(ValueError, match="choose one of"):
        budget_of("huge")


def test_msl_verdict_is_the_ratio_of_drops_and_two_standard_deviations() -> None:
    runs = {"baseline": [occlusion(80, 40, 30), occlusion(82, 40, 31), occlusion(78, 40, 29)],  # drops 40, 42, 38
            "msl": [occlusion(80, 65, 50), occlusion(80, 64, 50), occlusion(80, 66, 50)]}  # drops 15, 16, 14
    found = msl_finding(runs, "visible")
    assert found["drop_baseline"]["mean"] == pytest.approx(40.0) and found["drop_msl"]["mean"] == pytest.approx(15.0)
    assert found["ratio"] == pytest.approx(15 / 40)
    assert found["difference"]["values"] == pytest.approx([25.0, 26.0, 24.0])  # std 1: 25 > 2
    assert found["met"]
    original = msl_finding(runs, "original")  # drops 50, 51, 49 against 30, 30, 30: ratio 0.6
    assert original["ratio"] == pytest.approx(0.6) and not original["met"]
    one_seed = msl_finding({m: r[:1] for m, r in runs.items()}, "visible")
    assert not one_seed["met"]  # one seed has no spread to beat


def test_sb_verdict_needs_ia_s_to_gain_more_than_miou_beyond_two_standard_deviations() -> None:
    keys = ("mIoU", "IA-mIoU", "IA_S", "IA_M", "IA_L")
    ce = [dict.fromkeys(keys, 0.5) for _ in range(3)]
    sb = [{**dict.fromkeys(keys, 0.5), "mIoU": 0.51, "IA_S": s} for s in (0.56, 0.57, 0.55)]
    found = sb_finding({"ce": ce, "sb": sb})
    assert found["excess_IA_S_over_mIoU"]["values"] == pytest.approx([0.05, 0.06, 0.04])
    assert found["met"]
    noisy = [{**dict.fromkeys(keys, 0.5), "mIoU": 0.51, "IA_S": s} for s in (0.60, 0.50, 0.52)]
    assert not sb_finding({"ce": ce, "sb": noisy})["met"]  # excess 0.09, -0.01, 0.01: mean 0.03, std 0.05


def test_the_committed_page_is_generated_whole_from_its_json(tmp_path: Path) -> None:
    docs = tmp_path / "docs"
    docs.mkdir()
    shutil.copy(ROOT / "docs" / "reproduction.json", docs / "reproduction.json")
    result = subprocess.run([sys.executable, "-m", "training", "reproduce", "--report-only", "--docs", str(docs),
                             "--demo", str(tmp_path / "no-demo")], capture_output=True, text=True, cwd=ROOT)
    assert result.returncode == 0, result.stderr[-2000:]
    assert (docs / "reproduction.md").read_text() == (ROOT / "docs" / "reproduction.md").read_text()
    assert (docs / "img" / "reproduction_classification.png").stat().st_size > 10_000


def test_a_quick_reproduction_trains_every_arm_and_writes_its_page_as_reduced(tmp_path: Path) -> None:
    docs, work = tmp_path / "docs", tmp_path / "work"
    docs.mkdir()
    result = subprocess.run([sys.executable, "-m", "training", "reproduce", "--quick", "--seeds", "0", "--work",
                             str(work), "--docs", str(docs), "--demo", str(tmp_path / "no-demo"), "--threads", "2"],
                            capture_output=True, text=True, cwd=ROOT)
    assert result.returncode == 0, result.stderr[-2000:]
    assert "rendering scene pool" in result.stderr and not (work / "pool").exists()  # used, then deleted
    recorded = json.loads((docs / "reproduction.json").read_text())
    assert recorded["seeds"] == [0] and not recorded["full_run"]
    assert recorded["budget"]["difficult"] == "ignore"
    for arm in ("baseline", "msl"):
        occluded = recorded["classification_runs"][arm][0]["occlusion"]
        assert set(occluded) == {"clean", "b1", "b2", "b3", "b4", "b5", "b6"}
        assert 0 <= occluded["b6"]["visible"]["mAP"] <= 100
    assert recorded["bn_study"]["chosen"] in ("clean", "update")
    assert set(recorded["segmentation"]) == {"ce", "sb"}
    assert recorded["bn_study"]["kind"] == "recomputed"  # one MSL training, two sets of statistics
    trained, recomputed = (torch.load(work / "classify-msl-0" / name, map_location="cpu", weights_only=True)
                           for name in ("best.pth", "best-cleanbn.pth"))
    assert recomputed["batchnorm_recomputed_on"] == recorded["budget"]["stream"]
    weights = [k for k in trained["state_dict"] if k.endswith(".weight")]
    assert all(torch.equal(trained["state_dict"][k], recomputed["state_dict"][k]) for k in weights)
    assert any(not torch.equal(trained["state_dict"][k], recomputed["state_dict"][k])
               for k in trained["state_dict"] if k.endswith("running_mean"))
    page = (docs / "reproduction.md").read_text()
    assert "**This is a reduced run** (budget `tiny`, 1 seed(s))" in page
    assert "left out of the BCE terms" in page


def test_each_classification_arm_trains_at_its_own_rate(tmp_path: Path) -> None:
    budget = budget_of("cpu", ["msl_lr=0.2"])
    args = {m: classify_args(tmp_path, tmp_path / m, m, budget, 0, "cpu", tmp_path) for m in ("baseline", "msl")}
    assert (args["baseline"].lr, args["msl"].lr) == (0.05, 0.2)
    result = {"budget": budget, "budget_name": "cpu", "full_run": True, "command": "c", "seconds": 60.0,
              "machine": "m", "seeds": [0], "overrides": ["msl_lr=0.2"], "device": "cpu"}
    assert "SGD lr 0.05 for the baseline, 0.2 for MSL (10x head)" in "\n".join(run_description(result))
    older = {key: value for key, value in BUDGETS["cpu"].items() if key != "msl_lr"}  # a JSON from before msl_lr
    assert classify_args(tmp_path, tmp_path, "msl", older, 0, "cpu", tmp_path).lr == older["lr"]
    assert "SGD lr 0.05 (10x head)" in "\n".join(run_description({**result, "budget": older}))
