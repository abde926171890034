"""Judge recorded comparisons again with today's verdict rules, from the per-seed scores in benchmarks/RESULTS.md.

No training: the per-seed AP_tiny of each run, as RESULTS.md records it (console lines to three decimals; CBAM's
paired differences on the large set to five), go through the same summarize() and closing_line() compare uses.
Three-decimal scores move an interval's last digit at most by one against the runs' own files.

Usage: python benchmarks/rejudge.py [--markdown] [--figures DIR]
(both recorded comparisons; --markdown: as README tables; --figures: each one's compare.png, as compare draws it)
"""

from __future__ import annotations

import argparse
import math
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:  # run as `python benchmarks/rejudge.py` from anywhere
    sys.path.insert(0, str(REPO))

from attention.evaluation.plots import comparison_plot  # noqa: E402
from attention.evaluation.stats import DEFAULT_MARGIN  # noqa: E402
from attention.evaluation.summary import closing_line, how_to_read, summarize  # noqa: E402
from attention.evaluation.tables import format_markdown, format_table  # noqa: E402

METRIC = "AP_tiny"

# RESULTS.md, "From scratch: yolov5n, SE, CBAM, three seeds" (compare-n.yaml, 2026-12-03): AP_tiny per seed 0, 1, 2
COMPARE_N = {
    "name": "compare-n (5 epochs from scratch at 320, 3 seeds)",
    "file": "compare-n.png",
    "modes": [("full", 320)],
    "scores": {"yolov5n": {("full", 320): (0.271, 0.264, 0.307)},
               "yolov5n-se": {("full", 320): (0.276, 0.289, 0.192)},
               "yolov5n-cbam": {("full", 320): (0.202, 0.270, 0.298)}},
    "params": {"yolov5n": 2.509, "yolov5n-se": 2.520, "yolov5n-cbam": 2.531},
    "ms": {("yolov5n", ("full", 320)): 31.069, ("yolov5n-se", ("full", 320)): 31.524,
           ("yolov5n-cbam", ("full", 320)): 32.909},
}

# RESULTS.md, "Fine-tuning on the large set, re-judged" (compare-large.yaml, 2026-11-29/30): AP_tiny per seed of the
# whole image at 1920 and of 640 px tiles; CBAM as its recorded per-seed differences to yolov5n (five decimals).
FULL, SLICED = ("full", 1920), ("sliced", 640)
BASE_LARGE = {FULL: (0.666, 0.671, 0.652), SLICED: (0.637, 0.659, 0.608)}
CBAM_DIFFS = {FULL: (-0.00048, -0.00042, -0.00031), SLICED: (0.00042, -0.00097, -0.00016)}
COMPARE_LARGE = {
    "name": "compare-large (one base, each variant fine-tuned 3 epochs at 1920, 3 seeds)",
    "file": "compare-large.png",
    "modes": [FULL, SLICED],
    "scores": {"yolov5n": BASE_LARGE,
               "yolov5n-cbam": {m: tuple(b + d for b, d in zip(BASE_LARGE[m], CBAM_DIFFS[m])) for m in BASE_LARGE},
               "yolov5n-p2": {FULL: (0.620, 0.599, 0.226), SLICED: (0.617, 0.589, 0.424)},
               "yolov5n-p2-cbam": {FULL: (0.607, 0.645, 0.307), SLICED: (0.632, 0.658, 0.541)}},
    "params": {"yolov5n": 2.509, "yolov5n-cbam": 2.531, "yolov5n-p2": 2.383, "yolov5n-p2-cbam": 2.405},
    "ms": {("yolov5n", FULL): 445.3, ("yolov5n", SLICED): 816.3, ("yolov5n-cbam", FULL): 469.5,
           ("yolov5n-cbam", SLICED): 778.5, ("yolov5n-p2", FULL): 843.7, ("yolov5n-p2", SLICED): 1165.0,
           ("yolov5n-p2-cbam", FULL): 869.9, ("yolov5n-p2-cbam", SLICED): 1182.3},
}


def rejudge(recorded: dict, margin: float = DEFAULT_MARGIN, figure: Path | None = None) -> tuple[list[dict], str, str]:
    """(table rows, the text under the table, the closing line) of a recorded comparison under today's rules; with
    figure, its compare.png there."""
    modes = recorded["modes"]
    levers = [(v, m) for v in recorded["scores"] for m in modes]
    seeds = [0, 1, 2]
    # only AP_tiny is recorded per seed; the other columns summarize() fills read n/a and are dropped below
    scores = {(v, m, s): {METRIC: recorded["scores"][v][m][s], "AP": math.nan, "AP50": math.nan}
              for v, m in levers for s in seeds}
    names = {(v, m): v if len(modes) == 1 else f"{v}, {m[0]} {m[1]}" for v, m in levers}
    sizes = {v: {"params(M)": p} for v, p in recorded["params"].items()}
    rows, stats = summarize(levers, seeds, scores, METRIC, sizes, recorded["ms"], names, margin=margin)
    if figure is not None:
        comparison_plot(stats, METRIC, figure, margin=margin)
    rows = [{k: v for k, v in row.items() if k not in ("AP", "AP50", "params(M)")} for row in rows]
    return rows, how_to_read(METRIC, margin, levers=len(levers) - 1), closing_line(stats, METRIC)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--markdown", action="store_true", help="print the tables as Markdown (README, RESULTS.md)")
    p.add_argument("--margin", type=float, default=DEFAULT_MARGIN)
    p.add_argument("--figures", type=Path, help="write each figure here: compare-n.png, compare-large.png")
    a = p.parse_args()
    for recorded in (COMPARE_N, COMPARE_LARGE):
        figure = a.figures / recorded["file"] if a.figures else None
        rows, notes, line = rejudge(recorded, a.margin, figure)
        table = format_markdown(rows) if a.markdown else format_table(rows)
        print(f"{recorded['name']}:\n{table}\n{notes}\n{line}\n")


if __name__ == "__main__":
    main()
