"""yolov5-attention train (train.py): train or fine-tune one model YAML, several alike, or resume a run."""

from __future__ import annotations

import argparse

from attention.data.prepare import EMBEDDED_DATA
from attention.errors import UserError

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
    g = p.add_argument_group("box loss (over the model YAML's loss mapping; docs/losses.md)")
    g.add_argument("--box-loss", choices=["iou", "nwd"], help="box regression term: iou (ultralytics' CIoU) or nwd "
                   "(normalized Gaussian Wasserstein distance, for tiny objects)")
    g.add_argument("--nwd-ratio", type=float, metavar="R", help="share of NWD in the box term, 0-1: "
                   "(1 - R)·(1 - CIoU) + R·(1 - NWD); default 1 (NWD alone)")
    g.add_argument("--nwd-c", metavar="PX", help="NWD's constant C in px of the network input, or auto (default): the "
                   "mean object size of the train split at --imgsz")
    g.add_argument("--nwd-assigner", action=argparse.BooleanOptionalAction, default=None,
                   help="NWD instead of CIoU as the overlap in the label assigner")


LOSS_FLAGS = {"box_loss": "box", "nwd_ratio": "ratio", "nwd_c": "c", "nwd_assigner": "assigner"}


def loss_options(args: argparse.Namespace) -> dict[str, object]:
    """The loss keys the flags set (a model YAML's loss mapping has the same keys)."""
    out = {key: getattr(args, flag) for flag, key in LOSS_FLAGS.items() if getattr(args, flag) is not None}
    if isinstance(out.get("c"), str) and out["c"].lower() != "auto":
        try:
            out["c"] = float(out["c"])
        except ValueError:
            raise UserError(f"--nwd-c takes a number of pixels or auto, got {out['c']!r}") from None
    return out


def run(args: argparse.Namespace) -> object:
    from attention.evaluation.runs import train_several
    from attention.training.job import resume, train

    opts = {k: v for k, v in vars(args).items() if k not in ("cfg", "resume", *LOSS_FLAGS)}
    loss = loss_options(args)
    if args.resume:
        if loss:
            raise UserError("--resume carries a run on with the loss it was trained with; drop --box-loss / --nwd-*")
        return resume(args.resume, project=args.project)
    opts["loss"] = loss or None
    opts["weights"] = opts["weights"] or None
    opts["hyp"] = opts["hyp"] or None
    if args.cfg and len(args.cfg) > 1:
        return train_several(args.cfg, **opts)
    return train(args.cfg[0] if args.cfg else None, **opts)
