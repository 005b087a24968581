"""The model repository API and live reload, against a real server on a store of its own: tritonclient's
load_model/unload_model, atomic switches under load, version policy, --watch, a corrupt version, memory."""

from __future__ import annotations

import shutil
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import numpy as np
import onnxruntime as ort
import pytest
import tritonclient.grpc as grpcclient
import tritonclient.http as httpclient
from tritonclient.utils import InferenceServerException

from export.random_weights import export_random
from loadtests.processes import free_port
from tests.server.conftest import API_KEY, CLASSIFIER, LiveServer, launch_server, running, wait_until

PRESET = "resnet18-csra-128"
SIZE = 128
WATCH_S = 0.3


@pytest.fixture(scope="module")
def own_store(store: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A writable store holding a copy of the classifier's version 1."""
    own = tmp_path_factory.mktemp("repository-store") / "model_store"
    shutil.copytree((store / CLASSIFIER).resolve(), own / CLASSIFIER)
    return own


@pytest.fixture(scope="module")
def live(own_store: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    """A server watching its store, with gRPC."""
    log = tmp_path_factory.mktemp("repository-logs") / "server.log"
    started = launch_server(own_store, log, "--watch", "true", "--watch-interval-s", str(WATCH_S), "--grpc-port",
                            str(free_port()), "--intra-op-threads", "1", "--max-delay-ms", "2")
    with running({"live": started}):
        yield started


def images(seed: int, n: int = 2) -> np.ndarray:
    """A random batch the classifier takes."""
    return np.random.default_rng(seed).standard_normal((n, 3, SIZE, SIZE)).astype(np.float32)


def infer(client: httpx.Client, batch: np.ndarray) -> tuple[int, np.ndarray | None]:
    """One v2 JSON infer; its status and logits."""
    response = client.post(f"/v2/models/{CLASSIFIER}/infer", json={"inputs": [
        {"name": "images", "datatype": "FP32", "shape": list(batch.shape), "data": batch.ravel().tolist()}]})
    if response.status_code != 200:
        return response.status_code, None
    output = response.json()["outputs"][0]
    return 200, np.array(output["data"], dtype=np.float32).reshape(output["shape"])


def onnx_logits(entry: Path, batch: np.ndarray) -> np.ndarray:
    """The entry's fp32 model run by ONNX Runtime directly (the oracle for what a version answers)."""
    session = ort.InferenceSession(str(entry / "model.onnx"), providers=["CPUExecutionProvider"])
    return session.run(None, {"images": batch})[0]


def served(live: LiveServer) -> dict:
    """The classifier's /models entry."""
    with live.client() as client:
        return next(m for m in client.get("/models").json()["models"] if m["name"] == CLASSIFIER)


def triton(live: LiveServer) -> httpclient.InferenceServerClient:
    """A tritonclient.http client of the live server."""
    return httpclient.InferenceServerClient(live.url.removeprefix("http://"))


def test_index_unload_and_load_with_tritonclient(live, own_store):
    batch = images(0)
    with live.client() as client:
        status, before = infer(client, batch)
        assert status == 200
        np.testing.assert_allclose(before, onnx_logits(own_store / CLASSIFIER / "1", batch), rtol=1e-4, atol=1e-4)
        c = triton(live)
        assert c.get_model_repository_index() == [{"name": CLASSIFIER, "version": "1", "state": "READY",
                                                   "reason": ""}]
        c.unload_model(CLASSIFIER)
        response = client.post(f"/v2/models/{CLASSIFIER}/infer", json={})
        assert response.status_code == 404 and response.json()["error"] == "model_unloaded"
        assert client.get("/ready").status_code == 200  # unloaded on purpose: not a reason to take traffic away
        time.sleep(4 * WATCH_S)  # the watcher leaves a model unloaded through the API alone
        assert c.get_model_repository_index() == [{"name": CLASSIFIER, "version": "", "state": "UNAVAILABLE",
                                                   "reason": "unloaded"}]
        with pytest.raises(InferenceServerException) as caught:
            c.unload_model(CLASSIFIER)
        assert caught.value.message() == "unknown_model"  # tritonclient.http shows the "error" field
        c.load_model(CLASSIFIER)
        assert c.is_model_ready(CLASSIFIER)
        status, after = infer(client, batch)
        assert status == 200 and np.array_equal(after, before)


def test_bad_load_requests_are_clear_400s_and_404s(live):
    with live.client() as client:
        for body, code, words in (({"parameters": {"config": "{}"}}, 400, "'config' is not supported"),
                                  ({"parameters": {"version": 7}}, 404, "no version '7'"),
                                  ({"parameters": {"version": ["1"]}}, 400, "must be a version name"),
                                  ([1, 2], 400, "must be a JSON object")):
            response = client.post(f"/v2/repository/models/{CLASSIFIER}/load", json=body)
            assert response.status_code == code and words in response.json()["detail"], body
        response = client.post("/v2/repository/models/..%2Fetc/load")
        assert response.status_code == 404
        response = client.post("/v2/repository/models/absent/load")
        assert response.status_code == 404 and response.json()["error"] == "unknown_model"
        response = client.post("/v2/repository/index", content=b"{not json")
        assert response.status_code == 400 and response.json()["error"] == "bad_request"
    assert served(live)["version_policy"] == {"latest": {"num_versions": 1}}  # nothing above changed it


def test_reloads_under_load_lose_no_request(live):
    batch, results, stop = images(1, 1), [], threading.Event()

    def hammer() -> None:
        with live.client() as client:
            while not stop.is_set():
                results.append(infer(client, batch)[0])

    threads = [threading.Thread(target=hammer) for _ in range(4)]
    for thread in threads:
        thread.start()
    try:
        wait_until(lambda: len(results) > 20, timeout=60, what="steady load")
        stamps = [served(live)["loaded_at"]]
        c = triton(live)
        for _ in range(3):
            c.load_model(CLASSIFIER)
            stamps.append(served(live)["loaded_at"])
        wait_until(lambda: len(results) > 60, timeout=60, what="load after the reloads")
    finally:
        stop.set()
        for thread in threads:
            thread.join()
    assert len(set(stamps)) == 4  # each load switched to a new runner
    assert results.count(200) == len(results), {status: results.count(status) for status in set(results)}


def test_new_version_by_watch_policy_pin_and_corrupt_version(live, own_store):
    batch = images(2)
    export_random(PRESET, CLASSIFIER, own_store, seed=5, version="2")
    wait_until(lambda: served(live)["version"] == "2", timeout=60, what="the watcher to serve version 2")
    with live.client() as client:
        status, answer = infer(client, batch)
        v1 = onnx_logits(own_store / CLASSIFIER / "1", batch)
        v2 = onnx_logits(own_store / CLASSIFIER / "2", batch)
        assert status == 200 and not np.allclose(v1, v2, atol=1e-3)
        np.testing.assert_allclose(answer, v2, rtol=1e-4, atol=1e-4)

        response = client.post(f"/v2/repository/models/{CLASSIFIER}/load", json={"parameters": {"version": "1"}})
        assert response.status_code == 200 and response.json()["version"] == "1"
        assert served(live)["version_policy"] == {"specific": {"versions": ["1"]}}
        assert client.get(f"/v2/models/{CLASSIFIER}").json()["versions"] == ["1"]

        corrupt = own_store / CLASSIFIER / "3"
        shutil.copytree(own_store / CLASSIFIER / "2", corrupt)
        model = corrupt / "model.onnx"
        data = bytearray(model.read_bytes())
        data[len(data) // 2: len(data) // 2 + 64] = bytes(64)
        model.write_bytes(bytes(data))
        time.sleep(5 * WATCH_S)
        assert served(live)["version"] == "1"  # pinned: the watcher does not move to the new version
        response = client.post(f"/v2/repository/models/{CLASSIFIER}/load", json={"parameters": {"version": "3"}})
        assert response.status_code == 400 and response.json()["error"] == "load_failed"
        assert "sha256" in response.json()["detail"] and "version 1 keeps serving" in response.json()["detail"]
        assert served(live)["last_load_error"].startswith("ManifestError")
        assert served(live)["version_policy"] == {"specific": {"versions": ["1"]}}
        status, answer = infer(client, batch)
        assert status == 200
        np.testing.assert_allclose(answer, v1, rtol=1e-4, atol=1e-4)

        shutil.rmtree(corrupt)
        response = client.post(f"/v2/repository/models/{CLASSIFIER}/load", json={"parameters": {"version": "latest"}})
        assert response.status_code == 200 and response.json()["version"] == "2"
        assert "last_load_error" not in served(live)


def rss_mb(live: LiveServer) -> float:
    """The server process's resident memory."""
    text = Path(f"/proc/{live.server.process.pid}/status").read_text()
    return int(next(line.split()[1] for line in text.splitlines() if line.startswith("VmRSS"))) / 1024


def settled_rss(live: LiveServer) -> float:
    """RSS once a load has settled."""
    time.sleep(1.5)
    return rss_mb(live)


def released_rss(live: LiveServer, ceiling: float, within_s: float = 20.0) -> float:
    """RSS once a retired runner has been freed: it is released off the event loop after its last requests, which
    a loaded machine can delay by seconds, so wait up to ``within_s`` for RSS to fall under ``ceiling`` (the lowest
    reading if it never does)."""
    time.sleep(1.5)
    lowest, deadline = rss_mb(live), time.monotonic() + within_s
    while lowest >= ceiling and time.monotonic() < deadline:
        time.sleep(0.5)
        lowest = min(lowest, rss_mb(live))
    return lowest


def test_memory_returns_after_unload(live):
    c = triton(live)
    c.load_model(CLASSIFIER)
    first_peak = settled_rss(live)
    c.unload_model(CLASSIFIER)
    baseline = released_rss(live, first_peak - 20)  # not read while the first runner is still being freed
    peaks, lows = [], []
    for _ in range(3):
        c.load_model(CLASSIFIER)
        peaks.append(settled_rss(live))
        c.unload_model(CLASSIFIER)
        lows.append(released_rss(live, baseline + 0.3 * (peaks[-1] - baseline)))
    c.load_model(CLASSIFIER)
    grown = min(peaks) - baseline
    assert grown > 20, (baseline, peaks)  # a ResNet-18 session holds tens of MB
    assert max(lows) - baseline < 0.3 * grown, (baseline, peaks, lows)


def test_grpc_repository_calls_match_http(live):
    with grpcclient.InferenceServerClient(live.grpc_target) as c:
        index = c.get_model_repository_index().models
        assert [(m.name, m.version, m.state, m.reason) for m in index] == \
            [(m["name"], m["version"], m["state"], m["reason"]) for m in triton(live).get_model_repository_index()]
        c.unload_model(CLASSIFIER)
        assert c.is_server_ready()  # unloaded on purpose
        assert [(m.name, m.state, m.reason) for m in c.get_model_repository_index().models] == \
            [(CLASSIFIER, "UNAVAILABLE", "unloaded")]
        with pytest.raises(InferenceServerException) as caught:
            c.get_model_metadata(CLASSIFIER)
        assert caught.value.status() == "StatusCode.NOT_FOUND"
        c.load_model(CLASSIFIER)
        assert c.is_model_ready(CLASSIFIER)


def test_repository_api_requires_the_key(strict_server):
    with strict_server.client() as client:
        assert client.post("/v2/repository/index").status_code == 401
        response = client.post("/v2/repository/index", headers={"Authorization": f"Bearer {API_KEY}"})
        assert response.status_code == 200 and {row["name"] for row in response.json()} >= {CLASSIFIER}
