"""The project's faster glass blur, zoom blur, frost, brightness, elastic transform and snow give imagecorruptions'
own pixels for the same seed."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from robustness.corruption_library import gaussian_compat, library
from robustness.corruptions import FAST_CORRUPTIONS, corrupt
from robustness.fast_corruptions import ZOOM_FACTORS, brightness, elastic_transform, frost, zoom_blur
from robustness.glass_blur import glass_blur, shuffle_pixels, shuffle_sources
from robustness.snow import snow


def _images() -> list[np.ndarray]:
    rng = np.random.default_rng(25)
    y, x = np.mgrid[0:48, 0:64]
    scene = np.stack([x * 4, y * 5, (x + y) * 2], axis=-1).astype(np.uint8)
    scene[10:30, 20:40] = 240
    smooth = np.asarray(Image.fromarray(rng.integers(0, 256, (20, 20, 3), dtype=np.uint8)).resize((160, 160)))
    return [scene, smooth, rng.integers(0, 256, (37, 50, 3), dtype=np.uint8),
            rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)]


IMAGES = _images()


def _library_loop(image: np.ndarray, delta: int, offsets: np.ndarray) -> np.ndarray:
    """imagecorruptions' pixel-swap statement, run literally over the given (dx, dy) draws."""
    x = image.copy()
    draws = iter(offsets)
    for h in range(x.shape[0] - delta, delta, -1):
        for w in range(x.shape[1] - delta, delta, -1):
            dx, dy = next(draws)
            h_prime, w_prime = h + dy, w + dx
            x[h, w], x[h_prime, w_prime] = x[h_prime, w_prime], x[h, w]
    return x


@pytest.mark.parametrize("delta", [1, 2, 3, 4])
def test_one_shuffle_pass_matches_the_library_statement_run_literally(delta: int) -> None:
    rng = np.random.default_rng(delta)
    image = rng.integers(0, 256, (23, 19, 3), dtype=np.uint8)
    walked = (23 - 2 * delta) * (19 - 2 * delta)
    offsets = rng.integers(-delta, delta, size=(walked, 2))
    sources = shuffle_sources(23, 19, delta, offsets)
    expected = _library_loop(image, delta, offsets)
    assert np.array_equal(image.reshape(-1, 3)[sources].reshape(image.shape), expected)


def test_with_delta_one_every_walked_pixel_copies_an_unwalked_or_not_yet_walked_one() -> None:
    # delta 1 on a 4 x 4 image walks (3,3) (3,2) (2,3) (2,2); draws lie in -1..0, so no source was passed yet
    image = np.arange(16, dtype=np.uint8).reshape(4, 4, 1)
    offsets = np.array([[-1, 0], [0, -1], [0, 0], [-1, -1]])  # (dx, dy) per walked pixel
    out = image.reshape(-1, 1)[shuffle_sources(4, 4, 1, offsets)].reshape(4, 4)
    assert out.tolist() == [[0, 1, 2, 3], [4, 5, 6, 7], [8, 9, 5, 11], [12, 13, 10, 14]]
    assert np.array_equal(out[..., None], _library_loop(image, 1, offsets))


def test_chains_through_passed_pixels_are_followed_to_their_end() -> None:
    # delta 2 on a 6 x 6 image walks rows 4, 3 and columns 4, 3: (4,4) (4,3) (3,4) (3,3)
    image = np.arange(36, dtype=np.uint8).reshape(6, 6, 1)
    # (4,4) <- (5,5) = 35; (4,3) <- (4,4) (passed: 35); (3,4) <- (4,3) (passed: 35); (3,3) <- (3,4) (passed: 35)
    offsets = np.array([[1, 1], [1, 0], [-1, 1], [1, 0]])
    out = image.reshape(-1, 1)[shuffle_sources(6, 6, 2, offsets)].reshape(6, 6)
    assert out[4, 4] == out[4, 3] == out[3, 4] == out[3, 3] == 35
    assert np.array_equal(out[..., None], _library_loop(image, 2, offsets))


@pytest.mark.parametrize("severity", [1, 2, 3, 4, 5])
def test_glass_blur_equals_the_library_and_leaves_its_generator_where_the_library_does(severity: int) -> None:
    for image in IMAGES:
        for seed in (0, 11):
            np.random.seed(seed)
            expected = library.glass_blur(Image.fromarray(image), severity)
            state_after_library = np.random.get_state()
            np.random.seed(seed)
            got = glass_blur(Image.fromarray(image), severity, gaussian_compat)
            state_after_ours = np.random.get_state()
            assert got.dtype == expected.dtype == np.float64
            assert np.array_equal(got, expected), (image.shape, seed)
            assert state_after_ours[2] == state_after_library[2]
            assert np.array_equal(state_after_ours[1], state_after_library[1])


def test_shuffle_pixels_draws_one_pair_per_walked_pixel_and_pass() -> None:
    np.random.seed(4)
    shuffle_pixels(np.zeros((40, 30, 3), dtype=np.uint8), 3, 2)
    after = np.random.get_state()[1].copy()
    np.random.seed(4)
    for _ in range(2 * (40 - 6) * (30 - 6)):
        np.random.randint(-3, 3, size=(2,))
    assert np.array_equal(np.random.get_state()[1], after)


@pytest.mark.parametrize("name", sorted(FAST_CORRUPTIONS))
def test_corrupt_gives_the_library_pixels_on_its_fast_path(name: str) -> None:
    for image in IMAGES:
        for severity in (1, 2, 3, 4, 5):
            for seed in (0, 3):
                fast = corrupt(image, name, severity, seed)
                assert np.array_equal(fast, corrupt(image, name, severity, seed, reference=True)), (image.shape,
                                                                                                      severity, seed)


def test_zoom_blur_reuses_zoomed_copies_only_for_the_same_image() -> None:
    a, b = IMAGES[1], IMAGES[1].copy()
    b[80, 80] ^= 0xFF  # one pixel differs: the copies of a must not be used for b
    for image in (a, b, a, b):
        for severity in (5, 1, 3):
            assert np.array_equal(zoom_blur(Image.fromarray(image), severity),
                                  library.zoom_blur(Image.fromarray(image), severity))
    assert sum(len(c) for c in ZOOM_FACTORS) == 63
    assert len({float(f) for c in ZOOM_FACTORS for f in c}) == 24


def test_frost_equals_the_library_for_every_picture_it_can_draw() -> None:
    image = Image.fromarray(IMAGES[1])
    pictures = set()
    for seed in range(12):
        np.random.seed(seed)
        pictures.add(np.random.randint(5))
        for severity in (1, 5):
            np.random.seed(seed)
            expected = library.frost(image, severity)
            np.random.seed(seed)
            assert np.array_equal(frost(image, severity), expected), (seed, severity)
    assert pictures == {0, 1, 2, 3, 4}


def test_brightness_equals_the_library_and_converts_each_image_to_hsv_once_per_image() -> None:
    a, b = IMAGES[1], IMAGES[1].copy()
    b[5, 7] ^= 0x55  # one pixel differs: the HSV of a must not be used for b
    for image in (a, b, a, IMAGES[0], IMAGES[2]):
        for severity in (1, 5, 3):
            got = brightness(Image.fromarray(image), severity)
            expected = library.brightness(Image.fromarray(image), severity)
            assert got.dtype == expected.dtype == np.float64
            assert np.array_equal(got, expected), (image.shape, severity)


@pytest.mark.parametrize("severity", [1, 2, 3, 4, 5])
def test_elastic_transform_equals_the_library_float_for_float(severity: int) -> None:
    for image in IMAGES:
        for seed in (0, 9):
            np.random.seed(seed)
            expected = library.elastic_transform(Image.fromarray(image), severity)
            after_library = np.random.get_state()[1].copy()
            np.random.seed(seed)
            got = elastic_transform(Image.fromarray(image), severity)
            assert got.dtype == expected.dtype == np.float32
            assert np.array_equal(got, expected), (image.shape, seed)
            assert np.array_equal(np.random.get_state()[1], after_library)


@pytest.mark.parametrize("severity", [1, 2, 3, 4, 5])
def test_snow_equals_the_library_float_for_float(severity: int) -> None:
    for image in IMAGES:
        for seed in (0, 21):
            np.random.seed(seed)
            expected = library.snow(Image.fromarray(image), severity)
            after_library = np.random.get_state()[1].copy()
            np.random.seed(seed)
            got = snow(Image.fromarray(image), severity)
            assert got.dtype == expected.dtype == np.float64
            assert np.array_equal(got, expected), (image.shape, seed)
            assert np.array_equal(np.random.get_state()[1], after_library)
