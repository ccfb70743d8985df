"""Curation (the paper's data pipeline) with the demo backend, scored against the demo generator's exact masks."""
import json

import numpy as np
import pytest

from alchemint_core import cli
from alchemint_core.data.curate import curate
from alchemint_core.data.curate.masks import connected_regions, dilate
from alchemint_core.data.curate.stages import clean, merge_duplicates, nms, percentile_frames
from alchemint_core.data.dataset import DatasetError, list_samples, load_sample
from alchemint_core.demo.curation_check import curation_inputs, run_curation_check


def test_percentile_frames_nms_and_regions():
    assert percentile_frames(0, 16) == [2, 5, 8, 11, 14] and percentile_frames(3, 3) == [3]
    boxes = [((0, 0, 10, 10), 0.5), ((1, 1, 11, 11), 0.9), ((20, 20, 30, 30), 0.1)]
    assert nms(boxes) == [((1, 1, 11, 11), 0.9), ((20, 20, 30, 30), 0.1)]
    mask = np.zeros((12, 12), bool)
    mask[1:4, 1:4] = True
    mask[6:11, 7:11] = True
    mask[4, 4] = True  # touches the first square diagonally: 8-connected
    regions = connected_regions(mask)
    assert [int(r.sum()) for r in regions] == [20, 10] and not (regions[0] & regions[1]).any()
    assert dilate(mask[:5, :5], 1).sum() == 25


def test_cleaning_merges_tracks_of_one_entity_and_keeps_the_trainers_interval():
    track = np.zeros((10, 20, 20), bool)
    track[2:8, 5:12, 5:12] = True
    shifted = np.zeros_like(track)
    shifted[3:9, 6:12, 5:12] = True  # the same entity, tracked from another detection
    other = np.zeros_like(track)
    other[0:2, 0:3, 0:3] = True  # something else, present briefly
    merged = merge_duplicates([track, shifted, other])
    assert len(merged) == 2 and merged[0][8].any() and merged[0][2].any()
    masks, interval = clean([track, shifted, other])
    assert interval == (2, 8)
    assert clean([np.zeros_like(track)]) is None


def test_curate_recovers_the_generators_intervals_and_masks(tmp_path):
    """Videos and captions only (no masks) -> samples whose intervals and masks match the truth."""
    scores = run_curation_check(tmp_path, 8)
    assert scores["samples"] == 8 and scores["entities"] >= 10
    assert scores["t_iou"][0] >= 0.98 and scores["mask_iou"][0] >= 0.9
    assert scores["samples_with_a_missed_entity"] == 0 and scores["samples_with_a_duplicated_entity"] == 0
    curated = list_samples(tmp_path / "curated_png")
    sample = load_sample(curated[0])  # the dataset format, read by the loader that `cache` uses
    assert sample.entities and sample.frames.shape == (17, 64, 64, 3)
    # `cache` reads the curated set unchanged, and a short training run learns from it
    from alchemint_core.data.cache import CacheConfig, build_cache
    from alchemint_core.demo.pipeline import ENCODERS_FILE
    from alchemint_core.encoders import load_encoders
    from alchemint_core.training.config import TrainConfig
    from alchemint_core.training.trainer import Trainer
    from training_fixtures import train_config
    vae, text = load_encoders(ENCODERS_FILE)
    cached = build_cache(tmp_path / "curated_png", tmp_path / "cache", vae, text, CacheConfig(num_frames=9),
                         encoder_id="demo")
    assert len(cached.encoded) == 8
    model = {"dim": 64, "ffn_dim": 128, "num_heads": 2, "num_layers": 2, "in_dim": 32, "out_dim": 32,
             "text_dim": 64, "freq_dim": 32}
    result = Trainer(TrainConfig.from_dict(train_config(tmp_path / "cache", tmp_path / "run", model=model, steps=3)),
                     show_bar=False).run()
    assert result.output.is_file()
    # a rerun skips every finished sample; a folder a killed run left without sample.json is redone
    (curated[1] / "sample.json").unlink()
    report = curate(tmp_path / "videos_png", tmp_path / "curated_png", tmp_path / "captions_png.json",
                    backend="demo")
    assert report.written == [curated[1].name] and len(report.skipped) == 7


def test_bad_videos_and_tags_are_reported_and_the_run_goes_on(tmp_path, capsys):
    from alchemint_core.demo.data import write_demo_dataset
    write_demo_dataset(tmp_path / "truth", 2, seed=3)
    curation_inputs(tmp_path / "truth", tmp_path / "videos", tmp_path / "captions.json")
    captions = json.loads((tmp_path / "captions.json").read_text())
    (tmp_path / "videos" / "broken.mp4").write_bytes(b"not a video")
    first = sorted(captions)[0]
    captions["broken.mp4"] = "a red ring"
    absent = next(c for c in ("green", "cyan", "blue", "red") if c not in captions[first]["caption"])
    captions[first]["caption"] += f" and a {absent} cross"  # a tag found in no frame
    (tmp_path / "videos" / "empty.mp4").write_bytes(b"")
    captions["empty.mp4"] = "a red ring"
    (tmp_path / "videos" / "no_frames").mkdir()  # a frame folder without images
    captions["no_frames"] = {"caption": "a red ring", "fps": 8}
    captions["gone.mp4"] = "a video that is not in the folder"
    second = sorted(c for c in captions if c.startswith("s"))[1]
    many = [f"red ring number {i}" for i in range(3000)]  # thousands of tags: the first 64 are curated
    captions[second].update(caption=captions[second]["caption"] + ", " + ", ".join(many), tags=many)
    (tmp_path / "captions.json").write_text(json.dumps(captions))
    assert cli.main(["curate", "--videos", str(tmp_path / "videos"), "--out", str(tmp_path / "out"),
                     "--captions", str(tmp_path / "captions.json"), "--backend", "demo"]) == 0
    out = capsys.readouterr().out
    assert "2 samples written" in out and "3 videos failed" in out and "failed: broken.mp4" in out
    assert "failed: empty.mp4" in out and "failed: no_frames" in out
    assert "1 name(s) match no video in the folder and are left out (first: 'gone.mp4')" in out
    assert f"not found in {first}: {absent} cross" in out
    assert "2936 tags after the first 64 left out" in out
    assert len(load_sample(tmp_path / "out" / second).entities) <= 64
    assert not any((tmp_path / "out" / name).exists() for name in ("broken", "empty", "no_frames"))


@pytest.mark.parametrize("content,match", [(None, "no such file"), (b"\xff\xfe{", "not UTF-8"),
                                           (b'{"s000000": {"tags": ["x"]}}', 'needs a non-empty "caption"')])
def test_bad_captions_files_are_explained(tmp_path, content, match):
    from alchemint_core.demo.data import write_demo_dataset
    write_demo_dataset(tmp_path / "truth", 1, seed=3)
    curation_inputs(tmp_path / "truth", tmp_path / "videos", tmp_path / "ok.json")
    path = tmp_path / "captions.json"
    if content is not None:
        path.write_bytes(content)
    with pytest.raises(DatasetError, match=match):
        curate(tmp_path / "videos", tmp_path / "out", path, backend="demo")


def test_tag_rules_keep_groundable_phrases_of_the_caption_once():
    from alchemint_core.data.curate.tags import apply_rules, prompts
    caption = "The man in red waves his hand at a crowd near a red ball on the left"
    kept, dropped = apply_rules(caption, ["man in red", "hand", "crowd", "red ball", "Red  ball", "blue car", "left"])
    assert kept == ["man in red", "red ball"]
    assert set(dropped) == {"hand", "crowd", "Red ball", "blue car", "left"}
    assert dropped["blue car"] == "not a phrase of the caption" and dropped["Red ball"] == "given twice"
    texts = prompts()
    assert "{caption}" in texts["extract"] and "{tags}" in texts["filter"]


def test_curate_with_workers_reports_every_part(tmp_path, capsys, monkeypatch):
    """--workers 2: the second process's videos are counted in the one summary, which equals a one-process run's."""
    from alchemint_core.demo.data import write_demo_dataset
    monkeypatch.chdir(cli.Path(__file__).resolve().parents[1])  # the workers run `python -m alchemint_core`
    write_demo_dataset(tmp_path / "truth", 4, seed=5)
    curation_inputs(tmp_path / "truth", tmp_path / "videos", tmp_path / "captions.json")
    (tmp_path / "videos" / "broken.mp4").write_bytes(b"not a video")
    captions = json.loads((tmp_path / "captions.json").read_text()) | {"broken.mp4": "a red ring"}
    (tmp_path / "captions.json").write_text(json.dumps(captions))
    summaries = []
    for out, workers in (("one", "1"), ("two", "2")):
        assert cli.main(["curate", "--videos", str(tmp_path / "videos"), "--out", str(tmp_path / out),
                         "--captions", str(tmp_path / "captions.json"), "--backend", "demo",
                         "--workers", workers]) == 0
        summaries.append(capsys.readouterr().out)
    assert summaries[0] == summaries[1] and "4 samples written" in summaries[1] and "failed: broken.mp4" in summaries[1]
    assert [p.name for p in list_samples(tmp_path / "two")] == [p.name for p in list_samples(tmp_path / "one")]
    assert not list((tmp_path / "two").glob(".curate-report-*"))
