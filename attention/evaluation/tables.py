"""Side-by-side tables of runs: printed, and written as CSV and Markdown."""

from __future__ import annotations

import csv
from pathlib import Path
from typing import Any, Sequence

import torch

from attention.adapter.api import get_flops

METRIC_COLUMNS = ("P", "R", "mAP50", "mAP50-95")


def model_size(model: torch.nn.Module, imgsz: int) -> dict[str, float]:
    """Parameters (millions) and GFLOPs at imgsz of a DetectionModel."""
    return {
        "params(M)": sum(p.numel() for p in model.parameters()) / 1e6,
        f"GFLOPs@{imgsz}": get_flops(model, imgsz),
    }


def _cell(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.3f}" if abs(value) < 100 else f"{value:.0f}"
    return str(value)


def format_table(rows: Sequence[dict[str, Any]]) -> str:
    """A fixed-width text table; the columns are the keys of the first row."""
    cols = list(rows[0])
    cells = [[_cell(r.get(c, "")) for c in cols] for r in rows]
    widths = [max(len(c), *(len(row[j]) for row in cells)) for j, c in enumerate(cols)]
    line = lambda vals: "  ".join(v.ljust(w) if j == 0 else v.rjust(w) for j, (v, w) in enumerate(zip(vals, widths)))
    return "\n".join([line(cols), line(["-" * w for w in widths]), *(line(r) for r in cells)])


def format_markdown(rows: Sequence[dict[str, Any]]) -> str:
    cols = list(rows[0])
    head = f"| {' | '.join(cols)} |\n|{'|'.join('---' for _ in cols)}|\n"
    return head + "".join(f"| {' | '.join(_cell(r.get(c, '')) for c in cols)} |\n" for r in rows)


def write_table(rows: Sequence[dict[str, Any]], stem: Path) -> tuple[Path, Path]:
    """Write stem.csv and stem.md; returns both paths."""
    stem.parent.mkdir(parents=True, exist_ok=True)
    csv_path, md_path = stem.with_suffix(".csv"), stem.with_suffix(".md")
    with csv_path.open("w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    md_path.write_text(format_markdown(rows))
    return csv_path, md_path
