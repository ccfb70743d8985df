"""The sam3 curation backend on tiny random-weight SAM 3 checkpoints saved the way facebook/sam3 is laid out (one
sam3_video config.json, safetensors weights, a CLIP tokenizer), loaded from a --models folder like a user's."""
import json
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("transformers")

import torch  # noqa: E402
from transformers import CLIPTokenizer, Sam3VideoConfig, Sam3VideoModel  # noqa: E402

from alchemint_core.data.curate import curate  # noqa: E402
from alchemint_core.data.curate.backends.models import model_folder  # noqa: E402
from alchemint_core.data.curate.backends.sam3 import Sam3Backend  # noqa: E402
from alchemint_core.data.curate.pipeline import demo_tags  # noqa: E402
from alchemint_core.data.curate.stages import curate_entity, ground, percentile_frames  # noqa: E402
from alchemint_core.data.dataset import DatasetError, list_samples, load_sample  # noqa: E402

REAL_CONFIG = Path(__file__).parent / "data" / "model_configs" / "sam3" / "config.json"
SIZE = 28  # model input side: 2 x 2 patches of 14 pixels
WIDTH = 128  # the tracker reads 64-channel memories (fixed in transformers) and splits wider object pointers into them


def tiny_config() -> Sam3VideoConfig:
    backbone = {"model_type": "sam3_vit_model", "hidden_size": 16, "intermediate_size": 32, "num_hidden_layers": 1,
                "num_attention_heads": 2, "image_size": SIZE, "pretrain_image_size": SIZE, "window_size": 2,
                "global_attn_indexes": [0]}
    grid = SIZE // 14
    small = {"hidden_size": WIDTH, "num_attention_heads": 2, "intermediate_size": 32}
    detector = {
        "vision_config": {"backbone_config": backbone, "fpn_hidden_size": WIDTH,
                          "backbone_feature_sizes": [[4 * grid] * 2, [2 * grid] * 2, [grid] * 2]},
        "text_config": {"vocab_size": 520, "hidden_size": 16, "intermediate_size": 32, "projection_dim": 16,
                        "num_hidden_layers": 1, "num_attention_heads": 2, "max_position_embeddings": 32,
                        "bos_token_id": 0, "eos_token_id": 1, "pad_token_id": 1},
        "geometry_encoder_config": {**small, "num_layers": 1},
        "detr_encoder_config": {**small, "num_layers": 1},
        "detr_decoder_config": {**small, "num_layers": 1, "num_queries": 6},
        "mask_decoder_config": {"hidden_size": WIDTH, "num_attention_heads": 2},
    }
    tracker = {"image_size": SIZE, "vision_config": {"backbone_config": backbone, "fpn_hidden_size": WIDTH},
               "prompt_encoder_config": {"hidden_size": WIDTH},
               "mask_decoder_config": {"hidden_size": WIDTH, "mlp_dim": 32, "num_attention_heads": 2,
                                       "iou_head_hidden_dim": 16},
               "memory_attention_hidden_size": WIDTH, "memory_attention_num_layers": 1,
               "memory_attention_feed_forward_hidden_size": 32, "memory_encoder_hidden_size": WIDTH,
               "mask_downsampler_embed_dim": WIDTH, "memory_fuser_embed_dim": WIDTH,
               "memory_fuser_intermediate_dim": 32, "num_maskmem": 3}
    return Sam3VideoConfig(detector_config=detector, tracker_config=tracker, low_res_mask_size=4 * grid)


def byte_level_tokenizer() -> CLIPTokenizer:
    """CLIP's tokenizer over single byte-level characters (no merges): every word is spelled out."""
    from tokenizers import pre_tokenizers
    vocab = {"<|startoftext|>": 0, "<|endoftext|>": 1}
    for suffix in ("", "</w>"):
        for char in sorted(pre_tokenizers.ByteLevel.alphabet()):
            vocab[char + suffix] = len(vocab)
    return CLIPTokenizer(vocab=vocab, merges=[])


def confident(model: Sam3VideoModel) -> Sam3VideoModel:
    """Weights that make SAM 3 sure of everything: every detector query scores ~1 for any text, and the tracker
    sees the object in every frame with positive mask logits everywhere."""
    def constant(layer, value):
        torch.nn.init.zeros_(layer.weight)
        torch.nn.init.constant_(layer.bias, value)
    with torch.no_grad():
        scoring = model.detector_model.dot_product_scoring
        constant(scoring.text_proj, 1.0)
        constant(scoring.query_proj, 1.0)
        constant(model.detector_model.detr_decoder.presence_head.layer3, 10.0)
        decoder = model.tracker_model.mask_decoder
        constant(decoder.pred_obj_score_head.proj_out, 10.0)
        constant(decoder.upscale_conv2, 2.0)
        constant(decoder.conv_s0, 0.0)
        for mlp in decoder.output_hypernetworks_mlps:
            constant(mlp.proj_out, 1.0)
    return model


def write_checkpoint(models: Path, seed: int, sure: bool = False) -> Path:
    folder = models / "sam3"
    torch.manual_seed(seed)
    model = Sam3VideoModel(tiny_config())
    (confident(model) if sure else model).save_pretrained(folder)
    byte_level_tokenizer().save_pretrained(folder)
    (folder / "preprocessor_config.json").write_text(json.dumps({
        "image_processor_type": "Sam3ImageProcessor", "image_mean": [0.5] * 3, "image_std": [0.5] * 3,
        "size": {"height": SIZE, "width": SIZE}}))
    return models


@pytest.fixture(scope="module")
def random_models(tmp_path_factory):
    return write_checkpoint(tmp_path_factory.mktemp("random"), seed=0)


@pytest.fixture(scope="module")
def sure_models(tmp_path_factory):
    return write_checkpoint(tmp_path_factory.mktemp("sure"), seed=1, sure=True)


def demo_videos(root: Path, samples: int) -> tuple[Path, Path]:
    """Short demo videos as frame folders, and a captions file giving each video's first tag (so no language model
    is needed)."""
    from alchemint_core.demo.curation_check import curation_inputs
    from alchemint_core.demo.data import write_demo_dataset
    write_demo_dataset(root / "truth", samples, seed=3, frames=4, size=40)
    curation_inputs(root / "truth", root / "videos", root / "captions.json")
    captions = json.loads((root / "captions.json").read_text())
    for entry in captions.values():
        entry["tags"] = demo_tags(entry["caption"])[:1]
    (root / "captions.json").write_text(json.dumps(captions))
    return root / "videos", root / "captions.json"


@pytest.mark.parametrize("weights", ["random", "sure"])
def test_curate_runs_through_the_sam3_backend(tmp_path, weights, random_models, sure_models):
    videos, captions = demo_videos(tmp_path, 2)
    report = curate(videos, tmp_path / "out", captions, backend="sam3",
                    models=random_models if weights == "random" else sure_models)
    assert report.failed == {} and sorted(report.written) == ["s000000", "s000001"]
    given = json.loads(captions.read_text())
    for folder in list_samples(tmp_path / "out"):
        sample = load_sample(folder)  # the dataset format that `cache` reads
        assert sample.frames.shape == (4, 40, 40, 3)
        found = [e.tag for e in sample.entities]
        assert sorted(found + report.not_found.get(folder.name, [])) == given[folder.name]["tags"]
        for entity in sample.entities:
            assert entity.masks.shape == (4, 40, 40) and entity.masks.dtype == bool and entity.masks.any()
    if weights == "sure":  # the tag is found, its mask track covering every frame
        assert report.not_found == {}
        assert all(e.masks.all() for f in list_samples(tmp_path / "out") for e in load_sample(f).entities)


class RecordingBackend(Sam3Backend):
    """The real backend, noting what reaches the tracker and the frames the tracker answers for."""
    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.tracks, self.answered = [], []

    def track(self, frames, index, box):
        self.tracks.append((index, box))
        self.answered.append([])
        return super().track(frames, index, box)

    def propagate(self, session, n, index):
        for out in super().propagate(session, n, index):
            self.answered[-1].append(out.frame_idx)
            yield out


def recording(models: Path, dtype=None) -> RecordingBackend:
    loaded = Sam3Backend.from_folder(models, device="cpu", dtype=dtype)
    return RecordingBackend(loaded.model, loaded.tokenizer, device="cpu", dtype=loaded.dtype)


def test_detections_reach_the_tracker_at_the_percentile_frames_and_it_tracks_back_to_frame_0(sure_models):
    backend = recording(sure_models)
    frames = np.random.default_rng(0).integers(0, 256, (6, 30, 40, 3), dtype=np.uint8)
    interval = (2, 4)
    masks, found = curate_entity(backend, frames, "red ring", interval)
    detections = ground(backend, frames, "red ring", interval)
    assert [d.frame for d in detections] == percentile_frames(*interval) == [2, 3, 4]
    assert backend.tracks == [(d.frame, d.box) for d in detections]
    # each track: the detection frame, forward to the last frame, then backward down to frame 0
    assert backend.answered == [[2, 3, 4, 5, 1, 0], [3, 4, 5, 2, 1, 0], [4, 5, 3, 2, 1, 0]]
    assert masks.shape == (6, 30, 40) and masks.all() and found == (0, 5)


def test_bfloat16_runs_and_masks_cover_frames_before_the_prompt(sure_models):
    backend = recording(sure_models, dtype=torch.bfloat16)
    assert backend.model.dtype == torch.bfloat16
    frames = np.random.default_rng(1).integers(0, 256, (4, 30, 40, 3), dtype=np.uint8)
    (box, score), *_ = backend.detect(frames[2], "blue cross")
    masks = backend.track(frames, 2, box)
    assert score > 0.9 and backend.answered == [[2, 3, 1, 0]]
    assert masks.shape == (4, 30, 40) and masks[:2].all()


def test_boxes_are_in_pixels_and_similarity_is_sam3s_score_of_the_box(random_models):
    backend = Sam3Backend.from_folder(random_models, device="cpu")
    frame = np.random.default_rng(2).integers(0, 256, (30, 50, 3), dtype=np.uint8)
    boxes, scores = backend.scored_queries(frame, "blue cross")
    assert boxes.shape == (6, 4) and ((0 <= scores) & (scores <= 1)).all()
    assert (boxes >= 0).all() and (boxes[:, [0, 2]] <= 50).all() and (boxes[:, [1, 3]] <= 30).all()
    assert backend.threshold == 0.5  # the checkpoint's own detection threshold
    backend.threshold = 0.0
    detected = backend.detect(frame, "blue cross")
    assert detected and all(backend.similarity(frame, box, "blue cross") == pytest.approx(score, rel=1e-5)
                            for box, score in detected)
    assert backend.similarity(frame, (49.0, 29.0, 50.0, 30.0), "blue cross") < max(s for _, s in detected) / 10


def test_the_accepted_model_type_is_the_one_of_facebook_sam3s_architecture(tmp_path):
    """facebook/sam3's config.json names "architectures": ["Sam3VideoModel"] (its public copies show it; the repo
    itself is gated); transformers registers that class under the model_type the folder check accepts. The
    full-size default config (documented by transformers as facebook/sam3's) passes the check and builds on the meta
    device at facebook/sam3's size (0.9B parameters on its model page)."""
    from transformers import AutoModel
    from transformers.models.auto.modeling_auto import MODEL_MAPPING_NAMES
    from alchemint_core.data.curate.backends.models import MODEL_FOLDERS
    assert [MODEL_MAPPING_NAMES[t] for t in MODEL_FOLDERS["sam3"].model_types] == ["Sam3VideoModel"]
    Sam3VideoConfig().save_pretrained(tmp_path / "sam3")
    with torch.device("meta"):
        model = AutoModel.from_config(Sam3VideoConfig.from_pretrained(model_folder(tmp_path, "sam3")))
    assert type(model) is Sam3VideoModel and model.tracker_model.vision_encoder is None  # one shared backbone
    assert round(sum(p.numel() for p in model.parameters()) / 1e9, 1) == 0.9


@pytest.mark.skipif(not REAL_CONFIG.is_file(), reason=f"{REAL_CONFIG} absent: facebook/sam3 is gated (its "
                    "config.json too) and no public copy of the whole file could be fetched; put the real file there")
def test_the_real_facebook_sam3_config_is_accepted_and_builds(tmp_path):
    from transformers import AutoModel
    (tmp_path / "sam3").mkdir()
    (tmp_path / "sam3" / "config.json").write_bytes(REAL_CONFIG.read_bytes())
    with torch.device("meta"):
        model = AutoModel.from_config(Sam3VideoConfig.from_pretrained(model_folder(tmp_path, "sam3")))
    assert type(model) is Sam3VideoModel
    assert model.config.detector_config.vision_config.backbone_config.image_size == 1008


@pytest.mark.parametrize("files,match", [
    (None, "--models is needed"),
    ((), "no .*sam3/config.json"),
    (("sam2_video",), "holds a 'sam2_video' model"),
    (("config.json",), "no tokenizer"),
    (("config.json", "tokenizer.json", "tokenizer_config.json", "preprocessor_config.json"),
     "no file named model.safetensors"),
])
def test_a_missing_or_wrong_folder_is_one_line_naming_it(tmp_path, random_models, files, match):
    videos, captions = demo_videos(tmp_path, 1)
    models = None if files is None else tmp_path / "models"
    if files is not None:
        (models / "sam3").mkdir(parents=True)
        for name in files:
            if name == "sam2_video":
                (models / "sam3" / "config.json").write_text('{"model_type": "sam2_video"}')
            else:
                (models / "sam3" / name).write_bytes((random_models / "sam3" / name).read_bytes())
    with pytest.raises(DatasetError, match=match) as err:
        curate(videos, tmp_path / "out", captions, backend="sam3", models=models)
    line = str(err.value)
    assert "\n" not in line and "facebook/sam3" in line and (models is None or str(models / "sam3") in line)
