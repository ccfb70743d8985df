"""Training of the demo's VAE and text encoder on synthetic data (seeded; CPU)."""
from __future__ import annotations

import math
import time
from typing import Callable

import numpy as np
import torch
import torch.nn.functional as F
from einops import rearrange
from torch import nn

from ..encoders import TinyTextEncoder, TinyVideoVAE
from ..synthetic import COLOURS, SHAPES, appearances, random_video, render_reference

VOCAB = [*COLOURS, *SHAPES, "a", "and", "from", "to", "s", *map(str, range(10))]


def video_batch(rng: np.random.Generator, n: int, frames: int, size: int) -> torch.Tensor:
    """[n, 3, frames, size, size] in [-1, 1]; a quarter of them are single frames (how references are encoded)."""
    vids = [random_video(rng, "train", frames, size, size).frames for _ in range(n)]
    x = torch.from_numpy(np.stack(vids)).permute(0, 4, 1, 2, 3).float() / 127.5 - 1
    return x


def reference_batch(rng: np.random.Generator, n: int, size: int) -> torch.Tensor:
    """[n, 3, size, size] in [-1, 1]: reference images of training appearances."""
    pool = appearances("train")
    imgs = [render_reference(rng, pool[int(rng.integers(len(pool)))], size, size)[0] for _ in range(n)]
    return torch.from_numpy(np.stack(imgs)).permute(0, 3, 1, 2).float() / 127.5 - 1


def train_vae(steps: int = 3000, seed: int = 0, batch: int = 4, frames: int = 17, size: int = 64,
              latent_channels: int = 16, width: int = 48, lr: float = 2e-3, crop: int = 32,
              log: Callable[[str], None] = print, init: TinyVideoVAE | None = None,
              frame_wise: bool = False, latent_noise: float = 0.05, scale: int = 8,
              pixel: bool = False) -> TinyVideoVAE:
    """Reconstruction (L1 + L2) of synthetic videos and of single frames. Gaussian noise on the latents during
    training (latent_noise x their std) keeps the decoder tolerant of the imperfect latents a diffusion model
    produces; more of it makes the encoder spread detail (a subject's shape) over strong, redundant features that
    survive the noise of sampling longer, at some cost in sharpness."""
    if not (math.isfinite(latent_noise) and 0 <= latent_noise <= 2):
        raise ValueError(f"latent noise (--latent-noise) {latent_noise!r} must be in [0, 2]: a fraction of the "
                         f"latents' std, e.g. 0.05 (the default) or 0.5")
    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    vae = TinyVideoVAE(latent_channels, width, frame_wise, scale, pixel)
    if pixel:  # nothing to learn: only the per-channel statistics below
        steps = 0
    if init is not None:  # continue training earlier weights
        vae.load_state_dict(init.state_dict())
    vae.train().requires_grad_(True)
    opt = torch.optim.AdamW(vae.parameters(), lr=lr, weight_decay=1e-4) if steps else None
    # rendering is slower than a step: reuse a pool of batches (no more of them than the run has steps)
    pool = [video_batch(rng, batch, frames, size) for _ in range(min(64, steps))]
    t0 = time.perf_counter()
    for step in range(steps):
        for g in opt.param_groups:
            g["lr"] = lr * min(1.0, (step + 1) / 100) * 0.5 * (1 + math.cos(math.pi * step / steps))
        x = pool[step % len(pool)] if step % 4 else video_batch(rng, batch, frames, size)
        if step % 4 == 0:
            pool[(step // 4) % len(pool)] = x
        if vae.frame_wise:  # an image autoencoder applied per frame: train it on frames and reference images
            x = rearrange(x, "b c n h w -> (b n) c h w")[torch.from_numpy(rng.permutation(batch * frames)[:32])]
            if step % 5 == 4:  # (the frames above are still drawn: the random stream stays as it was trained)
                x = reference_batch(rng, 16, size)
        elif step % 5 == 4:  # single frames, as references are encoded
            x = x[:, :, int(rng.integers(0, frames)), None]
        if step % 5 != 4:  # the VAE is convolutional: random 32-pixel crops train it 4x faster than whole frames
            oy, ox = (int(rng.integers(0, (size - crop) // 8 + 1)) * 8 for _ in range(2))
            x = x[..., oy:oy + crop, ox:ox + crop]
        code, draw = (vae.enc, vae.dec) if vae.frame_wise else (vae.encode, vae.decode)
        z = code(x)
        z_noisy = z + latent_noise * z.detach().std() * torch.randn_like(z)
        y = draw(z_noisy)
        loss = F.l1_loss(y, x) + F.mse_loss(y, x) + 1e-4 * z.pow(2).mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        if step % 100 == 0 or step == steps - 1:
            log(f"vae step {step} loss {loss.item():.4f} ({time.perf_counter() - t0:.0f}s)")
    vae.eval()
    with torch.no_grad():
        vae.set_statistics(torch.cat([vae.encode(video_batch(rng, 4, frames, size)) for _ in range(8)]))
    return vae.requires_grad_(False)


class ImageTower(nn.Module):
    """A small CNN that embeds a reference image, used only to train the text encoder contrastively."""

    def __init__(self, dim: int):
        super().__init__()
        self.net = nn.Sequential(nn.Conv2d(3, 32, 4, 2, 1), nn.SiLU(), nn.Conv2d(32, 64, 4, 2, 1), nn.SiLU(),
                                 nn.Conv2d(64, 64, 4, 2, 1), nn.SiLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
                                 nn.Linear(64, dim))

    def forward(self, x):
        return self.net(x)


def train_text_encoder(steps: int = 1500, seed: int = 0, batch: int = 48, dim: int = 64, size: int = 64,
                       lr: float = 1e-3, log: Callable[[str], None] = print) -> TinyTextEncoder:
    """CLIP-style: a tag's pooled embedding must pick out images of its subject among the batch. Words are
    embedded separately, so held-out (colour, shape) pairs compose from words seen in training."""
    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    text = TinyTextEncoder(VOCAB, dim=dim)
    tower = ImageTower(dim)
    scale = nn.Parameter(torch.tensor(math.log(10.0)))
    opt = torch.optim.AdamW([*text.parameters(), *tower.parameters(), scale], lr=lr)
    pool = appearances("train")
    t0 = time.perf_counter()
    for step in range(steps):
        picks = [pool[i] for i in rng.choice(len(pool), batch, replace=False)]
        tags = [a.tag for a in picks]
        imgs = np.stack([render_reference(rng, a, size, size)[0] for a in picks])
        x = torch.from_numpy(imgs).permute(0, 3, 1, 2).float() / 127.5 - 1
        emb, mask = text.encode(tags)
        t = F.normalize((emb * mask[..., None]).sum(1) / mask.sum(1, keepdim=True), dim=-1)
        v = F.normalize(tower(x), dim=-1)
        logits = scale.exp() * t @ v.T
        # several picks can share a tag (textures differ): every image of the tag counts as a match
        same = torch.tensor([[a == b for b in tags] for a in tags], dtype=torch.float32)
        target = same / same.sum(1, keepdim=True)
        loss = -(target * logits.log_softmax(1)).sum(1).mean() - (target * logits.T.log_softmax(1)).sum(1).mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        if step % 100 == 0 or step == steps - 1:
            log(f"text step {step} loss {loss.item():.4f} ({time.perf_counter() - t0:.0f}s)")
    return text.eval().requires_grad_(False)
