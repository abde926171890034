"""Sliced inference (SAHI) with our checkpoints: predict on overlapping tiles, merge back to the image.

Built on the ``sahi`` package: it cuts the image into overlapping slices, runs the model on each
(and, by default, once on the whole image), shifts every box into original-image pixels and merges
duplicates across tiles with its postprocess (GREEDYNMM or NMS, with an IOS or IOU match
threshold). Our part is only to hand sahi an ultralytics ``YOLO`` built after ``import attention``,
so checkpoints with attention blocks load, and to return plain arrays.

    from attention.inference.slicing import SlicedPredictor
    predictor = SlicedPredictor("runs/train/exp/weights/best.pt", slice_size=640, overlap=0.2)
    xyxy, conf, cls = predictor(image)        # image: path or BGR uint8 array (cv2.imread)

``predict_sliced(model, image, slice_size, ...)`` does the same in one call. Nothing here downloads:
sahi is given a loaded model, never a model name.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, NamedTuple

import cv2
import numpy as np

from attention.adapter.api import YOLO
from attention.adapter.validator import DEFAULT_MAX_DET
from attention.adapter.weights import resolve_weights
from attention.data.coco_format import image_id
from attention.errors import MissingFileError, UserError

MERGES = ("GREEDYNMM", "NMM", "NMS")
METRICS = ("IOS", "IOU")


class Prediction(NamedTuple):
    """Detections of one image in original-image pixels, highest confidence first."""

    xyxy: np.ndarray  # (N, 4) float32: x0, y0, x1, y1
    conf: np.ndarray  # (N,) float32
    cls: np.ndarray  # (N,) int64


def read_bgr(image: str | Path | np.ndarray) -> np.ndarray:
    """A BGR uint8 image from a path or an array (returned as is)."""
    if isinstance(image, np.ndarray):
        return image
    img = cv2.imread(str(image))
    if img is None:
        raise MissingFileError(f"image not found or unreadable: {image}")
    return img


def _sahi_device(device: Any) -> str | None:
    """ultralytics device strings ('', 'cpu', '0', '0,1', 'cuda:1') as sahi wants them."""
    if device is None or str(device).strip() in ("", "none", "None"):
        return None  # sahi picks cuda:0 > mps > cpu, as ultralytics does
    d = str(device).strip().lower()
    if d in ("cpu", "mps") or d.startswith("cuda"):
        return d
    return f"cuda:{d.split(',')[0]}"  # '0' or '0,1': one device, slices are small batches anyway


@dataclass
class SlicedPredictor:
    """A checkpoint wrapped for sahi's sliced prediction; call it on an image for a Prediction.

    slice_size: tile side in pixels; overlap: fraction of the tile shared with its neighbour.
    imgsz: inference size of each tile (default: slice_size, i.e. tiles at native resolution); the
    extra whole-image pass (full_image=True) runs at the same size. conf / iou: the model's own
    confidence and per-tile NMS thresholds. merge / match_metric / match_threshold: how sahi merges
    boxes found in several tiles (below a confidence of 0.1 NMS / IOU is used, as sahi itself would
    switch to, so that low-threshold evaluation does not grow boxes by merging). class_agnostic: merge across
    classes. max_det: keep at most this many boxes after merging. batch: how many tiles of one image go through
    the model together (sahi's batch_size).
    """

    model: Any  # checkpoint path or an ultralytics YOLO
    slice_size: int = 640
    overlap: float = 0.2
    imgsz: int | None = None
    conf: float = 0.25
    iou: float = 0.45
    merge: str = "GREEDYNMM"
    match_metric: str = "IOS"
    match_threshold: float = 0.5
    class_agnostic: bool = False
    full_image: bool = True
    max_det: int = DEFAULT_MAX_DET  # the detection budget (attention.evaluation.coco)
    device: Any = None
    batch: int = 1  # tiles of one image that go through the model together (sahi's batch_size)

    def __post_init__(self) -> None:
        from sahi import AutoDetectionModel

        if int(self.slice_size) < 32:
            raise UserError(f"--slice-size must be at least 32 pixels, got {self.slice_size}")
        if not 0 <= float(self.overlap) < 1:
            raise UserError(f"--slice-overlap must be in [0, 1), got {self.overlap}")
        self.merge, self.match_metric = self.merge.upper(), self.match_metric.upper()
        if self.merge not in MERGES or self.match_metric not in METRICS:
            raise UserError(f"merge must be one of {MERGES} and match_metric one of {METRICS}, "
                            f"got {self.merge!r}, {self.match_metric!r}")
        if self.conf < 0.1 and self.merge != "NMS":
            # sahi would switch (with a warning per image): merging many low-score boxes grows them
            self.merge, self.match_metric = "NMS", "IOU"
        if isinstance(self.model, (str, Path)):
            self.model = YOLO(resolve_weights(self.model))
        self.model.overrides["iou"] = self.iou  # sahi passes conf and imgsz; NMS IoU comes from here
        self.model.overrides["max_det"] = self.max_det
        self.names = dict(self.model.names)
        # A loaded model is handed over: sahi's ultralytics backend then never resolves or downloads one.
        self._sahi = AutoDetectionModel.from_pretrained(
            model_type="ultralytics",
            model=self.model,
            confidence_threshold=self.conf,
            image_size=int(self.imgsz or self.slice_size),
            device=_sahi_device(self.device),
        )

    def __call__(self, image: str | Path | np.ndarray) -> Prediction:
        """Sliced detections of one image (path or BGR array) in original-image pixels."""
        from sahi.predict import get_sliced_prediction

        bgr = read_bgr(image)
        size = int(self.slice_size)
        result = get_sliced_prediction(
            np.ascontiguousarray(bgr[..., ::-1]),  # sahi takes RGB
            self._sahi,
            slice_height=size,
            slice_width=size,
            overlap_height_ratio=float(self.overlap),
            overlap_width_ratio=float(self.overlap),
            perform_standard_pred=self.full_image,
            postprocess_type=self.merge,
            postprocess_match_metric=self.match_metric,
            postprocess_match_threshold=self.match_threshold,
            postprocess_class_agnostic=self.class_agnostic,
            verbose=0,
            batch_size=max(1, int(self.batch)),
        )
        preds = result.object_prediction_list
        xyxy = np.array([p.bbox.to_xyxy() for p in preds], np.float32).reshape(-1, 4)
        conf = np.array([p.score.value for p in preds], np.float32)
        cls = np.array([p.category.id for p in preds], np.int64)
        order = np.argsort(-conf, kind="stable")[: self.max_det]
        return Prediction(xyxy[order], conf[order], cls[order])


def predict_sliced(
    model: Any,
    image: str | Path | np.ndarray,
    slice_size: int = 640,
    overlap: float = 0.2,
    **kwargs: Any,
) -> Prediction:
    """One image's sliced detections as arrays (xyxy, conf, cls) in original-image pixels.

    model: checkpoint path, ultralytics YOLO, or a SlicedPredictor (then reused and the other
    arguments are ignored). kwargs: the other SlicedPredictor fields (imgsz, conf, iou, merge,
    match_metric, match_threshold, class_agnostic, full_image, max_det, device). For many images
    build one SlicedPredictor and call it.
    """
    if not isinstance(model, SlicedPredictor):
        model = SlicedPredictor(model, slice_size=slice_size, overlap=overlap, **kwargs)
    return model(image)


def coco_detections(image: Path, pred: Prediction) -> list[dict[str, Any]]:
    """One image's detections in COCO form (xywh pixels, category = class + 1, image id = image_id(image)), as
    attention.adapter.validator.validate returns them."""
    return [{"image_id": image_id(image), "category_id": int(c) + 1, "score": float(sc),
             "bbox": [float(x0), float(y0), float(x1 - x0), float(y1 - y0)]}
            for (x0, y0, x1, y1), sc, c in zip(pred.xyxy, pred.conf, pred.cls)]
