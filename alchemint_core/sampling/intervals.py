"""Subject intervals: seconds on the user's clock -> latent-frame time used by the temporal RoPE.

Wan's causal VAE maps N = 4k+1 pixel frames to T = k+1 latent frames (latent 0 = frame 0, latent f = frames
4f-3..4f), so pixel frame n sits at latent time n/4 and the whole clip spans [0, T-1].
"""
from __future__ import annotations

import math

TEMPORAL_COMPRESSION = 4
MAX_FRAMES = 1025  # ~1 min at Wan's 16 fps, 13x the 81 frames Wan 2.1 was trained on


class IntervalError(ValueError):
    """An interval that cannot be used, with the fix in the message."""


def latent_frame_count(num_frames: int) -> int:
    """T for N pixel frames; N must be 4k+1."""
    if not isinstance(num_frames, int) or isinstance(num_frames, bool) or num_frames < 1 \
            or (num_frames - 1) % TEMPORAL_COMPRESSION or num_frames > MAX_FRAMES:
        raise IntervalError(f"frame count {num_frames!r:.40} must be 4k+1 (1, 5, 9, ..., 81) up to {MAX_FRAMES} for "
                            f"Wan's causal VAE; use {nearest_valid_frame_count(num_frames)}")
    return (num_frames - 1) // TEMPORAL_COMPRESSION + 1


def nearest_valid_frame_count(num_frames) -> int:
    try:
        n = min(max(1, int(round(float(num_frames)))), MAX_FRAMES)
    except (TypeError, ValueError, OverflowError):
        return 17
    return TEMPORAL_COMPRESSION * round((n - 1) / TEMPORAL_COMPRESSION) + 1


def clip_duration(num_frames: int, fps: float) -> float:
    """Seconds the clip lasts as a user sees it: N frames shown for 1/fps each."""
    check_fps(fps)
    return num_frames / fps


def check_fps(fps: float) -> None:
    if not (isinstance(fps, (int, float)) and math.isfinite(fps) and 0 < fps <= 1000):
        raise IntervalError(f"fps {fps!r} must be a number in (0, 1000]")


def seconds_to_latent(seconds: float, fps: float, num_frames: int) -> float:
    """Latent time of a moment in seconds; the clip's start maps to 0 and its end to T-1."""
    check_fps(fps)
    return clamped_latent(seconds, fps, latent_frame_count(num_frames) - 1)


def clamped_latent(seconds: float, fps: float, t_last: int) -> float:
    return min(max(seconds * fps / TEMPORAL_COMPRESSION, 0.0), float(t_last))


def interval_to_latent(start: float, end: float, fps: float, num_frames: int, min_half_length: float = 0.5,
                       name: str = "interval") -> tuple[float, float]:
    """(t_l, t_r) in latent frames for an interval in seconds, widened to at least 2*min_half_length."""
    t_last = latent_frame_count(num_frames) - 1  # checked once here: this runs per subject of every batch
    duration = clip_duration(num_frames, fps)
    for label, v in (("start", start), ("end", end)):
        if not isinstance(v, (int, float)) or isinstance(v, bool) or not math.isfinite(v):
            raise IntervalError(f"{name}: {label} {v!r} is not a finite number of seconds; give a time such as 0.5")
    tol = 0.5 / fps  # half a pixel frame of slack for rounding in the UI
    if start < -tol or end > duration + tol:
        raise IntervalError(f"{name}: [{start:g}, {end:g}] s lies outside the clip [0, {duration:g}] s "
                            f"({num_frames} frames at {fps:g} fps); move it inside")
    if end <= start:
        raise IntervalError(f"{name}: end {end:g} s is not after start {start:g} s; give start < end")
    if end - start < (1 - 1e-6) / fps:  # shorter than one frame: nothing could show it
        raise IntervalError(f"{name}: [{start:g}, {end:g}] s is shorter than one frame ({1 / fps:g} s at {fps:g} fps); "
                            f"make it at least one frame long")
    return widen(clamped_latent(start, fps, t_last), clamped_latent(end, fps, t_last), min_half_length)


def widen(t_l: float, t_r: float, min_half_length: float) -> tuple[float, float]:
    """Grow an interval symmetrically about its midpoint to a half-length of at least min_half_length."""
    if t_r - t_l >= 2 * min_half_length:
        return float(t_l), float(t_r)
    mid = (t_l + t_r) / 2
    return mid - min_half_length, mid + min_half_length


def snap_seconds(seconds: float, fps: float) -> float:
    """Round a time to the nearest latent-frame boundary (4 pixel frames), as the timeline widget snaps."""
    step = TEMPORAL_COMPRESSION / fps
    return round(seconds / step) * step
