"""Does a latent space keep a subject's shape through the noise at which a diffusion model decides it?

For each VAE (an encoders file), a small CNN is trained per noise level to read the shape of a single subject from
one frame's code, standardised per channel and noised as in training, (1 - sigma) * z + sigma * noise; its accuracy
on held-out frames says how much shape survives that noise. Beside it, the VAE's ceilings: the held-out benchmark's
ground-truth videos encoded and decoded, then scored (shape, colour, t-IOU). A model on latents where the probe is
at chance by the noise level where shapes form can only copy whatever shape its noisy input suggests."""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from einops import rearrange
from torch import nn

from ..encoders import TinyVideoVAE
from ..native import DemoVAE
from ..synthetic import SHAPES, appearances, background, composite, random_subject, shape_mask, texture_colour
from .evaluate import Scores, heldout_prompts, load_detector, through_vae

SIGMAS = (0.0, 0.5, 0.7, 0.85)


def single_subject_frames(rng: np.random.Generator, n: int, size: int = 64) -> tuple[np.ndarray, np.ndarray]:
    """n frames [n, size, size, 3] uint8, each one subject of the demo (any appearance, pose, place, texture) on a
    demo background, and its shape's index in SHAPES."""
    pool = appearances("train") + appearances("test")
    frames, labels = np.empty((n, size, size, 3), np.uint8), np.empty(n, np.int64)
    for i in range(n):
        a = pool[int(rng.integers(len(pool)))]
        s = random_subject(rng, a, 1, size, size, 0, 1, interval=(0, 0))
        cov = shape_mask(a.shape, s.size, s.angle, size, size, *s.start)
        img = composite(background(rng, size, size), cov, texture_colour(a, size, size, phase=float(rng.integers(6))))
        frames[i], labels[i] = np.clip(img, 0, 255).astype(np.uint8), SHAPES.index(a.shape)
    return frames, labels


def require_frame_wise(vae: TinyVideoVAE, what: str = "the VAE") -> None:
    if not vae.frame_wise:
        raise ValueError(f"{what}: a joint VAE codes four frames together; the probe reads one frame's code, which "
                         "only a frame-wise VAE has: give encoders made with train-encoders --frame-wise or --pixel")


@torch.no_grad()
def frame_codes(vae: TinyVideoVAE, frames: np.ndarray) -> torch.Tensor:
    """One pixel frame's code per frame, standardised with the VAE's statistics: [n, C/4, h, w]."""
    require_frame_wise(vae)
    x = torch.from_numpy(frames).float().div(127.5).sub(1)
    z = torch.cat([vae.enc(rearrange(c, "n h w c -> n c h w")) for c in x.split(256)])
    quarter = vae.latent_channels // 4
    mean, std = vae.stats[:, -quarter:]  # a regular frame's quarter of the channels (frame 0 has its own)
    return (z - mean[:, None, None]) / std[:, None, None]


class Probe(nn.Module):
    """Per-cell linear embedding first (what a DiT's patch embedding does with a token), then convolutions over
    the cells."""

    def __init__(self, channels: int, classes: int = len(SHAPES), width: int = 96):
        super().__init__()
        self.net = nn.Sequential(nn.Conv2d(channels, width, 1), nn.SiLU(), nn.Conv2d(width, width, 3, 1, 1),
                                 nn.SiLU(), nn.Conv2d(width, width, 3, 1, 1), nn.SiLU(), nn.AdaptiveAvgPool2d(4),
                                 nn.Flatten(), nn.Linear(width * 16, classes))

    def forward(self, z):
        return self.net(z)


def probe_accuracy(train: tuple[torch.Tensor, torch.Tensor], test: tuple[torch.Tensor, torch.Tensor], sigma: float,
                   steps: int = 1500, batch: int = 128, seed: int = 0) -> float:
    """A probe trained on codes noised to sigma (fresh noise every batch), scored on the test codes noised once."""
    g = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    (z, y), (zt, yt) = train, test
    probe = Probe(z.shape[1])
    opt = torch.optim.AdamW(probe.parameters(), lr=2e-3, weight_decay=1e-4)
    noised = lambda v: (1 - sigma) * v + sigma * torch.randn(v.shape, generator=g)  # noqa: E731
    for step in range(steps):
        for group in opt.param_groups:
            group["lr"] = 2e-3 * 0.5 * (1 + math.cos(math.pi * step / steps))
        idx = torch.randint(len(z), (batch,), generator=g)
        loss = F.cross_entropy(probe(noised(z[idx])), y[idx])
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    with torch.no_grad():
        return float((probe(noised(zt)).argmax(1) == yt).float().mean())


@dataclass
class ProbeRow:
    name: str
    latent: str  # e.g. "32 x 8 x 8 per latent frame"
    accuracy: dict[float, float]  # sigma -> shape read by the probe
    ceiling: Scores


def probe_vae(name: str, vae: TinyVideoVAE, train_frames, test_frames, sigmas=SIGMAS, steps: int = 1500,
              prompts: int = 100, seed: int = 1234, detector=None) -> ProbeRow:
    (f, y), (ft, yt) = train_frames, test_frames
    z, zt = frame_codes(vae, f), frame_codes(vae, ft)
    acc = {s: probe_accuracy((z, torch.from_numpy(y)), (zt, torch.from_numpy(yt)), s, steps) for s in sigmas}
    ceiling = through_vae(DemoVAE(vae), heldout_prompts(prompts, seed), detector or load_detector(), name)
    latent = f"{vae.latent_channels} x {z.shape[-2]} x {z.shape[-1]} per latent frame"
    return ProbeRow(name, latent, acc, ceiling)


def probe_table(rows: list[ProbeRow]) -> str:
    sigmas = list(rows[0].accuracy)
    head = ("| VAE | latents | " + " | ".join(f"probe at σ {s:g}" for s in sigmas)
            + " | ceiling shape | ceiling colour | ceiling t-IOU |")
    lines = [head, "|" + "---|" * (len(sigmas) + 5)]
    for r in rows:
        c = r.ceiling
        lines.append(f"| {r.name} | {r.latent} | " + " | ".join(f"{r.accuracy[s]:.1%}" for s in sigmas)
                     + f" | {c.shape_accuracy:.1%} | {c.colour_accuracy:.1%} | {c.t_iou[0]:.3f} |")
    return "\n".join(lines)
