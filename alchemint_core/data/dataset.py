"""Training samples on disk -> training clips.

A sample is a folder holding a sample.json:

    {"video": "video.mp4",          # a container read with PyAV, or a folder of frame images read with Pillow
     "fps": 16,                     # required for frame folders; for containers it overrides the stored rate
     "caption": "a red ring and a blue star on grass",
     "timed_captions": [{"start": 0.0, "end": 1.0, "text": "the ring rolls in"}],       # optional, seconds
     "entities": [{"tag": "red ring", "masks": "masks/red_ring"},                       # folder of PNGs
                  {"tag": "blue star", "masks": "masks/blue_star.npz",                  # or [N, H, W] array
                   "references": ["refs/blue_star.png"]}]}        # optional reference images (alpha = subject)

make_clip cuts a 4k+1-frame window from a sample and gives each entity visible in it its interval (seconds from
the window's start) and reference crops taken from frames outside the window, where pose and light differ, so the
model learns identity instead of copying pixels.
"""
from __future__ import annotations

import json
import math
import re
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Mapping, Sequence

import numpy as np
from PIL import Image

from ..files import atomic_write, read_small_text
from ..media import write_video
from ..sampling.intervals import IntervalError, latent_frame_count

SAMPLE_FILE = "sample.json"
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp", ".bmp")
VIDEO_FORMATS = ("png", "mp4", "gif")
SIZE_MULTIPLE = 16  # VAE stride 8 x patch size 2
NEUTRAL_GREY = (127, 127, 127)


class DatasetError(ValueError):
    """A sample, file or argument that cannot be used, with the fix in the message."""


@dataclass
class TimedCaption:
    start: float  # seconds
    end: float
    text: str


@dataclass
class RawEntity:
    tag: str
    masks: np.ndarray  # bool [N, H, W]
    references: list[tuple[np.ndarray, np.ndarray]] = field(default_factory=list)  # given (RGB image, mask) pairs


@dataclass
class RawSample:
    name: str
    frames: np.ndarray  # uint8 [N, H, W, 3]
    fps: float
    caption: str
    timed_captions: list[TimedCaption]
    entities: list[RawEntity]


@dataclass
class ClipEntity:
    tag: str
    interval: tuple[float, float]  # seconds from the clip's start
    references: list[np.ndarray]  # uint8 [h, w, 3] crops on grey, the clip's size
    reference_masks: list[np.ndarray]  # bool [h, w]
    masks: np.ndarray  # bool [num_frames, h, w]: the entity's masks over the clip window


@dataclass
class Clip:
    name: str
    frames: np.ndarray  # uint8 [num_frames, h, w, 3]
    fps: float
    caption: str
    timed_captions: list[TimedCaption]
    entities: list[ClipEntity]


# ---------------------------------------------------------------------------------------------------- reading files

def list_samples(root: str | Path) -> list[Path]:
    """Sample folders under root: its sub-folders holding a sample.json, sorted by name."""
    root = Path(root)
    if not root.is_dir():
        raise DatasetError(f"{root}: no such dataset folder; give the folder holding one sub-folder per sample")
    return sorted(p for p in root.iterdir() if (p / SAMPLE_FILE).is_file())


def natural_key(path: Path) -> list:
    """Sort key comparing digit runs as numbers, so frame2 < frame10; zero-padded names sort as plain names do."""
    return [int(part) if part.isdigit() else part for part in re.split(r"(\d+)", path.name)]


def image_files(folder: Path) -> list[Path]:
    return sorted((p for p in folder.iterdir()
                   if p.suffix.lower() in IMAGE_SUFFIXES and not p.name.startswith(".")), key=natural_key)


def open_image(path: Path) -> Image.Image:
    try:
        image = Image.open(path)
        image.load()
    except (OSError, SyntaxError, ValueError) as err:  # Pillow's decoders raise all three on damaged files
        raise DatasetError(f"{path}: not a readable image ({err}); export it again as PNG") from None
    return image


def read_frame_folder(folder: Path) -> np.ndarray:
    files = image_files(folder)
    if not files:
        raise DatasetError(f"{folder}: the frame folder holds no {'/'.join(IMAGE_SUFFIXES)} images; add the frames")
    frames = []
    for path in files:
        frame = np.asarray(open_image(path).convert("RGB"))
        if frames and frame.shape != frames[0].shape:
            raise DatasetError(f"{path}: frame is {frame.shape[0]}x{frame.shape[1]} (HxW) but {files[0].name} is "
                               f"{frames[0].shape[0]}x{frames[0].shape[1]}; give every frame the same size")
        frames.append(frame)
    return np.stack(frames)


def read_container(path: Path) -> tuple[np.ndarray, float | None]:
    import av

    try:
        with av.open(str(path)) as container:
            if not container.streams.video:
                raise DatasetError(f"{path}: holds no video stream (corrupt, truncated or not a video); "
                                   f"re-encode it or export its frames as PNGs")
            stream = container.streams.video[0]
            stream.thread_type = "AUTO"
            rate = stream.average_rate or stream.guessed_rate
            frames = [frame.to_ndarray(format="rgb24") for frame in container.decode(stream)]
    except av.error.FFmpegError as err:
        raise DatasetError(f"{path}: cannot be decoded ({getattr(err, 'strerror', None) or err}); the file is "
                           f"corrupt, truncated or not a video: re-encode it or export its frames as PNGs") from None
    if not frames:
        raise DatasetError(f"{path}: holds no video frames; re-encode it or export its frames as PNGs")
    if any(f.shape != frames[0].shape for f in frames):
        raise DatasetError(f"{path}: the frame size changes within the video; re-encode it at one size")
    return np.stack(frames), float(rate) if rate else None


def read_video(path: str | Path) -> tuple[np.ndarray, float | None]:
    """uint8 RGB frames [N, H, W, 3] and the container's frame rate, from a video file (PyAV) or a folder of frame
    images sorted by name (Pillow). A frame folder has no rate of its own: fps is None and comes from sample.json."""
    path = Path(path)
    if path.is_dir():
        return read_frame_folder(path), None
    if not path.is_file():
        raise DatasetError(f"{path}: no such video file or frame folder; fix the 'video' entry of sample.json")
    return read_container(path)


def mask_from_image(image: Image.Image) -> np.ndarray:
    """Object pixels of one mask image: the alpha channel when it is used (not fully opaque), else luminance > 127."""
    if image.mode in ("RGBA", "LA", "PA") or (image.mode == "P" and "transparency" in image.info):
        alpha = np.asarray(image.convert("RGBA").getchannel("A"))
        if (alpha < 255).any():
            return alpha > 127
    return np.asarray(image.convert("L")) > 127


def read_mask_folder(folder: Path, size_hw: tuple[int, int]) -> np.ndarray:
    masks = []
    for path in image_files(folder):
        mask = mask_from_image(open_image(path))
        check_mask_size(path, mask.shape, size_hw)
        masks.append(mask)
    if not masks:
        raise DatasetError(f"{folder}: the mask folder holds no PNG images; add one mask image per video frame")
    return np.stack(masks)


def read_mask_npz(path: Path) -> np.ndarray:
    try:
        with np.load(path, allow_pickle=False) as npz:  # never unpickle: a dataset file must not run code
            keys = list(npz.files)
            key = "masks" if "masks" in keys else keys[0] if len(keys) == 1 else None
            array = None if key is None else npz[key]
    except (OSError, ValueError, EOFError, zipfile.BadZipFile) as err:
        raise DatasetError(f"{path}: not a readable .npz file ({err}); save it again with "
                           f"numpy.savez(path, masks=array)") from None
    if array is None:
        raise DatasetError(f"{path}: holds arrays {keys} and none named 'masks'; save the track with "
                           f"numpy.savez(path, masks=array)")
    if array.ndim != 3 or not (array.dtype == bool or np.issubdtype(array.dtype, np.integer)
                               or np.issubdtype(array.dtype, np.floating)):
        raise DatasetError(f"{path}: mask array is {array.dtype} {list(array.shape)}; save a bool, integer or float "
                           f"array of shape [frames, height, width]")
    return array > 0.5  # bool, 0/1, 0/255 and soft [0, 1] masks alike


def check_mask_size(path: Path, shape: tuple[int, ...], size_hw: tuple[int, int]) -> None:
    if tuple(shape) != tuple(size_hw):
        raise DatasetError(f"mask track {path} is {shape[0]}x{shape[1]} (HxW) but the video is "
                           f"{size_hw[0]}x{size_hw[1]}; write the masks at the video's resolution")


def read_masks(path: str | Path, num_frames: int, size_hw: tuple[int, int]) -> np.ndarray:
    """bool [N, H, W] object masks from a folder of mask images (one per frame, sorted by name) or an .npz holding
    one [N, H, W] array (key 'masks' or the only array; > 0.5 is object). Checked against the video's frame count
    and size."""
    path = Path(path)
    if path.is_dir():
        masks = read_mask_folder(path, size_hw)
    elif path.is_file() and path.suffix.lower() == ".npz":
        masks = read_mask_npz(path)
        check_mask_size(path, masks.shape[1:], size_hw)
    elif path.is_file():
        raise DatasetError(f"{path}: masks must be a folder of PNG images or an .npz file; convert them")
    else:
        raise DatasetError(f"{path}: no such mask folder or .npz file; fix the entity's 'masks' entry in sample.json")
    if len(masks) != num_frames:
        raise DatasetError(f"mask track {path} has {len(masks)} frames but the video has {num_frames}; "
                           f"give one mask per video frame")
    return masks


# ----------------------------------------------------------------------------------------------- sample.json checks

def is_number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def read_sample_json(folder: Path) -> dict:
    path = folder / SAMPLE_FILE
    if not path.is_file():
        raise DatasetError(f"{folder}: no {SAMPLE_FILE}; every sample folder needs one (see the dataset format)")
    try:
        text = read_small_text(path, SAMPLE_FILE)
    except UnicodeDecodeError:
        raise DatasetError(f"{path}: not UTF-8 text; save it as UTF-8") from None
    except ValueError as err:  # too big
        raise DatasetError(str(err)) from None
    try:
        spec = json.loads(text)
    except (json.JSONDecodeError, RecursionError) as err:
        raise DatasetError(f"{path}: not valid JSON ({err}); fix the syntax") from None
    if not isinstance(spec, dict):
        raise DatasetError(f"{path}: must hold a JSON object with 'video' and 'caption'; not {type(spec).__name__}")
    for key in ("video", "caption"):
        if not isinstance(spec.get(key), str) or not spec[key].strip():
            raise DatasetError(f"{path}: '{key}' must be a non-empty string; add it")
    return spec


def mentions(caption: str, tag: str) -> bool:
    """The tag occurs in the caption as whole words, ignoring case and the amount of white space between words."""
    pattern = r"\s+".join(re.escape(word) for word in tag.split())
    return re.search(rf"(?<!\w){pattern}(?!\w)", caption, flags=re.IGNORECASE) is not None


def short(text: str, limit: int = 100) -> str:
    return text if len(text) <= limit else text[: limit - 3] + "..."


def parse_entities(spec: dict, name: str) -> list[tuple[str, str, list[str]]]:
    """(tag, masks path, reference image paths) per entity, checked before any file is read."""
    entities = spec.get("entities", [])
    if not isinstance(entities, list):
        raise DatasetError(f"sample {name}: 'entities' must be a list of {{\"tag\", \"masks\"}} objects")
    out: list[tuple[str, str]] = []
    for i, entity in enumerate(entities):
        tag = entity.get("tag") if isinstance(entity, dict) else None
        if not isinstance(tag, str) or not tag.strip():
            raise DatasetError(f"entity {i} of sample {name} has no tag; give it a non-empty 'tag' naming it as "
                               f"the caption does, and its 'masks'")
        tag = " ".join(tag.split())
        if not mentions(spec["caption"], tag):
            raise DatasetError(f"entity '{tag}' of sample {name} is not mentioned in its caption "
                               f"'{short(spec['caption'])}'; add it to the caption or fix the tag")
        if any(tag.lower() == t.lower() for t, _, _ in out):
            raise DatasetError(f"entity '{tag}' of sample {name} is listed twice; merge the two or tell them apart "
                               f"in the tags")
        if not isinstance(entity.get("masks"), str) or not entity["masks"]:
            raise DatasetError(f"entity '{tag}' of sample {name} has no 'masks' path; give a PNG folder or an .npz")
        refs = entity.get("references", [])
        if not isinstance(refs, list) or not all(isinstance(r, str) and r for r in refs):
            raise DatasetError(f"entity '{tag}' of sample {name}: 'references' must be a list of image paths "
                               f"(RGBA PNGs, the alpha marking the subject)")
        out.append((tag, entity["masks"], refs))
    return out


def sample_fps(spec: dict, container_fps: float | None, name: str) -> float:
    fps = spec.get("fps", container_fps)
    if fps is None:
        raise DatasetError(f"sample {name}: no 'fps' in {SAMPLE_FILE} and the video '{spec['video']}' carries no "
                           f"frame rate; add e.g. \"fps\": 16")
    if not is_number(fps) or not 0 < fps <= 1000:
        raise DatasetError(f"sample {name}: fps {fps!r} must be a number in (0, 1000]; fix 'fps' in {SAMPLE_FILE}")
    return float(fps)


def parse_timed_captions(spec: dict, name: str, duration: float, fps: float) -> list[TimedCaption]:
    items = spec.get("timed_captions", [])
    if not isinstance(items, list):
        raise DatasetError(f"sample {name}: 'timed_captions' must be a list of {{start, end, text}} objects")
    tol = 0.5 / fps  # half a frame of slack for rounded annotations
    out = []
    for i, item in enumerate(items):
        where = f"timed caption {i} of sample {name}"
        if not isinstance(item, dict) or not isinstance(item.get("text"), str) or not item["text"].strip():
            raise DatasetError(f"{where} needs a non-empty 'text' with 'start' and 'end' in seconds")
        start, end = item.get("start"), item.get("end")
        if not (is_number(start) and is_number(end)):
            raise DatasetError(f"{where}: start {start!r} and end {end!r} must be finite numbers of seconds")
        if end <= start:
            raise DatasetError(f"{where}: end {end:g} s is not after start {start:g} s; give start < end")
        if start < -tol or end > duration + tol:
            raise DatasetError(f"{where}: [{start:g}, {end:g}] s lies outside the video [0, {duration:g}] s; "
                               f"move it inside")
        out.append(TimedCaption(max(float(start), 0.0), min(float(end), duration), item["text"]))
    return out


def read_reference(path: Path, tag: str, name: str) -> tuple[np.ndarray, np.ndarray]:
    """A given reference image of an entity: RGB and its subject mask (alpha, or luminance for opaque images)."""
    if not path.is_file():
        raise DatasetError(f"reference image {path} of entity '{tag}' (sample {name}) does not exist; fix the path")
    image = open_image(path)
    mask = mask_from_image(image)
    if not mask.any():
        raise DatasetError(f"reference image {path} of entity '{tag}' (sample {name}) has an empty mask; give it "
                           f"an alpha channel marking the subject")
    return np.asarray(image.convert("RGB")), mask


def load_sample(folder: str | Path) -> RawSample:
    """Read and check one sample folder. Cheap checks of sample.json come first, so a typo costs no decoding."""
    folder = Path(folder)
    name = folder.name
    spec = read_sample_json(folder)
    entity_specs = parse_entities(spec, name)
    frames, container_fps = read_video(folder / spec["video"])
    fps = sample_fps(spec, container_fps, name)
    timed = parse_timed_captions(spec, name, len(frames) / fps, fps)
    entities = []
    for tag, masks_path, ref_paths in entity_specs:
        masks = read_masks(folder / masks_path, len(frames), frames.shape[1:3])
        if not masks.any():
            raise DatasetError(f"entity '{tag}' of sample {name} has an empty mask track ({masks_path}): no frame "
                               f"shows it; fix the masks (PNG masks count pixels brighter than 127, or alpha) or "
                               f"remove the entity")
        entities.append(RawEntity(tag, masks, [read_reference(folder / r, tag, name) for r in ref_paths]))
    return RawSample(name, frames, fps, spec["caption"], timed, entities)


# -------------------------------------------------------------------------------------------- presence and intervals

def presence(masks: np.ndarray, threshold: float = 0.002) -> np.ndarray:
    """bool [N]: the object is present in a frame when its mask covers more than `threshold` of the frame."""
    return masks.reshape(len(masks), -1).mean(axis=1) > threshold


def present_runs(flags: np.ndarray) -> list[tuple[int, int]]:
    """(first, last) inclusive of every run of True."""
    edges = np.diff(np.concatenate([[0], flags.astype(np.int8), [0]]))
    return list(zip(np.flatnonzero(edges == 1).tolist(), (np.flatnonzero(edges == -1) - 1).tolist()))


def close_gaps(runs: list[tuple[int, int]], max_gap: int) -> list[tuple[int, int]]:
    merged: list[tuple[int, int]] = []
    for first, last in runs:
        if merged and first - merged[-1][1] - 1 <= max_gap:
            merged[-1] = (merged[-1][0], last)
        else:
            merged.append((first, last))
    return merged


def entity_interval(masks: np.ndarray, threshold: float = 0.002, min_run: int = 2,
                    max_gap: int = 3) -> tuple[int, int] | None:
    """First..last frame (inclusive) the object is present in, or None if it never is.

    Gaps of at most max_gap absent frames are closed first (occlusion, a flickering mask), then runs shorter than
    min_run frames are dropped as isolated detection blips, unless every run is that short (a subject seen only
    briefly keeps its brief interval). A longer gap does not split the interval: it still spans the first to the
    last surviving run, since it describes the subject's overall presence, not every visible frame.
    """
    runs = close_gaps(present_runs(presence(masks, threshold)), max_gap)
    if not runs:
        return None
    kept = [(a, b) for a, b in runs if b - a + 1 >= min_run] or runs
    return kept[0][0], kept[-1][1]


def frames_to_seconds(first: int, last: int, fps: float) -> tuple[float, float]:
    """Frame n is shown during [n/fps, (n+1)/fps), so frames first..last span [first/fps, (last+1)/fps)."""
    return first / fps, (last + 1) / fps


# ------------------------------------------------------------------------------------------------- images and crops

def bounding_box(mask: np.ndarray) -> tuple[int, int, int, int]:
    """(top, left, bottom, right) of the True pixels, bottom/right exclusive."""
    rows, cols = np.flatnonzero(mask.any(axis=1)), np.flatnonzero(mask.any(axis=0))
    return int(rows[0]), int(cols[0]), int(rows[-1]) + 1, int(cols[-1]) + 1


def resize_rgb(image: np.ndarray, out_hw: tuple[int, int], box: Sequence[float] | None = None) -> np.ndarray:
    """Resize (the region box = (left, top, right, bottom) of) an RGB image with Pillow's antialiasing filter."""
    return np.asarray(Image.fromarray(image).resize((out_hw[1], out_hw[0]), Image.Resampling.LANCZOS,
                                                    box=None if box is None else tuple(box)))


def resize_mask(mask: np.ndarray, out_hw: tuple[int, int], box: Sequence[float] | None = None) -> np.ndarray:
    """Resize a bool mask by area coverage: an output pixel is object when more than half of it was."""
    image = Image.fromarray(mask.astype(np.uint8) * 255)
    return np.asarray(image.resize((out_hw[1], out_hw[0]), Image.Resampling.BILINEAR,
                                   box=None if box is None else tuple(box))) > 127


def crop_reference(frame: np.ndarray, mask: np.ndarray, out_hw: tuple[int, int],
                   background: tuple[int, int, int] = NEUTRAL_GREY,
                   margin: float = 0.1) -> tuple[np.ndarray, np.ndarray]:
    """The object alone, centred on a plain background: uint8 [h, w, 3] and its bool mask [h, w] at out_hw.

    The crop is the mask's bounding box grown by `margin` of its size on each side, then widened along one axis to
    out_hw's aspect ratio around the same centre, so the object is never stretched. Pixels outside the mask, and
    any part of the crop beyond the frame, take the background colour.
    """
    if not mask.any():
        raise DatasetError("crop_reference: the mask is empty; crop from a frame where the entity is present")
    top, left, bottom, right = bounding_box(mask)
    cy, cx = (top + bottom) / 2, (left + right) / 2
    h, w = (bottom - top) * (1 + 2 * margin), (right - left) * (1 + 2 * margin)
    aspect = out_hw[1] / out_hw[0]
    h, w = max(h, w / aspect), max(w, h * aspect)
    # Pad the frame with background so a crop reaching past its border reads background there.
    pad = math.ceil(max(0.0, h / 2 - cy, w / 2 - cx, cy + h / 2 - mask.shape[0], cx + w / 2 - mask.shape[1])) + 1
    canvas = np.empty((mask.shape[0] + 2 * pad, mask.shape[1] + 2 * pad, 3), np.uint8)
    canvas[:] = np.asarray(background, np.uint8)
    canvas[pad:-pad, pad:-pad] = np.where(mask[..., None], frame, canvas[pad:-pad, pad:-pad])
    padded_mask = np.pad(mask, pad)
    box = (cx + pad - w / 2, cy + pad - h / 2, cx + pad + w / 2, cy + pad + h / 2)
    return resize_rgb(canvas, out_hw, box), resize_mask(padded_mask, out_hw, box)


def centre_box(src_hw: tuple[int, int], out_hw: tuple[int, int]) -> tuple[float, float, float, float]:
    """The largest centred region of a src_hw frame with out_hw's aspect ratio, as (left, top, right, bottom):
    resizing it to out_hw changes the size without stretching the picture."""
    scale = min(src_hw[0] / out_hw[0], src_hw[1] / out_hw[1])
    h, w = out_hw[0] * scale, out_hw[1] * scale
    return (src_hw[1] - w) / 2, (src_hw[0] - h) / 2, (src_hw[1] + w) / 2, (src_hw[0] + h) / 2


# ------------------------------------------------------------------------------------------------------------ clips

def check_size(size_hw) -> tuple[int, int]:
    ok = (isinstance(size_hw, (tuple, list)) and len(size_hw) == 2
          and all(isinstance(v, int) and not isinstance(v, bool) and v > 0 for v in size_hw))
    if not ok or any(v % SIZE_MULTIPLE for v in size_hw):
        hint = (tuple(max(SIZE_MULTIPLE, round(v / SIZE_MULTIPLE) * SIZE_MULTIPLE) for v in size_hw)
                if ok else (480, 832))
        raise DatasetError(f"clip size {size_hw!r}: height and width must be positive multiples of {SIZE_MULTIPLE} "
                           f"(VAE stride x patch size); use e.g. {hint}")
    return int(size_hw[0]), int(size_hw[1])


def pick_start(sample: RawSample, num_frames: int, rng: np.random.Generator, start: int | None) -> int:
    try:
        latent_frame_count(num_frames)
    except IntervalError as err:
        raise DatasetError(f"clip length for sample {sample.name}: {err}") from None
    total = len(sample.frames)
    if total < num_frames:
        raise DatasetError(f"sample {sample.name} has {total} frames but the clip needs {num_frames}; use a shorter "
                           f"clip length or leave this sample out")
    if start is None:
        return int(rng.integers(0, total - num_frames + 1))
    if not isinstance(start, (int, np.integer)) or not 0 <= start <= total - num_frames:
        raise DatasetError(f"clip start {start!r} for sample {sample.name}: must be a frame in "
                           f"[0, {total - num_frames}] so {num_frames} frames fit in its {total}")
    return int(start)


def reference_frames(present: np.ndarray, window: range, in_window: np.ndarray, k: int,
                     rng: np.random.Generator) -> list[int]:
    """k frames to crop references from, distinct while there are enough (then repeated: augmentation still makes
    the variants differ). Frames outside the clip window show the subject in another pose and light than the clip
    does; only when it appears nowhere outside do the references come from the window itself (in_window: frames,
    absolute, where it is present there)."""
    frames = np.flatnonzero(present)
    outside = frames[(frames < window.start) | (frames >= window.stop)]
    pool = outside if len(outside) else in_window
    picks = rng.permutation(pool)[:k]
    if len(picks) < k:
        picks = np.concatenate([picks, rng.choice(pool, k - len(picks))])
    return picks.tolist()


def clip_timed_captions(captions: list[TimedCaption], t0: float, t1: float) -> list[TimedCaption]:
    """Captions overlapping [t0, t1), cut to it and shifted so the window starts at 0."""
    out = []
    for c in captions:
        start, end = max(c.start, t0), min(c.end, t1)
        if end > start:
            out.append(TimedCaption(start - t0, end - t0, c.text))
    return out


def make_clip(sample: RawSample, num_frames: int, rng: np.random.Generator, start: int | None = None,
              refs_per_entity: int = 1, size_hw: tuple[int, int] | None = None, threshold: float = 0.002,
              max_entities: int = 8) -> Clip:
    """A training clip: num_frames (4k+1) frames from `start` (random when None), optionally resized to size_hw
    (centre-cropped to its aspect ratio first, so nothing is stretched), with every entity present in the window:
    its interval in seconds from the clip's start, its masks over the window and refs_per_entity reference crops
    of the clip's size (see reference_frames for where they come from). When more than max_entities are present,
    a random max_entities of them are kept."""
    if not isinstance(refs_per_entity, int) or refs_per_entity < 1:
        raise DatasetError(f"refs_per_entity {refs_per_entity!r} must be an integer >= 1")
    start = pick_start(sample, num_frames, rng, start)
    window = range(start, start + num_frames)
    src_hw = sample.frames.shape[1:3]
    out_hw = check_size(size_hw) if size_hw is not None else src_hw
    box = centre_box(src_hw, out_hw) if size_hw is not None else None
    if box is None:
        frames = sample.frames[start:window.stop].copy()
    else:
        frames = np.stack([resize_rgb(f, out_hw, box) for f in sample.frames[start:window.stop]])

    visible = []  # (entity, window masks, interval in frames)
    for entity in sample.entities:
        masks = entity.masks[start:window.stop]
        masks = masks.copy() if box is None else np.stack([resize_mask(m, out_hw, box) for m in masks])
        interval = entity_interval(masks, threshold)
        if interval is not None:
            visible.append((entity, masks, interval))
    if len(visible) > max_entities:
        keep = np.sort(rng.choice(len(visible), max_entities, replace=False))
        visible = [visible[i] for i in keep]

    entities = []
    for entity, masks, (first, last) in visible:
        in_window = start + np.flatnonzero(presence(masks, threshold))
        if entity.references:  # given reference images are preferred to crops from the video
            order = rng.permutation(len(entity.references))
            crops = [crop_reference(*entity.references[order[i % len(order)]], out_hw) for i in range(refs_per_entity)]
        else:
            picks = reference_frames(presence(entity.masks, threshold), window, in_window, refs_per_entity, rng)
            crops = [crop_reference(sample.frames[i], entity.masks[i], out_hw) for i in picks]
        entities.append(ClipEntity(entity.tag, frames_to_seconds(first, last, sample.fps), [c[0] for c in crops],
                                   [c[1] for c in crops], masks))
    timed = clip_timed_captions(sample.timed_captions, start / sample.fps, window.stop / sample.fps)
    return Clip(f"{sample.name}@{start}", frames, sample.fps, sample.caption, timed, entities)


# ---------------------------------------------------------------------------------------------------------- writing

def slug(text: str) -> str:
    return re.sub(r"\W+", "_", text.lower()).strip("_") or "entity"


def write_gif(frames: np.ndarray, path: str, fps: float) -> None:
    """Animated GIF through PyAV. (Pillow's GIF writer merges identical consecutive frames, which would change the
    frame count and so every mask track's length.)"""
    from fractions import Fraction

    import av

    with av.open(path, mode="w", format="gif") as container:
        stream = container.add_stream("gif", rate=Fraction(fps).limit_denominator(1000))
        stream.width, stream.height, stream.pix_fmt = frames.shape[2], frames.shape[1], "pal8"
        for frame in frames:
            indexed = Image.fromarray(frame).quantize(256)  # GIF holds at most 256 colours per frame
            rgb = np.asarray(indexed.getpalette(), np.uint8).reshape(-1, 3)[:256]
            argb = np.zeros((256, 4), np.uint8)
            argb[:, 0], argb[: len(rgb), 1:] = 255, rgb
            for packet in stream.encode(av.VideoFrame.from_ndarray((np.asarray(indexed), argb), format="pal8")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)


def write_frames(folder: Path, frames: np.ndarray, fps: float, video_format: str) -> str:
    """Write the video in the sample folder; returns its path relative to the folder."""
    if video_format == "png":
        (folder / "frames").mkdir(exist_ok=True)
        for stale in (folder / "frames").glob("[0-9][0-9][0-9][0-9][0-9].png"):  # from a write that was cut short
            stale.unlink()
        for i, frame in enumerate(frames):
            Image.fromarray(frame).save(folder / "frames" / f"{i:05d}.png")
        return "frames"
    if video_format == "mp4":
        if frames.shape[1] % 2 or frames.shape[2] % 2:
            raise DatasetError(f"{folder}: H.264 needs an even height and width, not {frames.shape[1]}x"
                               f"{frames.shape[2]}; crop the frames or use video_format='png'")
        write_video(frames, folder / "video.mp4", fps)
        return "video.mp4"
    atomic_write(folder / "video.gif", lambda tmp: write_gif(frames, tmp, fps))
    return "video.gif"


def timed_caption_dict(caption: TimedCaption | Mapping) -> dict:
    c = caption if isinstance(caption, TimedCaption) else TimedCaption(**caption)
    return {"start": float(c.start), "end": float(c.end), "text": c.text}


def write_masks(path: Path, masks: np.ndarray) -> None:
    def save(tmp: str) -> None:
        with open(tmp, "wb") as f:  # a file object, since savez appends .npz to a name without it
            np.savez_compressed(f, masks=masks)
    atomic_write(path, save)


def write_sample(folder: str | Path, frames: np.ndarray, fps: float, caption: str,
                 entities: Mapping[str, np.ndarray], timed_captions: Sequence[TimedCaption | Mapping] | None = None,
                 video_format: str = "png",
                 references: Mapping[str, Sequence[tuple[np.ndarray, np.ndarray]]] | None = None) -> Path:
    """Write a sample in the on-disk format: frames as a PNG folder ('png', lossless), an H.264 'mp4' or a 'gif'
    (PyAV), one .npz mask track per entity tag, and sample.json last (atomically), so a folder is only listed as a
    sample once it is complete. The folder must not hold a sample already."""
    folder = Path(folder)
    frames = np.asarray(frames)
    if frames.ndim != 4 or frames.shape[-1] != 3 or frames.dtype != np.uint8 or not len(frames):
        raise DatasetError(f"{folder}: frames must be uint8 [N, H, W, 3] with N >= 1, not {frames.dtype} "
                           f"{list(frames.shape)}")
    if video_format not in VIDEO_FORMATS:
        raise DatasetError(f"{folder}: video_format {video_format!r} must be one of {', '.join(VIDEO_FORMATS)}")
    if (folder / SAMPLE_FILE).exists():
        raise DatasetError(f"{folder}: already holds a sample; write to a new folder or delete it first")
    folder.mkdir(parents=True, exist_ok=True)
    entity_specs = []
    for i, (tag, masks) in enumerate(entities.items()):
        masks = np.asarray(masks).astype(bool)
        if masks.shape != frames.shape[:3]:
            raise DatasetError(f"masks of entity '{tag}' are {list(masks.shape)} but the frames are "
                               f"{list(frames.shape[:3])}; give one [H, W] mask per frame")
        rel = f"masks/{i:02d}_{slug(tag)}.npz"  # the index keeps tags that slug alike apart
        write_masks(folder / rel, masks)
        spec_entity = {"tag": tag, "masks": rel}
        for j, (image, mask) in enumerate((references or {}).get(tag, [])):
            ref = f"refs/{i:02d}_{slug(tag)}_{j}.png"
            (folder / "refs").mkdir(exist_ok=True)
            rgba = np.dstack([np.asarray(image, np.uint8), np.asarray(mask, bool).astype(np.uint8) * 255])
            atomic_write(folder / ref, lambda tmp, rgba=rgba: Image.fromarray(rgba, "RGBA").save(tmp, format="PNG"))
            spec_entity.setdefault("references", []).append(ref)
        entity_specs.append(spec_entity)
    spec = {"video": write_frames(folder, frames, fps, video_format), "fps": float(fps), "caption": caption,
            "timed_captions": [timed_caption_dict(c) for c in timed_captions or []], "entities": entity_specs}
    atomic_write(folder / SAMPLE_FILE, lambda tmp: Path(tmp).write_text(json.dumps(spec, indent=1), encoding="utf-8"))
    return folder
