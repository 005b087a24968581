"""The server on Ray Serve (``python -m server.ray``, 2 replicas on a local Ray) answers as the plain server does.

Ray runs in a subprocess started the way users start it (the CLI, the shipped YAML and its overrides), which also
keeps Ray's global state and signal handlers out of pytest; SIGTERM shuts Serve and Ray down, and whatever is left
of the process group is killed, whether or not the tests passed.
"""

from __future__ import annotations

import io
import re
import subprocess
import sys
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import numpy as np
import pytest
from PIL import Image

from loadtests.processes import RayServeProcess
from server.ray import REPLICA_HEADER
from tests.server.conftest import CLASSIFIER, STARTUP_SECONDS, launch_server
from tests.server.oracle import jpeg_bytes, model_input, random_rgb, run_exported, sigmoid

ROOT = Path(__file__).resolve().parents[2]

MAX_BODY_BYTES = 1_000_000
SETTINGS = {"models": CLASSIFIER, "max_body_bytes": MAX_BODY_BYTES, "max_delay_ms": 20}
REPLICAS = 2


@pytest.fixture(scope="module")
def servers(store: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[httpx.Client, httpx.Client]]:
    """Clients for Ray Serve (2 replicas of one CPU) and for the plain server with the same settings."""
    logs = tmp_path_factory.mktemp("ray-serve")
    flags = [f"--{key.replace('_', '-')}={value}" for key, value in SETTINGS.items()]
    plain = launch_server(store, logs / "plain.log", *flags, "--intra-op-threads=1", "--decode-threads=1")
    ray_serve = RayServeProcess(store, REPLICAS, 1, [f"{k}={v}" for k, v in SETTINGS.items()], logs / "ray.log",
                                cpus=REPLICAS).launch()
    try:
        ray_serve.wait(STARTUP_SECONDS)
        plain.server.wait(STARTUP_SECONDS)
        with httpx.Client(base_url=ray_serve.url, timeout=30) as on_ray, plain.client() as on_plain:
            yield on_ray, on_plain
    finally:
        ray_serve.stop()
        plain.server.stop()


@pytest.fixture(scope="module")
def on_ray(servers: tuple[httpx.Client, httpx.Client]) -> httpx.Client:
    """Client for the Serve proxy."""
    return servers[0]


@pytest.fixture(scope="module")
def on_plain(servers: tuple[httpx.Client, httpx.Client]) -> httpx.Client:
    """Client for the plain server."""
    return servers[1]


def test_ready_once_every_replica_has_loaded_its_models(on_ray: httpx.Client, on_plain: httpx.Client) -> None:
    for _ in range(6):  # whichever replica answers
        response = on_ray.get("/ready")
        assert response.status_code == 200
        assert response.json() == on_plain.get("/ready").json() == {"ready": True, "models": {CLASSIFIER: "ready"}}


def test_predict_answers_as_the_plain_server_and_the_exported_model(on_ray: httpx.Client, on_plain: httpx.Client,
                                                                    store: Path) -> None:
    data = jpeg_bytes(random_rgb(150, 120, seed=2))
    answers = [c.post("/predict?scores=true", content=data, headers={"Content-Type": "image/jpeg"})
               for c in (on_ray, on_plain)]
    assert [a.status_code for a in answers] == [200, 200]
    ray_answer, plain_answer = (a.json() for a in answers)
    assert ray_answer.keys() == plain_answer.keys()
    for key in ("model", "threshold", "activation"):
        assert ray_answer[key] == plain_answer[key]
    assert [label["name"] for label in ray_answer["labels"]] == [label["name"] for label in plain_answer["labels"]]
    names = list(plain_answer["scores"])
    got = np.array([ray_answer["scores"][name] for name in names])
    np.testing.assert_allclose(got, [plain_answer["scores"][name] for name in names], atol=1e-6)
    image = Image.open(io.BytesIO(data))
    expected = sigmoid(run_exported(store, CLASSIFIER, model_input(store, CLASSIFIER, image)[None])[0])
    np.testing.assert_allclose(got, expected, atol=2e-5)


def test_requests_reach_both_replicas_and_each_reports_its_id(on_ray: httpx.Client) -> None:
    data = jpeg_bytes(random_rgb(64, 64, seed=3))

    def predict(_: int) -> httpx.Response:
        return on_ray.post("/predict", content=data, headers={"Content-Type": "image/jpeg"})

    with ThreadPoolExecutor(4) as pool:
        responses = list(pool.map(predict, range(40)))
    assert [r.status_code for r in responses] == [200] * 40
    ids = {r.headers[REPLICA_HEADER] for r in responses}
    assert len(ids) == REPLICAS, ids
    scraped: dict[str, str] = {}
    for _ in range(40):  # each scrape is answered by one replica, which reports itself
        response = on_ray.get("/metrics")
        assert response.status_code == 200
        scraped[response.headers[REPLICA_HEADER]] = response.text
        if scraped.keys() == ids:
            break
    assert scraped.keys() == ids
    for replica, text in scraped.items():
        gauges = re.findall(r'^replica_info\{.*replica="([^"]+)".*\} 1\.0$', text, re.MULTILINE)
        assert gauges == [replica]


NOT_AN_IMAGE = b"this is not an image at all"


@pytest.mark.parametrize(("method", "path", "body", "content_type", "status"), [
    ("POST", "/predict", NOT_AN_IMAGE, "image/jpeg", 400),
    ("POST", "/predict", b"", "image/jpeg", 400),
    ("POST", "/predict", NOT_AN_IMAGE, "text/plain", 415),
    ("POST", "/predict?model=absent", NOT_AN_IMAGE, "image/jpeg", 404),
    ("POST", "/predict?top_k=zero", NOT_AN_IMAGE, "image/jpeg", 422),
    ("POST", "/predict", b"\xff" * (MAX_BODY_BYTES + 1), "image/jpeg", 413),
    ("GET", "/no-such-route", None, None, 404),
    ("DELETE", "/predict", None, None, 405),
])
def test_errors_are_the_plain_servers_json(on_ray: httpx.Client, on_plain: httpx.Client, method: str, path: str,
                                           body: bytes | None, content_type: str | None, status: int) -> None:
    headers = {"Content-Type": content_type} if content_type else {}
    ray_answer, plain_answer = (c.request(method, path, content=body, headers=headers) for c in (on_ray, on_plain))
    assert ray_answer.status_code == plain_answer.status_code == status
    assert ray_answer.json() == plain_answer.json()
    assert set(ray_answer.json()) >= {"error", "detail"}
    assert REPLICA_HEADER in ray_answer.headers and REPLICA_HEADER not in plain_answer.headers


def test_a_bad_setting_in_the_yaml_args_is_one_line_before_ray_starts(tmp_path: Path) -> None:
    result = subprocess.run([sys.executable, "-m", "server.ray", "--config", "deploy/ray/serve.yaml", "--store",
                             str(tmp_path), "--arg", "max_batch=0", "--num-gpus", "0", "--replicas", "1"],
                            capture_output=True, text=True, timeout=60, cwd=ROOT)
    assert result.returncode == 2
    assert result.stderr.strip() == "error: max batch 0 must be >= 1"
