"""Untrusted bytes -> RGB image -> the model's NCHW float32 input, exactly as the manifest describes."""

from __future__ import annotations

import io
import struct
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from common.labels import VOID
from common.preprocess import InputNormaliser, resize_to_input
from server import costs

EXIF_ORIENTATION = 0x0112
TRANSPOSING_ORIENTATIONS = (5, 6, 7, 8)  # orientations that swap width and height
SIXTEEN_BIT_MODES = ("I;16", "I;16B", "I;16L", "I;16N")
ALPHA_MODES = ("RGBA", "LA", "PA", "RGBa", "La")
BACKGROUND = (255, 255, 255)  # transparent pixels are composited over white
TILE_PIXELS = 1 << 20  # images that are not RGB are brought to RGB a tile of at most this many pixels at a time
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


def tiles(size: tuple[int, int]) -> Iterator[tuple[int, int, int, int]]:
    """(left, top, right, bottom) boxes of at most ``TILE_PIXELS`` pixels covering a (width, height) image."""
    width, height = size
    columns = max(1, min(width, TILE_PIXELS))
    rows = max(1, TILE_PIXELS // columns)
    for top in range(0, height, rows):
        for left in range(0, width, columns):
            yield left, top, min(left + columns, width), min(top + rows, height)


def _tiled_rgb(image: Image.Image, background: tuple[int, int, int],
               tile_to_rgb: Callable[[Image.Image], tuple[Image.Image, Image.Image | None]]) -> Image.Image:
    """An RGB copy made tile by tile: ``tile_to_rgb`` gives each tile's pixels and paste mask, so no full-size
    intermediate exists beside the source and the result."""
    out = Image.new("RGB", image.size, background)
    for box in tiles(image.size):
        pixels, mask = tile_to_rgb(image.crop(box))
        out.paste(pixels, box[:2], mask=mask)
    return out


def _grey_to_rgb(image: Image.Image, to_eight_bit: Callable[[np.ndarray], np.ndarray]) -> Image.Image:
    """A single-channel image to RGB through ``to_eight_bit``, tile by tile."""
    return _tiled_rgb(image, (0, 0, 0),
                      lambda tile: (Image.fromarray(to_eight_bit(np.asarray(tile)), mode="L"), None))


def _over_white(tile: Image.Image) -> tuple[Image.Image, Image.Image]:
    rgba = tile.convert("RGBA")
    return rgba, rgba


def _sixteen_bit_to_rgb(image: Image.Image) -> Image.Image:
    """Scale 16-bit (or 32-bit integer) grey to 8 bits by keeping the high byte, then to RGB.

    Mode "I" data whose every value is <= 255 is 8-bit data stored as 32-bit ints and is kept as it is.
    """
    if image.mode == "I" and image.getextrema()[1] <= 255:
        return _grey_to_rgb(image, lambda values: values.astype(np.uint8))
    return _grey_to_rgb(image, lambda values: (np.clip(values, 0, 65535) >> 8).astype(np.uint8))


def to_rgb(image: Image.Image) -> Image.Image:
    """Convert any Pillow mode to RGB: alpha over white, 16-bit grey by its high byte, CMYK/P/L by Pillow.

    Modes with alpha, 16-bit and float modes convert tile by tile into the result (a whole-image conversion
    would make full-size copies on the way: 13 B a pixel for RGBA instead of 8).
    """
    mode = image.mode
    if mode == "RGB":
        return image
    if mode in SIXTEEN_BIT_MODES or mode == "I":
        return _sixteen_bit_to_rgb(image)
    if mode == "F":
        return _grey_to_rgb(image, lambda values: np.clip(values, 0, 255).astype(np.uint8))
    if mode in ALPHA_MODES or (mode == "P" and "transparency" in image.info):
        return _tiled_rgb(image, BACKGROUND, _over_white)
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


PixelReservation = Callable[[int], None]  # called with budget units (server.costs) before a step; raises to refuse
JPEG_SOS = b"\xff\xda"  # start of scan
JPEG_STANDALONE = (0x01, *range(0xD0, 0xDA))  # markers without a length: TEM, RST0-7, SOI, EOI


def _first_scan_end(data: bytes) -> int | None:
    """Where the first scan's entropy-coded data starts in a JPEG (markers walked from SOI), or None."""
    position = 2
    while position + 4 <= len(data):
        if data[position] != 0xFF:
            return None
        marker = data[position + 1]
        if marker == 0xFF or marker in JPEG_STANDALONE:  # a fill byte, or a marker without a length
            position += 1 if marker == 0xFF else 2
            continue
        length = int.from_bytes(data[position + 2:position + 4], "big")
        if marker == JPEG_SOS[1]:
            return position + 2 + length
        position += 2 + length
    return None


def buffered_jpeg(image: Image.Image, data: bytes) -> bool:
    """Whether libjpeg decodes this JPEG through whole-image coefficient buffers: progressive, or with more than
    one scan (entropy-coded data stuffs every 0xFF, so a second start-of-scan marker is a second scan)."""
    if image.info.get("progressive"):
        return True
    start = _first_scan_end(data)
    return start is not None and data.find(JPEG_SOS, start) != -1


def _sampled_fraction(image: Image.Image) -> float:
    """Samples per pixel a JPEG codes: each component's share of the most finely sampled one, added up."""
    layers = getattr(image, "layer", None) or [("", 1, 1, 0)]
    most = max(h for _, h, _, _ in layers) * max(v for _, _, v, _ in layers)
    return sum(h * v for _, h, v, _ in layers) / most


def decode_bytes(image: Image.Image, data: bytes, full_size: tuple[int, int]) -> float:
    """Peak bytes decoding an opened image (after any draft) to RGB takes, from its header alone."""
    width, height = image.size
    per_pixel = costs.DECODE_BYTES.get(image.mode, costs.UNMEASURED_MODE_BYTES)
    total = width * height * (per_pixel + costs.FORMAT_BYTES.get(image.format or "", 0.0))
    if image.format == "JPEG" and buffered_jpeg(image, data):
        total += full_size[0] * full_size[1] * costs.COEFFICIENT_BYTES * _sampled_fraction(image)
    return total


def decode_image(data: bytes, max_pixels: int, draft_size: tuple[int, int] | None = None,
                 reserve_pixels: PixelReservation | None = None, after_bytes: float = 0.0) -> DecodedImage:
    """Decode untrusted bytes to RGB with EXIF orientation applied (GIF, TIFF, WebP: the first frame).

    The pixel limit is checked on the header before any pixel is decoded. With ``draft_size`` (w, h),
    JPEGs are decoded at the smallest DCT scale that still covers that size. ``reserve_pixels`` is called before
    decoding with the budget units of the decode's peak (``decode_bytes``), or of ``after_bytes`` per pixel of
    the image's full size if that is more (what the request's later steps hold); a rotation by EXIF reserves its
    copy before it is made. What it raises propagates.
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
        reserve_pixels(costs.units(max(decode_bytes(image, data, (width, height)), width * height * after_bytes)))
    try:
        orientation = image.getexif().get(EXIF_ORIENTATION, 1)
        image.load()
        if orientation != 1:
            if reserve_pixels is not None:
                reserve_pixels(costs.units(image.size[0] * image.size[1] * costs.mode_bytes(image.mode)))
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
                  reserve_pixels: PixelReservation | None = None, after_bytes: float = 0.0) -> PreparedImage:
    """Decode, orient, convert to RGB, resize to (height, width) and normalise (blocking).

    ``draft`` lets a JPEG decode at a reduced DCT scale; ``keep_original`` keeps the full-resolution RGB image
    in ``decoded.rgb`` (else it is dropped here, and ``decoded.rgb`` is None); ``reserve_pixels`` and
    ``after_bytes`` as in ``decode_image``.
    """
    start = time.perf_counter()
    height, width = size
    decoded = decode_image(data, max_pixels, (width, height) if draft else None, reserve_pixels, after_bytes)
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


def decode_label_map(data: bytes, max_pixels: int, num_classes: int, image_size: tuple[int, int],
                     reserve_pixels: PixelReservation | None = None) -> np.ndarray:
    """A ground-truth label PNG -> (H, W) uint8 class ids (255 = void), checked against the model and the image.

    The PNG must be palette or greyscale (its pixel values, not its colours, are the class ids), as large
    as the image it annotates (``image_size`` is (width, height) after EXIF orientation), and hold only
    class ids below ``num_classes`` or 255. Raises ImageRejectedError: 400 for bytes that are not a readable
    image, 413 over ``max_pixels``, 422 for a readable file that is not a valid label map for this request.
    ``reserve_pixels`` is called with the decode's budget units (``costs.TRUTH_BYTES`` a pixel) before decoding.
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
    if reserve_pixels is not None:
        reserve_pixels(costs.units(width * height * costs.TRUTH_BYTES))
    try:
        image.load()
    except (OSError, ValueError, SyntaxError) as exc:
        raise ImageRejectedError(400, "invalid_truth", f"the truth data is truncated or corrupt: {exc}") from None
    counts = image.histogram()  # of the pixel values (palette indices for P), with no copy of the pixels
    bad = [value for value, count in enumerate(counts) if count and value >= num_classes and value != VOID]
    if bad:
        raise ImageRejectedError(422, "invalid_truth",
                                 f"the truth holds class ids {bad[:10]}; this model has {num_classes} "
                                 f"classes (allowed: 0..{num_classes - 1}, and {VOID} for void)")
    return np.asarray(image, dtype=np.uint8)
