"""Selective Kernel attention (Li et al., SKNet, CVPR 2019)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from attention.blocks._checks import check_divisible, check_int
from attention.registry import register


@register
class SKAttention(nn.Module):
    """V = sum_m a_m * U_m: M grouped 3x3 branches (dilation 1..M), fused by a softmax across branches per channel.

    U_m = ReLU(BN(conv3x3_dilation=m(x), G groups)); z = ReLU(BN(W GAP(sum_m U_m))), C -> d = max(C/r, L);
    a = softmax over m of (W_m z), d -> C each. The paper's 5x5 branch is its 3x3 with dilation 2.
    """

    def __init__(self, c1: int, M: int = 2, G: int = 32, r: int = 16, L: int = 32) -> None:
        super().__init__()
        c1 = check_int("SKAttention", "c1 (input channels)", c1)
        M = check_int("SKAttention", "M (branches)", M)
        G = check_int("SKAttention", "G (groups)", G)
        r = check_int("SKAttention", "r (reduction)", r)
        L = check_int("SKAttention", "L (minimum hidden width)", L)
        check_divisible("SKAttention", c1, G, f"G = {G} (grouped convolutions)")
        d = max(c1 // r, L)
        self.branches = nn.ModuleList(
            nn.Sequential(
                nn.Conv2d(c1, c1, 3, padding=m + 1, dilation=m + 1, groups=G, bias=False),
                nn.BatchNorm2d(c1),
                nn.ReLU(inplace=True),
            )
            for m in range(M)
        )
        self.fc = nn.Sequential(nn.Conv2d(c1, d, 1, bias=False), nn.BatchNorm2d(d), nn.ReLU(inplace=True))
        self.fcs = nn.Conv2d(d, M * c1, 1)  # the M per-branch d -> C maps, side by side

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n, c = x.shape[:2]
        u = torch.stack([branch(x) for branch in self.branches], dim=1)  # (N, M, C, H, W)
        s = u.sum(dim=1).mean(dim=(2, 3), keepdim=True)  # (N, C, 1, 1)
        conv, bn, act = self.fc
        if self.training and n == 1:
            # A batch of one pooled vector has no batch statistics (a trainer's last batch can be 1 image):
            # use the running ones for it. A shape check, not a value check.
            z = act(F.batch_norm(conv(s), bn.running_mean, bn.running_var, bn.weight, bn.bias, False, 0.0, bn.eps))
        else:
            z = self.fc(s)  # (N, d, 1, 1)
        a = torch.softmax(self.fcs(z).view(n, -1, c, 1, 1), dim=1)  # (N, M, C, 1, 1)
        return (u * a).sum(dim=1)
