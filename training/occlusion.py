"""Where training and evaluation masks come from: generated irregular masks, or a folder of real mask PNGs."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from robustness.masks import BUCKETS, load_mask_folder, masks, parse_ratio

ALL_BUCKETS = "buckets"  # each mask's bucket drawn uniformly from b1..b6, then its ratio within the bucket


class MaskSource:
    """Seeded (n, S, S) hole masks (1 = hole) in a hole-ratio range; from ``folder`` when one is given.

    ``ratio="buckets"`` draws every mask's bucket uniformly from the six Irregular Masks buckets, each mask
    on its own, so a batch mixes low and high masks (the MSL supplement's Fig. 6 shows training masks of
    every size, some over 50%). A folder (the Irregular Masks PNGs, white = hole) is read once at the
    training size; the masks whose measured ratio lies in the range (or bucket) are drawn from with the
    seed. Without a folder the project's seeded generator makes them (``robustness.masks.masks``).
    """

    def __init__(self, ratio: str, size: int, folder: str | Path | None = None) -> None:
        self.mixed = ratio == ALL_BUCKETS
        ranges = list(BUCKETS.values()) if self.mixed else [parse_ratio(ratio)]
        self.ratio = (ranges[0][0], ranges[-1][1]) if self.mixed else ranges[0]
        self.ranges, self.size = ranges, size
        self.pools: list[np.ndarray] | None = None
        if folder:
            loaded = [m for bucket in load_mask_folder(folder, size, size).values() for m in bucket]
            self.pools = []
            for low, high in ranges:
                chosen = [m for m in loaded if low < m.mean() <= high]
                if not chosen:
                    raise ValueError(f"{folder}: none of its {len(loaded)} masks has a hole ratio in ({low}, {high}]")
                self.pools.append(np.stack(chosen).astype(bool))

    @property
    def pool(self) -> np.ndarray | None:
        """The folder's masks in range, all buckets together (None without a folder)."""
        return None if self.pools is None else np.concatenate(self.pools)

    def buckets(self, n: int, seed: int) -> np.ndarray:
        """Index into ``self.ranges`` of each of n masks drawn with ``seed`` (all 0 for a single range)."""
        if not self.mixed:
            return np.zeros(n, dtype=np.int64)
        return np.random.default_rng([seed, 0xB0C]).integers(len(self.ranges), size=n)

    def draw(self, n: int, seed: int) -> torch.Tensor:
        """n masks as a float tensor, reproducible from ``seed``."""
        holes = np.zeros((n, self.size, self.size), dtype=bool)
        which = self.buckets(n, seed)
        rng = np.random.default_rng(seed)
        for b in np.unique(which):
            rows = np.flatnonzero(which == b)
            if self.pools is None:
                holes[rows] = masks(len(rows), self.size, self.size, self.ranges[b], seed=seed)
            else:
                holes[rows] = self.pools[b][rng.integers(len(self.pools[b]), size=len(rows))]
        return torch.from_numpy(holes.astype(np.float32))

    def one_each(self, n: int, first_seed: int) -> torch.Tensor:
        """n masks where mask j depends on ``first_seed + j`` alone (per-image masks independent of batching)."""
        return torch.cat([self.draw(1, first_seed + j) for j in range(n)])
