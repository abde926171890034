"""The comparison's pictures plot the table's numbers: read back from the figures' artists, and saved as PNGs."""

from __future__ import annotations

import math
import re

import numpy as np
import pytest
from matplotlib.container import BarContainer, ErrorbarContainer

from attention.evaluation.plots import comparison_plot, forest_plot, frontier_plot, size_bin_bars
from attention.evaluation.summary import summarize

F, S = ("full", 160), ("sliced", 96)
LEVERS = [("base", F), ("base", S), ("cbam", F), ("cbam", S), ("p2", F)]
NAMES = {lv: f"{lv[0]}, {lv[1][0]}" for lv in LEVERS}
SIZES = {"base": {"params(M)": 1.0}, "cbam": {"params(M)": 1.1}, "p2": {"params(M)": 1.2}}
LATENCY = dict(zip(LEVERS, (10.0, 30.0, 12.0, 33.0, 20.0)))
NOISE = {lv: np.random.default_rng(k).normal(0, 0.004, 4) for k, lv in enumerate(LEVERS)}
EFFECT = dict(zip(LEVERS, (0.0, 0.05, 0.002, -0.03, 0.004)))
NUMBER = r"[+-]\d\.\d{3}"


def scores(seeds=range(4)):
    small = {(*lv, s): 0.30 + 0.05 * s + EFFECT[lv] + NOISE[lv][s] for lv in LEVERS for s in seeds}
    return {key: {"AP": 0.3, "AP50": 0.6, "AP_small": v, "AP_large": -1.0} for key, v in small.items()}


@pytest.fixture
def table():
    return summarize(LEVERS, [0, 1, 2, 3], scores(), "AP_small", SIZES, LATENCY, NAMES, margin=0.01)


def bars_of(ax):
    return {c.get_label(): c for c in ax.containers if isinstance(c, ErrorbarContainer)}


def test_the_forest_plot_shows_each_row_of_the_table(table, tmp_path):
    rows, stats = table
    fig = forest_plot(stats, "AP_small", tmp_path / "forest.png")
    ax = fig.axes[0]
    drawn = bars_of(ax)
    assert set(drawn) == {r["lever"] for r in rows[1:]}
    ticks = [t.get_text() for t in ax.get_yticklabels()]
    delta = next(k for k in rows[0] if k.startswith("ΔAP_small ["))
    assert delta == "ΔAP_small [98.8% CI]"  # 4 levers share the 5%: each interval at 98.75%, the verdicts' own
    for row in rows[1:]:
        mean, low, high = map(float, re.findall(NUMBER, row[delta]))
        line, _, (segments,) = drawn[row["lever"]].lines
        (x0, y0), (x1, y1) = segments.get_segments()[0]
        assert line.get_xdata()[0] == pytest.approx(mean, abs=5e-4) and (x0, x1) == pytest.approx((low, high), abs=5e-4)
        assert ticks[int(round(y0))] == row["lever"] == ticks[int(round(line.get_ydata()[0]))]  # on its own row
    band = [p for p in ax.patches if _x_extent(p) == pytest.approx((-0.01, 0.01))]
    assert len(band) == 1
    assert any(list(ln.get_xdata()) == [0, 0] for ln in ax.get_lines())  # the zero line
    assert "AP_small" in ax.get_xlabel() and "98.8% interval, Bonferroni over 4 levers" in ax.get_xlabel()
    assert (tmp_path / "forest.png").stat().st_size > 10_000


def test_the_verdict_words_beside_each_row_and_in_the_legend_say_its_strength(tmp_path):
    # p2 +0.013 with a spread that leaves its interval above 0 but into the band: better, maybe by less than 0.010
    effect = {("base", F): 0.0, ("cbam", F): 0.05, ("p2", F): 0.013}
    spread = {("base", F): (0.0, 0.0, 0.0), ("cbam", F): (0.001, -0.001, 0.0), ("p2", F): (-0.002, 0.0, 0.002)}
    levers = list(effect)
    small = {(*lv, s): {"AP": 0.3, "AP50": 0.6, "AP_small": 0.3 + 0.05 * s + effect[lv] + spread[lv][s]}
             for lv in levers for s in range(3)}
    rows, stats = summarize(levers, [0, 1, 2], small, "AP_small", SIZES, LATENCY, NAMES, margin=0.01)
    assert [lv.verdict.shade for lv in stats[1:]] == ["better", "better-small"]
    ax = forest_plot(stats, "AP_small").axes[0]
    words = [t.get_text() for t in ax.texts]
    assert words == [f"{lv.verdict.interval()}  {w}" for lv, w in
                     zip(stats[1:], ("better by > 0.010", "better, maybe by < 0.010"))]
    legend = [t.get_text() for t in ax.get_legend().get_texts()]
    assert legend == ["better by > 0.010", "better, maybe by < 0.010", "±0.010: equivalent"]
    drawn = bars_of(ax)
    strong, weak = (drawn[lv.name].lines[0].get_color() for lv in stats[1:])
    assert strong != weak  # told apart by colour too


def _x_extent(patch):
    xy = patch.get_patch_transform().transform(patch.get_path().vertices)  # data x for a span (blended transform)
    return float(xy[:, 0].min()), float(xy[:, 0].max())


def test_the_cost_frontier_plots_score_against_ms_per_image(table, tmp_path):
    rows, stats = table
    fig = frontier_plot(stats, "AP_small", tmp_path / "frontier.png")
    ax = fig.axes[0]
    drawn = bars_of(ax)
    for row in rows:
        mean, sd = map(float, row["AP_small"].split(" ± "))
        line, _, (segments,) = drawn[row["lever"]].lines
        assert (line.get_xdata()[0], line.get_ydata()[0]) == pytest.approx((row["ms/image"], mean), abs=5e-4)
        (_, y0), (_, y1) = segments.get_segments()[0]
        assert (y1 - y0) / 2 == pytest.approx(sd, abs=5e-4)
    labels = {t.get_text() for t in ax.texts}
    assert labels == {r["lever"] for r in rows}
    # the frontier: by rising cost, every lever that scores above all cheaper ones (from the table's cells)
    cheapest_first = sorted((r["ms/image"], float(r["AP_small"].split(" ± ")[0])) for r in rows)
    expected = [(ms, y) for k, (ms, y) in enumerate(cheapest_first) if all(y > y0 for _, y0 in cheapest_first[:k])]
    front = [ln for ln in ax.get_lines() if ln.get_linestyle() == "--"][0]
    assert sorted(set(front.get_xdata())) == [ms for ms, _ in expected] and len(expected) >= 2
    assert ax.get_xlabel() == "ms per image" and "AP_small" in ax.get_ylabel()


def test_one_seed_and_no_ground_truth_are_drawn_as_such(tmp_path):
    one = scores(seeds=[0])
    _, stats = summarize(LEVERS, [0], one, "AP_small", SIZES, LATENCY, NAMES)
    ax = forest_plot(stats, "AP_small").axes[0]
    assert not bars_of(ax)  # no interval from one seed: hollow points only
    points = [ln for ln in ax.get_lines() if ln.get_marker() == "o"]
    assert len(points) == 4 and all(ln.get_markerfacecolor() in ("white", (1.0, 1.0, 1.0, 1.0)) for ln in points)
    _, stats = summarize(LEVERS, [0, 1, 2], scores(), "AP_large", SIZES, LATENCY, NAMES)
    fig = comparison_plot(stats, "AP_large", tmp_path / "compare.png")
    assert [t.get_text() for t in fig.axes[0].texts if t.get_text() == "n/a"] == ["n/a"] * 4
    assert (tmp_path / "compare.png").is_file()


def test_size_bin_bars_are_the_scores(tmp_path):
    runs = {"yolov5n": {"mAP50-95": 0.41, "AP_tiny": 0.45, "AP_small": 0.62, "AP_medium": -1.0},
            "yolov5n-cbam": {"mAP50-95": 0.43, "AP_tiny": 0.47, "AP_small": math.nan, "AP_medium": -1.0}}
    bins = {"tiny": (8, 16), "small": (16, 32), "medium": (32, math.inf)}
    fig = size_bin_bars(runs, tmp_path / "bars.png", ranges=bins)
    ax = fig.axes[0]
    bars = {c.get_label(): c for c in ax.containers if isinstance(c, BarContainer)}
    assert list(bars) == list(runs)
    ticks = [t.get_text() for t in ax.get_xticklabels()]
    assert ticks == ["all sizes\n(mAP50-95)", "tiny\n8-16", "small\n16-32", "medium\n≥ 32"]
    for name, container in bars.items():
        got = {ticks[int(round(p.get_x() + p.get_width() / 2))]: p.get_height() for p in container.patches}
        want = {t: v for t, v in zip(ticks, runs[name].values()) if v >= 0}  # NaN compares False: left out
        assert got == pytest.approx(want)
    assert sum(t.get_text() == "n/a" for t in ax.texts) == 3  # two empty medium bins and one missing score
    assert "AP" in ax.get_ylabel() and (tmp_path / "bars.png").stat().st_size > 10_000
