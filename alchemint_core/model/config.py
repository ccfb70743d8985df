"""Model and adapter configuration, and inference of a Wan 2.1 / 2.2 config from checkpoint shapes."""
from __future__ import annotations

import dataclasses
import json
import math
from dataclasses import dataclass
from typing import Mapping, Sequence

ROPE_MODES = ("none", "mid", "werope", "avg")
PREDICTIONS = ("velocity", "x")
X_PREDICTION_MIN_SIGMA = 0.05  # (x_t - x0) / sigma with sigma floored here, as in JiT (Li & He, 2025)


class CheckpointError(ValueError):
    """A checkpoint file or state dict is not what the loader needs."""


@dataclass
class WanConfig:
    """Shape of a Wan diffusion transformer (2.1 T2V 1.3B: dim 1536, 30 layers; 2.1 14B and each 2.2 A14B expert:
    dim 5120, 40 layers; 2.2 TI2V 5B: dim 3072, 30 layers, 48 latent channels)."""

    dim: int = 1536
    ffn_dim: int = 8960
    num_heads: int = 12
    num_layers: int = 30
    in_dim: int = 16
    out_dim: int = 16
    text_dim: int = 4096
    freq_dim: int = 256
    patch_size: tuple[int, int, int] = (1, 2, 2)
    eps: float = 1e-6
    cross_attn_norm: bool = True
    rope_theta: float = 10000.0
    # Time-axis frequency bank. Wan's theta 10000 suits 21 latent frames; a model trained on a
    # handful of latent frames needs faster time frequencies. Explicit frequencies win over theta.
    rope_time_theta: float | None = None
    rope_time_freqs: tuple[float, ...] | None = None
    # What the head predicts: "velocity" (Wan's v = noise - x0) or "x" (the clean latents, turned into the velocity
    # (x_t - x0) / sigma). A head narrower than its output (pixel latents: 768 values per token from 192 features)
    # cannot represent noise, which fills every dimension, but can represent clean data, which does not.
    prediction: str = "velocity"

    @property
    def head_dim(self) -> int:
        return self.dim // self.num_heads

    def validate(self) -> "WanConfig":
        if self.prediction not in PREDICTIONS:
            raise CheckpointError(f"prediction {self.prediction!r} must be one of {PREDICTIONS}")
        if self.dim % self.num_heads:
            raise CheckpointError(f"dim {self.dim} is not divisible by num_heads {self.num_heads}")
        if self.head_dim % 2 or self.head_dim < 6:
            raise CheckpointError(f"head_dim {self.head_dim} must be even and at least 6 for 3D RoPE")
        if self.rope_time_freqs is not None and len(self.rope_time_freqs) != rope_split(self.head_dim)[0] // 2:
            raise CheckpointError(
                f"rope_time_freqs has {len(self.rope_time_freqs)} values; head_dim {self.head_dim} needs "
                f"{rope_split(self.head_dim)[0] // 2}")
        return self

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: Mapping) -> "WanConfig":
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = set(d) - names
        if unknown:
            raise CheckpointError(f"unknown model config keys {sorted(unknown)}")
        d = dict(d)
        if "patch_size" in d:
            d["patch_size"] = tuple(d["patch_size"])
        if d.get("rope_time_freqs") is not None:
            d["rope_time_freqs"] = tuple(float(f) for f in d["rope_time_freqs"])
        return cls(**d).validate()


WAN21_1_3B = WanConfig()
WAN21_14B = WanConfig(dim=5120, ffn_dim=13824, num_heads=40, num_layers=40)
# Wan 2.2 (wan/configs/ of the official repo). Each A14B expert has Wan 2.1 14B's layout exactly, so the shapes of
# a file cannot tell a 2.1 14B from either 2.2 expert: which one a file is comes from how it is loaded (as a
# high/low pair). TI2V 5B reads the Wan 2.2 VAE's 48-channel latents.
WAN22_A14B = WAN21_14B
WAN22_TI2V_5B = WanConfig(dim=3072, ffn_dim=14336, num_heads=24, num_layers=30, in_dim=48, out_dim=48)
KNOWN_BASES = ((WAN21_1_3B, "Wan 2.1 T2V 1.3B"), (WAN21_14B, "Wan 2.1 T2V 14B"),
               (WAN22_TI2V_5B, "Wan 2.2 TI2V 5B"))


def describe_base(cfg: WanConfig, expert: str | None = None) -> str:
    """A base model's name for messages: a public Wan model when its layout is one, else its size."""
    if expert is not None:
        return f"the {expert}-noise expert of Wan 2.2 A14B" if describe_base(cfg) == describe_base(WAN22_A14B) else \
            f"the {expert}-noise expert of a two-expert model (dim {cfg.dim}, {cfg.num_layers} blocks)"
    for known, name in KNOWN_BASES:  # what tells the public models apart (adapters record no more than this)
        if (cfg.dim, cfg.num_layers, cfg.in_dim, cfg.text_dim) == (known.dim, known.num_layers, known.in_dim,
                                                                    known.text_dim):
            return name
    return f"a Wan-layout model (dim {cfg.dim}, {cfg.num_layers} blocks, {cfg.in_dim} latent channels)"


@dataclass
class AdapterConfig:
    """The parameters AlcheMinT adds to the base DiT, and how references are encoded."""

    max_refs: int = 8
    rope_mode: str = "werope"
    w_mid: float = 1.0
    w_edge: float = -0.4
    # WeRoPE edges sit this many latent frames outside the interval (so short intervals do not cancel).
    edge_offset: float = 0.0
    min_half_length: float = 0.5  # latent frames
    # Modulation of the clean reference/tag tokens: "video" (the video's timestep) or "zero" (t = 0).
    ref_timestep: str = "zero"
    dense_captions: bool = False
    dense_segment_length: float = 8.0  # ReRoPE length L of one event
    lora_rank: int = 0
    lora_alpha: float = 0.0
    lora_targets: tuple[str, ...] = ("self_attn.q", "self_attn.k", "self_attn.v", "self_attn.o",
                                     "cross_attn.q", "cross_attn.k", "cross_attn.v", "cross_attn.o",
                                     "ffn.0", "ffn.2")

    def validate(self) -> "AdapterConfig":
        if self.rope_mode not in ROPE_MODES:
            raise ValueError(f"rope_mode {self.rope_mode!r} is not one of {ROPE_MODES}")
        if not 1 <= self.max_refs <= 64:
            raise ValueError(f"max_refs {self.max_refs} must be between 1 and 64")
        if self.ref_timestep not in ("video", "zero"):
            raise ValueError(f"ref_timestep {self.ref_timestep!r} must be 'video' or 'zero'")
        check_werope_weights(self.w_mid, self.w_edge)
        if not (math.isfinite(self.min_half_length) and self.min_half_length >= 0):
            raise ValueError(f"min_half_length {self.min_half_length} must be a finite number >= 0")
        if self.lora_rank < 0:
            raise ValueError(f"lora_rank {self.lora_rank} must be >= 0")
        return self

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: Mapping) -> "AdapterConfig":
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = set(d) - names
        if unknown:
            raise CheckpointError(f"unknown adapter config keys {sorted(unknown)}")
        d = dict(d)
        if "lora_targets" in d:
            d["lora_targets"] = tuple(d["lora_targets"])
        return cls(**d).validate()


W_MID_MAX = 4.0  # the nodes' own limit; larger gains only scale q/k, and past ~1e6 float64 rounding breaks the bound


def check_werope_weights(w_mid: float, w_edge: float) -> None:
    if not (math.isfinite(w_mid) and math.isfinite(w_edge)) or not 0 < w_mid <= W_MID_MAX:
        raise ValueError(f"WeRoPE weights w_mid={w_mid}, w_edge={w_edge}: w_mid must be a number in (0, {W_MID_MAX}] "
                         "(the default is 1.0)")
    if not -w_mid / 2 - 1e-9 <= w_edge <= 1e-9:
        raise ValueError(
            f"WeRoPE w_edge={w_edge} must lie in [-w_mid/2, 0] = [{-w_mid / 2}, 0] so no frequency flips sign")


def rope_split(head_dim: int) -> tuple[int, int, int]:
    """Real channels for time/height/width: 44/42/42 at head_dim 128, as Wan does."""
    hw = 2 * (head_dim // 6)
    return head_dim - 2 * hw, hw, hw


def strip_prefix(keys: Sequence[str]) -> str:
    """The prefix in front of the Wan keys ('' or 'model.diffusion_model.' or 'diffusion_model.')."""
    for prefix in ("model.diffusion_model.", "diffusion_model.", ""):
        if f"{prefix}patch_embedding.weight" in keys:
            return prefix
    raise CheckpointError(
        "this is not a Wan 2.1 diffusion-model checkpoint: no 'patch_embedding.weight' key (with or without the "
        "'model.diffusion_model.' prefix). Give the Wan 2.1 T2V file from models/diffusion_models (or a Wan 2.2 "
        "A14B T2V expert or TI2V 5B file), not a VAE, text encoder or LoRA file.")


def infer_config(shapes: Mapping[str, Sequence[int]], metadata: Mapping[str, str] | None = None) -> WanConfig:
    """Read a WanConfig off tensor shapes (keys without prefix). A saved 'alchemint_model' header wins."""
    if metadata and "alchemint_model" in metadata:
        return WanConfig.from_dict(json.loads(metadata["alchemint_model"]))
    if "img_emb.proj.0.weight" in shapes:
        raise CheckpointError("this is a Wan image-to-video (I2V) checkpoint; AlcheMinT builds on the text-to-video "
                              "(T2V) model. Choose a wan2.1_t2v_* file.")
    required = ["patch_embedding.weight", "text_embedding.0.weight", "time_embedding.0.weight",
                "blocks.0.ffn.0.weight", "head.head.weight", "head.modulation", "blocks.0.modulation"]
    missing = [k for k in required if k not in shapes]
    if missing:
        raise CheckpointError(f"not a Wan 2.1 T2V checkpoint: missing {missing}")
    pe = shapes["patch_embedding.weight"]
    if len(pe) != 5:
        raise CheckpointError(f"patch_embedding.weight has shape {list(pe)}; Wan 2.1 has a 5-D Conv3d weight")
    dim, in_dim, patch = pe[0], pe[1], tuple(pe[2:])
    if in_dim == 36:  # 16 noise + 4 mask + 16 image channels, and no img_emb: Wan 2.2 I2V A14B's experts
        raise CheckpointError("this is a Wan 2.2 image-to-video (I2V A14B) expert (36 input channels); AlcheMinT "
                              "builds on text-to-video. Choose the wan2.2_t2v_high_noise/low_noise_14B files or the "
                              "wan2.2_ti2v_5B file.")
    num_layers = 0
    while f"blocks.{num_layers}.modulation" in shapes:
        num_layers += 1
    head_dim = 128 if dim % 128 == 0 else 64 if dim % 64 == 0 else None
    if head_dim is None:
        raise CheckpointError(f"cannot infer num_heads for dim {dim}: save the checkpoint with its config header")
    cfg = WanConfig(dim=dim, ffn_dim=shapes["blocks.0.ffn.0.weight"][0], num_heads=dim // head_dim,
                    num_layers=num_layers, in_dim=in_dim, out_dim=shapes["head.head.weight"][0] // math.prod(patch),
                    text_dim=shapes["text_embedding.0.weight"][1], freq_dim=shapes["time_embedding.0.weight"][1],
                    patch_size=patch, cross_attn_norm="blocks.0.norm3.weight" in shapes)
    return cfg.validate()


__all__ = ["WanConfig", "AdapterConfig", "CheckpointError", "ROPE_MODES", "WAN21_1_3B", "WAN21_14B", "WAN22_A14B",
           "WAN22_TI2V_5B", "describe_base",
           "infer_config", "strip_prefix", "rope_split", "check_werope_weights", "W_MID_MAX", "PREDICTIONS",
           "X_PREDICTION_MIN_SIGMA"]
