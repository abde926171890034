"""Dataset report: how small are the objects? Shares per size bin, per split and per class.

python -m attention.sizes --data data/tiny-objects.yaml     # prints tables, writes runs/sizes/exp/sizes.{csv,md,png}
Sizes are the square root of box area in native pixels.
"""

from __future__ import annotations

import argparse
import math
import sys
from pathlib import Path
from typing import Any

import numpy as np
from ultralytics.data.utils import check_det_dataset
from ultralytics.utils.files import increment_path

from attention.cli import run as run_cli
from attention.coco import split_images, yolo_to_coco
from attention.dataset import EMBEDDED_DATA, prepare_data
from attention.report import format_table, write_table

# AI-TOD's tiny bins below 32 px, COCO's above.
BINS = {"very tiny": (0, 8), "tiny": (8, 16), "small": (16, 32), "medium": (32, 96), "large": (96, math.inf)}


def object_sizes(data: str) -> dict[str, dict[str, np.ndarray]]:
    """split -> class name -> sqrt(area) of every labelled box, in native pixels."""
    cfg = check_det_dataset(prepare_data(data), autodownload=False)
    names = [cfg["names"][i] for i in sorted(cfg["names"])]
    out = {}
    for split in ("train", "val", "test"):
        if not cfg.get(split):
            continue
        coco = yolo_to_coco(split_images(Path(cfg["path"]), cfg[split]), names)
        sides = np.sqrt([a["bbox"][2] * a["bbox"][3] for a in coco["annotations"]])
        cls = np.array([a["category_id"] - 1 for a in coco["annotations"]], dtype=int)
        out[split] = {n: sides[cls == k] for k, n in enumerate(names)}
    return out


def share_rows(sizes: dict[str, dict[str, np.ndarray]]) -> list[dict[str, Any]]:
    """One row per split and class (and 'all'): object count and the share in each bin."""
    rows = []
    for split, per_class in sizes.items():
        groups = {"all": np.concatenate(list(per_class.values()) or [np.zeros(0)]), **per_class}
        for name, s in groups.items():
            row: dict[str, Any] = {"split": split, "class": name, "objects": len(s)}
            for b, (lo, hi) in BINS.items():
                row[b] = f"{((s >= lo) & (s < hi)).mean():.1%}" if len(s) else "-"
            row["median px"] = float(np.median(s)) if len(s) else math.nan
            rows.append(row)
    return rows


def plot(sizes: dict[str, dict[str, np.ndarray]], path: Path) -> Path:
    """Histogram of object sizes per split on a log axis, bin edges marked."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(sizes), figsize=(5 * len(sizes), 3.4), squeeze=False)
    for ax, (split, per_class) in zip(axes[0], sizes.items()):
        data = [s for s in per_class.values()]
        top = max([s.max() for s in data if len(s)] + [2])
        edges = np.geomspace(1, max(top * 1.1, 2), 40)
        ax.hist(data, bins=edges, stacked=True, label=list(per_class))
        for lo, _ in list(BINS.values())[1:]:
            ax.axvline(lo, color="k", lw=0.8, ls="--")
        ax.set_xscale("log")
        ax.set_title(f"{split}: object size (sqrt of box area, px)")
        ax.set_ylabel("objects")
        ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def report(data: str | Path = EMBEDDED_DATA, project: str | Path = "runs/sizes", name: str = "exp",
           exist_ok: bool = False) -> list[dict[str, Any]]:
    """Print the size table and write sizes.csv, sizes.md and sizes.png."""
    sizes = object_sizes(str(data))
    rows = share_rows(sizes)
    out = increment_path(Path(project).resolve() / name, exist_ok=exist_ok)
    write_table(rows, out / "sizes")
    plot(sizes, out / "sizes.png")
    edges = ", ".join(f"{b} {lo:g}-{hi:g}" for b, (lo, hi) in BINS.items())
    print(f"Object sizes in {data} (px = sqrt of box area; {edges}):\n{format_table(rows)}\nSaved to {out}")
    return rows


if __name__ == "__main__":
    p = argparse.ArgumentParser(prog="python -m attention.sizes", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", default=str(EMBEDDED_DATA))
    p.add_argument("--project", default="runs/sizes")
    p.add_argument("--name", default="exp")
    p.add_argument("--exist-ok", action="store_true")
    sys.argv[0] = "attention.sizes"
    run_cli(report, **vars(p.parse_args()))
