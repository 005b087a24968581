"""/robustness copies made on the model's device: the same batch as the host path, masks kept there once."""

import numpy as np
import torch

from robustness.masks import parse_ratio
from robustness.occlusion_report import occluded_batch
from server.device_masks import DeviceMaskCache, device_masks, occluded_batch_on


def test_the_device_batch_is_the_host_batch_bit_for_bit():
    clean = np.random.default_rng(0).standard_normal((3, 40, 48), dtype=np.float32)
    for ratio, n, seed in ((parse_ratio("high"), 8, 0), (parse_ratio("b2"), 3, 7)):
        host_batch, host_holes = occluded_batch(clean, ratio, n, seed)
        batch, holes = occluded_batch_on("cpu", clean, ratio, n, seed)
        assert batch.shape == (n + 1, 3, 40, 48) and batch.dtype == torch.float32
        np.testing.assert_array_equal(batch.numpy(), host_batch)
        np.testing.assert_array_equal(holes, host_holes)
        assert np.all(batch.numpy()[1:][np.broadcast_to(holes[:, None], (n, 3, 40, 48))] == 0)


def test_a_tensor_already_on_the_device_is_used_as_it_is():
    clean = np.random.default_rng(1).standard_normal((3, 32, 32), dtype=np.float32)
    from_numpy, _ = occluded_batch_on("cpu", clean, parse_ratio("medium"), 4, 3)
    from_tensor, _ = occluded_batch_on("cpu", torch.from_numpy(clean), parse_ratio("medium"), 4, 3)
    assert torch.equal(from_numpy, from_tensor)


def test_masks_are_copied_to_the_device_once_and_the_cache_stays_within_its_bytes():
    clean = np.zeros((3, 24, 24), dtype=np.float32)
    occluded_batch_on("cpu", clean, parse_ratio("low"), 5, 11)
    key = (5, 24, 24, parse_ratio("low"), 11, "cpu")
    kept = device_masks._entries[key]
    occluded_batch_on("cpu", clean, parse_ratio("low"), 5, 11)
    assert device_masks._entries[key] is kept  # the second request found it there

    small = DeviceMaskCache(max_bytes=2 * 24 * 24 * 5)  # room for two batches of five 24x24 masks
    holes = np.zeros((5, 24, 24), dtype=bool)
    for seed in range(3):
        small.keep(holes, (5, 24, 24, (0.1, 0.2), seed), torch.device("cpu"))
    assert small.bytes == 2 * 24 * 24 * 5 and [k[4] for k in small._entries] == [1, 2]  # the oldest left
