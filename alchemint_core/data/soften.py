"""Subjects with their outlines blurred away: what a noisy input shows of a subject at high noise (its place and
colour, not its shape). Training sometimes starts its high-noise inputs from these frames while the target stays the
sharp clip, so the model must draw the outline from its conditioning (tag, reference) instead of copying the faint
outline the noise has not yet hidden."""
from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F
from einops import rearrange
from kornia.filters import gaussian_blur2d

from .dataset import DatasetError


def check_soften_sigma(sigma: float) -> None:
    if not (isinstance(sigma, (int, float)) and math.isfinite(sigma) and sigma >= 0):
        raise DatasetError(f"soft_subjects={sigma!r}: give the blur's sigma in pixels, a finite number >= 0 "
                           "(0 = off; about a sixth of a subject's size blurs its outline away)")


def soften_subjects(frames: np.ndarray, masks: list[np.ndarray], sigma: float) -> np.ndarray:
    """uint8 frames [N, H, W, 3] with every subject (bool masks [N, H, W] each) Gaussian-blurred by `sigma` pixels
    inside its mask widened by twice the blur; the rest of each frame is left as it was."""
    check_soften_sigma(sigma)
    if sigma == 0 or not masks:
        return frames.copy()
    img = rearrange(torch.from_numpy(np.ascontiguousarray(frames)).float(), "n h w c -> n c h w")
    union = torch.from_numpy(np.any(np.stack(masks), axis=0)).float()[:, None]  # [N, 1, H, W]
    reach = 2 * math.ceil(2 * sigma) + 1
    kernel = 2 * math.ceil(3 * sigma) + 1
    region = F.max_pool2d(union, reach, stride=1, padding=reach // 2)
    weight = gaussian_blur2d(region, (kernel, kernel), (sigma, sigma), border_type="replicate").clamp(0, 1)
    blurred = gaussian_blur2d(img, (kernel, kernel), (sigma, sigma), border_type="reflect")
    out = img * (1 - weight) + blurred * weight
    return rearrange(out.round().clamp(0, 255).to(torch.uint8), "n c h w -> n h w c").numpy()
