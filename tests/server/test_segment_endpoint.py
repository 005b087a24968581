"""POST /segment on a live server: the class map at the original size, JSON statistics and the overlay."""

from __future__ import annotations

import io

import numpy as np
from PIL import Image
from scipy import ndimage

from tests.server.conftest import CLASSIFIER, SEGMENTER
from tests.server.oracle import jpeg_bytes, model_input, png_bytes, random_rgb, run_exported

EIGHT = np.ones((3, 3), dtype=bool)


def expected_map(store, image: Image.Image) -> np.ndarray:
    """Argmax of the exported segmenter, resized NEAREST to the image size."""
    logits = run_exported(store, SEGMENTER, model_input(store, SEGMENTER, image)[None])[0]
    classes = np.argmax(logits, axis=0).astype(np.uint8)
    return np.asarray(Image.fromarray(classes).resize(image.size, Image.NEAREST))


def test_png_class_map_at_original_size_equals_the_exported_model(client, store):
    pixels = random_rgb(90, 130, seed=11)
    response = client.post("/segment", params={"model": SEGMENTER}, files={"file": ("a.png", png_bytes(pixels))})
    assert response.status_code == 200
    assert response.headers["content-type"] == "image/png"
    assert response.headers["x-image-size"] == "130x90"
    assert "inference;dur=" in response.headers["server-timing"]
    mask = Image.open(io.BytesIO(response.content))
    assert mask.mode == "P" and mask.size == (130, 90)
    np.testing.assert_array_equal(np.asarray(mask), expected_map(store, Image.fromarray(pixels)))


def test_default_model_of_segment_is_the_segmenter(client):
    response = client.post("/segment", content=png_bytes(random_rgb(20, 30)), headers={"Content-Type": "image/png"})
    assert response.status_code == 200 and response.headers["x-model"] == SEGMENTER


def test_json_areas_and_instances_match_connected_components(client, store):
    pixels = random_rgb(70, 50, seed=12)
    answer = client.post("/segment?format=json", content=png_bytes(pixels),
                         headers={"Content-Type": "image/png"}).json()
    expected = expected_map(store, Image.fromarray(pixels))
    assert answer["model"] == SEGMENTER and answer["size"] == [70, 50]
    ids = [entry["id"] for entry in answer["classes"]]
    assert ids == sorted(np.unique(expected).tolist())
    for entry in answer["classes"]:
        region = expected == entry["id"]
        blobs, count = ndimage.label(region, structure=EIGHT)
        areas = np.bincount(blobs.ravel())[1:]
        assert entry["pixels"] == int(region.sum())
        assert entry["fraction"] == round(region.sum() / region.size, 6)
        assert entry["instances"]["count"] == count
        assert entry["instances"]["S"] == int((areas < 32 * 32).sum())
        assert entry["instances"]["S"] + entry["instances"]["M"] + entry["instances"]["L"] == count
    assert sum(entry["pixels"] for entry in answer["classes"]) == 70 * 50


def test_overlay_blends_class_colours_over_the_image(client, store):
    pixels = random_rgb(40, 60, seed=13)
    response = client.post("/segment?format=overlay&alpha=1", content=png_bytes(pixels),
                           headers={"Content-Type": "image/png"})
    overlay = np.asarray(Image.open(io.BytesIO(response.content)))
    assert overlay.shape == (40, 60, 3)
    classes = expected_map(store, Image.fromarray(pixels))
    background = classes == 0
    np.testing.assert_array_equal(overlay[background], pixels[background])  # background left clear
    if (~background).any():  # with alpha=1 the other pixels are exactly their class colour
        palette = Image.open(io.BytesIO(client.post("/segment", content=png_bytes(pixels),
                                                    headers={"Content-Type": "image/png"}).content)).getpalette()
        colours = np.asarray(palette, dtype=np.uint8).reshape(-1, 3)
        np.testing.assert_array_equal(overlay[~background], colours[classes[~background]])


def test_exif_rotated_jpeg_gives_a_map_at_the_displayed_size(client):
    tagged = jpeg_bytes(random_rgb(30, 80, seed=14), orientation=8)
    response = client.post("/segment", content=tagged, headers={"Content-Type": "image/jpeg"})
    mask = Image.open(io.BytesIO(response.content))
    assert mask.size == (30, 80)


def test_bad_format_is_422_listing_the_formats(client):
    response = client.post("/segment?format=gif", content=b"x", headers={"Content-Type": "image/png"})
    assert response.status_code == 422
    detail = response.json()["detail"]
    assert "'png'" in detail and "'json'" in detail and "'overlay'" in detail


def test_classifier_on_segment_is_400(client):
    response = client.post(f"/segment?model={CLASSIFIER}", content=png_bytes(random_rgb(16, 16)),
                           headers={"Content-Type": "image/png"})
    assert response.status_code == 400 and response.json()["error"] == "wrong_task"
