"""Detect heads whose later levels are as wide as a base model's: a level added in front costs no base tensor.

ultralytics' Detect sizes the box and class branches of every level from its FIRST input's channels. A P2 variant
lists P2 first (strides must run finest first, see below), and P2 has half P3's channels, so its P3-P5 branches
come out narrower than a YOLOv5 base's (at n with fewer than 80 classes, at s and above with any count) and the
base's branches no longer fit. Listing P2 last would give them the base's widths but breaks ultralytics' own
assumption that levels run finest first: 8.4's TaskAlignedAssigner floors tiny boxes to stride[1] (16 instead
of 8 for a P2 model), and augmented inference clips the first and last levels' anchors as the finest and coarsest.

So a model YAML may say ``detect_widths_from: k`` (the P2 configs say 1): Detect's inputs k onwards get the
branches a Detect on those inputs alone would have, the base's exactly; the inputs before k keep the branches
sized from input 0, as stock ultralytics builds them. The head stays ultralytics' own Detect class (only its
branch lists differ in width from level to level, which its forward never assumes otherwise), so a checkpoint
loads, predicts and exports without the plugin; building the YAML needs the plugin's parser hook (parser.py).
"""

from __future__ import annotations

import inspect
from typing import Any

import torch
from torch import nn
from ultralytics.nn.modules import Detect

from attention.adapter import compat
from attention.blocks.registry import AttentionConfigError

KEY = "detect_widths_from"
BRANCHES = ("cv2", "cv3", "one2one_cv2", "one2one_cv3")  # box and class branches, one entry per level
# What this relies on beyond Detect's public constructor (compat.py's feature "detect_widths").
RELIES_ON = ("ultralytics' Detect with its cv2/cv3 branch lists as compat's feature detect_widths describes",)


def widths_from(d: dict) -> int | None:
    """The model dict's detect_widths_from (an input index of its head), or None where it does not ask."""
    k = d.get(KEY)
    if k is None:
        return None
    if type(k) is not int or k < 1:
        raise AttentionConfigError(f"{d.get('yaml_file') or 'the model YAML'}: {KEY} must be a positive integer "
                                   f"(the first Detect input sized on its own, 1 for P2 listed first), got {k!r}")
    return k


def _inputs(detect: nn.Module) -> list[int]:
    """Channels of each Detect input, as its box branches read them (each opens with a Conv on its input)."""
    return [branch[0].conv.in_channels for branch in detect.cv2]


def _detect_on(detect: Detect, ch: list[int]) -> Detect:
    """A Detect with the same settings as detect on inputs of ch channels (the widths a base on them has)."""
    params = inspect.signature(Detect.__init__).parameters
    kwargs: dict[str, Any] = {"nc": detect.nc, "ch": tuple(ch)}
    if "reg_max" in params:  # 8.4: the YAML's reg_max; 8.3 fixes it at 16
        kwargs["reg_max"] = detect.reg_max
    if "end2end" in params:  # 8.4: a one-to-one head besides the usual one
        kwargs["end2end"] = getattr(detect, "one2one_cv2", None) is not None
    return Detect(**kwargs)


def probe() -> list[str]:
    """What this release's Detect lacks for detect_widths_from (empty: it works), tried on a two-level Detect.

    compat's feature "detect_widths" calls it once per process (attention.adapter.compat)."""
    try:
        with torch.random.fork_rng(devices=[]):  # the first build of a seeded run draws what every later one draws
            head = Detect(nc=1, ch=(16, 32))
            _resize(head, 1)
        ok = _inputs(head) == [16, 32] and [b[-1].in_channels for b in head.cv3] == [16, 32]
    except (AttributeError, IndexError, TypeError):
        ok = False
    return [] if ok else list(RELIES_ON)


def _resize(head: Detect, k: int) -> None:
    later = _detect_on(head, _inputs(head)[k:])
    for name in BRANCHES:
        if isinstance(getattr(head, name, None), nn.ModuleList):
            setattr(head, name, nn.ModuleList([*getattr(head, name)[:k], *getattr(later, name)]))


def resize(head: nn.Module, k: int, where: str) -> int:
    """Give a parsed Detect's inputs k onwards the branches a Detect on those inputs alone has; its parameters."""
    if type(head) is not Detect:
        raise AttentionConfigError(f"{where}: {KEY} sizes a Detect head's branches, but the last row is "
                                   f"{type(head).__name__}")
    if not k < head.nl:
        raise AttentionConfigError(f"{where}: {KEY} is {k}, but Detect has {head.nl} inputs (0 to {head.nl - 1}); "
                                   f"it names the first input whose branches take that input's own width")
    if compat.enabled("detect_widths"):  # else one warning; the head stays as the parser built it
        _resize(head, k)
        head.np = sum(p.numel() for p in head.parameters())
    return head.np
