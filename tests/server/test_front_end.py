"""--http-workers: HTTP worker processes in front of one inference process, against real servers.

Answers match the single-process server; connections spread over the workers; shedding, deadlines, /metrics,
health and graceful shutdown hold across the processes; nothing is left in shared memory afterwards.
"""

from __future__ import annotations

import os
import signal
import subprocess
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import numpy as np
import pytest

from server.ipc import SHM_DIR, SHM_PREFIX
from tests.server.conftest import (
    CLASSIFIER,
    SEGMENTER,
    STARTUP_SECONDS,
    LiveServer,
    launch_server,
    running,
    wait_until,
)
from tests.server.oracle import metric, png_bytes, random_rgb

IMAGE = png_bytes(random_rgb(96, 80, seed=3))
# The slow server's batches take 1 s and its deadline is 2.5 s. The inference process runs one batch at a time,
# so the first request answers at about 1 s, with 1.5 s to spare on a loaded machine (a 750 ms deadline over
# 500 ms batches left 250 ms, and CI once answered all twelve 503/504); a third request admitted cannot finish
# before 3 s, past its deadline.
SLOW_MS = 1000
SLOW_TIMEOUT_MS = 2500


@pytest.fixture(scope="module")
def front_ends(store: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, LiveServer]]:
    """Two workers in front of the normal models, two in front of a slow one with a queue of one, and two in front
    of an inference process that decodes JPEGs itself (the device path, on the CPU here)."""
    logs = tmp_path_factory.mktemp("front-end-logs")
    common = ("--http-workers", "2", "--intra-op-threads", "1", "--decode-threads", "1")
    with running({
        "plain": launch_server(store, logs / "plain.log", *common, "--models", f"{CLASSIFIER},{SEGMENTER}"),
        "slow": launch_server(store, logs / "slow.log", *common, "--models", CLASSIFIER, "--max-batch", "1",
                              "--queue-size", "1", "--extra-latency-ms", str(SLOW_MS),
                              "--timeout-ms", str(SLOW_TIMEOUT_MS)),
        "device": launch_server(store, logs / "device.log", *common, "--models", CLASSIFIER, "--device-prepare", "on"),
    }) as started:
        yield started


def predict(url: str, body: bytes = IMAGE) -> httpx.Response:
    """A /predict on a fresh connection (so that connections spread over the workers)."""
    return httpx.post(f"{url}/predict?model={CLASSIFIER}&scores=true", content=body,
                      headers={"Content-Type": "image/png"}, timeout=30)


def scores(response: httpx.Response) -> np.ndarray:
    return np.array(list(response.json()["scores"].values()))


def test_answers_match_the_single_process_server(front_ends, client):
    np.testing.assert_allclose(scores(predict(front_ends["plain"].url)),
                               scores(client.post(f"/predict?model={CLASSIFIER}&scores=true", content=IMAGE,
                                                  headers={"Content-Type": "image/png"})), atol=1e-5)
    segment = httpx.post(f"{front_ends['plain'].url}/segment?model={SEGMENTER}", content=IMAGE,
                         headers={"Content-Type": "image/png"})
    assert segment.status_code == 200 and segment.headers["X-Image-Size"] == "80x96"


def test_connections_spread_over_the_workers_and_models_name_the_front_end(front_ends):
    url = front_ends["plain"].url
    described, deadline = [], time.monotonic() + 60  # the second worker may still be starting when /ready answers
    while len({d["front_end"]["worker_pid"] for d in described}) < 2 and time.monotonic() < deadline:
        described.append(httpx.get(f"{url}/models").json()["models"][0])  # a fresh connection each time
    assert len({d["front_end"]["worker_pid"] for d in described}) == 2  # both workers answered
    assert {d["front_end"]["http_workers"] for d in described} == {2}
    assert {d["provider"] for d in described} == {"CPUExecutionProvider"}  # the inference process's provider


def test_concurrent_requests_through_both_workers_are_batched_by_the_one_inference_process(front_ends):
    url = front_ends["plain"].url
    before = httpx.get(f"{url}/metrics").text
    with ThreadPoolExecutor(12) as pool:
        answers = list(pool.map(lambda _: predict(url), range(36)))
    assert [a.status_code for a in answers] == [200] * 36
    reference = scores(answers[0])
    for answer in answers[1:]:
        np.testing.assert_allclose(scores(answer), reference, atol=1e-5)
    after = httpx.get(f"{url}/metrics").text
    served = (metric(after, "requests_total", route="/predict", status="200")
              - metric(before, "requests_total", route="/predict", status="200"))
    assert served == 36  # summed over both workers
    images = metric(after, "batch_size_sum", model=CLASSIFIER) - metric(before, "batch_size_sum", model=CLASSIFIER)
    assert images == 36  # every image ran once, in the inference process


def test_shedding_and_deadlines_hold_across_the_processes(front_ends):
    url = front_ends["slow"].url
    with ThreadPoolExecutor(12) as pool:
        answers = list(pool.map(lambda _: predict(url), range(12)))
    statuses = sorted(a.status_code for a in answers)
    assert set(statuses) <= {200, 503, 504}, [a.text for a in answers if a.status_code not in (200, 503, 504)]
    assert statuses.count(200) >= 1 and statuses.count(503) + statuses.count(504) >= 6
    codes = {a.json()["error"] for a in answers if a.status_code != 200}
    assert codes <= {"queue_full", "deadline_exceeded"} and codes
    assert httpx.get(f"{url}/ready").status_code == 200  # shed work does not make the model unhealthy
    assert httpx.get(f"{url}/health").json() == {"status": "ok"}


def test_evaluations_are_refused_behind_several_workers(front_ends):
    answer = httpx.post(f"{front_ends['plain'].url}/evaluations", json={"model": CLASSIFIER, "data": "x"})
    assert answer.status_code == 409 and answer.json()["error"] == "evaluations_need_one_process"


def test_models_cannot_be_loaded_or_unloaded_through_a_worker(front_ends):
    for action in ("load", "unload"):
        answer = httpx.post(f"{front_ends['plain'].url}/v2/repository/models/{CLASSIFIER}/{action}")
        assert answer.status_code == 409 and "--http-workers" in answer.json()["detail"]
    index = httpx.post(f"{front_ends['plain'].url}/v2/repository/index").json()
    assert {row["name"]: row["state"] for row in index}[CLASSIFIER] == "READY"


def children(pid: int) -> list[int]:
    """The supervisor's children (their own sessions, so not in its process group)."""
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if int(fields[1]) == pid:
                found.append(int(entry.name))
    return found


def role(pid: int) -> str:
    return (Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")[3]).decode()  # python -m server.front_end ROLE


def segments(owner: int) -> list[Path]:
    return list(SHM_DIR.glob(f"{SHM_PREFIX}{owner}-*"))


def start_front_end(store: Path, log: Path, *flags: str) -> LiveServer:
    live = launch_server(store, log, "--http-workers", "2", "--models", CLASSIFIER, "--intra-op-threads", "1", *flags)
    live.server.wait(STARTUP_SECONDS)
    return live


def test_sigterm_drains_in_flight_requests_then_stops_every_process_and_cleans_up(store, tmp_path):
    live = start_front_end(store, tmp_path / "drain.log", "--extra-latency-ms", "1500")
    supervisor = live.server.process
    kids = children(supervisor.pid)
    assert sorted(role(pid) for pid in kids) == ["http", "http", "inference"]
    answers: list[httpx.Response] = []
    caller = threading.Thread(target=lambda: answers.append(predict(live.url)))
    caller.start()
    # a worker writes the batch to its shared memory as it sends it to the inference process
    wait_until(lambda: segments(supervisor.pid), 10, "the request to reach the inference process")
    supervisor.send_signal(signal.SIGTERM)
    caller.join(30)
    assert answers and answers[0].status_code == 200  # answered, not cut off
    assert supervisor.wait(30) == 0
    assert not any(Path(f"/proc/{pid}").exists() for pid in kids)
    assert segments(supervisor.pid) == []
    live.server.stop()


def test_when_the_inference_process_dies_the_front_end_exits_non_zero_and_takes_the_workers_with_it(store, tmp_path):
    live = start_front_end(store, tmp_path / "crash.log")
    supervisor = live.server.process
    kids = children(supervisor.pid)
    inference = next(pid for pid in kids if role(pid) == "inference")
    assert predict(live.url).status_code == 200
    os.kill(inference, signal.SIGKILL)
    assert supervisor.wait(30) == 1
    assert "the inference process exited with -9; the front end stopped" in live.logs()
    assert not any(Path(f"/proc/{pid}").exists() for pid in kids)
    live.server.stop()


def test_a_bad_store_is_a_one_line_error_before_any_process_starts(tmp_path):
    done = subprocess.run([os.sys.executable, "-m", "server", "--store", str(tmp_path / "none"), "--http-workers", "2"],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 2 and done.stderr.count("\n") == 1 and done.stderr.startswith("error: ")


def test_workers_send_jpegs_to_an_inference_process_that_decodes_them_and_keep_other_uploads(front_ends, client):
    """The workers check each JPEG's header and send its bytes; the inference process decodes them together. PNGs
    are decoded by the workers; a JPEG the device decoder refuses is decoded by the worker, which says why."""
    from tests.server.test_device_prepare import PHOTOS, SCORE_TOLERANCE, encoded

    url = front_ends["device"].url
    jpeg = encoded(PHOTOS["chelsea"], size=(320, 240))
    on_host = scores(client.post(f"/predict?model={CLASSIFIER}&scores=true", content=jpeg,
                                 headers={"Content-Type": "image/jpeg"}))
    sent = httpx.post(f"{url}/predict?model={CLASSIFIER}&scores=true", content=jpeg,
                      headers={"Content-Type": "image/jpeg"})
    assert sent.status_code == 200 and sent.json()["timing"]["batch_size"] == 1
    assert np.abs(scores(sent) - on_host).max() < SCORE_TOLERANCE
    assert not np.allclose(scores(sent), on_host, atol=1e-6)  # decoded by the other path, not by the worker
    np.testing.assert_allclose(scores(predict(url)), scores(client.post(
        f"/predict?model={CLASSIFIER}&scores=true", content=IMAGE, headers={"Content-Type": "image/png"})), atol=1e-5)
    broken = jpeg[: len(jpeg) // 2]
    with ThreadPoolExecutor(8) as pool:
        answers = list(pool.map(lambda body: httpx.post(f"{url}/predict?model={CLASSIFIER}", content=body,
                                                        headers={"Content-Type": "image/jpeg"}), [jpeg, broken] * 4))
    assert [a.status_code for a in answers] == [200, 400] * 4
    assert answers[1].json()["detail"].startswith("the image data is truncated or corrupt")
