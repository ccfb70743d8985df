"""Properties of the temporal RoPE modes and of interval conversion."""
import math

import pytest
import torch

import alchemint_core as ac
from alchemint_core.sampling.intervals import (IntervalError, interval_to_latent, latent_frame_count, seconds_to_latent,
                                               widen)
from alchemint_core.model.rope import (RopeBank, TemporalRope, apply_rope, assemble, attention_profile,
                                       reference_tables, rotation, temporal_multiplier, video_table)

BANK = RopeBank(ac.WAN21_1_3B)


def mult(mode, interval, **kw):
    return temporal_multiplier(BANK.time, torch.tensor([interval], dtype=torch.float64), TemporalRope(mode, **kw))[0]


def test_werope_with_zero_edge_weight_equals_mid():
    for interval in [(0.0, 20.0), (3.0, 4.5), (7.25, 7.75)]:
        torch.testing.assert_close(mult("werope", interval, w_mid=1.0, w_edge=0.0), mult("mid", interval))


def test_mid_depends_only_on_midpoint_and_werope_on_length():
    a, b = (4.0, 6.0), (1.0, 9.0)  # same midpoint 5
    torch.testing.assert_close(mult("mid", a), mult("mid", b))
    assert not torch.allclose(mult("werope", a), mult("werope", b))
    assert not torch.allclose(mult("avg", a), mult("avg", b))
    # and the full reference tables (what attention consumes) differ the same way
    tab = lambda mode, iv: reference_tables(BANK, torch.tensor([iv]), 3, 4, [2], TemporalRope(mode))
    for part in range(2):
        torch.testing.assert_close(tab("mid", a)[part], tab("mid", b)[part])
        assert not torch.allclose(tab("werope", a)[part], tab("werope", b)[part])


def plain_kernel(q, k, delta):
    """A(delta): logit between q at time delta and k at time 0 under plain RoPE (time channels only)."""
    n = len(BANK.time)
    rq = apply_rope(q, assemble(rotation(BANK.time, torch.tensor([delta])), BANK, torch.zeros(1), torch.zeros(1))[None])
    rk = apply_rope(k, assemble(rotation(BANK.time, torch.tensor([0.0])), BANK, torch.zeros(1), torch.zeros(1))[None])
    return float((rq * rk)[..., : 2 * n].sum())


@pytest.mark.parametrize("w_mid,w_edge,offset", [(1.0, -0.4, 0.0), (1.0, -0.5, 0.5), (2.0, -0.25, 0.0)])
@pytest.mark.parametrize("interval", [(2.0, 9.0), (0.0, 20.0), (5.5, 6.0)])
def test_werope_logit_is_the_weighted_sum_of_plain_kernels(w_mid, w_edge, offset, interval):
    g = torch.Generator().manual_seed(0)
    q = torch.randn(1, 1, 1, 128, generator=g, dtype=torch.float64)
    k = torch.randn(1, 1, 1, 128, generator=g, dtype=torch.float64)
    rope = TemporalRope("werope", w_mid, w_edge, offset)
    n = len(BANK.time)
    t_l, t_r = interval
    for t in [0.0, 3.0, 7.5, 13.0, 20.0]:
        video = video_table(BANK, 21, 1, 1)[int(t)] if t == int(t) else None
        qt = apply_rope(q, assemble(rotation(BANK.time, torch.tensor([t])), BANK, torch.zeros(1), torch.zeros(1))[None])
        ref_tab, _ = reference_tables(BANK, torch.tensor([interval]), 1, 1, [0], rope)
        kr = apply_rope(k, ref_tab[None])
        logit = float((qt * kr)[..., : 2 * n].sum())
        expected = (w_mid * plain_kernel(q, k, t - (t_l + t_r) / 2)
                    + w_edge * (plain_kernel(q, k, t - (t_l - offset)) + plain_kernel(q, k, t - (t_r + offset))))
        assert logit == pytest.approx(expected, rel=1e-9, abs=1e-9)
        if video is not None:  # the video table's time channels are plain rotations at integer frames
            torch.testing.assert_close(video[:n], rotation(BANK.time, torch.tensor([t]))[0])


def test_avg_mode_is_the_mean_rotation_over_the_interval():
    interval = (2.0, 8.0)
    s = torch.linspace(*interval, 20001, dtype=torch.float64)
    mean = torch.trapezoid(rotation(BANK.time, s), s, dim=0) / (interval[1] - interval[0])
    torch.testing.assert_close(mult("avg", interval), mean, atol=1e-8, rtol=0)


def test_none_mode_has_no_time_rotation():
    m = mult("none", (3.0, 5.0))
    assert torch.equal(m[:, 0], torch.ones(len(BANK.time), dtype=torch.float64)) and not m[:, 1].any()


def test_werope_keeps_every_channel_gain_non_negative_at_the_allowed_extreme():
    m = mult("werope", (0.0, 20.0), w_mid=1.0, w_edge=-0.5)
    assert (m.norm(dim=-1) >= -1e-12).all()
    with pytest.raises(ValueError, match="w_edge"):
        TemporalRope("werope", 1.0, -0.6)
    with pytest.raises(ValueError, match="w_edge"):
        TemporalRope("werope", 1.0, 0.1)
    with pytest.raises(ValueError, match="not one of"):
        TemporalRope("sideways")


def test_tag_tokens_sit_on_the_diagonal_after_the_frame():
    h, w = 3, 5
    _, tags = reference_tables(BANK, torch.tensor([[1.0, 2.0], [3.0, 4.0]]), h, w, [2, 3], TemporalRope("mid"))
    kt, kh = len(BANK.time), len(BANK.height)
    for j in range(5):
        expect = rotation(BANK.height, torch.tensor([float(max(h, w) + j)]))[0]
        torch.testing.assert_close(tags[j, kt:kt + kh], expect)
        torch.testing.assert_close(tags[j, kt + kh:], rotation(BANK.width, torch.tensor([float(max(h, w) + j)]))[0])
    # first two tag tokens carry reference 0's interval, the next three reference 1's
    torch.testing.assert_close(tags[1, :kt], mult("mid", (1.0, 2.0)))
    torch.testing.assert_close(tags[2, :kt], mult("mid", (3.0, 4.0)))


def test_attention_profiles_mid_peaks_at_the_midpoint_and_avg_covers_the_interval():
    bank = RopeBank(ac.WanConfig(dim=256, num_heads=2, num_layers=1, rope_time_theta=30.0))
    times = torch.arange(0, 21, dtype=torch.float64)
    mid = attention_profile(bank, (5.0, 15.0), TemporalRope("mid"), times)
    assert int(mid.argmax()) == 10 and float(mid.max()) == pytest.approx(1.0)
    avg = attention_profile(bank, (5.0, 15.0), TemporalRope("avg"), times)
    assert avg[5:16].min() > torch.cat([avg[:3], avg[18:]]).max()  # a plateau over the whole interval
    we_short = attention_profile(bank, (9.0, 11.0), TemporalRope("werope"), times)
    we_long = attention_profile(bank, (5.0, 15.0), TemporalRope("werope"), times)
    assert not torch.allclose(we_short, we_long)  # same midpoint, different profile


# -- intervals ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize("frames", [1, 5, 17, 81])
@pytest.mark.parametrize("fps", [8, 16, 24, 30, 12.5])
def test_whole_clip_maps_to_zero_through_last_latent_frame(frames, fps):
    t = latent_frame_count(frames)
    assert seconds_to_latent(0.0, fps, frames) == 0.0
    assert seconds_to_latent(frames / fps, fps, frames) == pytest.approx(t - 1)
    assert seconds_to_latent((frames - 1) / fps, fps, frames) == pytest.approx(t - 1)
    if frames > 1:
        assert interval_to_latent(0.0, frames / fps, fps, frames) == pytest.approx((0.0, t - 1))


def test_pixel_frame_four_is_latent_frame_one():
    assert seconds_to_latent(4 / 16, 16, 81) == pytest.approx(1.0)
    assert latent_frame_count(81) == 21 and latent_frame_count(17) == 5


@pytest.mark.parametrize("bad", [0, 2, 16, 80, -3, 4.0, "17"])
def test_frame_counts_must_be_4k_plus_1(bad):
    with pytest.raises(IntervalError, match="4k\\+1"):
        latent_frame_count(bad)


def test_too_short_intervals_are_widened_about_their_midpoint():
    t_l, t_r = interval_to_latent(1.0, 1.125, 16, 81, min_half_length=0.5)  # two frames: half a latent frame
    assert t_r - t_l == pytest.approx(1.0)
    assert (t_l + t_r) / 2 == pytest.approx((1.0 + 1.125) / 2 * 16 / 4)
    assert widen(2.0, 6.0, 0.5) == (2.0, 6.0)


@pytest.mark.parametrize("start,end,match", [(2.0, 1.0, "not after"), (1.0, 1.0, "not after"),
                                             (float("nan"), 1.0, "finite"), (0.0, float("inf"), "finite"),
                                             (-1.0, 1.0, "outside"), (0.0, 99.0, "outside"),
                                             (1.0, 1.05, "shorter than one frame")])
def test_bad_intervals_are_rejected_with_the_fix(start, end, match):
    with pytest.raises(IntervalError, match=match):
        interval_to_latent(start, end, 16, 81, name="subject 'dog'")
