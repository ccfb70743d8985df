"""The benchmark file of `score` and `benchmark` (S2VTime's items, docs/scoring.md), read and checked before any
expensive work: every problem is one line naming the item and the fix.

    {"fps": 8, "frames": 17,
     "items": [{"id": "walk-1", "caption": "a red ring and a yellow star", "seed": 3, "video": "videos/walk-1.mp4",
                "timed_captions": [{"start": 0.0, "end": 1.0, "text": "a red ring rolls in"}],
                "subjects": [{"tag": "red ring", "description": "a small red ring", "reference": "refs/ring.png",
                              "start": 0.0, "end": 1.2}]}]}

Paths (video, reference) are relative to the benchmark file. `video` is what `score` scores; `benchmark` writes it."""
from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..data.dataset import IMAGE_SUFFIXES, DatasetError, TimedCaption, image_files, mask_from_image, open_image
from ..files import read_small_text
from ..sampling.intervals import IntervalError, check_fps, latent_frame_count
from ..sampling.subjects import check_tag

MAX_SUBJECTS = 64  # the most references any AlcheMinT adapter takes (AdapterConfig.max_refs)
ID_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._ -]{0,99}$")  # an item's id names its video file or folder


@dataclass
class BenchSubject:
    tag: str
    start: float  # seconds
    end: float
    description: str = ""
    reference: Path | None = None  # resolved; None: no reference image (no CLIP-I; the demo draws one from the tag)


@dataclass
class BenchItem:
    id: str
    caption: str
    subjects: list[BenchSubject]
    seed: int
    video: Path | None = None  # resolved
    timed_captions: list[TimedCaption] = field(default_factory=list)


@dataclass
class Benchmark:
    path: Path
    fps: float
    frames: int
    items: list[BenchItem]

    @property
    def duration(self) -> float:
        return self.frames / self.fps

    def fail(self, item: BenchItem | str | None, message: str) -> DatasetError:
        where = f"item '{item.id if isinstance(item, BenchItem) else item}': " if item is not None else ""
        return DatasetError(f"--benchmark {self.path}: {where}{message}")


EXAMPLE = ('{"fps": 8, "frames": 17, "items": [{"id": "a", "caption": "...", "subjects": [{"tag": "red ring", '
           '"start": 0.5, "end": 1.5, "reference": "ring.png"}], "video": "a.mp4"}]}')


def load_benchmark(path: str | Path) -> Benchmark:
    """The file parsed and checked: intervals, references readable, ids unique. Videos: `check_videos`; the subject
    count against a model: `check_subject_count`."""
    path = Path(path)
    try:
        data = json.loads(read_small_text(path, "--benchmark"))
    except FileNotFoundError:
        raise DatasetError(f"--benchmark {path}: no such file; give the benchmark JSON (docs/scoring.md)") from None
    except UnicodeDecodeError:
        raise DatasetError(f"--benchmark {path}: not UTF-8 text; save the benchmark JSON as UTF-8") from None
    except json.JSONDecodeError as err:
        raise DatasetError(f"--benchmark {path}: not valid JSON (line {err.lineno}, column {err.colno}: {err.msg}); "
                           f"fix it, e.g. {EXAMPLE}") from None
    except (OSError, RecursionError) as err:
        raise DatasetError(f"--benchmark {path}: cannot be read ({type(err).__name__}); give a readable JSON "
                           f"file") from None
    if not isinstance(data, dict) or not isinstance(data.get("items"), list) or not data["items"]:
        raise DatasetError(f"--benchmark {path}: expected an object with 'fps', 'frames' and a non-empty 'items' "
                           f"list, e.g. {EXAMPLE}")
    fps, frames = data.get("fps"), data.get("frames")
    try:
        check_fps(fps)
        latent_frame_count(frames)
    except IntervalError as err:
        raise DatasetError(f"--benchmark {path}: {err} (the top-level 'fps' and 'frames' of the clips)") from None
    bench = Benchmark(path, float(fps), int(frames), [])
    for i, raw in enumerate(data["items"]):
        bench.items.append(parse_item(bench, i, raw))
    ids = [item.id for item in bench.items]
    dup = next((x for x in ids if ids.count(x) > 1), None)
    if dup is not None:
        raise bench.fail(dup, "the id is used by more than one item; give every item its own id")
    return bench


def parse_item(bench: Benchmark, index: int, raw) -> BenchItem:
    if not isinstance(raw, dict):
        raise bench.fail(f"#{index + 1}", "is not an object; write {\"id\", \"caption\", \"subjects\", ...}")
    item_id = raw.get("id", str(index + 1))
    if not isinstance(item_id, str) or not ID_RE.match(item_id) or item_id.endswith("."):
        raise bench.fail(f"#{index + 1}", f"id {str(item_id)[:40]!r} must be letters, digits, '.', '_', '-' or "
                                          f"spaces (up to 100, first a letter or digit): it names the item's video")
    item = BenchItem(item_id, "", [], index)
    caption, seed, subjects = raw.get("caption", ""), raw.get("seed", index), raw.get("subjects")
    if not isinstance(caption, str):
        raise bench.fail(item, "'caption' must be a string (the global caption)")
    if not isinstance(seed, int) or isinstance(seed, bool) or not 0 <= seed < 2 ** 63:
        raise bench.fail(item, f"seed {seed!r:.40} must be a non-negative integer")
    if not isinstance(subjects, list) or not subjects:
        raise bench.fail(item, "needs a non-empty 'subjects' list of {\"tag\", \"start\", \"end\", \"reference\"}")
    item.caption, item.seed = caption, seed
    item.subjects = [parse_subject(bench, item, j, s) for j, s in enumerate(subjects)]
    item.timed_captions = [parse_timed_caption(bench, item, j, t)
                           for j, t in enumerate(raw.get("timed_captions") or [])]
    video = raw.get("video")
    if video is not None:
        if not isinstance(video, str) or not video:
            raise bench.fail(item, "'video' must be the path of its video, relative to the benchmark file")
        item.video = bench.path.parent / video
    return item


def check_interval(bench: Benchmark, item: BenchItem, what: str, start, end) -> tuple[float, float]:
    if not all(isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) for v in (start, end)):
        raise bench.fail(item, f"{what}: 'start' and 'end' must be numbers of seconds, got {start!r:.20} and "
                               f"{end!r:.20}")
    if start < 0 or end <= start:
        raise bench.fail(item, f"{what}: interval {start:g}-{end:g} s is reversed or empty; give 0 <= start < end")
    if end > bench.duration + 1e-6:
        raise bench.fail(item, f"{what}: interval {start:g}-{end:g} s ends after the clip ({bench.frames} frames at "
                               f"{bench.fps:g} fps = {bench.duration:g} s); shorten it or lengthen 'frames'")
    return float(start), float(end)


def parse_subject(bench: Benchmark, item: BenchItem, index: int, raw) -> BenchSubject:
    if not isinstance(raw, dict):
        raise bench.fail(item, f"subject {index + 1} is not an object; write {{\"tag\", \"start\", \"end\"}}")
    try:
        tag = check_tag(raw.get("tag"))
    except ValueError as err:
        raise bench.fail(item, f"subject {index + 1}: {err}") from None
    start, end = check_interval(bench, item, f"subject '{tag}'", raw.get("start"), raw.get("end"))
    description, reference = raw.get("description", ""), raw.get("reference")
    if not isinstance(description, str):
        raise bench.fail(item, f"subject '{tag}': 'description' must be a string")
    subject = BenchSubject(tag, start, end, description)
    if reference is not None:
        if not isinstance(reference, str) or not reference:
            raise bench.fail(item, f"subject '{tag}': 'reference' must be an image path relative to the benchmark "
                                   f"file")
        subject.reference = bench.path.parent / reference
        if not subject.reference.is_file():
            raise bench.fail(item, f"subject '{tag}': reference {subject.reference} does not exist; fix the path "
                                   f"(relative to the benchmark file) or add the image")
        try:
            open_image(subject.reference)  # decoded once here so an unreadable one fails before any work
        except DatasetError as err:
            raise bench.fail(item, f"subject '{tag}': {err}") from None
    return subject


def parse_timed_caption(bench: Benchmark, item: BenchItem, index: int, raw) -> TimedCaption:
    if not isinstance(raw, dict) or not isinstance(raw.get("text"), str):
        raise bench.fail(item, f"timed caption {index + 1} must be {{\"start\", \"end\", \"text\"}}")
    return TimedCaption(*check_interval(bench, item, f"timed caption {index + 1}", raw.get("start"),
                                        raw.get("end")), raw["text"])


def reference_image(path: Path) -> tuple[np.ndarray, np.ndarray | None]:
    """uint8 RGB [H, W, 3] and the subject's mask from the alpha channel, None when the image has no transparency."""
    image = open_image(path)
    has_alpha = image.mode in ("RGBA", "LA", "PA") or (image.mode == "P" and "transparency" in image.info)
    mask = mask_from_image(image) if has_alpha else None
    if mask is not None and (mask.all() or not mask.any()):
        mask = None  # fully opaque (or fully clear, nothing to keep): the whole image is the subject's
    return np.asarray(image.convert("RGB")), mask


def check_subject_count(bench: Benchmark, limit: int, who: str, fix: str) -> None:
    """Every item has at most `limit` subjects (what `who` takes)."""
    for item in bench.items:
        if len(item.subjects) > limit:
            raise bench.fail(item, f"{len(item.subjects)} subjects, but {who} takes at most {limit}; {fix}")


def video_length(path: Path) -> tuple[int, float | None]:
    """Frame count and frame rate of a video file (from its header when it states them) or a frame folder (no rate
    of its own), without decoding the frames when the header suffices."""
    if path.is_dir():
        n = len(image_files(path))
        if not n:
            raise DatasetError(f"{path}: the frame folder holds no {'/'.join(IMAGE_SUFFIXES)} images")
        return n, None
    import av
    try:
        with av.open(str(path)) as container:
            if not container.streams.video:
                raise DatasetError(f"{path}: holds no video stream; re-encode it")
            stream = container.streams.video[0]
            rate = stream.average_rate or stream.guessed_rate
            n = stream.frames or sum(1 for _ in container.decode(stream))
    except av.error.FFmpegError as err:
        raise DatasetError(f"{path}: cannot be decoded ({getattr(err, 'strerror', None) or err}); re-encode it or "
                           f"export its frames as PNGs") from None
    if not n:
        raise DatasetError(f"{path}: holds no video frames; re-encode it")
    return n, float(rate) if rate else None


def check_videos(bench: Benchmark) -> None:
    """Every item has a readable video that lasts as long as its subjects' intervals (`score`)."""
    for item in bench.items:
        if item.video is None:
            raise bench.fail(item, "no 'video'; give the path of its generated video (relative to the benchmark "
                                   "file), or generate the videos with `python -m alchemint_core benchmark`")
        if not item.video.exists():
            raise bench.fail(item, f"video {item.video} does not exist; fix its 'video' path (relative to the "
                                   f"benchmark file) or generate it")
        try:
            n, rate = video_length(item.video)
        except DatasetError as err:
            raise bench.fail(item, str(err)) from None
        fps = rate or bench.fps
        last = max(s.end for s in item.subjects)
        if last > n / fps + 1e-6:
            tag = next(s.tag for s in item.subjects if s.end == last)
            raise bench.fail(item, f"video {item.video} lasts {n / fps:g} s ({n} frames at {fps:g} fps) but subject "
                                   f"'{tag}' is asked for until {last:g} s; give the whole video or fix the interval")
