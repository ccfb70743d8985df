"""Training batches from an encoded cache.

Every random choice for a clip (reference variant, dropout, noise level, noise) comes from a generator seeded by
(seed, global sample position), so a step's batch is the same whatever the process count or a restart.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from ..data.cache import MANIFEST
from ..files import SafetensorsFile
from ..model.config import CheckpointError
from ..model.dense import DenseCaptions
from ..model.latents import LatentFormat
from ..model.references import References
from ..sampling.intervals import interval_to_latent


def mix_seed(*parts: int) -> int:
    """A well-mixed 63-bit seed from integers (Python's hash() is salted per process for strings)."""
    return int(np.random.SeedSequence([int(p) for p in parts]).generate_state(2, np.uint64)[0] >> np.uint64(1))


class CachedClips:
    """The clips of a cache folder, read from their shards on demand."""

    def __init__(self, folder: str | Path):
        self.folder = Path(folder)
        path = self.folder / MANIFEST
        if not path.is_file():
            raise CheckpointError(f"{self.folder}: no {MANIFEST}; build the cache first with "
                                  f"`python -m alchemint_core cache`")
        self.manifest = json.loads(path.read_text())
        self.names = sorted(self.manifest["clips"])
        if not self.names:
            raise CheckpointError(f"{self.folder}: the cache holds no clips")
        self.null_caption = SafetensorsFile(self.folder / "null_caption.safetensors").tensor("caption").float()
        self._files: dict[str, SafetensorsFile] = {}

    def __len__(self) -> int:
        return len(self.names)

    def __getitem__(self, i: int) -> dict:
        name = self.names[i]
        if name not in self._files:
            self._files[name] = SafetensorsFile(self.folder / self.manifest["clips"][name]["file"])
        f = self._files[name]
        item = {k: f.tensor(k) for k in f.keys()}
        item["fps"] = float(f.metadata["fps"])
        item["num_frames"] = int(f.metadata["num_frames"])
        return item

    def metadata(self, i: int) -> dict[str, str]:
        self[i]
        return self._files[self.names[i]].metadata

    def position(self, k: int, seed: int) -> int:
        """Clip index of the k-th sample drawn: epochs are seeded permutations of the clips."""
        epoch, offset = divmod(k, len(self))
        g = torch.Generator().manual_seed(mix_seed(seed, 0, epoch))
        return int(torch.randperm(len(self), generator=g)[offset])


@dataclass
class Batch:
    x0: torch.Tensor  # [B, C, T, H, W] normalised clean latents
    noise: torch.Tensor
    sigma: torch.Tensor  # [B]
    context: torch.Tensor  # [B, L, D]
    context_mask: torch.Tensor | None
    refs: References | None
    dense: DenseCaptions | None
    loss_weight: torch.Tensor  # [B, 1, T, H, W]
    signal: torch.Tensor | None = None  # what is noised into x_t when not x0 (soft subjects); the target stays x0

    def to(self, device) -> "Batch":
        mv = lambda t: None if t is None else t.to(device)
        return Batch(mv(self.x0), mv(self.noise), mv(self.sigma), mv(self.context), mv(self.context_mask),
                     None if self.refs is None else self.refs.to(device),
                     None if self.dense is None else DenseCaptions(mv(self.dense.context), mv(self.dense.spans),
                                                                   mv(self.dense.lengths)),
                     mv(self.loss_weight), mv(self.signal))


def sample_sigma(g: torch.Generator, cfg) -> float:
    if getattr(cfg, "expert", ""):
        return sample_expert_sigma(g, cfg)
    if cfg.timestep_sampling == "logit-normal":
        return float(torch.sigmoid(torch.randn((), generator=g) * cfg.logit_std + cfg.logit_mean))
    u = float(torch.rand((), generator=g))
    s = cfg.timestep_shift
    return s * u / (1 + (s - 1) * u)


def sample_expert_sigma(g: torch.Generator, cfg) -> float:
    """A noise level from the configured distribution conditioned on the expert's range (Wan 2.2 A14B): one uniform
    draw mapped through the distribution's inverse CDF restricted to [lo, hi], so the expert sees the levels it meets
    in sampling with their usual relative weights, and no draw is rejected."""
    from ..model.experts import expert_sigma_range
    lo, hi = expert_sigma_range(cfg.expert, cfg.expert_boundary)
    u = torch.rand((), generator=g, dtype=torch.float64)
    if cfg.timestep_sampling == "logit-normal":  # sigma = sigmoid(mean + std * z), z standard normal
        std = max(cfg.logit_std, 1e-6)
        z_of = lambda s: (torch.logit(torch.tensor(s, dtype=torch.float64)) - cfg.logit_mean) / std
        c_lo, c_hi = torch.special.ndtr(z_of(lo)), torch.special.ndtr(z_of(hi))
        z = torch.special.ndtri(c_lo + u * (c_hi - c_lo))
        sigma = float(torch.sigmoid(cfg.logit_mean + std * z))
    else:  # sigma = s*v / (1 + (s-1)*v), v uniform: its inverse is v = sigma / (s - (s-1)*sigma)
        s = cfg.timestep_shift
        v_lo, v_hi = lo / (s - (s - 1) * lo), hi / (s - (s - 1) * hi)
        v = float(v_lo + u * (v_hi - v_lo))
        sigma = s * v / (1 + (s - 1) * v)
    return min(max(sigma, lo), hi)


def pad_stack(tensors: list[torch.Tensor], length: int | None = None) -> torch.Tensor:
    """Stack [L_i, ...] tensors zero-padded along dim 0 to the longest (or `length`)."""
    n = length or max(t.shape[0] for t in tensors)
    out = tensors[0].new_zeros(len(tensors), n, *tensors[0].shape[1:])
    for i, t in enumerate(tensors):
        out[i, : t.shape[0]] = t
    return out


def make_batch(clips: CachedClips, positions: list[int], cfg, latent_format: LatentFormat, min_half_length: float,
               dense_captions: bool) -> Batch:
    """The clips at global sample positions (k values) with their seeded augmentation, dropout and noise."""
    items, drops_caption, sigmas, noises, drops_refs, drops_words, variants, soft = [], [], [], [], [], [], [], []
    for k in positions:
        g = torch.Generator().manual_seed(mix_seed(cfg.seed, 1, k))
        item = clips[clips.position(k, cfg.seed)]
        items.append(item)
        n_ent = item["refs"].shape[0] if "refs" in item else 0
        variants.append([int(torch.randint(item["refs"].shape[1], (), generator=g)) for _ in range(n_ent)])
        drops_refs.append((torch.rand(n_ent, generator=g) < cfg.p_drop_refs).tolist())
        drops_caption.append(bool(torch.rand((), generator=g) < cfg.p_drop_caption))
        sigmas.append(sample_sigma(g, cfg))
        noises.append(torch.randn(item["video"].shape, generator=g))
        # drawn last and only when enabled: runs without it keep their random stream
        drops_words.append(cfg.p_drop_words > 0 and bool(torch.rand((), generator=g) < cfg.p_drop_words))
        soft.append(cfg.p_soft_subjects > 0 and bool(torch.rand((), generator=g) < cfg.p_soft_subjects)
                    and sigmas[-1] >= cfg.soft_min_sigma)

    x0 = latent_format.normalize(torch.stack([it["video"].float() for it in items]))
    signal = None
    if any(soft):
        signal = x0.clone()
        for i, (it, on) in enumerate(zip(items, soft)):
            if on:
                signal[i] = latent_format.normalize(it["video_soft"].float()[None])[0]
    drops_caption = [a or b for a, b in zip(drops_caption, drops_words)]
    captions = [clips.null_caption if drop else it["caption"].float() for it, drop in zip(items, drops_caption)]
    lengths = torch.tensor([c.shape[0] for c in captions])
    context = pad_stack(captions)
    context_mask = torch.arange(context.shape[1])[None] < lengths[:, None]
    if bool(context_mask.all()):
        context_mask = None

    loss_weight = torch.ones(x0.shape[0], 1, *x0.shape[2:])
    refs = None
    n_max = max(len(v) for v in variants)
    if n_max:
        b = len(items)
        c, h, w = x0.shape[1], x0.shape[3], x0.shape[4]
        latents = torch.zeros(b, n_max, c, h, w)
        lt = max(it["tags"].shape[1] for it in items if "tags" in it)
        text_dim = next(it["tags"].shape[-1] for it in items if "tags" in it)
        tags = torch.zeros(b, n_max, lt, text_dim)
        tag_lengths = torch.zeros(b, n_max, dtype=torch.long)
        intervals = torch.zeros(b, n_max, 2)
        intervals[..., 1] = 1.0
        present = torch.zeros(b, n_max, dtype=torch.bool)
        drop = torch.zeros(b, n_max, dtype=torch.bool)
        for i, (it, var) in enumerate(zip(items, variants)):
            for j, v in enumerate(var):
                latents[i, j] = latent_format.normalize(it["refs"][j, v].float()[:, None], 0)[:, 0]
                if not drops_words[i]:
                    tags[i, j, : it["tags"].shape[1]] = it["tags"][j].float()
                tag_lengths[i, j] = it["tag_lengths"][j]
                start, end = it["intervals"][j].tolist()
                intervals[i, j] = torch.tensor(interval_to_latent(start, end, it["fps"], it["num_frames"],
                                                                  min_half_length, name=f"clip entity {j}"))
                present[i, j] = True
                drop[i, j] = drops_refs[i][j]
                if cfg.subject_loss_weight:
                    loss_weight[i, 0] += cfg.subject_loss_weight * it["masks"][j].float()
        refs = References(latents, tags, intervals, tag_lengths, present).dropped(drop)

    dense = None
    if dense_captions:
        dense = dense_batch(items, drops_caption)
    sigma = torch.tensor(sigmas)
    return Batch(x0, torch.stack(noises), sigma, context, context_mask, refs, dense, loss_weight, signal)


def dense_batch(items: list[dict], dropped: list[bool]) -> DenseCaptions:
    """Timed captions padded across the batch; samples without any get one event outside the clip (no effect)."""
    n_ev = max(1, max((it["timed"].shape[0] for it in items if "timed" in it), default=1))
    lc = max((it["timed"].shape[1] for it in items if "timed" in it), default=1)
    dim = next((it["timed"].shape[-1] for it in items if "timed" in it), items[0]["caption"].shape[-1])
    ctx = torch.zeros(len(items), n_ev, lc, dim)
    spans = torch.full((len(items), n_ev, 2), -2.0)
    spans[..., 1] = -1.0
    lengths = torch.ones(len(items), n_ev, dtype=torch.long)
    for i, it in enumerate(items):
        if "timed" not in it or dropped[i]:
            continue
        e = it["timed"].shape[0]
        scale = it["fps"] / 4  # seconds -> latent frames
        ctx[i, :e, : it["timed"].shape[1]] = it["timed"].float()
        spans[i, :e] = it["timed_spans"].float() * scale
        lengths[i, :e] = it["timed_lengths"]
    return DenseCaptions(ctx, spans, lengths)
