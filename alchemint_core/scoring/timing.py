"""S2VTime-style timing metrics: a subject's predicted interval (first..last frame it is present) against the
requested one. t-IOU is their temporal intersection over union; t-L2 the distance between (start, end) pairs
normalised by the clip length, divided by sqrt(2) so it lies in [0, 1]. A subject never detected scores t-IOU 0
and the worst t-L2, 1."""
from __future__ import annotations

import math

import numpy as np


def predicted_interval(present: np.ndarray, fps: float) -> tuple[float, float] | None:
    """Seconds from the first to the end of the last frame where the subject is present, or None."""
    frames = np.flatnonzero(present)
    if not len(frames):
        return None
    return frames[0] / fps, (frames[-1] + 1) / fps


def t_iou(pred: tuple[float, float] | None, req: tuple[float, float]) -> float:
    if pred is None:
        return 0.0
    inter = max(0.0, min(pred[1], req[1]) - max(pred[0], req[0]))
    union = max(pred[1], req[1]) - min(pred[0], req[0])
    return inter / union if union > 0 else 0.0


def t_l2(pred: tuple[float, float] | None, req: tuple[float, float], duration: float) -> float:
    if pred is None:
        return 1.0
    return math.hypot((pred[0] - req[0]) / duration, (pred[1] - req[1]) / duration) / math.sqrt(2)


def mean_ci(values, z: float = 1.96) -> tuple[float, float, float]:
    """Mean and a normal-approximation 95% confidence interval."""
    v = np.asarray(values, np.float64)
    if not len(v):
        return math.nan, math.nan, math.nan
    half = z * v.std(ddof=1) / math.sqrt(len(v)) if len(v) > 1 else 0.0
    return float(v.mean()), float(v.mean() - half), float(v.mean() + half)
