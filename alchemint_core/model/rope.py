"""3D rotary position tables, including the temporal modes of reference tokens (none / mid / werope / avg).

A table holds, per token and per channel pair, a complex multiplier stored as (re, im) with shape [L, D/2, 2].
Ordinary RoPE is exp(i*w*p) (unit magnitude); a reference's time channels instead carry one of the modes below.
Attention applies every table the same way (`apply_rope`): a RoPE variant is only a different table.

Time modes for an interval [t_l, t_r] with t_mid = (t_l + t_r)/2 and r = (t_r - t_l)/2, per time frequency w:
  none    1
  mid     exp(i*w*t_mid)
  werope  w_mid*exp(i*w*t_mid) + w_edge*(exp(i*w*t_l') + exp(i*w*t_r')), edges t_l' = t_l - o, t_r' = t_r + o
          = (w_mid + 2*w_edge*cos(w*(r + o))) * exp(i*w*t_mid)
  avg     mean of exp(i*w*t) over t in [t_l, t_r] = sinc(w*r) * exp(i*w*t_mid)   (our interval-averaged mode)
By linearity the video->reference logit under werope is w_mid*A(t-t_mid) + w_edge*(A(t-t_l') + A(t-t_r')),
A the plain RoPE kernel; under avg it is the mean of A(t-s) over the interval, whose width sets the decay.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from einops import rearrange

from .config import ROPE_MODES, WanConfig, check_werope_weights, rope_split


@dataclass(frozen=True)
class TemporalRope:
    """How reference/tag tokens are placed in time."""

    mode: str = "werope"
    w_mid: float = 1.0
    w_edge: float = -0.4
    edge_offset: float = 0.0

    def __post_init__(self):
        if not isinstance(self.mode, str) or self.mode not in ROPE_MODES:
            raise ValueError(f"RoPE mode {self.mode!r} is not one of {ROPE_MODES}")
        for name in ("w_mid", "w_edge", "edge_offset"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, (int, float)):
                raise ValueError(f"RoPE {name} {v!r} must be a number")
        if self.mode == "werope":
            check_werope_weights(self.w_mid, self.w_edge)
        if not (math.isfinite(self.edge_offset) and -1e-9 <= self.edge_offset <= 8):
            raise ValueError(f"edge_offset {self.edge_offset} must be in [0, 8] latent frames")


class RopeBank:
    """The model's frequencies per axis (time, height, width), in float64 on the CPU (tables are built there
    once and moved to the model's device)."""

    def __init__(self, cfg: WanConfig):
        d_t, d_h, d_w = rope_split(cfg.head_dim)
        self.head_dim = cfg.head_dim
        if cfg.rope_time_freqs is not None:
            self.time = torch.tensor(cfg.rope_time_freqs, dtype=torch.float64, device="cpu")
        else:
            self.time = axis_freqs(d_t, cfg.rope_time_theta or cfg.rope_theta)
        self.height = axis_freqs(d_h, cfg.rope_theta)
        self.width = axis_freqs(d_w, cfg.rope_theta)


def axis_freqs(dim: int, theta: float) -> torch.Tensor:
    return theta ** (-torch.arange(0, dim, 2, dtype=torch.float64, device="cpu") / dim)


def rotation(freqs: torch.Tensor, pos: torch.Tensor) -> torch.Tensor:
    """exp(i*w*p) as (cos, sin): [N] positions x [K] freqs -> [N, K, 2]."""
    angle = pos.to(torch.float64)[:, None] * freqs[None, :]
    return torch.stack([angle.cos(), angle.sin()], dim=-1)


def temporal_multiplier(freqs: torch.Tensor, intervals: torch.Tensor, rope: TemporalRope) -> torch.Tensor:
    """Time-channel multipliers for intervals [N, 2] (latent frames) -> [N, K, 2]."""
    intervals = intervals.to(torch.float64)
    t_mid = intervals.mean(dim=-1)
    r = (intervals[:, 1] - intervals[:, 0]) / 2
    if rope.mode == "none":
        out = torch.zeros(len(intervals), len(freqs), 2, dtype=torch.float64)
        out[..., 0] = 1
        return out
    rot = rotation(freqs, t_mid)
    if rope.mode == "mid":
        return rot
    wr = freqs[None, :] * r[:, None]
    if rope.mode == "werope":
        gain = rope.w_mid + 2 * rope.w_edge * torch.cos(freqs[None, :] * (r[:, None] + rope.edge_offset))
    else:  # avg: torch.sinc is the normalised sin(pi x)/(pi x)
        gain = torch.sinc(wr / math.pi)
    return rot * gain[..., None]


def assemble(time: torch.Tensor, bank: RopeBank, h: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
    """Concatenate time [N, Kt, 2] with spatial rotations at (h, w) -> float64 table [N, D/2, 2]."""
    return torch.cat([time, rotation(bank.height, h), rotation(bank.width, w)], dim=1)


def grid_positions(frames: int, height: int, width: int) -> torch.Tensor:
    """(t, h, w) of every token of a [frames, height, width] token grid, row-major -> [N, 3]."""
    t, h, w = torch.meshgrid(torch.arange(frames), torch.arange(height), torch.arange(width), indexing="ij")
    return torch.stack([t, h, w], dim=-1).reshape(-1, 3)


def video_table(bank: RopeBank, frames: int, height: int, width: int) -> torch.Tensor:
    """Plain 3D RoPE of a video token grid -> [frames*height*width, D/2, 2]."""
    pos = grid_positions(frames, height, width)
    return assemble(rotation(bank.time, pos[:, 0]), bank, pos[:, 1], pos[:, 2])


def reference_tables(bank: RopeBank, intervals: torch.Tensor, height: int, width: int,
                     tag_lengths: list[int], rope: TemporalRope) -> tuple[torch.Tensor, torch.Tensor]:
    """Tables of R references' tokens ([R*height*width, D/2, 2], each laid out as one video frame) and of their
    tag tokens ([sum(tag_lengths), D/2, 2], at diagonal positions h = w = max(height, width) + j, j running over
    all tag tokens). Both carry their reference's temporal multiplier."""
    time = temporal_multiplier(bank.time, intervals, rope)  # [R, Kt, 2]
    pos = grid_positions(1, height, width)
    n = len(pos)
    ref = assemble(rearrange(time[:, None].expand(-1, n, -1, -1), "r n k c -> (r n) k c"), bank,
                   pos[:, 1].repeat(len(intervals)), pos[:, 2].repeat(len(intervals)))
    owner = torch.repeat_interleave(torch.arange(len(intervals)), torch.tensor(tag_lengths, dtype=torch.long))
    diag = max(height, width) + torch.arange(len(owner))
    tags = assemble(time[owner], bank, diag, diag)
    return ref, tags


def apply_rope(x: torch.Tensor, table: torch.Tensor) -> torch.Tensor:
    """Multiply channel pairs of x [B, L, H, D] by table [B or 1, L, D/2, 2] as complex numbers, in the table's
    dtype (float32, or float64 for float64 models)."""
    xc = torch.view_as_complex(rearrange(x.to(table.dtype), "b l h (k c) -> b l h k c", c=2).contiguous())
    out = xc * torch.view_as_complex(table.contiguous())[:, :, None]
    return torch.view_as_real(out).flatten(-2).type_as(x)


def attention_profile(bank: RopeBank, interval: tuple[float, float], rope: TemporalRope,
                      times: torch.Tensor) -> torch.Tensor:
    """Mean RoPE logit between a video query at each time and a reference key with the given interval, for
    q = k = (1, 0) in every time channel pair: the shape of the bias each mode puts on attention over time
    (the paper's Fig. 3). Normalised so a plain query and key at the same time score 1."""
    mult = temporal_multiplier(bank.time, torch.tensor([interval], dtype=torch.float64), rope)[0]  # [K, 2]
    rot = rotation(bank.time, times)  # [N, K, 2]
    # Re(exp(i w t) * conj(M))
    logit = rot[..., 0] * mult[:, 0] + rot[..., 1] * mult[:, 1]
    return logit.mean(dim=-1)
