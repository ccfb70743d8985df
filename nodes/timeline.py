"""Interval Timeline: when each subject is present, edited as bars on the timeline widget (web/)."""
from __future__ import annotations

from dataclasses import dataclass

from alchemint_core.sampling.timeline import Bar, TimelineError, check_against_clip, default_timeline, parse_timeline

from .models import CATEGORY
from .references import ReferenceChain

EMPTY_TIMELINE = '{"version": 1, "subjects": []}'


@dataclass(frozen=True)
class Timeline:
    """ALCHEMINT_TIMELINE: subjects with their intervals (seconds) and the clip they live in."""

    references: ReferenceChain
    bars: tuple[Bar, ...]
    frames: int
    fps: float

    @property
    def intervals(self) -> list[tuple[float, float]]:
        return [(b.start, b.end) for b in self.bars]


class IntervalTimeline:
    DESCRIPTION = ("When each subject appears: drag its bar to move it, drag an end to resize. Bars snap to "
                   "latent frames (4 video frames) and follow the subjects wired in.")
    CATEGORY = CATEGORY
    RETURN_TYPES = ("ALCHEMINT_TIMELINE",)
    RETURN_NAMES = ("timeline",)
    OUTPUT_TOOLTIPS = ("The subjects, their intervals and the clip length, for the WeRoPE Conditioner.",)
    FUNCTION = "build"

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {
            "references": ("ALCHEMINT_REFS", {"tooltip": "The subjects (chained Reference Loaders); one bar each, "
                                                         "in chain order."}),
            "frames": ("INT", {"default": 17, "min": 1, "max": 1025, "step": 4, "tooltip": "Video length in "
                               "frames, 4k+1 (17 for the demo, 81 for Wan 2.1)."}),
            "fps": ("FLOAT", {"default": 8.0, "min": 1.0, "max": 120.0, "step": 1.0, "tooltip": "Frames per "
                              "second of the video (8 for the demo, 16 for Wan 2.1); the timeline is in seconds."}),
            "timeline": ("STRING", {"default": EMPTY_TIMELINE, "tooltip": "The bars as JSON: {\"version\": 1, "
                                    "\"subjects\": [{\"tag\", \"start\", \"end\"}]} in seconds, one per subject in "
                                    "chain order. Edited by the timeline widget; an empty list spreads the subjects "
                                    "one after another."}),
        }}

    @classmethod
    def VALIDATE_INPUTS(cls, timeline=None, frames=None, fps=None):
        """Checked before the queue runs, so a bad value is reported on the node at once."""
        if timeline is None:
            return True
        try:
            bars = parse_timeline(timeline)
            if isinstance(frames, int) and isinstance(fps, (int, float)):
                check_against_clip(bars, frames, float(fps))
        except TimelineError as err:
            return f"Interval Timeline: {err}"
        return True

    def build(self, references, frames, fps, timeline):
        try:
            bars = parse_timeline(timeline)
            tags = references.tags
            if not bars:
                bars = default_timeline(tags, frames, fps)
            if len(bars) != len(tags):
                raise TimelineError(f"the timeline has {len(bars)} bars but {len(tags)} subjects are wired in "
                                    f"({', '.join(tags)}); give one bar per subject (the widget does this when the "
                                    "workflow is opened in the editor)")
            bars = [Bar(tag, b.start, b.end) for tag, b in zip(tags, bars)]  # labels follow the loaders
            check_against_clip(bars, frames, float(fps))
        except TimelineError as err:
            raise ValueError(f"Interval Timeline: {err}") from None
        return (Timeline(references, tuple(bars), frames, float(fps)),)
