"""Locust users for /predict, /segment and /robustness; every answer is validated, not just its status.

Configuration comes from environment variables so the runner (or a person) can drive it:
    LOADTEST_PAYLOADS   folder of JPEG payloads (built on first use)
    LOADTEST_PAYLOAD    payload name, or "mixed" (default) to rotate through them
    LOADTEST_WEIGHTS    e.g. "predict=8,segment=2,robustness=1" (0 disables a user class)
    LOADTEST_API_KEY    Bearer key, if the server requires one
    LOADTEST_TORCHSERVE_MODEL  model name for the TorchServe user (head-to-head only)
"""

from __future__ import annotations

import io
import itertools
import os
import tempfile

from locust import FastHttpUser, constant, constant_throughput, task
from PIL import Image

from loadtests.payloads import load_payloads

PAYLOAD_DIR = os.environ.get("LOADTEST_PAYLOADS", os.path.join(tempfile.gettempdir(), "occlusion-serve-payloads"))
PAYLOADS = load_payloads(PAYLOAD_DIR)
CHOICE = os.environ.get("LOADTEST_PAYLOAD", "mixed")
if CHOICE != "mixed" and CHOICE not in PAYLOADS:
    raise SystemExit(f"LOADTEST_PAYLOAD={CHOICE!r} is not one of: mixed, {', '.join(sorted(PAYLOADS))}")
# 1080p payloads are heavy to decode; in the mixed profile they are one request in ten.
MIXED = [p for name, p in sorted(PAYLOADS.items()) if not name.endswith("1080p")] * 3 + \
    [p for name, p in sorted(PAYLOADS.items()) if name.endswith("1080p")]


def parse_weights(spec: str) -> dict[str, int]:
    """``"predict=8,segment=2"`` -> ``{"predict": 8, "segment": 2}``; unknown names are an error."""
    weights = {"predict": 8, "segment": 2, "robustness": 1, "torchserve": 0, "paced": 0}
    for item in filter(None, (s.strip() for s in spec.split(","))):
        name, _, value = item.partition("=")
        if name not in weights or not value.isdigit():
            raise SystemExit(f"LOADTEST_WEIGHTS item {item!r}: expected NAME=INT with NAME in {', '.join(weights)}")
        weights[name] = int(value)
    return weights


WEIGHTS = parse_weights(os.environ.get("LOADTEST_WEIGHTS", ""))
HEADERS = {"Authorization": f"Bearer {os.environ['LOADTEST_API_KEY']}"} if os.environ.get("LOADTEST_API_KEY") else {}


class ImageUser(FastHttpUser):
    """Shared payload rotation; subclasses post one image per task as a raw JPEG body."""

    abstract = True
    wait_time = constant(0)

    def on_start(self) -> None:
        """Each user rotates through the payloads from its own offset."""
        self.images = itertools.cycle([PAYLOADS[CHOICE]] if CHOICE != "mixed" else MIXED)

    def post_image(self, path: str, name: str):
        """POST the next payload; returns the response context for validation."""
        return self.client.post(path, data=next(self.images), name=name, catch_response=True,
                                headers={"Content-Type": "image/jpeg", **HEADERS})


def fail_unless(response, ok: bool, why: str) -> None:
    """Mark a response failed with a reason unless ``ok``."""
    if ok:
        response.success()
    else:
        response.failure(f"{why}: {response.text[:200] if response.text else response.status_code}")


class PredictUser(ImageUser):
    """``POST /predict``: labels must be a list of {name, score} with scores in [0, 1]."""

    weight = WEIGHTS["predict"]

    @task
    def predict(self) -> None:
        with self.post_image("/predict", "/predict") as response:
            body = response.json() if response.status_code == 200 else {}
            labels = body.get("labels")
            ok = isinstance(labels, list) and "model" in body and all(
                set(label) >= {"name", "score"} and 0.0 <= label["score"] <= 1.0 for label in labels)
            fail_unless(response, ok, f"bad /predict answer ({response.status_code})")


class SegmentUser(ImageUser):
    """``POST /segment``: a palette PNG that decodes; every tenth request asks for the JSON summary."""

    weight = WEIGHTS["segment"]

    @task(9)
    def segment_png(self) -> None:
        with self.post_image("/segment", "/segment") as response:
            try:
                ok = response.status_code == 200 and Image.open(io.BytesIO(response.content)).mode == "P"
            except Exception:
                ok = False
            fail_unless(response, ok, f"bad /segment PNG ({response.status_code})")

    @task(1)
    def segment_json(self) -> None:
        with self.post_image("/segment?format=json", "/segment?format=json") as response:
            body = response.json() if response.status_code == 200 else {}
            ok = isinstance(body.get("classes"), list) and len(body.get("size", [])) == 2
            fail_unless(response, ok, f"bad /segment JSON ({response.status_code})")


# The headline figure of a /robustness answer, by kind of model: any one of them makes the answer complete.
ROBUSTNESS_HEADLINES = ("retention", "top1_retention", "miou_foreground")


class RobustnessUser(ImageUser):
    """``POST /robustness?mask_ratio=high&n=8``: a headline figure for the model's kind and a hole ratio per mask."""

    weight = WEIGHTS["robustness"]

    @task
    def robustness(self) -> None:
        with self.post_image("/robustness?mask_ratio=high&n=8&seed=0", "/robustness") as response:
            body = response.json() if response.status_code == 200 else {}
            ratios = [m.get("hole_ratio", 0) for m in body.get("masks", [])]
            ok = len(ratios) == 8 and all(0.5 < r <= 0.6 for r in ratios) and any(
                key in body for key in ROBUSTNESS_HEADLINES)
            fail_unless(response, ok, f"bad /robustness answer ({response.status_code})")


class TorchServeUser(ImageUser):
    """TorchServe's ``POST /predictions/{model}`` with the exported .mar (head-to-head only)."""

    weight = WEIGHTS["torchserve"]

    @task
    def predict(self) -> None:
        model = os.environ.get("LOADTEST_TORCHSERVE_MODEL", "model")
        with self.post_image(f"/predictions/{model}", "/predictions") as response:
            body = response.json() if response.status_code == 200 else {}
            ok = isinstance(body.get("labels"), list)
            fail_unless(response, ok, f"bad TorchServe answer ({response.status_code})")


class PacedPredictUser(ImageUser):
    """Open-loop ``POST /predict`` at ``LOADTEST_RATE`` requests/s per user (overload and soak runs).

    Accepted answers are reported as "/predict (accepted)", immediate 503 sheds (with Retry-After)
    as "/predict (shed 503)", so their latencies are measured apart; anything else is a failure.
    """

    weight = WEIGHTS["paced"]
    wait_time = constant_throughput(float(os.environ.get("LOADTEST_RATE", "1")))

    @task
    def predict(self) -> None:
        with self.post_image("/predict", "/predict") as response:
            if response.status_code == 503 and response.headers.get("Retry-After"):
                response.request_meta["name"] = "/predict (shed 503)"
                response.success()
                return
            response.request_meta["name"] = "/predict (accepted)"
            body = response.json() if response.status_code == 200 else {}
            fail_unless(response, isinstance(body.get("labels"), list), f"bad /predict answer ({response.status_code})")
