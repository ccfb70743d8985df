"""ComfyUI's VAE and CLIP call signatures, both ways, by duck typing (no ComfyUI import).

- `DemoVAE` / `DemoCLIP` expose the demo's tiny encoders with the signatures of ComfyUI's `VAE` and `CLIP`, so the
  native nodes (CLIP Text Encode, VAE Encode, VAE Decode) work with the demo model.
- `encode_image`, `encode_text`, `conditioning_tensors` and the cache adapters call any object with those
  signatures: ComfyUI's own VAE and CLIP for Wan, or the demo's. One code path for both scales.

ComfyUI conventions: images are float [N, H, W, 3] in [0, 1]; a VAE encodes N = 4k+1 frames to raw latents
[1, C, T, h, w] and decodes [B, C, T, h, w] to [B, N, H, W, 3]; CONDITIONING is [[embedding [1, L, D], {...}]].
"""
from __future__ import annotations

from typing import Any, Sequence

import numpy as np
import torch
from einops import rearrange

from .encoders import TinyTextEncoder, TinyVideoVAE
from .model.latents import LatentFormat
from .sampling.intervals import latent_frame_count


class DemoVAE:
    """The demo VAE behind ComfyUI's VAE interface."""

    def __init__(self, vae: TinyVideoVAE):
        self.vae = vae
        self.latent_channels = vae.latent_channels
        self.latent_dim = 3
        self.downscale_ratio = self.upscale_ratio = vae.scale

    @property
    def latent_format(self) -> LatentFormat:
        return self.vae.latent_format

    def spacial_compression_encode(self) -> int:
        return self.vae.scale

    def spacial_compression_decode(self) -> int:
        return self.vae.scale

    def temporal_compression_decode(self) -> int:
        return 4

    @torch.no_grad()
    def encode(self, pixels: torch.Tensor) -> torch.Tensor:
        """[N, H, W, 3+] in [0, 1], N = 4k+1 frames of one video -> raw latents [1, C, T, H/s, W/s] (s: scale)."""
        if pixels.ndim != 4 or pixels.shape[-1] < 3:
            raise ValueError(f"demo VAE: images must be [N, H, W, 3], got {list(pixels.shape)}")
        latent_frame_count(pixels.shape[0])
        video = rearrange(pixels[..., :3].float().cpu(), "n h w c -> 1 c n h w") * 2 - 1
        return self.vae.encode(video)

    @torch.no_grad()
    def decode(self, latents: torch.Tensor) -> torch.Tensor:
        """Raw latents [B, C, T, h, w] -> frames [B, N, H, W, 3] in [0, 1]."""
        if latents.ndim != 5 or latents.shape[1] != self.latent_channels:
            raise ValueError(f"demo VAE: latents must be [B, {self.latent_channels}, T, h, w], got "
                             f"{list(latents.shape)}; decode latents made with the demo model")
        video = self.vae.decode(latents.float().cpu())
        return rearrange((video + 1) / 2, "b c n h w -> b n h w c").clamp(0, 1)


class DemoCLIP:
    """The demo text encoder behind ComfyUI's CLIP interface (tokenize, encode_from_tokens[_scheduled])."""

    def __init__(self, text: TinyTextEncoder):
        self.text = text

    def tokenize(self, text: str, return_word_ids: bool = False, **kwargs) -> dict:
        return {"alchemint_demo": [str(text)]}

    def encode(self, text: str) -> torch.Tensor:
        return self.encode_from_tokens(self.tokenize(text))

    @torch.no_grad()
    def encode_from_tokens(self, tokens: dict, return_pooled: bool = False, return_dict: bool = False):
        emb, mask = self.text.encode(tokens["alchemint_demo"])
        emb, mask = emb[:1], mask[:1]
        if return_dict:
            return {"cond": emb, "pooled_output": None, "attention_mask": mask}
        return (emb, None) if return_pooled else emb

    def encode_from_tokens_scheduled(self, tokens: dict, unprojected: bool = False, add_dict: dict | None = None):
        out = self.encode_from_tokens(tokens, return_dict=True)
        return [[out["cond"], {"pooled_output": None, "attention_mask": out["attention_mask"], **(add_dict or {})}]]


def to_pixels(image: np.ndarray) -> torch.Tensor:
    """uint8 [H, W, 3] -> float [1, H, W, 3] in [0, 1]."""
    return torch.from_numpy(np.array(image, np.float32))[None] / 255


def encode_image(vae: Any, image: np.ndarray) -> torch.Tensor:
    """One image (uint8 [H, W, 3]) -> raw latent [C, h, w]: a one-frame video through the VAE."""
    z = vae.encode(to_pixels(image))
    if z.ndim != 5 or z.shape[2] != 1:
        raise ValueError(f"the VAE gave latents {list(z.shape)} for one image; expected [1, C, 1, h, w] "
                         "(a Wan 2.1 VAE or the demo VAE)")
    return z[0, :, 0].float()


def conditioning_tensors(conditioning: Any, what: str = "conditioning") -> tuple[torch.Tensor, torch.Tensor | None]:
    """ComfyUI CONDITIONING -> (embedding [1, L, D], mask [1, L] or None) of its first entry."""
    try:
        emb, extra = conditioning[0][0], conditioning[0][1]
    except (TypeError, IndexError, KeyError):
        raise ValueError(f"{what} must be CONDITIONING from a CLIP Text Encode node") from None
    if not isinstance(emb, torch.Tensor) or emb.ndim != 3:
        raise ValueError(f"{what}: expected an embedding [1, L, D], got {getattr(emb, 'shape', type(emb))}")
    mask = extra.get("attention_mask") if isinstance(extra, dict) else None
    if mask is not None:
        mask = mask.reshape(emb.shape[0], -1).bool()
        if mask.shape[1] != emb.shape[1]:
            mask = None
    return emb[:1], (mask[:1] if mask is not None else None)


def encode_text(clip: Any, text: str) -> tuple[torch.Tensor, torch.Tensor]:
    """A text through a CLIP-like encoder -> (embedding [L, D] of real tokens only, length L)."""
    emb, mask = conditioning_tensors(clip.encode_from_tokens_scheduled(clip.tokenize(text)), f"text '{text}'")
    emb = emb[0].float()
    if mask is not None:
        emb = emb[: max(int(mask[0].sum()), 1)]
    return emb, emb.shape[0]


def stack_embeddings(embs: Sequence[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
    """[L_i, D] embeddings -> zero-padded [N, L, D] and their lengths [N]."""
    longest = max(e.shape[0] for e in embs)
    out = torch.zeros(len(embs), longest, embs[0].shape[-1])
    for i, e in enumerate(embs):
        out[i, : e.shape[0]] = e
    return out, torch.tensor([e.shape[0] for e in embs])


class VideoEncoderAdapter:
    """The cache's VideoEncoder protocol ([B, 3, N, H, W] in [-1, 1] -> raw latents) over a ComfyUI-style VAE."""

    def __init__(self, vae: Any, latent_format: LatentFormat):
        self.vae, self.latent_format = vae, latent_format

    @torch.no_grad()
    def encode(self, video: torch.Tensor) -> torch.Tensor:
        out = [self.vae.encode(rearrange((v + 1) / 2, "c n h w -> n h w c").clamp(0, 1)) for v in video]
        return torch.cat([z.float().cpu() for z in out])


class TextEncoderAdapter:
    """The cache's TextEncoder protocol (texts -> padded [N, L, D] and mask) over a ComfyUI-style CLIP."""

    def __init__(self, clip: Any):
        self.clip = clip

    @torch.no_grad()
    def encode(self, texts: Sequence[str]) -> tuple[torch.Tensor, torch.Tensor]:
        emb, lengths = stack_embeddings([encode_text(self.clip, t)[0] for t in texts])
        return emb, torch.arange(emb.shape[1])[None] < lengths[:, None]
