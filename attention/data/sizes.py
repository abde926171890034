"""Dataset report: how small are the objects? Shares per size bin, per split and per class.

yolov5-attention sizes --data tiny-objects.yaml     # prints tables, writes runs/sizes/exp/sizes.{csv,md,png}
Sizes are the square root of box area in native pixels.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np

from attention.data.coco_format import yolo_to_coco
from attention.data.listing import SPLITS, class_names, data_dict, list_images
from attention.data.prepare import prepare_data

# AI-TOD's tiny bins below 32 px, COCO's above.
BINS = {"very tiny": (0, 8), "tiny": (8, 16), "small": (16, 32), "medium": (32, 96), "large": (96, math.inf)}


def object_sizes(data: str) -> dict[str, dict[str, np.ndarray]]:
    """split -> class name -> sqrt(area) of every labelled box, in native pixels."""
    cfg = data_dict(prepare_data(data))
    names = class_names(cfg)
    out = {}
    for split in SPLITS:
        if not cfg.get(split):
            continue
        coco = yolo_to_coco([Path(p) for p in list_images(cfg[split], cfg.get("path"))], names)
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
