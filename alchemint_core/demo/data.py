"""Writes the demo's synthetic training set in the dataset format (frames, mask tracks, reference images)."""
from __future__ import annotations

from pathlib import Path
from typing import Callable

import numpy as np

from ..data.dataset import list_samples, write_sample
from ..synthetic import Appearance, SyntheticVideo, random_subject, random_video, render_video

FPS = 8.0  # 17 frames = 2.1 s


def timing_caption(video: SyntheticVideo, fps: float = FPS) -> str:
    """The caption with each subject's interval written out, for the prompt-only ablation."""
    parts = [f"a {s.appearance.tag} from {s.first / fps:.1f} s to {(s.last + 1) / fps:.1f} s" for s in video.subjects]
    return " and ".join(parts)


def write_demo_dataset(root: str | Path, samples: int, seed: int = 0, frames: int = 17, size: int = 64,
                       timing_in_caption: bool = False, progress: Callable[[int, int], None] | None = None,
                       part: tuple[int, int] | None = None) -> Path:
    """`samples` synthetic training videos under root; existing complete samples are kept (resumable).
    Sample i depends only on (seed, i); part=(k, n) writes only the samples with i % n == k."""
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    done = {p.name for p in list_samples(root)}
    for i in range(samples):
        name = f"s{i:06d}"
        if name in done or (part is not None and i % part[1] != part[0]):
            continue
        rng = np.random.default_rng([seed, i])
        video = random_video(rng, "train", frames, size, size)
        caption = timing_caption(video) if timing_in_caption else video.caption
        refs = {tag: [ref] for tag, ref in video.references.items()}
        write_sample(root / name, video.frames, FPS, caption, video.masks, references=refs)
        if progress:
            progress(i + 1, samples)
    return root


# The example videos the dataset-building workflow loads: demo clips with fixed subjects and intervals (frames).
EXAMPLE_VIDEOS = {
    "alchemint_demo_clip_1.mp4": (1, [("red", "ring", (0, 9)), ("yellow", "star", (6, 16))]),
    "alchemint_demo_clip_2.mp4": (2, [("blue", "cross", (0, 16)), ("green", "triangle", (4, 12))]),
}


def example_video(name: str, frames: int = 17, size: int = 64) -> SyntheticVideo:
    seed, spec = EXAMPLE_VIDEOS[name]
    rng = np.random.default_rng([seed, 4242])
    subjects = [random_subject(rng, Appearance(colour, shape), frames, size, size, i, len(spec), interval)
                for i, (colour, shape, interval) in enumerate(spec)]
    return render_video(rng, subjects, frames, size, size)


def write_example_videos(folder: str | Path) -> list[Path]:
    """The example videos as H.264 .mp4 in `folder` (those missing), as a user's own videos would be."""
    from ..media import write_video
    written = []
    for name in EXAMPLE_VIDEOS:
        path = Path(folder) / name
        if not path.exists():
            path.parent.mkdir(parents=True, exist_ok=True)
            written.append(write_video(example_video(name).frames, path, FPS))
    return written
