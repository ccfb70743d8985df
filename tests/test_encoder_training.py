"""Training of the demo VAE: the subject weighting marks the right pixels, the latent anchor keeps latents near the
VAE it starts from, and the options are refused where they cannot apply."""
import numpy as np
import pytest
import torch

from alchemint_core.cli import main
from alchemint_core.demo.encoder_training import train_vae, video_batch
from alchemint_core.encoders import TinyVideoVAE, latent_frame_count
from alchemint_core.synthetic import random_video


def test_subject_region_covers_a_latent_frames_whole_group():
    x, where = video_batch(np.random.default_rng(3), 3, 9, 32)
    assert x.shape == (3, 3, 9, 32, 32) and where.shape == (3, 1, 9, 32, 32)
    assert set(where.unique().tolist()) <= {0.0, 1.0} and where.any()
    # within a group of 4 frames (latent frames 1, 2) the region is the same in every frame; frame 0 is alone
    for t in range(1, latent_frame_count(9)):
        group = where[:, :, 4 * t - 3:4 * t + 1]
        assert torch.equal(group, group[:, :, :1].expand_as(group))
    # the region is the union of the subjects' masks over the group (the same seed renders the same videos)
    rng = np.random.default_rng(3)
    for i, v in enumerate(random_video(rng, "train", 9, 32, 32) for _ in range(3)):
        anywhere = torch.from_numpy(np.any(list(v.masks.values()), axis=0))  # [9, 32, 32]
        assert torch.equal(where[i, 0, 0].bool(), anywhere[0])
        for t in range(1, 3):
            assert torch.equal(where[i, 0, 4 * t].bool(), anywhere[4 * t - 3:4 * t + 1].any(0))


def _latent_distance(vae: TinyVideoVAE, init: TinyVideoVAE, x: torch.Tensor) -> float:
    with torch.no_grad():
        return ((vae.encode(x) - init.encode(x)) / init.stats[1].view(-1, 1, 1, 1)).pow(2).mean().item()


def test_latent_anchor_keeps_latents_near_the_initial_vae():
    torch.manual_seed(0)
    init = TinyVideoVAE(latent_channels=4, width=16).eval()
    x, _ = video_batch(np.random.default_rng(9), 2, 5, 32)
    kw = dict(steps=30, batch=2, frames=5, size=32, latent_channels=4, width=16, lr=3e-3, log=lambda s: None,
              init=init, subject_weight=4.0)
    free = _latent_distance(train_vae(latent_anchor=0.0, **kw), init, x)
    anchored = _latent_distance(train_vae(latent_anchor=50.0, **kw), init, x)
    assert anchored < 0.5 * free, (anchored, free)


def test_latent_anchor_needs_an_initial_vae(tmp_path, capsys):
    with pytest.raises(ValueError, match="init"):
        train_vae(steps=1, latent_anchor=1.0)
    out = tmp_path / "encoders.safetensors"
    assert main(["train-encoders", "--out", str(out), "--latent-anchor", "1"]) == 2
    assert "--init ENCODERS" in capsys.readouterr().err and not out.exists()
