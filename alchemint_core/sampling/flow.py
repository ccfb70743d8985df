"""Rectified-flow sampling: x_s = (1 - s)*x0 + s*noise, the model predicts v = noise - x0 at timestep 1000*s."""
from __future__ import annotations

import math
from typing import Callable

import torch

from ..model.latents import LatentFormat
from .guidance import Conditioning, Guidance, Guider

DEFAULT_STEPS = 40
DEFAULT_SHIFT = 5.66

# callback(step, total_steps, x, x0_prediction): progress, previews; raise inside it to interrupt.
StepCallback = Callable[[int, int, torch.Tensor, torch.Tensor], None]


def check_steps_shift(steps: int, shift: float, defaults: tuple[int, float] = (DEFAULT_STEPS, DEFAULT_SHIFT)) -> None:
    """defaults: the (steps, shift) the error suggests (Wan's here; the demo model's from its commands)."""
    if not isinstance(steps, int) or isinstance(steps, bool) or not 1 <= steps <= 1000:
        raise ValueError(f"steps {steps!r} must be an integer from 1 to 1000 (default {defaults[0]})")
    if not (isinstance(shift, (int, float)) and math.isfinite(shift) and 0 < shift <= 100):
        raise ValueError(f"shift {shift!r} must be a number in (0, 100] (default {defaults[1]})")


def sigma_schedule(steps: int = DEFAULT_STEPS, shift: float = DEFAULT_SHIFT) -> torch.Tensor:
    """steps+1 noise levels from 1 to 0: linear sigma warped by s*sigma / (1 + (s-1)*sigma)."""
    check_steps_shift(steps, shift)
    sigma = torch.linspace(1.0, 0.0, steps + 1, dtype=torch.float64)
    return (shift * sigma / (1 + (shift - 1) * sigma)).float()


def seeded_noise(shape, seed: int, device=None, dtype=torch.float32) -> torch.Tensor:
    """Gaussian noise from a CPU generator, so a seed gives the same noise on every device."""
    g = torch.Generator("cpu").manual_seed(int(seed) % (2 ** 64))
    return torch.randn(tuple(shape), generator=g, dtype=torch.float32).to(device=device, dtype=dtype)


def euler(velocity: Callable[[torch.Tensor, torch.Tensor], torch.Tensor], noise: torch.Tensor,
          sigmas: torch.Tensor, callback: StepCallback | None = None) -> torch.Tensor:
    """Integrate dx/dsigma = v from sigmas[0] to sigmas[-1]; velocity(x, timestep[B]) with timestep = 1000*sigma."""
    x = noise
    b = x.shape[0]
    timesteps = (sigmas * 1000).to(x.device)  # on the device once: no host->device copy per step
    total = len(sigmas) - 1
    for i in range(total):
        v = velocity(x, timesteps[i].expand(b))
        x0 = x - sigmas[i].item() * v if callback is not None else None
        x = x + (sigmas[i + 1] - sigmas[i]).item() * v
        if callback is not None:
            callback(i, total, x, x0)
    return x


def check_start_sigma(start_sigma: float) -> None:
    if not (isinstance(start_sigma, (int, float)) and math.isfinite(start_sigma) and 0 < start_sigma <= 1):
        raise ValueError(f"start sigma {start_sigma!r} must be a number in (0, 1], e.g. 0.5: 1 samples from pure "
                         f"noise, smaller values start from the given latents noised to that level")


def check_start(start_sigma: float, init: torch.Tensor | None, shape) -> None:
    check_start_sigma(start_sigma)
    if start_sigma < 1 and init is None:
        raise ValueError(f"start sigma {start_sigma} < 1 needs latents to start from; give them, or use 1")
    if init is not None and tuple(init.shape) != tuple(shape):
        raise ValueError(f"latents to start from are {list(init.shape)} but the video needs {list(shape)}: "
                         f"encode a video of the same frame count and size")


def start_from(sigmas: torch.Tensor, start_sigma: float) -> torch.Tensor:
    """The tail of a schedule from its first level <= start_sigma, keeping at least one step."""
    k = min(int((sigmas > start_sigma).sum()), len(sigmas) - 2)
    return sigmas[k:]


@torch.no_grad()
def generate(model, positive: Conditioning, negative: torch.Tensor, shape, seed: int,
             guidance: Guidance = Guidance(), steps: int = DEFAULT_STEPS, shift: float = DEFAULT_SHIFT,
             latent_format: LatentFormat | None = None, callback: StepCallback | None = None,
             negative_mask: torch.Tensor | None = None, init: torch.Tensor | None = None,
             start_sigma: float = 1.0) -> torch.Tensor:
    """Sample latents of `shape` [B, C, F, H, W]. Returned latents are raw (denormalised with latent_format) so
    the VAE decodes them directly; reference latents in `positive.refs` must already be normalised.
    init (normalised latents) with start_sigma < 1: start from init noised to the schedule's first level <=
    start_sigma and integrate the rest (SDEdit), e.g. to see at which noise level a model decides what."""
    check_start(start_sigma, init, shape)
    sigmas = sigma_schedule(steps, shift)
    device = next(model.parameters()).device
    guider = Guider(model, positive, negative, guidance, shape, negative_mask)
    x = seeded_noise(shape, seed, device, torch.float32)
    if start_sigma < 1:
        sigmas = start_from(sigmas, start_sigma)
        x = (1 - sigmas[0].item()) * init.to(device, torch.float32) + sigmas[0].item() * x
    x = euler(guider, x, sigmas, callback)
    return latent_format.denormalize(x) if latent_format is not None else x
