"""Training masks from a folder of real mask PNGs: only those in the ratio range, reproducible from the seed."""

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from training.occlusion import MaskSource


def write_mask(path: Path, hole_rows: int) -> None:
    """A 20x20 white-is-hole PNG whose first ``hole_rows`` rows are holes (ratio hole_rows / 20)."""
    pixels = np.zeros((20, 20), np.uint8)
    pixels[:hole_rows] = 255
    Image.fromarray(pixels).save(path)


def test_folder_masks_are_filtered_by_measured_ratio_and_seeded(tmp_path: Path) -> None:
    for name, rows in (("a.png", 1), ("b.png", 11), ("c.png", 12), ("d.png", 19)):  # 0.05, 0.55, 0.6, 0.95
        write_mask(tmp_path / name, rows)
    source = MaskSource("high", 20, tmp_path)  # (0.5, 0.6]
    assert sorted(float(m.mean()) for m in source.pool) == [0.55, 0.6]
    first, again = source.draw(6, seed=3), source.draw(6, seed=3)
    assert first.shape == (6, 20, 20) and np.array_equal(first.numpy(), again.numpy())
    assert {round(float(m.mean()), 2) for m in first} <= {0.55, 0.6}
    per_image = source.one_each(3, first_seed=3)
    assert np.array_equal(per_image[0].numpy(), source.draw(1, seed=3)[0].numpy())


def test_folder_without_a_mask_in_range_is_a_clear_error(tmp_path: Path) -> None:
    write_mask(tmp_path / "small.png", 1)
    with pytest.raises(ValueError, match=r"none of its 1 masks has a hole ratio in \(0.5, 0.6\]"):
        MaskSource("high", 20, tmp_path)


def test_generated_masks_without_a_folder_fall_in_the_range() -> None:
    holes = MaskSource("b3", 64).draw(4, seed=0).numpy()
    ratios = holes.reshape(4, -1).mean(axis=1)
    assert ((ratios > 0.2) & (ratios <= 0.3)).all()


def test_bucket_mix_draws_every_bucket_and_each_mask_lies_in_its_own() -> None:
    source = MaskSource("buckets", 48)
    holes = source.draw(60, seed=5).numpy()
    ratios = holes.reshape(60, -1).mean(axis=1)
    which = source.buckets(60, seed=5)
    bounds = [(0.01, 0.1), (0.1, 0.2), (0.2, 0.3), (0.3, 0.4), (0.4, 0.5), (0.5, 0.6)]
    for ratio, b in zip(ratios, which, strict=True):
        low, high = bounds[b]
        assert low < ratio <= high, (ratio, b)
    counts = np.bincount(which, minlength=6)
    assert (counts > 0).all() and counts.max() <= 20, counts  # uniform over 6: each expected 10 of 60 (numpy's
    # seeded integers are the same on every platform; here 11, 11, 15, 11, 9, 3)
    assert np.array_equal(holes, source.draw(60, seed=5).numpy())
    assert not np.array_equal(which, source.buckets(60, seed=6))  # a new step draws new buckets


def test_bucket_mix_from_a_folder_uses_each_buckets_own_masks(tmp_path: Path) -> None:
    for rows in (1, 3, 5, 7, 9, 11):  # ratios 0.05, 0.15, ..., 0.55: one mask per bucket
        write_mask(tmp_path / f"m{rows}.png", rows)
    source = MaskSource("buckets", 20, tmp_path)
    holes, which = source.draw(30, seed=1).numpy(), source.buckets(30, seed=1)
    assert [round(float(m.mean()), 2) for m in holes] == [round(0.05 + 0.1 * b, 2) for b in which]
