"""Verdicts on paired differences: exact t quantiles, the interval rule, levers sharing alpha, each edge, seeds to
resolve, and the error rates of a whole comparison by simulation.

Expected numbers are computed here by hand (closed forms, printed t tables, the formula) or by simulation with a
rule written out again in numpy, not by calling the code under test.
"""

from __future__ import annotations

import math
import statistics

import numpy as np
import pytest
from scipy import stats as sps

from attention.evaluation.stats import (DEFAULT_MARGIN, KINDS, judge, judge_arrays, paired_interval, power,
                                        seeds_needed, t_quantile)

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


def test_better_by_more_than_the_margin_needs_the_whole_interval_beyond_it():
    diffs = [0.03, 0.04, 0.05]  # mean 0.04, sd 0.01: the interval [0.0152, 0.0648] lies above +0.01
    mean, low, high = hand_interval(diffs, T2)
    v = judge(diffs, margin=0.01)
    assert (v.mean, v.low, v.high) == pytest.approx((mean, low, high)) and v.n == 3 and v.level == 0.95
    assert low > 0.01 and v.kind == "better" and v.beyond and v.text() == "better, by more than 0.010"
    w = judge([-d for d in diffs])
    assert w.kind == "worse" and w.beyond and w.text() == "worse, by more than 0.010"
    assert paired_interval(diffs) == pytest.approx((mean, low, high))
    # The row: a mean at the margin with an interval from about 0 used to read "better, by more than 0.010"
    diffs = [0.0045, 0.012, 0.0195]  # mean 0.012, sd 0.0075: [-0.0066, +0.0306]: holds 0, undecided
    assert judge(diffs).kind == "undecided"
    diffs = [0.008, 0.012, 0.016]  # mean 0.012, sd 0.004: [+0.0021, +0.0219]: above 0, reaching into the band
    mean, low, high = hand_interval(diffs, T2)
    v = judge(diffs)
    assert v.kind == "better" and not v.beyond and 0 < low < 0.01 < mean
    assert v.text() == f"better; gain between {low:+.3f} and {high:+.3f}" == "better; gain between +0.002 and +0.022"
    w = judge([-d for d in diffs])
    assert w.kind == "worse" and w.text() == "worse; loss between 0.002 and 0.022" and w.shade == "worse-small"


def test_a_real_but_small_difference_says_its_gain_and_equivalence_takes_a_band_that_holds_it():
    z = np.array([-1.5, -1.0, -0.5, 0.0, 0.5, 1.0, 1.5, -0.25, 0.25, 0.0])
    diffs = list(0.008 + 0.004 * z / statistics.stdev(z))  # mean 0.008, sd 0.004, 10 seeds
    t9 = 2.262  # t(0.975, 9), tables
    half = t9 * 0.004 / math.sqrt(10)
    assert 0 < 0.008 - half and 0.008 + half > 0.01  # excludes zero, pokes out of the ±0.01 band
    v = judge(diffs, margin=0.01)
    assert v.kind == "better" and not v.beyond and v.low == pytest.approx(0.008 - half, abs=1e-5)
    assert v.text() == f"better; gain between {0.008 - half:+.3f} and {0.008 + half:+.3f}"
    strict = judge(diffs, margin=0.0)  # no margin: "better", and the gain is what it says, never "by more than 0"
    assert strict.kind == "better" and strict.text().startswith("better; gain between +0.005")
    assert judge(diffs, margin=0.02).kind == "equivalent"  # the interval [0.0051, 0.0109] lies within ±0.02
    # an interval within the band and above 0 is equivalent: consistent, and too small to matter
    assert judge(diffs, margin=0.011).kind == "equivalent"


def test_a_consistent_negligible_difference_is_equivalent_not_worse():
    # The README's CBAM, fine-tuned for 3 epochs: -0.00048, -0.00042, -0.00031 AP_tiny per seed
    diffs = [-0.00048, -0.00042, -0.00031]
    mean, low, high = hand_interval(diffs, T2)
    assert high < 0  # the plain t-test calls it worse: true, and useless
    v = judge(diffs)
    assert v.kind == "equivalent" and v.text() == f"equivalent, within ±{DEFAULT_MARGIN:.3f}"
    assert judge(diffs, margin=0.0).kind == "worse"


def test_interval_ends_on_the_margin_or_on_zero_claim_nothing_beyond_them():
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
    sd1 = 0.01 * math.sqrt(3) / T2  # mean 0.02 with a half-width of 0.01: the interval starts on +m
    v = judge([0.02 - sd1, 0.02, 0.02 + sd1], margin=m)
    assert v.low == pytest.approx(m, abs=1e-15) and v.kind == "better" and not v.beyond  # on it: not beyond it
    assert judge([0.02 - 0.98 * sd1, 0.02, 0.02 + 0.98 * sd1], margin=m).beyond


def test_levers_of_one_comparison_share_alpha_bonferroni():
    diffs = [0.03, 0.04, 0.05]
    for k in (1, 2, 7):
        t = sps.t.ppf(1 - 0.05 / (2 * k), 2)  # each lever's interval at 1 - 5% / K
        mean, low, high = hand_interval(diffs, t)
        v = judge(diffs, family=k)
        assert (v.low, v.high) == pytest.approx((low, high)) and v.level == pytest.approx(1 - 0.05 / k)
        assert v.family == k
    assert t == pytest.approx(11.8, abs=0.1)  # 7 levers, 3 seeds: t(2 df) at 99.29%
    assert judge(diffs, family=7).kind == "undecided"  # [-0.028, +0.108]: the price of judging 7 levers on 3 seeds


def test_zero_spread_and_near_zero_spread_never_give_a_zero_width_better():
    v = judge([0.02, 0.02, 0.02], margin=0.01)
    assert v.kind == "undecided" and "no spread" in v.text() and (v.low, v.high) == (0.02, 0.02)
    assert seeds_needed(v.mean, v.sd) is None
    assert judge([0.005] * 4, margin=0.01).kind == "equivalent"  # within the margin on every seed
    assert judge([0.0, 0.0, 0.0], margin=0.0).kind == "equivalent"  # identical runs, even with no margin
    # Equal differences up to float rounding (v - b of different seeds) are still no spread
    diffs = [(b + 0.02) - b for b in (0.1, 0.2, 0.3)]  # 0.020000000000000004, 0.01999999999999999, ...
    assert statistics.stdev(diffs) > 0 and judge(diffs, margin=0.0).kind == "undecided"
    # Near-constant: an sd of 2e-6 on 0.02 passed the old absolute 1e-9 and gave "better" with a zero-width interval
    near = [0.02, 0.02 * (1 + 1e-4), 0.02 * (1 - 1e-4)]
    assert statistics.stdev(near) > 1e-9 and judge(near, margin=0.0).kind == "undecided"
    assert "no spread" in judge(near).note and seeds_needed(0.02, statistics.stdev(near)) is None
    # The same relative spread in percent (AP x 100) is the same verdict: the threshold has no units
    assert judge([100 * d for d in near], margin=0.0).note == judge(near, margin=0.0).note
    # Real spread, however small in absolute terms, is judged: 0.0004 +- 0.00008 (sd / mean = 0.2)
    assert judge([-0.00048, -0.00042, -0.00031], margin=0.0).note == ""


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


@pytest.mark.parametrize("mean,sd,n,alpha", [(0.01, 0.02, 10, 0.05), (0.03, 0.02, 3, 0.05), (-0.02, 0.01, 5, 0.05),
                                          (0.005, 0.01, 30, 0.05), (0.02, 0.01, 6, 0.05 / 7)])
def test_power_without_a_margin_is_the_noncentral_t_power_of_the_paired_t_test(mean, sd, n, alpha):
    t = sps.t.ppf(1 - alpha / 2, n - 1)
    expected = sps.nct.sf(t, n - 1, abs(mean) * math.sqrt(n) / sd)  # P(T > t), T ~ t'(n - 1, ncp)
    assert power(mean, sd, n, margin=0.0, alpha=alpha) == pytest.approx(expected, abs=5e-4)


def simulated_rate(mean, sd, n, margin, alpha=0.05, reps=6000, seed=0):
    """How often the rule (written out again here) gives a right verdict on a true (mean, sd), on n seeds."""
    d = np.random.default_rng(seed).normal(mean, sd, (reps, n))
    m, s = d.mean(1), d.std(1, ddof=1)
    half = sps.t.ppf(1 - alpha / 2, n - 1) * s / math.sqrt(n)
    low, high = m - half, m + half
    inside = (low >= -margin) & (high <= margin)
    better, worse = (low > 0) & ~inside, (high < 0) & ~inside
    if mean > margin:
        hit = better
    elif mean < -margin:
        hit = worse
    elif mean > 0:  # equivalent, or better without claiming more than the margin
        hit = inside | (better & (low <= margin))
    else:
        hit = inside | (worse & (high >= -margin))
    return hit.mean()


@pytest.mark.parametrize("mean,sd,margin,levers", [(0.028, 0.0157, 0.01, 1),  # the README's slicing
                                                   (0.028, 0.0157, 0.01, 7),  # ... judged among 7 levers
                                                   (0.01, 0.02, 0.0, 1),  # the plain t-test
                                                   (0.002, 0.006, 0.01, 2),  # towards equivalence
                                                   (0.008, 0.004, 0.01, 4),  # small and real: better or equivalent
                                                   (0.01, 0.004, 0.01, 1)])  # on the margin
def test_the_seeds_to_resolve_give_about_80_percent_by_simulation(mean, sd, margin, levers):
    alpha = 0.05 / levers
    n = seeds_needed(mean, sd, margin, alpha, start=2)
    assert n is not None and power(mean, sd, n, margin, alpha) >= 0.8 > power(mean, sd, n - 1, margin, alpha)
    rate = simulated_rate(mean, sd, n, margin, alpha)
    assert rate == pytest.approx(float(power(mean, sd, n, margin, alpha)), abs=0.02) and rate > 0.77
    if levers > 1:  # sharing alpha costs seeds
        assert n > seeds_needed(mean, sd, margin, 0.05, start=2)


def test_seeds_needed_says_none_where_no_count_can_tell():
    assert seeds_needed(0.0, 0.02, margin=0.0) is None  # no difference to resolve
    assert seeds_needed(0.01, 0.2, margin=0.0) is None  # more than 200 seeds
    assert seeds_needed(math.nan, 0.01) is None and seeds_needed(0.01, math.nan) is None


def null_comparison(variants, modes, seeds, reps, rng, effect=0.0, run_sd=0.01, mode_sd=0.005):
    """Per-seed differences of (reps, K, seeds) simulated comparisons, K = variants x modes - 1 levers, as compare
    makes them: each (variant, seed) run has its own noise, shared by the ways of inferring of that run (plus a
    little per way), and every lever is paired with the first variant's first way, so the levers share its noise."""
    runs = rng.normal(0, run_sd, (reps, variants, 1, seeds)) + rng.normal(0, mode_sd, (reps, variants, modes, seeds))
    runs[:, 1:] += effect  # every variant but the baseline's
    return (runs - runs[:, :1, :1]).reshape(reps, variants * modes, seeds)[:, 1:]


@pytest.mark.parametrize("variants,modes", [(3, 1), (5, 1), (3, 3)])  # 2, 4 and 8 levers; 8 with 3 ways of inferring
@pytest.mark.parametrize("margin", [0.0, 0.01])
def test_with_no_lever_doing_anything_any_better_or_worse_in_the_table_is_at_most_5_percent(variants, modes, margin):
    d = null_comparison(variants, modes, 3, 20000, np.random.default_rng(variants * modes))
    reps, k, n = d.shape
    kinds = judge_arrays(d.reshape(-1, n), margin, family=k)["kind"].reshape(reps, k)
    any_false = np.isin(kinds, (KINDS.index("better"), KINDS.index("worse"))).any(axis=1).mean()
    assert any_false <= 0.05
    m, s = d.mean(2), d.std(2, ddof=1)  # each lever alone at 95%, as before: the simulation sees the difference
    half = sps.t.ppf(0.975, n - 1) * s / math.sqrt(n)
    alone = (((m - half > 0) | (m + half < 0)) & ~((m - half >= -margin) & (m + half <= margin))).any(axis=1).mean()
    assert alone > {2: 0.08, 4: 0.14, 8: 0.2}[k] > any_false


@pytest.mark.parametrize("levers", [1, 4])
def test_at_a_true_difference_on_the_margin_by_more_than_the_margin_is_at_most_5_percent(levers):
    d = null_comparison(levers + 1, 1, 3, 20000, np.random.default_rng(levers), effect=0.01, run_sd=0.001,
                        mode_sd=0.0005)
    reps, k, n = d.shape
    a = judge_arrays(d.reshape(-1, n), 0.01, family=k)
    assert a["beyond"].reshape(reps, k).any(axis=1).mean() <= 0.05
    better = a["kind"] == KINDS.index("better")
    assert better.mean() > 0.5  # what it says instead: better, with the gain the interval gives
    m = d.mean(2)  # the old rule: the interval above 0 and the MEAN beyond the margin, about half the time
    old = (m - sps.t.ppf(0.975, n - 1) * d.std(2, ddof=1) / math.sqrt(n) > 0) & (m > 0.01)
    assert old.mean() > 0.4


def test_the_recorded_comparisons_rejudged_from_the_per_seed_scores_in_results_md():
    import importlib.util
    import re

    from conftest import REPO

    spec = importlib.util.spec_from_file_location("rejudge", REPO / "benchmarks" / "rejudge.py")
    rejudge = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(rejudge)
    log = (REPO / "benchmarks" / "RESULTS.md").read_text()
    # the script's scores are the log's: compare-n's per-run lines, compare-large's (CBAM as its recorded differences)
    for variant, seed, score in re.findall(r"\n(yolov5n[\w-]*) seed (\d): AP_tiny (0\.\d+) \(full 320\)", log):
        assert rejudge.COMPARE_N["scores"][variant][("full", 320)][int(seed)] == float(score)
    large = re.findall(r"\] (yolov5n[\w-]*) seed (\d): AP_tiny (0\.\d+) \(full 1920\), (0\.\d+) \(sliced 640\)", log)
    assert len(large) == 12
    for variant, seed, full, sliced in large:
        got = rejudge.COMPARE_LARGE["scores"][variant]
        assert (got[rejudge.FULL][int(seed)], got[rejudge.SLICED][int(seed)]) == pytest.approx(
            (float(full), float(sliced)), abs=1e-3 if variant == "yolov5n-cbam" else 0)  # two roundings
    rows, notes, line = rejudge.rejudge(rejudge.COMPARE_LARGE)
    assert "Bonferroni over the 7 levers (each interval at 99.3%)" in notes
    d = [s - b for s, b in zip((0.637, 0.659, 0.608), (0.666, 0.671, 0.652))]  # yolov5n sliced 640 - full 1920
    mean, low, high = hand_interval(d, sps.t.ppf(1 - 0.05 / 14, 2))
    assert rows[1]["ΔAP_tiny [99.3% CI]"] == f"{mean:+.3f} [{low:+.3f}, {high:+.3f}]"
    assert rows[1]["verdict"] == "undecided"
    assert rows[2]["verdict"] == "equivalent, within ±0.010"  # CBAM at identity start: the same model, to 0.001
    assert rows[1]["seeds for 80% power"] == f"~{seeds_needed(mean, statistics.stdev(d), 0.01, 0.05 / 7, start=4)}"
    assert line.startswith("No lever is shown better than the baseline on AP_tiny over 3 seeds.")
