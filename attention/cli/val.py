"""yolov5-attention val (val.py): score checkpoints, whole-image or sliced, with COCO AP by object size."""

from __future__ import annotations

import argparse

from attention.data.listing import SPLITS
from attention.data.prepare import EMBEDDED_DATA

HELP = "score checkpoints: P, R, mAP50, mAP50-95 and COCO AP by object size (several: side by side)"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--weights", nargs="+", required=True, help="checkpoint file(s) (.pt); several are scored side by "
                   "side")
    p.add_argument("--data", default=EMBEDDED_DATA, help="dataset YAML (a file, or the name of a shipped one), "
                   "default: the embedded tiny-objects set")
    p.add_argument("--imgsz", "--img", "--img-size", type=int, help="inference size in px (default 640; sliced: the "
                   "tile size)")
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--conf-thres", type=float, default=0.001, help="confidence threshold (default 0.001)")
    p.add_argument("--iou-thres", type=float, default=0.6, help="NMS IoU threshold (default 0.6)")
    p.add_argument("--max-det", type=int, default=None, help="detection budget: at most this many detections per "
                   "image, both kept by NMS and counted by COCO AP (default 300, ultralytics' own; VisDrone's "
                   "protocol: 500)")
    p.add_argument("--device", default="", help="cuda device, i.e. 0 or cpu")
    p.add_argument("--task", default="val", choices=SPLITS, help="split to score (default val)")
    p.add_argument("--size-bins", dest="size_bins_spec", default="coco",
                   help="object-size bins for COCO AP (px = sqrt of box area, low <= px < high): coco (small 0-32, "
                   "medium 32-96, large 96+; the default), tiny (AI-TOD: very_tiny 0-8, tiny 8-16, small 16-32, "
                   "medium 32+), fine (both), or ascending edges in px, e.g. 0,16,32,96,inf")
    p.add_argument("--slice-size", type=int, default=0, help="score sliced inference with square tiles of this many "
                   "px (at least 32; 0: off)")
    p.add_argument("--slice-overlap", type=float, default=0.2, help="tile overlap ratio for --slice-size, in [0, 1)")
    p.add_argument("--project", default="runs/val")
    p.add_argument("--name", default="exp")
    p.add_argument("--exist-ok", action="store_true")


def run(args: argparse.Namespace) -> object:
    from attention.evaluation.validate import val

    return val(**{k: v for k, v in vars(args).items()})
