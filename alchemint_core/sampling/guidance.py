"""Multi-CFG over references R and text T, as one batched forward pass per step.

3-pass (InstructPix2Pix / Phantom form):
    v = v(0,0) + s_ref*(v(R,0) - v(0,0)) + s_txt*(v(R,T) - v(R,0))
4-pass with a joint scale (adds v(0,T) and the R x T interaction term):
    v = v(0,0) + s_ref*(v(R,0) - v(0,0)) + s_txt*(v(0,T) - v(0,0)) + s_joint*(v(R,T) - v(R,0) - v(0,T) + v(0,0))
Both are linear combinations of passes; a pass whose coefficient is 0 is not computed (s_ref = 1 drops v(0,0);
s_ref = s_txt drops v(R,0)). 0 text = the negative prompt; 0 references = zeroed latents and tags in their slots.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from ..model.dense import DenseCaptions
from ..model.references import PackedReferences, References


@dataclass
class Conditioning:
    """What one sample is conditioned on."""

    context: torch.Tensor  # [B, L, text_dim] positive text
    refs: References | None = None
    context_mask: torch.Tensor | None = None  # [B, L] real tokens
    dense: DenseCaptions | None = None


@dataclass(frozen=True)
class Guidance:
    ref_scale: float = 2.0
    text_scale: float = 5.0
    joint_scale: float | None = None  # set: the 4-pass form

    def __post_init__(self):
        for name in ("ref_scale", "text_scale", "joint_scale"):
            v = getattr(self, name)
            if v is not None and not (isinstance(v, (int, float)) and math.isfinite(v) and 0 <= v <= 100):
                raise ValueError(f"guidance {name} {v!r} must be a finite number in [0, 100] (1 = no guidance)")

    def coefficients(self, with_refs: bool = True) -> dict[tuple[bool, bool], float]:
        """{(references on, text on): coefficient} of the passes to run; zero coefficients are left out."""
        s_r, s_t = self.ref_scale, self.text_scale
        if not with_refs:
            c = {(False, False): 1 - s_t, (False, True): s_t}
        elif self.joint_scale is None:
            c = {(False, False): 1 - s_r, (True, False): s_r - s_t, (True, True): s_t}
        else:
            s_j = self.joint_scale
            c = {(False, False): 1 - s_r - s_t + s_j, (True, False): s_r - s_j, (False, True): s_t - s_j,
                 (True, True): s_j}
        return {k: v for k, v in c.items() if abs(v) > 1e-12}


def pad_contexts(contexts: list[torch.Tensor], masks: list[torch.Tensor | None]):
    """Stack [B, L_i, D] contexts along B, zero-padding to the longest with a key mask (None if none padded)."""
    longest = max(c.shape[1] for c in contexts)
    out, out_mask = [], []
    for c, m in zip(contexts, masks):
        m = torch.ones(c.shape[:2], dtype=torch.bool, device=c.device) if m is None else m.to(c.device).bool()
        pad = longest - c.shape[1]
        out.append(torch.nn.functional.pad(c, (0, 0, 0, pad)))
        out_mask.append(torch.nn.functional.pad(m, (0, pad), value=False))
    mask = torch.cat(out_mask)
    return torch.cat(out), (None if bool(mask.all()) else mask)


class Guider:
    """Prepares the batched passes once per sampling run (text padding, reference tokens and RoPE tables) and
    returns the guided velocity for a step with one forward call."""

    def __init__(self, model, positive: Conditioning, negative: torch.Tensor, guidance: Guidance,
                 x_shape, negative_mask: torch.Tensor | None = None):
        self.model, self.guidance = model, guidance
        with_refs = positive.refs is not None and positive.refs.count > 0
        self.passes = list(guidance.coefficients(with_refs).items())
        b = positive.context.shape[0]
        if negative.shape[0] == 1 and b > 1:
            negative = negative.expand(b, -1, -1)
        contexts, masks, refs = [], [], []
        for (r_on, t_on), _ in self.passes:
            contexts.append(positive.context if t_on else negative)
            masks.append(positive.context_mask if t_on else negative_mask)
            if with_refs:
                refs.append(positive.refs if r_on else positive.refs.dropped())
        self.context, self.context_mask = pad_contexts(contexts, masks)
        with torch.no_grad():
            self.refs: PackedReferences | None = model.pack(References.cat(refs), x_shape) if with_refs else None
        self.dense = None
        if positive.dense is not None:
            d = positive.dense
            on = torch.tensor([t_on for (_, t_on), _ in self.passes]).repeat_interleave(b)
            ctx = d.context.repeat(len(self.passes), 1, 1, 1) * on[:, None, None, None].to(d.context)
            spans = d.spans.repeat(len(self.passes), 1, 1)
            # a text-off pass has no timed captions, as a caption-dropped training sample (batches.dense_batch):
            # its events lie outside the clip, so no frame gets a dense-caption signal
            spans[~on] = torch.tensor([-2.0, -1.0], dtype=spans.dtype)
            self.dense = DenseCaptions(ctx, spans, d.lengths.repeat(len(self.passes), 1))
        device = positive.context.device
        self.weights = torch.tensor([c for _, c in self.passes], dtype=torch.float32, device=device)

    @property
    def num_passes(self) -> int:
        return len(self.passes)

    def __call__(self, x: torch.Tensor, timestep: torch.Tensor) -> torch.Tensor:
        p, b = len(self.passes), x.shape[0]
        xs = x.repeat(p, 1, 1, 1, 1)
        ts = timestep.reshape(-1).expand(b).repeat(p)
        v = self.model(xs, ts, self.context, refs=self.refs, context_mask=self.context_mask, dense=self.dense)
        v = v.float().unflatten(0, (p, b))
        w = self.weights.view(p, 1, 1, 1, 1, 1)
        return (v * w).sum(0).to(x.dtype)
