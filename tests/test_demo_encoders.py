"""The demo VAE's latent layout: Wan's geometry, and in the frame-wise layout each pixel frame in its own channels."""
import json

import pytest
import torch

from alchemint_core.model.config import CheckpointError
from alchemint_core.encoders import TinyTextEncoder, TinyVideoVAE, load_encoders, save_encoders
from alchemint_core.files import SafetensorsFile, save_safetensors


def video(frames=9, size=16, seed=0):
    return torch.rand(1, 3, frames, size, size, generator=torch.Generator().manual_seed(seed)) * 2 - 1


@pytest.mark.parametrize("frame_wise", [False, True])
def test_latents_have_wans_geometry_and_decode_to_the_input_shape(frame_wise):
    vae = TinyVideoVAE(8, 16, frame_wise=frame_wise).eval()
    x = video()
    z = vae.encode(x)
    assert z.shape == (1, 8, 3, 2, 2)  # (9-1)/4+1 latent frames, 8x smaller
    assert vae.decode(z).shape == x.shape


def test_frame_wise_latent_keeps_each_pixel_frame_in_its_own_channel_group():
    """Changing pixel frame 6 (latent frame 2 = frames 5..8, its second frame) changes only the second quarter of
    latent frame 2's channels; a joint encoder mixes it into all of them."""
    x = video()
    y = x.clone()
    y[:, :, 6] = -y[:, :, 6]
    fw = TinyVideoVAE(8, 16, frame_wise=True).eval()
    diff = (fw.encode(x) - fw.encode(y)).abs().amax(dim=(0, 3, 4))  # [C, T]
    changed = diff > 1e-6
    assert changed[2:4, 2].all() and changed.sum() == changed[2:4, 2].sum()
    joint = TinyVideoVAE(8, 16).eval()
    jdiff = (joint.encode(x) - joint.encode(y)).abs().amax(dim=(0, 3, 4))
    assert (jdiff[:, 2] > 1e-6).all()


def test_frame_wise_decoder_draws_each_pixel_frame_from_its_own_channel_group():
    """Changing the second quarter of latent frame 2 changes pixel frame 6 only; in the joint layout, frames 5..8."""
    for frame_wise, frames in ((True, [6]), (False, [5, 6, 7, 8])):
        vae = TinyVideoVAE(8, 16, frame_wise=frame_wise).eval()
        z = vae.encode(video())
        z2 = z.clone()
        z2[:, 2:4, 2] += 1
        changed = (vae.decode(z) - vae.decode(z2)).abs().amax(dim=(0, 1, 3, 4)) > 1e-6
        assert torch.nonzero(changed).flatten().tolist() == frames


def test_frame_wise_latent_frame_is_the_codes_of_its_four_pixel_frames_in_order():
    """Latent frame 0 = frame 0's code four times (causal first frame); latent frame f = codes of frames 4f-3..4f."""
    vae = TinyVideoVAE(8, 16, frame_wise=True).eval()
    x = video()
    z = vae.encode(x)
    code = lambda n: vae.enc(x[:, :, n])  # noqa: E731  [1, 2, 2, 2]: one pixel frame's code
    for f in range(3):
        frames = [0] * 4 if f == 0 else range(4 * f - 3, 4 * f + 1)
        expect = torch.cat([code(n) for n in frames], dim=1)
        assert torch.allclose(z[:, :, f], expect, atol=1e-6)


def test_frame_wise_needs_channels_divisible_by_four():
    with pytest.raises(ValueError, match="divisible by 4"):
        TinyVideoVAE(6, 16, frame_wise=True)


@pytest.mark.parametrize("frame_wise", [False, True])
def test_encoders_file_keeps_the_layout(tmp_path, frame_wise):
    vae = TinyVideoVAE(8, 16, frame_wise=frame_wise).eval()
    text = TinyTextEncoder(["red", "ring"], dim=32, layers=1, heads=2)
    path = save_encoders(vae, text, tmp_path / "enc.safetensors")
    vae2, _ = load_encoders(path)
    assert vae2.frame_wise is frame_wise
    x = video()
    assert torch.equal(vae.encode(x), vae2.encode(x))


def test_files_written_before_the_frame_wise_layout_load_as_joint(tmp_path):
    """Encoders files from before the option have no 'frame_wise' in their header: they are joint VAEs."""
    vae = TinyVideoVAE(8, 16).eval()
    text = TinyTextEncoder(["red"], dim=32, layers=1, heads=2)
    path = save_encoders(vae, text, tmp_path / "enc.safetensors")
    f = SafetensorsFile(path)
    meta = dict(f.metadata)
    cfg = json.loads(meta["vae"])
    del cfg["frame_wise"]
    meta["vae"] = json.dumps(cfg)
    old = save_safetensors({k: f.tensor(k) for k in f.keys()}, tmp_path / "old.safetensors", meta)
    assert load_encoders(old)[0].frame_wise is False
    cfg["frame_wise"] = True  # a header that lies about the layout: the weights do not fit
    meta["vae"] = json.dumps(cfg)
    bad = save_safetensors({k: f.tensor(k) for k in f.keys()}, tmp_path / "bad.safetensors", meta)
    with pytest.raises(CheckpointError, match="do not match their config"):
        load_encoders(bad)


def reconstruction_error(vae: TinyVideoVAE, seed: int = 7) -> float:
    import numpy as np

    from alchemint_core.demo.encoder_training import video_batch
    x = video_batch(np.random.default_rng(seed), 2, 9, 32)
    with torch.no_grad():
        return float((vae.eval().decode(vae.encode(x)) - x).abs().mean())


def test_train_encoders_trains_a_frame_wise_vae_beside_the_init_files_text_encoder(tmp_path):
    """The CLI with --init and another VAE architecture: a new frame-wise VAE is trained (its reconstruction of
    unseen videos improves on the untrained one) and the init file's text encoder is kept as it was."""
    from alchemint_core import cli
    from alchemint_core.demo.pipeline import ENCODERS_FILE
    out = tmp_path / "enc.safetensors"
    assert cli.main(["train-encoders", "--init", str(ENCODERS_FILE), "--frame-wise", "--vae-channels", "8",
                     "--vae-width", "16", "--vae-steps", "60", "--text-steps", "0", "--threads", "1",
                     "--out", str(out)]) == 0
    vae, text = load_encoders(out)
    assert vae.frame_wise and vae.latent_channels == 8 and vae.width == 16
    shipped_text = load_encoders(ENCODERS_FILE)[1]
    assert all(torch.equal(a, b) for a, b in zip(text.state_dict().values(), shipped_text.state_dict().values()))
    torch.manual_seed(0)
    assert reconstruction_error(vae) < 0.8 * reconstruction_error(TinyVideoVAE(8, 16, frame_wise=True))


def test_latent_noise_of_vae_training_is_checked_and_makes_the_decoder_tolerate_noise(tmp_path, capsys):
    """--latent-noise: a bad value is refused before any work, naming the option; a VAE trained with strong latent
    noise changes its output less when its latents are noised than the same VAE trained with none."""
    import numpy as np

    from alchemint_core import cli
    from alchemint_core.demo.encoder_training import train_vae, video_batch
    for bad in ("-0.1", "nan", "5"):
        out = tmp_path / "enc.safetensors"
        assert cli.main(["train-encoders", "--vae-steps", "1", "--text-steps", "0", "--latent-noise", bad,
                         "--out", str(out)]) == 2
        assert "--latent-noise" in capsys.readouterr().err and not out.exists()
    x = video_batch(np.random.default_rng(11), 2, 9, 32)

    def change_under_noise(vae):
        g = torch.Generator().manual_seed(0)
        with torch.no_grad():
            z = vae.encode(x)
            return float((vae.decode(z + z.std() * torch.randn(z.shape, generator=g)) - vae.decode(z)).abs().mean())

    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # the figures below were measured on one thread; later tests get their threads back
    try:
        quiet, loud = [train_vae(steps=300, seed=0, frames=5, size=32, latent_channels=8, width=16, frame_wise=True,
                                 latent_noise=n, log=str) for n in (0.0, 0.8)]
    finally:
        torch.set_num_threads(threads)
    assert change_under_noise(loud) < 0.8 * change_under_noise(quiet)  # measured 0.69x


def test_pixel_vae_is_space_to_depth_per_frame_and_decodes_exactly(tmp_path):
    """--pixel: no network; latent frame f holds frames 4f-3..4f, each frame's 8x8 blocks of pixels as channels;
    decoding gives the video back bit for bit, through the encoders file and ComfyUI's VAE interface too."""
    from alchemint_core import cli
    from alchemint_core.demo.pipeline import ENCODERS_FILE
    from alchemint_core.native import DemoVAE
    out = tmp_path / "pixel.safetensors"
    assert cli.main(["train-encoders", "--pixel", "--init", str(ENCODERS_FILE), "--text-steps", "0",
                     "--threads", "1", "--out", str(out)]) == 0
    vae, _ = load_encoders(out)
    assert vae.pixel and vae.frame_wise and vae.scale == 8 and vae.latent_channels == 768
    assert sum(p.numel() for p in vae.parameters()) == 0
    x = video(frames=9, size=16)
    z = vae.encode(x)
    assert z.shape == (1, 768, 3, 2, 2)
    # frame 6 is latent frame 2's second frame: channels 192..383; pixel (y, x) = (8 + 3, 5) is cell (1, 0)
    channel = 192 + 0 * 64 + 3 * 8 + 5  # colour 0, row 3, column 5 inside the cell
    assert z[0, channel, 2, 1, 0] == x[0, 0, 6, 11, 5]
    assert torch.equal(vae.decode(z), x)
    std = vae.stats[1]
    assert (std > 0.05).all() and std.shape == (768,)  # standardised per channel from real videos
    comfy = DemoVAE(vae)
    assert comfy.downscale_ratio == 8 and comfy.spacial_compression_decode() == 8
    frames = torch.rand(9, 16, 16, 3)
    back = comfy.decode(comfy.encode(frames))[0]
    torch.testing.assert_close(back, frames, atol=1e-6, rtol=0)


def test_four_times_vae_keeps_the_token_grid_with_a_patch_of_two(tmp_path):
    """--vae-scale 4: latents 4x smaller than the frames (twice the cells of the shipped 8x), saved and loaded with
    their scale; files written before the option load as 8x."""
    vae = TinyVideoVAE(16, 16, frame_wise=True, scale=4).eval()
    x = video(frames=9, size=32)
    assert vae.encode(x).shape == (1, 16, 3, 8, 8) and vae.decode(vae.encode(x)).shape == x.shape
    path = save_encoders(vae, TinyTextEncoder(["red"], dim=32, layers=1, heads=2), tmp_path / "enc.safetensors")
    again, _ = load_encoders(path)
    assert again.scale == 4 and torch.equal(again.encode(x), vae.encode(x))
    from alchemint_core.demo.pipeline import ENCODERS_FILE
    assert "scale" not in json.loads(SafetensorsFile(ENCODERS_FILE).metadata["vae"]) \
        and load_encoders(ENCODERS_FILE)[0].scale == 8
    with pytest.raises(ValueError, match="VAE scale 3 must be 2, 4 or 8"):
        TinyVideoVAE(16, 16, frame_wise=True, scale=3)
    with pytest.raises(ValueError, match="a pixel VAE is frame-wise with 4 x 3 x 4"):
        TinyVideoVAE(16, 0, frame_wise=True, scale=4, pixel=True)
