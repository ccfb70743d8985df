"""The latent-space probe: a small CNN per noise level reads a single subject's shape from one frame's code."""
import json

import numpy as np
import pytest
import torch

from alchemint_core.demo.probe import frame_codes, probe_accuracy, single_subject_frames
from alchemint_core.encoders import TinyVideoVAE
from alchemint_core.synthetic import SHAPES


@pytest.fixture(scope="module")
def frames():
    rng = np.random.default_rng(5)
    return single_subject_frames(rng, 1200), single_subject_frames(rng, 300)


def pixel_vae(frames) -> TinyVideoVAE:
    vae = TinyVideoVAE(768, 0, frame_wise=True, scale=8, pixel=True).eval()
    video = torch.from_numpy(frames[0][0][:17]).float().div(127.5).sub(1)[None].permute(0, 4, 1, 2, 3)
    vae.set_statistics(vae.encode(video))
    return vae


def test_probe_frames_show_one_subject_of_every_shape():
    (f, y), _ = single_subject_frames(np.random.default_rng(0), 120), None
    assert f.shape == (120, 64, 64, 3) and f.dtype == np.uint8
    assert set(y.tolist()) == set(range(len(SHAPES)))
    grey = np.abs(f.astype(int) - f[:, :1, :1].astype(int)).sum(-1) > 60  # pixels far from the corner's background
    assert (grey.mean(axis=(1, 2)) > 0.03).all()  # a subject of 30-40% of the frame's side in every frame


def test_probe_reads_shape_from_clean_pixels_and_chance_from_pure_noise(frames):
    """Raw pixels rearranged space-to-depth keep a shape: read well at sigma 0, at chance when only noise is left."""
    vae = pixel_vae(frames)
    (f, y), (ft, yt) = frames
    z, zt = frame_codes(vae, f), frame_codes(vae, ft)
    assert z.shape == (1200, 192, 8, 8)
    train, test = (z, torch.from_numpy(y)), (zt, torch.from_numpy(yt))
    clean = probe_accuracy(train, test, 0.0, steps=150)
    noise = probe_accuracy(train, test, 1.0, steps=150)
    print(f"probe on pixels: {clean:.1%} clean, {noise:.1%} from pure noise")
    assert clean > 0.45 and noise < 0.3  # chance is 1/6; the real probe (4000 frames, 600 steps) reads more


def test_probe_command_writes_the_table_with_ceilings(tmp_path, capsys):
    from alchemint_core import cli
    from alchemint_core.demo.pipeline import ENCODERS_FILE
    out = tmp_path / "probe.json"
    assert cli.main(["probe", "--encoders", f"shipped={ENCODERS_FILE}", "--frames", "80", "--steps", "5",
                     "--prompts", "3", "--threads", "1", "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "| shipped | 32 x 8 x 8 per latent frame |" in printed
    row = json.loads(out.read_text())["results"][0]
    assert set(row["probe"]) == {"0.0", "0.5", "0.7", "0.85"}
    assert row["ceiling"]["t_iou"] > 0.9 and 0 <= row["ceiling"]["shape"] <= 1
