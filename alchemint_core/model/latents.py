"""Latent normalisation: raw VAE latents <-> the normalised space the DiT works in (Wan 2.1 and Wan 2.2 VAEs)."""
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
# Wan 2.2 VAE (48 channels, 16x spatial and 4x temporal compression), published with it (wan/modules/vae2_2.py;
# the same numbers as ComfyUI's latent_formats.Wan22).
WAN22_MEAN = (-0.2289, -0.0052, -0.1323, -0.2339, -0.2799, 0.0174, 0.1838, 0.1557,
              -0.1382, 0.0542, 0.2813, 0.0891, 0.1570, -0.0098, 0.0375, -0.1825,
              -0.2246, -0.1207, -0.0698, 0.5109, 0.2665, -0.2108, -0.2158, 0.2502,
              -0.2055, -0.0322, 0.1109, 0.1567, -0.0729, 0.0899, -0.2799, -0.1230,
              -0.0313, -0.1649, 0.0117, 0.0723, -0.2839, -0.2083, -0.0520, 0.3748,
              0.0152, 0.1957, 0.1433, -0.2944, 0.3573, -0.0548, -0.1681, -0.0667)
WAN22_STD = (0.4765, 1.0364, 0.4514, 1.1677, 0.5313, 0.4990, 0.4818, 0.5013,
             0.8158, 1.0344, 0.5894, 1.0901, 0.6885, 0.6165, 0.8454, 0.4978,
             0.5759, 0.3523, 0.7135, 0.6804, 0.5833, 1.4146, 0.8986, 0.5659,
             0.7069, 0.5338, 0.4889, 0.4917, 0.4069, 0.4999, 0.6866, 0.4093,
             0.5709, 0.6065, 0.6415, 0.4944, 0.5726, 1.2042, 0.5458, 1.6887,
             0.3971, 1.0600, 0.3943, 0.5537, 0.5444, 0.4089, 0.7468, 0.7744)


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
WAN22 = LatentFormat(WAN22_MEAN, WAN22_STD)
# Latent channels -> (statistics, spatial compression) of the Wan VAE that makes them. Both VAEs compress time 4x.
WAN_VAES = {16: (WAN21, 8), 48: (WAN22, 16)}


def wan_vae(in_dim: int) -> tuple[LatentFormat, int]:
    """The latent format and spatial compression of the Wan VAE whose latents a model with `in_dim` channels reads:
    16 channels = the Wan 2.1 VAE (8x; also Wan 2.2 A14B's), 48 = the Wan 2.2 VAE (16x; TI2V 5B). Other counts (a
    model trained here on another VAE) get the Wan 2.1 VAE's, whose normalisation then names the mismatch."""
    return WAN_VAES.get(in_dim, WAN_VAES[16])


def identity_format(channels: int) -> LatentFormat:
    return LatentFormat((0.0,) * channels, (1.0,) * channels)
