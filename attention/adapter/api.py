"""The public ultralytics names the rest of the package uses, imported in this one place.

These have kept their names and meaning from 8.3.0 to 8.4.x; what is private or has changed shape
lives in attention/adapter/compat.py and the adapter module of the feature that needs it.
"""

from __future__ import annotations

from ultralytics import YOLO
from ultralytics.data.augment import LetterBox  # keywords: see compat's version facts (scaleFill / scale_fill)
from ultralytics.data.utils import IMG_FORMATS, VID_FORMATS, check_det_dataset, img2label_paths
from ultralytics.engine.model import Model
from ultralytics.engine.results import Results
from ultralytics.models.yolo.detect import DetectionTrainer, DetectionValidator
from ultralytics.nn.tasks import DetectionModel
from ultralytics.utils import LOGGER, NUM_THREADS, RANK
from ultralytics.utils.files import increment_path
from ultralytics.utils.torch_utils import get_flops

__all__ = ["DetectionModel", "DetectionTrainer", "DetectionValidator", "IMG_FORMATS", "LOGGER", "LetterBox", "Model",
           "NUM_THREADS", "RANK", "Results", "VID_FORMATS", "YOLO", "check_det_dataset", "get_flops", "img2label_paths",
           "increment_path"]
