"""yolov5-attention detect (detect.py): detect on images, folders, globs and videos, whole or sliced."""

from __future__ import annotations

import argparse

HELP = "detect objects in images, folders, globs or videos (sliced with --slice-size)"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--weights", required=True, help="checkpoint (.pt)")
    p.add_argument("--source", required=True, help="an image or video file, a folder or a glob of them; without "
                   "--slice-size also a stream URL or a camera index")
    p.add_argument("--imgsz", "--img", "--img-size", type=int, default=None,
                   help="inference size (default 640; with --slice-size: the tile size)")
    p.add_argument("--conf-thres", type=float, default=0.25, help="confidence threshold (default 0.25)")
    p.add_argument("--iou-thres", type=float, default=0.45, help="NMS IoU threshold (default 0.45)")
    p.add_argument("--save-txt", action="store_true", help="save YOLO-format labels to NAME/labels")
    p.add_argument("--save-conf", action="store_true", help="add confidences to --save-txt labels")
    p.add_argument("--device", default="", help="cuda device, i.e. 0 or cpu")
    p.add_argument("--project", default="runs/detect")
    p.add_argument("--name", default="exp")
    p.add_argument("--exist-ok", action="store_true")
    p.add_argument("--slice-size", type=int, default=0,
                   help="sliced inference (SAHI) with square tiles of this many pixels, at least 32; 0: off")
    p.add_argument("--slice-overlap", type=float, default=0.2, help="fraction of a tile shared with its neighbour, "
                   "in [0, 1) (default 0.2)")


def run(args: argparse.Namespace) -> object:
    from attention.inference.detect import detect

    return detect(**{k: v for k, v in vars(args).items()})
