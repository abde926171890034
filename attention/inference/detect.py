"""detect.py's job: run a checkpoint on images, folders, globs or videos and save annotated outputs."""

from __future__ import annotations

import glob
import time
from pathlib import Path

import cv2
import numpy as np
import torch

from attention.adapter.api import IMG_FORMATS, VID_FORMATS, YOLO, Results, increment_path
from attention.adapter.weights import resolve_weights
from attention.errors import MissingFileError, UserError


def detect(
    weights: str,
    source: str,
    imgsz: int | None = None,
    conf_thres: float = 0.25,
    iou_thres: float = 0.45,
    save_txt: bool = False,
    save_conf: bool = False,
    device: str | None = None,
    project: str | Path = "runs/detect",
    name: str = "exp",
    exist_ok: bool = False,
    slice_size: int = 0,
    slice_overlap: float = 0.2,
) -> Path:
    """Annotated images/videos (and YOLO txt labels with --save-txt) in runs/detect/NAME; returns that folder.

    imgsz: inference size (default 640; with slicing, default the tile size: tiles at native resolution).
    slice_size > 0: sliced inference (attention.inference.slicing, on sahi) with tiles of that size overlapping
    by slice_overlap, merged back to the full image; boxes and labels are in original-image pixels.
    """
    if not (Path(source).exists() or glob.glob(source) or "://" in source or source.isdigit()):
        raise MissingFileError(f"--source not found: {source}")
    if slice_size and ("://" in source or source.isdigit()):
        raise UserError("--slice-size works on image files, folders, globs and video files, not on streams or cameras")
    model = YOLO(resolve_weights(weights))
    if slice_size:
        return _detect_sliced(model, source, slice_size, slice_overlap, imgsz, conf_thres, iou_thres, save_txt,
                              save_conf, device, project, name, exist_ok)
    save_dir = None
    # stream=True keeps memory flat on long videos; results are written as they come.
    for result in model.predict(
        source=source,
        imgsz=imgsz or 640,
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
        raise MissingFileError(f"--source has no images or videos: {source}")
    print(f"Results saved to {save_dir}")
    return save_dir


def _files(source: str) -> list[Path]:
    """Images and videos named by a file, a folder or a glob, sorted."""
    path = Path(source)
    found = sorted(path.iterdir()) if path.is_dir() else [path] if path.is_file() else sorted(map(Path, glob.glob(source)))
    return [p for p in found if p.is_file() and p.suffix[1:].lower() in IMG_FORMATS | VID_FORMATS]


def _frames(path: Path):
    """(frame index or None, BGR image) for an image or every frame of a video."""
    if path.suffix[1:].lower() in IMG_FORMATS:
        img = cv2.imread(str(path))
        if img is None:
            print(f"WARNING: skipping unreadable image {path}")
            return
        yield None, img
        return
    cap = cv2.VideoCapture(str(path))
    i = 0
    while True:
        ok, frame = cap.read()
        if not ok:
            break
        yield i, frame
        i += 1
    cap.release()


def _detect_sliced(model, source, slice_size, overlap, imgsz, conf, iou, save_txt, save_conf, device, project,
                   name, exist_ok) -> Path:
    """Sliced inference on every image (and video frame, one by one); saved like the unsliced path."""
    from attention.inference.slicing import SlicedPredictor

    files = _files(source)
    if not files:
        raise MissingFileError(f"--source has no images or videos: {source}")
    predictor = SlicedPredictor(model, slice_size=slice_size, overlap=overlap, imgsz=imgsz,
                                conf=conf, iou=iou, device=device)
    save_dir = increment_path(Path(project).resolve() / name, exist_ok=exist_ok)
    save_dir.mkdir(parents=True, exist_ok=True)
    for path in files:
        writer = None
        for frame, img in _frames(path):
            start = time.perf_counter()
            pred = predictor(img)
            ms = (time.perf_counter() - start) * 1000
            data = torch.from_numpy(np.c_[pred.xyxy, pred.conf, pred.cls.astype(np.float32)]).reshape(-1, 6)
            result = Results(img, path=str(path), names=predictor.names, boxes=data)
            stem = path.stem if frame is None else f"{path.stem}_{frame}"
            if save_txt:
                txt = save_dir / "labels" / f"{stem}.txt"
                txt.unlink(missing_ok=True)  # Results.save_txt appends
                result.save_txt(txt, save_conf=save_conf)
            plotted = result.plot()
            if frame is None:
                cv2.imwrite(str(save_dir / path.name), plotted)
            else:
                if writer is None:
                    fps = cv2.VideoCapture(str(path)).get(cv2.CAP_PROP_FPS) or 30
                    h, w = plotted.shape[:2]
                    writer = cv2.VideoWriter(str(save_dir / f"{path.stem}.mp4"), cv2.VideoWriter_fourcc(*"mp4v"),
                                             fps, (w, h))
                writer.write(plotted)
            where = path.name if frame is None else f"{path.name} frame {frame}"
            print(f"{where}: {len(pred.conf)} objects (sliced {slice_size}px, overlap {overlap}), {ms:.1f}ms")
        if writer is not None:
            writer.release()
    print(f"Results saved to {save_dir}")
    return save_dir
