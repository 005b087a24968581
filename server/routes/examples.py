"""Example bodies shown in the OpenAPI documentation (shapes of real answers from a 10-class demo model)."""

from __future__ import annotations

from typing import Any

from common.kinds import Activation, Task
from server.shapes.common import ErrorBody, Timing
from server.shapes.inference import PredictResponse, SegmentResponse
from server.shapes.kserve import RepositoryRow, V2InferResponse, V2ModelMetadata
from server.shapes.robustness import MultiLabelRobustness, SegmenterRobustness, SingleLabelRobustness
from server.shapes.schema import json_content
from server.shapes.status import Health, ModelsResponse, Readiness

TIMING: Timing = {"decode_ms": 1.21, "queue_ms": 0.35, "inference_ms": 11.8, "total_ms": 14.9, "batch_size": 1}

PREDICT_EXAMPLE: PredictResponse = {
    "model": "r18",
    "labels": [{"name": "circle", "score": 0.912345}, {"name": "star", "score": 0.633}],
    "threshold": 0.5,
    "activation": Activation.SIGMOID,
    "timing": TIMING,
}

# A single-label (softmax) classifier: the top_k (default 5) most probable classes; no threshold unless given.
PREDICT_SOFTMAX_EXAMPLE: PredictResponse = {
    "model": "resnet50-imagenet",
    "labels": [{"name": "tabby", "score": 0.612}, {"name": "tiger_cat", "score": 0.201},
               {"name": "Egyptian_cat", "score": 0.094}, {"name": "lynx", "score": 0.011},
               {"name": "tiger", "score": 0.004}],
    "threshold": None,
    "activation": Activation.SOFTMAX,
    "timing": TIMING,
}

SEGMENT_JSON_EXAMPLE: SegmentResponse = {
    "model": "seg",
    "size": [480, 640],
    "classes": [
        {"id": 0, "name": "background", "pixels": 250000, "fraction": 0.813802,
         "instances": {"count": 1, "S": 0, "M": 0, "L": 1}},
        {"id": 3, "name": "star", "pixels": 57200, "fraction": 0.186198,
         "instances": {"count": 3, "S": 1, "M": 1, "L": 1}},
    ],
    "timing": TIMING,
}

ROBUSTNESS_EXAMPLE: MultiLabelRobustness = {
    "model": "r18", "task": Task.CLASSIFICATION, "activation": Activation.SIGMOID,
    "mask_ratio": {"spec": "high", "range": [0.5, 0.6]}, "corruption": None, "n": 2, "seed": 0, "threshold": 0.5,
    "precision": "fp32",
    "clean": {"labels": [{"name": "circle", "score": 0.91}], "scores": {"circle": 0.91, "square": 0.02}},
    "reference": {"source": "labels", "classes": ["circle"]},
    "warning": None,
    "hole_ratio": {"mean": 0.55, "min": 0.52, "max": 0.58},
    "retention": {"circle": 0.5},
    "mean_retention": 0.5,
    "score_drop_present": {"mean": 0.27, "per_class": {"circle": 0.27}},
    "false_positives": {"mean_per_mask": 0.5, "gained": {"square": 1}, "mean_score_rise_absent": 0.3},
    "jaccard": 0.25, "flips": 3,
    "clean_correctness": {"hits": ["circle"], "misses": [], "false_positives": []},
    "masks": [
        {"index": 0, "hole_ratio": 0.52, "labels": ["circle"], "lost": [], "gained": [], "flips": 0,
         "jaccard": 1.0, "score_drop_present": 0.01},
        {"index": 1, "hole_ratio": 0.58, "labels": ["square"], "lost": ["circle"], "gained": ["square"], "flips": 2,
         "jaccard": 0.0, "score_drop_present": 0.53},
    ],
    "timing": {**TIMING, "batch_size": 3},
}

# The other two report shapes (masks lists shortened to one entry).
ROBUSTNESS_SOFTMAX_EXAMPLE: SingleLabelRobustness = {
    "model": "resnet50-imagenet", "task": Task.CLASSIFICATION, "activation": Activation.SOFTMAX,
    "mask_ratio": {"spec": "high", "range": [0.5, 0.6]}, "corruption": None, "n": 2, "seed": 0, "threshold": None,
    "precision": "fp32",
    "clean": {"top1": {"name": "tabby", "score": 0.61},
              "labels": [{"name": "tabby", "score": 0.61}, {"name": "tiger_cat", "score": 0.2}]},
    "reference": {"source": "clean_prediction", "class": "tabby", "score": 0.61},
    "warning": None,
    "hole_ratio": {"mean": 0.55, "min": 0.52, "max": 0.58},
    "top1_retention": 0.5,
    "true_class_score_drop": {"mean": 0.25, "per_mask": [0.05, 0.45]},
    "top1_changes": 1,
    "masks": [{"index": 0, "hole_ratio": 0.52, "top1": {"name": "tabby", "score": 0.56}, "true_class_score": 0.56,
               "true_class_score_drop": 0.05}],
    "timing": {**TIMING, "batch_size": 3},
}

ROBUSTNESS_SEGMENTER_EXAMPLE: SegmenterRobustness = {
    "model": "seg", "task": Task.SEGMENTATION, "activation": Activation.SOFTMAX,
    "mask_ratio": {"spec": "medium", "range": [0.2, 0.4]}, "corruption": None, "n": 2, "seed": 0, "threshold": None,
    "precision": "fp32",
    "clean": {"classes": [{"id": 0, "name": "background", "fraction": 0.8}, {"id": 4, "name": "star",
                                                                              "fraction": 0.2}]},
    "warning": None,
    "hole_ratio": {"mean": 0.3, "min": 0.25, "max": 0.35},
    "per_class_iou": {"background": 0.95, "star": 0.71},
    "miou_foreground": 0.71,
    "inside_holes": {"miou_foreground": 0.4, "pixel_agreement": 0.83},
    "outside_holes": {"miou_foreground": 0.88, "pixel_agreement": 0.97},
    "truth": {"void_fraction": 0.04,
              "clean": {"pixel_accuracy": 0.93, "miou": 0.8, "per_class_iou": {"background": 0.9, "star": 0.7}},
              "masked": {"pixel_accuracy": 0.88, "miou": 0.66, "per_class_iou": {"background": 0.87, "star": 0.45}},
              "miou_drop": 0.14},
    "masks": [{"index": 0, "hole_ratio": 0.25, "miou_foreground": 0.75, "miou_foreground_inside": 0.45,
               "miou_foreground_outside": 0.9, "changed_pixels": 812,
               "truth": {"pixel_accuracy": 0.9, "miou": 0.7}}],
    "timing": {**TIMING, "batch_size": 3},
}

# explain=true (the masks list shortened to one entry); png_base64 is cut short.
ROBUSTNESS_EXPLAIN_EXAMPLE: MultiLabelRobustness = {
    "model": "demo-classifier", "task": Task.CLASSIFICATION, "activation": Activation.SIGMOID,
    "mask_ratio": {"spec": "b3", "range": [0.2, 0.3]}, "corruption": None, "n": 32, "seed": 0, "threshold": 0.5,
    "precision": "fp32",
    "clean": {"labels": [{"name": "circle", "score": 0.97}], "scores": {"circle": 0.97, "square": 0.01}},
    "reference": {"source": "clean_prediction", "classes": ["circle"]},
    "warning": None,
    "hole_ratio": {"mean": 0.25, "min": 0.2, "max": 0.3},
    "retention": {"circle": 0.84},
    "mean_retention": 0.84,
    "score_drop_present": {"mean": 0.12, "per_class": {"circle": 0.12}},
    "false_positives": {"mean_per_mask": 0.03, "gained": {"square": 1}, "mean_score_rise_absent": 0.02},
    "jaccard": 0.82, "flips": 6,
    "masks": [{"index": 0, "hole_ratio": 0.24, "labels": ["circle"], "lost": [], "gained": [], "flips": 0,
               "jaccard": 1.0, "score_drop_present": 0.04}],
    "saliency": [{"label": "circle", "score": 0.97, "peak": {"x": 52, "y": 101},
                  "png_base64": "iVBORw0KGgoAAAANSUhEUgAAAKAAAACgCAIAAAAErfB6AAA..."}],
    "timing": {**TIMING, "batch_size": 33},
}

# corruption=fog&severity=3 without mask_ratio: n corrupted copies, no masks (every hole_ratio 0).
ROBUSTNESS_CORRUPTION_EXAMPLE: MultiLabelRobustness = {
    "model": "r18", "task": Task.CLASSIFICATION, "activation": Activation.SIGMOID,
    "mask_ratio": None, "corruption": {"name": "fog", "severity": 3}, "n": 2, "seed": 0, "threshold": 0.5,
    "precision": "fp32",
    "clean": {"labels": [{"name": "circle", "score": 0.91}], "scores": {"circle": 0.91, "square": 0.02}},
    "reference": {"source": "clean_prediction", "classes": ["circle"]},
    "warning": None,
    "hole_ratio": {"mean": 0.0, "min": 0.0, "max": 0.0},
    "retention": {"circle": 0.5},
    "mean_retention": 0.5,
    "score_drop_present": {"mean": 0.31, "per_class": {"circle": 0.31}},
    "false_positives": {"mean_per_mask": 0.0, "gained": {}, "mean_score_rise_absent": 0.01},
    "jaccard": 0.5, "flips": 1,
    "masks": [
        {"index": 0, "hole_ratio": 0.0, "labels": ["circle"], "lost": [], "gained": [], "flips": 0,
         "jaccard": 1.0, "score_drop_present": 0.12},
        {"index": 1, "hole_ratio": 0.0, "labels": [], "lost": ["circle"], "gained": [], "flips": 1,
         "jaccard": 0.0, "score_drop_present": 0.5},
    ],
    "timing": {**TIMING, "batch_size": 3},
}

_MEASURED_ON = {"cpu": "AMD EPYC 7763 64-Core Processor", "isa": ["avx2"], "onnxruntime": "1.31.1"}

# settings is every server setting but the API key (shortened here).
MODELS_EXAMPLE: ModelsResponse = {
    "models": [{
        "name": "r18", "version": "1", "task": Task.CLASSIFICATION, "state": "ready",
        "class_names": ["circle", "square"], "activation": Activation.SIGMOID, "kind": "multi-label classifier",
        "threshold": 0.22,
        "threshold_source": "chosen on the validation split (150 images) to maximise OF1: 55.3 there, 34.9 at 0.5",
        "input": {"name": "images", "size": [128, 128], "mean": [0, 0, 0], "std": [1, 1, 1]},
        "output": {"name": "logits", "kind": "class_logits", "activation": Activation.SIGMOID},
        "architecture": {"preset": "resnet18-csra-128", "arch": "resnet18_csra", "heads": 1, "lam": 0.1},
        "precision": "int8",
        "files": ["model.int8.onnx", "model.onnx"],
        "variants": [{"precision": "int8", "file": "model.int8.onnx", "status": "accepted", "reason": "",
                      "measures": {"mAP_delta": -0.3, "masked_mAP_delta": -0.4, "speedup": 2.41},
                      "measured_on": _MEASURED_ON}],
        "alternates": [],
        "version_policy": {"latest": {"num_versions": 1}},
        "loaded_at": 1767225600.0,
        "backend": "onnx", "provider": "CPUExecutionProvider", "providers": ["CPUExecutionProvider"],
        "batching": {"max_batch": 8, "max_delay_ms": 0.0, "queue_size": 64, "workers": 1, "timeout_ms": 30000.0,
                     "buckets": []},
        "served": {"requested": "auto", "served": "int8", "file": "model.int8.onnx",
                   "reason": "auto: guard-accepted int8 variant for CPUExecutionProvider, 2.41x fp32",
                   "status": "accepted",
                   "measures": {"mAP_fp32": 61.2, "mAP": 60.9, "mAP_delta": -0.3, "masked_mAP_delta": -0.4,
                                "top_label_agreement": 0.93, "images_per_s": 1420.0, "speedup": 2.41},
                   "measured_on": _MEASURED_ON},
        "device_prepare": None,
    }],
    "defaults": {"classification": "r18", "segmentation": None},
    "settings": {"store": "model_store", "backend": "onnx", "max_batch": 8, "max_delay_ms": 0.0, "queue_size": 64,
                 "timeout_ms": 30000.0, "api_key_required": False},
}

HEALTH_EXAMPLE: Health = {"status": "ok"}

READY_EXAMPLE: Readiness = {"ready": True, "models": {"r18": "ready"}}

V2_METADATA: V2ModelMetadata = {
    "name": "r18", "versions": ["1"], "platform": "onnxruntime_onnx",
    "inputs": [{"name": "images", "datatype": "FP32", "shape": [-1, 3, 128, 128]}],
    "outputs": [{"name": "logits", "datatype": "FP32", "shape": [-1, 10]}],
    "parameters": {"task": Task.CLASSIFICATION, "activation": Activation.SIGMOID, "output_kind": "class_logits"},
}

REPOSITORY_INDEX: list[RepositoryRow] = [
    {"name": "r18", "version": "2", "state": "READY", "reason": ""},
    {"name": "seg", "version": "", "state": "UNAVAILABLE", "reason": "unloaded"},
]

V2_INFER_REQUEST: dict[str, Any] = {
    "id": "42",
    "inputs": [{"name": "images", "shape": [1, 3, 128, 128], "datatype": "FP32",
                "data": [0.5, 0.5, "... 49152 values in row-major order ..."]}],
}

# The v2 inference request as this server reads it (KServe v2 "Inference Request JSON Object"; FP32 inputs only).
# /openapi.json carries it, so clients and fuzzers see the shape of a valid body.
_PARAMETERS = {"type": "object", "description": "parameters of the v2 spec, e.g. binary_data_output (an object)",
               "additionalProperties": {"type": ["string", "number", "boolean"]}}
V2_INFER_REQUEST_SCHEMA: dict[str, Any] = {
    "type": "object", "title": "V2InferenceRequest", "required": ["inputs"],
    "properties": {
        "id": {"type": "string"},
        "parameters": _PARAMETERS,
        "inputs": {"type": "array", "minItems": 1, "items": {
            "type": "object", "required": ["name", "shape", "datatype"],
            "properties": {
                "name": {"type": "string"},
                "shape": {"type": "array", "items": {"type": "integer", "minimum": 0}},
                "datatype": {"type": "string", "enum": ["FP32"]},
                "parameters": _PARAMETERS,
                "data": {"type": "array", "description": "flat, row-major; may be nested as the shape says",
                         "items": {"anyOf": [{"type": "number"}, {"type": "array"}]}},
            }}},
        "outputs": {"type": "array", "items": {
            "type": "object", "required": ["name"],
            "properties": {"name": {"type": "string"}, "parameters": _PARAMETERS}}},
    },
}

# v2 infer always returns the raw logits; apply the activation from the model metadata's parameters.
V2_INFER_RESPONSE: V2InferResponse = {
    "model_name": "r18", "model_version": "1", "id": "42",
    "outputs": [{"name": "logits", "datatype": "FP32", "shape": [1, 10], "data": [0.12, -1.3, 2.2, 0.0, 0.4,
                                                                                   -0.7, 1.1, -2.0, 0.3, 0.9]}],
}


def _error(code: str, detail: str) -> dict[str, Any]:
    example: ErrorBody = {"error": code, "detail": detail}
    return json_content(ErrorBody, example=example)


ERRORS: dict[int | str, dict[str, Any]] = {
    400: {"description": "empty body, bytes that are not an image, truncated image, a model of the wrong task, or "
                         "ground truth the model's task cannot use (labels= on a segmenter, truth on a classifier)",
          **_error("invalid_image", "the image data is truncated or corrupt: image file is truncated")},
    401: {"description": "--api-key is set and the bearer token is missing or wrong",
          **_error("missing_api_key", "this server requires 'Authorization: Bearer <key>'")},
    404: {"description": "unknown model", **_error("unknown_model", "model 'x' is not served; available: r18, seg")},
    413: {"description": "body over --max-body-bytes, image over --max-pixels, a step needing more memory than "
                         "--max-inflight-pixels holds, or a v2 answer over --max-response-bytes",
          **_error("image_too_large", "the image declares 100000x100000 = 10,000,000,000 pixels; the limit is "
                                      "40,000,000 (--max-pixels)")},
    415: {"description": "neither multipart nor image/*",
          **_error("unsupported_media_type", "Content-Type 'text/plain' is not accepted")},
    422: {"description": "bad query parameter (the detail lists the allowed values), or a truth PNG that is not a "
                         "label map for this model and image",
          **_error("invalid_parameter", "format: Input should be 'png', 'json' or 'overlay' (got 'gif') "
                                        "(allowed: 'png', 'json' or 'overlay')")},
    503: {"description": "the model's queue is full (see Retry-After) or the model is still loading",
          **_error("queue_full", "model 'r18' has 64 requests waiting; retry later")},
    504: {"description": "no answer within --timeout-ms", **_error("deadline_exceeded", "no answer within 30000 ms")},
}


# Request bodies for OpenAPI: both ways to send an image.
IMAGE_REQUEST_BODY: dict[str, Any] = {
    "requestBody": {
        "required": True,
        "description": "The image, as a multipart field named `file` or as the raw body (`Content-Type: image/jpeg`).",
        "content": {
            "multipart/form-data": {
                "schema": {"type": "object", "required": ["file"],
                           "properties": {"file": {"type": "string", "format": "binary"}}},
            },
            "image/*": {"schema": {"type": "string", "format": "binary"}},
        },
    }
}

TRUTH_REQUEST_BODY: dict[str, Any] = {"requestBody": {
    **IMAGE_REQUEST_BODY["requestBody"],
    "description": "The image, as a multipart field named `file` or as the raw body (`Content-Type: image/jpeg`). "
                   "Segmenters: an optional multipart field `truth`, a palette or greyscale PNG of the image's size "
                   "whose pixel values are class ids (255 = void).",
    "content": {
        "multipart/form-data": {"schema": {"type": "object", "required": ["file"], "properties": {
            "file": {"type": "string", "format": "binary"},
            "truth": {"type": "string", "format": "binary",
                      "description": "ground-truth label PNG (segmenters only)"}}}},
        "image/*": {"schema": {"type": "string", "format": "binary"}},
    },
}}
