"""Paired differences over seeds: the mean, its t-interval, the verdict the interval supports, and the seeds to resolve.

The rule (judge()) reads the verdict off the Student-t interval [low, high] of a lever's per-seed differences
d_1..d_n to the baseline, with a margin m >= 0 (a difference within ±m does not matter):

- equivalent:                the interval lies within the closed band [-m, +m] (an end exactly on it is inside);
- better, by more than m:    the whole interval lies above +m (low > m);
- better (gain low to high): the interval lies above 0 and reaches into the band: a real gain that may be under m;
- worse, by more than m / worse (loss ...): the mirror images;
- undecided:                 anything else (the interval holds 0 and reaches beyond the band).

Each verdict says only what its interval shows about the true difference: "better" that it is above 0, "by more
than m" that it is above m, "equivalent" that it lies within ±m. Each is therefore right whenever the interval
covers the true difference, and the chance of any wrong verdict is at most the chance that an interval misses.
Levers of one comparison share alpha (family = K levers: each interval at 1 - alpha / K, Bonferroni), so the
chance of any wrong verdict in the whole table, better/worse/equivalent alike, is at most alpha. Why Bonferroni:
the levers' differences share the baseline's scores and, for the ways of inferring of one variant, the same runs,
so they are correlated in a way three seeds cannot estimate; Bonferroni's union bound holds for any correlation
(Dunnett's and max-t's exact constants assume a known one) and, unlike Holm's step-down, it gives each lever one
interval from which every verdict is read, the interval the table prints and compare.png plots. With m = 0,
"better" is the plain paired t-test and nothing with spread is "equivalent". An interval within the band is
"equivalent" even if it excludes 0: a consistent difference too small to matter. docs/verdicts.md has the rest.

Edges, each with a defined answer: one seed (undecided: no interval), differences that agree to NO_SPREAD of their
size (no spread: equivalent if within the margin, else undecided, never a zero-width "better"), non-finite
differences (NaN: left out, and counted), no differences at all (n/a).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import lru_cache
from typing import Sequence

import numpy as np
from scipy import stats as sps
from scipy.special import ndtr

# One AP point: the smallest gain detection papers report as an improvement (tables print AP to 0.1 points) and
# about the seed-to-seed sd of AP on small validation sets, so a smaller difference is neither visible nor worth
# a change of model. In the metric's own units: 0.01 AP.
DEFAULT_MARGIN = 0.01
ALPHA = 0.05  # two-sided, for the whole comparison: the chance of any wrong verdict among all its levers
POWER = 0.8  # "seeds to resolve": the count that gives a right verdict 4 times in 5
MAX_SEEDS = 200  # beyond this, "would need about N seeds" stops being advice
# Differences whose sd is below this fraction of their mean have no spread: seeds that change training move AP
# differences by far more (the least spread recorded, CBAM at identity start, has sd/|mean| = 0.2), so agreement to
# 0.1% means the seeds changed nothing, and an interval from it would be an artefact of rounding, not evidence.
# Relative, so the rule is the same whatever the metric's units; NO_SPREAD_FLOOR catches differences that are zero
# up to float rounding (differences of scores in [0, 1] round at ~1e-16).
NO_SPREAD = 1e-3
NO_SPREAD_FLOOR = 1e-12
_ON_EDGE = 1e-12  # an interval end within this of the margin or of zero is on it (rounding of v - b)
_NODES = 256  # quadrature points over the sample sd's distribution in power(): error < 2e-4 against 20000


@dataclass(frozen=True)
class Verdict:
    """What the paired differences of one lever support; low/high are nan where there is no interval."""

    kind: str  # better, worse, equivalent, undecided, n/a
    mean: float
    low: float
    high: float
    sd: float
    n: int  # the seeds it rests on (finite differences)
    level: float  # the interval's own confidence, 1 - alpha / family (with a plan: 1 - the look's share / family)
    margin: float
    note: str = ""  # why undecided or n/a in words ("one seed", "no spread"); "" otherwise
    left_out: int = 0  # non-finite differences dropped
    beyond: bool = False  # better/worse with the whole interval beyond the margin (the "by more than m" claim)
    family: int = 1  # levers sharing alpha in this comparison (each interval at 1 - alpha / family)

    @property
    def decided(self) -> bool:
        return self.kind in ("better", "worse", "equivalent")

    @property
    def shade(self) -> str:
        """The kind, with better/worse split by strength: 'better', 'better-small' (may be under the margin), ..."""
        small = self.kind in ("better", "worse") and not self.beyond
        return f"{self.kind}-small" if small else self.kind

    def interval(self) -> str:
        """'+0.030 [+0.005, +0.055]', '+0.012 (one seed)', or 'n/a'."""
        if self.kind == "n/a":
            return "n/a"
        if math.isnan(self.low):
            return f"{self.mean:+.3f} ({'one seed' if self.n == 1 else 'no interval'})"
        return f"{self.mean:+.3f} [{self.low:+.3f}, {self.high:+.3f}]"

    def claim(self) -> str:
        """The verdict's claim alone: 'better, by more than 0.010', 'better; gain between +0.001 and +0.021', ..."""
        m = margin_text(self.margin)
        if self.kind in ("better", "worse") and self.beyond and self.margin > 0:
            return f"{self.kind}, by more than {m}"
        if self.kind == "better":
            return f"better; gain between {amount(self.low, '+')} and {amount(self.high, '+')}"
        if self.kind == "worse":
            return f"worse; loss between {amount(-self.high)} and {amount(-self.low)}"
        return {"equivalent": f"equivalent, within ±{m}"}.get(self.kind, self.kind)

    def text(self) -> str:
        """The verdict in words a newcomer can act on: the claim, and why undecided or n/a where it is."""
        return f"{self.claim()}: {self.note}" if self.note else self.claim()


def amount(x: float, sign: str = "") -> str:
    """A gain or loss to AP's three decimals; one nearer 0 than that shows two significant digits (never 0.000)."""
    return f"{x:{sign}.3f}" if abs(x) >= 5e-4 or x == 0 else f"{x:{sign}.2g}"


def margin_text(margin: float) -> str:
    """0.01 -> '0.010' (AP's three decimals); finer margins keep their digits (0.0025 -> '0.0025')."""
    return f"{margin:.3f}" if abs(margin * 1000 - round(margin * 1000)) < 1e-9 else f"{margin:.4g}"


def no_spread(mean: float | np.ndarray, sd: float | np.ndarray) -> np.ndarray:
    """True where differences with this mean and sd agree to NO_SPREAD of their size (or are zero up to rounding)."""
    return np.asarray(sd) <= NO_SPREAD * np.abs(mean) + NO_SPREAD_FLOOR


def t_quantile(alpha: float, df: int) -> float:
    """The two-sided (1 - alpha) quantile of Student's t with df degrees of freedom, exact for any df."""
    return float(_t_quantile(float(alpha), int(df)))


@lru_cache(maxsize=4096)
def _t_quantile(alpha: float, df: int) -> float:
    return float(sps.t.ppf(1 - alpha / 2, df))


def paired_interval(diffs: Sequence[float], alpha: float = ALPHA) -> tuple[float, float, float]:
    """Mean of the finite per-seed differences and its (1 - alpha) t-interval; (mean, nan, nan) from one seed."""
    d = np.asarray(diffs, dtype=float)
    d = d[np.isfinite(d)]
    if d.size == 0:
        return math.nan, math.nan, math.nan
    mean = float(d.mean())
    if d.size < 2:
        return mean, math.nan, math.nan
    half = t_quantile(alpha, d.size - 1) * float(d.std(ddof=1)) / math.sqrt(d.size)
    return mean, mean - half, mean + half


def judge(diffs: Sequence[float], margin: float = DEFAULT_MARGIN, alpha: float = ALPHA, family: int = 1) -> Verdict:
    """The verdict of the module docstring's rule on one lever's per-seed differences (NaN ones left out).

    family: the levers of the comparison sharing alpha; the interval is at 1 - alpha / family.
    """
    return judge_rows(np.asarray(diffs, dtype=float).reshape(1, -1), margin, alpha, family)[0]


# judge_arrays' kind codes: "one" (one seed) and "flat" (no spread) are undecided, with a note saying why
KINDS = ("n/a", "one", "equivalent", "flat", "better", "worse", "undecided")
_CODE = {k: i for i, k in enumerate(KINDS)}


def judge_arrays(diffs: np.ndarray, margin: float = DEFAULT_MARGIN, alpha: float = ALPHA, family: int = 1
                 ) -> dict[str, np.ndarray]:
    """The rule on each row of a (levers, seeds) array, as arrays: what judge_rows() and the simulations run.

    Returns mean, sd, n, low, high (the 1 - alpha / family interval), kind (an index into KINDS) and beyond
    (better/worse with the whole interval beyond the margin). NaN differences are left out of their row.
    """
    d = np.asarray(diffs, dtype=float)
    finite = np.isfinite(d)
    n = finite.sum(axis=1)
    x = np.where(finite, d, 0.0)
    with np.errstate(divide="ignore", invalid="ignore"):
        mean = np.where(n > 0, x.sum(axis=1) / n, np.nan)
        sd = np.sqrt(np.where(finite, (x - mean[:, None]) ** 2, 0.0).sum(axis=1) / (n - 1))
    sd = np.where(n > 1, sd, np.nan)
    each = alpha / family
    t = np.array([t_quantile(each, k - 1) if k > 1 else np.nan for k in range(d.shape[1] + 1)])[n]
    half = t * sd / np.sqrt(np.maximum(n, 1))
    low, high = mean - half, mean + half
    flat = no_spread(mean, sd)  # the interval would be (near) zero-width: no evidence of what seeds do
    on = _ON_EDGE
    kind = np.select(
        [n == 0, n == 1, flat & (np.abs(mean) <= margin + on), flat,
         (low >= -margin - on) & (high <= margin + on), low > on, high < -on],
        [_CODE[k] for k in ("n/a", "one", "equivalent", "flat", "equivalent", "better", "worse")], _CODE["undecided"])
    beyond = ((kind == _CODE["better"]) & (low > margin + on)) | ((kind == _CODE["worse"]) & (high < -margin - on))
    return {"mean": mean, "sd": sd, "n": n, "low": low, "high": high, "kind": kind, "beyond": beyond}


def judge_rows(diffs: np.ndarray, margin: float = DEFAULT_MARGIN, alpha: float = ALPHA, family: int = 1
               ) -> list[Verdict]:
    """judge() on each row of a (levers, seeds) array at once (NaN: left out of that row)."""
    d = np.asarray(diffs, dtype=float)
    a = judge_arrays(d, margin, alpha, family)
    notes = {"n/a": "no scores to pair", "one": "one seed, no interval"}
    out = []
    for code, m, lo, hi, s, count, beyond in zip(a["kind"], a["mean"], a["low"], a["high"], a["sd"], a["n"],
                                                 a["beyond"]):
        k, count = KINDS[code], int(count)
        flat_note = f"the same difference on all {count} seeds (to {NO_SPREAD:.1%}), no spread to judge it by"
        note = notes.get(k, flat_note if k == "flat" else "")
        if k in ("n/a", "one"):
            lo = hi = math.nan
        elif k == "flat":
            lo = hi = m
        out.append(Verdict("undecided" if k in ("one", "flat") else k, float(m), float(lo), float(hi), float(s),
                           count, 1 - alpha / family, margin, note, d.shape[1] - count, bool(beyond), family))
    return out


@lru_cache(maxsize=512)
def _sd_nodes(df: int) -> np.ndarray:
    """s / sigma at the midpoints of _NODES equal-probability slices of its distribution (sqrt(chi2_df / df))."""
    return np.sqrt(sps.chi2.ppf((np.arange(_NODES) + 0.5) / _NODES, df) / df)


def power(mean: float | np.ndarray, sd: float | np.ndarray, n: int, margin: float = DEFAULT_MARGIN,
          alpha: float = ALPHA) -> np.ndarray:
    """Probability that judge() on n seeds, its interval at 1 - alpha, gives a right verdict on a true difference
    `mean` with seed-to-seed `sd`.

    alpha is the level the lever is judged at: ALPHA / K for K levers, a look's share / K with a plan. A right
    verdict: better (of either strength) if mean > margin; equivalent, or "better" without the "by more than the
    margin" claim, if 0 < mean <= margin; equivalent if mean is 0; the mirror images below 0. Exact for normal
    differences up to the quadrature: the sample mean is N(mean, sd^2/n) and independent of the sample sd s, so
    conditional on s each verdict is a normal probability, averaged over s ~ sd * sqrt(chi2_{n-1} / (n-1)). With
    margin 0 the better branch is the noncentral-t power of the paired t-test. Broadcasts; nan where sd is 0.
    """
    mean, sd = np.broadcast_arrays(np.asarray(mean, dtype=float), np.asarray(sd, dtype=float))
    if n < 2:
        return np.zeros(mean.shape)
    m = margin
    with np.errstate(divide="ignore", invalid="ignore"):
        se = (sd / math.sqrt(n))[..., None]
        half = t_quantile(alpha, n - 1) * sd[..., None] * _sd_nodes(n - 1) / math.sqrt(n)  # interval half-widths
        mu = np.abs(mean)[..., None]  # the rule is symmetric: a difference below 0 fares as its mirror image above
        edge = np.maximum(half, m - half)  # the sample mean beyond it: interval above 0 and not inside the band
        better = ndtr((mu - edge) / se)
        by_more = ndtr((mu - m - half) / se)  # the whole interval above +m
        inside = np.clip(ndtr((m - half - mu) / se) - ndtr((-m + half - mu) / se), 0, 1)
        p = np.where(mu > m, better, np.where(mu > 0, inside + better - by_more, inside)).mean(-1)
    return np.where(sd > 0, p, np.nan)


def seeds_needed(mean: float, sd: float, margin: float = DEFAULT_MARGIN, alpha: float = ALPHA, start: int = 2,
                 most: int = MAX_SEEDS, target: float = POWER) -> int | None:
    """The smallest n in [start, most] whose power() at the observed mean and sd reaches target (0.8); None if none.

    alpha: the level a fixed-seeds comparison judges the lever at (ALPHA / K for K levers). None also where it
    cannot be said: no spread, or no right verdict is reachable (margin 0 and mean 0: only a zero-width interval
    would be "equivalent").
    """
    if not (np.isfinite(mean) and np.isfinite(sd)) or no_spread(mean, sd):
        return None
    reaches = lambda n: bool(power(mean, sd, n, margin, alpha) >= target)  # noqa: E731
    low = max(start, 2)
    if low > most or not reaches(most):
        return None
    high = most  # power grows with n (the interval narrows and the mean settles), so bisect for the first n
    while low < high:
        mid = (low + high) // 2
        low, high = (low, mid) if reaches(mid) else (mid + 1, high)
    return low
