"""Dataset Cache, Trainer and Evaluate Timing: the training loop and the timing metrics inside ComfyUI."""
from __future__ import annotations

import re
import shutil
from dataclasses import dataclass
from pathlib import Path

import torch
from PIL import Image

from alchemint_core.data.cache import CacheConfig, build_cache
from alchemint_core.demo.pipeline import ENCODERS_FILE
from alchemint_core.demo.train_settings import demo_config_for
from alchemint_core.files import atomic_write
from alchemint_core.latents import WAN21
from alchemint_core.native import DemoVAE, TextEncoderAdapter, VideoEncoderAdapter
from alchemint_core.train_config import TrainConfig
from alchemint_core.trainer import Trainer as TrainingLoop

from . import bridge
from .models import CATEGORY
from .sampling import image_tensor

NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
NEW_DEMO_MODEL = "new demo-size model (from scratch)"


@dataclass(frozen=True)
class CacheRef:
    """ALCHEMINT_CACHE: a training cache folder."""

    path: Path
    clips: int


def check_name(name: str, what: str) -> str:
    if not isinstance(name, str) or not NAME_RE.match(name) or name.endswith(".safetensors"):
        raise ValueError(f"{what} '{name}' must be a plain name of letters, digits, '_', '-' or '.' (no folders), "
                         "e.g. my_adapter")
    return name


def input_folder(name: str, what: str) -> Path:
    """A dataset folder inside ComfyUI's input directory (never outside it)."""
    fp = bridge.folder_paths()
    root = Path(fp.get_input_directory() if fp is not None else bridge.SEARCH_PATHS.get("input", [Path("input")])[0])
    path = root / bridge.relative_name(name, what, f"ComfyUI's input directory ({root})")
    if not path.is_dir():
        raise ValueError(f"{what} '{name}' is not a folder in ComfyUI's input directory ({root}); put the dataset "
                         "there (one sub-folder with a sample.json per video)")
    return path


def output_root() -> Path:
    fp = bridge.folder_paths()
    root = Path(fp.get_output_directory()) if fp is not None else bridge.SEARCH_PATHS.get("output", [Path("output")])[0]
    return root / "alchemint"


class DatasetCache:
    DESCRIPTION = ("Encodes a training dataset once with the model's VAE and text encoder (video latents, captions, "
                   "augmented references) so training reads only the cache. Resumes where it stopped.")
    CATEGORY = f"{CATEGORY}/training"
    RETURN_TYPES = ("ALCHEMINT_CACHE",)
    RETURN_NAMES = ("cache",)
    OUTPUT_TOOLTIPS = ("The cache folder, for the Trainer.",)
    FUNCTION = "cache"

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {
            "dataset": ("STRING", {"default": "my_dataset", "tooltip": "Dataset folder inside ComfyUI's input "
                                   "directory: one sub-folder per video with a sample.json (see the README)."}),
            "vae": ("VAE", {"tooltip": "Wan 2.1 VAE (or the Demo Model's) that encodes the videos and references."}),
            "clip": ("CLIP", {"tooltip": "The text encoder that goes with the model (umT5 for Wan)."}),
            "cache_name": ("STRING", {"default": "my_cache", "tooltip": "Name of the cache, written to "
                                      "output/alchemint/caches/<name>; the same name resumes a stopped build."}),
            "frames": ("INT", {"default": 17, "min": 1, "max": 1025, "step": 4, "tooltip": "Frames per training "
                               "clip, 4k+1 (81 for Wan 2.1 at 16 fps)."}),
            "width": ("INT", {"default": 0, "min": 0, "max": 4096, "step": 16, "tooltip": "Resize clips to this "
                              "width (multiple of 16); 0 keeps the videos' size."}),
            "height": ("INT", {"default": 0, "min": 0, "max": 4096, "step": 16, "tooltip": "Resize clips to this "
                               "height (multiple of 16); 0 keeps the videos' size."}),
            "reference_variants": ("INT", {"default": 4, "min": 1, "max": 16, "tooltip": "Augmented reference "
                                           "images stored per subject (one is drawn per training step)."}),
            "seed": ("INT", {"default": 0, "min": 0, "max": 2 ** 31 - 1, "tooltip": "Seed of clip windows and "
                             "reference augmentation."}),
        }}

    def cache(self, dataset, vae, clip, cache_name, frames, width, height, reference_variants, seed):
        data = input_folder(dataset, "Dataset Cache: dataset")
        out = output_root() / "caches" / check_name(cache_name, "Dataset Cache: cache_name")
        if (width == 0) != (height == 0):
            raise ValueError("Dataset Cache: give both width and height, or 0 for both to keep the videos' size")
        demo = isinstance(vae, DemoVAE)
        latent_format = vae.latent_format if demo else WAN21
        encoder_id = f"demo:{ENCODERS_FILE}" if demo else f"comfy:{type(vae).__name__}+{type(clip).__name__}"
        cfg = CacheConfig(num_frames=frames, height=height or None, width=width or None,
                          ref_variants=reference_variants, seed=seed)
        progress = bridge.Progress(1)

        def on_clip(done, total, name):
            bridge.check_interrupted()
            progress.total = total
            progress.update(done)

        with torch.inference_mode(False):
            report = build_cache(data, out, VideoEncoderAdapter(vae, latent_format), TextEncoderAdapter(clip), cfg,
                                 encoder_id=encoder_id, progress=on_clip)
        return (CacheRef(out, len(report.encoded) + len(report.skipped)),)


class AdapterTrainer:
    DESCRIPTION = ("Trains an AlcheMinT adapter (LoRA or adapter-only) on a Wan model, or a full demo-size model, "
                   "with the pack's training loop. Writes models/alchemint/<name>.safetensors and a loss plot; "
                   "Cancel stops it after a checkpoint, and 'resume' continues it.")
    CATEGORY = f"{CATEGORY}/training"
    RETURN_TYPES = ("STRING", "IMAGE")
    RETURN_NAMES = ("file", "loss plot")
    OUTPUT_TOOLTIPS = ("The trained file in models/alchemint.", "Training loss over steps.")
    OUTPUT_NODE = True
    FUNCTION = "train"

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {
            "cache": ("ALCHEMINT_CACHE", {"tooltip": "From the Dataset Cache node."}),
            "base": ([NEW_DEMO_MODEL] + bridge.list_files("diffusion_models"), {"tooltip": "Wan 2.1 T2V model to "
                     "adapt (models/diffusion_models), or a new demo-size model trained from scratch."}),
            "mode": (["lora", "adapter-only", "full"], {"default": "lora", "tooltip": "What trains: the adapter "
                     "plus LoRA deltas, only the adapter, or every weight (full: for the demo-size model)."}),
            "output_name": ("STRING", {"default": "my_adapter", "tooltip": "File name in models/alchemint "
                                       "(without .safetensors); checkpoints go to output/alchemint/runs/<name>."}),
            "steps": ("INT", {"default": 1000, "min": 1, "max": 10_000_000, "tooltip": "Optimizer steps."}),
            "batch_size": ("INT", {"default": 1, "min": 1, "max": 1024, "tooltip": "Clips per step."}),
            "learning_rate": ("FLOAT", {"default": 1e-4, "min": 1e-7, "max": 1e-1, "step": 1e-5, "tooltip":
                                        "Learning rate of the adapter and LoRA (base weights in full mode use the "
                                        "same)."}),
            "lora_rank": ("INT", {"default": 32, "min": 0, "max": 1024, "tooltip": "LoRA rank (mode lora)."}),
            "rope_mode": (["werope", "avg", "mid", "none"], {"default": "werope", "tooltip": "Temporal RoPE mode "
                          "the adapter is trained with."}),
            "gradient_checkpointing": ("BOOLEAN", {"default": True, "tooltip": "Recompute activations in the "
                                       "backward pass: much less memory, about 30% slower."}),
            "resume": ("BOOLEAN", {"default": True, "tooltip": "Continue from the run's last checkpoint if the "
                                   "settings match."}),
            "seed": ("INT", {"default": 0, "min": 0, "max": 2 ** 31 - 1, "tooltip": "Seed of data order, noise and "
                             "initialisation."}),
        }}

    def train(self, cache, base, mode, output_name, steps, batch_size, learning_rate, lora_rank, rope_mode,
              gradient_checkpointing, resume, seed):
        name = check_name(output_name, "Trainer: output_name")
        run = output_root() / "runs" / name
        values = {"cache": str(cache.path), "out": str(run), "mode": mode, "steps": steps, "batch_size": batch_size,
                  "lr_new": learning_rate, "lr_base": learning_rate, "seed": seed, "ema_decay": 0.0,
                  "gradient_checkpointing": gradient_checkpointing, "checkpoint_every": max(1, min(250, steps)),
                  "adapter": {"rope_mode": rope_mode}}
        if base == NEW_DEMO_MODEL:
            demo = demo_config_for(cache.path)
            values["model"] = demo["model"]
            values["adapter"] = {**demo["adapter"], "rope_mode": rope_mode}
        else:
            values["base"] = str(bridge.resolve("diffusion_models", base, "Trainer: base"))
        if mode == "lora":
            if lora_rank < 1:
                raise ValueError("Trainer: mode 'lora' needs lora_rank >= 1 (or choose mode 'adapter-only')")
            values["adapter"]["lora_rank"] = lora_rank
        try:
            cfg = TrainConfig.from_dict(values)
        except ValueError as err:
            raise ValueError(f"Trainer: {err}") from None
        progress = bridge.Progress(steps)
        cancelled = []  # ComfyUI's progress hook raises on Cancel: keep the exception, stop after a checkpoint

        def on_step(step, total, loss):
            try:
                progress.update(step)
            except Exception as err:  # noqa: BLE001 - only ComfyUI's interruption is kept, the rest re-raised
                if type(err).__name__ != "InterruptProcessingException":
                    raise
                cancelled.append(err)

        # ComfyUI runs nodes in inference mode; training needs autograd.
        with torch.inference_mode(False), torch.enable_grad():
            result = TrainingLoop(cfg, resume=resume, show_bar=False, progress=on_step,
                                  should_stop=lambda: bool(cancelled) or bridge.interrupted()).run()
        if cancelled:
            raise cancelled[0]  # stopped by Cancel: the checkpoint is written, report the interruption
        bridge.check_interrupted()
        target = bridge.output_folder(bridge.MODEL_FOLDER) / f"{name}.safetensors"
        atomic_write(target, lambda tmp: shutil.copyfile(result.output, tmp))  # a cut-short copy keeps the old file
        plot = run / "loss.png"
        img = image_tensor(Image.open(plot)) if plot.is_file() else torch.zeros(1, 64, 64, 3)
        return {"ui": {"text": [f"{result.steps} steps, last loss {result.last_loss:.4f}: {target}"]},
                "result": (str(target), img)}
