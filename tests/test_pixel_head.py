"""The convolutional pixel head for pixel latents: it draws the same stroke wherever it falls (shift-equivariant at
pixel precision, in the pixel VAE's channel layout), starts as a zero residual, and round-trips checkpoints."""
import dataclasses

import pytest
import torch
from einops import rearrange

import alchemint_core as ac
from alchemint_core.encoders import TinyVideoVAE
from alchemint_core.model.initialisation import add_conv_head
from alchemint_core.model.pixel_head import ConvPixelHead
from conftest import TINY, randomize, tiny_model

PIXEL = dataclasses.replace(TINY, in_dim=768, out_dim=768, patch_size=(1, 1, 1), prediction="x")


def random_head(width=32, dim=48, seed=0) -> ConvPixelHead:
    return randomize(ConvPixelHead(dim, 768, width), seed, scale=0.2).double()


def test_noisy_pixels_are_read_in_the_pixel_vaes_layout_one_pixel_shift_moves_the_output_one_pixel():
    """Shifting the video by one pixel (not a whole latent cell) shifts the head's drawing by one pixel: the head
    reads and writes the pixel VAE's space-to-depth layout, not some other order of the 768 channels."""
    vae = TinyVideoVAE(768, 0, frame_wise=True, scale=8, pixel=True).double()
    head = random_head()
    for p in [*head.proj.parameters(), *head.stages.parameters()]:  # no token information: the pixels alone
        torch.nn.init.zeros_(p)
    video = torch.rand(1, 3, 9, 32, 32, dtype=torch.float64) * 2 - 1
    features = torch.zeros(1, 3 * 4 * 4, 48, dtype=torch.float64)
    with torch.no_grad():
        drawn = vae.decode(head(features, (3, 4, 4), vae.encode(video)))
        shifted = vae.decode(head(features, (3, 4, 4), vae.encode(video.roll(1, dims=-1))))
    inner = (..., slice(4, -4), slice(4, -4))  # away from the zero padding at the borders
    torch.testing.assert_close(shifted[inner], drawn.roll(1, dims=-1)[inner])
    assert drawn[inner].abs().mean() > 1e-3


def test_token_features_are_decoded_by_shared_weights_a_token_shift_moves_the_output_one_cell():
    head = random_head(seed=1)
    features = torch.randn(1, 2 * 10 * 10, 48, dtype=torch.float64)
    x = torch.zeros(1, 768, 2, 10, 10, dtype=torch.float64)
    grid = lambda f: rearrange(f, "b (f h w) d -> b f h w d", f=2, h=10)  # noqa: E731
    flat = lambda g: rearrange(g, "b f h w d -> b (f h w) d")  # noqa: E731
    with torch.no_grad():
        out = head(features, (2, 10, 10), x)
        moved = head(flat(grid(features).roll(1, dims=3)), (2, 10, 10), x)
    inner = (..., slice(3, -3), slice(3, -3))  # cells whose reach (about a cell) stays clear of the borders
    torch.testing.assert_close(moved[inner], out.roll(1, dims=-1)[inner])
    assert out.abs().mean() > 1e-3


def test_a_grown_conv_head_starts_as_the_model_it_was_added_to_and_round_trips(tmp_path):
    model = tiny_model(seed=2, cfg=PIXEL)
    x, ctx = torch.randn(1, 768, 2, 3, 3), torch.randn(1, 4, TINY.text_dim)
    t = torch.tensor([600.0])
    with torch.no_grad():
        before = model(x, t, ctx)
        add_conv_head(model, 32)
        torch.testing.assert_close(model(x, t, ctx), before)
    assert model.cfg.conv_head == 32
    randomize(model.conv_head, 3)
    with torch.no_grad():
        grown = model(x, t, ctx)
    assert (grown - before).abs().max() > 1e-4
    path = ac.save_model(model, tmp_path / "m.safetensors")
    loaded = ac.load_model(path, device="cpu", compute_dtype=torch.float32)
    assert loaded.cfg.conv_head == 32
    with torch.no_grad():
        torch.testing.assert_close(loaded(x, t, ctx), grown)


@pytest.mark.parametrize("cfg,match", [(dataclasses.replace(TINY, conv_head=32), "needs .* pixel latents"),
                                       (dataclasses.replace(PIXEL, conv_head=8), "width >= 16"),
                                       (dataclasses.replace(PIXEL, patch_size=(1, 2, 2), conv_head=32),
                                        r"at patch \[1, 1, 1\]")])
def test_a_conv_head_on_the_wrong_model_is_explained(cfg, match):
    with pytest.raises(ac.CheckpointError, match=match):
        cfg.validate()
