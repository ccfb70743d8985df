"""Build models from Wan 2.1 / 2.2 checkpoints and save/load AlcheMinT adapters (safetensors only)."""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Mapping

import torch

from ..files import SafetensorsFile, read_metadata_json, save_safetensors
from .config import AdapterConfig, CheckpointError, WanConfig, describe_base, infer_config, strip_prefix
from .transformer import AlcheMinTAdapter, WanModel

ADAPTER_FORMAT = "alchemint-adapter-v1"
LORA_PREFIX = "diffusion_model."
IGNORED_KEYS = {"scaled_fp8"}  # marker tensor of ComfyUI's scaled-fp8 files


class _Source:
    """Uniform view of a checkpoint: a file (memory-mapped) or an in-memory state dict."""

    def __init__(self, src):
        if isinstance(src, Mapping):
            self.name, self.metadata = "state dict", {}
            self._get, keys = src.__getitem__, list(src)
            self.shape = lambda k: list(src[k].shape)
        else:
            f = SafetensorsFile(src)
            self.name, self.metadata = str(src), f.metadata
            self._get, keys = f.tensor, f.keys()
            self.shape = f.shape
        self.prefix = strip_prefix(keys)
        self.keys = [k[len(self.prefix):] for k in keys if k.startswith(self.prefix)]

    def get(self, key: str) -> torch.Tensor:
        return self._get(self.prefix + key)


def storage_dtype(name: str, tensor: torch.Tensor, dtype: torch.dtype | None) -> torch.dtype:
    """fp8 is only for matrix weights; everything else (norms, biases, modulation) is kept in higher precision."""
    if dtype is None:
        return tensor.dtype
    if dtype.itemsize == 1 and not (name.endswith(".weight") and tensor.ndim == 2):
        return torch.bfloat16 if tensor.dtype.itemsize == 1 else tensor.dtype
    return dtype


def default_compute_dtype(model: WanModel, device: torch.device) -> torch.dtype:
    """fp32 on CPU; on GPU the weights' own 16-bit dtype, and bf16 for fp8 or fp32 weights."""
    if device.type == "cpu":
        return torch.float32
    w = model.blocks[0].self_attn.q.weight.dtype
    return w if w in (torch.float16, torch.bfloat16) else torch.bfloat16


def load_model(path_or_state_dict, adapter=None, dtype: torch.dtype | None = None, device=None,
               compute_dtype: torch.dtype | None = None, expert: str | None = None) -> WanModel:
    """A WanModel from a Wan 2.1 T2V or Wan 2.2 (A14B T2V expert, TI2V 5B) checkpoint (file path or state dict; bare
    keys or 'model.diffusion_model.' prefix; fp32/fp16/bf16/fp8-e4m3), its config read off the tensor shapes.

    adapter: None, an AdapterConfig (fresh adapter for training), or the path of an adapter file.
    dtype: storage dtype of the weights (None keeps the file's). Weights are assigned tensor by tensor from a
    memory map, so no second full copy is made.
    expert: "high" or "low" when the file is one expert of Wan 2.2 A14B (see experts.py): adapters record the
    expert they were trained on, and only load onto it."""
    if expert not in (None, "high", "low"):
        raise ValueError(f"expert {expert!r} must be 'high', 'low' or None")
    device = torch.device(device or "cpu")
    src = _Source(path_or_state_dict)
    shapes = {k: src.shape(src.prefix + k) for k in src.keys}
    cfg = infer_config(shapes, src.metadata)

    adapter_file = None
    if isinstance(adapter, (str, os.PathLike)):
        adapter_file = SafetensorsFile(adapter)
        adapter = adapter_config_of(adapter_file, cfg, expert)
    elif adapter is None and read_metadata_json(src.metadata, "alchemint_adapter") is not None:
        adapter = AdapterConfig.from_dict(read_metadata_json(src.metadata, "alchemint_adapter"))
    with torch.device("meta"):
        model = WanModel(cfg)  # base only: nothing is allocated until the checkpoint's tensors are assigned
    model.expert = expert
    base = {k: v for k, v in model.state_dict(keep_vars=True).items()}
    present = set(src.keys) - IGNORED_KEYS
    scale_keys = {k for k in present if k.endswith(".scale_weight") or k.endswith(".scale_input")}
    extra_keys = {k for k in present if k.startswith("alchemint.") or ".lora_" in k}  # our own full checkpoints
    missing = sorted(set(base) - present)
    unexpected = sorted(present - set(base) - scale_keys - extra_keys)
    if missing:
        raise CheckpointError(f"{src.name}: not a complete Wan 2.1 T2V checkpoint, missing {len(missing)} tensors "
                              f"such as {missing[:3]}")
    if unexpected:
        raise CheckpointError(f"{src.name}: has tensors a Wan 2.1 T2V model does not have, such as {unexpected[:3]} "
                              f"(a VACE, I2V or other variant?). Use a plain Wan 2.1 T2V checkpoint")
    loaded = {}
    for name, param in base.items():
        t = src.get(name)
        if list(t.shape) != list(param.shape):
            raise CheckpointError(f"{src.name}: {name} has shape {list(t.shape)}, expected {list(param.shape)} "
                                  f"for the inferred config")
        loaded[name] = t.to(device=device, dtype=storage_dtype(name, t, dtype))
    model.load_state_dict(loaded, strict=True, assign=True)
    del loaded
    for key in scale_keys:
        if key.endswith(".scale_weight"):
            model.get_submodule(key[:-len(".scale_weight")]).weight_scale = src.get(key).float().to(device)

    if adapter is not None:  # new parameters: freshly initialised, then overwritten by what the file carries
        model.alchemint = AlcheMinTAdapter(cfg, adapter).to(device)
        init_tag_mlp_from_text_embedding(model)
        if adapter.lora_rank:
            model.add_lora(adapter.lora_rank, adapter.lora_alpha, adapter.lora_targets)
        if extra_keys:  # our own full checkpoint: continue from the adapter weights it carries
            own = {k: v for k, v in model.state_dict().items() if k.startswith("alchemint.") or ".lora_" in k}
            stray = sorted(extra_keys - set(own))
            if stray:
                raise CheckpointError(f"{src.name}: carries adapter tensors the requested adapter does not have, "
                                      f"such as {stray[:3]}; load it with its own adapter settings")
            with torch.no_grad():
                for k in extra_keys:
                    if list(src.shape(src.prefix + k)) != list(own[k].shape):
                        raise CheckpointError(f"{src.name}: {k} has shape {src.shape(src.prefix + k)}, the requested "
                                              f"adapter needs {list(own[k].shape)}; use the adapter settings it was "
                                              f"saved with")
                    own[k].copy_(src.get(k))
    model.compute_dtype = compute_dtype or default_compute_dtype(model, device)
    if adapter_file is not None:
        load_adapter_weights(model, adapter_file)
    return model.requires_grad_(False).eval()


def init_tag_mlp_from_text_embedding(model: WanModel) -> None:
    """Start the tag MLP as a copy of the base text embedding (same in/out sizes): tags then enter the sequence
    as the model already reads text, which trains faster than a random projection."""
    with torch.no_grad():
        for i in (0, 2):
            dst, src = model.alchemint.tag_mlp[i], model.text_embedding[i]
            dst.weight.copy_(src.weight.float())
            dst.bias.copy_(src.bias.float())


def base_fingerprint(cfg: WanConfig, expert: str | None = None) -> dict:
    """What an adapter must match in its base. A Wan 2.2 A14B expert has Wan 2.1 14B's shapes, so the expert it was
    trained on is recorded too (absent for single models, as in files written before Wan 2.2)."""
    d = {"dim": cfg.dim, "num_layers": cfg.num_layers, "num_heads": cfg.num_heads, "text_dim": cfg.text_dim,
         "in_dim": cfg.in_dim, "patch_size": list(cfg.patch_size)}
    return {**d, "expert": expert} if expert is not None else d


def adapter_config_of(f: SafetensorsFile, base: WanConfig, expert: str | None = None) -> AdapterConfig:
    if f.metadata.get("format") != ADAPTER_FORMAT:
        raise CheckpointError(f"{f.path}: not an AlcheMinT adapter file (no '{ADAPTER_FORMAT}' header). Give a file "
                              f"saved by the AlcheMinT trainer")
    made_for, loaded = read_metadata_json(f.metadata, "alchemint_base") or {}, base_fingerprint(base, expert)
    if made_for != loaded:
        differ = ", ".join(f"{k} {made_for.get(k)} (loaded base: {loaded.get(k)})"
                           for k in dict.fromkeys([*loaded, *made_for]) if made_for.get(k) != loaded.get(k))
        try:
            shape = {k: v for k, v in made_for.items() if k not in ("expert", "patch_size")}
            trained_on = describe_base(WanConfig(**shape), made_for.get("expert"))
        except (TypeError, ValueError):
            trained_on = "another base"
        fix = "Load the base it was trained on, or train an adapter for this one"
        if made_for.get("expert") != expert and {k: v for k, v in made_for.items() if k != "expert"} == \
                base_fingerprint(base):  # same shapes, other role: 2.1 14B vs a 2.2 A14B expert, or high vs low
            fix = (f"Load the base it was trained on: give it as the {made_for['expert']}-noise expert's adapter"
                   if made_for.get("expert") else "Load the base it was trained on: a Wan 2.2 expert needs an "
                   f"adapter trained on that expert (training option expert = '{expert}')")
        raise CheckpointError(f"{Path(f.path).name}: this adapter was trained for a base model with {differ}: "
                              f"{trained_on}, not {describe_base(base, expert)}. {fix}")
    return AdapterConfig.from_dict(read_metadata_json(f.metadata, "alchemint_adapter"))


def adapter_state(model: WanModel, state: Mapping[str, torch.Tensor] | None = None) -> dict[str, torch.Tensor]:
    """The adapter's tensors: new parameters under 'alchemint.', LoRA deltas under ComfyUI's LoRA key names.
    `state` (a full state dict, e.g. gathered from FSDP shards or holding EMA weights) overrides the module's."""
    state = state if state is not None else model.state_dict()
    out = {k: state[k] for k in state if k.startswith("alchemint.")}
    for name, module in model.named_modules():
        if getattr(module, "lora_A", None) is not None:
            out[f"{LORA_PREFIX}{name}.lora_A.weight"] = state[f"{name}.lora_A"]
            out[f"{LORA_PREFIX}{name}.lora_B.weight"] = state[f"{name}.lora_B"]
            out[f"{LORA_PREFIX}{name}.alpha"] = torch.tensor(module.lora_scale * module.lora_A.shape[0])
    return out


def save_adapter(model: WanModel, path, extra_metadata: Mapping[str, str] | None = None,
                 state: Mapping[str, torch.Tensor] | None = None) -> Path:
    if model.alchemint is None:
        raise ValueError("this model has no AlcheMinT adapter to save")
    meta = {"format": ADAPTER_FORMAT, "alchemint_adapter": json.dumps(model.alchemint.cfg.to_dict()),
            "alchemint_base": json.dumps(base_fingerprint(model.cfg, model.expert)), **(extra_metadata or {})}
    return save_safetensors(adapter_state(model, state), path, meta)


def load_adapter_weights(model: WanModel, f: SafetensorsFile) -> None:
    expected = adapter_state(model)
    keys = set(f.keys())
    missing, unexpected = sorted(set(expected) - keys), sorted(keys - set(expected))
    if missing or unexpected:
        raise CheckpointError(f"{f.path}: adapter tensors do not match its own config (missing {missing[:3]}, "
                              f"unexpected {unexpected[:3]}); the file is damaged: save it again")
    with torch.no_grad():
        for k, target in expected.items():
            t = f.tensor(k)
            if k.endswith(".alpha"):
                continue
            if list(t.shape) != list(target.shape):
                raise CheckpointError(f"{f.path}: {k} has shape {list(t.shape)}, expected {list(target.shape)}")
            target.copy_(t)


def save_model(model: WanModel, path, with_adapter: bool = True,
               state: Mapping[str, torch.Tensor] | None = None) -> Path:
    """A full checkpoint with Wan's key names and the config in its header (for tiny or fine-tuned models)."""
    state = state if state is not None else model.state_dict()
    sd = {k: v for k, v in state.items() if with_adapter or not k.startswith("alchemint.")}
    sd = {k: v for k, v in sd.items() if v is not None}
    meta = {"alchemint_model": json.dumps(model.cfg.to_dict())}
    if with_adapter and model.alchemint is not None:
        meta["alchemint_adapter"] = json.dumps(model.alchemint.cfg.to_dict())
    return save_safetensors(sd, path, meta)
