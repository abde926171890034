"""NAM, normalization-based attention (Liu et al., 2021), channel sub-module."""

from __future__ import annotations

import torch
from torch import nn

from attention.blocks._checks import check_int
from attention.blocks.registry import register
from attention.blocks.taps import Tapped


@register
class NAMAttention(Tapped):
    """out = x * sigmoid(w_gamma * BN(x)), w_gamma = |gamma| / sum |gamma|: BN's own scale factors weigh the channels."""

    TAPS = {"gate": "gate"}  # (N, C, H, W) (attention.blocks.taps)

    def __init__(self, c1: int) -> None:
        super().__init__()
        c1 = check_int("NAMAttention", "c1 (input channels)", c1)
        self.bn = nn.BatchNorm2d(c1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.bn(x)
        g = self.bn.weight.detach().abs()  # the authors' code: the weights are read from gamma, not trained through it
        w = (g / g.sum()).view(1, -1, 1, 1)
        return x * self.gate(torch.sigmoid(y * w))
