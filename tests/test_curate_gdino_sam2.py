"""The gdino-sam2 curation backend (Grounding DINO + CLIP + SAM 2 video, the paper's own models) with tiny random-weight
models saved in the transformers format and loaded from their folders like a user's checkpoints; the public
checkpoints' real configs (tests/data/model_configs) are checked against the folders and the model classes."""
import json
import shutil
from pathlib import Path

import numpy as np
import pytest

transformers = pytest.importorskip("transformers")
import torch  # noqa: E402

from alchemint_core.data.curate import curate  # noqa: E402
from alchemint_core.data.curate.backends.gdino_sam2 import (GroundingDinoSam2Backend, frame_mask,  # noqa: E402
                                                            prompt)
from alchemint_core.data.curate.backends.models import MODEL_FOLDERS, model_folder  # noqa: E402
from alchemint_core.data.curate.pipeline import demo_tags  # noqa: E402
from alchemint_core.data.curate.stages import curate_entity, percentile_frames  # noqa: E402
from alchemint_core.data.dataset import DatasetError, list_samples, load_sample  # noqa: E402
from alchemint_core.demo.curation_check import curation_inputs  # noqa: E402
from alchemint_core.demo.data import write_demo_dataset  # noqa: E402
from tiny_models import SAM2_MEAN, SAM2_STD, save_clip, save_grounding_dino, save_sam2  # noqa: E402

CONFIGS = Path(__file__).parent / "data" / "model_configs"  # the public checkpoints' config.json files
FRAMES = 6  # short demo videos


@pytest.fixture(scope="module")
def models(tmp_path_factory) -> Path:
    """A --models folder of tiny random-weight checkpoints, each in the subfolder MODEL_FOLDERS names."""
    root = tmp_path_factory.mktemp("models")
    torch.manual_seed(0)
    for key, save in (("grounding-dino", save_grounding_dino), ("clip", save_clip), ("sam2", save_sam2)):
        save(root / MODEL_FOLDERS[key].name)
    return root


@pytest.fixture(scope="module")
def backend(models) -> GroundingDinoSam2Backend:
    return GroundingDinoSam2Backend.from_folder(models, device="cpu")


def parts(backend: GroundingDinoSam2Backend) -> tuple:
    """The loaded models and processors, to build another backend around them."""
    mean, std = (tuple(v.flatten().tolist()) for v in (backend.mean, backend.std))
    return backend.detector, backend.detector_processor, backend.clip, backend.tracker, mean, std


@pytest.fixture(scope="module")
def video(tmp_path_factory) -> np.ndarray:
    root = write_demo_dataset(tmp_path_factory.mktemp("truth"), 1, seed=11, frames=FRAMES)
    return load_sample(list_samples(root)[0]).frames


# ------------------------------------------------------------------------------------------------------------ tests

def test_curate_runs_the_pipeline_through_the_backend(tmp_path, models):
    """Videos and captions in, samples in the dataset format out: every tag is written with a mask track of the video's
    size or reported not found, whatever the random weights make of it."""
    write_demo_dataset(tmp_path / "truth", 2, seed=3, frames=FRAMES)
    curation_inputs(tmp_path / "truth", tmp_path / "videos", tmp_path / "captions.json")
    captions = json.loads((tmp_path / "captions.json").read_text())
    for entry in captions.values():  # one tag each, given: no language model here
        entry["tags"] = demo_tags(entry["caption"])[:1]
    (tmp_path / "captions.json").write_text(json.dumps(captions))
    report = curate(tmp_path / "videos", tmp_path / "out", tmp_path / "captions.json", backend="gdino-sam2",
                    models=models)
    assert not report.failed and len(report.written) == 2
    entities = 0
    for folder in list_samples(tmp_path / "out"):
        sample, truth = load_sample(folder), load_sample(tmp_path / "truth" / folder.name)
        assert np.array_equal(sample.frames, truth.frames) and sample.caption == truth.caption
        tags = captions[folder.name]["tags"]
        found, missing = [e.tag for e in sample.entities], report.not_found.get(folder.name, [])
        assert sorted(found + missing) == sorted(tags)
        for entity in sample.entities:
            assert entity.masks.shape == truth.frames.shape[:3] and entity.masks.dtype == bool and entity.masks.any()
        entities += len(found)
    assert entities > 0  # the tiny tracker always sees its object: tracks reached the samples


def test_detections_reach_the_tracker_at_the_percentile_frames_of_the_interval(backend, video):
    class Recording(GroundingDinoSam2Backend):
        """The real backend, recording what each stage handed on."""
        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            self.detected, self.tracked = [], []

        def detect(self, frame, tag):
            self.detected.append(super().detect(frame, tag))
            return self.detected[-1]

        def track(self, frames, index, box):
            self.tracked.append((index, box))
            return super().track(frames, index, box)

    recording = Recording(*parts(backend), device="cpu", box_threshold=0.0)  # every query is a detection
    interval = (1, FRAMES - 1)
    masks, found = curate_entity(recording, video, "Red Ring", interval)
    frames = percentile_frames(*interval)
    assert [index for index, _ in recording.tracked] == frames and len(recording.detected) == len(frames)
    for (index, box), boxes in zip(recording.tracked, recording.detected):
        assert box in [b for b, _ in boxes]  # the box that reached SAM 2 is one Grounding DINO found at that frame
    assert masks.shape == video.shape[:3] and masks.dtype == bool and found[0] <= found[1]


def test_frames_before_the_detection_are_covered_by_the_backward_pass(backend, video):
    calls = []  # (session, frame, reverse, the SAM 2 output) for every frame the video model ran on
    def record(module, args, kwargs, out):
        calls.append((args[0], kwargs["frame_idx"], kwargs["reverse"], out.pred_masks))
    hook = backend.tracker.register_forward_hook(record, with_kwargs=True)
    try:
        index, box, (h, w) = FRAMES // 2, (10.0, 12.0, 40.0, 44.0), video.shape[1:3]
        masks = backend.track(video, index, box)
    finally:
        hook.remove()
    assert masks.shape == video.shape[:3] and masks.dtype == bool
    forward = [f for _, f, reverse, _ in calls if not reverse]
    backward = [f for _, f, reverse, _ in calls if reverse]
    assert forward == list(range(index, FRAMES)) and backward == list(range(index, -1, -1))
    for _, f, reverse, pred in calls:  # each frame's mask is the SAM 2 output of its pass, at the frame's size
        assert np.array_equal(masks[f], frame_mask(pred, h, w))
    assert masks[:index].any(axis=(1, 2)).all()  # the tracker's object is in every earlier frame
    # the prompt SAM 2 saw: the box's corners at the prompt frame, in its input's pixels (labels 2, 3: a box)
    prompt_points = calls[0][0].point_inputs_per_obj[0][index]
    size = backend.tracker.config.image_size
    corners = [[box[0] * size / w, box[1] * size / h], [box[2] * size / w, box[3] * size / h]]
    assert np.allclose(prompt_points["point_coords"].reshape(2, 2).numpy(), corners)
    assert prompt_points["point_labels"].flatten().tolist() == [2, 3]
    assert np.allclose(backend.mean.flatten(), SAM2_MEAN) and np.allclose(backend.std.flatten(), SAM2_STD)


def test_detect_and_similarity_speak_the_models_language(backend, video):
    assert prompt("  Red Ring ") == "red ring." and prompt("red ring.") == "red ring."
    h, w = video.shape[1:3]
    texts = []
    hook = backend.detector.register_forward_hook(
        lambda module, args, kwargs, out: texts.append(kwargs["input_ids"][0].tolist()), with_kwargs=True)
    try:
        default = backend.detect(video[0], "Red Ring")
    finally:
        hook.remove()
    tokenizer = backend.detector_processor.tokenizer
    assert texts == [tokenizer("red ring.").input_ids]  # the tag as Grounding DINO's one lower-case phrase
    everything = GroundingDinoSam2Backend(*parts(backend), device="cpu", box_threshold=0.0).detect(video[0], "red ring")
    assert len(everything) == backend.detector.config.num_queries >= len(default)  # the box threshold filters
    assert all(score > backend.box_threshold for _, score in default)
    for (x0, y0, x1, y1), score in everything:  # in the frame's pixels
        assert 0 <= x0 < x1 <= w and 0 <= y0 < y1 <= h and 0 <= score <= 1
    box = everything[0][0]
    s = backend.similarity(video[0], box, "red ring")
    assert -1.0 <= s <= 1.0 and s == backend.similarity(video[0], box, "red ring")
    assert s != backend.similarity(video[0], box, "blue star")  # the text reaches CLIP


@pytest.mark.parametrize("key, model_class, parameters", [
    ("grounding-dino", "GroundingDinoForObjectDetection", 172_250_626),  # the published 172M
    ("clip", "CLIPModel", 427_616_513),  # ViT-L/14's 428M
])
def test_the_public_checkpoints_configs_are_accepted_and_build(key, model_class, parameters):
    """The real config.json of the checkpoint MODEL_FOLDERS names passes the folder check, and its transformers class
    builds from it (on the meta device: no weights, no download) at the published size."""
    folder = model_folder(CONFIGS, key)
    config = transformers.AutoConfig.from_pretrained(folder, local_files_only=True)
    with torch.device("meta"):
        model = getattr(transformers, model_class)(config)
    assert config.model_type in MODEL_FOLDERS[key].model_types
    assert sum(p.numel() for p in model.parameters()) == parameters


def test_sam2_1_hiera_large_as_published_builds_at_its_size(tmp_path):
    """facebook/sam2.1-hiera-large's config.json could not be fetched here, so its architecture is written from the
    published sam2/configs/sam2.1/sam2.1_hiera_l.yaml (Hiera trunk: embed 144, 2 heads, stages 2-6-36-4, global
    blocks 23/33/43, windows 8-4-16-8; FPN over 1152/576/288/144 channels) as transformers' sam2_video config. It
    passes the folder check and its class builds at the model card's 224.4M parameters: the folder and backend take
    the checkpoint MODEL_FOLDERS names, not only the tiny test model."""
    trunk = {"model_type": "sam2_hiera_det_model", "hidden_size": 144, "num_attention_heads": 2,
             "blocks_per_stage": [2, 6, 36, 4], "embed_dim_per_stage": [144, 288, 576, 1152],
             "num_attention_heads_per_stage": [2, 4, 8, 16], "window_size_per_stage": [8, 4, 16, 8],
             "global_attention_blocks": [23, 33, 43]}
    vision = {"model_type": "sam2_vision_model", "backbone_config": trunk, "backbone_channel_list": [1152, 576, 288, 144]}
    transformers.Sam2VideoConfig(vision_config=vision).save_pretrained(tmp_path / MODEL_FOLDERS["sam2"].name)
    folder = model_folder(tmp_path, "sam2")
    config = transformers.AutoConfig.from_pretrained(folder, local_files_only=True)
    assert config.model_type in MODEL_FOLDERS["sam2"].model_types and "large" in MODEL_FOLDERS["sam2"].checkpoint
    with torch.device("meta"):
        model = transformers.Sam2VideoModel(config)
    assert round(sum(p.numel() for p in model.parameters()) / 1e6, 1) == 224.4


def test_a_missing_or_wrong_folder_is_one_line_naming_it_and_its_checkpoint(tmp_path):
    def error(models) -> str:
        with pytest.raises(DatasetError) as caught:
            GroundingDinoSam2Backend.from_folder(models)
        assert "\n" not in str(caught.value)
        return str(caught.value)

    detector, tracker = MODEL_FOLDERS["grounding-dino"].checkpoint, MODEL_FOLDERS["sam2"].checkpoint
    assert "grounding-dino/" in error(None) and detector in error(None)
    assert f"{tmp_path}/grounding-dino/config.json" in error(tmp_path)
    for key in ("grounding-dino", "clip"):
        shutil.copytree(CONFIGS / key, tmp_path / key)
    missing = error(tmp_path)
    assert f"{tmp_path}/sam2/config.json" in missing and tracker in missing
    shutil.copytree(CONFIGS / "clip", tmp_path / "sam2")  # a CLIP where SAM 2 belongs
    wrong = error(tmp_path)
    assert "holds a 'clip' model, not sam2_video" in wrong and tracker in wrong
    (tmp_path / "videos").mkdir()
    (tmp_path / "captions.json").write_text("{}")
    with pytest.raises(DatasetError, match="--models is needed"):  # through the curation entry point too
        curate(tmp_path / "videos", tmp_path / "out", tmp_path / "captions.json", backend="gdino-sam2")


def test_a_folder_without_weights_is_one_line_naming_it(tmp_path, models):
    for key in ("grounding-dino", "clip", "sam2"):
        shutil.copytree(models / key, tmp_path / key)
    (tmp_path / "clip" / "model.safetensors").unlink()
    with pytest.raises(DatasetError) as caught:
        GroundingDinoSam2Backend.from_folder(tmp_path, device="cpu")
    message = str(caught.value)
    assert "\n" not in message and f"{tmp_path}/clip could not be loaded" in message
    assert MODEL_FOLDERS["clip"].checkpoint in message
