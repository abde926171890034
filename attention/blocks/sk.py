"""Selective Kernel attention (Li et al., SKNet, CVPR 2019)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from attention.blocks._checks import check_divisible, check_int
from attention.blocks.registry import register
from attention.blocks.taps import Tapped


@register
class SKAttention(Tapped):
    """V = sum_m a_m * U_m: M grouped 3x3 branches (dilation 1..M), fused by a softmax across branches per channel.

    U_m = ReLU(BN(conv3x3_dilation=m(x), G groups)); z = ReLU(BN(W GAP(sum_m U_m))), C -> d = max(C/r, L);
    a = softmax over m of (W_m z), d -> C each. The paper's 5x5 branch is its 3x3 with dilation 2.
    """

    TAPS = {"choice": "choice"}  # a, (N, M, C, 1, 1) (attention.blocks.taps)

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
        conv, bn, act = self.fc
        # Fuse and squeeze, W mean(sum_m U_m), taken as sum_m W mean(U_m) (W is linear and bias-free). Equal,
        # but in fp16 U_1 + U_2, or mean(U_1) + mean(U_2), overflows when two in-range branches near 4e4 add
        # up; this way only W's outputs, activations like any other, have to fit.
        m = u.shape[1]
        y = conv(u.mean(dim=(3, 4), keepdim=True).view(n * m, c, 1, 1))
        y = y.view(n, m, -1, 1, 1).sum(dim=1)  # (N, d, 1, 1)
        if self.training and n == 1:
            # A batch of one pooled vector has no batch statistics (a trainer's last batch can be 1 image):
            # use the running ones for it. A shape check, not a value check.
            z = act(F.batch_norm(y, bn.running_mean, bn.running_var, bn.weight, bn.bias, False, 0.0, bn.eps))
        else:
            z = act(bn(y))  # (N, d, 1, 1)
        a = self.choice(torch.softmax(self.fcs(z).view(n, -1, c, 1, 1), dim=1))  # (N, M, C, 1, 1)
        return (u * a).sum(dim=1)
