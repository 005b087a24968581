"""Issue 22, item 3: each step reserves what it really holds, so the budget bounds the server's memory.

One uvicorn server with a budget of 50 million pixels of 4 B (200 MB) and four decode threads takes five
attacks, each of images no larger than the pixel limit: overlays of a big PNG, alpha and palette PNGs, progressive
JPEGs, big truth PNGs and KServe v2 tensors of a dynamic-size segmenter. Each is served within the budget or
refused (503 ``overloaded``, 413); the server's peak RSS grows by less than the budget plus ``MARGIN_MB``, and
/health keeps answering meanwhile (p99 printed; see ``HEALTH_P99_MS``). The figures are printed (``pytest -s``).
"""

from __future__ import annotations

import io
import json
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import numpy as np
import pytest
from PIL import Image

from tests.server.conftest import CLASSIFIER, SEGMENTER, STARTUP_SECONDS, LiveServer, launch_server
from tests.server.health_probe import HealthProbe

SIDE = 4000  # every attack image is 4000 x 4000 = 16 MP
INFLIGHT_PIXELS = 50_000_000
BUDGET_MB = INFLIGHT_PIXELS * 4 / 1e6  # 200 MB
# Beyond the budget: uploads in flight (up to 64 MB), ONNX Runtime's arena as it grows for a new input size, the
# allocator's slack and buffers below a step's size.
MARGIN_MB = 150
MAX_RESPONSE_BYTES = 16_000_000
FLAGS = ("--models", f"{CLASSIFIER},{SEGMENTER}", "--max-body-bytes", "4000000", "--max-inflight-bytes", "64000000",
         "--max-pixels", str(SIDE * SIDE), "--max-inflight-pixels", str(INFLIGHT_PIXELS), "--decode-threads", "4",
         "--intra-op-threads", "1", "--max-delay-ms", "5", "--queue-size", "64", "--max-response-bytes",
         str(MAX_RESPONSE_BYTES))
# The target is 100 ms. On the 2-core machine these tests were written on, shared with other test runs (load
# average 7-11), /health p99 measured 14-233 ms under these attacks; 500 ms keeps a loaded machine from failing
# the test while an event loop blocked by a step (seconds) still does. docs/reliability.md has the figures.
HEALTH_P99_MS = 500
ATTACK_SECONDS = 3.0


@pytest.fixture(scope="module")
def budgeted(store: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    live = launch_server(store, tmp_path_factory.mktemp("memory-per-operation") / "server.log", *FLAGS)
    try:
        live.server.wait(STARTUP_SECONDS)
        yield live
    finally:
        live.server.stop()


def status_line(pid: int, key: str) -> float:
    """A /proc/<pid>/status figure in MB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(f"{key}:"):
            return int(line.split()[1]) * 1024 / 1e6
    raise AssertionError(f"no {key}")


class Attack(HealthProbe):
    """While an attack runs: /health latencies (HealthProbe), and the server's peak RSS (VmHWM, reset first)."""

    def __init__(self, live: LiveServer) -> None:
        super().__init__(live.url, pause=0.005)
        self.pid = live.server.process.pid

    def __enter__(self) -> Attack:
        Path(f"/proc/{self.pid}/clear_refs").write_text("5")  # VmHWM restarts from the current RSS
        self.baseline = status_line(self.pid, "VmRSS")
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()
        self.peak = status_line(self.pid, "VmHWM")

    def figures(self, name: str, responses: list[httpx.Response]) -> dict:
        codes = [r.status_code for r in responses]
        figures = {"attack": name, "requests": len(codes), **{str(c): codes.count(c) for c in sorted(set(codes))},
                   "rss_baseline_mb": round(self.baseline), "rss_growth_mb": round(self.peak - self.baseline),
                   "bound_mb": round(BUDGET_MB + MARGIN_MB), "health_checks": len(self.health),
                   "health_failures": self.failures,
                   "health_p99_ms": round(self.p99_ms(), 1)}
        print("\n", figures)
        return figures


def run_attack(live: LiveServer, name: str, send: Callable[[httpx.Client, int], httpx.Response],
               concurrency: int) -> tuple[list[httpx.Response], dict]:
    """``concurrency`` clients calling ``send`` one request after another, each on its own connection, for
    ``ATTACK_SECONDS`` (a request started before the end is answered), under an Attack."""
    def client_loop(worker: int) -> list[httpx.Response]:
        answers: list[httpx.Response] = []
        while time.monotonic() < stop:
            with httpx.Client(base_url=live.url, timeout=120) as client:
                answers.append(send(client, worker + concurrency * len(answers)))
        return answers

    with httpx.Client(base_url=live.url, timeout=60) as client:  # the models warm, before the baseline
        assert client.get("/health").status_code == 200
    with Attack(live) as attack, ThreadPoolExecutor(concurrency) as pool:
        stop = time.monotonic() + ATTACK_SECONDS
        responses = [r for answers in pool.map(client_loop, range(concurrency)) for r in answers]
    figures = attack.figures(name, responses)
    assert live.server.process.poll() is None  # alive
    assert attack.failures == 0 and len(attack.health) >= 5
    assert figures["rss_growth_mb"] < BUDGET_MB + MARGIN_MB, figures
    assert figures["health_p99_ms"] < HEALTH_P99_MS, figures
    return responses, figures


def overloaded_or(responses: list[httpx.Response], status: int = 200) -> list[httpx.Response]:
    """The answers of ``status``; every other one must be a 503 ``overloaded`` naming the pixel budget."""
    for response in responses:
        if response.status_code != status:
            assert response.status_code == 503, response.text
            assert response.json()["error"] == "overloaded" and "--max-inflight-pixels" in response.json()["detail"]
    return [r for r in responses if r.status_code == status]


def encoded(image: Image.Image, **options) -> bytes:
    out = io.BytesIO()
    image.save(out, **options)
    return out.getvalue()


def stripes(mode: str = "RGB") -> Image.Image:
    """16 MP of vertical colour stripes: a few dozen KB as PNG, a few MB as JPEG."""
    row = np.repeat(np.arange(SIDE // 100, dtype=np.uint8) * 23, 100)
    rgb = Image.fromarray(np.stack([np.broadcast_to(row, (SIDE, SIDE)), np.broadcast_to(255 - row, (SIDE, SIDE)),
                                    np.full((SIDE, SIDE), 90, np.uint8)], -1))
    return rgb.quantize(64, dither=Image.Dither.NONE) if mode == "P" else rgb.convert(mode)


def test_overlays_of_a_big_png_are_served_within_the_budget(budgeted):
    """An overlay of a 16 MP PNG of 40 KB used to blend in float32 (66 B a pixel: about 1 GB) while it reserved 16
    million pixels, so three ran at once; now it blends tile by tile in place and reserves 11 B a pixel."""
    body = encoded(stripes(), format="PNG")
    assert len(body) < 100_000

    def send(client: httpx.Client, _: int) -> httpx.Response:
        return client.post(f"/segment?model={SEGMENTER}&format=overlay", content=body,
                           headers={"Content-Type": "image/png"})

    responses, _ = run_attack(budgeted, "big-PNG overlay", send, concurrency=6)
    served = overloaded_or(responses)
    assert served and all(Image.open(io.BytesIO(r.content)).size == (SIDE, SIDE) for r in served)


def test_alpha_and_palette_pngs_reserve_what_their_conversion_holds(budgeted):
    """RGBA and transparent-palette PNGs used to cost 13-14 B a pixel while reserving 4; now they are converted
    tile by tile (9 and 6 B a pixel) and reserve that."""
    bodies = [encoded(stripes("RGBA"), format="PNG"), encoded(stripes("P"), format="PNG", transparency=0)]

    def send(client: httpx.Client, index: int) -> httpx.Response:
        return client.post(f"/predict?model={CLASSIFIER}", content=bodies[index % 2],
                           headers={"Content-Type": "image/png"})

    responses, _ = run_attack(budgeted, "alpha and palette PNGs", send, concurrency=6)
    assert overloaded_or(responses)


def test_progressive_jpegs_reserve_libjpegs_full_size_buffers(budgeted):
    """A progressive 4:4:4 JPEG decoded at 1/8 scale reserved 250,000 pixels while libjpeg held 6 B for each of
    its 16 million; now it reserves those buffers, so two decode at once instead of eight."""
    body = encoded(stripes(), format="JPEG", quality=50, progressive=True, subsampling=0)
    assert len(body) < 4_000_000

    def send(client: httpx.Client, _: int) -> httpx.Response:
        return client.post(f"/predict?model={CLASSIFIER}", content=body, headers={"Content-Type": "image/jpeg"})

    responses, figures = run_attack(budgeted, "progressive JPEG", send, concurrency=6)
    assert overloaded_or(responses)
    assert figures.get("503", 0) >= 1  # 24.3 million pixels each: two fit the budget, the others are shed


def test_big_truth_pngs_are_reserved(budgeted):
    """/robustness with a 16 MP truth PNG of a few KB decoded it with no reservation at all (4 B a pixel, eight at
    once); now each reserves 3.5 B a pixel before the decode."""
    image = encoded(stripes(), format="JPEG", quality=50)
    truth = encoded(Image.new("L", (SIDE, SIDE), 0), format="PNG")
    assert len(truth) < 100_000

    def send(client: httpx.Client, _: int) -> httpx.Response:
        return client.post(f"/robustness?model={SEGMENTER}&n=1", files={"file": ("a.jpg", image, "image/jpeg"),
                                                                       "truth": ("t.png", truth, "image/png")})

    responses, figures = run_attack(budgeted, "truth PNG", send, concurrency=6)
    served = overloaded_or(responses)
    assert figures.get("503", 0) >= 1  # 14 million pixels each: three fit the budget, the others are shed
    assert served and all(r.json()["truth"] is not None for r in served)


V2_SHAPE = [1, 3, 577, 577]  # the largest tensor a 4 MB body holds: 333,000 pixels through a dynamic-size model


def v2_body(binary_output: bool) -> tuple[bytes, dict[str, str]]:
    tensor = np.zeros(V2_SHAPE, dtype="<f4").tobytes()
    header = json.dumps({"inputs": [{"name": "images", "shape": V2_SHAPE, "datatype": "FP32",
                                     "parameters": {"binary_data_size": len(tensor)}}],
                         "outputs": [{"name": "logits", "parameters": {"binary_data": binary_output}}]}).encode()
    return header + tensor, {"Inference-Header-Content-Length": str(len(header)),
                             "Content-Type": "application/octet-stream"}


def test_v2_tensors_of_a_dynamic_size_model_are_budgeted_and_answers_capped(budgeted):
    """[1, 3, 577, 577] on the segmenter: a JSON answer of 3.7 million numbers (about 75 MB, built from Python
    floats) is refused with 413 before the model runs; binary answers (15 MB) are served within the budget, the
    model run and the answer reserved."""
    with httpx.Client(base_url=budgeted.url, timeout=60) as client:
        output = client.get(f"/v2/models/{SEGMENTER}").json()["outputs"][0]["name"]
    bodies = {}
    for binary in (False, True):
        body, headers = v2_body(binary)
        bodies[binary] = (body.replace(b'"logits"', json.dumps(output).encode()), headers)

    def send(client: httpx.Client, index: int) -> httpx.Response:
        body, headers = bodies[index % 2 == 1]
        return client.post(f"/v2/models/{SEGMENTER}/infer", content=body, headers=headers)

    responses, _ = run_attack(budgeted, "v2 huge dynamic shape", send, concurrency=6)
    json_answers = [r for r in responses if r.request.headers["Inference-Header-Content-Length"] ==
                    bodies[False][1]["Inference-Header-Content-Length"]]
    for response in json_answers:
        assert response.status_code == 413, response.text
        assert response.json()["error"] == "response_too_large" and "--max-response-bytes" in response.json()["detail"]
    served = overloaded_or([r for r in responses if r not in json_answers])
    assert served
    for response in served:
        head = int(response.headers["Inference-Header-Content-Length"])
        assert len(response.content) - head == 11 * 577 * 577 * 4  # 11 classes, float32
