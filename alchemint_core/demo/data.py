"""Writes the demo's synthetic training set in the dataset format (frames, mask tracks, reference images)."""
from __future__ import annotations

from pathlib import Path
from typing import Callable

import numpy as np

from ..data.dataset import list_samples, write_sample
from ..synthetic import SyntheticVideo, random_video

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
