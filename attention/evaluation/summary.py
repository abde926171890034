"""The comparison table: every lever against the baseline on one metric, paired by seed, and the closing line."""

from __future__ import annotations

import math
import statistics
from dataclasses import dataclass
from typing import Any, Hashable, Sequence

from attention.evaluation.stats import paired_interval, t975, verdict

MAX_SEEDS = 200  # beyond this, "would need about N seeds" stops being advice


@dataclass
class Lever:
    """One lever's paired difference to the baseline on the chosen metric (nan where it cannot be computed)."""

    name: str
    ms: float
    mean: float
    low: float
    high: float
    seeds_needed: int | None


def cell(values: Sequence[float]) -> str:
    """'0.412 ± 0.013' over seeds; 'n/a' where the split has no ground truth of that size (pycocotools' -1)."""
    if any(v < 0 for v in values):
        return "n/a"
    sd = statistics.stdev(values) if len(values) > 1 else 0.0
    return f"{statistics.fmean(values):.3f} ± {sd:.3f}"


def seeds_to_resolve(diffs: Sequence[float]) -> int | None:
    """About how many seeds a 95% interval needs to exclude zero, at the observed mean and spread of diffs."""
    mean = statistics.fmean(diffs)
    sd = statistics.stdev(diffs) if len(diffs) > 1 else math.nan
    if mean == 0 or math.isnan(sd):
        return None
    for n in range(2, MAX_SEEDS + 1):
        if t975(n - 1) * sd / math.sqrt(n) < abs(mean):
            return n
    return None


def summarize(levers: Sequence[Hashable], seeds: Sequence[int], scores: dict, metric: str,
              sizes: dict[str, dict[str, float]], latency: dict, names: dict) -> tuple[list[dict[str, Any]], list[Lever]]:
    """One row per lever (the first is the baseline); scores[(variant, mode, seed)] holds COCO metrics.

    levers are (variant, mode) pairs; names gives each its printed name; latency its ms per image.
    """
    first = scores[(*levers[0], seeds[0])]
    if metric not in first:
        raise ValueError(f"--metric {metric!r} is not among the scores: "
                         f"{', '.join(k for k in first if k.startswith('AP'))}")
    others = [k for k in ("AP", "AP50") if k != metric] + [k for k in first if k.startswith("AP_") and k != metric]
    base = [scores[(*levers[0], s)][metric] for s in seeds]
    rows, stats = [], []
    for lv in levers:
        values = [scores[(*lv, s)][metric] for s in seeds]
        row: dict[str, Any] = {"lever": names[lv], "params(M)": sizes[lv[0]]["params(M)"], "ms/image": latency[lv],
                               metric: cell(values)}
        if lv == levers[0]:
            row |= {f"Δ{metric} [95% CI]": "baseline", "seeds to resolve": "", "verdict": ""}
        elif cell(values) == "n/a" or cell(base) == "n/a":
            row |= {f"Δ{metric} [95% CI]": "n/a", "seeds to resolve": "", "verdict": "no ground truth of that size"}
        else:
            diffs = [v - b for v, b in zip(values, base)]
            mean, low, high = paired_interval(diffs)
            need = seeds_to_resolve(diffs)
            ci = "" if math.isnan(low) else f" [{low:+.3f}, {high:+.3f}]"
            row |= {f"Δ{metric} [95% CI]": f"{mean:+.3f}{ci}", "verdict": verdict(low, high),
                    "seeds to resolve": "" if verdict(low, high) in ("better", "worse")
                    else f"~{need}" if need else f"> {MAX_SEEDS}" if len(seeds) > 1 else "?"}
            stats.append(Lever(names[lv], latency[lv], mean, low, high, need))
        rows.append(row | {k: cell([scores[(*lv, s)][k] for s in seeds]) for k in others})
    return rows, stats


def closing_line(stats: Sequence[Lever], metric: str, n_seeds: int, baseline_ms: float) -> str:
    """Names the cheapest lever whose interval lies above zero, or says none does and how many seeds would tell."""
    helps = [lv for lv in stats if lv.low > 0]
    if helps:
        best = min(helps, key=lambda lv: lv.ms)
        return (f"Cheapest lever that helps {metric}: {best.name}, {best.mean:+.3f} [{best.low:+.3f}, {best.high:+.3f}] "
                f"over {n_seeds} seeds, at {best.ms:.0f} ms per image ({best.ms / baseline_ms:.2f}x the baseline's).")
    if not stats:
        return f"No lever could be compared on {metric}."
    if n_seeds < 2:
        return f"No lever can be judged on {metric} from one seed: run at least 2 (3 or more to get useful intervals)."
    largest = max(stats, key=lambda lv: abs(lv.mean))
    worse = [lv.name for lv in stats if lv.high < 0]
    tail = f" ({', '.join(worse)}: worse)" if worse else ""
    need = (f"would need about {largest.seeds_needed} seeds to resolve" if largest.seeds_needed
            else f"is too small next to its seed-to-seed spread to resolve with {MAX_SEEDS} seeds")
    return (f"No lever's 95% interval on {metric} lies above zero over {n_seeds} seeds{tail}; the largest difference, "
            f"{largest.name}'s {largest.mean:+.3f}, {need}.")
