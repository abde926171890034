"""A run's box loss: the model YAML's ``loss:`` mapping with the command line's keys over it, NWD's C resolved.

c: auto is the paper's choice (Wang et al. 2021 set C to the average absolute object size of the dataset, 12.8 px
on AI-TOD): the mean of sqrt(w·h) over the train split's labelled boxes, in pixels of the network input, i.e. each
image scaled so its long side is the training image size, as ultralytics letterboxes it. The resolved value goes
into the model's YAML (so checkpoints carry it and a resumed run keeps it) and into loss.yaml in the run folder.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any, Mapping

import yaml

from attention.data.coco_format import yolo_to_coco
from attention.data.listing import class_names, data_dict, list_images
from attention.errors import UserError
from attention.losses import LossChoice

RECORD = "loss.yaml"
OPTIONS = "the loss options (--box-loss, --nwd-ratio, --nwd-c, --nwd-assigner)"


def mean_object_size(data: str | Path, imgsz: int, split: str = "train") -> tuple[float, int]:
    """(mean sqrt(w·h) in px at imgsz, number of boxes) over the labelled boxes of a split of a data YAML."""
    cfg = data_dict(data)
    coco = yolo_to_coco([Path(p) for p in list_images(cfg[split], cfg.get("path"))], class_names(cfg))
    long_side = {im["id"]: max(im["width"], im["height"]) for im in coco["images"]}
    sizes = [math.sqrt(a["area"]) * imgsz / long_side[a["image_id"]] for a in coco["annotations"]]
    if not sizes:
        raise UserError(f"loss c: auto is the mean object size of the {split} split, and {data} has no labelled box "
                        f"there; give --nwd-c (px)")
    return sum(sizes) / len(sizes), len(sizes)


def chosen_loss(model_yaml: Mapping[str, Any], overrides: Mapping[str, Any] | None, where: str, data: str | Path,
                imgsz: int) -> tuple[LossChoice, str] | None:
    """The run's loss choice, C resolved, and a line saying where C came from; None when neither the model YAML
    (where names it) nor the command line (overrides: keys of a loss mapping) chooses a loss."""
    base = model_yaml.get("loss")
    if base is None and not overrides:
        return None
    LossChoice.from_yaml(base, where)  # the YAML's own mistakes are named as the YAML's
    overrides = dict(overrides or {})
    LossChoice.from_yaml(overrides, OPTIONS)
    choice = LossChoice.from_yaml({**(base or {}), **overrides}, where)
    if "ratio" in overrides and choice.box != "nwd":
        raise UserError(f"--nwd-ratio {overrides['ratio']:g} has no effect: the box loss is iou (add --box-loss nwd)")
    if "c" in overrides and not choice.uses_nwd:
        raise UserError("--nwd-c has no effect: NWD is neither the box loss nor the assigner's overlap (add --box-loss "
                        "nwd or --nwd-assigner)")
    if not choice.uses_nwd:
        return choice, ""
    if choice.c is not None:
        return choice, "C as given"
    c, n = mean_object_size(data, imgsz)
    return choice.resolved(round(c, 2)), f"C auto: the mean object size (sqrt of box area) of {n} train boxes at " \
                                         f"{imgsz} px"


def write_record(folder: Path, choice: LossChoice, note: str) -> Path:
    """loss.yaml in the run folder: the loss mapping the run trains with (C resolved) and where C came from."""
    path = Path(folder) / RECORD
    header = f"# {choice.describe()}\n" + (f"# {note}\n" if note else "")
    path.write_text(header + yaml.safe_dump({"loss": choice.to_yaml()}, sort_keys=False))
    return path
