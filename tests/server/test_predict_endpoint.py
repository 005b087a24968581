"""POST /predict on a live server: answers equal to the exported model run directly, and every bad input."""

from __future__ import annotations

import io
import socket

import numpy as np
import pytest
from PIL import Image

from tests.server.conftest import CLASSIFIER, MAX_BODY_BYTES, MAX_PIXELS, SEGMENTER, SOFTMAX_CLASSIFIER
from tests.server.oracle import (
    bomb_png,
    jpeg_bytes,
    model_input,
    png_bytes,
    random_rgb,
    run_exported,
    sigmoid,
    softmax,
)

THRESHOLD = 0.5


def expected_scores(store, image: Image.Image) -> np.ndarray:
    """Sigmoid scores of the exported classifier on the reference preprocessing of ``image``."""
    return sigmoid(run_exported(store, CLASSIFIER, model_input(store, CLASSIFIER, image)[None])[0])


def assert_matches(answer: dict, expected: np.ndarray, class_names: list[str]) -> None:
    got = np.array([answer["scores"][name] for name in class_names])
    np.testing.assert_allclose(got, expected, atol=2e-5)
    wanted = [class_names[i] for i in np.argsort(-expected, kind="stable") if expected[i] >= THRESHOLD]
    assert [label["name"] for label in answer["labels"]] == wanted


@pytest.fixture(scope="module")
def class_names(client) -> list[str]:
    models = client.get("/models").json()["models"]
    return next(m for m in models if m["name"] == CLASSIFIER)["class_names"]


def test_predict_multipart_png_equals_the_exported_model(client, store, class_names):
    pixels = random_rgb(200, 300, seed=1)
    response = client.post("/predict", params={"scores": "true"}, files={"file": ("a.png", png_bytes(pixels))})
    assert response.status_code == 200
    answer = response.json()
    assert answer["model"] == CLASSIFIER and answer["threshold"] == THRESHOLD and answer["activation"] == "sigmoid"
    assert list(answer) == ["model", "labels", "scores", "threshold", "activation", "timing"]
    assert set(answer["timing"]) == {"decode_ms", "queue_ms", "inference_ms", "total_ms", "batch_size"}
    assert_matches(answer, expected_scores(store, Image.fromarray(pixels)), class_names)


def test_predict_raw_jpeg_body_equals_the_exported_model(client, store, class_names):
    data = jpeg_bytes(random_rgb(150, 120, seed=2))
    response = client.post("/predict?scores=true", content=data, headers={"Content-Type": "image/jpeg"})
    assert response.status_code == 200
    assert_matches(response.json(), expected_scores(store, Image.open(io.BytesIO(data))), class_names)


def test_top_k_and_threshold_shape_the_label_list(client, class_names):
    data = png_bytes(random_rgb(64, 64, seed=3))
    answer = client.post("/predict?threshold=0&top_k=3&scores=true", content=data,
                         headers={"Content-Type": "image/png"}).json()
    top = sorted(answer["scores"].items(), key=lambda kv: -kv[1])[:3]
    assert [(label["name"], label["score"]) for label in answer["labels"]] == top
    assert answer["threshold"] == 0.0
    plain = client.post("/predict", content=data, headers={"Content-Type": "image/png"}).json()
    assert "scores" not in plain


def softmax_oracle(store, data: bytes) -> np.ndarray:
    """Softmax probabilities of the exported single-label classifier, run directly."""
    image = Image.open(io.BytesIO(data))
    return softmax(run_exported(store, SOFTMAX_CLASSIFIER, model_input(store, SOFTMAX_CLASSIFIER, image)[None])[0])


def test_softmax_model_returns_the_five_most_probable_classes(client, store, class_names):
    data = png_bytes(random_rgb(90, 70, seed=8))
    response = client.post("/predict", params={"model": SOFTMAX_CLASSIFIER, "scores": "true"}, content=data,
                           headers={"Content-Type": "image/png"})
    assert response.status_code == 200, response.text
    answer = response.json()
    expected = softmax_oracle(store, data)
    order = np.argsort(-expected, kind="stable")
    assert answer["activation"] == "softmax" and answer["threshold"] is None
    assert [label["name"] for label in answer["labels"]] == [class_names[i] for i in order[:5]]
    np.testing.assert_allclose([label["score"] for label in answer["labels"]], expected[order[:5]], atol=2e-6)
    scores = np.array([answer["scores"][name] for name in class_names])
    np.testing.assert_allclose(scores, expected, atol=2e-6)
    assert scores.sum() == pytest.approx(1.0, abs=1e-5)  # one distribution over the classes, not 10 sigmoids


def test_softmax_top_k_and_an_explicit_threshold(client, store, class_names):
    data = png_bytes(random_rgb(64, 64, seed=9))
    expected = softmax_oracle(store, data)
    order = np.argsort(-expected, kind="stable")

    def names(**params) -> list[str]:
        answer = client.post("/predict", params={"model": SOFTMAX_CLASSIFIER, **params}, content=data,
                             headers={"Content-Type": "image/png"}).json()
        return [label["name"] for label in answer["labels"]]

    assert names(top_k=3) == [class_names[i] for i in order[:3]]
    assert names(top_k=10) == [class_names[i] for i in order]
    cut = float((expected[order[1]] + expected[order[2]]) / 2)  # between the 2nd and the 3rd probability
    assert names(threshold=cut) == [class_names[i] for i in order[:2]]
    assert names(threshold=1.0) == []


def test_exif_orientation_is_applied_before_the_model(client, store, class_names):
    pixels = random_rgb(48, 96, seed=4)  # landscape pixels, tagged "rotate 90 clockwise to display"
    tagged = jpeg_bytes(pixels, orientation=6)
    plain = jpeg_bytes(pixels)
    upright = Image.open(io.BytesIO(plain)).transpose(Image.Transpose.ROTATE_270)  # what a viewer shows
    assert upright.size == (48, 96)
    response = client.post("/predict?scores=true", content=tagged, headers={"Content-Type": "image/jpeg"})
    assert_matches(response.json(), expected_scores(store, upright), class_names)


def test_sixteen_bit_png_is_read_by_its_high_byte(client):
    grey = random_rgb(40, 50, seed=5)[..., 0]
    sixteen = png_bytes(grey.astype(np.uint16) * 257)
    assert Image.open(io.BytesIO(sixteen)).mode == "I;16"
    eight = png_bytes(np.repeat(grey[..., None], 3, axis=2))
    a = client.post("/predict?scores=true", content=sixteen, headers={"Content-Type": "image/png"}).json()
    b = client.post("/predict?scores=true", content=eight, headers={"Content-Type": "image/png"}).json()
    np.testing.assert_allclose(list(a["scores"].values()), list(b["scores"].values()), atol=2e-5)


@pytest.mark.parametrize("mode", ["RGBA", "LA", "P", "L", "CMYK"])
def test_other_modes_are_accepted(client, mode):
    image = Image.fromarray(random_rgb(32, 32, seed=6)).convert(mode)
    buffer = io.BytesIO()
    image.save(buffer, format="JPEG" if mode == "CMYK" else "PNG")
    response = client.post("/predict", content=buffer.getvalue(), headers={"Content-Type": "image/png"})
    assert response.status_code == 200, response.text
    assert response.json()["model"] == CLASSIFIER


def error_of(response, status: int, code: str) -> str:
    assert response.status_code == status, response.text
    body = response.json()
    assert set(body) >= {"error", "detail"} and body["error"] == code
    assert "Traceback" not in response.text
    return body["detail"]


def test_empty_body_is_400(client):
    error_of(client.post("/predict", content=b"", headers={"Content-Type": "image/jpeg"}), 400, "empty_body")
    error_of(client.post("/predict", files={"file": ("a.jpg", b"")}), 400, "empty_body")


def test_non_image_bytes_are_400(client):
    detail = error_of(client.post("/predict", files={"file": ("a.jpg", b"definitely not a picture")}),
                      400, "not_an_image")
    assert "24 bytes" in detail


def test_truncated_jpeg_is_400(client):
    data = jpeg_bytes(random_rgb(200, 200, seed=7))
    detail = error_of(client.post("/predict", content=data[: len(data) // 2], headers={"Content-Type": "image/jpeg"}),
                      400, "invalid_image")
    assert "truncated" in detail


def test_wrong_content_type_is_415(client):
    detail = error_of(client.post("/predict", content=b"abc", headers={"Content-Type": "text/plain"}),
                      415, "unsupported_media_type")
    assert "text/plain" in detail


def test_multipart_without_file_field_is_400(client):
    detail = error_of(client.post("/predict", files={"image": ("a.png", b"x")}), 400, "missing_file")
    assert "image" in detail


def test_body_over_the_limit_is_413_from_content_length(client):
    detail = error_of(client.post("/predict", content=b"\0" * (MAX_BODY_BYTES + 1),
                                  headers={"Content-Type": "image/png"}), 413, "payload_too_large")
    assert f"{MAX_BODY_BYTES:,}" in detail


def read_response(sock: socket.socket) -> str:
    """One HTTP response (headers and a Content-Length body) read from a raw socket."""
    data = b""
    while b"\r\n\r\n" not in data:
        data += sock.recv(4096)
    head, _, body = data.partition(b"\r\n\r\n")
    lines = head.split(b"\r\n")
    length = int(next(line.split(b":")[1] for line in lines if line.lower().startswith(b"content-length")))
    while len(body) < length:
        body += sock.recv(4096)
    return (head + b"\r\n\r\n" + body).decode()


def test_body_over_the_limit_is_refused_while_streaming(server):
    """Chunked upload without Content-Length: the 413 arrives before the client has finished sending."""
    port = int(server.url.rsplit(":", 1)[1])
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(b"POST /predict HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: image/png\r\n"
                     b"Transfer-Encoding: chunked\r\n\r\n")
        chunk = 64 * 1024
        for _ in range(MAX_BODY_BYTES // chunk + 1):
            sock.sendall(b"%x\r\n" % chunk + b"\0" * chunk + b"\r\n")
        # The body is not finished (no terminating 0-chunk): only a server that stops reading can answer now.
        reply = read_response(sock)
    assert reply.startswith("HTTP/1.1 413")
    assert '"error":"payload_too_large"' in reply and "still streaming" in reply


def test_decompression_bomb_header_is_413_before_decoding(client):
    bomb = bomb_png(8000, 8000)  # 64 MP declared in 60-odd bytes
    assert len(bomb) < 100
    detail = error_of(client.post("/predict", content=bomb, headers={"Content-Type": "image/png"}),
                      413, "image_too_large")
    assert "8000x8000" in detail and f"{MAX_PIXELS:,}" in detail
    huge = bomb_png(100_000, 100_000)  # past Pillow's own guard too
    error_of(client.post("/predict", content=huge, headers={"Content-Type": "image/png"}), 413, "image_too_large")


def test_bad_query_parameter_is_422_with_allowed_values(client):
    data = png_bytes(random_rgb(16, 16))
    detail = error_of(client.post("/predict?top_k=0", content=data, headers={"Content-Type": "image/png"}),
                      422, "invalid_parameter")
    assert "top_k" in detail and ">= 1" in detail
    detail = error_of(client.post("/predict?threshold=abc", content=data, headers={"Content-Type": "image/png"}),
                      422, "invalid_parameter")
    assert "threshold" in detail and "'abc'" in detail


def test_unknown_model_is_404_listing_served_models(client):
    detail = error_of(client.post("/predict?model=nope", content=b"x", headers={"Content-Type": "image/png"}),
                      404, "unknown_model")
    assert CLASSIFIER in detail and SEGMENTER in detail


def test_segmenter_on_predict_is_400(client):
    detail = error_of(client.post(f"/predict?model={SEGMENTER}", content=png_bytes(random_rgb(16, 16)),
                                  headers={"Content-Type": "image/png"}), 400, "wrong_task")
    assert "segmentation" in detail and CLASSIFIER in detail


def test_unknown_route_and_method_are_json(client):
    error_of(client.get("/nowhere"), 404, "not_found")
    error_of(client.get("/predict"), 405, "method_not_allowed")


def test_a_uri_over_8_kib_is_414_before_any_route(client):
    data = png_bytes(random_rgb(16, 16))
    response = client.post("/predict", params={"top_k": "1" * 9_000}, content=data,
                           headers={"Content-Type": "image/png"})
    detail = error_of(response, 414, "uri_too_long")
    assert "the limit is 8,192 bytes" in detail and "1111" not in detail
    long_path = client.get("/" + "p" * 9_000)  # the path counts too
    assert "the limit is 8,192 bytes" in error_of(long_path, 414, "uri_too_long")
    just_under = client.post("/predict", params={"scores": "true", "pad": "x" * 8_000}, content=data,
                             headers={"Content-Type": "image/png"})
    assert just_under.status_code == 200, just_under.text  # unknown parameters are ignored; the URI fits


@pytest.mark.parametrize(("route", "name_length", "status", "code"), [
    ("/predict", 65, 422, "invalid_parameter"), ("/predict", 64, 404, "unknown_model"),
    ("/segment", 65, 422, "invalid_parameter"), ("/segment", 64, 404, "unknown_model"),
])
def test_a_model_name_longer_than_the_store_allows_is_422(client, route, name_length, status, code):
    response = client.post(route, params={"model": "m" * name_length}, content=png_bytes(random_rgb(16, 16)),
                           headers={"Content-Type": "image/png"})
    detail = error_of(response, status, code)
    if status == 422:
        assert detail.startswith("model:") and "at most 64 characters" in detail
