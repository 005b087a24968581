"""Irregular masks: ratio buckets, reproducibility, odd sizes, applying and loading masks."""

import hashlib
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image

from robustness.masks import (
    BUCKETS,
    MASK_ATTEMPTS,
    MAX_RATIO_SPEC_LENGTH,
    MIN_RETRY_BUDGET,
    MaskCache,
    MaskRatio,
    MaskRatioError,
    RatioRange,
    apply_mask,
    check_mask_batch,
    distinct_mask_count,
    irregular_mask,
    load_mask_folder,
    make_mask_generator,
    make_shape,
    masks,
    parse_ratio,
    ratio_range,
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


def test_a_spec_is_parsed_once_into_a_range_that_the_mask_functions_take_as_it_is(monkeypatch):
    asked = MaskRatio.parse("medium")
    assert asked.describe() == {"spec": "medium", "range": [0.2, 0.4]}
    assert isinstance(asked.range, RatioRange) and asked.range == (0.2, 0.4) and ratio_range(asked.range) is asked.range
    parses = []
    monkeypatch.setattr("robustness.masks.parse_ratio", lambda spec: parses.append(spec) or parse_ratio(spec))
    assert check_mask_batch(4, 8, 8, asked.range) is asked.range
    MaskCache(1 << 20)(4, 8, 8, asked.range, seed=0)  # drawn (checked again) and cached: no spec is parsed again
    assert parses == []


@pytest.mark.parametrize("refused", [lambda: MaskRatio.parse("b7"), lambda: check_mask_batch(5, 2, 2, "b3"),
                                     lambda: masks(2, 4, 4, "0.9-0.91", seed=0)])
def test_every_refusal_of_a_ratio_is_a_mask_ratio_error(refused):
    with pytest.raises(MaskRatioError):
        refused()


# The pattern parse_ratio used before issue 12: the same language, but it backtracks (quadratic in the length).
_OLD_RANGE = re.compile(r"^\s*(\d*\.?\d+(?:[eE][-+]?\d+)?)\s*-\s*(\d*\.?\d+(?:[eE][-+]?\d+)?)\s*$")


def _old_range(spec: str) -> tuple[float, float] | None:
    match = _OLD_RANGE.match(spec.strip().lower())
    return None if match is None else (float(match.group(1)), float(match.group(2)))


def _parsed_or_none(spec: str) -> tuple[float, float] | None:
    try:
        return parse_ratio(spec)
    except ValueError:
        return None


@pytest.mark.parametrize(
    ("spec", "expected"),
    [("1e-3-0.5", (0.001, 0.5)), ("1E-2 - 5E-1", (0.01, 0.5)), ("0-1", (0.0, 1.0)), ("00.5-1", (0.5, 1.0)),
     ("\t0.2 -0.35\n", (0.2, 0.35)), ("0.1-1e0", (0.1, 1.0))],
)
def test_exponents_and_spacing_in_ranges_are_still_accepted(spec, expected):
    assert parse_ratio(spec) == expected


@pytest.mark.parametrize("spec", ["5.-0.6", "0.2-1e-1-", "0.1-0.2-0.3", "1e+0-1-", "0.2 - 0.3x", "+0.2-0.3", "0x1-1",
                                  "0.2e -0.3", "inf-1", "0.2--0.3"])
def test_near_miss_ranges_are_still_refused(spec):
    with pytest.raises(ValueError, match=r"low\|medium\|high"):
        parse_ratio(spec)


@FAST
@given(st.text(alphabet="0159.-eE+ x\t", min_size=1, max_size=MAX_RATIO_SPEC_LENGTH))
def test_range_parser_accepts_exactly_what_the_old_pattern_accepted(spec):
    old = _old_range(spec)
    if old is not None and 0.0 <= old[0] < old[1] <= 1.0:
        assert parse_ratio(spec) == old
    elif spec.strip().lower() not in {*BUCKETS, "low", "medium", "high"}:
        assert _parsed_or_none(spec) is None


@pytest.mark.parametrize("spec", ["1" * 20_000 + "x", "0." + "5" * 20_000 + "-", " " * 20_000 + "b1",
                                  "0.2-" + "1e" * 10_000])
def test_a_spec_over_the_length_limit_is_refused_at_once(spec):
    start = time.perf_counter()
    with pytest.raises(ValueError, match=f"{len(spec):,} characters long; the limit is {MAX_RATIO_SPEC_LENGTH}"):
        parse_ratio(spec)
    assert time.perf_counter() - start < 0.1


def test_the_worst_spec_under_the_limit_is_still_fast():
    """The old pattern's worst case (digits and a bad tail) at the longest length that reaches the parser."""
    specs = ["1" * (MAX_RATIO_SPEC_LENGTH - 1) + "x", "." + "1" * (MAX_RATIO_SPEC_LENGTH - 2) + "-",
             "1-" + "1" * (MAX_RATIO_SPEC_LENGTH - 3) + "x", "-" * MAX_RATIO_SPEC_LENGTH]
    start = time.perf_counter()
    for _ in range(1000):
        for spec in specs:
            assert _parsed_or_none(spec) is None
    assert time.perf_counter() - start < 1.0  # 4000 parses; the old pattern took seconds for one long spec


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


@pytest.mark.parametrize(
    ("args", "digest"),
    [
        ((3, 97, 131, "b5", 2024), "688d5273e361b2554bf02abf6bb68a377cf060a63e075b497be3af865bb57da6"),
        ((4, 2, 2, "b3", 0), "afe92a4ca7790e0d68cad1dba0d67a4262eef7d9c133a995ca0cae5bf11665af"),
        ((8, 128, 128, "0.999-1", 1), "978b78f151217414d060b58d50cb4eb446cef10ee9ecce455a4421d5529dea76"),
        ((16, 64, 64, "1e-2-0.35", 5), "42f640d4153f0c4de6e042f51e3bb593739074fedb5209ea1ca5baac58fb36c7"),
    ],
)
def test_masks_are_bit_for_bit_those_made_before_the_work_bounds(args, digest):
    """Digests taken with the generator as it was before issue 12 (no redraw budget, the backtracking parser)."""
    assert hashlib.sha256(masks(*args).tobytes()).hexdigest() == digest


def test_distinct_mask_counts_are_hand_computed():
    assert distinct_mask_count(2, 2, 0.2, 0.3, cap=100) == 4  # C(4, 1)
    assert distinct_mask_count(3, 3, 0.5, 0.6, cap=1000) == 126  # C(9, 5)
    assert distinct_mask_count(3, 3, 0.5, 0.6, cap=100) == 100  # counted only up to the cap
    assert distinct_mask_count(128, 128, 0.99999, 1.0, cap=64) == 1  # only the full mask
    assert distinct_mask_count(128, 128, 0.99993, 1.0, cap=64) == 64  # 16384 + 1 masks, capped
    assert distinct_mask_count(1080, 1920, 0.5, 0.6, cap=2**80) == 2**80


def test_a_range_with_fewer_masks_than_asked_is_refused_before_drawing():
    start = time.perf_counter()
    with pytest.raises(ValueError) as caught:
        masks(64, 224, 224, "0.99999-1", seed=0)
    assert time.perf_counter() - start < 0.5  # it was 15 s: 1280 draws of a full mask
    message = str(caught.value)
    assert "(0.99999, 1.0]" in message and "224x224" in message and "only 1 distinct" in message
    assert "50176 hole pixels of 50176" in message and "widen the range" in message
    with pytest.raises(ValueError, match=r"only 4 distinct 2x2 masks .*fewer than the 5 requested"):
        masks(5, 2, 2, "b3", seed=0)
    with pytest.raises(ValueError, match="ask for at most 4"):
        check_mask_batch(5, 2, 2, "b3")
    assert check_mask_batch(4, 2, 2, "b3") == (0.2, 0.3)
    full = masks(1, 224, 224, "0.99999-1", seed=0)  # one mask of that range exists, and is given
    assert full.all()


class _RepeatingGenerator:
    """A stand-in generator whose k-th call returns mask number k // period (16x16, from the bits of the number)."""

    name = "repeating"

    def __init__(self, period: int) -> None:
        self.period, self.calls = period, 0

    def __call__(self, h, w, lo, hi, rng):
        number = self.calls // self.period
        self.calls += 1
        bits = np.unpackbits(np.array([number], dtype=">u4").view(np.uint8))
        mask = np.zeros(h * w, dtype=bool)
        mask[: bits.size] = bits.astype(bool)
        mask[-1] = True
        return mask.reshape(h, w)


def test_a_mask_that_keeps_repeating_stops_after_its_draws():
    stuck = _RepeatingGenerator(period=10**9)  # the same mask for ever
    with pytest.raises(ValueError) as caught:
        masks(3, 16, 16, (0.0, 1.0), seed=0, generator=stuck)
    assert stuck.calls == 1 + MASK_ATTEMPTS  # mask 0, then mask 1's draws, then the error
    message = str(caught.value)
    assert f"mask 1 was still a repeat after {MASK_ATTEMPTS} draws" in message
    assert "(0.0, 1.0] is too narrow for 3 different 16x16 masks" in message and "widen the range" in message


def test_the_batch_redraw_budget_is_exact():
    """max(MIN_RETRY_BUDGET, n) redraws per batch: one per mask always fits, two per mask fit 33 masks, not 34."""
    for n in (MIN_RETRY_BUDGET + 1, 3 * MIN_RETRY_BUDGET):
        once = masks(n, 16, 16, (0.0, 1.0), seed=0, generator=_RepeatingGenerator(period=2))
        assert len({m.tobytes() for m in once}) == n
    twice = masks(33, 16, 16, (0.0, 1.0), seed=0, generator=_RepeatingGenerator(period=3))  # 64 redraws
    assert len({m.tobytes() for m in twice}) == 33
    with pytest.raises(ValueError, match=f"used up its {MIN_RETRY_BUDGET} redraws of repeated masks by mask 33"):
        masks(34, 16, 16, (0.0, 1.0), seed=0, generator=_RepeatingGenerator(period=3))


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
