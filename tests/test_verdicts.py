"""Verdicts on paired differences: exact t quantiles, the margin rule, each edge, and seeds for 80% power.

Expected numbers are computed here by hand (closed forms, printed t tables, the formula) or by simulation with a
rule written out again in numpy, not by calling the code under test.
"""

from __future__ import annotations

import math
import statistics

import numpy as np
import pytest
from scipy import stats as sps

from attention.evaluation.stats import DEFAULT_MARGIN, judge, paired_interval, power, seeds_needed, t_quantile

T2 = 0.95 / math.sqrt(2 * 0.975 * 0.025)  # t(0.975, 2 df) in closed form: (2p - 1) / sqrt(2 p (1 - p)) = 4.3027


def hand_interval(diffs, t):
    mean, sd = statistics.fmean(diffs), statistics.stdev(diffs)
    half = t * sd / math.sqrt(len(diffs))
    return mean, mean - half, mean + half


def test_t_quantiles_are_exact_for_any_degrees_of_freedom():
    assert t_quantile(0.05, 1) == pytest.approx(math.tan(math.pi * 0.475), rel=1e-9)  # Cauchy: 12.706
    assert t_quantile(0.05, 2) == pytest.approx(T2, rel=1e-9)
    # Printed tables (two-sided 95%): no jump to the normal's 1.96 past 30 degrees of freedom
    for df, table in ((30, 2.042), (31, 2.040), (40, 2.021), (60, 2.000), (120, 1.980)):
        assert t_quantile(0.05, df) == pytest.approx(table, abs=6e-4)
    assert t_quantile(0.01, 2) == pytest.approx(9.925, abs=1e-3)  # 99% with 2 df (tables)


def test_better_needs_the_interval_above_zero_and_the_mean_beyond_the_margin():
    diffs = [0.03, 0.04, 0.05]  # mean 0.04, sd 0.01
    mean, low, high = hand_interval(diffs, T2)
    v = judge(diffs, margin=0.01)
    assert (v.mean, v.low, v.high) == pytest.approx((mean, low, high)) and v.n == 3 and v.level == 0.95
    assert low > 0 and v.kind == "better" and v.text() == "better, by more than 0.010"
    assert judge([-d for d in diffs]).kind == "worse"
    assert paired_interval(diffs) == pytest.approx((mean, low, high))


def test_a_real_but_small_difference_is_undecided_with_a_margin_and_better_without():
    z = np.array([-1.5, -1.0, -0.5, 0.0, 0.5, 1.0, 1.5, -0.25, 0.25, 0.0])
    diffs = list(0.008 + 0.004 * z / statistics.stdev(z))  # mean 0.008, sd 0.004, 10 seeds
    t9 = 2.262  # t(0.975, 9), tables
    half = t9 * 0.004 / math.sqrt(10)
    assert 0 < 0.008 - half and 0.008 + half > 0.01  # excludes zero, pokes out of the ±0.01 band
    v = judge(diffs, margin=0.01)
    assert v.kind == "undecided" and v.low == pytest.approx(0.008 - half, abs=1e-5)
    assert judge(diffs, margin=0.0).kind == "better"
    assert judge(diffs, margin=0.02).kind == "equivalent"  # the interval [0.0051, 0.0109] lies within ±0.02


def test_a_consistent_negligible_difference_is_equivalent_not_worse():
    # The README's CBAM, fine-tuned for 3 epochs: -0.00048, -0.00042, -0.00031 AP_tiny per seed
    diffs = [-0.00048, -0.00042, -0.00031]
    mean, low, high = hand_interval(diffs, T2)
    assert high < 0  # the plain t-test calls it worse: true, and useless
    v = judge(diffs)
    assert v.kind == "equivalent" and v.text() == f"equivalent, within ±{DEFAULT_MARGIN:.3f}"
    assert judge(diffs, margin=0.0).kind == "worse"


def test_an_interval_touching_the_margin_counts_as_inside_and_one_touching_zero_is_not_beyond_it():
    mean, m = 0.004, 0.01
    sd = (m - mean) * math.sqrt(3) / T2  # half-width exactly m - mean: the interval ends on +m
    diffs = [mean - sd, mean, mean + sd]
    v = judge(diffs, margin=m)
    assert v.high == pytest.approx(m, abs=1e-15) and v.kind == "equivalent"
    assert judge([mean - 1.02 * sd, mean, mean + 1.02 * sd], margin=m).kind == "undecided"  # just beyond it
    sd0 = 0.02 * math.sqrt(3) / T2  # mean 0.02 with a half-width of 0.02: the interval starts at 0
    v = judge([0.02 - sd0, 0.02, 0.02 + sd0], margin=m)
    assert v.low == pytest.approx(0, abs=1e-15) and v.kind == "undecided"
    assert judge([0.02 - 0.98 * sd0, 0.02, 0.02 + 0.98 * sd0], margin=m).kind == "better"


def test_zero_variance_never_gives_a_zero_width_better():
    v = judge([0.02, 0.02, 0.02], margin=0.01)
    assert v.kind == "undecided" and "no spread" in v.text() and (v.low, v.high) == (0.02, 0.02)
    assert seeds_needed(v.mean, v.sd) is None
    assert judge([0.005] * 4, margin=0.01).kind == "equivalent"  # within the margin on every seed
    assert judge([0.0, 0.0, 0.0], margin=0.0).kind == "equivalent"  # identical runs, even with no margin
    # Equal differences up to float rounding (v - b of different seeds) are still no spread
    diffs = [(b + 0.02) - b for b in (0.1, 0.2, 0.3)]  # 0.020000000000000004, 0.01999999999999999, ...
    assert statistics.stdev(diffs) > 0 and judge(diffs, margin=0.0).kind == "undecided"


def test_one_seed_nan_and_nothing_to_pair():
    v = judge([0.03])
    assert v.kind == "undecided" and v.text() == "undecided: one seed, no interval" and math.isnan(v.low)
    assert v.interval() == "+0.030 (one seed)"
    v = judge([0.03, math.nan, 0.05, 0.04], margin=0.01)  # a NaN score: left out, the rest judged
    mean, low, high = hand_interval([0.03, 0.05, 0.04], T2)
    assert (v.kind, v.n, v.left_out) == ("better", 3, 1) and (v.low, v.high) == pytest.approx((low, high))
    v = judge([math.nan, math.nan])
    assert v.kind == "n/a" and v.interval() == "n/a" and v.left_out == 2
    assert judge([]).kind == "n/a"


@pytest.mark.parametrize("mean,sd,n", [(0.01, 0.02, 10), (0.03, 0.02, 3), (-0.02, 0.01, 5), (0.005, 0.01, 30)])
def test_power_without_a_margin_is_the_noncentral_t_power_of_the_paired_t_test(mean, sd, n):
    t = sps.t.ppf(0.975, n - 1)
    expected = sps.nct.sf(t, n - 1, abs(mean) * math.sqrt(n) / sd)  # P(T > t), T ~ t'(n - 1, ncp)
    assert power(mean, sd, n, margin=0.0) == pytest.approx(expected, abs=5e-4)


def simulated_rate(mean, sd, n, margin, reps=4000, seed=0):
    """How often the rule (written out again here) gives the verdict a true (mean, sd) deserves, on n seeds."""
    d = np.random.default_rng(seed).normal(mean, sd, (reps, n))
    m, s = d.mean(1), d.std(1, ddof=1)
    half = sps.t.ppf(0.975, n - 1) * s / math.sqrt(n)
    if mean > margin:
        hit = (m - half > 0) & (m > margin)
    elif mean < -margin:
        hit = (m + half < 0) & (m < -margin)
    else:
        hit = (m - half >= -margin) & (m + half <= margin)
    return hit.mean()


@pytest.mark.parametrize("mean,sd,margin", [(0.028, 0.0157, 0.01),  # the README's slicing: ~5 seeds
                                            (0.01, 0.02, 0.0),  # the plain t-test
                                            (0.002, 0.006, 0.01)])  # towards equivalence
def test_the_suggested_seeds_give_about_80_percent_by_simulation(mean, sd, margin):
    n = seeds_needed(mean, sd, margin, start=2)
    assert n is not None and power(mean, sd, n, margin) >= 0.8 > power(mean, sd, n - 1, margin)
    rate = simulated_rate(mean, sd, n, margin)
    assert rate == pytest.approx(float(power(mean, sd, n, margin)), abs=0.025) and rate > 0.77


def test_seeds_needed_says_none_where_no_count_can_tell():
    assert seeds_needed(0.0, 0.02, margin=0.0) is None  # no difference to resolve
    assert seeds_needed(0.01, 0.2, margin=0.0) is None  # more than 200 seeds
    assert seeds_needed(math.nan, 0.01) is None and seeds_needed(0.01, math.nan) is None
