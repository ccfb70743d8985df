"""The Interval Timeline's value: a JSON string with one interval (seconds) per subject.

    {"version": 1, "subjects": [{"tag": "red ring", "start": 0.5, "end": 2.0}, ...]}

Bars are matched to the references wired into the node by position; the tag is the bar's label. Parsing never
evaluates anything, caps sizes, and fails with one line naming the subject and the fix.
"""
from __future__ import annotations

import json
import math
from dataclasses import dataclass

from .intervals import IntervalError, clip_duration, interval_to_latent, latent_frame_count

MAX_JSON_BYTES = 64 * 1024
MAX_SUBJECTS = 64
MAX_TAG_CHARS = 200
VERSION = 1


class TimelineError(ValueError):
    """A timeline value that cannot be used."""


@dataclass(frozen=True)
class Bar:
    tag: str
    start: float  # seconds
    end: float


def parse_timeline(text) -> list[Bar]:
    """Bars from the widget's JSON string; structure and numbers checked, not yet against a clip."""
    if not isinstance(text, str):
        raise TimelineError(f"timeline value must be a JSON string, got {type(text).__name__}")
    if len(text.encode("utf-8", "surrogatepass")) > MAX_JSON_BYTES:
        raise TimelineError(f"timeline JSON is larger than {MAX_JSON_BYTES // 1024} KB; it holds one short entry per "
                            f"subject, so reset the widget")
    try:
        data = json.loads(text, parse_constant=lambda c: float("nan"))
    except (json.JSONDecodeError, RecursionError) as err:
        raise TimelineError(f"timeline is not valid JSON ({err}); reset the widget or fix the value") from None
    if not isinstance(data, dict) or not isinstance(data.get("subjects"), list):
        raise TimelineError('timeline JSON must be an object {"version": 1, "subjects": [...]}')
    if data.get("version", VERSION) != VERSION:
        raise TimelineError(f"timeline version {data.get('version')!r} is not supported (expected {VERSION})")
    subjects = data["subjects"]
    if len(subjects) > MAX_SUBJECTS:
        raise TimelineError(f"timeline has {len(subjects)} subjects; at most {MAX_SUBJECTS} are allowed: "
                            "remove bars or reset the widget")
    bars = []
    for i, s in enumerate(subjects):
        where = f"timeline subject {i + 1}"
        if not isinstance(s, dict):
            raise TimelineError(f'{where} must be an object {{"tag", "start", "end"}}')
        tag = s.get("tag", "")
        if not isinstance(tag, str) or len(tag) > MAX_TAG_CHARS:
            raise TimelineError(f"{where}: tag must be a string of at most {MAX_TAG_CHARS} characters")
        where = f"{where} ('{tag}')" if tag else where
        start, end = s.get("start"), s.get("end")
        for label, v in (("start", start), ("end", end)):
            if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
                raise TimelineError(f"{where}: {label} {v!r} is not a finite number of seconds; give a time such as 0.5")
        if end <= start:
            raise TimelineError(f"{where}: end {end:g} s is not after start {start:g} s; drag the bar's ends apart")
        bars.append(Bar(tag, float(start), float(end)))
    return bars


def check_against_clip(bars: list[Bar], num_frames: int, fps: float) -> None:
    """Every bar inside the clip of num_frames (4k+1) frames at fps."""
    try:
        latent_frame_count(num_frames)
        duration = clip_duration(num_frames, fps)
    except IntervalError as err:
        raise TimelineError(str(err)) from None
    for i, b in enumerate(bars):
        if b.start < -0.5 / fps or b.end > duration + 0.5 / fps:
            raise TimelineError(f"timeline subject {i + 1} ('{b.tag}'): [{b.start:g}, {b.end:g}] s lies outside the "
                                f"clip [0, {duration:g}] s; drag it inside")


def latent_intervals(bars: list[Bar], num_frames: int, fps: float, min_half_length: float) -> list[tuple[float, float]]:
    check_against_clip(bars, num_frames, fps)
    return [interval_to_latent(b.start, b.end, fps, num_frames, min_half_length, name=f"subject '{b.tag}'")
            for b in bars]


def dump_timeline(bars: list[Bar]) -> str:
    return json.dumps({"version": VERSION, "subjects": [{"tag": b.tag, "start": b.start, "end": b.end} for b in bars]})


def default_timeline(tags: list[str], num_frames: int, fps: float) -> list[Bar]:
    """Bars spread over the clip one after another, a starting point before the user drags them."""
    duration = clip_duration(num_frames, fps)
    n = max(len(tags), 1)
    return [Bar(t, round(duration * i / n, 3), round(duration * (i + 1) / n, 3)) for i, t in enumerate(tags)]
