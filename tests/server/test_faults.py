"""Fault injection against real servers: a model that raises, one that hangs, SIGTERM mid-batch, a corrupt entry.

Every answer is a deliberate 503 or 504 (never a 500), /health keeps answering, and /ready and /models say
which model is unhealthy and why.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.server.conftest import CLASSIFIER, SEGMENTER, STARTUP_SECONDS, LiveServer, launch_server, running
from tests.server.oracle import metric, png_bytes, random_rgb

IMAGE = png_bytes(random_rgb(64, 64, seed=7))
FAILURE_LIMIT = 2


def predict(client: httpx.Client) -> httpx.Response:
    return client.post(f"/predict?model={CLASSIFIER}", files={"file": ("a.png", IMAGE)})


@pytest.fixture(scope="module")
def faulty(store: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, LiveServer]]:
    """A server whose every batch raises, one whose every batch hangs, and one whose batches take 2 s."""
    logs = tmp_path_factory.mktemp("fault-logs")
    common = ("--models", CLASSIFIER, "--max-batch", "1", "--max-delay-ms", "0", "--intra-op-threads", "1",
              "--failure-limit", str(FAILURE_LIMIT))
    with running({"raise": launch_server(store, logs / "raise.log", *common, "--fault", "raise"),
                  "hang": launch_server(store, logs / "hang.log", *common, "--fault", "hang", "--hang-timeout-ms",
                                        "300", "--timeout-ms", "1000", "--shutdown-grace-ms", "2000"),
                  "slow": launch_server(store, logs / "slow.log", *common, "--extra-latency-ms", "2000")}) as started:
        yield started


def test_a_model_that_raises_answers_503s_then_is_marked_unhealthy(faulty):
    live = faulty["raise"]
    with live.client() as client:
        failed = [predict(client) for _ in range(FAILURE_LIMIT)]
        assert [r.status_code for r in failed] == [503] * FAILURE_LIMIT
        assert {r.json()["error"] for r in failed} == {"inference_failed"}
        assert "error id" in failed[0].json()["detail"] and "injected" not in failed[0].text  # logged, not returned
        refused = predict(client)
        assert refused.status_code == 503 and refused.json()["error"] == "model_unhealthy"
        assert refused.headers["Retry-After"] == "5"
        ready = client.get("/ready")
        assert ready.status_code == 503 and ready.json()["models"] == {CLASSIFIER: "unhealthy"}
        described = client.get("/models").json()["models"][0]
        assert described["state"] == "unhealthy"
        assert "2 batches in a row failed (last: RuntimeError)" in described["error"]
        assert client.get("/health").status_code == 200
    error_id = failed[0].json()["detail"].rsplit(" ", 1)[-1].strip("()")
    assert "injected fault (--fault raise)" in live.logs() and error_id in live.logs()


def test_a_hung_model_answers_504_is_marked_unhealthy_and_health_stays_fast(faulty):
    live = faulty["hang"]
    with live.client() as client:
        start = time.monotonic()
        hung = predict(client)
        assert hung.status_code == 504 and time.monotonic() - start < 3
        ready = client.get("/ready").json()
        assert ready["models"] == {CLASSIFIER: "unhealthy"}
        refused = predict(client)
        assert refused.status_code == 503 and refused.json()["error"] == "model_unhealthy"
        assert "more than 0.3 s" in refused.json()["detail"]
        start = time.monotonic()  # the hung batch holds a thread, not the event loop (which would stall for good)
        assert client.get("/health").status_code == 200 and time.monotonic() - start < 1.0


def test_a_client_that_leaves_while_queued_never_reaches_a_batch(faulty):
    live = faulty["slow"]
    host, port = live.url.removeprefix("http://").split(":")
    body = IMAGE
    raw = (f"POST /predict?model={CLASSIFIER} HTTP/1.1\r\nHost: {host}\r\nContent-Type: image/png\r\n"
           f"Content-Length: {len(body)}\r\n\r\n").encode() + body
    with live.client() as client:
        batches = metric(live.metrics(), "batch_size_count", model=CLASSIFIER)
        first: dict[str, httpx.Response] = {}
        worker = threading.Thread(target=lambda: first.update(r=predict(client)))
        worker.start()
        live.wait_for_gauge("batches_running", 1)  # the first request's 2 s batch is running
        with socket.create_connection((host, int(port))) as sock:
            sock.sendall(raw)
            live.wait_for_gauge("queue_depth", 1)  # queued behind it; now the client leaves
        worker.join(10)
        assert first["r"].status_code == 200
        assert predict(client).status_code == 200
        text = live.metrics()
    assert metric(text, "batch_size_count", model=CLASSIFIER) == batches + 2  # not 3
    assert metric(text, "rejected_requests_total", model=CLASSIFIER, reason="client_gone") == 1


def test_sigterm_during_a_long_batch_answers_the_request_in_flight(store: Path, tmp_path: Path):
    # The batch outlasts uvicorn's old 5 s grace; the grace is now the request timeout (30 s).
    live = launch_server(store, tmp_path / "slow.log", "--models", CLASSIFIER, "--extra-latency-ms", "6500",
                         "--max-delay-ms", "0")
    process = live.server.wait(STARTUP_SECONDS).process
    answer: dict[str, httpx.Response] = {}
    try:
        with live.client() as client:
            worker = threading.Thread(target=lambda: answer.update(r=predict(client)))
            worker.start()
            live.wait_for_gauge("batches_running", 1)
            os.killpg(process.pid, signal.SIGTERM)
            worker.join(30)
        assert answer["r"].status_code == 200 and answer["r"].json()["model"] == CLASSIFIER
        assert process.wait(30) == -signal.SIGTERM  # uvicorn re-raises the signal after its graceful shutdown
    finally:
        live.server.stop()


def test_a_corrupt_entry_fails_alone_and_an_unselected_one_does_not_stop_start_up(store: Path, tmp_path: Path):
    own = tmp_path / "model_store"
    for name in (CLASSIFIER, SEGMENTER):
        shutil.copytree(store / name, own / name)
    (own / SEGMENTER / "1" / "manifest.json").write_text("{broken")
    selected = launch_server(own, tmp_path / "selected.log", "--models", CLASSIFIER).server.wait(STARTUP_SECONDS)
    try:
        with httpx.Client(base_url=selected.url, timeout=30) as client:
            assert client.get("/ready").status_code == 200 and predict(client).status_code == 200
    finally:
        selected.stop()
    everything = launch_server(own, tmp_path / "all.log").server
    try:
        deadline = time.monotonic() + STARTUP_SECONDS
        with httpx.Client(base_url=everything.url, timeout=30) as client:
            while time.monotonic() < deadline:
                try:
                    states = client.get("/ready").json()["models"]
                except httpx.TransportError:
                    states = {}
                if states.get(CLASSIFIER) == "ready":
                    break
                time.sleep(0.5)
            assert states == {CLASSIFIER: "ready", SEGMENTER: "failed"}
            assert predict(client).status_code == 200
            broken = client.post(f"/segment?model={SEGMENTER}", files={"file": ("a.png", IMAGE)})
            assert broken.status_code == 500 and broken.json()["error"] == "model_failed"
            assert "not valid JSON" in broken.json()["detail"]
    finally:
        everything.stop()
