"""S2VTime scoring: the timing arithmetic against hand-computed cases, bootstrap intervals, masked crops, CLIP-T and
CLIP-I through a tiny random-weight CLIP built from its config, and tracks by the paper's protocol."""
import math

import numpy as np
import pytest

from alchemint_core.data.curate.backends.demo import DemoBackend
from alchemint_core.demo.data import example_video
from alchemint_core.scoring import score_subject, summarise, table, track_for_scoring
from alchemint_core.scoring.identity import clip_i, clip_t, masked_crop
from alchemint_core.scoring.statistics import bootstrap_ci
from alchemint_core.scoring.subjects import frame_span, protocol_track
from alchemint_core.scoring.timing import predicted_interval, t_iou, t_l2


def test_timing_arithmetic_by_hand():
    # requested 1..3 s, predicted 2..4 s: overlap 1 s of a 3 s union; start and end both 1 s off in a 4 s clip
    assert t_iou((2.0, 4.0), (1.0, 3.0)) == pytest.approx(1 / 3)
    assert t_l2((2.0, 4.0), (1.0, 3.0), 4.0) == pytest.approx(math.hypot(0.25, 0.25) / math.sqrt(2))
    assert t_iou(None, (1.0, 3.0)) == 0.0 and t_l2(None, (1.0, 3.0), 4.0) == 1.0
    assert t_iou((0.0, 1.0), (2.0, 3.0)) == 0.0 and t_iou((1.0, 3.0), (1.0, 3.0)) == 1.0
    present = np.array([0, 0, 1, 1, 0, 1, 0, 0], bool)  # frames 2..5 at 4 fps: 0.5 s to the end of frame 5, 1.5 s
    assert predicted_interval(present, 4.0) == (0.5, 1.5)
    assert frame_span((0.5, 1.5), 4.0, 8) == (2, 5) and frame_span((1.9, 9.0), 4.0, 8) == (7, 7)


def test_a_subject_is_scored_from_its_mask_track():
    masks = np.zeros((8, 10, 10), np.float32)
    masks[2:6, 3:6, 3:6] = 1.0  # present in frames 2..5: 9 of 100 pixels, above the 0.2% area threshold
    masks[7, 0, 0] = 1.0  # one pixel: 1% of the frame, present too
    row = score_subject("v1", "red ring", (0.5, 1.5), masks, 4.0)
    assert row.predicted == (0.5, 2.0) and row.t_iou == pytest.approx(1.0 / 1.5)
    assert row.t_l2 == pytest.approx(math.hypot(0, 0.5 / 2.0) / math.sqrt(2))
    assert row.clip_t is None and row.clip_i is None
    assert score_subject("v1", "x", (0.0, 1.0), np.zeros((8, 10, 10)), 4.0).predicted is None


def test_bootstrap_intervals_are_seeded_contain_the_mean_and_skip_missing_values():
    values = [0.1, 0.9, 0.5, 0.7, 0.3, None, math.nan]
    mean, lo, hi = bootstrap_ci(values)
    assert mean == pytest.approx(0.5) and lo < mean < hi and (lo, hi) == bootstrap_ci(values)[1:]
    assert bootstrap_ci([0.4]) == (0.4, 0.4, 0.4) and all(math.isnan(v) for v in bootstrap_ci([None]))
    wide, narrow = bootstrap_ci([0.0, 1.0] * 5), bootstrap_ci([0.0, 1.0] * 50)
    assert narrow[2] - narrow[1] < wide[2] - wide[1]


def test_masked_crop_keeps_the_subject_on_grey():
    frame = np.full((20, 30, 3), 200, np.uint8)
    mask = np.zeros((20, 30), bool)
    mask[5:15, 10:20] = True
    crop = masked_crop(frame, mask)
    assert crop.shape == (12, 12, 3)  # the 10x10 box widened by a pixel on each side
    assert (crop[1:-1, 1:-1] == 200).all() and (crop[0] == 127).all()


def test_tracks_by_the_papers_protocol_find_the_subject_over_the_whole_video():
    video = example_video("alchemint_demo_clip_1.mp4")
    for tag, truth in video.masks.items():
        present = np.flatnonzero(truth.any(axis=(1, 2)))
        requested = (present[0] / 8.0, (present[-1] + 1) / 8.0)
        for track in (protocol_track(DemoBackend(), video.frames, tag, requested, 8.0),  # detect, pick, track
                      track_for_scoring(DemoBackend(), video.frames, tag, requested, 8.0)):  # the demo's own
            row = score_subject("clip_1", tag, requested, track, 8.0)
            assert row.t_iou == 1.0 and row.t_l2 == 0.0
    assert not protocol_track(DemoBackend(), video.frames, "blue disc", (0.0, 1.0), 8.0).any()
    assert not track_for_scoring(DemoBackend(), video.frames, "blue disc", (0.0, 1.0), 8.0).any()


def test_clip_scores_through_a_tiny_clip_from_its_config(tmp_path):
    pytest.importorskip("transformers")
    from tiny_models import save_clip

    from alchemint_core.scoring.identity import ClipEmbedder
    save_clip(tmp_path / "clip")
    embedder = ClipEmbedder.from_folder(tmp_path / "clip", device="cpu")
    video = example_video("alchemint_demo_clip_1.mp4")
    masks = video.masks["red ring"]
    reference = masked_crop(video.frames[2], masks[2])
    row = score_subject("clip_1", "red ring", (0.0, 1.25), masks, 8.0, video.frames, reference, embedder)
    crops = [masked_crop(video.frames[f], masks[f]) for f in range(10)]
    # the same numbers by hand: mean over present frames of the cosine of unit vectors
    images, text, ref = embedder.images(crops), embedder.texts(["red ring"])[0], embedder.images([reference])[0]
    assert row.clip_t == pytest.approx(float((images @ text).mean()), abs=1e-6)
    assert row.clip_i == pytest.approx(float((images @ ref).mean()), abs=1e-6)
    assert np.allclose(images.norm(dim=-1), 1, atol=1e-5) and -1 <= row.clip_t <= 1
    assert clip_i(embedder, [reference], reference) == pytest.approx(1.0, abs=1e-5)
    assert clip_t(embedder, [], "red ring") is None
    rows = {"model": [row, score_subject("clip_1", "yellow star", (0.75, 2.125), video.masks["yellow star"], 8.0)]}
    summary = summarise(rows["model"])
    assert summary["clip_t"][0] == pytest.approx(row.clip_t)  # the subject without a CLIP score is left out
    assert summary["t_iou"][0] == pytest.approx(1.0)
    assert table(rows).splitlines()[2].startswith("| model | 1.000 (1.000–1.000) | 0.000")


def test_a_folder_that_is_not_clip_is_one_line(tmp_path):
    pytest.importorskip("transformers")
    from alchemint_core.data.dataset import DatasetError
    from alchemint_core.scoring.identity import ClipEmbedder
    with pytest.raises(DatasetError, match="no readable config.json"):
        ClipEmbedder.from_folder(tmp_path)
    (tmp_path / "config.json").write_text('{"model_type": "bert"}')
    with pytest.raises(DatasetError, match="a 'bert' model, not CLIP"):
        ClipEmbedder.from_folder(tmp_path)
