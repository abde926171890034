"""Our modules built from ultralytics' layers: C3Attn, a C3 with an attention block inside.

It subclasses ultralytics' C3, so it has C3's tensors under C3's names and is a drop-in for a C3 row:
weight transfer moves a base's C3 into it (only the attention block is new), and with the block
starting as the identity (IdentityGate) the row computes exactly what the C3 computed. It relies on C3's
layers (cv1, cv2, cv3, m) and its forward; compat's "c3attn" feature checks both on the installed release.
"""

from __future__ import annotations

import torch
from ultralytics.nn.modules import C3

from attention.adapter import compat
from attention.blocks.registry import available, get, register
from attention.errors import UserError


@register(channels="arg", repeat="inside", replaces="C3")
class C3Attn(C3):
    """C3 whose bottleneck branch ends in an attention block: cv3(cat(attn(m(cv1(x))), cv2(x))).

    YAML: ``[-1, 3, C3Attn, [512, CBAM]]`` (any attention block's name; C3's shortcut, g and e follow, then the
    block's own arguments: ``[512, CBAM, False, 1, 0.5, 16]`` is CBAM with ratio 16 in a C3 without shortcuts).
    """

    def __init__(self, c1: int, c2: int, n: int = 1, block: str = "CBAM", shortcut: bool = True, g: int = 1,
                 e: float = 0.5, *block_args) -> None:
        if not compat.enabled("c3attn"):
            feature = compat.FEATURES["c3attn"]
            raise UserError(f"{feature.title} needs ultralytics {feature.works}; this is {compat.VERSION}")
        super().__init__(c1, c2, n, shortcut, g, e)
        if block not in available():
            raise UserError(f"block must name an attention block ({', '.join(available())}), got {block!r}")
        self.attn = get(block)(self.cv1.conv.out_channels, *block_args)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.cv3(torch.cat((self.attn(self.m(self.cv1(x))), self.cv2(x)), 1))
