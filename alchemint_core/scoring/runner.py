"""`score` and `benchmark`: a benchmark file's videos scored the S2VTime way (tracks from a curation backend,
t-IOU / t-L2, CLIP-T / CLIP-I), and the runner that first generates those videos with chosen models (the demo model,
a full AlcheMinT model file, or either as the paper's prompt-only baseline) so one command gives the comparison rows.

Everything a run depends on is checked before the first video is made or scored (`load_benchmark`, `check_models`,
`check_writable`); generated videos are written atomically and skipped on a rerun."""
from __future__ import annotations

import json
import math
import os
import shutil
import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable

import numpy as np
from PIL import Image

from ..config import AdapterConfig
from ..data.dataset import DatasetError, read_video
from ..files import SafetensorsFile, atomic_write, check_writable, read_metadata_json
from ..guidance import Guidance
from .benchmark import ID_RE, Benchmark, BenchItem, check_subject_count, check_videos, load_benchmark, reference_image
from .identity import Embedder, masked_crop
from .subjects import SubjectScore, score_subject, summarise, track_for_scoring

Progress = Callable[[int, int], None]  # (done, total)
VIDEO_FORMATS = ("png", "mp4")  # png: a lossless frame folder (scores exactly what the model drew); mp4: H.264


# ------------------------------------------------------------------------------------------------------- scoring

def clip_reference(path: Path) -> np.ndarray:
    """The reference image CLIP-I compares with: the subject alone on grey (cropped to its alpha mask) when the image
    has transparency, else the whole image."""
    image, mask = reference_image(path)
    return masked_crop(image, mask) if mask is not None else image


def prepare_scoring(bench: Benchmark, backend: str, max_subjects: int) -> None:
    """What `score` checks before loading any model: subject counts, demo tags, the videos."""
    if not 1 <= max_subjects <= 10_000:
        raise DatasetError(f"--max-subjects {max_subjects} must be at least 1: the subjects the model that made the "
                           f"videos takes (its max_refs)")
    check_subject_count(bench, max_subjects, f"--max-subjects {max_subjects}",
                        "split the item or raise --max-subjects to what the model that made the videos takes")
    if backend == "demo":
        check_demo_tags(bench)
    check_videos(bench)


def score_benchmark(bench: Benchmark, backend, embedder: Embedder | None = None,
                    progress: Progress | None = None) -> list[SubjectScore]:
    """Every subject of every item: its track by `track_for_scoring`, scored by `score_subject`."""
    total = sum(len(item.subjects) for item in bench.items)
    rows: list[SubjectScore] = []
    for item in bench.items:
        frames, rate = read_video(item.video)
        fps = rate or bench.fps
        for s in item.subjects:
            track = track_for_scoring(backend, frames, s.tag, (s.start, s.end), fps)
            reference = clip_reference(s.reference) if embedder is not None and s.reference is not None else None
            rows.append(score_subject(item.id, s.tag, (s.start, s.end), track, fps, frames, reference, embedder))
            if progress:
                progress(len(rows), total)
    return rows


def finite(value):
    """JSON has no NaN: a column nobody measured is null."""
    if isinstance(value, float) and math.isnan(value):
        return None
    if isinstance(value, (list, tuple)):
        return [finite(v) for v in value]
    if isinstance(value, dict):
        return {k: finite(v) for k, v in value.items()}
    return value


def write_results(path: str | Path, results: dict[str, list[SubjectScore]], options: dict) -> Path:
    """One entry per model: the summary (mean and bootstrap 95% CI per column) and the per-subject rows."""
    data = {"options": options,
            "results": {name: {"summary": summarise(rows), "subjects": [r.as_dict() for r in rows]}
                        for name, rows in results.items()}}
    return atomic_write(path, lambda tmp: Path(tmp).write_text(json.dumps(finite(data), indent=1), encoding="utf-8"))


# ---------------------------------------------------------------------------------------------------- generation

@dataclass
class ModelChoice:
    name: str  # the table row and the folder of its videos under --out
    path: Path | None  # None: the shipped demo model
    prompt_only: bool = False  # the paper's baseline: no references, no intervals, the timing in the caption


@dataclass
class Sampling:
    steps: int
    shift: float
    guidance: Guidance


def parse_models(specs: list[str], prompt_only: bool) -> list[ModelChoice]:
    """--model demo | PATH | NAME=PATH, each also as its prompt-only baseline with --prompt-only."""
    choices = []
    for spec in specs:
        name, sep, path = spec.partition("=")
        if not sep:
            name, path = (spec, None) if spec == "demo" else (Path(spec).stem, spec)
        if not ID_RE.match(name) or name.endswith("."):
            raise DatasetError(f"--model {spec!r}: the name {name!r} names a folder of videos; use letters, digits, "
                               f"'.', '_', '-' (e.g. --model mine=PATH)")
        choices.append(ModelChoice(name, Path(path) if path else None))
        if prompt_only:
            choices.append(ModelChoice(f"{name}-prompt-only", choices[-1].path, True))
    names = [c.name for c in choices]
    dup = next((n for n in names if names.count(n) > 1), None)
    if dup is not None:
        raise DatasetError(f"--model: two models are named {dup!r}; name them apart with NAME=PATH")
    return choices


def model_max_refs(path: Path | None) -> int:
    """The subjects a model file takes, read from its header (no weights loaded)."""
    from ..demo.pipeline import MODEL_FILE
    f = SafetensorsFile(path or MODEL_FILE)
    adapter = read_metadata_json(f.metadata, "alchemint_adapter")
    if adapter is None:
        raise DatasetError(f"--model {path}: not an AlcheMinT model file (no adapter in its header); give a full "
                           f"model file with its adapter, as the trainer exports in mode full")
    return AdapterConfig.from_dict(adapter).max_refs


def check_demo_tags(bench: Benchmark, drawn: bool = False) -> None:
    """Tags the demo backend can find, or (drawn=True) tags the demo pipeline can draw a reference from, for the
    subjects that have no reference image."""
    from ..data.curate.backends.demo import parse_tag
    from ..demo.pipeline import appearance_of
    for item in bench.items:
        for s in item.subjects:
            if drawn and s.reference is not None:
                continue
            try:
                appearance_of(s.tag) if drawn else parse_tag(s.tag)
            except ValueError as err:  # the message names the tag and the fix
                raise bench.fail(item, str(err)) from None


def check_models(bench: Benchmark, choices: list[ModelChoice]) -> None:
    """Every model takes every item's subjects (prompt-only rows take none), and the demo pipeline can draw a
    reference for each subject without one."""
    for c in choices:
        if not c.prompt_only:
            check_subject_count(bench, model_max_refs(c.path), f"model {c.name}",
                                "remove subjects or use a model trained with a larger max_refs")
    check_demo_tags(bench, drawn=True)


def video_path(folder: Path, item: BenchItem, video_format: str) -> Path:
    return folder / (item.id if video_format == "png" else f"{item.id}.mp4")


def write_frames(frames: np.ndarray, path: Path, fps: float, video_format: str) -> None:
    """A PNG frame folder (renamed into place when complete) or an .mp4; either way a rerun never sees half a video."""
    if video_format == "mp4":
        from ..media import write_video
        write_video(frames, path, fps)
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent))
    try:
        for i, frame in enumerate(frames):
            Image.fromarray(frame).save(tmp / f"frame_{i:05d}.png")
        os.replace(tmp, path)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def prompt_only_caption(item: BenchItem) -> str:
    """The paper's baseline caption: the global caption, then "<tag> appears between a and b seconds." per subject."""
    caption = item.caption.strip() or " and ".join(f"a {s.tag}" for s in item.subjects)
    return " ".join([caption.rstrip(".") + "."]
                    + [f"{s.tag} appears between {s.start:g} and {s.end:g} seconds." for s in item.subjects])


def generate_item(pipe, bench: Benchmark, item: BenchItem, choice: ModelChoice, sampling: Sampling) -> np.ndarray:
    from ..demo.pipeline import Subject
    if choice.prompt_only:
        subjects, prompt = [], prompt_only_caption(item)
    else:
        subjects = [Subject(s.tag, s.start, s.end, *(reference_image(s.reference) if s.reference else (None, None)))
                    for s in item.subjects]
        prompt = item.caption or None
    return pipe.generate(subjects, prompt, item.seed, sampling.steps, sampling.shift, None, bench.frames, bench.fps,
                         sampling.guidance).frames


def generation_record(choice: ModelChoice, sampling: Sampling, encoders, video_format: str) -> dict:
    return {"model": str(choice.path) if choice.path else "demo", "prompt_only": choice.prompt_only,
            "encoders": str(encoders) if encoders else None, "steps": sampling.steps, "shift": sampling.shift,
            "ref_scale": sampling.guidance.ref_scale, "text_scale": sampling.guidance.text_scale,
            "video_format": video_format}


def model_benchmark_file(out: Path, choice: ModelChoice) -> Path:
    return out / choice.name / "benchmark.json"


def check_earlier_run(out: Path, choice: ModelChoice, record: dict) -> None:
    """A rerun keeps the videos already written only when they were made the same way."""
    path = model_benchmark_file(out, choice)
    if not path.is_file():
        return
    try:
        earlier = json.loads(path.read_text(encoding="utf-8")).get("generated_with")
    except (OSError, ValueError, AttributeError):
        earlier = None
    if earlier != record:
        raise DatasetError(f"--out {out}: the videos in {path.parent} were generated with other settings ({earlier}); "
                           f"use another --out, or delete that folder to generate them again")


def write_model_benchmark(bench: Benchmark, out: Path, choice: ModelChoice, record: dict) -> Path:
    """The benchmark file of one model's videos (the videos relative to it, references absolute): `score` reads it."""
    folder = out / choice.name
    items = [{"id": it.id, "caption": it.caption, "seed": it.seed,
              "video": video_path(folder, it, record["video_format"]).name,
              "timed_captions": [asdict(t) for t in it.timed_captions],
              "subjects": [{"tag": s.tag, "description": s.description, "start": s.start, "end": s.end,
                            **({"reference": str(s.reference.resolve())} if s.reference else {})}
                           for s in it.subjects]} for it in bench.items]
    data = {"fps": bench.fps, "frames": bench.frames, "items": items, "generated_with": record,
            "source": str(bench.path.resolve())}
    return atomic_write(model_benchmark_file(out, choice),
                        lambda tmp: Path(tmp).write_text(json.dumps(data, indent=1), encoding="utf-8"))


def generate_videos(bench: Benchmark, choice: ModelChoice, out: Path, sampling: Sampling, encoders=None,
                    video_format: str = "png", progress: Progress | None = None) -> tuple[Benchmark, int]:
    """One model's video of every item under out/<name>/ (those already there are kept), and the benchmark of
    those videos. Returns it and the number of videos generated now."""
    from ..demo.pipeline import DemoPipeline
    record = generation_record(choice, sampling, encoders, video_format)
    folder, pipe, made = out / choice.name, None, 0
    for i, item in enumerate(bench.items):
        path = video_path(folder, item, video_format)
        if not path.exists():
            pipe = pipe or DemoPipeline(choice.path, encoders)
            write_frames(generate_item(pipe, bench, item, choice, sampling), path, bench.fps, video_format)
            made += 1
        if progress:
            progress(i + 1, len(bench.items))
    return load_benchmark(write_model_benchmark(bench, out, choice, record)), made
