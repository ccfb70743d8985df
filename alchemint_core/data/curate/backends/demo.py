"""The demo's backend: no downloaded weights. A tag names a demo colour and shape ("red ring"); detection is the
colour's saturated pixels (the benchmark detector's segmentation), similarity the shape classifier's probability of
the tag's shape, and tracking follows the colour region from frame to frame while it keeps touching the previous
mask, forward and backward from the detection frame. It lets the whole pipeline be measured against the demo
generator's exact masks."""
from __future__ import annotations

import numpy as np
import torch

from ....demo.detector import MIN_AREA, colour_masks, colour_track, crop_blob, train_shape_classifier
from ....synthetic import COLOURS, SHAPES
from ..masks import connected_regions, dilate
from ..stages import Box

REACH = 3  # pixels a subject may move between frames and still touch its previous mask
DETECT_THRESHOLD = 0.25  # a region of the tag's colour is a detection when its shape is at least this likely


def parse_tag(tag: str) -> tuple[str, str]:
    words = tag.lower().split()
    colour = next((w for w in words if w in COLOURS), None)
    shape = next((w for w in words if w in SHAPES), None)
    if colour is None or shape is None:
        raise ValueError(f"tag '{tag}': the demo backend finds a demo colour and shape ({', '.join(COLOURS)}; "
                         f"{', '.join(SHAPES)}); use --backend sam3 or gdino-sam2 for other subjects")
    return colour, shape


def box_of(mask: np.ndarray) -> Box:
    ys, xs = np.nonzero(mask)
    return float(xs.min()), float(ys.min()), float(xs.max() + 1), float(ys.max() + 1)


class DemoBackend:
    def __init__(self, classifier=None):
        from ....demo.evaluate import load_detector
        self.classifier = classifier or load_detector().classifier

    def regions(self, frame: np.ndarray, colour: str) -> list[np.ndarray]:
        """Connected regions of the colour big enough to be a subject."""
        return [r for r in connected_regions(colour_masks(frame)[colour]) if r.mean() >= MIN_AREA]

    def shape_probability(self, mask: np.ndarray, shape: str) -> float:
        with torch.no_grad():
            p = self.classifier(torch.from_numpy(crop_blob(mask))[None, None]).softmax(-1)[0]
        return float(p[SHAPES.index(shape)])

    def detect(self, frame: np.ndarray, tag: str) -> list[tuple[Box, float]]:
        """Regions of the tag's colour that look like its shape (a text-conditioned detector's boxes)."""
        colour, shape = parse_tag(tag)
        scored = [(box_of(r), self.shape_probability(r, shape)) for r in self.regions(frame, colour)]
        return [(box, p) for box, p in scored if p >= DETECT_THRESHOLD]

    def similarity(self, frame: np.ndarray, box: Box, tag: str) -> float:
        colour, shape = parse_tag(tag)
        x0, y0, x1, y1 = (int(round(v)) for v in box)
        inside = np.zeros(frame.shape[:2], bool)
        inside[y0:y1, x0:x1] = True
        mask = colour_masks(frame)[colour] & inside
        return self.shape_probability(mask, shape) if mask.any() else 0.0

    def track(self, frames: np.ndarray, index: int, box: Box) -> np.ndarray:
        x0, y0, x1, y1 = (int(round(v)) for v in box)
        start = np.zeros(frames.shape[1:3], bool)
        start[y0:y1, x0:x1] = True
        masks = colour_masks(frames[index])
        colour = max(masks, key=lambda name: (masks[name] & start).sum())  # the colour the box holds
        track = np.zeros(frames.shape[:3], bool)
        track[index] = self.follow(frames[index], colour, start)
        for step in (1, -1):  # forward, then backward
            f, previous = index + step, track[index]
            while 0 <= f < len(frames) and previous.any():
                track[f] = self.follow(frames[f], colour, dilate(previous, REACH))
                previous, f = track[f], f + step
        return track

    def score_track(self, frames: np.ndarray, tag: str) -> np.ndarray:
        """The track `score` scores timing on: the tag's colour wherever the timing benchmark's detector counts it
        present (`colour_track`), so `score` with this backend and the demo's `evaluate` report the same t-IOU."""
        return colour_track(frames, parse_tag(tag)[0])

    def follow(self, frame: np.ndarray, colour: str, near: np.ndarray) -> np.ndarray:
        """The colour's regions in this frame that touch `near` (empty when none does)."""
        touching = [r for r in self.regions(frame, colour) if (r & near).any()]
        return np.logical_or.reduce(touching) if touching else np.zeros(frame.shape[:2], bool)

