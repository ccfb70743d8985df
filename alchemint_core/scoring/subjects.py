"""One subject of one generated video, scored the S2VTime way: when it is there (its predicted interval from its
mask track against the requested one: t-IOU, t-L2) and whether it is the right subject (CLIP-T, CLIP-I over the
frames where it is present). The CLI's `score`, the demo's `evaluate` and the Evaluate Timing node all score here."""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import numpy as np

from ..data.curate.stages import AREA_THRESHOLD, Backend, curate_entity
from ..data.dataset import presence
from .identity import Embedder, clip_i, clip_t, subject_crops
from .statistics import bootstrap_ci
from .timing import predicted_interval, t_iou, t_l2


@dataclass
class SubjectScore:
    item: str  # the video (benchmark item) it belongs to
    tag: str
    requested: tuple[float, float]  # seconds
    predicted: tuple[float, float] | None  # seconds, None when never present
    t_iou: float
    t_l2: float
    clip_t: float | None = None  # None: not measured (no CLIP model) or never present
    clip_i: float | None = None

    def as_dict(self) -> dict:
        return asdict(self)


def score_subject(item: str, tag: str, requested: tuple[float, float], masks: np.ndarray, fps: float,
                  frames: np.ndarray | None = None, reference: np.ndarray | None = None,
                  embedder: Embedder | None = None, threshold: float = AREA_THRESHOLD) -> SubjectScore:
    """masks: the subject's mask track [N, H, W] (bool or probabilities); present where it covers more than
    `threshold` of the frame. CLIP-T needs `frames` and an embedder with texts, CLIP-I also the reference image."""
    masks = np.nan_to_num(np.asarray(masks, np.float32)) > 0.5
    present = presence(masks, threshold)
    pred = predicted_interval(present, fps)
    row = SubjectScore(item, tag, (float(requested[0]), float(requested[1])), pred, t_iou(pred, requested),
                       t_l2(pred, requested, len(masks) / fps))
    if embedder is not None and frames is not None:
        crops = subject_crops(frames, masks, present)
        row.clip_t = clip_t(embedder, crops, tag) if hasattr(embedder, "texts") else None
        row.clip_i = clip_i(embedder, crops, reference) if reference is not None else None
    return row


def frame_span(requested: tuple[float, float], fps: float, frames: int) -> tuple[int, int]:
    """The frames a requested interval in seconds covers, clipped to the video."""
    first = int(np.clip(math.floor(requested[0] * fps), 0, frames - 1))
    return first, int(np.clip(math.ceil(requested[1] * fps) - 1, first, frames - 1))


def track_for_scoring(backend: Backend, frames: np.ndarray, tag: str, requested: tuple[float, float],
                      fps: float) -> np.ndarray:
    """The paper's protocol: detections at several frames inside the requested interval, the one most similar to the
    tag kept, tracked forward and backward over the whole video. An empty track when it is found nowhere.

    A backend with a `score_track(frames, tag)` of its own is scored by it instead. The demo backend's is the timing
    benchmark's: its subjects are found by colour (each demo colour is one subject of a video), and their shape is
    what identity measures, so a subject drawn in the wrong shape still counts as present, as `evaluate` counts it;
    the protocol would drop such frames from the track and the two commands would disagree on the same video."""
    own = getattr(backend, "score_track", None)
    return own(frames, tag) if own is not None else protocol_track(backend, frames, tag, requested, fps)


def protocol_track(backend: Backend, frames: np.ndarray, tag: str, requested: tuple[float, float],
                   fps: float) -> np.ndarray:
    """The paper's protocol itself, through any backend (see track_for_scoring)."""
    found = curate_entity(backend, frames, tag, frame_span(requested, fps, len(frames)))
    return found[0] if found is not None else np.zeros(frames.shape[:3], bool)


COLUMNS = ("t_iou", "t_l2", "clip_t", "clip_i")


def summarise(rows: list[SubjectScore]) -> dict[str, tuple[float, float, float]]:
    """Each column's mean and bootstrap 95% CI over subjects (as the paper's Table 1 reports them)."""
    return {c: bootstrap_ci([getattr(r, c) for r in rows]) for c in COLUMNS}


def table(results: dict[str, list[SubjectScore]]) -> str:
    """A Markdown table, one row per model: t-IOU, t-L2, CLIP-T, CLIP-I with their CIs and the subject count."""
    def cell(v: tuple[float, float, float]) -> str:
        return "–" if math.isnan(v[0]) else f"{v[0]:.3f} ({v[1]:.3f}–{v[2]:.3f})"
    lines = ["| model | t-IOU ↑ | t-L2 ↓ | CLIP-T ↑ | CLIP-I ↑ | subjects |", "|---|---|---|---|---|---|"]
    for name, rows in results.items():
        s = summarise(rows)
        lines.append(f"| {name} | " + " | ".join(cell(s[c]) for c in COLUMNS) + f" | {len(rows)} |")
    return "\n".join(lines)
