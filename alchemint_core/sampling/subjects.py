"""Subjects as users give them (reference image, mask, word tag, interval in seconds) -> References for one video.

The one path from user input to the model's References, used by the demo CLI and the ComfyUI nodes alike. Image
latents are encoded at the video's size (a reference is one latent frame on the video's token grid), so they are
made when the size is known, by `encode_subjects`.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np
import torch

from ..data.dataset import crop_reference, short
from ..model.latents import LatentFormat
from ..model.references import References
from ..model.rope import TemporalRope
from ..native import encode_image, encode_text, stack_embeddings
from .intervals import interval_to_latent

MAX_TAG_CHARS = 200


class SubjectError(ValueError):
    """A subject's image, mask or tag that cannot be used, with the fix in the message."""


@dataclass
class Subject:
    """One reference before encoding."""

    tag: str
    image: np.ndarray  # uint8 [H, W, 3]
    mask: np.ndarray  # bool [H, W]: the subject's pixels
    tag_embedding: torch.Tensor  # [L, text_dim], real tokens only
    vae: Any = None  # the ComfyUI-style VAE that encodes this reference


def check_tag(tag: Any) -> str:
    if not isinstance(tag, str) or not tag.strip():
        raise SubjectError("word tag is empty; name the subject, e.g. 'red ring' or 'the dog'")
    tag = " ".join(tag.split())
    if len(tag) > MAX_TAG_CHARS:
        raise SubjectError(f"word tag '{short(tag, 43)}' is {len(tag)} characters; keep it under {MAX_TAG_CHARS} "
                           "(a few words naming the subject)")
    return tag


def image_array(image: Any, what: str = "reference image") -> np.ndarray:
    """uint8 [H, W, 3] from uint8 or float-in-[0, 1] arrays/tensors that are [H, W], [H, W, 1|3|4] or [1, H, W, C]."""
    a = image.detach().cpu().numpy() if isinstance(image, torch.Tensor) else np.asarray(image)
    if a.ndim == 4 and a.shape[0] == 1:
        a = a[0]
    if a.ndim == 3 and a.shape[0] == 1 and a.shape[-1] not in (1, 3, 4):
        a = a[0]  # a greyscale batch of one [1, H, W]
    if a.ndim == 2:
        a = a[..., None]
    if a.ndim != 3 or a.shape[-1] not in (1, 3, 4) or min(a.shape[:2]) < 1:
        raise SubjectError(f"{what} has shape {list(a.shape)}; give one image [H, W, 3] (RGB), greyscale or RGBA")
    if a.shape[-1] == 1:
        a = np.repeat(a, 3, axis=-1)
    a = a[..., :3]
    if a.dtype != np.uint8:
        a = a.astype(np.float64)
        if not np.isfinite(a).all():
            raise SubjectError(f"{what} holds NaN or infinite values; load the image again")
        a = (np.clip(a, 0, 1) * 255).round().astype(np.uint8)
    return np.ascontiguousarray(a)


def mask_array(mask: Any, hw: tuple[int, int], what: str = "mask") -> np.ndarray:
    """bool [H, W] at the image's size from [H, W] / [1, H, W] masks (nearest resize if another size)."""
    m = mask.detach().cpu().float().numpy() if isinstance(mask, torch.Tensor) else np.asarray(mask, np.float64)
    if m.ndim == 3 and m.shape[0] == 1:
        m = m[0]
    if m.ndim != 2:
        raise SubjectError(f"{what} has shape {list(m.shape)}; give one mask [H, W]")
    if m.shape != hw:
        ys = (np.arange(hw[0]) * m.shape[0] // hw[0]).clip(0, m.shape[0] - 1)
        xs = (np.arange(hw[1]) * m.shape[1] // hw[1]).clip(0, m.shape[1] - 1)
        m = m[ys][:, xs]
    return np.nan_to_num(m) > 0.5


def make_subject(tag: str, image: Any, clip: Any, mask: Any = None, vae: Any = None) -> Subject:
    """A subject from its word tag, image and optional mask (None or empty-free: the whole image)."""
    tag = check_tag(tag)
    img = image_array(image, f"reference image of '{tag}'")
    m = np.ones(img.shape[:2], bool) if mask is None else mask_array(mask, img.shape[:2], f"mask of '{tag}'")
    if not m.any():
        raise SubjectError(f"the mask of '{tag}' is empty; give a mask covering the subject (or none to use the "
                           "whole image)")
    emb, _ = encode_text(clip, tag)
    return Subject(tag, img, m, emb, vae)


def encode_subjects(subjects: Sequence[Subject], height: int, width: int, latent_format: LatentFormat,
                    vae: Any = None) -> torch.Tensor:
    """Normalised reference latents [R, C, h, w] at the video's size: each subject cropped around its mask and
    centred (as in training), then through its VAE (or `vae`)."""
    out = []
    for s in subjects:
        encoder = vae if vae is not None else s.vae
        if encoder is None:
            raise SubjectError(f"subject '{s.tag}' has no VAE to encode its image; connect one to its loader")
        crop, _ = crop_reference(s.image, s.mask, (height, width))
        out.append(encode_image(encoder, crop))
    return latent_format.normalize(torch.stack(out))


def make_references(subjects: Sequence[Subject], latents: torch.Tensor,
                    intervals_s: Sequence[tuple[float, float]], fps: float, num_frames: int,
                    min_half_length: float, rope: TemporalRope | None = None) -> References:
    """References (batch 1) from subjects, their encoded latents [R, C, h, w] and intervals in seconds."""
    if len(intervals_s) != len(subjects):
        raise SubjectError(f"{len(subjects)} subjects but {len(intervals_s)} intervals; give one interval each")
    intervals = [interval_to_latent(a, b, fps, num_frames, min_half_length, name=f"subject '{s.tag}'")
                 for s, (a, b) in zip(subjects, intervals_s)]
    tags, lengths = stack_embeddings([s.tag_embedding for s in subjects])
    return References(latents[None], tags[None].to(latents.device), torch.tensor([intervals], dtype=torch.float64),
                      tag_lengths=lengths[None], rope=rope)
