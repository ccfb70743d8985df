"""CLIP-T and CLIP-I of S2VTime (the paper's section 4): a subject's masked, cropped appearances in the frames where it
is present, scored against its tag (text) and against its reference image, averaged over those frames.

An embedder turns images (and, for CLIP-T, texts) into L2-normalised vectors of one space: `ClipEmbedder` is a
transformers CLIP model from a local folder; ComfyUI's own CLIP Vision model fits the image side too."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Protocol, Sequence

import numpy as np
import torch
import torch.nn.functional as F

from ..data.dataset import NEUTRAL_GREY, DatasetError, bounding_box

CROP_MARGIN = 0.1  # of the subject's box on each side, so its outline stays inside the crop


class Embedder(Protocol):
    def images(self, images: Sequence[np.ndarray]) -> torch.Tensor: ...  # uint8 [H, W, 3] each -> [N, D], unit norm

    def texts(self, texts: Sequence[str]) -> torch.Tensor: ...  # -> [N, D], unit norm


def masked_crop(frame: np.ndarray, mask: np.ndarray, margin: float = CROP_MARGIN) -> np.ndarray:
    """The subject alone: pixels outside its mask set to neutral grey, cropped to its box widened by `margin`."""
    y0, x0, y1, x1 = bounding_box(mask)
    dx, dy = round((x1 - x0) * margin), round((y1 - y0) * margin)
    h, w = mask.shape
    x0, y0, x1, y1 = max(x0 - dx, 0), max(y0 - dy, 0), min(x1 + dx, w), min(y1 + dy, h)
    out = np.where(mask[..., None], frame[..., :3], np.asarray(NEUTRAL_GREY, np.uint8))
    return np.ascontiguousarray(out[y0:y1, x0:x1])


def subject_crops(frames: np.ndarray, masks: np.ndarray, present: np.ndarray) -> list[np.ndarray]:
    return [masked_crop(frames[f], masks[f]) for f in np.flatnonzero(present) if masks[f].any()]


def clip_t(embedder: Embedder, crops: Sequence[np.ndarray], tag: str) -> float | None:
    """Mean cosine similarity of the crops to the tag (None without crops)."""
    if not crops:
        return None
    return float((embedder.images(crops) @ embedder.texts([tag])[0]).mean())


def clip_i(embedder: Embedder, crops: Sequence[np.ndarray], reference: np.ndarray) -> float | None:
    """Mean cosine similarity of the crops to the reference image (None without crops)."""
    if not crops:
        return None
    return float((embedder.images(crops) @ embedder.images([reference])[0]).mean())


class ClipEmbedder:
    """A transformers CLIP model (text and vision) and its processor, from a local folder (e.g. a download of
    openai/clip-vit-large-patch14); nothing is downloaded."""

    def __init__(self, model, processor, device: str | torch.device | None = None,
                 dtype: torch.dtype = torch.float32, batch: int = 32):
        self.device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
        self.dtype, self.batch = dtype, batch
        self.model, self.processor = model.to(self.device, dtype).eval(), processor

    @classmethod
    def from_folder(cls, folder: str | Path, option: str = "--clip", **kwargs) -> ClipEmbedder:
        folder = Path(folder)
        fix = ("give the folder of a CLIP model in the transformers format (e.g. `hf download "
               "openai/clip-vit-large-patch14 --local-dir FOLDER`)")
        try:
            model_type = json.loads((folder / "config.json").read_text(encoding="utf-8")).get("model_type")
        except (OSError, ValueError, AttributeError):
            raise DatasetError(f"{option} {folder}: no readable config.json; {fix}") from None
        if model_type != "clip":
            raise DatasetError(f"{option} {folder}: a '{model_type}' model, not CLIP; {fix}")
        from ..data.curate.backends.models import require_transformers
        require_transformers(f"{option} (CLIP scores)")
        from transformers import AutoProcessor, CLIPModel
        try:
            model = CLIPModel.from_pretrained(folder, local_files_only=True, use_safetensors=True)
            processor = AutoProcessor.from_pretrained(folder, local_files_only=True)
        except (OSError, ValueError) as err:
            raise DatasetError(f"{option} {folder}: cannot load it ({str(err).splitlines()[0][:200]}); {fix}") from None
        return cls(model, processor, **kwargs)

    @torch.inference_mode()
    def images(self, images: Sequence[np.ndarray]) -> torch.Tensor:
        out = []
        for i in range(0, len(images), self.batch):
            pixels = self.processor(images=list(images[i:i + self.batch]), return_tensors="pt")["pixel_values"]
            out.append(self.model.get_image_features(pixel_values=pixels.to(self.device, self.dtype)))
        return F.normalize(torch.cat([features(o) for o in out]).float(), dim=-1).cpu()

    @torch.inference_mode()
    def texts(self, texts: Sequence[str]) -> torch.Tensor:
        tokens = self.processor(text=list(texts), return_tensors="pt", padding=True, truncation=True)
        out = self.model.get_text_features(input_ids=tokens["input_ids"].to(self.device),
                                           attention_mask=tokens["attention_mask"].to(self.device))
        return F.normalize(features(out).float(), dim=-1).cpu()


def features(out) -> torch.Tensor:
    """get_*_features returns a tensor, or in newer transformers an output whose pooled projection is the vector."""
    return out if isinstance(out, torch.Tensor) else out.pooler_output
