"""How well `curate` recovers what the demo generator knows exactly: synthetic videos (with their masks kept aside)
are handed to `curate` as plain videos and captions, and its samples are scored against the truth — each entity's
interval (t-IOU), its masks (IoU over the frames it is present in), and entities missed or duplicated."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from PIL import Image

from ..data.curate import curate
from ..data.dataset import entity_interval, frames_to_seconds, list_samples, load_sample, presence
from ..media import write_video
from ..scoring.timing import mean_ci, t_iou
from .data import write_demo_dataset


def curation_inputs(truth: Path, videos: Path, captions: Path, video_format: str = "png") -> None:
    """Every truth sample's frames as a video — "png": a lossless frame folder; "mp4": H.264 (yuv420: colour at
    half resolution, which blurs a 20-pixel sprite's coloured edge) — and a captions file with the captions alone."""
    videos.mkdir(parents=True, exist_ok=True)
    entries = {}
    for folder in list_samples(truth):
        sample = load_sample(folder)
        if video_format == "mp4":
            path = videos / f"{sample.name}.mp4"
            if not path.exists():
                write_video(sample.frames, path, sample.fps)
            entries[path.name] = {"caption": sample.caption}
        else:
            path = videos / sample.name
            path.mkdir(exist_ok=True)
            for i, frame in enumerate(sample.frames):
                Image.fromarray(frame).save(path / f"{i:05d}.png")
            entries[path.name] = {"caption": sample.caption, "fps": sample.fps}
    captions.write_text(json.dumps(entries, indent=1))


def score_curation(truth: Path, curated: Path) -> dict:
    ious, mask_ious, samples, missed, duplicated = [], [], 0, 0, 0
    done = {p.name: p for p in list_samples(curated)}
    for folder in list_samples(truth):
        true = load_sample(folder)
        samples += 1
        got = {e.tag: e.masks for e in load_sample(done[folder.name]).entities} if folder.name in done else {}
        tags = [e.tag for e in true.entities]
        missed += any(t not in got for t in tags)
        duplicated += len(got) > len(set(got) & set(tags))
        for e in true.entities:
            first_last = entity_interval(e.masks)
            if first_last is None or e.tag not in got:
                continue
            found = entity_interval(got[e.tag])
            want = frames_to_seconds(*first_last, true.fps)
            ious.append(t_iou(frames_to_seconds(*found, true.fps) if found else None, want))
            present = np.flatnonzero(presence(e.masks))
            mask_ious.append(np.mean([(e.masks[f] & got[e.tag][f]).sum() / max((e.masks[f] | got[e.tag][f]).sum(), 1)
                                      for f in present]))
    return {"samples": samples, "entities": len(ious), "t_iou": mean_ci(ious), "mask_iou": mean_ci(mask_ious),
            "samples_with_a_missed_entity": missed / max(samples, 1),
            "samples_with_a_duplicated_entity": duplicated / max(samples, 1)}


def run_curation_check(out: Path, samples: int, seed: int = 7, video_format: str = "png", progress=None) -> dict:
    out = Path(out)
    write_demo_dataset(out / "truth", samples, seed=seed)
    videos, curated = out / f"videos_{video_format}", out / f"curated_{video_format}"
    curation_inputs(out / "truth", videos, out / f"captions_{video_format}.json", video_format)
    report = curate(videos, curated, out / f"captions_{video_format}.json", backend="demo", progress=progress)
    scores = {**score_curation(out / "truth", curated), "video_format": video_format, "failed": report.failed,
              "not_found": report.not_found}
    (out / f"curation_{video_format}.json").write_text(json.dumps(scores, indent=1))
    return scores
