"""Score a checkpoint: python val.py --weights runs/train/exp/weights/best.pt [--data data/tiny-objects.yaml]."""

import argparse

import attention.cli
from attention.dataset import EMBEDDED_DATA
from attention.validation import val


def parse_opt(argv=None):
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--weights", required=True, help="checkpoint (.pt)")
    p.add_argument("--data", default=str(EMBEDDED_DATA), help="dataset YAML, default: the embedded tiny-objects set")
    p.add_argument("--imgsz", "--img", "--img-size", type=int, default=640)
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--conf-thres", type=float, default=0.001)
    p.add_argument("--iou-thres", type=float, default=0.6, help="NMS IoU threshold")
    p.add_argument("--device", default="", help="cuda device, i.e. 0 or cpu")
    p.add_argument("--task", default="val", help="split to score: train, val or test")
    p.add_argument("--project", default="runs/val")
    p.add_argument("--name", default="exp")
    p.add_argument("--exist-ok", action="store_true")
    return p.parse_args(argv)


if __name__ == "__main__":
    attention.cli.run(val, **vars(parse_opt()))
