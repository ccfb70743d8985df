"""Timed captions at sampling time: per-event text with start and end in seconds -> the dense branch's input.

The Timed Captions widget stores them as a JSON string (mirrored by web/captions_logic.js):

    {"version": 1, "captions": [{"text": "the ring rolls in", "start": 0.0, "end": 1.0}, ...]}

Each caption is encoded by the model's text encoder (ComfyUI's CLIP or the demo's), and its span goes to latent-frame
time as in training (t = seconds * fps / 4, see training.batches.dense_batch). Parsing never evaluates anything, caps
sizes, and fails with one line naming the caption and the fix.
"""
from __future__ import annotations

import json
import math
from dataclasses import dataclass
from typing import Any, Sequence

import torch

from ..data.dataset import TimedCaption
from ..model.dense import DenseCaptions
from ..native import encode_text, stack_embeddings
from .intervals import TEMPORAL_COMPRESSION, IntervalError, check_fps, clip_duration, latent_frame_count

MAX_JSON_BYTES = 64 * 1024
MAX_CAPTIONS = 32
MAX_TEXT_CHARS = 500
VERSION = 1


class TimedCaptionError(ValueError):
    """A timed-captions value that cannot be used."""


def parse_timed_captions(text) -> list[TimedCaption]:
    """Captions from the widget's JSON string; structure, text and numbers checked, not yet against a clip."""
    if not isinstance(text, str):
        raise TimedCaptionError(f"timed captions value must be a JSON string, got {type(text).__name__}")
    if len(text.encode("utf-8", "surrogatepass")) > MAX_JSON_BYTES:
        raise TimedCaptionError(f"timed captions JSON is larger than {MAX_JSON_BYTES // 1024} KB; remove captions "
                                "or reset the widget")
    try:
        data = json.loads(text, parse_constant=lambda c: float("nan"))
    except (json.JSONDecodeError, RecursionError) as err:
        raise TimedCaptionError(f"timed captions are not valid JSON ({err}); reset the widget or fix the value") \
            from None
    if not isinstance(data, dict) or not isinstance(data.get("captions"), list):
        raise TimedCaptionError('timed captions JSON must be an object {"version": 1, "captions": [...]}')
    if data.get("version", VERSION) != VERSION:
        raise TimedCaptionError(f"timed captions version {data.get('version')!r} is not supported "
                                f"(expected {VERSION})")
    items = data["captions"]
    if len(items) > MAX_CAPTIONS:
        raise TimedCaptionError(f"{len(items)} timed captions; at most {MAX_CAPTIONS} are allowed: remove some")
    out = []
    for i, c in enumerate(items):
        where = f"timed caption {i + 1}"
        if not isinstance(c, dict):
            raise TimedCaptionError(f'{where} must be an object {{"text", "start", "end"}}')
        text_ = c.get("text")
        if not isinstance(text_, str) or not text_.strip():
            raise TimedCaptionError(f"{where} has no text; type what happens in that span, or remove the caption")
        if len(text_) > MAX_TEXT_CHARS:
            raise TimedCaptionError(f"{where}: text is {len(text_)} characters; keep it under {MAX_TEXT_CHARS}")
        where = f"{where} ('{short(text_)}')"
        start, end = c.get("start"), c.get("end")
        for label, v in (("start", start), ("end", end)):
            if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
                raise TimedCaptionError(f"{where}: {label} {v!r} is not a finite number of seconds; give a time "
                                        "such as 0.5")
        if end <= start:
            raise TimedCaptionError(f"{where}: end {end:g} s is not after start {start:g} s; drag the bar's ends "
                                    "apart")
        out.append(TimedCaption(float(start), float(end), " ".join(text_.split())))
    return out


def short(text: str, n: int = 40) -> str:
    return text if len(text) <= n else text[: n - 1] + "…"


def check_against_clip(captions: Sequence[TimedCaption], num_frames: int, fps: float) -> None:
    """Every caption inside the clip of num_frames (4k+1) frames at fps, with half a frame of slack for rounding."""
    try:
        latent_frame_count(num_frames)
        duration = clip_duration(num_frames, fps)
    except IntervalError as err:
        raise TimedCaptionError(str(err)) from None
    for i, c in enumerate(captions):
        if c.start < -0.5 / fps or c.end > duration + 0.5 / fps:
            raise TimedCaptionError(f"timed caption {i + 1} ('{short(c.text)}'): [{c.start:g}, {c.end:g}] s lies "
                                    f"outside the clip [0, {duration:g}] s ({num_frames} frames at {fps:g} fps); "
                                    "drag it inside")


def dump_timed_captions(captions: Sequence[TimedCaption]) -> str:
    return json.dumps({"version": VERSION, "captions": [{"text": c.text, "start": c.start, "end": c.end}
                                                       for c in captions]})


@dataclass(frozen=True)
class EncodedCaptions:
    """Timed captions with their text embeddings, on the clip (frames, fps) they were laid out on."""

    captions: tuple[TimedCaption, ...]
    embeddings: torch.Tensor  # [E, L, text_dim], zero-padded
    lengths: torch.Tensor  # [E] real tokens per caption
    frames: int
    fps: float

    def dense(self) -> DenseCaptions:
        """The dense branch's input for one video: spans in latent-frame time, as in training."""
        spans = torch.tensor([[c.start, c.end] for c in self.captions], dtype=torch.float64)
        spans = (spans * self.fps / TEMPORAL_COMPRESSION).clamp(min=0)
        return DenseCaptions(self.embeddings[None].float(), spans[None], self.lengths[None].long())


def encode_timed_captions(clip: Any, captions: Sequence[TimedCaption], num_frames: int, fps: float) -> EncodedCaptions:
    """Check the captions against the clip and encode each with a CLIP-like text encoder (native.encode_text)."""
    if not captions:
        raise TimedCaptionError("no timed captions; add one with '+ caption' in the widget, or leave the node out")
    check_fps(fps)
    check_against_clip(captions, num_frames, fps)
    emb, lengths = stack_embeddings([encode_text(clip, c.text)[0] for c in captions])
    return EncodedCaptions(tuple(captions), emb, lengths, num_frames, float(fps))


def check_model_takes(model, dense: DenseCaptions, leave_out: str = "leave the timed captions out") -> None:
    """The model has a dense-caption branch and the captions were encoded for its text width."""
    adapter = getattr(model, "alchemint", None)
    if adapter is None or adapter.dense is None:
        raise TimedCaptionError("this model has no dense-caption branch (it was trained without timed captions, as "
                                "the shipped demo model was), so timed captions cannot reach it; use a model "
                                f"trained with dense_captions on, or {leave_out}")
    if dense.context.shape[-1] != model.cfg.text_dim:
        raise TimedCaptionError(f"the timed captions are {dense.context.shape[-1]}-wide text embeddings but the "
                                f"model reads {model.cfg.text_dim}: encode them with the CLIP that goes with this "
                                "model")
