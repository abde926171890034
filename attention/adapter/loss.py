"""NWD in ultralytics' detection loss and task-aligned assigner, chosen by the model YAML's ``loss:`` mapping.

The smallest points: ultralytics builds a model's loss (v8DetectionLoss) with DetectionModel.init_criterion and
keeps it as model.criterion; its box term is the module criterion.bbox_loss and its assigner's overlap is
criterion.assigner.iou_calculation. At train start the trainer (attention/adapter/trainer.py) gives the model and
the EMA model that validation scores a criterion built by ultralytics with those two parts swapped:

- bbox_loss: NWDBoxLoss runs ultralytics' own BboxLoss (CIoU and DFL) and mixes NWD into the box term, with the
  same per-box weights: (1 - ratio)·(1 - CIoU) + ratio·(1 - NWD). ultralytics hands it boxes in grid units (pixels
  divided by each anchor's stride); NWD is defined on pixels (its C is in pixels), so the boxes are scaled back by
  each anchor's stride first.
- iou_calculation: NWD of the pixel boxes the assigner is given, in place of CIoU.

No class of ours may be pickled into a checkpoint, which must load in stock ultralytics: the criterion lives on the
models only while training and is taken off the EMA model while the trainer saves it (criterion_detached).
"""

from __future__ import annotations

import contextlib
import functools
from typing import Any, Iterator

import torch
from torch import nn
from ultralytics.utils import LOGGER

from attention.adapter import compat
from attention.errors import UserError
from attention.losses import LossChoice, nwd

unwrap_model = compat.model_unwrapper()


def level_counts(n_anchors: int, strides: tuple[float, ...]) -> list[int] | None:
    """Anchors per level: make_anchors lays the levels out in order, H·W / s² anchors each for an H x W input (H and
    W multiples of the largest stride), so H·W = n_anchors / sum(1 / s²). None when no input size gives n_anchors."""
    area = n_anchors / sum(1 / s**2 for s in strides)
    counts = [round(area / s**2) for s in strides]
    exact = all(abs(area / s**2 - n) <= 1e-6 * n for s, n in zip(strides, counts))
    return counts if exact and sum(counts) == n_anchors else None


def anchor_strides(n_anchors: int, strides: tuple[float, ...], device: torch.device | str = "cpu") -> torch.Tensor:
    """(n_anchors,) stride of each anchor of an input whose levels have these strides (ultralytics' BboxLoss is not
    given them on every release, and its anchors are in grid units)."""
    counts = level_counts(n_anchors, strides)
    if counts is None:
        raise RuntimeError(f"{n_anchors} anchors fit no input size at strides {strides}: ultralytics' anchor layout "
                           f"changed (see `yolov5-attention compat`)")
    return torch.repeat_interleave(torch.tensor(strides), torch.tensor(counts)).to(device)


class NWDBoxLoss(nn.Module):
    """ultralytics' BboxLoss with NWD mixed into its box term; its DFL (or L1) term is left as it is."""

    def __init__(self, stock: nn.Module, strides: torch.Tensor, ratio: float, c: float) -> None:
        super().__init__()
        self.stock, self.ratio, self.c = stock, float(ratio), float(c)
        self.strides = tuple(float(s) for s in strides)
        self._scales: dict[tuple[int, torch.device], torch.Tensor] = {}  # anchor strides per input size, on device

    def forward(self, pred_dist: torch.Tensor, pred_bboxes: torch.Tensor, anchor_points: torch.Tensor,
                target_bboxes: torch.Tensor, target_scores: torch.Tensor, target_scores_sum: torch.Tensor,
                fg_mask: torch.Tensor, *rest: Any) -> tuple[torch.Tensor, torch.Tensor]:
        # rest: what later releases pass besides (imgsz and stride from 8.4.0), handed on to the stock loss as is
        loss_iou, loss_dfl = self.stock(pred_dist, pred_bboxes, anchor_points, target_bboxes, target_scores,
                                        target_scores_sum, fg_mask, *rest)
        key = (anchor_points.shape[0], pred_bboxes.device)
        if key not in self._scales:
            self._scales[key] = anchor_strides(key[0], self.strides, key[1])
        stride = self._scales[key]
        scale = stride.expand(fg_mask.shape)[fg_mask].unsqueeze(-1)  # px per grid unit, per foreground anchor
        weight = target_scores.sum(-1)[fg_mask]  # ultralytics' per-box weight, as in its CIoU term
        overlap = nwd(pred_bboxes[fg_mask] * scale, target_bboxes[fg_mask] * scale, self.c)
        loss_nwd = ((1.0 - overlap) * weight).sum() / target_scores_sum
        return (1.0 - self.ratio) * loss_iou + self.ratio * loss_nwd, loss_dfl


def nwd_criterion(model: nn.Module, choice: LossChoice) -> Any:
    """ultralytics' own criterion for model, with NWD put where choice says (choice.c resolved)."""
    if choice.c is None:
        raise UserError("loss c: auto is resolved by `yolov5-attention train` from the train split; with "
                        "ultralytics' trainer alone, give c in pixels in the model YAML's loss mapping")
    criterion = model.init_criterion()
    if type(criterion).__name__ != "v8DetectionLoss":
        raise UserError(f"loss box: nwd / assigner: true work on ultralytics' detection loss (v8DetectionLoss); "
                        f"this model's loss is {type(criterion).__name__}")
    if choice.box == "nwd":
        criterion.bbox_loss = NWDBoxLoss(criterion.bbox_loss, criterion.stride, choice.ratio, choice.c)
    if choice.assigner:  # called as self.iou_calculation(gt_bboxes, pd_bboxes): an instance attribute comes first
        criterion.assigner.iou_calculation = functools.partial(nwd, c=choice.c)
    return criterion


def nwd_available() -> bool:
    """True if the installed ultralytics has what NWD needs; else warns once (compat feature nwd_loss)."""
    return compat.enabled("nwd_loss")


def model_loss(model: nn.Module) -> LossChoice:
    """The loss choice the model's YAML carries (ultralytics' own when it carries none)."""
    return LossChoice.from_yaml((getattr(model, "yaml", None) or {}).get("loss"), "the model YAML")


def use_model_loss(trainer: Any) -> LossChoice | None:
    """At train start: give the trained model and the EMA model (validation's val losses) the criterion their YAML's
    loss mapping chooses. Returns that choice where it uses NWD and the installed release allows it, else None."""
    model = unwrap_model(trainer.model)
    choice = model_loss(model)
    if not choice.uses_nwd or not nwd_available():
        return None
    ema = getattr(getattr(trainer, "ema", None), "ema", None)
    for m in (model, ema):
        if m is not None:
            m.criterion = nwd_criterion(m, choice)
    LOGGER.info(f"yolov5-attention: {choice.describe()}")
    return choice


@contextlib.contextmanager
def criterion_detached(model: nn.Module | None) -> Iterator[None]:
    """model without its criterion inside the block (a checkpoint written there pickles no loss of ours)."""
    criterion = getattr(model, "criterion", None)
    if criterion is None:
        yield
        return
    model.criterion = None
    try:
        yield
    finally:
        model.criterion = criterion
