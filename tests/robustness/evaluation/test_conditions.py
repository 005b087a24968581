"""The condition grid, its seeds, and the inputs it builds (severity 0 = identity, holes = 0 after normalising)."""

import numpy as np
import pytest

from robustness.evaluation.conditions import (
    CORRUPTION,
    OCCLUSION,
    Condition,
    InputBuilder,
    condition_grid,
    derived_seed,
    parse_occlusion,
)
from robustness.masks import BUCKETS, masks

MEAN, STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)


@pytest.fixture(scope="module")
def picture() -> np.ndarray:
    return np.random.default_rng(0).integers(0, 256, size=(50, 70, 3), dtype=np.uint8)


def test_parse_occlusion_spellings():
    assert parse_occlusion("all") == tuple(BUCKETS)
    assert parse_occlusion("high") == ("b6",)
    assert parse_occlusion("b3, b1") == ("b1", "b3")
    assert parse_occlusion("none") == ()
    with pytest.raises(ValueError, match="unknown occlusion bucket 'b9'"):
        parse_occlusion("b9")


def test_grid_order_and_keys():
    grid = condition_grid(("b2",), ("fog", "snow"), (1, 3))
    assert [c.key for c in grid] == ["clean", "occlusion/b2", "corruption/fog/1", "corruption/fog/3",
                                     "corruption/snow/1", "corruption/snow/3"]


def test_seeds_depend_on_run_image_and_condition_only():
    assert derived_seed(0, 3, "occlusion/b6") == derived_seed(0, 3, "occlusion/b6")
    assert len({derived_seed(0, 3, "occlusion/b6"), derived_seed(1, 3, "occlusion/b6"),
                derived_seed(0, 4, "occlusion/b6"), derived_seed(0, 3, "occlusion/b5")}) == 4


def test_severity_zero_is_the_identity(picture):
    builder = InputBuilder((64, 48), MEAN, STD)
    resized = builder.resize(picture)
    clean = builder.normalise(resized)
    same = builder.build(resized, clean, Condition(CORRUPTION, corruption="gaussian_noise", severity=0), seed=9)
    assert np.array_equal(same, clean)
    noisy = builder.build(resized, clean, Condition(CORRUPTION, corruption="gaussian_noise", severity=1), seed=9)
    assert not np.array_equal(noisy, clean)
    again = builder.build(resized, clean, Condition(CORRUPTION, corruption="gaussian_noise", severity=1), seed=9)
    assert np.array_equal(noisy, again)


def test_occlusion_zeroes_the_seeded_holes_after_normalisation(picture):
    builder = InputBuilder((64, 48), MEAN, STD)
    resized = builder.resize(picture)
    clean = builder.normalise(resized)
    occluded = builder.build(resized, clean, Condition(OCCLUSION, bucket="b4"), seed=11)
    hole = masks(1, 64, 48, BUCKETS["b4"], 11)[0]
    assert 0.3 < hole.mean() <= 0.4
    assert np.all(occluded[:, hole] == 0.0)
    assert np.array_equal(occluded[:, ~hole], clean[:, ~hole])
