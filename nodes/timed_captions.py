"""Timed Captions: per-event captions with start and end times, edited as bars on a timeline widget (web/)."""
from __future__ import annotations

from alchemint_core.sampling.timed_captions import (TimedCaptionError, check_against_clip, encode_timed_captions,
                                                     parse_timed_captions)

from .models import CATEGORY

NODE = "Timed Captions"
EMPTY_CAPTIONS = '{"version": 1, "captions": []}'


class TimedCaptions:
    DESCRIPTION = ("What happens when: one caption per event, each a bar on the timeline (drag it to move, drag an "
                   "end to resize, snapping to latent frames; '+ caption' adds one). For models trained with dense "
                   "captions; wire the output into the WeRoPE Conditioner.")
    CATEGORY = CATEGORY
    RETURN_TYPES = ("ALCHEMINT_TIMED_CAPTIONS",)
    RETURN_NAMES = ("timed_captions",)
    OUTPUT_TOOLTIPS = ("The encoded captions with their spans, for the WeRoPE Conditioner's timed_captions input.",)
    FUNCTION = "encode"

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {
            "clip": ("CLIP", {"tooltip": "The text encoder that goes with the model (Load CLIP type 'wan', or the "
                                         "Demo Model's clip)."}),
            "frames": ("INT", {"default": 17, "min": 1, "max": 1025, "step": 4, "tooltip": "Video length in "
                               "frames, 4k+1: the same as the Interval Timeline's."}),
            "fps": ("FLOAT", {"default": 8.0, "min": 1.0, "max": 120.0, "step": 1.0, "tooltip": "Frames per "
                              "second: the same as the Interval Timeline's; the captions are in seconds."}),
            "captions": ("STRING", {"default": EMPTY_CAPTIONS, "tooltip": "The captions as JSON: {\"version\": 1, "
                                    "\"captions\": [{\"text\", \"start\", \"end\"}]} in seconds. Edited by the "
                                    "widget's bars and text fields."}),
        }}

    @classmethod
    def VALIDATE_INPUTS(cls, captions=None, frames=None, fps=None):
        """Checked before the queue runs, so a bad value is reported on the node at once."""
        if captions is None:
            return True
        try:
            parsed = parse_timed_captions(captions)
            if isinstance(frames, int) and isinstance(fps, (int, float)):
                check_against_clip(parsed, frames, float(fps))
        except TimedCaptionError as err:
            return f"{NODE}: captions: {err}"
        return True

    def encode(self, clip, frames, fps, captions):
        try:
            return (encode_timed_captions(clip, parse_timed_captions(captions), frames, float(fps)),)
        except (TimedCaptionError, ValueError) as err:
            raise ValueError(f"{NODE}: {err}") from None
