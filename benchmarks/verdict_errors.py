"""How often the verdicts are wrong, by simulation: whole comparisons, fixed and adaptive seeds (docs/verdicts.md).

Every simulated comparison is built as compare builds one: variants x ways of inferring, each (variant, seed) run
with its own noise shared by its ways of inferring (plus a little per way), every lever paired by seed with the
first variant's first way, so the levers share the baseline's noise. Verdicts come from the project's own code:
stats.judge_arrays for fixed seeds, sequential.decide in compare's loop for adaptive ones. "Before" is the same code
with each lever at the whole 5% (family=1, the rule before issue 27) and, for the margin claim, the old rule
written out (the interval above 0 and the MEAN beyond the margin).

Usage: python benchmarks/verdict_errors.py [--reps 20000] [--adaptive-reps 2000]      (about a minute on 2 cores)
"""

from __future__ import annotations

import argparse
import math
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:  # run as `python benchmarks/verdict_errors.py` from anywhere
    sys.path.insert(0, str(REPO))

import numpy as np  # noqa: E402

from attention.evaluation.sequential import Plan, decide  # noqa: E402
from attention.evaluation.stats import KINDS, judge_arrays, t_quantile  # noqa: E402

SHAPES = {1: (2, 1), 2: (3, 1), 4: (5, 1), 8: (3, 3)}  # levers -> (variants, ways of inferring); 8: three ways each
BETTER, WORSE = KINDS.index("better"), KINDS.index("worse")


def comparisons(levers: int, seeds: int, reps: int, seed: int, effect: float = 0.0, run_sd: float = 0.01,
                mode_sd: float = 0.005) -> tuple[np.ndarray, np.ndarray]:
    """(diffs (reps, levers, seeds), each lever's variant) of simulated comparisons; other variants than the
    baseline's +effect."""
    variants, modes = SHAPES[levers]
    rng = np.random.default_rng(seed)
    runs = rng.normal(0, run_sd, (reps, variants, 1, seeds)) + rng.normal(0, mode_sd, (reps, variants, modes, seeds))
    runs[:, 1:] += effect
    diffs = (runs - runs[:, :1, :1]).reshape(reps, variants * modes, seeds)[:, 1:]
    return diffs, np.arange(1, variants * modes) // modes


def fixed(diffs: np.ndarray, margin: float, family: int) -> dict[str, np.ndarray]:
    reps, k, n = diffs.shape
    a = judge_arrays(diffs.reshape(-1, n), margin, family=family)
    return {key: v.reshape(reps, k) for key, v in a.items()}


def adaptive(diffs: np.ndarray, variant_of: np.ndarray, plan: Plan, family: int
             ) -> tuple[np.ndarray, np.ndarray, float]:
    """compare's loop: decide, seeds per variant (the baseline's: the most any lever wants), until nothing grows."""
    reps, k, _ = diffs.shape
    have = np.full((reps, variant_of.max() + 1), plan.first)
    while True:
        out = decide({(r, j): diffs[r, j, :have[r, variant_of[j]]] for r in range(reps) for j in range(k)}, plan,
                     family)
        wants = np.array([[out[(r, j)].wants for j in range(k)] for r in range(reps)])
        per = np.stack([wants[:, variant_of == v].max(1, initial=0) for v in range(have.shape[1])], 1)
        per[:, 0] = wants.max(1)
        grown = np.maximum(have, per)
        if (grown == have).all():
            break
        have = grown
    kinds = np.array([[out[(r, j)].verdict.kind for j in range(k)] for r in range(reps)])
    beyond = np.array([[out[(r, j)].verdict.beyond for j in range(k)] for r in range(reps)])
    return kinds, beyond, float(have.mean())


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--reps", type=int, default=20000, help="simulated comparisons per fixed-seeds figure")
    p.add_argument("--adaptive-reps", type=int, default=2000, help="simulated comparisons per adaptive figure")
    a = p.parse_args()
    start = time.time()
    plan0, plan1 = Plan(3, 10, margin=0.0), Plan(3, 10, margin=0.01)

    print(f"Chance of any 'better' or 'worse' among K levers that all do nothing ({a.reps} comparisons of 3 fixed "
          f"seeds; {a.adaptive_reps} adaptive, 3 to 10 seeds):\n")
    print("| levers K | margin | fixed, before | fixed, now | adaptive, before | adaptive, now |")
    print("|--:|--:|--:|--:|--:|--:|")
    for k in (1, 2, 4, 8):
        for margin, plan in ((0.0, plan0), (0.01, plan1)):
            d3, _ = comparisons(k, 3, a.reps, seed=k)
            cells = []
            for family in (1, k):
                kind = fixed(d3, margin, family)["kind"]
                cells.append(np.isin(kind, (BETTER, WORSE)).any(axis=1).mean())
            d10, variant_of = comparisons(k, plan.cap, a.adaptive_reps, seed=100 + k)
            for family in (1, k):
                kinds, _, _ = adaptive(d10, variant_of, plan, family)
                cells.append(np.isin(kinds, ("better", "worse")).any(axis=1).mean())
            print(f"| {k} | {margin:.2f} | " + " | ".join(f"{c:.1%}" for c in cells) + " |")

    print("\nChance of 'better, by more than 0.010' when every lever is truly 0.010 better (sd of a difference "
          "about 0.002):\n")
    print("| levers K | fixed, before (mean beyond the margin) | fixed, now | adaptive, now | any 'better', now |")
    print("|--:|--:|--:|--:|--:|")
    for k in (1, 4):
        d3, _ = comparisons(k, 3, a.reps, seed=200 + k, effect=0.01, run_sd=0.001, mode_sd=0.0005)
        m, s = d3.mean(2), d3.std(2, ddof=1)
        old = ((m - t_quantile(0.05, 2) * s / math.sqrt(3) > 0) & (m > 0.01)).any(axis=1).mean()
        now = fixed(d3, 0.01, k)
        strong = (now["beyond"] & (now["kind"] == BETTER)).any(axis=1).mean()
        d10, variant_of = comparisons(k, 10, a.adaptive_reps, seed=300 + k, effect=0.01, run_sd=0.001, mode_sd=0.0005)
        kinds, beyond, _ = adaptive(d10, variant_of, plan1, k)
        print(f"| {k} | {old:.1%} | {strong:.1%} | {(beyond & (kinds == 'better')).any(axis=1).mean():.1%} | "
              f"{(now['kind'] == BETTER).mean():.1%} |")

    print("\nAdaptive seeds (3 to 10, margin 0.010), one variant with two ways of inferring, both of the same true "
          "difference:\n")
    print("| true difference, sd | right verdict | mean seeds |")
    print("|---|--:|--:|")
    for mean, sd, right in ((0.03, 0.01, "better"), (-0.035, 0.012, "worse"), (0.0, 0.003, "equivalent"),
                            (0.02, 0.01, "better")):
        d = np.random.default_rng(7).normal(mean, sd, (a.adaptive_reps, 2, 10))
        kinds, _, seeds = adaptive(d, np.array([1, 1]), plan1, 2)
        print(f"| {mean:+.3f}, {sd:.3f} | {(kinds == right).mean():.1%} {right} | {seeds:.1f} |")
    print(f"\n({time.time() - start:.0f} s)")


if __name__ == "__main__":
    main()
