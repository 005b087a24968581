"""Decoding untrusted bytes: modes to RGB, EXIF orientation, header pixel limit, JPEG draft, normalisation."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from common.preprocess import InputNormaliser, resize_to_input
from server import costs
from server.images import (
    ALLOWED_FORMATS,
    TILE_PIXELS,
    ImageRejectedError,
    decode_image,
    decode_label_map,
    prepare_image,
    to_rgb,
)
from tests.server.oracle import bomb_png, jpeg_bytes, png_bytes, random_rgb, reference_input


def test_rgba_is_composited_over_white():
    rgba = np.zeros((2, 2, 4), dtype=np.uint8)
    rgba[0, 0] = (10, 20, 30, 255)  # opaque
    rgba[0, 1] = (200, 0, 0, 0)  # fully transparent: white
    rgba[1, 0] = (0, 0, 0, 128)  # half black over white
    rgb = np.asarray(to_rgb(Image.fromarray(rgba, mode="RGBA")))
    assert rgb[0, 0].tolist() == [10, 20, 30]
    assert rgb[0, 1].tolist() == [255, 255, 255]
    assert rgb[1, 0].tolist() == [127, 127, 127]


def test_la_and_palette_with_transparency_become_rgb():
    la = Image.fromarray(np.array([[[50, 255], [50, 0]]], dtype=np.uint8), mode="LA")
    assert np.asarray(to_rgb(la)).tolist() == [[[50, 50, 50], [255, 255, 255]]]
    palette = Image.new("P", (2, 1))
    palette.putpalette([255, 0, 0, 0, 255, 0] + [0] * 762)
    palette.putpixel((1, 0), 1)
    palette.info["transparency"] = 1
    assert np.asarray(to_rgb(palette)).tolist() == [[[255, 0, 0], [255, 255, 255]]]


def test_sixteen_bit_grey_keeps_the_high_byte():
    values = np.array([[0, 255, 256, 65535]], dtype=np.uint16)
    image = Image.fromarray(values)
    assert image.mode == "I;16"
    rgb = np.asarray(to_rgb(image))
    assert rgb[..., 0].tolist() == [[0, 0, 1, 255]] and rgb.shape == (1, 4, 3)


def test_cmyk_and_grey_convert_like_pillow():
    cmyk = Image.new("CMYK", (1, 1), (0, 255, 255, 0))
    assert np.asarray(to_rgb(cmyk)).tolist() == [[[255, 0, 0]]]
    assert np.asarray(to_rgb(Image.new("L", (1, 1), 77))).tolist() == [[[77, 77, 77]]]


def test_exif_orientation_is_applied_and_reported_as_the_displayed_size():
    decoded = decode_image(jpeg_bytes(random_rgb(20, 50), orientation=6), max_pixels=10_000)
    assert decoded.rgb.size == (20, 50) and decoded.original_size == (20, 50)


def test_pixel_limit_is_checked_on_the_header():
    with pytest.raises(ImageRejectedError) as info:
        decode_image(bomb_png(3000, 2000), max_pixels=5_999_999)
    assert (info.value.status, info.value.code) == (413, "image_too_large")
    assert "3000x2000 = 6,000,000" in info.value.detail
    with pytest.raises(ImageRejectedError) as info:  # exactly at the limit passes the check, then fails to decode
        decode_image(bomb_png(3000, 2000), max_pixels=6_000_000)
    assert info.value.code == "invalid_image"


PNG = png_bytes(random_rgb(10, 10))


@pytest.mark.parametrize(("data", "code"), [(b"", "empty_body"), (PNG[:20], "invalid_image"),
                                            (PNG[:60], "invalid_image"), (b"hello", "not_an_image")])
def test_bad_bytes_name_the_problem(data, code):
    with pytest.raises(ImageRejectedError) as info:
        decode_image(data, max_pixels=1000)
    assert info.value.code == code and info.value.status == 400


def test_jpeg_draft_decodes_large_images_at_reduced_size_but_reports_the_original():
    data = jpeg_bytes(random_rgb(800, 1200))
    decoded = decode_image(data, max_pixels=10_000_000, draft_size=(128, 128))
    assert decoded.original_size == (1200, 800)
    assert decoded.rgb.size == (300, 200)  # scale 1/4: the smallest DCT scale still >= 128 on both sides
    assert decode_image(data, max_pixels=10_000_000).rgb.size == (1200, 800)


def test_normaliser_matches_the_plain_formula():
    image = Image.fromarray(random_rgb(37, 23, seed=9))
    mean, std = (0.5, 0.4, 0.3), (0.2, 0.25, 0.5)
    got = InputNormaliser(mean, std)(resize_to_input(image, (16, 24)))
    assert got.shape == (3, 16, 24) and got.dtype == np.float32 and got.flags["C_CONTIGUOUS"]
    np.testing.assert_array_equal(got, reference_input(image, (16, 24), mean, std))
    assert InputNormaliser(mean, std).fill_value().tolist() == [128, 102, 76]


def test_normaliser_rejects_bad_statistics():
    with pytest.raises(ValueError, match="std"):
        InputNormaliser((0, 0, 0), (1, 0, 1))



def encoded(array: np.ndarray, fmt: str, **options) -> bytes:
    out = io.BytesIO()
    Image.fromarray(array).save(out, format=fmt, **options)
    return out.getvalue()


@pytest.mark.parametrize("fmt", ALLOWED_FORMATS)
def test_every_allowed_format_decodes(fmt):
    decoded = decode_image(encoded(random_rgb(30, 40), fmt), max_pixels=10_000)
    assert decoded.format == fmt and decoded.rgb.size == (40, 30) and decoded.rgb.mode == "RGB"


def test_a_gif_gives_its_first_frame():
    frames = [Image.new("RGB", (8, 8), colour) for colour in ((255, 0, 0), (0, 0, 255))]
    out = io.BytesIO()
    frames[0].save(out, format="GIF", save_all=True, append_images=frames[1:])
    assert np.asarray(decode_image(out.getvalue(), max_pixels=100).rgb)[0, 0].tolist() == [255, 0, 0]


@pytest.mark.parametrize("fmt", ["ICO", "PPM", "TGA", "PCX", "SGI", "JPEG2000"])
def test_a_readable_image_of_another_format_is_415_with_the_list(fmt):
    with pytest.raises(ImageRejectedError) as info:
        decode_image(encoded(random_rgb(32, 32), fmt), max_pixels=10_000)
    assert (info.value.status, info.value.code) == (415, "unsupported_image_format")
    assert f"is {fmt}," in info.value.detail and "allowed: JPEG, PNG, WEBP, BMP, TIFF, GIF" in info.value.detail


def test_other_decoders_are_never_opened(monkeypatch):
    """Only the allowed formats' readers run; another format is recognised by its signature test alone."""
    from PIL import IcoImagePlugin

    def refuse(*args, **kwargs):
        raise AssertionError("the ICO reader ran")

    monkeypatch.setattr(IcoImagePlugin.IcoImageFile, "_open", refuse)
    with pytest.raises(ImageRejectedError) as info:
        decode_image(encoded(random_rgb(16, 16), "ICO"), max_pixels=10_000)
    assert info.value.code == "unsupported_image_format"


def test_a_truth_stays_png_only():
    labels = np.zeros((8, 8), dtype=np.uint8)
    with pytest.raises(ImageRejectedError) as info:
        decode_label_map(encoded(labels, "BMP"), 1000, 2, (8, 8))
    assert (info.value.status, info.value.code) == (422, "invalid_truth") and "BMP" in info.value.detail
    assert decode_label_map(png_bytes(labels), 1000, 2, (8, 8)).shape == (8, 8)


def test_sixteen_bit_and_float_images_convert_tile_by_tile():
    rows = TILE_PIXELS // 1000 * 2 + 7  # several tiles of 1000-pixel rows, the last one short
    ramp = (np.arange(rows * 1000, dtype=np.uint32).reshape(rows, 1000) * 97 % 65536).astype(np.uint16)
    rgb = np.asarray(to_rgb(Image.fromarray(ramp)))
    assert rgb.shape == (rows, 1000, 3) and (rgb[..., 1] == (ramp >> 8)).all()
    small_ints = Image.fromarray((ramp % 256).astype(np.int32), mode="I")  # 8-bit data stored as 32-bit ints
    assert (np.asarray(to_rgb(small_ints))[..., 0] == ramp % 256).all()
    wide_ints = Image.fromarray(ramp.astype(np.int32) - 1000, mode="I")  # negatives clip to 0
    assert (np.asarray(to_rgb(wide_ints))[..., 2] == (np.clip(ramp.astype(np.int32) - 1000, 0, None) >> 8)).all()
    floats = Image.fromarray(ramp.astype(np.float32) / 100.0 - 50.0, mode="F")
    expected = np.clip(ramp.astype(np.float32) / 100.0 - 50.0, 0, 255).astype(np.uint8)
    assert (np.asarray(to_rgb(floats))[..., 0] == expected).all()


def test_a_prepared_image_holds_only_the_tensor_unless_the_original_is_kept():
    data = jpeg_bytes(random_rgb(90, 120, seed=5))
    normaliser = InputNormaliser((0.485, 0.456, 0.406), (0.229, 0.224, 0.225))
    lean = prepare_image(data, (32, 48), normaliser, max_pixels=100_000)
    assert lean.decoded.rgb is None and lean.decoded.original_size == (120, 90)
    full = prepare_image(data, (32, 48), normaliser, max_pixels=100_000, draft=False, keep_original=True)
    assert full.decoded.rgb.size == (120, 90)
    expected = resize_to_input(decode_image(data, 100_000).rgb, (32, 48))
    assert np.array_equal(np.asarray(full.resized), np.asarray(expected))  # rebuilt exactly from the tensor
    np.testing.assert_array_equal(normaliser(full.resized), full.tensor)


def test_pixels_are_reserved_before_decoding_and_a_refusal_stops_the_decode():
    seen = []
    data = jpeg_bytes(random_rgb(800, 1200))
    decode_image(data, max_pixels=10_000_000, draft_size=(128, 128), reserve_pixels=seen.append)
    # what the draft decode will hold, not the header's 1200 x 800: 300 x 200 pixels at 4.5 B, in units of 4 B
    assert seen == [costs.units(300 * 200 * costs.DECODE_BYTES["RGB"])] == [67_500]
    seen.clear()
    progressive = jpeg_bytes(random_rgb(800, 1200), progressive=True)
    decode_image(progressive, max_pixels=10_000_000, draft_size=(128, 128), reserve_pixels=seen.append)
    # libjpeg holds 2 B per coefficient of the full size, for 1.5 samples a pixel (4:2:0), whatever the draft
    assert seen == [costs.units(300 * 200 * 4.5 + 1200 * 800 * 2 * 1.5)] == [787_500]

    def refuse(pixels: int) -> None:
        raise OverflowError(pixels)

    with pytest.raises(OverflowError):
        decode_image(data, max_pixels=10_000_000, reserve_pixels=refuse)


def test_a_png_is_reserved_before_any_pixel_is_decoded():
    """Reading a PNG's EXIF decodes it (the chunk may follow the pixels), so the reservation comes first."""
    def refuse(pixels: int) -> None:
        raise OverflowError(pixels)

    with pytest.raises(OverflowError):
        decode_image(bomb_png(3000, 2000), max_pixels=6_000_000, reserve_pixels=refuse)
