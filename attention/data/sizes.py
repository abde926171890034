"""Dataset report: how small are the objects? Shares per size bin, per split and per class.

yolov5-attention sizes --data tiny-objects.yaml     # prints tables, writes runs/sizes/exp/sizes.{csv,md,png}

Sizes are the square root of box area in native pixels of the frame ultralytics reads; the bins are
attention.data.size_bins' (default 'fine': very_tiny, tiny, small, medium, large), the same boxes `val`
scores in a bin of the same name.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np

from attention.data.coco_format import yolo_to_coco
from attention.data.listing import SPLITS, class_names, data_dict, list_images
from attention.data.prepare import prepare_data
from attention.data.size_bins import Bins, in_bin, size_bins

DEFAULT_BINS = "fine"


def object_areas(data: str) -> dict[str, dict[str, np.ndarray]]:
    """split -> class name -> area in px² of every labelled box (the COCO ground truth's areas)."""
    cfg = data_dict(prepare_data(data))
    names = class_names(cfg)
    out = {}
    for split in SPLITS:
        if not cfg.get(split):
            continue
        coco = yolo_to_coco([Path(p) for p in list_images(cfg[split], cfg.get("path"))], names)
        areas = np.array([a["area"] for a in coco["annotations"]], dtype=float)
        cls = np.array([a["category_id"] - 1 for a in coco["annotations"]], dtype=int)
        out[split] = {n: areas[cls == k] for k, n in enumerate(names)}
    return out


def share_rows(areas: dict[str, dict[str, np.ndarray]], bins: str | Bins = DEFAULT_BINS) -> list[dict[str, Any]]:
    """One row per split and class (and 'all'): object count and the share in each bin."""
    bins = size_bins(bins)
    rows = []
    for split, per_class in areas.items():
        groups = {"all": np.concatenate(list(per_class.values()) or [np.zeros(0)]), **per_class}
        for name, a in groups.items():
            row: dict[str, Any] = {"split": split, "class": name, "objects": len(a)}
            for b, (lo, hi) in bins.items():
                row[b] = f"{in_bin(a, lo, hi).mean():.1%}" if len(a) else "-"
            row["median px"] = float(np.sqrt(np.median(a))) if len(a) else math.nan
            rows.append(row)
    return rows


def plot(areas: dict[str, dict[str, np.ndarray]], path: Path, bins: str | Bins = DEFAULT_BINS) -> Path:
    """Histogram of object sizes (sqrt of area) per split on a log axis, bin edges marked."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(areas), figsize=(5 * len(areas), 3.4), squeeze=False)
    for ax, (split, per_class) in zip(axes[0], areas.items()):
        data = [np.sqrt(a) for a in per_class.values()]
        top = max([s.max() for s in data if len(s)] + [2])
        edges = np.geomspace(1, max(top * 1.1, 2), 40)
        ax.hist(data, bins=edges, stacked=True, label=list(per_class))
        for lo, _ in list(size_bins(bins).values())[1:]:
            ax.axvline(lo, color="k", lw=0.8, ls="--")
        ax.set_xscale("log")
        ax.set_title(f"{split}: object size (sqrt of box area, px)")
        ax.set_ylabel("objects")
        ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
