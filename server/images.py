"""Untrusted bytes -> RGB image -> the model's NCHW float32 input, exactly as the manifest describes."""

from __future__ import annotations

import io
import struct
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from robustness.labels import VOID
from robustness.preprocess import InputNormaliser, resize_to_input

EXIF_ORIENTATION = 0x0112
TRANSPOSING_ORIENTATIONS = (5, 6, 7, 8)  # orientations that swap width and height
SIXTEEN_BIT_MODES = ("I;16", "I;16B", "I;16L", "I;16N")
ALPHA_MODES = ("RGBA", "LA", "PA", "RGBa", "La")
BACKGROUND = (255, 255, 255)  # transparent pixels are composited over white
STRIP_ROWS = 256  # 16-bit and float images are brought to 8 bits this many rows at a time
# The decoders an upload may reach (GIF, TIFF, WebP: first frame only); Pillow never tries any other.
ALLOWED_FORMATS = ("JPEG", "PNG", "WEBP", "BMP", "TIFF", "GIF")
TRUTH_FORMATS = ("PNG",)


class ImageRejectedError(ValueError):
    """Bytes that cannot become a model input; carries the HTTP status and a short code."""

    def __init__(self, status: int, code: str, detail: str) -> None:
        super().__init__(detail)
        self.status, self.code, self.detail = status, code, detail


@dataclass(frozen=True)
class DecodedImage:
    """An RGB image plus the size the user sees (after EXIF orientation, before any draft reduction).

    ``rgb`` is None once a prepared image no longer needs the full-resolution picture (see ``prepare_image``).
    """

    rgb: Image.Image | None
    original_size: tuple[int, int]  # (width, height)
    format: str


def _grey_to_rgb(image: Image.Image, to_eight_bit: Callable[[np.ndarray], np.ndarray]) -> Image.Image:
    """A single-channel image to RGB through ``to_eight_bit``, strip by strip, so no full-size wide copy exists."""
    width, height = image.size
    grey = np.empty((height, width), dtype=np.uint8)
    for top in range(0, height, STRIP_ROWS):
        values = np.asarray(image.crop((0, top, width, min(top + STRIP_ROWS, height))))
        grey[top:top + len(values)] = to_eight_bit(values)
    return Image.fromarray(grey, mode="L").convert("RGB")


def _sixteen_bit_to_rgb(image: Image.Image) -> Image.Image:
    """Scale 16-bit (or 32-bit integer) grey to 8 bits by keeping the high byte, then to RGB.

    Mode "I" data whose every value is <= 255 is 8-bit data stored as 32-bit ints and is kept as it is.
    """
    width, height = image.size
    eight_bit = False
    if image.mode == "I" and width and height:
        eight_bit = max(int(np.asarray(image.crop((0, top, width, min(top + STRIP_ROWS, height)))).max())
                        for top in range(0, height, STRIP_ROWS)) <= 255
    if eight_bit:
        return _grey_to_rgb(image, lambda values: values.astype(np.uint8))
    return _grey_to_rgb(image, lambda values: (np.clip(values, 0, 65535) >> 8).astype(np.uint8))


def to_rgb(image: Image.Image) -> Image.Image:
    """Convert any Pillow mode to RGB: alpha over white, 16-bit grey by its high byte, CMYK/P/L by Pillow."""
    mode = image.mode
    if mode == "RGB":
        return image
    if mode in SIXTEEN_BIT_MODES or mode == "I":
        return _sixteen_bit_to_rgb(image)
    if mode == "F":
        return _grey_to_rgb(image, lambda values: np.clip(values, 0, 255).astype(np.uint8))
    if mode == "P" and "transparency" in image.info:
        image, mode = image.convert("RGBA"), "RGBA"
    if mode in ALPHA_MODES:
        rgba = image.convert("RGBA")
        background = Image.new("RGB", rgba.size, BACKGROUND)
        background.paste(rgba, mask=rgba.getchannel("A"))
        return background
    return image.convert("RGB")


# What is sent -> (the decoders Pillow may try, code for unreadable bytes, code for a corrupt header, wording,
# (status, code) for a readable image of a format not in the list).
SUBJECTS: dict[str, tuple[tuple[str, ...], str, str, str, tuple[int, str]]] = {
    "image": (ALLOWED_FORMATS, "not_an_image", "invalid_image", "bytes sent", (415, "unsupported_image_format")),
    "truth": (TRUTH_FORMATS, "invalid_truth", "invalid_truth", "truth bytes", (422, "invalid_truth")),
}
TGA_IMAGE_TYPES = (1, 2, 3, 9, 10, 11)
ICON_FORMATS = ("ICO", "CUR")
TGA_DEPTHS = (1, 8, 16, 24, 32)


def _looks_like_tga(prefix: bytes) -> bool:
    """The checks Pillow's TGA reader makes on its 18-byte header (TGA has no signature of its own)."""
    if len(prefix) < 18:
        return False
    width, height = struct.unpack_from("<HH", prefix, 12)
    return prefix[1] in (0, 1) and prefix[2] in TGA_IMAGE_TYPES and prefix[16] in TGA_DEPTHS and width > 0 < height


def sniff_format(data: bytes) -> str | None:
    """The Pillow format whose signature the bytes start with, or None, without opening them.

    Only each plugin's ``accept`` test on the first 16 bytes runs (a byte comparison; no header is parsed and
    no decoder is touched), plus TGA's header check, as TGA has no signature.
    """
    Image.init()
    prefix = data[:16]
    for name in Image.ID:
        accept = Image.OPEN[name][1]
        if accept is None or (name in ICON_FORMATS and prefix[4:6] == b"\0\0"):  # an icon file of no icons:
            continue  # most likely a TGA (no colour map, type 1 or 2), whose first bytes look the same
        try:
            if accept(prefix):
                return name
        except Exception:  # an accept test that cannot read a short prefix is simply no match
            continue
    return "TGA" if _looks_like_tga(data[:18]) else None


def unsupported_format(kind: str, subject: str) -> ImageRejectedError:
    """The rejection of a readable image in a format this server does not decode."""
    status, code = SUBJECTS[subject][4]
    if subject == "truth":
        return ImageRejectedError(status, code, f"the truth is a {kind} file; send a palette (P) or greyscale (L) "
                                  "PNG whose pixel values are class ids (255 = void)")
    return ImageRejectedError(status, code, f"the image is {kind}, a format this server does not decode; "
                              f"allowed: {', '.join(ALLOWED_FORMATS)}")


def open_untrusted(data: bytes, max_pixels: int, subject: str) -> Image.Image:
    """``Image.open`` on untrusted bytes (header only) within the pixel limit; every failure is an
    ImageRejectedError (413 past ``max_pixels``).

    Only the subject's decoders are tried (``ALLOWED_FORMATS`` for an image, PNG for a truth). Bytes none of
    them reads are sniffed: a known signature of another format is 415 ``unsupported_image_format`` (a truth:
    422 ``invalid_truth``), an allowed format's signature a corrupt header, anything else not an image (400).
    """
    formats, unreadable, corrupt, wording, _ = SUBJECTS[subject]
    try:
        image = Image.open(io.BytesIO(data), formats=formats)
    except UnidentifiedImageError:
        kind = sniff_format(data)
        if kind in formats:
            raise ImageRejectedError(400, corrupt, f"the {subject} header is corrupt: {kind} signature, "
                                     "unreadable header") from None
        if kind is not None:
            raise unsupported_format(kind, subject) from None
        raise ImageRejectedError(400, unreadable,
                                 f"the {len(data)} {wording} are not an image format Pillow can read") from None
    except Image.DecompressionBombError as exc:  # Pillow's own guard, past 2 * Image.MAX_IMAGE_PIXELS
        raise ImageRejectedError(413, "image_too_large",
                                 f"{subject}: {exc} The limit here is {max_pixels:,} pixels (--max-pixels).") from None
    except (OSError, ValueError, SyntaxError) as exc:
        raise ImageRejectedError(400, corrupt, f"the {subject} header is corrupt: {exc}") from None
    width, height = image.size
    if width * height > max_pixels:
        raise ImageRejectedError(413, "image_too_large", f"the {subject} declares {width}x{height} = "
                                 f"{width * height:,} pixels; the limit is {max_pixels:,} (--max-pixels)")
    return image


PixelReservation = Callable[[int], None]  # called with width * height before decoding; raises to refuse


def decode_image(data: bytes, max_pixels: int, draft_size: tuple[int, int] | None = None,
                 reserve_pixels: PixelReservation | None = None) -> DecodedImage:
    """Decode untrusted bytes to RGB with EXIF orientation applied (GIF, TIFF, WebP: the first frame).

    The pixel limit is checked on the header before any pixel is decoded. With ``draft_size`` (w, h),
    JPEGs are decoded at the smallest DCT scale that still covers that size. ``reserve_pixels`` is called with
    the number of pixels about to be decoded (after any draft reduction), before decoding; what it raises
    propagates.
    """
    if not data:
        raise ImageRejectedError(400, "empty_body", "the image is empty (0 bytes)")
    image = open_untrusted(data, max_pixels, "image")
    width, height = image.size
    if width == 0 or height == 0:
        raise ImageRejectedError(400, "invalid_image", f"the image declares an empty size {width}x{height}")
    kind = image.format or ""
    try:
        if draft_size is not None and kind == "JPEG":
            image.draft("RGB", draft_size)
    except (OSError, ValueError, SyntaxError) as exc:
        raise ImageRejectedError(400, "invalid_image", f"the image data is truncated or corrupt: {exc}") from None
    if reserve_pixels is not None:  # before getexif: a PNG's EXIF may follow its pixels, so reading it decodes
        reserve_pixels(image.size[0] * image.size[1])
    try:
        orientation = image.getexif().get(EXIF_ORIENTATION, 1)
        image.load()
        if orientation != 1:
            image = ImageOps.exif_transpose(image)
        rgb = to_rgb(image)
    except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as exc:
        raise ImageRejectedError(400, "invalid_image", f"the image data is truncated or corrupt: {exc}") from None
    original = (height, width) if orientation in TRANSPOSING_ORIENTATIONS else (width, height)
    return DecodedImage(rgb, original, kind)


@dataclass(frozen=True)
class PreparedImage:
    """A decoded upload and the model input made from it: only what a request still needs while it waits.

    ``decoded.rgb`` (the full-resolution picture) is kept only when asked for (an overlay draws on it);
    ``resized`` is rebuilt from the tensor when read, so a queued request holds the tensor and nothing else.
    """

    decoded: DecodedImage
    tensor: np.ndarray  # (3, H, W) float32, normalised
    seconds: float  # decode + resize + normalise time
    normaliser: InputNormaliser = field(repr=False)

    @property
    def resized(self) -> Image.Image:
        """The RGB image at the model's input size that the tensor was made from (rebuilt exactly)."""
        return self.normaliser.restore(self.tensor)


def prepare_image(data: bytes, size: tuple[int, int], normaliser: InputNormaliser, max_pixels: int,
                  draft: bool = True, keep_original: bool = False,
                  reserve_pixels: PixelReservation | None = None) -> PreparedImage:
    """Decode, orient, convert to RGB, resize to (height, width) and normalise (blocking).

    ``draft`` lets a JPEG decode at a reduced DCT scale; ``keep_original`` keeps the full-resolution RGB image
    in ``decoded.rgb`` (else it is dropped here, and ``decoded.rgb`` is None); ``reserve_pixels`` as in
    ``decode_image``.
    """
    start = time.perf_counter()
    height, width = size
    decoded = decode_image(data, max_pixels, (width, height) if draft else None, reserve_pixels)
    tensor = normaliser(resize_to_input(decoded.rgb, size))
    if not keep_original:
        decoded = DecodedImage(None, decoded.original_size, decoded.format)
    return PreparedImage(decoded, tensor, time.perf_counter() - start, normaliser)


DEVICE_MODES = ("RGB", "L")
# (horizontal, vertical) luma sampling factors of the subsamplings nvJPEG names (4:4:4, 4:2:2, 4:4:0, 4:2:0), with
# both chroma components at 1x1; torchvision's CUDA decoder refuses a JPEG whose subsampling nvJPEG calls unknown.
LUMA_SAMPLING = ((1, 1), (2, 1), (1, 2), (2, 2))


def _plain_sampling(image: Image.Image) -> bool:
    """Whether a three-component JPEG has chroma sampled 1x1 and a luma sampling nvJPEG names."""
    layers = getattr(image, "layer", [])
    if len(layers) != 3:
        return False
    # Pillow's layer tuples are (component id, high nibble, low nibble, table): per the JPEG spec, H then V.
    (_, luma_h, luma_v, _), *chroma = layers
    return (luma_h, luma_v) in LUMA_SAMPLING and all((h, v) == (1, 1) for _, h, v, _ in chroma)


def device_decodable(image: Image.Image) -> bool:
    """Upright YCbCr or grey JPEGs only: nvJPEG ignores EXIF orientation and is not known to match Pillow on others."""
    # CMYK/YCCK: libjpeg-turbo's conversion matches Pillow's, nvJPEG's RGB output of four components is not known to.
    if image.format != "JPEG" or image.mode not in DEVICE_MODES:
        return False
    try:
        if image.getexif().get(EXIF_ORIENTATION, 1) != 1:  # nvJPEG does not apply EXIF orientation
            return False
    except (OSError, ValueError, SyntaxError):  # a malformed EXIF block: the CPU path decides what it means
        return False
    if image.mode == "L":
        return True
    # Adobe transform 0 stores RGB rather than YCbCr: libjpeg honours it, nvJPEG is not known to.
    return image.info.get("adobe_transform") != 0 and _plain_sampling(image)


LABEL_MODES = ("P", "L")  # label PNGs: palette or greyscale, pixel value = class id


def decode_label_map(data: bytes, max_pixels: int, num_classes: int, image_size: tuple[int, int]) -> np.ndarray:
    """A ground-truth label PNG -> (H, W) uint8 class ids (255 = void), checked against the model and the image.

    The PNG must be palette or greyscale (its pixel values, not its colours, are the class ids), as large
    as the image it annotates (``image_size`` is (width, height) after EXIF orientation), and hold only
    class ids below ``num_classes`` or 255. Raises ImageRejectedError: 400 for bytes that are not a readable
    image, 413 over ``max_pixels``, 422 for a readable file that is not a valid label map for this request.
    """
    if not data:
        raise ImageRejectedError(400, "invalid_truth", "the truth file is empty (0 bytes)")
    image = open_untrusted(data, max_pixels, "truth")
    width, height = image.size
    if image.format != "PNG" or image.mode not in LABEL_MODES:
        raise ImageRejectedError(422, "invalid_truth",
                                 f"the truth is a {image.format or 'unknown'} image in mode {image.mode}; send a "
                                 "palette (P) or greyscale (L) PNG whose pixel values are class ids (255 = void)")
    if (width, height) != tuple(image_size):
        raise ImageRejectedError(422, "invalid_truth", f"the truth is {width}x{height} but the image is "
                                 f"{image_size[0]}x{image_size[1]}; a label map must cover the image pixel for pixel")
    try:
        image.load()
    except (OSError, ValueError, SyntaxError) as exc:
        raise ImageRejectedError(400, "invalid_truth", f"the truth data is truncated or corrupt: {exc}") from None
    labels = np.asarray(image, dtype=np.uint8)
    bad = np.unique(labels[(labels >= num_classes) & (labels != VOID)])
    if bad.size:
        raise ImageRejectedError(422, "invalid_truth",
                                 f"the truth holds class ids {bad[:10].tolist()}; this model has {num_classes} "
                                 f"classes (allowed: 0..{num_classes - 1}, and {VOID} for void)")
    return labels
