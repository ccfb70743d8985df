"""Property-based tests (hypothesis) of what user values flow through: interval conversion, the demo CLI's
--subject syntax and the temporal RoPE tables. Every generated input gives a valid result that keeps its
invariants or the clear one-line error (IntervalError / ValueError), never another exception. The timeline JSON
parser has its own in test_timeline.py."""
import math

import pytest
import torch
from hypothesis import given, settings, strategies as st

from alchemint_core.model.config import ROPE_MODES
from alchemint_core.demo.pipeline import parse_subject
from alchemint_core.sampling.intervals import IntervalError, interval_to_latent, latent_frame_count
from alchemint_core.model.rope import (RopeBank, TemporalRope, apply_rope, attention_profile, reference_tables,
                                       temporal_multiplier)
from conftest import TINY

anything = st.one_of(st.floats(allow_nan=True, allow_infinity=True), st.integers(-10**9, 10**9), st.booleans(),
                     st.none(), st.text(max_size=4), st.lists(st.integers(), max_size=2))
seconds = st.one_of(st.floats(-5, 30), st.floats(allow_nan=True, allow_infinity=True), anything)
frame_counts = st.one_of(st.integers(-3, 130), st.sampled_from([1, 5, 17, 81, 4 * 10**6 + 1]), anything)
fps_values = st.one_of(st.floats(0.5, 60), st.floats(allow_nan=True, allow_infinity=True), anything)


def one_line(err: Exception) -> None:
    msg = str(err)
    assert msg and "\n" not in msg and len(msg) < 400, msg


@settings(max_examples=2000, deadline=None)
@given(seconds, seconds, fps_values, frame_counts, st.floats(0, 4))
def test_interval_conversion_gives_a_valid_latent_interval_or_the_clear_error(start, end, fps, frames, half):
    try:
        t_l, t_r = interval_to_latent(start, end, fps, frames, half, name="subject 'x'")
    except IntervalError as err:
        one_line(err)
        return
    t_last = latent_frame_count(frames) - 1
    assert math.isfinite(t_l) and math.isfinite(t_r) and t_l < t_r or (half == 0 and t_l <= t_r)
    assert t_r - t_l >= 2 * half - 1e-9
    mid = (t_l + t_r) / 2
    assert -1e-9 <= mid <= t_last + 1e-9  # widening is about the midpoint, which lies in the clip
    assert (end - start) * fps >= 1 - 1e-5  # at least one pixel frame was asked for


@settings(max_examples=2000, deadline=None)
@given(st.one_of(st.text(max_size=40),
                 st.builds(lambda t, a, b: f"{t}:{a}-{b}", st.text(max_size=12), st.floats(allow_nan=True),
                           st.floats(allow_nan=True, allow_infinity=True))))
def test_subject_syntax_parses_or_says_how_to_write_it(text):
    try:
        s = parse_subject(text)
    except ValueError as err:
        one_line(err)
        return
    assert s.tag and s.tag == " ".join(s.tag.split()) and ":" not in s.tag
    assert isinstance(s.start, float) and isinstance(s.end, float)


BANK = RopeBank(TINY)
weights = st.one_of(st.floats(-3, 3), st.floats(allow_nan=True, allow_infinity=True), anything)


@settings(max_examples=1500, deadline=None)
@given(st.one_of(st.sampled_from(ROPE_MODES), anything), weights, weights, weights,
       st.lists(st.tuples(st.floats(-2, 30), st.floats(0, 10)), min_size=1, max_size=5))
def test_rope_tables_are_finite_bounded_and_shaped_or_the_settings_are_refused(mode, w_mid, w_edge, offset, ivs):
    try:
        rope = TemporalRope(mode, w_mid, w_edge, offset)
    except ValueError as err:
        one_line(err)
        return
    intervals = torch.tensor([[a, a + length] for a, length in ivs], dtype=torch.float64)
    mult = temporal_multiplier(BANK.time, intervals, rope)  # [R, K, 2]
    magnitude = mult.norm(dim=-1)
    assert mult.shape == (len(ivs), len(BANK.time), 2) and torch.isfinite(mult).all()
    bound = {"none": 1.0, "mid": 1.0, "avg": 1.0, "werope": rope.w_mid + 2 * abs(rope.w_edge)}[rope.mode]
    assert (magnitude <= bound + 1e-9).all()
    if rope.mode in ("none", "mid"):
        assert torch.allclose(magnitude, torch.ones_like(magnitude))
    if rope.mode == "werope":  # w_edge in [-w_mid/2, 0]: the gain never flips sign
        assert (magnitude >= rope.w_mid + 2 * rope.w_edge - 1e-9).all()
    ref, tags = reference_tables(BANK, intervals, 2, 3, [1] * len(ivs), rope)
    assert ref.shape == (len(ivs) * 6, BANK.head_dim // 2, 2) and tags.shape == (len(ivs), BANK.head_dim // 2, 2)
    assert torch.isfinite(ref).all() and torch.isfinite(tags).all()
    profile = attention_profile(BANK, tuple(intervals[0].tolist()), rope, torch.linspace(0, 10, 11))
    assert torch.isfinite(profile).all() and (profile.abs() <= bound + 1e-9).all()


@settings(max_examples=300, deadline=None)
@given(st.lists(st.floats(-1e4, 1e4), min_size=1, max_size=8))
def test_plain_rope_rotations_keep_the_norm_of_every_channel_pair(times):
    intervals = torch.tensor([[t, t] for t in times], dtype=torch.float64)
    table = temporal_multiplier(BANK.time, intervals, TemporalRope("mid"))[None]  # [1, R, K, 2]
    x = torch.randn(1, len(times), 1, 2 * len(BANK.time), dtype=torch.float64)
    y = apply_rope(x, table)
    pairs = lambda v: v.reshape(*v.shape[:-1], -1, 2).norm(dim=-1)  # noqa: E731
    assert torch.allclose(pairs(y), pairs(x))


@pytest.mark.parametrize("w_mid", [17626106.0, 5.6e14, 4.0001, 0.0])
def test_weights_outside_the_nodes_range_are_refused_with_the_range(w_mid):
    """Hypothesis once found w_mid=17626106 accepted, and its table then broke the magnitude bound."""
    with pytest.raises(ValueError, match=r"w_mid must be a number in \(0, 4.0\]"):
        TemporalRope("werope", w_mid, 0.0)


@pytest.mark.parametrize("kwargs", [{"w_mid": "heavy"}, {"edge_offset": None}, {"w_edge": [0]}, {"w_mid": True}])
def test_non_numbers_as_weights_are_refused_clearly(kwargs):
    with pytest.raises(ValueError, match="must be a number"):
        TemporalRope("werope", **kwargs)
