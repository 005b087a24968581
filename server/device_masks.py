"""``/robustness`` on the model's device: the n hole masks are copied there once and kept, and the n occluded
copies are made there from the one clean input, so a request uploads one image instead of n + 1 copies.

The batch is bit for bit ``robustness.occlusion_report.occluded_batch``'s (clean * (1 - hole) per copy). Imported
only when the device path is on (it needs torch).
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from typing import Any

import numpy as np
import torch

from robustness.masks import RatioRange, cached_masks

DEVICE_MASK_BYTES = 256 * 1024 * 1024  # keep-masks (bool) held on each device


class DeviceMaskCache:
    """A thread-safe LRU, bounded by bytes, of keep-masks (``~holes``, (n, 1, H, W) bool) on a device."""

    def __init__(self, max_bytes: int = DEVICE_MASK_BYTES) -> None:
        self.max_bytes, self.bytes = max_bytes, 0
        self._entries: OrderedDict[tuple, torch.Tensor] = OrderedDict()
        self._lock = threading.Lock()

    def keep(self, holes: np.ndarray, key: tuple, device: torch.device) -> torch.Tensor:
        """The keep-mask of ``holes`` on ``device``, copied there on first use."""
        full_key = (*key, str(device))
        with self._lock:
            found = self._entries.get(full_key)
            if found is not None:
                self._entries.move_to_end(full_key)
                return found
        kept = torch.from_numpy(~holes).to(device)[:, None]
        size = kept.numel()
        if size > self.max_bytes:
            return kept
        with self._lock:
            if full_key not in self._entries:
                self._entries[full_key] = kept
                self.bytes += size
            while self.bytes > self.max_bytes:
                self.bytes -= self._entries.popitem(last=False)[1].numel()
        return kept


device_masks = DeviceMaskCache()


def occluded_batch_on(device: str | torch.device, clean: Any, ratio: RatioRange, n: int,
                      seed: int) -> tuple[torch.Tensor, np.ndarray]:
    """The clean (3, H, W) input followed by its n masked copies, made on ``device``, and the (n, H, W) host holes.

    ``clean`` is a NumPy array (copied to the device once) or a tensor already there.
    """
    device = torch.device(device)
    height, width = clean.shape[1:]
    holes = cached_masks(n, height, width, ratio, seed)
    keep = device_masks.keep(holes, (n, height, width, ratio, seed), device)
    clean_t = torch.from_numpy(clean) if isinstance(clean, np.ndarray) else clean
    clean_t = clean_t.to(device=device, dtype=torch.float32)
    batch = torch.empty((n + 1, *clean_t.shape), dtype=torch.float32, device=device)
    batch[0] = clean_t
    torch.mul(clean_t, keep, out=batch[1:])
    return batch, holes
