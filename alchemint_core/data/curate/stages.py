"""The paper's data pipeline (section 3.3, appendix I) after the tags: grounding each tag in a few frames, tracking
each kept detection into a mask track over the whole video, and cleaning the tracks into one per entity.

A backend supplies the models (see backends/): `detect(frame, tag)` boxes and scores, `similarity(frame, box,
tag)` (CLIP's image-text similarity in the paper) and `track(frames, index, box)` a mask track propagated forward and
backward from a box at one frame. Everything here is plain array logic shared by every backend."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol, Sequence

import numpy as np

from ..dataset import entity_interval, presence

Box = tuple[float, float, float, float]  # x0, y0, x1, y1 in pixels

PERCENTILES = (0.1, 0.3, 0.5, 0.7, 0.9)  # where in a tag's interval its detections are sought
NMS_IOU = 0.5  # boxes overlapping more than this are one detection
DUPLICATE_IOU = 0.6  # tracks whose mean mask IoU over their shared frames is above this are one entity
AREA_THRESHOLD = 0.002  # the trainer's presence rule: a mask covering more of the frame counts as present


class Backend(Protocol):
    def detect(self, frame: np.ndarray, tag: str) -> list[tuple[Box, float]]: ...

    def similarity(self, frame: np.ndarray, box: Box, tag: str) -> float: ...

    def track(self, frames: np.ndarray, index: int, box: Box) -> np.ndarray: ...


@dataclass
class Detection:
    tag: str
    frame: int
    box: Box
    score: float  # the backend's similarity of the box's content to the tag


def percentile_frames(first: int, last: int, percentiles: Sequence[float] = PERCENTILES) -> list[int]:
    """Distinct frames at the given fractions of the inclusive interval first..last."""
    return sorted({first + round(p * (last - first)) for p in percentiles})


def box_iou(a: Box, b: Box) -> float:
    ix = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    iy = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = ix * iy
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union if union > 0 else 0.0


def nms(detections: list[tuple[Box, float]], iou: float = NMS_IOU) -> list[tuple[Box, float]]:
    """Greedy non-maximum suppression: the best-scored box of every overlapping group."""
    kept: list[tuple[Box, float]] = []
    for box, score in sorted(detections, key=lambda d: -d[1]):
        if all(box_iou(box, k) <= iou for k, _ in kept):
            kept.append((box, score))
    return kept


def ground(backend: Backend, frames: np.ndarray, tag: str, interval: tuple[int, int]) -> list[Detection]:
    """At each percentile frame of the tag's interval: its detections, NMS, and the one most similar to the tag."""
    out = []
    for f in percentile_frames(*interval):
        boxes = nms(backend.detect(frames[f], tag))
        if boxes:
            scored = [(backend.similarity(frames[f], box, tag), box) for box, _ in boxes]
            score, box = max(scored, key=lambda s: s[0])
            out.append(Detection(tag, f, box, score))
    return out


def mask_iou(a: np.ndarray, b: np.ndarray) -> float:
    union = np.logical_or(a, b).sum()
    return float(np.logical_and(a, b).sum() / union) if union else 0.0


def mean_shared_iou(a: np.ndarray, b: np.ndarray, threshold: float = AREA_THRESHOLD) -> float:
    """Mean mask IoU over the frames where both tracks are present (0 when they share none)."""
    shared = presence(a, threshold) & presence(b, threshold)
    if not shared.any():
        return 0.0
    return float(np.mean([mask_iou(a[f], b[f]) for f in np.flatnonzero(shared)]))


def merge_duplicates(tracks: list[np.ndarray], iou: float = DUPLICATE_IOU) -> list[np.ndarray]:
    """Tracks of one entity (from several detections) merged: a track joins the first kept track it overlaps by
    more than `iou` on their shared frames, the two united frame by frame."""
    kept: list[np.ndarray] = []
    for track in tracks:
        for i, other in enumerate(kept):
            if mean_shared_iou(track, other) > iou:
                kept[i] = other | track
                break
        else:
            kept.append(track.copy())
    return kept


def clean(tracks: list[np.ndarray], threshold: float = AREA_THRESHOLD,
          iou: float = DUPLICATE_IOU) -> tuple[np.ndarray, tuple[int, int]] | None:
    """One entity's tracks -> its mask track and interval (the trainer's rule), or None when no track is ever above
    the area threshold."""
    merged = [t for t in merge_duplicates(tracks, iou) if entity_interval(t, threshold) is not None]
    if not merged:
        return None
    best = max(merged, key=lambda t: int(presence(t, threshold).sum()))  # the longest-present of what remains
    return best, entity_interval(best, threshold)


def curate_entity(backend: Backend, frames: np.ndarray, tag: str,
                  interval: tuple[int, int] | None = None) -> tuple[np.ndarray, tuple[int, int]] | None:
    """Grounding, tracking and cleaning of one tag over a video: its mask track [N, H, W] and the inclusive frame
    interval it is present in, or None when it is found in no frame."""
    detections = ground(backend, frames, tag, interval or (0, len(frames) - 1))
    if not detections:
        return None
    return clean([backend.track(frames, d.frame, d.box) for d in detections])
