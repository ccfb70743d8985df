"""The ComfyUI nodes' functions without ComfyUI: the demo graph end to end through the nodes (native CLIP Text
Encode / VAE Decode call signatures included), equal to the CLI's path; node metadata; bad inputs."""
import json

import numpy as np
import pytest
import torch

import alchemint_core as ac
import nodes
from alchemint_core.demo.pipeline import DemoPipeline, Subject
from alchemint_core.encoders import load_encoders
from alchemint_core.demo.pipeline import ENCODERS_FILE
from alchemint_core.model.loading import save_model
from alchemint_core.synthetic import Appearance, render_reference
from conftest import randomize
from nodes import bridge
from nodes.models import DemoModel
from nodes.references import MASK_MEANINGS, ReferenceLoader
from nodes.sampling import MultiCFGGuider, Sampler, WeRoPEConditioner
from nodes.timeline import IntervalTimeline
from nodes.evaluation import DemoSubjectMasks, EvaluateTiming
from nodes.curation import TrackSubjects
from nodes.training import AdapterTrainer, DatasetCache, DatasetWriter
from training_fixtures import write_dataset

LATENT = load_encoders(ENCODERS_FILE)[0].latent_channels  # a user's demo model reads the shipped VAE's latents
DEMO_SIZED = ac.WanConfig(dim=64, ffn_dim=128, num_heads=2, num_layers=2, in_dim=LATENT, out_dim=LATENT, text_dim=64,
                          freq_dim=32, rope_time_theta=20.0)


@pytest.fixture(scope="module")
def folders(tmp_path_factory):
    """ComfyUI-like model/input/output folders with a small random demo-compatible model in models/alchemint."""
    root = tmp_path_factory.mktemp("comfy")
    paths = {k: [root / "models" / k] for k in ("diffusion_models", bridge.MODEL_FOLDER, "alchemint_curation")}
    paths.update(input=[root / "input"], output=[root / "output"])
    for p in paths.values():
        p[0].mkdir(parents=True)
    model = randomize(ac.WanModel(DEMO_SIZED, ac.AdapterConfig(max_refs=4, rope_mode="werope")), seed=3).eval()
    save_model(model, paths[bridge.MODEL_FOLDER][0] / "tiny_demo.safetensors")
    saved = dict(bridge.SEARCH_PATHS)
    bridge.SEARCH_PATHS.clear()
    bridge.SEARCH_PATHS.update(paths)
    yield root
    bridge.SEARCH_PATHS.clear()
    bridge.SEARCH_PATHS.update(saved)


@pytest.fixture(scope="module")
def demo(folders):
    return DemoModel().load("tiny_demo.safetensors")


def encode(clip, text):
    """What the native CLIP Text Encode node does."""
    return clip.encode_from_tokens_scheduled(clip.tokenize(text))


def load_image_outputs(image: np.ndarray, mask: np.ndarray):
    """What the native Load Image node gives for an RGBA PNG: IMAGE [1, H, W, 3] and MASK = 1 - alpha."""
    return torch.from_numpy(image).float()[None] / 255, torch.from_numpy(1.0 - mask.astype(np.float32))[None]


def reference(colour, shape, seed=0):
    return render_reference(np.random.default_rng(seed), Appearance(colour, shape, "solid"), 64, 64)


def graph(demo, timeline_json, seed=7, steps=4, mode="as trained", frames=17, fps=8.0):
    """The demo workflow, node by node."""
    model, vae, clip = demo
    refs = None
    for colour, shape in (("red", "ring"), ("yellow", "star")):
        image, mask = load_image_outputs(*reference(colour, shape))
        refs, = ReferenceLoader().load(image, f"{colour} {shape}", vae, clip, mask, MASK_MEANINGS[0], refs)
    assert IntervalTimeline.VALIDATE_INPUTS(timeline_json, frames, fps) is True
    timeline, = IntervalTimeline().build(refs, frames, fps, timeline_json)
    cond, plot = WeRoPEConditioner().condition(model, timeline, encode(clip, "a red ring and a yellow star"), mode,
                                               1.0, -0.4, 0.0)
    guider, = MultiCFGGuider().guide(encode(clip, ""), 2.0, 3.0, 0.0, False)
    latent, = Sampler().sample(model, cond, guider, 64, 64, steps, 3.0, seed)
    return latent, plot


TWO_BARS = json.dumps({"version": 1, "subjects": [{"tag": "red ring", "start": 0.0, "end": 1.0},
                                                  {"tag": "yellow star", "start": 1.0, "end": 2.125}]})


def test_every_node_is_prefixed_categorised_and_has_tooltips():
    assert len(nodes.NODE_CLASS_MAPPINGS) == 19
    for node_id, cls in nodes.NODE_CLASS_MAPPINGS.items():
        assert node_id.startswith("AlcheMinT") and nodes.NODE_DISPLAY_NAME_MAPPINGS[node_id].startswith("AlcheMinT ")
        assert cls.CATEGORY.startswith("AlcheMinT") and hasattr(cls, cls.FUNCTION) and cls.DESCRIPTION
        for section in cls.INPUT_TYPES().values():
            for name, spec in section.items():
                assert spec[1].get("tooltip"), f"{node_id}.{name} has no tooltip"
        assert len(cls.OUTPUT_TOOLTIPS) == len(cls.RETURN_TYPES)
        for t in cls.RETURN_TYPES:
            assert t in ("IMAGE", "MASK", "LATENT", "CONDITIONING", "VAE", "CLIP", "STRING", "FLOAT", "MODEL",
                         "GUIDER", "SIGMAS") \
                or t.startswith("ALCHEMINT_")


def test_demo_graph_gives_decodable_latents_and_reproduces_the_cli_path(demo):
    latent, plot = graph(demo, TWO_BARS)
    samples = latent["samples"]
    assert samples.shape == (1, LATENT, 5, 8, 8) and torch.isfinite(samples).all()
    frames = demo[1].decode(samples)  # what the native VAE Decode node calls
    assert frames.shape == (1, 17, 64, 64, 3) and 0 <= frames.min() and frames.max() <= 1
    assert plot.shape[0] == 1 and plot.shape[-1] == 3 and plot.shape[1] > 100
    again, _ = graph(demo, TWO_BARS)
    other, _ = graph(demo, TWO_BARS, seed=8)
    assert torch.equal(samples, again["samples"]) and not torch.allclose(samples, other["samples"])
    # The CLI's demo pipeline is the same computation: same model, references, prompt, intervals and seed.
    pipe = DemoPipeline(bridge.resolve(bridge.MODEL_FOLDER, "tiny_demo.safetensors", "test"), ENCODERS_FILE)
    subjects = []
    for (colour, shape), (a, b) in zip((("red", "ring"), ("yellow", "star")), ((0.0, 1.0), (1.0, 2.125))):
        image, mask = reference(colour, shape)
        subjects.append(Subject(f"{colour} {shape}", a, b, image, mask))
    captured = []
    pipe.generate(subjects, "a red ring and a yellow star", seed=7, steps=4, shift=3.0,
                  guidance=ac.Guidance(2.0, 3.0), callback=lambda i, n, x, x0: captured.append(x))
    fmt = pipe.handle.latent_format
    assert torch.allclose(fmt.denormalize(captured[-1]), samples, atol=1e-5)


def test_rope_mode_changes_the_video_and_the_plot(demo):
    a, plot_a = graph(demo, TWO_BARS, mode="werope")
    b, plot_b = graph(demo, TWO_BARS, mode="none")
    assert not torch.allclose(a["samples"], b["samples"]) and not torch.equal(plot_a, plot_b)


def test_timeline_validation_and_bar_matching(demo):
    model, vae, clip = demo
    assert "not valid JSON" in IntervalTimeline.VALIDATE_INPUTS("{oops", 17, 8.0)
    assert "not after start" in IntervalTimeline.VALIDATE_INPUTS(
        '{"version": 1, "subjects": [{"tag": "a", "start": 1.5, "end": 0.5}]}', 17, 8.0)
    assert "outside the clip" in IntervalTimeline.VALIDATE_INPUTS(
        '{"version": 1, "subjects": [{"tag": "a", "start": 0.5, "end": 9}]}', 17, 8.0)
    assert IntervalTimeline.VALIDATE_INPUTS('{"version": 1, "subjects": []}', 17, 8.0) is True
    image, mask = load_image_outputs(*reference("red", "ring"))
    refs, = ReferenceLoader().load(image, "red ring", vae, clip, mask)
    spread, = IntervalTimeline().build(refs, 17, 8.0, '{"version": 1, "subjects": []}')
    assert spread.intervals == [(0.0, 2.125)]
    with pytest.raises(ValueError, match="2 bars but 1 subjects"):
        IntervalTimeline().build(refs, 17, 8.0, TWO_BARS)
    relabelled, = IntervalTimeline().build(refs, 17, 8.0, '{"version":1,"subjects":[{"tag":"x","start":0,"end":1}]}')
    assert relabelled.bars[0].tag == "red ring"  # labels follow the loaders
    with pytest.raises(ValueError, match="4k\\+1"):
        IntervalTimeline().build(refs, 16, 8.0, '{"version": 1, "subjects": []}')


def test_reference_loader_reads_masks_both_ways_and_explains_bad_input(demo):
    model, vae, clip = demo
    image, alpha = reference("blue", "square")
    img, load_image_mask = load_image_outputs(image, alpha)
    a, = ReferenceLoader().load(img, "blue square", vae, clip, load_image_mask, MASK_MEANINGS[0])
    b, = ReferenceLoader().load(img, "blue square", vae, clip, torch.from_numpy(alpha).float()[None],
                                MASK_MEANINGS[1])
    assert np.array_equal(a.subjects[0].mask, alpha) and np.array_equal(b.subjects[0].mask, alpha)
    whole, = ReferenceLoader().load(img, "blue square", vae, clip)  # no mask: the whole image
    assert whole.subjects[0].mask.all()
    grey = img.mean(-1)  # greyscale [1, H, W] and an RGBA image of another size both work
    ReferenceLoader().load(grey, "blue square", vae, clip)
    ReferenceLoader().load(torch.rand(1, 40, 90, 4), "blue square", vae, clip)
    with pytest.raises(ValueError, match="Reference Loader 'blue square': the mask of 'blue square' is empty"):
        ReferenceLoader().load(img, "blue square", vae, clip, torch.ones(1, 64, 64), MASK_MEANINGS[0])
    with pytest.raises(ValueError, match="word tag is empty"):
        ReferenceLoader().load(img, "  ", vae, clip)
    with pytest.raises(ValueError, match="NaN"):
        ReferenceLoader().load(torch.full((1, 8, 8, 3), float("nan")), "x", vae, clip)
    chain = None
    for i in range(5):
        chain, = ReferenceLoader().load(img, f"blue square {i}", vae, clip, references=chain)
    assert chain.tags == [f"blue square {i}" for i in range(5)]
    timeline, = IntervalTimeline().build(chain, 17, 8.0, '{"version": 1, "subjects": []}')
    cond, _ = WeRoPEConditioner().condition(model, timeline, encode(clip, "x"), "as trained", 1.0, -0.4, 0.0)
    guider, = MultiCFGGuider().guide(encode(clip, ""), 2.0, 3.0, 0.0, False)
    with pytest.raises(ValueError, match="5 subjects given; this model takes at most 4"):
        Sampler().sample(model, cond, guider, 64, 64, 2, 3.0, 0)


def test_sampler_and_guider_reject_bad_settings(demo):
    model, vae, clip = demo
    with pytest.raises(ValueError, match="Multi-CFG Guider: guidance text_scale nan"):
        MultiCFGGuider().guide(encode(clip, ""), 2.0, float("nan"), 0.0, False)
    image, mask = load_image_outputs(*reference("red", "ring"))
    refs, = ReferenceLoader().load(image, "red ring", vae, clip, mask)
    timeline, = IntervalTimeline().build(refs, 17, 8.0, '{"version": 1, "subjects": []}')
    cond, _ = WeRoPEConditioner().condition(model, timeline, encode(clip, "a red ring"), "as trained", 1, -0.4, 0)
    guider, = MultiCFGGuider().guide(encode(clip, ""), 2.0, 3.0, 0.0, False)
    with pytest.raises(ValueError, match="width 72 must be a positive multiple of 16"):
        Sampler().sample(model, cond, guider, 72, 64, 2, 3.0, 0)
    with pytest.raises(ValueError, match="steps 0"):
        Sampler().sample(model, cond, guider, 64, 64, 0, 3.0, 0)
    with pytest.raises(ValueError, match="w_edge"):
        WeRoPEConditioner().condition(model, timeline, encode(clip, "x"), "werope", 1.0, 0.5, 0.0)
    wrong = [[torch.zeros(1, 5, 4096), {}]]  # a Wan (umT5) caption given to the demo model
    cond_wrong, _ = WeRoPEConditioner().condition(model, timeline, wrong, "as trained", 1, -0.4, 0)
    with pytest.raises(ValueError, match="expects \\[1, L, 64\\]"):
        Sampler().sample(model, cond_wrong, guider, 64, 64, 2, 3.0, 0)


def test_model_files_resolve_only_inside_their_folders(folders):
    assert "tiny_demo.safetensors" in bridge.list_files(bridge.MODEL_FOLDER)
    for name in ("../tiny_demo.safetensors", "/etc/passwd", "a/../../x.safetensors", ""):
        with pytest.raises(ValueError, match="models/alchemint"):
            bridge.resolve(bridge.MODEL_FOLDER, name, "test")
    with pytest.raises(ValueError, match="is not an AlcheMinT model|not in models"):
        DemoModel().load("missing.safetensors")


def test_evaluate_timing_scores_ground_truth_masks_perfectly(demo):
    model, vae, clip = demo
    image, mask = load_image_outputs(*reference("red", "ring"))
    refs, = ReferenceLoader().load(image, "red ring", vae, clip, mask)
    refs, = ReferenceLoader().load(image, "green disc", vae, clip, mask, references=refs)
    bars = json.dumps({"version": 1, "subjects": [{"tag": "a", "start": 0.5, "end": 1.5},
                                                  {"tag": "b", "start": 0.0, "end": 2.125}]})
    timeline, = IntervalTimeline().build(refs, 17, 8.0, bars)
    track1, track2 = torch.zeros(17, 32, 32), torch.zeros(17, 32, 32)
    track1[4:12, 10:20, 10:20] = 1  # frames 4..11 = [0.5, 1.5) s
    track2[:, :5, :5] = 1
    out = EvaluateTiming().evaluate(timeline, track1, 0.002, masks_2=track2)
    iou, l2, report, *_ = out["result"]
    assert iou == pytest.approx(1.0) and l2 == pytest.approx(0.0)
    assert json.loads(report)["subjects"][0]["detected"] == [0.5, 1.5]
    track1[12:14, 10:20, 10:20] = 1  # two frames too long
    iou, l2, *_ = EvaluateTiming().evaluate(timeline, track1, 0.002, masks_2=track2)["result"]
    assert iou == pytest.approx((1.0 + 8 / 10) / 2) and l2 > 0
    with pytest.raises(ValueError, match="1 mask tracks for 2 subjects"):
        EvaluateTiming().evaluate(timeline, track1, 0.002)


def test_dataset_cache_and_trainer_nodes_train_a_model_the_demo_node_loads(demo, folders):
    model, vae, clip = demo
    write_dataset(folders / "input" / "shapes", n=3, frames=9, size=32)
    with torch.inference_mode():  # as ComfyUI runs nodes
        cache, = DatasetCache().cache("shapes", vae, clip, "shapes_cache", 9, 0, 0, 2, 0)
        assert cache.clips == 3
        with pytest.raises(ValueError, match="input directory"):
            DatasetCache().cache("../outside", vae, clip, "x", 9, 0, 0, 2, 0)
        with pytest.raises(ValueError, match="plain name"):
            AdapterTrainer().train(cache, "new demo-size model (from scratch)", "full", "../evil", 2, 1, 1e-4, 0,
                                   "werope", False, True, 0)
        out = AdapterTrainer().train(cache, "new demo-size model (from scratch)", "full", "node_run", 2, 1, 1e-4,
                                     0, "avg", False, True, 0)
    path, plot = out["result"]
    assert path.endswith("node_run.safetensors") and plot.ndim == 4
    assert "node_run.safetensors" in bridge.list_files(bridge.MODEL_FOLDER)
    trained, _, _ = DemoModel().load("node_run.safetensors")
    assert trained.model.alchemint.cfg.rope_mode == "avg"


def test_demo_subject_masks_find_ground_truth_intervals(demo):
    from alchemint_core.synthetic import random_video
    model, vae, clip = demo
    video = random_video(np.random.default_rng(4), "test", 17, 64, 64)
    refs = None
    for s in video.subjects:
        image, mask = load_image_outputs(*reference(s.appearance.colour, s.appearance.shape))
        refs, = ReferenceLoader().load(image, s.appearance.tag, vae, clip, mask, references=refs)
    bars = json.dumps({"version": 1, "subjects": [{"tag": s.appearance.tag, "start": s.first / 8,
                                                   "end": (s.last + 1) / 8} for s in video.subjects]})
    timeline, = IntervalTimeline().build(refs, 17, 8.0, bars)
    tracks = DemoSubjectMasks().detect(torch.from_numpy(video.frames).float() / 255, timeline)
    assert len(tracks) == 4 and all(t.shape == (17, 64, 64) for t in tracks)
    assert all(not t.any() for t in tracks[len(video.subjects):])
    connected = {f"masks_{i + 1}": t for i, t in enumerate(tracks[1:len(video.subjects)], start=1)}
    iou, l2, *_ = EvaluateTiming().evaluate(timeline, tracks[0], 0.002, **connected)["result"]
    assert iou == pytest.approx(1.0) and l2 == pytest.approx(0.0)


def test_model_loader_loads_a_wan_file_with_an_adapter_from_the_model_folders(folders):
    from alchemint_core.model.loading import save_adapter
    from nodes.models import NO_ADAPTER, ModelLoader
    base = randomize(ac.WanModel(DEMO_SIZED), seed=5).eval()
    save_model(base, folders / "models" / "diffusion_models" / "wan_tiny.safetensors", with_adapter=False)
    with_adapter = randomize(ac.WanModel(DEMO_SIZED, ac.AdapterConfig(max_refs=2, rope_mode="mid")), seed=5)
    save_adapter(with_adapter, folders / "models" / "alchemint" / "tiny_adapter.safetensors")
    inputs = ModelLoader.INPUT_TYPES()["required"]
    assert "wan_tiny.safetensors" in inputs["base"][0] and "tiny_adapter.safetensors" in inputs["adapter"][0]
    handle, = ModelLoader().load("wan_tiny.safetensors", "tiny_adapter.safetensors", "fp16")
    assert handle.max_refs == 2 and handle.model.alchemint.cfg.rope_mode == "mid"
    assert handle.model.blocks[0].self_attn.q.weight.dtype == torch.float16
    torch.testing.assert_close(handle.model.alchemint.ref_index_embedding.float(),
                               with_adapter.alchemint.ref_index_embedding.float(), atol=1e-3, rtol=1e-3)
    # offload_blocks: blocks live in CPU memory and visit the device one at a time; same function
    from nodes import bridge
    offloaded, = ModelLoader().load("wan_tiny.safetensors", "tiny_adapter.safetensors", "fp16", True)
    assert offloaded.offload and bridge.load_on_device(offloaded) == torch.device("cpu")
    assert offloaded.offloader.resident() == []
    x, ctx = torch.randn(1, LATENT, 2, 4, 4), torch.randn(1, 5, DEMO_SIZED.text_dim)
    with torch.no_grad():
        torch.testing.assert_close(offloaded.model(x, torch.tensor([300.0]), ctx),
                                   handle.model(x, torch.tensor([300.0]), ctx))
    plain, = ModelLoader().load("wan_tiny.safetensors", NO_ADAPTER, "default")
    assert plain.model.alchemint is None and plain.max_refs == 0
    with pytest.raises(ValueError, match="not in models/diffusion_models"):
        ModelLoader().load("nope.safetensors", NO_ADAPTER, "default")
    with pytest.raises(ValueError, match="dtype 'int4'"):
        ModelLoader().load("wan_tiny.safetensors", NO_ADAPTER, "int4")


def test_dataset_writer_writes_samples_the_dataset_cache_reads(demo, folders):
    """Frames and mask tracks from any segmentation node -> a sample in output/alchemint/datasets/<name>, its
    intervals by the trainer's rule; the Dataset Cache then encodes that dataset by name. Bad inputs are refused
    before anything is written."""
    from alchemint_core.data.dataset import load_sample
    from alchemint_core.synthetic import random_video
    _, vae, clip = demo
    for k in range(2):
        video = random_video(np.random.default_rng(40 + k), "train", 17, 64, 64)
        frames = torch.from_numpy(video.frames).float() / 255
        tags = list(video.masks)
        extra = {"tag_2": tags[1], "mask_2": torch.from_numpy(video.masks[tags[1]]).float()} if len(tags) > 1 else {}
        out = DatasetWriter().write(frames, 8.0, video.caption, "written", f"clip_{k}", tags[0],
                                    torch.from_numpy(video.masks[tags[0]]).float(), "", **extra)
        intervals = json.loads(out["result"][0])
        first = video.subjects[0]
        assert intervals[tags[0]] == [first.first / 8.0, (first.last + 1) / 8.0]
        assert out["result"][1].shape[-1] == 3 and out["result"][2] == "written"
    sample = load_sample(folders / "output" / "alchemint" / "datasets" / "written" / "clip_0")
    assert sample.caption == random_video(np.random.default_rng(40), "train", 17, 64, 64).caption
    with torch.inference_mode():
        cache, = DatasetCache().cache("written", vae, clip, "written_cache", 9, 0, 0, 2, 0)
    assert cache.clips == 2
    frames, mask = torch.rand(5, 32, 32, 3), torch.ones(5, 32, 32)
    bad = [({"mask_1": torch.ones(4, 32, 32)}, r"mask_1 \('red ring'\) is \[4, 32, 32\] but the frames are"),
           ({"tag_1": "blue star"}, "does not appear in the caption"),
           ({"tag_1": ""}, "needs both tag_1 and mask_1"),
           ({"timed_captions": "[oops"}, "timed_captions is not JSON"),
           ({"sample": "../up"}, "plain name"),
           ({"sample": "clip_0", "dataset": "written"}, "already holds a sample")]
    for change, match in bad:
        args = {"frames": frames, "fps": 8.0, "caption": "a red ring", "dataset": "bad", "sample": "s",
                "tag_1": "red ring", "mask_1": mask, **change}
        with pytest.raises(ValueError, match=match):
            DatasetWriter().write(**args)
    assert not (folders / "output" / "alchemint" / "datasets" / "bad").exists()


def test_track_subjects_finds_each_tags_mask_track_through_the_curation_backends(folders):
    """A video and its tags -> one mask track per tag (the demo backend, no weights): the generator's masks and
    intervals come back from the example video the dataset workflow loads (H.264, as a user's own video)."""
    from alchemint_core.data.curate.stages import mask_iou
    from alchemint_core.data.dataset import read_video
    from alchemint_core.demo.data import example_video, write_example_videos
    path = write_example_videos(folders / "input")[0]
    truth = example_video(path.name)
    frames, _ = read_video(path)
    out = TrackSubjects().track(torch.from_numpy(frames).float() / 255, "red ring\n  yellow   star\n", "demo")
    masks, found = out["result"][:4], json.loads(out["result"][4])
    assert list(found) == ["red ring", "yellow star"] and not masks[2].any() and not masks[3].any()
    for mask, (tag, true) in zip(masks, truth.masks.items()):
        present = np.flatnonzero(true.any(axis=(1, 2)))
        assert found[tag] == [int(present[0]), int(present[-1])]
        assert np.mean([mask_iou(mask[f].numpy() > 0.5, true[f]) for f in present]) > 0.8
    assert json.loads(TrackSubjects().track(torch.from_numpy(frames).float() / 255, "blue disc", "demo")
                      ["result"][4]) == {"blue disc": None}  # not in the video: empty track, not an error
    video = torch.rand(3, 16, 16, 3)
    for tags, backend, match in [("", "demo", "no tags"), ("a\nb\nc\nd\ne", "demo", "at most 4"),
                                 ("the dog", "demo", "demo colour and shape"),
                                 ("the dog", "sam3", "alchemint_curation.*facebook/sam3")]:
        with pytest.raises(ValueError, match=match):
            TrackSubjects().track(video, tags, backend)
