"""`curate`: a folder of videos and their captions -> samples in the dataset format (sample.json, frames, one mask
track per entity), readable by `cache` unchanged.

Per video: tags (given in the captions file, or extracted), grounding, tracking and cleaning (stages.py) of each
tag, then the sample written with sample.json last, so a killed run never leaves half a sample and a rerun skips
what is done. A video that cannot be used gets one line in the summary and the run goes on."""
from __future__ import annotations

import json
import re
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np

from ...files import read_small_text
from ...synthetic import COLOURS, SHAPES
from ..dataset import SAMPLE_FILE, DatasetError, TimedCaption, read_video, write_sample
from .backends.models import MODEL_FOLDERS, model_folder, require_transformers
from .stages import Backend, curate_entity
from .tags import apply_rules

VIDEO_SUFFIXES = (".mp4", ".mov", ".webm", ".mkv", ".avi", ".gif")
BACKENDS = ("sam3", "gdino-sam2", "demo")
MAX_TAGS = 64  # per video


@dataclass
class VideoEntry:
    caption: str
    timed_captions: list[TimedCaption] = field(default_factory=list)
    tags: list[str] | None = None  # None: extract them from the captions
    fps: float | None = None


@dataclass
class CurateReport:
    written: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)  # already curated
    failed: dict[str, str] = field(default_factory=dict)  # video -> why
    not_found: dict[str, list[str]] = field(default_factory=dict)  # video -> tags found in no frame
    notes: list[str] = field(default_factory=list)  # about the run as a whole

    @classmethod
    def merged(cls, reports: list[CurateReport], videos: list[Path]) -> CurateReport:
        """The reports of a job's parts (--workers, Ray) as one, in the order one process lists the videos."""
        rank = {}  # samples are named by the video's stem, failures by its file name
        for i, v in enumerate(videos):
            rank[v.name] = rank[v.stem if v.is_file() else v.name] = i

        def ordered(name: str) -> list[str]:
            return sorted((x for r in reports for x in getattr(r, name)), key=rank.__getitem__)

        failed = {k: v for r in reports for k, v in r.failed.items()}
        not_found = {k: v for r in reports for k, v in r.not_found.items()}
        notes = list(dict.fromkeys(n for r in reports for n in r.notes))  # every part makes the run's notes
        return cls(ordered("written"), ordered("skipped"), {k: failed[k] for k in ordered("failed")},
                   {k: not_found[k] for k in ordered("not_found")}, notes)

    def summary(self) -> str:
        lines = [f"{len(self.written)} samples written, {len(self.skipped)} already there, "
                 f"{len(self.failed)} videos failed"]
        lines += [f"  note: {note}" for note in self.notes]
        lines += [f"  failed: {name}: {why}" for name, why in self.failed.items()]
        lines += [f"  not found in {name}: {', '.join(tags)}" for name, tags in self.not_found.items()]
        return "\n".join(lines)


def list_videos(folder: Path) -> list[Path]:
    """Video files and frame folders (folders of images) in `folder`, by name."""
    if not folder.is_dir():
        raise DatasetError(f"--videos {folder}: no such folder; give the folder holding your videos")
    out = [p for p in folder.iterdir() if (p.is_file() and p.suffix.lower() in VIDEO_SUFFIXES) or p.is_dir()]
    return sorted(out, key=lambda p: p.name)


def read_captions(path: Path, videos: list[Path]) -> tuple[dict[str, VideoEntry], list[str]]:
    """The captions file: a JSON object from each video's file name (or stem) to {"caption": ..., optional
    "timed_captions": [{"start", "end", "text"}] in seconds, optional "tags": [...], optional "fps"} or to the
    caption alone. Returns the entries by video file name and the names that match no video (left out)."""
    if not path.is_file():
        raise DatasetError(f"--captions {path}: no such file; give the JSON file of your videos' captions")
    try:
        spec = json.loads(read_small_text(path, "--captions"))
    except UnicodeDecodeError as err:
        raise DatasetError(f"--captions {path}: not UTF-8 text ({err.reason} at byte {err.start}); save it as "
                           "UTF-8") from None
    except json.JSONDecodeError as err:
        raise DatasetError(f"--captions {path}: not JSON ({err.msg}, line {err.lineno}); write an object from "
                           "video file name to caption") from None
    if not isinstance(spec, dict):
        raise DatasetError(f"--captions {path}: expected a JSON object from video file name to caption")
    names = {v.name: v.name for v in videos} | {v.stem: v.name for v in videos}
    unknown = [k for k in spec if k not in names]
    out = {}
    for key, value in spec.items():
        if key in unknown:
            continue
        entry = {"caption": value} if isinstance(value, str) else value
        if not isinstance(entry, dict) or not isinstance(entry.get("caption"), str) or not entry["caption"].strip():
            raise DatasetError(f"--captions {path}: '{key[:80]}' needs a non-empty \"caption\" string")
        tags = entry.get("tags")
        if tags is not None and (not isinstance(tags, list) or not all(isinstance(t, str) for t in tags)):
            raise DatasetError(f"--captions {path}: '{key[:80]}' \"tags\" must be a list of strings")
        timed = [TimedCaption(float(c["start"]), float(c["end"]), str(c["text"]))
                 for c in entry.get("timed_captions") or []]
        out[names[key]] = VideoEntry(entry["caption"], timed, tags, entry.get("fps"))
    return out, unknown


def demo_tags(caption: str) -> list[str]:
    """The demo's vocabulary: every 'colour shape' phrase of the caption, once, in order."""
    pattern = rf"\b({'|'.join(COLOURS)})\s+({'|'.join(SHAPES)})\b"
    return list(dict.fromkeys(f"{c} {s}" for c, s in re.findall(pattern, caption.lower())))


def tag_interval(entry: VideoEntry, tag: str, frames: int, fps: float) -> tuple[int, int]:
    """Frames where the tag is sought: the span of the timed captions that mention it, else the whole video."""
    spans = [(c.start, c.end) for c in entry.timed_captions if tag.lower() in c.text.lower()]
    if not spans:
        return 0, frames - 1
    first = int(np.clip(np.floor(min(a for a, _ in spans) * fps), 0, frames - 1))
    last = int(np.clip(np.ceil(max(b for _, b in spans) * fps) - 1, first, frames - 1))
    return first, last


def curate_video(backend: Backend, video: Path, entry: VideoEntry, out: Path,
                 tagger: Callable[[str], list[str]]) -> list[str]:
    """One video -> one sample folder `out`; returns the tags found in no frame or dropped by the tag rules."""
    frames, container_fps = read_video(video)
    if len(frames) == 0:
        raise DatasetError("the video has no frames")
    fps = float(entry.fps or container_fps or 0)
    if fps <= 0:
        raise DatasetError("no frame rate: give \"fps\" for it in the captions file")
    tags, dropped = apply_rules(entry.caption, entry.tags if entry.tags is not None else tagger(entry.caption))
    masks, missing = {}, [f"{tag} ({why})" for tag, why in list(dropped.items())[:MAX_TAGS]]
    if len(dropped) > MAX_TAGS:
        missing.append(f"{len(dropped) - MAX_TAGS} more tags dropped by the tag rules")
    if len(tags) > MAX_TAGS:  # each tag costs detections at several frames and a tracking pass
        missing.append(f"{len(tags) - MAX_TAGS} tags after the first {MAX_TAGS} left out (at most {MAX_TAGS} per "
                       "video; give each video only the subjects it shows)")
        tags = tags[:MAX_TAGS]
    for tag in tags:
        found = curate_entity(backend, frames, tag, tag_interval(entry, tag, len(frames), fps))
        if found is None:
            missing.append(tag)
        else:
            masks[tag] = found[0]
    if out.exists():  # a folder without sample.json: what a killed run left
        shutil.rmtree(out)
    write_sample(out, frames, fps, entry.caption, masks, entry.timed_captions)
    return missing


def make_backend(name: str, models: Path | None = None) -> Backend:
    """The backend by name, its models loaded from their folders under `models` (backends/models.py)."""
    if name == "demo":
        from .backends.demo import DemoBackend
        return DemoBackend()
    if name in ("sam3", "gdino-sam2"):
        require_transformers(f"--backend {name}")
    if name == "sam3":
        from .backends.sam3 import Sam3Backend
        return Sam3Backend.from_folder(models)
    if name == "gdino-sam2":
        from .backends.gdino_sam2 import GroundingDinoSam2Backend
        return GroundingDinoSam2Backend.from_folder(models)
    raise DatasetError(f"--backend {name!r} must be one of {', '.join(BACKENDS)}")


def make_tagger(backend: str, models: Path | None) -> Callable[[str], list[str]]:
    """Tags for captions that give none: the language model in `models`/tagger when there is one, else the demo's
    vocabulary with the demo backend; other backends then need the tagger (checked at the first caption that needs
    it, so a captions file that gives every tag needs no language model)."""
    if models is not None and (Path(models) / MODEL_FOLDERS["tagger"].name).exists():
        require_transformers(f"the tag extractor in {Path(models) / MODEL_FOLDERS['tagger'].name}")
        from .llm_tags import LanguageModelTagger
        return LanguageModelTagger.from_folder(models)
    if backend == "demo":
        return demo_tags

    def needs_tagger(caption: str) -> list[str]:
        model_folder(models, "tagger")  # raises the line naming the folder
        raise AssertionError("unreachable")
    return needs_tagger


def curate(videos: str | Path, out: str | Path, captions: str | Path | None = None, backend: str = "sam3",
           models: str | Path | None = None, part: tuple[int, int] | None = None,
           progress: Callable[[int, int], None] | None = None) -> CurateReport:
    files = list_videos(Path(videos))
    if captions is None:
        raise DatasetError("curate needs the videos' captions: give --captions FILE (a JSON object from video file "
                           "name to caption)")
    entries, unknown = read_captions(Path(captions), files)
    models = Path(models) if models else None
    engine, tagger = make_backend(backend, models), make_tagger(backend, models)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    report = CurateReport()
    if unknown:
        report.notes.append(f"--captions {captions}: {len(unknown)} name(s) match no video in the folder and are "
                            f"left out (first: '{unknown[0][:80]}'); use the video file names")
    todo = [v for i, v in enumerate(files) if part is None or i % part[1] == part[0]]
    for k, video in enumerate(todo):
        name = video.stem if video.is_file() else video.name
        if (out / name / SAMPLE_FILE).exists():
            report.skipped.append(name)
        elif video.name not in entries:
            report.failed[video.name] = "no caption in the captions file; add one"
        else:
            try:
                missing = curate_video(engine, video, entries[video.name], out / name, tagger)
                report.written.append(name)
                if missing:
                    report.not_found[name] = missing
            except (DatasetError, OSError, ValueError) as err:
                report.failed[video.name] = str(err).splitlines()[0][:300]
        if progress:
            progress(k + 1, len(todo))
    return report
