"""ultralytics' validator as our scoring uses it: its metrics and COCO-form predictions, and its matcher for ours.

validate() runs model.val() and returns its metrics with the predictions it wrote (predictions.json),
category ids made 1-based on every release (8.3.0 wrote them 0-based). SlicedMatcher feeds predictions
made outside the validator (sliced inference) through the validator's own matching and averaging,
so a sliced score and a plain one are the same computation (compat feature "sliced_val").
"""

from __future__ import annotations

import inspect
import json
from pathlib import Path
from typing import Any

import numpy as np
import torch
from ultralytics.models.yolo.detect import DetectionValidator
from ultralytics.utils.metrics import DetMetrics

from attention.adapter import compat


def _category_offset() -> int:
    """What to add to predictions.json's category ids to make them 1-based (class + 1)."""
    try:
        source = inspect.getsource(DetectionValidator.init_metrics)
    except (OSError, TypeError):
        return 0
    return 0 if "range(1," in source else 1


CATEGORY_OFFSET = _category_offset()


def box_metrics(metrics: Any) -> dict[str, float]:
    """Overall P, R, mAP50, mAP50-95 of an ultralytics DetMetrics."""
    box = metrics.box
    return {"P": float(box.mp), "R": float(box.mr), "mAP50": float(box.map50), "mAP50-95": float(box.map)}


def validate(model: Any, data: str, split: str, save_dir: Path, **val_args: Any) -> tuple[Any, list[dict]]:
    """model.val() on a split, saved in save_dir: (its DetMetrics, its COCO-form predictions, category = class + 1)."""
    metrics = model.val(data=data, split=split, save_json=True, project=str(save_dir.parent), name=save_dir.name,
                        exist_ok=True, **val_args)
    pred_file = save_dir / "predictions.json"  # project/name as given, exist_ok: the validator writes here
    predictions = json.loads(pred_file.read_text()) if pred_file.is_file() else []
    for p in predictions:
        p["category_id"] += CATEGORY_OFFSET
    return metrics, predictions


def require_sliced_scoring() -> None:
    """ValueError (one line for the user) where the installed release lacks what SlicedMatcher calls."""
    if not compat.enabled("sliced_val"):
        feature = compat.FEATURES["sliced_val"]
        raise ValueError(f"{feature.title} needs ultralytics {feature.works}; this is {compat.VERSION}")


class SlicedMatcher:
    """P, R, mAP as ultralytics' validator computes them, for predictions made image by image elsewhere."""

    def __init__(self, names: list[str]) -> None:
        require_sliced_scoring()
        self._matcher = DetectionValidator()
        self._matcher.iouv = torch.linspace(0.5, 0.95, 10)
        self._matcher.niou = self._matcher.iouv.numel()
        self.metrics = DetMetrics(names=dict(enumerate(names)))

    def add(self, name: str, xyxy: np.ndarray, conf: np.ndarray, cls: np.ndarray, gt_cls: np.ndarray,
            gt_xyxy: np.ndarray) -> None:
        """One image: predicted boxes (pixels, xyxy) with confidences and classes, and its ground truth."""
        labels = {"cls": torch.from_numpy(gt_cls.astype(np.float32)), "bboxes": torch.from_numpy(gt_xyxy)}
        found = {"cls": torch.from_numpy(cls.astype(np.float32)), "bboxes": torch.from_numpy(xyxy)}
        self.metrics.update_stats({**self._matcher._process_batch(found, labels), "conf": conf, "pred_cls": cls,
                                   "target_cls": gt_cls, "target_img": np.unique(gt_cls), "im_name": name})

    def finish(self, save_dir: Path) -> DetMetrics:
        save_dir.mkdir(parents=True, exist_ok=True)
        self.metrics.process(save_dir=save_dir)
        return self.metrics
