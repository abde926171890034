"""Seeds where they decide something: add seeds only to undecided levers, at looks fixed in advance.

The method: Bonferroni over a grid of looks fixed before any score is seen, and over the levers. Plan(first, cap)
fixes the seed counts at which a lever may be judged: the first seeds, then doubling, then the cap (first 3, cap 10:
looks at 3, 6 and 10 seeds), and gives each look k a share alpha_k of alpha that grows with the information it
sees, alpha_k = alpha * ((n_k / cap)^2 - (n_{k-1} / cap)^2) (little at the first, noisy looks; most at the cap; the
shares sum to alpha). At a look a lever is judged by stats.judge() on its first n_k seeds (in seed order), its
interval at 1 - alpha_k / K for the K levers of the comparison. A lever still undecided asks for the smallest later
look at which stats.power() at that look's level, at the observed mean and sd, reaches 0.8; if none does, it asks
for the cap (the user's budget) and says that even the cap falls short (Decision.enough). A decided lever asks for
nothing more.

Why neither optional stopping nor the number of levers inflates wrong verdicts: whatever the data make us do
(stop, skip looks, jump to the cap), every verdict is read off the t-interval of some lever j on its first n_k
seeds at level 1 - alpha_k / K, for some look k of the fixed grid, and it is right whenever that interval covers
lever j's true difference (stats' module docstring). Each of those K x looks intervals misses with probability
alpha_k / K, so the chance that any verdict of the comparison is wrong is at most sum_j sum_k alpha_k / K = alpha
(the union bound), for any margin, including 0, and any correlation between levers. The cost of the guarantee is a
wider interval at each look than a single fixed-n analysis of one lever would use (the table states each level).
tests/test_sequential.py checks it by simulation. Changing the cap between invocations changes the grid: the
guarantee is for one plan, fixed before the first seeds are scored.

Seeds are trained per variant and a lever is (variant, way of inferring): seeds_per_variant() turns the levers'
wants into per-variant counts; the baseline variant needs the most any lever wants, since differences are paired.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import cached_property
from typing import Any, Hashable, Mapping, Sequence

import numpy as np

from attention.errors import UserError
from attention.evaluation.stats import ALPHA, DEFAULT_MARGIN, POWER, Verdict, judge, judge_rows, no_spread, power


@dataclass(frozen=True)
class Plan:
    """The looks (seed counts) at which levers are judged, and each look's share of alpha; first == cap: one look."""

    first: int  # seeds every lever gets before the first look
    cap: int  # the most seeds any lever gets
    alpha: float = ALPHA
    margin: float = DEFAULT_MARGIN

    def __post_init__(self) -> None:
        if self.first < 1 or self.cap < self.first:
            raise UserError(f"seeds: the first {self.first} and the cap {self.cap} must satisfy 1 <= first <= cap")
        if not 0 < self.alpha < 1 or self.margin < 0 or not math.isfinite(self.margin):
            raise UserError(f"alpha must lie in (0, 1) and the margin be 0 or more, got {self.alpha}, {self.margin}")

    @classmethod
    def single(cls, n: int, alpha: float = ALPHA, margin: float = DEFAULT_MARGIN) -> "Plan":
        """One look at n seeds with all of alpha: the plain fixed-seeds analysis."""
        return cls(n, n, alpha, margin)

    @cached_property  # asked for every lever at every round
    def looks(self) -> tuple[int, ...]:
        """Seed counts at which a lever may be judged: max(first, 2), then doubling, then the cap (3, 6, 10)."""
        n, out = max(self.first, 2), []
        while n < self.cap:
            out.append(n)
            n = self.cap if 2 * n >= self.cap or self.cap - 2 * n < n else 2 * n  # no sliver of a last step
        return (*out, max(self.cap, 2))

    def alpha_at(self, look: int) -> float:
        """The share of alpha spent at this look (one of self.looks)."""
        looks = self.looks
        if look not in looks:
            raise ValueError(f"{look} seeds is not a look of {self}: {looks}")
        if len(looks) == 1:
            return self.alpha
        k = looks.index(look)
        before = looks[k - 1] if k else 0
        return self.alpha * ((look / looks[-1]) ** 2 - (before / looks[-1]) ** 2)

    def look_at(self, n: int) -> int:
        """The largest look with at most n seeds (0 before the first)."""
        return max((k for k in self.looks if k <= n), default=0)


@dataclass(frozen=True)
class Decision:
    """A lever's verdict at the last look its seeds reach, and the seeds it wants in total."""

    verdict: Verdict  # at `look` seeds, level 1 - alpha_at(look) / family
    look: int  # the look the verdict used (0: not yet at the first look)
    wants: int  # total seeds this lever wants; <= the seeds it has means it needs no more
    enough: bool = True  # False: undecided, and no look up to the cap gives it 80% power (or nothing to tell it by)

    @property
    def alpha(self) -> float:
        return 1 - self.verdict.level


def decide(diffs: Mapping[Hashable, Sequence[float]], plan: Plan, family: int | None = None
           ) -> dict[Hashable, Decision]:
    """Each lever's decision from its paired differences so far (in seed order; NaN where a score is missing).

    family: the levers sharing alpha, by default every lever of diffs (the comparison's, baseline excluded). A lever
    at a look is judged there, its interval at 1 - alpha_at(look) / family; undecided and below the cap, it wants the
    smallest later look whose power at that look's level, at its observed mean and sd, reaches 0.8, else the cap
    (enough=False). Decided, n/a or at the cap, it wants the seeds it has (enough=False if undecided). Before the
    first look it wants the first look.
    """
    family = max(len(diffs), 1) if family is None else family
    share = lambda look: plan.alpha_at(look) / family  # noqa: E731  each lever's part of the look's alpha
    out: dict[Hashable, Decision] = {}
    at_look: dict[int, list[Hashable]] = {}  # levers by the look they reach, judged together
    rows = {key: list(d) for key, d in diffs.items()}
    for key, d in rows.items():
        look = plan.look_at(len(d))
        if look:
            at_look.setdefault(look, []).append(key)
            continue
        v = judge(d, plan.margin, plan.alpha_at(plan.looks[0]), family)
        v = Verdict("undecided", v.mean, math.nan, math.nan, v.sd, v.n, v.level, plan.margin,
                    f"waiting for the first {plan.looks[0]} seeds", v.left_out, family=family)
        out[key] = Decision(v, 0, plan.looks[0])
    planning: dict[int, list[Hashable]] = {}  # undecided levers by look, to plan together
    for look, keys in at_look.items():
        verdicts = judge_rows(np.array([rows[k][:look] for k in keys], dtype=float), plan.margin,
                              plan.alpha_at(look), family)
        for key, v in zip(keys, verdicts):
            undecided = v.kind == "undecided"
            out[key] = Decision(v, look, len(rows[key]), enough=not undecided)
            if undecided and look < plan.looks[-1]:
                planning.setdefault(look, []).append(key)
    for look, keys in planning.items():
        later = [k for k in plan.looks if k > look]
        mean = np.array([out[k].verdict.mean for k in keys])
        sd = np.array([out[k].verdict.sd for k in keys])
        plannable = np.isfinite(sd) & ~no_spread(mean, sd)  # no spread: the power formula has nothing to go on
        want = np.where(plannable, later[-1], later[0])
        enough = np.zeros(len(keys), bool)
        todo = plannable.copy()
        for n in later:  # vectorised over the levers at this look: the first later look with power >= 0.8
            if not todo.any():
                break
            ok = todo.copy()
            ok[todo] = power(mean[todo], sd[todo], n, plan.margin, share(n)) >= POWER
            want[ok], enough[ok] = n, True
            todo &= ~ok
        for key, w, e in zip(keys, want, enough):
            out[key] = Decision(out[key].verdict, look, max(int(w), out[key].wants), bool(e))
    return out


def seeds_per_variant(wants: Mapping[tuple[str, Any], int], baseline: str) -> dict[str, int]:
    """Seeds each variant must have: the most any of its levers (variant, mode) wants; the baseline, the most of all.

    The baseline is every lever's partner in the pairs, so it needs every seed any lever wants.
    """
    out: dict[str, int] = {}
    for (variant, _), n in wants.items():
        out[variant] = max(out.get(variant, 0), int(n))
    out[baseline] = max(out.values(), default=0)
    return out
