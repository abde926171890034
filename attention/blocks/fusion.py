"""Weighted fusion of several feature maps (Tan et al., EfficientDet, CVPR 2020: BiFPN's fast normalized fusion)."""

from __future__ import annotations

import torch
from torch import nn

from attention.blocks._checks import check_real
from attention.blocks.registry import AttentionConfigError, register


@register(inputs="many")
class WeightedFusion(nn.Module):
    """out = sum_i w_i x_i / (eps + sum_j w_j), w = relu(learned), one weight per input; equal-shape inputs.

    A neck row such as ``[[-1, 6], 1, WeightedFusion, []]`` in place of ``Concat``: the output keeps the inputs'
    channels instead of their sum. The weights start equal (the plain mean) and stay non-negative.
    """

    def __init__(self, c1s: list[int], eps: float = 1e-4) -> None:
        super().__init__()
        if len(c1s) < 2:
            raise AttentionConfigError(f"WeightedFusion fuses several inputs, got {len(c1s)}")
        self.eps = check_real("WeightedFusion", "eps", eps)
        self.w = nn.Parameter(torch.ones(len(c1s)))

    def forward(self, xs: list[torch.Tensor]) -> torch.Tensor:
        w = torch.relu(self.w)
        w = w / (w.sum() + self.eps)
        return sum(wi * x for wi, x in zip(w, xs))
