"""How well a model recovers clean clips from noise, per noise level: the clean-estimate error x_t - sigma·v - x0
on a cache's clips, over all latent cells and over the cells a subject covers. Every clip gets the same noise for
every model and level (seeded by its position), no dropout and no soft subjects, so models compare side by side;
on clips the models never trained on it measures what they learnt, at the levels where sampling decides it."""
from __future__ import annotations

from dataclasses import dataclass

import torch

from .batches import CachedClips, make_batch


@dataclass(frozen=True)
class _Plain:
    """The batch settings of a measurement: every clip whole, nothing dropped, subject cells marked."""

    seed: int
    p_drop_refs: float = 0.0
    p_drop_caption: float = 0.0
    p_drop_words: float = 0.0
    p_soft_subjects: float = 0.0
    soft_min_sigma: float = 1.0
    subject_loss_weight: float = 1.0  # loss_weight = 1 + subject masks: > 1 marks subject cells
    timestep_sampling: str = "logit-normal"
    logit_mean: float = 0.0
    logit_std: float = 1.0
    expert: str = ""


@torch.no_grad()
def denoise_errors(model, clips: CachedClips, latent_format, sigmas: list[float], count: int | None = None,
                   batch_size: int = 8, seed: int = 0) -> dict[float, dict[str, float]]:
    """{sigma: {"all": mean squared error, "subjects": the same on subject cells}} over the first `count` clips of
    the seeded order (all by default), in normalised latent units."""
    bad = [s for s in sigmas if not 0 < s <= 1]
    if bad:
        raise ValueError(f"noise levels {bad} must be in (0, 1]")
    n = len(clips) if count is None else min(count, len(clips))
    if n < 1:
        raise ValueError(f"count {count} must be at least 1")
    cfg = _Plain(seed)
    sums = {s: [0.0, 0.0, 0.0] for s in sigmas}  # squared error, subject squared error, subject cells
    half = model.alchemint.cfg.min_half_length
    for first in range(0, n, batch_size):
        batch = make_batch(clips, list(range(first, min(first + batch_size, n))), cfg, latent_format, half, False)
        subject = (batch.loss_weight > 1).float()
        refs = None if batch.refs is None else model.pack(batch.refs, batch.x0.shape)  # once for every level
        for s in sigmas:
            sigma = torch.full((batch.x0.shape[0],), float(s))
            x_t = (1 - s) * batch.x0 + s * batch.noise
            v = model(x_t, sigma * 1000, batch.context, refs=refs, context_mask=batch.context_mask).float()
            err = (x_t - s * v - batch.x0).pow(2).mean(dim=1, keepdim=True)  # per cell
            sums[s][0] += float(err.mean(dim=(1, 2, 3, 4)).sum())
            sums[s][1] += float((err * subject).sum())
            sums[s][2] += float(subject.sum())
    return {s: {"all": a / n, "subjects": b / c if c else float("nan")} for s, (a, b, c) in sums.items()}


def error_table(results: dict[str, dict[float, dict[str, float]]]) -> str:
    """Markdown: one row per model, all cells / subject cells per noise level."""
    sigmas = list(next(iter(results.values())))
    head = "| model | " + " | ".join(f"σ {s:g}: all / subjects" for s in sigmas) + " |"
    rows = [head, "|---|" + "---|" * len(sigmas)]
    for name, res in results.items():
        rows.append(f"| {name} | " + " | ".join(f"{res[s]['all']:.4f} / {res[s]['subjects']:.4f}" for s in sigmas)
                    + " |")
    return "\n".join(rows)
