"""The demo end to end: subjects (tag, interval, optional image) -> references -> sampling -> decoded frames."""
from __future__ import annotations

import re
import time
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import torch

from ..dataset import crop_reference
from ..encoders import load_encoders
from ..guidance import Conditioning, Guidance
from ..intervals import IntervalError, interval_to_latent, latent_frame_count
from ..loading import load_model
from ..references import References
from ..rope import TemporalRope
from ..sampling import StepCallback, generate
from ..synthetic import COLOURS, SHAPES, Appearance, render_reference

WEIGHTS = Path(__file__).parent / "weights"
MODEL_FILE = WEIGHTS / "model.safetensors"
ENCODERS_FILE = WEIGHTS / "encoders.safetensors"
SIZE = 64
FPS = 8.0
FRAMES = 17
# Sampling defaults of the shipped model, chosen with the timing benchmark.
DEFAULT_STEPS = 40
DEFAULT_SHIFT = 3.0
DEFAULT_GUIDANCE = Guidance(ref_scale=2.0, text_scale=3.0)


@dataclass
class Subject:
    tag: str
    start: float  # seconds
    end: float
    image: np.ndarray | None = None  # uint8 [H, W, 3] reference; None: rendered from the tag
    mask: np.ndarray | None = None


@dataclass
class DemoResult:
    frames: np.ndarray  # uint8 [N, H, W, 3]
    references: list[np.ndarray]
    subjects: list[Subject]
    prompt: str
    fps: float
    seconds: float


SUBJECT_RE = re.compile(r"^\s*(?P<tag>[^:]+?)\s*:\s*(?P<start>[-+0-9.eE]+)\s*-\s*(?P<end>[-+0-9.eE]+)\s*$")


def parse_subject(text: str) -> Subject:
    """'red ring:0.5-2.0' -> Subject('red ring', 0.5, 2.0)."""
    m = SUBJECT_RE.match(text)
    if not m:
        raise ValueError(f"--subject {text!r}: write TAG:START-END in seconds, e.g. --subject \"red ring:0.5-2.0\"")
    try:
        return Subject(" ".join(m["tag"].split()), float(m["start"]), float(m["end"]))
    except ValueError:
        raise ValueError(f"--subject {text!r}: START and END must be numbers of seconds") from None


def appearance_of(tag: str) -> Appearance:
    words = tag.lower().split()
    colours = [w for w in words if w in COLOURS]
    shapes = [w for w in words if w in SHAPES]
    if len(colours) != 1 or len(shapes) != 1:
        raise ValueError(f"subject '{tag}': the demo draws its reference from a colour ({', '.join(COLOURS)}) and a "
                         f"shape ({', '.join(SHAPES)}), e.g. 'red ring'; or give a reference image")
    return Appearance(colours[0], shapes[0], "striped" if "striped" in words else "solid")


class DemoPipeline:
    """The shipped tiny model with its own VAE and text encoder."""

    def __init__(self, model_path: str | Path | None = None, encoders_path: str | Path | None = None,
                 device: str = "cpu"):
        self.model = load_model(model_path or MODEL_FILE, device=device)
        if self.model.alchemint is None:
            raise ValueError(f"{model_path}: not an AlcheMinT model (no adapter in the file)")
        self.vae, self.text = load_encoders(encoders_path or ENCODERS_FILE)
        self.device = torch.device(device)

    def reference(self, subject: Subject, seed: int) -> tuple[np.ndarray, np.ndarray]:
        if subject.image is not None:
            mask = subject.mask if subject.mask is not None else np.ones(subject.image.shape[:2], bool)
            return crop_reference(subject.image, mask, (SIZE, SIZE))
        rng = np.random.default_rng([seed, len(subject.tag)])
        return render_reference(rng, appearance_of(subject.tag), SIZE, SIZE)

    @torch.no_grad()
    def encode_text(self, texts: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
        emb, mask = self.text.encode(texts)
        return emb.to(self.device), mask.to(self.device)

    @torch.no_grad()
    def conditioning(self, subjects: list[Subject], prompt: str, frames: int, fps: float, seed: int,
                     rope: TemporalRope | None) -> tuple[Conditioning, list[np.ndarray]]:
        refs = [self.reference(s, seed) for s in subjects]
        ctx, ctx_mask = self.encode_text([prompt])
        if not subjects:
            return Conditioning(ctx, context_mask=ctx_mask), []
        images = torch.from_numpy(np.stack([r[0] for r in refs])).permute(0, 3, 1, 2).float() / 127.5 - 1
        latents = self.vae.latent_format.normalize(self.vae.encode(images[:, :, None]))[:, :, 0]  # [R, C, h, w]
        tags, tag_mask = self.encode_text([s.tag for s in subjects])
        half = self.model.alchemint.cfg.min_half_length
        intervals = []
        for s in subjects:
            intervals.append(interval_to_latent(s.start, s.end, fps, frames, half, name=f"subject '{s.tag}'"))
        r = References(latents[None].to(self.device), tags[None], torch.tensor([intervals]),
                       tag_lengths=tag_mask.sum(1)[None].cpu(), rope=rope)
        return Conditioning(ctx, refs=r, context_mask=ctx_mask), [x[0] for x in refs]

    def generate(self, subjects: list[Subject], prompt: str | None = None, seed: int = 0,
                 steps: int = DEFAULT_STEPS, shift: float = DEFAULT_SHIFT, mode: str | None = None,
                 frames: int = FRAMES, fps: float = FPS, guidance: Guidance = DEFAULT_GUIDANCE,
                 callback: StepCallback | None = None) -> DemoResult:
        latent_frame_count(frames)
        if len(subjects) > self.model.alchemint.cfg.max_refs:
            raise ValueError(f"{len(subjects)} subjects given; this model takes at most "
                             f"{self.model.alchemint.cfg.max_refs}")
        prompt = prompt or " and ".join(f"a {s.tag}" for s in subjects) or "an empty scene"
        rope = replace(self.model.alchemint.temporal_rope, mode=mode) if mode else None
        t0 = time.perf_counter()
        cond, refs = self.conditioning(subjects, prompt, frames, fps, seed, rope)
        negative, negative_mask = self.encode_text([""])
        shape = (1, self.vae.latent_channels, latent_frame_count(frames), SIZE // 8, SIZE // 8)
        latents = generate(self.model, cond, negative, shape, seed, guidance, steps, shift,
                           latent_format=self.vae.latent_format, callback=callback, negative_mask=negative_mask)
        with torch.no_grad():
            video = self.vae.decode(latents.cpu().float())[0]  # [3, N, H, W] in [-1, 1]
        out = ((video.permute(1, 2, 3, 0).numpy() + 1) * 127.5).round().clip(0, 255).astype(np.uint8)
        return DemoResult(out, refs, subjects, prompt, fps, time.perf_counter() - t0)


def check_subjects(subjects: list[Subject], frames: int, fps: float) -> None:
    """Validate every interval up front so a bad one fails before any work."""
    for s in subjects:
        try:
            interval_to_latent(s.start, s.end, fps, frames, name=f"subject '{s.tag}'")
        except IntervalError as err:
            raise ValueError(str(err)) from None
