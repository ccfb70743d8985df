"""Track Subjects: a video plus word tags -> one mask track per tag, through the curation backends (the pipeline
`curate` runs: grounding at several frames, tracking forward and backward, cleaning), for users without a
segmentation pack. Its masks feed the Dataset Writer or Evaluate Timing."""
from __future__ import annotations

import json
from functools import lru_cache
from pathlib import Path

import numpy as np
import torch

from alchemint_core.data.curate.backends.models import MODEL_FOLDERS
from alchemint_core.data.curate.pipeline import BACKENDS, make_backend
from alchemint_core.data.curate.stages import curate_entity
from alchemint_core.data.dataset import DatasetError

from . import bridge
from .models import CATEGORY

MAX_TRACKS = 4
CURATION_FOLDER = "alchemint_curation"  # models/alchemint_curation/<sam3|grounding-dino|clip|sam2>/


def curation_models() -> Path:
    fp = bridge.folder_paths()
    if fp is not None:
        return Path(fp.models_dir) / CURATION_FOLDER
    return bridge.SEARCH_PATHS.get(CURATION_FOLDER, [Path("models") / CURATION_FOLDER])[0]


@lru_cache(maxsize=2)
def backend_for(name: str, models: Path):
    """Backends hold their models: built once per (backend, folder) and kept between runs."""
    return make_backend(name, models)


class TrackSubjects:
    DESCRIPTION = ("Mask tracks of the subjects a video shows, found by their word tags: each tag is detected at "
                   "several frames, the best detection tracked forward and backward over the whole video. Backends: "
                   "demo (the demo's coloured shapes, no weights), sam3 and gdino-sam2 (checkpoints in "
                   f"models/{CURATION_FOLDER}: " + ", ".join(f"{m.name}/ = {m.checkpoint}" for m in
                                                             MODEL_FOLDERS.values() if m.name != "tagger") + ").")
    CATEGORY = f"{CATEGORY}/training"
    RETURN_TYPES = ("MASK",) * MAX_TRACKS + ("STRING",)
    RETURN_NAMES = tuple(f"mask_{i}" for i in range(1, MAX_TRACKS + 1)) + ("found",)
    OUTPUT_TOOLTIPS = tuple(f"Mask track of tag {i}, [frames, H, W] (all zero when it is not found or not given)."
                            for i in range(1, MAX_TRACKS + 1)) + (
        "JSON: each tag's first and last frame where it is visible, or null when it is found in no frame.",)
    FUNCTION = "track"

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {
            "images": ("IMAGE", {"tooltip": "The video's frames, e.g. from Load Video -> Get Video Components."}),
            "tags": ("STRING", {"multiline": True, "default": "red ring\nyellow star",
                                "tooltip": f"One word tag per line (at most {MAX_TRACKS}), e.g. 'the dog'."}),
            "backend": (list(BACKENDS), {"default": "demo", "tooltip": "Detection and tracking models (see the "
                                                                      "node's description)."}),
        }}

    def track(self, images, tags, backend):
        names = [" ".join(line.split()) for line in str(tags).splitlines() if line.strip()]
        if not names:
            raise ValueError("Track Subjects: no tags; write one word tag per line")
        if len(names) > MAX_TRACKS:
            raise ValueError(f"Track Subjects: {len(names)} tags but at most {MAX_TRACKS}; use a second node for the "
                             "rest")
        frames = images.detach().cpu().numpy() if isinstance(images, torch.Tensor) else np.asarray(images)
        if frames.ndim != 4 or frames.shape[-1] < 3 or len(frames) == 0:
            raise ValueError(f"Track Subjects: images must be [frames, H, W, 3], got {list(frames.shape)}")
        video = (np.clip(frames[..., :3], 0, 1) * 255).round().astype(np.uint8)
        try:
            engine = backend_for(backend, curation_models())
        except DatasetError as err:
            raise ValueError(f"Track Subjects: {str(err).replace('--models ', 'models folder ', 1)}") from None
        progress = bridge.Progress(len(names))
        tracks, found = [], {}
        for i, tag in enumerate(names):
            bridge.check_interrupted()
            try:
                result = curate_entity(engine, video, tag)
            except ValueError as err:  # e.g. a tag the demo backend cannot read
                raise ValueError(f"Track Subjects: {err}") from None
            tracks.append(torch.from_numpy(result[0].astype(np.float32)) if result else torch.zeros(video.shape[:3]))
            found[tag] = list(result[1]) if result else None
            progress.update(i + 1)
        tracks += [torch.zeros(video.shape[:3])] * (MAX_TRACKS - len(tracks))
        return {"ui": {"text": [json.dumps(found)]}, "result": (*tracks, json.dumps(found))}
