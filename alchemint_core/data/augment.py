"""Reference augmentation with kornia: what a reference crop goes through before it is encoded, so the model learns
the subject's identity instead of copying one pose, scale, position and colour balance into the video.

Every random parameter is drawn from a torch.Generator seeded by the caller (no global RNG state is read or
changed), so a cache built twice is identical and the variants of one reference differ only by their seeds.
Geometry is one affine warp per image, shared by image and mask; the area it uncovers is the neutral grey that
crop_reference paints around the object, never black.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
from einops import rearrange
from kornia.enhance import adjust_brightness, adjust_contrast_with_mean_subtraction, adjust_hue, adjust_saturation
from kornia.filters import gaussian_blur2d
from kornia.geometry.transform import get_rotation_matrix2d, warp_affine

from .dataset import DatasetError

GREY = 0.5  # the neutral background of reference crops (crop_reference's 127/255, to 8-bit precision)


@dataclass
class ReferenceAugment:
    """Each transform applies to an image with its probability p_*; its strength is drawn uniformly from its range."""
    p_blur: float = 0.3
    blur_sigma: tuple[float, float] = (0.3, 1.5)  # pixels
    p_zoom: float = 0.5
    zoom: tuple[float, float] = (0.75, 1.1)  # scale factor; < 1 shrinks the object inside the canvas
    p_rotate: float = 0.5
    degrees: float = 15.0  # either way
    p_flip: float = 0.5  # horizontal
    p_jitter: float = 0.8
    brightness: float = 0.1  # added, either way
    contrast: float = 0.2  # factor 1 +- contrast
    saturation: float = 0.2  # factor 1 +- saturation
    hue: float = 0.03  # fraction of the colour wheel, either way
    p_position: float = 0.5
    position: float = 0.15  # largest shift as a fraction of the canvas, limited so the object stays inside it

    def __post_init__(self) -> None:
        for name in ("p_blur", "p_zoom", "p_rotate", "p_flip", "p_jitter", "p_position"):
            if not 0 <= getattr(self, name) <= 1:
                raise DatasetError(f"ReferenceAugment {name}={getattr(self, name)!r}: a probability must be in [0, 1]")
        for name, low in (("blur_sigma", 1e-3), ("zoom", 1e-3)):
            lo, hi = getattr(self, name)
            if not low <= lo <= hi:
                raise DatasetError(f"ReferenceAugment {name}={getattr(self, name)!r}: give (low, high) with "
                                   f"{low:g} <= low <= high")
        for name in ("degrees", "brightness", "contrast", "saturation", "hue", "position"):
            if getattr(self, name) < 0:
                raise DatasetError(f"ReferenceAugment {name}={getattr(self, name)!r} must be >= 0")

    def __call__(self, images: torch.Tensor, masks: torch.Tensor, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
        """images float [B, 3, H, W] in [0, 1] and masks [B, 1, H, W] -> augmented images in [0, 1] and {0, 1} masks.
        The same seed gives the same result; each image of the batch draws its own parameters."""
        check_batch(images, masks)
        g = torch.Generator().manual_seed(int(seed))
        b, _, h, w = images.shape
        images, masks = images.float(), masks.float()
        images = self.jitter_colours(images, masks, g)
        images = self.blur(images, g)
        flip = chance(g, b, self.p_flip)
        images = torch.where(flip[:, None, None, None], images.flip(-1), images)
        masks = torch.where(flip[:, None, None, None], masks.flip(-1), masks)
        matrix = self.affine(masks, g)
        fill = torch.full((3,), GREY)
        images = warp_affine(images, matrix, (h, w), padding_mode="fill", fill_value=fill, align_corners=True)
        masks = warp_affine(masks, matrix, (h, w), padding_mode="zeros", align_corners=True)
        return images.clamp(0, 1), (masks > 0.5).float()

    def augment_uint8(self, images: list[np.ndarray], masks: list[np.ndarray],
                      seed: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Augment the dataset's crops: uint8 [H, W, 3] images and bool [H, W] masks of one size -> float
        [V, 3, H, W] in [0, 1] and float [V, 1, H, W] masks, as the encoders take them."""
        if not images or len(images) != len(masks) or any(i.shape != images[0].shape for i in images):
            raise DatasetError(f"augment_uint8: give as many masks as images ({len(images)} images, {len(masks)} "
                               f"masks), all of one size")
        x = torch.from_numpy(rearrange(np.stack(images), "v h w c -> v c h w").astype(np.float32) / 255)
        m = torch.from_numpy(rearrange(np.stack(masks).astype(np.float32), "v h w -> v 1 h w"))
        return self(x, m, seed)

    def jitter_colours(self, images: torch.Tensor, masks: torch.Tensor, g: torch.Generator) -> torch.Tensor:
        """Brightness, contrast, saturation and hue of the object only: the grey background stays neutral, as at
        inference time."""
        b = len(images)
        on = chance(g, b, self.p_jitter)
        brightness = uniform(g, b, -self.brightness, self.brightness)
        contrast = uniform(g, b, 1 - self.contrast, 1 + self.contrast).clamp_min(0)
        saturation = uniform(g, b, 1 - self.saturation, 1 + self.saturation).clamp_min(0)
        hue = uniform(g, b, -self.hue, self.hue) * 2 * math.pi  # kornia takes radians
        if not on.any():
            return images
        x = images[on]
        x = adjust_brightness(x, brightness[on])
        x = adjust_contrast_with_mean_subtraction(x, contrast[on])
        x = adjust_saturation(x, saturation[on])
        x = adjust_hue(x, hue[on]).clamp(0, 1)
        out = images.clone()
        out[on] = torch.lerp(images[on], x, masks[on])
        return out

    def blur(self, images: torch.Tensor, g: torch.Generator) -> torch.Tensor:
        b = len(images)
        on = chance(g, b, self.p_blur)
        sigma = uniform(g, b, *self.blur_sigma)
        if not on.any():
            return images
        kernel = 2 * math.ceil(3 * self.blur_sigma[1]) + 1  # +-3 sigma of the widest blur
        out = images.clone()
        out[on] = gaussian_blur2d(images[on], kernel, sigma[on, None].expand(-1, 2), border_type="replicate")
        return out

    def affine(self, masks: torch.Tensor, g: torch.Generator) -> torch.Tensor:
        """[B, 2, 3] warps: rotation and zoom about the canvas centre, then a shift that keeps the object's box
        inside the canvas (as far as the object fits in it)."""
        b, _, h, w = masks.shape
        angle = torch.where(chance(g, b, self.p_rotate), uniform(g, b, -self.degrees, self.degrees), 0.0)
        scale = torch.where(chance(g, b, self.p_zoom), uniform(g, b, *self.zoom), 1.0)
        move = chance(g, b, self.p_position)
        where = torch.rand(b, 2, generator=g)  # position within the allowed shift range, per axis (x, y)
        centre = torch.tensor([(w - 1) / 2, (h - 1) / 2]).expand(b, 2)
        matrix = get_rotation_matrix2d(centre, angle, scale[:, None].expand(-1, 2))
        lo, hi = shift_range(object_boxes(masks), matrix, (h, w), self.position)
        shift = torch.where(move[:, None], lo + where * (hi - lo), 0.0)
        return torch.cat([matrix[:, :, :2], matrix[:, :, 2:] + shift[:, :, None]], dim=2)


def chance(g: torch.Generator, b: int, p: float) -> torch.Tensor:
    return torch.rand(b, generator=g) < p


def uniform(g: torch.Generator, b: int, lo: float, hi: float) -> torch.Tensor:
    return lo + (hi - lo) * torch.rand(b, generator=g)


def check_batch(images: torch.Tensor, masks: torch.Tensor) -> None:
    if images.ndim != 4 or images.shape[1] != 3 or not images.is_floating_point():
        raise DatasetError(f"reference images must be float [B, 3, H, W] in [0, 1], not {images.dtype} "
                           f"{list(images.shape)}")
    if masks.shape != (images.shape[0], 1, *images.shape[2:]):
        raise DatasetError(f"reference masks {list(masks.shape)} must be [B, 1, H, W] matching the images "
                           f"{list(images.shape)}")


def object_boxes(masks: torch.Tensor) -> torch.Tensor:
    """[B, 4] (x0, y0, x1, y1) pixel bounds of each mask's object, inclusive; the whole canvas for an empty mask."""
    _, _, h, w = masks.shape
    rows, cols = masks[:, 0].amax(2) > 0.5, masks[:, 0].amax(1) > 0.5  # [B, H], [B, W]
    y0, y1 = rows.int().argmax(1), h - 1 - rows.flip(1).int().argmax(1)
    x0, x1 = cols.int().argmax(1), w - 1 - cols.flip(1).int().argmax(1)
    boxes = torch.stack([x0, y0, x1, y1], 1).float()
    empty = ~rows.any(1)
    return torch.where(empty[:, None], torch.tensor([0.0, 0.0, w - 1, h - 1]), boxes)


def shift_range(boxes: torch.Tensor, matrix: torch.Tensor, size_hw: tuple[int, int],
                limit: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Lowest and highest (x, y) shift, each [B, 2], that keep the warped object box inside the canvas and within
    limit x the canvas size. An object too big to fit gets the shift that centres it best within the limit."""
    x0, y0, x1, y1 = boxes.unbind(1)
    corners = torch.stack([torch.stack([x0, y0], 1), torch.stack([x1, y0], 1),
                           torch.stack([x0, y1], 1), torch.stack([x1, y1], 1)], 1)  # [B, 4, 2]
    warped = corners @ matrix[:, :, :2].transpose(1, 2) + matrix[:, None, :, 2]
    extent = torch.tensor([size_hw[1] - 1, size_hw[0] - 1], dtype=torch.float32)
    most = limit * torch.tensor([size_hw[1], size_hw[0]], dtype=torch.float32)
    lo = torch.maximum(-warped.amin(1), -most)
    hi = torch.minimum(extent - warped.amax(1), most)
    too_big = lo > hi
    middle = ((lo + hi) / 2).clamp(-most, most)
    return torch.where(too_big, middle, lo), torch.where(too_big, middle, hi)
