"""Paired differences over seeds: the mean, its t-interval, the verdict it supports, and the seeds a verdict needs.

The rule (judge()), on the per-seed differences d_1..d_n of a lever to the baseline and a margin m >= 0:

- better:     the (1 - alpha) Student-t interval lies wholly above 0 (low > 0) AND the mean difference exceeds +m;
- worse:      the interval lies wholly below 0 (high < 0) AND the mean is below -m;
- equivalent: the interval lies within the closed band [-m, +m] (an end exactly on the margin counts as inside);
- undecided:  anything else. seeds_needed() says how many seeds give a verdict 80% of the time (power 0.8).

"Beyond zero" is the statistics (a false better/worse under no true difference has probability <= alpha: the
margin only makes it rarer), "beyond the margin" is whether it matters. We test the mean against the margin, not the
interval's end: requiring the whole interval beyond the margin would leave most real one-point gains undecided
for want of many more seeds. With m = 0 the rule is the plain paired t-test, and nothing with spread is
"equivalent". The "equivalent" call is the two one-sided tests (TOST) at alpha / 2 each.

Edges, each with a defined answer: one seed (undecided: no interval), differences equal on every seed (no spread:
equivalent if within the margin, else undecided, never a zero-width "better"), non-finite differences (NaN:
left out, and counted), no differences at all (n/a).
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
ALPHA = 0.05  # two-sided: 95% intervals
POWER = 0.8  # "seeds needed": the count that gives the verdict 4 times in 5
MAX_SEEDS = 200  # beyond this, "would need about N seeds" stops being advice
# Differences that agree to this (AP lives in [0, 1]; float64 rounding of differences is ~1e-16) have no spread:
# the interval would be zero-width, and a zero-width "better" is an artefact, not evidence.
NO_SPREAD = 1e-9
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
    level: float  # the interval's confidence, 1 - alpha
    margin: float
    note: str = ""  # why undecided or n/a in words ("one seed", "no spread"); "" otherwise
    left_out: int = 0  # non-finite differences dropped

    @property
    def decided(self) -> bool:
        return self.kind in ("better", "worse", "equivalent")

    def interval(self) -> str:
        """'+0.030 [+0.005, +0.055]', '+0.012 (one seed)', or 'n/a'."""
        if self.kind == "n/a":
            return "n/a"
        if math.isnan(self.low):
            return f"{self.mean:+.3f} ({'one seed' if self.n == 1 else 'no interval'})"
        return f"{self.mean:+.3f} [{self.low:+.3f}, {self.high:+.3f}]"

    def text(self) -> str:
        """The verdict in words a newcomer can act on: 'better, by more than 0.010', 'undecided: one seed', ..."""
        m = margin_text(self.margin)
        words = {"better": f"better, by more than {m}", "worse": f"worse, by more than {m}",
                 "equivalent": f"equivalent, within ±{m}", "undecided": "undecided", "n/a": "n/a"}[self.kind]
        return f"{words}: {self.note}" if self.note else words


def margin_text(margin: float) -> str:
    """0.01 -> '0.010' (AP's three decimals); finer margins keep their digits (0.0025 -> '0.0025')."""
    return f"{margin:.3f}" if abs(margin * 1000 - round(margin * 1000)) < 1e-9 else f"{margin:.4g}"


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


def judge(diffs: Sequence[float], margin: float = DEFAULT_MARGIN, alpha: float = ALPHA) -> Verdict:
    """The verdict of the module docstring's rule on one lever's per-seed differences (NaN ones left out)."""
    return judge_rows(np.asarray(diffs, dtype=float).reshape(1, -1), margin, alpha)[0]


def judge_rows(diffs: np.ndarray, margin: float = DEFAULT_MARGIN, alpha: float = ALPHA) -> list[Verdict]:
    """judge() on each row of a (levers, seeds) array at once (NaN: left out of that row)."""
    d = np.asarray(diffs, dtype=float)
    finite = np.isfinite(d)
    n = finite.sum(axis=1)
    x = np.where(finite, d, 0.0)
    with np.errstate(divide="ignore", invalid="ignore"):
        mean = np.where(n > 0, x.sum(axis=1) / n, np.nan)
        sd = np.sqrt(np.where(finite, (x - mean[:, None]) ** 2, 0.0).sum(axis=1) / (n - 1))
    sd = np.where(n > 1, sd, np.nan)
    t = np.array([t_quantile(alpha, k - 1) if k > 1 else np.nan for k in n])
    half = t * sd / np.sqrt(np.maximum(n, 1))
    low, high = mean - half, mean + half
    flat = sd <= NO_SPREAD  # no spread: the interval would be zero-width
    on = _ON_EDGE
    kind = np.select(
        [n == 0, n == 1, flat & (np.abs(mean) <= margin + on), flat,
         (low > on) & (mean > margin + on), (high < -on) & (mean < -margin - on),
         (low >= -margin - on) & (high <= margin + on)],
        ["n/a", "one", "equivalent", "flat", "better", "worse", "equivalent"], "undecided")
    notes = {"n/a": "no scores to pair", "one": "one seed, no interval"}
    out = []
    for k, m, lo, hi, s, count, left in zip(kind, mean, low, high, sd, n, d.shape[1] - n):
        k, count = str(k), int(count)
        flat_note = f"the same difference on all {count} seeds, no spread to judge it by"
        note = notes.get(k, flat_note if k == "flat" else "")
        if k in ("n/a", "one"):
            lo = hi = math.nan
        elif k == "flat":
            lo = hi = m
        out.append(Verdict("undecided" if k in ("one", "flat") else k, float(m), float(lo), float(hi), float(s),
                           count, 1 - alpha, margin, note, int(left)))
    return out


@lru_cache(maxsize=512)
def _sd_nodes(df: int) -> np.ndarray:
    """s / sigma at the midpoints of _NODES equal-probability slices of its distribution (sqrt(chi2_df / df))."""
    return np.sqrt(sps.chi2.ppf((np.arange(_NODES) + 0.5) / _NODES, df) / df)


def power(mean: float | np.ndarray, sd: float | np.ndarray, n: int, margin: float = DEFAULT_MARGIN,
          alpha: float = ALPHA) -> np.ndarray:
    """Probability that judge() on n seeds returns the verdict a true difference `mean` with seed-to-seed `sd` deserves.

    Deserved: better if mean > margin, worse if mean < -margin, equivalent otherwise. Exact for normal differences
    up to the quadrature: the sample mean is N(mean, sd^2/n) and independent of the sample sd s, so conditional on s
    each verdict is a normal probability, averaged over s ~ sd * sqrt(chi2_{n-1} / (n-1)). With margin 0 the better
    branch is the noncentral-t power of the paired t-test. Broadcasts over mean and sd; nan where sd is 0.
    """
    mean, sd = np.broadcast_arrays(np.asarray(mean, dtype=float), np.asarray(sd, dtype=float))
    if n < 2:
        return np.zeros(mean.shape)
    with np.errstate(divide="ignore", invalid="ignore"):
        se = (sd / math.sqrt(n))[..., None]
        half = t_quantile(alpha, n - 1) * sd[..., None] * _sd_nodes(n - 1) / math.sqrt(n)  # interval half-widths
        mu = mean[..., None]
        edge = np.maximum(half, margin)
        better = ndtr((mu - edge) / se)  # P(mean_hat > max(half, margin))
        worse = ndtr((-edge - mu) / se)
        inside = np.clip(ndtr((margin - half - mu) / se) - ndtr((-margin + half - mu) / se), 0, 1)
        p = np.where(mu > margin, better, np.where(mu < -margin, worse, inside)).mean(axis=-1)
    return np.where(sd > 0, p, np.nan)


def seeds_needed(mean: float, sd: float, margin: float = DEFAULT_MARGIN, alpha: float = ALPHA, start: int = 2,
                 most: int = MAX_SEEDS, target: float = POWER) -> int | None:
    """The smallest n in [start, most] whose power() at the observed mean and sd reaches target (0.8); None if none.

    None also where it cannot be said: no spread (sd 0 or nan), or no verdict is reachable (mean exactly on the
    margin, or margin 0 and mean 0: no difference to resolve).
    """
    if not (np.isfinite(mean) and np.isfinite(sd)) or sd <= NO_SPREAD:
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
