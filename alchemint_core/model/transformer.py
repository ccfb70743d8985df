"""Wan 2.1 text-to-video diffusion transformer with AlcheMinT's reference conditioning.

With refs=None (and no dense captions) the forward pass is exactly Wan 2.1's: patch embedding, sinusoidal
timestep MLP -> 6-way adaLN modulation per block, self-attention with RMS-normed q/k and 3D RoPE, text
cross-attention, GELU(tanh) FFN, modulated head. Parameter names match Wan's checkpoints.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, NamedTuple

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import nn
from torch.utils.checkpoint import checkpoint

from .config import X_PREDICTION_MIN_SIGMA, AdapterConfig, WanConfig, describe_base
from .dense import DenseCaptions, DenseCrossAttention, DenseState, prepare_dense
from .layers import LayerNorm, Linear, RMSNorm, attention, modulate, sinusoidal_embedding, wide
from .references import PackedReferences, References, pack_references
from .rope import RopeBank, TemporalRope, apply_rope, video_table

if TYPE_CHECKING:
    from .offload import BlockOffload


class Patches(NamedTuple):
    tokens: torch.Tensor  # [B, L, dim]
    grid: tuple[int, int, int]  # (F', H', W')


class Conv3d(nn.Conv3d):
    """Patch embedding conv; weights cast to float32 at call time as Wan computes it in float32."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        f = wide(x.dtype)
        return F.conv3d(x.to(f), self.weight.to(f), self.bias.to(f), self.stride)


class SelfAttention(nn.Module):
    attend = staticmethod(attention)  # (q, k, v, key_mask) -> out; hosted.py's view of a host swaps in its backend

    def __init__(self, dim: int, num_heads: int, eps: float):
        super().__init__()
        self.num_heads = num_heads
        self.q, self.k, self.v, self.o = (Linear(dim, dim) for _ in range(4))
        self.norm_q, self.norm_k = RMSNorm(dim, eps), RMSNorm(dim, eps)

    def forward(self, x: torch.Tensor, table: torch.Tensor, key_mask: torch.Tensor | None) -> torch.Tensor:
        split = lambda t: t.unflatten(-1, (self.num_heads, -1))  # [B, L, dim] -> [B, L, H, D]
        q = apply_rope(split(self.norm_q(self.q(x))), table)
        k = apply_rope(split(self.norm_k(self.k(x))), table)
        return self.o(self.attend(q, k, split(self.v(x)), key_mask))


class CrossAttention(nn.Module):
    def __init__(self, dim: int, num_heads: int, eps: float):
        super().__init__()
        self.num_heads = num_heads
        self.q, self.k, self.v, self.o = (Linear(dim, dim) for _ in range(4))
        self.norm_q, self.norm_k = RMSNorm(dim, eps), RMSNorm(dim, eps)

    def forward(self, x: torch.Tensor, context: torch.Tensor, key_mask: torch.Tensor | None) -> torch.Tensor:
        split = lambda t: t.unflatten(-1, (self.num_heads, -1))
        q = split(self.norm_q(self.q(x)))
        k = split(self.norm_k(self.k(context)))
        return self.o(attention(q, k, split(self.v(context)), key_mask))


@dataclass
class Step:
    """What every block needs in one forward pass, computed once."""

    e_video: torch.Tensor  # [B, 6, dim] timestep modulation of video tokens
    e_clean: torch.Tensor | None  # [B, 6, dim] modulation of reference/tag tokens when it differs
    n_video: int
    table: torch.Tensor  # [B or 1, L, D/2, 2]
    key_mask: torch.Tensor | None  # [B, L]
    context: torch.Tensor  # [B, Lt, dim]
    context_mask: torch.Tensor | None  # [B, Lt]
    dense: DenseState | None


def per_segment(fn, xs: tuple[torch.Tensor, ...], step: Step, idx: tuple[int, ...]):
    """Apply fn(*xs_part, *modulation chunks) with the video's modulation on video tokens and the clean tokens'
    modulation on reference/tag tokens, without materialising a per-token modulation tensor."""
    pick = lambda e: [e[:, i:i + 1] for i in idx]
    if step.e_clean is None or xs[0].shape[1] == step.n_video:
        return fn(*xs, *pick(step.e_video))
    n = step.n_video
    return torch.cat([fn(*(x[:, :n] for x in xs), *pick(step.e_video)),
                      fn(*(x[:, n:] for x in xs), *pick(step.e_clean))], dim=1)


class Block(nn.Module):
    def __init__(self, cfg: WanConfig):
        super().__init__()
        dim = cfg.dim
        self.norm1 = LayerNorm(dim, cfg.eps, elementwise_affine=False)
        self.self_attn = SelfAttention(dim, cfg.num_heads, cfg.eps)
        self.norm3 = LayerNorm(dim, cfg.eps, elementwise_affine=True) if cfg.cross_attn_norm else nn.Identity()
        self.cross_attn = CrossAttention(dim, cfg.num_heads, cfg.eps)
        self.norm2 = LayerNorm(dim, cfg.eps, elementwise_affine=False)
        self.ffn = nn.Sequential(Linear(dim, cfg.ffn_dim), nn.GELU(approximate="tanh"), Linear(cfg.ffn_dim, dim))
        self.modulation = nn.Parameter(torch.zeros(1, 6, dim))

    def forward(self, x: torch.Tensor, step: Step, dense: DenseCrossAttention | None = None) -> torch.Tensor:
        mod = self.modulation.to(x.dtype)
        step = Step(**{**step.__dict__, "e_video": mod + step.e_video,
                       "e_clean": None if step.e_clean is None else mod + step.e_clean})
        y = per_segment(lambda t, shift, scale: modulate(self.norm1(t), shift, scale), (x,), step, (0, 1))
        y = self.self_attn(y, step.table, step.key_mask)
        x = per_segment(torch.addcmul, (x, y), step, (2,))  # x + y * gate, fused
        h = self.norm3(x)
        x = x + self.cross_attn(h, step.context, step.context_mask)
        if dense is not None and step.dense is not None:
            n = step.n_video
            x = x + F.pad(dense(h[:, :n], step.dense), (0, 0, 0, x.shape[1] - n))
        y = per_segment(lambda t, shift, scale: modulate(self.norm2(t), shift, scale), (x,), step, (3, 4))
        return per_segment(torch.addcmul, (x, self.ffn(y)), step, (5,))


class Head(nn.Module):
    def __init__(self, cfg: WanConfig):
        super().__init__()
        self.norm = LayerNorm(cfg.dim, cfg.eps, elementwise_affine=False)
        self.head = Linear(cfg.dim, cfg.out_dim * cfg.patch_size[0] * cfg.patch_size[1] * cfg.patch_size[2])
        self.modulation = nn.Parameter(torch.zeros(1, 2, cfg.dim))

    def forward(self, x: torch.Tensor, e: torch.Tensor) -> torch.Tensor:
        shift, scale = (self.modulation.to(x.dtype) + e[:, None]).chunk(2, dim=1)
        return self.head(modulate(self.norm(x), shift, scale))


class AlcheMinTAdapter(nn.Module):
    """The new parameters: reference index embeddings (zero-init), the word-tag MLP and dense-caption branches."""

    def __init__(self, base: WanConfig, cfg: AdapterConfig):
        super().__init__()
        self.cfg = cfg.validate()
        self.ref_index_embedding = nn.Parameter(torch.zeros(cfg.max_refs, base.dim))
        self.tag_mlp = nn.Sequential(Linear(base.text_dim, base.dim), nn.GELU(approximate="tanh"),
                                     Linear(base.dim, base.dim))
        self.dense = nn.ModuleList(DenseCrossAttention(base.dim, base.num_heads, base.eps)
                                   for _ in range(base.num_layers)) if cfg.dense_captions else None

    @property
    def temporal_rope(self) -> TemporalRope:
        c = self.cfg
        return TemporalRope(c.rope_mode, c.w_mid, c.w_edge, c.edge_offset)


class WanModel(nn.Module):
    def __init__(self, cfg: WanConfig, adapter: AdapterConfig | None = None):
        super().__init__()
        self.cfg = cfg.validate()
        dim = cfg.dim
        self.patch_embedding = Conv3d(cfg.in_dim, dim, kernel_size=cfg.patch_size, stride=cfg.patch_size)
        self.text_embedding = nn.Sequential(Linear(cfg.text_dim, dim), nn.GELU(approximate="tanh"), Linear(dim, dim))
        self.time_embedding = nn.Sequential(Linear(cfg.freq_dim, dim), nn.SiLU(), Linear(dim, dim))
        self.time_projection = nn.Sequential(nn.SiLU(), Linear(dim, dim * 6))
        self.blocks = nn.ModuleList(Block(cfg) for _ in range(cfg.num_layers))
        self.head = Head(cfg)
        self.alchemint = AlcheMinTAdapter(cfg, adapter) if adapter is not None else None
        self.bank = RopeBank(cfg)
        self.compute_dtype = torch.float32
        self.expert: str | None = None  # "high"/"low" for a Wan 2.2 A14B expert (set by its loader), else None
        self.gradient_checkpointing = False
        self._video_tables: dict = {}

    # -- pieces -------------------------------------------------------------------------------------------
    def embed_patches(self, x: torch.Tensor) -> Patches:
        """[B, C, F, H, W] latents -> tokens [B, F'*H'*W', dim] in the compute dtype."""
        p = self.cfg.patch_size
        if any(s % q for s, q in zip(x.shape[2:], p)):
            raise ValueError(f"latent size {list(x.shape[2:])} is not divisible by the patch size {list(p)}: "
                             f"use a pixel size divisible by {8 * p[1]}")
        y = self.patch_embedding(x)
        return Patches(rearrange(y, "b d f h w -> b (f h w) d").to(x.dtype), tuple(y.shape[2:]))

    def time_modulation(self, timestep: torch.Tensor, dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor]:
        """timestep [B] -> (e [B, dim] for the head, e0 [B, 6, dim] for the blocks)."""
        e = self.time_embedding(sinusoidal_embedding(self.cfg.freq_dim, timestep).to(dtype))
        return e, self.time_projection(e).unflatten(1, (6, self.cfg.dim))

    def video_rope(self, grid: tuple[int, int, int], device, dtype: torch.dtype) -> torch.Tensor:
        """[1, L, D/2, 2] RoPE table of a video token grid, cached for the last size used."""
        key = (grid, str(device), wide(dtype))
        if key not in self._video_tables:
            self._video_tables = {key: video_table(self.bank, *grid).to(device, wide(dtype))[None]}
        return self._video_tables[key]

    def pack(self, refs: References, x_shape, dtype=None) -> PackedReferences:
        """Embed references once for a video of latent shape x_shape ([B, C, F, H, W])."""
        _, _, _, h, w = x_shape
        grid = (h // self.cfg.patch_size[1], w // self.cfg.patch_size[2])
        return pack_references(self, refs, grid, dtype or self.compute_dtype)

    def add_lora(self, rank: int, alpha: float, targets) -> int:
        """Attach LoRA deltas to every base Linear in the blocks whose name ends with one of targets."""
        count = 0
        for name, module in self.blocks.named_modules():
            if isinstance(module, Linear) and any(name.endswith(t) for t in targets):
                module.add_lora(rank, alpha)
                count += 1
        if not count:
            raise ValueError(f"no layer matches the LoRA targets {list(targets)}")
        return count

    def compile_blocks(self, **options) -> "WanModel":
        """torch.compile every block in place (GPU: fuses norms, modulation and RoPE around the matmuls). All
        blocks share one graph, so compiling costs one block's compilation; options go to torch.compile."""
        for block in self.blocks:
            block.compile(**options)
        return self

    def offload_blocks(self, device) -> "BlockOffload":
        """Keep the blocks' weights in CPU memory and put each on `device` only while it runs (see offload.py);
        the rest of the model moves to `device`. Returns the offloader (`.remove()` undoes it)."""
        from .offload import BlockOffload
        blocks = self.blocks
        self.blocks = nn.ModuleList()  # moved separately
        self.to(device)
        self.blocks = blocks
        return BlockOffload(blocks, device)

    # -- forward ------------------------------------------------------------------------------------------
    def forward(self, x: torch.Tensor, timestep: torch.Tensor, context: torch.Tensor,
                refs: References | PackedReferences | None = None, context_mask: torch.Tensor | None = None,
                dense: DenseCaptions | None = None) -> torch.Tensor:
        """Velocity for normalised latents x [B, C, F, H, W] at timestep [B] (0..1000), text context
        [B, L, text_dim] (context_mask [B, L] marks real tokens when padded). Returns [B, C, F, H, W]."""
        out_dtype, dtype = x.dtype, self.compute_dtype
        b = x.shape[0]
        if x.ndim != 5 or x.shape[1] != self.cfg.in_dim:
            raise ValueError(f"x must be [B, {self.cfg.in_dim}, F, H, W] latents, got {list(x.shape)}")
        if context.ndim != 3 or context.shape[-1] != self.cfg.text_dim:
            raise ValueError(f"context must be [B, L, {self.cfg.text_dim}] text embeddings, got {list(context.shape)}")
        timestep = timestep.reshape(-1).expand(b) if timestep.numel() == 1 else timestep
        patches = self.embed_patches(x.to(dtype))
        tokens, grid = patches.tokens, patches.grid
        n_video = tokens.shape[1]
        e, e0 = self.time_modulation(timestep, dtype)

        table, key_mask, e_clean = self.video_rope(grid, x.device, dtype), None, None
        if refs is not None:
            packed = refs if isinstance(refs, PackedReferences) else self.pack(refs, x.shape, dtype)
            if packed.batch != b or packed.grid != grid[1:]:
                raise ValueError(f"packed references are for batch {packed.batch} and grid {packed.grid}; "
                                 f"x has batch {b} and grid {grid[1:]}")
            tokens = torch.cat([tokens, packed.tokens.to(dtype)], dim=1)
            table, key_mask = packed.joined(table, n_video)
            if self.alchemint.cfg.ref_timestep == "zero":
                e_clean = self.time_modulation(torch.zeros_like(timestep), dtype)[1]

        dense_state = None
        if dense is not None:
            if self.alchemint is None or self.alchemint.dense is None:
                raise ValueError("dense captions need an adapter with dense_captions enabled")
            dense_state = prepare_dense(self, dense, grid, dtype)

        step = Step(e_video=e0, e_clean=e_clean, n_video=n_video, table=table, key_mask=key_mask,
                    context=self.text_embedding(context.to(dtype)),
                    context_mask=context_mask, dense=dense_state)
        branches = self.alchemint.dense if self.alchemint is not None and self.alchemint.dense is not None else None
        for i, block in enumerate(self.blocks):
            branch = branches[i] if branches is not None else None
            if self.gradient_checkpointing and torch.is_grad_enabled():
                tokens = checkpoint(block, tokens, step, branch, use_reentrant=False)
            else:
                tokens = block(tokens, step, branch)

        out = self.head(tokens[:, :n_video], e)  # reference and tag outputs are discarded
        pf, ph, pw = self.cfg.patch_size
        f, h, w = grid
        out = rearrange(out, "b (f h w) (pf ph pw c) -> b c (f pf) (h ph) (w pw)",
                        f=f, h=h, w=w, pf=pf, ph=ph, pw=pw)
        if self.cfg.prediction == "x":  # the head predicted the clean latents: the velocity that reaches them
            f = torch.promote_types(x.dtype, torch.float32)  # at least fp32: dividing by a small sigma
            sigma = (timestep.to(f) / 1000).clamp_min(X_PREDICTION_MIN_SIGMA).view(-1, 1, 1, 1, 1)
            out = (x.to(f) - out.to(f)) / sigma
        return out.to(out_dtype)

    def summary(self) -> str:
        n_base = sum(p.numel() for n, p in self.named_parameters() if not n.startswith("alchemint."))
        n_new = sum(p.numel() for p in self.alchemint.parameters()) if self.alchemint is not None else 0
        c = self.cfg
        lines = [f"{describe_base(c, self.expert)}: dim {c.dim}, {c.num_layers} blocks, {c.num_heads} heads x "
                 f"{c.head_dim}, ffn {c.ffn_dim}, text dim {c.text_dim}, patch {list(c.patch_size)}: {n_base / 1e6:.2f}M parameters"]
        if self.alchemint is not None:
            a = self.alchemint.cfg
            lines.append(f"AlcheMinT adapter: up to {a.max_refs} references, RoPE mode {a.rope_mode} "
                         f"(w_mid {a.w_mid}, w_edge {a.w_edge}, edge offset {a.edge_offset}), clean-token timestep "
                         f"{a.ref_timestep}, dense captions {'on' if a.dense_captions else 'off'}: "
                         f"{n_new / 1e6:.3f}M new parameters")
        return "\n".join(lines)
