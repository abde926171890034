"""Coordinate Attention (Hou et al., CVPR 2021)."""

from __future__ import annotations

import torch
from torch import nn

from attention.blocks._checks import check_int
from attention.registry import register


@register
class CA(nn.Module):
    """out = x * a_h * a_w, per-row and per-column gates from direction-wise pooled features."""

    def __init__(self, c1: int, reduction: int = 32) -> None:
        super().__init__()
        c1 = check_int("CA", "c1 (input channels)", c1)
        reduction = check_int("CA", "reduction", reduction)
        mip = max(8, c1 // reduction)  # the paper's floor of 8 keeps narrow layers expressive
        self.conv1 = nn.Conv2d(c1, mip, 1)
        self.bn1 = nn.BatchNorm2d(mip)
        self.act = nn.Hardswish()  # z * relu6(z + 3) / 6, as in the paper
        self.conv_h = nn.Conv2d(mip, c1, 1)
        self.conv_w = nn.Conv2d(mip, c1, 1)
        self.gate = nn.Sigmoid()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = x.shape[2]
        x_h = x.mean(dim=3, keepdim=True)  # (N, C, H, 1)
        x_w = x.mean(dim=2, keepdim=True).transpose(2, 3)  # (N, C, W, 1)
        # One shared transform over both directions: BN sees rows and columns together.
        y = self.act(self.bn1(self.conv1(torch.cat([x_h, x_w], dim=2))))  # (N, mip, H+W, 1)
        y_h, y_w = y[:, :, :h], y[:, :, h:].transpose(2, 3)  # (N, mip, H, 1), (N, mip, 1, W)
        return x * self.gate(self.conv_w(y_w)) * self.gate(self.conv_h(y_h))
