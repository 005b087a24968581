"""TorchServe handler for an occlusion-serve entry: the ONNX model plus its manifest, self-contained.

TorchServe copies this file into the .mar, so it imports nothing from the project. It mirrors the
server's preprocessing (EXIF transpose, RGB, stretch resize to the manifest size with bilinear,
/255, mean/std) and answers labels and scores, or a segmentation mask.
"""

from __future__ import annotations

import base64
import io
import json
import os

import numpy as np
import onnxruntime as ort
from PIL import Image, ImageOps
from ts.torch_handler.base_handler import BaseHandler


class OcclusionServeHandler(BaseHandler):
    """Batched ONNX Runtime inference driven by the entry's manifest.json."""

    def initialize(self, context) -> None:
        """Load manifest.json and model.onnx from the unpacked archive."""
        model_dir = context.system_properties["model_dir"]
        with open(os.path.join(model_dir, "manifest.json")) as fh:
            self.entry = json.load(fh)
        wanted = ["CUDAExecutionProvider", "CPUExecutionProvider"]
        providers = [p for p in wanted if p in ort.get_available_providers()]
        options = ort.SessionOptions()
        options.intra_op_num_threads = int(os.environ.get("OCCLUSION_SERVE_THREADS", os.cpu_count() or 1))
        self.session = ort.InferenceSession(os.path.join(model_dir, "model.onnx"), options, providers=providers)
        spec = self.entry["input"]
        self.size = tuple(spec["size"])
        self.mean = np.asarray(spec["mean"], dtype=np.float32).reshape(1, 3, 1, 1)
        self.std = np.asarray(spec["std"], dtype=np.float32).reshape(1, 3, 1, 1)
        self.initialized = True

    def _decode(self, payload) -> Image.Image:
        if isinstance(payload, str):
            payload = base64.b64decode(payload)
        image = Image.open(io.BytesIO(bytes(payload)))
        if image.format == "JPEG":
            image.draft("RGB", (self.size[1], self.size[0]))
        return ImageOps.exif_transpose(image).convert("RGB")

    def preprocess(self, data: list[dict]) -> np.ndarray:
        """Decode each request's image and stack them into one NCHW float32 batch."""
        arrays, self.original_sizes = [], []
        for row in data:
            image = self._decode(row.get("data") or row.get("body") or row.get("file"))
            self.original_sizes.append(image.size)
            resized = image.resize((self.size[1], self.size[0]), Image.BILINEAR)
            arrays.append(np.asarray(resized, dtype=np.float32).transpose(2, 0, 1) / 255.0)
        return (np.stack(arrays) - self.mean) / self.std

    def inference(self, batch: np.ndarray, *args, **kwargs) -> np.ndarray:
        """Run the ONNX model on the whole batch."""
        return self.session.run([self.entry["output"]["name"]], {self.entry["input"]["name"]: batch})[0]

    def postprocess(self, logits: np.ndarray) -> list:
        """One JSON answer per request: labels at or above the threshold (as the server decides), or a PNG class map."""
        names = self.entry["class_names"]
        if self.entry["task"] == "classification":
            scores = 1.0 / (1.0 + np.exp(-logits.astype(np.float64)))
            threshold = self.entry["threshold"]
            return [{"labels": [{"name": names[i], "score": float(s[i])} for i in np.argsort(-s) if s[i] >= threshold],
                     "scores": {n: float(v) for n, v in zip(names, s, strict=True)}} for s in scores]
        answers = []
        for class_map, size in zip(logits.argmax(axis=1).astype(np.uint8), self.original_sizes, strict=True):
            mask = Image.fromarray(class_map, mode="L").resize(size, Image.NEAREST)
            counts = np.bincount(np.asarray(mask).ravel(), minlength=len(names))
            buffer = io.BytesIO()
            mask.save(buffer, format="PNG")
            answers.append({"areas": {names[i]: int(c) for i, c in enumerate(counts) if c},
                            "mask_png": base64.b64encode(buffer.getvalue()).decode("ascii")})
        return answers
