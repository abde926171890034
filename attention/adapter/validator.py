"""ultralytics' validator as our scoring uses it: its metrics and COCO-form predictions, and its matcher for ours.

validate() runs model.val() and returns its metrics with its predictions in our COCO form: image id = the
image's path (image_id), category id = class + 1, whatever ids the release wrote into predictions.json
(8.3.x the class index, 8.4.x class + 1, COCO's 91-id map for a val list named like COCO's: compat
PREDICTION_IDS). It learns both from the validator itself: each prediction is recorded with the image file
and the class it was made for as the validator writes it. The prediction cap is the detection budget asked
for (max_det), on every release. SlicedMatcher feeds predictions made outside the validator (sliced
inference) through the validator's own matching and averaging, so a sliced score and a plain one are the
same computation (compat feature "sliced_val").
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch
from ultralytics.models.yolo.detect import DetectionValidator
from ultralytics.utils import DEFAULT_CFG
from ultralytics.utils.metrics import DetMetrics

from attention.adapter import compat
from attention.errors import UserError

# The detection budget ultralytics validates with unless told otherwise (its max_det setting, 300 on 8.3-8.4).
DEFAULT_MAX_DET = int(DEFAULT_CFG.max_det)


def image_id(path: str | Path) -> str:
    """The id of an image in our COCO ground truth and predictions: its absolute, normalised path."""
    return os.path.abspath(os.fspath(path))


def box_metrics(metrics: Any) -> dict[str, float]:
    """Overall P, R, mAP50, mAP50-95 of an ultralytics DetMetrics."""
    box = metrics.box
    return {"P": float(box.mp), "R": float(box.mr), "mAP50": float(box.map50), "mAP50-95": float(box.map)}


class ScoringValidator(DetectionValidator):
    """ultralytics' detection validator that keeps the budget it is given and records, for every prediction it
    writes into its jdict (predictions.json), the image file and the class the prediction was made for."""

    def init_metrics(self, model: Any) -> None:
        budget = self.args.max_det
        super().init_metrics(model)
        self.args.max_det = budget  # the budget is ours to state: see _check_max_det
        self.sources: list[tuple[str, int]] | None = []

    @staticmethod
    def _check_max_det(*args: Any, **kwargs: Any) -> None:
        """8.4.x raises a max_det left at its default to the most objects in one image of the split (and says so);
        we keep the budget we were given on every release, and val warns about crowded images itself."""

    def eval_json(self, stats: dict) -> dict:
        """No second COCO evaluation: ours (attention/evaluation/coco.py) scores at the budget asked for, while
        ultralytics' (every split on 8.4.x, COCO-named lists on 8.3.x) reads 100 detections per image and, for a
        COCO-named list, writes its own AP over the P, R and mAP that the tables take from the validator (8.4.x also
        asks pip for faster-coco-eval where it is missing: nothing may download at run time)."""
        return stats

    def pred_to_json(self, predn: Any, where: Any) -> None:
        start = len(self.jdict)
        super().pred_to_json(predn, where)
        # 8.4.x: predn a dict of tensors and pbatch a dict with im_file; 8.3.x: an (n, 6) tensor and the file.
        path = where.get("im_file") if isinstance(where, dict) else where
        cls = predn.get("cls") if isinstance(predn, dict) else predn[:, 5]
        if self.sources is None or path is None or cls is None or len(cls) != len(self.jdict) - start:
            self.sources = None  # not what we know how to read: validate() falls back on predictions.json's ids
            return
        self.sources += [(str(path), int(c)) for c in cls.tolist()]


def validate(model: Any, data: str, split: str, save_dir: Path, **val_args: Any) -> tuple[Any, list[dict]]:
    """model.val() on a split, saved in save_dir: (its DetMetrics, its predictions in our COCO form).

    val_args go to model.val(); max_det (the detection budget) defaults to DEFAULT_MAX_DET. The predictions'
    image ids are image_id(path) and their category ids class + 1, on every release and for every class map.
    """
    made: list[ScoringValidator] = []

    def build(**kwargs: Any) -> ScoringValidator:
        made.append(ScoringValidator(**kwargs))
        return made[-1]

    val_args.setdefault("max_det", DEFAULT_MAX_DET)
    metrics = model.val(data=data, split=split, save_json=True, project=str(save_dir.parent), name=save_dir.name,
                        exist_ok=True, validator=build, **val_args)
    v = made[-1]
    written = v.jdict or []
    if v.sources is not None and len(v.sources) == len(written):
        return metrics, [{"image_id": image_id(path), "category_id": c + 1, "bbox": d["bbox"], "score": d["score"]}
                         for d, (path, c) in zip(written, v.sources)]
    return metrics, from_predictions_json(written, v.dataloader.dataset.im_files, v.class_map)


def host_image_key(path: str | Path) -> tuple[int | str, str]:
    """How ultralytics' predictions.json names an image: (its image_id, the file name); 8.3.x writes only the id."""
    stem = Path(path).stem
    return (int(stem) if stem.isnumeric() else stem), Path(path).name


def from_predictions_json(entries: Sequence[dict], images: Sequence[str | Path],
                          class_map: Sequence[int]) -> list[dict]:
    """predictions.json entries as our COCO predictions, when the validator could not record each one's source.

    Images are found by the id ultralytics wrote (and the file name, where it wrote one); where two files of the
    split share what predictions.json names them by, a UserError names both. Category ids go back through the
    validator's own class map.
    """
    with_name = any("file_name" in e for e in entries)
    found: dict[Any, str] = {}
    for path in images:
        iid, name = host_image_key(path)
        key = (iid, name) if with_name else iid
        if key in found:
            raise UserError(f"{found[key]} and {path} get the same image id ({iid!r}) in ultralytics "
                            f"{compat.VERSION}'s predictions.json, so their predictions cannot be told apart: "
                            "rename one of them")
        found[key] = str(path)
    cls = {cid: k for k, cid in enumerate(class_map)}
    return [{"image_id": image_id(found[(e["image_id"], e["file_name"]) if with_name else e["image_id"]]),
             "category_id": cls[e["category_id"]] + 1, "bbox": e["bbox"], "score": e["score"]} for e in entries]


def require_sliced_scoring() -> None:
    """UserError (one line for the user) where the installed release lacks what SlicedMatcher calls."""
    if not compat.enabled("sliced_val"):
        feature = compat.FEATURES["sliced_val"]
        raise UserError(f"{feature.title} needs ultralytics {feature.works}; this is {compat.VERSION}")


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
