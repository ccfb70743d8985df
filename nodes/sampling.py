"""WeRoPE Conditioner, Multi-CFG Guider and Sampler."""
from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np
import torch
from einops import rearrange
from PIL import Image

from alchemint_core.model.config import W_MID_MAX
from alchemint_core.model.dense import DenseCaptions
from alchemint_core.model.rope import TemporalRope
from alchemint_core.native import conditioning_tensors
from alchemint_core.sampling.generation import VideoModel, VideoRequest, generate_video
from alchemint_core.sampling.guidance import Guidance
from alchemint_core.sampling.intervals import interval_to_latent
from alchemint_core.sampling.plotting import attention_profile_plot
from alchemint_core.sampling.timed_captions import EncodedCaptions, TimedCaptionError, check_model_takes

from . import bridge
from .models import CATEGORY
from .timeline import Timeline

TRAINED = "as trained"
MODES = [TRAINED, "werope", "avg", "mid", "none"]


@dataclass(frozen=True)
class AlcheMinTConditioning:
    """ALCHEMINT_COND: the caption, the timed subjects and how their time is encoded."""

    timeline: Timeline
    positive: torch.Tensor  # [1, L, D]
    positive_mask: torch.Tensor | None
    rope: TemporalRope | None  # None: the model's trained mode
    dense: DenseCaptions | None = None  # timed captions for a model with a dense-caption branch


@dataclass(frozen=True)
class AlcheMinTGuider:
    """ALCHEMINT_GUIDER: the negative caption and the guidance scales."""

    negative: torch.Tensor
    negative_mask: torch.Tensor | None
    guidance: Guidance


def image_tensor(img: Image.Image) -> torch.Tensor:
    """PIL image -> ComfyUI IMAGE [1, H, W, 3] in [0, 1]."""
    return torch.from_numpy(np.asarray(img.convert("RGB"), np.float32) / 255)[None]


class WeRoPEConditioner:
    DESCRIPTION = ("Puts the subjects of a timeline into the caption's conditioning and chooses how their time "
                   "is encoded (WeRoPE). The plot shows the attention each subject gets over the video's frames.")
    CATEGORY = CATEGORY
    RETURN_TYPES = ("ALCHEMINT_COND", "IMAGE")
    RETURN_NAMES = ("conditioning", "attention plot")
    OUTPUT_TOOLTIPS = ("Caption + timed subjects for the Sampler.",
                       "Each subject's requested interval and the attention profile its RoPE mode gives.")
    FUNCTION = "condition"

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {
            "model": ("ALCHEMINT_MODEL", {"tooltip": "The model; gives the trained RoPE mode and its frequencies."}),
            "timeline": ("ALCHEMINT_TIMELINE", {"tooltip": "Subjects and their intervals from the Interval "
                                                           "Timeline."}),
            "positive": ("CONDITIONING", {"tooltip": "The caption, from CLIP Text Encode (name the subjects by "
                                                     "their tags)."}),
            "mode": (MODES, {"default": TRAINED, "tooltip": "How reference tokens are placed in time. 'as trained' "
                             "uses the model's own; werope = w_mid*R(mid) + w_edge*(R(start)+R(end)); avg = the "
                             "rotation averaged over the interval; mid = at the midpoint; none = no time."}),
            "w_mid": ("FLOAT", {"default": 1.0, "min": 0.0, "max": W_MID_MAX, "step": 0.05, "tooltip": "WeRoPE weight "
                                "of the midpoint (mode werope only)."}),
            "w_edge": ("FLOAT", {"default": -0.4, "min": -W_MID_MAX / 2, "max": 0.0, "step": 0.05, "tooltip": "WeRoPE "
                                 "weight of the two edges, negative (mode werope only)."}),
            "edge_offset": ("FLOAT", {"default": 0.0, "min": 0.0, "max": 8.0, "step": 0.25, "tooltip": "WeRoPE "
                                      "edges placed this many latent frames outside the interval (werope only)."}),
        }, "optional": {
            "timed_captions": ("ALCHEMINT_TIMED_CAPTIONS", {"tooltip": "Per-event captions with their times, from "
                               "AlcheMinT Timed Captions; only for models trained with dense captions."}),
        }}

    def condition(self, model: VideoModel, timeline: Timeline, positive, mode, w_mid, w_edge, edge_offset,
                  timed_captions: EncodedCaptions | None = None):
        adapter = model.model.alchemint
        if adapter is None:
            raise ValueError("WeRoPE Conditioner: the model has no AlcheMinT adapter; load one in the Model Loader")
        if mode not in MODES:
            raise ValueError(f"WeRoPE Conditioner: mode '{mode}' must be one of {', '.join(MODES)}")
        try:
            rope = None if mode == TRAINED else TemporalRope(mode, float(w_mid), float(w_edge), float(edge_offset))
        except ValueError as err:
            raise ValueError(f"WeRoPE Conditioner: {err}; the defaults are w_mid 1.0, w_edge -0.4") from None
        emb, mask = conditioning_tensors(positive, "WeRoPE Conditioner: positive")
        shown = rope or adapter.temporal_rope
        half = adapter.cfg.min_half_length
        latent = [interval_to_latent(a, b, timeline.fps, timeline.frames, half, name=bar.tag)
                  for bar, (a, b) in zip(timeline.bars, timeline.intervals)]
        plot = attention_profile_plot(model.model.bank, shown, [b.tag for b in timeline.bars], timeline.intervals,
                                      latent, timeline.frames, timeline.fps)
        dense = None if timed_captions is None else timed_dense(model.model, timeline, timed_captions,
                                                                "WeRoPE Conditioner: timed_captions")
        return (AlcheMinTConditioning(timeline, emb, mask, rope, dense), image_tensor(plot))


def timed_dense(model, timeline: Timeline, captions: EncodedCaptions, where: str) -> DenseCaptions:
    """The dense branch's input for `model` (anything with .alchemint and .cfg), checked against it and the
    timeline's clip; errors start with `where`."""
    if (captions.frames, captions.fps) != (timeline.frames, timeline.fps):
        raise ValueError(f"{where} are laid out on {captions.frames} frames at {captions.fps:g} fps but the Interval "
                         f"Timeline's clip is {timeline.frames} frames at {timeline.fps:g} fps; set the same frames "
                         "and fps on the Timed Captions node")
    dense = captions.dense()
    try:
        check_model_takes(model, dense, leave_out="disconnect the Timed Captions node")
    except TimedCaptionError as err:
        raise ValueError(f"{where}: {err}") from None
    return dense


class MultiCFGGuider:
    DESCRIPTION = ("Guidance towards the references and the caption: v = v(0,0) + s_ref*(v(R,0) - v(0,0)) + "
                   "s_txt*(v(R,T) - v(R,0)), all passes in one batch. A scale of 1 skips its extra pass.")
    CATEGORY = CATEGORY
    RETURN_TYPES = ("ALCHEMINT_GUIDER",)
    RETURN_NAMES = ("guider",)
    OUTPUT_TOOLTIPS = ("Negative caption and scales for the Sampler.",)
    FUNCTION = "guide"

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {
            "negative": ("CONDITIONING", {"tooltip": "What to steer away from (CLIP Text Encode; may be empty)."}),
            "reference_scale": ("FLOAT", {"default": 2.0, "min": 0.0, "max": 100.0, "step": 0.1, "tooltip":
                                          "How strongly the subjects' references are followed (1 = no extra "
                                          "guidance)."}),
            "text_scale": ("FLOAT", {"default": 5.0, "min": 0.0, "max": 100.0, "step": 0.1, "tooltip": "How "
                                     "strongly the caption is followed (paper: 5; the demo model: 3)."}),
            "joint_scale": ("FLOAT", {"default": 0.0, "min": 0.0, "max": 100.0, "step": 0.1, "tooltip": "With "
                                      "four_pass: scale of the reference x text interaction term."}),
            "four_pass": ("BOOLEAN", {"default": False, "tooltip": "Use the 4-pass form (adds v(0,T) and the joint "
                                      "term); slower."}),
        }}

    def guide(self, negative, reference_scale, text_scale, joint_scale, four_pass):
        try:
            guidance = Guidance(float(reference_scale), float(text_scale),
                                float(joint_scale) if four_pass else None)
        except (TypeError, ValueError) as err:
            raise ValueError(f"Multi-CFG Guider: {err}") from None
        emb, mask = conditioning_tensors(negative, "Multi-CFG Guider: negative")
        return (AlcheMinTGuider(emb, mask, guidance),)


def preview_image(x0: torch.Tensor, latent_format, decode) -> Image.Image:
    """The current clean-video estimate as a strip of frames (time runs left to right)."""
    raw = latent_format.denormalize(x0[:1].float().cpu())
    if decode is not None:
        frames = decode(raw)[0]  # [N, H, W, 3] in [0, 1]
    else:  # no decoder: the first three latent channels, normalised, one tile per latent frame
        z = raw[0, :3]
        z = (z - z.amin()) / (z.amax() - z.amin() + 1e-6)
        frames = rearrange(z, "c t h w -> t h w c")
    strip = rearrange(frames, "n h w c -> h (n w) c")
    img = Image.fromarray((strip.clamp(0, 1).numpy() * 255).astype(np.uint8))
    if img.height < 128:  # small demo frames: upscale so the preview is visible
        k = -(-128 // img.height)
        img = img.resize((img.width * k, img.height * k), Image.NEAREST)
    return img


class Sampler:
    DESCRIPTION = ("Samples the video latents (rectified-flow Euler, multi-CFG). Decode them with VAE Decode and "
                   "save them with the video nodes.")
    CATEGORY = CATEGORY
    RETURN_TYPES = ("LATENT",)
    RETURN_NAMES = ("latent",)
    OUTPUT_TOOLTIPS = ("Raw video latents [1, C, T, H/8, W/8] for VAE Decode.",)
    FUNCTION = "sample"

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {
            "model": ("ALCHEMINT_MODEL", {"tooltip": "From the Model Loader or Demo Model."}),
            "conditioning": ("ALCHEMINT_COND", {"tooltip": "From the WeRoPE Conditioner."}),
            "guider": ("ALCHEMINT_GUIDER", {"tooltip": "From the Multi-CFG Guider."}),
            "width": ("INT", {"default": 64, "min": 16, "max": 4096, "step": 16, "tooltip": "Video width in "
                              "pixels, a multiple of 8 x the model's patch size: 16 for Wan 2.1 "
                              "(e.g. 832), 8 for the demo model (64)."}),
            "height": ("INT", {"default": 64, "min": 16, "max": 4096, "step": 16, "tooltip": "Video height in "
                               "pixels, a multiple of 8 x the model's patch size: 16 for Wan 2.1 "
                               "(e.g. 480), 8 for the demo model (64)."}),
            "steps": ("INT", {"default": 40, "min": 1, "max": 1000, "tooltip": "Euler steps (paper: 40)."}),
            "shift": ("FLOAT", {"default": 3.0, "min": 0.1, "max": 100.0, "step": 0.01, "tooltip": "Noise "
                                "schedule shift (paper: 5.66 for Wan; 3.0 for the demo model)."}),
            "seed": ("INT", {"default": 0, "min": 0, "max": 0xFFFFFFFFFFFFFFFF, "control_after_generate": True,
                             "tooltip": "Noise seed; the same seed gives the same video on any device."}),
        }, "optional": {
            "preview_vae": ("VAE", {"tooltip": "Decode the step previews with this VAE (cheap for the demo VAE; "
                                               "leave empty for Wan to preview latent channels)."}),
        }}

    def sample(self, model: VideoModel, conditioning: AlcheMinTConditioning, guider: AlcheMinTGuider, width,
               height, steps, shift, seed, preview_vae=None):
        tl = conditioning.timeline
        req = VideoRequest(conditioning.positive, guider.negative, tl.frames, tl.fps, int(height), int(width),
                           subjects=list(tl.references.subjects), intervals=tl.intervals,
                           positive_mask=conditioning.positive_mask, negative_mask=guider.negative_mask,
                           rope=conditioning.rope, seed=int(seed), steps=int(steps), shift=float(shift),
                           guidance=guider.guidance, dense=conditioning.dense)
        bridge.load_on_device(model)
        progress = bridge.Progress(int(steps))
        decode = getattr(preview_vae, "decode", None)
        last = [time.monotonic()]

        def callback(i, total, x, x0):
            bridge.check_interrupted()  # raises: the run stops within one step
            preview = None
            if progress.bar is not None and (time.monotonic() - last[0] > 0.25 or i + 1 == total):
                preview = preview_image(x0, model.latent_format, decode)
                last[0] = time.monotonic()
            progress.update(i + 1, preview)

        try:
            latents = generate_video(model, req, callback)
        except ValueError as err:
            raise ValueError(f"Sampler: {err}") from None
        return ({"samples": latents.float().cpu()},)
