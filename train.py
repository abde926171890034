"""Train or fine-tune YOLOv5 attention variants: python train.py --cfg yolov5s-cbam.yaml [--weights base.pt]."""

import argparse

import attention.cli
from attention.dataset import EMBEDDED_DATA
from attention.training import train


def parse_opt(argv=None):
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--cfg", nargs="+", help="model YAML(s), e.g. yolov5s-cbam.yaml (default: yolov5n.yaml, or the "
                   "architecture of --weights); several are trained alike and compared")
    p.add_argument("--weights", default="", help="initial weights (a .pt checkpoint), default: none")
    p.add_argument("--data", default=str(EMBEDDED_DATA), help="dataset YAML, default: the embedded tiny-objects set")
    p.add_argument("--hyp", default="", help="hyperparameter YAML, e.g. configs/hyp.small-objects.yaml")
    p.add_argument("--epochs", type=int, default=100)
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--imgsz", "--img", "--img-size", type=int, default=640, help="train and val image size (px)")
    p.add_argument("--device", default="", help="cuda device, i.e. 0 or 0,1 or cpu")
    p.add_argument("--workers", type=int, default=8, help="dataloader workers")
    p.add_argument("--project", default="runs/train")
    p.add_argument("--name", default="exp")
    p.add_argument("--exist-ok", action="store_true", help="reuse project/name instead of incrementing it")
    p.add_argument("--resume", nargs="?", const=True, default=False, help="resume the latest or the given last.pt")
    p.add_argument("--freeze", nargs="+", help="'backbone', the first N layers, or the listed layer indices")
    p.add_argument("--attn-init", default="paper", choices=["paper", "identity"],
                   help="identity: inserted blocks start as exact identities, so the variant starts equal to --weights")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--patience", type=int, default=100, help="epochs without improvement before stopping")
    return p.parse_args(argv)


if __name__ == "__main__":
    attention.cli.run(train, **vars(parse_opt()))
