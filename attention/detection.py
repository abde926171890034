"""detect.py's job: run a checkpoint on images, folders, globs or videos and save annotated outputs."""

from __future__ import annotations

import glob
from pathlib import Path

from ultralytics import YOLO

from attention.paths import resolve_weights


def detect(
    weights: str,
    source: str,
    imgsz: int = 640,
    conf_thres: float = 0.25,
    iou_thres: float = 0.45,
    save_txt: bool = False,
    save_conf: bool = False,
    device: str | None = None,
    project: str | Path = "runs/detect",
    name: str = "exp",
    exist_ok: bool = False,
) -> Path:
    """Annotated images/videos (and YOLO txt labels with --save-txt) in runs/detect/NAME; returns that folder."""
    if not (Path(source).exists() or glob.glob(source) or "://" in source or source.isdigit()):
        raise FileNotFoundError(f"--source not found: {source}")
    model = YOLO(resolve_weights(weights))
    save_dir = None
    # stream=True keeps memory flat on long videos; results are written as they come.
    for result in model.predict(
        source=source,
        imgsz=imgsz,
        conf=conf_thres,
        iou=iou_thres,
        save=True,
        save_txt=save_txt,
        save_conf=save_conf,
        device=device,
        project=str(Path(project).resolve()),
        name=name,
        exist_ok=exist_ok,
        stream=True,
    ):
        save_dir = Path(result.save_dir)
    if save_dir is None:
        raise FileNotFoundError(f"--source has no images or videos: {source}")
    print(f"Results saved to {save_dir}")
    return save_dir
