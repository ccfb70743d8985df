"""Rectified-flow sampling, latent normalisation and multi-CFG."""
import pytest
import torch

import alchemint_core as ac
from alchemint_core.sampling.guidance import Guidance, Guider, pad_contexts
from alchemint_core.model.latents import WAN21
from alchemint_core.sampling.flow import euler
from conftest import TINY, tiny_model
from test_references import make_refs


def test_schedule_runs_from_one_to_zero_with_the_shift_formula():
    s = ac.sigma_schedule(40, 5.66)
    assert len(s) == 41 and s[0] == pytest.approx(1.0) and s[-1] == 0.0
    lin = torch.linspace(1, 0, 41, dtype=torch.float64)
    torch.testing.assert_close(s.double(), 5.66 * lin / (1 + 4.66 * lin), atol=1e-7, rtol=0)
    assert (s[1:] < s[:-1]).all()
    torch.testing.assert_close(ac.sigma_schedule(10, 1.0), torch.linspace(1, 0, 11))


@pytest.mark.parametrize("steps,shift", [(0, 5.0), (-1, 5.0), (10**6, 5.0), (10, 0.0), (10, float("nan"))])
def test_bad_steps_or_shift_are_rejected(steps, shift):
    with pytest.raises(ValueError, match="steps|shift"):
        ac.sigma_schedule(steps, shift)


def test_euler_transports_noise_to_data_for_the_exact_velocity():
    x0 = torch.randn(1, 16, 2, 4, 4)
    noise = torch.randn_like(x0)
    out = euler(lambda x, t: noise - x0, noise, ac.sigma_schedule(7, 3.0))  # straight-line flow
    torch.testing.assert_close(out, x0, atol=1e-5, rtol=1e-5)


def gaussian_velocity(mu: float, c: float):
    """The exact velocity for data x0 ~ N(mu, c^2): E[x0 | x_s] in closed form."""
    def velocity(x, t):
        s = t[0].item() / 1000
        a = 1 - s
        x0 = mu + a * c * c / (a * a * c * c + s * s) * (x - a * mu)
        return (x - x0) / s
    return velocity


@pytest.mark.parametrize("eta", [0.0, 0.5, 1.0])
def test_every_eta_samples_the_data_distribution_for_the_exact_velocity(eta):
    # deterministic flow, partly and fully ancestral steps all converge to N(1.5, 0.3^2); a sampler whose fresh
    # noise did not shrink with the step (a full redraw each step) would collapse the spread towards the mean
    g = torch.Generator().manual_seed(0)
    noise = torch.randn(100_000, 1, generator=g)
    out = euler(gaussian_velocity(1.5, 0.3), noise, ac.sigma_schedule(400, 3.0), eta=eta, generator=g)
    assert abs(out.mean().item() - 1.5) < 0.01
    assert abs(out.std().item() - 0.3) < 0.012


def test_eta_zero_is_the_plain_euler_step_and_eta_draws_fresh_noise_per_seed(model):
    x0, noise = torch.randn(1, 16, 2, 4, 4), torch.randn(1, 16, 2, 4, 4)
    sigmas = ac.sigma_schedule(5, 3.0)
    velocity = gaussian_velocity(0.2, 0.5)
    x = noise
    for i in range(5):
        x = x + (sigmas[i + 1] - sigmas[i]).item() * velocity(x, (sigmas[i] * 1000).expand(1))
    torch.testing.assert_close(euler(velocity, noise, sigmas, eta=0.0), x)
    shape = (1, 16, 2, 8, 8)
    cond = ac.Conditioning(torch.randn(1, 4, TINY.text_dim), refs=make_refs())
    neg = torch.randn(1, 2, TINY.text_dim)
    runs = [ac.generate(model, cond, neg, shape, seed=seed, steps=4, eta=eta)
            for seed, eta in ((3, 0.0), (3, 1.0), (3, 1.0), (4, 1.0))]
    assert not torch.equal(runs[0], runs[1]) and torch.equal(runs[1], runs[2]) and not torch.equal(runs[2], runs[3])


@pytest.mark.parametrize("eta", [-0.1, 1.5, float("nan"), True, "1"])
def test_bad_eta_is_rejected(eta):
    with pytest.raises(ValueError, match=r"eta .* must be a number in \[0, 1\]"):
        euler(lambda x, t: x, torch.zeros(1, 1), ac.sigma_schedule(2, 3.0), eta=eta)


def test_noise_is_reproducible_per_seed():
    a, b, c = (ac.seeded_noise((1, 16, 2, 4, 4), s) for s in (7, 7, 8))
    assert torch.equal(a, b) and not torch.equal(a, c)


def test_latent_normalisation_round_trips_with_wan_statistics():
    raw = torch.randn(1, 16, 3, 4, 4) * 2 + 1
    torch.testing.assert_close(WAN21.denormalize(WAN21.normalize(raw)), raw)
    assert WAN21.normalize(torch.tensor(WAN21.mean).view(1, 16, 1, 1, 1)).abs().max() < 1e-6
    with pytest.raises(ValueError, match="channels"):
        WAN21.normalize(torch.zeros(1, 4, 1, 2, 2))


@pytest.fixture(scope="module")
def model():
    return tiny_model(seed=11, adapter=ac.AdapterConfig())


def test_generate_is_seeded_reports_each_step_and_returns_raw_latents(model):
    shape = (1, 16, 2, 8, 8)
    cond = ac.Conditioning(torch.randn(1, 4, TINY.text_dim), refs=make_refs())
    neg = torch.randn(1, 2, TINY.text_dim)
    seen = []
    out1 = ac.generate(model, cond, neg, shape, seed=3, steps=4, callback=lambda i, n, x, x0: seen.append((i, n, x0.shape)))
    out2 = ac.generate(model, cond, neg, shape, seed=3, steps=4)
    out3 = ac.generate(model, cond, neg, shape, seed=4, steps=4)
    assert seen == [(i, 4, torch.Size(shape)) for i in range(4)]
    assert torch.equal(out1, out2) and not torch.equal(out1, out3)
    normed = ac.generate(model, cond, neg, shape, seed=3, steps=4, latent_format=WAN21)
    torch.testing.assert_close(WAN21.normalize(normed), out1, atol=1e-5, rtol=1e-5)


def test_start_from_given_latents_runs_the_tail_of_the_schedule(model):
    """start_sigma < 1 starts from init noised to the first level <= start_sigma (SDEdit): fewer steps, an output
    that stays near init at small sigma, and start_sigma 1 is plain sampling."""
    shape = (1, 16, 2, 8, 8)
    cond = ac.Conditioning(torch.randn(1, 4, TINY.text_dim), refs=make_refs())
    neg = torch.randn(1, 2, TINY.text_dim)
    init = torch.randn(shape, generator=torch.Generator().manual_seed(5))
    seen = []
    near = ac.generate(model, cond, neg, shape, seed=3, steps=10, shift=1.0, init=init, start_sigma=0.25,
                       callback=lambda i, n, x, x0: seen.append(n))
    assert seen == [2, 2]  # sigmas 1, 0.9, ..., 0.1, 0: the tail from 0.2, the first level <= 0.25, has 2 steps
    far = ac.generate(model, cond, neg, shape, seed=3, steps=10, shift=1.0)
    assert (near - init).abs().mean() < 0.5 * (far - init).abs().mean()
    same = ac.generate(model, cond, neg, shape, seed=3, steps=10, shift=1.0, init=init, start_sigma=1.0)
    assert torch.equal(same, far)


@pytest.mark.parametrize("start, init_shape, match", [(0.0, (1, 16, 2, 8, 8), r"\(0, 1\]"),
                                                      (1.5, (1, 16, 2, 8, 8), r"\(0, 1\]"),
                                                      (0.5, None, "needs latents to start from"),
                                                      (0.5, (1, 16, 3, 8, 8), "same frame count and size")])
def test_bad_start_is_rejected(model, start, init_shape, match):
    init = None if init_shape is None else torch.zeros(init_shape)
    cond = ac.Conditioning(torch.randn(1, 4, TINY.text_dim))
    with pytest.raises(ValueError, match=match):
        ac.generate(model, cond, torch.randn(1, 2, TINY.text_dim), (1, 16, 2, 8, 8), seed=0, steps=4, init=init,
                    start_sigma=start)


def test_callback_exception_interrupts_within_one_step(model):
    calls = []

    def stop(i, n, x, x0):
        calls.append(i)
        if i == 1:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        ac.generate(model, ac.Conditioning(torch.randn(1, 4, TINY.text_dim)), torch.randn(1, 2, TINY.text_dim),
                    (1, 16, 2, 8, 8), seed=0, steps=10, callback=stop)
    assert calls == [0, 1]


def separate_passes(model, x, t, pos, neg, refs):
    off = refs.dropped()
    return {(False, False): model(x, t, neg, refs=off), (True, False): model(x, t, neg, refs=refs),
            (False, True): model(x, t, pos, refs=off), (True, True): model(x, t, pos, refs=refs)}


@pytest.mark.parametrize("s_ref,s_txt,joint,n_passes", [(2.0, 5.0, None, 3), (1.0, 5.0, None, 2), (3.0, 3.0, None, 2),
                                                        (1.0, 1.0, None, 1), (2.0, 4.0, 1.5, 4)])
def test_multi_cfg_batched_equals_combination_of_separate_passes(model, s_ref, s_txt, joint, n_passes):
    g = torch.Generator().manual_seed(0)
    x = torch.randn(1, 16, 2, 8, 8, generator=g)
    t = torch.tensor([640.0])
    pos = torch.randn(1, 5, TINY.text_dim, generator=g)
    neg = torch.randn(1, 3, TINY.text_dim, generator=g)  # different length: exercises padding + key mask
    refs = make_refs()
    guidance = Guidance(s_ref, s_txt, joint)
    guider = Guider(model, ac.Conditioning(pos, refs=refs), neg, guidance, x.shape)
    assert guider.num_passes == n_passes
    v = separate_passes(model, x, t, pos, neg, refs)
    if joint is None:
        expected = v[False, False] + s_ref * (v[True, False] - v[False, False]) + s_txt * (v[True, True] - v[True, False])
    else:
        expected = (v[False, False] + s_ref * (v[True, False] - v[False, False]) + s_txt * (v[False, True] - v[False, False])
                    + joint * (v[True, True] - v[True, False] - v[False, True] + v[False, False]))
    torch.testing.assert_close(guider(x, t), expected, atol=1e-4, rtol=1e-4)


def test_plain_cfg_without_references(model):
    x, t = torch.randn(1, 16, 2, 8, 8), torch.tensor([300.0])
    pos, neg = torch.randn(1, 5, TINY.text_dim), torch.randn(1, 5, TINY.text_dim)
    guider = Guider(model, ac.Conditioning(pos), neg, Guidance(2.0, 4.0), x.shape)
    assert guider.num_passes == 2
    expected = model(x, t, neg) + 4.0 * (model(x, t, pos) - model(x, t, neg))
    torch.testing.assert_close(guider(x, t), expected, atol=1e-4, rtol=1e-4)


def test_padded_context_with_mask_equals_unpadded(model):
    x, t = torch.randn(1, 16, 2, 8, 8), torch.tensor([300.0])
    ctx = torch.randn(1, 3, TINY.text_dim)
    padded, mask = pad_contexts([ctx], [torch.tensor([[True, True, True]])])
    assert mask is None
    padded, mask = pad_contexts([ctx, torch.randn(1, 6, TINY.text_dim)], [None, None])
    out = model(x.repeat(2, 1, 1, 1, 1), t.repeat(2), padded, context_mask=mask)
    torch.testing.assert_close(out[:1], model(x, t, ctx), atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("bad", [float("nan"), -1.0, 1e9])
def test_bad_guidance_scales_are_rejected(bad):
    with pytest.raises(ValueError, match="guidance"):
        Guidance(ref_scale=bad)
