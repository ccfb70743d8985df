"""Model Loader (Wan 2.1 + AlcheMinT adapter) and Demo Model (the embedded tiny model with its VAE and CLIP)."""
from __future__ import annotations

import torch

from alchemint_core.demo.pipeline import MODEL_FILE, load_demo
from alchemint_core.generation import VideoModel
from alchemint_core.latents import WAN21
from alchemint_core.loading import default_compute_dtype, load_model
from alchemint_core.native import DemoCLIP, DemoVAE

from . import bridge

CATEGORY = "AlcheMinT"
NO_ADAPTER = "none (untrained references)"
DTYPES = {"default": None, "fp16": torch.float16, "bf16": torch.bfloat16, "fp32": torch.float32,
          "fp8_e4m3fn": getattr(torch, "float8_e4m3fn", None)}
SHIPPED = "shipped demo model"


class ModelLoader:
    DESCRIPTION = ("Loads a Wan 2.1 text-to-video diffusion model from models/diffusion_models with an AlcheMinT "
                   "adapter from models/alchemint (train one with the Trainer node).")
    CATEGORY = f"{CATEGORY}/loaders"
    RETURN_TYPES = ("ALCHEMINT_MODEL",)
    RETURN_NAMES = ("model",)
    OUTPUT_TOOLTIPS = ("The Wan model with its AlcheMinT adapter, for the Sampler and the WeRoPE Conditioner.",)
    FUNCTION = "load"

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {
            "base": (bridge.list_files("diffusion_models"), {
                "tooltip": "Wan 2.1 T2V diffusion model (.safetensors in models/diffusion_models), e.g. "
                           "wan2.1_t2v_1.3B_fp16.safetensors."}),
            "adapter": ([NO_ADAPTER] + bridge.list_files(bridge.MODEL_FOLDER), {
                "tooltip": "AlcheMinT adapter (.safetensors in models/alchemint) trained for this base. Without "
                           "one, the reference inputs are untrained and do nothing useful."}),
            "dtype": (list(DTYPES), {"default": "default", "tooltip": "Weight dtype: default keeps the file's "
                                     "(fp8 files compute in bf16); fp8 stores weights in 8 bits to save memory."}),
            "offload_blocks": ("BOOLEAN", {"default": False, "tooltip": "Keep the transformer blocks in CPU memory "
                                           "and put each on the GPU only while it runs: a model bigger than the "
                                           "card's memory (Wan 2.1 14B on 24 GB) runs, more slowly."}),
        }}

    def load(self, base, adapter, dtype, offload_blocks=False):
        if dtype not in DTYPES or (dtype != "default" and DTYPES[dtype] is None):
            raise ValueError(f"Model Loader: dtype '{dtype}' is not available with this PyTorch; choose one of "
                             f"{', '.join(k for k, v in DTYPES.items() if v is not None or k == 'default')}")
        base_path = bridge.resolve("diffusion_models", base, "Model Loader: base")
        adapter_path = None if adapter == NO_ADAPTER else bridge.resolve(bridge.MODEL_FOLDER, adapter,
                                                                         "Model Loader: adapter")
        model = load_model(base_path, adapter=adapter_path, dtype=DTYPES[dtype], device="cpu")
        model.compute_dtype = default_compute_dtype(model, bridge.device())  # bf16/fp16 on the GPU it will run on
        return (VideoModel(model, WAN21, base, offload=bool(offload_blocks)),)


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
