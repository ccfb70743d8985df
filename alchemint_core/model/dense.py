"""Dense (timed) captions: a parallel cross-attention branch from video tokens to per-event caption tokens,
positioned with MiNT's ReRoPE so each frame attends most to the caption of the event it lies in.

ReRoPE rescales each event to a fixed length L: latent frame f inside event i (frames s_i..e_i) sits at
L*(i + (f - s_i + 1/2)/(e_i - s_i + 1)), strictly inside (L*i, L*(i+1)), and caption i's tokens sit at L*(i + 1/2).
Frames outside every event (gaps) get no dense-caption signal. The branch's output projection starts at zero,
so an untrained branch changes nothing.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import nn

from .layers import Linear, RMSNorm, attention, wide
from .rope import RopeBank, apply_rope, rotation


@dataclass
class DenseCaptions:
    context: torch.Tensor  # [B, E, Lc, text_dim] caption embeddings, one row per event
    spans: torch.Tensor  # [B, E, 2] (start, end) in latent-frame time
    lengths: torch.Tensor | None = None  # [B, E] real tokens per caption (default all)

    def __post_init__(self):
        b, e = self.context.shape[:2]
        if tuple(self.spans.shape) != (b, e, 2):
            raise ValueError(f"dense caption spans must be [B={b}, E={e}, 2], got {list(self.spans.shape)}")
        if not torch.isfinite(self.spans).all() or (self.spans[..., 1] < self.spans[..., 0]).any():
            raise ValueError("dense caption spans must be finite with start <= end")
        if self.lengths is None:
            self.lengths = torch.full((b, e), self.context.shape[2], dtype=torch.long)

    def repeat(self, n: int) -> "DenseCaptions":
        """The same captions for a batch n times as large."""
        return DenseCaptions(self.context.repeat(n, 1, 1, 1), self.spans.repeat(n, 1, 1), self.lengths.repeat(n, 1))

    def to(self, device) -> "DenseCaptions":
        return DenseCaptions(self.context.to(device), self.spans.to(device), self.lengths.to(device))

    @staticmethod
    def cat(parts: "list[DenseCaptions]") -> "DenseCaptions":
        """Batches of captions of the same shape, one after the other."""
        return DenseCaptions(torch.cat([d.context for d in parts]), torch.cat([d.spans for d in parts]),
                             torch.cat([d.lengths for d in parts]))


def event_frames(start: float, end: float, frames: int) -> tuple[int, int] | None:
    """Latent frames s..e (inclusive) an event covers; an event shorter than a frame keeps its nearest frame;
    an event wholly outside the clip (used to pad batches) covers none."""
    if end < -0.5 or start > frames - 0.5:
        return None
    s, e = math.ceil(start - 1e-6), math.floor(end + 1e-6)
    if e < s:
        s = e = round((start + end) / 2)
    return max(0, min(s, frames - 1)), max(0, min(e, frames - 1))


def rerope_positions(spans: torch.Tensor, frames: int, segment: float) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """For one sample's spans [E, 2]: frame positions [frames], in-event flags [frames] and caption positions [E].
    A frame inside several events belongs to the one whose centre is nearest."""
    pos = torch.zeros(frames, dtype=torch.float64)
    inside = torch.zeros(frames, dtype=torch.bool)
    best = torch.full((frames,), math.inf, dtype=torch.float64)
    for i, (start, end) in enumerate(spans.tolist()):
        covered = event_frames(start, end, frames)
        if covered is None:
            continue
        s, e = covered
        for f in range(s, e + 1):
            dist = abs(f - (s + e) / 2)
            if dist < best[f]:
                best[f] = dist
                pos[f] = segment * (i + (f - s + 0.5) / (e - s + 1))
                inside[f] = True
    captions = segment * (torch.arange(len(spans), dtype=torch.float64) + 0.5)
    return pos, inside, captions


def time_only_table(bank: RopeBank, pos: torch.Tensor) -> torch.Tensor:
    """RoPE table rotating only the time channels (spatial channels untouched) -> [N, D/2, 2]."""
    rot = rotation(bank.time, pos)
    rest = torch.zeros(len(pos), len(bank.height) + len(bank.width), 2, dtype=torch.float64)
    rest[..., 0] = 1
    return torch.cat([rot, rest], dim=1)


@dataclass
class DenseState:
    """Per-forward inputs of every block's dense branch."""

    context: torch.Tensor  # [B, Lk, dim] embedded caption tokens
    q_table: torch.Tensor  # [B, Lv, D/2, 2]
    k_table: torch.Tensor  # [B, Lk, D/2, 2]
    key_mask: torch.Tensor | None  # [B, Lk]
    gate: torch.Tensor  # [B, Lv, 1] 1 inside an event, 0 in gaps


def prepare_dense(model, dense: DenseCaptions, grid: tuple[int, int, int], dtype: torch.dtype) -> DenseState:
    f, h, w = grid
    seg = model.alchemint.cfg.dense_segment_length
    b, e, lc, _ = dense.context.shape
    ctx = model.text_embedding(dense.context.to(dtype).flatten(1, 2))  # [B, E*Lc, dim]
    q_tabs, k_tabs, gates, masks = [], [], [], []
    for i in range(b):
        pos, inside, cap = rerope_positions(dense.spans[i].detach().cpu(), f, seg)
        per_token = lambda t: t.repeat_interleave(h * w)  # frame value -> every token of that frame
        q_tabs.append(time_only_table(model.bank, per_token(pos)))
        gates.append(per_token(inside.float()))
        k_tabs.append(time_only_table(model.bank, cap.repeat_interleave(lc)))
        masks.append(torch.arange(lc)[None, :] < dense.lengths[i].cpu()[:, None])
    dev = ctx.device
    key_mask = torch.stack(masks).flatten(1).to(dev)
    f = wide(dtype)
    return DenseState(context=ctx, q_table=torch.stack(q_tabs).to(dev, f), k_table=torch.stack(k_tabs).to(dev, f),
                      key_mask=None if bool(key_mask.all()) else key_mask,
                      gate=torch.stack(gates)[..., None].to(dev, dtype))


class DenseCrossAttention(nn.Module):
    """Video tokens -> timed caption tokens, with ReRoPE on the time channels; zero-initialised output."""

    def __init__(self, dim: int, num_heads: int, eps: float = 1e-6):
        super().__init__()
        self.num_heads = num_heads
        self.q, self.k, self.v, self.o = (Linear(dim, dim) for _ in range(4))
        self.norm_q, self.norm_k = RMSNorm(dim, eps), RMSNorm(dim, eps)
        nn.init.zeros_(self.o.weight)
        nn.init.zeros_(self.o.bias)

    def forward(self, x: torch.Tensor, state: DenseState) -> torch.Tensor:
        split = lambda t: t.unflatten(-1, (self.num_heads, -1))
        q = apply_rope(split(self.norm_q(self.q(x))), state.q_table)
        k = apply_rope(split(self.norm_k(self.k(state.context))), state.k_table)
        v = split(self.v(state.context))
        return self.o(attention(q, k, v, state.key_mask)) * state.gate
