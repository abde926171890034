"""The comparison table: every lever against the baseline on one metric, paired by seed, its verdict, the closing line.

Verdicts follow attention.evaluation.stats (better or worse, by more than the margin or by an amount the interval
gives / equivalent within the margin / undecided, with the seeds that resolve it 80% of the time). The levers of one
comparison share alpha (Bonferroni: each interval at 1 - alpha / K for K levers), so the chance of any wrong verdict
in the table is at most 5%; with a Plan (attention.evaluation.sequential) each lever is judged at the last look its
seeds reach, at that look's share of alpha, divided alike.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Hashable, Mapping, Sequence

import numpy as np

from attention.errors import UserError
from attention.evaluation.sequential import Plan, decide, seeds_per_variant
from attention.evaluation.stats import (ALPHA, DEFAULT_MARGIN, MAX_SEEDS, POWER, Verdict, judge, margin_text,
                                        seeds_needed)

SEEDS_COLUMN = f"seeds for {POWER:.0%} power"


@dataclass
class Lever:
    """One row of the comparison: what it costs, what it scores, and its paired difference to the baseline."""

    name: str
    params: float  # millions
    ms: float  # per image
    score: float  # the metric's mean over the lever's scored seeds (nan: none)
    score_sd: float  # its sd over seeds (nan with fewer than two)
    verdict: Verdict | None  # None for the baseline
    seeds_needed: int | None = None  # total seeds for 80% power where undecided; None where decided or unknowable
    cap: int | None = None  # the plan's cap where even it gives less than 80% power (seeds_needed: as fixed seeds)
    baseline: bool = False
    left_out: tuple = field(default_factory=tuple)  # seeds paired without a score on one side

    @property
    def mean(self) -> float:
        return self.verdict.mean if self.verdict else 0.0

    @property
    def low(self) -> float:
        return self.verdict.low if self.verdict else 0.0

    @property
    def high(self) -> float:
        return self.verdict.high if self.verdict else 0.0


def _valid(values: Sequence[float]) -> list[float]:
    """Scores that exist: finite and not pycocotools' -1 (no ground truth of that size)."""
    return [float(v) for v in values if math.isfinite(v) and v >= 0]


def cell(values: Sequence[float]) -> str:
    """'0.412 ± 0.013' over seeds; 'n/a' where no seed has a score (pycocotools' -1: no objects of that size)."""
    ok = _valid(values)
    if not ok:
        return "n/a"
    text = f"{ok[0]:.3f}" if len(ok) == 1 else f"{np.mean(ok):.3f} ± {np.std(ok, ddof=1):.3f}"
    return text if len(ok) == len(values) else f"{text} ({len(ok)} of {len(values)} seeds)"


def paired(scores: Mapping, lever: Hashable, base: Hashable, seeds: Sequence[int], metric: str
           ) -> tuple[list[float], list[int], bool]:
    """(differences in seed order, seeds without a score on a side, no ground truth at all) for one lever.

    Seeds not yet scored for both are skipped; a seed scored on both sides but without a score on one (NaN, or
    -1 for no objects of that size) gives NaN, which the verdict leaves out and counts.
    """
    diffs, missing, any_truth = [], [], False
    for s in seeds:
        if (*lever, s) not in scores or (*base, s) not in scores:
            continue
        v, b = float(scores[(*lever, s)][metric]), float(scores[(*base, s)][metric])
        any_truth |= not (v < 0 or b < 0)  # -1: nothing of that size in the split
        ok = _valid([v, b])
        diffs.append(ok[0] - ok[1] if len(ok) == 2 else math.nan)
        if len(ok) < 2:
            missing.append(s)
    return diffs, missing, not any_truth and bool(diffs)


def summarize(levers: Sequence[Hashable], seeds: Sequence[int], scores: dict, metric: str,
              sizes: dict[str, dict[str, float]], latency: dict, names: dict, margin: float | None = None,
              plan: Plan | None = None) -> tuple[list[dict[str, Any]], list[Lever]]:
    """One row per lever (the first is the baseline); scores[(variant, mode, seed)] holds COCO metrics.

    levers are (variant, mode) pairs; names gives each its printed name; latency its ms per image; sizes each
    variant's params. Each lever is paired with the baseline over the seeds of `seeds` both have scores for.
    margin: differences within ±margin count as equivalent (default stats.DEFAULT_MARGIN, or the plan's). The K
    levers (the baseline not counted) share the 5%: without a plan each is judged once, its interval at 1 - 5% / K;
    with one, at its last look (sequential.decide) at the look's share / K. Returns the printed rows and one Lever
    per row (the baseline first, baseline=True) for closing_line() and the plots.
    """
    first = scores[(*levers[0], seeds[0])]
    if metric not in first:
        raise UserError(f"--metric {metric!r} is not among the scores: "
                        f"{', '.join(k for k in first if k.startswith('AP'))}")
    margin = (plan.margin if plan else DEFAULT_MARGIN) if margin is None else margin
    if not margin >= 0:
        raise UserError(f"--margin must be 0 or more (a difference in {metric}), got {margin}")
    if plan is not None and plan.margin != margin:
        plan = Plan(plan.first, plan.cap, plan.alpha, margin)
    others = [k for k in ("AP", "AP50") if k != metric] + [k for k in first if k.startswith("AP_") and k != metric]
    base = levers[0]
    family = max(len(levers) - 1, 1)  # every lever shares the comparison's alpha
    fixed = (plan.alpha if plan else ALPHA) / family  # each lever's level in a fixed-seeds comparison
    pairs = {lv: paired(scores, lv, base, seeds, metric) for lv in levers[1:]}
    decisions = decide({lv: p[0] for lv, p in pairs.items()}, plan, family) if plan else {}

    stats: list[Lever] = []
    for lv in levers:
        values = [scores[(*lv, s)][metric] for s in seeds if (*lv, s) in scores]
        ok = _valid(values)
        row = Lever(names[lv], sizes[lv[0]]["params(M)"], latency[lv], float(np.mean(ok)) if ok else math.nan,
                    float(np.std(ok, ddof=1)) if len(ok) > 1 else math.nan, None, baseline=lv == base)
        if lv != base:
            diffs, left_out, no_truth = pairs[lv]
            row.left_out = tuple(left_out)
            if no_truth:
                row.verdict = Verdict("n/a", math.nan, math.nan, math.nan, math.nan, 0, 1 - fixed, margin,
                                      "no objects of that size in the split", family=family)
            elif plan:
                d = decisions[lv]
                row.verdict = d.verdict
                if d.verdict.kind == "undecided":
                    if d.enough and d.wants > len(diffs):  # a look of the plan that gives 80% power
                        row.seeds_needed = d.wants
                    elif d.look:  # even the cap falls short: what a comparison of fixed seeds would need
                        row.seeds_needed, row.cap = _need(d.verdict, margin, fixed, start=plan.cap + 1), plan.cap
            else:
                row.verdict = judge(diffs, margin, ALPHA, family)
                if row.verdict.kind == "undecided":
                    row.seeds_needed = _need(row.verdict, margin, fixed, start=row.verdict.n + 1)
        stats.append(row)

    levels = {lv.verdict.level for lv in stats if lv.verdict and lv.verdict.kind != "n/a"}
    uniform = len(levels) <= 1
    delta = f"Δ{metric} [{_pct(levels.pop() if levels else 1 - fixed)} CI]" if uniform else f"Δ{metric} [CI]"
    rows = []
    for lv, key in zip(stats, levers):
        values = [scores[(*key, s)][metric] for s in seeds if (*key, s) in scores]
        row: dict[str, Any] = {"lever": lv.name, "params(M)": lv.params, "ms/image": lv.ms, metric: cell(values)}
        v = lv.verdict
        if v is None:
            row |= {delta: "baseline", SEEDS_COLUMN: "", "verdict": ""}
        else:
            interval = v.interval() if uniform or v.kind == "n/a" else f"{v.interval()} at {_pct(v.level)}"
            if plan and 0 < v.n + v.left_out < len(values):  # judged at an earlier look than the seeds it has
                interval += f", first {v.n + v.left_out} seeds"
            left = f"; seed {', '.join(map(str, lv.left_out))} left out (no score)" if lv.left_out and v.n else ""
            row |= {delta: interval, SEEDS_COLUMN: _seeds_cell(lv, plan), "verdict": v.text() + left}
        rows.append(row | {k: cell([scores[(*key, s)][k] for s in seeds if (*key, s) in scores]) for k in others})
    return rows, stats


def _need(v: Verdict, margin: float, alpha: float, start: int) -> int | None:
    return seeds_needed(v.mean, v.sd, margin, alpha, start=start)


def _pct(level: float) -> str:
    return f"{100 * level:.3g}%"


def _seeds_cell(lv: Lever, plan: Plan | None) -> str:
    """'~6' (the seeds that give a right verdict 80% of the time), '> 10 (cap); ~33' where the plan's cap cannot
    (~33: as fixed seeds), '> 200', or '?' (one seed or no spread: nothing to compute power from); '' if decided."""
    v = lv.verdict
    if v is None or v.decided or v.kind == "n/a":
        return ""
    if lv.seeds_needed and not lv.cap:
        return f"~{lv.seeds_needed}"
    if v.n < 2 or not v.sd > 0 or v.note:
        return "?"
    beyond = f"~{lv.seeds_needed}" if lv.seeds_needed else f"> {MAX_SEEDS}"
    return f"> {lv.cap} (cap); {beyond}" if lv.cap else beyond


def _seed_count(stats: Sequence[Lever]) -> str:
    counts = sorted({lv.verdict.n for lv in stats})
    return f"{counts[0]}" if len(counts) == 1 else f"{counts[0]} to {counts[-1]}"


def closing_line(stats: Sequence[Lever], metric: str, n_seeds: int | None = None, baseline_ms: float | None = None,
                 margin: float | None = None) -> str:
    """The line users act on, claiming no more than the verdicts: the cheapest lever better by more than the margin
    (and a cheaper one better by an amount that may be under it), else the cheapest better by some amount, each with
    the claim it rests on; else what each lever is.

    stats: summarize()'s Levers (the baseline may be among them); n_seeds and baseline_ms are used where the
    Levers do not say (no baseline among them).
    """
    levers = [lv for lv in stats if not lv.baseline and lv.verdict is not None]
    judged = [lv for lv in levers if lv.verdict.kind != "n/a"]
    if margin is None:
        margin = judged[0].verdict.margin if judged else DEFAULT_MARGIN
    m = margin_text(margin)
    band = f"the ±{m} margin"
    if not judged:
        return f"No lever could be compared on {metric}: no scores to pair (no objects of that size in the split?)."
    base = next((lv for lv in stats if lv.baseline), None)
    base_ms = base.ms if base else baseline_ms

    def cost(lv: Lever) -> str:
        return f"at {lv.ms:.0f} ms per image" + (f" ({lv.ms / base_ms:.2f}x the baseline's)" if base_ms else "")

    better = [lv for lv in judged if lv.verdict.kind == "better"]
    clear = [lv for lv in better if lv.verdict.beyond and margin > 0]
    if clear:
        best = min(clear, key=lambda lv: lv.ms)
        line = (f"Cheapest lever better than the baseline on {metric} by more than {band} (its whole interval lies "
                f"above +{m}): {best.name}, {best.verdict.interval()} over {best.verdict.n} seeds, {cost(best)}.")
        cheaper = [lv for lv in better if lv.ms < best.ms and lv not in clear]
        if cheaper:
            lv = min(cheaper, key=lambda lv: lv.ms)
            line += (f" Cheaper, better by a gain that may be under the margin: {lv.name}, "
                     f"{lv.verdict.claim().partition('; ')[2]}, {cost(lv)}.")
        return line
    if better:
        best = min(better, key=lambda lv: lv.ms)
        claim = ("its interval lies above 0" if margin == 0 else
                 f"its interval lies above 0 but reaches under +{m}: the gain may be under {band}")
        return (f"Cheapest lever better than the baseline on {metric} ({claim}): {best.name}, "
                f"{best.verdict.claim().partition('; ')[2]} over {best.verdict.n} seeds, {cost(best)}.")
    if all(lv.verdict.n < 2 for lv in judged):
        return (f"No lever can be judged on {metric} from one seed (no interval): run at least 2 seeds, 3 or more "
                f"for useful intervals; differences within {band} will count as equivalent.")
    groups = []
    worse = [lv for lv in judged if lv.verdict.kind == "worse"]
    for words, names in ((f"Equivalent within ±{m}", [lv.name for lv in judged if lv.verdict.kind == "equivalent"]),
                         (f"Worse by more than {m}", [lv.name for lv in worse if lv.verdict.beyond and margin > 0]),
                         ("Worse" if margin == 0 else f"Worse, by a loss that may be under {m}",
                          [f"{lv.name} ({lv.verdict.claim().partition('; ')[2]})"
                           for lv in worse if not (lv.verdict.beyond and margin > 0)]),
                         (f"Undecided (seeds for {POWER:.0%} power)",
                          [lv.name + _need_words(lv) for lv in judged if lv.verdict.kind == "undecided"])):
        if names:
            groups.append(f"{words}: {'; '.join(names)}.")
    seeds = _seed_count(judged)
    return f"No lever is shown better than the baseline on {metric} over {seeds} seeds. {' '.join(groups)}"


def _need_words(lv: Lever) -> str:
    if lv.seeds_needed and not lv.cap:
        return f" (~{lv.seeds_needed})"
    if lv.verdict.n < 2:
        return " (one seed: no interval)"
    if lv.verdict.note:
        return f" ({lv.verdict.note})"
    if lv.cap:
        more = f"~{lv.seeds_needed}" if lv.seeds_needed else f"more than {MAX_SEEDS}"
        return f" (more than the cap of {lv.cap}: {more} as fixed seeds)"
    return f" (more than {MAX_SEEDS})"


def how_to_read(metric: str, margin: float = DEFAULT_MARGIN, plan: Plan | None = None, levers: int | None = None
                ) -> str:
    """The verdicts' rule and the comparison's error bound in a few sentences, for under the table.

    levers: how many levers (the baseline not counted) share alpha; None words the levels for one lever.
    """
    m = margin_text(margin)
    alpha = plan.alpha if plan else ALPHA
    text = (f"Verdicts on Δ{metric} (the per-seed difference to the baseline; margin ±{m}) are read off its "
            f"interval: better/worse by more than {m} when the whole interval lies beyond ±{m}; better/worse with the "
            f"gain/loss the interval gives (maybe under the margin) when it only excludes 0; equivalent when it lies "
            f"within ±{m}; else undecided, with the seeds that would resolve it {POWER:.0%} of the time if the "
            f"observed mean and spread held.")
    single = levers is not None and levers <= 1
    together = "the levers" if levers is None else f"the {levers} levers"
    if plan and len(plan.looks) > 1:
        k = levers or 1
        levels = ", ".join(f"{n} at {_pct(1 - plan.alpha_at(n) / k)}" for n in plan.looks)
        text += (f" Seeds were added only to undecided levers, judged at looks fixed in advance (seeds {levels}"
                 f"{' for one lever, less per lever with more' if levers is None else ''}); Bonferroni over the looks"
                 f"{'' if single else ' and ' + together} keeps the chance of any wrong verdict in this table at "
                 f"most {alpha:.0%}.")
    elif single:
        text += f" Its {_pct(1 - alpha)} interval keeps the chance of a wrong verdict at most {alpha:.0%}."
    else:
        each = f"1 - {alpha:.0%} / levers" if levers is None else _pct(1 - alpha / levers)
        text += (f" Bonferroni over {together} (each interval at {each}) keeps the chance of any wrong verdict in "
                 f"this table at most {alpha:.0%}.")
    return text


def plan_seeds(levers: Sequence[Hashable], seeds: Sequence[int], scores: Mapping, metric: str, plan: Plan
               ) -> dict[str, int]:
    """How many seeds each variant should have in total for the next round (sequential.decide on every lever).

    A variant that needs no more gets the count it has; the baseline variant gets the most any lever wants.
    """
    base = levers[0]
    decisions = decide({lv: paired(scores, lv, base, seeds, metric)[0] for lv in levers[1:]}, plan,
                       max(len(levers) - 1, 1))
    return seeds_per_variant({lv: d.wants for lv, d in decisions.items()}, base[0])
