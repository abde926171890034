"""COCO-style scoring of YOLO-format data: AP by object size, with size bins of your choice.

Ground truth comes from the split's YOLO label files (attention.data.coco_format), predictions from
ultralytics' validator (``save_json=True`` writes them in COCO form) or from sliced inference;
pycocotools does the matching and averaging.
"""

from __future__ import annotations

import contextlib
import io
import math
from typing import Any, Sequence

import numpy as np

# Size bins by the square root of box area in native pixels: name -> (low, high).
SIZE_BINS: dict[str, dict[str, tuple[float, float]]] = {
    "coco": {"small": (0, 32), "medium": (32, 96), "large": (96, math.inf)},
    # AI-TOD style, for tiny-object datasets (its 'very tiny' starts at 2 px; we start at 0 so no box is lost)
    "tiny": {"very_tiny": (0, 8), "tiny": (8, 16), "small": (16, 32), "medium": (32, math.inf)},
}


def size_bins(spec: str | Sequence[float]) -> dict[str, tuple[float, float]]:
    """A preset name ('coco', 'tiny') or ascending edges in px ('0,16,32,inf') -> {name: (low, high)}."""
    if isinstance(spec, str) and spec in SIZE_BINS:
        return dict(SIZE_BINS[spec])
    try:
        edges = [float(x) for x in (spec.split(",") if isinstance(spec, str) else spec)]
    except ValueError:
        edges = []
    if len(edges) < 2 or any(b <= a for a, b in zip(edges, edges[1:])) or edges[0] < 0:
        raise ValueError(f"size bins must be {' or '.join(SIZE_BINS)} or ascending edges in px like 0,16,32,inf; "
                         f"got {spec!r}")
    fmt = lambda v: "inf" if math.isinf(v) else f"{v:g}"
    return {f"{fmt(a)}-{fmt(b)}": (a, b) for a, b in zip(edges, edges[1:])}


def evaluate(gt: dict[str, Any], predictions: list[dict[str, Any]],
             bins: str | dict[str, tuple[float, float]] = "coco") -> dict[str, float]:
    """AP, AP50, AP75, AR and AP/AR per size bin (maxDets 100), as pycocotools computes them.

    A figure is -1 where nothing of that size exists in the ground truth.
    """
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    bins = size_bins(bins) if isinstance(bins, str) else bins
    # Integer ids for pycocotools, which sorts them (file stems can mix numbers and names).
    ids = {im["id"]: k for k, im in enumerate(gt["images"], 1)}
    dataset = {
        "images": [{**im, "id": ids[im["id"]]} for im in gt["images"]],
        "annotations": [{**a, "image_id": ids[a["image_id"]]} for a in gt["annotations"]],
        "categories": gt["categories"],
    }
    dets = [{**p, "image_id": ids[p["image_id"]]} for p in predictions if p["image_id"] in ids]
    with contextlib.redirect_stdout(io.StringIO()):  # pycocotools prints every step
        api = COCO()
        api.dataset = dataset
        api.createIndex()
        ev = COCOeval(api, api.loadRes(dets) if dets else _empty(api), "bbox")
        ev.params.areaRng = [[0, 1e10]] + [[lo ** 2, min(hi ** 2, 1e10)] for lo, hi in bins.values()]
        ev.params.areaRngLbl = ["all", *bins]
        ev.evaluate()
        ev.accumulate()
    precision, recall = ev.eval["precision"], ev.eval["recall"]  # [T, R, K, A, M], [T, K, A, M]

    def mean(x: np.ndarray) -> float:
        x = x[x > -1]
        return float(x.mean()) if x.size else -1.0

    out = {"AP": mean(precision[:, :, :, 0, -1]), "AP50": mean(precision[0, :, :, 0, -1]),
           "AP75": mean(precision[5, :, :, 0, -1])}
    out.update({f"AP_{name}": mean(precision[:, :, :, a, -1]) for a, name in enumerate(bins, 1)})
    out["AR"] = mean(recall[:, :, 0, -1])
    out.update({f"AR_{name}": mean(recall[:, :, a, -1]) for a, name in enumerate(bins, 1)})
    return out


def _empty(api: Any) -> Any:
    """A detection set with no detections (pycocotools' loadRes refuses an empty list)."""
    from pycocotools.coco import COCO

    empty = COCO()
    empty.dataset = {"images": api.dataset["images"], "categories": api.dataset["categories"], "annotations": []}
    empty.createIndex()
    return empty


def size_shares(gt: dict[str, Any], bins: dict[str, tuple[float, float]]) -> dict[str, float]:
    """Share of ground-truth boxes in each size bin."""
    sides = np.sqrt([a["bbox"][2] * a["bbox"][3] for a in gt["annotations"]])
    return {name: float(((sides >= lo) & (sides < hi)).mean()) if sides.size else 0.0
            for name, (lo, hi) in bins.items()}
