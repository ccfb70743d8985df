"""The timeline widget's JSON value: parsing, limits, clip checks; fuzzed."""
import json

import pytest
from hypothesis import given, settings, strategies as st

from alchemint_core.sampling.timeline import (MAX_JSON_BYTES, Bar, TimelineError, check_against_clip, default_timeline,
                                               dump_timeline, latent_intervals, parse_timeline)


def test_round_trip_and_latent_conversion():
    bars = [Bar("red ring", 0.0, 1.0), Bar("blue star", 1.0, 2.125)]
    assert parse_timeline(dump_timeline(bars)) == bars
    assert latent_intervals(bars, 17, 8.0, 0.5) == [(0.0, 2.0), (2.0, 4.0)]


def test_default_bars_tile_the_clip():
    bars = default_timeline(["a", "b"], 17, 8.0)
    assert bars[0].start == 0 and bars[-1].end == pytest.approx(17 / 8) and bars[0].end == bars[1].start


@pytest.mark.parametrize("text,match", [
    ("[1, 2]", "must be an object"), ("{}", "must be an object"), ("not json", "not valid JSON"),
    ('{"subjects": [{"tag": "a", "start": 1, "end": 0.5}]}', "not after start"),
    ('{"subjects": [{"tag": "a", "start": 1, "end": 1}]}', "not after start"),
    ('{"subjects": [{"tag": "a", "start": NaN, "end": 1}]}', "finite"),
    ('{"subjects": [{"tag": "a", "start": "0", "end": 1}]}', "finite"),
    ('{"subjects": [{"tag": "a", "start": true, "end": 1}]}', "finite"),
    ('{"subjects": [{"tag": 5, "start": 0, "end": 1}]}', "tag must be a string"),
    ('{"version": 9, "subjects": []}', "version"),
    ('{"subjects": [3]}', "must be an object"),
])
def test_malformed_values_get_one_line_errors(text, match):
    with pytest.raises(TimelineError, match=match) as err:
        parse_timeline(text)
    assert "\n" not in str(err.value)


def test_hostile_values_are_refused_without_work():
    with pytest.raises(TimelineError, match="larger than"):
        parse_timeline(json.dumps({"subjects": [], "pad": "x" * MAX_JSON_BYTES}))
    with pytest.raises(TimelineError):
        parse_timeline("[" * 100000 + "]" * 100000)
    with pytest.raises(TimelineError, match="at most 64"):
        parse_timeline(json.dumps({"subjects": [{"start": 0, "end": 1}] * 65}))
    with pytest.raises(TimelineError, match="200 characters"):
        parse_timeline(json.dumps({"subjects": [{"tag": "x" * 201, "start": 0, "end": 1}]}))
    assert parse_timeline(json.dumps({"subjects": [{"tag": "<img src=x onerror=alert(1)>", "start": 0, "end": 1}]}))


def test_bars_outside_the_clip_are_refused():
    with pytest.raises(TimelineError, match="outside the clip"):
        check_against_clip([Bar("a", 0.0, 5.0)], 17, 8.0)
    with pytest.raises(TimelineError, match="4k\\+1"):
        check_against_clip([Bar("a", 0.0, 1.0)], 16, 8.0)


number = st.one_of(st.floats(allow_nan=True, allow_infinity=True), st.integers(-10**6, 10**6), st.text(max_size=3),
                   st.booleans(), st.none())
subject = st.dictionaries(st.sampled_from(["tag", "start", "end", "x"]), st.one_of(number, st.text(max_size=5)))


@settings(max_examples=1500, deadline=None)
@given(st.one_of(st.fixed_dictionaries({"subjects": st.lists(subject, max_size=6)}), st.text(max_size=60),
                 st.lists(number, max_size=4)))
def test_any_value_parses_to_valid_bars_or_the_clear_error(value):
    text = value if isinstance(value, str) else json.dumps(value)
    try:
        bars = parse_timeline(text)
    except TimelineError:
        return
    for b in bars:
        assert b.end > b.start and all(abs(v) < float("inf") for v in (b.start, b.end))
    try:
        iv = latent_intervals(bars, 17, 8.0, 0.5)
    except (TimelineError, ValueError) as err:
        assert "\n" not in str(err)
        return
    for t_l, t_r in iv:
        assert -0.5 <= t_l < t_r <= 4.5 and t_r - t_l >= 1.0 - 1e-9
