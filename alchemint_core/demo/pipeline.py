"""The demo end to end: subjects (tag, interval, optional image) -> references -> sampling -> decoded frames."""
from __future__ import annotations

import re
import time
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import torch

from ..data.dataset import crop_reference
from ..encoders import load_encoders
from ..model.loading import load_model
from ..native import DemoCLIP, DemoVAE, conditioning_tensors
from ..sampling.flow import StepCallback
from ..sampling.generation import VideoModel, VideoRequest, generate_video
from ..sampling.guidance import Guidance
from ..sampling.intervals import IntervalError, interval_to_latent
from ..sampling.subjects import check_tag, make_subject
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


NUMBER = r"[-+]?(?:[0-9.]+(?:[eE][-+]?[0-9]+)?|nan|inf|infinity)"
SUBJECT_RE = re.compile(rf"^\s*(?P<tag>[^:]*?)\s*:\s*(?P<start>{NUMBER})\s*-\s*(?P<end>{NUMBER})\s*$", re.IGNORECASE)


def parse_subject(text: str) -> Subject:
    """'red ring:0.5-2.0' -> Subject('red ring', 0.5, 2.0)."""
    m = SUBJECT_RE.match(text)
    if not m:
        raise ValueError(f"--subject {text[:80]!r}: write TAG:START-END in seconds, e.g. --subject \"red ring:0.5-2.0\"")
    try:
        tag = check_tag(m["tag"])
        start, end = float(m["start"]), float(m["end"])
    except ValueError as err:
        raise ValueError(f"--subject {text[:80]!r}: {err}") from None
    return Subject(tag, start, end)


def appearance_of(tag: str) -> Appearance:
    words = tag.lower().split()
    colours = [w for w in words if w in COLOURS]
    shapes = [w for w in words if w in SHAPES]
    if len(colours) != 1 or len(shapes) != 1:
        raise ValueError(f"subject '{tag}': the demo draws its reference from a colour ({', '.join(COLOURS)}) and a "
                         f"shape ({', '.join(SHAPES)}), e.g. 'red ring'; or give a reference image")
    return Appearance(colours[0], shapes[0], "striped" if "striped" in words else "solid")


def encoders_for(model_path: str | Path | None, encoders_path: str | Path | None = None) -> Path:
    """The encoders a model works with (a DiT reads the latents of the VAE it was trained on): the given file, else
    the encoders.safetensors beside the model file, else the shipped ones."""
    if encoders_path:
        return Path(encoders_path)
    beside = Path(model_path or MODEL_FILE).parent / ENCODERS_FILE.name
    return beside if beside.is_file() else ENCODERS_FILE


def load_demo(model_path: str | Path | None = None, encoders_path: str | Path | None = None, device: str = "cpu"):
    """(model, vae, text encoder) of a demo model and the encoders it works with, checked to fit each other."""
    model = load_model(model_path or MODEL_FILE, device=device)
    if model.alchemint is None:
        raise ValueError(f"{model_path}: not an AlcheMinT model (no adapter in the file)")
    enc = encoders_for(model_path, encoders_path)
    vae, text = load_encoders(enc)
    if vae.latent_channels != model.cfg.in_dim:
        raise ValueError(f"{enc}: its VAE makes {vae.latent_channels}-channel latents but the model "
                         f"{model_path or MODEL_FILE} reads {model.cfg.in_dim}; give the encoders the model was "
                         f"trained with (--encoders, or an {ENCODERS_FILE.name} beside the model file)")
    return model, vae, text


def default_caption(tags: list[str]) -> str:
    """The caption of a video asked for without one: its subjects named."""
    return " and ".join(f"a {t}" for t in tags) or "an empty scene"


def drawn_reference(tag: str, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """The reference the demo draws for a subject given without an image: its tag's shape and colour."""
    return render_reference(np.random.default_rng([seed, len(tag)]), appearance_of(tag), SIZE, SIZE)


class DemoPipeline:
    """The shipped tiny model with its own VAE and text encoder (behind ComfyUI's VAE/CLIP signatures)."""

    def __init__(self, model_path: str | Path | None = None, encoders_path: str | Path | None = None,
                 device: str = "cpu"):
        model, vae, text = load_demo(model_path, encoders_path, device)
        self.vae, self.clip = DemoVAE(vae), DemoCLIP(text)
        self.handle = VideoModel(model, vae.latent_format, "demo")

    @property
    def model(self):
        return self.handle.model

    def reference(self, subject: Subject, seed: int) -> tuple[np.ndarray, np.ndarray]:
        """The subject's image and mask: its own, or drawn from its tag."""
        if subject.image is not None:
            mask = subject.mask if subject.mask is not None else np.ones(subject.image.shape[:2], bool)
            return subject.image, mask
        return drawn_reference(subject.tag, seed)

    def text(self, prompt: str) -> tuple[torch.Tensor, torch.Tensor | None]:
        return conditioning_tensors(self.clip.encode_from_tokens_scheduled(self.clip.tokenize(prompt)))

    def generate(self, subjects: list[Subject], prompt: str | None = None, seed: int = 0,
                 steps: int = DEFAULT_STEPS, shift: float = DEFAULT_SHIFT, mode: str | None = None,
                 frames: int = FRAMES, fps: float = FPS, guidance: Guidance = DEFAULT_GUIDANCE,
                 callback: StepCallback | None = None, rope_overrides: dict | None = None,
                 start_frames: np.ndarray | None = None, start_sigma: float = 1.0, eta: float = 0.0) -> DemoResult:
        """rope_overrides: TemporalRope fields (w_mid, w_edge, edge_offset) replacing the trained ones.
        start_frames (uint8 [N, H, W, 3]) with start_sigma < 1: start from that video noised to start_sigma."""
        prompt = prompt or default_caption([s.tag for s in subjects])
        changes = {**({"mode": mode} if mode else {}), **(rope_overrides or {})}
        rope = replace(self.model.alchemint.temporal_rope, **changes) if changes else None
        t0 = time.perf_counter()
        refs = [self.reference(s, seed) for s in subjects]
        positive, positive_mask = self.text(prompt)
        negative, negative_mask = self.text("")
        req = VideoRequest(positive, negative, frames, fps, SIZE, SIZE,
                           subjects=[make_subject(s.tag, img, self.clip, mask, self.vae) for s, (img, mask)
                                     in zip(subjects, refs)],
                           intervals=[(s.start, s.end) for s in subjects], positive_mask=positive_mask,
                           negative_mask=negative_mask, rope=rope, seed=seed, steps=steps, shift=shift,
                           guidance=guidance, start_sigma=start_sigma, eta=eta,
                           init_latents=None if start_frames is None else
                           self.vae.encode(torch.from_numpy(np.ascontiguousarray(start_frames)).float().div(255)))
        latents = generate_video(self.handle, req, callback)
        out = decode_frames(self.vae, latents)
        crops = [crop_reference(img, mask, (SIZE, SIZE))[0] for img, mask in refs]
        return DemoResult(out, crops, subjects, prompt, fps, time.perf_counter() - t0)


def decode_frames(vae: DemoVAE, latents: torch.Tensor) -> np.ndarray:
    """Raw latents of one video -> uint8 frames [N, H, W, 3]."""
    return (vae.decode(latents)[0].numpy() * 255).round().clip(0, 255).astype(np.uint8)


def check_subjects(subjects: list[Subject], frames: int, fps: float) -> None:
    """Validate every interval up front so a bad one fails before any work."""
    for s in subjects:
        try:
            interval_to_latent(s.start, s.end, fps, frames, name=f"subject '{s.tag}'")
        except IntervalError as err:
            raise ValueError(str(err)) from None
