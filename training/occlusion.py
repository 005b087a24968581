"""Where training and evaluation masks come from: generated irregular masks, or a folder of real mask PNGs."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from robustness.masks import load_mask_folder, masks, parse_ratio


class MaskSource:
    """Seeded (n, S, S) hole masks (1 = hole) in a hole-ratio range; from ``folder`` when one is given.

    A folder (the Irregular Masks PNGs, white = hole) is read once at the training size; the masks whose
    measured ratio lies in the range are drawn from with the seed. Without a folder the project's seeded
    generator makes them (``robustness.masks.masks``).
    """

    def __init__(self, ratio: str, size: int, folder: str | Path | None = None) -> None:
        self.ratio, self.size = parse_ratio(ratio), size
        self.pool: np.ndarray | None = None
        if folder:
            loaded = [m for bucket in load_mask_folder(folder, size, size).values() for m in bucket]
            low, high = self.ratio
            chosen = [m for m in loaded if low < m.mean() <= high]
            if not chosen:
                raise ValueError(f"{folder}: none of its {len(loaded)} masks has a hole ratio in ({low}, {high}]")
            self.pool = np.stack(chosen).astype(bool)

    def draw(self, n: int, seed: int) -> torch.Tensor:
        """n masks as a float tensor, reproducible from ``seed``."""
        if self.pool is None:
            holes = masks(n, self.size, self.size, self.ratio, seed=seed)
        else:
            holes = self.pool[np.random.default_rng(seed).integers(len(self.pool), size=n)]
        return torch.from_numpy(holes.astype(np.float32))

    def one_each(self, n: int, first_seed: int) -> torch.Tensor:
        """n masks where mask j depends on ``first_seed + j`` alone (per-image masks independent of batching)."""
        return torch.cat([self.draw(1, first_seed + j) for j in range(n)])
