"""Decoding untrusted bytes: modes to RGB, EXIF orientation, header pixel limit, JPEG draft, normalisation."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from server.images import ImageRejectedError, InputNormaliser, decode_image, resize_to_input, to_rgb
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

