"""Latent normalisation: raw VAE latents <-> the normalised space the DiT works in."""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import torch

# Wan 2.1 VAE per-channel statistics (16 channels), published with the Wan 2.1 VAE.
WAN21_MEAN = (-0.7571, -0.7089, -0.9113, 0.1075, -0.1745, 0.9653, -0.1517, 1.5508,
              0.4134, -0.0715, 0.5517, -0.3632, -0.1922, -0.9497, 0.2503, -0.2921)
WAN21_STD = (2.8184, 1.4541, 2.3275, 2.6558, 1.2196, 1.7708, 2.6052, 2.0743,
             3.2687, 2.1526, 2.8652, 1.5579, 1.6382, 1.1253, 2.8251, 1.9160)


@dataclass(frozen=True)
class LatentFormat:
    mean: tuple[float, ...]
    std: tuple[float, ...]

    def _stats(self, x: torch.Tensor, channel_dim: int):
        shape = [1] * x.ndim
        shape[channel_dim] = len(self.mean)
        if x.shape[channel_dim] != len(self.mean):
            raise ValueError(f"latents have {x.shape[channel_dim]} channels; this latent format has {len(self.mean)}"
                             f" (is the VAE the one the model was trained with?)")
        as_t = lambda v: torch.tensor(v, dtype=torch.float32, device=x.device).view(shape)
        return as_t(self.mean), as_t(self.std)

    def normalize(self, raw: torch.Tensor, channel_dim: int = 1) -> torch.Tensor:
        mean, std = self._stats(raw, channel_dim)
        return ((raw.float() - mean) / std).to(raw.dtype)

    def denormalize(self, x: torch.Tensor, channel_dim: int = 1) -> torch.Tensor:
        mean, std = self._stats(x, channel_dim)
        return (x.float() * std + mean).to(x.dtype)

    def to_dict(self) -> dict:
        return {"mean": list(self.mean), "std": list(self.std)}


def read_latent_format(folder: Path) -> LatentFormat:
    """The latent_format.json a cache folder carries (written from its video encoder)."""
    path = Path(folder) / LATENT_FORMAT_FILE
    if not path.is_file():
        raise ValueError(f"{folder}: no {LATENT_FORMAT_FILE}; build the cache with `python -m alchemint_core cache`")
    d = json.loads(path.read_text())
    return LatentFormat(tuple(d["mean"]), tuple(d["std"]))


LATENT_FORMAT_FILE = "latent_format.json"
WAN21 = LatentFormat(WAN21_MEAN, WAN21_STD)


def identity_format(channels: int) -> LatentFormat:
    return LatentFormat((0.0,) * channels, (1.0,) * channels)
