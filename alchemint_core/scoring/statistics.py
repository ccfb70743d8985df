"""Confidence intervals of a benchmark's means over subjects."""
from __future__ import annotations

import math

import numpy as np

RESAMPLES = 2000


def bootstrap_ci(values, level: float = 0.95, resamples: int = RESAMPLES, seed: int = 0) -> tuple[float, float, float]:
    """Mean and its percentile-bootstrap confidence interval over the given values (None and NaN are left out: a
    subject without a CLIP score, e.g. one never found, does not count towards that column). Seeded: the same
    values always give the same interval."""
    v = np.asarray([x for x in values if x is not None and not math.isnan(x)], np.float64)
    if not len(v):
        return math.nan, math.nan, math.nan
    if len(v) == 1:
        return float(v[0]), float(v[0]), float(v[0])
    means = np.random.default_rng(seed).choice(v, size=(resamples, len(v)), replace=True).mean(1)
    tail = (1 - level) / 2 * 100
    return float(v.mean()), float(np.percentile(means, tail)), float(np.percentile(means, 100 - tail))
