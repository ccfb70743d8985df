"""The timing benchmark (S2VTime protocol on synthetic data whose ground truth is exact).

Held-out prompts use appearances never seen in training. Each generated video is searched for each subject;
its predicted interval (first..last frame present) is scored against the requested one (t-IOU, t-L2), and the
detected subject's shape and colour against the request (identity)."""
from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import numpy as np
import torch

from ..files import SafetensorsFile, read_small_text, save_safetensors
from ..native import DemoVAE
from ..sampling.guidance import Guidance
from ..scoring.subjects import score_subject
from ..scoring.timing import mean_ci, predicted_interval, t_iou, t_l2
from ..synthetic import SHAPES, Appearance, appearances, pick_appearances, random_subject, render_video
from .detector import MIN_AREA, ShapeClassifier, SubjectDetector, colour_track, train_shape_classifier
from .pipeline import (DEFAULT_GUIDANCE, DEFAULT_SHIFT, FPS, FRAMES, SIZE, WEIGHTS, DemoPipeline, Subject,
                       appearance_of, check_subjects, decode_frames)

CLASSIFIER_FILE = WEIGHTS / "shape_classifier.safetensors"
ABLATIONS = {name: WEIGHTS / "ablations" / f"{name}.safetensors" for name in ("werope", "mid", "none", "avg",
                                                                                "prompt-only")}


@dataclass
class PromptSubject:
    tag: str
    start: float
    end: float


@dataclass
class Prompt:
    subjects: list[PromptSubject]
    seed: int


def heldout_interval(rng: np.random.Generator, frames: int) -> tuple[int, int]:
    """First/last frame of a held-out interval: 4 to ~70% of the clip's frames, never the whole clip, so a model
    that draws every subject all the time scores low (about 0.45 t-IOU) and timing has to be followed."""
    length = int(rng.integers(4, max(5, round(0.7 * frames)) + 1))
    first = int(rng.integers(0, frames - length + 1))
    return first, first + length - 1


def heldout_prompts(count: int = 100, seed: int = 1234, frames: int = FRAMES, fps: float = FPS,
                    split: str = "test") -> list[Prompt]:
    """Prompts with 1-2 subjects each, until `count` subject-intervals; intervals on frame boundaries. split "test":
    appearances held out of training (the benchmark); "train": appearances seen in training (the same protocol,
    to tell sample quality from generalisation to unseen appearances)."""
    pool = appearances(split)
    rng = np.random.default_rng(seed)
    prompts, n = [], 0
    while n < count:
        k = min(int(rng.integers(1, 3)), count - n)
        subjects = []
        for a in pick_appearances(rng, pool, k):
            first, last = heldout_interval(rng, frames)
            subjects.append(PromptSubject(a.tag, first / fps, (last + 1) / fps))
        prompts.append(Prompt(subjects, int(rng.integers(0, 2 ** 31))))
        n += k
    return prompts


def load_prompts(path: str | Path) -> list[Prompt]:
    """A JSON list: [{"subjects": [{"tag": "red star", "start": 0.5, "end": 1.5}, ...], "seed": 3}, ...]."""
    try:
        data = json.loads(read_small_text(path, "--prompts"))
        prompts = [Prompt([PromptSubject(str(s["tag"]), float(s["start"]), float(s["end"])) for s in p["subjects"]],
                          int(p.get("seed", i))) for i, p in enumerate(data)]
    except (OSError, json.JSONDecodeError, KeyError, TypeError, ValueError, RecursionError) as err:
        raise ValueError(f"--prompts {path}: expected a JSON list of {{\"subjects\": [{{\"tag\", \"start\", \"end\"}}], "
                         f"\"seed\"}} objects ({err})") from None
    try:  # checked before the detector is validated or a video made
        for p in prompts:
            for s in p.subjects:
                appearance_of(s.tag)  # a tag the detector can look for
            check_subjects([Subject(s.tag, s.start, s.end) for s in p.subjects], FRAMES, FPS)
    except ValueError as err:
        raise ValueError(f"--prompts {path}: {err}") from None
    return prompts


def load_detector() -> SubjectDetector:
    """The shipped shape classifier (trained once: `train_shape_classifier`)."""
    clf = ShapeClassifier()
    f = SafetensorsFile(CLASSIFIER_FILE)
    clf.load_state_dict({k: f.tensor(k) for k in f.keys()})
    return SubjectDetector(clf.eval().requires_grad_(False))


def save_detector(path: Path = CLASSIFIER_FILE, steps: int = 600, seed: int = 0) -> Path:
    return save_safetensors(train_shape_classifier(steps, seed).state_dict(), path, {"format": "alchemint-shape-clf"})


def validate_detector(detector: SubjectDetector, videos: int = 60, seed: int = 99) -> float:
    """Mean t-IOU of the detector's intervals against the ground-truth masks' (first..last frame where the subject
    is visible: occlusion by another subject can hide it) on synthetic videos of held-out appearances."""
    rng = np.random.default_rng(seed)
    scores = []
    for _ in range(videos):
        k = int(rng.integers(1, 4))
        subs = [random_subject(rng, a, FRAMES, SIZE, SIZE, i, k)
                for i, a in enumerate(pick_appearances(rng, appearances("test"), k))]
        video = render_video(rng, subs, FRAMES, SIZE, SIZE)
        for s in subs:
            det = detector.detect(video.frames, s.appearance.colour, s.appearance.shape)
            visible = video.masks[s.appearance.tag].reshape(FRAMES, -1).mean(1) >= MIN_AREA
            truth = predicted_interval(visible, FPS)
            if truth is not None:
                scores.append(t_iou(predicted_interval(det.present, FPS), truth))
    return float(np.mean(scores))


@dataclass
class Scores:
    name: str
    t_iou: tuple[float, float, float]  # mean, CI low, CI high
    t_l2: tuple[float, float, float]
    shape_accuracy: float  # over frames where the subject's colour is found
    colour_accuracy: float  # over frames where the subject's shape is found
    length_correlation: float  # requested vs predicted interval length
    seconds_per_video: float
    subjects: int
    input_shape_kept: float = math.nan  # --other-shapes: over the same frames, the shape the noised input showed
    per_subject: list[dict] = field(default_factory=list)  # SubjectScore.as_dict() of every subject scored


class Tally:
    """Per-subject timing and per-frame identity scores, accumulated over videos."""

    def __init__(self):
        self.rows, self.req_len, self.pred_len, self.times = [], [], [], []
        self.shape_ok = self.shape_n = self.colour_ok = self.colour_n = 0
        self.input_ok = self.input_n = 0  # with shown shapes only

    def add(self, frames: np.ndarray, subjects: list[PromptSubject], detector: SubjectDetector,
            shown: list[str] | None = None, item: str = "") -> None:
        """shown: the shape each subject had in the video the generation started from, when not the requested one.
        Timing is scored by `score_subject` (as `score` does) on the subject's colour track: its non-empty frames
        are exactly the frames the detector counts as present."""
        for i, s in enumerate(subjects):
            a = appearance_of(s.tag)
            det = detector.detect(frames, a.colour, a.shape)
            if shown is not None:
                self.input_ok += int(detector.detect(frames, a.colour, shown[i]).shape_right[det.present].sum())
                self.input_n += int(det.present.sum())
            row = score_subject(item, s.tag, (s.start, s.end), colour_track(frames, a.colour), FPS)
            self.rows.append(row)
            self.req_len.append(s.end - s.start)
            self.pred_len.append(0.0 if row.predicted is None else row.predicted[1] - row.predicted[0])
            self.shape_ok += int(det.shape_right[det.present].sum())
            self.shape_n += int(det.present.sum())
            self.colour_ok += int(det.colour_right[det.shape_seen].sum())
            self.colour_n += int(det.shape_seen.sum())

    def scores(self, name: str) -> Scores:
        corr = (float(np.corrcoef(self.req_len, self.pred_len)[0, 1])
                if np.std(self.pred_len) > 0 and np.std(self.req_len) > 0 else math.nan)
        return Scores(name, mean_ci([r.t_iou for r in self.rows]), mean_ci([r.t_l2 for r in self.rows]),
                      self.shape_ok / max(self.shape_n, 1), self.colour_ok / max(self.colour_n, 1), corr,
                      float(np.mean(self.times)) if self.times else 0.0, len(self.rows),
                      self.input_ok / self.input_n if self.input_n else math.nan, [r.as_dict() for r in self.rows])


def prompt_id(index: int) -> str:
    """The item name of a prompt in the per-subject rows."""
    return f"prompt {index + 1}"


def check_prompt_sizes(prompts: list[Prompt], models: list[tuple[str, str]], where: str) -> None:
    """Every prompt's subjects fit every model (read from the model files' headers): refused before any work."""
    from ..scoring.runner import model_max_refs
    for name, path in models:
        limit = model_max_refs(Path(path))
        for i, p in enumerate(prompts):
            if len(p.subjects) > limit:
                raise ValueError(f"{where}: {prompt_id(i)} has {len(p.subjects)} subjects but model {name} takes at "
                                 f"most {limit}; split the prompt into prompts of at most {limit} subjects")


def score(pipe: DemoPipeline, prompts: list[Prompt], detector: SubjectDetector, name: str, mode: str | None = None,
          wrong_reference: bool = False, steps: int = 40, timing_in_prompt: bool = False,
          rope_overrides: dict | None = None, guidance: Guidance = DEFAULT_GUIDANCE,
          shift: float = DEFAULT_SHIFT, from_truth: float = 1.0, other_shapes: bool = False,
          eta: float = 0.0) -> Scores:
    """Generate every prompt and score it. wrong_reference: each subject gets the reference image of another
    held-out appearance (tags unchanged): the baseline that shows identity comes from the references.
    timing_in_prompt: write the intervals into the caption, as the prompt-only ablation was trained.
    from_truth < 1: start each video from its ground truth noised to that level instead of pure noise (a
    diagnostic: what the model keeps or loses below that noise level). other_shapes (with from_truth < 1): that
    ground truth draws every subject in another shape of its colour, so the row tells whether the model draws the
    shape it is asked for (shape right) or the one its input shows (input_shape_kept)."""
    check_other_shapes(other_shapes, from_truth)
    tally = Tally()
    pool = appearances("test")
    for k, p in enumerate(prompts):
        subjects = [Subject(s.tag, s.start, s.end) for s in p.subjects]
        if wrong_reference:
            rng = np.random.default_rng(p.seed)
            for s in subjects:
                mine = appearance_of(s.tag)
                other = [a for a in pool if a.colour != mine.colour and a.shape != mine.shape]
                alt = other[int(rng.integers(len(other)))]
                s.image, s.mask = pipe.reference(Subject(alt.tag, 0, 1), p.seed)
        prompt = (" and ".join(f"a {s.tag} from {s.start:.1f} s to {s.end:.1f} s" for s in subjects)
                  if timing_in_prompt else None)
        shown = other_shapes_of(p) if other_shapes else None
        result = pipe.generate(subjects, prompt, seed=p.seed, steps=steps, shift=shift, mode=mode,
                               rope_overrides=rope_overrides, guidance=guidance, start_sigma=from_truth, eta=eta,
                               start_frames=ground_truth_video(p, shown) if from_truth < 1 else None)
        tally.times.append(result.seconds)
        tally.add(result.frames, p.subjects, detector, shown, prompt_id(k))
    return tally.scores(name)


def check_other_shapes(other_shapes: bool, from_truth: float) -> None:
    if other_shapes and from_truth >= 1:
        raise ValueError("other_shapes needs from_truth < 1: it changes the ground truth a video starts from")


def other_shapes_of(p: Prompt) -> list[str]:
    """For each subject of the prompt another shape, drawn from the prompt's seed."""
    rng = np.random.default_rng([p.seed, 1])
    out = []
    for s in p.subjects:
        others = [x for x in SHAPES if x != appearance_of(s.tag).shape]
        out.append(others[int(rng.integers(len(others)))])
    return out


def ground_truth_video(p: Prompt, shapes: list[str] | None = None) -> np.ndarray:
    """The prompt as the generator draws it (its subjects exactly inside their intervals): uint8 [N, H, W, 3].
    shapes: draw the subjects in these shapes instead (same colours, texture, places, motion and background)."""
    rng = np.random.default_rng(p.seed)
    k = len(p.subjects)
    looks = [appearance_of(s.tag) for s in p.subjects]
    if shapes is not None:
        looks = [replace(a, shape=shape) for a, shape in zip(looks, shapes)]
    subs = [random_subject(rng, a, FRAMES, SIZE, SIZE, i, k, interval=(round(s.start * FPS), round(s.end * FPS) - 1))
            for i, (s, a) in enumerate(zip(p.subjects, looks))]
    return render_video(rng, subs, FRAMES, SIZE, SIZE).frames


def through_vae(vae: DemoVAE, prompts: list[Prompt], detector: SubjectDetector,
                name: str = "ground truth through the VAE (ceiling)") -> Scores:
    """The ceiling of any model that makes latents for this VAE: the prompts' ground-truth videos encoded and decoded
    by it, then scored like a generated video. What the latent space cannot carry, no model can draw."""
    tally = Tally()
    for k, p in enumerate(prompts):
        video = torch.from_numpy(ground_truth_video(p)).float().div(255)  # [N, H, W, 3] in [0, 1]
        with torch.no_grad():
            tally.add(decode_frames(vae, vae.encode(video)), p.subjects, detector, item=prompt_id(k))
    return tally.scores(name)


def always_present(prompts: list[Prompt]) -> Scores:
    """The trivial baseline: every subject present in every frame (no model). Shows how much of a t-IOU comes from
    the interval lengths alone."""
    duration = FRAMES / FPS
    whole = (0.0, duration)
    reqs = [(s.start, s.end) for p in prompts for s in p.subjects]
    return Scores("always present (no model)", mean_ci([t_iou(whole, r) for r in reqs]),
                  mean_ci([t_l2(whole, r, duration) for r in reqs]), math.nan, math.nan, math.nan, 0.0, len(reqs))


def markdown_table(rows: list[Scores]) -> str:
    """The rows as a Markdown table; the input-shape column only when a row has it (--other-shapes)."""
    shown = any(not math.isnan(r.input_shape_kept) for r in rows)
    extra = (" input's shape kept |", "---|") if shown else ("", "")
    head = "| model | t-IOU (95% CI) | t-L2 (95% CI) | shape right | colour right | length corr. | s / video |"
    lines = [head + extra[0], "|---|---|---|---|---|---|---|" + extra[1]]
    pct = lambda v: "–" if math.isnan(v) else f"{v:.1%}"  # noqa: E731
    num = lambda v, f: "–" if math.isnan(v) or not v else format(v, f)  # noqa: E731
    for r in rows:
        lines.append(f"| {r.name} | {r.t_iou[0]:.3f} ({r.t_iou[1]:.3f}-{r.t_iou[2]:.3f}) | {r.t_l2[0]:.3f} "
                     f"({r.t_l2[1]:.3f}-{r.t_l2[2]:.3f}) | {pct(r.shape_accuracy)} | {pct(r.colour_accuracy)} | "
                     f"{num(r.length_correlation, '.2f')} | {num(r.seconds_per_video, '.2f')} |"
                     + (f" {pct(r.input_shape_kept)} |" if shown else ""))
    return "\n".join(lines)


def write_results(rows: list[Scores], path: str | Path, extra: dict) -> None:
    from ..files import atomic_write
    atomic_write(path, lambda tmp: Path(tmp).write_text(json.dumps({**extra, "results": [asdict(r) for r in rows]},
                                                                  indent=1)))
