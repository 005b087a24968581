"""JPEG bytes -> the model's normalised NCHW float32 input on a torch device, a batch at a time (issue 21).

The device twin of ``server.images.prepare_image`` for the JPEGs ``device_decodable`` accepts: one
``torchvision.io.decode_jpeg`` call decodes the batch (nvJPEG on "cuda", libjpeg-turbo on "cpu"), then images
are stretched to the model's (height, width) with antialiased bilinear filtering, rounded to uint8 levels like
Pillow's resize, and normalised through the same float32 tables as ``InputNormaliser``. The result stays on the
device.

nvJPEG has no reduced DCT scale, so every image is decoded at full size (the caller still checks the header's
pixel count against its limit first). Pillow's JPEG draft, which the server uses, decodes at 1/2, 1/4 or 1/8
scale when that still covers the input size; with ``draft`` the same reduction is imitated by averaging
scale x scale blocks before the resize, which lands within a few levels of the DCT-scaled decode where a
direct resize from full size differs by tens of levels at sharp edges.

Imports torch and torchvision: import this module only where the feature is enabled.
"""

from __future__ import annotations

import re
from collections import defaultdict
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torchvision.io import ImageReadMode, decode_jpeg

from common.preprocess import InputNormaliser
from server.images import ImageRejectedError, device_decodable  # noqa: F401  (re-exported)

DRAFT_SCALES = (8, 4, 2)  # the reduced DCT scales Pillow's JPEG draft picks from (else 1)


class DeviceImageRejectedError(ImageRejectedError):
    """An ImageRejectedError that also says which image of the batch (``index``) was refused."""

    def __init__(self, index: int, status: int, code: str, detail: str) -> None:
        super().__init__(status, code, detail)
        self.index = index


def default_device() -> str:
    """The device to prepare on: "cuda" when torch sees a CUDA device, else "cpu"."""
    return "cuda" if torch.cuda.is_available() else "cpu"


class DevicePreparer:
    """Decode JPEG bytes, resize and normalise them into the model's (n, 3, H, W) float32 input on ``device``.

    ``draft`` (the default, as the server decodes) imitates Pillow's JPEG draft reduction before the resize.
    """

    def __init__(self, size: tuple[int, int], mean: Any, std: Any, device: str, draft: bool = True) -> None:
        normaliser = InputNormaliser(mean, std)  # validates mean and std; its tables are the CPU path's constants
        self.size = (int(size[0]), int(size[1]))
        self.device = torch.device(device)
        self.draft = draft
        self.table = torch.from_numpy(np.concatenate(normaliser.tables)).to(self.device)  # (3 * 256,) float32
        self.channel_offsets = torch.arange(0, 3 * 256, 256, device=self.device).view(1, 3, 1, 1)

    def prepare(self, jpegs: Sequence[bytes]) -> torch.Tensor:
        """The (n, 3, H, W) float32 contiguous model input for ``jpegs``, on this preparer's device.

        Raises DeviceImageRejectedError (400 ``empty_body`` or ``invalid_image``) naming the first refused image;
        the decoder returns nothing for a batch with a refused image, so the rest must be sent again.
        """
        height, width = self.size
        out = torch.empty((len(jpegs), 3, height, width), dtype=torch.float32, device=self.device)
        if not jpegs:
            return out
        groups: dict[tuple[int, int], list[int]] = defaultdict(list)
        decoded = self._decode(jpegs)
        for index, image in enumerate(decoded):
            groups[(image.shape[1], image.shape[2])].append(index)
        for shape, indices in groups.items():
            batch = _stack([decoded[i] for i in indices]).float()
            scale = self.draft_scale(*shape) if self.draft else 1
            if scale > 1:  # block means, rounded to levels like the decoder's output
                batch = F.avg_pool2d(batch, scale, ceil_mode=True).round_()
            if batch.shape[-2:] != self.size:
                batch = F.interpolate(batch, size=self.size, mode="bilinear", align_corners=False, antialias=True)
                batch = batch.round_().clamp_(0, 255)
            normalised = torch.take(self.table, batch.long() + self.channel_offsets)
            if len(indices) == len(jpegs):
                out.copy_(normalised)
            else:
                out[torch.tensor(indices, device=self.device)] = normalised
        return out

    def draft_scale(self, height: int, width: int) -> int:
        """Pillow's draft reduction for a JPEG of this size: the largest of 8, 4, 2 still covering the input, else 1."""
        fits = min(width // self.size[1], height // self.size[0])
        return next((scale for scale in DRAFT_SCALES if fits >= scale), 1)

    def _decode(self, jpegs: Sequence[bytes]) -> list[torch.Tensor]:
        """uint8 (3, h, w) RGB tensors on the device, one decode call for the whole batch."""
        for index, data in enumerate(jpegs):
            if not data:
                raise DeviceImageRejectedError(index, 400, "empty_body", f"image {index} is empty (0 bytes)")
        encoded = [torch.frombuffer(bytearray(data), dtype=torch.uint8) for data in jpegs]
        try:
            return decode_jpeg(encoded, mode=ImageReadMode.RGB, device=self.device)
        except torch.OutOfMemoryError:
            raise
        except RuntimeError as exc:
            batch_error = exc
        for index, single in enumerate(encoded):  # find which image the decoder refused
            try:
                decode_jpeg([single], mode=ImageReadMode.RGB, device=self.device)
            except torch.OutOfMemoryError:
                raise
            except RuntimeError as exc:
                raise DeviceImageRejectedError(index, 400, "invalid_image", f"image {index}: the JPEG data cannot "
                                               f"be decoded (truncated or corrupt): {_reason(exc)}") from None
        raise batch_error


def _stack(images: list[torch.Tensor]) -> torch.Tensor:
    """Stack same-size (3, h, w) images; libjpeg-turbo's are CHW views of HWC memory, kept channels-last (fast)."""
    if all(image.permute(1, 2, 0).is_contiguous() for image in images):
        return torch.stack([image.permute(1, 2, 0) for image in images]).permute(0, 3, 1, 2)
    return torch.stack(images)


def _reason(exc: RuntimeError) -> str:
    """The decoder's message without the C++ source location torchvision prefixes it with."""
    return re.sub(r"^.*?\.cpp:\d+,\s*", "", str(exc).strip().splitlines()[0])
