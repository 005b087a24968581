"""A real server under floods it must shed by weight, not by count: large uploads and tiny huge-pixel images.

One uvicorn server with small in-flight limits serves both floods. Each flood lasts a few seconds; the figures
(requests, 503s, peak RSS, /health p99) are printed (``pytest -s``) and written to the report in the reply.
"""

from __future__ import annotations

import io
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import numpy as np
import pytest
from PIL import Image

from tests.server.conftest import CLASSIFIER, STARTUP_SECONDS, LiveServer, launch_server, wait_until
from tests.server.health_probe import HealthProbe
from tests.server.oracle import png_bytes

MAX_BODY_BYTES = 2_000_000
INFLIGHT_BYTES = 4_000_000  # two 1.9 MB uploads fill it
MAX_PIXELS = 25_000_000
# One 5000 x 5000 greyscale decode at a time, though four decode threads are free: 25 million pixels at 5.5 B
# (server.costs.DECODE_BYTES["L"]) reserve 34.4 million pixels of 4 B.
INFLIGHT_PIXELS = 35_000_000
DECODE_THREADS = 4
FLAGS = ("--models", CLASSIFIER, "--max-body-bytes", str(MAX_BODY_BYTES), "--max-inflight-bytes",
         str(INFLIGHT_BYTES), "--max-pixels", str(MAX_PIXELS), "--max-inflight-pixels", str(INFLIGHT_PIXELS),
         "--decode-threads", str(DECODE_THREADS), "--intra-op-threads", "1", "--max-delay-ms", "5",
         "--queue-size", "64")
RAW = {"Content-Type": "image/png"}
MIB = 1024 * 1024
# One 5000 x 5000 decode (a 25 MB greyscale image and its 100 MB RGB copy: Pillow keeps 4 bytes an RGB pixel)
# plus the allocator's slack. With the pixel budget out of the way (--max-inflight-pixels 1e9) the four decode
# threads took the server 470-500 MiB above its baseline in the same flood.
RSS_GROWTH_BOUND_MIB = 300
TAIL = 1000  # bytes a held upload keeps back


@pytest.fixture(scope="module")
def lean(store: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    live = launch_server(store, tmp_path_factory.mktemp("memory") / "server.log", *FLAGS)
    try:
        live.server.wait(STARTUP_SECONDS)
        yield live
    finally:
        live.server.stop()


def gauge(live: LiveServer, name: str) -> float:
    """A label-less gauge from /metrics."""
    text = httpx.get(f"{live.url}/metrics", timeout=10).text
    for line in text.splitlines():
        if line.startswith(f"{name} "):
            return float(line.split()[1])
    raise AssertionError(f"{name} missing from /metrics")


def rejections(live: LiveServer, reason: str) -> float:
    text = httpx.get(f"{live.url}/metrics", timeout=10).text
    prefix = f'rejected_requests_total{{model="{CLASSIFIER}",reason="{reason}"}} '
    return sum(float(line.split()[-1]) for line in text.splitlines() if line.startswith(prefix))


def rss_mib(pid: int) -> float:
    """The process's resident set, from /proc/<pid>/status."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise AssertionError("no VmRSS")


class Probe(HealthProbe):
    """While the flood runs: /health latencies (HealthProbe) and the server's peak RSS, each from its own thread."""

    def __init__(self, live: LiveServer) -> None:
        super().__init__(live.url)
        self.pid = live.server.process.pid
        self.peak_rss = rss_mib(self.pid)
        self.rss_thread = threading.Thread(target=self._rss)

    def _rss(self) -> None:
        while not self.stopping.is_set():
            self.peak_rss = max(self.peak_rss, rss_mib(self.pid))
            time.sleep(0.005)

    def __enter__(self) -> Probe:
        self.start()
        self.rss_thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()
        self.rss_thread.join()


def flood(live: LiveServer, body: bytes, requests: int, concurrency: int) -> list[httpx.Response]:
    """``requests`` raw PNG uploads of ``body``, ``concurrency`` at a time, each on its own connection."""
    def post(_: int) -> httpx.Response:
        with httpx.Client(base_url=live.url, timeout=60) as client:
            return client.post("/predict", content=body, headers=RAW)

    with ThreadPoolExecutor(concurrency) as pool:
        return list(pool.map(post, range(requests)))


def noise_png(side: int, seed: int) -> bytes:
    """Random pixels: a PNG about 3 * side * side bytes long that zlib cannot shrink."""
    return png_bytes(np.random.default_rng(seed).integers(0, 256, size=(side, side, 3), dtype=np.uint8))


def report(name: str, responses: list[httpx.Response], probe: Probe, baseline: float, seconds: float) -> dict:
    codes = [r.status_code for r in responses]
    figures = {"flood": name, "requests": len(codes), "200": codes.count(200), "503": codes.count(503),
               "other": len(codes) - codes.count(200) - codes.count(503), "seconds": round(seconds, 2),
               "rss_baseline_mib": round(baseline), "rss_peak_mib": round(probe.peak_rss),
               "health_checks": len(probe.health), "health_failures": probe.failures,
               "health_p99_ms": round(probe.p99_ms(), 1)}
    print("\n", figures)
    return figures


def test_large_uploads_are_shed_by_bytes_while_health_answers(lean):
    """Two slow 1.9 MB uploads, sent but for their last KB, hold the byte budget; a flood of 0.3 MB uploads
    meanwhile is all 503 overloaded, refused from Content-Length before a byte of it is read; afterwards the budget
    is back to 0."""
    held, release = noise_png(790, seed=1), threading.Event()
    assert 1_800_000 < len(held) <= MAX_BODY_BYTES

    def slow_body() -> Iterator[bytes]:
        yield held[:-TAIL]
        release.wait(60)  # the upload stalls just short of its end until the flood is over
        yield held[-TAIL:]

    def hold() -> httpx.Response:
        with httpx.Client(base_url=lean.url, timeout=90) as client:
            return client.post("/predict", content=slow_body(), headers={**RAW, "Content-Length": str(len(held))})

    before = rejections(lean, "inflight_bytes")
    with ThreadPoolExecutor(2) as holders:
        pending = [holders.submit(hold) for _ in range(2)]
        try:
            wait_until(lambda: gauge(lean, "inflight_bytes") == 2 * (len(held) - TAIL))  # held as they arrived
            body = noise_png(310, seed=2)  # 0.29 MB: more than the 0.26 MB left
            baseline = rss_mib(lean.server.process.pid)
            start = time.monotonic()
            with Probe(lean) as probe:
                responses = flood(lean, body, requests=48, concurrency=16)
            figures = report("large uploads", responses, probe, baseline, time.monotonic() - start)
        finally:
            release.set()
        held_answers = [future.result() for future in pending]
    assert figures["503"] == 48, [r.text for r in responses if r.status_code != 503][:3]
    for response in responses:
        assert response.json()["error"] == "overloaded" and int(response.headers["Retry-After"]) >= 1
        assert "--max-inflight-bytes" in response.json()["detail"]
    assert all(r.status_code == 200 for r in held_answers), [r.text for r in held_answers]
    assert probe.failures == 0 and len(probe.health) >= 5
    assert rejections(lean, "inflight_bytes") - before == 48
    wait_until(lambda: gauge(lean, "inflight_bytes") == 0 and gauge(lean, "inflight_pixels") == 0)
    assert httpx.post(f"{lean.url}/predict", content=body, headers=RAW, timeout=30).status_code == 200


def test_tiny_huge_pixel_images_are_shed_by_pixels_and_memory_stays_bounded(lean):
    """5000 x 5000 single-colour PNGs of 35 KB: each decodes to 125 MB. With four decode threads and a pixel
    budget of one such image, the rest are shed with 503 and the server's RSS grows by less than the bound."""
    out = io.BytesIO()
    Image.new("L", (5000, 5000), 90).save(out, format="PNG", optimize=True)
    body = out.getvalue()
    assert len(body) < 50_000
    pid = lean.server.process.pid
    before = rejections(lean, "inflight_pixels")
    baseline = rss_mib(pid)
    start = time.monotonic()
    with Probe(lean) as probe:
        responses = flood(lean, body, requests=40, concurrency=16)
    figures = report("huge-pixel PNGs", responses, probe, baseline, time.monotonic() - start)
    assert figures["other"] == 0, {r.text for r in responses if r.status_code not in (200, 503)}
    assert figures["200"] >= 1 and figures["503"] >= 1
    assert all(r.json()["error"] == "overloaded" for r in responses if r.status_code == 503)
    assert rejections(lean, "inflight_pixels") - before == figures["503"]
    assert probe.failures == 0
    assert probe.peak_rss - baseline < RSS_GROWTH_BOUND_MIB, figures
    assert lean.server.process.poll() is None  # alive: it shed instead of dying
    wait_until(lambda: gauge(lean, "inflight_bytes") == 0 and gauge(lean, "inflight_pixels") == 0)
    assert httpx.get(f"{lean.url}/health", timeout=10).status_code == 200


def test_chunked_uploads_reserve_each_chunk_as_it_arrives(lean):
    """A chunked upload (no Content-Length) holds what it has sent while it streams: it used to be counted only
    once its whole body was read, so a thousand of them could hold gigabytes unseen. Next to two that stall at
    1.68 MB, a third one's bytes pass the 4 MB budget mid-stream and end it in 503 overloaded."""
    step = 240_000
    go_on = threading.Event()

    def chunks(count: int, wait_after: int) -> Iterator[bytes]:
        for index in range(count):
            if index == wait_after:
                go_on.wait(60)
            yield b"\0" * step

    def upload(count: int, wait_after: int) -> httpx.Response:
        with httpx.Client(base_url=lean.url, timeout=60) as client:
            return client.post("/predict", content=chunks(count, wait_after), headers=RAW)

    with ThreadPoolExecutor(3) as pool:
        held = [pool.submit(upload, 8, 7) for _ in range(2)]  # 1.92 MB each, each waits after 1.68 MB
        try:
            wait_until(lambda: gauge(lean, "inflight_bytes") == 2 * 7 * step)  # held while they stream
            refused = pool.submit(upload, 6, 6).result(timeout=60)  # 1.44 MB: past the 0.64 MB left
        finally:
            go_on.set()
        assert [future.result(timeout=60).json()["error"] for future in held] == ["not_an_image"] * 2  # zeros
    assert refused.status_code == 503 and refused.json()["error"] == "overloaded", refused.text
    assert "--max-inflight-bytes" in refused.json()["detail"]
    wait_until(lambda: gauge(lean, "inflight_bytes") == 0)
