"""Seeds added only to undecided levers: the plan's looks and alpha shares split among levers, decisions, and the
whole comparison's wrong verdicts by simulation."""

from __future__ import annotations

import math
import numpy as np
import pytest
from scipy import stats as sps

from attention.errors import UserError
from attention.evaluation.sequential import Plan, decide, seeds_per_variant
from attention.evaluation.stats import power


def test_the_looks_and_their_alpha_shares_are_fixed_by_the_plan():
    plan = Plan(3, 10)
    assert plan.looks == (3, 6, 10)
    shares = [plan.alpha_at(n) for n in plan.looks]
    assert shares == pytest.approx([0.05 * 0.09, 0.05 * (0.36 - 0.09), 0.05 * (1 - 0.36)]) and sum(shares) == 0.05
    assert Plan(3, 13).looks == (3, 6, 13) and Plan(3, 8).looks == (3, 8) and Plan(2, 20).looks == (2, 4, 8, 20)
    assert Plan(1, 5).looks == (2, 5)  # one seed is no look: the first is at two
    assert Plan.single(3).looks == (3,) and Plan.single(3).alpha_at(3) == 0.05
    assert [plan.look_at(n) for n in (2, 3, 5, 6, 9, 10, 12)] == [0, 3, 3, 6, 6, 10, 10]
    with pytest.raises(UserError, match="1 <= first <= cap"):
        Plan(4, 3)
    with pytest.raises(UserError, match="margin"):
        Plan(3, 10, margin=-0.01)


def test_decisions_and_what_each_lever_wants():
    plan = Plan(3, 10, margin=0.01)
    levers = {"flat0": [0.0005, 0.0004, 0.0006], "noisy": [0.03, 0.02, 0.045], "one": [0.01], "flat": [0.03] * 3,
              "late": [0.02, -0.01, 0.05, 0.03, 0.02, 0.04, 0.01, 0.03], "far": [0.015, -0.01, 0.02]}
    out = decide(levers, plan)  # 6 levers share alpha: each look's share divided by 6
    share = plan.alpha_at(3) / 6
    t = sps.t.ppf(1 - share / 2, 2)  # the first look's interval: 99.925%, t(2 df) = 36.5
    eq = out["flat0"]
    assert eq.verdict.kind == "equivalent" and eq.look == 3 and eq.wants == 3 and eq.enough
    assert eq.verdict.level == pytest.approx(1 - share) and eq.verdict.family == 6
    half = t * np.std(levers["flat0"], ddof=1) / math.sqrt(3)
    assert eq.verdict.high == pytest.approx(0.0005 + half)
    d = out["noisy"]
    assert d.verdict.kind == "undecided" and d.look == 3
    mean, sd = np.mean(levers["noisy"]), np.std(levers["noisy"], ddof=1)
    reach = [n for n in (6, 10) if power(mean, sd, n, 0.01, plan.alpha_at(n) / 6) >= 0.8]
    assert reach and d.wants == reach[0] and d.enough
    far = out["far"]  # a small mean with a large spread: even the cap gives it < 80% power; it asks for the cap
    mean, sd = np.mean(levers["far"]), np.std(levers["far"], ddof=1)
    assert power(mean, sd, 10, 0.01, plan.alpha_at(10) / 6) < 0.8 and far.wants == 10 and not far.enough
    assert out["one"].look == 0 and out["one"].wants == 3 and "waiting for the first 3 seeds" in out["one"].verdict.note
    assert out["flat"].verdict.kind == "undecided" and out["flat"].wants == 6  # no spread: one look further
    assert not out["flat"].enough
    late = out["late"]  # 8 seeds (its variant ran more for another lever): judged at the look of 6, on the first 6
    assert late.look == 6 and late.verdict.n == 6
    assert late.verdict.mean == pytest.approx(np.mean(levers["late"][:6]))
    assert late.verdict.level == pytest.approx(1 - plan.alpha_at(6) / 6)
    alone = decide({"noisy": levers["noisy"]}, plan)["noisy"]  # one lever: the look's whole share
    assert alone.verdict.level == pytest.approx(1 - plan.alpha_at(3)) and alone.verdict.family == 1
    assert decide(levers, plan, family=2)["flat0"].verdict.level == pytest.approx(1 - plan.alpha_at(3) / 2)


def test_the_baseline_variant_gets_every_seed_any_lever_wants():
    wants = {("a", "full"): 6, ("a", "sliced"): 3, ("b", "full"): 10, ("base", "sliced"): 3}
    assert seeds_per_variant(wants, "base") == {"a": 6, "b": 10, "base": 10}
    assert seeds_per_variant({}, "base") == {"base": 0}


def run_adaptive(diffs, variant_of, plan):
    """The loop compare runs, on simulated differences (reps, K levers, cap seeds): every replicate is one comparison
    whose K levers share alpha; seeds go per variant (variant_of[j]: lever j's; 0 is the baseline's, which gets the
    most any lever of its comparison wants), so a lever may get more seeds than it asked for.
    Returns each lever's verdict kind and whether it claims more than the margin, (reps, K), and the seeds per variant.
    """
    reps, k, _ = diffs.shape
    variant_of = np.asarray(variant_of)
    have = np.full((reps, variant_of.max() + 1), plan.first)
    while True:
        out = decide({(r, j): diffs[r, j, :have[r, variant_of[j]]] for r in range(reps) for j in range(k)}, plan, k)
        wants = np.array([[out[(r, j)].wants for j in range(k)] for r in range(reps)])
        per_variant = np.stack([wants[:, variant_of == v].max(1, initial=0) for v in range(have.shape[1])], 1)
        per_variant[:, 0] = wants.max(1)
        grown = np.maximum(have, per_variant)
        if (grown == have).all():
            break
        have = grown
    kinds = np.array([[out[(r, j)].verdict.kind for j in range(k)] for r in range(reps)])
    beyond = np.array([[out[(r, j)].verdict.beyond for j in range(k)] for r in range(reps)])
    return kinds, beyond, have


def comparisons(variants, modes, cap, reps, seed, effect=0.0, run_sd=0.01, mode_sd=0.005):
    """(diffs, variant_of) of reps simulated comparisons of variants x modes - 1 levers against the first variant's
    first mode: a run's noise shared by its ways of inferring, the baseline's shared by every lever."""
    rng = np.random.default_rng(seed)
    runs = rng.normal(0, run_sd, (reps, variants, 1, cap)) + rng.normal(0, mode_sd, (reps, variants, modes, cap))
    runs[:, 1:] += effect
    diffs = (runs - runs[:, :1, :1]).reshape(reps, variants * modes, cap)[:, 1:]
    return diffs, np.arange(1, variants * modes) // modes


def uncorrected_false_rate(diffs, margin, looks):
    """The same looks, each lever at each look with an ordinary 95% interval: any lever called better or worse."""
    called, done = np.zeros(diffs.shape[:2], bool), np.zeros(diffs.shape[:2], bool)
    for n in looks:
        m, s = diffs[..., :n].mean(-1), diffs[..., :n].std(-1, ddof=1)
        half = sps.t.ppf(0.975, n - 1) * s / math.sqrt(n)
        inside = (m - half >= -margin) & (m + half <= margin)
        firm = ((m - half > 0) | (m + half < 0)) & ~inside
        called |= firm & ~done
        done |= firm | inside
    return called.any(axis=1).mean()


@pytest.mark.parametrize("variants,modes,margin", [(3, 1, 0.0), (5, 1, 0.0), (3, 3, 0.0), (3, 1, 0.01)])
def test_with_no_lever_doing_anything_any_better_or_worse_in_the_table_is_at_most_5_percent(variants, modes, margin):
    plan = Plan(3, 10, margin=margin)  # 2, 4 and 8 levers; 8 with three ways of inferring of each variant
    diffs, variant_of = comparisons(variants, modes, plan.cap, 1000, seed=variants * modes)
    kinds, _, _ = run_adaptive(diffs, variant_of, plan)
    false = np.isin(kinds, ("better", "worse")).any(axis=1).mean()
    assert false <= 0.05
    if margin == 0:  # neither the looks nor the levers corrected: the simulation can see the difference
        assert uncorrected_false_rate(diffs, margin, plan.looks) > 0.12 > false


@pytest.mark.parametrize("variants", [2, 5])
def test_at_a_true_difference_on_the_margin_by_more_than_the_margin_is_at_most_5_percent(variants):
    plan = Plan(3, 10, margin=0.01)  # 1 and 4 levers, each truly 0.01 better
    diffs, variant_of = comparisons(variants, 1, plan.cap, 1000, seed=variants, effect=0.01, run_sd=0.002,
                                    mode_sd=0.001)
    kinds, beyond, have = run_adaptive(diffs, variant_of, plan)
    assert (beyond & (kinds == "better")).any(axis=1).mean() <= 0.05
    assert (kinds == "better").mean() > 0.5  # it says better, with the gain the interval gives


@pytest.mark.parametrize("mean,sd,kind", [(0.03, 0.01, "better"), (-0.035, 0.012, "worse"), (0.0, 0.003, "equivalent")])
def test_with_a_real_difference_or_a_negligible_one_it_mostly_decides(mean, sd, kind):
    plan = Plan(3, 10, margin=0.01)  # per comparison one variant with two ways of inferring, both of `mean`
    diffs = np.random.default_rng(0).normal(mean, sd, (1500, 2, plan.cap))
    kinds, _, have = run_adaptive(diffs, [1, 1], plan)
    assert (kinds == kind).mean() >= 0.9
    assert have[:, 1].mean() < 9  # and not by running every lever to the cap
