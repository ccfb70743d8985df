"""The bad-input catalogue: every way a user can hand the pack something unusable, through the real entry points
(the CLI, the ComfyUI nodes' functions, the timeline widget's JSON, files on disk).

Each case must fail with one line that names the input and says how to fix it, without a traceback, without
writing anything, and within the timeout. Inputs that are unusual but fine (other image sizes, greyscale, RGBA,
full masks) are accepted and tested in `test_unusual_but_valid_inputs_work`.
"""
from __future__ import annotations

import json
import pickle
import re
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import pytest
import torch
from safetensors.torch import save_file

import alchemint_core as ac
from alchemint_core import cli
from alchemint_core.demo.data import write_demo_dataset
from alchemint_core.demo.pipeline import ENCODERS_FILE, MODEL_FILE, WEIGHTS
from alchemint_core.encoders import TinyVideoVAE, load_encoders, save_encoders
from alchemint_core.model.loading import save_adapter
from alchemint_core.synthetic import Appearance, render_reference
from conftest import TINY, tiny_model
from nodes import bridge
from nodes.models import NO_ADAPTER, SHIPPED, DemoModel, ModelLoader
from nodes.references import MASK_MEANINGS, ReferenceLoader
from nodes.sampling import MultiCFGGuider, Sampler, WeRoPEConditioner
from nodes.curation import TrackSubjects
from nodes.timeline import IntervalTimeline
from nodes.training import DatasetWriter

pytestmark = pytest.mark.timeout(120)


@dataclass
class Env:
    tmp: Path
    capsys: pytest.CaptureFixture
    demo: tuple  # Demo Model node outputs: model, vae, clip


@dataclass(frozen=True)
class Case:
    id: str
    trigger: Callable[[Env], str]  # runs the bad input, returns the error message the user sees
    names: str  # regex: the message names the input
    fix: str  # regex: ... and says what to do


# ------------------------------------------------------------------------------------------------ entry points

def cli_error(env: Env, *argv: str) -> str:
    """`python -m alchemint_core ...` in this process: exit code 2 and one 'error: ...' line on stderr."""
    env.capsys.readouterr()
    code = cli.main(list(argv))
    err = env.capsys.readouterr().err
    assert code == 2, f"exit code {code}, stderr {err!r}"
    assert "Traceback" not in err, err
    last = err.strip().splitlines()[-1]  # progress bars may come first, on lines of their own
    assert last.startswith("error: "), err
    return last[len("error: "):]


def demo_error(env: Env, *argv: str) -> str:
    return cli_error(env, "demo", "--out", str(env.tmp / "out" / "v.mp4"), *argv)


def curate_error(env: Env, *argv: str, videos: str = "videos", captions: bytes = b'{"a": "a red ring"}') -> str:
    """`curate` on a folder with one frame folder `a` and the given captions file."""
    frames = env.tmp / "in" / "videos" / "a"
    frames.mkdir(parents=True, exist_ok=True)
    return cli_error(env, "curate", "--videos", str(env.tmp / "in" / videos), "--captions",
                     str(write(env, "captions.json", captions)), "--out", str(env.tmp / "out" / "dataset"), *argv)


def evaluate_error(env: Env, *argv: str) -> str:
    return cli_error(env, "evaluate", "--out", str(env.tmp / "out" / "e.json"), *argv)


def node_error(call: Callable[[], object]) -> str:
    with pytest.raises(ValueError) as info:
        call()
    return str(info.value)


def encode(clip, text):
    """What ComfyUI's CLIP Text Encode node does."""
    return clip.encode_from_tokens_scheduled(clip.tokenize(text))


def image(colour="red", shape="ring", size=64):
    rgb, mask = render_reference(np.random.default_rng(0), Appearance(colour, shape, "solid"), size, size)
    return torch.from_numpy(rgb).float()[None] / 255, torch.from_numpy(mask.astype(np.float32))[None]


def chain(env: Env, tags=("red ring", "yellow star")):
    _, vae, clip = env.demo
    refs = None
    for tag in tags:
        img, mask = image(*tag.split())
        refs, = ReferenceLoader().load(img, tag, vae, clip, mask, MASK_MEANINGS[1], refs)
    return refs


def timeline_json(*bars):
    return json.dumps({"version": 1, "subjects": [{"tag": t, "start": a, "end": b} for t, a, b in bars]})


def sample(env: Env, refs=None, width=64, height=64, steps=2, ref_scale=2.0, text_scale=3.0,
           timeline=None):
    model, _, clip = env.demo
    refs = refs or chain(env)
    tl, = IntervalTimeline().build(refs, 17, 8.0, timeline or timeline_json(*[(t, 0.0, 1.0) for t in refs.tags]))
    cond, _ = WeRoPEConditioner().condition(model, tl, encode(clip, "a red ring"), "as trained", 1.0, -0.4, 0.0)
    guider, = MultiCFGGuider().guide(encode(clip, ""), ref_scale, text_scale, 0.0, False)
    return Sampler().sample(model, cond, guider, width, height, steps, 3.0, 0)


def build_timeline(env: Env, value, refs=None, frames=17, fps=8.0):
    """The Interval Timeline as ComfyUI runs it: VALIDATE_INPUTS first (the message shown on the node), then build."""
    message = IntervalTimeline.VALIDATE_INPUTS(value, frames, fps)
    if message is not True:
        return message
    return node_error(lambda: IntervalTimeline().build(refs or chain(env), frames, fps, value))


# ------------------------------------------------------------------------------------------------ bad files

def write(env: Env, name: str, data: bytes) -> Path:
    path = env.tmp / "in" / name
    path.parent.mkdir(exist_ok=True)
    path.write_bytes(data)
    return path


def truncated_model(env: Env) -> Path:
    return write(env, "cut.safetensors", MODEL_FILE.read_bytes()[: MODEL_FILE.stat().st_size // 2])


def encoders_of_another_channel_count(env: Env) -> Path:
    text = load_encoders(ENCODERS_FILE)[1]
    (env.tmp / "in").mkdir(exist_ok=True)
    return save_encoders(TinyVideoVAE(16, 16), text, env.tmp / "in" / "joint16.safetensors")


def pickle_renamed(env: Env) -> Path:
    return write(env, "model.safetensors", pickle.dumps({"patch_embedding.weight": [0.0] * 16}))


def not_wan(env: Env) -> Path:
    path = env.tmp / "in" / "vae.safetensors"
    path.parent.mkdir(exist_ok=True)
    save_file({"encoder.conv1.weight": torch.zeros(4, 3, 3, 3)}, str(path))
    return path


def model_folders(env: Env) -> None:
    """ComfyUI's model folders for the loader nodes, inside this case's temporary folder."""
    root = env.tmp / "models"
    bridge.SEARCH_PATHS.update({"diffusion_models": [root / "diffusion_models"],
                                bridge.MODEL_FOLDER: [root / bridge.MODEL_FOLDER]})
    for paths in bridge.SEARCH_PATHS.values():
        paths[0].mkdir(parents=True, exist_ok=True)


def adapter_for_another_base(env: Env) -> str:
    model_folders(env)
    ac.save_model(tiny_model(), env.tmp / "models" / "diffusion_models" / "wan_tiny.safetensors", with_adapter=False)
    other = ac.WanConfig(dim=128, ffn_dim=256, num_heads=2, num_layers=2, text_dim=64, freq_dim=32)
    save_adapter(tiny_model(cfg=other, adapter=ac.AdapterConfig()),
                 env.tmp / "models" / bridge.MODEL_FOLDER / "other.safetensors")
    return node_error(lambda: ModelLoader().load("wan_tiny.safetensors", "other.safetensors", "default"))


def dataset(env: Env, damage: Callable[[Path], None]) -> list[str]:
    """One demo sample, damaged, and the cache command over it (its output must not appear)."""
    data = env.tmp / "in" / "data"
    write_demo_dataset(data, 1, seed=5)
    damage(data / "s000000")
    return ["cache", "--data", str(data), "--out", str(env.tmp / "out" / "cache"), "--encoders", str(ENCODERS_FILE)]


def drop_frame(folder: Path) -> None:
    sorted((folder / "frames").glob("*.png"))[-1].unlink()


def shrink_masks(folder: Path) -> None:
    track = next((folder / "masks").glob("*.npz"))
    masks = np.load(track)["masks"]
    np.savez_compressed(track, masks=masks[:, ::2, ::2])


def unreadable_video(folder: Path) -> None:
    shutil.rmtree(folder / "frames")
    (folder / "video.mp4").write_bytes(b"\x00\x00\x00\x18ftypmp42" + bytes(range(256)) * 4)
    spec = json.loads((folder / "sample.json").read_text())
    (folder / "sample.json").write_text(json.dumps({**spec, "video": "video.mp4"}))


def huge_sample_json(folder: Path) -> None:
    spec = json.loads((folder / "sample.json").read_text())
    (folder / "sample.json").write_text(json.dumps({**spec, "notes": "x" * (3 << 20)}))


def prompts_file(env: Env, content: str) -> str:
    return str(write(env, "prompts.json", content.encode()))


JOINT_ENCODERS = WEIGHTS / "ablations" / "encoders.safetensors"  # the ablations' VAE codes four frames jointly
FIX = r"(give|use|make|move|drag|remove|pick|choose|check|load|save|reset|fix|put|add|re-?encode|export|convert|" \
      r"keep|write|name|connect|encode|download|delete|leave|install|one of|must be|expected)"

CASES = [
    # ---- intervals (CLI --subject, the widget's bars) ----
    Case("cli-reversed-interval", lambda e: demo_error(e, "--subject", "red ring:2.0-1.0"), r"'red ring'.*2", r"start < end"),
    Case("cli-empty-interval", lambda e: demo_error(e, "--subject", "red ring:1.0-1.0"), r"'red ring'", r"start < end"),
    Case("cli-nan-interval", lambda e: demo_error(e, "--subject", "red ring:nan-1.0"), r"'red ring'.*nan", r"finite number"),
    Case("cli-interval-outside-clip", lambda e: demo_error(e, "--subject", "red ring:1.0-5.0"), r"'red ring'.*5",
         r"move it inside"),
    Case("cli-negative-interval", lambda e: demo_error(e, "--subject", "red ring:-3-1"), r"'red ring'.*-3",
         r"move it inside"),
    Case("cli-interval-shorter-than-a-frame", lambda e: demo_error(e, "--subject", "red ring:1.0-1.05"),
         r"'red ring'.*1\.05", r"at least one frame"),
    Case("cli-subject-without-interval", lambda e: demo_error(e, "--subject", "red ring"), r"red ring",
         r"TAG:START-END"),
    Case("cli-more-subjects-than-the-model-takes",
         lambda e: demo_error(e, *sum((["--subject", f"{t}:0-1"] for t in
                                       ("red ring", "blue star", "green disc", "cyan cross", "red disc")), [])),
         r"5 subjects.*at most 4", r"remove subjects"),
    # ---- word tags ----
    Case("cli-empty-tag", lambda e: demo_error(e, "--subject", "  :0-1"), r"tag is empty", r"name the subject"),
    Case("cli-absurdly-long-tag", lambda e: demo_error(e, "--subject", "red ring " * 40 + ":0-1"),
         r"359 characters", r"keep it under 200"),
    Case("cli-tag-the-demo-cannot-draw", lambda e: demo_error(e, "--subject", "purple blob:0-1"), r"'purple blob'",
         r"give a reference image|e\.g\. 'red ring'"),
    Case("node-empty-tag", lambda e: node_error(lambda: ReferenceLoader().load(*image()[:1], "   ", e.demo[1], e.demo[2])),
         r"tag is empty", r"name the subject"),
    Case("node-absurdly-long-tag",
         lambda e: node_error(lambda: ReferenceLoader().load(*image()[:1], "dog " * 100, e.demo[1], e.demo[2])),
         r"399 characters", r"keep it under"),
    # ---- images and masks ----
    Case("node-empty-mask",
         lambda e: node_error(lambda: ReferenceLoader().load(image()[0], "red ring", e.demo[1], e.demo[2],
                                                             torch.zeros(1, 64, 64), MASK_MEANINGS[1])),
         r"mask of 'red ring' is empty", r"give a mask"),
    Case("node-transparent-png-with-nothing-opaque",
         lambda e: node_error(lambda: ReferenceLoader().load(image()[0], "red ring", e.demo[1], e.demo[2],
                                                             torch.ones(1, 64, 64), MASK_MEANINGS[0])),
         r"mask of 'red ring' is empty", r"give a mask"),
    Case("node-image-that-is-not-an-image",
         lambda e: node_error(lambda: ReferenceLoader().load(torch.rand(2, 3, 8, 64, 64), "red ring", e.demo[1],
                                                             e.demo[2])),
         r"reference image of 'red ring' has shape", r"give one image"),
    Case("node-image-with-nan",
         lambda e: node_error(lambda: ReferenceLoader().load(torch.full((1, 64, 64, 3), float("nan")), "red ring",
                                                             e.demo[1], e.demo[2])),
         r"reference image of 'red ring'.*NaN", r"load the image again"),
    # ---- clip length, size, steps, guidance ----
    Case("cli-frames-not-4k+1", lambda e: demo_error(e, "--frames", "16"), r"frame count 16", r"use 17"),
    Case("cli-zero-frames", lambda e: demo_error(e, "--frames", "0"), r"frame count 0", r"4k\+1"),
    Case("cli-zero-fps", lambda e: demo_error(e, "--fps", "0"), r"fps 0", r"must be a number in"),
    Case("node-frames-not-4k+1", lambda e: build_timeline(e, timeline_json(), frames=18), r"frame count 18",
         r"use 17"),
    # the demo model (patch size 1) needs multiples of 8; a Wan model (patch 2) of 16
    Case("node-size-not-a-multiple-of-vae-times-patch", lambda e: node_error(lambda: sample(e, width=70)), r"width 70",
         r"multiple of 8 .*e\.g\. 72"),
    Case("cli-zero-steps", lambda e: demo_error(e, "--steps", "0"), r"steps 0", r"from 1 to 1000"),
    Case("cli-huge-steps", lambda e: demo_error(e, "--steps", "100000000"), r"steps 100000000", r"from 1 to 1000"),
    Case("cli-nan-ref-scale", lambda e: demo_error(e, "--ref-scale", "nan"), r"--ref-scale.*ref_scale nan",
         r"finite number in \[0, 100\]"),
    Case("cli-negative-text-scale", lambda e: evaluate_error(e, "--text-scale", "-1"), r"--text-scale.*text_scale -1",
         r"finite number in \[0, 100\]"),
    Case("cli-evaluate-zero-shift", lambda e: evaluate_error(e, "--shift", "0"), r"shift 0\.0",
         r"\(0, 100\] \(default 3\.0\)"),
    Case("cli-nan-shift", lambda e: demo_error(e, "--shift", "nan"), r"shift nan", r"must be a number in"),
    Case("cli-eta-above-one", lambda e: evaluate_error(e, "--eta", "1.5"), r"--eta: eta 1\.5",
         r"number in \[0, 1\]: 0 integrates the flow"),
    Case("node-huge-steps", lambda e: node_error(lambda: sample(e, steps=5000)), r"steps 5000", r"from 1 to 1000"),
    Case("node-negative-guidance", lambda e: node_error(lambda: sample(e, ref_scale=-1.0)), r"ref_scale -1",
         r"must be a finite number in \[0, 100\]"),
    Case("node-nan-guidance", lambda e: node_error(lambda: sample(e, text_scale=float("nan"))), r"text_scale nan",
         r"must be a finite number"),
    Case("cli-video-format", lambda e: cli_error(e, "demo", "--out", str(e.tmp / "out" / "v.avi")), r"v\.avi",
         r"one of the suffixes \.mp4, \.webp, \.gif"),
    Case("cli-huge-upscale", lambda e: demo_error(e, "--scale", "1000"), r"scale 1000", r"from 1 to 16"),
    # ---- timeline widget JSON ----
    Case("timeline-not-json", lambda e: build_timeline(e, "{subjects: [oops"), r"timeline is not valid JSON",
         r"reset the widget"),
    Case("timeline-wrong-shape", lambda e: build_timeline(e, "[1, 2, 3]"), r"timeline JSON must be an object",
         r'"subjects"'),
    Case("timeline-oversized", lambda e: build_timeline(e, json.dumps({"subjects": [], "pad": "x" * 200_000})),
         r"larger than 64 KB", r"reset the widget"),
    Case("timeline-deeply-nested", lambda e: build_timeline(e, "[" * 100_000 + "]" * 100_000),
         r"timeline", r"reset the widget"),
    Case("timeline-too-many-bars", lambda e: build_timeline(e, timeline_json(*[("x", 0, 1)] * 65)),
         r"65 subjects", r"at most 64"),
    Case("timeline-nan-bar", lambda e: build_timeline(e, '{"version": 1, "subjects": [{"tag": "red ring", '
                                                         '"start": NaN, "end": 1}]}'),
         r"'red ring'.*start nan", r"finite number of seconds"),
    Case("timeline-string-times", lambda e: build_timeline(e, timeline_json(("red ring", "0", "1"))),
         r"'red ring'.*start '0'", r"finite number of seconds"),
    Case("timeline-reversed-bar", lambda e: build_timeline(e, timeline_json(("red ring", 1.5, 0.5))),
         r"'red ring'.*end 0\.5 s is not after start 1\.5", r"drag the bar's ends apart"),
    Case("timeline-bar-outside-clip", lambda e: build_timeline(e, timeline_json(("red ring", 1.0, 9.0))),
         r"'red ring'.*9", r"drag it inside"),
    Case("timeline-html-in-tag", lambda e: build_timeline(e, timeline_json(("<img src=x onerror=alert(1)>" * 20, 0, 1))),
         r"tag must be a string of at most 200", r"at most 200"),
    Case("timeline-future-version", lambda e: build_timeline(e, '{"version": 7, "subjects": []}'),
         r"version 7", r"expected 1"),
    Case("timeline-interval-without-subject",
         lambda e: build_timeline(e, timeline_json(("red ring", 0, 1), ("yellow star", 1, 2), ("blue disc", 0, 2))),
         r"3 bars but 2 subjects", r"one bar per subject"),
    Case("timeline-subject-without-interval", lambda e: build_timeline(e, timeline_json(("red ring", 0, 1))),
         r"1 bars but 2 subjects.*red ring, yellow star", r"one bar per subject"),
    Case("node-more-subjects-than-the-model-takes",
         lambda e: node_error(lambda: sample(e, refs=chain(e, ("red ring", "blue star", "green disc", "cyan cross",
                                                                "red disc")))),
         r"5 subjects.*at most 4", r"remove subjects"),
    # ---- checkpoints ----
    Case("cli-truncated-safetensors", lambda e: demo_error(e, "--model", str(truncated_model(e))), r"cut\.safetensors",
         r"truncated or corrupt.*save it again"),
    Case("cli-pickle-renamed-safetensors", lambda e: demo_error(e, "--model", str(pickle_renamed(e))),
         r"model\.safetensors.*pickle", r"convert it to \.safetensors"),
    Case("cli-non-wan-checkpoint", lambda e: demo_error(e, "--model", str(not_wan(e))), r"not a Wan 2\.1",
         r"Give the Wan 2\.1 T2V file"),
    Case("cli-missing-checkpoint", lambda e: demo_error(e, "--model", str(e.tmp / "nowhere.safetensors")),
         r"nowhere\.safetensors: no such file", r"check the path"),
    Case("cli-model-file-given-as-encoders", lambda e: demo_error(e, "--encoders", str(MODEL_FILE)),
         r"model\.safetensors: not a demo-encoders file", r"give the encoders\.safetensors"),
    Case("cli-encoders-of-another-latent-size",
         lambda e: demo_error(e, "--encoders", str(encoders_of_another_channel_count(e))),
         r"joint16\.safetensors: its VAE makes 16-channel latents.*reads 32", r"give the encoders the model was trained"),
    Case("node-adapter-for-another-base", adapter_for_another_base, r"other\.safetensors.*trained for a base",
         r"Load the base it was trained on"),
    Case("node-path-traversal", lambda e: (model_folders(e), node_error(lambda: ModelLoader().load(
        "../../../etc/passwd", NO_ADAPTER, "default")))[1], r"'\.\./\.\./\.\./etc/passwd' is not a file name inside",
         r"pick one from the list"),
    Case("node-absolute-path", lambda e: (model_folders(e), node_error(lambda: DemoModel().load(str(MODEL_FILE))))[1],
         r"is not a file name inside models/alchemint", r"pick one from the list"),
    # ---- datasets ----
    Case("dataset-missing-frame", lambda e: cli_error(e, *dataset(e, drop_frame)), r"has 17 frames but the video has 16",
         r"give one mask per video frame"),
    Case("dataset-mismatched-masks", lambda e: cli_error(e, *dataset(e, shrink_masks)), r"is 32x32 \(HxW\) but the video",
         r"write the masks at the video's resolution"),
    Case("dataset-unreadable-video", lambda e: cli_error(e, *dataset(e, unreadable_video)), r"video\.mp4",
         r"re-encode|export"),
    Case("cli-cache-negative-soft-subjects", lambda e: cli_error(e, *dataset(e, lambda f: None), "--soft-subjects", "-1"),
         r"soft_subjects=-1\.0", r"sigma in pixels, a finite number >= 0"),
    Case("dataset-missing-folder", lambda e: cli_error(e, "cache", "--data", str(e.tmp / "none"), "--out",
                                                       str(e.tmp / "out"), "--encoders", str(ENCODERS_FILE)),
         r"none: no such dataset folder", r"give the folder"),
    Case("dataset-oversized-sample-json", lambda e: cli_error(e, *dataset(e, huge_sample_json)),
         r"sample\.json .* MB, more than the 1024 KB", r"check that it is the right file"),
    # ---- config and prompt files ----
    Case("cli-oversized-config-file", lambda e: cli_error(e, "train", "--config", str(write(
        e, "big.json", b'{"steps": 1, "pad": "' + b"x" * (2 << 20) + b'"}'))), r"config file .*big\.json is 2\.0 MB",
         r"check that it is the right file"),
    Case("cli-oversized-prompts-file", lambda e: cli_error(e, "evaluate", "--prompts", prompts_file(
        e, "[" + ",".join(['{"subjects": [{"tag": "red star", "start": 0, "end": 1}]}'] * 30_000) + "]"),
        "--out", str(e.tmp / "out" / "r.json")), r"--prompts .*prompts\.json is 1\.\d MB", r"check that it is the right file"),
    Case("cli-unknown-training-option", lambda e: cli_error(e, "train", "--set", "stepz=3"), r"unknown options \['stepz'\]",
         r"check the spelling"),
    Case("cli-missing-config-file", lambda e: cli_error(e, "train", "--config", str(e.tmp / "none.toml")),
         r"none\.toml does not exist", r"check the path"),
    Case("cli-prompts-not-json", lambda e: cli_error(e, "evaluate", "--prompts", prompts_file(e, "[{oops"),
                                                     "--out", str(e.tmp / "out" / "r.json")),
         r"--prompts .*prompts\.json", r"expected a JSON list"),
    Case("cli-prompts-bad-interval", lambda e: cli_error(e, "evaluate", "--prompts", prompts_file(
        e, '[{"subjects": [{"tag": "red star", "start": 2, "end": 1}]}]'), "--out", str(e.tmp / "out" / "r.json")),
         r"red star.*not after start", r"start < end"),
    # ---- the latent-space probe ----
    Case("cli-probe-encoders-without-a-name", lambda e: cli_error(e, "probe", "--encoders", str(ENCODERS_FILE)),
         r"--encoders '.*encoders\.safetensors'", r"write NAME=PATH"),
    Case("cli-probe-joint-vae", lambda e: cli_error(e, "probe", "--encoders", f"joint={JOINT_ENCODERS}"),
         r"--encoders joint=.*a joint VAE", r"give encoders made with train-encoders --frame-wise"),
    # ---- curation (issue 32) ----
    Case("cli-curate-no-videos-folder", lambda e: curate_error(e, videos="nowhere"), r"--videos .*nowhere",
         r"give the folder"),
    Case("cli-curate-captions-not-utf8", lambda e: curate_error(e, captions=b'{"a": "\xff\xfe caf\xe9"}'),
         r"--captions .*not UTF-8", r"save it as UTF-8"),
    Case("cli-curate-captions-not-json", lambda e: curate_error(e, captions=b'{"a": '), r"--captions .*not JSON",
         r"write an object"),
    Case("cli-curate-model-folder-missing", lambda e: curate_error(e, "--backend", "sam3", "--models",
                                                                    str(e.tmp / "in" / "models")),
         r"sam3", r"put the facebook/sam3 checkpoint|pip install"),
    Case("node-track-subjects-too-many-tags",
         lambda e: node_error(lambda: TrackSubjects().track(torch.rand(3, 16, 16, 3), "a\nb\nc\nd\ne", "demo")),
         r"5 tags but at most 4", r"use a second node"),
    Case("node-dataset-writer-mask-of-another-size",
         lambda e: node_error(lambda: DatasetWriter().write(torch.rand(5, 32, 32, 3), 8.0, "a red ring", "bad", "s",
                                                            "red ring", torch.ones(5, 16, 16))),
         r"mask_1 \('red ring'\) is \[5, 16, 16\]", r"give one mask per frame"),
]


@pytest.fixture(scope="module")
def demo_nodes():
    return DemoModel().load(SHIPPED)


@pytest.fixture(autouse=True)
def own_model_folders():
    saved = {k: list(v) for k, v in bridge.SEARCH_PATHS.items()}
    yield
    bridge.SEARCH_PATHS.clear()
    bridge.SEARCH_PATHS.update(saved)


def test_the_catalogue_has_at_least_30_distinct_cases():
    assert len(CASES) >= 30 and len({c.id for c in CASES}) == len(CASES)


def files_under(folder: Path) -> dict[str, int]:
    return {str(p.relative_to(folder)): p.stat().st_size for p in folder.rglob("*") if p.is_file()}


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_bad_input_gets_one_line_naming_it_and_the_fix(case, tmp_path, capsys, demo_nodes, monkeypatch):
    monkeypatch.chdir(tmp_path)  # the CLI's default outputs land here and must not appear
    env = Env(tmp_path, capsys, demo_nodes)
    message = case.trigger(env)
    assert isinstance(message, str) and message, message
    assert "\n" not in message.strip() and "Traceback" not in message, message
    assert len(message) < 400, message
    assert re.search(case.names, message, re.IGNORECASE), f"does not name the input: {message}"
    assert re.search(case.fix, message, re.IGNORECASE) and re.search(FIX, message, re.IGNORECASE), \
        f"does not say the fix: {message}"
    written = {k: v for k, v in files_under(tmp_path).items() if not k.startswith(("in/", "models/"))}
    assert not written, f"left files behind: {written}"


def test_unusual_but_valid_inputs_work(demo_nodes):
    """Other sizes, greyscale, RGBA, a full mask and a batch of images are accepted and all give a video."""
    model, vae, clip = demo_nodes
    rgb, mask = image(size=64)
    big = torch.nn.functional.interpolate(rgb.permute(0, 3, 1, 2), size=(300, 170)).permute(0, 2, 3, 1)
    variants = {
        "other size": (big, None),
        "greyscale [H, W]": (rgb[0].mean(-1), None),
        "greyscale [1, H, W, 1]": (rgb.mean(-1, keepdim=True), None),
        "RGBA": (torch.cat([rgb, torch.ones_like(rgb[..., :1])], -1), None),
        "full mask": (rgb, torch.ones(1, 64, 64)),
        "mask of another size": (rgb, torch.nn.functional.interpolate(mask[None], size=(32, 32))[0]),
        "batch of images": (rgb.repeat(3, 1, 1, 1), None),
    }
    env = Env(Path("."), None, demo_nodes)
    for what, (img, m) in variants.items():
        refs, = ReferenceLoader().load(img, "red ring", vae, clip, m, MASK_MEANINGS[1])
        latent, = sample(env, refs=refs)
        assert torch.isfinite(latent["samples"]).all(), what
