"""A small real dataset on disk, its cache and training configs, shared by the training tests."""
from pathlib import Path

import numpy as np
import torch

from alchemint_core.data.cache import CacheConfig, build_cache
from alchemint_core.data.dataset import write_sample
from alchemint_core.encoders import TinyTextEncoder, TinyVideoVAE

COLOURS = {"red": (220, 40, 40), "blue": (40, 80, 220), "green": (40, 180, 60), "yellow": (230, 210, 40)}
SHAPES = ("square", "disc")
TINY_MODEL = {"dim": 64, "ffn_dim": 128, "num_heads": 2, "num_layers": 2, "in_dim": 4, "out_dim": 4,
              "text_dim": 32, "freq_dim": 32, "rope_time_theta": 20.0}


def draw(shape: str, size: int, h: int, w: int, cy: int, cx: int) -> np.ndarray:
    yy, xx = np.mgrid[:h, :w]
    if shape == "square":
        return (abs(yy - cy) <= size // 2) & (abs(xx - cx) <= size // 2)
    return (yy - cy) ** 2 + (xx - cx) ** 2 <= (size // 2) ** 2


def write_dataset(root: Path, n: int = 4, frames: int = 13, size: int = 32, seed: int = 0) -> Path:
    """n samples of `frames` frames: one or two coloured shapes, each present over a random interval, moving."""
    rng = np.random.default_rng(seed)
    for i in range(n):
        video = np.full((frames, size, size, 3), 90, np.uint8) + rng.integers(0, 30, (1, 1, 1, 3), dtype=np.uint8)
        entities, names = {}, []
        for j in range(1 + i % 2):
            colour = list(COLOURS)[(i + j) % len(COLOURS)]
            shape = SHAPES[(i + 2 * j) % 2]
            start = int(rng.integers(0, frames // 2))
            end = int(rng.integers(start + 2, frames))
            masks = np.zeros((frames, size, size), bool)
            for f in range(start, end + 1):
                m = draw(shape, 10, size, size, 10 + j * 12, 6 + (f * 2) % (size - 12))
                masks[f] = m
                video[f][m] = COLOURS[colour]
            tag = f"{colour} {shape}"
            entities[tag] = masks
            names.append(tag)
        write_sample(root / f"clip_{i:03d}", video, 8.0, " and ".join(f"a {t}" for t in names) + " on grey", entities)
    return root


def encoders(seed: int = 0):
    torch.manual_seed(seed)
    vocab = [w for c in COLOURS for w in (c,)] + list(SHAPES) + ["a", "and", "on", "grey"]
    return TinyVideoVAE(latent_channels=4, width=16).eval(), TinyTextEncoder(vocab, dim=32, layers=1, heads=2).eval()


def make_cache(tmp: Path, n: int = 4, variants: int = 2) -> Path:
    data = write_dataset(tmp / "data", n=n)
    vae, text = encoders()
    build_cache(data, tmp / "cache", vae, text, CacheConfig(num_frames=9, ref_variants=variants), encoder_id="test")
    return tmp / "cache"


def train_config(cache: Path, out: Path, **kw) -> dict:
    cfg = {"cache": str(cache), "out": str(out), "model": TINY_MODEL, "mode": "full",
           "adapter": {"max_refs": 4}, "steps": 6, "batch_size": 2, "lr_new": 1e-3, "lr_base": 1e-3,
           "warmup_steps": 2, "checkpoint_every": 2, "log_every": 1, "seed": 3}
    cfg.update(kw)
    return cfg
