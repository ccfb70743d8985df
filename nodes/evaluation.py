"""Evaluate Timing (t-IOU / t-L2 from mask tracks) and the demo's mask tracks of generated subjects."""
from __future__ import annotations

import json

import numpy as np
import torch

from alchemint_core.demo.detector import colour_track
from alchemint_core.demo.pipeline import appearance_of
from alchemint_core.scoring.timing import predicted_interval, t_iou, t_l2
from alchemint_core.subjects import image_array

from .models import CATEGORY
from .timeline import Timeline

MAX_MASK_TRACKS = 4


class EvaluateTiming:
    DESCRIPTION = ("Timing metrics of a generated video from per-subject mask tracks (e.g. from a segmentation "
                   "node): t-IOU and t-L2 of each subject's detected interval against the requested one.")
    CATEGORY = f"{CATEGORY}/evaluation"
    RETURN_TYPES = ("FLOAT", "FLOAT", "STRING")
    RETURN_NAMES = ("t_iou", "t_l2", "report")
    OUTPUT_TOOLTIPS = ("Mean temporal IoU over subjects (1 = exact).", "Mean normalised start/end distance "
                       "(0 = exact).", "Per-subject results as JSON.")
    OUTPUT_NODE = True
    FUNCTION = "evaluate"

    @classmethod
    def INPUT_TYPES(cls):
        masks = {f"masks_{i}": ("MASK", {"tooltip": f"Mask track of subject {i} (one mask per frame)."})
                 for i in range(2, MAX_MASK_TRACKS + 1)}
        return {"required": {
            "timeline": ("ALCHEMINT_TIMELINE", {"tooltip": "The requested intervals (the timeline the video was "
                                                           "made with)."}),
            "masks_1": ("MASK", {"tooltip": "Mask track of subject 1: [frames, H, W], 1 where it is visible."}),
            "min_area": ("FLOAT", {"default": 0.002, "min": 0.0, "max": 1.0, "step": 0.001, "tooltip": "A subject "
                                   "is present in a frame when its mask covers more than this fraction of it."}),
        }, "optional": masks}

    def evaluate(self, timeline: Timeline, masks_1, min_area, **more):
        tracks = [masks_1] + [more.get(f"masks_{i}") for i in range(2, MAX_MASK_TRACKS + 1)]
        tracks = [t for t in tracks if t is not None]
        if len(tracks) != len(timeline.bars):
            raise ValueError(f"Evaluate Timing: {len(tracks)} mask tracks for {len(timeline.bars)} subjects; connect "
                             "masks_1..masks_N in the timeline's subject order")
        duration = timeline.frames / timeline.fps
        rows = []
        for i, (bar, track) in enumerate(zip(timeline.bars, tracks)):
            m = track.detach().float().cpu().numpy() if isinstance(track, torch.Tensor) else np.asarray(track, float)
            if m.ndim == 2:
                m = m[None]
            if m.ndim != 3 or len(m) != timeline.frames:
                raise ValueError(f"Evaluate Timing: masks_{i + 1} has shape {list(m.shape)}; give one mask per frame "
                                 f"({timeline.frames} frames)")
            present = np.nan_to_num(m).reshape(len(m), -1).mean(1) > min_area
            pred = predicted_interval(present, timeline.fps)
            req = (bar.start, bar.end)
            rows.append({"tag": bar.tag, "requested": list(req), "detected": list(pred) if pred else None,
                         "t_iou": t_iou(pred, req), "t_l2": t_l2(pred, req, duration)})
        iou = float(np.mean([r["t_iou"] for r in rows]))
        l2 = float(np.mean([r["t_l2"] for r in rows]))
        report = json.dumps({"t_iou": iou, "t_l2": l2, "subjects": rows}, indent=1)
        return {"ui": {"text": [f"t-IOU {iou:.3f}, t-L2 {l2:.3f}"]}, "result": (iou, l2, report)}


class DemoSubjectMasks:
    DESCRIPTION = ("Mask tracks of the demo's coloured subjects in generated frames (the timing benchmark's "
                   "detector: the pixels of each subject's colour), for Evaluate Timing.")
    CATEGORY = f"{CATEGORY}/evaluation"
    RETURN_TYPES = ("MASK",) * MAX_MASK_TRACKS
    RETURN_NAMES = tuple(f"masks_{i}" for i in range(1, MAX_MASK_TRACKS + 1))
    OUTPUT_TOOLTIPS = tuple(f"Mask track of subject {i} (empty if there is no such subject)."
                            for i in range(1, MAX_MASK_TRACKS + 1))
    FUNCTION = "detect"

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {
            "images": ("IMAGE", {"tooltip": "The decoded demo video (VAE Decode), [frames, H, W, 3]."}),
            "timeline": ("ALCHEMINT_TIMELINE", {"tooltip": "The timeline the video was made with; its tags name "
                                                           "the colours to look for (e.g. 'red ring')."}),
        }}

    def detect(self, images, timeline: Timeline):
        frames = images.detach().cpu().numpy() if isinstance(images, torch.Tensor) else np.asarray(images)
        if frames.ndim != 4 or frames.shape[-1] < 3:
            raise ValueError(f"Demo Subject Masks: images must be [frames, H, W, 3], got {list(frames.shape)}")
        frames = np.stack([image_array(f, "frame") for f in frames])
        tracks = []
        for bar in timeline.bars[:MAX_MASK_TRACKS]:
            try:
                colour = appearance_of(bar.tag).colour
            except ValueError as err:
                raise ValueError(f"Demo Subject Masks: {err}") from None
            tracks.append(torch.from_numpy(colour_track(frames, colour).astype(np.float32)))
        empty = torch.zeros(frames.shape[:3])
        return tuple(tracks + [empty] * (MAX_MASK_TRACKS - len(tracks)))
