"""The native Wan path: AlcheMinT on ComfyUI's own Wan MODEL, CONDITIONING, samplers and guiders.

- AlcheMinT Apply: a cloned ModelPatcher with the adapter as an additional model (ComfyUI loads and frees it with
  the base), its LoRA deltas as ordinary weight patches, and a DIFFUSION_MODEL wrapper that, for conditioning that
  carries references, runs alchemint_core.model.hosted's forward through the native model's own modules.
- AlcheMinT Native Conditioning: the timeline's references ride on CONDITIONING (in its model_conds, as ComfyUI's
  own extra conditions do), so KSampler, SamplerCustomAdvanced, CFGGuider and DualCFGGuider carry them.
- AlcheMinT Multi-CFG Guider (native): the pack's guidance as a GUIDER; AlcheMinT Flow Sigmas: the pack's schedule.
ComfyUI is imported inside the functions, so the pack imports without it.
"""
from __future__ import annotations

from dataclasses import dataclass
from types import SimpleNamespace

import torch

from alchemint_core.model.config import W_MID_MAX, CheckpointError, WanConfig
from alchemint_core.model.dense import DenseCaptions
from alchemint_core.model.experts import WAN22_BOUNDARY, split_sigmas
from alchemint_core.model.hosted import HostedWan, host_config, load_adapter_file
from alchemint_core.model.latents import LatentFormat, wan_vae
from alchemint_core.model.references import References
from alchemint_core.model.rope import TemporalRope
from alchemint_core.model.transformer import AlcheMinTAdapter
from alchemint_core.sampling.flow import DEFAULT_SHIFT, check_steps_shift, sigma_schedule
from alchemint_core.sampling.generation import check_size
from alchemint_core.sampling.guidance import Guidance
from alchemint_core.sampling.intervals import latent_frame_count
from alchemint_core.sampling.subjects import encode_subjects, make_references

from . import bridge
from .models import CATEGORY
from .sampling import MODES, TRAINED, timed_dense

EXPERTS = {"none (Wan 2.1, Wan 2.2 TI2V)": None, "high noise (Wan 2.2 A14B)": "high",
           "low noise (Wan 2.2 A14B)": "low"}
KEY = "alchemint"  # wrapper, attachment and additional-model key; also the model_conds entry of the references
APPLY = "AlcheMinT Apply"
NATIVE = f"{CATEGORY}/native"


@dataclass
class NativeAdapter:
    """What AlcheMinT Apply attaches to the MODEL."""

    adapter: AlcheMinTAdapter
    cfg: WanConfig
    name: str


def diffusion_model(model, where: str):
    """The diffusion model inside a MODEL, or a one-line error naming `where`."""
    inner = getattr(getattr(model, "model", None), "diffusion_model", None)
    if inner is None:
        raise ValueError(f"{where}: model is not a diffusion MODEL; connect Load Diffusion Model (a Wan 2.1 or 2.2 "
                         "text-to-video file)")
    return inner


def attached(model, where: str) -> NativeAdapter:
    diffusion_model(model, where)
    info = model.get_attachment(KEY) if hasattr(model, "get_attachment") else None
    if info is None:
        raise ValueError(f"{where}: this MODEL has no AlcheMinT adapter; put {APPLY} (with an adapter file) between "
                         "Load Diffusion Model and this node")
    return info


_COND_CLASS = None


def references_cond(refs: References):
    """References as a model condition: repeated to each batch, concatenated across conds, reaching the model as
    one References object (never cast to the model's dtype, so intervals keep float64)."""
    global _COND_CLASS
    if _COND_CLASS is None:
        import comfy.conds

        class CONDReferences(comfy.conds.CONDRegular):
            def process_cond(self, batch_size, **kwargs):
                return self._copy_with(self.cond.repeat(batch_size // self.cond.latents.shape[0]))

            def can_concat(self, other):
                a, b = self.cond, getattr(other, "cond", None)
                return isinstance(b, References) and a.latents.shape[1:] == b.latents.shape[1:] \
                    and a.tags.shape[1:] == b.tags.shape[1:] and a.rope == b.rope

            def concat(self, others):
                return References.cat([self.cond] + [o.cond for o in others])

            def size(self):
                return list(self.cond.latents.shape)

        _COND_CLASS = CONDReferences
    return _COND_CLASS(refs)


_DENSE_CLASS = None
DENSE_KEY = "alchemint_dense"  # the model_conds entry of timed captions (the positive caption's only)


def dense_cond(dense: DenseCaptions):
    """Timed captions as a model condition: repeated to each batch; conds concatenate only when their captions have
    the same shape (else ComfyUI runs them as separate passes)."""
    global _DENSE_CLASS
    if _DENSE_CLASS is None:
        import comfy.conds

        class CONDDense(comfy.conds.CONDRegular):
            def process_cond(self, batch_size, **kwargs):
                return self._copy_with(self.cond.repeat(batch_size // self.cond.context.shape[0]))

            def can_concat(self, other):
                b = getattr(other, "cond", None)
                return isinstance(b, DenseCaptions) and self.cond.context.shape[1:] == b.context.shape[1:]

            def concat(self, others):
                return DenseCaptions.cat([self.cond] + [o.cond for o in others])

            def size(self):
                return list(self.cond.context.shape)

        _DENSE_CLASS = CONDDense
    return _DENSE_CLASS(dense)


_GUARD_CLASS = None


def apply_guard():
    """A HookGroup holding one hook that ComfyUI calls with the sampling MODEL before the first step (as it does for
    every TransformerOptionsHook on conditioning): it adds nothing, and stops a run whose MODEL lacks AlcheMinT Apply
    (whose plain Wan forward would silently ignore the references). One group per conditioning build, shared by its
    outputs, so their conds still batch together."""
    global _GUARD_CLASS
    import comfy.hooks
    if _GUARD_CLASS is None:
        class ApplyGuard(comfy.hooks.TransformerOptionsHook):
            def __init__(self):
                super().__init__(transformers_dict={})

            def add_hook_patches(self, model, model_options, target_dict, registered):
                if not hasattr(model, "get_attachment") or model.get_attachment(KEY) is None:
                    raise ValueError(f"AlcheMinT Native Conditioning: the conditioning carries references but the "
                                     f"sampler's MODEL has no AlcheMinT adapter; connect the MODEL from {APPLY} to "
                                     "the sampler or guider")
                return False

        _GUARD_CLASS = ApplyGuard
    group = comfy.hooks.HookGroup()
    group.add(_GUARD_CLASS())
    return group


def with_references(conditioning, refs: References | None, where: str, guard=None,
                    dense: DenseCaptions | None = None):
    """A copy of CONDITIONING whose every entry carries `refs` (None: carries none), the `guard` hooks and, when
    given, the timed captions `dense`."""
    try:
        out = []
        for emb, extra in conditioning:
            extra = dict(extra)
            conds = dict(extra.get("model_conds", {}))
            conds.pop(KEY, None)
            if refs is not None:
                conds[KEY] = references_cond(refs)
            if dense is not None:
                conds[DENSE_KEY] = dense_cond(dense)
            extra["model_conds"] = conds
            if guard is not None:
                mine = extra.get("hooks")
                extra["hooks"] = guard if mine is None or mine is guard else mine.clone_and_combine(guard)
            out.append([emb, extra])
    except (TypeError, ValueError):
        raise ValueError(f"{where}: expected CONDITIONING from CLIP Text Encode") from None
    return out


def references_on(conditioning) -> tuple[References | None, object]:
    """(the references on CONDITIONING, its hooks) or (None, None)."""
    for _, extra in conditioning:
        c = extra.get("model_conds", {}).get(KEY) if isinstance(extra, dict) else None
        if c is not None:
            return c.cond, extra.get("hooks")
    return None, None


def comfy_attend(options: dict):
    """ComfyUI's attention backend (the one the user chose) as hosted.Attend."""
    from comfy.ldm.modules.attention import optimized_attention

    def attend(q, k, v):
        return optimized_attention(q.flatten(2), k.flatten(2), v.flatten(2), heads=q.shape[2],
                                   transformer_options=options)
    return attend


def make_wrapper(info: NativeAdapter):
    views: dict[int, HostedWan] = {}  # one view per host model: its RoPE table cache lives across steps

    def wrapper(executor, x, timestep, context, clip_fea=None, time_dim_concat=None, transformer_options={},
                **kwargs):
        refs, dense = kwargs.pop(KEY, None), kwargs.pop(DENSE_KEY, None)
        if refs is None and dense is None:  # conditioning without references: the native model as it is
            return executor(x, timestep, context, clip_fea, time_dim_concat, transformer_options, **kwargs)
        others = [k for k, v in kwargs.items() if v is not None]
        if clip_fea is not None or time_dim_concat is not None or others:
            extra = ["clip vision" if clip_fea is not None else "", "Phantom subjects" if time_dim_concat is not None
                     else ""] + others
            raise ValueError(f"{APPLY}: references cannot be combined with {', '.join(e for e in extra if e)} on the "
                             "same conditioning; remove those nodes")
        for what, n in (("references", None if refs is None else refs.latents.shape[0]),
                        ("timed captions", None if dense is None else dense.context.shape[0])):
            if n is not None and n != x.shape[0]:
                raise ValueError(f"{APPLY}: {what} for a batch of {n} reached a batch of {x.shape[0]}; build the "
                                 "conditioning with AlcheMinT Native Conditioning")
        host = executor.class_obj
        hosted = views.get(id(host))
        if hosted is None or hosted.host is not host:
            hosted = views[id(host)] = HostedWan(host, info.adapter, info.cfg)
        hosted.attend, hosted.options = comfy_attend(transformer_options), transformer_options
        return hosted(x, timestep, context, refs=None if refs is None else refs.to(x.device),
                      dense=None if dense is None else dense.to(x.device))
    return wrapper


class AlcheMinTApply:
    DESCRIPTION = ("Adds an AlcheMinT adapter to ComfyUI's own Wan 2.1 model (Load Diffusion Model, with any LoRAs, "
                   "fp8 or GGUF weights): references on the conditioning from AlcheMinT Native Conditioning then "
                   "reach it in KSampler, SamplerCustomAdvanced and the guiders.")
    CATEGORY = NATIVE
    RETURN_TYPES = ("MODEL",)
    RETURN_NAMES = ("model",)
    OUTPUT_TOOLTIPS = ("The same model with the adapter; conditioning without references runs it unchanged.",)
    FUNCTION = "apply"

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {
            "model": ("MODEL", {"tooltip": "A Wan 2.1 or 2.2 text-to-video MODEL from Load Diffusion Model (LoRA "
                                           "loaders may come before or after this node)."}),
            "adapter": (bridge.list_files(bridge.MODEL_FOLDER), {
                "tooltip": "AlcheMinT adapter (.safetensors in models/alchemint) trained for this base model. Its "
                           "LoRA deltas, if it has any, are applied as ComfyUI LoRA patches."}),
        }, "optional": {
            "expert": (list(EXPERTS), {"default": next(iter(EXPERTS)), "tooltip": "Which Wan 2.2 A14B expert this "
                       "MODEL is (each expert has its own adapter; their files look alike, so say which). 'none' "
                       "for a single model."}),
        }}

    def apply(self, model, adapter, expert=next(iter(EXPERTS))):
        import comfy.model_management as mm
        import comfy.model_patcher
        import comfy.patcher_extension
        import comfy.sd
        host = diffusion_model(model, APPLY)
        if model.get_attachment(KEY) is not None:
            raise ValueError(f"{APPLY}: this MODEL already has the AlcheMinT adapter "
                             f"'{model.get_attachment(KEY).name}'; apply one adapter only")
        try:
            cfg = host_config(host)
        except ValueError as err:
            raise ValueError(f"{APPLY}: model: {err}") from None
        if expert not in EXPERTS:
            raise ValueError(f"{APPLY}: expert '{expert}' must be one of {', '.join(EXPERTS)}")
        path = bridge.resolve(bridge.MODEL_FOLDER, adapter, f"{APPLY}: adapter")
        try:
            module, lora = load_adapter_file(path, cfg, EXPERTS[expert])
        except CheckpointError as err:
            hint = " (the expert input says which expert this MODEL is)" if "expert" in str(err) else ""
            raise ValueError(f"{APPLY}: adapter: {err}{hint}") from None
        m = model.clone()
        if lora:  # the adapter's own LoRA, through ComfyUI's LoRA patches like any other
            m, _ = comfy.sd.load_lora_for_models(m, None, lora, 1.0, 0)
        info = NativeAdapter(module, cfg, adapter)
        m.set_attachments(KEY, info)
        m.add_wrapper_with_key(comfy.patcher_extension.WrappersMP.DIFFUSION_MODEL, KEY, make_wrapper(info))
        m.set_additional_models(KEY, [comfy.model_patcher.ModelPatcher(
            module, load_device=mm.get_torch_device(), offload_device=mm.unet_offload_device())])
        return (m,)


def comfy_latent_format(model) -> LatentFormat:
    """The MODEL's latent statistics as the core's LatentFormat (process_in = (x - mean) * scale / std)."""
    lf = model.get_model_object("latent_format")
    scale = float(getattr(lf, "scale_factor", 1.0))
    mean = getattr(lf, "latents_mean", None)
    if mean is None:
        n = lf.latent_channels
        return LatentFormat((0.0,) * n, (1 / scale,) * n)
    return LatentFormat(tuple(mean.flatten().tolist()), tuple((lf.latents_std / scale).flatten().tolist()))


class NativeConditioning:
    DESCRIPTION = ("Puts the timeline's subjects (reference latents, tags, intervals) on native CONDITIONING for a "
                   "model with AlcheMinT Apply, and makes the empty video latent. positive = caption + references; "
                   "negative = negative caption with the references dropped (their intervals kept); references_only "
                   "= negative caption + references (DualCFGGuider's middle condition).")
    CATEGORY = NATIVE
    RETURN_TYPES = ("CONDITIONING", "CONDITIONING", "CONDITIONING", "LATENT")
    RETURN_NAMES = ("positive", "negative", "references_only", "latent")
    OUTPUT_TOOLTIPS = ("Caption + timed references (KSampler's positive).",
                       "Negative caption, references dropped (KSampler's negative).",
                       "Negative caption + references (DualCFGGuider: cond2).",
                       "Empty video latent of the timeline's length at this size.")
    FUNCTION = "encode"

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {
            "model": ("MODEL", {"tooltip": "The model after AlcheMinT Apply (gives the adapter's settings and the "
                                           "latent statistics)."}),
            "timeline": ("ALCHEMINT_TIMELINE", {"tooltip": "Subjects and their intervals from the Interval "
                                                           "Timeline; their Reference Loaders' VAE encodes them."}),
            "positive": ("CONDITIONING", {"tooltip": "The caption (CLIP Text Encode), naming the subjects by their "
                                                     "tags."}),
            "negative": ("CONDITIONING", {"tooltip": "The negative caption (CLIP Text Encode; may be empty)."}),
            "width": ("INT", {"default": 832, "min": 16, "max": 4096, "step": 16, "tooltip": "Video width in "
                              "pixels, a multiple of 16 for Wan 2.1 (32 for Wan 2.2 TI2V 5B)."}),
            "height": ("INT", {"default": 480, "min": 16, "max": 4096, "step": 16, "tooltip": "Video height in "
                               "pixels, a multiple of 16 for Wan 2.1 (32 for Wan 2.2 TI2V 5B)."}),
            "batch_size": ("INT", {"default": 1, "min": 1, "max": 64, "tooltip": "Videos per run (same "
                                                                                 "references)."}),
            "mode": (MODES, {"default": TRAINED, "tooltip": "How reference tokens are placed in time ('as "
                             "trained': the adapter's own), as in the WeRoPE Conditioner."}),
            "w_mid": ("FLOAT", {"default": 1.0, "min": 0.0, "max": W_MID_MAX, "step": 0.05, "tooltip": "WeRoPE "
                                "weight of the midpoint (mode werope only)."}),
            "w_edge": ("FLOAT", {"default": -0.4, "min": -W_MID_MAX / 2, "max": 0.0, "step": 0.05, "tooltip":
                                 "WeRoPE weight of the two edges, negative (mode werope only)."}),
            "edge_offset": ("FLOAT", {"default": 0.0, "min": 0.0, "max": 8.0, "step": 0.25, "tooltip": "WeRoPE "
                                      "edges this many latent frames outside the interval (werope only)."}),
        }, "optional": {
            "timed_captions": ("ALCHEMINT_TIMED_CAPTIONS", {"tooltip": "Per-event captions with their times, from "
                               "AlcheMinT Timed Captions (the same frames and fps as the timeline); they ride on "
                               "positive only. For adapters trained with dense captions."}),
        }}

    def encode(self, model, timeline, positive, negative, width, height, batch_size, mode, w_mid, w_edge,
               edge_offset, timed_captions=None):
        where = "AlcheMinT Native Conditioning"
        info = attached(model, where)
        dense = None
        if timed_captions is not None:
            taker = SimpleNamespace(alchemint=info.adapter, cfg=info.cfg)  # what check_model_takes reads
            dense = timed_dense(taker, timeline, timed_captions, f"{where}: timed_captions").repeat(int(batch_size))
        if mode not in MODES:
            raise ValueError(f"{where}: mode '{mode}' must be one of {', '.join(MODES)}")
        try:
            rope = None if mode == TRAINED else TemporalRope(mode, float(w_mid), float(w_edge), float(edge_offset))
            spatial = wan_vae(info.cfg.in_dim)[1]  # 8x (Wan 2.1 VAE), 16x (Wan 2.2 VAE, TI2V 5B's 48 channels)
            check_size(int(height), int(width), spatial * info.cfg.patch_size[1])
            frames = latent_frame_count(timeline.frames)
            subjects = list(timeline.references.subjects)
            if len(subjects) > info.adapter.cfg.max_refs:
                raise ValueError(f"{len(subjects)} subjects given; adapter '{info.name}' takes at most "
                                 f"{info.adapter.cfg.max_refs}: remove subjects")
            latents = encode_subjects(subjects, int(height), int(width), comfy_latent_format(model))
            refs = make_references(subjects, latents, timeline.intervals, timeline.fps, timeline.frames,
                                   info.adapter.cfg.min_half_length, rope)
        except ValueError as err:
            raise ValueError(f"{where}: {err}") from None
        empty = torch.zeros(int(batch_size), info.cfg.in_dim, frames, int(height) // spatial, int(width) // spatial)
        guard = apply_guard()
        return (with_references(positive, refs, f"{where}: positive", guard, dense),
                with_references(negative, refs.dropped(), f"{where}: negative", guard),
                with_references(negative, refs, f"{where}: negative", guard), {"samples": empty})


def multi_cfg_guider_class():
    import comfy.samplers

    class MultiCFG(comfy.samplers.CFGGuider):
        """Guidance.coefficients' passes over native conds; each pass returns x0 and the coefficients sum to 1, so
        the combination of x0 is that of the velocities."""

        def set_guidance(self, guidance: Guidance):
            self.guidance = guidance

        def set_conds(self, positive, negative):
            refs, hooks = references_on(positive)
            self.passes = list(self.guidance.coefficients(refs is not None).items())
            text = {True: positive, False: negative}
            conds = {}
            for (r_on, t_on), _ in self.passes:
                if refs is None:
                    conds[name(r_on, t_on)] = text[t_on]
                else:
                    conds[name(r_on, t_on)] = with_references(text[t_on], refs if r_on else refs.dropped(),
                                                              "AlcheMinT Multi-CFG Guider (native)", hooks)
            self.inner_set_conds(conds)

        def predict_noise(self, x, timestep, model_options={}, seed=None):
            conds = [self.conds[name(r, t)] for (r, t), _ in self.passes]
            out = comfy.samplers.calc_cond_batch(self.inner_model, conds, x, timestep, model_options)
            return sum(c * o for (_, c), o in zip(self.passes, out))

    return MultiCFG


def name(r_on: bool, t_on: bool) -> str:
    return f"{'refs' if r_on else 'norefs'}_{'text' if t_on else 'notext'}"


class NativeMultiCFGGuider:
    DESCRIPTION = ("The Multi-CFG Guider as a native GUIDER for SamplerCustomAdvanced: v = v(0,0) + s_ref*(v(R,0) - "
                   "v(0,0)) + s_txt*(v(R,T) - v(R,0)), references dropped by zeroing their latents and tags, their "
                   "intervals kept. A scale of 1 skips its extra pass.")
    CATEGORY = NATIVE
    RETURN_TYPES = ("GUIDER",)
    RETURN_NAMES = ("guider",)
    OUTPUT_TOOLTIPS = ("For SamplerCustomAdvanced.",)
    FUNCTION = "guide"

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {
            "model": ("MODEL", {"tooltip": "The model after AlcheMinT Apply."}),
            "positive": ("CONDITIONING", {"tooltip": "AlcheMinT Native Conditioning's positive (caption + "
                                                     "references)."}),
            "negative": ("CONDITIONING", {"tooltip": "AlcheMinT Native Conditioning's negative (its negative "
                                                     "caption is used; the references come from positive)."}),
            "reference_scale": ("FLOAT", {"default": 2.0, "min": 0.0, "max": 100.0, "step": 0.1, "tooltip":
                                          "How strongly the references are followed (1 = no extra pass)."}),
            "text_scale": ("FLOAT", {"default": 5.0, "min": 0.0, "max": 100.0, "step": 0.1, "tooltip": "How "
                                     "strongly the caption is followed (paper: 5)."}),
            "joint_scale": ("FLOAT", {"default": 0.0, "min": 0.0, "max": 100.0, "step": 0.1, "tooltip": "With "
                                      "four_pass: scale of the reference x text interaction term."}),
            "four_pass": ("BOOLEAN", {"default": False, "tooltip": "Use the 4-pass form (adds v(0,T) and the joint "
                                      "term); slower."}),
        }}

    def guide(self, model, positive, negative, reference_scale, text_scale, joint_scale, four_pass):
        where = "AlcheMinT Multi-CFG Guider (native)"
        if references_on(positive)[0] is not None:
            attached(model, where)
        try:
            guidance = Guidance(float(reference_scale), float(text_scale), float(joint_scale) if four_pass else None)
        except (TypeError, ValueError) as err:
            raise ValueError(f"{where}: {err}") from None
        guider = multi_cfg_guider_class()(model)
        guider.set_guidance(guidance)
        guider.set_conds(positive, negative)
        return (guider,)


class FlowSigmas:
    DESCRIPTION = ("The pack's noise schedule as SIGMAS: steps+1 levels from 1 to 0, linear then warped by "
                   "shift*s / (1 + (shift-1)*s), the schedule the AlcheMinT Sampler uses.")
    CATEGORY = NATIVE
    RETURN_TYPES = ("SIGMAS",)
    RETURN_NAMES = ("sigmas",)
    OUTPUT_TOOLTIPS = ("For SamplerCustomAdvanced.",)
    FUNCTION = "sigmas"

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {
            "steps": ("INT", {"default": 40, "min": 1, "max": 1000, "tooltip": "Sampling steps (paper: 40)."}),
            "shift": ("FLOAT", {"default": DEFAULT_SHIFT, "min": 0.1, "max": 100.0, "step": 0.01, "tooltip":
                                "Schedule shift (paper: 5.66 for Wan)."}),
        }}

    def sigmas(self, steps, shift):
        try:
            check_steps_shift(int(steps), float(shift))
        except ValueError as err:
            raise ValueError(f"AlcheMinT Flow Sigmas: {err}") from None
        return (sigma_schedule(int(steps), float(shift)),)


class ExpertSigmas:
    DESCRIPTION = ("Cuts a schedule where Wan 2.2 A14B hands over from its high-noise to its low-noise expert: run "
                   "SamplerCustomAdvanced on high_sigmas with the high-noise model, then (Disable Noise) on "
                   "low_sigmas with the low-noise model, the first sampler's output as the second's latent.")
    CATEGORY = NATIVE
    RETURN_TYPES = ("SIGMAS", "SIGMAS")
    RETURN_NAMES = ("high_sigmas", "low_sigmas")
    OUTPUT_TOOLTIPS = ("The steps starting at or above the boundary (the high-noise expert's).",
                       "The steps after it (the low-noise expert's).")
    FUNCTION = "split"

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {
            "sigmas": ("SIGMAS", {"tooltip": "The whole schedule (AlcheMinT Flow Sigmas; Wan 2.2 A14B: 40 steps, "
                                             "shift 12)."}),
            "boundary": ("FLOAT", {"default": WAN22_BOUNDARY, "min": 0.01, "max": 0.99, "step": 0.005,
                                   "tooltip": "Noise level of the hand-over (Wan 2.2 A14B text-to-video: 0.875)."}),
        }}

    def split(self, sigmas, boundary):
        if not isinstance(sigmas, torch.Tensor) or sigmas.ndim != 1 or len(sigmas) < 2:
            raise ValueError("AlcheMinT Expert Sigmas: sigmas must be a schedule of at least one step (SIGMAS from "
                             "AlcheMinT Flow Sigmas or a scheduler node)")
        try:
            return split_sigmas(sigmas, float(boundary))
        except ValueError as err:
            raise ValueError(f"AlcheMinT Expert Sigmas: {err}") from None
