"""Pictures of a comparison: each lever's difference with its interval (forest plot), score against cost, AP per size.

Figures are built on matplotlib's object API (matplotlib.figure.Figure, rendered by Agg when saved): no pyplot, no
display, no global backend switched under the caller. Each function returns its Figure (tests read the plotted
numbers back from its artists) and saves a PNG where given a path.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Mapping, Sequence

from matplotlib.axes import Axes
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.patches import Patch

from attention.evaluation.stats import margin_text
from attention.evaluation.summary import Lever

# better/worse by more than the margin in full colour; by an amount the interval leaves possibly under it, paler
COLORS = {"better": "#1a9850", "better-small": "#91cf60", "worse": "#d73027", "worse-small": "#fc8d59",
          "equivalent": "#4575b4", "undecided": "#8c6bb1", "n/a": "#999999", "baseline": "#000000"}
BAND = "#d9d9d9"


def _kind(lv: Lever) -> str:
    """The lever's colour key: 'baseline', or its verdict's shade ('better', 'better-small', 'equivalent', ...)."""
    return "baseline" if lv.baseline or lv.verdict is None else lv.verdict.shade


def _legend_words(kind: str, margin: float) -> str:
    """A verdict shade in the legend's words: 'better by > 0.010', 'better, maybe by < 0.010', 'undecided'."""
    verdict, _, small = kind.partition("-")
    if verdict not in ("better", "worse") or margin <= 0:
        return verdict
    return f"{verdict}, maybe by < {margin_text(margin)}" if small else f"{verdict} by > {margin_text(margin)}"


def _save(fig: Figure, path: str | Path | None) -> Figure:
    if path is not None:
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        fig.savefig(path, dpi=130)
    return fig


def forest(ax: Axes, levers: Sequence[Lever], metric: str, margin: float | None = None) -> None:
    """Each lever's mean difference to the baseline with its interval (top to bottom in table order), the ±margin
    band shaded and a line at zero. The intervals are the verdicts' own (at 1 - alpha / K for K levers), coloured by
    verdict, paler where better/worse may be by less than the margin. A one-seed lever is a hollow point (no
    interval); an n/a lever reads 'n/a'."""
    rows = [lv for lv in levers if _kind(lv) != "baseline"]
    base = next((lv.name for lv in levers if _kind(lv) == "baseline"), "the baseline")
    judged = [lv for lv in rows if lv.verdict.kind != "n/a"]
    if margin is None:
        margin = rows[0].verdict.margin if rows else 0.0
    if margin > 0:
        ax.axvspan(-margin, margin, color=BAND, zorder=0, lw=0)
    ax.axvline(0, color="black", lw=0.8, zorder=1)
    for i, lv in enumerate(rows):
        y, v, color = len(rows) - 1 - i, lv.verdict, COLORS[_kind(lv)]
        if v.kind == "n/a":
            ax.text(0, y, "n/a", ha="center", va="center", color=COLORS["n/a"], fontsize=8)
        elif math.isnan(v.low):
            ax.plot([v.mean], [y], "o", mfc="white", mec=color, ms=7, label=lv.name)
        else:
            ax.errorbar([v.mean], [y], xerr=[[v.mean - v.low], [v.high - v.mean]], fmt="o", color=color,
                        ms=6, capsize=4, lw=1.8, label=lv.name)
        # the numbers beside each row, as a forest plot's right-hand column: readable whatever the x scale
        words = f"n/a: {v.note}" if v.kind == "n/a" else f"{v.interval()}  {_legend_words(v.shade, v.margin)}"
        ax.annotate(words, (1.01, y), xycoords=("axes fraction", "data"), va="center",
                    fontsize=7, color=color)
    ax.set_yticks(range(len(rows)))
    ax.set_yticklabels([lv.name for lv in reversed(rows)], fontsize=8)
    ax.set_ylim(-0.7, len(rows) - 0.3)
    levels = sorted({v.level for v in (lv.verdict for lv in judged) if not math.isnan(v.low)})
    family = max((lv.verdict.family for lv in rows), default=1)
    shared = f", Bonferroni over {family} levers" if family > 1 else ""
    level = (f"mean and {100 * levels[0]:.3g}% interval{shared}" if len(levels) == 1 else
             f"mean and interval at each lever's look{shared}" if levels else
             "mean; no interval from one seed" if judged else "no scores to compare")
    if not judged:
        ax.set_xlim(-3 * (margin or 0.01), 3 * (margin or 0.01))  # zero in the middle, the band visible
    ax.set_xlabel(f"Δ {metric} to {base} ({level})")
    ax.set_title(f"Difference to the baseline on {metric}", fontsize=10)
    ax.grid(axis="x", alpha=0.3)
    order = ("better", "better-small", "worse", "worse-small", "equivalent", "undecided")
    kinds = [k for k in order if any(_kind(lv) == k for lv in judged)]
    handles = [Line2D([], [], marker="o", ls="", color=COLORS[k], label=_legend_words(k, margin)) for k in kinds]
    if margin > 0:
        handles.append(Patch(color=BAND, label=f"±{margin_text(margin)}: equivalent"))
    if handles:
        ax.legend(handles=handles, fontsize=7, loc="best")


def _pareto(points: list[tuple[float, float]]) -> list[tuple[float, float]]:
    """Points no other point beats on both cost and score, by increasing cost."""
    out: list[tuple[float, float]] = []
    for ms, score in sorted(points, key=lambda p: (p[0], -p[1])):
        if not out or score > out[-1][1]:
            out.append((ms, score))
    return out


def frontier(ax: Axes, levers: Sequence[Lever], metric: str) -> None:
    """Each lever's mean score (± its sd over seeds) against its ms per image, labelled, with the cost frontier."""
    shown = [lv for lv in levers if math.isfinite(lv.score)]
    if not shown:
        ax.text(0.5, 0.5, f"no {metric} scores (no objects of that size?)", ha="center", va="center",
                transform=ax.transAxes, color=COLORS["n/a"])
    for lv in shown:
        kind = _kind(lv)
        ax.errorbar([lv.ms], [lv.score], yerr=[[0 if math.isnan(lv.score_sd) else lv.score_sd]] * 2,
                    fmt="*" if kind == "baseline" else "o", ms=11 if kind == "baseline" else 6, color=COLORS[kind],
                    capsize=3, lw=1.2, label=lv.name)
    front = _pareto([(lv.ms, lv.score) for lv in shown])
    if len(front) > 1:
        ax.step([p[0] for p in front], [p[1] for p in front], where="post", ls="--", color="0.5", lw=1, zorder=0,
                label="cost frontier")
    ax.margins(x=0.25, y=0.15)
    ax.set_xlabel("ms per image")
    ax.set_ylabel(f"{metric} (mean ± sd over seeds)")
    ax.set_title(f"{metric} against cost", fontsize=10)
    ax.grid(alpha=0.3)
    kinds = [k for k in COLORS if k != "baseline" and any(_kind(lv) == k for lv in shown)]
    margin = next((lv.verdict.margin for lv in shown if lv.verdict is not None), 0.0)
    handles = [Line2D([], [], marker="*", ms=10, ls="", color=COLORS["baseline"], label="baseline")] if shown else []
    handles += [Line2D([], [], marker="o", ls="", color=COLORS[k], label=_legend_words(k, margin)) for k in kinds]
    if len(front) > 1:
        handles.append(Line2D([], [], ls="--", color="0.5", label="cost frontier:\nnothing cheaper\nscores higher"))
    if handles:  # beside the axes: error bars reach anywhere inside them
        ax.legend(handles=handles, fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    _label_points(ax, [(lv.ms, lv.score, lv.name) for lv in shown])


def _label_points(ax: Axes, points: list[tuple[float, float, str]], size: float = 7) -> None:
    """Name each point beside it (on its left in the right third), nudging a label down off earlier ones."""
    ax.autoscale_view()
    left_edge, right_edge = ax.transAxes.transform([(0, 0), (1, 0)])[:, 0]
    line = size * ax.figure.dpi / 72  # text height in pixels
    placed: list[tuple[float, float, float]] = []  # (left, right, bottom) of each label, in pixels
    for x, y, name in sorted(points, key=lambda p: (-p[1], p[0])):
        px, py = ax.transData.transform((x, y))
        flip = px > left_edge + 0.65 * (right_edge - left_edge)
        wide = 0.55 * line * len(name)  # about a character's width per character
        x0, x1 = (px - 6 - wide, px - 6) if flip else (px + 6, px + 6 + wide)
        dy = 4.0
        while any(x0 < r and l < x1 and abs(py + dy - b) < line for l, r, b in placed):
            dy -= line
        placed.append((x0, x1, py + dy))
        ax.annotate(name, (x, y), xytext=(-6 if flip else 6, dy * 72 / ax.figure.dpi), textcoords="offset points",
                    fontsize=size, va="bottom", ha="right" if flip else "left")


def comparison_plot(levers: Sequence[Lever], metric: str, path: str | Path | None = None,
                    margin: float | None = None) -> Figure:
    """The comparison's figure: the forest plot (left) and score against ms per image (right), as one PNG."""
    fig = Figure(figsize=(15, max(3.6, 0.42 * len(levers) + 1.8)), constrained_layout=True)
    left, right = fig.subplots(1, 2, gridspec_kw={"width_ratios": [1.1, 1], "wspace": 0.08})
    forest(left, levers, metric, margin)
    frontier(right, levers, metric)
    return _save(fig, path)


def forest_plot(levers: Sequence[Lever], metric: str, path: str | Path | None = None,
                margin: float | None = None) -> Figure:
    """The forest plot alone (see forest())."""
    fig = Figure(figsize=(8.5, max(3.0, 0.42 * len(levers) + 1.5)), constrained_layout=True)
    forest(fig.subplots(), levers, metric, margin)
    return _save(fig, path)


def frontier_plot(levers: Sequence[Lever], metric: str, path: str | Path | None = None) -> Figure:
    """Score against ms per image alone (see frontier())."""
    fig = Figure(figsize=(7, 4.5), constrained_layout=True)
    frontier(fig.subplots(), levers, metric)
    return _save(fig, path)


def size_bin_bars(scores: Mapping[str, Mapping[str, float]], path: str | Path | None = None,
                  keys: Sequence[str] | None = None, ranges: Mapping[str, tuple[float, float]] | None = None) -> Figure:
    """AP per object-size bin as grouped bars, one colour per checkpoint; scores: checkpoint -> its metrics.

    keys default to the overall AP (COCO 'AP', else ultralytics' 'mAP50-95') and every 'AP_<bin>'; a bin without
    ground truth (pycocotools' -1) or a missing score gets no bar and reads 'n/a'. ranges (bin -> (lo, hi) px, as
    coco.size_bins gives) label the bins with their sizes.
    """
    names = list(scores)
    first = scores[names[0]]
    if keys is None:
        keys = [k for k in ("AP", "mAP50-95") if k in first][:1] + [k for k in first if k.startswith("AP_")]
    width = 0.8 / len(names)
    wide = max(5.0, 1.2 + 0.35 * len(keys) * len(names) + 0.6 * len(keys))
    fig = Figure(figsize=(wide, 4.2), constrained_layout=True)
    ax = fig.subplots()
    for j, name in enumerate(names):
        xs, hs = [], []
        for i, k in enumerate(keys):
            v = float(scores[name].get(k, math.nan))
            x = i - 0.4 + width * (j + 0.5)
            if math.isfinite(v) and v >= 0:
                xs.append(x)
                hs.append(v)
            else:
                ax.text(x, 0.01, "n/a", ha="center", va="bottom", fontsize=7, rotation=90, color="0.4")
        bars = ax.bar(xs, hs, width * 0.95, label=name)
        if len(names) * len(keys) <= 30:
            ax.bar_label(bars, fmt="%.3f", fontsize=6, padding=1)
    ax.set_xticks(range(len(keys)))
    ax.set_xticklabels([_bin_label(k, ranges) for k in keys], fontsize=8)
    ax.set_ylabel("AP (COCO, IoU 0.50:0.95)")
    ax.set_xlabel("object size (px = √area)")
    ax.set_title("AP per object size", fontsize=10)
    ax.set_ylim(0, max([0.05] + [float(v) for s in scores.values() for k, v in s.items() if k in keys
                                 and math.isfinite(float(v))]) * 1.18)
    ax.grid(axis="y", alpha=0.3)
    ax.legend(fontsize=7, loc="best")
    return _save(fig, path)


def _bin_label(key: str, ranges: Mapping[str, tuple[float, float]] | None) -> str:
    if not key.startswith("AP_"):
        return f"all sizes\n({key})"
    name = key[3:]
    if ranges and name in ranges:
        lo, hi = ranges[name]
        return f"{name}\n{lo:g}-{hi:g}" if math.isfinite(hi) else f"{name}\n≥ {lo:g}"
    return name
