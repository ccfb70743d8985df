"""The training loop: flow matching on video tokens, one entry point for a single process and for torchrun
(DDP, or FSDP for models that do not fit one device). Checkpoints are atomic and resume exactly."""
from __future__ import annotations

import csv
import json
import math
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import torch
import torch.distributed as dist
from torch.distributed.checkpoint.state_dict import StateDictOptions, get_state_dict, set_state_dict

from ..files import SafetensorsFile, atomic_write, remove_temporaries, save_safetensors
from ..model.config import AdapterConfig, CheckpointError, WanConfig
from ..model.initialisation import deepen, init_from_scratch, move_to_latents, refine_patches
from ..model.latents import LatentFormat, read_latent_format
from ..model.loading import load_model, save_adapter, save_model
from ..model.memory import TRAINING_OPTIONS, explain_out_of_memory
from ..model.transformer import WanModel
from ..sampling.plotting import line_plot
from .batches import Batch, CachedClips, make_batch
from .config import TrainConfig

CKPT_DIR = "checkpoints"


@dataclass
class TrainResult:
    output: Path  # adapter.safetensors or model.safetensors
    steps: int
    last_loss: float
    interrupted: bool


class Dist:
    """Process-group facts from torchrun's environment (a single process when absent)."""

    def __init__(self, device: torch.device):
        self.world = int(os.environ.get("WORLD_SIZE", "1"))
        self.rank = int(os.environ.get("RANK", "0"))
        self.local_rank = int(os.environ.get("LOCAL_RANK", "0"))
        if self.world > 1 and not dist.is_initialized():
            dist.init_process_group("nccl" if device.type == "cuda" else "gloo")

    @property
    def main(self) -> bool:
        return self.rank == 0

    def barrier(self):
        if self.world > 1:
            dist.barrier()


def resolve_device(name: str, local_rank: int) -> torch.device:
    if name == "auto":
        return torch.device(f"cuda:{local_rank}") if torch.cuda.is_available() else torch.device("cpu")
    dev = torch.device(name)
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device {name!r} asked for but CUDA is not available; use device = 'cpu'")
    return dev


def build_model(cfg: TrainConfig, device: torch.device) -> WanModel:
    adapter = AdapterConfig.from_dict(cfg.adapter)
    torch.manual_seed(cfg.seed)
    if cfg.base:
        model = load_model(cfg.base, adapter=adapter, device=device, compute_dtype=torch.float32,
                           expert=cfg.expert or None)
    else:
        model = WanModel(WanConfig.from_dict(cfg.model), adapter)
        if adapter.lora_rank:
            model.add_lora(adapter.lora_rank, adapter.lora_alpha, adapter.lora_targets)
        init_from_scratch(model)
        model = model.to(device)
    if cfg.deepen_to:
        deepen(model, cfg.deepen_to)
    if cfg.patch_to:
        refine_patches(model, cfg.patch_to)
    if cfg.latent_to:
        move_to_latents(model, cfg.latent_to.get("in_dim", model.cfg.in_dim),
                        cfg.latent_to.get("patch_size", list(model.cfg.patch_size)),
                        cfg.latent_to.get("prediction", model.cfg.prediction))
    for name, p in model.named_parameters():
        if cfg.mode == "full":
            trains = True
        elif cfg.mode == "lora":
            trains = name.startswith("alchemint.") or ".lora_" in name
        else:  # adapter-only
            trains = name.startswith("alchemint.")
        p.requires_grad_(trains)
        if trains and p.dtype != torch.float32:  # an fp16/bf16 base: AdamW on half-precision weights turns to NaN
            p.data = p.data.float()
    model.gradient_checkpointing = cfg.gradient_checkpointing
    if cfg.compile:
        model.compile_blocks(backend=cfg.compile)  # in place: parameter names and checkpoints stay the same
    return model.train()


def param_groups(model: torch.nn.Module, cfg: TrainConfig) -> list[dict]:
    new, base = [], []
    for name, p in model.named_parameters():
        if p.requires_grad:
            (new if "alchemint." in name or ".lora_" in name else base).append(p)
    groups = [{"params": new, "lr": cfg.lr_new, "name": "new"}]
    if base:
        groups.append({"params": base, "lr": cfg.lr_base, "name": "base"})
    return [g for g in groups if g["params"]]


def full_tensor(t: torch.Tensor) -> torch.Tensor:
    """A CPU copy of a tensor, gathered from its shards if FSDP sharded it (collective then)."""
    return (t.full_tensor() if hasattr(t, "full_tensor") else t).detach().float().cpu()


def like(value: torch.Tensor, param: torch.Tensor) -> torch.Tensor:
    """A full tensor laid out as `param` is: sharded the same way under FSDP, on its device otherwise."""
    if hasattr(param, "device_mesh"):
        from torch.distributed.tensor import distribute_tensor
        return distribute_tensor(value.to(param.device), param.device_mesh, param.placements)
    return value.to(param.device)


def lr_factor(step: int, cfg: TrainConfig) -> float:
    """Linear warm-up from 0, then constant or a cosine decay to min_lr_ratio at the last step."""
    if step < cfg.warmup_steps:
        return (step + 1) / cfg.warmup_steps
    if cfg.lr_schedule == "constant":
        return 1.0
    span = max(cfg.steps - 1 - cfg.warmup_steps, 1)  # the last step runs at the floor
    done = min((step - cfg.warmup_steps) / span, 1.0)
    return cfg.min_lr_ratio + (1 - cfg.min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * done))


def flow_matching_loss(model, batch: Batch, space: str = "velocity") -> torch.Tensor:
    """MSE on video latents only, per-cell weighted: between predicted and true velocity (noise - x0), or with
    space 'x0' between the clean estimate x_t - sigma*v and x0 (the same error times sigma^2)."""
    sigma = batch.sigma.view(-1, 1, 1, 1, 1)
    signal = batch.x0 if batch.signal is None else batch.signal
    x_t = (1 - sigma) * signal + sigma * batch.noise
    pred = model(x_t, batch.sigma * 1000, batch.context, refs=batch.refs, context_mask=batch.context_mask,
                 dense=batch.dense)
    target = batch.noise - batch.x0  # the velocity (x_t - x0) / sigma that reaches x0 from x_t
    if batch.signal is not None:  # noised from another signal: only at sigma >= soft_min_sigma > 0
        target = target + (1 - sigma) / sigma.clamp_min(1e-3) * (batch.signal - batch.x0)
    err = pred.float() - target
    if space == "x0":
        err = err * sigma  # (x_t - sigma*pred) - x0 = -sigma*(pred - v)
    return (err.pow(2) * batch.loss_weight).mean(dim=(1, 2, 3, 4)).mean()


class Trainer:
    def __init__(self, cfg: TrainConfig, latent_format: LatentFormat | None = None, resume: bool = False,
                 progress: Callable[[int, int, float], None] | None = None,
                 should_stop: Callable[[], bool] | None = None, show_bar: bool = True, decoder=None):
        self.cfg = cfg.validate()
        if cfg.threads:
            torch.set_num_threads(cfg.threads)
        self.out = Path(cfg.out)
        self.device = resolve_device(cfg.device, int(os.environ.get("LOCAL_RANK", "0")))
        self.dist = Dist(self.device)
        if cfg.batch_size % self.dist.world:
            raise ValueError(f"batch_size {cfg.batch_size} is not divisible by the {self.dist.world} processes")
        self.clips = CachedClips(cfg.cache)
        if cfg.p_soft_subjects and not self.clips.manifest.get("config", {}).get("soft_subjects"):
            raise ValueError(f"p_soft_subjects {cfg.p_soft_subjects} needs a cache with softened clips, and "
                             f"{cfg.cache} has none: build one with `python -m alchemint_core cache ... "
                             f"--soft-subjects 3` (the blur in pixels), or set p_soft_subjects = 0")
        self.latent_format = latent_format or read_latent_format(Path(cfg.cache))
        self.model = build_model(cfg, self.device)
        self.adapter_cfg = self.model.alchemint.cfg
        self.net = self.wrap(self.model)
        self.optimizer = torch.optim.AdamW(param_groups(self.net, cfg), betas=tuple(cfg.betas),
                                           weight_decay=cfg.weight_decay)
        self.ema = {n: p.detach().clone().float() for n, p in self.model.named_parameters()
                    if p.requires_grad} if cfg.ema_decay else None
        self.step = 0
        self.progress, self.should_stop, self.show_bar = progress, should_stop, show_bar
        self.decoder = decoder  # a video encoder whose decode() turns sampled latents into frames, for previews
        bf16 = cfg.precision == "bf16" or (cfg.precision == "auto" and self.device.type == "cuda")
        self.autocast = torch.autocast(self.device.type, dtype=torch.bfloat16) if bf16 else None
        if resume:
            self.resume()

    # -- setup -----------------------------------------------------------------------------------------------
    def wrap(self, model: WanModel) -> torch.nn.Module:
        if self.dist.world == 1:
            return model
        if self.cfg.fsdp:
            from torch.distributed.fsdp import fully_shard
            for block in model.blocks:
                fully_shard(block)
            return fully_shard(model)
        ids = [self.device.index] if self.device.type == "cuda" else None
        return torch.nn.parallel.DistributedDataParallel(model, device_ids=ids, find_unused_parameters=True)

    # -- checkpoints -----------------------------------------------------------------------------------------
    def checkpoint_paths(self) -> list[Path]:
        return sorted((self.out / CKPT_DIR).glob("ckpt-*.safetensors"))

    def identity(self) -> dict:
        """What must match for a checkpoint to be resumed: everything that changes the trajectory but steps."""
        d = self.cfg.to_dict()
        for k in ("steps", "checkpoint_every", "keep_checkpoints", "log_every", "out", "threads", "device", "compile"):
            d.pop(k)
        if not d["expert"]:  # single-model runs: identities as before the Wan 2.2 options, so older runs resume
            d.pop("expert")
            d.pop("expert_boundary")
        return d

    def save_checkpoint(self) -> Path | None:
        opts = StateDictOptions(full_state_dict=True, cpu_offload=True)
        model_sd, optim_sd = get_state_dict(self.net, self.optimizer, options=opts)
        ema = {k: full_tensor(v) for k, v in (self.ema or {}).items()}  # collective under FSDP
        if not self.dist.main:
            self.dist.barrier()
            return None
        trainable = {n for n, p in self.model.named_parameters() if p.requires_grad}
        tensors = {f"model/{k}": v for k, v in model_sd.items() if k in trainable}
        for fqn, state in optim_sd["state"].items():
            for key, value in state.items():
                tensors[f"optim/{fqn}/{key}"] = torch.as_tensor(value)
        tensors.update({f"ema/{k}": v for k, v in ema.items()})
        meta = {"step": str(self.step), "identity": json.dumps(self.identity(), sort_keys=True),
                "param_groups": json.dumps(optim_sd["param_groups"])}
        path = save_safetensors(tensors, self.out / CKPT_DIR / f"ckpt-{self.step:07d}.safetensors", meta)
        for old in self.checkpoint_paths()[: -self.cfg.keep_checkpoints]:
            old.unlink(missing_ok=True)
        self.dist.barrier()
        return path

    def resume(self) -> None:
        if self.dist.main:  # writes a kill cut short; only the main process writes here
            for folder in (self.out, self.out / CKPT_DIR):
                remove_temporaries(folder)
        f = readable_checkpoint(self.out)
        if f is None:
            return
        if json.loads(f.metadata["identity"]) != json.loads(json.dumps(self.identity(), sort_keys=True)):
            raise CheckpointError(f"{f.path} was written by a run with other settings; resume with the same "
                                  f"config (only steps and logging may change) or use a new output folder")
        model_sd = {k[len("model/"):]: f.tensor(k) for k in f.keys() if k.startswith("model/")}
        state: dict = {}
        for k in f.keys():
            if k.startswith("optim/"):
                fqn, key = k[len("optim/"):].rsplit("/", 1)
                state.setdefault(fqn, {})[key] = f.tensor(k).clone()
        optim_sd = {"state": state, "param_groups": json.loads(f.metadata["param_groups"])}
        set_state_dict(self.net, self.optimizer, model_state_dict=model_sd, optim_state_dict=optim_sd,
                       options=StateDictOptions(full_state_dict=True, strict=False))
        if self.ema is not None:
            params = dict(self.model.named_parameters())
            self.ema = {k[len("ema/"):]: like(f.tensor(k).clone(), params[k[len("ema/"):]])
                        for k in f.keys() if k.startswith("ema/")}
        self.step = int(f.metadata["step"])

    # -- loop ------------------------------------------------------------------------------------------------
    def batch_for(self, micro: int) -> Batch:
        cfg, w = self.cfg, self.dist
        per_rank = cfg.batch_size // w.world
        first = (self.step * cfg.grad_accum + micro) * cfg.batch_size + w.rank * per_rank
        return make_batch(self.clips, list(range(first, first + per_rank)), cfg, self.latent_format,
                          self.adapter_cfg.min_half_length, self.adapter_cfg.dense_captions).to(self.device)

    def train_step(self) -> float:
        cfg = self.cfg
        for group in self.optimizer.param_groups:
            group["lr"] = (cfg.lr_new if group.get("name") == "new" else cfg.lr_base) * lr_factor(self.step, cfg)
        self.optimizer.zero_grad(set_to_none=True)
        total = 0.0
        for micro in range(cfg.grad_accum):
            batch = self.batch_for(micro)
            if self.autocast is not None:
                with self.autocast:
                    loss = flow_matching_loss(self.net, batch, cfg.loss_space)
            else:
                loss = flow_matching_loss(self.net, batch, cfg.loss_space)
            (loss / cfg.grad_accum).backward()
            total += float(loss.detach()) / cfg.grad_accum
        if cfg.max_grad_norm:
            torch.nn.utils.clip_grad_norm_([p for g in self.optimizer.param_groups for p in g["params"]],
                                           cfg.max_grad_norm)
        self.optimizer.step()
        if self.ema is not None:
            with torch.no_grad():
                for n, p in self.model.named_parameters():
                    if n in self.ema:
                        self.ema[n].lerp_(p.detach().float(), 1 - cfg.ema_decay)
        if self.dist.world > 1:  # the logged loss is the global batch's
            t = torch.tensor([total], device=self.device)
            dist.all_reduce(t)
            total = float(t) / self.dist.world
        self.step += 1
        return total

    def run(self) -> TrainResult:
        cfg = self.cfg
        if self.dist.main:
            self.out.mkdir(parents=True, exist_ok=True)
            atomic_write(self.out / "train_config.json",
                         lambda tmp: Path(tmp).write_text(json.dumps(cfg.to_dict(), indent=1)))
        log = MetricsLog(self.out / "metrics.csv", self.step) if self.dist.main else None
        bar = None
        if self.dist.main and self.show_bar:
            from tqdm import tqdm
            bar = tqdm(total=cfg.steps, initial=self.step, desc="train", unit="step", dynamic_ncols=True)
        loss, interrupted, t0 = math.nan, False, time.perf_counter()
        while self.step < cfg.steps:
            with explain_out_of_memory(f"training step {self.step + 1}", TRAINING_OPTIONS):
                loss = self.train_step()
            if not math.isfinite(loss):
                raise FloatingPointError(f"loss became {loss} at step {self.step}; lower lr_new/lr_base or enable "
                                         f"max_grad_norm, then resume from the last checkpoint")
            samples_per_s = cfg.batch_size * cfg.grad_accum / max(time.perf_counter() - t0, 1e-9)
            t0 = time.perf_counter()
            if log is not None and (self.step % cfg.log_every == 0 or self.step == cfg.steps):
                log.add(self.step, loss, self.optimizer.param_groups, samples_per_s)
            if bar is not None:
                bar.update(1)
                bar.set_postfix(loss=f"{loss:.4f}")
            if self.progress:
                self.progress(self.step, cfg.steps, loss)
            if cfg.preview_every and self.step % cfg.preview_every == 0:
                self.preview()
            stop = bool(self.should_stop and self.should_stop())
            if self.step % cfg.checkpoint_every == 0 or self.step == cfg.steps or stop:
                self.save_checkpoint()
            if stop:
                interrupted = True
                break
        if bar is not None:
            bar.close()
        output = self.export() or self.out
        if log is not None:
            log.plot(self.out / "loss.png")
            atomic_write(self.out / "summary.json", lambda tmp: Path(tmp).write_text(json.dumps(
                {"steps": self.step, "last_loss": loss, "interrupted": interrupted, "output": str(output)}, indent=1)))
        self.dist.barrier()
        return TrainResult(output, self.step, loss, interrupted)

    def full_state(self) -> dict[str, torch.Tensor]:
        """The whole model's weights on the CPU, gathered from FSDP shards if sharded, EMA weights swapped in.
        Collective: every process calls it."""
        state = get_state_dict(self.net, [], options=StateDictOptions(full_state_dict=True, cpu_offload=True))[0]
        for name, value in (self.ema or {}).items():
            state[name] = full_tensor(value)
        return state

    @torch.no_grad()
    def preview(self) -> Path | None:
        """Sample the first cached clip (its caption, references and intervals) with the current weights and save
        frames, references and interval bars as previews/step_<N>.png."""
        if self.decoder is None or self.cfg.fsdp or not self.dist.main:
            return None
        from ..media import strip_image
        from ..sampling.flow import generate
        from ..sampling.guidance import Conditioning, Guidance
        batch = make_batch(self.clips, [0], self.cfg.__class__(**{**self.cfg.to_dict(), "p_drop_refs": 0.0,
                                                                    "p_drop_caption": 0.0, "p_drop_words": 0.0}),
                           self.latent_format, self.adapter_cfg.min_half_length, False)
        item = self.clips[self.clips.position(0, self.cfg.seed)]
        was_training = self.model.training
        self.model.eval()
        try:
            cond = Conditioning(batch.context.to(self.device), refs=None if batch.refs is None else batch.refs.to(self.device))
            latents = generate(self.model, cond, self.clips.null_caption[None].to(self.device), batch.x0.shape, seed=0,
                               guidance=Guidance(2.0, 3.0), steps=20, shift=3.0, latent_format=self.latent_format)
        finally:
            self.model.train(was_training)
        to_uint8 = lambda v: ((v.clamp(-1, 1) + 1) * 127.5).round().byte().permute(1, 2, 3, 0).numpy()
        frames = to_uint8(self.decoder.decode(latents.cpu().float())[0])
        refs = []
        if batch.refs is not None:
            ref_lat = self.latent_format.denormalize(batch.refs.latents[0][:, :, None], 1)
            refs = [to_uint8(self.decoder.decode(r[None])[0])[0] for r in ref_lat]
        tags = json.loads(self.clips.metadata(self.clips.position(0, self.cfg.seed)).get("tags", "[]"))
        intervals = [tuple(iv) for iv in item["intervals"].tolist()] if "intervals" in item else []
        path = self.out / "previews" / f"step_{self.step:07d}.png"
        path.parent.mkdir(parents=True, exist_ok=True)
        strip_image(frames, refs, tags, intervals, item["fps"]).save(path)
        return path

    def export(self) -> Path | None:
        """The result: an adapter file (modes lora / adapter-only) or a full model (mode full), EMA weights if on.
        Written by the main process."""
        state = self.full_state()
        if not self.dist.main:
            return None
        if self.cfg.mode == "full":
            return save_model(self.model, self.out / "model.safetensors", state=state)
        return save_adapter(self.model, self.out / "adapter.safetensors", state=state)


def readable_checkpoint(run: Path) -> SafetensorsFile | None:
    """The newest readable checkpoint of a run folder (a half-written or damaged one is skipped), or None."""
    for path in sorted((run / CKPT_DIR).glob("ckpt-*.safetensors"), reverse=True):
        try:
            return SafetensorsFile(path)
        except CheckpointError:
            continue
    return None


def newest_checkpoint(run_or_file: str | os.PathLike) -> SafetensorsFile:
    """A checkpoint file as given, or the newest readable one in a run folder's checkpoints/."""
    path = Path(run_or_file)
    if path.is_file():
        return SafetensorsFile(path)
    found = readable_checkpoint(path)
    if found is not None:
        return found
    raise CheckpointError(f"{path}: no readable checkpoint in {path / CKPT_DIR}; give a training run's output folder "
                          f"(the `out` option) or one of its checkpoint files")


def export_checkpoint(run_or_file: str | os.PathLike, out: str | os.PathLike,
                      raw: bool = False) -> tuple[Path, int, str]:
    """Write a checkpoint's weights as the run's result file would be written (a full model in mode full, an
    adapter file otherwise; EMA weights when the run keeps them, unless `raw`), without touching the run: it may
    still be training. The model is rebuilt from the settings stored in the checkpoint (the base file must still
    exist for runs that start from one). Returns the file written, the checkpoint's step and "EMA" or "raw"."""
    f = newest_checkpoint(run_or_file)
    try:
        settings, step = json.loads(f.metadata["identity"]), int(f.metadata["step"])
    except (KeyError, ValueError):
        raise CheckpointError(f"{f.path} is not a training checkpoint (no step and settings in its header)") from None
    kind = "raw" if raw or not any(k.startswith("ema/") for k in f.keys()) else "EMA"
    prefix = "model/" if kind == "raw" else "ema/"
    weights = {k[len(prefix):]: f.tensor(k) for k in f.keys() if k.startswith(prefix)}
    cfg = TrainConfig.from_dict({**settings, "compile": "", "device": "cpu", "gradient_checkpointing": False})
    model = build_model(cfg, torch.device("cpu"))
    state = model.state_dict()
    unknown = sorted(set(weights) - set(state))
    if unknown:
        raise CheckpointError(f"{f.path}: weights {unknown[:3]} do not fit the model its settings describe")
    state.update({k: v.to(state[k].dtype) for k, v in weights.items()})
    if cfg.mode == "full":
        return save_model(model, out, state=state), step, kind
    return save_adapter(model, out, state=state), step, kind


class MetricsLog:
    """metrics.csv rows (step, loss, learning rates, samples/s); rows past a resumed step are dropped."""

    FIELDS = ["step", "loss", "lr_new", "lr_base", "samples_per_s"]

    def __init__(self, path: Path, resumed_step: int):
        self.path = path
        self.rows = []
        if path.exists() and resumed_step:
            with open(path) as f:
                self.rows = [r for r in csv.DictReader(f) if int(r["step"]) <= resumed_step]
        self._write()

    def add(self, step: int, loss: float, groups, samples_per_s: float) -> None:
        lr = {g.get("name"): g["lr"] for g in groups}
        self.rows.append({"step": step, "loss": f"{loss:.6g}", "lr_new": f"{lr.get('new', 0):.3g}",
                          "lr_base": f"{lr.get('base', 0):.3g}", "samples_per_s": f"{samples_per_s:.3g}"})
        self._write()

    def _write(self) -> None:
        def write(tmp):
            with open(tmp, "w", newline="") as f:
                w = csv.DictWriter(f, fieldnames=self.FIELDS)
                w.writeheader()
                w.writerows(self.rows)
        atomic_write(self.path, write)

    def plot(self, path: Path) -> None:
        steps = [int(r["step"]) for r in self.rows]
        losses = [float(r["loss"]) for r in self.rows]
        line_plot({"loss": (steps, losses)}, "training loss", "step", log_y=True).save(path)
