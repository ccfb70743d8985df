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


def check_eta(eta: float) -> None:
    if not (isinstance(eta, (int, float)) and not isinstance(eta, bool) and math.isfinite(eta) and 0 <= eta <= 1):
        raise ValueError(f"eta {eta!r} must be a number in [0, 1]: 0 integrates the flow (deterministic), 1 samples "
                         f"each step from the DDPM posterior (ancestral)")


def fresh_noise_std(s: float, s_next: float) -> float:
    """Std of the posterior q(x_s' | x_s, x0) of x_s = (1-s)*x0 + s*noise, s' < s: the noise an ancestral step
    draws anew. It shrinks with the step, so the steps discretise the reverse SDE (no collapse onto the mean)."""
    if s_next <= 0:
        return 0.0
    a, a_next = 1 - s, 1 - s_next
    transition = s ** 2 - (a / a_next) ** 2 * s_next ** 2  # variance added going from s' to s
    return math.sqrt(max(transition, 0.0) * s_next ** 2 / s ** 2)


def euler(velocity: Callable[[torch.Tensor, torch.Tensor], torch.Tensor], noise: torch.Tensor,
          sigmas: torch.Tensor, callback: StepCallback | None = None, eta: float = 0.0,
          generator: torch.Generator | None = None) -> torch.Tensor:
    """Step from sigmas[0] to sigmas[-1]; velocity(x, timestep[B]) with timestep = 1000*sigma.

    Each step splits x into the model's clean estimate x0 = x - s*v and noise estimate e = x + (1-s)*v and puts
    them together at the next level s' as DDIM does: (1-s')*x0 + sqrt(s'^2 - r^2)*e + r*z, with r = eta times the
    posterior std (fresh_noise_std) and z fresh noise from `generator` (CPU). eta = 0 is exactly the Euler step
    of the flow; eta = 1 is the ancestral (DDPM) step, whose fresh noise lets a trajectory that settled early on
    an average (a blob) still move away from it."""
    check_eta(eta)
    x = noise
    b = x.shape[0]
    timesteps = (sigmas * 1000).to(x.device)  # on the device once: no host->device copy per step
    total = len(sigmas) - 1
    for i in range(total):
        v = velocity(x, timesteps[i].expand(b))
        s, s_next = sigmas[i].item(), sigmas[i + 1].item()
        r = eta * fresh_noise_std(s, s_next)
        x0 = x - s * v if callback is not None or r else None  # only when needed: one tensor op less per step
        if r == 0:
            x = x + (s_next - s) * v
        else:
            z = torch.randn(tuple(x.shape), generator=generator, dtype=torch.float32).to(x.device, x.dtype)
            x = (1 - s_next) * x0 + math.sqrt(max(s_next ** 2 - r ** 2, 0.0)) * (x + (1 - s) * v) + r * z
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
             start_sigma: float = 1.0, eta: float = 0.0) -> torch.Tensor:
    """Sample latents of `shape` [B, C, F, H, W]. Returned latents are raw (denormalised with latent_format) so
    the VAE decodes them directly; reference latents in `positive.refs` must already be normalised.
    init (normalised latents) with start_sigma < 1: start from init noised to the schedule's first level <=
    start_sigma and integrate the rest (SDEdit), e.g. to see at which noise level a model decides what.
    eta: the share of each step's noise redrawn (see euler), from a generator seeded by `seed` too."""
    check_start(start_sigma, init, shape)
    sigmas = sigma_schedule(steps, shift)
    device = next(model.parameters()).device
    guider = Guider(model, positive, negative, guidance, shape, negative_mask)
    x = seeded_noise(shape, seed, device, torch.float32)
    if start_sigma < 1:
        sigmas = start_from(sigmas, start_sigma)
        x = (1 - sigmas[0].item()) * init.to(device, torch.float32) + sigmas[0].item() * x
    fresh = torch.Generator("cpu").manual_seed((int(seed) + 1) % (2 ** 64)) if eta > 0 else None
    x = euler(guider, x, sigmas, callback, eta, fresh)
    return latent_format.denormalize(x) if latent_format is not None else x
