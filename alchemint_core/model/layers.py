"""Building blocks shared by the base DiT and the AlcheMinT additions."""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import nn


def wide(dtype: torch.dtype) -> torch.dtype:
    """The precision norms, RoPE and the patch embedding run in: float32, or float64 for float64 inputs."""
    return torch.float64 if dtype == torch.float64 else torch.float32


class Linear(nn.Linear):
    """nn.Linear whose weights may be stored in another dtype than the compute dtype (fp8-e4m3, fp16, bf16):
    they are cast per layer at call time, so an fp8 checkpoint never exists in full precision in memory.
    Optionally carries a LoRA delta (lora_B @ lora_A, scaled by alpha/rank) under ComfyUI's key names."""

    lora_A: nn.Parameter | None
    lora_B: nn.Parameter | None

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.lora_A = None
        self.lora_B = None
        self.register_buffer("weight_scale", None)  # per-tensor scale of "scaled fp8" checkpoints
        self.lora_scale = 0.0

    def add_lora(self, rank: int, alpha: float) -> None:
        dev = self.weight.device
        self.lora_A = nn.Parameter(torch.empty(rank, self.in_features, device=dev))
        self.lora_B = nn.Parameter(torch.zeros(self.out_features, rank, device=dev))
        nn.init.kaiming_uniform_(self.lora_A, a=math.sqrt(5))
        self.lora_scale = (alpha or rank) / rank

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        w = self.weight.to(x.dtype)
        if self.weight_scale is not None:
            w = w * self.weight_scale.to(x.dtype)
        b = None if self.bias is None else self.bias.to(x.dtype)
        y = F.linear(x, w, b)
        if self.lora_A is not None:
            y = y + F.linear(F.linear(x, self.lora_A.to(x.dtype)), self.lora_B.to(x.dtype)) * self.lora_scale
        return y


class RMSNorm(nn.Module):
    """RMS norm computed in float32, learnable gain (Wan's q/k norm)."""

    def __init__(self, dim: int, eps: float = 1e-6):
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        f = wide(x.dtype)
        return F.rms_norm(x.to(f), (x.shape[-1],), self.weight.to(f), self.eps).type_as(x)


class LayerNorm(nn.LayerNorm):
    """LayerNorm computed in float32 and returned in the input dtype."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        f = wide(x.dtype)
        w = None if self.weight is None else self.weight.to(f)
        b = None if self.bias is None else self.bias.to(f)
        return F.layer_norm(x.to(f), self.normalized_shape, w, b, self.eps).type_as(x)


def attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, key_mask: torch.Tensor | None = None) -> torch.Tensor:
    """Multi-head attention on [B, L, H, D] inputs -> [B, L, H*D], through PyTorch's fused SDPA (never the full
    score matrix on the flash/efficient paths). key_mask [B, Lk] marks real keys (True) when keys are padded."""
    q, k, v = (rearrange(t, "b l h d -> b h l d") for t in (q, k, v))
    mask = None if key_mask is None else key_mask[:, None, None, :]
    out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)
    return rearrange(out, "b h l d -> b l (h d)")


def sinusoidal_embedding(dim: int, t: torch.Tensor) -> torch.Tensor:
    """Wan's timestep embedding: [cos | sin] of t * 10000^(-i/half), in float32."""
    half = dim // 2
    freqs = torch.pow(10000.0, -torch.arange(half, device=t.device, dtype=torch.float64) / half)
    angle = torch.outer(t.to(torch.float64), freqs)
    return torch.cat([angle.cos(), angle.sin()], dim=1)


def modulate(x: torch.Tensor, shift: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    return torch.addcmul(shift, x, 1 + scale)
