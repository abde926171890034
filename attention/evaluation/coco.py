"""COCO-style scoring of YOLO-format data: AP by object size, under one detection budget.

Ground truth comes from the split's YOLO label files (attention.data.coco_format), predictions from
ultralytics' validator (attention.adapter.validator.validate) or from sliced inference
(attention.inference.slicing.coco_detections); pycocotools does the matching and averaging.

Scoring conventions, the same in `val`, `compare` and the Python API:

- detection budget: at most ``max_det`` detections per image, the highest-scoring ones, both as the prediction
  cap and as COCO's maxDets (pycocotools' default of 100 would score a crowded image on a truncated list).
  The default, DEFAULT_MAX_DET, is what ultralytics validates with (its max_det, 300); VisDrone's protocol is 500;
- size bins: attention.data.size_bins (closed below, open above: a 32 px box is medium);
- ground truth in the frame ultralytics reads (EXIF orientation applied), category id = class + 1,
  image id = the image's path (attention.data.coco_format).
"""

from __future__ import annotations

import contextlib
import io
import warnings
from collections import Counter, defaultdict
from typing import Any

import numpy as np

from attention.adapter.validator import DEFAULT_MAX_DET
from attention.data.size_bins import SIZE_BINS, Bins, area_range, in_bin, size_bins
from attention.errors import UserError

__all__ = ["DEFAULT_MAX_DET", "SIZE_BINS", "budget_note", "check_max_det", "crowded_warning", "evaluate",
           "metric_names", "size_bins", "size_shares"]


def metric_names(bins: Bins) -> list[str]:
    """The figures evaluate() gives with these size bins, in its order: what --metric may name."""
    return ["AP", "AP50", "AP75", *(f"AP_{name}" for name in bins), "AR", *(f"AR_{name}" for name in bins)]

def check_max_det(max_det: int | None) -> int:
    """The detection budget to use: max_det, or DEFAULT_MAX_DET for None; a UserError below 1."""
    if max_det is None:
        return DEFAULT_MAX_DET
    if isinstance(max_det, bool) or int(max_det) != max_det or max_det < 1:
        raise UserError(f"--max-det must be a whole number of detections per image >= 1, got {max_det!r}")
    return int(max_det)


def budget_note(max_det: int | None = None) -> str:
    """How every table that prints AP states its budget: 'at most 300 detections per image (--max-det)'."""
    return f"at most {check_max_det(max_det)} detections per image (--max-det)"


def crowded_warning(gt: dict[str, Any], max_det: int) -> str | None:
    """A warning when an image holds more objects than the budget lets a model find (recall is capped there)."""
    counts = Counter(a["image_id"] for a in gt["annotations"]).values()
    over, most = sum(c > max_det for c in counts), max(counts, default=0)
    if not over:
        return None
    return (f"WARNING: {over} image(s) hold more than {max_det} objects (up to {most}): recall is capped at "
            f"{max_det} detections per image; --max-det {most} or more scores them all")


def cap_per_image(predictions: list[dict[str, Any]], max_det: int) -> list[dict[str, Any]]:
    """The max_det highest-scoring predictions of each image (ties: first listed first)."""
    by_image: dict[Any, list[dict[str, Any]]] = defaultdict(list)
    for p in predictions:
        by_image[p["image_id"]].append(p)
    return [p for found in by_image.values() for p in sorted(found, key=lambda d: -d["score"])[:max_det]]


def evaluate(gt: dict[str, Any], predictions: list[dict[str, Any]], bins: str | Bins = "coco",
             max_det: int | None = None) -> dict[str, float]:
    """AP, AP50, AP75, AR and AP/AR per size bin, as pycocotools computes them, at most max_det detections
    per image (default DEFAULT_MAX_DET).

    A figure is -1 where nothing of that size exists in the ground truth. Predictions of an image id the
    ground truth lacks are left out with a warning.
    """
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    bins = size_bins(bins)
    max_det = check_max_det(max_det)
    # Integer ids for pycocotools, which sorts them (ids are image paths, or whatever the caller used).
    ids = {im["id"]: k for k, im in enumerate(gt["images"], 1)}
    stray = [p["image_id"] for p in predictions if p["image_id"] not in ids]
    if stray:
        warnings.warn(f"{len(stray)} predictions name images that are not in the ground truth (e.g. {stray[0]!r}); "
                      "they are left out of the score", stacklevel=2)
    dataset = {
        "images": [{**im, "id": ids[im["id"]]} for im in gt["images"]],
        "annotations": [{**a, "image_id": ids[a["image_id"]]} for a in gt["annotations"]],
        "categories": gt["categories"],
    }
    dets = [{**p, "image_id": ids[p["image_id"]]} for p in cap_per_image(predictions, max_det) if p["image_id"] in ids]
    with contextlib.redirect_stdout(io.StringIO()):  # pycocotools prints every step
        api = COCO()
        api.dataset = dataset
        api.createIndex()
        ev = COCOeval(api, api.loadRes(dets) if dets else _empty(api), "bbox")
        ev.params.maxDets = [m for m in (1, 10) if m < max_det] + [max_det]  # every figure below is read at the last
        ev.params.areaRng = [[0, np.inf]] + [list(area_range(lo, hi)) for lo, hi in bins.values()]
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


def size_shares(gt: dict[str, Any], bins: str | Bins) -> dict[str, float]:
    """Share of ground-truth boxes in each size bin (the boxes evaluate() scores in that bin)."""
    areas = np.array([a.get("area", a["bbox"][2] * a["bbox"][3]) for a in gt["annotations"]], dtype=float)
    return {name: float(in_bin(areas, lo, hi).mean()) if areas.size else 0.0
            for name, (lo, hi) in size_bins(bins).items()}
