"""yolov5-attention train (train.py): train or fine-tune one model YAML, several alike, or resume a run."""

from __future__ import annotations

import argparse

from attention.data.prepare import EMBEDDED_DATA

HELP = "train or fine-tune model YAMLs (several: trained alike and tabulated), or --resume a run"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--cfg", nargs="+", help="model YAML(s), e.g. yolov5s-cbam.yaml, or variant specs, e.g. "
                   "yolov5s+CBAM@neck (docs/placements.md) (default: yolov5n.yaml, or the architecture of --weights); "
                   "several are trained alike and compared")
    p.add_argument("--weights", default="", help="initial weights (a .pt checkpoint, or a release name such as "
                   "yolov5su.pt, downloaded when online), default: none")
    p.add_argument("--data", default=EMBEDDED_DATA, help="dataset YAML, default: the embedded tiny-objects set")
    p.add_argument("--hyp", default="", help="hyperparameter YAML, e.g. hyp.small-objects.yaml or your own")
    p.add_argument("--epochs", type=int, default=100)
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--imgsz", "--img", "--img-size", type=int, default=640, help="train and val image size (px)")
    p.add_argument("--device", default="", help="cuda device, i.e. 0 or 0,1 or cpu")
    p.add_argument("--workers", type=int, default=8, help="dataloader workers")
    p.add_argument("--project", default="runs/train")
    p.add_argument("--name", default="exp")
    p.add_argument("--exist-ok", action="store_true", help="reuse project/name instead of incrementing it")
    p.add_argument("--resume", nargs="?", const=True, default=False, help="resume the latest run under --project, or "
                   "the given last.pt")
    p.add_argument("--freeze", nargs="+", help="'backbone', a number N (the first N layers), or layer indices")
    p.add_argument("--attn-init", default="paper", choices=["paper", "identity"],
                   help="identity: inserted blocks start as exact identities, so the variant starts equal to --weights")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--patience", type=int, default=100, help="epochs without improvement before stopping")


def run(args: argparse.Namespace) -> object:
    from attention.evaluation.runs import train_several
    from attention.training.job import resume, train

    opts = {k: v for k, v in vars(args).items() if k not in ("cfg", "resume")}
    if args.resume:
        return resume(args.resume, project=args.project)
    opts["weights"] = opts["weights"] or None
    opts["hyp"] = opts["hyp"] or None
    if args.cfg and len(args.cfg) > 1:
        return train_several(args.cfg, **opts)
    return train(args.cfg[0] if args.cfg else None, **opts)
