"""Raw samples on disk -> training clips, on real files: PNG folders, PyAV-written containers, NPZ and PNG masks."""
import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from alchemint_core.data.dataset import (DatasetError, TimedCaption, crop_reference, entity_interval, frames_to_seconds,
                                    list_samples, load_sample, make_clip, presence, read_masks, read_video,
                                    write_sample)

H, W = 32, 48
GRASS, GREY = (30, 160, 40), (127, 127, 127)


def box_masks(n: int, present, top=8, left=10, size=12, h=H, w=W) -> np.ndarray:
    m = np.zeros((n, h, w), bool)
    for i in present:
        m[i, top:top + size, left:left + size] = True
    return m


def indexed_video(n: int, masks: np.ndarray | None = None, h=H, w=W) -> np.ndarray:
    """Grass frames; where the mask is, frame i is painted (12 i + 6, 0, 200), so a crop tells its source frame."""
    frames = np.empty((n, h, w, 3), np.uint8)
    frames[:] = GRASS
    if masks is not None:
        for i in range(n):
            frames[i][masks[i]] = (12 * i + 6, 0, 200)
    return frames


def source_frame(reference: np.ndarray, mask: np.ndarray) -> int:
    return int(round((np.median(reference[mask][:, 0]) - 6) / 12))


def sample_with(tmp_path: Path, n=9, name="s", **spec_changes) -> Path:
    """A valid sample (9 PNG frames, one 'square' entity), then sample.json edited by spec_changes."""
    folder = tmp_path / name
    masks = box_masks(n, range(n))
    write_sample(folder, indexed_video(n, masks), 8, "a square on grass", {"square": masks})
    spec = json.loads((folder / "sample.json").read_text())
    spec.update(spec_changes)
    (folder / "sample.json").write_text(json.dumps(spec))
    return folder


# ------------------------------------------------------------------------------------------------------ reading

def test_videos_read_back_what_was_written(tmp_path):
    masks = box_masks(9, range(9))
    frames = indexed_video(9, masks)  # flat colour regions: lossy coding keeps them close
    for fmt in ("png", "mp4", "gif"):
        write_sample(tmp_path / fmt, frames, 8, "a square", {"square": masks}, video_format=fmt)
    png, png_fps = read_video(tmp_path / "png" / "frames")
    assert png_fps is None and np.array_equal(png, frames)  # PNG folders are exact
    gif, _ = read_video(tmp_path / "gif" / "video.gif")
    assert np.array_equal(gif, frames)  # few colours: the palette holds them all
    mp4, mp4_fps = read_video(tmp_path / "mp4" / "video.mp4")
    assert mp4.shape == frames.shape and mp4_fps == pytest.approx(8)
    error = np.abs(mp4.astype(int) - frames)
    assert error.mean() < 3 and np.median(error) <= 2
    inside = mp4[:, 12:16, 14:18, 0].reshape(9, -1).mean(1)  # the frame index survives H.264
    assert np.abs(inside - (12 * np.arange(9) + 6)).max() < 4
    for fmt in ("png", "mp4", "gif"):
        sample = load_sample(tmp_path / fmt)
        assert sample.fps == 8 and sample.frames.shape == frames.shape and sample.entities[0].masks.sum() == 9 * 144


def test_sample_json_fps_overrides_the_containers_rate(tmp_path):
    folder = sample_with(tmp_path)
    write_sample(tmp_path / "mp4", indexed_video(9), 8, "a square", {"square": box_masks(9, range(9))},
                 video_format="mp4")
    spec = json.loads((folder / "sample.json").read_text())
    (tmp_path / "mp4" / "sample.json").write_text(json.dumps({**spec, "video": "video.mp4", "fps": 12}))
    assert load_sample(tmp_path / "mp4").fps == 12
    del spec["fps"]
    (tmp_path / "mp4" / "sample.json").write_text(json.dumps({**spec, "video": "video.mp4"}))
    assert load_sample(tmp_path / "mp4").fps == pytest.approx(8)  # the container's own rate
    (folder / "sample.json").write_text(json.dumps(spec))
    with pytest.raises(DatasetError, match="no 'fps'"):  # a frame folder has no rate of its own
        load_sample(folder)


def test_png_and_npz_mask_tracks(tmp_path):
    m = box_masks(4, [1, 2, 3], h=16, w=16, top=2, left=3, size=5)
    m[3] = False
    for mode in ("RGBA", "L", "1", "RGB"):
        (tmp_path / mode).mkdir()
        for i, mask in enumerate(m):
            if mode == "RGBA":  # black everywhere: only the alpha channel tells the object
                image = Image.fromarray(np.dstack([np.zeros((16, 16, 3), np.uint8), mask.astype(np.uint8) * 255]))
            else:
                image = Image.fromarray(mask.astype(np.uint8) * 255).convert(mode)
            image.save(tmp_path / mode / f"frame_{i}.png")
        assert np.array_equal(read_masks(tmp_path / mode, 4, (16, 16)), m), mode
    np.savez(tmp_path / "bool.npz", masks=m)
    np.savez(tmp_path / "u8.npz", m.astype(np.uint8) * 255)  # a single array under numpy's default name
    np.savez(tmp_path / "soft.npz", masks=np.where(m, 0.9, 0.2).astype(np.float32))
    for name in ("bool", "u8", "soft"):
        assert np.array_equal(read_masks(tmp_path / f"{name}.npz", 4, (16, 16)), m), name


def test_frames_of_a_folder_sort_by_number(tmp_path):
    (tmp_path / "f").mkdir()
    for i in (0, 2, 10):  # "10" sorts before "2" as plain text
        Image.fromarray(np.full((4, 4, 3), i, np.uint8)).save(tmp_path / "f" / f"frame{i}.png")
    frames, _ = read_video(tmp_path / "f")
    assert frames[:, 0, 0, 0].tolist() == [0, 2, 10]


def test_mask_track_errors(tmp_path):
    np.savez(tmp_path / "short.npz", masks=np.ones((7, H, W), bool))
    with pytest.raises(DatasetError, match=r"short.npz has 7 frames but the video has 9"):
        read_masks(tmp_path / "short.npz", 9, (H, W))
    with pytest.raises(DatasetError, match=r"is 16x16 \(HxW\) but the video is 32x48"):
        np.savez(tmp_path / "small.npz", masks=np.ones((9, 16, 16), bool))
        read_masks(tmp_path / "small.npz", 9, (H, W))
    with pytest.raises(DatasetError, match="no such mask folder"):
        read_masks(tmp_path / "nowhere", 9, (H, W))
    np.savez(tmp_path / "two.npz", a=np.ones((9, H, W)), b=np.ones((9, H, W)))
    with pytest.raises(DatasetError, match="none named 'masks'"):
        read_masks(tmp_path / "two.npz", 9, (H, W))
    (tmp_path / "broken.npz").write_bytes(b"PK\x03\x04 truncated")
    with pytest.raises(DatasetError, match="broken.npz: not a readable .npz"):
        read_masks(tmp_path / "broken.npz", 9, (H, W))
    (tmp_path / "pngs").mkdir()
    (tmp_path / "pngs" / "0.png").write_bytes(b"\x89PNG but not really")
    with pytest.raises(DatasetError, match="0.png: not a readable image"):
        read_masks(tmp_path / "pngs", 1, (H, W))


# ------------------------------------------------------------------------------------------------ sample errors

def test_missing_or_broken_sample_json(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(DatasetError, match="empty: no sample.json"):
        load_sample(tmp_path / "empty")
    folder = sample_with(tmp_path)
    (folder / "sample.json").write_text("{not json")
    with pytest.raises(DatasetError, match="not valid JSON"):
        load_sample(folder)
    (folder / "sample.json").write_text("[1, 2]")
    with pytest.raises(DatasetError, match="must hold a JSON object"):
        load_sample(folder)
    with pytest.raises(DatasetError, match="'caption' must be a non-empty string"):
        load_sample(sample_with(tmp_path, name="t", caption=""))


def test_missing_and_corrupt_videos(tmp_path):
    with pytest.raises(DatasetError, match="missing.mp4: no such video file or frame folder"):
        load_sample(sample_with(tmp_path, video="missing.mp4"))
    folder = sample_with(tmp_path, name="corrupt", video="video.mp4")
    (folder / "video.mp4").write_bytes(b"\x00\x00\x00\x18ftypmp42" + b"garbage" * 50)
    with pytest.raises(DatasetError, match="video.mp4: cannot be decoded"):
        load_sample(folder)
    write_sample(tmp_path / "cut", indexed_video(9), 8, "a square", {"square": box_masks(9, range(9))},
                 video_format="mp4")
    data = (tmp_path / "cut" / "video.mp4").read_bytes()
    (tmp_path / "cut" / "video.mp4").write_bytes(data[: len(data) // 2])  # truncated: the index is lost
    with pytest.raises(DatasetError, match="corrupt, truncated"):
        load_sample(tmp_path / "cut")
    folder = sample_with(tmp_path, name="badframe")
    (folder / "frames" / "00003.png").write_bytes(b"not a png")
    with pytest.raises(DatasetError, match="00003.png: not a readable image"):
        load_sample(folder)


def test_entity_errors(tmp_path):
    folder = sample_with(tmp_path, caption="a squared circle")  # "square" is not a whole word of it
    with pytest.raises(DatasetError, match="entity 'square' of sample s is not mentioned in its caption "
                                           "'a squared circle'; add it to the caption or fix the tag"):
        load_sample(folder)
    assert load_sample(sample_with(tmp_path, name="t", caption="A Square, rolling.")).entities[0].tag == "square"
    np.savez(folder / "masks" / "short.npz", masks=box_masks(7, range(7)))
    with pytest.raises(DatasetError, match="has 7 frames but the video has 9"):
        load_sample(sample_with(tmp_path, name="u", entities=[{"tag": "square", "masks": "../s/masks/short.npz"}]))
    np.savez(folder / "masks" / "empty.npz", masks=np.zeros((9, H, W), bool))
    with pytest.raises(DatasetError, match="entity 'square' of sample v has an empty mask track"):
        load_sample(sample_with(tmp_path, name="v", entities=[{"tag": "square", "masks": "../s/masks/empty.npz"}]))
    with pytest.raises(DatasetError, match="entity 0 of sample w has no tag"):
        load_sample(sample_with(tmp_path, name="w", entities=[{"tag": " ", "masks": "x.npz"}]))


def test_timed_caption_errors(tmp_path):
    for name, item, message in [("a", {"start": 0.5, "end": 0.2, "text": "x"}, "give start < end"),
                                ("b", {"start": 0.5, "end": 3.0, "text": "x"}, r"outside the video \[0, 1.125\]"),
                                ("c", {"start": float("nan"), "end": 1.0, "text": "x"}, "finite numbers"),
                                ("d", {"start": 0.0, "end": 1.0}, "non-empty 'text'")]:
        with pytest.raises(DatasetError, match=message):
            load_sample(sample_with(tmp_path, name=name, timed_captions=[item]))


def test_list_samples_finds_only_sample_folders(tmp_path):
    sample_with(tmp_path, name="b")
    sample_with(tmp_path, name="a")
    (tmp_path / "notes").mkdir()
    assert [p.name for p in list_samples(tmp_path)] == ["a", "b"]
    with pytest.raises(DatasetError, match="no such dataset folder"):
        list_samples(tmp_path / "nope")


# --------------------------------------------------------------------------------------- intervals and crops

def test_interval_drops_blips_and_closes_short_gaps():
    # blip at 1, absent 2-5, present 6-8, gap 9 (closed), present 10-12, absent 13-16 (long gap), present 17-18
    m = box_masks(20, [1, 6, 7, 8, 10, 11, 12, 17, 18])
    assert entity_interval(m, min_run=2, max_gap=3) == (6, 18)  # the long gap stays inside the overall span
    assert entity_interval(m, min_run=2, max_gap=0) == (6, 18)
    assert entity_interval(m[:13], min_run=4, max_gap=1) == (6, 12)  # 6-8 + 10-12 merge into one run of 7
    assert entity_interval(m, max_gap=4) == (1, 18)  # a blip 4 frames before the subject is no longer isolated
    assert entity_interval(box_masks(20, [5])) == (5, 5)  # a lone frame counts when it is all there is
    assert entity_interval(np.zeros((4, 8, 8), bool)) is None


def test_presence_uses_the_area_threshold():
    m = box_masks(3, [1, 2])
    m[2] = False
    m[2, 0, :3] = True  # 3 pixels of 1536: a speck, not the object
    assert presence(m).tolist() == [False, True, False]
    assert presence(m, threshold=0.0).tolist() == [False, True, True]


def test_frames_to_seconds():
    assert frames_to_seconds(8, 31, 16) == (0.5, 2.0)
    assert frames_to_seconds(0, 16, 16) == (0.0, 17 / 16)  # all of a 17-frame clip: its whole duration


def test_crop_is_centred_grey_around_and_padded_to_the_aspect():
    frame = np.empty((40, 80, 3), np.uint8)
    frame[:] = GRASS
    mask = np.zeros((40, 80), bool)
    mask[0:10, 66:76] = True  # a 10 x 10 square at the top edge: its crop reaches past the frame
    frame[mask] = (220, 30, 30)
    image, m = crop_reference(frame, mask, (32, 64))
    assert image.shape == (32, 64, 3) and image.dtype == np.uint8 and m.shape == (32, 64)
    ys, xs = np.nonzero(m)
    assert abs(ys.mean() - 15.5) < 0.6 and abs(xs.mean() - 31.5) < 0.6  # centred
    height, width = np.ptp(ys) + 1, np.ptp(xs) + 1
    assert height == width and abs(height - 32 / 1.2) < 1  # square stays square (padded to 2:1); 10 % margins
    assert tuple(image[16, 32]) == (220, 30, 30)
    assert (image[:, :8] == GREY).all() and (image[:, -8:] == GREY).all()  # the padding, beyond resampling's reach
    assert not (image[..., 1].astype(int) - image[..., 0] > 40).any()  # no grass left around the object
    assert (image.max(-1) > 100).all()  # and no black where the crop reaches past the frame
    tall, tall_mask = crop_reference(frame, mask, (64, 32), background=(0, 0, 255), margin=0.0)
    ys, xs = np.nonzero(tall_mask)
    assert np.ptp(xs) + 1 == 32 and abs(ys.mean() - 31.5) < 0.6 and tuple(tall[0, 0]) == (0, 0, 255)


# ------------------------------------------------------------------------------------------------------ clips

def test_references_come_from_frames_outside_the_clip(tmp_path):
    masks = box_masks(21, range(21))
    write_sample(tmp_path / "s", indexed_video(21, masks), 8, "a square", {"square": masks})
    sample = load_sample(tmp_path / "s")
    clip = make_clip(sample, 9, np.random.default_rng(0), start=6, refs_per_entity=6)
    entity = clip.entities[0]
    assert clip.frames.shape == (9, H, W, 3) and np.array_equal(clip.frames, sample.frames[6:15])
    assert entity.interval == (0.0, 9 / 8) and entity.masks.shape == (9, H, W)
    sources = [source_frame(r, m) for r, m in zip(entity.references, entity.reference_masks)]
    assert len(set(sources)) == 6 and not any(6 <= f < 15 for f in sources), sources  # distinct, outside
    many = make_clip(sample, 9, np.random.default_rng(1), start=6, refs_per_entity=20).entities[0]
    sources = {source_frame(r, m) for r, m in zip(many.references, many.reference_masks)}
    assert sources == set(range(6)) | set(range(15, 21))  # more than there are: every outside frame, repeated
    again = make_clip(sample, 9, np.random.default_rng(0), start=6, refs_per_entity=6).entities[0]
    assert all(np.array_equal(a, b) for a, b in zip(entity.references, again.references))  # seeded


def test_references_fall_back_to_the_window_when_the_subject_is_only_there(tmp_path):
    masks = box_masks(21, range(8, 12))
    write_sample(tmp_path / "s", indexed_video(21, masks), 8, "a square", {"square": masks})
    entity = make_clip(load_sample(tmp_path / "s"), 9, np.random.default_rng(0), start=6, refs_per_entity=3).entities[0]
    sources = [source_frame(r, m) for r, m in zip(entity.references, entity.reference_masks)]
    assert len(set(sources)) == 3 and all(8 <= f < 12 for f in sources)
    assert entity.interval == frames_to_seconds(2, 5, 8)


def test_clip_keeps_visible_entities_with_relative_times(tmp_path):
    red, blue = box_masks(21, range(0, 5)), box_masks(21, range(10, 14), left=30)
    write_sample(tmp_path / "s", indexed_video(21, red | blue), 8, "a red box and a blue box",
                 {"red box": red, "blue box": blue},
                 timed_captions=[TimedCaption(0.0, 0.5, "red comes"), {"start": 1.25, "end": 2.5, "text": "blue"}])
    clip = make_clip(load_sample(tmp_path / "s"), 9, np.random.default_rng(0), start=8)
    assert clip.caption == "a red box and a blue box" and clip.fps == 8
    assert [e.tag for e in clip.entities] == ["blue box"]  # red is gone before the window opens
    assert clip.entities[0].interval == (2 / 8, 6 / 8)
    assert [(c.start, c.end, c.text) for c in clip.timed_captions] == [(0.25, 9 / 8, "blue")]  # cut to the window
    one = make_clip(load_sample(tmp_path / "s"), 9, np.random.default_rng(0), start=3, max_entities=1)
    assert len(one.entities) == 1


def test_random_window_and_resize(tmp_path):
    masks = box_masks(21, range(21), top=16, left=16, size=16, h=48, w=64)
    write_sample(tmp_path / "s", indexed_video(21, masks, 48, 64), 8, "a square", {"square": masks})
    sample = load_sample(tmp_path / "s")
    starts = {int(make_clip(sample, 9, np.random.default_rng(seed)).name.split("@")[1]) for seed in range(12)}
    assert len(starts) > 3 and all(0 <= s <= 12 for s in starts)
    clip = make_clip(sample, 9, np.random.default_rng(0), start=0, size_hw=(32, 32), refs_per_entity=2)
    entity = clip.entities[0]
    assert clip.frames.shape == (9, 32, 32, 3) and entity.masks.shape == (9, 32, 32)
    assert entity.references[0].shape == (32, 32, 3) and entity.reference_masks[0].shape == (32, 32)
    # 48x64 -> its centred 48x48 (x 8..56) -> 32x32: the 16 px square at (16, 16) becomes 10.7 px at (10.7, 5.3)
    ys, xs = np.nonzero(entity.masks[0])
    assert abs(np.ptp(ys) + 1 - 32 / 3) <= 1 and abs(ys.min() - 32 / 3) <= 1 and abs(xs.min() - 16 / 3) <= 1
    assert source_frame(clip.frames[4], entity.masks[4]) == 4
    with pytest.raises(DatasetError, match="multiples of 16.*use e.g. \\(32, 48\\)"):
        make_clip(sample, 9, np.random.default_rng(0), size_hw=(30, 50))


def test_clip_length_errors(tmp_path):
    sample = load_sample(sample_with(tmp_path))
    with pytest.raises(DatasetError, match=r"clip length for sample s: frame count 8 must be 4k\+1.*use 9"):
        make_clip(sample, 8, np.random.default_rng(0))
    with pytest.raises(DatasetError, match="sample s has 9 frames but the clip needs 13"):
        make_clip(sample, 13, np.random.default_rng(0))
    with pytest.raises(DatasetError, match=r"clip start 1 .* \[0, 0\]"):
        make_clip(sample, 9, np.random.default_rng(0), start=1)


def test_write_sample_refuses_to_overwrite_and_odd_mp4(tmp_path):
    folder = sample_with(tmp_path)
    with pytest.raises(DatasetError, match="already holds a sample"):
        write_sample(folder, indexed_video(9), 8, "a square", {})
    with pytest.raises(DatasetError, match="even height and width"):
        write_sample(tmp_path / "odd", indexed_video(9, h=31), 8, "x", {}, video_format="mp4")
    with pytest.raises(DatasetError, match="masks of entity 'dot' are"):
        write_sample(tmp_path / "bad", indexed_video(9), 8, "a dot", {"dot": np.zeros((9, 4, 4), bool)})
    (tmp_path / "cut" / "frames").mkdir(parents=True)  # a write killed before its sample.json: 12 frames
    for i in range(12):
        Image.fromarray(indexed_video(1)[0]).save(tmp_path / "cut" / "frames" / f"{i:05d}.png")
    write_sample(tmp_path / "cut", indexed_video(9), 8, "a dot", {"dot": box_masks(9, [0])})
    assert len(load_sample(tmp_path / "cut").frames) == 9


def test_given_reference_images_are_used_instead_of_crops(tmp_path):
    frames = np.full((9, 32, 32, 3), 200, np.uint8)
    masks = np.zeros((9, 32, 32), bool)
    masks[:, 8:16, 8:16] = True
    ref = np.zeros((20, 20, 3), np.uint8)
    ref[:] = (0, 0, 255)
    rmask = np.zeros((20, 20), bool)
    rmask[5:15, 5:15] = True
    write_sample(tmp_path / "s", frames, 8.0, "a square", {"square": masks}, references={"square": [(ref, rmask)]})
    sample = load_sample(tmp_path / "s")
    assert len(sample.entities[0].references) == 1 and sample.entities[0].references[0][1].sum() == 100
    clip = make_clip(sample, 9, np.random.default_rng(0), refs_per_entity=2)
    img = clip.entities[0].references[0].astype(int)
    assert tuple(img[16, 16]) == (0, 0, 255) and np.abs(img[0, 0] - 127).max() <= 3
    spec = json.loads((tmp_path / "s" / "sample.json").read_text())
    spec["entities"][0]["references"] = ["refs/missing.png"]
    (tmp_path / "s" / "sample.json").write_text(json.dumps(spec))
    with pytest.raises(DatasetError, match="does not exist"):
        load_sample(tmp_path / "s")
