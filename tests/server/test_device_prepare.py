"""--device-prepare on: JPEG uploads decoded in batches and /robustness copies made by the torch device path.

On a GPU machine that path runs on CUDA (nvJPEG); here the same code runs with the device set to the CPU, against
a real server, and is compared with the main server, which decodes with Pillow on the host.
"""

from __future__ import annotations

import io
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import numpy as np
import pytest
from PIL import Image
from skimage import data as samples

from tests.server.conftest import CLASSIFIER, IMAGENET, SEGMENTER, LiveServer, launch_server, running

# Measured on these photos: softmax scores of the ImageNet model differ by at most ~0.02 between the two decoders
# (nvJPEG has no DCT draft; the device path imitates it by block means, see server/device_images.py).
SCORE_TOLERANCE = 0.05


@pytest.fixture(scope="module")
def device_server(store: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    logs = tmp_path_factory.mktemp("device-prepare")
    flags = ("--device-prepare", "on", "--models", f"{IMAGENET},{CLASSIFIER},{SEGMENTER}", "--intra-op-threads", "1",
             "--decode-threads", "2")
    with running({"device": launch_server(store, logs / "device.log", *flags)}) as started:
        yield started["device"]


def encoded(picture: np.ndarray, fmt: str = "JPEG", size: tuple[int, int] | None = None) -> bytes:
    image = Image.fromarray(picture)
    if size:
        image = image.resize(size, Image.BILINEAR)
    out = io.BytesIO()
    image.save(out, format=fmt, **({"quality": 90} if fmt == "JPEG" else {}))
    return out.getvalue()


def predict(client: httpx.Client, body: bytes, model: str = IMAGENET, kind: str = "jpeg") -> dict:
    response = client.post(f"/predict?model={model}&top_k=5&scores=true", content=body,
                           headers={"Content-Type": f"image/{kind}"})
    assert response.status_code == 200, response.text
    return response.json()


def scores(answer: dict) -> np.ndarray:
    return np.array(list(answer["scores"].values()))


PHOTOS = {"chelsea": samples.chelsea(), "coffee": samples.coffee(), "astronaut": samples.astronaut()}


def test_models_say_where_uploads_are_prepared(device_server: LiveServer, client: httpx.Client):
    with device_server.client() as device:
        on_device = {m["name"]: m["device_prepare"] for m in device.get("/models").json()["models"]}
    assert on_device == {IMAGENET: "cpu", CLASSIFIER: "cpu", SEGMENTER: "cpu"}
    assert {m["device_prepare"] for m in client.get("/models").json()["models"]} == {None}  # auto on a CPU: host


@pytest.mark.parametrize("name", list(PHOTOS))
@pytest.mark.parametrize("size", [None, (640, 480)])
def test_real_photos_get_the_same_labels_from_both_decoders(device_server, client, name, size):
    body = encoded(PHOTOS[name], size=size)
    with device_server.client() as device:
        on_device = predict(device, body)
    on_host = predict(client, body)
    assert on_device["labels"][0]["name"] == on_host["labels"][0]["name"]
    assert {label["name"] for label in on_device["labels"][:3]} == {label["name"] for label in on_host["labels"][:3]}
    assert np.abs(scores(on_device) - scores(on_host)).max() < SCORE_TOLERANCE


def test_a_png_takes_the_host_path_and_answers_exactly_like_the_host_server(device_server, client):
    body = encoded(PHOTOS["coffee"], "PNG", (320, 240))
    with device_server.client() as device:
        on_device = predict(device, body, kind="png")
    np.testing.assert_allclose(scores(on_device), scores(predict(client, body, kind="png")), atol=1e-5)


def test_a_corrupt_jpeg_is_a_400_for_that_request_alone_while_its_batch_companions_are_answered(device_server):
    """The device decoder refuses the broken uploads; the host decoder then says why (as for any upload)."""
    good = encoded(PHOTOS["chelsea"], size=(320, 240))
    broken = good[: len(good) // 2]  # a valid header, half the scan
    with device_server.client() as device, ThreadPoolExecutor(6) as pool:
        answers = list(pool.map(lambda body: device.post(f"/predict?model={IMAGENET}", content=body,
                                                         headers={"Content-Type": "image/jpeg"}),
                                [good, broken, good, broken, good, good]))
    assert [a.status_code for a in answers] == [200, 400, 200, 400, 200, 200]
    for bad in (answers[1], answers[3]):
        assert bad.json()["error"] == "invalid_image"
        assert bad.json()["detail"].startswith("the image data is truncated or corrupt")
    assert len({a.json()["labels"][0]["name"] for a in answers if a.status_code == 200}) == 1


def test_concurrent_uploads_of_different_sizes_and_formats_each_get_their_own_answer(device_server):
    bodies = [(encoded(PHOTOS[name], fmt, size), fmt.lower()) for name in PHOTOS
              for fmt, size in (("JPEG", (640, 480)), ("JPEG", (200, 300)), ("PNG", (256, 256)))]
    with device_server.client() as device:
        alone = [scores(predict(device, body, kind=kind)) for body, kind in bodies]
        with ThreadPoolExecutor(len(bodies)) as pool:
            together = list(pool.map(lambda item: scores(predict(device, item[0], kind=item[1])), bodies))
    for single, batched in zip(alone, together, strict=True):
        np.testing.assert_allclose(batched, single, atol=1e-4)  # batch company changes nothing but rounding


def test_segmenting_on_the_device_path_keeps_the_original_size(device_server, client):
    body = encoded(PHOTOS["astronaut"], size=(300, 200))
    with device_server.client() as device:
        on_device = device.post(f"/segment?model={SEGMENTER}&format=json", content=body,
                                headers={"Content-Type": "image/jpeg"})
    on_host = client.post(f"/segment?model={SEGMENTER}&format=json", content=body,
                          headers={"Content-Type": "image/jpeg"})
    assert on_device.status_code == on_host.status_code == 200
    assert on_device.json()["size"] == on_host.json()["size"] == [200, 300]


def test_robustness_copies_made_on_the_device_give_the_host_servers_report(device_server, client):
    body = encoded(PHOTOS["chelsea"], size=(320, 240))
    query = f"/robustness?model={IMAGENET}&mask_ratio=b3&n=8&seed=5"
    with device_server.client() as device:
        on_device = device.post(query, content=body, headers={"Content-Type": "image/jpeg"}).json()
    on_host = client.post(query, content=body, headers={"Content-Type": "image/jpeg"}).json()
    for answer in (on_device, on_host):
        answer.pop("timing")
    assert on_device["masks"] == on_host["masks"]  # the same holes, drawn once per (n, ratio, seed)
    assert on_device["clean"]["labels"] == on_host["clean"]["labels"]
    assert on_device.keys() == on_host.keys()
