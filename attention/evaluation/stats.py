"""Paired differences over seeds: the mean, its 95% Student-t interval, and what it lets us say."""

from __future__ import annotations

import math
import statistics
from typing import Sequence

# Two-sided 95% quantiles of Student's t for 1..30 degrees of freedom (beyond: the normal 1.96).
T975 = [12.706, 4.303, 3.182, 2.776, 2.571, 2.447, 2.365, 2.306, 2.262, 2.228, 2.201, 2.179, 2.160, 2.145, 2.131,
        2.120, 2.110, 2.101, 2.093, 2.086, 2.080, 2.074, 2.069, 2.064, 2.060, 2.056, 2.052, 2.048, 2.045, 2.042]


def t975(df: int) -> float:
    return T975[df - 1] if df <= len(T975) else 1.96


def paired_interval(diffs: Sequence[float]) -> tuple[float, float, float]:
    """Mean of per-seed differences and its 95% t-interval; (mean, nan, nan) from a single seed."""
    mean = statistics.fmean(diffs)
    if len(diffs) < 2:
        return mean, math.nan, math.nan
    half = t975(len(diffs) - 1) * statistics.stdev(diffs) / math.sqrt(len(diffs))
    return mean, mean - half, mean + half


def verdict(low: float, high: float) -> str:
    if math.isnan(low):
        return "no detectable difference (one seed: no interval)"
    return "better" if low > 0 else "worse" if high < 0 else "no detectable difference"
