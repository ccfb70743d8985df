"""Model Loader (Wan 2.1 / 2.2 + AlcheMinT adapters) and Demo Model (the embedded tiny model with its VAE and CLIP)."""
from __future__ import annotations

import torch

from alchemint_core.demo.pipeline import MODEL_FILE, load_demo
from alchemint_core.model.config import CheckpointError
from alchemint_core.model.experts import WAN22_BOUNDARY, load_experts
from alchemint_core.model.loading import default_compute_dtype, load_model
from alchemint_core.native import DemoCLIP, DemoVAE
from alchemint_core.sampling.generation import VideoModel, wan_video_model

from . import bridge

CATEGORY = "AlcheMinT"
NO_ADAPTER = "none (untrained references)"
SINGLE_MODEL = "none (base is one model)"
DTYPES = {"default": None, "fp16": torch.float16, "bf16": torch.bfloat16, "fp32": torch.float32,
          "fp8_e4m3fn": getattr(torch, "float8_e4m3fn", None)}
SHIPPED = "shipped demo model"


class ModelLoader:
    DESCRIPTION = ("Loads a Wan text-to-video diffusion model from models/diffusion_models with an AlcheMinT "
                   "adapter from models/alchemint (train one with the Trainer node): Wan 2.1 T2V, Wan 2.2 TI2V 5B, "
                   "or Wan 2.2 A14B as its high-noise expert (base) and low-noise expert (low_noise_base), each "
                   "with its own adapter.")
    CATEGORY = f"{CATEGORY}/loaders"
    RETURN_TYPES = ("ALCHEMINT_MODEL",)
    RETURN_NAMES = ("model",)
    OUTPUT_TOOLTIPS = ("The Wan model with its AlcheMinT adapter, for the Sampler and the WeRoPE Conditioner.",)
    FUNCTION = "load"

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {
            "base": (bridge.list_files("diffusion_models"), {
                "tooltip": "Wan diffusion model (.safetensors in models/diffusion_models), e.g. "
                           "wan2.1_t2v_1.3B_fp16.safetensors or wan2.2_ti2v_5B_fp16.safetensors; for Wan 2.2 A14B "
                           "the high-noise expert (wan2.2_t2v_high_noise_14B_*), with low_noise_base set."}),
            "adapter": ([NO_ADAPTER] + bridge.list_files(bridge.MODEL_FOLDER), {
                "tooltip": "AlcheMinT adapter (.safetensors in models/alchemint) trained for this base. Without "
                           "one, the reference inputs are untrained and do nothing useful."}),
            "dtype": (list(DTYPES), {"default": "default", "tooltip": "Weight dtype: default keeps the file's "
                                     "(fp8 files compute in bf16); fp8 stores weights in 8 bits to save memory."}),
            "offload_blocks": ("BOOLEAN", {"default": False, "tooltip": "Keep the transformer blocks in CPU memory "
                                           "and put each on the GPU only while it runs: a model bigger than the "
                                           "card's memory (Wan 2.1 14B on 24 GB) runs, more slowly."}),
        }, "optional": {
            "low_noise_base": ([SINGLE_MODEL] + bridge.list_files("diffusion_models"), {
                "tooltip": "Wan 2.2 A14B only: the low-noise expert (wan2.2_t2v_low_noise_14B_*). Sampling uses base "
                           "(the high-noise expert) while the noise level is at or above the boundary, then this."}),
            "low_noise_adapter": ([NO_ADAPTER] + bridge.list_files(bridge.MODEL_FOLDER), {
                "tooltip": "Wan 2.2 A14B only: the AlcheMinT adapter trained on the low-noise expert (each expert "
                           "has its own; adapter is the high-noise expert's)."}),
            "boundary": ("FLOAT", {"default": WAN22_BOUNDARY, "min": 0.01, "max": 0.99, "step": 0.005,
                                   "tooltip": "Wan 2.2 A14B only: noise level (t/1000) where sampling hands over "
                                              "from the high- to the low-noise expert (official: 0.875)."}),
        }}

    def load(self, base, adapter, dtype, offload_blocks=False, low_noise_base=SINGLE_MODEL,
             low_noise_adapter=NO_ADAPTER, boundary=WAN22_BOUNDARY):
        if dtype not in DTYPES or (dtype != "default" and DTYPES[dtype] is None):
            raise ValueError(f"Model Loader: dtype '{dtype}' is not available with this PyTorch; choose one of "
                             f"{', '.join(k for k, v in DTYPES.items() if v is not None or k == 'default')}")
        base_path = bridge.resolve("diffusion_models", base, "Model Loader: base")
        adapter_path = None if adapter == NO_ADAPTER else bridge.resolve(bridge.MODEL_FOLDER, adapter,
                                                                         "Model Loader: adapter")
        if low_noise_base == SINGLE_MODEL:
            if low_noise_adapter != NO_ADAPTER:
                raise ValueError("Model Loader: low_noise_adapter is set but low_noise_base is not; set low_noise_base "
                                 "to the Wan 2.2 low-noise expert, or low_noise_adapter to none")
            model = load_model(base_path, adapter=adapter_path, dtype=DTYPES[dtype], device="cpu")
            first, name = model, base
        else:
            low_path = bridge.resolve("diffusion_models", low_noise_base, "Model Loader: low_noise_base")
            low_adapter = None if low_noise_adapter == NO_ADAPTER else bridge.resolve(
                bridge.MODEL_FOLDER, low_noise_adapter, "Model Loader: low_noise_adapter")
            try:
                model = load_experts(base_path, low_path, adapter_path, low_adapter, dtype=DTYPES[dtype], device="cpu",
                                     boundary=boundary, labels=("base/adapter (high-noise expert)",
                                                                "low_noise_base/low_noise_adapter (low-noise expert)"))
            except CheckpointError as err:
                raise ValueError(f"Model Loader: {err}") from None
            first, name = model.high, f"{base} + {low_noise_base}"
        model.compute_dtype = default_compute_dtype(first, bridge.device())  # bf16/fp16 on the GPU it will run on
        return (wan_video_model(model, name, offload=bool(offload_blocks)),)


class DemoModel:
    DESCRIPTION = ("The tiny AlcheMinT model shipped with the pack, with its own VAE and text encoder: makes "
                   "64x64 videos of coloured shapes on any CPU in seconds.")
    CATEGORY = f"{CATEGORY}/loaders"
    RETURN_TYPES = ("ALCHEMINT_MODEL", "VAE", "CLIP")
    RETURN_NAMES = ("model", "vae", "clip")
    OUTPUT_TOOLTIPS = ("The demo diffusion model.", "The demo VAE (works with VAE Encode/Decode).",
                       "The demo text encoder (works with CLIP Text Encode).")
    FUNCTION = "load"

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {
            "checkpoint": ([SHIPPED] + bridge.list_files(bridge.MODEL_FOLDER), {
                "tooltip": "The shipped demo model, or a demo model you trained (full model file in "
                           "models/alchemint)."}),
        }}

    def load(self, checkpoint):
        path = MODEL_FILE if checkpoint == SHIPPED else bridge.resolve(bridge.MODEL_FOLDER, checkpoint,
                                                                      "Demo Model: checkpoint")
        if not path.is_file():
            raise ValueError(f"Demo Model: {path} is missing; reinstall the pack (it ships the demo model)")
        try:
            model, vae, text = load_demo(path)
        except ValueError as err:
            raise ValueError(f"Demo Model: {checkpoint}: {err}; choose the shipped demo model or a full model "
                             "written by the Trainer") from None
        return (VideoModel(model, vae.latent_format, checkpoint), DemoVAE(vae), DemoCLIP(text))
