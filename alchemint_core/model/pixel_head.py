"""A convolutional pixel head for models on pixel latents (the pixel "VAE": each latent cell holds the s x s pixels
of 4 frames in 3 colours, 12·s² channels, laid out (frame, colour, row, column)).

The linear head writes each token's s x s pixels from that token's features alone, with one weight per position
inside the patch: drawing an outline that crosses token edges, at any offset and rotation, must then be learnt
separately for every position in the patch. This head decodes the token grid convolutionally instead (up-sampling
x2 per stage, as a VAE decoder does), so a stroke is drawn by the same weights wherever it falls, with the noisy
input's pixels beside the features at full resolution to align edges to. Its last convolution starts at zero: a
model given this head computes what it computed before, and the head's output is added to the linear head's.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import nn

from .config import pixel_scale
from .layers import Linear


class _Stage(nn.Module):
    """x2 up-sampling (transposed conv) and a 3x3 convolution, SiLU after each."""

    def __init__(self, c_in: int, c_out: int):
        super().__init__()
        self.up = nn.ConvTranspose2d(c_in, c_out, 4, 2, 1)
        self.conv = nn.Conv2d(c_out, c_out, 3, 1, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.silu(self.conv(F.silu(self.up(x))))


class ConvPixelHead(nn.Module):
    def __init__(self, dim: int, channels: int, width: int):
        super().__init__()
        scale = pixel_scale(channels)
        if scale is None:
            raise ValueError(f"a conv pixel head needs pixel latents (12 x s^2 channels, s a power of two >= 2), "
                             f"not {channels} channels: use conv_head = 0 on a VAE's latents")
        self.scale = scale
        widths = [max(width >> i, 16) for i in range(scale.bit_length())]  # halved per stage, at least 16
        self.proj = Linear(dim, widths[0])
        self.stages = nn.ModuleList(_Stage(a, b) for a, b in zip(widths, widths[1:]))
        self.mix = nn.Conv2d(widths[-1] + 3, widths[-1], 3, 1, 1)  # features + the frame's noisy pixels
        self.out = nn.Conv2d(widths[-1], 3, 3, 1, 1)
        nn.init.zeros_(self.out.weight)
        nn.init.zeros_(self.out.bias)

    def forward(self, features: torch.Tensor, grid: tuple[int, int, int], x: torch.Tensor) -> torch.Tensor:
        """features [B, F*H*W, dim] (the head's modulated tokens), x [B, C, F, H, W] noisy latents ->
        [B, C, F, H, W] to add to the linear head's prediction."""
        f, h, w = grid
        s = self.scale
        dtype = self.out.weight.dtype
        y = rearrange(self.proj(features.to(dtype)), "b (f h w) c -> (b f) c h w", f=f, h=h, w=w)
        for stage in self.stages:
            y = stage(y)
        y = rearrange(y, "(b f) c h w -> b f c h w", f=f)
        noisy = rearrange(x.to(dtype), "b (k rgb p q) f h w -> b f k rgb (h p) (w q)", k=4, rgb=3, p=s, q=s)
        # each of the 4 pixel frames of a latent frame is drawn from the shared features and its own noisy pixels
        z = torch.cat([y[:, :, None].expand(-1, -1, 4, -1, -1, -1), noisy], dim=3)
        z = self.out(F.silu(self.mix(rearrange(z, "b f k c hh ww -> (b f k) c hh ww"))))
        return rearrange(z, "(b f k) rgb (h p) (w q) -> b (k rgb p q) f h w", f=f, k=4, p=s, q=s)
