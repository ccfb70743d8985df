"""AlcheMinT core: Wan 2.1 DiT with multi-reference, interval-controlled conditioning (pure PyTorch)."""
from .model.config import WAN21_1_3B, WAN21_14B, AdapterConfig, CheckpointError, WanConfig, infer_config
from .model.dense import DenseCaptions
from .model.latents import WAN21, LatentFormat
from .model.loading import load_model, save_adapter, save_model
from .model.references import PackedReferences, References
from .model.rope import RopeBank, TemporalRope
from .model.transformer import WanModel
from .sampling.flow import euler, generate, seeded_noise, sigma_schedule
from .sampling.guidance import Conditioning, Guidance, Guider
from .sampling.intervals import IntervalError, interval_to_latent, latent_frame_count, seconds_to_latent

__all__ = [
    "AdapterConfig", "CheckpointError", "WanConfig", "WAN21_14B", "WAN21_1_3B", "infer_config", "DenseCaptions",
    "Conditioning", "Guidance", "Guider", "IntervalError", "interval_to_latent", "latent_frame_count",
    "seconds_to_latent", "WAN21", "LatentFormat", "load_model", "save_adapter", "save_model", "WanModel",
    "PackedReferences", "References", "RopeBank", "TemporalRope", "euler", "generate", "seeded_noise",
    "sigma_schedule",
]
