"""Finds the synthetic subjects in generated frames: saturated blobs segmented by hue, their colour read from the
hue and their shape from a small classifier trained on rendered shapes. Validated on ground-truth videos."""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from torch import nn

from ..synthetic import COLOURS, SHAPES, shape_mask

CROP = 24
MIN_AREA = 0.008  # fraction of the frame a blob must cover to count (a sprite covers 2-10%)


def rgb_to_hsv(frames: np.ndarray) -> np.ndarray:
    """uint8 [..., 3] -> float HSV with hue in degrees."""
    img = frames.astype(np.float32) / 255
    mx, mn = img.max(-1), img.min(-1)
    delta = mx - mn + 1e-6
    r, g, b = img[..., 0], img[..., 1], img[..., 2]
    hue = np.where(mx == r, (g - b) / delta % 6, np.where(mx == g, (b - r) / delta + 2, (r - g) / delta + 4)) * 60
    sat = np.where(mx > 0, (mx - mn) / (mx + 1e-6), 0)
    return np.stack([hue, sat, mx], -1)


PALETTE_HUES = {name: float(rgb_to_hsv(np.array(rgb, np.uint8))[0]) for name, rgb in COLOURS.items()}


def hue_distance(a, b):
    d = np.abs(a - b) % 360
    return np.minimum(d, 360 - d)


def colour_masks(frame: np.ndarray) -> dict[str, np.ndarray]:
    """Per palette colour, the saturated pixels whose hue is nearest to it."""
    hsv = rgb_to_hsv(frame)
    saturated = (hsv[..., 1] > 0.45) & (hsv[..., 2] > 0.25)
    names = list(PALETTE_HUES)
    dist = np.stack([hue_distance(hsv[..., 0], PALETTE_HUES[n]) for n in names])
    nearest = dist.argmin(0)
    return {n: saturated & (nearest == i) & (dist[i] < 30) for i, n in enumerate(names)}


def crop_blob(mask: np.ndarray) -> np.ndarray:
    """The blob's bounding box, padded square, resized to CROP x CROP (float in [0, 1])."""
    ys, xs = np.nonzero(mask)
    cy, cx = (ys.min() + ys.max()) / 2, (xs.min() + xs.max()) / 2
    half = max(ys.max() - ys.min(), xs.max() - xs.min()) / 2 + 1.5
    box = (cx - half, cy - half, cx + half, cy + half)
    img = Image.fromarray(mask.astype(np.uint8) * 255).transform((CROP, CROP), Image.EXTENT, box, Image.BILINEAR)
    return np.asarray(img, np.float32) / 255


class ShapeClassifier(nn.Module):
    def __init__(self):
        super().__init__()
        self.net = nn.Sequential(nn.Conv2d(1, 16, 3, 1, 1), nn.ReLU(), nn.MaxPool2d(2), nn.Conv2d(16, 32, 3, 1, 1),
                                 nn.ReLU(), nn.MaxPool2d(2), nn.Conv2d(32, 64, 3, 1, 1), nn.ReLU(),
                                 nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(64, len(SHAPES)))

    def forward(self, x):
        return self.net(x)


def degraded_shape(rng: np.random.Generator, shape: str) -> np.ndarray:
    """A rendered shape mask as a generated video might show it: any size, angle, blur, ragged edges, holes."""
    size = rng.uniform(12, 30)
    cov = shape_mask(shape, size, rng.uniform(0, 2 * math.pi), 40, 40, 20 + rng.normal(0, 1), 20 + rng.normal(0, 1))
    cov = np.asarray(Image.fromarray((cov * 255).astype(np.uint8)).resize((40 // 2, 40 // 2), Image.BILINEAR)
                     .resize((40, 40), Image.BILINEAR), np.float32) / 255 if rng.random() < 0.5 else cov
    mask = cov > rng.uniform(0.3, 0.7)
    mask &= rng.random(mask.shape) > rng.uniform(0, 0.08)
    if not mask.any():
        mask[20, 20] = True
    return crop_blob(mask)


def train_shape_classifier(steps: int = 600, seed: int = 0) -> ShapeClassifier:
    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    model = ShapeClassifier()
    opt = torch.optim.Adam(model.parameters(), lr=2e-3)
    for _ in range(steps):
        labels = rng.integers(0, len(SHAPES), 64)
        x = torch.from_numpy(np.stack([degraded_shape(rng, SHAPES[i]) for i in labels]))[:, None]
        loss = F.cross_entropy(model(x), torch.from_numpy(labels))
        opt.zero_grad()
        loss.backward()
        opt.step()
    return model.eval().requires_grad_(False)


@dataclass
class Detection:
    present: np.ndarray  # bool [N]: the subject's colour covers enough of the frame
    shape_right: np.ndarray  # bool [N]: where present, the blob of that colour has the requested shape
    colour_right: np.ndarray  # bool [N]: where a blob of the requested shape exists, it has the requested colour
    shape_seen: np.ndarray  # bool [N]: a blob of the requested shape exists


class SubjectDetector:
    def __init__(self, classifier: ShapeClassifier | None = None):
        self.classifier = classifier or train_shape_classifier()

    def classify(self, crops: list[np.ndarray]) -> list[str]:
        if not crops:
            return []
        with torch.no_grad():
            logits = self.classifier(torch.from_numpy(np.stack(crops))[:, None])
        return [SHAPES[i] for i in logits.argmax(1).tolist()]

    def blobs(self, frame: np.ndarray) -> list[tuple[str, str, float]]:
        """(colour, shape, area fraction) of every colour region big enough to be a subject."""
        out, crops = [], []
        for colour, mask in colour_masks(frame).items():
            area = mask.mean()
            if area >= MIN_AREA:
                out.append((colour, area))
                crops.append(crop_blob(mask))
        return [(c, s, a) for (c, a), s in zip(out, self.classify(crops))]

    def detect(self, frames: np.ndarray, colour: str, shape: str) -> Detection:
        n = len(frames)
        present, shape_right = np.zeros(n, bool), np.zeros(n, bool)
        colour_right, shape_seen = np.zeros(n, bool), np.zeros(n, bool)
        for f, frame in enumerate(frames):
            found = self.blobs(frame)
            for c, s, _ in found:
                if c == colour:
                    present[f], shape_right[f] = True, s == shape
            with_shape = [c for c, s, _ in found if s == shape]
            shape_seen[f] = bool(with_shape)
            colour_right[f] = colour in with_shape
        return Detection(present, shape_right, colour_right, shape_seen)


def colour_track(frames: np.ndarray, colour: str) -> np.ndarray:
    """bool [N, H, W]: the pixels of one palette colour in each frame, emptied in frames where they cover less than
    MIN_AREA (the detector's presence rule), so a track's non-empty frames are the frames it detects."""
    if colour not in PALETTE_HUES:
        raise ValueError(f"colour '{colour}' is not one of the demo's ({', '.join(PALETTE_HUES)})")
    track = np.stack([colour_masks(f)[colour] for f in frames])
    track[track.reshape(len(track), -1).mean(1) < MIN_AREA] = False
    return track
