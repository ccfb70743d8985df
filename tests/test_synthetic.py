"""The synthetic data the demo is trained and measured on: exact ground truth, held-out appearances."""
import numpy as np
import pytest

from alchemint_core.scoring.timing import mean_ci, predicted_interval, t_iou, t_l2
from alchemint_core.synthetic import COLOURS, HELD_OUT, SHAPES, Appearance, appearances, random_video


def test_videos_are_seeded():
    a = random_video(np.random.default_rng(4))
    b = random_video(np.random.default_rng(4))
    c = random_video(np.random.default_rng(5))
    assert np.array_equal(a.frames, b.frames) and not np.array_equal(a.frames, c.frames)


@pytest.mark.parametrize("seed", range(6))
def test_subjects_are_present_only_inside_their_interval_and_move(seed):
    v = random_video(np.random.default_rng(seed))
    assert 1 <= len(v.subjects) <= 3 and v.frames.shape == (17, 64, 64, 3)
    for s in v.subjects:
        m = v.masks[s.appearance.tag]
        shown = np.flatnonzero(m.reshape(17, -1).any(1))
        assert not m[: s.first].any() and not m[s.last + 1:].any()
        assert s.appearance.tag in v.caption
        colour = np.array(COLOURS[s.appearance.colour])
        pix = v.frames[m].astype(int)
        # pixels under the mask are the subject's colour (or its darker stripe)
        close = (np.abs(pix - colour).max(1) < 40) | (np.abs(pix - colour * 0.6).max(1) < 40)
        assert close.mean() > 0.85
        if len(shown) > 3:
            centres = np.array([np.argwhere(m[f]).mean(0) for f in shown])
            assert np.ptp(centres, axis=0).max() > 1.5  # it moves while present


def test_held_out_appearances_never_appear_in_training():
    train, test = appearances("train"), appearances("test")
    assert not any(a.held_out for a in train) and all(a.held_out for a in test)
    assert {a.colour for a in test} == set(COLOURS) and {a.shape for a in test} == set(SHAPES)
    for seed in range(30):
        v = random_video(np.random.default_rng(seed), "train")
        assert not any((s.appearance.colour, s.appearance.shape) in HELD_OUT for s in v.subjects)
    assert Appearance("red", "star").held_out


def test_timing_metrics():
    assert predicted_interval(np.array([0, 0, 1, 1, 0, 1, 0]), 2.0) == (1.0, 3.0)
    assert predicted_interval(np.zeros(5, bool), 2.0) is None
    assert t_iou((1.0, 3.0), (1.0, 3.0)) == 1.0 and t_iou((0, 1), (2, 3)) == 0.0
    assert t_iou((0, 2), (1, 3)) == pytest.approx(1 / 3)
    assert t_l2((0, 2), (0, 2), 4) == 0.0 and t_l2(None, (0, 1), 4) == 1.0
    assert t_l2((0, 4), (4, 0), 4) == pytest.approx(1.0)
    m, lo, hi = mean_ci([0.5, 0.7, 0.6])
    assert lo < m < hi and m == pytest.approx(0.6)
