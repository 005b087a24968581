"""--precision: auto serves a guard-accepted INT8 variant on the CPU and fp32 when the guard rejected it; an explicit
precision the entry cannot honour fails that model with the reason; /robustness?precision= compares precisions on
the same masks.

Entries of one fine-tuned classifier: ``ok`` (INT8 judged with a tolerance of 100 points: accepted) and
``strict`` (a tolerance of -100, a gain no variant can show: rejected). Both verdicts are real guard runs. How much
faster INT8 runs depends on the CPU and its load, so the guard's timing is pinned: ``ok`` records 2.0x fp32 and
``slow`` (a copy of ``ok``) 1.2x, under the 1.5x auto asks of a variant.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import numpy as np
import onnxruntime as ort
import pytest
from PIL import Image

from export.pipeline import VariantRequest, add_variants, export_entry
from export.source import resolve_source
from loadtests.processes import wait_ready
from tests.conftest import ROOT, FineTuned
from tests.server.conftest import LiveServer, launch_server, running
from tests.server.oracle import png_bytes, random_rgb, reference_input, sigmoid


@pytest.fixture(scope="module")
def precision_store(fine_tuned: FineTuned, tmp_path_factory: pytest.TempPathFactory) -> Path:
    store = tmp_path_factory.mktemp("precision") / "model_store"
    manifest = export_entry(resolve_source(fine_tuned.checkpoint), "ok", store=store, formats=("onnx",),
                            progress=False)
    shutil.copytree(manifest.path.parent, store / "strict")
    rewrite_manifest(store / "strict" / "1", "strict")
    common = {"calib": fine_tuned.data, "guard_data": fine_tuned.data, "calib_images": 32, "calib_method": "minmax",
              "guard_images": 24, "speed_seconds": 0.2}
    add_variants(store / "ok" / "1", VariantRequest(("int8",), tolerance=100.0, **common), progress=False)
    add_variants(store / "strict" / "1", VariantRequest(("int8",), tolerance=-100.0, **common), progress=False)
    shutil.copytree(store / "ok", store / "slow")
    rewrite_manifest(store / "ok" / "1", "ok", pin_speedup(2.0))
    rewrite_manifest(store / "slow" / "1", "slow", pin_speedup(1.2))
    return store


def rewrite_manifest(entry: Path, name: str, change: Callable[[dict], object] | None = None) -> None:
    """Rename the entry ``name`` in its manifest and apply ``change`` to the manifest document."""
    document = json.loads((entry / "manifest.json").read_text())
    document["name"] = name
    if change is not None:
        change(document)
    (entry / "manifest.json").write_text(json.dumps(document))


def pin_speedup(speedup: float) -> Callable[[dict], None]:
    """A change recording ``speedup`` as the guard's timing of the entry's first variant."""
    return lambda document: document["variants"][0]["measures"].update(speedup=speedup)


def settled(live: LiveServer, seconds: float = 120) -> None:
    """Wait until no model is loading any more (a server with a failed model never becomes ready)."""
    wait_ready(live.url, live.server.process, seconds, path="/health")
    deadline = time.monotonic() + seconds
    while any(m["state"] == "loading" for m in httpx.get(live.url + "/models").json()["models"]):
        assert time.monotonic() < deadline, live.logs()[-2000:]
        time.sleep(0.3)


@pytest.fixture(scope="module")
def servers(precision_store: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, LiveServer]]:
    logs = tmp_path_factory.mktemp("precision-logs")
    explicit = launch_server(precision_store, logs / "int8.log", "--precision", "int8", "--intra-op-threads", "1")
    try:
        with running({"auto": launch_server(precision_store, logs / "auto.log", "--intra-op-threads", "1")}) as live:
            settled(explicit)
            yield {**live, "int8": explicit}
    finally:
        explicit.server.stop()


@pytest.fixture(scope="module")
def client(servers: dict[str, LiveServer]) -> Iterator[httpx.Client]:
    with servers["auto"].client() as c:
        yield c


def describe(client: httpx.Client, name: str) -> dict:
    return next(m for m in client.get("/models").json()["models"] if m["name"] == name)


def test_auto_serves_the_accepted_int8_variant_and_shows_its_figures(client: httpx.Client) -> None:
    ok = describe(client, "ok")
    assert ok["precision"] == "int8" and ok["served"]["file"] == "model.int8.onnx"
    assert ok["served"]["requested"] == "auto" and ok["served"]["status"] == "accepted"
    assert "CPUExecutionProvider" in ok["served"]["reason"]
    assert {"mAP_delta", "masked_mAP_delta", "top_label_agreement", "speedup"} <= set(ok["served"]["measures"])
    assert [v["precision"] for v in ok["variants"]] == ["int8"]


def test_auto_serves_fp32_when_the_guard_timed_int8_under_the_speed_bar(client: httpx.Client) -> None:
    slow = describe(client, "slow")
    assert slow["precision"] == "fp32" and slow["served"]["file"] == "model.onnx"
    assert slow["served"]["reason"] == ("auto: the guard timed the int8 variant at 1.20x fp32 on a machine like this "
                                        "one, under the 1.5x a variant must earn")
    assert slow["served"]["checks"]["needed"] is False


def test_auto_falls_back_to_fp32_when_the_guard_rejected_int8(client: httpx.Client) -> None:
    strict = describe(client, "strict")
    assert strict["precision"] == "fp32" and strict["served"]["file"] == "model.onnx"
    assert "rejected by the guard" in strict["served"]["reason"] and "tolerance -100" in strict["served"]["reason"]
    assert strict["variants"][0]["status"] == "rejected"


def test_an_explicit_precision_the_guard_rejected_fails_that_model_only(servers: dict[str, LiveServer]) -> None:
    with servers["int8"].client() as c:
        models = {m["name"]: m for m in c.get("/models").json()["models"]}
        assert models["ok"]["state"] == "ready" and models["ok"]["precision"] == "int8"
        assert models["strict"]["state"] == "failed"
        assert "rejected by the accuracy guard" in models["strict"]["error"]
        answer = c.post("/predict?model=strict", files={"file": ("x.png", png_bytes(random_rgb(64, 64)))})
        assert answer.status_code == 500 and answer.json()["error"] == "model_failed"


def test_predict_on_int8_gives_the_int8_graphs_scores(client: httpx.Client, precision_store: Path) -> None:
    image = random_rgb(150, 200, seed=4)
    answer = client.post("/predict?model=ok&scores=true", files={"file": ("x.png", png_bytes(image))})
    assert answer.status_code == 200
    entry = precision_store / "ok" / "1"
    manifest = describe(client, "ok")
    x = reference_input(Image.fromarray(image), tuple(manifest["input"]["size"]), manifest["input"]["mean"],
                        manifest["input"]["std"])[None]

    def direct(file: str) -> np.ndarray:
        session = ort.InferenceSession(str(entry / file), providers=["CPUExecutionProvider"])
        return sigmoid(session.run(None, {"images": x})[0][0])

    served = np.array([answer.json()["scores"][name] for name in manifest["class_names"]])
    int8, fp32 = direct("model.int8.onnx"), direct("model.onnx")
    assert np.abs(served - int8).max() < 5e-3
    assert np.abs(served - int8).max() <= np.abs(served - fp32).max()


def test_robustness_at_int8_and_fp32_uses_the_same_masks(client: httpx.Client) -> None:
    payload = {"file": ("x.png", png_bytes(random_rgb(120, 160, seed=9)))}
    query = "/robustness?model=ok&mask_ratio=high&n=6&seed=5&return_masks=true"
    fp32 = client.post(f"{query}&precision=fp32", files=payload).json()
    int8 = client.post(f"{query}&precision=int8", files=payload).json()
    served = client.post(query, files=payload).json()
    assert (fp32["precision"], int8["precision"], served["precision"]) == ("fp32", "int8", "int8")
    assert [m["png_base64"] for m in fp32["masks"]] == [m["png_base64"] for m in int8["masks"]]
    assert [m["hole_ratio"] for m in fp32["masks"]] == [m["hole_ratio"] for m in int8["masks"]]
    assert served["masks"] == int8["masks"]  # the served runner is the int8 one


def test_robustness_precision_errors_are_clear_422s(client: httpx.Client) -> None:
    payload = {"file": ("x.png", png_bytes(random_rgb(64, 64)))}
    missing = client.post("/robustness?model=ok&precision=fp16", files=payload)
    assert missing.status_code == 422
    assert "has no fp16 variant" in missing.json()["detail"] and missing.json()["error"] == "invalid_parameter"
    bogus = client.post("/robustness?model=ok&precision=int4", files=payload)
    assert bogus.status_code == 422 and set(bogus.json()) >= {"error", "detail"}


def test_the_precision_benchmark_reports_both_precisions_from_one_run(precision_store: Path, tmp_path: Path) -> None:
    out = tmp_path / "precision.md"
    result = subprocess.run([sys.executable, "-m", "benchmarks", "precision", "--store", str(precision_store),
                             "--model", "ok", "--rounds", "1", "--seconds", "1", "--warmup", "0.5", "--concurrency",
                             "4", "--output", str(out)], capture_output=True, text=True, cwd=ROOT)
    assert result.returncode == 0, result.stderr[-2000:]
    rows = {line.split("|")[1].strip(): [c.strip() for c in line.split("|")[2:-1]]
            for line in out.read_text().splitlines() if line.startswith("| fp32") or line.startswith("| int8")}
    assert set(rows) == {"fp32", "int8"}
    assert rows["int8"][0].startswith("accepted, mAP ")
    raw = {p: float(r[1]) for p, r in rows.items()}
    served = {p: float(r[2]) for p, r in rows.items()}
    assert all(v > 0 for v in [*raw.values(), *served.values()])
    assert rows["fp32"][4] == rows["fp32"][5] == "1.00x"
    assert float(rows["int8"][4].rstrip("x")) == pytest.approx(raw["int8"] / raw["fp32"], abs=0.01)
    assert float(rows["int8"][5].rstrip("x")) == pytest.approx(served["int8"] / served["fp32"], abs=0.01)
