"""Whole-image vs sliced inference on the large embedded set: COCO AP by size and time per image.

python benchmarks/sliced.py --weights runs/train/exp/yolov5n/weights/best.pt --mode full:640 full:1920 sliced:320 sliced:640

AP at conf 0.001 (IoU 0.6), time per image at conf 0.25 (median over the images after the first),
one torch thread by default. The quick start's runs (trained on the 320 px set, same object sizes)
are good weights for it.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
os.environ.setdefault("YOLO_OFFLINE", "1")

import cv2  # noqa: E402
import torch  # noqa: E402
import yaml  # noqa: E402
from ultralytics import YOLO  # noqa: E402

import attention  # noqa: E402,F401
from attention.coco import evaluate, image_id, split_images, yolo_to_coco  # noqa: E402
from attention.dataset import prepare_data  # noqa: E402
from attention.report import format_table  # noqa: E402
from attention.slicing import SlicedPredictor  # noqa: E402

LARGE = Path(__file__).resolve().parents[1] / "data" / "tiny-objects-large.yaml"


def predict(model: YOLO, images: list[Path], mode: str, size: int, conf: float) -> tuple[list[dict], float]:
    """COCO detections for every image, and the median ms per image (the first one is warm-up)."""
    sliced = SlicedPredictor(model, slice_size=size, overlap=0.2, conf=conf, iou=0.6 if conf < 0.1 else 0.45) \
        if mode == "sliced" else None
    dets, times = [], []
    for path in images:
        img = cv2.imread(str(path))
        start = time.perf_counter()
        if sliced:
            xyxy, scores, cls = sliced(img)
        else:
            b = model.predict(img, imgsz=size, conf=conf, iou=0.6 if conf < 0.1 else 0.45, max_det=300,
                              verbose=False)[0].boxes
            xyxy, scores, cls = b.xyxy.numpy(), b.conf.numpy(), b.cls.numpy().astype(int)
        times.append(time.perf_counter() - start)
        dets += [{"image_id": image_id(path), "category_id": int(c) + 1, "score": float(s),
                  "bbox": [float(x0), float(y0), float(x1 - x0), float(y1 - y0)]}
                 for (x0, y0, x1, y1), s, c in zip(xyxy, scores, cls)]
    return dets, statistics.median(times[1:] or times) * 1e3


def main(opt: argparse.Namespace) -> None:
    torch.set_num_threads(opt.threads)
    cfg = yaml.safe_load(Path(prepare_data(opt.data)).read_text())
    images = split_images(Path(cfg["path"]), cfg["val"])
    gt = yolo_to_coco(images, list(cfg["names"].values()) if isinstance(cfg["names"], dict) else cfg["names"])
    rows = []
    for weights in opt.weights:
        model = YOLO(weights)
        for spec in opt.mode:
            mode, size = spec.split(":")
            ap = evaluate(gt, predict(model, images, mode, int(size), 0.001)[0])
            _, ms = predict(model, images, mode, int(size), 0.25)
            rows.append({"weights": Path(weights).parent.parent.name, "inference": f"{mode} {size}",
                         "AP50-95": ap["AP"], "AP50": ap["AP50"], "APsmall": ap["AP_small"], "ms/image": ms})
            print(rows[-1], flush=True)
    print(f"\n{len(images)} val images of {opt.data}, {opt.threads} thread(s):\n{format_table(rows)}")


if __name__ == "__main__":
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--weights", nargs="+", required=True)
    p.add_argument("--mode", nargs="+", default=["full:640", "full:1920", "sliced:320", "sliced:640"],
                   help="full:SIZE (whole image at SIZE) or sliced:TILE")
    p.add_argument("--data", default=str(LARGE))
    p.add_argument("--threads", type=int, default=1)
    main(p.parse_args())
