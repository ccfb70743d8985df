"""Small plots drawn with Pillow (no plotting library needed): curves over a shared x axis."""
from __future__ import annotations

import math
from typing import Sequence

from PIL import Image, ImageDraw, ImageFont

PALETTE = [(231, 76, 60), (52, 152, 219), (46, 204, 113), (241, 196, 15), (155, 89, 182), (230, 126, 34),
           (26, 188, 156), (236, 112, 160)]


def line_plot(series: dict[str, tuple[Sequence[float], Sequence[float]]], title: str, xlabel: str,
              size: tuple[int, int] = (640, 360), log_y: bool = False,
              bands: Sequence[tuple[float, float, tuple[int, int, int]]] = ()) -> Image.Image:
    """Plot named (x, y) series; optional shaded x-bands (x0, x1, colour), e.g. requested intervals."""
    w, h = size
    left, right, top, bottom = 56, 16, 28, 40
    img = Image.new("RGB", size, "white")
    d = ImageDraw.Draw(img)
    font = ImageFont.load_default()
    pts = [(x, y) for xs, ys in series.values() for x, y in zip(xs, ys) if math.isfinite(y) and (y > 0 or not log_y)]
    if not pts:
        d.text((left, h // 2), "no data", fill="black", font=font)
        return img
    f = (lambda v: math.log10(v)) if log_y else (lambda v: v)
    x0, x1 = min(p[0] for p in pts), max(p[0] for p in pts)
    for bx0, bx1, _ in bands:
        x0, x1 = min(x0, bx0), max(x1, bx1)
    y0, y1 = min(f(p[1]) for p in pts), max(f(p[1]) for p in pts)
    if x1 == x0:
        x1 = x0 + 1
    if y1 == y0:
        y0, y1 = y0 - 0.5, y1 + 0.5
    sx = lambda x: left + (x - x0) / (x1 - x0) * (w - left - right)
    sy = lambda y: h - bottom - (f(y) - y0) / (y1 - y0) * (h - top - bottom)
    for bx0, bx1, colour in bands:
        tint = tuple(int(c + (255 - c) * 0.8) for c in colour)
        d.rectangle([sx(bx0), top, sx(bx1), h - bottom], fill=tint)
    d.rectangle([left, top, w - right, h - bottom], outline=(120, 120, 120))
    for i in range(5):  # y ticks
        v = y0 + (y1 - y0) * i / 4
        y = h - bottom - (v - y0) / (y1 - y0) * (h - top - bottom)
        label = f"{10 ** v:.3g}" if log_y else f"{v:.3g}"
        d.line([left - 4, y, left, y], fill=(120, 120, 120))
        d.text((4, y - 6), label, fill="black", font=font)
    for i in range(5):  # x ticks
        v = x0 + (x1 - x0) * i / 4
        x = sx(v)
        d.line([x, h - bottom, x, h - bottom + 4], fill=(120, 120, 120))
        d.text((x - 10, h - bottom + 6), f"{v:.3g}", fill="black", font=font)
    d.text((left, 8), title, fill="black", font=font)
    d.text((w // 2 - 20, h - 14), xlabel, fill="black", font=font)
    for i, (name, (xs, ys)) in enumerate(series.items()):
        colour = PALETTE[i % len(PALETTE)]
        line = [(sx(x), sy(y)) for x, y in zip(xs, ys) if math.isfinite(y) and (y > 0 or not log_y)]
        if len(line) > 1:
            d.line(line, fill=colour, width=2)
        elif line:
            d.ellipse([line[0][0] - 2, line[0][1] - 2, line[0][0] + 2, line[0][1] + 2], fill=colour)
        d.text((w - right - 150, top + 4 + 12 * i), name, fill=colour, font=font)
    return img


def attention_profile_plot(bank, rope, tags: Sequence[str], intervals_s: Sequence[tuple[float, float]],
                           intervals_latent: Sequence[tuple[float, float]], frames: int, fps: float,
                           size: tuple[int, int] = (640, 360)) -> Image.Image:
    """Each subject's requested interval (shaded) and the attention bias its RoPE mode puts on the video's frames
    (the paper's Fig. 3 for these intervals): x in seconds, one point per frame."""
    import torch

    from ..model.rope import attention_profile
    from .intervals import TEMPORAL_COMPRESSION
    times = torch.arange(frames, dtype=torch.float64) / TEMPORAL_COMPRESSION  # frame n sits at latent time n/4
    seconds = [n / fps for n in range(frames)]
    series = {}
    for i, (tag, iv) in enumerate(zip(tags, intervals_latent)):
        name = f"{i + 1}. {tag}"[:24]
        while name in series:
            name += "'"
        series[name] = (seconds, attention_profile(bank, iv, rope, times).tolist())
    bands = [(a, b, PALETTE[i % len(PALETTE)]) for i, (a, b) in enumerate(intervals_s)]
    return line_plot(series, f"attention to each subject over time, RoPE mode '{rope.mode}'", "seconds", size,
                     bands=bands)
