"""Dataset Cache, Trainer and Evaluate Timing: the training loop and the timing metrics inside ComfyUI."""
from __future__ import annotations

import json
import re
import shutil
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from alchemint_core.data.cache import CacheConfig, build_cache
from alchemint_core.demo.pipeline import ENCODERS_FILE
from alchemint_core.demo.train_settings import demo_config_for
from alchemint_core.files import atomic_write
from alchemint_core.model.latents import wan_vae
from alchemint_core.native import DemoVAE, TextEncoderAdapter, VideoEncoderAdapter
from alchemint_core.training.config import TrainConfig
from alchemint_core.training.trainer import Trainer as TrainingLoop

from . import bridge
from .models import CATEGORY
from .native import EXPERTS
from .sampling import image_tensor

NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
NEW_DEMO_MODEL = "new demo-size model (from scratch)"


@dataclass(frozen=True)
class CacheRef:
    """ALCHEMINT_CACHE: a training cache folder."""

    path: Path
    clips: int

    def __str__(self) -> str:  # what Preview Any shows
        return f"{self.clips} training clips in {self.path}"


def check_name(name: str, what: str) -> str:
    if not isinstance(name, str) or not NAME_RE.match(name) or name.endswith(".safetensors"):
        raise ValueError(f"{what} '{name}' must be a plain name of letters, digits, '_', '-' or '.' (no folders), "
                         "e.g. my_adapter")
    return name


def input_folder(name: str, what: str) -> Path:
    """A dataset folder inside ComfyUI's input directory, or one the Dataset Writer made (never outside them)."""
    fp = bridge.folder_paths()
    root = Path(fp.get_input_directory() if fp is not None else bridge.SEARCH_PATHS.get("input", [Path("input")])[0])
    rel = bridge.relative_name(name, what, f"ComfyUI's input directory ({root})")
    for path in (root / rel, output_root() / "datasets" / rel):
        if path.is_dir():
            return path
    raise ValueError(f"{what} '{name}' is not a folder in ComfyUI's input directory ({root}) nor a dataset the "
                     "Dataset Writer made; put the dataset there (one sub-folder with a sample.json per video)")


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
        # ComfyUI's Wan VAEs: 16 latent channels (Wan 2.1 VAE) or 48 (Wan 2.2 VAE), each with its own statistics
        latent_format = vae.latent_format if demo else wan_vae(getattr(vae, "latent_channels", 16))[0]
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
        }, "optional": {
            "expert": (list(EXPERTS), {"default": next(iter(EXPERTS)), "tooltip": "Wan 2.2 A14B: which "
                       "expert base is. It trains only on the noise levels that expert samples (high: at or above "
                       "the boundary 0.875, low: below), and the adapter is marked for it: train one per expert."}),
        }}

    def train(self, cache, base, mode, output_name, steps, batch_size, learning_rate, lora_rank, rope_mode,
              gradient_checkpointing, resume, seed, expert=next(iter(EXPERTS))):
        name = check_name(output_name, "Trainer: output_name")
        if expert not in EXPERTS:
            raise ValueError(f"Trainer: expert '{expert}' must be one of {', '.join(EXPERTS)}")
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
        if EXPERTS[expert]:
            if base == NEW_DEMO_MODEL:
                raise ValueError("Trainer: expert is for a Wan 2.2 A14B expert as base; set it to none for a new "
                                 "demo model")
            values["expert"] = EXPERTS[expert]
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


MAX_WRITER_SUBJECTS = 4


class DatasetWriter:
    DESCRIPTION = ("Writes one training sample — the frames, the caption and each subject's mask track (from any "
                   "segmentation node) — into a dataset folder under output/alchemint/datasets, in the format the "
                   "Dataset Cache and `cache` read. Shows each subject's interval (the trainer's rule).")
    CATEGORY = f"{CATEGORY}/training"
    RETURN_TYPES = ("STRING", "IMAGE", "STRING")
    RETURN_NAMES = ("intervals", "preview", "dataset")
    OUTPUT_TOOLTIPS = ("Each subject's interval in seconds as JSON (null where it is never visible).",
                       "The frames with one bar per subject's interval under them.",
                       "The dataset's name, once this sample is written: link it to the next Dataset Writer's or "
                       "the Dataset Cache's dataset so they run after it.")
    OUTPUT_NODE = True
    FUNCTION = "write"

    @classmethod
    def INPUT_TYPES(cls):
        more = {}
        for i in range(2, MAX_WRITER_SUBJECTS + 1):
            more[f"tag_{i}"] = ("STRING", {"default": "", "tooltip": f"Word tag of subject {i} (empty: none)."})
            more[f"mask_{i}"] = ("MASK", {"tooltip": f"Mask track of subject {i}, one mask per frame."})
        return {"required": {
            "frames": ("IMAGE", {"tooltip": "The video's frames, e.g. from Load Video."}),
            "fps": ("FLOAT", {"default": 16.0, "min": 1.0, "max": 240.0, "step": 1.0, "tooltip": "Frame rate."}),
            "caption": ("STRING", {"multiline": True, "default": "", "tooltip": "The video's caption; every tag "
                                   "must appear in it."}),
            "dataset": ("STRING", {"default": "my_dataset", "tooltip": "Dataset name: the folder "
                                   "output/alchemint/datasets/<name> (the Dataset Cache reads it by this name)."}),
            "sample": ("STRING", {"default": "sample_0001", "tooltip": "This sample's name in the dataset (a new "
                                  "one per video)."}),
            "tag_1": ("STRING", {"default": "", "tooltip": "Word tag of subject 1, e.g. 'red ring'."}),
            "mask_1": ("MASK", {"tooltip": "Mask track of subject 1: [frames, H, W], 1 where it is visible."}),
        }, "optional": {
            "timed_captions": ("STRING", {"multiline": True, "default": "", "tooltip": "Optional JSON list of "
                                          "{\"start\": s, \"end\": s, \"text\": ...} events in seconds."}),
            **more,
        }}

    def write(self, frames, fps, caption, dataset, sample, tag_1, mask_1, timed_captions="", **more):
        from alchemint_core.data.dataset import DatasetError, entity_interval, frames_to_seconds, mentions, write_sample
        from alchemint_core.media import strip_image
        folder = output_root() / "datasets" / check_name(dataset, "Dataset Writer: dataset") / \
            check_name(sample, "Dataset Writer: sample")
        video = (frames[..., :3].clamp(0, 1).cpu().numpy() * 255).round().astype(np.uint8)
        pairs = [(tag_1, mask_1)] + [(more.get(f"tag_{i}", ""), more.get(f"mask_{i}"))
                                     for i in range(2, MAX_WRITER_SUBJECTS + 1)]
        tracks = {}
        for i, (tag, mask) in enumerate(pairs, start=1):
            tag = " ".join(str(tag).split())
            if not tag and mask is None:
                continue
            if not tag or mask is None:
                raise ValueError(f"Dataset Writer: subject {i} needs both tag_{i} and mask_{i}; give both or neither")
            m = mask.cpu().numpy()
            m = m[None] if m.ndim == 2 else m
            if m.shape != video.shape[:3]:
                raise ValueError(f"Dataset Writer: mask_{i} ('{tag}') is {list(m.shape)} but the frames are "
                                 f"{list(video.shape[:3])}; give one mask per frame at the frames' size")
            if not mentions(caption, tag):
                raise ValueError(f"Dataset Writer: tag_{i} '{tag}' does not appear in the caption; write it into "
                                 "the caption (whole words)")
            if tag in tracks:
                raise ValueError(f"Dataset Writer: tag '{tag}' is given twice; give each subject once")
            tracks[tag] = m > 0.5
        if not tracks:
            raise ValueError("Dataset Writer: no subject; connect mask_1 and write tag_1")
        try:
            timed = json.loads(timed_captions) if timed_captions.strip() else []
        except json.JSONDecodeError as err:
            raise ValueError(f"Dataset Writer: timed_captions is not JSON ({err.msg}); write a list of "
                             "{\"start\": 0, \"end\": 1, \"text\": \"...\"} or leave it empty") from None
        try:
            write_sample(folder, video, float(fps), caption, tracks, timed)
        except (DatasetError, TypeError, KeyError) as err:
            raise ValueError(f"Dataset Writer: {err}") from None
        seconds = {tag: (frames_to_seconds(*iv, fps) if (iv := entity_interval(m)) else None)
                   for tag, m in tracks.items()}
        shown = {t: s for t, s in seconds.items() if s is not None}
        preview = strip_image(video, [], list(shown), list(shown.values()), float(fps), scale=1)
        return {"ui": {"text": [json.dumps(seconds)]},
                "result": (json.dumps(seconds), image_tensor(preview), dataset)}
