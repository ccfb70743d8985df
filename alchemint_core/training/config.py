"""Training configuration: one dataclass, read from TOML or YAML, every option documented for --help."""
from __future__ import annotations

import dataclasses
import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import tomllib

from ..files import read_small_text

MODES = ("lora", "full", "adapter-only")
PRECISIONS = ("auto", "bf16", "fp32")
LR_SCHEDULES = ("constant", "cosine")
TIMESTEP_SAMPLING = ("logit-normal", "shifted-uniform")
LOSS_SPACES = ("velocity", "x0")


def opt(default, help: str, **kw):
    if isinstance(default, (dict, list)):
        return field(default_factory=lambda: json.loads(json.dumps(default)), metadata={"help": help}, **kw)
    return field(default=default, metadata={"help": help}, **kw)


@dataclass
class TrainConfig:
    cache: str = opt("", "folder made by `python -m alchemint_core cache` (training reads only this)")
    out: str = opt("", "output folder: checkpoints, metrics.csv, loss.png, the trained adapter or model")
    base: str = opt("", "Wan 2.1 T2V or Wan 2.2 (TI2V 5B, or one A14B expert with `expert`) checkpoint to "
                        "fine-tune (.safetensors); empty: build a new model from `model`")
    expert: str = opt("", "'high' or 'low' when base is one expert of Wan 2.2 A14B: noise levels are drawn only from "
                          "the range that expert sees in sampling (high: sigma >= expert_boundary, low: below) and the "
                          "adapter is marked for that expert; train one adapter per expert; '' = a single model")
    expert_boundary: float = opt(0.875, "noise level where sampling hands over from the high- to the low-noise expert "
                                        "(Wan 2.2 A14B T2V: 0.875)")
    model: dict = opt({}, "config of a new model trained from scratch (WanConfig fields), used when base is empty")
    adapter: dict = opt({}, "AlcheMinT adapter settings (AdapterConfig fields: rope_mode, w_mid, w_edge, "
                            "edge_offset, max_refs, ref_timestep, dense_captions, lora_rank, lora_alpha, ...)")
    deepen_to: int = opt(0, "grow the base model to this many transformer blocks before training (mode 'full'): "
                            "its blocks spread evenly, new ones in between start as the identity; 0 = keep its depth")
    patch_to: list = opt([], "re-patchify the base model to this finer patch size before training (mode 'full'), "
                         "e.g. [1, 1, 1] from [1, 2, 2]: 4x the tokens, started from the trained embedding and "
                         "head; empty = keep the base model's patch size")
    latent_to: dict = opt({}, "move the base model onto another VAE's latents before training (mode 'full'): "
                              "{in_dim = C, patch_size = [pt, ph, pw], prediction = 'velocity' or 'x'}; a new patch "
                              "embedding and a zero head, every other weight kept; empty = keep its latent space")
    mode: str = opt("lora", "what trains: 'lora' (adapter + LoRA deltas), 'full' (every weight) or "
                            "'adapter-only' (only the new AlcheMinT parameters)")
    steps: int = opt(1000, "optimizer steps to train")
    batch_size: int = opt(1, "clips per optimizer micro-step over all processes (divisible by the process count)")
    grad_accum: int = opt(1, "micro-steps accumulated per optimizer step (effective batch = batch_size * grad_accum)")
    lr_new: float = opt(1e-4, "learning rate of new parameters (adapter, LoRA)")
    lr_base: float = opt(1e-5, "learning rate of base weights (mode 'full')")
    weight_decay: float = opt(0.01, "AdamW weight decay")
    betas: list = opt([0.9, 0.999], "AdamW betas")
    warmup_steps: int = opt(100, "linear learning-rate warm-up from 0 over this many steps")
    lr_schedule: str = opt("constant", "after warm-up: 'constant' or 'cosine' (decays to min_lr_ratio x the rate at "
                                       "`steps`; resuming with more steps stretches the rest of the curve)")
    min_lr_ratio: float = opt(0.1, "the cosine schedule's final learning rate as a fraction of lr_new/lr_base")
    max_grad_norm: float = opt(1.0, "gradient clipping norm (0 = off)")
    timestep_sampling: str = opt("logit-normal", "how noise levels are drawn: 'logit-normal' or 'shifted-uniform'")
    logit_mean: float = opt(0.0, "mean of the logit-normal noise-level distribution")
    logit_std: float = opt(1.0, "std of the logit-normal noise-level distribution")
    timestep_shift: float = opt(3.0, "shift s of 'shifted-uniform': sigma = s*u / (1 + (s-1)*u)")
    p_drop_refs: float = opt(0.1, "probability of dropping each reference (image and tag together) for guidance")
    p_drop_caption: float = opt(0.1, "probability of dropping the caption (and timed captions) for guidance")
    p_drop_words: float = opt(0.0, "probability of dropping a sample's words (caption and every tag) while keeping "
                                   "its reference images, so identity must come from the images")
    p_soft_subjects: float = opt(0.0, "probability that a sample drawn at a noise level >= soft_min_sigma is noised "
                                      "from its clip with the subjects blurred (a cache made with --soft-subjects) "
                                      "while the target stays sharp, so outlines must come from the conditioning")
    soft_min_sigma: float = opt(0.7, "the lowest noise level at which p_soft_subjects applies")
    loss_space: str = opt("velocity", "where the MSE is taken: 'velocity' (noise - x0: an error in the clean "
                          "estimate weighs 1/sigma^2, so low noise levels dominate) or 'x0' (the clean estimate "
                          "x_t - sigma*v: every noise level alike)")
    subject_loss_weight: float = opt(0.0, "extra loss weight on latent cells covered by a subject's mask")
    gradient_checkpointing: bool = opt(False, "recompute block activations in the backward pass to save memory")
    ema_decay: float = opt(0.0, "EMA of trained weights (e.g. 0.999); 0 = off. The saved result uses the EMA")
    checkpoint_every: int = opt(100, "write a resumable checkpoint every this many steps")
    keep_checkpoints: int = opt(2, "how many recent checkpoints to keep")
    log_every: int = opt(10, "append to metrics.csv every this many steps")
    preview_every: int = opt(0, "every this many steps, sample the first cached clip and save a strip image in "
                                "previews/ (needs a cache made with the demo encoders; 0 = off)")
    seed: int = opt(0, "seed of data order, noise, dropout and initialisation")
    device: str = opt("auto", "'auto' (CUDA when available), 'cpu' or 'cuda[:N]'")
    fsdp: bool = opt(False, "shard the model over processes with FSDP (for models that do not fit one GPU)")
    threads: int = opt(0, "CPU threads per process (0 = PyTorch's default)")
    precision: str = opt("auto", "compute precision: 'auto' (bf16 autocast on CUDA, fp32 on the CPU), 'bf16' "
                                 "(autocast on any device; ~2x faster on CPUs with AVX-512 BF16) or 'fp32'. "
                                 "Weights and optimizer state stay fp32")
    compile: str = opt("", "torch.compile every transformer block with this backend: '' (off) or 'inductor' "
                           "(fused kernels; the tiny demo model trains ~1.5x faster on a CPU after a one-off "
                           "compile of a minute or two)")

    def validate(self) -> "TrainConfig":
        errors = []
        if not self.cache:
            errors.append("cache is required (a folder made by the cache command)")
        if not self.out:
            errors.append("out is required (an output folder)")
        if self.mode not in MODES:
            errors.append(f"mode {self.mode!r} must be one of {MODES}")
        if self.precision not in PRECISIONS:
            errors.append(f"precision {self.precision!r} must be one of {PRECISIONS}")
        if self.compile != "" and self.compile not in compile_backends():
            errors.append(f"compile {self.compile!r} is not a torch.compile backend; use 'inductor' or '' (off)")
        if self.lr_schedule not in LR_SCHEDULES:
            errors.append(f"lr_schedule {self.lr_schedule!r} must be one of {LR_SCHEDULES}")
        if not (isinstance(self.min_lr_ratio, (int, float)) and 0 <= self.min_lr_ratio <= 1):
            errors.append("min_lr_ratio must be a fraction in [0, 1]")
        if self.loss_space not in LOSS_SPACES:
            errors.append(f"loss_space {self.loss_space!r} must be one of {LOSS_SPACES}")
        if self.timestep_sampling not in TIMESTEP_SAMPLING:
            errors.append(f"timestep_sampling {self.timestep_sampling!r} must be one of {TIMESTEP_SAMPLING}")
        for name in ("steps", "batch_size", "grad_accum", "checkpoint_every", "keep_checkpoints", "log_every"):
            if not isinstance(getattr(self, name), int) or getattr(self, name) < 1:
                errors.append(f"{name} must be an integer >= 1")
        if not (isinstance(self.soft_min_sigma, (int, float)) and 0 < self.soft_min_sigma <= 1):
            errors.append("soft_min_sigma must be a noise level in (0, 1]")
        for name in ("p_drop_refs", "p_drop_caption", "p_drop_words", "p_soft_subjects"):
            if not 0 <= getattr(self, name) <= 1:
                errors.append(f"{name} must be a probability in [0, 1]")
        for name in ("lr_new", "lr_base", "weight_decay", "max_grad_norm", "subject_loss_weight", "logit_std"):
            v = getattr(self, name)
            if not (isinstance(v, (int, float)) and math.isfinite(v) and v >= 0):
                errors.append(f"{name} must be a finite number >= 0")
        if not 0 <= self.ema_decay < 1:
            errors.append("ema_decay must be in [0, 1)")
        if self.mode == "lora" and not self.adapter.get("lora_rank"):
            errors.append("mode 'lora' needs adapter.lora_rank > 0")
        if not self.base and not self.model:
            errors.append("give either base (a Wan checkpoint) or model (a config to train from scratch)")
        if not self.base and self.mode != "full":
            errors.append("a model trained from scratch needs mode 'full'")
        if self.expert not in ("", "high", "low"):
            errors.append(f"expert {self.expert!r} must be 'high', 'low' or '' (a single model)")
        elif self.expert and not self.base:
            errors.append("expert needs base: the Wan 2.2 A14B expert file to adapt")
        if not (isinstance(self.expert_boundary, (int, float)) and 0 < self.expert_boundary < 1):
            errors.append("expert_boundary must be a noise level in (0, 1) (Wan 2.2 A14B: 0.875)")
        if not isinstance(self.deepen_to, int) or isinstance(self.deepen_to, bool) or self.deepen_to < 0:
            errors.append("deepen_to must be an integer >= 0 (0 = keep the base model's depth)")
        elif self.deepen_to and (not self.base or self.mode != "full"):
            errors.append("deepen_to needs a base model and mode 'full' (new blocks must train)")
        if not isinstance(self.patch_to, (list, tuple)):
            errors.append("patch_to must be a list of three integers, e.g. [1, 1, 1] (empty = keep the patch size)")
        elif self.patch_to and (not self.base or self.mode != "full"):
            errors.append("patch_to needs a base model and mode 'full' (every weight must adapt to the new tokens)")
        if not isinstance(self.latent_to, dict) or set(self.latent_to) - {"in_dim", "patch_size", "prediction"}:
            errors.append("latent_to must be a table of in_dim, patch_size and prediction, e.g. {in_dim = 768, "
                          "patch_size = [1, 1, 1], prediction = 'x'} (empty = keep the latent space)")
        elif self.latent_to and (not self.base or self.mode != "full"):
            errors.append("latent_to needs a base model and mode 'full' (the new embedding and head must train)")
        if errors:
            raise ValueError("training config: " + "; ".join(errors))
        return self

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "TrainConfig":
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(d) - names)
        if unknown:
            raise ValueError(f"training config: unknown options {unknown}; check the spelling (train --help lists every option)")
        return cls(**d)


def compile_backends() -> list[str]:
    import torch._dynamo
    return torch._dynamo.list_backends(exclude_tags=())  # 'eager' too: it checks graph capture without codegen


def read_config_file(path: str | Path) -> dict:
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"config file {path} does not exist; check the path given to --config")
    text = read_small_text(path, "config file")
    try:
        if path.suffix == ".toml":
            return tomllib.loads(text)
        if path.suffix in (".yaml", ".yml"):
            import yaml
            data = yaml.safe_load(text)
            if not isinstance(data, dict):
                raise ValueError("top level is not a mapping")
            return data
        if path.suffix == ".json":
            return json.loads(text)
    except Exception as err:  # parse errors of any of the three formats
        raise ValueError(f"config file {path} could not be parsed: {err}") from None
    raise ValueError(f"config file {path}: use a .toml, .yaml or .json file")


def options_help() -> str:
    lines = []
    for f in dataclasses.fields(TrainConfig):
        default = f.default if f.default is not dataclasses.MISSING else f.default_factory()
        lines.append(f"  {f.name:<24} {f.metadata['help']} (default: {json.dumps(default)})")
    return "\n".join(lines)
