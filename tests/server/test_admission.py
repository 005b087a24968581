"""Admission by weight: the in-flight byte and pixel budget, its tickets, and how the pipeline uses them."""

from __future__ import annotations

import io
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from fastapi.testclient import TestClient
from PIL import Image

from server.admission import InflightBudget, OverloadedError, TicketClosedError, close_request_ticket, request_ticket
from server.main import create_app
from server.settings import Settings
from tests.server.conftest import CLASSIFIER, SEGMENTER
from tests.server.oracle import png_bytes, random_rgb


def test_reserve_and_release_within_the_limits():
    budget = InflightBudget(max_bytes=100, max_pixels=1000)
    budget.reserve(nbytes=60, pixels=400)
    budget.reserve(nbytes=40, pixels=600)  # exactly at both limits
    assert (budget.bytes, budget.pixels) == (100, 1000)
    budget.release(nbytes=100, pixels=1000)
    assert (budget.bytes, budget.pixels) == (0, 0)
    budget.release(nbytes=5)  # never below zero
    assert budget.bytes == 0


def test_a_reservation_past_a_limit_is_refused_and_takes_nothing():
    budget = InflightBudget(max_bytes=100, max_pixels=1000)
    budget.reserve(nbytes=90, pixels=10)
    with pytest.raises(OverloadedError) as info:
        budget.reserve(nbytes=11)
    assert (info.value.resource, info.value.asked, info.value.in_use, info.value.limit) == ("bytes", 11, 90, 100)
    assert "--max-inflight-bytes" in str(info.value) and "90 upload bytes" in str(info.value)
    with pytest.raises(OverloadedError) as info:  # all or nothing: the bytes fit, the pixels do not
        budget.reserve(nbytes=5, pixels=991)
    assert info.value.resource == "pixels" and "--max-inflight-pixels" in str(info.value)
    assert (budget.bytes, budget.pixels) == (90, 10)


def test_tickets_release_in_parts_and_once_on_close():
    budget = InflightBudget(max_bytes=100, max_pixels=1000)
    ticket = budget.ticket()
    ticket.reserve_bytes(70)
    ticket.reserve_pixels(500)
    ticket.release_bytes(keep=20)  # e.g. an extra file still held
    assert (budget.bytes, ticket.bytes) == (20, 20)
    ticket.release_pixels()
    assert budget.pixels == 0
    other = budget.ticket()
    other.reserve_bytes(50)
    ticket.close()
    ticket.close()  # idempotent: the other ticket's bytes stay
    assert budget.bytes == 50
    with pytest.raises(TicketClosedError):  # a decode finishing after its request ended reserves nothing
        ticket.reserve_pixels(1)
    assert budget.pixels == 0


def test_a_ticket_is_released_on_error():
    budget = InflightBudget(max_bytes=100, max_pixels=1000)
    with pytest.raises(RuntimeError), budget.ticket() as ticket:
        ticket.reserve_bytes(80)
        ticket.reserve_pixels(800)
        raise RuntimeError("decode failed")
    assert (budget.bytes, budget.pixels) == (0, 0)


def test_the_request_ticket_lives_in_the_scope_until_closed():
    budget = InflightBudget(max_bytes=100, max_pixels=1000)
    scope: dict = {}
    ticket = request_ticket(scope, budget)
    assert request_ticket(scope, budget) is ticket
    ticket.reserve_bytes(30)
    close_request_ticket(scope)
    close_request_ticket(scope)  # nothing left: no error
    assert budget.bytes == 0 and scope == {}


def test_reservations_from_many_threads_never_pass_the_limit():
    budget = InflightBudget(max_bytes=10, max_pixels=10)
    peak, refused, lock = [0], [0], threading.Lock()

    def work() -> None:
        for _ in range(2000):
            try:
                budget.reserve(nbytes=3, pixels=1)
            except OverloadedError:
                with lock:
                    refused[0] += 1
                continue
            with lock:
                peak[0] = max(peak[0], budget.bytes)
            budget.release(nbytes=3, pixels=1)

    threads = [threading.Thread(target=work) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert peak[0] <= 9 and (budget.bytes, budget.pixels) == (0, 0)


# In-process app (a real store, no uvicorn): the pipeline reserves, refuses, and gives everything back.

INFLIGHT_BYTES = 3_000_000
INFLIGHT_PIXELS = 5_000_000


@pytest.fixture(scope="module")
def app_client(store: Path) -> Iterator[TestClient]:
    settings = Settings(store=store, models=(CLASSIFIER, SEGMENTER), max_body_bytes=2_000_000,
                        max_inflight_bytes=INFLIGHT_BYTES, max_pixels=4_000_000,
                        max_inflight_pixels=INFLIGHT_PIXELS, decode_threads=2, intra_op_threads=1)
    with TestClient(create_app(settings), base_url="http://localhost") as client:
        deadline = time.monotonic() + 120
        while client.get("/ready").status_code != 200:
            assert time.monotonic() < deadline, "models not ready"
            time.sleep(0.1)
        yield client


def flat_png(width: int, height: int) -> bytes:
    """A valid single-colour PNG: a few KB that decode to width x height pixels."""
    return png_bytes(np.full((height, width, 3), 90, dtype=np.uint8))


def budget_of(client: TestClient) -> InflightBudget:
    return client.app.state.context.budget


def gauge(client: TestClient, name: str) -> float:
    for line in client.get("/metrics").text.splitlines():
        if line.startswith(f"{name} "):
            return float(line.split()[1])
    raise AssertionError(f"{name} missing from /metrics")


def test_every_answer_gives_the_budget_back(app_client):
    image = png_bytes(random_rgb(300, 400, seed=3))
    assert app_client.post("/predict", files={"file": ("a.png", image)}).status_code == 200
    assert app_client.post("/segment?format=overlay", content=image,
                           headers={"Content-Type": "image/png"}).status_code == 200  # keeps the original
    raw = {"Content-Type": "image/png"}
    assert app_client.post("/predict", content=b"not an image", headers=raw).status_code == 400
    broken = png_bytes(random_rgb(300, 400, seed=4))
    assert app_client.post("/predict", content=broken[: len(broken) // 2],  # pixels reserved, then the decode fails
                           headers={"Content-Type": "image/png"}).json()["error"] == "invalid_image"
    assert app_client.post("/v2/models/nope/infer", content=b"{}").status_code == 404
    assert (budget_of(app_client).bytes, budget_of(app_client).pixels) == (0, 0)
    assert gauge(app_client, "inflight_bytes") == 0 and gauge(app_client, "inflight_pixels") == 0


def test_a_declared_body_past_the_byte_budget_is_503_before_it_is_read(app_client):
    budget = budget_of(app_client)
    budget.reserve(nbytes=INFLIGHT_BYTES - 1000)  # other requests' uploads
    try:
        response = app_client.post("/predict", content=png_bytes(random_rgb(64, 64)),
                                   headers={"Content-Type": "image/png"})
        assert response.status_code == 503 and response.json()["error"] == "overloaded", response.text
        assert "--max-inflight-bytes" in response.json()["detail"] and int(response.headers["Retry-After"]) >= 1
        v2 = app_client.post(f"/v2/models/{CLASSIFIER}/infer", content=b"{" + b" " * 5000 + b"}")
        assert v2.status_code == 503 and v2.json()["error"] == "overloaded"
    finally:
        budget.release(nbytes=INFLIGHT_BYTES - 1000)
    assert budget.bytes == 0
    assert 'rejected_requests_total{model="r18",reason="inflight_bytes"}' in app_client.get("/metrics").text


def test_a_chunked_body_is_counted_once_read(app_client):
    budget = budget_of(app_client)
    budget.reserve(nbytes=INFLIGHT_BYTES - 1000)
    image = png_bytes(random_rgb(64, 64))
    try:
        response = app_client.post("/predict", content=iter([image[:100], image[100:]]),  # no Content-Length
                                   headers={"Content-Type": "image/png"})
        assert response.status_code == 503 and response.json()["error"] == "overloaded", response.text
    finally:
        budget.release(nbytes=INFLIGHT_BYTES - 1000)
    assert app_client.post("/predict", content=iter([image[:100], image[100:]]),
                           headers={"Content-Type": "image/png"}).status_code == 200
    assert budget.bytes == 0


def test_an_image_past_the_pixel_budget_is_503_before_it_is_decoded(app_client):
    budget = budget_of(app_client)
    budget.reserve(pixels=INFLIGHT_PIXELS - 3_000_000)  # e.g. overlays waiting with their originals
    try:
        response = app_client.post("/predict", content=flat_png(2000, 2000), headers={"Content-Type": "image/png"})
        assert response.status_code == 503 and response.json()["error"] == "overloaded", response.text
        detail = response.json()["detail"]  # 4,000,000 RGB pixels at 4.5 B: 4,500,000 pixels of 4 B
        assert "4,500,000" in detail and "--max-inflight-pixels" in detail
        small = png_bytes(random_rgb(100, 100))  # 10,000 pixels still fit
        assert app_client.post("/predict", content=small, headers={"Content-Type": "image/png"}).status_code == 200
    finally:
        budget.release(pixels=INFLIGHT_PIXELS - 3_000_000)
    assert budget.pixels == 0
    assert 'rejected_requests_total{model="r18",reason="inflight_pixels"}' in app_client.get("/metrics").text


@pytest.mark.parametrize("fmt", ["JPEG", "PNG", "WEBP", "BMP", "TIFF", "GIF", "ICO", "PPM", "TGA"])
def test_the_format_allow_list_over_http(app_client, fmt):
    out = io.BytesIO()
    Image.fromarray(random_rgb(48, 48, seed=8)).save(out, format=fmt)
    response = app_client.post("/predict", files={"file": (f"a.{fmt.lower()}", out.getvalue())})
    if fmt in ("ICO", "PPM", "TGA"):
        assert response.status_code == 415, response.text
        assert response.json() == {"error": "unsupported_image_format", "detail": f"the image is {fmt}, a format "
                                   "this server does not decode; allowed: JPEG, PNG, WEBP, BMP, TIFF, GIF"}
    else:
        assert response.status_code == 200, response.text
