"""Encoder pairs turn pixels and words into what the DiT reads. The same two calls serve ComfyUI's native VAE and
CLIP (wrapped by the nodes) and the demo's own tiny encoders:

    video_encoder.encode(video [B, 3, N, H, W] in [-1, 1]) -> raw latents [B, C, (N-1)/4+1, H/8, W/8]
    video_encoder.decode(raw latents) -> video [B, 3, N, H, W] in [-1, 1]
    video_encoder.latent_format -> LatentFormat (raw <-> normalised)
    text_encoder.encode(list of strings) -> (embeddings [B, L, D], mask [B, L] of real tokens)

The demo encoders below have Wan's compression (4x in time with a causal first frame, 8x in space) and are
trained by this project (see alchemint_core.demo).
"""
from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Protocol, Sequence

import torch
from einops import rearrange
from einops.layers.torch import Rearrange
from torch import nn

from .files import SafetensorsFile, save_safetensors
from .model.config import CheckpointError
from .model.latents import LatentFormat, identity_format
from .sampling.intervals import latent_frame_count


class VideoEncoder(Protocol):
    latent_format: LatentFormat

    def encode(self, video: torch.Tensor) -> torch.Tensor: ...

    def decode(self, latents: torch.Tensor) -> torch.Tensor: ...


class TextEncoder(Protocol):
    def encode(self, texts: Sequence[str]) -> tuple[torch.Tensor, torch.Tensor]: ...


class _Res(nn.Module):
    def __init__(self, c: int):
        super().__init__()
        self.body = nn.Sequential(nn.GroupNorm(8, c), nn.SiLU(), nn.Conv2d(c, c, 3, 1, 1), nn.GroupNorm(8, c), nn.SiLU(),
                                  nn.Conv2d(c, c, 3, 1, 1))

    def forward(self, x):
        return x + self.body(x)


def _block(c_in: int, c_out: int, down: bool) -> nn.Sequential:
    """Resolution change (strided or transposed conv) followed by a residual block."""
    conv = nn.Conv2d(c_in, c_out, 4, 2, 1) if down else nn.ConvTranspose2d(c_in, c_out, 4, 2, 1)
    return nn.Sequential(conv, _Res(c_out))


class TinyVideoVAE(nn.Module):
    """A small deterministic video autoencoder with Wan's latent geometry. Latent frame 0 encodes pixel frame 0
    alone (causal first frame); latent frame f encodes pixel frames 4f-3..4f stacked along channels. Space is
    reduced `scale` times (8, as Wan) by strided convolutions.

    frame_wise: an image autoencoder applied to each pixel frame, its code in the frame's own quarter of the
    latent channels. A joint encoder and decoder learn to blur the four frames of a latent frame together, so a
    subject present in only some of them decodes in all or none (presence snaps to latent frames) and motion
    inside a latent frame is lost; a frame-wise one cannot mix frames.

    pixel: no network at all, each frame's pixels rearranged space-to-depth (exact decode). A subject's shape then
    survives the noise levels at which a diffusion model decides it, where in a compressed code it is a faint
    feature that noise erases early (the `probe` command measures both)."""

    def __init__(self, latent_channels: int = 8, width: int = 64, frame_wise: bool = False, scale: int = 8,
                 pixel: bool = False):
        super().__init__()
        if frame_wise and latent_channels % 4:
            raise ValueError(f"a frame-wise VAE needs latent channels divisible by 4, got {latent_channels}")
        if scale not in (2, 4, 8):
            raise ValueError(f"VAE scale {scale!r} must be 2, 4 or 8 (pixels per latent cell along each side)")
        if pixel and (not frame_wise or latent_channels != 4 * 3 * scale * scale):
            raise ValueError(f"a pixel VAE is frame-wise with 4 x 3 x {scale}^2 = {12 * scale * scale} latent channels")
        self.latent_channels, self.width, self.frame_wise = latent_channels, width, frame_wise
        self.scale, self.pixel = scale, pixel
        pixels, code = (3, latent_channels // 4) if frame_wise else (12, latent_channels)
        if pixel:  # no parameters: each frame's pixels rearranged space-to-depth, decoded exactly
            self.enc = Rearrange("b c (h p) (w q) -> b (c p q) h w", p=scale, q=scale)
            self.dec = Rearrange("b (c p q) h w -> b c (h p) (w q)", p=scale, q=scale)
        else:
            downs = [_block(width, width, True) for _ in range(scale.bit_length() - 1)]
            ups = [_block(width, width, False) for _ in range(scale.bit_length() - 1)]
            self.enc = nn.Sequential(nn.Conv2d(pixels, width, 3, 1, 1), *downs, nn.GroupNorm(8, width), nn.SiLU(),
                                     nn.Conv2d(width, code, 3, 1, 1))
            self.dec = nn.Sequential(nn.Conv2d(code, width, 3, 1, 1), _Res(width), *ups, nn.GroupNorm(8, width),
                                     nn.SiLU(), nn.Conv2d(width, pixels, 3, 1, 1))
        self.register_buffer("stats", torch.stack([torch.zeros(latent_channels), torch.ones(latent_channels)]))

    @property
    def config(self) -> dict:
        """What rebuilds this architecture (saved in the encoders file's header)."""
        return {"latent_channels": self.latent_channels, "width": self.width, "frame_wise": self.frame_wise,
                "scale": self.scale, "pixel": self.pixel}

    @property
    def latent_format(self) -> LatentFormat:
        mean, std = self.stats.tolist()
        return LatentFormat(tuple(mean), tuple(std))

    @staticmethod
    def group_frames(video: torch.Tensor) -> torch.Tensor:
        """[B, 3, N, H, W] -> [B, T, 12, H, W]: frame 0 repeated 4x, then consecutive groups of 4."""
        latent_frame_count(video.shape[2])
        first = video[:, :, :1].expand(-1, -1, 4, -1, -1)
        frames = torch.cat([first, video[:, :, 1:]], dim=2)
        return rearrange(frames, "b c (t k) h w -> b t (k c) h w", k=4)

    def encode(self, video: torch.Tensor) -> torch.Tensor:
        b = video.shape[0]
        if video.shape[-1] % self.scale or video.shape[-2] % self.scale:
            raise ValueError(f"video size {list(video.shape[-2:])} must be divisible by {self.scale} for the VAE")
        latent_frame_count(video.shape[2])
        if self.frame_wise:  # each pixel frame once, then grouped like the pixels (frame 0's code fills group 0)
            z = self.enc(rearrange(video.float(), "b c n h w -> (b n) c h w"))
            return rearrange(self.group_frames(rearrange(z, "(b n) c h w -> b c n h w", b=b)),
                             "b t c h w -> b c t h w")
        z = self.enc(rearrange(self.group_frames(video.float()), "b t c h w -> (b t) c h w"))
        return rearrange(z, "(b t) c h w -> b c t h w", b=b)

    def decode(self, latents: torch.Tensor) -> torch.Tensor:
        b = latents.shape[0]
        if self.frame_wise:  # one code per pixel frame; latent frame 0's last copy of frame 0 is the one drawn
            codes = rearrange(latents.float(), "b (k c) t h w -> b (t k) c h w", k=4)[:, 3:]
            y = rearrange(self.dec(rearrange(codes, "b n c h w -> (b n) c h w")), "(b n) c h w -> b c n h w", b=b)
        else:
            y = self.dec(rearrange(latents.float(), "b c t h w -> (b t) c h w"))
            y = rearrange(y, "(b t) (k c) h w -> b c (t k) h w", b=b, k=4)[:, :, 3:]  # group 0's last frame: frame 0
        return y if self.training else y.clamp(-1, 1)  # clamping in training would stop gradients

    def set_statistics(self, latents: torch.Tensor) -> None:
        """Per-channel mean/std of raw latents [B, C, T, H, W] so normalised latents are ~N(0, 1)."""
        flat = rearrange(latents, "b c t h w -> c (b t h w)")
        self.stats.copy_(torch.stack([flat.mean(1), flat.std(1).clamp_min(1e-3)]))


def tokenize(text: str) -> list[str]:
    return re.findall(r"[a-z0-9]+", text.lower())


class TinyTextEncoder(nn.Module):
    """Word embeddings over a fixed vocabulary plus a small transformer encoder. Unknown words map to a shared
    <unk> token; the empty string encodes to a single <empty> token so a dropped caption still has one token."""

    def __init__(self, vocab: Sequence[str], dim: int = 64, layers: int = 2, heads: int = 4, max_len: int = 32):
        super().__init__()
        self.vocab = ["<empty>", "<unk>", *sorted(set(vocab))]
        self.index = {w: i for i, w in enumerate(self.vocab)}
        self.dim, self.max_len = dim, max_len
        self.embed = nn.Embedding(len(self.vocab), dim)
        self.pos = nn.Parameter(torch.randn(max_len, dim) * 0.02)
        layer = nn.TransformerEncoderLayer(dim, heads, dim * 2, dropout=0.0, batch_first=True, norm_first=True)
        self.encoder = nn.TransformerEncoder(layer, layers, enable_nested_tensor=False)
        self.norm = nn.LayerNorm(dim)

    def ids(self, text: str) -> list[int]:
        words = tokenize(text)[: self.max_len] or ["<empty>"]
        return [self.index.get(w, 1) for w in words]

    def encode(self, texts: Sequence[str]) -> tuple[torch.Tensor, torch.Tensor]:
        ids = [self.ids(t) for t in texts]
        n = max(len(i) for i in ids)
        dev = self.embed.weight.device
        tok = torch.zeros(len(ids), n, dtype=torch.long, device=dev)
        mask = torch.zeros(len(ids), n, dtype=torch.bool, device=dev)
        for row, i in enumerate(ids):
            tok[row, : len(i)] = torch.tensor(i, device=dev)
            mask[row, : len(i)] = True
        x = self.embed(tok) + self.pos[:n]
        x = self.encoder(x, src_key_padding_mask=~mask)
        return self.norm(x) * mask[..., None], mask


__all__ = ["VideoEncoder", "TextEncoder", "TinyVideoVAE", "TinyTextEncoder", "tokenize", "identity_format"]


ENCODERS_FORMAT = "alchemint-demo-encoders-v1"


def save_encoders(vae: TinyVideoVAE, text: TinyTextEncoder, path) -> Path:
    """Both demo encoders in one safetensors file, their configs in its header."""
    tensors = {f"vae.{k}": v for k, v in vae.state_dict().items()}
    tensors.update({f"text.{k}": v for k, v in text.state_dict().items()})
    layers = len(text.encoder.layers)
    heads = text.encoder.layers[0].self_attn.num_heads
    meta = {"format": ENCODERS_FORMAT,
            "vae": json.dumps(vae.config),
            "text": json.dumps({"vocab": text.vocab[2:], "dim": text.dim, "layers": layers, "heads": heads,
                                "max_len": text.max_len})}
    return save_safetensors(tensors, path, meta)


def load_encoders(path) -> tuple[TinyVideoVAE, TinyTextEncoder]:
    f = SafetensorsFile(path)
    if f.metadata.get("format") != ENCODERS_FORMAT:
        raise CheckpointError(f"{path}: not a demo-encoders file (no '{ENCODERS_FORMAT}' header); give the "
                              "encoders.safetensors that train-encoders wrote (or leave the option out)")
    vae = TinyVideoVAE(**json.loads(f.metadata["vae"]))
    text = TinyTextEncoder(**json.loads(f.metadata["text"]))
    for prefix, module in (("vae.", vae), ("text.", text)):
        sd = {k[len(prefix):]: f.tensor(k) for k in f.keys() if k.startswith(prefix)}
        try:
            module.load_state_dict(sd)
        except RuntimeError as err:
            raise CheckpointError(f"{path}: {prefix[:-1]} weights do not match their config ({err})") from None
    return vae.eval().requires_grad_(False), text.eval().requires_grad_(False)
