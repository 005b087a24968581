"""The Python API the server calls: progress, cancellation, model folders, and writing the outputs."""

from __future__ import annotations

import json

import numpy as np
import pytest

from robustness.evaluation import EvaluationCancelled, EvaluationConfig, evaluate, open_model, write_outputs
from robustness.evaluation.onnx_model import EvalModel, resolve_entry
from robustness.metrics import multilabel_metrics
from tests.robustness.evaluation.conftest import CLASSIFIER, copy_entry, direct_inputs, direct_outputs, manifest_of

QUICK = EvaluationConfig(("b1",), (), (), bootstrap=0, checks=False, limit=4, batch_size=3)


def test_an_entry_folder_means_its_newest_version_and_a_version_folder_itself():
    assert resolve_entry(CLASSIFIER) == CLASSIFIER / "1"
    assert resolve_entry(CLASSIFIER / "1") == CLASSIFIER / "1"
    model = open_model(CLASSIFIER / "1")
    assert isinstance(model, EvalModel) and model.name == "demo-classifier"


def test_progress_counts_images_and_should_stop_cancels_between_images(classifier_set):
    seen = []
    report = evaluate([open_model(CLASSIFIER)], classifier_set, QUICK, progress=lambda done, total: seen.append(
        (done, total)))
    assert seen == [(1, 4), (2, 4), (3, 4), (4, 4)] and report["dataset"]["images"] == 4
    polls = []

    def stop_after_two() -> bool:
        polls.append(1)
        return len(polls) > 2

    with pytest.raises(EvaluationCancelled, match="after 2 of 4 images"):
        evaluate([open_model(CLASSIFIER)], classifier_set, QUICK, should_stop=stop_after_two)


def test_without_bootstrap_figures_have_no_interval_and_outputs_are_still_written(classifier_set, tmp_path):
    report = evaluate([open_model(CLASSIFIER)], classifier_set, QUICK)
    clean = report["results"]["demo-classifier"]["clean"]["metrics"]["mAP"]
    assert clean["value"] is not None and clean["ci"] == [None, None]
    assert report["checks"] == {"demo-classifier": "disabled"}
    paths = write_outputs(report, tmp_path / "out")
    assert [p.name for p in paths] == ["report.json", "report.md", "occlusion.png"]
    assert json.loads(paths[0].read_text())["results"] == report["results"]


def test_config_from_cli_spellings():
    config = EvaluationConfig.parse("high", "fog, snow", "1,3", seed=2)
    assert (config.occlusion, config.corruptions, config.severities, config.seed) == (("b6",), ("fog", "snow"),
                                                                                        (1, 3), 2)
    assert EvaluationConfig.parse("none", "none").corruptions == ()
    assert len(EvaluationConfig.parse().corruptions) == 15 and EvaluationConfig.parse().occlusion[-1] == "b6"


def test_models_with_different_input_specs_each_get_their_own_inputs(classifier_set, scratch_store):
    plain = copy_entry(CLASSIFIER, scratch_store, "plain", input={**manifest_of(CLASSIFIER)["input"],
                                                                  "mean": [0.5, 0.4, 0.3], "std": [0.2, 0.25, 0.3]})
    config = EvaluationConfig(("b5",), (), (), bootstrap=20, limit=8, batch_size=5)
    report = evaluate([open_model(CLASSIFIER), open_model(plain)], classifier_set, config)
    images = [item.image for item in classifier_set.items[:8]]
    size = tuple(manifest_of(CLASSIFIER)["input"]["size"])
    inputs = np.stack([direct_inputs(path, size, (0.5, 0.4, 0.3), (0.2, 0.25, 0.3)) for path in images])
    scores = 1 / (1 + np.exp(-direct_outputs(plain, inputs).astype(np.float64)))
    expected = multilabel_metrics(scores, classifier_set.targets[:8], 0.5)
    assert report["results"]["plain"]["clean"]["metrics"]["mAP"]["value"] == pytest.approx(expected["mAP"], abs=1e-6)
    assert report["comparisons"][0]["conditions"]["clean"]["ECE"]["value"] != 0.0  # the two saw different inputs
    tested = {label: {k: c["tested"] for k, c in checks.items()} for label, checks in report["checks"].items()}
    assert tested["plain"] == tested["demo-classifier"] and tested["plain"]["direction"] > 0


def test_should_stop_cancels_the_bootstrap_and_the_writing_and_phases_are_told(classifier_set, tmp_path):
    config = EvaluationConfig(("b1",), (), (), bootstrap=200, checks=False, limit=4, batch_size=3)
    phases, resamples = [], []

    def stop_in_statistics() -> bool:
        resamples.append(phases[-1])
        return phases[-1] == "statistics" and resamples.count("statistics") > 2

    with pytest.raises(EvaluationCancelled, match="while computing the bootstrap intervals"):
        evaluate([open_model(CLASSIFIER)], classifier_set, config, should_stop=stop_in_statistics,
                 on_phase=phases.append)
    assert phases == ["evaluating", "statistics"]
    report = evaluate([open_model(CLASSIFIER)], classifier_set, QUICK)
    polls = []
    with pytest.raises(EvaluationCancelled, match="while writing the report"):
        write_outputs(report, tmp_path / "out", should_stop=lambda: polls.append(1) or len(polls) > 2)
    assert sorted(path.name for path in (tmp_path / "out").iterdir()) == ["report.json", "report.md"]
