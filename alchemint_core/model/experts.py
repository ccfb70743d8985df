"""Wan 2.2 A14B: two Wan 14B experts denoising one trajectory, the high-noise expert first.

The official configuration (Wan2.2's wan/configs/wan_t2v_A14B.py) switches at boundary 0.875 on the t/1000 scale:
the high-noise expert runs while the (shifted) noise level sigma = t/1000 >= 0.875, the low-noise expert after it.
Its defaults are 40 steps at shift 12, with guidance 4.0 for the high-noise and 3.0 for the low-noise expert.

One AlcheMinT adapter per expert, not one shared adapter. The two experts are separately trained networks with
the same layout but different weights: the adapter's LoRA deltas are corrections to one set of weights, its tag MLP
starts as a copy of that expert's own text embedding, and its index embeddings are read by that expert's attention,
so none of it transfers to the other expert as is. Wan 2.2 itself trains each expert on its own noise range (the
high-noise one on layout and motion, the low-noise one on detail), and AlcheMinT's two jobs split the same way:
timing (WeRoPE, where and when a subject appears) is decided at high noise, identity detail at low noise. So each
adapter is trained on its expert with the timesteps that expert sees in sampling (train option `expert`), and an
adapter records the expert it was made for, so a high-noise adapter cannot be loaded onto the low-noise expert.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import NamedTuple

import torch
from torch import nn

from .config import CheckpointError, describe_base
from .references import PackedReferences, References
from .transformer import WanModel

WAN22_BOUNDARY = 0.875  # sigma (= t/1000) at which sampling hands over from the high- to the low-noise expert
WAN22_A14B_STEPS = 40
WAN22_A14B_SHIFT = 12.0
EXPERTS = ("high", "low")
# What every reference token depends on: the experts' adapters must agree on these (LoRA settings may differ).
SHARED_ADAPTER_SETTINGS = ("max_refs", "rope_mode", "w_mid", "w_edge", "edge_offset", "min_half_length",
                           "ref_timestep", "dense_captions", "dense_segment_length")


def check_boundary(boundary: float) -> None:
    if not (isinstance(boundary, (int, float)) and 0 < boundary < 1):
        raise ValueError(f"expert boundary {boundary!r} must be a noise level in (0, 1) (Wan 2.2 A14B: "
                         f"{WAN22_BOUNDARY})")


def expert_sigma_range(expert: str, boundary: float = WAN22_BOUNDARY) -> tuple[float, float]:
    """The noise levels [lo, hi] an expert sees in sampling: high [boundary, 1], low [0, boundary]."""
    check_boundary(boundary)
    if expert not in EXPERTS:
        raise ValueError(f"expert {expert!r} must be one of {EXPERTS}")
    return (boundary, 1.0) if expert == "high" else (0.0, boundary)


def runs_high(sigma: torch.Tensor, boundary: float = WAN22_BOUNDARY) -> torch.Tensor:
    """Whether a step starting at noise level sigma (0..1) is the high-noise expert's: the one hand-over rule."""
    return sigma.detach().double() >= boundary


def split_sigmas(sigmas: torch.Tensor, boundary: float = WAN22_BOUNDARY) -> tuple[torch.Tensor, torch.Tensor]:
    """A descending schedule (steps + 1 levels) cut where sampling hands over: the first part holds the steps that
    start at or above the boundary (the high-noise expert's), the second the rest; the cut level ends one and starts
    the other, so two samplers chained on them take the steps one sampler with an ExpertPair takes."""
    check_boundary(boundary)
    k = int(runs_high(sigmas[:-1], boundary).sum())
    return sigmas[:k + 1], sigmas[k:]


class PackedPair(NamedTuple):
    """References embedded once per sampling run by each expert (their patch embeddings and tag MLPs differ)."""

    high: PackedReferences
    low: PackedReferences


class ExpertPair(nn.Module):
    """Two experts behind one model interface: forward() runs the high-noise expert for timesteps >= 1000*boundary
    and the low-noise one below, so the sampler, guider and nodes use a pair as they use one WanModel."""

    def __init__(self, high: WanModel, low: WanModel, boundary: float = WAN22_BOUNDARY):
        super().__init__()
        check_boundary(boundary)
        self.high, self.low, self.boundary = high, low, float(boundary)

    # what the rest of the pack reads off a model: the same for both experts (checked by check_pair)
    @property
    def cfg(self):
        return self.high.cfg

    @property
    def alchemint(self):
        return self.high.alchemint

    @property
    def bank(self):
        return self.high.bank

    @property
    def compute_dtype(self) -> torch.dtype:
        return self.high.compute_dtype

    @compute_dtype.setter
    def compute_dtype(self, dtype: torch.dtype) -> None:
        self.high.compute_dtype = self.low.compute_dtype = dtype

    def expert_for(self, timestep: torch.Tensor) -> str:
        """'high' or 'low' for timesteps [B] (0..1000), all on one side of the boundary as in sampling."""
        high = runs_high(timestep.detach().double() / 1000, self.boundary)
        if bool(high.any()) != bool(high.all()):
            raise ValueError(f"timesteps {timestep.tolist()} straddle the expert boundary {self.boundary}: a batch "
                             f"goes to one expert (train each expert on its own, with the training option expert)")
        return "high" if bool(high.all()) else "low"

    def pack(self, refs: References, x_shape, dtype=None) -> PackedPair:
        return PackedPair(self.high.pack(refs, x_shape, dtype), self.low.pack(refs, x_shape, dtype))

    def forward(self, x: torch.Tensor, timestep: torch.Tensor, context: torch.Tensor, refs=None, **kwargs):
        name = self.expert_for(timestep.reshape(-1))
        if isinstance(refs, PackedPair):
            refs = getattr(refs, name)
        return getattr(self, name)(x, timestep, context, refs=refs, **kwargs)

    def offload_blocks(self, device) -> "PairOffload":
        return PairOffload(self.high.offload_blocks(device), self.low.offload_blocks(device))

    def summary(self) -> str:
        return "\n".join([f"Wan 2.2 two-expert model: high-noise expert for sigma >= {self.boundary}, then "
                          f"low-noise", self.high.summary(), self.low.summary()])


class PairOffload(NamedTuple):
    high: object  # BlockOffload
    low: object

    def resident(self) -> list[int]:
        return self.high.resident() + self.low.resident()

    def remove(self) -> None:
        self.high.remove()
        self.low.remove()


def _name(src) -> str:
    return Path(src).name if isinstance(src, (str, os.PathLike)) else "a state dict"


def check_pair(high: WanModel, low: WanModel, high_name: str = "high-noise model",
               low_name: str = "low-noise model") -> None:
    """The two experts must be the two halves of one model, with adapters that agree on reference settings."""
    if high.cfg != low.cfg:
        raise CheckpointError(
            f"{low_name}: the low-noise expert is {describe_base(low.cfg)} but the high-noise expert {high_name} is "
            f"{describe_base(high.cfg)}; give the two experts of one model (wan2.2_t2v_high_noise_14B_* with "
            f"wan2.2_t2v_low_noise_14B_*)")
    if high.cfg.in_dim == 48:
        raise CheckpointError(f"{high_name}: Wan 2.2 TI2V 5B is one model, not a pair of experts; load it alone "
                              f"(no low-noise model)")
    if (high.alchemint is None) != (low.alchemint is None):
        which = low_name if low.alchemint is None else high_name
        raise CheckpointError(f"{which} has no AlcheMinT adapter but the other expert has one: give an adapter for "
                              f"each expert (trained on it), or for neither")
    if high.alchemint is not None:
        a, b = high.alchemint.cfg.to_dict(), low.alchemint.cfg.to_dict()
        differ = [f"{k} {a[k]} (high) vs {b[k]} (low)" for k in SHARED_ADAPTER_SETTINGS if a[k] != b[k]]
        if differ:
            raise CheckpointError(f"the experts' adapters disagree on {', '.join(differ)}: train both experts' "
                                  f"adapters with the same reference settings")


def load_experts(high, low, high_adapter=None, low_adapter=None, dtype: torch.dtype | None = None, device=None,
                 compute_dtype: torch.dtype | None = None, boundary: float = WAN22_BOUNDARY,
                 labels: tuple[str, str] = ("high-noise expert", "low-noise expert")) -> ExpertPair:
    """Wan 2.2 A14B as an ExpertPair from its two expert files (or state dicts), each with its own adapter (a path,
    an AdapterConfig for training, or None); see load_model for dtype and device. labels: how errors name the
    inputs each expert came from."""
    from .loading import load_model
    check_boundary(boundary)
    high_name, low_name = _name(high), _name(low)
    if isinstance(high, (str, os.PathLike)) and isinstance(low, (str, os.PathLike)):
        if Path(high).resolve() == Path(low).resolve():
            raise CheckpointError(f"{low_name} is given as both the high- and the low-noise expert; give the "
                                  f"low-noise expert's own file (wan2.2_t2v_low_noise_14B_*)")
        if "low_noise" in high_name.lower() or "high_noise" in low_name.lower():
            raise CheckpointError(f"{high_name} (high-noise) and {low_name} (low-noise) look swapped by their names; "
                                  f"give the high_noise file as the high-noise expert and the low_noise file as the "
                                  f"low-noise one")
    models = {}
    for name, label, src, adapter in (("high", labels[0], high, high_adapter), ("low", labels[1], low, low_adapter)):
        try:
            models[name] = load_model(src, adapter=adapter, dtype=dtype, device=device, compute_dtype=compute_dtype,
                                      expert=name)
        except CheckpointError as err:
            raise CheckpointError(f"{label}: {err}") from None
    check_pair(models["high"], models["low"], high_name, low_name)
    return ExpertPair(models["high"], models["low"], boundary)


__all__ = ["ExpertPair", "PackedPair", "load_experts", "check_pair", "expert_sigma_range", "WAN22_BOUNDARY",
           "WAN22_A14B_STEPS", "WAN22_A14B_SHIFT", "EXPERTS"]
