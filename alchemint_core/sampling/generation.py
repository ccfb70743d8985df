"""One video from subjects, captions and intervals: the sampling entry point of the demo CLI and the ComfyUI Sampler.

    latents = generate_video(handle, request, callback)   # raw latents [1, C, T, h, w] for the VAE
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Sequence

import torch

from ..model.dense import DenseCaptions
from ..model.latents import LatentFormat, wan_vae
from ..model.memory import SAMPLING_OPTIONS, explain_out_of_memory
from ..model.rope import TemporalRope
from ..model.transformer import WanModel
from .flow import DEFAULT_SHIFT, DEFAULT_STEPS, StepCallback, check_eta, check_start, check_steps_shift, generate
from .guidance import Conditioning, Guidance
from .intervals import latent_frame_count
from .subjects import Subject, encode_subjects, make_references
from .timed_captions import check_model_takes

SPATIAL_COMPRESSION = 8  # the Wan 2.1 VAE's and the demo VAE's; the Wan 2.2 VAE's is 16


@dataclass
class VideoModel:
    """A diffusion model (one WanModel, or a Wan 2.2 ExpertPair) with what sampling needs beside it: the latent
    statistics and spatial compression of its VAE."""

    model: WanModel  # or an ExpertPair, which answers the same calls
    latent_format: LatentFormat
    name: str = ""
    offload: bool = False  # keep blocks in CPU memory, each on the device only while it runs (big models)
    spatial_compression: int = SPATIAL_COMPRESSION

    @property
    def max_refs(self) -> int:
        return self.model.alchemint.cfg.max_refs if self.model.alchemint is not None else 0

    @property
    def size_multiple(self) -> int:
        return self.spatial_compression * self.model.cfg.patch_size[1]


def wan_video_model(model: WanModel, name: str = "", offload: bool = False) -> VideoModel:
    """A Wan model with its VAE's facts, known from its latent channels (16: Wan 2.1 VAE, 48: Wan 2.2 VAE)."""
    latent_format, spatial = wan_vae(model.cfg.in_dim)
    return VideoModel(model, latent_format, name, offload, spatial)


@dataclass
class VideoRequest:
    """Everything one video depends on besides the model."""

    positive: torch.Tensor  # [1, L, text_dim] caption embedding
    negative: torch.Tensor  # [1, L', text_dim] negative caption embedding
    frames: int
    fps: float
    height: int
    width: int
    subjects: Sequence[Subject] = ()
    intervals: Sequence[tuple[float, float]] = ()  # seconds, one per subject
    positive_mask: torch.Tensor | None = None
    negative_mask: torch.Tensor | None = None
    rope: TemporalRope | None = None  # None: the model's trained mode
    seed: int = 0
    steps: int = DEFAULT_STEPS
    shift: float = DEFAULT_SHIFT
    guidance: Guidance = field(default_factory=Guidance)
    init_latents: torch.Tensor | None = None  # raw VAE latents to start from (with start_sigma < 1)
    start_sigma: float = 1.0  # 1: from pure noise
    eta: float = 0.0  # share of each step's noise redrawn: 0 = the deterministic flow (see flow.euler)
    dense: DenseCaptions | None = None  # timed captions (spans in latent frames) for a model with a dense branch


def check_size(height: int, width: int, multiple: int) -> None:
    for name, v in (("height", height), ("width", width)):
        if not isinstance(v, int) or isinstance(v, bool) or v < multiple or v % multiple:
            near = max(multiple, round(v / multiple) * multiple) if isinstance(v, int) else 4 * multiple
            raise ValueError(f"{name} {v!r} must be a positive multiple of {multiple} (the VAE's spatial "
                             f"compression times the patch size), e.g. {near}")


def check_request(handle: VideoModel, req: VideoRequest) -> None:
    """Everything checked before any work, so a bad input fails at once with its fix."""
    latent_frame_count(req.frames)
    check_size(req.height, req.width, handle.size_multiple)
    check_steps_shift(req.steps, req.shift)
    if len(req.subjects) > handle.max_refs:
        raise ValueError(f"{len(req.subjects)} subjects given; this model takes at most {handle.max_refs}: "
                         + ("remove subjects or use a model trained with a larger max_refs" if handle.max_refs
                            else "it has no AlcheMinT adapter, load one"))
    check_start(req.start_sigma, req.init_latents, latent_shape(handle, req))
    check_eta(req.eta)
    if req.dense is not None:
        check_model_takes(handle.model, req.dense)
    text_dim = handle.model.cfg.text_dim
    for what, emb in (("positive", req.positive), ("negative", req.negative)):
        if emb.ndim != 3 or emb.shape[-1] != text_dim:
            raise ValueError(f"{what} conditioning has embeddings {list(emb.shape)}, but the model expects "
                             f"[1, L, {text_dim}]: encode it with the text encoder that goes with this model")


def latent_shape(handle: VideoModel, req: VideoRequest) -> tuple[int, int, int, int, int]:
    s = handle.spatial_compression
    return (1, handle.model.cfg.in_dim, latent_frame_count(req.frames), req.height // s, req.width // s)


def build_conditioning(handle: VideoModel, req: VideoRequest) -> Conditioning:
    device = next(handle.model.parameters()).device
    refs = None
    if req.subjects:
        latents = encode_subjects(req.subjects, req.height, req.width, handle.latent_format)
        half = handle.model.alchemint.cfg.min_half_length
        refs = make_references(req.subjects, latents, req.intervals, req.fps, req.frames, half, req.rope).to(device)
    mask = req.positive_mask.to(device) if req.positive_mask is not None else None
    dense = None
    if req.dense is not None:
        d = req.dense
        dense = DenseCaptions(d.context.to(device), d.spans, d.lengths)
    return Conditioning(req.positive.to(device), refs=refs, context_mask=mask, dense=dense)


def generate_video(handle: VideoModel, req: VideoRequest, callback: StepCallback | None = None) -> torch.Tensor:
    """Raw latents [1, C, T, h, w] of the requested video (decode them with the model's VAE)."""
    check_request(handle, req)
    with explain_out_of_memory("sampling", SAMPLING_OPTIONS):
        cond = build_conditioning(handle, req)
        device = next(handle.model.parameters()).device
        neg_mask = req.negative_mask.to(device) if req.negative_mask is not None else None
        init = handle.latent_format.normalize(req.init_latents) if req.init_latents is not None else None
        return generate(handle.model, cond, req.negative.to(device), latent_shape(handle, req), req.seed,
                        req.guidance, req.steps, req.shift, latent_format=handle.latent_format, callback=callback,
                        negative_mask=neg_mask, init=init, start_sigma=req.start_sigma, eta=req.eta)
