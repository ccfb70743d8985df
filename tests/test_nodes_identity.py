"""Evaluate Timing's identity scores without ComfyUI: CLIP-T and CLIP-I of the node equal `score_subject` called
directly with the same embedder (a tiny random-weight CLIP from its config, in the models folder like a user's), the
CLIP_VISION side through its adapter with crops batched, and one line for each bad input."""
import json
import math

import numpy as np
import pytest
import torch
from einops import rearrange

from alchemint_core.demo.data import FPS, example_video
from alchemint_core.scoring import score_subject, summarise
from alchemint_core.scoring.identity import ClipEmbedder, features, masked_crop
from alchemint_core.synthetic import render_reference
from nodes import bridge
from nodes.evaluation import ClipVisionEmbedder, EvaluateTiming
from nodes.models import SHIPPED, DemoModel
from nodes.references import MASK_MEANINGS, ReferenceLoader
from nodes.timeline import IntervalTimeline

pytest.importorskip("transformers")
from tiny_models import save_clip  # noqa: E402

VIDEO = "alchemint_demo_clip_1.mp4"  # red ring in frames 0..9, yellow star in 6..16


@pytest.fixture(scope="module")
def folders(tmp_path_factory):
    """ComfyUI-like models folder with a tiny CLIP in models/alchemint_curation/clip-tiny and a broken one."""
    root = tmp_path_factory.mktemp("comfy")
    curation = root / "models" / "alchemint_curation"
    save_clip(curation / "clip-tiny")
    (curation / "clip-broken").mkdir()
    (curation / "clip-broken" / "config.json").write_text("{not json")
    saved = dict(bridge.SEARCH_PATHS)
    bridge.SEARCH_PATHS["alchemint_curation"] = [curation]
    yield curation
    bridge.SEARCH_PATHS.clear()
    bridge.SEARCH_PATHS.update(saved)


@pytest.fixture(scope="module")
def scene(folders):
    """The example video, its frames as VAE Decode gives them, its mask tracks and the timeline (reference images
    through Reference Loaders) that asks for its true intervals."""
    video = example_video(VIDEO)
    _, vae, clip = DemoModel().load(SHIPPED)
    refs, bars = None, []
    for s in video.subjects:
        image, mask = render_reference(np.random.default_rng(len(bars)), s.appearance, 48, 48)
        refs, = ReferenceLoader().load(torch.from_numpy(image).float()[None] / 255,
                                       s.appearance.tag, vae, clip, torch.from_numpy(mask.astype(np.float32))[None],
                                       MASK_MEANINGS[1], refs)
        bars.append({"tag": s.appearance.tag, "start": s.first / FPS, "end": (s.last + 1) / FPS})
    timeline, = IntervalTimeline().build(refs, len(video.frames), FPS, json.dumps({"version": 1, "subjects": bars}))
    tracks = [torch.from_numpy(video.masks[s.appearance.tag].astype(np.float32)) for s in video.subjects]
    return video, torch.from_numpy(video.frames).float() / 255, tracks, timeline


class TransformersClipVision:
    """Stands in for ComfyUI's CLIP_VISION (its class needs ComfyUI: tests/test_against_comfyui.py runs the real
    one): encode_image(image [B, H, W, 3] in 0..1) -> an output with image_embeds, here from the tiny CLIP's vision
    tower. Records the batches it is given."""

    def __init__(self, embedder: ClipEmbedder):
        self.model, self.processor, self.batches = embedder.model, embedder.processor.image_processor, []
        self.image_size = self.processor.crop_size["height"]

    def encode_image(self, image, crop=True):
        self.batches.append(tuple(image.shape))
        assert image.shape[1:3] == (self.image_size, self.image_size), "crops must arrive at the model's size"
        mean, std = (torch.tensor(v).view(1, 3, 1, 1) for v in (self.processor.image_mean, self.processor.image_std))
        pixels = (rearrange(image, "b h w c -> b c h w") - mean) / std
        return {"image_embeds": features(self.model.get_image_features(pixel_values=pixels))}


def evaluate(scene, **inputs):
    video, images, tracks, timeline = scene
    connected = {"masks_2": tracks[1]} | inputs
    return EvaluateTiming().evaluate(timeline, tracks[0], 0.002, **connected)


def expected(scene, embedder, tracks=None):
    """score_subject called directly: the frames as uint8, each subject's reference masked by its mask."""
    video, _, node_tracks, timeline = scene
    return [score_subject("x", bar.tag, (bar.start, bar.end), (tracks or node_tracks)[i].numpy(), FPS, video.frames,
                          masked_crop(s.image, s.mask), embedder)
            for i, (bar, s) in enumerate(zip(timeline.bars, timeline.references.subjects))]


def test_clip_model_scores_equal_score_subject_and_the_report_carries_rows_and_intervals(scene, folders):
    assert EvaluateTiming.INPUT_TYPES()["optional"]["clip_model"][0] == ["none", "clip-broken", "clip-tiny"]
    timing = evaluate(scene)["result"]
    assert timing[:2] == (1.0, 0.0) and math.isnan(timing[3]) and math.isnan(timing[4])
    assert json.loads(timing[2])["clip_t"] is None and json.loads(timing[2])["subjects"][0]["clip_i"] is None
    out = evaluate(scene, images=scene[1], clip_model="clip-tiny")
    iou, l2, report, ct, ci = out["result"]
    rows = expected(scene, ClipEmbedder.from_folder(folders / "clip-tiny", device="cpu"))
    assert (iou, l2) == timing[:2]  # the timing outputs keep their slots and values
    assert ct == pytest.approx(np.mean([r.clip_t for r in rows]), abs=1e-6)
    assert ci == pytest.approx(np.mean([r.clip_i for r in rows]), abs=1e-6)
    assert not math.isclose(rows[0].clip_i, rows[1].clip_i)  # two different subjects, two different scores
    data = json.loads(report)
    for got, want in zip(data["subjects"], rows):
        assert got["tag"] == want.tag and got["detected"] == list(want.predicted)
        assert got["clip_t"] == pytest.approx(want.clip_t, abs=1e-6)
        assert got["clip_i"] == pytest.approx(want.clip_i, abs=1e-6)
    summary = summarise(rows)
    for column in ("t_iou", "clip_t", "clip_i"):
        assert data["ci95"][column] == pytest.approx(list(summary[column][1:]), abs=1e-6)
    assert data["measured_with"] == {"clip_t": "clip-tiny", "clip_i": "clip-tiny"}
    assert "CLIP-T" in out["ui"]["text"][0] and "CLIP-I" in out["ui"]["text"][0]


def test_a_subject_never_found_has_no_clip_score_and_does_not_count_towards_the_mean(scene, folders):
    empty = torch.zeros_like(scene[2][1])
    _, _, report, ct, ci = evaluate(scene, images=scene[1], clip_model="clip-tiny", masks_2=empty)["result"]
    rows = expected(scene, ClipEmbedder.from_folder(folders / "clip-tiny", device="cpu"), [scene[2][0], empty])
    assert rows[1].clip_t is None and json.loads(report)["subjects"][1]["clip_t"] is None
    assert ct == pytest.approx(rows[0].clip_t, abs=1e-6) and ci == pytest.approx(rows[0].clip_i, abs=1e-6)


def test_clip_vision_gives_clip_i_with_crops_batched_and_clip_model_still_gives_clip_t(scene, folders):
    tiny = ClipEmbedder.from_folder(folders / "clip-tiny", device="cpu")
    vision = TransformersClipVision(tiny)
    _, _, report, ct, ci = evaluate(scene, images=scene[1], clip_vision=vision, clip_model="clip-tiny")["result"]
    present = [int(t.flatten(1).mean(1).gt(0.002).sum()) for t in scene[2]]
    assert [b[0] for b in vision.batches] == [present[0], 1, present[1], 1]  # each subject's crops, its reference
    by_vision = expected(scene, ClipVisionEmbedder(TransformersClipVision(tiny)))
    by_text_model = expected(scene, tiny)
    assert all(r.clip_t is None for r in by_vision)  # the adapter has no text side
    assert ci == pytest.approx(np.mean([r.clip_i for r in by_vision]), abs=1e-6)
    assert ct == pytest.approx(np.mean([r.clip_t for r in by_text_model]), abs=1e-6)
    assert json.loads(report)["measured_with"] == {"clip_t": "clip-tiny", "clip_i": "clip_vision"}
    _, _, report, ct, ci = evaluate(scene, images=scene[1], clip_vision=vision)["result"]
    assert math.isnan(ct) and ci == pytest.approx(np.mean([r.clip_i for r in by_vision]), abs=1e-6)
    # crops of other sizes reach the model at its size, as CLIP's resize and centre crop make them
    odd = [np.full((5, 40, 3), 200, np.uint8), np.zeros((16, 16, 3), np.uint8), np.full((30, 9, 3), 9, np.uint8)]
    assert ClipVisionEmbedder(vision, batch=2).images(odd).shape == (3, 8)
    assert vision.batches[-2:] == [(2, 16, 16, 3), (1, 16, 16, 3)]


def test_bad_identity_inputs_are_one_line_naming_the_node_and_the_fix(scene, folders):
    video, images, tracks, _ = scene
    cases = [
        (dict(images=images[:9], clip_model="clip-tiny"), r"Evaluate Timing: images has shape \[9, 64, 64, 3\]; "
                                                          r"give the decoded video .*\[17 frames"),
        (dict(images=images[:9]), r"images has shape \[9"),
        (dict(clip_model="clip-broken", images=images), r"Evaluate Timing: clip_model .*clip-broken: no readable "
                                                         "config.json; give the folder of a CLIP model"),
        (dict(clip_model="../clip-tiny", images=images), "is not a folder clip\\* in .*choose none"),
        (dict(clip_vision=TransformersClipVision(ClipEmbedder.from_folder(folders / "clip-tiny", device="cpu"))),
         "CLIP-T / CLIP-I need the video's frames; connect images"),
        (dict(clip_model="clip-tiny"), "connect images"),
        (dict(clip_model="clip-tiny", images=images[:, :32, :32]), "masks_1 is 64x64 but images are 32x32"),
    ]
    for inputs, message in cases:
        with pytest.raises(ValueError, match=message) as err:
            evaluate(scene, **inputs)
        assert "\n" not in str(err.value)
