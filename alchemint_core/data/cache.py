"""Encode a dataset once: video latents, text embeddings and several augmented reference variants per entity go
into one safetensors shard per training clip, listed in manifest.json. Training reads only this cache.

Re-running skips clips whose shard is complete; shards and the manifest are written atomically, so a build killed
at any moment leaves only complete shards behind and resumes where it stopped. The manifest is rewritten every few
seconds, not per clip (rewriting it per clip made big builds quadratic); a complete shard the last manifest write
missed is adopted from its own metadata on resume.
"""
from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np
import torch
import torch.nn.functional as F

from ..encoders import TextEncoder, VideoEncoder
from ..files import SafetensorsFile, atomic_write, read_metadata_json, remove_temporaries, save_safetensors
from ..model.config import CheckpointError
from ..model.latents import LATENT_FORMAT_FILE
from .augment import ReferenceAugment
from .dataset import DatasetError, list_samples, load_sample, make_clip
from .soften import check_soften_sigma, soften_subjects

MANIFEST = "manifest.json"
MANIFEST_EVERY_S = 5.0
CACHE_VERSION = 1


@dataclass
class CacheConfig:
    num_frames: int = 17
    height: int | None = None  # resize clips to height x width (divisible by 16); None keeps the video's size
    width: int | None = None
    clips_per_sample: int = 1
    ref_variants: int = 4
    seed: int = 0
    threshold: float = 0.002
    dtype: str = "float32"
    soft_subjects: float = 0.0  # > 0: also cache the clip with its subjects blurred by this many pixels (soften.py)

    def settings(self) -> dict:
        """What a cache's manifest records; soft_subjects only when on, so caches made before it stay valid."""
        d = asdict(self)
        if not d["soft_subjects"]:
            del d["soft_subjects"]
        return d

    def torch_dtype(self) -> torch.dtype:
        dtypes = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}
        if self.dtype not in dtypes:
            raise ValueError(f"cache dtype {self.dtype!r} must be one of {sorted(dtypes)}")
        return dtypes[self.dtype]


@dataclass
class CacheReport:
    encoded: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)


def to_video_tensor(frames: np.ndarray) -> torch.Tensor:
    """uint8 [N, H, W, 3] -> float [1, 3, N, H, W] in [-1, 1]."""
    return torch.from_numpy(np.ascontiguousarray(frames)).permute(3, 0, 1, 2)[None].float() / 127.5 - 1


def read_manifest(out: Path) -> dict | None:
    path = out / MANIFEST
    if not path.exists():
        return None
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError:
        raise CheckpointError(f"{path} is not valid JSON; delete the cache folder and build it again") from None


def write_manifest(out: Path, manifest: dict) -> None:
    atomic_write(out / MANIFEST, lambda tmp: Path(tmp).write_text(json.dumps(manifest, indent=1)))


def has_tensor(path: Path, key: str) -> bool:
    """The file is a complete, readable safetensors file holding `key`."""
    return complete_shard(path, key) is not None


def complete_shard(path: Path, key: str = "video") -> SafetensorsFile | None:
    """The shard, opened, if it is a complete safetensors file holding `key`; None if missing or damaged."""
    if not path.is_file():
        return None
    try:
        f = SafetensorsFile(path)
    except CheckpointError:
        return None
    return f if key in f else None


def latent_masks(masks: np.ndarray, latent_thw: tuple[int, int, int]) -> torch.Tensor:
    """Per-frame object masks [N, H, W] -> [T, h, w] presence on the latent grid (max over each cell)."""
    m = torch.from_numpy(masks.astype(np.float32))
    first = m[:1].expand(4, -1, -1)
    grouped = torch.cat([first, m[1:]]).unflatten(0, (-1, 4)).amax(1)  # causal groups like the VAE
    return F.adaptive_max_pool2d(grouped[:, None], latent_thw[1:])[:, 0]


@torch.no_grad()
def encode_clip(clip, video_encoder: VideoEncoder, text_encoder: TextEncoder, augment: ReferenceAugment,
                seed: int, dtype: torch.dtype, soft_subjects: float = 0.0) -> tuple[dict, dict]:
    video = video_encoder.encode(to_video_tensor(clip.frames))[0]  # raw latents [C, T, h, w]
    caption, caption_mask = text_encoder.encode([clip.caption])
    tensors = {"video": video, "caption": caption[0, : int(caption_mask[0].sum())]}
    if soft_subjects:
        soft = soften_subjects(clip.frames, [e.masks for e in clip.entities], soft_subjects)
        tensors["video_soft"] = video_encoder.encode(to_video_tensor(soft))[0]
    if clip.entities:
        tags, tag_mask = text_encoder.encode([e.tag for e in clip.entities])
        tensors["tags"], tensors["tag_lengths"] = tags, tag_mask.sum(1)
        refs = []
        for i, entity in enumerate(clip.entities):
            images, masks = augment.augment_uint8(entity.references, entity.reference_masks, seed=seed * 1000 + i)
            one_frame = images[:, :, None] * 2 - 1  # [V, 3, 1, H, W] in [-1, 1]
            refs.append(video_encoder.encode(one_frame)[:, :, 0])
        tensors["refs"] = torch.stack(refs)  # [E, V, C, h, w]
        tensors["intervals"] = torch.tensor([e.interval for e in clip.entities], dtype=torch.float64)
        tensors["masks"] = torch.stack([latent_masks(e.masks, tuple(video.shape[1:])) for e in clip.entities])
    if clip.timed_captions:
        tc, tc_mask = text_encoder.encode([c.text for c in clip.timed_captions])
        tensors["timed"], tensors["timed_lengths"] = tc, tc_mask.sum(1)
        tensors["timed_spans"] = torch.tensor([[c.start, c.end] for c in clip.timed_captions], dtype=torch.float64)
    tensors = {k: (v.to(dtype) if v.is_floating_point() and k not in ("intervals", "timed_spans") else v)
               for k, v in tensors.items()}
    meta = {"caption": clip.caption, "tags": json.dumps([e.tag for e in clip.entities]), "fps": repr(clip.fps),
            "num_frames": str(len(clip.frames))}
    return tensors, meta


def build_cache(data_root, out_dir, video_encoder: VideoEncoder, text_encoder: TextEncoder, cfg: CacheConfig,
                encoder_id: str, augment: ReferenceAugment | None = None,
                progress: Callable[[int, int, str], None] | None = None,
                part: tuple[int, int] | None = None) -> CacheReport:
    """Encode every sample under data_root into out_dir. encoder_id names the encoder pair; a cache made with
    other encoders or settings is refused rather than mixed.

    part=(i, n) encodes only every n-th sample from the i-th and writes shards but no manifest, so n processes can
    share a build; a final call without `part` adopts their shards (seeds depend on the sample's index only, so
    the result equals a one-process build)."""
    out = Path(out_dir)
    samples = list_samples(data_root)
    if not samples:
        raise DatasetError(f"{data_root}: no sample folders (each needs a sample.json); see the README's dataset format")
    check_soften_sigma(cfg.soft_subjects)
    settings = {"version": CACHE_VERSION, "encoder": encoder_id, "config": cfg.settings()}
    manifest = read_manifest(out) or {**settings, "clips": {}}
    if {k: manifest.get(k) for k in settings} != settings:
        raise CheckpointError(f"{out} holds a cache built with other encoders or settings "
                              f"({ {k: manifest.get(k) for k in settings} }); use a new output folder")
    (out / "shards").mkdir(parents=True, exist_ok=True)
    augment = augment or ReferenceAugment()
    report = CacheReport()
    total = len(samples) * cfg.clips_per_sample
    last_write = time.monotonic()
    if part is not None and not (isinstance(part[1], int) and part[1] >= 1 and 0 <= part[0] < part[1]):
        raise ValueError(f"part {part!r} must be (i, n) with 0 <= i < n")
    for s_idx, folder in enumerate(samples):
        if part is not None and s_idx % part[1] != part[0]:
            continue
        sample = None
        for c_idx in range(cfg.clips_per_sample):
            name = f"{folder.name}#{c_idx}"
            shard = out / "shards" / f"{folder.name}.{c_idx}.safetensors"
            done = complete_shard(shard)
            if done is not None:
                if name not in manifest["clips"]:  # written after the last manifest write of a killed build
                    tags = read_metadata_json(done.metadata, "tags") or []
                    manifest["clips"][name] = {"file": f"shards/{shard.name}", "entities": len(tags)}
                report.skipped.append(name)
                continue
            sample = sample or load_sample(folder)
            rng = np.random.default_rng([cfg.seed, s_idx, c_idx])  # independent of what was skipped
            size = (cfg.height, cfg.width) if cfg.height and cfg.width else None
            clip = make_clip(sample, cfg.num_frames, rng, refs_per_entity=cfg.ref_variants, size_hw=size,
                             threshold=cfg.threshold)
            aug_seed = int(np.random.SeedSequence([cfg.seed, s_idx, c_idx]).generate_state(1)[0])
            tensors, meta = encode_clip(clip, video_encoder, text_encoder, augment, aug_seed, cfg.torch_dtype(),
                                        cfg.soft_subjects)
            save_safetensors(tensors, shard, meta)
            manifest["clips"][name] = {"file": f"shards/{shard.name}", "entities": len(clip.entities)}
            if part is None and time.monotonic() - last_write > MANIFEST_EVERY_S:
                write_manifest(out, manifest)
                last_write = time.monotonic()
            report.encoded.append(name)
            if progress:
                progress(len(report.encoded) + len(report.skipped), total, name)
    if part is None:  # what the trainer reads beside the shards, written once every clip is in
        null_path = out / "null_caption.safetensors"  # the empty caption: what a dropped caption becomes
        if not has_tensor(null_path, "caption"):
            emb, mask = text_encoder.encode([""])
            save_safetensors({"caption": emb[0, : int(mask[0].sum())].to(cfg.torch_dtype())}, null_path)
        atomic_write(out / LATENT_FORMAT_FILE,
                     lambda tmp: Path(tmp).write_text(json.dumps(video_encoder.latent_format.to_dict())))
        write_manifest(out, manifest)
        remove_temporaries(out / "shards")  # every worker is done: what is left was cut short by a kill
        remove_temporaries(out)
    return report

