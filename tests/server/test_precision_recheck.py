"""A store judged on one CPU and served on another: the server re-checks each variant on its probe set at load.

One fine-tuned classifier with a guarded INT8 variant and a probe set (built here, on this machine), copied into
entries whose manifests claim the verdict was measured elsewhere:

- ``same``: the real record of this machine, so nothing is re-checked (its guard timing is pinned at 2.0x fp32,
  since the real one depends on the CPU and its load);
- ``holds``: another CPU (AVX2-only, or AVX-512 VNNI where this one is AVX2-only), with that machine's probe
  figures equal to this one's: the variant holds;
- ``fails``: that other CPU, where the probe mAP delta was 50 points better than here, with the guard's
  tolerance of 0.5: the estimated delta here is about -50, so the variant fails;
- ``unprobed``: that other CPU and no probe set (an older entry): nothing to re-check on.

The probe figures are recomputed here with scikit-learn from direct ONNX Runtime runs on the stored probe arrays.
"""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest
from sklearn.metrics import average_precision_score

from export.pipeline import VariantRequest, add_variants, export_entry
from export.source import resolve_source
from model_store.machine import machine_record, unlike
from model_store.manifest import load_manifest
from server.recheck import MIN_SPEEDUP
from tests.conftest import FineTuned
from tests.server.conftest import LiveServer, launch_server
from tests.server.oracle import png_bytes, random_rgb
from tests.server.test_precision import pin_speedup, rewrite_manifest, settled

HERE = machine_record(ort.__version__, "CPUExecutionProvider")
# A record that differs from this machine's on any x86-64 CPU the tests run on.
OTHER_MACHINE = {**unlike(HERE), "cpu": "another CPU (claimed)"}
CLAIMED_BETTER = 50.0  # points of probe mAP delta the "fails" entry claims on its guard's machine


def _claim_other(document: dict, probe_delta_shift: float = 0.0, tolerance: float | None = None) -> None:
    variant = document["variants"][0]
    variant["machine"] |= OTHER_MACHINE
    variant["probe"]["mAP_delta"] += probe_delta_shift
    if tolerance is not None:
        variant["setup"]["tolerance"] = tolerance


def _drop_probes(document: dict) -> None:
    _claim_other(document)
    probe = document.pop("probe")
    for key in ("inputs", "outputs", "labels"):
        del document["files"][probe[key]]
    document["variants"][0]["probe"] = {}


@pytest.fixture(scope="module")
def recheck_store(fine_tuned: FineTuned, tmp_path_factory: pytest.TempPathFactory) -> Path:
    store = tmp_path_factory.mktemp("recheck") / "model_store"
    manifest = export_entry(resolve_source(fine_tuned.checkpoint), "same", store=store, formats=("onnx",),
                            progress=False)
    add_variants(manifest.path, VariantRequest(("int8",), fine_tuned.data, fine_tuned.data, tolerance=100.0,
                                               calib_images=32, calib_method="minmax", guard_images=24,
                                               probe_images=16, speed_seconds=0.2), progress=False)
    rewrite_manifest(store / "same" / "1", "same", pin_speedup(2.0))
    changes = {"holds": _claim_other, "fails": lambda d: _claim_other(d, CLAIMED_BETTER, tolerance=0.5),
               "unprobed": _drop_probes}
    for name, change in changes.items():
        shutil.copytree(store / "same", store / name)
        rewrite_manifest(store / name / "1", name, change)
    for name in ("holds", "fails"):  # the probe files stay listed and verified
        assert load_manifest(store / name / "1").probe is not None
    return store


@pytest.fixture(scope="module")
def servers(recheck_store: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, LiveServer]]:
    logs = tmp_path_factory.mktemp("recheck-logs")
    started = {"auto": launch_server(recheck_store, logs / "auto.log", "--intra-op-threads", "1"),
               "int8": launch_server(recheck_store, logs / "int8.log", "--precision", "int8", "--intra-op-threads",
                                     "1")}
    try:
        for live in started.values():
            settled(live, 300)
        yield started
    finally:
        for live in started.values():
            live.server.stop()


def models(live: LiveServer) -> dict[str, dict]:
    with live.client() as c:
        return {m["name"]: m for m in c.get("/models").json()["models"]}


def oracle_probe_map_delta(entry: Path) -> float:
    """The INT8 graph's probe mAP minus the stored fp32 outputs' probe mAP, with scikit-learn."""
    inputs = np.load(entry / "probe.inputs.npy")
    fp32 = np.load(entry / "probe.fp32.npy")
    labels = np.load(entry / "probe.labels.npy")
    session = ort.InferenceSession(str(entry / "model.int8.onnx"), providers=["CPUExecutionProvider"])
    int8 = np.concatenate([session.run(None, {"images": inputs[i:i + 8]})[0] for i in range(0, len(inputs), 8)])

    def mean_ap(logits: np.ndarray) -> float:
        aps = [average_precision_score(labels[labels[:, c] != 0, c] == 1, logits[labels[:, c] != 0, c])
               for c in range(labels.shape[1]) if (labels[:, c] == 1).any()]
        return 100 * float(np.mean(aps))

    return mean_ap(int8) - mean_ap(fp32)


def test_the_entry_records_where_its_verdict_was_measured_and_its_probe_set(recheck_store: Path) -> None:
    manifest = load_manifest(recheck_store / "same" / "1")
    int8 = manifest.variant("int8")
    flags = next(line for line in Path("/proc/cpuinfo").read_text().splitlines() if line.startswith("flags"))
    assert int8.machine["onnxruntime"] == ort.__version__ and int8.machine["provider"] == "CPUExecutionProvider"
    assert ("avx2" in int8.machine["isa_flags"]) == (" avx2 " in f"{flags} ")
    assert manifest.probe.images == 16 and manifest.probe.inputs == "probe.inputs.npy"
    assert np.load(recheck_store / "same" / "1" / "probe.inputs.npy").shape == (16, 3, 128, 128)
    assert int8.probe["mAP_delta"] == pytest.approx(oracle_probe_map_delta(recheck_store / "same" / "1"), abs=1e-6)


def test_a_verdict_measured_on_this_machine_is_not_rechecked(servers: dict[str, LiveServer]) -> None:
    same = models(servers["auto"])["same"]
    assert same["precision"] == "int8"
    checks = same["served"]["checks"]
    assert checks["needed"] is False and checks["ran"] == [] and checks["seconds"] == 0
    assert checks["why"] == ["the verdict was measured on a machine with this record"]


def test_a_variant_that_holds_on_this_machine_is_served_if_fast_enough_and_says_why(
        servers: dict[str, LiveServer], recheck_store: Path) -> None:
    """The accuracy checks pass here; whether int8 is served then depends on the speed measured here (timing
    varies by CPU and load, so both outcomes are checked against the figure the server reports)."""
    holds = models(servers["auto"])["holds"]
    checks = holds["served"]["checks"]
    assert checks["needed"] is True and checks["failures"] == []
    assert f"isa {OTHER_MACHINE['isa']} there" in checks["why"][0] and checks["machine"]["isa"] == HERE["isa"]
    assert checks["ran"] == ["mAP against fp32 on the probes", "top-label agreement", "score agreement (MAE)",
                             "speed against fp32"]
    assert checks["probes"] == 16 and 0 < checks["seconds"] <= 5.0
    figures = checks["figures"]
    assert figures["mAP_delta"] == pytest.approx(oracle_probe_map_delta(recheck_store / "holds" / "1"), abs=1e-6)
    assert figures["fp32_max_abs_drift"] < 1e-3
    assert checks["faster"] is (figures["speedup"] >= MIN_SPEEDUP)
    if checks["faster"]:
        assert holds["precision"] == "int8" and holds["served"]["file"] == "model.int8.onnx", holds["served"]
        assert "holds on this machine" in holds["served"]["reason"]
        assert holds["served"]["measured_on"]["isa"] == OTHER_MACHINE["isa"]
    else:
        assert holds["precision"] == "fp32" and holds["served"]["file"] == "model.onnx", holds["served"]
        assert holds["served"]["reason"] == (f"auto: the int8 variant holds on this machine but measured "
                                             f"{figures['speedup']:.2f}x fp32 here, under the 1.5x a variant "
                                             "must earn")
        assert "measured_on" not in holds["served"]  # fp32 has no verdict of its own


def test_a_variant_that_fails_its_probe_check_is_never_served_under_auto(servers: dict[str, LiveServer],
                                                                         recheck_store: Path) -> None:
    fails = models(servers["auto"])["fails"]
    assert fails["precision"] == "fp32" and fails["served"]["file"] == "model.onnx"
    checks = fails["served"]["checks"]
    manifest = load_manifest(recheck_store / "fails" / "1")
    guard_delta = manifest.variant("int8").measures["mAP_delta"]
    expected = guard_delta + oracle_probe_map_delta(recheck_store / "fails" / "1") - (
        manifest.variant("int8").probe["mAP_delta"])
    assert checks["figures"]["mAP_delta_estimate"] == pytest.approx(expected, abs=1e-6)
    assert expected < -0.5
    assert len(checks["failures"]) == 1 and checks["failures"][0].startswith(f"mAP changes by an estimated "
                                                                              f"{expected:+.2f} points here")
    assert fails["served"]["reason"].startswith("auto: the int8 variant fails its probe check on this machine")


def test_an_older_entry_without_probes_falls_back_to_fp32(servers: dict[str, LiveServer]) -> None:
    unprobed = models(servers["auto"])["unprobed"]
    assert unprobed["precision"] == "fp32"
    assert unprobed["served"]["reason"].endswith("no probe set to re-check on this machine")
    assert unprobed["served"]["checks"]["ran"] == []


def test_an_explicit_int8_fails_the_model_that_fails_its_check(servers: dict[str, LiveServer]) -> None:
    served = models(servers["int8"])
    assert served["fails"]["state"] == "failed"
    assert "fails its probe check on this machine" in served["fails"]["error"]
    assert served["holds"]["state"] == "ready" and served["holds"]["precision"] == "int8"
    assert served["unprobed"]["precision"] == "int8"  # asked for, and said to be unchecked
    assert "no probe set" in served["unprobed"]["served"]["reason"]
    with servers["int8"].client() as c:
        answer = c.post("/predict?model=fails", files={"file": ("x.png", png_bytes(random_rgb(64, 64)))})
    assert answer.status_code == 500 and answer.json()["error"] == "model_failed"
