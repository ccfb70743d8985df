"""With COMFYUI_DIR set: our base DiT against ComfyUI's own Wan 2.1 implementation, same weights and inputs."""
import os
import sys

import pytest
import torch

from conftest import tiny_model

COMFYUI_DIR = os.environ.get("COMFYUI_DIR")
pytestmark = [pytest.mark.comfyui,
              pytest.mark.skipif(not COMFYUI_DIR, reason="set COMFYUI_DIR to a ComfyUI checkout to run")]


@pytest.fixture(scope="module")
def comfy_wan():
    """ComfyUI's Wan model imported from COMFYUI_DIR; afterwards every module imported from there is forgotten and
    the path removed, so later tests do not find ComfyUI's folder_paths (our nodes would then think they run inside
    a ComfyUI that never registered their model folder)."""
    before = set(sys.modules)
    sys.path.insert(0, COMFYUI_DIR)
    try:
        import comfy.cli_args
        comfy.cli_args.args.cpu = True
        import comfy.ldm.wan.model as wan
        import comfy.ops
        yield wan, comfy.ops.disable_weight_init
    finally:
        sys.path.remove(COMFYUI_DIR)
        root = os.path.realpath(COMFYUI_DIR)
        for name in set(sys.modules) - before:
            file = getattr(sys.modules[name], "__file__", None) or ""
            if os.path.realpath(file).startswith(root + os.sep):
                del sys.modules[name]


@pytest.mark.parametrize("shape,t", [((1, 16, 3, 8, 6), [900.0]), ((2, 16, 2, 4, 4), [10.0, 500.0])])
def test_matches_comfyui_wan(comfy_wan, shape, t):
    wan, ops = comfy_wan
    ours = tiny_model(seed=12)
    cfg = ours.cfg
    theirs = wan.WanModel(model_type="t2v", dim=cfg.dim, ffn_dim=cfg.ffn_dim, freq_dim=cfg.freq_dim,
                          text_dim=cfg.text_dim, num_heads=cfg.num_heads, num_layers=cfg.num_layers,
                          cross_attn_norm=True, operations=ops, dtype=torch.float32)
    theirs.load_state_dict(ours.state_dict())
    g = torch.Generator().manual_seed(0)
    x = torch.randn(*shape, generator=g)
    ctx = torch.randn(shape[0], 7, cfg.text_dim, generator=g)
    ts = torch.tensor(t)
    with torch.no_grad():
        torch.testing.assert_close(ours(x, ts, ctx), theirs(x, ts, ctx), rtol=2e-4, atol=2e-4)


def test_bench_times_comfyuis_wan_on_the_same_weights_and_input(comfy_wan):
    """The bench's side-by-side timing runs both models on identical weights and input (outputs agree)."""
    from alchemint_core.bench import against_comfyui
    fig = against_comfyui(COMFYUI_DIR, latent_thw=(2, 8, 8), repeat=1)
    assert fig.detail["max_abs_diff"] < 1e-3
    assert fig.value > 0 and fig.detail["ours_seconds"] > 0 and fig.detail["comfyui_seconds"] > 0


def test_evaluate_timing_clip_i_through_comfyuis_own_clip_vision(comfy_wan, tmp_path):
    """Evaluate Timing with ComfyUI's own ClipVisionModel (built from a tiny JSON config, random weights) as
    clip_vision: its CLIP-I is, per subject, the mean over the frames where the subject is present of the cosine
    between the masked crop and the masked reference, each embedded alone by ComfyUI's encode_image."""
    import json

    import numpy as np
    import torch.nn.functional as F

    from alchemint_core.demo.data import FPS, example_video
    from alchemint_core.scoring.identity import masked_crop
    from alchemint_core.sampling.subjects import Subject
    from alchemint_core.synthetic import render_reference
    from alchemint_core.sampling.timeline import Bar
    from conftest import randomize
    sys.path.remove(COMFYUI_DIR)  # ComfyUI has a nodes.py of its own: our nodes package is imported without it
    try:
        from nodes.evaluation import EvaluateTiming
        from nodes.references import ReferenceChain
        from nodes.timeline import Timeline
    finally:
        sys.path.insert(0, COMFYUI_DIR)
    import comfy.clip_vision
    config = tmp_path / "clip_vision_tiny.json"
    config.write_text(json.dumps({"model_type": "clip_vision_model", "hidden_size": 16, "intermediate_size": 32,
                                  "num_hidden_layers": 2, "num_attention_heads": 2, "num_channels": 3,
                                  "patch_size": 8, "image_size": 24, "projection_dim": 8, "hidden_act": "quick_gelu"}))
    clip_vision = comfy.clip_vision.ClipVisionModel(str(config))  # two layers: encode_image reads the second last
    randomize(clip_vision.model, seed=4, scale=0.5)  # larger weights: images differ more

    video = example_video("alchemint_demo_clip_1.mp4")
    subjects, bars = [], []
    for i, s in enumerate(video.subjects):
        image, mask = render_reference(np.random.default_rng(i), s.appearance, 48, 48)
        subjects.append(Subject(s.appearance.tag, image, mask, torch.zeros(1, 4)))
        bars.append(Bar(s.appearance.tag, s.first / FPS, (s.last + 1) / FPS))
    timeline = Timeline(ReferenceChain(tuple(subjects)), tuple(bars), len(video.frames), FPS)
    tracks = [torch.from_numpy(video.masks[b.tag].astype(np.float32)) for b in bars]
    _, _, report, clip_t, clip_i = EvaluateTiming().evaluate(
        timeline, tracks[0], 0.002, masks_2=tracks[1], images=torch.from_numpy(video.frames).float() / 255,
        clip_vision=clip_vision)["result"]

    @torch.inference_mode()
    def embed(image):  # one image alone through ComfyUI
        return F.normalize(clip_vision.encode_image(torch.from_numpy(image).float()[None] / 255)["image_embeds"]
                           .float(), dim=-1)[0]
    by_hand = []
    for s in subjects:
        masks = video.masks[s.tag]
        present = np.flatnonzero(masks.reshape(len(masks), -1).mean(1) > 0.002)
        reference = embed(masked_crop(s.image, s.mask))
        by_hand.append(float(np.mean([float(embed(masked_crop(video.frames[f], masks[f])) @ reference)
                                      for f in present])))
    rows = json.loads(report)["subjects"]
    assert [r["clip_i"] for r in rows] == pytest.approx(by_hand, abs=1e-5)
    assert clip_i == pytest.approx(np.mean(by_hand), abs=1e-5) and abs(by_hand[0] - by_hand[1]) > 1e-3
    assert np.isnan(clip_t)  # CLIP_VISION has no text side: CLIP-T is not measured
