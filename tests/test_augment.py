"""Reference augmentation: seeded, geometry shared by image and mask, uncovered area neutral grey."""
import numpy as np
import pytest
import torch

from alchemint_core.data.augment import GREY, ReferenceAugment
from alchemint_core.data.dataset import DatasetError, crop_reference

NONE = dict(p_blur=0, p_zoom=0, p_rotate=0, p_flip=0, p_jitter=0, p_position=0)
RED = torch.tensor([0.9, 0.1, 0.1])


def references(b=4, h=32, w=32) -> tuple[torch.Tensor, torch.Tensor]:
    """An asymmetric red L on grey, as crop_reference makes them, with its mask."""
    mask = torch.zeros(b, 1, h, w)
    mask[..., 8:24, 8:13] = 1
    mask[..., 19:24, 8:22] = 1
    images = torch.where(mask.bool(), RED[:, None, None], torch.tensor(GREY))
    return images, mask


def red(images: torch.Tensor) -> torch.Tensor:
    return (images[:, 0] > 0.6) & (images[:, 1] < 0.35)


def test_same_seed_same_output_other_seed_other_output():
    images, masks = references()
    a = ReferenceAugment()(images, masks, seed=3)
    b = ReferenceAugment()(images, masks, seed=3)  # another call, another object
    c = ReferenceAugment()(images, masks, seed=4)
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])
    assert not torch.equal(a[0], c[0])
    assert not torch.equal(a[0][0], a[0][1])  # each image of the batch draws its own parameters


def test_the_global_rng_is_left_alone():
    state = torch.random.get_rng_state()
    ReferenceAugment()(*references(), seed=0)
    assert torch.equal(state, torch.random.get_rng_state())


def test_flip_actually_flips_image_and_mask():
    images, masks = references(1)
    out, out_masks = ReferenceAugment(**{**NONE, "p_flip": 1.0})(images, masks, seed=0)
    assert not torch.equal(images, images.flip(-1))
    torch.testing.assert_close(out, images.flip(-1), atol=1e-5, rtol=0)
    assert torch.equal(out_masks, masks.flip(-1))


def test_nothing_enabled_is_the_identity():
    images, masks = references()
    out, out_masks = ReferenceAugment(**NONE)(images, masks, seed=5)
    torch.testing.assert_close(out, images, atol=1e-5, rtol=0)
    assert torch.equal(out_masks, masks)


def test_uncovered_area_is_neutral_grey_not_black():
    images = torch.rand(2, 3, 32, 32, generator=torch.Generator().manual_seed(0)) * 0.3 + 0.7  # bright everywhere
    masks = torch.ones(2, 1, 32, 32)
    out, out_masks = ReferenceAugment(**{**NONE, "p_zoom": 1.0, "zoom": (0.5, 0.5)})(images, masks, seed=0)
    border = torch.ones(32, 32, dtype=torch.bool)
    border[6:26, 6:26] = False  # the zoomed-out image covers the middle 16x16 (plus antialiased edge)
    torch.testing.assert_close(out[:, :, border], torch.full_like(out[:, :, border], GREY))
    assert not out_masks[:, :, border].any() and out_masks[:, :, 10:22, 10:22].all()
    rotated, _ = ReferenceAugment(**{**NONE, "p_rotate": 1.0, "degrees": 45})(images, masks, seed=1)
    assert (rotated[:, :, 0, 0] - GREY).abs().max() < 1e-4  # a rotation uncovers the corners


def test_mask_follows_the_image_geometry():
    images, masks = references(8)
    aug = ReferenceAugment(**{**NONE, "p_flip": 0.5, "p_rotate": 1.0, "degrees": 40, "p_zoom": 1.0,
                              "zoom": (0.6, 1.1), "p_position": 1.0, "position": 0.3})
    out, out_masks = aug(images, masks, seed=11)
    assert not torch.equal(out_masks, masks)
    for colour, mask in zip(red(out), out_masks[:, 0].bool()):
        iou = (colour & mask).sum() / (colour | mask).sum()
        assert iou > 0.85, float(iou)


def test_random_position_moves_the_object_and_keeps_it_inside():
    small_masks = torch.zeros(16, 1, 32, 32)
    small_masks[..., 2:8, 2:8] = 1  # in a corner: most shifts up to 40 % of the canvas would push it out
    small_images = torch.where(small_masks.bool(), RED[:, None, None], torch.tensor(GREY))
    out, out_masks = ReferenceAugment(**{**NONE, "p_position": 1.0, "position": 0.4})(small_images, small_masks, 2)
    centres = torch.stack([out_masks[:, 0].sum(1).argmax(1), out_masks[:, 0].sum(2).argmax(1)], 1)
    assert len(set(map(tuple, centres.tolist()))) > 8  # moved to many places
    # A shift (bilinear) keeps the object's total redness unless the border cuts some of it off.
    redness = (out[:, 0] - GREY).sum((1, 2))
    torch.testing.assert_close(redness, torch.full((16,), 36 * (0.9 - GREY)), atol=1e-3, rtol=0)


def test_colour_jitter_changes_the_object_only():
    images, masks = references(6)
    out, _ = ReferenceAugment(**{**NONE, "p_jitter": 1.0, "hue": 0.1})(images, masks, seed=0)
    background = ~masks.bool().expand_as(images)
    torch.testing.assert_close(out[background], images[background], atol=1e-5, rtol=0)  # still neutral grey
    changed = (out - images).abs().amax(1)[masks[:, 0].bool()]
    assert (changed > 0.01).float().mean() > 0.9


def test_blur_softens_edges():
    images, masks = references(2)
    out, out_masks = ReferenceAugment(**{**NONE, "p_blur": 1.0, "blur_sigma": (1.0, 1.0)})(images, masks, seed=0)
    step = (images[..., 1:] - images[..., :-1]).abs().amax()
    assert (out[..., 1:] - out[..., :-1]).abs().amax() < 0.6 * step
    assert torch.equal(out_masks, masks)  # blur is photometric: the mask keeps its shape


def test_augment_uint8_on_dataset_crops():
    frame = np.full((40, 60, 3), (30, 160, 40), np.uint8)
    mask = np.zeros((40, 60), bool)
    mask[10:30, 20:28] = True
    frame[mask] = (220, 30, 30)
    crop, crop_mask = crop_reference(frame, mask, (32, 32))
    images, masks = ReferenceAugment().augment_uint8([crop] * 3, [crop_mask] * 3, seed=7)
    assert images.shape == (3, 3, 32, 32) and images.dtype == torch.float32 and masks.shape == (3, 1, 32, 32)
    assert 0 <= images.min() and images.max() <= 1 and set(masks.unique().tolist()) <= {0.0, 1.0}
    assert not torch.equal(images[0], images[1])  # variants of one reference differ
    plain, plain_masks = ReferenceAugment(**NONE).augment_uint8([crop], [crop_mask], seed=7)
    torch.testing.assert_close(plain[0].permute(1, 2, 0) * 255, torch.tensor(crop).float(), atol=1e-3, rtol=0)
    assert torch.equal(plain_masks[0, 0].bool(), torch.from_numpy(crop_mask))


def test_bad_input_is_refused():
    with pytest.raises(DatasetError, match="p_flip=1.5"):
        ReferenceAugment(p_flip=1.5)
    with pytest.raises(DatasetError, match="zoom"):
        ReferenceAugment(zoom=(1.2, 0.8))
    images, masks = references(2)
    with pytest.raises(DatasetError, match="must be \\[B, 1, H, W\\]"):
        ReferenceAugment()(images, masks[:1], seed=0)
    with pytest.raises(DatasetError, match="as many masks as images"):
        ReferenceAugment().augment_uint8([np.zeros((8, 8, 3), np.uint8)], [], seed=0)
