"""Label-map conventions every stage shares: training data, losses, metrics and the server read them from here.

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
