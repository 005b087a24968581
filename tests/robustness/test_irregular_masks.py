"""Irregular masks: ratio buckets, reproducibility, odd sizes, applying and loading masks."""

import hashlib
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image

from robustness.masks import (
    BUCKETS,
    apply_mask,
    irregular_mask,
    load_mask_folder,
    make_mask_generator,
    make_shape,
    masks,
    parse_ratio,
    reachable_counts,
    resize_mask,
)

PROJECT_ROOT = Path(__file__).resolve().parents[2]
FAST = settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])


# ---------------------------------------------------------------- ratio specs


@pytest.mark.parametrize(
    ("spec", "expected"),
    [
        ("b1", (0.01, 0.1)),
        ("b4", (0.3, 0.4)),
        ("B6", (0.5, 0.6)),
        ("low", (0.01, 0.1)),
        ("medium", (0.2, 0.4)),
        ("high", (0.5, 0.6)),
        ("0.2-0.35", (0.2, 0.35)),
        (" .05 - .5 ", (0.05, 0.5)),
        ((0.0, 1.0), (0.0, 1.0)),
        ([0.25, 0.3], (0.25, 0.3)),
    ],
)
def test_parse_ratio_accepts_names_aliases_and_ranges(spec, expected):
    assert parse_ratio(spec) == expected


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ("", "low|medium|high|b1..b6|a-b"),
        ("b7", "low|medium|high|b1..b6|a-b"),
        ("0.2-", "low|medium|high|b1..b6|a-b"),
        ("-0.1-0.2", "low|medium|high|b1..b6|a-b"),
        ("0.4-0.2", "is empty"),
        ("0.3-0.3", "is empty"),
        ("0.5-1.5", "outside (0, 1]"),
        ((-0.1, 0.2), "outside (0, 1]"),
        ((0.1,), "(lo, hi) pair"),
        ((0.1, float("nan")), "finite"),
    ],
)
def test_parse_ratio_rejects_bad_specs_with_a_clear_message(spec, message):
    with pytest.raises(ValueError, match=message.replace("|", r"\|").replace("(", r"\(").replace(")", r"\)")):
        parse_ratio(spec)


def test_reachable_counts_for_a_small_image_are_hand_computed():
    # 10x10: ratios k/100 in (0.5, 0.6] are k = 51..60; in (0.01, 0.1] they are k = 2..10.
    assert reachable_counts(10, 10, 0.5, 0.6) == (51, 60)
    assert reachable_counts(10, 10, 0.01, 0.1) == (2, 10)
    # 3x3: only 5/9 = 0.556 lies in (0.5, 0.6].
    assert reachable_counts(3, 3, 0.5, 0.6) == (5, 5)


def test_unreachable_bucket_names_the_size_and_the_range():
    with pytest.raises(ValueError, match=r"\(0\.5, 0\.6\] is unreachable for a 1x1 mask"):
        irregular_mask(1, 1, "high", seed=0)


# ---------------------------------------------------------------- properties (hypothesis)


@FAST
@given(
    bucket=st.sampled_from(sorted(BUCKETS)),
    h=st.integers(8, 96),
    w=st.integers(8, 96),
    seed=st.integers(0, 2**32),
)
def test_measured_ratio_lies_inside_the_bucket(bucket, h, w, seed):
    lo, hi = BUCKETS[bucket]
    mask = irregular_mask(h, w, bucket, seed)
    assert mask.shape == (h, w)
    assert mask.dtype == np.bool_
    assert lo < mask.mean() <= hi


@FAST
@given(
    lo=st.floats(0.0, 0.9),
    width=st.floats(0.02, 0.5),
    size=st.integers(16, 80),
    seed=st.integers(0, 10**6),
)
def test_measured_ratio_lies_inside_any_explicit_range(lo, width, size, seed):
    hi = min(1.0, lo + width)
    mask = irregular_mask(size, size + 3, (lo, hi), seed)
    assert lo < mask.mean() <= hi


@FAST
@given(bucket=st.sampled_from(sorted(BUCKETS)), size=st.integers(32, 96), seed=st.integers(0, 2**31))
def test_same_seed_same_mask_and_different_seed_different_mask(bucket, size, seed):
    first = irregular_mask(size, size, bucket, seed)
    again = irregular_mask(size, size, bucket, seed)
    other = irregular_mask(size, size, bucket, seed + 1)
    assert np.array_equal(first, again)
    assert not np.array_equal(first, other)


@FAST
@given(h=st.integers(1, 6), w=st.integers(1, 6), bucket=st.sampled_from(sorted(BUCKETS)))
def test_tiny_sizes_either_hit_the_bucket_or_say_it_is_unreachable(h, w, bucket):
    lo, hi = BUCKETS[bucket]
    possible = any(lo < k / (h * w) <= hi for k in range(h * w + 1))
    if possible:
        mask = irregular_mask(h, w, bucket, seed=3)
        assert mask.shape == (h, w)
        assert lo < mask.mean() <= hi
    else:
        with pytest.raises(ValueError, match=f"unreachable for a {h}x{w} mask"):
            irregular_mask(h, w, bucket, seed=3)


# ---------------------------------------------------------------- odd sizes


def test_one_by_one_mask_exists_only_for_ranges_that_contain_ratio_one():
    mask = irregular_mask(1, 1, (0.5, 1.0), seed=0)
    assert mask.shape == (1, 1)
    assert mask.dtype == np.bool_
    assert mask[0, 0]
    for bucket in BUCKETS:
        with pytest.raises(ValueError, match="unreachable for a 1x1 mask"):
            irregular_mask(1, 1, bucket, seed=0)


@pytest.mark.parametrize("bucket", sorted(BUCKETS))
def test_17x301_masks_have_the_right_shape_and_ratio(bucket):
    lo, hi = BUCKETS[bucket]
    batch = masks(3, 17, 301, bucket, seed=11)
    assert batch.shape == (3, 17, 301)
    assert batch.dtype == np.bool_
    ratios = batch.mean(axis=(1, 2))
    assert np.all((ratios > lo) & (ratios <= hi)), ratios


@pytest.mark.parametrize("bucket", ["b1", "b6"])
def test_full_hd_mask_has_the_right_shape_and_ratio(bucket):
    lo, hi = BUCKETS[bucket]
    mask = irregular_mask(1080, 1920, bucket, seed=5)
    assert mask.shape == (1080, 1920)
    assert mask.dtype == np.bool_
    assert lo < mask.mean() <= hi


def test_size_and_seed_must_be_valid():
    with pytest.raises(ValueError, match="h=0 must be a positive integer"):
        irregular_mask(0, 5, "b1", seed=0)
    with pytest.raises(ValueError, match=r"w=2\.5 must be a positive integer"):
        irregular_mask(5, 2.5, "b1", seed=0)
    with pytest.raises(ValueError, match="seed -1 must be a non-negative integer"):
        irregular_mask(5, 5, "b1", seed=-1)
    with pytest.raises(ValueError, match="n=-2"):
        masks(-2, 5, 5, "b1", seed=0)


# ---------------------------------------------------------------- batches and reproducibility


def test_batch_masks_are_pairwise_different_and_start_with_the_single_mask():
    batch = masks(16, 64, 64, "medium", seed=9)
    assert batch.shape == (16, 64, 64)
    digests = {hashlib.sha256(m.tobytes()).hexdigest() for m in batch}
    assert len(digests) == 16
    assert np.array_equal(batch[0], irregular_mask(64, 64, "medium", seed=9))
    ratios = batch.mean(axis=(1, 2))
    assert np.all((ratios > 0.2) & (ratios <= 0.4))


def test_small_batch_is_pairwise_different_when_few_masks_exist():
    # 2x2 in (0.2, 0.3] needs exactly one hole pixel: only 4 masks exist, so 4 must all differ.
    batch = masks(4, 2, 2, "b3", seed=0)
    assert sorted(np.flatnonzero(m)[0] for m in batch.reshape(4, -1)) == [0, 1, 2, 3]


def test_masks_are_identical_across_processes():
    code = (
        "import hashlib; from robustness.masks import masks; "
        "print(hashlib.sha256(masks(3, 97, 131, 'b5', seed=2024).tobytes()).hexdigest())"
    )
    env = {**os.environ, "PYTHONHASHSEED": "12345"}
    out = subprocess.run(
        [sys.executable, "-c", code], cwd=PROJECT_ROOT, env=env, capture_output=True, text=True, check=True
    )
    here = hashlib.sha256(masks(3, 97, 131, "b5", seed=2024).tobytes()).hexdigest()
    assert out.stdout.strip() == here


def test_generator_presets_and_shape_kwargs():
    rect = irregular_mask(64, 64, "b2", seed=1, generator="irregular_rect")
    assert 0.1 < rect.mean() <= 0.2
    wide = make_mask_generator("strokes", stroke={"width": (0.1, 0.12)})
    mask = irregular_mask(64, 64, "b4", seed=1, generator=wide)
    assert 0.3 < mask.mean() <= 0.4
    # The generator name is part of the seed: another preset gives another mask.
    assert not np.array_equal(irregular_mask(64, 64, "b4", 1, "blobs"), irregular_mask(64, 64, "b4", 1, "strokes"))
    with pytest.raises(ValueError, match="unknown mask generator 'clouds'"):
        make_mask_generator("clouds")
    with pytest.raises(ValueError, match="unknown mask shape 'star'"):
        make_shape("star")
    with pytest.raises(ValueError, match=r"\['arc'\] name shapes not used by 'strokes'"):
        make_mask_generator("strokes", arc={})


# ---------------------------------------------------------------- resize and apply


def test_resize_mask_nearest_upsamples_blocks_and_downsamples_at_pixel_centres():
    small = np.array([[1, 0], [0, 1]], dtype=bool)
    expected = np.array([[1, 1, 0, 0], [1, 1, 0, 0], [0, 0, 1, 1], [0, 0, 1, 1]], dtype=bool)
    assert np.array_equal(resize_mask(small, 4, 4), expected)
    big = np.arange(16).reshape(4, 4)
    assert resize_mask(big, 2, 2).tolist() == [[5, 7], [13, 15]]  # rows/cols 1 and 3
    batch = np.stack([small, ~small])
    assert resize_mask(batch, 4, 4).shape == (2, 4, 4)
    assert np.array_equal(resize_mask(batch, 4, 4)[1], ~expected)


def test_resize_mask_matches_pillow_nearest_on_random_masks():
    rng = np.random.default_rng(0)
    for src, dst in [((37, 53), (100, 17)), ((448, 448), (224, 224)), ((3, 5), (448, 448))]:
        mask = rng.random(src) > 0.5
        pil = Image.fromarray(mask.astype(np.uint8) * 255).resize(dst[::-1], Image.Resampling.NEAREST)
        assert np.array_equal(resize_mask(mask, *dst), np.asarray(pil) > 0)


def test_apply_mask_zeroes_holes_in_numpy_layouts():
    mask = np.zeros((4, 6), dtype=bool)
    mask[1, 2] = mask[3, 5] = True
    hwc = np.full((4, 6, 3), 0.5, dtype=np.float32)
    out = apply_mask(hwc, mask)
    assert out.dtype == np.float32
    assert out[1, 2].tolist() == [0, 0, 0] and out[3, 5].tolist() == [0, 0, 0]
    assert out.sum() == pytest.approx(0.5 * 3 * (24 - 2))
    chw = np.full((3, 4, 6), -1.0)
    out = apply_mask(chw, mask)
    assert out[:, 1, 2].tolist() == [0, 0, 0] and out[:, 0, 0].tolist() == [-1, -1, -1]
    nchw = np.ones((2, 3, 4, 6))
    per_image = np.stack([mask, ~mask])
    out = apply_mask(nchw, per_image)
    assert out[0].sum() == 3 * 22 and out[1].sum() == 3 * 2
    nhwc = np.ones((2, 4, 6, 3))
    assert apply_mask(nhwc, per_image)[1].sum() == 3 * 2


def test_apply_mask_resizes_the_mask_to_the_image():
    mask = np.array([[True, False], [False, False]])
    image = np.ones((3, 8, 6))
    out = apply_mask(image, mask)
    expected = np.ones((8, 6))
    expected[:4, :3] = 0
    assert np.array_equal(out[0], expected) and np.array_equal(out[2], expected)


def test_apply_mask_on_torch_keeps_dtype_device_and_gradient():
    image = torch.full((2, 3, 8, 8), 2.0, requires_grad=True)
    mask = irregular_mask(16, 16, "b3", seed=4)
    out = apply_mask(image, mask)
    assert isinstance(out, torch.Tensor) and out.dtype == torch.float32
    kept = ~resize_mask(mask, 8, 8)
    assert torch.equal(out[1, 2], torch.from_numpy(kept).float() * 2.0)
    out.sum().backward()
    assert torch.equal(image.grad[0, 0], torch.from_numpy(kept).float())


def test_apply_mask_rejects_ambiguous_or_mismatched_inputs():
    with pytest.raises(ValueError, match=r"channel axis of image shape \(3, 5, 3\)"):
        apply_mask(np.ones((3, 5, 3)), np.zeros((5, 5), bool))
    assert apply_mask(np.ones((3, 5, 3)), np.ones((5, 5), bool), channels_last=False).sum() == 0
    with pytest.raises(ValueError, match="a batch of 2 masks needs a batched image"):
        apply_mask(np.ones((3, 5, 5)), np.zeros((2, 5, 5), bool))


# ---------------------------------------------------------------- loading real masks


def _save_png(path: Path, array: np.ndarray) -> None:
    Image.fromarray(array.astype(np.uint8)).save(path)


def test_load_mask_folder_binarises_resizes_and_buckets_by_measured_ratio(tmp_path):
    quarter = np.zeros((20, 20))
    quarter[:10, :10] = 255  # ratio 0.25 -> b3
    most = np.zeros((10, 10))
    most[:, :6] = 200  # ratio 0.6 -> b6 (hi is inclusive)
    faint = np.full((10, 10), 100)  # below the threshold: no hole -> unbucketed
    _save_png(tmp_path / "a.png", quarter)
    _save_png(tmp_path / "b.png", most)
    _save_png(tmp_path / "c.png", faint)
    (tmp_path / "notes.txt").write_text("not a mask")
    buckets = load_mask_folder(tmp_path, 40, 40)
    assert {k: len(v) for k, v in buckets.items()} == {
        "b1": 0, "b2": 0, "b3": 1, "b4": 0, "b5": 0, "b6": 1, "unbucketed": 1,
    }  # fmt: skip
    assert buckets["b3"][0].shape == (40, 40) and buckets["b3"][0].dtype == np.bool_
    assert buckets["b3"][0][:20, :20].all() and not buckets["b3"][0][20:, :].any()
    assert buckets["b6"][0].mean() == 0.6
    # Black holes: ratios become 0.75 and 1.0 (unbucketed) and 0.4 (b4, whose hi is inclusive).
    inverted = load_mask_folder(tmp_path, 20, 20, invert=True)
    assert sorted(m.mean() for m in inverted["unbucketed"]) == [0.75, 1.0]
    assert [m.mean() for m in inverted["b4"]] == [0.4]


def test_load_mask_folder_errors_name_the_folder(tmp_path):
    with pytest.raises(ValueError, match="does not exist"):
        load_mask_folder(tmp_path / "missing", 8, 8)
    with pytest.raises(ValueError, match=r"holds no \.png"):
        load_mask_folder(tmp_path, 8, 8)
    (tmp_path / "broken.png").write_bytes(b"not a png")
    with pytest.raises(ValueError, match=r"broken\.png"):
        load_mask_folder(tmp_path, 8, 8)
