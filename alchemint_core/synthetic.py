"""Seeded synthetic videos whose ground truth is exact: textured backgrounds with 1-3 coloured shapes, each present
only inside its interval and moving while present, with captions, word tags and per-frame masks.

Appearances are (colour, shape, texture). A fixed set of (colour, shape) pairs is held out of training, so test
prompts show subjects never seen in training; identity must come from the reference image and the tag.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
from PIL import Image

COLOURS = {"red": (225, 35, 35), "yellow": (235, 215, 30), "green": (40, 190, 60), "cyan": (30, 200, 215),
           "blue": (45, 70, 230), "magenta": (215, 45, 205)}
SHAPES = ("disc", "ring", "square", "triangle", "star", "cross")
TEXTURES = ("solid", "striped")
# One (colour, shape) pair per colour and per shape is never used in training.
HELD_OUT = frozenset(zip(COLOURS, ("star", "cross", "disc", "ring", "square", "triangle")))
SUPERSAMPLE = 4
BACKGROUND_GREY = (127, 127, 127)


@dataclass(frozen=True)
class Appearance:
    colour: str
    shape: str
    texture: str = "solid"

    @property
    def tag(self) -> str:
        return f"{self.colour} {self.shape}"

    @property
    def held_out(self) -> bool:
        return (self.colour, self.shape) in HELD_OUT


@dataclass
class Subject:
    appearance: Appearance
    first: int  # first and last frame present (inclusive)
    last: int
    size: float  # sprite diameter in pixels
    start: tuple[float, float]  # centre (y, x) at `first`
    velocity: tuple[float, float]  # pixels per frame
    angle: float
    spin: float  # radians per frame


@dataclass
class SyntheticVideo:
    frames: np.ndarray  # uint8 [N, H, W, 3]
    masks: dict[str, np.ndarray]  # tag -> bool [N, H, W]
    subjects: list[Subject]
    caption: str
    references: dict[str, tuple[np.ndarray, np.ndarray]] = field(default_factory=dict)  # tag -> (image, mask)


def shape_mask(shape: str, size: float, angle: float, h: int, w: int, cy: float, cx: float) -> np.ndarray:
    """Anti-aliased coverage in [0, 1] of a shape of diameter `size` centred at (cy, cx), rotated by angle."""
    s = SUPERSAMPLE
    yy, xx = np.mgrid[: h * s, : w * s].astype(np.float32)
    y = (yy + 0.5) / s - cy
    x = (xx + 0.5) / s - cx
    c, si = math.cos(angle), math.sin(angle)
    u, v = (c * x + si * y) / (size / 2), (-si * x + c * y) / (size / 2)  # unit-radius coordinates
    r = np.sqrt(u * u + v * v)
    if shape == "disc":
        inside = r <= 1
    elif shape == "ring":
        inside = (r <= 1) & (r >= 0.55)
    elif shape == "square":
        inside = (np.abs(u) <= 0.78) & (np.abs(v) <= 0.78)
    elif shape == "triangle":
        inside = (v <= 0.6) & (np.abs(u) <= (v + 1.0) * 0.6)  # apex up
    elif shape == "star":
        theta = np.arctan2(v, u)
        inside = r <= 0.55 + 0.45 * np.abs(np.cos(2.5 * theta)) ** 2
    elif shape == "cross":
        inside = ((np.abs(u) <= 0.3) & (np.abs(v) <= 1)) | ((np.abs(v) <= 0.3) & (np.abs(u) <= 1))
    else:
        raise ValueError(f"unknown shape {shape!r}; known: {SHAPES}")
    return inside.reshape(h, s, w, s).mean(axis=(1, 3))


def texture_colour(appearance: Appearance, h: int, w: int, phase: float) -> np.ndarray:
    base = np.array(COLOURS[appearance.colour], np.float32)
    img = np.broadcast_to(base, (h, w, 3)).copy()
    if appearance.texture == "striped":
        yy, xx = np.mgrid[:h, :w]
        stripes = ((xx + yy + phase) // 3) % 2 == 0
        img[stripes] *= 0.6
    return img


def background(rng: np.random.Generator, h: int, w: int) -> np.ndarray:
    """A muted two-colour gradient with soft noise: varied, but never as saturated as a subject."""
    a, b = rng.uniform(60, 170, 3), rng.uniform(60, 170, 3)
    a, b = (c.mean() + (c - c.mean()) * 0.3 for c in (a, b))  # muted: pulled towards their own grey
    t = np.linspace(0, 1, h if rng.random() < 0.5 else w, dtype=np.float32)
    grad = t[:, None, None] if len(t) == h else t[None, :, None]
    img = a * (1 - grad) + b * grad
    img = np.broadcast_to(img, (h, w, 3)).copy()
    noise = np.asarray(Image.fromarray(rng.integers(0, 255, (h // 8, w // 8), dtype=np.uint8)).resize((w, h), Image.BILINEAR))
    return img + (noise[..., None].astype(np.float32) - 127) * 0.08


def composite(img: np.ndarray, coverage: np.ndarray, colour: np.ndarray) -> np.ndarray:
    a = coverage[..., None]
    return img * (1 - a) + colour * a


def random_interval(rng: np.random.Generator, frames: int, min_len: int = 4) -> tuple[int, int]:
    """First/last frame of a presence interval; a quarter of subjects stay for the whole clip."""
    if rng.random() < 0.2:
        return 0, frames - 1
    length = int(rng.integers(min_len, frames + 1))
    first = int(rng.integers(0, frames - length + 1))
    return first, first + length - 1


def random_subject(rng: np.random.Generator, appearance: Appearance, frames: int, h: int, w: int,
                   slot: int, slots: int, interval: tuple[int, int] | None = None) -> Subject:
    first, last = interval or random_interval(rng, frames)
    size = float(rng.uniform(0.3, 0.4) * min(h, w))
    band = (slot + 0.5) / slots  # spread subjects across the frame to limit overlap
    cy = float(np.clip(band * h + rng.normal(0, h * 0.05), size / 2, h - size / 2))
    cx = float(rng.uniform(size / 2, w - size / 2))
    velocity = (float(rng.uniform(-0.5, 0.5)), float(rng.choice([-1, 1]) * rng.uniform(0.8, 2.0)))  # mostly sideways
    return Subject(appearance, first, last, size, (cy, cx), velocity,
                   float(rng.uniform(0, 2 * math.pi)), float(rng.normal(0, 0.06)))


def position(subject: Subject, frame: int, h: int, w: int) -> tuple[float, float]:
    """Centre at a frame: linear motion reflected at the borders."""
    out = []
    for p0, v, extent in zip(subject.start, subject.velocity, (h, w)):
        lo, hi = subject.size / 2, extent - subject.size / 2
        span = max(hi - lo, 1e-6)
        p = (p0 - lo + v * (frame - subject.first)) % (2 * span)
        out.append(lo + (p if p <= span else 2 * span - p))
    return out[0], out[1]


def render_video(rng: np.random.Generator, subjects: list[Subject], frames: int, h: int, w: int) -> SyntheticVideo:
    bg = background(rng, h, w)
    video = np.empty((frames, h, w, 3), np.uint8)
    masks = {s.appearance.tag: np.zeros((frames, h, w), bool) for s in subjects}
    for f in range(frames):
        img = bg.copy()
        for s in subjects:
            if s.first <= f <= s.last:
                cy, cx = position(s, f, h, w)
                cov = shape_mask(s.appearance.shape, s.size, s.angle + s.spin * (f - s.first), h, w, cy, cx)
                img = composite(img, cov, texture_colour(s.appearance, h, w, phase=f))
                masks[s.appearance.tag][f] = cov > 0.5
                for other in subjects:  # later subjects occlude earlier ones
                    if other is s:
                        break
                    masks[other.appearance.tag][f] &= ~(cov > 0.5)
        video[f] = np.clip(img, 0, 255).astype(np.uint8)
    caption = " and ".join(f"a {s.appearance.tag}" for s in subjects)
    return SyntheticVideo(video, masks, subjects, caption)


def render_reference(rng: np.random.Generator, appearance: Appearance, h: int, w: int) -> tuple[np.ndarray, np.ndarray]:
    """The subject alone, centred on grey, in a pose and scale of its own (as a crop from another moment)."""
    size = float(rng.uniform(0.55, 0.75) * min(h, w))
    cov = shape_mask(appearance.shape, size, float(rng.uniform(0, 2 * math.pi)), h, w, h / 2, w / 2)
    img = composite(np.full((h, w, 3), BACKGROUND_GREY, np.float32), cov,
                    texture_colour(appearance, h, w, phase=float(rng.integers(0, 6))))
    return np.clip(img, 0, 255).astype(np.uint8), cov > 0.5


def appearances(split: str) -> list[Appearance]:
    """All appearances of a split: 'train' excludes the held-out (colour, shape) pairs, 'test' has only them."""
    out = [Appearance(c, s, t) for c in COLOURS for s in SHAPES for t in TEXTURES]
    if split == "train":
        return [a for a in out if not a.held_out]
    if split == "test":
        return [a for a in out if a.held_out]
    raise ValueError(f"split {split!r} must be 'train' or 'test'")


def pick_appearances(rng: np.random.Generator, pool: list[Appearance], k: int) -> list[Appearance]:
    """k appearances with distinct colours and distinct shapes, so tags and detection are unambiguous."""
    chosen: list[Appearance] = []
    for i in rng.permutation(len(pool)):
        a = pool[i]
        if all(a.colour != c.colour and a.shape != c.shape for c in chosen):
            chosen.append(a)
            if len(chosen) == k:
                break
    return chosen


def random_video(rng: np.random.Generator, split: str = "train", frames: int = 17, h: int = 64, w: int = 64,
                 max_subjects: int = 3) -> SyntheticVideo:
    k = int(rng.integers(1, max_subjects + 1))
    subjects = [random_subject(rng, a, frames, h, w, i, k) for i, a in enumerate(pick_appearances(rng, appearances(split), k))]
    video = render_video(rng, subjects, frames, h, w)
    video.references = {s.appearance.tag: render_reference(rng, s.appearance, h, w) for s in subjects}
    return video
