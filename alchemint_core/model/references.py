"""References (subject image latents + word tags + intervals) and their packing into the self-attention sequence.

Sequence layout per sample: [video tokens | reference 0 tokens | ... | reference R-1 tokens | all tag tokens].
Each reference contributes exactly one latent frame of tokens (through the base patch embedding) plus its tag's
tokens (through the tag MLP); both get the reference's index embedding and its temporal RoPE.
"""
from __future__ import annotations

from dataclasses import dataclass, field, replace

import torch
from einops import rearrange

from .layers import wide
from .rope import TemporalRope, reference_tables


@dataclass
class References:
    """A batch of references. Latents are normalised (model space), one latent frame each."""

    latents: torch.Tensor  # [B, R, C, H, W]
    tags: torch.Tensor  # [B, R, Lt, text_dim] tag embeddings from the caption's text encoder
    intervals: torch.Tensor  # [B, R, 2] (t_l, t_r) in latent frames, already widened
    tag_lengths: torch.Tensor | None = None  # [B, R] real tag tokens (default: all Lt)
    present: torch.Tensor | None = None  # [B, R] bool: slot holds a reference (default: all)
    rope: TemporalRope | None = None  # None: the model's trained mode

    def __post_init__(self):
        b, r = self.latents.shape[:2]
        if self.latents.ndim != 5:
            raise ValueError(f"reference latents must be [B, R, C, H, W], got {list(self.latents.shape)}")
        if self.tags.ndim != 4 or tuple(self.tags.shape[:2]) != (b, r):
            raise ValueError(f"tag embeddings must be [B={b}, R={r}, L, text_dim], got {list(self.tags.shape)}")
        if tuple(self.intervals.shape) != (b, r, 2):
            raise ValueError(f"intervals must be [B={b}, R={r}, 2], got {list(self.intervals.shape)}")
        if not torch.isfinite(self.intervals).all() or (self.intervals[..., 1] < self.intervals[..., 0]).any():
            raise ValueError("reference intervals must be finite with start <= end")
        if self.tag_lengths is None:
            self.tag_lengths = torch.full((b, r), self.tags.shape[2], dtype=torch.long)
        if self.present is None:
            self.present = torch.ones(b, r, dtype=torch.bool)

    @property
    def count(self) -> int:
        return self.latents.shape[1]

    def dropped(self, drop: torch.Tensor | bool = True) -> "References":
        """Guidance/training dropout: zero the latents and tag embeddings of dropped references ([B, R] bool or
        all), keeping their slots, index embeddings and intervals (intervals are never dropped)."""
        if isinstance(drop, bool):
            drop = torch.full(self.latents.shape[:2], drop)
        keep = (~drop.to(self.latents.device)).to(self.latents.dtype)
        return replace(self, latents=self.latents * keep[:, :, None, None, None],
                       tags=self.tags * keep.to(self.tags.dtype)[:, :, None, None])

    def repeat(self, n: int) -> "References":
        """The batch repeated n times along B (for batched guidance passes)."""
        rep = lambda t: t.repeat(n, *([1] * (t.ndim - 1)))
        return replace(self, latents=rep(self.latents), tags=rep(self.tags), intervals=rep(self.intervals),
                       tag_lengths=rep(self.tag_lengths), present=rep(self.present))

    @staticmethod
    def cat(parts: list["References"]) -> "References":
        return replace(parts[0], **{k: torch.cat([getattr(p, k) for p in parts])
                                    for k in ("latents", "tags", "intervals", "tag_lengths", "present")})

    def to(self, device) -> "References":
        return replace(self, latents=self.latents.to(device), tags=self.tags.to(device),
                       intervals=self.intervals.to(device))


@dataclass
class PackedReferences:
    """References turned into tokens for one model and video size; reusable across sampling steps."""

    tokens: torch.Tensor  # [B, Lc, dim]
    table: torch.Tensor  # [B, Lc, D/2, 2] RoPE table of those tokens
    key_mask: torch.Tensor | None  # [B, Lc] bool when samples have different token counts, else None
    grid: tuple[int, int]  # (H', W') token grid they were packed for
    _joined: dict = field(default_factory=dict, repr=False, compare=False)

    @property
    def batch(self) -> int:
        return self.tokens.shape[0]

    def joined(self, video_table: torch.Tensor, n_video: int) -> tuple[torch.Tensor, torch.Tensor | None]:
        """RoPE table [B, L_video + Lc, D/2, 2] and key mask of the whole sequence, built on the first step of a
        sampling run and reused by the others (video_table is the model's cached [1, L_video, D/2, 2])."""
        key = (n_video, video_table.device, video_table.dtype)
        if key not in self._joined:
            b = self.batch
            table = torch.cat([video_table.expand(b, -1, -1, -1), self.table.to(video_table)], dim=1)
            mask = None if self.key_mask is None else torch.cat(
                [self.key_mask.new_ones(b, n_video), self.key_mask], dim=1)
            self._joined = {key: (table, mask)}
        return self._joined[key]


def pack_references(model, refs: References, grid: tuple[int, int], dtype: torch.dtype) -> PackedReferences:
    """Embed references for `model` (a WanModel with an AlcheMinT adapter) at token grid (H', W')."""
    adapter = model.alchemint
    if adapter is None:
        raise ValueError("this model has no AlcheMinT adapter: load one (or create a fresh one for training) "
                         "before passing references")
    if refs.count > adapter.cfg.max_refs:
        raise ValueError(f"{refs.count} references given; this adapter supports at most {adapter.cfg.max_refs}")
    rope = refs.rope or adapter.temporal_rope
    b, r, c, h, w = refs.latents.shape
    # Reference latents are one-frame videos through the base patch embedding: [B, R, n, dim]
    ref_tok = model.embed_patches(rearrange(refs.latents, "b r c h w -> (b r) c 1 h w").to(dtype))
    if tuple(ref_tok.grid[1:]) != tuple(grid):
        raise ValueError(f"reference latents are {h}x{w} but the video latents give a {grid} token grid; "
                         "encode references at the video's size")
    index = adapter.ref_index_embedding[:r].to(dtype)  # [R, dim]
    ref_tok = rearrange(ref_tok.tokens, "(b r) n d -> b r n d", b=b) + index[None, :, None]
    tag_tok = adapter.tag_mlp(refs.tags.to(dtype)) + index[None, :, None]  # [B, R, Lt, dim]

    samples, tables = [], []
    for i in range(b):
        keep = [j for j in range(r) if refs.present[i, j]]
        lengths = [int(refs.tag_lengths[i, j]) for j in keep]
        tok = [ref_tok[i, j] for j in keep] + [tag_tok[i, j, :n] for j, n in zip(keep, lengths)]
        samples.append(torch.cat(tok) if tok else ref_tok.new_zeros(0, ref_tok.shape[-1]))
        ref_tab, tag_tab = reference_tables(model.bank, refs.intervals[i, keep].detach().cpu(), grid[0], grid[1],
                                            lengths, rope)
        tables.append(torch.cat([ref_tab, tag_tab]).to(ref_tok.device, wide(dtype)))
    lengths = [len(s) for s in samples]
    longest = max(lengths)
    key_mask = None
    if min(lengths) != longest:
        key_mask = torch.arange(longest, device=ref_tok.device)[None] < torch.tensor(lengths, device=ref_tok.device)[:, None]
    pad = lambda t: torch.cat([t, t.new_zeros(longest - len(t), *t.shape[1:])])
    return PackedReferences(tokens=torch.stack([pad(s) for s in samples]), table=torch.stack([pad(t) for t in tables]),
                            key_mask=key_mask, grid=tuple(grid))
