"""Reference Loader: an image (native Load Image's IMAGE and MASK), its word tag, VAE and CLIP -> one subject,
chained after the subjects wired into it."""
from __future__ import annotations

from dataclasses import dataclass

import torch

from alchemint_core.data.dataset import short
from alchemint_core.sampling.subjects import Subject, make_subject

from .models import CATEGORY

MASK_MEANINGS = ["transparent area (Load Image)", "subject (segmentation)"]


@dataclass(frozen=True)
class ReferenceChain:
    """ALCHEMINT_REFS: the subjects in order (the chain's first loader first)."""

    subjects: tuple[Subject, ...]

    @property
    def tags(self) -> list[str]:
        return [s.tag for s in self.subjects]


class ReferenceLoader:
    DESCRIPTION = ("One subject: a reference image of it, an optional mask and the word tag that names it in the "
                   "caption. Chain loaders to give several subjects; the Interval Timeline shows one bar each.")
    CATEGORY = CATEGORY
    RETURN_TYPES = ("ALCHEMINT_REFS",)
    RETURN_NAMES = ("references",)
    OUTPUT_TOOLTIPS = ("The incoming subjects followed by this one.",)
    FUNCTION = "load"

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {
            "image": ("IMAGE", {"tooltip": "The subject's picture (e.g. from Load Image). Any size; it is cropped "
                                           "around the mask and centred as in training. Greyscale and RGBA work."}),
            "tag": ("STRING", {"default": "red ring", "tooltip": "Word tag naming the subject, as in the caption "
                               "(e.g. 'the dog', 'red umbrella'). Also labels its timeline bar."}),
            "vae": ("VAE", {"tooltip": "The VAE of the model (Wan 2.1 VAE, or the Demo Model's)."}),
            "clip": ("CLIP", {"tooltip": "The text encoder of the model (umT5 for Wan, or the Demo Model's)."}),
        }, "optional": {
            "mask": ("MASK", {"tooltip": "Which pixels are the subject. Load Image's MASK marks the transparent "
                                         "area; leave it unconnected to use the whole image."}),
            "mask_means": (MASK_MEANINGS, {"default": MASK_MEANINGS[0], "tooltip": "How to read the mask: Load "
                           "Image's MASK is 1 where the PNG is transparent (the subject is the rest); masks from "
                           "segmentation nodes are 1 on the subject."}),
            "references": ("ALCHEMINT_REFS", {"tooltip": "Subjects from earlier Reference Loaders; this subject is "
                                                          "added after them."}),
        }}

    def load(self, image, tag, vae, clip, mask=None, mask_means=MASK_MEANINGS[0], references=None):
        where = f"Reference Loader '{short(tag, 40)}'" if isinstance(tag, str) and tag.strip() else "Reference Loader"
        if mask_means not in MASK_MEANINGS:
            raise ValueError(f"{where}: mask_means must be one of {MASK_MEANINGS}")
        if isinstance(image, torch.Tensor) and image.ndim == 4 and image.shape[0] > 1:
            image = image[:1]  # a batch: its first image is the reference
        if mask is not None and mask_means == MASK_MEANINGS[0]:
            mask = 1.0 - mask
        if isinstance(mask, torch.Tensor) and mask.ndim == 3 and mask.shape[0] > 1:
            mask = mask[:1]
        try:
            subject = make_subject(tag, image, clip, mask, vae)
        except ValueError as err:
            raise ValueError(f"{where}: {err}") from None
        previous = references.subjects if references is not None else ()
        return (ReferenceChain(tuple(previous) + (subject,)),)
