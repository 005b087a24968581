"""The 15 ImageNet-C corruptions: identity at severity 0, seeded, stronger with severity, and strict about input."""

from __future__ import annotations

import numpy as np
import pytest

from robustness.corruptions import CORRUPTIONS, corrupt, parse_corruptions, parse_severities

HENDRYCKS_COMMON = ("gaussian_noise", "shot_noise", "impulse_noise", "defocus_blur", "glass_blur", "motion_blur",
                    "zoom_blur", "snow", "frost", "fog", "brightness", "contrast", "elastic_transform", "pixelate",
                    "jpeg_compression")


@pytest.fixture(scope="module")
def scene() -> np.ndarray:
    """A 48x64 picture with structure (gradient + a bright square), so blurs and pixelation change it."""
    y, x = np.mgrid[0:48, 0:64]
    image = np.stack([x * 4, y * 5, (x + y) * 2], axis=-1).astype(np.uint8)
    image[10:30, 20:40] = 240
    return image


def test_the_set_is_the_fifteen_common_corruptions_of_imagenet_c() -> None:
    assert CORRUPTIONS == HENDRYCKS_COMMON


@pytest.mark.parametrize("name", HENDRYCKS_COMMON)
def test_every_corruption_runs_at_every_severity_and_severity_zero_is_the_identity(scene: np.ndarray,
                                                                                   name: str) -> None:
    assert np.array_equal(corrupt(scene, name, 0), scene)
    for severity in range(1, 6):
        out = corrupt(scene, name, severity, seed=3)
        assert out.shape == scene.shape and out.dtype == np.uint8
        assert not np.array_equal(out, scene), f"{name} at severity {severity} left the image unchanged"


@pytest.mark.parametrize("name", HENDRYCKS_COMMON)
def test_the_same_seed_gives_the_same_pixels(scene: np.ndarray, name: str) -> None:
    assert np.array_equal(corrupt(scene, name, 3, seed=7), corrupt(scene, name, 3, seed=7))


@pytest.mark.parametrize("name", ["gaussian_noise", "shot_noise", "impulse_noise", "glass_blur", "snow", "fog"])
def test_random_corruptions_differ_between_seeds(scene: np.ndarray, name: str) -> None:
    assert not np.array_equal(corrupt(scene, name, 3, seed=1), corrupt(scene, name, 3, seed=2))


@pytest.mark.parametrize("name", ["gaussian_noise", "impulse_noise", "contrast", "brightness", "motion_blur"])
def test_the_change_grows_with_severity_where_the_parameters_are_monotone(scene: np.ndarray, name: str) -> None:
    change = [np.abs(corrupt(scene, name, s, seed=0).astype(float) - scene).mean() for s in range(1, 6)]
    assert change == sorted(change), change


def test_the_global_numpy_generator_and_numpy_itself_are_left_alone(scene: np.ndarray) -> None:
    np.random.seed(123)
    expected = np.random.random(3)
    np.random.seed(123)
    corrupt(scene, "fog", 2, seed=5)
    assert not hasattr(np, "float_")
    assert np.array_equal(np.random.random(3), expected)


@pytest.mark.parametrize(("args", "message"), [
    (("gaussian_noise", 6), "severity must be an integer 0..5"),
    (("gaussian_noise", -1), "severity must be an integer 0..5"),
    (("gaussian_noise", 2.5), "severity must be an integer 0..5"),
    (("../../etc/passwd", 1), "unknown corruption '../../etc/passwd'"),
])
def test_bad_names_and_severities_are_refused(scene: np.ndarray, args: tuple, message: str) -> None:
    with pytest.raises(ValueError, match=message.replace(".", r"\.").replace("(", r"\(")):
        corrupt(scene, *args)


def test_images_that_are_not_uint8_rgb_or_too_small_are_refused(scene: np.ndarray) -> None:
    with pytest.raises(ValueError, match="uint8"):
        corrupt(scene.astype(np.float32), "fog", 1)
    with pytest.raises(ValueError, match="too small"):
        corrupt(scene[:16], "fog", 1)


def test_corruption_and_severity_specs_parse() -> None:
    assert parse_corruptions("all") == HENDRYCKS_COMMON
    assert parse_corruptions("none") == ()
    assert parse_corruptions("fog, Snow,fog") == ("fog", "snow")
    assert parse_severities("1-5") == (1, 2, 3, 4, 5)
    assert parse_severities("5,1,3") == (1, 3, 5)
    assert parse_severities([2]) == (2,)
    with pytest.raises(ValueError, match="unknown corruption rain"):
        parse_corruptions("fog,rain")
    for bad in ("0-5", "6", "a-b", "", "5-1", "1-100000000", "1-" + "9" * 20, "9" * 20):
        with pytest.raises(ValueError, match="severities"):
            parse_severities(bad)  # a range is checked before it is expanded (1-100000000 once took 35 s, 4 GB)
