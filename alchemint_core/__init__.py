"""AlcheMinT core: Wan 2.1 DiT with multi-reference, interval-controlled conditioning (pure PyTorch)."""
from .config import AdapterConfig, CheckpointError, WanConfig, WAN21_14B, WAN21_1_3B, infer_config
from .dense import DenseCaptions
from .guidance import Conditioning, Guidance, Guider
from .intervals import IntervalError, interval_to_latent, latent_frame_count, seconds_to_latent
from .latents import WAN21, LatentFormat
from .loading import load_model, save_adapter, save_model
from .model import WanModel
from .references import PackedReferences, References
from .rope import RopeBank, TemporalRope
from .sampling import euler, generate, seeded_noise, sigma_schedule

__all__ = [
    "AdapterConfig", "CheckpointError", "WanConfig", "WAN21_14B", "WAN21_1_3B", "infer_config", "DenseCaptions",
    "Conditioning", "Guidance", "Guider", "IntervalError", "interval_to_latent", "latent_frame_count",
    "seconds_to_latent", "WAN21", "LatentFormat", "load_model", "save_adapter", "save_model", "WanModel",
    "PackedReferences", "References", "RopeBank", "TemporalRope", "euler", "generate", "seeded_noise",
    "sigma_schedule",
]
