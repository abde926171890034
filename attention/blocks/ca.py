"""Coordinate Attention (Hou et al., CVPR 2021)."""

from __future__ import annotations

import torch
from torch import nn

from attention.blocks._checks import check_int
from attention.blocks._precision import full_precision, to_dtype
from attention.blocks.registry import register
from attention.blocks.taps import Tapped


@register
class CA(Tapped):
    """out = x * a_h * a_w: per-row and per-column gates from features pooled along each direction."""

    TAPS = {"gate_h": "gate", "gate_w": "gate"}  # a_h and a_w (attention.blocks.taps)

    def __init__(self, c1: int, reduction: int = 32) -> None:
        super().__init__()
        c1 = check_int("CA", "c1 (input channels)", c1)
        reduction = check_int("CA", "reduction", reduction)
        mip = max(8, c1 // reduction)  # the paper's floor of 8 keeps narrow layers expressive
        self.conv1 = nn.Conv2d(c1, mip, 1)
        self.bn1 = nn.BatchNorm2d(mip)
        self.act = nn.Hardswish()  # h_swish(z) = z * relu6(z + 3) / 6
        self.conv_h = nn.Conv2d(mip, c1, 1)
        self.conv_w = nn.Conv2d(mip, c1, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h, w = x.shape[2:]
        x_h = x.mean(3, keepdim=True)  # (N, C, H, 1): pooled along W
        x_w = x.mean(2, keepdim=True).transpose(2, 3)  # (N, C, W, 1): pooled along H
        y = torch.cat([x_h, x_w], dim=2)  # (N, C, H+W, 1): one conv and BN for both directions
        # Under autocast, in float32: on a flat map BN's batch variance is 0, its backward scales by 1/sqrt(eps),
        # and conv1's fp16 weight gradient overflows (tests/test_half.py).
        with full_precision(x):
            y = self.act(self.bn1(self.conv1(to_dtype(y, self.conv1.weight.dtype))))
        y_h, y_w = torch.split(y, [h, w], dim=2)
        a_h = self.gate_h(torch.sigmoid(self.conv_h(y_h)))  # (N, C, H, 1)
        a_w = self.gate_w(torch.sigmoid(self.conv_w(y_w.transpose(2, 3))))  # (N, C, 1, W)
        return x * a_h * a_w
