"""Label conventions every stage shares: class-name sets and label-map ids, connectivity, size buckets, palette.

Training data, losses, metrics, presets and the server read them from here. Class-name sets (VOC, COCO,
WIDER attributes, the embedded dataset) are written once; presets carry them into manifests.

A segmentation label map is a (H, W) uint8 array of class ids in the PASCAL VOC style: ``BACKGROUND`` (0)
is the background class, 1..C-1 are the object classes, and ``VOID`` (255) marks boundaries and ambiguous
pixels that count nowhere (not in losses, not in metrics). Instance maps use the same 0 / 255 and number
instances 1..K. An instance is one 8-connected component (``EIGHT_CONNECTED``), and its pixel area falls in
a COCO size bucket (``size_bucket``: S < 32^2 <= M < 96^2 <= L). Label PNGs are drawn with the standard
256-colour VOC palette (``VOC_PALETTE``).

Torch-free on purpose (numpy only), so that the server can import it without pulling in training or torch.
"""

from __future__ import annotations

import numpy as np

BACKGROUND = 0  # class id of the background in segmentation label maps
VOID = 255  # "void": boundaries and ambiguous pixels, ignored by losses and metrics alike

EIGHT_CONNECTED = np.ones((3, 3), dtype=bool)  # scipy.ndimage structure: diagonal neighbours join an instance
EIGHT_CONNECTED.flags.writeable = False

SMALL_AREA = 32 * 32  # COCO: small < 32^2 <= medium < 96^2 <= large, in pixels
MEDIUM_AREA = 96 * 96
SIZE_BUCKETS = ("S", "M", "L")


def size_bucket(area: float) -> str:
    """COCO size bucket of an instance area in pixels: S < 32^2 <= M < 96^2 <= L."""
    return "S" if area < SMALL_AREA else "M" if area < MEDIUM_AREA else "L"


def voc_palette() -> np.ndarray:
    """The standard PASCAL VOC colour map as (256, 3) uint8: class 0 black, 1 dark red, 2 dark green... 255 cream.

    Bit ``b`` of the class id's red, green and blue triplets (bits 3b, 3b+1, 3b+2) sets bit ``7 - b`` of that
    channel.
    """
    index = np.arange(256)
    palette = np.zeros((256, 3), dtype=np.int64)
    for bit in range(8):
        for channel in range(3):
            palette[:, channel] |= ((index >> (3 * bit + channel)) & 1) << (7 - bit)
    return palette.astype(np.uint8)


VOC_PALETTE = voc_palette()
VOC_PALETTE.flags.writeable = False


# ---------------------------------------------------------------- class-name sets

VOC_CLASSES: tuple[str, ...] = (
    "aeroplane", "bicycle", "bird", "boat", "bottle", "bus", "car", "cat", "chair", "cow",
    "diningtable", "dog", "horse", "motorbike", "person", "pottedplant", "sheep", "sofa",
    "train", "tvmonitor",
)

# COCO 2014 categories in ascending category-id order (ids mapped to 0..79).
COCO_CLASSES: tuple[str, ...] = (
    "person", "bicycle", "car", "motorcycle", "airplane", "bus", "train", "truck", "boat",
    "traffic light", "fire hydrant", "stop sign", "parking meter", "bench", "bird", "cat", "dog",
    "horse", "sheep", "cow", "elephant", "bear", "zebra", "giraffe", "backpack", "umbrella",
    "handbag", "tie", "suitcase", "frisbee", "skis", "snowboard", "sports ball", "kite",
    "baseball bat", "baseball glove", "skateboard", "surfboard", "tennis racket", "bottle",
    "wine glass", "cup", "fork", "knife", "spoon", "bowl", "banana", "apple", "sandwich", "orange",
    "broccoli", "carrot", "hot dog", "pizza", "donut", "cake", "chair", "couch", "potted plant",
    "bed", "dining table", "toilet", "tv", "laptop", "mouse", "remote", "keyboard", "cell phone",
    "microwave", "oven", "toaster", "sink", "refrigerator", "book", "clock", "vase", "scissors",
    "teddy bear", "hair drier", "toothbrush",
)

WIDER_ATTRIBUTES: tuple[str, ...] = (
    "Male", "longHair", "sunglass", "Hat", "Tshirt", "longSleeve", "formal", "shorts", "jeans",
    "longPants", "skirt", "faceMask", "logo", "stripe",
)

# The embedded procedural dataset (training/) draws objects of these classes.
EMBEDDED_CLASSES: tuple[str, ...] = (
    "circle", "square", "triangle", "star", "cross", "ring", "hexagon", "arrow", "heart", "moon",
)


def generic_class_names(num_classes: int) -> tuple[str, ...]:
    """Names for a head whose classes are not known: ``class_0`` ... ``class_{C-1}``."""
    return tuple(f"class_{i}" for i in range(num_classes))
