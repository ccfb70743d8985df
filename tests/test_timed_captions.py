"""Timed captions from the canvas: the Timed Captions node's JSON value, its encoding by a CLIP-like text encoder,
the dense-caption input the WeRoPE Conditioner makes of it, and the Sampler using the model's dense branch (equal to
the core's generation with the same dense captions); the errors for a model without a dense branch and for captions
outside the clip."""
import json

import numpy as np
import pytest
import torch

import alchemint_core as ac
from alchemint_core.demo.pipeline import ENCODERS_FILE
from alchemint_core.encoders import load_encoders
from alchemint_core.sampling.generation import VideoRequest, generate_video
from alchemint_core.model.loading import save_model
from alchemint_core.native import encode_text
from alchemint_core.sampling.timed_captions import (MAX_CAPTIONS, TimedCaptionError, dump_timed_captions,
                                                    parse_timed_captions)
from conftest import randomize
from nodes import bridge
from nodes.models import SHIPPED, DemoModel
from nodes.references import MASK_MEANINGS, ReferenceLoader
from nodes.sampling import MultiCFGGuider, Sampler, WeRoPEConditioner
from nodes.timed_captions import TimedCaptions
from nodes.timeline import IntervalTimeline

LATENT = load_encoders(ENCODERS_FILE)[0].latent_channels
DENSE_DEMO = ac.WanConfig(dim=64, ffn_dim=128, num_heads=2, num_layers=2, in_dim=LATENT, out_dim=LATENT, text_dim=64,
                          freq_dim=32, rope_time_theta=20.0)
TWO = [{"text": "a red ring rolls in", "start": 0.0, "end": 1.0},
       {"text": "a yellow star spins", "start": 1.0, "end": 2.125}]


def value(captions) -> str:
    return json.dumps({"version": 1, "captions": captions})


@pytest.fixture(scope="module")
def folders(tmp_path_factory):
    """models/alchemint with a small random demo-compatible model that has a dense-caption branch (its zero-initialised
    output projections randomised too, so the captions change what it predicts)."""
    root = tmp_path_factory.mktemp("comfy")
    paths = {k: [root / "models" / k] for k in ("diffusion_models", bridge.MODEL_FOLDER)}
    for p in paths.values():
        p[0].mkdir(parents=True)
    model = randomize(ac.WanModel(DENSE_DEMO, ac.AdapterConfig(max_refs=4, dense_captions=True)), seed=5).eval()
    assert model.alchemint.dense[0].o.weight.abs().sum() > 0
    save_model(model, paths[bridge.MODEL_FOLDER][0] / "dense_demo.safetensors")
    saved = dict(bridge.SEARCH_PATHS)
    bridge.SEARCH_PATHS.clear()
    bridge.SEARCH_PATHS.update(paths)
    yield root
    bridge.SEARCH_PATHS.clear()
    bridge.SEARCH_PATHS.update(saved)


@pytest.fixture(scope="module")
def dense_demo(folders):
    return DemoModel().load("dense_demo.safetensors")


@pytest.fixture(scope="module")
def shipped():
    return DemoModel().load(SHIPPED)


def encode(clip, text):
    return clip.encode_from_tokens_scheduled(clip.tokenize(text))


def timeline_of(demo, frames=17, fps=8.0):
    from alchemint_core.synthetic import Appearance, render_reference
    model, vae, clip = demo
    image, mask = render_reference(np.random.default_rng(0), Appearance("red", "ring", "solid"), 64, 64)
    img = torch.from_numpy(image).float()[None] / 255
    refs, = ReferenceLoader().load(img, "red ring", vae, clip, torch.from_numpy(1.0 - mask.astype(np.float32))[None],
                                   MASK_MEANINGS[0])
    timeline, = IntervalTimeline().build(refs, frames, fps, '{"version": 1, "subjects": []}')
    return timeline


def run(demo, captions_json=None, seed=3, steps=3):
    """The demo graph through the nodes, with the Timed Captions node wired into the WeRoPE Conditioner."""
    model, vae, clip = demo
    timed = None
    if captions_json is not None:
        assert TimedCaptions.VALIDATE_INPUTS(captions_json, 17, 8.0) is True
        timed, = TimedCaptions().encode(clip, 17, 8.0, captions_json)
    cond, _ = WeRoPEConditioner().condition(model, timeline_of(demo), encode(clip, "a red ring"), "as trained",
                                            1.0, -0.4, 0.0, timed_captions=timed)
    guider, = MultiCFGGuider().guide(encode(clip, ""), 2.0, 3.0, 0.0, False)
    latent, = Sampler().sample(model, cond, guider, 64, 64, steps, 3.0, seed)
    return latent["samples"], cond


def test_the_json_value_round_trips_and_cleans_whitespace():
    caps = parse_timed_captions(value(TWO))
    assert [(c.text, c.start, c.end) for c in caps] == [("a red ring rolls in", 0.0, 1.0),
                                                        ("a yellow star spins", 1.0, 2.125)]
    assert parse_timed_captions(dump_timed_captions(caps)) == caps
    assert parse_timed_captions(value([{"text": "  two \n words ", "start": 0, "end": 1}]))[0].text == "two words"
    assert parse_timed_captions('{"captions": []}') == []


@pytest.mark.parametrize("text, message", [
    ("{oops", "not valid JSON"),
    (json.dumps(TWO), 'must be an object {"version": 1, "captions"'),  # a bare array is refused
    ('{"version": 2, "captions": []}', "version 2 is not supported"),
    (value([{"text": "x", "start": 1.5, "end": 0.5}]), "timed caption 1 ('x'): end 0.5 s is not after start 1.5 s"),
    (value([{"text": " ", "start": 0, "end": 1}]), "timed caption 1 has no text"),
    (value([{"start": 0, "end": 1}]), "timed caption 1 has no text"),
    (value([{"text": "x", "start": True, "end": 1}]), "start True is not a finite number"),
    (value([{"text": "x", "start": 0, "end": "1"}]), "end '1' is not a finite number"),
    ('{"captions": [{"text": "x", "start": NaN, "end": 1}]}', "start nan is not a finite number"),
    (value([{"text": "x" * 501, "start": 0, "end": 1}]), "keep it under 500"),
    (value([{"text": "x", "start": 0, "end": 1}] * (MAX_CAPTIONS + 1)), "at most 32"),
    (value([None]), "timed caption 1 must be an object"),
    (" " * 70_000, "larger than 64 KB"),
    (17, "must be a JSON string"),
])
def test_bad_values_give_one_line_with_the_fix(text, message):
    with pytest.raises(TimedCaptionError, match=None) as err:
        parse_timed_captions(text)
    assert message in str(err.value) and "\n" not in str(err.value)


@pytest.mark.parametrize("caption, message", [
    ({"text": "late", "start": 1.0, "end": 3.0}, "timed caption 1 ('late'): [1, 3] s lies outside the clip "
                                                  "[0, 2.125] s (17 frames at 8 fps); drag it inside"),
    ({"text": "early", "start": -0.5, "end": 1.0}, "[-0.5, 1] s lies outside the clip"),
    ({"text": "reversed", "start": 1.0, "end": 0.5}, "end 0.5 s is not after start 1 s; drag the bar's ends apart"),
])
def test_captions_outside_the_clip_are_reported_on_the_node(caption, message):
    got = TimedCaptions.VALIDATE_INPUTS(value([caption]), 17, 8.0)
    assert got.startswith("Timed Captions: captions: ") and message in got
    assert TimedCaptions.VALIDATE_INPUTS(value(TWO), 17, 8.0) is True
    assert TimedCaptions.VALIDATE_INPUTS(value([{"text": "x", "start": 0, "end": 2.18}]), 17, 8.0) is True  # rounding


def test_the_node_encodes_each_caption_with_the_clip_and_spans_go_to_latent_time(shipped):
    _, _, clip = shipped
    timed, = TimedCaptions().encode(clip, 17, 8.0, value(TWO))
    for i, c in enumerate(TWO):
        emb, n = encode_text(clip, c["text"])
        assert int(timed.lengths[i]) == n
        torch.testing.assert_close(timed.embeddings[i, :n], emb, rtol=0, atol=0)
        assert not timed.embeddings[i, n:].any()
    dense = timed.dense()
    assert dense.context.shape[:2] == (1, 2) and dense.context.shape[-1] == 64
    # t = seconds * fps / 4: [0, 1] s -> latent frames [0, 2]; [1, 2.125] s -> [2, 4.25] (the 5th latent frame's end)
    assert dense.spans[0].tolist() == [[0.0, 2.0], [2.0, 4.25]]
    with pytest.raises(ValueError, match="Timed Captions: no timed captions; add one with '\\+ caption'"):
        TimedCaptions().encode(clip, 17, 8.0, value([]))
    with pytest.raises(ValueError, match="Timed Captions: .*4k\\+1"):
        TimedCaptions().encode(clip, 16, 8.0, value(TWO))


def test_a_model_without_a_dense_branch_says_so_on_the_conditioner(shipped):
    model, _, clip = shipped
    assert model.model.alchemint.dense is None  # the shipped demo model was trained without timed captions
    timed, = TimedCaptions().encode(clip, 17, 8.0, value(TWO))
    with pytest.raises(ValueError) as err:
        WeRoPEConditioner().condition(model, timeline_of(shipped), encode(clip, "x"), "as trained", 1.0, -0.4, 0.0,
                                      timed_captions=timed)
    msg = str(err.value)
    assert msg.startswith("WeRoPE Conditioner: timed_captions: this model has no dense-caption branch")
    assert "use a model trained with dense_captions on, or disconnect the Timed Captions node" in msg
    assert "\n" not in msg
    # the core refuses the same request up front, before any sampling
    req = VideoRequest(encode(clip, "x")[0][0], encode(clip, "")[0][0], 17, 8.0, 64, 64, steps=1,
                       dense=timed.dense())
    with pytest.raises(TimedCaptionError, match="no dense-caption branch"):
        generate_video(model, req)


def test_captions_laid_out_on_another_clip_are_refused(dense_demo):
    model, _, clip = dense_demo
    timed, = TimedCaptions().encode(clip, 33, 8.0, value(TWO))
    with pytest.raises(ValueError, match="WeRoPE Conditioner: timed_captions are laid out on 33 frames at 8 fps but "
                                         "the Interval Timeline's clip is 17 frames at 8 fps; set the same"):
        WeRoPEConditioner().condition(model, timeline_of(dense_demo), encode(clip, "x"), "as trained", 1.0, -0.4,
                                      0.0, timed_captions=timed)


def test_captions_reach_a_dense_model_and_equal_the_core_generation(dense_demo):
    model, vae, clip = dense_demo
    with_two, cond = run(dense_demo, value(TWO))
    none, _ = run(dense_demo)
    other_text, _ = run(dense_demo, value([dict(TWO[0], text="a blue disc"), TWO[1]]))
    other_span, _ = run(dense_demo, value([dict(TWO[0], end=0.5), dict(TWO[1], start=0.5)]))
    assert torch.isfinite(with_two).all()
    for other in (none, other_text, other_span):  # the text and the times both reach the model
        assert (with_two - other).abs().max() > 1e-4
    assert torch.equal(run(dense_demo, value(TWO))[0], with_two)  # and it is deterministic
    # The core's generation with the same dense captions, built here from the encoder and t = seconds * fps / 4.
    embs = [encode_text(clip, c["text"])[0] for c in TWO]
    longest = max(e.shape[0] for e in embs)
    context = torch.stack([torch.nn.functional.pad(e, (0, 0, 0, longest - e.shape[0])) for e in embs])[None]
    dense = ac.DenseCaptions(context, torch.tensor([[[0.0, 2.0], [2.0, 4.25]]], dtype=torch.float64),
                             torch.tensor([[e.shape[0] for e in embs]]))
    pos, pos_mask = cond.positive, cond.positive_mask
    neg = encode(clip, "")
    tl = cond.timeline
    req = VideoRequest(pos, neg[0][0], 17, 8.0, 64, 64, subjects=list(tl.references.subjects),
                       intervals=tl.intervals, positive_mask=pos_mask,
                       negative_mask=neg[0][1]["attention_mask"].bool(), seed=3, steps=3, shift=3.0,
                       guidance=ac.Guidance(2.0, 3.0), dense=dense)
    torch.testing.assert_close(generate_video(model, req).float(), with_two, rtol=0, atol=1e-6)


def test_the_text_off_pass_has_no_timed_captions_as_in_training():
    """Guidance's unconditional (text-off) pass sees no dense signal, like a caption-dropped training sample; its
    text-on pass sees the captions."""
    from conftest import TINY, tiny_model
    model = tiny_model(seed=1, adapter=ac.AdapterConfig(dense_captions=True))
    randomize(model.alchemint.dense, seed=3)
    g = torch.Generator().manual_seed(0)
    x, t = torch.randn(1, 16, 5, 4, 4, generator=g), torch.tensor([500.0])
    pos, neg = torch.randn(1, 4, TINY.text_dim, generator=g), torch.randn(1, 3, TINY.text_dim, generator=g)
    dense = ac.DenseCaptions(torch.randn(1, 2, 3, TINY.text_dim, generator=g),
                             torch.tensor([[[0.0, 2.0], [2.0, 4.0]]], dtype=torch.float64))
    cond = ac.Conditioning(pos, dense=dense)
    with torch.no_grad():
        text_off = ac.Guider(model, cond, neg, ac.Guidance(1.0, 0.0), x.shape)(x, t)  # v(0, 0) only
        text_on = ac.Guider(model, cond, neg, ac.Guidance(1.0, 1.0), x.shape)(x, t)  # v(0, T) only
        torch.testing.assert_close(text_off, model(x, t, neg), rtol=0, atol=0)
        torch.testing.assert_close(text_on, model(x, t, pos, dense=dense), rtol=0, atol=0)
        assert (model(x, t, pos, dense=dense) - model(x, t, pos)).abs().max() > 1e-4
