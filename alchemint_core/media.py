"""Writing videos (mp4 via PyAV; animated webp/gif via Pillow) and the reference/frames/interval strip image."""
from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from .files import atomic_write
from .sampling.plotting import PALETTE

VIDEO_SUFFIXES = (".mp4", ".webp", ".gif")


def check_video_path(path: str | Path, scale: int = 1) -> Path:
    """The output path and scale of a video, checked before any work goes into the frames."""
    path = Path(path)
    if path.suffix.lower() not in VIDEO_SUFFIXES:
        raise ValueError(f"output {path}: a video file needs one of the suffixes {', '.join(VIDEO_SUFFIXES)}")
    if path.is_dir():
        raise ValueError(f"output {path} is a folder; give a file name such as {path / 'demo.mp4'}")
    if not isinstance(scale, int) or not 1 <= scale <= 16:
        raise ValueError(f"scale {scale!r} must be an integer from 1 to 16")
    return path


def write_video(frames: np.ndarray, path: str | Path, fps: float, scale: int = 1) -> Path:
    """uint8 [N, H, W, 3] frames to .mp4 (H.264 via PyAV), .webp or .gif (Pillow), written atomically."""
    path = check_video_path(path, scale)
    suffix = path.suffix.lower()
    if scale > 1:
        frames = frames.repeat(scale, axis=1).repeat(scale, axis=2)
    if suffix == ".mp4":
        return atomic_write(path, lambda tmp: _write_mp4(frames, tmp, fps))
    images = [Image.fromarray(f) for f in frames]
    fmt = {"webp": "WEBP", "gif": "GIF"}[suffix[1:]]
    options = {"lossless": True} if fmt == "WEBP" else {}
    return atomic_write(path, lambda tmp: images[0].save(tmp, format=fmt, save_all=True, append_images=images[1:],
                                                         duration=int(round(1000 / fps)), loop=0, **options))


def _write_mp4(frames: np.ndarray, path: str, fps: float) -> None:
    from fractions import Fraction

    import av
    h, w = frames.shape[1:3]
    with av.open(path, mode="w", format="mp4") as container:
        stream = container.add_stream("libx264" if "libx264" in av.codecs_available else "mpeg4",
                                      rate=Fraction(fps).limit_denominator(1000))
        stream.width, stream.height = w + w % 2, h + h % 2
        stream.pix_fmt = "yuv420p"
        stream.options = {"crf": "12"} if stream.codec_context.name == "libx264" else {}
        for f in frames:
            f = np.pad(f, ((0, h % 2), (0, w % 2), (0, 0)), mode="edge")
            for packet in stream.encode(av.VideoFrame.from_ndarray(np.ascontiguousarray(f), format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)


def strip_image(frames: np.ndarray, references: Sequence[np.ndarray], tags: Sequence[str],
                intervals: Sequence[tuple[float, float]], fps: float, scale: int = 2) -> Image.Image:
    """References (with their tags) above, every frame below, and one bar per subject under the frames showing
    the requested interval on the frames' time axis."""
    n, h, w = frames.shape[:3]
    fw, fh = w * scale, h * scale
    font = ImageFont.load_default()
    bar_h, gap = 10, 4
    width = n * fw
    ref_row = fh + 14
    height = ref_row + fh + 16 + len(tags) * (bar_h + gap) + 6
    img = Image.new("RGB", (max(width, len(references) * (fw + 8)), height), "white")
    d = ImageDraw.Draw(img)
    for i, (ref, tag) in enumerate(zip(references, tags)):
        x = i * (fw + 8)
        img.paste(Image.fromarray(ref).resize((fw, fh), Image.NEAREST), (x, 0))
        d.rectangle([x, 0, x + fw - 1, fh - 1], outline=PALETTE[i % len(PALETTE)], width=2)
        d.text((x + 2, fh + 1), tag, fill=PALETTE[i % len(PALETTE)], font=font)
    for f in range(n):
        img.paste(Image.fromarray(frames[f]).resize((fw, fh), Image.NEAREST), (f * fw, ref_row))
    y0 = ref_row + fh + 2
    for f in range(n):  # time ruler: frame ticks, seconds every second
        x = f * fw
        d.line([x, y0, x, y0 + 3], fill=(150, 150, 150))
    seconds = int(n / fps)
    for s in range(seconds + 1):
        x = min(int(s * fps * fw), width - 1)
        d.line([x, y0, x, y0 + 8], fill="black")
        d.text((x + 2, y0 + 2), f"{s}s", fill="black", font=font)
    for i, (start, end) in enumerate(intervals):
        y = y0 + 14 + i * (bar_h + gap)
        colour = PALETTE[i % len(PALETTE)]
        d.rectangle([0, y, width - 1, y + bar_h], fill=(238, 238, 238))
        d.rectangle([int(start * fps * fw), y, int(end * fps * fw) - 1, y + bar_h], fill=colour)
    return img
