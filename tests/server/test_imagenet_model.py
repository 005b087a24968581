"""The packaged ImageNet MobileNetV2, exported and served: real photos get real answers."""

import io

import httpx
from PIL import Image
from skimage import data as samples

from tests.server.conftest import IMAGENET

CATS = {"tabby", "tiger cat", "Persian cat", "Siamese cat", "Egyptian cat"}


def jpeg(array) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(array).convert("RGB").save(buffer, format="JPEG", quality=92)
    return buffer.getvalue()


def test_chelsea_is_a_cat_and_coffee_is_espresso(client: httpx.Client) -> None:
    cat = client.post(f"/predict?model={IMAGENET}&top_k=3", files={"file": ("chelsea.jpg", jpeg(samples.chelsea()))})
    assert cat.status_code == 200, cat.text
    body = cat.json()
    assert body["activation"] == "softmax" and len(body["labels"]) == 3
    assert body["labels"][0]["name"] in CATS and body["labels"][0]["score"] > 0.5
    assert sum(label["name"] in CATS for label in body["labels"]) >= 2
    cup = client.post(f"/predict?model={IMAGENET}&top_k=1", files={"file": ("coffee.jpg", jpeg(samples.coffee()))})
    assert cup.json()["labels"][0]["name"] == "espresso"


def test_robustness_of_a_real_photo_measures_top1_retention(client: httpx.Client) -> None:
    photo = {"file": ("chelsea.jpg", jpeg(samples.chelsea()))}
    low = client.post(f"/robustness?model={IMAGENET}&mask_ratio=low&n=8&seed=0", files=photo).json()
    high = client.post(f"/robustness?model={IMAGENET}&mask_ratio=high&n=8&seed=0", files=photo).json()
    assert low["reference"]["class"] in CATS and low["reference"]["source"] == "clean_prediction"
    # Hiding 1-10% of a cat photo keeps the answer more often, and costs less probability, than hiding 50-60%.
    assert low["top1_retention"] >= high["top1_retention"]
    assert low["true_class_score_drop"]["mean"] < high["true_class_score_drop"]["mean"]
    assert 0 < high["true_class_score_drop"]["mean"] < 1
