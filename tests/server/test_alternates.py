"""Alternate precisions loaded on request (``/robustness?precision=``) are bounded by --max-alternates: the least
recently used is evicted and closed, so asking for many never holds more than the cap, nor the memory of more.

Three copies of a random ResNet-18 at 128 px, each listing an INT8 and an FP16 variant (built here, not guarded:
comparisons may run any listed variant), give six alternates for a server that keeps two.
"""

from __future__ import annotations

import json
import shutil
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from export.variants import convert_fp16, quantize_int8
from model_store.manifest import sha256_file
from tests.conftest import CLASSIFIER
from tests.server.conftest import LiveServer, launch_server, running
from tests.server.oracle import png_bytes, random_rgb

MODELS = ("m1", "m2", "m3")
CAP = 2
LEAK_MARGIN_MB = 120  # evicted sessions never freed would add about 270 MB a round (six of about 45 MB each)
ROUNDS = 6
# RSS rises for the first rounds as the allocator and ONNX Runtime settle (measured: +61, +18, +37 MB in rounds
# 1-3, then flat within 20 MB through round 7), so the baseline is taken after round 1, not round 0.
SETTLED_ROUND = 1


@pytest.fixture(scope="module")
def alternates_store(r18_store: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    store = tmp_path_factory.mktemp("alternates") / "model_store"
    template = store / "template"
    template.mkdir(parents=True)
    source = r18_store / CLASSIFIER / "1"
    shutil.copy2(source / "model.onnx", template / "model.onnx")
    convert_fp16(template / "model.onnx", template / "model.fp16.onnx")
    inputs = np.random.default_rng(0).standard_normal((8, 3, 128, 128)).astype(np.float32)
    quantize_int8(template / "model.onnx", template / "model.int8.onnx", "images", inputs, "minmax")
    document = json.loads((source / "manifest.json").read_text())
    document["files"] = {name: {"sha256": sha256_file(template / name), "bytes": (template / name).stat().st_size}
                         for name in ("model.onnx", "model.fp16.onnx", "model.int8.onnx")}
    document["variants"] = [{"file": f"model.{p}.onnx", "precision": p, "status": "rejected", "reason": "not guarded"}
                            for p in ("int8", "fp16")]
    for name in MODELS:
        entry = store / name / "1"
        shutil.copytree(template, entry)
        (entry / "manifest.json").write_text(json.dumps({**document, "name": name}))
    shutil.rmtree(template)
    return store


@pytest.fixture(scope="module")
def server(alternates_store: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    log = tmp_path_factory.mktemp("alternates-logs") / "server.log"
    flags = ("--max-alternates", str(CAP), "--intra-op-threads", "1", "--timeout-ms", "20000")
    with running({"main": launch_server(alternates_store, log, *flags)}) as started:
        yield started["main"]


def rss_mb(live: LiveServer) -> float:
    status = Path(f"/proc/{live.server.process.pid}/status").read_text()
    return int(next(line.split()[1] for line in status.splitlines() if line.startswith("VmRSS:"))) / 1024


def loaded(live: LiveServer) -> list[tuple[str, str]]:
    with live.client() as c:
        return [(m["name"], p) for m in c.get("/models").json()["models"] for p in m["alternates"]]


def test_many_alternates_never_hold_more_than_the_cap(server: LiveServer) -> None:
    payload = {"file": ("x.png", png_bytes(random_rgb(96, 96, seed=2)))}
    keys = [(name, precision) for name in MODELS for precision in ("int8", "fp16")]
    settled = 0.0
    with server.client() as c:
        for round_ in range(ROUNDS):
            for index, (name, precision) in enumerate(keys):
                answer = c.post(f"/robustness?model={name}&precision={precision}&n=1&seed=1", files=payload)
                assert answer.status_code == 200, answer.text
                assert answer.json()["precision"] == precision
                held = loaded(server)
                assert len(held) == min(CAP, round_ * len(keys) + index + 1) and (name, precision) in held, held
            time.sleep(1.5)  # evicted runners stop once idle, half a second after their eviction
            if round_ == SETTLED_ROUND:
                settled = rss_mb(server)
        final = rss_mb(server)
    assert final - settled < LEAK_MARGIN_MB, (settled, final)
    assert server.logs().count("evicted (--max-alternates 2)") == ROUNDS * len(keys) - CAP


def test_a_recently_used_alternate_is_kept(server: LiveServer) -> None:
    payload = {"file": ("x.png", png_bytes(random_rgb(64, 64, seed=3)))}
    with server.client() as c:
        for name, precision in (("m1", "int8"), ("m2", "int8"), ("m1", "int8"), ("m3", "fp16")):
            assert c.post(f"/robustness?model={name}&precision={precision}&n=1", files=payload).status_code == 200
    assert sorted(loaded(server)) == [("m1", "int8"), ("m3", "fp16")]  # m2 was the least recently used
