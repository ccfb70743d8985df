"""Evaluate Timing (S2VTime in the canvas: t-IOU / t-L2 from mask tracks, CLIP-T / CLIP-I of the masked subject
when the frames and a CLIP model are given) and the demo's mask tracks of generated subjects."""
from __future__ import annotations

import json
import math
from functools import lru_cache

import numpy as np
import torch
import torch.nn.functional as F
from einops import rearrange

from alchemint_core.data.curate.backends.models import require_transformers
from alchemint_core.data.dataset import DatasetError
from alchemint_core.demo.detector import colour_track
from alchemint_core.demo.pipeline import appearance_of
from alchemint_core.sampling.subjects import image_array
from alchemint_core.scoring.identity import ClipEmbedder, masked_crop
from alchemint_core.scoring.subjects import COLUMNS, score_subject, summarise

from . import bridge
from .curation import CURATION_FOLDER, curation_models
from .models import CATEGORY
from .timeline import Timeline

MAX_MASK_TRACKS = 4
NO_CLIP = "none"


class ClipVisionEmbedder:
    """ComfyUI's CLIP_VISION (Load CLIP Vision) as a scoring embedder. Images only: it has no text side, so
    `score_subject` measures CLIP-I with it and never CLIP-T."""

    def __init__(self, clip_vision, batch: int = 32):
        self.model, self.batch = clip_vision, batch
        self.size = int(getattr(clip_vision, "image_size", 224))

    @torch.inference_mode()
    def images(self, images) -> torch.Tensor:
        pixels = [clip_square(torch.from_numpy(np.asarray(i)[..., :3]).float() / 255, self.size) for i in images]
        out = [self.model.encode_image(torch.stack(pixels[i:i + self.batch]))["image_embeds"].float().cpu()
               for i in range(0, len(pixels), self.batch)]
        return F.normalize(torch.cat(out), dim=-1)


def clip_square(image: torch.Tensor, size: int) -> torch.Tensor:
    """CLIP's resize before normalising: shortest side to `size` (bicubic, antialiased), centre crop. Done per crop
    so that crops of any size stack into one batch; encode_image then finds them at its size and only normalises,
    as it would have done for each crop alone."""
    h, w = image.shape[:2]
    if (h, w) == (size, size):
        return image
    scale = size / min(h, w)
    x = F.interpolate(rearrange(image, "h w c -> 1 c h w"), size=(round(h * scale), round(w * scale)),
                      mode="bicubic", antialias=True)
    top, left = (x.shape[2] - size) // 2, (x.shape[3] - size) // 2
    return rearrange(x[0, :, top:top + size, left:left + size], "c h w -> h w c")


def clip_folders() -> list[str]:
    """CLIP models (transformers format) in models/alchemint_curation: the folders named clip*."""
    root = curation_models()
    return sorted(p.name for p in root.glob("clip*") if p.is_dir()) if root.is_dir() else []


@lru_cache(maxsize=1)
def clip_embedder(folder: str, device: str) -> ClipEmbedder:
    """Kept loaded between runs (the scores of one video after another)."""
    return ClipEmbedder.from_folder(folder, option="Evaluate Timing: clip_model", device=device)


def load_clip_model(name: str) -> ClipEmbedder | None:
    if name == NO_CLIP:
        return None
    if name not in clip_folders():  # also refuses names that would leave the folder
        raise ValueError(f"Evaluate Timing: clip_model '{str(name)[:80]}' is not a folder clip* in "
                         f"{curation_models()}; put a CLIP model (transformers format, e.g. openai/clip-vit-large-"
                         "patch14) there and refresh, or choose none")
    try:
        require_transformers("Evaluate Timing: clip_model")
        return clip_embedder(str(curation_models() / name), str(bridge.device()))
    except DatasetError as err:
        raise ValueError(str(err)) from None


def video_frames(images, frames: int) -> np.ndarray:
    a = images.detach().cpu().numpy() if isinstance(images, torch.Tensor) else np.asarray(images)
    if a.ndim != 4 or a.shape[-1] < 3 or len(a) != frames:
        raise ValueError(f"Evaluate Timing: images has shape {list(a.shape)}; give the decoded video the timeline "
                         f"was made for, [{frames} frames, H, W, 3] (VAE Decode's IMAGE)")
    return (np.clip(a[..., :3], 0, 1) * 255).round().astype(np.uint8)


def mask_track(track, i: int, frames: int) -> np.ndarray:
    m = track.detach().float().cpu().numpy() if isinstance(track, torch.Tensor) else np.asarray(track, float)
    m = m[None] if m.ndim == 2 else m
    if m.ndim != 3 or len(m) != frames:
        raise ValueError(f"Evaluate Timing: masks_{i} has shape {list(m.shape)}; give one mask per frame "
                         f"({frames} frames)")
    return m


def finite(x: float | None) -> float | None:
    """JSON has no NaN: a score that was not measured is null."""
    return None if x is None or math.isnan(x) else x


class EvaluateTiming:
    DESCRIPTION = ("S2VTime scores of a generated video from per-subject mask tracks (e.g. from Track Subjects or "
                   "a segmentation node): t-IOU and t-L2 of each subject's detected interval against the requested "
                   "one; with the video's frames and a CLIP model also CLIP-T (the masked, cropped subject against "
                   "its tag) and CLIP-I (against its reference image), averaged over the frames where it is "
                   "present.")
    CATEGORY = f"{CATEGORY}/evaluation"
    RETURN_TYPES = ("FLOAT", "FLOAT", "STRING", "FLOAT", "FLOAT")
    RETURN_NAMES = ("t_iou", "t_l2", "report", "clip_t", "clip_i")
    OUTPUT_TOOLTIPS = ("Mean temporal IoU over subjects (1 = exact).", "Mean normalised start/end distance "
                       "(0 = exact).", "Per-subject results, means and bootstrap 95% intervals as JSON.",
                       "Mean CLIP-T over subjects (cosine, -1..1); NaN when not measured (no clip_model, or no "
                       "subject found).", "Mean CLIP-I over subjects (cosine, -1..1); NaN when not measured (no "
                       "clip_vision or clip_model, or no subject found).")
    OUTPUT_NODE = True
    FUNCTION = "evaluate"

    @classmethod
    def INPUT_TYPES(cls):
        masks = {f"masks_{i}": ("MASK", {"tooltip": f"Mask track of subject {i} (one mask per frame)."})
                 for i in range(2, MAX_MASK_TRACKS + 1)}
        return {"required": {
            "timeline": ("ALCHEMINT_TIMELINE", {"tooltip": "The requested intervals (the timeline the video was "
                                                           "made with); its subjects' references are CLIP-I's."}),
            "masks_1": ("MASK", {"tooltip": "Mask track of subject 1: [frames, H, W], 1 where it is visible."}),
            "min_area": ("FLOAT", {"default": 0.002, "min": 0.0, "max": 1.0, "step": 0.001, "tooltip": "A subject "
                                   "is present in a frame when its mask covers more than this fraction of it."}),
        }, "optional": masks | {
            "images": ("IMAGE", {"tooltip": "The decoded video (VAE Decode), needed for CLIP-T and CLIP-I: the "
                                            "subject is cropped from it by its mask."}),
            "clip_vision": ("CLIP_VISION", {"tooltip": "A CLIP vision model (Load CLIP Vision) for CLIP-I; without "
                                                       "it CLIP-I uses clip_model."}),
            "clip_model": ([NO_CLIP] + clip_folders(), {"default": NO_CLIP, "tooltip": "A CLIP model with text "
                           f"and vision (transformers format, a folder clip* in models/{CURATION_FOLDER}, e.g. "
                           "openai/clip-vit-large-patch14) for CLIP-T, and for CLIP-I when no clip_vision is "
                           "connected."}),
        }}

    def evaluate(self, timeline: Timeline, masks_1, min_area, images=None, clip_vision=None, clip_model=NO_CLIP,
                 **more):
        tracks = [masks_1] + [more.get(f"masks_{i}") for i in range(2, MAX_MASK_TRACKS + 1)]
        tracks = [t for t in tracks if t is not None]
        if len(tracks) != len(timeline.bars):
            raise ValueError(f"Evaluate Timing: {len(tracks)} mask tracks for {len(timeline.bars)} subjects; connect "
                             "masks_1..masks_N in the timeline's subject order")
        tracks = [mask_track(t, i + 1, timeline.frames) for i, t in enumerate(tracks)]
        identity = clip_vision is not None or clip_model != NO_CLIP
        if identity and images is None:
            raise ValueError("Evaluate Timing: CLIP-T / CLIP-I need the video's frames; connect images (VAE "
                             "Decode's IMAGE), or disconnect clip_vision and set clip_model to none")
        frames = video_frames(images, timeline.frames) if images is not None else None
        if identity:
            for i, m in enumerate(tracks):
                if m.shape[1:] != frames.shape[1:3]:
                    raise ValueError(f"Evaluate Timing: masks_{i + 1} is {m.shape[2]}x{m.shape[1]} but images are "
                                     f"{frames.shape[2]}x{frames.shape[1]}; give masks of the video's size (e.g. "
                                     "Track Subjects on these images)")
        text_side = load_clip_model(clip_model)
        image_side = ClipVisionEmbedder(clip_vision) if clip_vision is not None else text_side
        rows = []
        for bar, subject, m in zip(timeline.bars, timeline.references.subjects, tracks):
            bridge.check_interrupted()
            ref = masked_crop(subject.image, subject.mask) if image_side is not None else None
            req = (bar.start, bar.end)
            # one model: one call gives all; CLIP_VISION (images only) gives CLIP-I beside the text model's CLIP-T
            row = score_subject("canvas", bar.tag, req, m, timeline.fps, frames,
                                ref if image_side is text_side else None, text_side, min_area)
            if image_side is not text_side:
                row.clip_i = score_subject("canvas", bar.tag, req, m, timeline.fps, frames, ref, image_side,
                                           min_area).clip_i
            rows.append(row)
        return self.report(rows, text_side, clip_model, clip_vision is not None)

    @staticmethod
    def report(rows, text_side, clip_model: str, vision: bool) -> dict:
        summary = summarise(rows)
        means = [summary[c][0] for c in COLUMNS]
        measured_with = {"clip_t": clip_model if text_side is not None else None,
                         "clip_i": "clip_vision" if vision else (clip_model if text_side is not None else None)}
        report = {c: finite(summary[c][0]) for c in COLUMNS} | {
            "ci95": {c: [finite(summary[c][1]), finite(summary[c][2])] for c in COLUMNS},
            "measured_with": measured_with,
            "subjects": [{"tag": r.tag, "requested": list(r.requested),
                          "detected": list(r.predicted) if r.predicted else None, "t_iou": r.t_iou, "t_l2": r.t_l2,
                          "clip_t": r.clip_t, "clip_i": r.clip_i} for r in rows]}
        text = ", ".join(f"{name} {v:.3f}" for name, v in zip(("t-IOU", "t-L2", "CLIP-T", "CLIP-I"), means)
                         if not math.isnan(v))
        return {"ui": {"text": [text]}, "result": (means[0], means[1], json.dumps(report, indent=1), *means[2:])}


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
