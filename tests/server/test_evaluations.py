"""POST /evaluations: the CLI's dataset-level evaluation as a bounded, cancellable background job on a real server."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.server.conftest import CLASSIFIER, SEGMENTER, LiveServer, launch_server, running
from training.datasets import make_dataset

DATA = "emb"
JOB_SECONDS = 240


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A data folder holding one small embedded dataset (classification lists + VOC-style segmentation)."""
    root = tmp_path_factory.mktemp("eval-data")
    make_dataset(root / DATA, n_train=2, n_test=12, image_size=64, seed=3, progress=False)
    return root


@pytest.fixture(scope="module")
def eval_server(store: Path, data_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    """A server that may read ``data_dir``, with room for two queued evaluations."""
    log = tmp_path_factory.mktemp("eval-logs") / "server.log"
    flags = ("--data-dir", str(data_dir), "--max-eval-queue", "2", "--max-eval-images", "12",
             "--intra-op-threads", "1", "--models", f"{CLASSIFIER},{SEGMENTER}")
    with running({"eval": launch_server(store, log, *flags)}) as started:
        yield started["eval"]


@pytest.fixture(scope="module")
def client(eval_server: LiveServer) -> Iterator[httpx.Client]:
    with eval_server.client() as c:
        yield c


SMALL = {"data": DATA, "limit": 4, "occlusion": "b1,b6", "corruptions": "fog", "severities": "1,5", "bootstrap": 20,
         "seed": 0}


def wait_for(client: httpx.Client, job_id: str, seconds: float = JOB_SECONDS) -> dict:
    """Poll until the job has finished; the last answer."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        body = client.get(f"/evaluations/{job_id}").json()
        if body["status"] in ("done", "failed", "cancelled"):
            return body
        time.sleep(0.3)
    raise AssertionError(f"evaluation {job_id} still {body['status']} after {seconds} s: {body['progress']}")


@pytest.fixture(scope="module")
def finished(client: httpx.Client) -> dict:
    """One small classifier evaluation, started over HTTP and run to the end."""
    answer = client.post("/evaluations", json={"model": CLASSIFIER, **SMALL})
    assert answer.status_code == 202, answer.text
    assert answer.headers["location"] == f"/evaluations/{answer.json()['id']}"
    assert answer.json()["status"] in ("queued", "running")
    return wait_for(client, answer.json()["id"])


def test_a_job_runs_to_the_end_and_reports_every_condition(finished: dict) -> None:
    assert finished["status"] == "done", finished.get("error")
    assert finished["progress"]["done"] == finished["progress"]["total"] == 4
    assert set(finished["links"]["files"]) >= {"report.json", "report.md"}
    assert finished["report"]["models"][0]["name"] == CLASSIFIER


def test_the_server_job_gives_the_same_figures_as_the_cli(finished: dict, store: Path, data_dir: Path,
                                                          tmp_path: Path) -> None:
    out = tmp_path / "cli"
    command = [sys.executable, "-m", "robustness", "evaluate", "--model", str(store / CLASSIFIER),
               "--data", str(data_dir / DATA), "--limit", "4", "--occlusion", "b1,b6", "--corruptions", "fog",
               "--severities", "1,5", "--bootstrap", "20", "--seed", "0", "--out", str(out)]
    done = subprocess.run(command, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    cli = json.loads((out / "report.json").read_text())
    server = finished["report"]
    cli_figures, server_figures = figures(cli), figures(server)
    assert cli_figures.keys() == server_figures.keys() and cli_figures
    for key, value in cli_figures.items():
        assert server_figures[key] == pytest.approx(value, abs=1e-4), key


def figures(report: dict) -> dict[str, float]:
    """Every numeric leaf of the report's per-condition results, keyed by its path."""
    out: dict[str, float] = {}

    def walk(node: object, path: str) -> None:
        if isinstance(node, dict):
            for key, value in node.items():
                walk(value, f"{path}/{key}")
        elif isinstance(node, list):
            for i, value in enumerate(node):
                walk(value, f"{path}/{i}")
        elif isinstance(node, int | float) and not isinstance(node, bool):
            out[path] = float(node)

    walk(report["results"], "")
    return out


def test_the_job_files_are_served_and_nothing_else(client: httpx.Client, finished: dict) -> None:
    job = finished["id"]
    markdown = client.get(f"/evaluations/{job}/files/report.md")
    assert markdown.status_code == 200 and "mAP" in markdown.text
    pngs = [name for name in finished["links"]["files"] if name.endswith(".png")]
    assert pngs
    assert client.get(f"/evaluations/{job}/files/{pngs[0]}").content[:8] == b"\x89PNG\r\n\x1a\n"
    for name in ("..%2F..%2Fetc%2Fpasswd", "secret.txt"):
        answer = client.get(f"/evaluations/{job}/files/{name}")
        assert answer.status_code == 404 and answer.json()["error"] in ("file_not_found", "not_found")


def test_a_model_compared_with_itself_differs_by_exactly_zero(client: httpx.Client) -> None:
    answer = client.post("/evaluations", json={"model": CLASSIFIER, "compare": CLASSIFIER, **SMALL, "limit": 3})
    assert answer.status_code == 202, answer.text
    body = wait_for(client, answer.json()["id"])
    assert body["status"] == "done", body.get("error")
    differences = figures({"results": body["report"]["comparisons"][0]["conditions"]})
    assert differences and set(differences.values()) == {0.0}


def test_a_segmenter_evaluation_reports_instance_aware_figures(client: httpx.Client) -> None:
    answer = client.post("/evaluations", json={"model": SEGMENTER, **SMALL, "limit": 2, "corruptions": "none"})
    assert answer.status_code == 202, answer.text
    body = wait_for(client, answer.json()["id"])
    assert body["status"] == "done", body.get("error")
    assert "IA-mIoU" in json.dumps(body["report"]) or "ia_miou" in json.dumps(body["report"])


def test_a_cancelled_job_stops_before_the_end(client: httpx.Client) -> None:
    answer = client.post("/evaluations", json={"model": CLASSIFIER, "data": DATA, "corruptions": "glass_blur",
                                               "severities": "1-5", "bootstrap": 0})
    assert answer.status_code == 202, answer.text
    job = answer.json()["id"]
    cancelled = client.delete(f"/evaluations/{job}")
    assert cancelled.status_code == 200 and cancelled.json()["id"] == job
    body = wait_for(client, job)
    assert body["status"] == "cancelled"
    assert body["progress"]["done"] < 12 and "report" not in body
    assert client.delete(f"/evaluations/{job}").json()["status"] == "cancelled"  # cancelling again changes nothing


def test_the_queue_is_bounded(client: httpx.Client) -> None:
    slow = {"model": CLASSIFIER, "data": DATA, "corruptions": "glass_blur", "severities": "1-5", "bootstrap": 0}
    ids = []
    try:
        answers = [client.post("/evaluations", json=slow) for _ in range(3)]
        ids = [a.json()["id"] for a in answers if a.status_code == 202]
        assert [a.status_code for a in answers] == [202, 202, 429]
        assert answers[2].json()["error"] == "too_many_evaluations" and "retry-after" in answers[2].headers
        listed = [job["id"] for job in client.get("/evaluations").json()["evaluations"]]
        assert listed[:2] == ids[::-1]
    finally:
        for job in ids:
            client.delete(f"/evaluations/{job}")
        for job in ids:
            wait_for(client, job)


@pytest.mark.parametrize(("body", "status", "code"), [
    ({"model": CLASSIFIER, "data": "../"}, 422, "invalid_parameter"),
    ({"model": CLASSIFIER, "data": "/etc"}, 422, "invalid_parameter"),
    ({"model": CLASSIFIER, "data": f"{DATA}/../../.."}, 422, "invalid_parameter"),
    ({"model": CLASSIFIER, "data": "nowhere"}, 404, "dataset_not_found"),
    ({"model": "nope", "data": DATA}, 404, "unknown_model"),
    ({"model": CLASSIFIER, "data": DATA, "corruptions": "rain"}, 422, "invalid_parameter"),
    ({"model": CLASSIFIER, "data": DATA, "severities": "9"}, 422, "invalid_parameter"),
    ({"model": CLASSIFIER, "data": DATA, "severities": "1-100000000"}, 422, "invalid_parameter"),
    ({"model": CLASSIFIER, "data": DATA, "severities": "1-" + "9" * 20}, 422, "invalid_parameter"),
    ({"model": CLASSIFIER, "data": DATA, "occlusion": "b9"}, 422, "invalid_parameter"),
    ({"model": CLASSIFIER, "data": DATA, "bootstrap": 10**9}, 422, "invalid_parameter"),
    ({"model": CLASSIFIER, "data": DATA, "unexpected": 1}, 422, "invalid_parameter"),
    ({"model": CLASSIFIER, "compare": SEGMENTER, "data": DATA}, 422, "invalid_parameter"),
    ({"model": CLASSIFIER, "data": "x" * 5000}, 422, "invalid_parameter"),
])
def test_bad_requests_get_a_json_error_and_start_nothing(client: httpx.Client, body: dict, status: int,
                                                         code: str) -> None:
    before = len(client.get("/evaluations").json()["evaluations"])
    answer = client.post("/evaluations", json=body)
    assert answer.status_code == status, answer.text
    assert answer.json()["error"] == code and answer.json()["detail"]
    assert len(client.get("/evaluations").json()["evaluations"]) == before


def test_deep_json_and_unknown_ids_are_refused(client: httpx.Client) -> None:
    deep = '{"model": ' + "[" * 5000 + "]" * 5000 + "}"
    answer = client.post("/evaluations", content=deep, headers={"content-type": "application/json"})
    assert 400 <= answer.status_code < 500 and "error" in answer.json()
    assert client.get("/evaluations/0123456789ab").json()["error"] == "evaluation_not_found"
    assert client.get("/evaluations/..%2Fx").status_code in (404, 422)


def hostile_copy(data_dir: Path, name: str) -> Path:
    """A copy of the embedded dataset under ``data_dir`` (its images linked), to be made hostile."""
    source, target = data_dir / DATA, data_dir / name
    if not target.exists():
        shutil.copytree(source, target, symlinks=False)
    return target


@pytest.fixture(scope="module")
def secret(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A real image outside the data folder that no evaluation may read."""
    folder = tmp_path_factory.mktemp("outside")
    path = folder / "secret.jpg"
    shutil.copy(next((Path(__file__).parents[2] / "server" / "static" / "samples").glob("*.jpg")), path)
    return path


def point_first_image(dataset: Path, img_path: str) -> None:
    records = json.loads((dataset / "test.json").read_text())
    records[0]["img_path"] = img_path
    (dataset / "test.json").write_text(json.dumps(records))


@pytest.mark.parametrize("attack", ["absolute", "dotdot", "symlink", "segmentation-id", "symlinked-list"])
def test_paths_inside_a_dataset_cannot_leave_the_data_folder(client: httpx.Client, data_dir: Path, secret: Path,
                                                             attack: str) -> None:
    dataset = hostile_copy(data_dir, f"hostile-{attack}")
    model = CLASSIFIER
    if attack == "absolute":
        point_first_image(dataset, str(secret))
    elif attack == "dotdot":
        point_first_image(dataset, "../" * 8 + str(secret).lstrip("/"))
    elif attack == "symlink":
        (dataset / "JPEGImages" / "link.jpg").symlink_to(secret)
        point_first_image(dataset, "JPEGImages/link.jpg")
    elif attack == "segmentation-id":
        model = SEGMENTER
        listing = dataset / "ImageSets" / "Segmentation" / "test.txt"
        listing.write_text("../" * 8 + str(secret.with_suffix("")).lstrip("/") + "\n" + listing.read_text())
    else:  # the annotation file itself points outside
        (dataset / "test.json").unlink()
        (dataset / "test.json").symlink_to(secret)
    before = len(client.get("/evaluations").json()["evaluations"])
    answer = client.post("/evaluations", json={"model": model, "data": dataset.name, "limit": 2})
    assert answer.status_code == 422, answer.text
    assert answer.json()["error"] == "invalid_parameter"
    assert "lies outside the data folder" in answer.json()["detail"]
    assert str(secret.parent) not in answer.text  # nothing about the outside is told
    assert len(client.get("/evaluations").json()["evaluations"]) == before
