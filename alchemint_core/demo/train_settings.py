"""The shipped demo model's training config, fitted to a cache: the one place that decides what a new demo-size
model is (the Trainer node's "new demo-size model" and the bench's demo-training figure)."""
from __future__ import annotations

from pathlib import Path

from ..model.latents import read_latent_format
from ..training.config import read_config_file

DEMO_CONFIG = Path(__file__).parent / "configs" / "framewise-werope.toml"


def demo_config_for(cache: str | Path) -> dict:
    """DEMO_CONFIG's values with `cache` set and the model's latent channels those of the VAE the cache was made
    with, so a cache of any demo VAE trains without editing the config."""
    cfg = read_config_file(DEMO_CONFIG)
    channels = len(read_latent_format(Path(cache)).mean)
    cfg["model"] = {**cfg["model"], "in_dim": channels, "out_dim": channels}
    cfg["cache"] = str(cache)
    return cfg
