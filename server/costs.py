"""What each step of a request holds in memory, in bytes per pixel, and the unit the in-flight budget counts.

``--max-inflight-pixels`` counts pixels of ``PIXEL_BYTES`` (an RGB pixel as Pillow holds it). A step reserves
``units(pixels x its bytes per pixel)`` before it runs; a cost per pixel varies from about 4 B (a plain RGB
decode) to more than 100 B (a model run on a KServe v2 tensor), so counting bare pixels let one request hold
up to 60 times what the budget said.

Every figure is the peak growth of the resident set per pixel, measured by ``python -m benchmarks memory``: each
step in a fresh process, on 16 MP images, peak RSS (VmHWM after writing 5 to /proc/self/clear_refs) less the RSS
before the step; tracemalloc does not see Pillow's or libjpeg's buffers. Measured once on Linux x86-64 with
Pillow 13.0, NumPy 2 and ONNX Runtime 1.2x, then rounded up to the next half byte.
"""

from __future__ import annotations

import math

PIXEL_BYTES = 4  # one unit of --max-inflight-pixels: an RGB pixel as Pillow stores it (RGB plus a pad byte)

# Decoding to Pillow's mode and converting to RGB, per decoded pixel (the drafted size for a JPEG): the decoded
# image, the RGB copy (tile by tile for modes with alpha, 16-bit and float) and the decoder's own buffers.
DECODE_BYTES = {"RGB": 4.5, "L": 5.5, "P": 6.0, "1": 6.0, "I;16": 7.0, "I;16B": 7.0, "I;16L": 7.0, "I;16N": 7.0,
                "RGBA": 9.0, "LA": 9.0, "PA": 9.0, "I": 9.0, "F": 9.0, "CMYK": 9.0}
UNMEASURED_MODE_BYTES = 9.0  # any other mode Pillow may decode (YCbCr, LAB, HSV, RGBX...): 4 B decoded + 4 B RGB
# Decoders that hold whole-picture buffers of their own beside Pillow's (libwebp: its YUV planes and RGBA output).
FORMAT_BYTES = {"WEBP": 12.0}
# Pillow's storage per pixel by mode: the cost of the rotated copy EXIF orientation makes.
MODE_BYTES = {"1": 1, "L": 1, "P": 1, "I;16": 2, "I;16B": 2, "I;16L": 2, "I;16N": 2}
WIDE_MODE_BYTES = 4  # every other mode
# libjpeg decodes a progressive (or multi-scan) JPEG through whole-image coefficient buffers: 2 B per DCT
# coefficient of every sampled component at the full size, whatever draft scale the output is reduced to.
COEFFICIENT_BYTES = 2.0
# A decode on the model's device (nvJPEG): the device holds the RGB output; counted as a plain RGB image.
DEVICE_DECODE_BYTES = 4.0

HELD_RGB_BYTES = 4.0  # the full-resolution RGB image an overlay keeps until it is drawn
# /segment's answers at the image's original size, per pixel: the class map resized (1 B), then the palette PNG
# (png), the connected components of each class (json: scipy's int32 labels and its work arrays), or the overlay
# blended tile by tile in place plus the PNG it encodes (up to 3 B a pixel for a picture zlib cannot shrink).
RENDER_BYTES = {"png": 3.5, "json": 14.5, "overlay": 7.0}
# A ground-truth label PNG (palette or greyscale), per pixel: the decoded map and its one-byte copy in NumPy.
TRUTH_BYTES = 3.5

# KServe v2. Parsing a JSON body, per body byte: Python lists and floats (32 B per 4-character number "0.5,",
# up to 18 B per body byte for data nested as [[0],[0],...]) plus the float32 array made from them.
V2_JSON_PARSE_BYTES = 18.0
V2_TENSOR_BYTES = 2 * 4.0  # per input element: the float32 tensor and the batch the batcher concatenates
# A model run per input pixel (all channels), as ONNX Runtime's CPU arena grows for a dynamic-size input:
# measured on this project's DeepLab-V2 ResNet-18 at 512 and 1024 px (activations at stride 8, logits at full size).
V2_INFERENCE_BYTES = 128.0
V2_OUTPUT_BYTES = 4.0  # per output element: the model's float32 outputs
V2_BINARY_ANSWER_BYTES = 4.0  # per output element: the answer's raw little-endian float32 section
V2_JSON_ANSWER_BYTES = 16.0  # per output element: the longest float32 orjson writes ("-1.1754944e-38") and a comma


def units(nbytes: float) -> int:
    """``nbytes`` of working memory in budget units (pixels of ``PIXEL_BYTES``), rounded up."""
    return math.ceil(nbytes / PIXEL_BYTES)


def mode_bytes(mode: str) -> int:
    """Pillow's bytes per pixel for an image of this mode."""
    return MODE_BYTES.get(mode, WIDE_MODE_BYTES)
