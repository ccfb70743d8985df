"""Mask operations the pipeline needs, in PyTorch (no SciPy): dilation and connected regions."""
from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F


def dilate(mask: np.ndarray, radius: int) -> np.ndarray:
    """bool [H, W] grown by `radius` pixels (a square neighbourhood)."""
    t = torch.from_numpy(mask.astype(np.float32))[None, None]
    return F.max_pool2d(t, 2 * radius + 1, stride=1, padding=radius)[0, 0].numpy() > 0


def connected_regions(mask: np.ndarray) -> list[np.ndarray]:
    """The 8-connected regions of a bool [H, W] mask, largest first: every pixel takes the largest label among its
    neighbours inside the mask until nothing changes (as many rounds as the longest region is wide)."""
    h, w = mask.shape
    inside = torch.from_numpy(mask)
    labels = torch.where(inside, torch.arange(1, h * w + 1, dtype=torch.float32).view(h, w), torch.zeros(()))
    while True:
        grown = F.max_pool2d(labels[None, None], 3, stride=1, padding=1)[0, 0] * inside
        if torch.equal(grown, labels):
            break
        labels = grown
    regions = [(labels == v).numpy() for v in labels.unique().tolist() if v > 0]
    return sorted(regions, key=lambda r: -int(r.sum()))
